//! Many VHIDs in one process: 200 VHIDs over two interfaces with three
//! addresses each, against a second process with the same configuration and
//! a higher advskew.

use std::collections::BTreeSet;
use std::thread::sleep;
use std::time::Duration;

use carpd_testbed::{Cluster, Config, wait_until};

const VHIDS_PER_LINK: u8 = 100;
const LINKS: usize = 2;

/// VHID `v` on link `k` holds `10.(100+k).v.{1,2,3}/24`: the same VHID
/// numbers on both links, so packets must be told apart by arrival
/// interface.
fn vips(link: usize, vhid: u8) -> Vec<String> {
    (1..=3)
        .map(|h| format!("10.{}.{vhid}.{h}/24", 100 + link))
        .collect()
}

fn config(advskew: u8) -> Config {
    let mut cfg = Config::default().advskew(advskew).preempt(true);
    for k in 0..LINKS {
        for v in 1..=VHIDS_PER_LINK {
            cfg = cfg.vhid(&format!("eth{k}"), v, &vips(k, v));
        }
    }
    cfg
}

/// The virtual addresses a host holds, as `(device, addr/prefix)`.
fn virtual_entries(c: &Cluster, host: usize) -> BTreeSet<(String, String)> {
    c.host(host)
        .addr_entries()
        .into_iter()
        .filter(|(_, a)| a.starts_with("10.100.") || a.starts_with("10.101."))
        .collect()
}

#[test]
fn two_hundred_vhids_each_with_one_master() {
    let mut c = Cluster::new(2, LINKS);
    let expected: BTreeSet<(String, String)> = (0..LINKS)
        .flat_map(|k| {
            (1..=VHIDS_PER_LINK)
                .flat_map(move |v| vips(k, v).into_iter().map(move |a| (format!("eth{k}"), a)))
        })
        .collect();
    assert_eq!(expected.len(), 600);

    // Both processes start together; preemption settles any VHID the worse
    // node grabbed while the better one was still starting.
    c.start(0, &config(0));
    c.start(1, &config(100));
    let mut last = (BTreeSet::new(), BTreeSet::new());
    let converged = wait_until(Duration::from_secs(40), Duration::from_millis(500), || {
        last = (virtual_entries(&c, 0), virtual_entries(&c, 1));
        last.0 == expected && last.1.is_empty()
    });
    assert!(
        converged.is_some(),
        "not converged: node 0 lacks {:?}, node 0 has extra {:?}, node 1 has {:?}",
        expected.difference(&last.0).collect::<Vec<_>>(),
        last.0.difference(&expected).collect::<Vec<_>>(),
        last.1
    );

    // And it stays that way.
    for _ in 0..5 {
        sleep(Duration::from_secs(1));
        assert_eq!(virtual_entries(&c, 0), expected);
        assert!(virtual_entries(&c, 1).is_empty());
    }
    assert!(c.node(0).is_running() && c.node(1).is_running());
}
