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
mod tests;
