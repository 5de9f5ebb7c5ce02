//! Time helpers shared by the VHID tasks, the receiver and the advertiser:
//! the machine works in `std::time::Instant`, tokio's timers in
//! `tokio::time::Instant` (which tests can pause), and MASTERs advertise on
//! one grid whose origin the whole process shares.

use std::sync::LazyLock;

use carp_proto::AdvertGrid;
use tokio::time::Instant;

/// MASTERs with the same interval advertise on `GRID_SLOTS` instants per
/// interval, chosen by VHID number (see [`AdvertGrid`]): at 1000 VHIDs and
/// advbase 1 the advertiser wakes 4 times a second for 250 of them each,
/// and the peer's receiver as often, rather than for every few VHIDs apart.
/// Wake-ups are much of what this daemon costs, so sharing instants lowers
/// its CPU use markedly against VHIDs spread over the interval
/// (BENCHMARKS.md).
pub const GRID_SLOTS: u16 = 4;

/// The origin of that grid, one for the process.
static GRID_EPOCH: LazyLock<std::time::Instant> = LazyLock::new(std::time::Instant::now);

/// The advertisement grid of a VHID: its slot is its number.
pub(crate) fn advert_grid(vhid: u8) -> AdvertGrid {
    AdvertGrid {
        epoch: *GRID_EPOCH,
        slot: u16::from(vhid),
        slots: GRID_SLOTS,
    }
}

/// The origin of the advertisement grid as wall-clock time, so that
/// advertisements seen on the wire can be set against their grid
/// instants (`origin + interval * (vhid % GRID_SLOTS) / GRID_SLOTS + k *
/// interval`).
pub fn advert_grid_origin() -> std::time::SystemTime {
    let since = GRID_EPOCH.elapsed();
    std::time::SystemTime::now()
        .checked_sub(since)
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// Now, on tokio's clock, as the machine counts time.
pub(crate) fn std_now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Until `deadline`; never without one.
pub(crate) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
