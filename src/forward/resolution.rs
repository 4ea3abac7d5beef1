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
mod tests;
