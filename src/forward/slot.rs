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
use bytes::Bytes;
use rtc::rtp::Packet;
use std::time::Instant;

const NO_MAPPING: u8 = u8::MAX;
const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";

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
}

/// Rewrites one source's packets for one viewer slot.
#[derive(Debug)]
pub struct SlotForwarder {
    ssrc: u32,
    mid: Bytes,
    viewer: LegParams,
    source: Option<u64>,
    pt_map: [u8; 128],
    ext_map: [u8; 256],
    clock_rate: u32,
    video: Option<VideoCodec>,
    waiting_keyframe: bool,
    munger: Munger,
    epoch: Option<Instant>,
}

impl SlotForwarder {
    /// A forwarder for a viewer slot sending with `ssrc`, whose leg negotiated `viewer`.
    pub fn new(ssrc: u32, mid: &str, viewer: LegParams) -> Self {
        Self {
            ssrc,
            mid: Bytes::copy_from_slice(mid.as_bytes()),
            viewer,
            source: None,
            pt_map: [NO_MAPPING; 128],
            ext_map: [0; 256],
            clock_rate: 90_000,
            video: None,
            waiting_keyframe: false,
            munger: Munger::new(),
            epoch: None,
        }
    }

    /// The source currently bound, as the caller identifies it.
    pub fn source(&self) -> Option<u64> {
        self.source
    }

    /// Whether video is held back until the source sends a keyframe.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.source.is_some() && self.waiting_keyframe
    }

    /// Binds the slot to a new source whose leg negotiated `publisher`. Returns whether any
    /// of the source's codecs can be sent on this slot.
    pub fn bind(&mut self, source: u64, publisher: &LegParams) -> bool {
        self.source = Some(source);
        self.pt_map = [NO_MAPPING; 128];
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
            if let Some(slot) = self.pt_map.get_mut(usize::from(p.payload_type)) {
                *slot = v.payload_type;
                any = true;
                self.clock_rate = p.clock_rate.max(1);
            }
        }
        self.ext_map = [0; 256];
        for (pid, uri) in &publisher.extensions {
            if let Some((vid, _)) = self.viewer.extensions.iter().find(|(_, u)| u == uri) {
                self.ext_map[usize::from(*pid)] = *vid;
            }
        }
        self.video = publisher
            .codecs
            .iter()
            .find_map(|c| VideoCodec::from_mime(&c.mime));
        self.waiting_keyframe = self.video.is_some();
        self.munger.switch_source();
        any
    }

    /// Unbinds the slot: it goes idle and keeps its sequence state for the next source.
    pub fn unbind(&mut self) {
        self.source = None;
    }

    /// The packet this slot sends for `packet` from `source`, or why it sends none.
    pub fn forward(&mut self, source: u64, packet: &Packet, now: Instant) -> Result<Packet, Skip> {
        if self.source != Some(source) {
            return Err(Skip::NotBound);
        }
        let pt = self
            .pt_map
            .get(usize::from(packet.header.payload_type))
            .copied()
            .filter(|pt| *pt != NO_MAPPING)
            .ok_or(Skip::NoCodec)?;
        if self.waiting_keyframe {
            let codec = self.video.ok_or(Skip::NoKeyframeYet)?;
            if !is_keyframe_start(codec, &packet.payload) {
                return Err(Skip::NoKeyframeYet);
            }
            self.waiting_keyframe = false;
        }
        let epoch = *self.epoch.get_or_insert(now);
        let micros = now.saturating_duration_since(epoch).as_micros();
        let ticks = (micros * u128::from(self.clock_rate) / 1_000_000) as u64;
        let (seq, ts) = match self.munger.rewrite(
            packet.header.ssrc,
            packet.header.sequence_number,
            packet.header.timestamp,
            ticks,
        ) {
            Verdict::Forward { seq, ts } => (seq, ts),
            Verdict::Drop => return Err(Skip::Stale),
        };
        let mut out = packet.clone();
        out.header.ssrc = self.ssrc;
        out.header.payload_type = pt;
        out.header.sequence_number = seq;
        out.header.timestamp = ts;
        self.rewrite_extensions(&mut out);
        Ok(out)
    }

    fn rewrite_extensions(&self, out: &mut Packet) {
        if !out.header.extension {
            return;
        }
        let map = &self.ext_map;
        let mid_id = self
            .viewer
            .extensions
            .iter()
            .find(|(_, u)| u == MID_URI)
            .map(|(id, _)| *id);
        out.header.extensions.retain_mut(|e| {
            let id = map[usize::from(e.id)];
            if id == 0 {
                return false;
            }
            e.id = id;
            if Some(id) == mid_id {
                e.payload = self.mid.clone();
            }
            true
        });
        out.header.extensions_padding = 0;
        out.header.extension = !out.header.extensions.is_empty();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::header::Extension;
    use std::time::Duration;

    fn vp8(pt: u8) -> LegCodec {
        LegCodec {
            payload_type: pt,
            mime: "video/VP8".into(),
            clock_rate: 90_000,
            channels: 0,
            fmtp: String::new(),
        }
    }

    fn leg(codecs: Vec<LegCodec>, exts: &[(u8, &str)]) -> LegParams {
        LegParams {
            codecs,
            extensions: exts.iter().map(|(i, u)| (*i, (*u).to_owned())).collect(),
        }
    }

    fn packet(ssrc: u32, seq: u16, ts: u32, pt: u8, key: bool) -> Packet {
        let mut p = Packet::default();
        p.header.version = 2;
        p.header.ssrc = ssrc;
        p.header.sequence_number = seq;
        p.header.timestamp = ts;
        p.header.payload_type = pt;
        // VP8 descriptor: S=1, PID=0; then a frame header whose P bit says key (0) or delta (1).
        p.payload = Bytes::from(vec![0x10, if key { 0x00 } else { 0x01 }, 0x9d, 0x01, 0x2a]);
        p
    }

    #[test]
    fn video_waits_for_a_keyframe_then_flows_rewritten() {
        let t0 = Instant::now();
        let mut f = SlotForwarder::new(777, "1", leg(vec![vp8(120)], &[]));
        assert!(f.bind(1, &leg(vec![vp8(96)], &[])));
        assert_eq!(
            f.forward(1, &packet(5, 10, 1000, 96, false), t0)
                .unwrap_err(),
            Skip::NoKeyframeYet
        );
        let out = f
            .forward(1, &packet(5, 11, 1000, 96, true), t0)
            .expect("keyframe");
        assert_eq!((out.header.ssrc, out.header.payload_type), (777, 120));
        let next = f
            .forward(1, &packet(5, 12, 4000, 96, false), t0)
            .expect("delta");
        assert_eq!(
            next.header.sequence_number,
            out.header.sequence_number.wrapping_add(1)
        );
        assert_eq!(
            next.header.timestamp,
            out.header.timestamp.wrapping_add(3000)
        );
        assert_eq!(next.payload, packet(5, 12, 4000, 96, false).payload);
    }

    #[test]
    fn unmapped_codecs_and_other_sources_are_skipped() {
        let t0 = Instant::now();
        let mut f = SlotForwarder::new(1, "0", leg(vec![vp8(96)], &[]));
        assert_eq!(
            f.forward(1, &packet(5, 1, 1, 96, true), t0).unwrap_err(),
            Skip::NotBound
        );
        f.bind(1, &leg(vec![vp8(96)], &[]));
        assert_eq!(
            f.forward(2, &packet(5, 1, 1, 96, true), t0).unwrap_err(),
            Skip::NotBound
        );
        assert_eq!(
            f.forward(1, &packet(5, 1, 1, 97, true), t0).unwrap_err(),
            Skip::NoCodec
        );
    }

    #[test]
    fn a_new_source_continues_the_sequence() {
        let t0 = Instant::now();
        let mut f = SlotForwarder::new(9, "0", leg(vec![vp8(96)], &[]));
        f.bind(1, &leg(vec![vp8(96)], &[]));
        let a = f.forward(1, &packet(5, 65535, 10, 96, true), t0).unwrap();
        f.bind(2, &leg(vec![vp8(100)], &[]));
        let b = f
            .forward(
                2,
                &packet(6, 3, 0, 100, true),
                t0 + Duration::from_millis(40),
            )
            .unwrap();
        assert_eq!(
            b.header.sequence_number,
            a.header.sequence_number.wrapping_add(1)
        );
        assert!(b.header.timestamp.wrapping_sub(a.header.timestamp) as i32 > 0);
        assert_eq!(b.header.ssrc, 9);
    }

    #[test]
    fn header_extensions_are_translated_by_uri() {
        let t0 = Instant::now();
        let audio_level = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
        let viewer = leg(vec![vp8(96)], &[(1, MID_URI), (5, audio_level)]);
        let publisher = leg(
            vec![vp8(96)],
            &[(3, audio_level), (4, MID_URI), (9, "urn:x")],
        );
        let mut f = SlotForwarder::new(9, "7", viewer);
        f.bind(1, &publisher);
        let mut p = packet(5, 1, 1, 96, true);
        p.header.extension = true;
        p.header.extension_profile = 0xBEDE;
        for (id, payload) in [(3u8, &b"\x80"[..]), (4, b"0"), (9, b"zz")] {
            p.header.extensions.push(Extension {
                id,
                payload: Bytes::copy_from_slice(payload),
            });
        }
        let out = f.forward(1, &p, t0).unwrap();
        let got: Vec<(u8, &[u8])> = out
            .header
            .extensions
            .iter()
            .map(|e| (e.id, e.payload.as_ref()))
            .collect();
        assert_eq!(got, vec![(5, &b"\x80"[..]), (1, b"7")]);
        assert_eq!(out.header.extensions_padding, 0);
    }
}
