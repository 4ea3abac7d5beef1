//! The picture size a keyframe carries, read from the first RTP packet of the keyframe.
//!
//! Simulcast layers are ranked by the resolution their keyframes announce; [`keyframe_size`]
//! reads it from the codec's own headers, per codec:
//!
//! - VP8 (RFC 7741): the key frame header after the payload descriptor: `S=1`, `PID=0`,
//!   `P=0`, start code `9d 01 2a`, then 14-bit width and height (the scale bits are ignored).
//! - VP9 (RFC 9628): the scalability structure (`V=1` with `Y=1`) in the first packet of a
//!   frame that is not inter-picture predicted (`B=1`, `P=0`). It lists every spatial
//!   layer; the largest (by area) is returned, which is the size of the whole stream rather
//!   than of the packet's own `SID`. Without the structure: no size.
//! - H.264 (RFC 6184): the sequence parameter set, alone, inside a STAP-A, or at the start of
//!   an FU-A. Frame and field coding, every chroma format (4:0:0 to 4:4:4 and separate
//!   colour planes), scaling matrices and every picture order count type are handled, and
//!   the frame cropping is applied.
//! - AV1 (AOM RTP payload format): a sequence header OBU among the packet's OBU elements
//!   (`W=0` with LEB128 lengths, or `W=1..3`), with or without `obu_has_size_field`: the
//!   reduced still-picture header and the full one (timing info, decoder model, every
//!   operating point) are walked to `max_frame_width_minus_1` / `max_frame_height_minus_1`.
//!   A continuation element (`Z=1`) is skipped.
//!
//! An SPS or a sequence header gives its size in whatever packet it comes: it describes the
//! stream. Whether that packet starts a keyframe is [`is_keyframe_start`]'s question (an
//! H.264 SPS cut by fragmentation gives a size only if its first fragment reaches the frame
//! cropping fields).
//!
//! Anything else, including a truncated or malformed header and a size that is zero or does
//! not fit in 16 bits, is `None`. Every read is bounds-checked, every loop is bounded by the
//! input or by a limit of the format, and nothing allocates: emulation-prevention bytes are
//! skipped by the bit reader as it goes.

#[cfg(doc)]
use super::keyframe::is_keyframe_start;
use super::keyframe::VideoCodec;

/// The `(width, height)` in pixels of the keyframe whose first RTP packet is `payload`, or
/// `None` when the packet does not carry it (see the module documentation for each codec).
pub fn keyframe_size(codec: VideoCodec, payload: &[u8]) -> Option<(u16, u16)> {
    match codec {
        VideoCodec::Vp8 => vp8_size(payload),
        VideoCodec::Vp9 => vp9_size(payload),
        VideoCodec::H264 => h264_size(payload),
        VideoCodec::Av1 => av1_size(payload),
    }
}

/// A size in pixels, if both sides are non-zero and fit in 16 bits.
fn picture(width: u64, height: u64) -> Option<(u16, u16)> {
    let width = u16::try_from(width).ok().filter(|w| *w > 0)?;
    let height = u16::try_from(height).ok().filter(|h| *h > 0)?;
    Some((width, height))
}

/// A forward-only byte reader; every read checks the length.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.0 = self.0.get(n..)?;
        Some(())
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    /// An unsigned LEB128 value of at most eight bytes (AV1 §4.10.5).
    fn leb128(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..8 {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
}

/// A most-significant-bit-first reader. Over an H.264 NAL unit (`rbsp`), it drops each
/// emulation-prevention byte (`00 00 03` -> `00 00`) as it loads bytes.
struct Bits<'a> {
    data: &'a [u8],
    next: usize,
    current: u8,
    left: u8,
    zeros: u8,
    rbsp: bool,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8], rbsp: bool) -> Self {
        Bits {
            data,
            next: 0,
            current: 0,
            left: 0,
            zeros: 0,
            rbsp,
        }
    }

    fn load(&mut self) -> Option<()> {
        let mut byte = *self.data.get(self.next)?;
        self.next += 1;
        if self.rbsp && self.zeros >= 2 && byte == 0x03 {
            byte = *self.data.get(self.next)?;
            self.next += 1;
            self.zeros = 0;
        }
        self.zeros = if byte == 0 {
            self.zeros.saturating_add(1)
        } else {
            0
        };
        self.current = byte;
        self.left = 8;
        Some(())
    }

    fn bit(&mut self) -> Option<bool> {
        if self.left == 0 {
            self.load()?;
        }
        self.left -= 1;
        Some((self.current >> self.left) & 1 == 1)
    }

    /// `n` bits as an unsigned number; `n` is at most 32.
    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut value = 0u32;
        for _ in 0..n.min(32) {
            value = (value << 1) | u32::from(self.bit()?);
        }
        Some(value)
    }

    fn skip(&mut self, n: u32) -> Option<()> {
        for _ in 0..n {
            self.bit()?;
        }
        Some(())
    }

    /// The count of zero bits before the next one bit, consumed with it; more than `limit`
    /// zeros is malformed.
    fn leading_zeros(&mut self, limit: u32) -> Option<u32> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros > limit {
                return None;
            }
        }
        Some(zeros)
    }

    /// H.264 `ue(v)`, unsigned exp-Golomb, which AV1 calls `uvlc()`: at most 2^32 - 2 (the
    /// largest value any field read here may take; more leading zeros are malformed).
    fn ue(&mut self) -> Option<u32> {
        let zeros = self.leading_zeros(31)?;
        let value = (1u64 << zeros) - 1 + u64::from(self.bits(zeros)?);
        u32::try_from(value).ok()
    }

    /// H.264 `se(v)`: signed exp-Golomb.
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// RFC 7741 §4.2 payload descriptor, §4.3 payload header, then the key frame header of
/// RFC 6386 §9.1.
fn vp8_size(payload: &[u8]) -> Option<(u16, u16)> {
    let mut r = Bytes(payload);
    let b0 = r.byte()?;
    if b0 & 0x10 == 0 || b0 & 0x07 != 0 {
        return None; // not the start of partition 0
    }
    if b0 & 0x80 != 0 {
        let x = r.byte()?;
        if x & 0x80 != 0 {
            // I: PictureID, 7 or 15 bits (M flag).
            if r.byte()? & 0x80 != 0 {
                r.skip(1)?;
            }
        }
        if x & 0x40 != 0 {
            r.skip(1)?; // L: TL0PICIDX
        }
        if x & 0x30 != 0 {
            r.skip(1)?; // T or K: TID/Y/KEYIDX
        }
    }
    match r.0 {
        [tag, _, _, 0x9d, 0x01, 0x2a, w0, w1, h0, h1, ..] if tag & 0x01 == 0 => {
            let width = u16::from_le_bytes([*w0, *w1]) & 0x3fff;
            let height = u16::from_le_bytes([*h0, *h1]) & 0x3fff;
            picture(width.into(), height.into())
        }
        _ => None,
    }
}

/// RFC 9628 §4.2 payload descriptor and §4.2.1 scalability structure.
fn vp9_size(payload: &[u8]) -> Option<(u16, u16)> {
    let mut r = Bytes(payload);
    let b0 = r.byte()?;
    let (picture_id, predicted, layers, flexible) = (
        b0 & 0x80 != 0,
        b0 & 0x40 != 0,
        b0 & 0x20 != 0,
        b0 & 0x10 != 0,
    );
    let (begins_frame, scalability) = (b0 & 0x08 != 0, b0 & 0x02 != 0);
    if !begins_frame || predicted || !scalability {
        return None;
    }
    if picture_id && r.byte()? & 0x80 != 0 {
        r.skip(1)?; // 15-bit PictureID
    }
    if layers {
        r.skip(if flexible { 1 } else { 2 })?; // TID/U/SID/D, and TL0PICIDX
    }
    // No reference indices: they are only present with P=1.
    let head = r.byte()?;
    if head & 0x10 == 0 {
        return None; // Y=0: no sizes
    }
    let mut largest = (0u64, 0u64);
    for _ in 0..=(head >> 5) {
        let width = u16::from_be_bytes([r.byte()?, r.byte()?]);
        let height = u16::from_be_bytes([r.byte()?, r.byte()?]);
        let (width, height) = (u64::from(width), u64::from(height));
        if width * height > largest.0 * largest.1 {
            largest = (width, height);
        }
    }
    if head & 0x08 != 0 {
        for _ in 0..r.byte()? {
            let desc = r.byte()?;
            r.skip(usize::from((desc >> 2) & 0x03))?; // R reference P_DIFFs
        }
    }
    r.0.first()?; // the frame itself
    picture(largest.0, largest.1)
}

const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

/// RFC 6184 §5.6–5.8: the SPS NAL unit's body (after its one-byte header), alone, in a
/// well-formed STAP-A, or in the first fragment of an FU-A.
fn h264_size(payload: &[u8]) -> Option<(u16, u16)> {
    let (&header, body) = payload.split_first()?;
    match header & 0x1f {
        H264_SPS => h264_sps_size(body),
        H264_STAP_A => {
            let mut units = Bytes(body);
            let mut sps = None;
            while !units.0.is_empty() {
                let size = u16::from_be_bytes([units.byte()?, units.byte()?]);
                let (&nal_header, nal_body) = units.take(usize::from(size))?.split_first()?;
                if nal_header & 0x1f == H264_SPS && sps.is_none() {
                    sps = Some(nal_body);
                }
            }
            h264_sps_size(sps?)
        }
        H264_FU_A => match body {
            [fu, rest @ ..] if fu & 0x80 != 0 && fu & 0x1f == H264_SPS => h264_sps_size(rest),
            _ => None,
        },
        _ => None,
    }
}

/// The profiles whose SPS carries chroma format, bit depths and scaling matrices
/// (H.264 §7.3.2.1.1).
const H264_HIGH_PROFILES: [u32; 13] =
    [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// H.264 §7.3.2.1.1 `seq_parameter_set_data()` up to the frame cropping, and §7.4.2.1.1
/// for the cropped size.
fn h264_sps_size(sps: &[u8]) -> Option<(u16, u16)> {
    let mut b = Bits::new(sps, true);
    let profile_idc = b.bits(8)?;
    b.skip(16)?; // constraint_set flags, reserved_zero_2bits, level_idc
    if b.ue()? > 31 {
        return None; // seq_parameter_set_id
    }
    let mut chroma_format_idc = 1;
    if H264_HIGH_PROFILES.contains(&profile_idc) {
        chroma_format_idc = b.ue()?;
        if chroma_format_idc > 3 {
            return None;
        }
        if chroma_format_idc == 3 {
            b.skip(1)?; // separate_colour_plane_flag: same crop units as 4:4:4
        }
        let (luma_depth, chroma_depth) = (b.ue()?, b.ue()?); // bit_depth_*_minus8
        if luma_depth > 6 || chroma_depth > 6 {
            return None;
        }
        b.skip(1)?; // qpprime_y_zero_transform_bypass_flag
        if b.bit()? {
            // seq_scaling_matrix_present_flag: 4x4 lists, then 8x8 lists.
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if b.bit()? {
                    h264_skip_scaling_list(&mut b, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    if b.ue()? > 12 {
        return None; // log2_max_frame_num_minus4
    }
    match b.ue()? {
        0 => {
            if b.ue()? > 12 {
                return None; // log2_max_pic_order_cnt_lsb_minus4
            }
        }
        1 => {
            b.skip(1)?; // delta_pic_order_always_zero_flag
            b.se()?; // offset_for_non_ref_pic
            b.se()?; // offset_for_top_to_bottom_field
            let cycle = b.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                b.se()?; // offset_for_ref_frame
            }
        }
        2 => {}
        _ => return None,
    }
    b.ue()?; // max_num_ref_frames
    b.skip(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_in_mbs = u64::from(b.ue()?) + 1;
    let height_in_map_units = u64::from(b.ue()?) + 1;
    let frame_mbs_only = b.bit()?;
    if !frame_mbs_only {
        b.skip(1)?; // mb_adaptive_frame_field_flag
    }
    b.skip(1)?; // direct_8x8_inference_flag
    let mut crop = [0u64; 4]; // left, right, top, bottom
    if b.bit()? {
        for side in crop.iter_mut() {
            *side = b.ue()?.into();
        }
    }
    // CropUnitX/Y (7-19 to 7-22): SubWidthC and SubHeightC, which are 1 for 4:0:0, 4:4:4 and
    // separate colour planes alike; doubled vertically for field coding.
    let (sub_width, sub_height) = match chroma_format_idc {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let frame_factor = if frame_mbs_only { 1 } else { 2 };
    let width = (width_in_mbs * 16).checked_sub(sub_width * (crop[0] + crop[1]))?;
    let height = (frame_factor * height_in_map_units * 16)
        .checked_sub(sub_height * frame_factor * (crop[2] + crop[3]))?;
    picture(width, height)
}

/// H.264 §7.3.2.1.1.1 `scaling_list()`: reads the deltas without keeping the list. Once a
/// scale is 0 (the default list, or the last scale repeated to the end), no delta follows.
fn h264_skip_scaling_list(b: &mut Bits<'_>, size: usize) -> Option<()> {
    let mut last = 8;
    for _ in 0..size {
        let delta = b.se()?;
        if !(-128..=127).contains(&delta) {
            return None;
        }
        last = (last + delta + 256) % 256;
        if last == 0 {
            break;
        }
    }
    Some(())
}

const AV1_OBU_SEQUENCE_HEADER: u8 = 1;

/// AV1 RTP payload format §4.4–4.5: aggregation header `Z|Y|W W|N|-|-|-`, then OBU
/// elements, each with a LEB128 length except the last when `W` counts them.
fn av1_size(payload: &[u8]) -> Option<(u16, u16)> {
    let (&aggregation, rest) = payload.split_first()?;
    let continuation = aggregation & 0x80 != 0;
    let counted = usize::from((aggregation >> 4) & 0x03);
    let mut elements = Bytes(rest);
    let mut index = 0;
    while !elements.0.is_empty() {
        index += 1;
        let element = if index == counted {
            elements.take(elements.0.len())?
        } else {
            let length = usize::try_from(elements.leb128()?).ok()?;
            elements.take(length)?
        };
        if index == 1 && continuation {
            continue; // the tail of an OBU begun in an earlier packet
        }
        let mut obu = Bytes(element);
        let header = obu.byte()?;
        if header & 0x80 != 0 {
            return None; // obu_forbidden_bit
        }
        if header & 0x04 != 0 {
            obu.skip(1)?; // obu_extension_header
        }
        if header & 0x02 != 0 {
            // obu_has_size_field: the OBU may still be cut short by fragmentation.
            let size = usize::try_from(obu.leb128()?).ok()?;
            obu.0 = obu.0.get(..size).unwrap_or(obu.0);
        }
        if (header >> 3) & 0x0f == AV1_OBU_SEQUENCE_HEADER {
            return av1_sequence_header_size(obu.0);
        }
    }
    None
}

/// AV1 §5.5.1 `sequence_header_obu()` up to the maximum frame size.
fn av1_sequence_header_size(obu: &[u8]) -> Option<(u16, u16)> {
    let mut b = Bits::new(obu, false);
    b.skip(4)?; // seq_profile, still_picture
    if b.bit()? {
        b.skip(5)?; // reduced_still_picture_header: seq_level_idx[0]
    } else {
        let mut decoder_model = false;
        let mut buffer_delay_bits = 0;
        if b.bit()? {
            // timing_info()
            b.skip(64)?; // num_units_in_display_tick, time_scale
            if b.bit()? {
                b.ue()?; // uvlc(): equal_picture_interval: num_ticks_per_picture_minus_1
            }
            decoder_model = b.bit()?;
            if decoder_model {
                // decoder_model_info()
                buffer_delay_bits = b.bits(5)? + 1;
                b.skip(32 + 5 + 5)?; // decoding tick, removal and presentation time lengths
            }
        }
        let initial_display_delay = b.bit()?;
        for _ in 0..=b.bits(5)? {
            b.skip(12)?; // operating_point_idc
            if b.bits(5)? > 7 {
                b.skip(1)?; // seq_level_idx > 7: seq_tier
            }
            if decoder_model && b.bit()? {
                b.skip(2 * buffer_delay_bits + 1)?; // operating_parameters_info()
            }
            if initial_display_delay && b.bit()? {
                b.skip(4)?; // initial_display_delay_minus_1
            }
        }
    }
    let width_bits = b.bits(4)? + 1;
    let height_bits = b.bits(4)? + 1;
    let width = u64::from(b.bits(width_bits)?) + 1;
    let height = u64::from(b.bits(height_bits)?) + 1;
    picture(width, height)
}

#[cfg(test)]
mod tests {
    use super::*;
    use VideoCodec::{Av1, Vp8, Vp9, H264};

    /// The size a payload should give.
    type Want = Option<(u16, u16)>;
    /// A named payload (or header) in hex and the size it should give.
    type Row = (&'static str, &'static str, Want);

    const HD: Want = Some((1280, 720));
    const FULL_HD: Want = Some((1920, 1080));

    fn hex(text: &str) -> Vec<u8> {
        let digit = |i: usize| u8::from_str_radix(&text[i..i + 2], 16).unwrap();
        (0..text.len()).step_by(2).map(digit).collect()
    }

    /// Rows of `(name, payload in hex, size)` for one codec.
    fn check(codec: VideoCodec, table: &[Row]) {
        for (name, payload, want) in table {
            assert_eq!(
                keyframe_size(codec, &hex(payload)),
                *want,
                "{codec:?} {name}"
            );
        }
    }

    /// VP8 key frame headers (frame tag, start code, sizes) written by libvpx.
    const VP8_FRAMES: [(&str, (u16, u16)); 3] = [
        ("9077019d012a0005d002", (1280, 720)),
        ("909c009d012a80026801", (640, 360)),
        ("3051009d012a4001b400", (320, 180)),
    ];

    /// Every descriptor form of RFC 7741 for the start of partition 0: none, X alone, 7- and
    /// 15-bit PictureID, L, T, K, and all of I (15-bit), L, T, K.
    const VP8_DESCRIPTORS: [&str; 8] = [
        "10",
        "9000",
        "908005",
        "90808123",
        "904007",
        "902040",
        "901001",
        "90f085010720",
    ];

    #[test]
    fn vp8_payloads() {
        check(
            Vp8,
            &[
                ("scale bits ignored", "109077019d012a0045d0c2", HD),
                ("N bit does not matter", "309077019d012a0005d002", HD),
                ("delta frame (P=1)", "109177019d012a0005d002", None),
                (
                    "not the start of a partition",
                    "009077019d012a0005d002",
                    None,
                ),
                ("partition 1", "119077019d012a0005d002", None),
                ("bad start code", "109077019d012b0005d002", None),
                ("zero width", "109077019d012a0000d002", None),
                ("zero height but scale bits", "109077019d012a000500c0", None),
                ("descriptor cut", "9080", None),
                ("empty", "", None),
            ],
        );
    }

    /// SPS NAL units written by x264 (OBS's encoder), header byte included, with the size
    /// each was encoded at.
    #[rustfmt::skip]
    const H264_SPS_X264: [(&str, &str, (u16, u16)); 10] = [
        // Constrained Baseline 3.1 and 4.0; 1080 is cropped from 1088.
        ("42c01f", "6742c01fd9005005bb0110000003001000000303c0f1832480", (1280, 720)),
        ("42c028", "6742c028d900780227e5c044000003000400000300f03c60c920", (1920, 1080)),
        // High 3.1 and 4.0 (64001f, 640028), 854 cropped from 864.
        ("64001f", "6764001facd9405005bb0110000003001000000303c0f1831960", (1280, 720)),
        ("640028", "67640028acd940780227e5c044000003000400000300f03c60c658", (1920, 1080)),
        ("854x480", "6764001facd940d83de6f0110000030001000003003c0f183196", (854, 480)),
        // Field coding (crop unit doubled), 4:0:0, High 10, 4:2:2 and 4:4:4 crop units.
        ("interlaced", "67640028acd94078044fde0220000003002000000783e2c5b2c0", (1920, 1080)),
        ("4:0:0", "6764000df36505067e37016c80000003008000001e078a14cb", (320, 180)),
        ("High 10", "676e0028a6cd940780227e5c0440000003004000000f03c60c6580", (1920, 1080)),
        ("4:2:2", "677a001ebcd940a42fe227c044000003000400000300f03c58b658", (642, 362)),
        ("4:4:4", "67f40020919b280ac0c3c5de0220000003002000000781e30632c0", (1366, 766)),
    ];

    /// `sps` alone, first in a STAP-A with a PPS and an IDR slice, last in a STAP-A, and as
    /// the first fragment of an FU-A.
    fn h264_packets(sps: &[u8]) -> [Vec<u8>; 4] {
        let unit =
            |nal: &[u8]| [&u16::try_from(nal.len()).unwrap().to_be_bytes()[..], nal].concat();
        let (pps, idr) = (unit(&hex("68ebe3cb22c0")), unit(&hex("658884")));
        [
            sps.to_vec(),
            [&[0x78][..], &unit(sps), &pps, &idr].concat(),
            [&[0x78][..], &pps, &unit(sps)].concat(),
            [&[0x7c, 0x80 | sps[0]][..], &sps[1..]].concat(),
        ]
    }

    #[test]
    fn h264_packets_with_and_without_an_sps() {
        let body = "42c01fd9005005bb0110000003001000000303c0f1832480"; // 1280x720
        let table = [
            ("PPS", "68ebe3cb22c0".to_string()),
            ("IDR slice", "658884".to_string()),
            (
                "STAP-A without an SPS",
                "78000668ebe3cb22c00003658884".to_string(),
            ),
            ("STAP-A size past the end", format!("78003067{body}")),
            ("STAP-A zero-size unit", format!("78000067{body}")),
            ("STAP-A half a size", format!("78001967{body}00")),
            ("FU-A middle of an SPS", format!("7c07{body}")),
            ("FU-A end of an SPS", format!("7c47{body}")),
            ("FU-B start of an SPS", format!("7d87{body}")),
            ("SPS header only", "67".to_string()),
        ];
        for (name, payload) in table {
            assert_eq!(keyframe_size(H264, &hex(&payload)), None, "{name}");
        }
        assert_eq!(keyframe_size(H264, &hex(&format!("67{body}"))), HD);
        // Two SPSs in one STAP-A: the first counts.
        let (hd, full_hd) = (H264_SPS_X264[0].1, H264_SPS_X264[1].1);
        let stap = hex(&format!("780019{hd}001a{full_hd}"));
        assert_eq!(keyframe_size(H264, &stap), HD);
        // Chromium's Constrained Baseline (42e01f): the constraint flags change nothing.
        assert_eq!(
            keyframe_size(H264, &hex(&format!("6742e01f{}", &body[6..]))),
            HD
        );
    }

    /// SPSs written field by field for what x264 does not write (each read back with FFmpeg's
    /// `trace_headers`): 1280x720 (80x45 macroblocks) and crop 1, 2, 3, 4 unless said.
    #[rustfmt::skip]
    const H264_SPS_BUILT: [Row; 27] = [
        ("Baseline: no chroma fields", "6742001f216ca02802dc80", HD),
        ("matrix, 7 of 8 lists", concat!(
            "6764001f226d843fffc2301fc01010190c50d1c11090542c190d244421fffe03f8020203218a1a382212",
            "0a858321a489087fffffffffffffff16ca02802dc8"), HD),
        ("matrix without lists", "6764001f226d002d9405005b90", HD),
        ("4:4:4, 12 lists", concat!(
            "67f4001f210db01fc01010190c50d1c11090542c190d244423087fff843fffc23087fffffffffffffff8",
            "45087fffffffffffffff84610fffffffffffffffe5b280a00b72"), HD),
        ("poc type 1, 4 offsets", "6764001f226c2a0f004b05450000445c3280a00b72", HD),
        ("poc type 2", "6764001f226c2b280a00b720", HD),
        ("poc type 3", "6764001f226c290a02802dc8", None),
        ("poc cycle of 256", concat!(
            "6764001f226c2a0f004b00101fffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "fffff280a00b72"), None),
        ("scaling delta 128", "6764001f226d80403fff802d9405005b90", None),
        ("chroma_format_idc 4", "6764001f215b0b65014016e4", None),
        ("seq_parameter_set_id 32", "6764001f0429b0b65014016e40", None),
        ("bit_depth_luma_minus8 7", "6764001f2210c2d9405005b9", None),
        ("bit_depth_chroma_minus8 7", "6764001f226202d9405005b9", None),
        ("log2_max_frame_num_minus4 13", "6764001f226c1d65014016e4", None),
        ("log2_max_pic_order_cnt_lsb_minus4 13", "6764001f226c2c71405005b9", None),
        ("4:2:0", "6764001f226c2d9405005bd32150", Some((1274, 706))),
        ("4:2:2", "677a001f236c2d9405005bd32150", Some((1274, 713))),
        ("4:4:4", "67f4001f210d85b280a00b7a642a", Some((1277, 713))),
        ("4:0:0", "6764001f25b0b65014016f4c8540", Some((1277, 713))),
        ("separate colour planes", "67f4001f212d85b280a00b7a642a", Some((1277, 713))),
        ("fields 4:2:2, 1088 - 8", "677a001f236c2d94078044fca8", FULL_HD),
        ("fields 4:0:0, 1088 - 8", "6764001f25b0b6501e0113f2a0", FULL_HD),
        ("fields, separate planes", "67f4001f212d85b280f0089f95", FULL_HD),
        ("4095 macroblocks wide, no crop", "6764001f226c2d94003ffc16e4", Some((65520, 720))),
        ("4096 macroblocks wide", "6764001f226c2d9400100005b9", None),
        ("crop 320 left and right", "6764001f226c2d9405005bc02820141d", None),
        ("crop 200 top and bottom", "6764001f226c2d9405005bf019203250", None),
    ];

    #[test]
    fn rbsp_reader_drops_emulation_prevention_bytes() {
        let table: &[(&str, bool, &str)] = &[
            ("00000301", true, "000001"),
            ("0000030000030201", true, "000000000201"),
            ("00000303", true, "000003"), // the byte after an escape is data
            ("000301", true, "000301"),
            ("000003000003000003", true, "000000000000"),
            ("00000301", false, "00000301"),
        ];
        for (input, rbsp, want) in table {
            let input = hex(input);
            let mut b = Bits::new(&input, *rbsp);
            let got: Vec<u8> = std::iter::from_fn(|| b.bits(8).map(|v| v as u8)).collect();
            assert_eq!(got, hex(want), "{input:02x?}");
        }
        assert_eq!(
            Bits::new(&[0, 0, 3], true).bits(24),
            None,
            "an escape with nothing after it"
        );
    }

    #[test]
    fn exp_golomb_codes() {
        let largest = Some(u32::MAX - 1);
        let table: &[(&str, Option<u32>, Option<i64>)] = &[
            ("80", Some(0), Some(0)),
            ("40", Some(1), Some(1)),
            ("60", Some(2), Some(-1)),
            ("20", Some(3), Some(2)),
            (
                "00000001fffffffe",
                largest,
                Some(-(i64::from(u32::MAX) - 1) / 2),
            ),
            ("000000008000000000", None, None), // 32 leading zeros
            ("00000000000000000000", None, None),
            ("01", None, None),
        ];
        for (input, ue, se) in table {
            assert_eq!(Bits::new(&hex(input), false).ue(), *ue, "ue {input}");
            assert_eq!(Bits::new(&hex(input), false).se(), *se, "se {input}");
        }
    }

    /// Non-flexible, 15-bit PictureID, L; three layers 320x180, 640x360, 1280x720 and a
    /// picture group.
    const VP9_THREE_LAYERS: &str = "aa8123000258014000b402800168050002d001040182";

    #[test]
    fn vp9_payloads() {
        // I|P|L|F|B|E|V|Z; SS: N_S|Y|G, WIDTH and HEIGHT per layer, then the picture group.
        check(
            Vp9,
            &[
                ("three layers", VP9_THREE_LAYERS, HD),
                ("one layer", "0a10028001e082", Some((640, 480))),
                ("largest first", "0e30050002d002800168aa", HD),
                (
                    "7-bit PictureID, flexible L",
                    "ba120010028001e082",
                    Some((640, 480)),
                ),
                ("no sizes (Y=0)", "0a0882", None),
                ("inter predicted", "4a10028001e082", None),
                ("not the start of a frame", "0210028001e082", None),
                ("no structure", "0882", None),
                ("zero size", "0a100000000082", None),
                ("no frame after it", "0a10028001e0", None),
                ("cut in the group", "0a18028001e00204", None),
                ("group takes the frame byte", "0a18028001e00108aabb", None),
            ],
        );
    }

    /// Sequence header OBUs written by each encoder (header byte with `obu_has_size_field`,
    /// size, payload), with the size each was encoded at.
    #[rustfmt::skip]
    const AV1_SEQUENCE_HEADERS: [(&str, &str, (u16, u16)); 12] = [
        ("libaom", "0a0b0000002d4cffb3dfff9804", (1280, 720)),
        ("libaom", "0a0b00000042abbfc377ffe601", (1920, 1080)),
        ("libaom", "0a0b0000000cc4ff673ffe6010", (640, 360)),
        ("rav1e (seq_tier)", "0a0e000000faa67fd9e210ac8101010a", (1280, 720)),
        ("rav1e (seq_tier)", "0a0e000000faabbfc371085640808085", (1920, 1080)),
        ("rav1e (seq_tier)", "0a0e000000fa627fb38842b204040428", (640, 360)),
        ("SVT-AV1", "0a0b0000002d4cffb3cfbf9004", (1280, 720)),
        ("SVT-AV1", "0a0b00000042abbfc373efe401", (1920, 1080)),
        ("SVT-AV1", "0a0b0000000cc4ff673efe4010", (640, 360)),
        ("libaom reduced still picture", "0a0a396a67fd9fda021a0040", (1280, 720)),
        ("libaom timing info", "0a1404000000040000007b400005bd4cffb3dfff9804", (1280, 720)),
        (
            "libaom timing info and decoder model",
            "0a1e040000000400000079780000000a530000175f915f90bd4cffb3dfff9804",
            (1280, 720),
        ),
    ];

    fn len(obu: &[u8]) -> [u8; 1] {
        assert!(obu.len() < 0x80, "one LEB128 byte");
        [obu.len() as u8]
    }

    /// `obu` (with its size field) in the aggregation forms of the RTP payload format.
    fn av1_packets(obu: &[u8]) -> [Vec<u8>; 10] {
        let mut sized = Bytes(&obu[1..]);
        let size = sized.leb128().unwrap() as usize;
        // Without obu_has_size_field, as senders should send it; then with an extension.
        let bare = &[&[obu[0] & !0x02][..], &sized.0[..size]].concat();
        let extended = &[&[bare[0] | 0x04, 0x08][..], &bare[1..]].concat();
        let frame: &[u8] = &[0x32, 0x10, 0xab, 0xcd, 0xef];
        let padding = &[&[0x78][..], &[0x55; 199]].concat(); // 200 bytes: a 2-byte length
        [
            [&[0x18][..], bare].concat(),                                  // W=1
            [&[0x10][..], bare].concat(),                                  // W=1, N=0
            [&[0x28][..], &len(bare), bare, frame].concat(),               // W=2, then a frame
            [&[0x08][..], &len(bare), bare, &len(frame), frame].concat(),  // W=0
            [&[0x08, 0xc8, 0x01][..], padding, &len(bare), bare].concat(), // W=0 after padding
            [&[0x18][..], obu].concat(),                                   // W=1, with a size field
            [&[0x08][..], &len(obu), obu].concat(),                        // W=0, with a size field
            [&[0x18][..], extended].concat(),                              // with an extension
            [&[0xa8, 3, 1, 2, 3][..], bare].concat(),                      // after a continuation
            [&[0x30, 1, 0x10][..], &len(bare), bare, frame].concat(),      // W=3, second
        ]
    }

    #[test]
    fn av1_packets_without_a_sequence_header() {
        let seq = AV1_SEQUENCE_HEADERS[0].1;
        let bare = &seq[4..]; // no header or size
        let table = [
            ("a frame only", "183210abcdef".to_string()),
            ("continuation only", format!("98{seq}")),
            ("continuation, W=0", format!("880d{seq}")),
            ("forbidden bit", format!("1888{bare}")),
            (
                "size field shorter than the header",
                format!("180a05{bare}"),
            ),
            ("zero-length element", format!("0800{seq}")),
            ("element past the end", format!("0830{seq}")),
            ("nine-byte length", format!("08ffffffffffffffff01{seq}")),
            ("aggregation header only", "18".to_string()),
        ];
        for (name, payload) in table {
            assert_eq!(keyframe_size(Av1, &hex(&payload)), None, "{name}");
        }
    }

    /// Sequence headers written field by field for what the encoders above do not write
    /// (each read back with FFmpeg's `trace_headers`).
    #[rustfmt::skip]
    const AV1_SEQUENCE_HEADERS_BUILT: [Row; 7] = [
        ("3 operating points: decoder model with 32-bit delays, display delays, tiers", concat!(
            "0a2f0400000fa40001d4c3fc00057e40008840db8000181c80000000420656440d18000181c800000005",
            "77dff0de000004"), Some((3840, 2160))),
        ("num_ticks_per_picture_minus_1 2^32 - 2",
            "0a1b0400000fa40001d4c200000003fffffffc0081a3533fecf0000020", HD),
        ("6 operating points, decoder model", concat!(
            "0a290400000fa40001d4c120000afc80002881a7c822069840d3e411034c2069f20881a6a94feb380000",
            "10"), Some((640, 360))),
        ("6 operating points, display delays",
            "0a170251031840c791031840c791031840c79a927e59800001", Some((320, 180))),
        ("16-bit sizes", "0a0c00010347fffffbfff8000008", Some((65535, 65535))),
        ("width 65536", "0a0c00010347fffffc0b3c000008", None),
        ("height 65536", "0a0c00010347fc13fffffc000008", None),
    ];

    type Case = (String, VideoCodec, Vec<u8>, Want);

    /// Every VP8 frame, SPS and sequence header above in every packet form, and a VP9
    /// structure, with the size each gives.
    fn payloads() -> Vec<Case> {
        let mut out: Vec<Case> = Vec::new();
        for (frame, size) in VP8_FRAMES {
            for descriptor in VP8_DESCRIPTORS {
                let name = format!("VP8 {descriptor} {size:?}");
                out.push((name, Vp8, hex(&format!("{descriptor}{frame}")), Some(size)));
            }
        }
        let x264 = H264_SPS_X264.map(|(name, sps, size)| (name, sps, Some(size)));
        for (name, sps, want) in x264.into_iter().chain(H264_SPS_BUILT) {
            for (form, payload) in h264_packets(&hex(sps)).into_iter().enumerate() {
                out.push((format!("H.264 {name}, form {form}"), H264, payload, want));
            }
        }
        out.push(("VP9 three layers".into(), Vp9, hex(VP9_THREE_LAYERS), HD));
        let real = AV1_SEQUENCE_HEADERS.map(|(name, obu, size)| (name, obu, Some(size)));
        for (name, obu, want) in real.into_iter().chain(AV1_SEQUENCE_HEADERS_BUILT) {
            for (form, payload) in av1_packets(&hex(obu)).into_iter().enumerate() {
                out.push((format!("AV1 {name}, form {form}"), Av1, payload, want));
            }
        }
        out
    }

    #[test]
    fn every_payload_gives_its_size_and_its_prefixes_no_other() {
        let mut cut_short = 0;
        for (name, codec, payload, want) in payloads() {
            assert_eq!(keyframe_size(codec, &payload), want, "{name}");
            for cut in 0..payload.len() {
                match keyframe_size(codec, &payload[..cut]) {
                    None => cut_short += 1,
                    got => assert_eq!(got, want, "{name}, cut at {cut}"),
                }
            }
        }
        assert!(cut_short > 10_000, "{cut_short}");
    }

    #[test]
    fn random_and_degenerate_inputs_are_handled_without_panicking() {
        // Each codec after a head that reaches its deepest parser.
        let heads: [(VideoCodec, &[u8]); 5] = [
            (Vp8, &[0x10]),
            (Vp9, &[0x0a, 0xf8]),
            (H264, &[0x67, 0x64, 0x00, 0x1f]),
            (H264, &[0x7c, 0x87, 0xf4, 0x00, 0x1f]), // FU-A start of a 4:4:4 SPS
            (Av1, &[0x18, 0x08, 0x00]),
        ];
        // xorshift64: deterministic, no dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut buf = [0u8; 96];
        for round in 0..20_000 {
            buf.iter_mut().for_each(|byte| *byte = next() as u8);
            for (codec, head) in heads {
                if round % 2 == 0 {
                    buf[..head.len()].copy_from_slice(head);
                }
                keyframe_size(codec, &buf[..(next() % 97) as usize]);
            }
        }
        // Long runs of zeros and ones behind each head: every loop ends at its limit.
        for fill in [0x00, 0xff, 0x80] {
            for (codec, head) in heads {
                let mut payload = [fill; 1500];
                payload[..head.len()].copy_from_slice(head);
                keyframe_size(codec, &payload);
            }
        }
    }
}
