//! The steady advertisements of MASTERs, sent from one task.
//!
//! Once a MASTER has nothing left to do but advertise
//! (`Machine::steady_adverts`), its task hands the schedule over here and
//! sleeps until something else happens. This task wakes once per grid
//! instant, signs and sends every advertisement then due, and keeps each
//! schedule. Before a VHID task handles anything, it takes its schedule back
//! and tells its machine how far it got, so the machine stays the one place
//! that decides; a send that fails or would block, and a schedule more than
//! one interval behind, are handed back unsent, for the machine to send and
//! see the outcome as before.
//!
//! Why: with many VHIDs, a wake-up, a timer and a trip through the VHID
//! task's select loop for each advertisement cost more than sending it;
//! here one wake-up serves every advertisement due at a grid instant.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carp_proto::packet::HEADER_LEN;
use carp_proto::{Authenticator, SteadyAdverts, SteadySchedule};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::{sleep_until_opt, std_now};
use crate::socket::{Dest, Sockets, V4Message, V4Socket, V6Message, V6Socket};
use crate::stats::{Lateness, VhidStats};

/// How early the advertiser wakes for the next grid instant: tokio's timer
/// ticks in whole milliseconds and rounds deadlines up, so it wakes late,
/// and the advertisements sharing an instant leave one after another. Woken
/// this early, the batch leaves before its deadline rather than after it.
/// Early is safe (a backup only acts on silence); the schedules stay on
/// their deadlines, so intervals do not shrink.
pub(crate) const WAKE_EARLY: Duration = Duration::from_millis(4);

/// Shorter intervals stay with their VHID task: within one early wake-up
/// the advertiser would send two of them.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(16);

/// Added to [`WAKE_EARLY`] for each advertisement due at the next instant:
/// signing and sending a batch takes time in proportion to its size (with
/// thousands of VHIDs, a thousand share an instant), and the last of the
/// batch is to leave before its deadline too. The lateness of a batch is
/// recorded when all of it has gone, so a lead short of what the batch
/// takes makes the whole batch late.
const WAKE_EARLY_PER_ADVERT: Duration = Duration::from_micros(10);

/// The most the advertiser wakes early, whatever the batch.
const MAX_WAKE_EARLY: Duration = Duration::from_millis(25);

/// How early to wake for an instant at which `due` advertisements fall,
/// the shortest of their intervals `shortest`: at most half of it, so that
/// no schedule's interval shrinks by more than half (the next of it may be
/// due with a smaller batch, so a shorter lead).
fn wake_early(due: usize, shortest: Duration) -> Duration {
    let per = WAKE_EARLY_PER_ADVERT.saturating_mul(u32::try_from(due).unwrap_or(u32::MAX));
    WAKE_EARLY
        .saturating_add(per)
        .min(MAX_WAKE_EARLY)
        .min(shortest / 2)
}

/// A MASTER's schedule, handed over.
#[derive(Debug)]
pub(crate) struct Order {
    pub(crate) vhid: u8,
    pub(crate) steady: SteadyAdverts,
    /// Every copy of each advertisement.
    pub(crate) dests: Vec<Dest>,
    /// For the copies other than IPv4 ones.
    pub(crate) sockets: Sockets,
    /// The VHID task's.
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) stats: Arc<VhidStats>,
}

/// What a VHID task gets back: how many advertisements were sent, and when
/// the next is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) sent: u64,
    pub(crate) next: std::time::Instant,
}

#[derive(Debug)]
struct Standing {
    order: Order,
    /// Where the schedule has got to.
    schedule: SteadySchedule,
    sent: u64,
    /// Fired when the schedule is handed back unsent; `None` once it was:
    /// out of the schedule until taken.
    back: Option<oneshot::Sender<()>>,
}

#[derive(Debug, Default)]
struct Book {
    /// Boxed: the table keeps room for up to twice as many entries as it
    /// holds.
    standing: HashMap<u64, Box<Standing>>,
    due: BTreeSet<(std::time::Instant, u64)>,
    next_id: u64,
}

#[derive(Debug)]
pub(crate) struct Advertiser {
    book: Mutex<Book>,
    /// A schedule due earlier than all others was handed over.
    earlier: Notify,
    /// IPv4 copies leave in one batch through the engine's IPv4 socket.
    v4: Arc<V4Socket>,
    lateness: Arc<Lateness>,
}

impl Advertiser {
    pub(crate) fn new(v4: Arc<V4Socket>, lateness: Arc<Lateness>) -> Advertiser {
        Advertiser {
            book: Mutex::new(Book::default()),
            earlier: Notify::new(),
            v4,
            lateness,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        // every update leaves the book consistent
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Take over a schedule. The id takes it back; the receiver fires if
    /// it is handed back unsent.
    pub(crate) fn hand_over(&self, order: Order) -> (u64, oneshot::Receiver<()>) {
        let (back, returned) = oneshot::channel();
        let mut book = self.lock();
        let id = book.next_id;
        book.next_id += 1;
        let schedule = order.steady.schedule();
        let at = schedule.next();
        if book.due.first().is_none_or(|(first, _)| at < *first) {
            self.earlier.notify_one();
        }
        book.due.insert((at, id));
        book.standing.insert(
            id,
            Box::new(Standing {
                order,
                schedule,
                sent: 0,
                back: Some(back),
            }),
        );
        (id, returned)
    }

    /// Take a schedule back (`None` if the id is unknown).
    pub(crate) fn take_back(&self, id: u64) -> Option<Progress> {
        let mut book = self.lock();
        let s = book.standing.remove(&id)?;
        if s.back.is_some() {
            book.due.remove(&(s.schedule.next(), id));
        }
        Some(Progress {
            sent: s.sent,
            next: s.schedule.next(),
        })
    }

    /// Send the advertisements as they fall due, until cancelled.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let (wake, early) = {
                let book = self.lock();
                match book.due.first() {
                    Some(&(at, _)) => {
                        let (due, shortest) = book
                            .due
                            .range(..=(at + WAKE_EARLY, u64::MAX))
                            .filter_map(|(_, id)| book.standing.get(id))
                            .fold((0, Duration::MAX), |(n, shortest), s| {
                                (n + 1, shortest.min(s.schedule.interval()))
                            });
                        let early = wake_early(due, shortest);
                        let at = Instant::from_std(at);
                        (Some(at.checked_sub(early).unwrap_or(at)), early)
                    }
                    None => (None, WAKE_EARLY),
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = self.earlier.notified() => {}
                () = sleep_until_opt(wake) => self.send_due(early),
            }
        }
    }

    /// Send every advertisement due within `early`, at most one per
    /// schedule: the IPv4 copies in one batch, the IPv6 ones in another, the
    /// others one by one.
    fn send_due(&self, early: Duration) {
        let now = std_now();
        let mut book = self.lock();
        let Book { standing, due, .. } = &mut *book;
        let mut batch = Vec::new();
        while let Some(&(at, id)) = due.first() {
            if at > now + early {
                break;
            }
            due.pop_first();
            batch.push(id);
        }
        // Each schedule is counted as sent when its advertisement is
        // prepared, and rolled back if it could not be: one visit each, as
        // the entries are cold by the time the batch has gone out.
        let mut sending: Vec<Sending> = Vec::with_capacity(batch.len());
        let mut v4 = Vec::new();
        // the entry of `sending` each IPv4 message belongs to
        let mut v4_owner = Vec::new();
        // IPv6 copies through the first order's IPv6 socket (the engine
        // shares one) leave in one batch too
        let mut v6 = V6Batch::default();
        for id in batch {
            let Some(s) = standing.get_mut(&id) else {
                continue;
            };
            let before = s.schedule;
            let Some(payload) = s.prepare(now) else {
                s.hand_back();
                continue;
            };
            let mut ok = true;
            for dest in &s.order.dests {
                match *dest {
                    Dest::V4 { ifindex, src, dst } => {
                        v4.push(V4Message {
                            ifindex,
                            src,
                            dst,
                            payload,
                        });
                        v4_owner.push(sending.len());
                    }
                    Dest::V6 { ifindex, src, dst } if v6.takes(&s.order.sockets) => {
                        v6.push(
                            V6Message {
                                ifindex,
                                src,
                                dst,
                                payload,
                            },
                            sending.len(),
                        );
                    }
                    other => ok &= s.order.sockets.try_send(other, &payload).is_ok(),
                }
            }
            s.commit(now);
            sending.push(Sending {
                id,
                before,
                next: s.schedule.next(),
                ok,
            });
        }
        self.v4.try_send_batch(&v4, |k, _| {
            if let Some(x) = v4_owner.get(k).and_then(|i| sending.get_mut(*i)) {
                x.ok = false;
            }
        });
        if let Some(sock) = &v6.socket {
            sock.try_send_batch(&v6.msgs, |k, _| {
                if let Some(x) = v6.owner.get(k).and_then(|i| sending.get_mut(*i)) {
                    x.ok = false;
                }
            });
        }
        let sent_at = std_now();
        for x in sending {
            if x.ok {
                // early sends too: the batch is meant to leave before its
                // deadline, and how far before is part of the record
                self.lateness.record(sent_at, x.before.next());
                due.insert((x.next, x.id));
            } else if let Some(s) = standing.get_mut(&x.id) {
                s.roll_back(x.before);
                s.hand_back();
            }
        }
    }
}

/// The IPv6 copies of a batch that share one socket.
#[derive(Default)]
struct V6Batch {
    socket: Option<Arc<V6Socket>>,
    msgs: Vec<V6Message>,
    /// The entry of the batch each message belongs to.
    owner: Vec<usize>,
}

impl V6Batch {
    /// Whether IPv6 copies through `sockets` join the batch: those through
    /// the socket of the first that joined.
    fn takes(&mut self, sockets: &Sockets) -> bool {
        match (&self.socket, &sockets.v6) {
            (_, None) => false,
            (None, Some(v6)) => {
                self.socket = Some(Arc::clone(v6));
                true
            }
            (Some(mine), Some(v6)) => Arc::ptr_eq(mine, v6),
        }
    }

    fn push(&mut self, msg: V6Message, owner: usize) {
        self.msgs.push(msg);
        self.owner.push(owner);
    }
}

/// One advertisement of a batch on its way.
struct Sending {
    id: u64,
    /// The schedule before this advertisement, due at its `next()`.
    before: SteadySchedule,
    /// The schedule's next deadline once this one is sent.
    next: std::time::Instant,
    ok: bool,
}

impl Standing {
    /// The next advertisement of this schedule, counted as sent to the
    /// loop check; `None` to hand the schedule back.
    fn prepare(&self, now: std::time::Instant) -> Option<[u8; HEADER_LEN]> {
        // the machine restarts a schedule this far behind rather than send
        // a catch-up burst
        if self.schedule.is_behind(now) {
            return None;
        }
        let o = &self.order;
        let advert = o.steady.advert(self.sent);
        Some(advert.sign(o.vhid, &o.auth, |counter| {
            o.stats.set_last_counter(counter);
        }))
    }

    /// Count the prepared advertisement as sent at `now`.
    fn commit(&mut self, now: std::time::Instant) {
        self.order.stats.sent.fetch_add(1, Ordering::Relaxed);
        // not behind (checked by prepare): one interval on
        self.schedule.advance(now, None);
        self.sent += 1;
    }

    /// Undo [`Standing::commit`]: the advertisement did not go out.
    fn roll_back(&mut self, before: SteadySchedule) {
        self.order.stats.sent.fetch_sub(1, Ordering::Relaxed);
        self.schedule = before;
        self.sent -= 1;
    }

    /// Out of the schedule until its task takes it back.
    fn hand_back(&mut self) {
        if let Some(back) = self.back.take() {
            // a task that is gone takes nothing back
            let _ = back.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use carp_proto::{HmacMode, Timing};

    use super::*;

    fn order(next: std::time::Instant, v4: &Arc<V4Socket>) -> Order {
        let vip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100));
        Order {
            vhid: 1,
            steady: SteadyAdverts {
                next,
                timing: Timing::new(1, 0),
                demote: 0,
                counter: 7,
            },
            dests: Vec::new(),
            sockets: Sockets {
                v4: Arc::clone(v4),
                v6: None,
                broadcast: None,
            },
            auth: Arc::new(Authenticator::new(HmacMode::Bsd, b"k", 1, &[vip]).unwrap()),
            stats: Arc::default(),
        }
    }

    #[test]
    fn a_larger_batch_wakes_earlier_within_bounds() {
        let second = Duration::from_secs(1);
        assert_eq!(wake_early(0, second), WAKE_EARLY);
        assert_eq!(wake_early(1, second), WAKE_EARLY + WAKE_EARLY_PER_ADVERT);
        assert!(wake_early(500, second) > wake_early(250, second));
        // a thousand at one instant: room for about 10 us each
        assert!(wake_early(1000, second) >= Duration::from_millis(14));
        assert_eq!(wake_early(usize::MAX, second), MAX_WAKE_EARLY);
        // never more than half the shortest interval at that instant
        assert_eq!(wake_early(1000, MIN_INTERVAL), MIN_INTERVAL / 2);
        assert!(WAKE_EARLY * 2 <= MIN_INTERVAL);
    }

    // Needs root (a raw socket), as the engine does.
    #[tokio::test]
    async fn schedules_are_sent_on_time_and_taken_back_once() {
        let v4 = Arc::new(V4Socket::open().expect("raw IPv4 socket (root)"));
        let adv = Advertiser::new(Arc::clone(&v4), Arc::new(Lateness::new()));
        let now = std_now();
        let later = now + Duration::from_secs(3600);
        let (far, _back) = adv.hand_over(order(later, &v4));
        let (due, mut back) = adv.hand_over(order(now, &v4));
        adv.send_due(WAKE_EARLY);
        // due now, no copies to send: counted, and the next a second on
        let progress = adv.take_back(due).unwrap();
        assert_eq!(
            progress,
            Progress {
                sent: 1,
                next: now + Duration::from_secs(1)
            }
        );
        assert_eq!(adv.take_back(due), None);
        assert!(back.try_recv().is_err(), "handed back without a failure");
        // not due: untouched
        assert_eq!(
            adv.take_back(far),
            Some(Progress {
                sent: 0,
                next: later
            })
        );
        // more than an interval behind: handed back unsent
        let (behind, mut back) = adv.hand_over(order(now - Duration::from_secs(2), &v4));
        adv.send_due(WAKE_EARLY);
        assert_eq!(back.try_recv(), Ok(()));
        assert_eq!(
            adv.take_back(behind),
            Some(Progress {
                sent: 0,
                next: now - Duration::from_secs(2)
            })
        );
        // a copy that cannot be sent (no such interface; nothing leaves):
        // handed back, nothing counted
        let mut failing = order(now, &v4);
        failing.dests = vec![Dest::V4 {
            ifindex: u32::MAX - 1,
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(224, 0, 0, 18),
        }];
        let stats = Arc::clone(&failing.stats);
        let (failing, mut back) = adv.hand_over(failing);
        adv.send_due(WAKE_EARLY);
        assert_eq!(back.try_recv(), Ok(()));
        assert_eq!(
            adv.take_back(failing),
            Some(Progress { sent: 0, next: now })
        );
        assert_eq!(stats.sent.load(Ordering::Relaxed), 0);
        let book = adv.lock();
        assert!(book.due.is_empty() && book.standing.is_empty());
    }
}
