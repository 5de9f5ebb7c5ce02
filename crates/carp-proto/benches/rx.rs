//! Cost of accepting one advertisement: the stateless checks plus HMAC
//! verification, as the receive path runs them for every packet.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use carp_proto::packet::{self, Carrier, GROUP_V4};
use carp_proto::{Advert, Authenticator, HmacMode};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion, name: &str, auth: &Authenticator) {
    let counter = 0x1234_5678_9abc_def0;
    let advert = Advert {
        vhid: 7,
        advskew: 10,
        advbase: 1,
        demote: 0,
        counter,
        hmac: auth.sign(counter),
    };
    let bytes = advert.to_bytes();
    let carrier = Carrier {
        ttl: 255,
        src: IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1)),
        dst: IpAddr::V4(GROUP_V4),
    };
    c.bench_function(name, |b| {
        b.iter(|| {
            let advert = packet::check(black_box(&carrier), black_box(&bytes), false);
            advert.is_ok_and(|a| auth.verify(a.counter, &a.hmac))
        })
    });
}

fn rx(c: &mut Criterion) {
    let vip = [IpAddr::V4(Ipv4Addr::new(10, 77, 0, 100))];
    let ucarp = Authenticator::new(HmacMode::Ucarp, b"secret", 7, &vip).expect("one IPv4 VIP");
    // Dual-stack with a link-local address: verify hashes both BSD forms.
    let dual: Vec<IpAddr> = ["10.77.0.100", "10.77.0.101", "2001:db8::100", "fe80::100"]
        .iter()
        .map(|a| a.parse().expect("address literal"))
        .collect();
    let bsd = Authenticator::new(HmacMode::Bsd, b"secret", 7, &dual).expect("addresses");
    bench(c, "check+verify ucarp", &ucarp);
    bench(c, "check+verify bsd dual-stack", &bsd);
}

criterion_group!(benches, rx);
criterion_main!(benches);
