//! Cost of routing one datagram on the shared media socket (`engine::demux`).
//!
//! A demux holding 1000 sessions, each with one confirmed remote address. `known_address`:
//! media from a bound address (the per-packet case). `stun_binding`: a binding request from an
//! address not bound yet, routed by its USERNAME (the per-new-candidate case).
//! `stun_local_ufrag`: the USERNAME scan alone. Run: `cargo bench --bench demux`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};

use parley::engine::shard::demux::{stun_local_ufrag, Demux};

const SESSIONS: u64 = 1000;

fn addr(i: u64) -> SocketAddr {
    SocketAddr::from((
        Ipv4Addr::from(0x0a00_0000 + i as u32),
        40_000 + (i % 20_000) as u16,
    ))
}

/// A binding request shaped like a browser's: USERNAME first, then PRIORITY, ICE-CONTROLLING,
/// USE-CANDIDATE, MESSAGE-INTEGRITY and FINGERPRINT (their values are not checked here).
fn binding_request(username: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    let mut attr = |typ: u16, value: &[u8]| {
        attrs.extend_from_slice(&typ.to_be_bytes());
        attrs.extend_from_slice(&(value.len() as u16).to_be_bytes());
        attrs.extend_from_slice(value);
        attrs.resize(attrs.len().div_ceil(4) * 4, 0);
    };
    attr(0x0006, username.as_bytes());
    attr(0x0024, &0x6e00_1eff_u32.to_be_bytes());
    attr(0x802A, &[7; 8]);
    attr(0x0025, &[]);
    attr(0x0008, &[0xab; 20]);
    attr(0x8028, &[1, 2, 3, 4]);
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    m.extend_from_slice(&[9; 12]);
    m.extend_from_slice(&attrs);
    m
}

fn demux(c: &mut Criterion) {
    let mut d = Demux::default();
    for s in 0..SESSIONS {
        d.add_session(s, &format!("u{s:07}"));
        d.confirm(s, addr(s));
    }
    let rtp = [0x80u8; 1200];
    let stun = binding_request("u0000500:client");
    let (known, fresh) = (addr(SESSIONS / 2), addr(SESSIONS * 10));
    assert_eq!(d.route(known, &rtp), Some(SESSIONS / 2));
    assert_eq!(d.route(fresh, &rtp), None, "not bound");
    assert_eq!(d.route(fresh, &stun), Some(500));
    assert_eq!(d.route(fresh, &rtp), None, "a request alone binds nothing");

    let mut g = c.benchmark_group("demux");
    g.throughput(Throughput::Elements(1));
    g.bench_function("known_address", |b| {
        b.iter(|| d.route(black_box(known), black_box(&rtp)))
    });
    g.bench_function("stun_binding", |b| {
        b.iter(|| d.route(black_box(fresh), black_box(&stun)))
    });
    g.bench_function("stun_local_ufrag", |b| {
        b.iter(|| stun_local_ufrag(black_box(&stun)).map(str::len))
    });
    g.finish();
    d.remove_session(0);
    assert_eq!(d.route(addr(0), &rtp), None);
}

criterion_group!(benches, demux);
criterion_main!(benches);
