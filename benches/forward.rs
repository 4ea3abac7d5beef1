//! Cost of forwarding one publisher packet to 1, 10 and 100 viewer slots, as `fan_out` does.
//!
//! Each viewer is a real server-side `Peer`, connected (ICE, DTLS, SRTP) in memory to an `rtc`
//! client (see `support/loopback.rs`). Per slot, `sealed` is the engine's path: the header
//! rewritten into a reused scratch header, written with the payload into a send buffer and
//! sealed in place (AES-128-GCM); `stack` is the fallback through the stack
//! (`SlotForwarder::forward`, `Peer::write_rtp`, then `Peer::poll_transmit`, where `rtc` runs
//! its interceptors and SRTP); `forward_only` runs the rewrite alone. The packet: 1200 bytes of VP8 (a frame's
//! middle) with mid, abs-send-time and transport-cc extensions (the last one is not
//! negotiated with viewers and is dropped). Before timing, heap allocations per packet per
//! slot are counted and printed. Criterion's time is per packet for all N slots; divide by N
//! for one slot. No socket send is included. Run: `cargo bench --bench forward`.

#[path = "support/loopback.rs"]
mod loopback;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use loopback::{Fanout, SLOT_COUNTS};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counts allocations (and reallocations) of this bench binary. The only `unsafe` is the
/// delegation to `System` that `GlobalAlloc` requires.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size as u64, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One fan-out of the next packet to the first `n` slots.
type Step = fn(&mut Fanout, usize);

/// (allocations, bytes) per packet per slot over `packets` runs of `step`.
fn count(f: &mut Fanout, n: usize, packets: u64, step: Step) -> (f64, f64) {
    let (a0, b0) = (ALLOCS.load(Relaxed), BYTES.load(Relaxed));
    for _ in 0..packets {
        step(f, n);
    }
    let per = (packets * n as u64) as f64;
    let (a1, b1) = (ALLOCS.load(Relaxed), BYTES.load(Relaxed));
    ((a1 - a0) as f64 / per, (b1 - b0) as f64 / per)
}

fn report_allocations(f: &mut Fanout) {
    let steps: [(&str, Step); 3] = [
        ("forward", |f, n| f.forward_only(n)),
        ("forward_header + write_packet + seal", |f, n| {
            f.forward_seal(n)
        }),
        ("forward + write_rtp + poll_transmit", |f, n| {
            f.forward_write(n, true)
        }),
    ];
    let mut lines = Vec::new();
    for n in SLOT_COUNTS {
        for (name, step) in steps {
            let (allocs, bytes) = count(f, n, 1000, step);
            lines.push(format!(
                "allocations per packet per slot, {n:>3} slots, {name}: {allocs:.2} ({bytes:.0} B)"
            ));
        }
    }
    for l in lines {
        println!("{l}");
    }
}

fn forward(c: &mut Criterion) {
    let mut f = Fanout::new(
        *SLOT_COUNTS.last().unwrap_or(&1),
        Bytes::from(vec![0x5a; 1200]),
    );
    report_allocations(&mut f);
    let mut g = c.benchmark_group("forward");
    for n in SLOT_COUNTS {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("sealed", n), &n, |b, &n| {
            b.iter(|| f.forward_seal(n))
        });
        g.bench_with_input(BenchmarkId::new("stack", n), &n, |b, &n| {
            b.iter(|| f.forward_write(n, true))
        });
        g.bench_with_input(BenchmarkId::new("forward_only", n), &n, |b, &n| {
            b.iter(|| f.forward_only(n))
        });
    }
    g.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
