//! What the packet path pays for metrics: the engine's per-packet bookkeeping (plain counters
//! and a latency sample in a `Tally`), and the 250 ms flush into Prometheus amortized over the
//! packets of a busy tick. Compare with `forward` (the cost of forwarding a packet to a slot).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use parley::metrics::{Levels, Metrics, Tally};

/// Packets in one 250 ms tick at 100k forwarded packets/s.
const PACKETS_PER_TICK: u64 = 25_000;

fn per_packet(c: &mut Criterion) {
    let metrics = Metrics::new();
    let mut tally = Tally::default();
    let latency = metrics.local_forwarding_latency();
    c.bench_function("metrics/tally one forwarded packet", |b| {
        b.iter(|| {
            // What fan_out does per received packet with one receiving slot.
            let kind = black_box(1usize);
            let bytes = black_box(1200u64);
            tally.rtp_in[kind] += 1;
            tally.rtp_in_bytes[kind] += bytes;
            tally.rtp_out[kind] += 1;
            tally.rtp_out_bytes[kind] += bytes;
            tally.udp_in.0 += 1;
            tally.udp_in.1 += bytes;
            tally.udp_out.0 += 1;
            tally.udp_out.1 += bytes;
            latency.observe(black_box(0.000_2));
        })
    });
    let levels = Levels::default();
    c.bench_function("metrics/flush one tick of 25k forwarded packets", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                let mut t = Tally::default();
                t.rtp_out[1] = PACKETS_PER_TICK;
                for _ in 0..PACKETS_PER_TICK {
                    latency.observe(0.000_2);
                }
                let start = std::time::Instant::now();
                metrics.flush(0, &mut t, &levels);
                latency.flush();
                total += start.elapsed();
            }
            total
        })
    });
}

criterion_group!(benches, per_packet);
criterion_main!(benches);
