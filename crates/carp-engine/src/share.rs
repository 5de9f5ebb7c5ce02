//! Load sharing: which node should be master of which VHID.
//!
//! Every node of a load-sharing group runs the same pure function over the
//! same inputs (the group's name, its node addresses and its VHIDs), so all
//! agree on a preference order of nodes per VHID without talking to each
//! other. A node advertises the advskew of its rank in that order
//! ([`advskew_for_rank`]) with preemption on, so the first live node of each
//! order is master.
//!
//! The function, fixed here because every node must compute the same result
//! whatever version of carpd it runs:
//!
//! 1. Nodes are sorted by `(fnv1a64(group name, 0x00, node address octets),
//!    node address)`: the order they are listed in does not matter, and
//!    different groups start from different nodes.
//! 2. VHIDs are sorted by number; the `i`-th (from 0) gets its order by
//!    picking from the sorted nodes, one rank at a time: rank 0 takes the
//!    node at `i mod n`; rank `k >= 1` takes, among the nodes not yet
//!    picked (still sorted), the one at `(q_k + i mod n) mod (n - k)`,
//!    where `q_1 = i / n` and `q_{k+1} = q_k / (n - k)`.
//!
//! Rank 0 goes round-robin over the nodes, so masters differ by at most one
//! VHID between nodes. The VHIDs a node is first for take its other nodes
//! round-robin as their second, so when it dies its VHIDs spread over the
//! survivors (differing by at most one); with a multiple of `n * (n - 1)`
//! VHIDs every node carries exactly as many as any other before and after
//! one node dies (3 nodes, 12 VHIDs: 4/4/4, then 6/6).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::Error;
use crate::spec::{ShareSpec, VhidSpec};

/// Highest advskew a rank gets: far from the 240 that send errors and
/// FreeBSD-style demotion advertise, so demotion still outranks it.
pub const MAX_RANK_SKEW: u8 = 200;

/// Advskew step between neighbouring ranks when the group is small enough.
pub const RANK_SKEW_STEP: u8 = 20;

/// FNV-1a, 64 bits: a hash written out here so that it never changes.
fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn octets(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// The group's nodes in hash order (step 1 above), duplicates once.
fn hashed_nodes(group: &str, nodes: &[IpAddr]) -> Vec<IpAddr> {
    let mut keyed: Vec<(u64, IpAddr)> = nodes
        .iter()
        .map(|n| (fnv1a64(&[group.as_bytes(), &[0], &octets(n)]), *n))
        .collect();
    keyed.sort();
    keyed.dedup_by_key(|(_, n)| *n);
    keyed.into_iter().map(|(_, n)| n).collect()
}

/// The preference order of `nodes` for every VHID of `vhids`, most
/// preferred first (see the module documentation).
pub fn assignment(group: &str, nodes: &[IpAddr], vhids: &[u8]) -> BTreeMap<u8, Vec<IpAddr>> {
    let sorted = hashed_nodes(group, nodes);
    let n = sorted.len();
    let mut ids = vhids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut out = BTreeMap::new();
    if n == 0 {
        return out;
    }
    for (i, id) in ids.into_iter().enumerate() {
        let mut left = sorted.clone();
        let mut order = Vec::with_capacity(n);
        order.push(left.remove(i % n));
        let mut q = i / n;
        for k in 1..n {
            let m = n - k;
            order.push(left.remove((q + i % n) % m));
            q /= m;
        }
        out.insert(id, order);
    }
    out
}

/// The advskew of rank `rank` (0 = preferred) in a group of `nodes` nodes:
/// [`RANK_SKEW_STEP`] apart, closer together when that would pass
/// [`MAX_RANK_SKEW`].
pub fn advskew_for_rank(rank: usize, nodes: usize) -> u8 {
    let steps = nodes.saturating_sub(1).max(1);
    let step = (usize::from(MAX_RANK_SKEW) / steps).clamp(1, usize::from(RANK_SKEW_STEP));
    u8::try_from((rank * step).min(usize::from(MAX_RANK_SKEW))).unwrap_or(MAX_RANK_SKEW)
}

/// Puts `spec` in a load-sharing group. The rank decides its timing from
/// now on: any advskew it had is replaced by that of a rank, 0 until this
/// node's rank is known ([`take_rank`], when the engine starts it).
pub fn join(spec: &mut VhidSpec, share: ShareSpec) {
    spec.share = Some(share);
    apply_rank_skew(spec, 0);
}

/// Gives a load-shared VHID the advskew of this node's rank in its order;
/// this node is `this_node` or else the one node of the order among
/// `locals`, the addresses of the VHID's interface. A VHID outside any
/// group is left as it is.
pub fn take_rank(spec: &mut VhidSpec, interface: &str, locals: &[IpAddr]) -> Result<(), Error> {
    let Some(share) = &spec.share else {
        return Ok(());
    };
    let hits: Vec<IpAddr> = match share.this_node {
        Some(n) => vec![n],
        None => share
            .order
            .iter()
            .filter(|n| locals.contains(n))
            .copied()
            .collect(),
    };
    let rank = match hits.as_slice() {
        [me] => share.order.iter().position(|n| n == me),
        _ => None,
    };
    let Some(rank) = rank else {
        return Err(Error::LoadShareNode {
            group: share.group.clone(),
            interface: interface.to_string(),
            found: hits.len(),
        });
    };
    let skew = advskew_for_rank(rank, share.order.len());
    apply_rank_skew(spec, skew);
    Ok(())
}

/// The rank rules: a ranked VHID advertises its rank's skew and always
/// preempts, so that the first live node of its order is master. A VRRP
/// VHID advertises the priority 254 less that skew instead.
fn apply_rank_skew(spec: &mut VhidSpec, skew: u8) {
    spec.advskew = skew;
    spec.preempt = true;
    if let crate::spec::Protocol::Vrrp(v) = &mut spec.protocol {
        v.priority = 254 - skew.min(253);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;

    fn nodes(n: u8) -> Vec<IpAddr> {
        (1..=n)
            .map(|i| IpAddr::V4(Ipv4Addr::new(10, 99, 0, i)))
            .collect()
    }

    fn ids(n: u8) -> Vec<u8> {
        (1..=n).collect()
    }

    /// VHIDs per node when the nodes in `dead` are down: each VHID goes to
    /// the first live node of its order.
    fn load(a: &BTreeMap<u8, Vec<IpAddr>>, dead: &[IpAddr]) -> BTreeMap<IpAddr, usize> {
        let mut out = BTreeMap::new();
        for order in a.values() {
            if let Some(first) = order.iter().find(|n| !dead.contains(n)) {
                *out.entry(*first).or_insert(0) += 1;
            }
        }
        out
    }

    #[test]
    fn fnv1a_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(&[b"foo"]), 0xdcb2_7518_fed9_d577);
        assert_eq!(fnv1a64(&[b"fo", b"o"]), fnv1a64(&[b"foo"]));
    }

    #[test]
    fn every_order_is_a_permutation() {
        for n in 1..=6 {
            let all: BTreeSet<IpAddr> = nodes(n).into_iter().collect();
            for (_, order) in assignment("g", &nodes(n), &ids(40)) {
                assert_eq!(order.len(), usize::from(n));
                assert_eq!(order.iter().copied().collect::<BTreeSet<_>>(), all);
            }
        }
    }

    #[test]
    fn listing_order_and_duplicates_do_not_matter() {
        let mut shuffled = nodes(4);
        shuffled.reverse();
        shuffled.swap(0, 2);
        shuffled.push(shuffled[1]);
        let vhids = [9, 3, 200, 4, 17];
        let mut sorted_vhids = vhids;
        sorted_vhids.sort_unstable();
        assert_eq!(
            assignment("web", &shuffled, &vhids),
            assignment("web", &nodes(4), &sorted_vhids)
        );
    }

    /// The exact result is part of the wire behaviour: nodes running
    /// different builds must agree.
    #[test]
    fn fixed_result() {
        let a = assignment("web", &nodes(3), &ids(6));
        let last: Vec<Vec<u8>> = a
            .values()
            .map(|o| {
                o.iter()
                    .map(|n| match n {
                        IpAddr::V4(v4) => v4.octets()[3],
                        IpAddr::V6(_) => 0,
                    })
                    .collect()
            })
            .collect();
        assert_eq!(last, FIXED_WEB_3X6.to_vec());
    }

    const FIXED_WEB_3X6: [[u8; 3]; 6] = [
        [1, 2, 3],
        [2, 3, 1],
        [3, 1, 2],
        [1, 3, 2],
        [2, 1, 3],
        [3, 2, 1],
    ];

    #[test]
    fn three_nodes_twelve_vhids_four_each_then_six_each() {
        let ns = nodes(3);
        let a = assignment("web", &ns, &ids(12));
        let all = load(&a, &[]);
        assert_eq!(all.values().copied().collect::<Vec<_>>(), [4, 4, 4]);
        for dead in &ns {
            let l = load(&a, &[*dead]);
            assert_eq!(l.len(), 2, "{dead} dead: {l:?}");
            assert!(l.values().all(|&c| c == 6), "{dead} dead: {l:?}");
        }
    }

    /// Exhaustively over group sizes, VHID counts and the node that dies:
    /// masters differ by at most one, and a dead node's VHIDs spread over
    /// the survivors differing by at most one; with a multiple of
    /// n * (n - 1) VHIDs the loads are exactly equal before and after.
    #[test]
    fn balanced_before_and_after_any_one_node_dies() {
        for n in 2..=6u8 {
            let ns = nodes(n);
            for v in 1..=60u8 {
                let a = assignment("g", &ns, &ids(v));
                let before = load(&a, &[]);
                let spread = |l: &BTreeMap<IpAddr, usize>, k: usize| {
                    let max = l.values().copied().max().unwrap_or(0);
                    let min = if l.len() < k {
                        0
                    } else {
                        l.values().copied().min().unwrap_or(0)
                    };
                    max - min
                };
                assert!(
                    spread(&before, usize::from(n)) <= 1,
                    "n={n} v={v}: {before:?}"
                );
                let even = usize::from(v) % (usize::from(n) * usize::from(n - 1)) == 0;
                for dead in &ns {
                    let after = load(&a, &[*dead]);
                    let moved: BTreeMap<IpAddr, usize> = ns
                        .iter()
                        .filter(|x| *x != dead)
                        .map(|x| {
                            let had = before.get(x).copied().unwrap_or(0);
                            (*x, after.get(x).copied().unwrap_or(0) - had)
                        })
                        .collect();
                    assert!(
                        spread(&moved, usize::from(n - 1)) <= 1,
                        "n={n} v={v} dead={dead}: {moved:?}"
                    );
                    if even {
                        assert_eq!(spread(&after, usize::from(n - 1)), 0, "n={n} v={v}");
                    }
                }
            }
        }
    }

    #[test]
    fn groups_start_from_different_nodes() {
        let firsts: BTreeSet<IpAddr> = ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .map(|g| assignment(g, &nodes(3), &[1])[&1][0])
            .collect();
        assert!(firsts.len() > 1);
    }

    fn shared_spec(this_node: Option<IpAddr>) -> VhidSpec {
        let mut spec = VhidSpec::new(1, Vec::new(), b"pw".to_vec(), carp_proto::HmacMode::Bsd);
        spec.advskew = 77;
        join(
            &mut spec,
            ShareSpec {
                group: "web".into(),
                order: nodes(3),
                this_node,
            },
        );
        spec
    }

    /// The rank rules: joining a group replaces the advskew and turns
    /// preemption on; taking the rank gives its skew.
    #[test]
    fn ranked_vhids_preempt_with_their_ranks_skew() {
        let spec = shared_spec(None);
        assert_eq!((spec.advskew, spec.preempt), (0, true));
        let ns = nodes(3);
        for (rank, me) in ns.iter().enumerate() {
            let mut s = spec.clone();
            s.preempt = false;
            take_rank(
                &mut s,
                "eth0",
                &[*me, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))],
            )
            .unwrap();
            assert_eq!((s.advskew, s.preempt), (advskew_for_rank(rank, 3), true));
        }
        // this_node wins over the interface's addresses
        let mut s = shared_spec(Some(ns[2]));
        take_rank(&mut s, "eth0", &[ns[0]]).unwrap();
        assert_eq!(s.advskew, advskew_for_rank(2, 3));
    }

    #[test]
    fn no_or_several_local_nodes_is_an_error() {
        let ns = nodes(3);
        for locals in [&[][..], &ns[..2]] {
            let mut s = shared_spec(None);
            let e = take_rank(&mut s, "eth0", locals).unwrap_err();
            assert!(
                matches!(&e, Error::LoadShareNode { group, interface, found }
                    if group == "web" && interface == "eth0" && *found == locals.len()),
                "{e:?}"
            );
        }
        // a VHID outside any group keeps its own timing
        let mut plain = VhidSpec::new(1, Vec::new(), Vec::new(), carp_proto::HmacMode::Bsd);
        plain.advskew = 9;
        take_rank(&mut plain, "eth0", &[]).unwrap();
        assert_eq!((plain.advskew, plain.preempt), (9, false));
    }

    #[test]
    fn rank_skews() {
        assert_eq!(
            (0..3).map(|r| advskew_for_rank(r, 3)).collect::<Vec<_>>(),
            [0, 20, 40]
        );
        assert_eq!(advskew_for_rank(10, 11), 200);
        // Large groups squeeze the steps to stay at or under the cap.
        assert_eq!(advskew_for_rank(1, 41), 5);
        assert_eq!(advskew_for_rank(40, 41), 200);
        assert_eq!(advskew_for_rank(300, 400), 200);
        assert_eq!(advskew_for_rank(0, 1), 0);
    }
}
