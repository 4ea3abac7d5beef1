//! Synthetic RTP payloads that look enough like real media for an SFU's keyframe and
//! codec checks, and encode a number `n` so every payload is distinct.
//!
//! Nothing here is decodable video or audio; a server must forward these bytes unchanged.

/// `len` filler bytes: `n` big-endian, then a pattern derived from `n`.
fn filler(n: u32, len: usize) -> impl Iterator<Item = u8> {
    let seed = n.to_be_bytes();
    (0..len).map(move |i| match i {
        0..=3 => seed[i],
        _ => seed[3].wrapping_mul(31).wrapping_add(i as u8),
    })
}

/// VP8 RTP payload descriptor (RFC 7741 §4.2): X=0, N=0, S=1 (start of partition), PID=0.
const VP8_DESCRIPTOR: u8 = 0x10;

/// VP8 frame tag (RFC 6386 §9.1): 3 bytes, little-endian bit fields
/// `first_part_size:19 | show_frame:1 | version:3 | inter_frame:1`.
fn vp8_frame_tag(inter_frame: bool, first_part_size: u32) -> [u8; 3] {
    let tag = (first_part_size << 5) | (1 << 4) | u32::from(inter_frame);
    [tag as u8, (tag >> 8) as u8, (tag >> 16) as u8]
}

/// A VP8 keyframe in one RTP packet: descriptor, frame tag with P=0, the keyframe start
/// code and a 320x240 size, then 200 filler bytes encoding `n`.
pub fn vp8_keyframe_payload(n: u32) -> Vec<u8> {
    let mut p = vec![VP8_DESCRIPTOR];
    p.extend(vp8_frame_tag(false, 200));
    p.extend([0x9d, 0x01, 0x2a]); // keyframe start code
    p.extend(320u16.to_le_bytes());
    p.extend(240u16.to_le_bytes());
    p.extend(filler(n, 200));
    p
}

/// A VP8 interframe in one RTP packet: descriptor, frame tag with P=1, 60 filler bytes.
pub fn vp8_delta_payload(n: u32) -> Vec<u8> {
    let mut p = vec![VP8_DESCRIPTOR];
    p.extend(vp8_frame_tag(true, 60));
    p.extend(filler(n, 60));
    p
}

/// An H264 IDR slice as a single NAL unit packet (RFC 6184 §5.6): NRI=3, type 5.
pub fn h264_idr_payload(n: u32) -> Vec<u8> {
    let mut p = vec![0x65, 0x88, 0x84]; // NAL header, then first_mb=0 / slice_type I
    p.extend(filler(n, 200));
    p
}

/// An H264 non-IDR slice as a single NAL unit packet: NRI=2, type 1.
pub fn h264_non_idr_payload(n: u32) -> Vec<u8> {
    let mut p = vec![0x41, 0x9a]; // NAL header, then first_mb=0 / slice_type P
    p.extend(filler(n, 60));
    p
}

/// SPS + PPS in one STAP-A packet (RFC 6184 §5.7.1), as encoders send before an IDR.
/// `profile_level_id` is the fmtp value, e.g. `"64001f"` or `"42e01f"`.
pub fn h264_sps_pps_payload(profile_level_id: &str) -> Vec<u8> {
    let plid = u32::from_str_radix(profile_level_id, 16).expect("profile-level-id is 6 hex digits");
    let mut sps = vec![0x67, (plid >> 16) as u8, (plid >> 8) as u8, plid as u8];
    sps.extend([0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10]);
    let pps = [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
    let mut p = vec![0x78]; // STAP-A, NRI=3
    for nal in [&sps[..], &pps[..]] {
        p.extend((nal.len() as u16).to_be_bytes());
        p.extend_from_slice(nal);
    }
    p
}

/// An Opus packet: TOC byte (CELT fullband 20 ms, mono, one frame), then 80 filler bytes.
pub fn opus_payload(n: u32) -> Vec<u8> {
    let mut p = vec![0xf8];
    p.extend(filler(n, 80));
    p
}
