//! Tests of `forward::munger`.

use super::*;

/// One step of a scenario: a packet, or an explicit switch.
#[derive(Clone, Copy)]
enum Step {
    /// (source, seq, ts, now_ticks) and the expected verdict.
    Pkt(u32, u16, u32, u64, Verdict),
    Switch,
    /// (source, seq) deliberately not sent.
    Skip(u32, u16),
    /// A NACK of this viewer-side seq, and the source seq it maps back to.
    Nack(u16, Option<u16>),
}
use Step::{Nack, Pkt, Skip, Switch};

const fn fwd(seq: u16, ts: u32) -> Verdict {
    Verdict::Forward { seq, ts }
}
const DROP: Verdict = Verdict::Drop;

#[test]
fn an_aligned_switch_keeps_the_picture_timing_and_a_wild_one_falls_back() {
    fn fwd(v: Verdict) -> (u16, u32) {
        match v {
            Verdict::Forward { seq, ts } => (seq, ts),
            Verdict::Drop => panic!("dropped"),
        }
    }
    // Layer A: ts 1000 sent at tick 0; layer B's timeline is A's minus 500_000.
    let mut m = Munger::new();
    assert_eq!(fwd(m.rewrite(1, 10, 1000, 0)), (10, 1000));
    assert_eq!(fwd(m.rewrite(1, 11, 4000, 3000)), (11, 4000));
    // B's frame captured with A's ts 7000 arrives 3300 ticks later (a little jitter).
    m.switch_source_aligned(Some(500_000));
    assert_eq!(
        fwd(m.rewrite(2, 900, 7000u32.wrapping_sub(500_000), 6300)),
        (12, 7000)
    );
    assert_eq!(
        fwd(m.rewrite(2, 901, 10_000u32.wrapping_sub(500_000), 9300)),
        (13, 10_000)
    );
    // An alignment that would jump seconds ahead is distrusted: arrival time decides.
    m.switch_source_aligned(Some(9_000_000));
    assert_eq!(fwd(m.rewrite(3, 5, 13_000, 12_300)), (14, 10_000 + 3000));
    // One that would go backwards too.
    m.switch_source_aligned(Some(0u32.wrapping_sub(90_000)));
    assert_eq!(fwd(m.rewrite(4, 7, 16_000, 15_300)), (15, 13_000 + 3000));
}

#[test]
fn source_seq_inverts_the_current_offset_and_refuses_older_sources() {
    let mut m = Munger::new();
    assert_eq!(m.source_seq(5), None, "nothing sent yet");
    assert_eq!(m.rewrite(1, 100, 1000, 0), fwd(100, 1000));
    assert_eq!(m.rewrite(1, 101, 1000, 0), fwd(101, 1000));
    assert_eq!(m.source_seq(101), Some(101));
    assert_eq!(m.source_seq(99), None, "before the first packet");
    m.switch_source();
    assert_eq!(m.source_seq(101), None, "a switch is pending");
    assert_eq!(m.rewrite(2, 65_535, 50, 10), fwd(102, 1010));
    assert_eq!(m.rewrite(2, 0, 60, 10), fwd(103, 1020));
    assert_eq!(m.source_seq(103), Some(0), "across the source's wrap");
    assert_eq!(m.source_seq(102), Some(65_535));
    assert_eq!(m.source_seq(101), None, "sent for the previous source");
    assert_eq!(m.resend(0, 60), (103, 1020));
}

fn run(name: &str, steps: &[Step]) {
    let mut m = Munger::new();
    for (i, step) in steps.iter().enumerate() {
        match *step {
            Switch => m.switch_source(),
            Skip(source, seq) => m.drop_packet(source, seq),
            Nack(out, want) => {
                assert_eq!(m.source_seq(out), want, "{name}: step {i}: NACK {out}");
                if let Some(seq) = want {
                    assert_eq!(m.resend(seq, 0).0, out, "{name}: step {i}: resend {seq}");
                }
            }
            Pkt(source, seq, ts, now, want) => {
                let got = m.rewrite(source, seq, ts, now);
                assert_eq!(got, want, "{name}: step {i} ({source}, {seq}, {ts}, {now})");
            }
        }
    }
}

#[test]
fn scenarios() {
    let table: &[(&str, &[Step])] = &[
        (
            "first packet passes unchanged, then in + 0",
            &[
                Pkt(1, 100, 5000, 0, fwd(100, 5000)),
                Pkt(1, 101, 8000, 10, fwd(101, 8000)),
            ],
        ),
        (
            "a packet older than the very first one is dropped",
            &[
                Pkt(1, 100, 5000, 0, fwd(100, 5000)),
                Pkt(1, 99, 4000, 1, DROP),
                Pkt(1, 102, 7000, 2, fwd(102, 7000)),
                Pkt(1, 101, 6000, 3, fwd(101, 6000)),
            ],
        ),
        (
            "sequence wraps 65535 -> 0 within a source",
            &[
                Pkt(1, 65534, 10, 0, fwd(65534, 10)),
                Pkt(1, 65535, 20, 1, fwd(65535, 20)),
                Pkt(1, 0, 30, 2, fwd(0, 30)),
                Pkt(1, 1, 40, 3, fwd(1, 40)),
            ],
        ),
        (
            "timestamp wraps at u32::MAX within a source",
            &[
                Pkt(1, 7, u32::MAX - 1499, 0, fwd(7, u32::MAX - 1499)),
                Pkt(1, 8, u32::MAX, 1, fwd(8, u32::MAX)),
                Pkt(1, 9, 1500, 2, fwd(9, 1500)),
            ],
        ),
        (
            "reordering and loss within a source are preserved",
            &[
                Pkt(1, 10, 100, 0, fwd(10, 100)),
                Pkt(1, 13, 400, 3, fwd(13, 400)),
                Pkt(1, 12, 300, 4, fwd(12, 300)),
                Pkt(1, 11, 200, 5, fwd(11, 200)),
                Pkt(1, 15, 600, 6, fwd(15, 600)),
            ],
        ),
        (
            "reordering across the wrap within a source",
            &[
                Pkt(1, 65535, 0, 0, fwd(65535, 0)),
                Pkt(1, 1, 2, 1, fwd(1, 2)),
                Pkt(1, 0, 1, 2, fwd(0, 1)),
            ],
        ),
        (
            "a duplicate maps to the same numbers",
            &[
                Pkt(1, 50, 900, 0, fwd(50, 900)),
                Pkt(1, 51, 930, 1, fwd(51, 930)),
                Pkt(1, 51, 930, 2, fwd(51, 930)),
            ],
        ),
        (
            "switch continues seq and advances ts by elapsed ticks",
            &[
                Pkt(1, 100, 1000, 0, fwd(100, 1000)),
                Pkt(2, 9000, 777, 3600, fwd(101, 4600)),
                Pkt(2, 9001, 3777, 3700, fwd(102, 7600)),
            ],
        ),
        (
            "elapsed time counts from when the highest ts was first sent",
            &[
                Pkt(1, 1, 1000, 100, fwd(1, 1000)),
                Pkt(1, 2, 1000, 150, fwd(2, 1000)),
                Pkt(2, 0, 0, 400, fwd(3, 1300)),
            ],
        ),
        (
            "switch with no elapsed time still advances ts by 1",
            &[
                Pkt(1, 100, 1000, 50, fwd(100, 1000)),
                Pkt(2, 5, 5, 50, fwd(101, 1001)),
            ],
        ),
        (
            "switch with a clock that went backwards advances ts by 1",
            &[
                Pkt(1, 100, 1000, 50, fwd(100, 1000)),
                Pkt(2, 5, 5, 10, fwd(101, 1001)),
            ],
        ),
        (
            "switch after a wrap of the output",
            &[
                Pkt(1, 65535, u32::MAX, 0, fwd(65535, u32::MAX)),
                Pkt(2, 40000, 123, 90, fwd(0, 89)),
                Pkt(2, 40001, 3123, 100, fwd(1, 3089)),
            ],
        ),
        (
            "switch to a source whose seq and ts are lower",
            &[
                Pkt(1, 30000, 3_000_000, 0, fwd(30000, 3_000_000)),
                Pkt(1, 30001, 3_003_000, 3000, fwd(30001, 3_003_000)),
                Pkt(2, 5, 10, 6000, fwd(30002, 3_006_000)),
                Pkt(2, 6, 3010, 9000, fwd(30003, 3_009_000)),
            ],
        ),
        (
            "late packet of the replaced source is dropped",
            &[
                Pkt(1, 10, 100, 0, fwd(10, 100)),
                Pkt(2, 500, 0, 10, fwd(11, 110)),
                Pkt(1, 9, 90, 11, DROP),
                Pkt(1, 11, 110, 12, DROP),
                Pkt(2, 501, 5, 15, fwd(12, 115)),
            ],
        ),
        (
            "late packet of the old source after an explicit switch is dropped",
            &[
                Pkt(1, 10, 100, 0, fwd(10, 100)),
                Switch,
                Pkt(2, 70, 7, 20, fwd(11, 120)),
                Pkt(1, 11, 110, 21, DROP),
            ],
        ),
        (
            "a packet older than the switch point is dropped",
            &[
                Pkt(1, 10, 100, 0, fwd(10, 100)),
                Pkt(2, 500, 0, 10, fwd(11, 110)),
                Pkt(2, 499, 0, 11, DROP),
                Pkt(2, 502, 6, 12, fwd(13, 116)),
                Pkt(2, 501, 3, 13, fwd(12, 113)),
                Pkt(2, 499, 0, 14, DROP),
            ],
        ),
        (
            "older-than-switch check works across the input wrap",
            &[
                Pkt(1, 10, 100, 0, fwd(10, 100)),
                Pkt(2, 0, 0, 10, fwd(11, 110)),
                Pkt(2, 65535, 0, 11, DROP),
                Pkt(2, 2, 0, 12, fwd(13, 110)),
                Pkt(2, 1, 0, 13, fwd(12, 110)),
            ],
        ),
        (
            "explicit switch with the same source id rebases",
            &[
                Pkt(7, 1000, 50_000, 0, fwd(1000, 50_000)),
                Switch,
                Pkt(7, 3, 9, 900, fwd(1001, 50_900)),
                Pkt(7, 4, 909, 1800, fwd(1002, 51_800)),
                Pkt(7, 2, 0, 1801, DROP),
            ],
        ),
        (
            "explicit switch before the first packet changes nothing",
            &[
                Switch,
                Pkt(3, 42, 4200, 0, fwd(42, 4200)),
                Pkt(3, 43, 4300, 1, fwd(43, 4300)),
            ],
        ),
        (
            "going back to a replaced source needs an explicit switch",
            &[
                Pkt(1, 10, 100, 0, fwd(10, 100)),
                Pkt(2, 20, 200, 10, fwd(11, 110)),
                Pkt(1, 12, 120, 20, DROP),
                Switch,
                Pkt(1, 12, 120, 30, fwd(12, 130)),
                Pkt(2, 21, 210, 40, DROP),
            ],
        ),
        (
            "a third source switches implicitly",
            &[
                Pkt(1, 10, 100, 0, fwd(10, 100)),
                Pkt(2, 20, 200, 10, fwd(11, 110)),
                Pkt(3, 30, 300, 20, fwd(12, 120)),
                Pkt(2, 21, 210, 21, DROP),
            ],
        ),
        (
            "switch bases on the highest output, not the last one",
            &[
                Pkt(1, 10, 1000, 0, fwd(10, 1000)),
                Pkt(1, 12, 1200, 2, fwd(12, 1200)),
                Pkt(1, 11, 1100, 3, fwd(11, 1100)),
                Pkt(2, 0, 0, 5, fwd(13, 1203)),
            ],
        ),
        (
            "huge idle gap is clamped so ts still moves forwards",
            &[
                Pkt(1, 1, 0, 0, fwd(1, 0)),
                Pkt(2, 1, 0, u64::MAX, fwd(2, i32::MAX as u32)),
            ],
        ),
    ];
    for (name, steps) in table {
        run(name, steps);
    }
}

#[test]
fn deliberate_drops() {
    let table: &[(&str, &[Step])] = &[
        (
            "drops in order close their gap",
            &[
                Pkt(1, 10, 100, 0, fwd(10, 100)),
                Skip(1, 11),
                Nack(10, Some(10)),
                Nack(11, None),
                Pkt(1, 12, 300, 2, fwd(11, 300)),
                Skip(1, 13),
                Skip(1, 14),
                Pkt(1, 15, 600, 5, fwd(12, 600)),
                Pkt(1, 15, 600, 6, fwd(12, 600)),
                Pkt(1, 14, 500, 7, DROP),
                Nack(12, Some(15)),
                Nack(11, Some(12)),
                Nack(10, Some(10)),
                Nack(13, None),
            ],
        ),
        (
            "real loss still shows as a gap, and fills in when it arrives late",
            &[
                Pkt(1, 10, 100, 0, fwd(10, 100)),
                Skip(1, 12),
                Pkt(1, 13, 300, 3, fwd(12, 300)),
                Nack(11, Some(11)),
                Pkt(1, 11, 110, 4, fwd(11, 110)),
                Skip(1, 14),
                Pkt(1, 16, 600, 6, fwd(14, 600)),
                Nack(13, Some(15)),
                Pkt(1, 15, 500, 7, fwd(13, 500)),
                Nack(12, Some(13)),
            ],
        ),
        (
            "a late drop leaves its gap, which maps back to nothing",
            &[
                Pkt(1, 20, 200, 0, fwd(20, 200)),
                Pkt(1, 22, 220, 2, fwd(22, 220)),
                Skip(1, 21),
                Nack(21, None),
                Pkt(1, 21, 210, 3, DROP),
                Skip(1, 22),
                Nack(22, Some(22)),
                Pkt(1, 23, 230, 4, fwd(23, 230)),
            ],
        ),
        (
            "drops across the sequence wrap",
            &[
                Pkt(1, 65534, 10, 0, fwd(65534, 10)),
                Skip(1, 65535),
                Pkt(1, 0, 30, 2, fwd(65535, 30)),
                Skip(1, 1),
                Pkt(1, 3, 50, 4, fwd(1, 50)),
                Pkt(1, 2, 40, 5, fwd(0, 40)),
                Nack(65535, Some(0)),
                Nack(0, Some(2)),
                Nack(1, Some(3)),
            ],
        ),
        (
            "trailing drops, then a switch continues right after the last sent",
            &[
                Pkt(1, 10, 1000, 0, fwd(10, 1000)),
                Skip(1, 11),
                Skip(1, 12),
                Skip(2, 499),
                Pkt(2, 500, 0, 90, fwd(11, 1090)),
                Nack(11, Some(500)),
                Nack(10, None),
                Skip(1, 13),
                Pkt(2, 501, 10, 91, fwd(12, 1100)),
                Pkt(2, 499, 0, 92, DROP),
            ],
        ),
        (
            "drops after the switch count for the new source only",
            &[
                Pkt(1, 10, 1000, 0, fwd(10, 1000)),
                Switch,
                Skip(1, 11),
                Pkt(1, 40, 50, 10, fwd(11, 1010)),
                Skip(1, 41),
                Pkt(1, 42, 60, 11, fwd(12, 1020)),
                Nack(12, Some(42)),
                Nack(11, Some(40)),
            ],
        ),
    ];
    for (name, steps) in table {
        run(name, steps);
    }
}

#[test]
fn beyond_the_drop_window_only_packets_newer_than_every_forgotten_drop_are_numbered() {
    let mut m = Munger::new();
    assert_eq!(m.rewrite(1, 0, 0, 0), fwd(0, 0));
    m.drop_packet(1, 1);
    for seq in (2..=300).filter(|s| *s != 100) {
        assert_eq!(m.rewrite(1, seq, 0, 0), fwd(seq - 1, 0), "{seq}");
    }
    // 100 was lost; it comes 200 numbers late, well past the window, yet after the skip.
    assert_eq!(m.rewrite(1, 100, 0, 0), fwd(99, 0));
    assert_eq!(m.source_seq(99), Some(100));
    assert_eq!(m.resend(100, 0), (99, 0));
    // 0 came before a skip the window no longer holds: its number cannot be told.
    assert_eq!(m.rewrite(1, 0, 0, 0), DROP);
    assert_eq!(m.source_seq(0), None);
}

#[test]
fn switch_guard_expires_after_half_the_sequence_space() {
    let mut m = Munger::new();
    assert_eq!(m.rewrite(1, 0, 0, 0), fwd(0, 0));
    assert_eq!(m.rewrite(2, 1000, 0, 1), fwd(1, 1));
    // Walk the new source far past its switch point.
    let mut seq = 1000u16;
    for _ in 0..40_000 {
        seq = seq.wrapping_add(1);
        assert!(matches!(m.rewrite(2, seq, 0, 2), Verdict::Forward { .. }));
    }
    // A packet 100 behind the head is now an ordinary reordered packet, even though its
    // number (taken naively) lies "before" 1000 in serial order.
    let late = seq.wrapping_sub(100);
    let want = late.wrapping_add(1u16.wrapping_sub(1000));
    assert_eq!(m.rewrite(2, late, 0, 3), fwd(want, 1));
}

#[test]
fn output_never_goes_backwards_or_repeats_across_many_switches() {
    let mut m = Munger::new();
    let mut last: Option<(u16, u32)> = None;
    let mut now = 0u64;
    // Sources with awkward bases: near wraps, equal, and lower than the previous one.
    let bases: [(u32, u16, u32); 6] = [
        (1, 65530, u32::MAX - 6000),
        (2, 0, 0),
        (3, 65535, 17),
        (4, 32768, 1 << 31),
        (4, 100, 100),
        (5, 1, u32::MAX),
    ];
    for (i, (source, seq0, ts0)) in bases.iter().enumerate() {
        if i == 4 {
            m.switch_source();
        }
        for k in 0..20u16 {
            now += 1500;
            let v = m.rewrite(
                *source,
                seq0.wrapping_add(k),
                ts0.wrapping_add(3000 * u32::from(k)),
                now,
            );
            let Verdict::Forward { seq, ts } = v else {
                panic!("source {source} packet {k} dropped");
            };
            if let Some((ls, lt)) = last {
                assert_eq!(seq, ls.wrapping_add(1), "source {source} packet {k}");
                assert!(
                    ts_after(ts, lt),
                    "ts went backwards at source {source} packet {k}"
                );
            }
            last = Some((seq, ts));
        }
    }
}

#[test]
fn serial_comparisons() {
    let table: &[(u16, u16, bool)] = &[
        (1, 0, true),
        (0, 1, false),
        (0, 65535, true),
        (65535, 0, false),
        (5, 5, false),
        (0x7fff, 0, true),
        (0x8000, 0, false),
    ];
    for (a, b, want) in table {
        assert_eq!(seq_after(*a, *b), *want, "seq_after({a}, {b})");
    }
    let table: &[(u32, u32, bool)] = &[
        (0, u32::MAX, true),
        (u32::MAX, 0, false),
        (0x7fff_ffff, 0, true),
        (0x8000_0000, 0, false),
    ];
    for (a, b, want) in table {
        assert_eq!(ts_after(*a, *b), *want, "ts_after({a}, {b})");
    }
}
