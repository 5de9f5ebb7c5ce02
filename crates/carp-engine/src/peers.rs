//! The peers a VHID hears: per source address, its last advertisement,
//! when it was heard, and how far its intervals strayed from the one it
//! advertises. A small table per VHID, updated wherever an advertisement is
//! accepted: by the receiver for a BACKUP's keepalives (which never wake
//! the task), by the task for the rest.
//!
//! The source MAC is not kept here: the raw IP socket does not give it.
//! Status looks it up in the kernel's neighbour table instead
//! (`Netlink::neighbours`), so the receive path pays nothing for it.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use carp_proto::Advert;

/// Peers kept per VHID; when full, the one heard least recently goes.
const MAX_PEERS: usize = 16;
/// Interval deviations kept per peer; the largest is reported.
const JITTER_SAMPLES: usize = 16;
/// A gap longer than this many advertised intervals is a silence (the peer
/// was BACKUP, or gone), not jitter.
const SILENCE_INTERVALS: u32 = 3;

/// One peer as last heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    pub(crate) src: IpAddr,
    pub(crate) advert: Advert,
    pub(crate) last_heard: Instant,
    /// Largest |interval - advertised interval| among the recent samples.
    pub(crate) jitter: Duration,
    /// Advertisements heard from it.
    pub(crate) heard: u64,
}

#[derive(Debug)]
struct Entry {
    peer: Peer,
    /// The last interval was a steady one: the next counts as a sample.
    /// The first interval after a first hearing, a silence or a change of
    /// timing is not one: a node that just took over sends its second
    /// advertisement early, on its advertisement grid.
    steady: bool,
    samples: [Duration; JITTER_SAMPLES],
    next_sample: usize,
}

impl Entry {
    fn record(&mut self, at: Instant, advert: &Advert) {
        let advertised = advert.timing().interval();
        let gap = at.saturating_duration_since(self.peer.last_heard);
        let steady = !advert.timing().is_bow_out()
            && !self.peer.advert.timing().is_bow_out()
            && self.peer.advert.timing() == advert.timing();
        let steady = steady && gap <= advertised * SILENCE_INTERVALS;
        if steady && self.steady {
            self.samples[self.next_sample] = gap.abs_diff(advertised);
            self.next_sample = (self.next_sample + 1) % JITTER_SAMPLES;
            self.peer.jitter = self.samples.iter().copied().max().unwrap_or_default();
        }
        self.steady = steady;
        self.peer.advert = *advert;
        self.peer.last_heard = at;
        self.peer.heard += 1;
    }
}

/// Shared by a VHID's task and the receiver.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    table: Mutex<Vec<Entry>>,
}

impl Peers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        // the table stays consistent whatever panicked while holding it
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An accepted advertisement from `src`, received at `at`.
    pub(crate) fn heard(&self, at: Instant, src: IpAddr, advert: &Advert) {
        let mut table = self.lock();
        if let Some(e) = table.iter_mut().find(|e| e.peer.src == src) {
            e.record(at, advert);
            return;
        }
        if table.len() >= MAX_PEERS
            && let Some(oldest) = (0..table.len()).min_by_key(|i| table[*i].peer.last_heard)
        {
            table.swap_remove(oldest);
        }
        // Room for this one only: most VHIDs hear one peer, and a growing
        // Vec would make room for four entries of some 400 bytes at once.
        table.reserve_exact(1);
        table.push(Entry {
            peer: Peer {
                src,
                advert: *advert,
                last_heard: at,
                jitter: Duration::ZERO,
                heard: 1,
            },
            steady: false,
            samples: [Duration::ZERO; JITTER_SAMPLES],
            next_sample: 0,
        });
    }

    /// The peers heard within `window` before `now`, most recent first.
    pub(crate) fn recent(&self, now: Instant, window: Duration) -> Vec<Peer> {
        let mut out: Vec<Peer> = (self.lock().iter())
            .map(|e| e.peer)
            .filter(|p| now.saturating_duration_since(p.last_heard) <= window)
            .collect();
        out.sort_by_key(|p| std::cmp::Reverse(p.last_heard));
        out
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn advert(advskew: u8) -> Advert {
        Advert {
            vhid: 1,
            advskew,
            advbase: 1,
            demote: 0,
            counter: 0,
            hmac: [0; 20],
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn jitter_is_the_largest_deviation_and_silences_do_not_count() {
        let peers = Peers::default();
        let t = Instant::now();
        let ms = Duration::from_millis;
        // the first interval (after a takeover: early) is not a sample
        peers.heard(t, ip(2), &advert(0));
        peers.heard(t + ms(300), ip(2), &advert(0));
        peers.heard(t + ms(1310), ip(2), &advert(0));
        peers.heard(t + ms(2260), ip(2), &advert(0));
        let p = peers.recent(t + ms(2300), ms(3000));
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].jitter, p[0].heard), (ms(50), 4));
        // ten seconds of silence is not a deviation, nor the next interval
        peers.heard(t + ms(12_000), ip(2), &advert(0));
        peers.heard(t + ms(12_400), ip(2), &advert(0));
        assert_eq!(peers.recent(t + ms(12_400), ms(3000))[0].jitter, ms(50));
    }

    /// Every VHID has a table, and most hear one peer.
    #[test]
    fn the_table_takes_room_for_the_peers_heard_only() {
        let peers = Peers::default();
        let t = Instant::now();
        peers.heard(t, ip(2), &advert(0));
        peers.heard(t, ip(2), &advert(0));
        assert_eq!(peers.lock().capacity(), 1);
        peers.heard(t, ip(3), &advert(0));
        assert_eq!(peers.lock().capacity(), 2);
    }

    #[test]
    fn only_recent_peers_most_recent_first_and_the_table_is_bounded() {
        let peers = Peers::default();
        let t = Instant::now();
        let s = Duration::from_secs;
        for i in 0..40u8 {
            peers.heard(t + s(u64::from(i)), ip(i), &advert(0));
        }
        let all = peers.recent(t + s(40), s(1000));
        assert_eq!(all.len(), MAX_PEERS);
        assert_eq!(all[0].src, ip(39));
        let recent = peers.recent(t + s(40), s(3));
        let srcs: Vec<IpAddr> = recent.iter().map(|p| p.src).collect();
        assert_eq!(srcs, vec![ip(39), ip(38), ip(37)]);
    }
}
