//! Per-viewer RTP sequence-number and timestamp rewriting ("munging").
//!
//! A viewer's outgoing stream keeps one SSRC for its whole life, while the publisher feeding
//! it may be replaced (a reconnect brings new SSRC, sequence and timestamp bases). A
//! [`Munger`] owns the mapping from the current source's numbering to the viewer's numbering,
//! and guarantees that across source switches the viewer never sees its sequence number or
//! timestamp go backwards and never sees a sequence number twice.
//!
//! Rules:
//! - The first packet ever passes through unchanged (both offsets are 0); it counts as a
//!   switch point, so packets older than it are dropped like those older than any switch.
//! - Within one source, `out = in + offset` (wrapping, less the deliberate drops below), so
//!   loss, reordering and duplicates upstream show up identically downstream (a viewer's
//!   NACKs and jitter buffer need that).
//! - A packet the forwarder deliberately does not send ([`Munger::drop_packet`], e.g. a frame
//!   above the viewer's temporal layer) leaves no gap: every later packet of the source is
//!   sent one number lower. So `out = in + offset - (deliberate drops before in)`, and a
//!   packet that arrives late still gets the number its position implies. A drop reported
//!   for a packet older than the newest one cannot close its gap (later numbers are out); its
//!   number then reads as lost, and the munger neither sends nor maps it back. Drops are
//!   remembered for the last [`DROP_WINDOW`] sequence numbers; a packet no newer than a
//!   forgotten drop is neither sent nor mapped back, since it can no longer be told apart.
//!   Genuine loss upstream still shows as a gap, so the viewer NACKs it.
//! - On a switch, the new source's first packet gets `seq = highest_out_seq + 1` and
//!   `ts = highest_out_ts + max(1, ticks elapsed since that timestamp was first sent)`.
//!   Packets of the new source older than that first packet are dropped: they would land
//!   on or before sequence numbers the viewer has already seen.
//! - A switch happens on [`Munger::switch_source`] (the next packet starts a new source,
//!   even with an unchanged SSRC) or when a packet names a source that is neither the current
//!   one nor the one it replaced. Packets naming the replaced source are dropped (late packets
//!   of the old publisher); going back to a replaced source needs an explicit switch.
//!
//! All comparisons are RFC 1982 serial-number comparisons, so 16-bit sequence numbers and
//! 32-bit timestamps wrap freely. Timestamps in decode order are assumed non-decreasing
//! (no B-frames), as for every codec WebRTC negotiates.
//!
//! This module must never allocate, read a clock, or panic: it runs once per packet per
//! viewer, and `now_ticks` comes from the caller in the stream's RTP clock units.

/// How far a switch may advance the timestamp: more would read as a backwards jump under
/// serial-number comparison.
const MAX_TS_GAP: u64 = i32::MAX as u64;

/// `since_switch` saturates here: once the stream has moved half the sequence space past the
/// switch, "before the switch" can no longer be told apart from "after it", and no packet is
/// dropped for that reason any more.
const SEQ_HALF: u16 = 0x8000;

/// How many recent sequence numbers of the current source the munger remembers deliberate
/// drops for (one bit each in a `u128`).
pub const DROP_WINDOW: u16 = 128;

/// How far past twice the arrival-time gap an aligned switch timestamp may land (RTP ticks:
/// 50 ms at 90 kHz) before the alignment is distrusted.
const ALIGN_SLACK: u64 = 4500;

/// What to do with one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it with these header values.
    Forward {
        /// The viewer-side sequence number.
        seq: u16,
        /// The viewer-side RTP timestamp.
        ts: u32,
    },
    /// Do not send it: a late packet of a replaced source, older than the switch point, a
    /// copy of a packet deliberately dropped, or no newer than a forgotten drop.
    Drop,
}

/// The sequence/timestamp rewriter of one viewer stream.
#[derive(Clone, Debug, Default)]
pub struct Munger {
    state: Option<State>,
    switch_pending: bool,
    /// For the pending switch: what to add to the new source's timestamps to put them on the
    /// current source's timeline (from the two streams' sender reports).
    align: Option<u32>,
}

#[derive(Clone, Copy, Debug)]
struct State {
    /// The source being forwarded.
    source: u32,
    /// The source it replaced, whose stragglers are dropped.
    replaced: Option<u32>,
    seq_offset: u16,
    ts_offset: u32,
    /// Highest input sequence number of the current source.
    highest_in_seq: u16,
    /// How far `highest_in_seq` is past the source's first packet (saturating at `SEQ_HALF`).
    since_switch: u16,
    /// Highest sequence number and timestamp sent, across sources.
    highest_out_seq: u16,
    highest_out_ts: u32,
    /// When `highest_out_ts` was first sent, in RTP clock ticks.
    highest_ts_ticks: u64,
    /// Deliberate drops that closed their gap: bit `i` is `highest_in_seq - i`.
    skipped: u128,
    /// Deliberate drops that came too late to close their gap, by the same bits.
    refused: u128,
    /// How far behind `highest_in_seq` the newest drop that left the window is (saturating;
    /// `u16::MAX` when none has): it and older packets are neither sent nor mapped back.
    evicted_drop: u16,
}

impl State {
    /// A fresh state whose first packet `seq`, `ts` is sent as `out_seq`, `out_ts`.
    fn new(source: u32, seq: u16, ts: u32, out_seq: u16, out_ts: u32, now_ticks: u64) -> Self {
        State {
            source,
            replaced: None,
            seq_offset: out_seq.wrapping_sub(seq),
            ts_offset: out_ts.wrapping_sub(ts),
            highest_in_seq: seq,
            since_switch: 0,
            highest_out_seq: out_seq,
            highest_out_ts: out_ts,
            highest_ts_ticks: now_ticks,
            skipped: 0,
            refused: 0,
            evicted_drop: u16::MAX,
        }
    }

    /// Moves the head of the current source `ahead` (at least 1) numbers on, to `seq`.
    fn advance(&mut self, seq: u16, ahead: u16) {
        self.since_switch = self.since_switch.saturating_add(ahead).min(SEQ_HALF);
        self.highest_in_seq = seq;
        self.evicted_drop = self.evicted_drop.saturating_add(ahead);
        let drops = self.skipped | self.refused;
        let (evicted, skipped, refused) = if ahead >= DROP_WINDOW {
            (drops, 0, 0)
        } else {
            let shift = u32::from(ahead);
            let evicted = drops & !(u128::MAX >> shift);
            (evicted, self.skipped << shift, self.refused << shift)
        };
        if evicted != 0 {
            // The lowest bit evicted is the newest of those drops.
            let behind = evicted.trailing_zeros() as u16;
            self.evicted_drop = behind.saturating_add(ahead);
        }
        self.skipped = skipped;
        self.refused = refused;
    }

    /// How many skipped packets are newer than the one `behind` numbers behind the head, or
    /// None when it is no newer than a forgotten drop.
    fn skips_after(&self, behind: u16) -> Option<u16> {
        if behind >= self.evicted_drop {
            return None;
        }
        let newer = if behind >= DROP_WINDOW {
            self.skipped
        } else {
            self.skipped & ((1u128 << behind) - 1)
        };
        Some(newer.count_ones() as u16)
    }

    /// The packet `behind` numbers behind the head was deliberately dropped.
    fn deliberately_dropped(&self, behind: u16) -> bool {
        behind < DROP_WINDOW && ((self.skipped | self.refused) >> behind) & 1 == 1
    }

    /// The viewer-side number of the current source's packet `seq`, `behind` numbers behind
    /// the head, or None when it must not be sent: older than the switch point, deliberately
    /// dropped, or no newer than a forgotten drop.
    fn out_seq(&self, seq: u16, behind: u16) -> Option<u16> {
        if behind > self.since_switch || self.deliberately_dropped(behind) {
            return None;
        }
        let skips = self.skips_after(behind)?;
        Some(seq.wrapping_add(self.seq_offset).wrapping_add(skips))
    }

    /// How far behind the head the packet sent as `head_out - out_behind` is, where
    /// `head_out` is the number the head maps to: the `behind` that is not a skip and has
    /// `behind - (skips newer than it) = out_behind`.
    fn behind_for_out(&self, out_behind: u16) -> u16 {
        // The least fixed point of `behind = out_behind + skips in 0..=behind`, found by
        // iteration: each step adds the skips the last guess stepped over (at most 128).
        let mut behind = out_behind;
        loop {
            let upto = behind.saturating_add(1);
            let skips = if upto >= DROP_WINDOW {
                self.skipped
            } else {
                self.skipped & ((1u128 << upto) - 1)
            };
            let next = out_behind.saturating_add(skips.count_ones() as u16);
            if next == behind {
                return behind;
            }
            behind = next;
        }
    }
}

/// `a` is after `b` in RFC 1982 serial-number order (16 bits).
fn seq_after(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) > 0
}

/// `a` is after `b` in RFC 1982 serial-number order (32 bits).
fn ts_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl Munger {
    /// A munger that has seen no packet yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forces the next packet to be treated as the first of a new source, even if it carries
    /// the same source id as the current one.
    pub fn switch_source(&mut self) {
        self.switch_pending = true;
        self.align = None;
    }

    /// Like [`Munger::switch_source`], for a new source whose timestamps plus `align` are on
    /// the current source's timeline (two simulcast layers of one track, mapped through their
    /// sender reports). The new source's first timestamp then continues the picture's timing
    /// exactly, when that lands after what was sent and not far past the arrival-time guess;
    /// otherwise the switch falls back to arrival time.
    pub fn switch_source_aligned(&mut self, align: Option<u32>) {
        self.switch_pending = true;
        self.align = align;
    }

    /// The viewer-side numbering for one packet of `source`, or [`Verdict::Drop`].
    ///
    /// `now_ticks` is the packet's arrival time in the stream's RTP clock (monotonic; it is
    /// only used to advance the timestamp across a switch).
    pub fn rewrite(&mut self, source: u32, seq: u16, ts: u32, now_ticks: u64) -> Verdict {
        let Some(st) = self.state.as_mut() else {
            self.switch_pending = false;
            self.state = Some(State::new(source, seq, ts, seq, ts, now_ticks));
            return Verdict::Forward { seq, ts };
        };
        if self.switch_pending || source != st.source {
            if !self.switch_pending && Some(source) == st.replaced {
                return Verdict::Drop;
            }
            self.switch_pending = false;
            let elapsed = now_ticks
                .saturating_sub(st.highest_ts_ticks)
                .clamp(1, MAX_TS_GAP) as u32;
            let out_seq = st.highest_out_seq.wrapping_add(1);
            let guess = st.highest_out_ts.wrapping_add(elapsed);
            let aligned = self
                .align
                .take()
                .map(|a| ts.wrapping_add(a).wrapping_add(st.ts_offset))
                .filter(|t| {
                    let ahead = t.wrapping_sub(st.highest_out_ts);
                    ts_after(*t, st.highest_out_ts)
                        && u64::from(ahead) <= 2 * u64::from(elapsed) + ALIGN_SLACK
                });
            let out_ts = aligned.unwrap_or(guess);
            let replaced = Some(st.source).filter(|old| *old != source);
            *st = State::new(source, seq, ts, out_seq, out_ts, now_ticks);
            st.replaced = replaced;
            return Verdict::Forward {
                seq: out_seq,
                ts: out_ts,
            };
        }
        if seq_after(seq, st.highest_in_seq) {
            st.advance(seq, seq.wrapping_sub(st.highest_in_seq));
        }
        let behind = st.highest_in_seq.wrapping_sub(seq);
        let Some(out_seq) = st.out_seq(seq, behind) else {
            return Verdict::Drop;
        };
        let out_ts = ts.wrapping_add(st.ts_offset);
        if seq_after(out_seq, st.highest_out_seq) {
            st.highest_out_seq = out_seq;
        }
        if ts_after(out_ts, st.highest_out_ts) {
            st.highest_out_ts = out_ts;
            st.highest_ts_ticks = now_ticks;
        }
        Verdict::Forward {
            seq: out_seq,
            ts: out_ts,
        }
    }

    /// Records that the current source's packet `seq` is deliberately not sent (temporal
    /// layer filtering), so that later packets close its gap. Nothing changes when `source`
    /// is not the current source (or a switch is pending): the next packet sent starts the
    /// new source right after the last number sent anyway.
    pub fn drop_packet(&mut self, source: u32, seq: u16) {
        if self.switch_pending {
            return;
        }
        let Some(st) = self.state.as_mut().filter(|st| st.source == source) else {
            return;
        };
        if seq_after(seq, st.highest_in_seq) {
            st.advance(seq, seq.wrapping_sub(st.highest_in_seq));
            st.skipped |= 1;
            st.seq_offset = st.seq_offset.wrapping_sub(1);
            return;
        }
        // A late packet: its number is taken (or sent already when it is the head).
        let behind = st.highest_in_seq.wrapping_sub(seq);
        if behind != 0 && behind < DROP_WINDOW && behind <= st.since_switch {
            st.refused |= (1u128 << behind) & !st.skipped;
        }
    }

    /// The current source's sequence number that was sent as `out_seq`, if `out_seq` belongs
    /// to the current source (sent since its switch point, and not the number of a packet that
    /// was deliberately dropped). Used to answer a viewer's NACK.
    pub fn source_seq(&self, out_seq: u16) -> Option<u16> {
        let st = self.state.as_ref().filter(|_| !self.switch_pending)?;
        let head_out = st.highest_in_seq.wrapping_add(st.seq_offset);
        let out_behind = head_out.wrapping_sub(out_seq);
        if out_behind >= SEQ_HALF {
            return None;
        }
        let behind = st.behind_for_out(out_behind);
        let in_seq = st.highest_in_seq.wrapping_sub(behind);
        st.out_seq(in_seq, behind).map(|_| in_seq)
    }

    /// The viewer-side numbering a packet of the current source was (or would be) sent with,
    /// without moving any state: for retransmissions of what [`Munger::source_seq`] named.
    pub fn resend(&self, seq: u16, ts: u32) -> (u16, u32) {
        match self.state.as_ref() {
            Some(st) => {
                let behind = st.highest_in_seq.wrapping_sub(seq);
                let skips = if behind < SEQ_HALF {
                    st.skips_after(behind).unwrap_or(0)
                } else {
                    0
                };
                (
                    seq.wrapping_add(st.seq_offset).wrapping_add(skips),
                    ts.wrapping_add(st.ts_offset),
                )
            }
            None => (seq, ts),
        }
    }
}

#[cfg(test)]
mod tests {
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
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// One source's stretch of the stream: its bases, whether the slot switches explicitly
    /// (keeping the SSRC), and per packet in sequence order: a fate roll (0: lost upstream,
    /// 1-2: deliberately dropped, else sent), a roll to swap it with the next one on the wire,
    /// and its timestamp increment.
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
                                prop_assert!(
                                    seq_after(out, top),
                                    "segment {seg}: {out} after {top}"
                                );
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
                        }
                        Verdict::Drop => {
                            prop_assert!(k < head.unwrap_or(0), "segment {seg}: {k} refused")
                        }
                    },
                }
                head = Some(head.map_or(k, |h| h.max(k)));
            }
            // Between two packets sent, the viewer's numbers differ by the input distance
            // less the drops that closed their gap: loss and late drops stay visible.
            let numbered: Vec<(usize, u16)> = sent
                .iter()
                .enumerate()
                .filter_map(|(k, s)| s.map(|(out, _)| (k, out)))
                .collect();
            for w in numbered.windows(2) {
                let ((i, a), (j, b)) = (w[0], w[1]);
                let skips = (i + 1..j).filter(|k| skip[*k]).count();
                prop_assert_eq!(
                    b.wrapping_sub(a) as usize,
                    j - i - skips,
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
            for (k, s) in sent
                .iter()
                .enumerate()
                .filter(|(k, _)| head.saturating_sub(*k) < usize::from(DROP_WINDOW))
            {
                if let Some((out, _)) = s {
                    prop_assert_eq!(m.source_seq(*out), Some(seq0.wrapping_add(k as u16)));
                }
            }
        }
        Ok(())
    }
}
