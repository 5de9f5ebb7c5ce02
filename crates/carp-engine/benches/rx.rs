//! The whole receive path per advertisement: parse, validate, loop check,
//! HMAC verify, demultiplex over 1000 VHIDs (4 interfaces x 250) and hand
//! to the VHID's inbox (and take it out again, as the VHID's task would).
//!
//! `cargo bench -p carp-engine --features bench --bench rx`

use std::hint::black_box;

use carp_engine::bench::ReceivePath;
use carp_proto::HmacMode;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn rx(c: &mut Criterion) {
    let mut g = c.benchmark_group("receive path");
    for (name, mode) in [("ucarp", HmacMode::Ucarp), ("bsd", HmacMode::Bsd)] {
        let mut path = ReceivePath::new(4, 250, mode);
        let packets = path.packets(0x1234_5678_9abc_def0);
        g.throughput(Throughput::Elements(1));
        let mut i = 0;
        g.bench_function(format!("1000 VHIDs, {name} HMAC"), |b| {
            b.iter(|| {
                i = (i + 1) % packets.len();
                black_box(path.deliver(black_box(&packets[i])))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, rx);
criterion_main!(benches);
