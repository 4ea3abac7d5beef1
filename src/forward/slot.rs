//! The per-slot forwarding decision: given a publisher's RTP packet, produce the packet one
//! viewer's slot sends, or nothing.
//!
//! A [`SlotForwarder`] is bound to one source track at a time. Binding precomputes the payload
//! type and header-extension id maps between the two legs, so the per-packet work is a header
//! rewrite (SSRC, sequence number, timestamp, payload type, extension ids) over a shared
//! payload. Video after a bind waits for a keyframe, so a viewer never gets a frame it cannot
//! decode. No I/O, no locks, no clock: time comes in as an argument.

use super::codec::{codecs_match, CodecSpec};
use super::keyframe::{is_keyframe_start, VideoCodec};
use super::munger::{Munger, Verdict};
use super::vp8::{self, TemporalFilter, Vp8Descriptor, Vp8Verdict};
use crate::transport::{Codec, HeaderExt};
use bytes::Bytes;
use rtc::rtp::header::{Extension, Header};
use rtc::rtp::Packet;
use rtc::shared::marshal::Marshal;
use std::time::Instant;

const NO_MAPPING: u8 = u8::MAX;
const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const TWCC_URI: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
const ABS_SEND_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";

/// Placeholders for the values the transport stamps as it seals (transport-wide sequence
/// number, abs-send-time): the header only reserves their place.
static TWCC_PLACEHOLDER: [u8; 2] = [0; 2];
static ABS_PLACEHOLDER: [u8; 3] = [0; 3];

/// A codec as the forwarding path sees it (one leg's negotiated entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegCodec {
    /// Payload type on that leg.
    pub payload_type: u8,
    /// e.g. `video/VP8`.
    pub mime: String,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Audio channels, 0 for video.
    pub channels: u16,
    /// `a=fmtp` parameters.
    pub fmtp: String,
}

impl LegCodec {
    fn spec(&self) -> CodecSpec<'_> {
        CodecSpec {
            mime: &self.mime,
            clock_rate: self.clock_rate,
            channels: self.channels,
            fmtp: &self.fmtp,
        }
    }
}

/// What one leg negotiated: codecs and header extensions (id, uri).
#[derive(Clone, Debug, Default)]
pub struct LegParams {
    /// Negotiated codecs.
    pub codecs: Vec<LegCodec>,
    /// Negotiated header extensions.
    pub extensions: Vec<(u8, String)>,
}

impl LegParams {
    /// One leg's parameters as the transport negotiated them.
    pub fn from_leg(codecs: &[Codec], extensions: &[HeaderExt]) -> Self {
        Self {
            codecs: codecs
                .iter()
                .map(|c| LegCodec {
                    payload_type: c.payload_type,
                    mime: c.mime.clone(),
                    clock_rate: c.clock_rate,
                    channels: c.channels,
                    fmtp: c.fmtp.clone(),
                })
                .collect(),
            extensions: extensions.iter().map(|e| (e.id, e.uri.clone())).collect(),
        }
    }
}

/// Why a packet was not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The slot has no source, or the packet is from another one.
    NotBound,
    /// Video waits for the first keyframe of its new source.
    NoKeyframeYet,
    /// The viewer's leg has no codec matching this payload type.
    NoCodec,
    /// The munger refused it (a late packet from before a switch).
    Stale,
    /// A VP8 frame above the slot's temporal layer.
    Temporal,
    /// A padding-only video packet: nothing to show.
    Padding,
    /// The slot's video is paused (the viewer's link does not carry it).
    Paused,
}

/// One source as bound to a slot: the maps between its leg and the viewer's.
#[derive(Debug, Clone)]
struct Binding {
    source: u64,
    pt_map: [u8; 128],
    ext_map: [u8; 256],
    clock_rate: u32,
    video: Option<VideoCodec>,
    /// What to add to this source's timestamps to put them on the timeline of the source it
    /// replaces (simulcast layers of one track; from their sender reports).
    align: Option<u32>,
}

/// What a slot sent before its last switch: enough to answer NACKs for those packets.
#[derive(Debug, Clone)]
struct Previous {
    binding: Binding,
    munger: Munger,
    temporal: TemporalFilter,
}

/// The VP8 descriptor fields of the packet just forwarded that differ from the source's.
#[derive(Debug, Clone, Copy)]
struct Vp8Patch {
    descriptor: Vp8Descriptor,
    picture_id: Option<u16>,
    tl0picidx: Option<u8>,
}

/// Padding-only packets a slot remembers, to answer a viewer's NACK for one.
const PADS_KEPT: usize = 128;

/// The (number, timestamp, payload type) of the last padding-only packets sent, newest last.
#[derive(Debug)]
struct PadRing {
    sent: [(u16, u32, u8); PADS_KEPT],
    next: usize,
    len: usize,
}

impl PadRing {
    fn push(&mut self, pad: (u16, u32, u8)) {
        self.sent[self.next] = pad;
        self.next = (self.next + 1) % PADS_KEPT;
        self.len = (self.len + 1).min(PADS_KEPT);
    }

    fn find(&self, seq: u16) -> Option<(u16, u32, u8)> {
        self.sent[..self.len].iter().copied().find(|p| p.0 == seq)
    }
}

/// Rewrites one source's packets for one viewer slot.
///
/// A video slot switches sources on a keyframe: the new source waits as *pending* while the
/// current one keeps flowing, and takes over with its first keyframe. Audio switches at once.
#[derive(Debug)]
pub struct SlotForwarder {
    ssrc: u32,
    mid: Bytes,
    viewer: LegParams,
    mid_ext: Option<u8>,
    /// The viewer leg's transport-wide-cc and abs-send-time ids: their publisher-side values
    /// are dropped and Parley's own placeholders go first in every header.
    stamps: (Option<u8>, Option<u8>),
    /// Video paused: nothing is forwarded until it resumes on a keyframe.
    paused: bool,
    /// The payload type of the last packet forwarded (padding goes with it).
    last_pt: Option<u8>,
    current: Option<Binding>,
    pending: Option<Binding>,
    waiting_keyframe: bool,
    munger: Munger,
    epoch: Option<Instant>,
    /// VP8 temporal-layer filtering and PictureID/TL0PICIDX renumbering.
    temporal: TemporalFilter,
    /// The next forwarded packet is the first of a new source.
    fresh: bool,
    /// The payload rewrite of the packet just forwarded, if any.
    patch: Option<Vp8Patch>,
    previous: Option<Box<Previous>>,
    /// The padding-only packets sent lately (made with the slot's first one).
    pads: Option<Box<PadRing>>,
}

impl SlotForwarder {
    /// A forwarder for a viewer slot sending with `ssrc`, whose leg negotiated `viewer`.
    pub fn new(ssrc: u32, mid: &str, viewer: LegParams) -> Self {
        let mid_ext = viewer
            .extensions
            .iter()
            .find(|(_, u)| u == MID_URI)
            .map(|(id, _)| *id);
        let id = |uri: &str| {
            viewer
                .extensions
                .iter()
                .find(|(_, u)| u == uri)
                .map(|(id, _)| *id)
        };
        let stamps = (id(TWCC_URI), id(ABS_SEND_TIME_URI));
        Self {
            ssrc,
            mid: Bytes::copy_from_slice(mid.as_bytes()),
            viewer,
            mid_ext,
            stamps,
            paused: false,
            last_pt: None,
            current: None,
            pending: None,
            waiting_keyframe: false,
            munger: Munger::new(),
            epoch: None,
            temporal: TemporalFilter::new(),
            fresh: false,
            patch: None,
            previous: None,
            pads: None,
        }
    }

    /// The source this slot is assigned to (the pending one while a switch waits).
    pub fn source(&self) -> Option<u64> {
        self.pending
            .as_ref()
            .or(self.current.as_ref())
            .map(|b| b.source)
    }

    /// Sets the highest VP8 temporal layer the slot forwards (it takes effect at a frame
    /// boundary going down, at a layer-sync frame going up).
    /// Pauses the slot's video (`true`) or resumes it (`false`): a resumed slot starts again
    /// on a keyframe, numbered on from what it sent last. Returns whether anything changed.
    pub fn set_paused(&mut self, paused: bool) -> bool {
        if self.paused == paused {
            return false;
        }
        self.paused = paused;
        if !paused {
            self.munger.switch_source_aligned(Some(0));
            self.waiting_keyframe = true;
            self.fresh = true;
        }
        true
    }

    /// Whether the slot's video is paused.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Writes into `out` the header of a padding-only packet sent now, right after the
    /// packet this slot last forwarded or skipped at a frame boundary (see [`Munger::pad`]).
    /// False when the slot cannot insert one there.
    pub fn pad_header(&mut self, out: &mut Header) -> bool {
        let Some(pt) = self.last_pt.or_else(|| {
            let binding = self.current.as_ref()?;
            binding.video?;
            binding.pt_map.iter().copied().find(|pt| *pt != NO_MAPPING)
        }) else {
            return false;
        };
        let Some((seq, ts)) = self.munger.pad() else {
            return false;
        };
        self.pads
            .get_or_insert_with(|| {
                Box::new(PadRing {
                    sent: [(0, 0, 0); PADS_KEPT],
                    next: 0,
                    len: 0,
                })
            })
            .push((seq, ts, pt));
        self.padding_header(seq, ts, pt, out);
        true
    }

    /// For a viewer's NACK of `out_seq`: when that number went to one of the slot's recent
    /// padding-only packets, writes into `out` the header of a fresh one under that number
    /// (padding carries nothing to resend, but the viewer's numbering must have no gap).
    pub fn repad_header(&self, out_seq: u16, out: &mut Header) -> bool {
        let Some((seq, ts, pt)) = self.pads.as_ref().and_then(|p| p.find(out_seq)) else {
            return false;
        };
        self.padding_header(seq, ts, pt, out);
        true
    }

    fn padding_header(&self, seq: u16, ts: u32, pt: u8, out: &mut Header) {
        out.version = 2;
        out.padding = true;
        out.marker = false;
        out.payload_type = pt;
        out.sequence_number = seq;
        out.timestamp = ts;
        out.ssrc = self.ssrc;
        out.csrc.clear();
        out.extensions.clear();
        out.extensions_padding = 0;
        self.push_stamps(out);
        out.extension_profile = 0xbede;
        out.extension = !out.extensions.is_empty();
    }

    /// Puts the transport's stamp placeholders at the front of `out`'s extensions.
    fn push_stamps(&self, out: &mut Header) {
        if let Some(id) = self.stamps.0 {
            out.extensions.push(Extension {
                id,
                payload: Bytes::from_static(&TWCC_PLACEHOLDER),
            });
        }
        if let Some(id) = self.stamps.1 {
            out.extensions.push(Extension {
                id,
                payload: Bytes::from_static(&ABS_PLACEHOLDER),
            });
        }
    }

    pub fn set_max_temporal(&mut self, max: u8) {
        self.temporal.set_target(max);
    }

    /// The highest temporal layer the slot forwards (once the change has taken effect at a
    /// frame boundary or sync frame).
    pub fn max_temporal(&self) -> u8 {
        self.temporal.target().min(super::selector::MAX_TEMPORAL)
    }

    /// The source whose packets the slot sends now.
    pub fn current_source(&self) -> Option<u64> {
        self.current.as_ref().map(|b| b.source)
    }

    /// The source whose packets the slot has started sending (its current source once that
    /// source's first keyframe went out).
    pub fn playing_source(&self) -> Option<u64> {
        self.current
            .as_ref()
            .filter(|_| !self.waiting_keyframe)
            .map(|b| b.source)
    }

    /// The source the slot switches to on its next keyframe.
    pub fn pending_source(&self) -> Option<u64> {
        self.pending.as_ref().map(|b| b.source)
    }

    /// Abandons a pending switch: the current source goes on.
    pub fn cancel_pending(&mut self) {
        self.pending = None;
    }

    /// Every source whose packets this slot wants now: the current one and a pending one.
    pub fn sources(&self) -> impl Iterator<Item = u64> + '_ {
        self.current
            .iter()
            .chain(self.pending.iter())
            .map(|b| b.source)
    }

    /// Whether the slot waits for a keyframe from its assigned source.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.pending.is_some() || (self.current.is_some() && self.waiting_keyframe)
    }

    fn binding(&self, source: u64, publisher: &LegParams) -> Option<Binding> {
        let mut b = Binding {
            source,
            pt_map: [NO_MAPPING; 128],
            ext_map: [0; 256],
            clock_rate: 90_000,
            video: None,
            align: None,
        };
        let mut any = false;
        for p in &publisher.codecs {
            let Some(v) = self
                .viewer
                .codecs
                .iter()
                .find(|v| codecs_match(&p.spec(), &v.spec()))
            else {
                continue;
            };
            if let Some(slot) = b.pt_map.get_mut(usize::from(p.payload_type)) {
                *slot = v.payload_type;
                any = true;
                b.clock_rate = p.clock_rate.max(1);
            }
        }
        for (pid, uri) in &publisher.extensions {
            if let Some((vid, _)) = self.viewer.extensions.iter().find(|(_, u)| u == uri) {
                b.ext_map[usize::from(*pid)] = *vid;
            }
        }
        b.video = publisher
            .codecs
            .iter()
            .find_map(|c| VideoCodec::from_mime(&c.mime));
        any.then_some(b)
    }

    /// Assigns the slot to a new source whose leg negotiated `publisher`. Video keeps its
    /// current source until the new one sends a keyframe; audio switches now. Returns false
    /// (and leaves the slot as it was) when none of the source's codecs fit this slot.
    pub fn bind(&mut self, source: u64, publisher: &LegParams) -> bool {
        self.bind_aligned(source, publisher, None)
    }

    /// Like [`SlotForwarder::bind`], for a source whose timestamps plus `align` are on the
    /// current source's timeline (another simulcast layer of the same track): the switch
    /// then keeps the picture's timing exactly.
    pub fn bind_aligned(&mut self, source: u64, publisher: &LegParams, align: Option<u32>) -> bool {
        let Some(mut binding) = self.binding(source, publisher) else {
            return false;
        };
        binding.align = align;
        if binding.video.is_some() && self.current.is_some() {
            self.pending = Some(binding);
        } else {
            self.waiting_keyframe = binding.video.is_some();
            self.current = Some(binding);
            self.pending = None;
            self.munger.switch_source();
            self.fresh = true;
        }
        true
    }

    /// Unbinds the slot: it goes idle and keeps its sequence state for the next source.
    pub fn unbind(&mut self) {
        self.current = None;
        self.pending = None;
    }

    /// The packet this slot sends for `packet` from `source`, or why it sends none. A
    /// convenience over [`SlotForwarder::forward_header`] that allocates a header.
    pub fn forward(&mut self, source: u64, packet: &Packet, now: Instant) -> Result<Packet, Skip> {
        let mut header = Header::default();
        self.forward_header(source, packet, now, &mut header)?;
        Ok(Packet {
            header,
            payload: packet.payload.clone(),
        })
    }

    /// Writes into `out` the header this slot sends for `packet` from `source` (the payload
    /// goes unchanged), or says why it sends none. `out` is a reused scratch header: its
    /// vectors keep their capacity, so the per-packet path does not allocate.
    pub fn forward_header(
        &mut self,
        source: u64,
        packet: &Packet,
        now: Instant,
        out: &mut Header,
    ) -> Result<(), Skip> {
        self.patch = None;
        if self.pending.as_ref().is_some_and(|b| b.source == source) {
            let codec = self.pending.as_ref().and_then(|b| b.video);
            if !codec.is_some_and(|c| is_keyframe_start(c, &packet.payload)) {
                return Err(Skip::NoKeyframeYet);
            }
            let align = self.pending.as_ref().and_then(|b| b.align);
            if let Some(binding) = self.current.take() {
                self.previous = Some(Box::new(Previous {
                    binding,
                    munger: self.munger.clone(),
                    temporal: self.temporal.clone(),
                }));
            }
            self.current = self.pending.take();
            self.munger.switch_source_aligned(align);
            self.fresh = true;
            self.waiting_keyframe = false;
        }
        let binding = self
            .current
            .as_ref()
            .filter(|b| b.source == source)
            .ok_or(Skip::NotBound)?;
        let pt = mapped_pt(binding, packet.header.payload_type)?;
        if self.paused && binding.video.is_some() {
            return Err(Skip::Paused);
        }
        if self.waiting_keyframe {
            let codec = binding.video.ok_or(Skip::NoKeyframeYet)?;
            if !is_keyframe_start(codec, &packet.payload) {
                return Err(Skip::NoKeyframeYet);
            }
            self.waiting_keyframe = false;
        }
        if packet.payload.is_empty() && binding.video.is_some() {
            // Padding only (a publisher probing its uplink): nothing for the viewer, and
            // later sequence numbers close the gap.
            self.munger
                .drop_packet(packet.header.ssrc, packet.header.sequence_number);
            return Err(Skip::Padding);
        }
        let vp8 = if binding.video == Some(VideoCodec::Vp8) {
            vp8::parse(&packet.payload)
        } else {
            None
        };
        if let Some(d) = &vp8 {
            match self.temporal.on_packet(d, self.fresh) {
                Vp8Verdict::Drop => {
                    self.munger
                        .drop_packet(packet.header.ssrc, packet.header.sequence_number);
                    return Err(Skip::Temporal);
                }
                Vp8Verdict::Forward {
                    picture_id,
                    tl0picidx,
                } => {
                    let changed = picture_id != d.picture_id || tl0picidx != d.tl0picidx;
                    self.patch = changed.then_some(Vp8Patch {
                        descriptor: *d,
                        picture_id,
                        tl0picidx,
                    });
                }
            }
        }
        let clock_rate = u128::from(binding.clock_rate);
        let epoch = *self.epoch.get_or_insert(now);
        let micros = now.saturating_duration_since(epoch).as_micros();
        let ticks = (micros * clock_rate / 1_000_000) as u64;
        let (seq, ts) = match self.munger.rewrite(
            packet.header.ssrc,
            packet.header.sequence_number,
            packet.header.timestamp,
            ticks,
        ) {
            Verdict::Forward { seq, ts } => (seq, ts),
            Verdict::Drop => {
                self.patch = None;
                return Err(Skip::Stale);
            }
        };
        self.fresh = false;
        self.last_pt = Some(pt);
        self.write_header(binding, &packet.header, pt, seq, ts, out);
        Ok(())
    }

    /// Rewrites, in `payload` (the copy of the packet just forwarded or resent, in the send
    /// buffer), the payload fields that differ for this viewer: VP8 PictureID and TL0PICIDX.
    pub fn patch_payload(&self, payload: &mut [u8]) {
        if let Some(p) = &self.patch {
            vp8::patch(payload, &p.descriptor, p.picture_id, p.tl0picidx);
        }
    }

    /// Whether the packet just forwarded or resent needs [`SlotForwarder::patch_payload`].
    pub fn has_patch(&self) -> bool {
        self.patch.is_some()
    }

    /// For a viewer's NACK of `out_seq`: the source and its sequence number, when that packet
    /// came from the slot's current source or from the one before its last switch.
    pub fn retransmission(&self, out_seq: u16) -> Option<(u64, u16)> {
        let binding = self.current.as_ref()?;
        if let Some(seq) = self.munger.source_seq(out_seq) {
            return Some((binding.source, seq));
        }
        let previous = self.previous.as_ref()?;
        Some((
            previous.binding.source,
            previous.munger.source_seq(out_seq)?,
        ))
    }

    /// Writes into `out` the header a retransmission of `packet` (of `source`, the current
    /// source or the one before the last switch) goes with: the same sequence number,
    /// timestamp and VP8 numbering it was first sent with.
    pub fn resend_header(
        &mut self,
        source: u64,
        packet: &Packet,
        out: &mut Header,
    ) -> Result<(), Skip> {
        self.patch = None;
        let (binding, munger, temporal) = match (&self.current, &self.previous) {
            (Some(b), _) if b.source == source => (b, &self.munger, &self.temporal),
            (_, Some(p)) if p.binding.source == source => (&p.binding, &p.munger, &p.temporal),
            _ => return Err(Skip::NotBound),
        };
        let pt = mapped_pt(binding, packet.header.payload_type)?;
        if binding.video == Some(VideoCodec::Vp8) {
            if let Some(d) = vp8::parse(&packet.payload) {
                match temporal.resend(&d) {
                    Vp8Verdict::Drop => return Err(Skip::Temporal),
                    Vp8Verdict::Forward {
                        picture_id,
                        tl0picidx,
                    } => {
                        let changed = picture_id != d.picture_id || tl0picidx != d.tl0picidx;
                        self.patch = changed.then_some(Vp8Patch {
                            descriptor: d,
                            picture_id,
                            tl0picidx,
                        });
                    }
                }
            }
        }
        let (seq, ts) = munger.resend(packet.header.sequence_number, packet.header.timestamp);
        self.write_header(binding, &packet.header, pt, seq, ts, out);
        Ok(())
    }

    /// `out` = `header` with this slot's SSRC, the given payload type and numbering, and the
    /// extensions translated to the viewer's ids (those it did not negotiate dropped).
    fn write_header(
        &self,
        binding: &Binding,
        header: &Header,
        pt: u8,
        seq: u16,
        ts: u32,
        out: &mut Header,
    ) {
        out.version = 2;
        out.padding = header.padding;
        out.marker = header.marker;
        out.payload_type = pt;
        out.sequence_number = seq;
        out.timestamp = ts;
        out.ssrc = self.ssrc;
        out.csrc.clear();
        out.csrc.extend_from_slice(&header.csrc);
        out.extension_profile = if header.extension {
            header.extension_profile
        } else {
            0xbede
        };
        out.extensions.clear();
        out.extensions_padding = 0;
        self.push_stamps(out);
        if header.extension {
            {
                let mid_id = self.mid_ext;
                let (twcc, abs) = self.stamps;
                out.extensions
                    .extend(header.extensions.iter().filter_map(|e| {
                        let id = binding.ext_map[usize::from(e.id)];
                        let stamped = Some(id) == twcc || Some(id) == abs;
                        (id != 0 && !stamped).then(|| Extension {
                            id,
                            payload: if Some(id) == mid_id {
                                self.mid.clone()
                            } else {
                                e.payload.clone()
                            },
                        })
                    }));
            }
        }
        out.extension = !out.extensions.is_empty();
    }
}

/// Writes a padding-only RTP packet (header, then `padding` bytes of RTP padding, the last
/// one its count) into `buf`. Returns (header length, packet length), or `None` if `buf` is
/// too small or `padding` is not 1..=255.
pub fn write_padding(header: &Header, padding: usize, buf: &mut [u8]) -> Option<(usize, usize)> {
    let count = u8::try_from(padding).ok().filter(|c| *c > 0)?;
    let header_len = header.marshal_to(buf).ok()?;
    let len = header_len + padding;
    let out = buf.get_mut(header_len..len)?;
    out.fill(0);
    out[padding - 1] = count;
    Some((header_len, len))
}

/// Writes an RTP packet (header, payload, and padding when the header says so) into `buf`.
/// Returns (header length, packet length), or `None` if `buf` is too small.
pub fn write_packet(header: &Header, payload: &[u8], buf: &mut [u8]) -> Option<(usize, usize)> {
    let header_len = header.marshal_to(buf).ok()?;
    let padding = if header.padding {
        4 - payload.len() % 4
    } else {
        0
    };
    let len = header_len + payload.len() + padding;
    let out = buf.get_mut(header_len..len)?;
    out[..payload.len()].copy_from_slice(payload);
    if padding > 0 {
        out[payload.len()..].fill(0);
        out[out.len() - 1] = padding as u8;
    }
    Some((header_len, len))
}

fn mapped_pt(binding: &Binding, pt: u8) -> Result<u8, Skip> {
    binding
        .pt_map
        .get(usize::from(pt))
        .copied()
        .filter(|pt| *pt != NO_MAPPING)
        .ok_or(Skip::NoCodec)
}

#[cfg(test)]
mod tests;
