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

/// How many recent padding insertion points the munger remembers. A packet older than a
/// forgotten one is neither sent nor mapped back, like one older than a forgotten drop.
pub const PAD_POINTS: usize = 16;

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
    /// Padding packets inserted after input packets: (input sequence number, how many),
    /// oldest first. Each shifts every later packet one number up.
    pads: [(u16, u16); PAD_POINTS],
    pad_points: usize,
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
            pads: [(0, 0); PAD_POINTS],
            pad_points: 0,
        }
    }

    /// How many padding packets were inserted after the packet `behind` numbers behind the
    /// head or after a later one (those numbers come after it).
    fn pads_from(&self, behind: u16) -> u16 {
        self.pads[..self.pad_points]
            .iter()
            .filter(|(seq, _)| self.highest_in_seq.wrapping_sub(*seq) <= behind)
            .map(|(_, n)| *n)
            .fold(0u16, u16::wrapping_add)
    }

    /// Forgets the oldest insertion point: it and older packets can no longer be numbered.
    fn forget_oldest_pad(&mut self) {
        if self.pad_points == 0 {
            return;
        }
        let behind = self.highest_in_seq.wrapping_sub(self.pads[0].0);
        self.evicted_drop = self.evicted_drop.min(behind);
        self.pads.copy_within(1..self.pad_points, 0);
        self.pad_points -= 1;
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
            self.evicted_drop = self.evicted_drop.min(behind.saturating_add(ahead));
        }
        self.skipped = skipped;
        self.refused = refused;
        while self.pad_points > 0 && self.highest_in_seq.wrapping_sub(self.pads[0].0) >= DROP_WINDOW
        {
            self.forget_oldest_pad();
        }
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
        Some(
            seq.wrapping_add(self.seq_offset)
                .wrapping_add(skips)
                .wrapping_sub(self.pads_from(behind)),
        )
    }

    /// How far behind the head the packet sent as `head_out - out_behind` is, where
    /// `head_out` is the number after the head and the paddings after it: the `behind` whose
    /// packet [`State::out_seq`] numbers so, if any. Skips move a packet's number down and
    /// paddings up, by at most the window's worth each, so the search is bounded.
    fn behind_for_out(&self, out_behind: u16) -> Option<u16> {
        let pads = self.pads_from(u16::MAX);
        let head_out = self.highest_in_seq.wrapping_add(self.seq_offset);
        let want = head_out.wrapping_sub(out_behind);
        let low = out_behind.saturating_sub(pads);
        let high = out_behind.saturating_add(DROP_WINDOW).min(SEQ_HALF);
        (low..=high).find(|&behind| {
            let seq = self.highest_in_seq.wrapping_sub(behind);
            self.out_seq(seq, behind) == Some(want)
        })
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
        let behind = st.behind_for_out(out_behind)?;
        Some(st.highest_in_seq.wrapping_sub(behind))
    }

    /// Numbers a padding-only packet sent right after the newest packet of the current
    /// source (a frame boundary): the next sequence number and the newest timestamp. Every
    /// later packet of the source moves one number up, and the padding's number maps back to
    /// no packet. `None` before the first packet, while a switch is pending, or when the
    /// newest number sent is not the head's (nothing may be inserted there).
    pub fn pad(&mut self) -> Option<(u16, u32)> {
        if self.switch_pending {
            return None;
        }
        let st = self.state.as_mut()?;
        let out = st
            .highest_in_seq
            .wrapping_add(st.seq_offset)
            .wrapping_add(1);
        if out != st.highest_out_seq.wrapping_add(1) {
            return None;
        }
        match st.pad_points.checked_sub(1).map(|i| &mut st.pads[i]) {
            Some((seq, n)) if *seq == st.highest_in_seq => *n = n.wrapping_add(1),
            _ => {
                if st.pad_points == PAD_POINTS {
                    st.forget_oldest_pad();
                }
                st.pads[st.pad_points] = (st.highest_in_seq, 1);
                st.pad_points += 1;
            }
        }
        st.seq_offset = st.seq_offset.wrapping_add(1);
        st.highest_out_seq = out;
        Some((out, st.highest_out_ts))
    }

    /// The viewer-side numbering a packet of the current source was (or would be) sent with,
    /// without moving any state: for retransmissions of what [`Munger::source_seq`] named.
    pub fn resend(&self, seq: u16, ts: u32) -> (u16, u32) {
        match self.state.as_ref() {
            Some(st) => {
                let behind = st.highest_in_seq.wrapping_sub(seq);
                let (skips, pads) = if behind < SEQ_HALF {
                    (st.skips_after(behind).unwrap_or(0), st.pads_from(behind))
                } else {
                    (0, 0)
                };
                (
                    seq.wrapping_add(st.seq_offset)
                        .wrapping_add(skips)
                        .wrapping_sub(pads),
                    ts.wrapping_add(st.ts_offset),
                )
            }
            None => (seq, ts),
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
