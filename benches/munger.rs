//! Cost of the sequence/timestamp munger per packet (`forward::munger::Munger::rewrite`).
//!
//! `in_order`: the steady state, one source, consecutive sequence numbers, a new timestamp
//! every third packet. `switching`: every packet comes from a new source (the worst case: the
//! switch arithmetic runs each time). Run: `cargo bench --bench munger`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use parley::forward::munger::{Munger, Verdict};
use std::hint::black_box;

fn munger(c: &mut Criterion) {
    let mut g = c.benchmark_group("munger");
    g.throughput(Throughput::Elements(1));

    let mut m = Munger::new();
    let (mut seq, mut ts, mut ticks) = (65_000u16, 4_000_000_000u32, 0u64);
    g.bench_function("in_order", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            if seq.is_multiple_of(3) {
                ts = ts.wrapping_add(3000);
                ticks += 3000;
            }
            let v = m.rewrite(black_box(0x1234_5678), black_box(seq), black_box(ts), ticks);
            debug_assert!(matches!(v, Verdict::Forward { .. }));
            v
        })
    });

    let mut m = Munger::new();
    let (mut source, mut ticks) = (1u32, 0u64);
    g.bench_function("switching", |b| {
        b.iter(|| {
            source = source.wrapping_add(1);
            ticks += 3000;
            m.switch_source();
            m.rewrite(
                black_box(source),
                black_box(source as u16),
                black_box(source.wrapping_mul(3000)),
                ticks,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, munger);
criterion_main!(benches);
