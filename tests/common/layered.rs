//! Layered video for the simulcast tests: RTP payloads that announce a real picture size in
//! their keyframes (VP8 keyframe header, H.264 SPS), carry a VP8 descriptor with PictureID and
//! optional temporal-layer fields, and end in a [`Tag`] naming the layer, frame and packet they
//! belong to; and the checks a viewer's stream of such packets must pass.
//!
//! Pure: no I/O, no clock. A server may rewrite a VP8 descriptor's PictureID and TL0PICIDX
//! in place, so the tag is looked up by its magic, never at a fixed offset from the front.

use super::{Kind, Received};

/// Marks a [`Tag`] inside a payload.
const MAGIC: [u8; 4] = *b"SiM1";
const TAG_LEN: usize = 12;

const FLAG_KEY: u8 = 1;

/// Where a packet came from: the publisher's layer, frame (capture index) and packet of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    /// Index of the publisher's encoding (the order of its `a=rid` lines).
    pub layer: u8,
    /// Capture index, the same on every layer for the same picture.
    pub frame: u32,
    /// Packet index within the frame, and the frame's packet count.
    pub part: u8,
    pub parts: u8,
    /// The packet belongs to a keyframe.
    pub key: bool,
    /// VP8 temporal layer (0 when the publisher sends none).
    pub tid: u8,
}

impl Tag {
    fn encode(&self) -> [u8; TAG_LEN] {
        let mut out = [0u8; TAG_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4] = self.layer;
        out[5] = if self.key { FLAG_KEY } else { 0 } | (self.tid << 4);
        out[6..10].copy_from_slice(&self.frame.to_be_bytes());
        out[10] = self.part;
        out[11] = self.parts;
        out
    }

    /// The tag in a payload built by this module (the last occurrence of the magic).
    pub fn find(payload: &[u8]) -> Option<Tag> {
        let at = payload
            .windows(MAGIC.len())
            .rposition(|w| w == MAGIC)
            .filter(|&at| at + TAG_LEN <= payload.len())?;
        let b = &payload[at..at + TAG_LEN];
        Some(Tag {
            layer: b[4],
            key: b[5] & FLAG_KEY != 0,
            tid: b[5] >> 4,
            frame: u32::from_be_bytes([b[6], b[7], b[8], b[9]]),
            part: b[10],
            parts: b[11],
        })
    }

    /// The first packet of a keyframe: where a viewer may start decoding.
    pub fn keyframe_start(&self) -> bool {
        self.key && self.part == 0
    }
}

/// The VP8 descriptor fields of one frame (RFC 7741 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vp8Fields {
    /// 15-bit PictureID.
    pub picture_id: u16,
    /// TL0PICIDX and (TID, layer sync), present when the stream has temporal layers.
    pub temporal: Option<(u8, u8, bool)>,
}

/// What a viewer reads back from a VP8 descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vp8Read {
    pub picture_id: Option<u16>,
    pub tl0picidx: Option<u8>,
    pub tid: Option<u8>,
    pub start: bool,
}

fn vp8_descriptor(start: bool, f: &Vp8Fields) -> Vec<u8> {
    let mut x = 0x80; // I: PictureID present
    if f.temporal.is_some() {
        x |= 0x40 | 0x20; // L: TL0PICIDX, T: TID
    }
    let mut d = vec![0x80 | if start { 0x10 } else { 0 }, x];
    d.extend((0x8000 | (f.picture_id & 0x7fff)).to_be_bytes()); // M=1: 15 bits
    if let Some((tl0, tid, sync)) = f.temporal {
        d.push(tl0);
        d.push((tid << 6) | if sync { 0x20 } else { 0 });
    }
    d
}

/// Reads the descriptor at the front of a VP8 payload.
pub fn read_vp8(payload: &[u8]) -> Option<Vp8Read> {
    let b0 = *payload.first()?;
    let mut r = Vp8Read {
        picture_id: None,
        tl0picidx: None,
        tid: None,
        start: b0 & 0x10 != 0 && b0 & 0x07 == 0,
    };
    if b0 & 0x80 == 0 {
        return Some(r);
    }
    let x = *payload.get(1)?;
    let mut at = 2;
    if x & 0x80 != 0 {
        let p0 = *payload.get(at)?;
        if p0 & 0x80 != 0 {
            let p1 = *payload.get(at + 1)?;
            r.picture_id = Some(u16::from_be_bytes([p0 & 0x7f, p1]));
            at += 2;
        } else {
            r.picture_id = Some(u16::from(p0));
            at += 1;
        }
    }
    if x & 0x40 != 0 {
        r.tl0picidx = Some(*payload.get(at)?);
        at += 1;
    }
    if x & 0x20 != 0 {
        r.tid = Some(*payload.get(at)? >> 6);
    }
    Some(r)
}

/// Filler bytes that cannot contain the magic (all >= 0x80).
fn filler(layer: u8, frame: u32, len: usize) -> impl Iterator<Item = u8> {
    (0..len).map(move |i| 0x80 | ((i as u32 ^ frame ^ (u32::from(layer) * 37)) & 0x7f) as u8)
}

/// VP8 frame tag (RFC 6386 §9.1): `first_part_size:19 | show_frame:1 | version:3 | P:1`.
fn vp8_frame_tag(inter: bool, first_part_size: u32) -> [u8; 3] {
    let tag = (first_part_size << 5) | (1 << 4) | u32::from(inter);
    [tag as u8, (tag >> 8) as u8, (tag >> 16) as u8]
}

/// Payload bytes per delta frame of layer `layer` (bigger layers carry more).
fn delta_len(layer: u8) -> usize {
    120 + 160 * usize::from(layer)
}

/// The packets (payload, marker bit) of one VP8 frame: a keyframe is two packets, the first
/// announcing `size`; a delta frame is one.
pub fn vp8_frame(
    layer: u8,
    frame: u32,
    key: bool,
    size: (u16, u16),
    fields: &Vp8Fields,
) -> Vec<(Vec<u8>, bool)> {
    let tid = fields.temporal.map_or(0, |(_, tid, _)| tid);
    let tag = |part, parts| Tag {
        layer,
        frame,
        part,
        parts,
        key,
        tid,
    };
    if key {
        let mut first = vp8_descriptor(true, fields);
        first.extend(vp8_frame_tag(false, 400));
        first.extend([0x9d, 0x01, 0x2a]);
        first.extend(size.0.to_le_bytes());
        first.extend(size.1.to_le_bytes());
        first.extend(filler(layer, frame, 500));
        first.extend(tag(0, 2).encode());
        let mut second = vp8_descriptor(false, fields);
        second.extend(filler(layer, frame, 500));
        second.extend(tag(1, 2).encode());
        vec![(first, false), (second, true)]
    } else {
        let mut only = vp8_descriptor(true, fields);
        only.extend(vp8_frame_tag(true, 60));
        only.extend(filler(layer, frame, delta_len(layer)));
        only.extend(tag(0, 1).encode());
        vec![(only, true)]
    }
}

/// Like [`vp8_frame`], for a frame of about `bytes` bytes: as many packets of at most
/// 1,100 bytes as that takes (a keyframe at least two), so a layer can carry a realistic
/// bitrate.
pub fn vp8_frame_sized(
    layer: u8,
    frame: u32,
    key: bool,
    size: (u16, u16),
    fields: &Vp8Fields,
    bytes: usize,
) -> Vec<(Vec<u8>, bool)> {
    let tid = fields.temporal.map_or(0, |(_, tid, _)| tid);
    let parts = bytes.div_ceil(1100).clamp(if key { 2 } else { 1 }, 200);
    let per = bytes / parts;
    (0..parts)
        .map(|part| {
            let mut packet = vp8_descriptor(part == 0, fields);
            if part == 0 {
                packet.extend(vp8_frame_tag(!key, 400));
                if key {
                    packet.extend([0x9d, 0x01, 0x2a]);
                    packet.extend(size.0.to_le_bytes());
                    packet.extend(size.1.to_le_bytes());
                }
            }
            packet.extend(filler(layer, frame, per));
            let tag = Tag {
                layer,
                frame,
                part: part as u8,
                parts: parts as u8,
                key,
                tid,
            };
            packet.extend(tag.encode());
            (packet, part + 1 == parts)
        })
        .collect()
}

/// Writes H.264 RBSP bits: fixed-width fields and Exp-Golomb codes (H.264 §9.1).
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    bits: u32,
}

impl BitWriter {
    fn bit(&mut self, b: bool) {
        if self.bits.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if b {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 0x80 >> (self.bits % 8);
        }
        self.bits += 1;
    }

    fn bits(&mut self, value: u32, n: u32) {
        for i in (0..n).rev() {
            self.bit(value >> i & 1 == 1);
        }
    }

    fn ue(&mut self, value: u32) {
        let v = value + 1;
        let len = 32 - v.leading_zeros();
        self.bits(0, len - 1);
        self.bits(v, len);
    }

    /// rbsp_trailing_bits, then emulation prevention (H.264 §7.4.1).
    fn finish(mut self) -> Vec<u8> {
        self.bit(true);
        let mut out = Vec::with_capacity(self.bytes.len() + 4);
        let mut zeros = 0;
        for b in self.bytes {
            if zeros >= 2 && b <= 3 {
                out.push(3);
                zeros = 0;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            out.push(b);
        }
        out
    }
}

/// A real H.264 sequence parameter set NAL unit (header included) for a `width`x`height`
/// 4:2:0 picture, with the profile and level of `profile_level_id` (e.g. `"64001f"`).
/// Sizes that are not multiples of 16 are cropped on the right and bottom.
pub fn h264_sps(profile_level_id: &str, width: u16, height: u16) -> Vec<u8> {
    let plid = u32::from_str_radix(profile_level_id, 16).expect("profile-level-id is hex");
    let (profile_idc, constraints, level) = ((plid >> 16) & 0xff, (plid >> 8) & 0xff, plid & 0xff);
    let mut w = BitWriter::default();
    w.bits(profile_idc, 8);
    w.bits(constraints, 8);
    w.bits(level, 8);
    w.ue(0); // seq_parameter_set_id
    if [100, 110, 122, 244, 44, 83, 86, 118, 128].contains(&profile_idc) {
        w.ue(1); // chroma_format_idc 4:2:0
        w.ue(0); // bit_depth_luma_minus8
        w.ue(0); // bit_depth_chroma_minus8
        w.bit(false); // qpprime_y_zero_transform_bypass_flag
        w.bit(false); // seq_scaling_matrix_present_flag
    }
    w.ue(0); // log2_max_frame_num_minus4
    w.ue(2); // pic_order_cnt_type
    w.ue(1); // max_num_ref_frames
    w.bit(false); // gaps_in_frame_num_value_allowed_flag
    let (mbs_w, mbs_h) = (
        u32::from(width).div_ceil(16),
        u32::from(height).div_ceil(16),
    );
    w.ue(mbs_w - 1);
    w.ue(mbs_h - 1);
    w.bit(true); // frame_mbs_only_flag
    w.bit(true); // direct_8x8_inference_flag
    let (crop_right, crop_bottom) = (
        (mbs_w * 16 - u32::from(width)) / 2,
        (mbs_h * 16 - u32::from(height)) / 2,
    );
    let crop = crop_right > 0 || crop_bottom > 0;
    w.bit(crop);
    if crop {
        w.ue(0);
        w.ue(crop_right);
        w.ue(0);
        w.ue(crop_bottom);
    }
    w.bit(false); // vui_parameters_present_flag
    let mut nal = vec![0x67];
    nal.extend(w.finish());
    nal
}

/// The packets of one H.264 frame (packetization-mode 1): a keyframe is a STAP-A with SPS,
/// PPS and an SEI carrying the tag, then the IDR slice; a delta frame one non-IDR slice.
pub fn h264_frame(
    profile_level_id: &str,
    layer: u8,
    frame: u32,
    key: bool,
    size: (u16, u16),
) -> Vec<(Vec<u8>, bool)> {
    let tag = |part, parts| Tag {
        layer,
        frame,
        part,
        parts,
        key,
        tid: 0,
    };
    if key {
        let sps = h264_sps(profile_level_id, size.0, size.1);
        let pps = vec![0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        let mut sei = vec![0x06];
        sei.extend(tag(0, 2).encode());
        let mut stap = vec![0x78];
        for nal in [&sps, &pps, &sei] {
            stap.extend((nal.len() as u16).to_be_bytes());
            stap.extend_from_slice(nal);
        }
        let mut idr = vec![0x65, 0x88, 0x84];
        idr.extend(filler(layer, frame, 600));
        idr.extend(tag(1, 2).encode());
        vec![(stap, false), (idr, true)]
    } else {
        let mut slice = vec![0x41, 0x9a];
        slice.extend(filler(layer, frame, delta_len(layer)));
        slice.extend(tag(0, 1).encode());
        vec![(slice, true)]
    }
}

/// One received video packet with its tag.
#[derive(Clone, Debug)]
pub struct Got {
    pub tag: Tag,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
    /// Padding-only packets received since the previous video packet with a payload.
    pub padding_before: u16,
}

/// The viewer's video packets with their tags, in arrival order, leaving out padding-only
/// packets (Parley probes a viewer's link with them) but counting them on the packet that
/// follows. Panics on a video packet with a payload but without a tag: everything a
/// simulcast publisher sends carries one.
pub fn tagged(received: &[Received]) -> Vec<Got> {
    let mut padding = 0u16;
    received
        .iter()
        .filter(|r| r.kind == Kind::Video)
        .filter_map(|r| {
            if r.payload.is_empty() {
                padding += 1;
                return None;
            }
            Some(Got {
                tag: Tag::find(&r.payload)
                    .unwrap_or_else(|| panic!("video packet seq {} carries no layer tag", r.seq)),
                seq: r.seq,
                timestamp: r.timestamp,
                ssrc: r.ssrc,
                payload: r.payload.clone(),
                padding_before: std::mem::take(&mut padding),
            })
        })
        .collect()
}

/// A run of packets from one layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub layer: u8,
    /// Index of its first packet in the stream.
    pub start: usize,
    pub packets: usize,
}

/// The layer runs of a stream, in order.
pub fn runs(got: &[Got]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for (i, g) in got.iter().enumerate() {
        match out.last_mut() {
            Some(r) if r.layer == g.tag.layer => r.packets += 1,
            _ => out.push(Run {
                layer: g.tag.layer,
                start: i,
                packets: 1,
            }),
        }
    }
    out
}

/// "q(1..40) h(41..90)": the runs of a stream, for failure messages.
pub fn describe(got: &[Got], names: &[&str]) -> String {
    runs(got)
        .iter()
        .map(|r| {
            let name = names.get(usize::from(r.layer)).copied().unwrap_or("?");
            format!("{name}x{}", r.packets)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a viewer's video stream must satisfy, whatever layers it carried:
/// - one SSRC;
/// - sequence numbers without gaps or repeats, timestamps never going backwards;
/// - each layer change (and the very first packet) lands on a keyframe's first packet;
/// - within a run, frames come whole and in order, each the next one the layer sent
///   (`every_frame`), or a later one (a viewer that is sent fewer temporal layers).
pub fn check_stream(got: &[Got], every_frame: bool) -> Result<(), String> {
    let Some(first) = got.first() else {
        return Ok(());
    };
    for (i, g) in got.iter().enumerate() {
        if g.ssrc != first.ssrc {
            return Err(format!(
                "packet {i}: SSRC {} after {}: one slot, one SSRC",
                g.ssrc, first.ssrc
            ));
        }
        let Some(prev) = i.checked_sub(1).map(|p| &got[p]) else {
            if !g.tag.keyframe_start() {
                return Err(format!(
                    "the first packet is not a keyframe start: {:?}",
                    g.tag
                ));
            }
            continue;
        };
        if g.seq != prev.seq.wrapping_add(1).wrapping_add(g.padding_before) {
            return Err(format!(
                "packet {i}: sequence number {} after {} and {} paddings (a gap or a repeat)",
                g.seq, prev.seq, g.padding_before
            ));
        }
        if (g.timestamp.wrapping_sub(prev.timestamp) as i32) < 0 {
            return Err(format!(
                "packet {i}: timestamp {} after {} goes backwards",
                g.timestamp, prev.timestamp
            ));
        }
        let (t, p) = (g.tag, prev.tag);
        if t.layer != p.layer {
            if !t.keyframe_start() {
                return Err(format!(
                    "packet {i}: switched from layer {} to layer {} on {:?}, not on a keyframe start",
                    p.layer, t.layer, t
                ));
            }
            continue;
        }
        let same_frame = t.frame == p.frame && t.part == p.part + 1;
        let next_frame = p.part + 1 == p.parts
            && t.part == 0
            && if every_frame {
                t.frame == p.frame.wrapping_add(1)
            } else {
                (t.frame.wrapping_sub(p.frame) as i32) > 0
            };
        if !same_frame && !next_frame {
            return Err(format!(
                "packet {i}: layer {} packet {:?} after {:?}: frames must come whole and in order",
                t.layer, t, p
            ));
        }
    }
    Ok(())
}
