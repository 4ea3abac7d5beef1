//! VP8 payload descriptors (RFC 7741 §4.2) and temporal-layer filtering for one viewer.
//!
//! A VP8 publisher with temporal scalability tags every frame with a temporal layer index
//! (TID); a viewer that should get a lower frame rate is sent only the frames up to some
//! layer. This module owns that decision and the rewrite it implies:
//!
//! - [`parse`] reads the descriptor at the front of an RTP payload; [`patch`] rewrites its
//!   PictureID and TL0PICIDX in place, in a copy the caller already owns (the send buffer).
//! - [`TemporalFilter`] decides per frame whether a viewer gets it, and renumbers PictureID
//!   and TL0PICIDX so that the viewer sees no gap for the frames it was deliberately not sent
//!   and no jump back when its source is replaced.
//!
//! Rules of the filter:
//! - A frame is the set of packets sharing a PictureID. It is decided once, at the first of
//!   its packets to arrive (whatever its position in the frame); its other packets follow that
//!   decision. The filter remembers the last [`FRAMES`] frames; packets of older frames are
//!   dropped, except a keyframe start, which restarts the numbering (a source jumped).
//! - Frames with TID above the layer in effect ([`TemporalFilter::current`]) are dropped;
//!   packets without a TID are never dropped.
//! - Going down (a lower [`TemporalFilter::set_target`]) takes effect at the next new frame.
//!   Going up is one layer at a time, at a frame of exactly that layer with the layer-sync
//!   bit (Y=1): such a frame depends only on the base layer, so the layer decodes from there
//!   on. Stepping (not jumping to a higher sync frame) keeps the layers in between decodable
//!   for encoders whose middle layers reference each other. A keyframe syncs every layer: it
//!   puts the target in effect at once.
//! - Sent PictureIDs are the source's minus the frames dropped so far (in the field's own
//!   modulus: 7 or 15 bits); a frame lost upstream still shows as a gap. TL0PICIDX is never
//!   renumbered within a source, since base-layer frames are never dropped. On a new source,
//!   both continue from the last value sent plus one, then follow the source's increments.
//! - Packets without a PictureID are decided on their own: a frame start applies the layer
//!   changes and the rule above, other packets follow the layer in effect.
//!
//! Nothing here allocates, reads a clock or panics on what a peer sent: it runs once per
//! packet per viewer, and every read of the payload is bounds-checked.

/// The highest temporal layer index the descriptor can carry (TID is two bits).
pub const MAX_TID: u8 = 3;

/// How many recent frames (by PictureID) a filter remembers the decision for.
pub const FRAMES: usize = 32;

/// The payload descriptor at the front of a VP8 RTP payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// S: the packet starts a VP8 partition.
    pub start: bool,
    /// PID: the partition index.
    pub partition: u8,
    /// The packet starts a frame: `S=1` and `PID=0`.
    pub frame_start: bool,
    /// The packet starts a keyframe: a frame start whose frame tag has `P=0`.
    pub keyframe: bool,
    /// The PictureID, 7 or 15 bits wide.
    pub picture_id: Option<u16>,
    /// The PictureID is in the 15-bit form (`M=1`).
    pub long_picture_id: bool,
    /// TL0PICIDX: the running index of the base-layer frames.
    pub tl0picidx: Option<u8>,
    /// TID: the temporal layer of the frame (present when `T=1`).
    pub tid: Option<u8>,
    /// Y: the frame depends only on the base layer (meaningful when `tid` is present).
    pub layer_sync: bool,
    /// Byte offset of the PictureID field (meaningful when `picture_id` is present).
    pub picture_id_at: usize,
    /// Byte offset of the TL0PICIDX field (meaningful when `tl0picidx` is present).
    pub tl0picidx_at: usize,
    /// Length of the descriptor: the VP8 payload starts at this offset.
    pub len: usize,
}

/// The descriptor at the front of `payload`, or None when it is truncated (a payload must
/// carry at least one byte of VP8 data after its descriptor).
pub fn parse(payload: &[u8]) -> Option<Vp8Descriptor> {
    let b0 = *payload.first()?;
    let mut d = Vp8Descriptor {
        start: b0 & 0x10 != 0,
        partition: b0 & 0x07,
        ..Vp8Descriptor::default()
    };
    let mut at = 1;
    if b0 & 0x80 != 0 {
        let x = *payload.get(at)?;
        at += 1;
        if x & 0x80 != 0 {
            let high = *payload.get(at)?;
            d.picture_id_at = at;
            if high & 0x80 != 0 {
                let low = *payload.get(at + 1)?;
                d.picture_id = Some(u16::from(high & 0x7f) << 8 | u16::from(low));
                d.long_picture_id = true;
                at += 2;
            } else {
                d.picture_id = Some(u16::from(high));
                at += 1;
            }
        }
        if x & 0x40 != 0 {
            d.tl0picidx = Some(*payload.get(at)?);
            d.tl0picidx_at = at;
            at += 1;
        }
        if x & 0x30 != 0 {
            // One byte holds TID, Y and KEYIDX when either T or K is set.
            let t = *payload.get(at)?;
            at += 1;
            if x & 0x20 != 0 {
                d.tid = Some(t >> 6);
                d.layer_sync = t & 0x20 != 0;
            }
        }
    }
    let frame_tag = *payload.get(at)?;
    d.len = at;
    d.frame_start = d.start && d.partition == 0;
    d.keyframe = d.frame_start && frame_tag & 0x01 == 0;
    Some(d)
}

/// Writes `picture_id` and `tl0picidx` (each when given) into `buf`, a copy of the payload `d`
/// was parsed from, keeping each field's width: a 7-bit PictureID keeps 7 bits of the value.
/// Returns false, and writes nothing, when a value is given for a field `d` lacks or `buf` is
/// shorter than the descriptor.
pub fn patch(
    buf: &mut [u8],
    d: &Vp8Descriptor,
    picture_id: Option<u16>,
    tl0picidx: Option<u8>,
) -> bool {
    let pid_end = d.picture_id_at + if d.long_picture_id { 2 } else { 1 };
    let fits = buf.len() >= d.len
        && (picture_id.is_none() || (d.picture_id.is_some() && pid_end <= buf.len()))
        && (tl0picidx.is_none() || (d.tl0picidx.is_some() && d.tl0picidx_at < buf.len()));
    if !fits {
        return false;
    }
    if let Some(pid) = picture_id {
        if d.long_picture_id {
            let [high, low] = (pid & 0x7fff).to_be_bytes();
            buf[d.picture_id_at] = 0x80 | high;
            buf[d.picture_id_at + 1] = low;
        } else {
            buf[d.picture_id_at] = (pid & 0x7f) as u8;
        }
    }
    if let Some(tl0) = tl0picidx {
        buf[d.tl0picidx_at] = tl0;
    }
    true
}

/// What to do with one VP8 packet for one viewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vp8Verdict {
    /// Send it, with these values patched into its descriptor (None: the field is absent).
    Forward {
        /// The viewer-side PictureID, in the field's width.
        picture_id: Option<u16>,
        /// The viewer-side TL0PICIDX.
        tl0picidx: Option<u8>,
    },
    /// Do not send it: its frame is above the viewer's temporal layer, or too old to place.
    Drop,
}

/// What became of one frame, remembered by PictureID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Fate {
    /// Not seen (or no longer remembered).
    #[default]
    Unknown,
    /// Sent with this PictureID.
    Sent(u16),
    /// Dropped when it was the newest frame: later PictureIDs close its gap.
    Skipped,
    /// Dropped when it arrived late: later frames were already numbered, its gap stays.
    Refused,
}

/// The PictureID numbering of the current source.
#[derive(Clone, Copy, Debug)]
struct Pictures {
    /// 128 or 32768: the field's modulus.
    modulus: u16,
    /// `out = in + offset` for frames newer than every skipped one (wrapping in `modulus`).
    offset: u16,
    /// The newest input PictureID.
    newest: u16,
    /// Fates of the frames `newest - FRAMES + 1 ..= newest`, indexed by PictureID % FRAMES.
    fates: [Fate; FRAMES],
}

impl Pictures {
    /// A numbering whose next frame `pid` is sent as `first_out`.
    fn new(modulus: u16, pid: u16, first_out: u16) -> Self {
        Self {
            modulus,
            offset: first_out.wrapping_sub(pid) & (modulus - 1),
            newest: pid.wrapping_sub(1) & (modulus - 1),
            fates: [Fate::Unknown; FRAMES],
        }
    }

    fn slot(pid: u16) -> usize {
        usize::from(pid) % FRAMES
    }

    /// The viewer-side PictureID of `pid` when `skips_after` skipped frames are newer than it.
    fn out(&self, pid: u16, skips_after: u16) -> u16 {
        pid.wrapping_add(self.offset).wrapping_add(skips_after) & (self.modulus - 1)
    }

    /// How many remembered frames newer than the one `behind` frames behind the newest were
    /// skipped.
    fn skips_after(&self, behind: u16) -> u16 {
        (0..behind)
            .filter(|i| {
                let pid = self.newest.wrapping_sub(*i) & (self.modulus - 1);
                self.fates[Self::slot(pid)] == Fate::Skipped
            })
            .count() as u16
    }
}

/// Temporal-layer filter and PictureID/TL0PICIDX rewriter of one viewer slot.
#[derive(Clone, Debug)]
pub struct TemporalFilter {
    /// The highest layer the viewer should get.
    target: u8,
    /// The highest layer it is getting.
    current: u8,
    /// A packet has been seen: the first one starts a source.
    started: bool,
    /// The current source's PictureID numbering, from its first packet carrying one.
    pictures: Option<Pictures>,
    /// The current source's TL0PICIDX offset, from its first packet carrying one.
    tl0_offset: Option<u8>,
    /// The newest PictureID sent, across sources.
    last_picture_id: Option<u16>,
    /// The newest TL0PICIDX sent, across sources.
    last_tl0: Option<u8>,
}

impl Default for TemporalFilter {
    fn default() -> Self {
        Self::new()
    }
}

impl TemporalFilter {
    /// A filter that lets every layer through and has seen no packet yet.
    pub fn new() -> Self {
        Self {
            target: MAX_TID,
            current: 0,
            started: false,
            pictures: None,
            tl0_offset: None,
            last_picture_id: None,
            last_tl0: None,
        }
    }

    /// Sets the highest temporal layer the viewer should get (values above [`MAX_TID`] mean
    /// every layer). Lower takes effect at the next frame, higher at the next sync point.
    pub fn set_target(&mut self, max_tid: u8) {
        self.target = max_tid.min(MAX_TID);
    }

    /// The highest temporal layer asked for (it takes effect at a frame or sync point).
    pub fn target(&self) -> u8 {
        self.target
    }

    /// The highest temporal layer in effect: frames above it are dropped. 0 until a frame
    /// has put a layer in effect.
    pub fn current(&self) -> u8 {
        self.current
    }

    /// The decision for one packet of the viewer's source. `new_source` marks the first packet
    /// forwarded after the slot switched to another source or simulcast layer (a keyframe
    /// start); the very first packet the filter sees counts as one too.
    pub fn on_packet(&mut self, d: &Vp8Descriptor, new_source: bool) -> Vp8Verdict {
        if new_source || !self.started {
            self.started = true;
            self.current = 0;
            self.pictures = None;
            self.tl0_offset = None;
        }
        let picture_id = match d.picture_id {
            Some(pid) => match self.picture_fate(pid, d) {
                Fate::Sent(out) => Some(out),
                _ => return Vp8Verdict::Drop,
            },
            None if self.admits(d, d.frame_start) => None,
            None => return Vp8Verdict::Drop,
        };
        if let Some(out) = picture_id {
            if self
                .last_picture_id
                .is_none_or(|last| newer(out, last, modulus(d)))
            {
                self.last_picture_id = Some(out);
            }
        }
        let tl0picidx = d.tl0picidx.map(|tl0| {
            let last = self.last_tl0;
            let offset = *self
                .tl0_offset
                .get_or_insert_with(|| last.map_or(0, |l| l.wrapping_add(1).wrapping_sub(tl0)));
            tl0.wrapping_add(offset)
        });
        if let Some(out) = tl0picidx {
            if self
                .last_tl0
                .is_none_or(|last| (out.wrapping_sub(last) as i8) > 0)
            {
                self.last_tl0 = Some(out);
            }
        }
        Vp8Verdict::Forward {
            picture_id,
            tl0picidx,
        }
    }

    /// The values a packet of the current source was sent with, without moving any state:
    /// for retransmissions. Drop when its frame was not sent or is no longer remembered.
    pub fn resend(&self, d: &Vp8Descriptor) -> Vp8Verdict {
        let picture_id = match (d.picture_id, self.pictures.as_ref()) {
            (None, _) => None,
            (Some(pid), Some(p)) if p.modulus == modulus(d) => {
                let behind = p.newest.wrapping_sub(pid) & (p.modulus - 1);
                match p.fates[Pictures::slot(pid)] {
                    Fate::Sent(out) if usize::from(behind) < FRAMES => Some(out),
                    _ => return Vp8Verdict::Drop,
                }
            }
            (Some(_), _) => return Vp8Verdict::Drop,
        };
        let tl0picidx = d
            .tl0picidx
            .map(|tl0| tl0.wrapping_add(self.tl0_offset.unwrap_or(0)));
        Vp8Verdict::Forward {
            picture_id,
            tl0picidx,
        }
    }

    /// Whether a packet gets through on its temporal index. `new_frame`: it is the first
    /// packet seen of a frame newer than all others, where layer changes take effect.
    fn admits(&mut self, d: &Vp8Descriptor, new_frame: bool) -> bool {
        if new_frame {
            if d.keyframe {
                self.current = self.target;
            } else {
                self.current = self.current.min(self.target);
            }
        }
        match d.tid {
            None => true,
            Some(tid) if tid <= self.current => true,
            Some(tid) => {
                let step_up =
                    new_frame && d.layer_sync && tid == self.current + 1 && tid <= self.target;
                if step_up {
                    self.current = tid;
                }
                step_up
            }
        }
    }

    /// The fate of the frame `pid` belongs to, deciding it when it is new.
    fn picture_fate(&mut self, pid: u16, d: &Vp8Descriptor) -> Fate {
        let modulus = modulus(d);
        let pid = pid & (modulus - 1);
        let mut p = match self.pictures {
            Some(p) if p.modulus == modulus => p,
            _ => self.restart_pictures(modulus, pid),
        };
        let remembered =
            |p: &Pictures| usize::from(p.newest.wrapping_sub(pid) & (modulus - 1)) < FRAMES;
        if !newer(pid, p.newest, modulus) && !remembered(&p) && d.keyframe {
            // Far from every remembered frame yet decodable: the source's numbering jumped.
            p = self.restart_pictures(modulus, pid);
        }
        let fate = if newer(pid, p.newest, modulus) {
            // A new frame: forget the remembered ones it passes, then decide it.
            let ahead = pid.wrapping_sub(p.newest) & (modulus - 1);
            for i in 1..=ahead.min(FRAMES as u16) {
                let passed = p.newest.wrapping_add(i) & (modulus - 1);
                p.fates[Pictures::slot(passed)] = Fate::Unknown;
            }
            p.newest = pid;
            let fate = if self.admits(d, true) {
                Fate::Sent(p.out(pid, 0))
            } else {
                p.offset = p.offset.wrapping_sub(1);
                Fate::Skipped
            };
            p.fates[Pictures::slot(pid)] = fate;
            fate
        } else if remembered(&p) {
            let behind = p.newest.wrapping_sub(pid) & (modulus - 1);
            match p.fates[Pictures::slot(pid)] {
                Fate::Unknown => {
                    // A frame first seen after newer ones: decided without a layer change,
                    // numbered around the skips that came after it.
                    let fate = if self.admits(d, false) {
                        Fate::Sent(p.out(pid, p.skips_after(behind)))
                    } else {
                        Fate::Refused
                    };
                    p.fates[Pictures::slot(pid)] = fate;
                    fate
                }
                fate => {
                    if d.keyframe && behind == 0 && matches!(fate, Fate::Sent(_)) {
                        // The keyframe's start arrived after another of its packets.
                        self.current = self.target;
                    }
                    fate
                }
            }
        } else {
            Fate::Refused
        };
        self.pictures = Some(p);
        fate
    }

    /// A numbering for the current source whose next frame `pid` continues after the last
    /// PictureID sent (or keeps its own number when none was).
    fn restart_pictures(&self, modulus: u16, pid: u16) -> Pictures {
        let first_out = self
            .last_picture_id
            .map_or(pid, |last| last.wrapping_add(1));
        Pictures::new(modulus, pid, first_out)
    }
}

/// The PictureID modulus of `d`'s field.
fn modulus(d: &Vp8Descriptor) -> u16 {
    if d.long_picture_id {
        1 << 15
    } else {
        1 << 7
    }
}

/// `a` is after `b` in serial-number order modulo `modulus` (a power of two).
fn newer(a: u16, b: u16, modulus: u16) -> bool {
    let ahead = a.wrapping_sub(b) & (modulus - 1);
    ahead != 0 && ahead < modulus / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    const DROP: Vp8Verdict = Vp8Verdict::Drop;

    fn fwd(picture_id: u16, tl0picidx: u8) -> Vp8Verdict {
        Vp8Verdict::Forward {
            picture_id: Some(picture_id),
            tl0picidx: Some(tl0picidx),
        }
    }

    /// Sent without a PictureID.
    fn fwd_np(tl0picidx: Option<u8>) -> Vp8Verdict {
        Vp8Verdict::Forward {
            picture_id: None,
            tl0picidx,
        }
    }

    /// The first packet of a one-packet frame with a 15-bit PictureID.
    fn frame(pid: u16, tl0: u8, tid: u8, y: bool) -> Vp8Descriptor {
        Vp8Descriptor {
            start: true,
            frame_start: true,
            picture_id: Some(pid),
            long_picture_id: true,
            tl0picidx: Some(tl0),
            tid: Some(tid),
            layer_sync: y,
            ..Vp8Descriptor::default()
        }
    }

    fn key(pid: u16, tl0: u8) -> Vp8Descriptor {
        Vp8Descriptor {
            keyframe: true,
            ..frame(pid, tl0, 0, false)
        }
    }

    /// A later packet of the same frame.
    fn cont(d: Vp8Descriptor) -> Vp8Descriptor {
        Vp8Descriptor {
            start: false,
            frame_start: false,
            keyframe: false,
            ..d
        }
    }

    /// The same packet without a PictureID.
    fn np(d: Vp8Descriptor) -> Vp8Descriptor {
        Vp8Descriptor {
            picture_id: None,
            ..d
        }
    }

    /// Frame `n` of a stream with Chromium's three temporal layers: TIDs repeat 0 2 1 2, and
    /// libwebrtc sets Y on the frames that reference only the base layer (the first TL2 and
    /// the TL1 of each group); TL0PICIDX counts the base-layer frames. Frame 0 is a keyframe.
    fn chromium(n: u16, pid0: u16, tl0: u8, long: bool) -> Vp8Descriptor {
        let i = usize::from(n % 4);
        let mask = if long { 0x7fff } else { 0x7f };
        let d = frame(
            pid0.wrapping_add(n) & mask,
            tl0.wrapping_add((n / 4) as u8),
            [0, 2, 1, 2][i],
            [false, true, true, false][i],
        );
        Vp8Descriptor {
            keyframe: n == 0,
            long_picture_id: long,
            ..d
        }
    }

    fn c(n: u16, pid0: u16, tl0: u8) -> Vp8Descriptor {
        chromium(n, pid0, tl0, true)
    }

    /// Chromium's pattern with 7-bit PictureIDs.
    fn c7(n: u16, pid0: u16, tl0: u8) -> Vp8Descriptor {
        chromium(n, pid0, tl0, false)
    }

    #[derive(Clone, Copy)]
    enum Step {
        Target(u8),
        Pkt(Vp8Descriptor, Vp8Verdict),
        NewSource(Vp8Descriptor, Vp8Verdict),
        Current(u8),
    }
    use Step::{Current, NewSource, Pkt, Target};

    fn run(name: &str, steps: &[Step]) {
        let mut f = TemporalFilter::new();
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Target(t) => f.set_target(t),
                Current(want) => assert_eq!(f.current(), want, "{name}: step {i}: current"),
                Pkt(d, want) | NewSource(d, want) => {
                    let new_source = matches!(step, NewSource(..));
                    let got = f.on_packet(&d, new_source);
                    assert_eq!(got, want, "{name}: step {i}: {d:?}");
                    if got != DROP {
                        assert_eq!(f.resend(&d), got, "{name}: step {i}: resend");
                    }
                }
            }
        }
    }

    #[test]
    fn chromium_three_layers_filtered_at_each_target() {
        // (target, first PictureID, 15-bit, frames fed, the frames sent): the k-th frame
        // sent gets PictureID first + k in the field's width, since the frames dropped leave
        // no gap; TL0PICIDX (from 254, so it wraps too) passes unchanged.
        let table: &[(u8, u16, bool, u16, &[u16])] = &[
            (2, 1000, true, 12, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
            (1, 1000, true, 12, &[0, 2, 4, 6, 8, 10]),
            (0, 1000, true, 12, &[0, 4, 8]),
            (0, 125, false, 13, &[0, 4, 8, 12]), // sent as 125 126 127 0
            (1, 32_766, true, 8, &[0, 2, 4, 6]), // sent as 32766 32767 0 1
        ];
        for (target, first, long, frames, sent) in table {
            let mut f = TemporalFilter::new();
            f.set_target(*target);
            let mask = if *long { 0x7fff } else { 0x7f };
            let mut next = *first;
            for n in 0..*frames {
                let d = chromium(n, *first, 254, *long);
                let want = match sent.contains(&n) {
                    true => fwd(next & mask, 254u8.wrapping_add((n / 4) as u8)),
                    false => DROP,
                };
                next += u16::from(want != DROP);
                assert_eq!(
                    f.on_packet(&d, n == 0),
                    want,
                    "target {target}, from {first}, frame {n}"
                );
            }
            assert_eq!(f.current(), *target, "target {target}");
        }
    }

    #[test]
    fn scenarios() {
        let table: Vec<(&str, Vec<Step>)> = vec![
            (
                "going up waits for a layer-sync frame, one layer at a time",
                vec![
                    Target(0),
                    NewSource(c(0, 100, 10), fwd(100, 10)),
                    Current(0),
                    Target(2),
                    Pkt(c(1, 100, 10), DROP), // TL2 sync, but TL1 is not in effect yet
                    Pkt(c(2, 100, 10), fwd(101, 10)), // TL1 sync
                    Current(1),
                    Pkt(c(3, 100, 10), DROP), // TL2 without Y
                    Pkt(c(4, 100, 10), fwd(102, 11)),
                    Pkt(c(5, 100, 10), fwd(103, 11)), // TL2 sync
                    Current(2),
                    Pkt(c(6, 100, 10), fwd(104, 11)),
                    Pkt(c(7, 100, 10), fwd(105, 11)),
                ],
            ),
            (
                "going down takes effect at the next frame, not inside one",
                vec![
                    NewSource(c(0, 200, 0), fwd(200, 0)),
                    Pkt(c(1, 200, 0), fwd(201, 0)),
                    Target(0),
                    Current(MAX_TID),
                    Pkt(cont(c(1, 200, 0)), fwd(201, 0)),
                    Pkt(c(2, 200, 0), DROP),
                    Current(0),
                    Pkt(cont(c(2, 200, 0)), DROP),
                    Pkt(c(3, 200, 0), DROP),
                    Pkt(c(4, 200, 0), fwd(202, 1)),
                ],
            ),
            (
                "frames of several packets follow their first packet, reordered or not",
                vec![
                    Target(1),
                    NewSource(c(0, 300, 0), fwd(300, 0)),
                    Pkt(cont(c(0, 300, 0)), fwd(300, 0)),
                    Pkt(cont(c(1, 300, 0)), DROP),
                    Pkt(c(1, 300, 0), DROP),
                    Pkt(cont(c(2, 300, 0)), fwd(301, 0)),
                    Pkt(c(2, 300, 0), fwd(301, 0)),
                    Pkt(cont(c(2, 300, 0)), fwd(301, 0)),
                    Pkt(c(3, 300, 0), DROP),
                    Pkt(c(4, 300, 0), fwd(302, 1)),
                    Pkt(cont(c(1, 300, 0)), DROP), // a straggler of a dropped frame
                ],
            ),
            (
                "a keyframe whose start arrives second still syncs every layer",
                vec![
                    NewSource(cont(c(0, 400, 5)), fwd(400, 5)),
                    Current(0),
                    Pkt(c(0, 400, 5), fwd(400, 5)),
                    Current(MAX_TID),
                    Pkt(c(1, 400, 5), fwd(401, 5)),
                ],
            ),
            (
                "a keyframe puts a higher target in effect at once",
                vec![
                    Target(0),
                    NewSource(c(0, 500, 0), fwd(500, 0)),
                    Pkt(c(1, 500, 0), DROP),
                    Pkt(c(2, 500, 0), DROP),
                    Pkt(c(3, 500, 0), DROP),
                    Target(2),
                    Pkt(key(504, 1), fwd(501, 1)),
                    Current(2),
                    Pkt(frame(505, 1, 2, false), fwd(502, 1)),
                ],
            ),
            (
                "a frame lost upstream still shows as a PictureID gap",
                vec![
                    Target(1),
                    NewSource(c(0, 600, 0), fwd(600, 0)),
                    // frame 601 lost
                    Pkt(c(2, 600, 0), fwd(602, 0)),
                    Pkt(c(3, 600, 0), DROP),
                    Pkt(c(4, 600, 0), fwd(603, 1)),
                ],
            ),
            (
                "a whole frame arriving late is numbered around the skips after it",
                vec![
                    Target(1),
                    NewSource(c(0, 700, 0), fwd(700, 0)),
                    Pkt(c(1, 700, 0), DROP),
                    // frame 702 (TL1) is late
                    Pkt(c(3, 700, 0), DROP),
                    Pkt(c(4, 700, 0), fwd(702, 1)),
                    Pkt(c(2, 700, 0), fwd(701, 0)),
                    Pkt(cont(c(2, 700, 0)), fwd(701, 0)),
                    // frame 705 (TL2) is late too: its turn to be skipped has passed
                    Pkt(c(6, 700, 0), fwd(704, 1)),
                    Pkt(c(5, 700, 0), DROP),
                    Pkt(c(7, 700, 0), DROP),
                    Pkt(c(8, 700, 0), fwd(705, 2)),
                ],
            ),
            (
                "a new source continues PictureID and TL0PICIDX from the last sent",
                vec![
                    NewSource(c(0, 50, 254), fwd(50, 254)),
                    Pkt(c(1, 50, 254), fwd(51, 254)),
                    Pkt(c(4, 50, 254), fwd(54, 255)),
                    Pkt(c(5, 50, 254), fwd(55, 255)),
                    NewSource(c(0, 9000, 17), fwd(56, 0)),
                    Pkt(c(1, 9000, 17), fwd(57, 0)),
                    Pkt(c(2, 9000, 17), fwd(58, 0)),
                    Pkt(c(3, 9000, 17), fwd(59, 0)),
                    Pkt(c(4, 9000, 17), fwd(60, 1)),
                    Pkt(c(8, 9000, 17), fwd(64, 2)),
                ],
            ),
            (
                "a new source after trailing drops leaves no gap",
                vec![
                    Target(0),
                    NewSource(c(0, 100, 9), fwd(100, 9)),
                    Pkt(c(1, 100, 9), DROP),
                    Pkt(c(2, 100, 9), DROP),
                    Pkt(c(3, 100, 9), DROP),
                    NewSource(c(0, 7, 3), fwd(101, 10)),
                    Pkt(c(1, 7, 3), DROP),
                    Pkt(c(2, 7, 3), DROP),
                    Pkt(c(3, 7, 3), DROP),
                    Pkt(c(4, 7, 3), fwd(102, 11)),
                ],
            ),
            (
                "a new source in the other PictureID width continues in its own width",
                vec![
                    NewSource(c(0, 300, 0), fwd(300, 0)),
                    NewSource(c7(0, 3, 0), fwd(301 & 0x7f, 1)),
                    Pkt(c7(1, 3, 0), fwd(46, 1)),
                ],
            ),
            (
                "no temporal index: never dropped; no PictureID: sent with None",
                vec![
                    Target(0),
                    NewSource(key(10, 0), fwd(10, 0)),
                    Pkt(
                        Vp8Descriptor {
                            tid: None,
                            ..frame(11, 0, 2, false)
                        },
                        fwd(11, 0),
                    ),
                    Pkt(np(frame(0, 0, 2, true)), DROP),
                    Pkt(np(frame(0, 0, 0, false)), fwd_np(Some(0))),
                    Pkt(
                        np(Vp8Descriptor {
                            tid: None,
                            tl0picidx: None,
                            ..frame(0, 0, 3, false)
                        }),
                        fwd_np(None),
                    ),
                ],
            ),
            (
                "without PictureID, a frame's later packets follow the layer its start set",
                vec![
                    NewSource(np(key(0, 0)), fwd_np(Some(0))),
                    Target(1),
                    Pkt(np(cont(frame(0, 0, 2, true))), fwd_np(Some(0))),
                    Pkt(np(frame(0, 0, 2, true)), DROP),
                    Pkt(np(cont(frame(0, 0, 2, true))), DROP),
                    Pkt(np(cont(frame(0, 0, 1, true))), fwd_np(Some(0))),
                ],
            ),
        ];
        for (name, steps) in &table {
            run(name, steps);
        }
    }

    #[test]
    fn frames_beyond_memory_are_dropped_and_a_far_keyframe_restarts() {
        let mut f = TemporalFilter::new();
        for pid in 0..40u16 {
            let d = if pid == 0 {
                key(pid, 0)
            } else {
                frame(pid, 0, 0, false)
            };
            assert_eq!(f.on_packet(&d, false), fwd(pid, 0), "frame {pid}");
        }
        let newest = 39u16;
        let kept = frame(newest + 1 - FRAMES as u16, 0, 0, false);
        assert_eq!(
            f.on_packet(&cont(kept), false),
            kept.picture_id.map_or(DROP, |p| fwd(p, 0))
        );
        assert_eq!(f.resend(&kept), f.on_packet(&cont(kept), false));
        let forgotten = frame(newest - FRAMES as u16, 0, 0, false);
        assert_eq!(f.on_packet(&cont(forgotten), false), DROP);
        assert_eq!(f.resend(&forgotten), DROP);
        // The source's PictureID jumped back by 100 with a keyframe: numbering restarts.
        let jumped = newest.wrapping_sub(100) & 0x7fff;
        assert_eq!(f.on_packet(&frame(jumped, 1, 0, false), false), DROP);
        assert_eq!(f.on_packet(&key(jumped, 1), false), fwd(40, 1));
        assert_eq!(
            f.on_packet(&frame(jumped + 1, 1, 0, false), false),
            fwd(41, 1)
        );
    }

    /// A descriptor in one line: flags, then each field present with its offset.
    fn summary(d: &Vp8Descriptor) -> String {
        let mut s = format!("S={} PID={} len={}", u8::from(d.start), d.partition, d.len);
        for (on, text) in [(d.frame_start, " frame"), (d.keyframe, " key")] {
            if on {
                s += text;
            }
        }
        if let Some(pid) = d.picture_id {
            let bits = if d.long_picture_id { 15 } else { 7 };
            s += &format!(" pid={pid}/{bits}@{}", d.picture_id_at);
        }
        if let Some(tl0) = d.tl0picidx {
            s += &format!(" tl0={tl0}@{}", d.tl0picidx_at);
        }
        if let Some(tid) = d.tid {
            s += &format!(" tid={tid}{}", if d.layer_sync { "y" } else { "" });
        }
        s
    }

    #[test]
    fn parse_table() {
        let table: &[(&str, &[u8], &str)] = &[
            ("empty", &[], "none"),
            ("descriptor without data", &[0x10], "none"),
            (
                "minimal keyframe start",
                &[0x10, 0x00],
                "S=1 PID=0 len=1 frame key",
            ),
            (
                "minimal interframe start",
                &[0x10, 0x01],
                "S=1 PID=0 len=1 frame",
            ),
            ("start of partition 1", &[0x11, 0x00], "S=1 PID=1 len=1"),
            ("continuation", &[0x00, 0x00], "S=0 PID=0 len=1"),
            (
                "7-bit PictureID",
                &[0x90, 0x80, 0x05, 0x01],
                "S=1 PID=0 len=3 frame pid=5/7@2",
            ),
            (
                "15-bit PictureID",
                &[0x90, 0x80, 0x81, 0x23, 0x01],
                "S=1 PID=0 len=4 frame pid=291/15@2",
            ),
            (
                "I, L and T",
                &[0x90, 0xe0, 0x92, 0x34, 0x07, 0xa0, 0x00],
                "S=1 PID=0 len=6 frame key pid=4660/15@2 tl0=7@4 tid=2y",
            ),
            (
                "L and T without I",
                &[0x80, 0x60, 0xff, 0x40, 0x00],
                "S=0 PID=0 len=4 tl0=255@2 tid=1",
            ),
            (
                "K without T: no temporal index",
                &[0x80, 0x10, 0xff, 0x00],
                "S=0 PID=0 len=3",
            ),
            ("15-bit PictureID cut short", &[0x90, 0x80, 0x81], "none"),
            ("extension byte missing", &[0x90], "none"),
        ];
        for (name, bytes, want) in table {
            let got = parse(bytes).map_or("none".to_string(), |d| summary(&d));
            assert_eq!(got, *want, "{name}");
        }
        let full = [0x90, 0xf0, 0x92, 0x34, 0x07, 0xa0, 0x00];
        assert!(parse(&full).is_some());
        for n in 0..full.len() {
            assert_eq!(parse(&full[..n]), None, "truncated to {n} bytes");
        }
    }

    #[test]
    fn patch_table() {
        // (name, payload, PictureID, TL0PICIDX, accepted, payload after)
        type Case = (
            &'static str,
            &'static [u8],
            Option<u16>,
            Option<u8>,
            bool,
            &'static [u8],
        );
        let full: &[u8] = &[0x90, 0xe0, 0x92, 0x34, 0x07, 0xa0, 0x00];
        let short: &[u8] = &[0x90, 0x80, 0x05, 0x00];
        let table: &[Case] = &[
            (
                "both fields",
                full,
                Some(0x7ffe),
                Some(200),
                true,
                &[0x90, 0xe0, 0xff, 0xfe, 200, 0xa0, 0x00],
            ),
            (
                "15 bits kept",
                &[0x90, 0x80, 0x80, 0x00, 0x00],
                Some(0x8001),
                None,
                true,
                &[0x90, 0x80, 0x80, 0x01, 0x00],
            ),
            (
                "7 bits kept",
                short,
                Some(130),
                None,
                true,
                &[0x90, 0x80, 0x02, 0x00],
            ),
            ("nothing to write", short, None, None, true, short),
            ("no TL0PICIDX field", short, Some(6), Some(1), false, short),
            (
                "no PictureID field",
                &[0x80, 0x40, 0x05, 0x00],
                Some(6),
                Some(1),
                false,
                &[0x80, 0x40, 0x05, 0x00],
            ),
        ];
        for (name, payload, pid, tl0, accepted, after) in table {
            let d = parse(payload).expect(name);
            let mut buf = payload.to_vec();
            assert_eq!(patch(&mut buf, &d, *pid, *tl0), *accepted, "{name}");
            assert_eq!(buf, *after, "{name}");
        }
        let d = parse(full).expect("full");
        let mut cut = [0x90, 0xe0, 0x92];
        assert!(
            !patch(&mut cut, &d, Some(1), None),
            "a buffer shorter than the descriptor"
        );
        assert_eq!(cut, [0x90, 0xe0, 0x92]);
    }

    #[test]
    fn no_input_panics_parse_patch_or_filter() {
        let mut f = TemporalFilter::new();
        for b01 in 0..=u16::MAX {
            let [b0, b1] = b01.to_be_bytes();
            for tail in 0..4usize {
                let mut buf = [b0, b1, 0x85, b0, b1, 0x22];
                let buf = &mut buf[..2 + tail];
                let Some(d) = parse(buf) else { continue };
                assert!(d.len < buf.len());
                f.set_target(b1 & 3);
                if let Vp8Verdict::Forward {
                    picture_id,
                    tl0picidx,
                } = f.on_packet(&d, b0 & 0x40 != 0)
                {
                    assert!(patch(buf, &d, picture_id, tl0picidx));
                    let after = parse(buf).expect("patched stays parseable");
                    assert_eq!((after.picture_id, after.tl0picidx), (picture_id, tl0picidx));
                }
            }
        }
    }
}
