//! Tests of `forward::munger` (properties over generated input).

use super::*;
use proptest::prelude::*;
use std::collections::HashSet;

/// One source's stretch of the stream: its bases, whether the slot switches explicitly
/// (keeping the SSRC), and per packet in sequence order: a fate roll (0: lost upstream,
/// 1-2: deliberately dropped, 3: sent and followed by padding when it is the newest, else
/// sent), a roll to swap it with the next one on the wire, and its timestamp increment.
type Segment = (u16, u32, bool, Vec<(u8, u8, u32)>);

fn segments() -> impl Strategy<Value = Vec<Segment>> {
    let packets = proptest::collection::vec((0u8..10, 0u8..10, 0u32..4000), 1..300);
    proptest::collection::vec((any::<u16>(), any::<u32>(), any::<bool>(), packets), 1..6)
}

proptest! {
    #[test]
    fn drops_leave_no_gap_loss_does_and_nothing_repeats_or_goes_back(segs in segments()) {
        check(&segs)?;
    }
}

/// Feeds the segments through one munger, asserting on every verdict and on the NACK
/// mapping at the end of each segment.
fn check(segs: &[Segment]) -> Result<(), TestCaseError> {
    let mut m = Munger::new();
    let mut seen = HashSet::new();
    let mut newest: Option<(u16, u32)> = None; // highest seq and ts sent so far
    let (mut now, mut ssrc) = (0u64, 0u32);
    for (seg, (seq0, ts0, explicit, packets)) in segs.iter().enumerate() {
        if *explicit {
            m.switch_source();
        } else {
            ssrc += 1;
        }
        let ts_in: Vec<u32> = packets
            .iter()
            .scan(*ts0, |ts, p| {
                *ts = ts.wrapping_add(p.2);
                Some(*ts)
            })
            .collect();
        let mut order: Vec<usize> = (0..packets.len()).collect();
        let mut i = 0;
        while i + 1 < order.len() {
            if packets[i].1 < 2 {
                order.swap(i, i + 1);
                i += 1;
            }
            i += 1;
        }
        // Per index: the viewer-side seq and ts it was sent with, or whether it was a
        // deliberate drop that closed its gap.
        let mut sent: Vec<Option<(u16, u32)>> = vec![None; packets.len()];
        let mut skip = vec![false; packets.len()];
        let mut dropped = vec![false; packets.len()];
        // Per index: padding packets inserted right after it; and the insertion points.
        let mut pads = vec![0usize; packets.len()];
        let mut pad_points: Vec<usize> = Vec::new();
        let mut padding = HashSet::new();
        let mut head: Option<usize> = None;
        for &k in &order {
            let seq = seq0.wrapping_add(k as u16);
            let fate = if head.is_none() { 9 } else { packets[k].0 };
            now += 1500;
            let in_order = head.is_none_or(|h| k > h);
            match fate {
                0 => continue,
                1 | 2 => {
                    m.drop_packet(ssrc, seq);
                    dropped[k] = true;
                    skip[k] = in_order;
                }
                _ => match m.rewrite(ssrc, seq, ts_in[k], now) {
                    Verdict::Forward { seq: out, ts } => {
                        prop_assert!(seen.insert(out), "segment {seg}: {out} sent twice");
                        if let Some((top, top_ts)) = newest.filter(|_| in_order) {
                            prop_assert!(seq_after(out, top), "segment {seg}: {out} after {top}");
                            prop_assert!(
                                !ts_after(top_ts, ts),
                                "segment {seg}: ts {ts} before {top_ts}"
                            );
                            if head.is_none() {
                                prop_assert_eq!(
                                    out,
                                    top.wrapping_add(1),
                                    "segment {}: switch",
                                    seg
                                );
                            }
                        }
                        if newest.is_none_or(|(top, _)| seq_after(out, top)) {
                            newest = Some((out, ts));
                        }
                        sent[k] = Some((out, ts));
                        if fate == 3 && in_order {
                            for _ in 0..=packets[k].1 % 3 {
                                let (pad, pad_ts) = m.pad().ok_or_else(|| {
                                    TestCaseError::fail(format!("segment {seg}: no pad after {k}"))
                                })?;
                                prop_assert!(seen.insert(pad), "segment {seg}: pad {pad} twice");
                                let (top, top_ts) = newest.unwrap_or((pad, pad_ts));
                                prop_assert_eq!(pad, top.wrapping_add(1), "segment {}: pad", seg);
                                prop_assert_eq!(pad_ts, top_ts);
                                newest = Some((pad, pad_ts));
                                padding.insert(pad);
                                pads[k] += 1;
                            }
                            if pad_points.last() != Some(&k) {
                                pad_points.push(k);
                            }
                        }
                    }
                    Verdict::Drop => {
                        prop_assert!(k < head.unwrap_or(0), "segment {seg}: {k} refused")
                    }
                },
            }
            head = Some(head.map_or(k, |h| h.max(k)));
        }
        // Between two packets sent, the viewer's numbers differ by the input distance
        // less the drops that closed their gap, plus the paddings inserted between them:
        // loss and late drops stay visible.
        let numbered: Vec<(usize, u16)> = sent
            .iter()
            .enumerate()
            .filter_map(|(k, s)| s.map(|(out, _)| (k, out)))
            .collect();
        for w in numbered.windows(2) {
            let ((i, a), (j, b)) = (w[0], w[1]);
            let skips = (i + 1..j).filter(|k| skip[*k]).count();
            let padded: usize = pads[i..j].iter().sum();
            prop_assert_eq!(
                b.wrapping_sub(a) as usize,
                j - i - skips + padded,
                "segment {}: {} -> {}",
                seg,
                i,
                j
            );
        }
        // NACKs map back to what was sent, never to a deliberate drop.
        let first = numbered.first().map(|(_, out)| *out).unwrap_or(0);
        let last = numbered.last().map(|(_, out)| *out).unwrap_or(0);
        for out in (0..=last.wrapping_sub(first)).map(|d| first.wrapping_add(d)) {
            if let Some(seq) = m.source_seq(out) {
                prop_assert!(!padding.contains(&out), "segment {seg}: NACK of pad {out}");
                let k = seq.wrapping_sub(*seq0) as usize;
                prop_assert!(
                    k < packets.len() && !dropped[k],
                    "segment {seg}: NACK {out} -> {seq}"
                );
                if let Some((sent_as, ts)) = sent[k] {
                    prop_assert_eq!(sent_as, out);
                    prop_assert_eq!(m.resend(seq, ts_in[k]), (sent_as, ts));
                }
            }
        }
        let head = head.unwrap_or(0);
        // Packets at or before a forgotten insertion point can no longer be numbered.
        let forgotten = pad_points
            .len()
            .checked_sub(PAD_POINTS + 1)
            .map(|i| pad_points[i]);
        for (k, s) in sent
            .iter()
            .enumerate()
            .filter(|(k, _)| head.saturating_sub(*k) < usize::from(DROP_WINDOW))
            .filter(|(k, _)| forgotten.is_none_or(|f| *k > f))
        {
            if let Some((out, _)) = s {
                prop_assert_eq!(m.source_seq(*out), Some(seq0.wrapping_add(k as u16)));
            }
        }
    }
    Ok(())
}
