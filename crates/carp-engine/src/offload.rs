//! What a VHID task hands off before it sleeps and takes back when it
//! wakes, so that the steady states cost no wake-ups of their own:
//!
//! - a MASTER with nothing else to do hands its periodic advertisements to
//!   the advertiser (`advertiser.rs`), which sends those of many VHIDs in
//!   one batch;
//! - a BACKUP has the receiver note the repeats of its master's last
//!   advertisement (`keepalive.rs`) instead of waking it for each.
//!
//! On waking, the task reclaims both before it handles anything, and its
//! machine learns what happened meanwhile, so the machine stays the one
//! place that decides.

use std::sync::Arc;

use carp_proto::{Machine, SteadyAdverts};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::advertiser::{self, Advertiser, Order, Progress};
use crate::keepalive::{Expected, Keepalives};
use crate::rx::Inbound;

/// A schedule the advertiser holds. Taken back when dropped, so that no
/// advertisement outlives its task, even one that was aborted.
struct Delegation {
    id: u64,
    /// Fires when the advertiser hands it back unsent.
    returned: oneshot::Receiver<()>,
    advertiser: Arc<Advertiser>,
}

impl Delegation {
    fn take_back(&self) -> Option<Progress> {
        self.advertiser.take_back(self.id)
    }
}

impl Drop for Delegation {
    fn drop(&mut self) {
        self.take_back();
    }
}

/// One VHID's hand-offs to the advertiser and the receiver.
pub(crate) struct Offload {
    advertiser: Arc<Advertiser>,
    keepalives: Arc<Keepalives>,
    /// Whether the receiver may note keepalives: not with replay
    /// protection, which checks every counter in the task.
    keepalives_allowed: bool,
    /// MASTER: the steady advertisements, while the advertiser sends them.
    delegation: Option<Delegation>,
    /// What `keepalives` was last told to expect.
    expected: Option<Expected>,
    /// The last advertisement handed to the machine.
    last_advert: Option<Inbound>,
}

impl Offload {
    pub(crate) fn new(
        advertiser: Arc<Advertiser>,
        keepalives: Arc<Keepalives>,
        keepalives_allowed: bool,
    ) -> Offload {
        Offload {
            advertiser,
            keepalives,
            keepalives_allowed,
            delegation: None,
            expected: None,
            last_advert: None,
        }
    }

    /// Before sleeping: hand a MASTER's steady advertisements to the
    /// advertiser (`order` builds what it needs to send them), and tell the
    /// receiver which keepalives a BACKUP expects.
    pub(crate) fn delegate(
        &mut self,
        machine: &Machine,
        order: impl FnOnce(SteadyAdverts) -> Order,
    ) {
        self.delegate_adverts(machine, order);
        self.expect_keepalives(machine);
    }

    fn delegate_adverts(&mut self, machine: &Machine, order: impl FnOnce(SteadyAdverts) -> Order) {
        if self.delegation.is_some() {
            return;
        }
        let Some(steady) = machine
            .steady_adverts()
            .filter(|s| s.timing.interval() >= advertiser::MIN_INTERVAL)
        else {
            return;
        };
        let (id, returned) = self.advertiser.hand_over(order(steady));
        self.delegation = Some(Delegation {
            id,
            returned,
            advertiser: Arc::clone(&self.advertiser),
        });
    }

    /// BACKUP: have the receiver note repeats of the last advertisement
    /// while all they do is restart the master-down timer.
    fn expect_keepalives(&mut self, machine: &Machine) {
        let expected = self
            .last_advert
            .filter(|m| {
                self.keepalives_allowed
                    && machine.master_addr() == Some(m.src)
                    && machine.is_keepalive(&m.advert)
            })
            .map(|m| Expected::of(m.src, &m.advert));
        if expected != self.expected {
            self.keepalives.expect(expected);
            self.expected = expected;
        }
    }

    /// Whether the advertiser holds the schedule (and so the MASTER's
    /// timer: the task has no deadline of its own meanwhile).
    pub(crate) fn advertising(&self) -> bool {
        self.delegation.is_some()
    }

    /// Until the advertiser hands the schedule back unsent (never without
    /// one); then the schedule is taken back, and the result is the
    /// deadline of the advertisement it could not send, for the machine to
    /// send. Cancel safe: nothing is taken back until it resolves.
    pub(crate) async fn handed_back(&mut self, machine: &mut Machine) -> Option<Instant> {
        match &mut self.delegation {
            Some(d) => {
                let _ = (&mut d.returned).await;
            }
            None => std::future::pending().await,
        }
        self.reclaim_adverts(machine)
    }

    /// After waking, before anything else: take the schedule back from the
    /// advertiser and tell the machine how far it got, then hand it the
    /// latest keepalive the receiver noted, as of when it arrived.
    pub(crate) fn reclaim(&mut self, machine: &mut Machine) {
        self.reclaim_adverts(machine);
        if let Some(h) = self.keepalives.take() {
            machine.handle_advert(h.at, h.src, &h.advert);
            self.last_advert = Some(Inbound {
                src: h.src,
                advert: h.advert,
            });
        }
    }

    /// The deadline of the schedule's next advertisement, if it was handed
    /// off.
    fn reclaim_adverts(&mut self, machine: &mut Machine) -> Option<Instant> {
        let progress = self.delegation.take()?.take_back()?;
        machine.steady_adverts_sent(progress.sent, progress.next);
        Some(Instant::from_std(progress.next))
    }

    /// The task handed `advert` to the machine: the keepalives to expect
    /// next are its repeats.
    pub(crate) fn heard(&mut self, advert: Inbound) {
        self.last_advert = Some(advert);
    }
}
