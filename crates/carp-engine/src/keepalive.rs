//! A BACKUP hears the same advertisement from its master every interval,
//! and all each one does is restart the master-down timer. The receiver
//! takes note of those here instead of waking the VHID's task for each; the
//! task hands its machine the latest one whenever it wakes, at the
//! master-down deadline at the latest. For the machine, a run of them is
//! the same as its last one (`Machine::is_keepalive`), so nothing changes
//! but the number of wake-ups: one per master-down time instead of one per
//! advertisement.

use std::net::IpAddr;
use std::sync::Mutex;

use carp_proto::Advert;

/// The advertisement a VHID's task expects as a keepalive: from its master,
/// with this timing and demotion (the counter and HMAC vary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expected {
    pub(crate) src: IpAddr,
    pub(crate) advbase: u8,
    pub(crate) advskew: u8,
    pub(crate) demote: u8,
}

impl Expected {
    pub(crate) fn of(src: IpAddr, advert: &Advert) -> Expected {
        Expected {
            src,
            advbase: advert.advbase,
            advskew: advert.advskew,
            demote: advert.demote,
        }
    }

    fn matches(&self, src: IpAddr, advert: &Advert) -> bool {
        *self == Expected::of(src, advert)
    }
}

/// The latest keepalive heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Heard {
    pub(crate) at: std::time::Instant,
    pub(crate) src: IpAddr,
    pub(crate) advert: Advert,
}

/// What is expected, and the latest that matched.
#[derive(Debug, Default)]
struct Watched {
    expected: Option<Expected>,
    latest: Option<Heard>,
}

/// Shared by a VHID's task (which sets what to expect and takes what was
/// heard) and the receiver (which notes what matches).
#[derive(Debug, Default)]
pub(crate) struct Keepalives {
    watched: Mutex<Watched>,
}

impl Keepalives {
    fn lock(&self) -> std::sync::MutexGuard<'_, Watched> {
        // the data stays consistent whatever panicked while holding it
        self.watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What to note from now on (`None`: nothing, every advertisement goes
    /// to the task).
    pub(crate) fn expect(&self, expected: Option<Expected>) {
        self.lock().expected = expected;
    }

    /// The receiver: note `advert` if it is the expected keepalive.
    pub(crate) fn note(&self, at: std::time::Instant, src: IpAddr, advert: &Advert) -> bool {
        let mut watched = self.lock();
        if !watched.expected.is_some_and(|e| e.matches(src, advert)) {
            return false;
        }
        watched.latest = Some(Heard {
            at,
            src,
            advert: *advert,
        });
        true
    }

    /// The task: the latest keepalive not yet taken.
    pub(crate) fn take(&self) -> Option<Heard> {
        self.lock().latest.take()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn advert(advskew: u8, counter: u64) -> Advert {
        Advert {
            vhid: 1,
            advskew,
            advbase: 1,
            demote: 0,
            counter,
            hmac: [0; 20],
        }
    }

    #[test]
    fn notes_only_the_expected_and_keeps_the_latest() {
        let k = Keepalives::default();
        let master = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
        let t = std::time::Instant::now();
        assert!(!k.note(t, master, &advert(0, 1)));
        k.expect(Some(Expected::of(master, &advert(0, 0))));
        assert!(k.note(t, master, &advert(0, 1)));
        assert!(!k.note(t, other, &advert(0, 2)));
        assert!(!k.note(t, master, &advert(1, 3)));
        let later = t + std::time::Duration::from_secs(1);
        assert!(k.note(later, master, &advert(0, 4)));
        assert_eq!(
            k.take(),
            Some(Heard {
                at: later,
                src: master,
                advert: advert(0, 4)
            })
        );
        assert_eq!(k.take(), None);
        k.expect(None);
        assert!(!k.note(later, master, &advert(0, 5)));
    }
}
