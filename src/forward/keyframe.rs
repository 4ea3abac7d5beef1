//! Keyframe detection on RTP payloads: is this packet the first of a frame a decoder can
//! start from?
//!
//! A viewer that joins, or whose source was just replaced, must not be sent delta frames it
//! cannot decode; the forwarder holds video back until [`is_keyframe_start`] says yes. This
//! module owns the payload-descriptor parsing needed for that one decision, per codec:
//!
//! - VP8 (RFC 7741): start of partition 0 (`S=1`, `PID=0`) and a payload header with `P=0`.
//! - VP9 (RFC 9628): start of frame (`B=1`), not inter-picture predicted (`P=0`), and, when
//!   layer indices are present, the base spatial layer (`SID=0`).
//! - H.264 (RFC 6184): an IDR slice or SPS, alone, inside a STAP-A, or starting an FU-A.
//! - AV1 (AOM RTP payload format): the aggregation header's `N=1` (first packet of a coded
//!   video sequence) with `Z=0` (not a continuation).
//!
//! It reads only the payload slice it is given: no allocation, no state, and no panic on any
//! input; truncated or malformed payloads are simply not keyframes.

/// A video codec whose keyframes the forwarder can recognise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    /// VP8.
    Vp8,
    /// VP9.
    Vp9,
    /// H.264 / AVC.
    H264,
    /// AV1.
    Av1,
}

impl VideoCodec {
    /// The codec for a MIME type such as `video/VP8` (case-insensitive), if it is video and
    /// known here.
    pub fn from_mime(mime: &str) -> Option<VideoCodec> {
        let table = [
            ("video/vp8", VideoCodec::Vp8),
            ("video/vp9", VideoCodec::Vp9),
            ("video/h264", VideoCodec::H264),
            ("video/av1", VideoCodec::Av1),
        ];
        let mime = mime.trim();
        table
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(mime))
            .map(|(_, codec)| *codec)
    }
}

/// Whether `payload` (an RTP payload of `codec`) is the first packet of a keyframe.
pub fn is_keyframe_start(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8(payload),
        VideoCodec::Vp9 => vp9(payload),
        VideoCodec::H264 => h264(payload),
        VideoCodec::Av1 => av1(payload),
    }
}

/// A forward-only reader over a byte slice; every read checks the length.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(*first)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.rest = self.rest.get(n..)?;
        Some(())
    }
}

/// RFC 7741 §4.2 payload descriptor, then §4.3 payload header.
fn vp8(payload: &[u8]) -> bool {
    fn parse(payload: &[u8]) -> Option<bool> {
        let mut r = Reader { rest: payload };
        let b0 = r.byte()?;
        let extended = b0 & 0x80 != 0;
        let start = b0 & 0x10 != 0;
        let partition = b0 & 0x07;
        if extended {
            let x = r.byte()?;
            if x & 0x80 != 0 {
                // I: PictureID, 7 or 15 bits (M flag).
                let pid = r.byte()?;
                if pid & 0x80 != 0 {
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
        let header = r.byte()?;
        Some(start && partition == 0 && header & 0x01 == 0)
    }
    parse(payload).unwrap_or(false)
}

/// RFC 9628 §4.2 payload descriptor (flexible and non-flexible modes).
fn vp9(payload: &[u8]) -> bool {
    fn parse(payload: &[u8]) -> Option<bool> {
        let mut r = Reader { rest: payload };
        let b0 = r.byte()?;
        let picture_id = b0 & 0x80 != 0;
        let inter_predicted = b0 & 0x40 != 0;
        let layers = b0 & 0x20 != 0;
        let flexible = b0 & 0x10 != 0;
        let begins_frame = b0 & 0x08 != 0;
        let scalability = b0 & 0x02 != 0;
        if picture_id {
            let m = r.byte()?;
            if m & 0x80 != 0 {
                r.skip(1)?;
            }
        }
        let mut spatial = 0;
        if layers {
            let l = r.byte()?;
            spatial = (l >> 1) & 0x07;
            if !flexible {
                r.skip(1)?; // TL0PICIDX
            }
        }
        if flexible && inter_predicted {
            // Up to three reference indices, each with a "next" flag.
            for _ in 0..3 {
                if r.byte()? & 0x01 == 0 {
                    break;
                }
            }
        }
        if scalability {
            vp9_scalability_structure(&mut r)?;
        }
        r.rest.first()?; // the frame itself
        Some(begins_frame && !inter_predicted && spatial == 0)
    }
    parse(payload).unwrap_or(false)
}

/// Skips the scalability structure (RFC 9628 §4.2.1).
fn vp9_scalability_structure(r: &mut Reader<'_>) -> Option<()> {
    let head = r.byte()?;
    let spatial_layers = usize::from(head >> 5) + 1;
    if head & 0x10 != 0 {
        r.skip(4 * spatial_layers)?; // WIDTH and HEIGHT per layer
    }
    if head & 0x08 != 0 {
        let pictures = r.byte()?;
        for _ in 0..pictures {
            let desc = r.byte()?;
            r.skip(usize::from((desc >> 2) & 0x03))?; // R reference P_DIFFs
        }
    }
    Some(())
}

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

fn h264_starts_keyframe(nal_type: u8) -> bool {
    nal_type == H264_IDR || nal_type == H264_SPS
}

/// RFC 6184 §5.6–5.8: single NAL unit, STAP-A, FU-A.
fn h264(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        t @ 1..=23 => h264_starts_keyframe(t),
        H264_STAP_A => {
            // Aggregated units: 16-bit size, then the NAL unit; a malformed list is no keyframe.
            let mut rest = payload.get(1..).unwrap_or_default();
            let mut found = false;
            while let [hi, lo, tail @ ..] = rest {
                let size = usize::from(u16::from_be_bytes([*hi, *lo]));
                let Some(&nal_header) = tail.get(..size).and_then(|nal| nal.first()) else {
                    return false;
                };
                found |= h264_starts_keyframe(nal_header & 0x1f);
                rest = tail.get(size..).unwrap_or_default();
            }
            found && rest.is_empty()
        }
        H264_FU_A => match payload.get(1) {
            Some(fu) => fu & 0x80 != 0 && h264_starts_keyframe(fu & 0x1f),
            None => false,
        },
        _ => false,
    }
}

/// AV1 RTP payload format §4.4: aggregation header `Z|Y|W W|N|-|-|-`.
fn av1(payload: &[u8]) -> bool {
    match payload {
        [header, _, ..] => header & 0x08 != 0 && header & 0x80 == 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use VideoCodec::{Av1, Vp8, Vp9, H264};

    #[test]
    fn mime_types() {
        let table: &[(&str, Option<VideoCodec>)] = &[
            ("video/VP8", Some(Vp8)),
            ("video/vp8", Some(Vp8)),
            ("VIDEO/VP9", Some(Vp9)),
            ("video/H264", Some(H264)),
            ("video/h264", Some(H264)),
            ("video/AV1", Some(Av1)),
            ("audio/opus", None),
            ("video/H265", None),
            ("video/VP8x", None),
            ("", None),
        ];
        for (mime, want) in table {
            assert_eq!(VideoCodec::from_mime(mime), *want, "{mime}");
        }
    }

    fn check(table: &[(&str, VideoCodec, &[u8], bool)]) {
        for (name, codec, payload, want) in table {
            assert_eq!(is_keyframe_start(*codec, payload), *want, "{name}");
        }
    }

    #[test]
    fn vp8_payloads() {
        check(&[
            ("minimal key", Vp8, &[0x10, 0x00, 0x9d, 0x01, 0x2a], true),
            ("minimal delta", Vp8, &[0x10, 0x01, 0x00], false),
            ("not start of partition", Vp8, &[0x00, 0x00, 0x9d], false),
            ("start of partition 1", Vp8, &[0x11, 0x00, 0x9d], false),
            ("N bit does not matter", Vp8, &[0x30, 0x00], true),
            (
                "X, I with 15-bit pid",
                Vp8,
                &[0x90, 0x80, 0x81, 0x23, 0x00],
                true,
            ),
            ("X, I with 7-bit pid", Vp8, &[0x90, 0x80, 0x05, 0x00], true),
            (
                "X, I/L/T/K all present",
                Vp8,
                &[0x90, 0xf0, 0x85, 0x01, 0x07, 0x20, 0x50],
                true,
            ),
            (
                "X, I/L/T/K delta",
                Vp8,
                &[0x90, 0xf0, 0x85, 0x01, 0x07, 0x20, 0x51],
                false,
            ),
            ("X, only T", Vp8, &[0x90, 0x20, 0x40, 0x00], true),
            ("X, only K", Vp8, &[0x90, 0x10, 0x01, 0x00], true),
            ("X, no fields", Vp8, &[0x90, 0x00, 0x00], true),
            // Truncations: the payload header byte must be present.
            ("empty", Vp8, &[], false),
            ("descriptor only", Vp8, &[0x10], false),
            ("X without ext byte", Vp8, &[0x90], false),
            ("15-bit pid truncated", Vp8, &[0x90, 0x80, 0x81], false),
            (
                "all fields, no header",
                Vp8,
                &[0x90, 0xf0, 0x85, 0x01, 0x07, 0x20],
                false,
            ),
        ]);
    }

    #[test]
    fn vp9_payloads() {
        check(&[
            // I|P|L|F|B|E|V|Z
            ("B, not P", Vp9, &[0x08, 0x82], true),
            ("B and E, not P", Vp9, &[0x0c, 0x82], true),
            ("P set", Vp9, &[0x48, 0x82], false),
            ("no B", Vp9, &[0x04, 0x82], false),
            ("I 15-bit pid", Vp9, &[0x88, 0x80, 0x01, 0x82], true),
            ("I 7-bit pid", Vp9, &[0x88, 0x12, 0x82], true),
            (
                "L SID 0 non-flexible",
                Vp9,
                &[0xa8, 0x12, 0x00, 0x05, 0x82],
                true,
            ),
            (
                "L SID 1 non-flexible",
                Vp9,
                &[0xa8, 0x12, 0x02, 0x05, 0x82],
                false,
            ),
            ("L SID 0 flexible", Vp9, &[0xb8, 0x12, 0x00, 0x82], true),
            ("L SID 2 flexible", Vp9, &[0xb8, 0x12, 0x04, 0x82], false),
            (
                "flexible P with diffs",
                Vp9,
                &[0xf8, 0x12, 0x00, 0x03, 0x05, 0x82],
                false,
            ),
            (
                "flexible P diffs truncated",
                Vp9,
                &[0xf8, 0x12, 0x00, 0x03],
                false,
            ),
            (
                "V with sizes and group",
                Vp9,
                // SS: N_S=1 (2 layers), Y, G; 2x(W,H); N_G=2; pic0 R=1 +1 diff; pic1 R=0.
                &[
                    0x8a, 0x12, 0x38, 0x01, 0x40, 0x00, 0xb4, 0x02, 0x80, 0x01, 0x68, 0x02, 0x04,
                    0x01, 0x00, 0x82,
                ],
                true,
            ),
            ("V without Y or G", Vp9, &[0x0a, 0x00, 0x82], true),
            (
                "V truncated in sizes",
                Vp9,
                &[0x0a, 0x10, 0x01, 0x40],
                false,
            ),
            (
                "V truncated in group",
                Vp9,
                &[0x0a, 0x08, 0x02, 0x04],
                false,
            ),
            ("descriptor but no frame", Vp9, &[0x08], false),
            ("empty", Vp9, &[], false),
            ("I pid truncated", Vp9, &[0x88, 0x80], false),
            (
                "L non-flexible missing TL0PICIDX",
                Vp9,
                &[0xa8, 0x12, 0x00],
                false,
            ),
        ]);
    }

    #[test]
    fn h264_payloads() {
        check(&[
            ("single IDR", H264, &[0x65, 0x88, 0x84], true),
            ("single SPS", H264, &[0x67, 0x42, 0xe0, 0x1f], true),
            ("single PPS", H264, &[0x68, 0xce, 0x3c], false),
            ("single non-IDR slice", H264, &[0x41, 0x9a], false),
            ("single SEI", H264, &[0x06, 0x05], false),
            ("header only IDR", H264, &[0x65], true),
            (
                "STAP-A SPS+PPS+IDR",
                H264,
                &[
                    0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce, 0x00, 0x02, 0x65, 0x88,
                ],
                true,
            ),
            (
                "STAP-A SPS+PPS",
                H264,
                &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce],
                true,
            ),
            (
                "STAP-A SEI+slice",
                H264,
                &[0x78, 0x00, 0x01, 0x06, 0x00, 0x02, 0x41, 0x9a],
                false,
            ),
            (
                "STAP-A size runs past end",
                H264,
                &[0x78, 0x00, 0x05, 0x67, 0x42],
                false,
            ),
            (
                "STAP-A zero-size unit",
                H264,
                &[0x78, 0x00, 0x00, 0x00, 0x01, 0x67],
                false,
            ),
            (
                "STAP-A half size field",
                H264,
                &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00],
                false,
            ),
            ("STAP-A empty", H264, &[0x78], false),
            ("FU-A start of IDR", H264, &[0x7c, 0x85, 0x88], true),
            ("FU-A start of SPS", H264, &[0x7c, 0x87, 0x42], true),
            ("FU-A middle of IDR", H264, &[0x7c, 0x05, 0x88], false),
            ("FU-A end of IDR", H264, &[0x7c, 0x45, 0x88], false),
            ("FU-A start of non-IDR", H264, &[0x7c, 0x81, 0x9a], false),
            ("FU-A without FU header", H264, &[0x7c], false),
            (
                "FU-B is not handled",
                H264,
                &[0x7d, 0x85, 0x00, 0x00],
                false,
            ),
            (
                "STAP-B is not handled",
                H264,
                &[0x79, 0x00, 0x00, 0x00, 0x01, 0x65],
                false,
            ),
            ("type 0", H264, &[0x00, 0x65], false),
            ("empty", H264, &[], false),
        ]);
    }

    #[test]
    fn av1_payloads() {
        check(&[
            // Z|Y|W W|N|-|-|-
            ("N, W=1", Av1, &[0x18, 0x0a, 0x0b], true),
            ("N, W=0", Av1, &[0x08, 0x02, 0x0a], true),
            ("N with Z", Av1, &[0x88, 0x00], false),
            ("no N", Av1, &[0x10, 0x32], false),
            ("N with Y", Av1, &[0x58, 0x0a], true),
            ("header only", Av1, &[0x08], false),
            ("empty", Av1, &[], false),
        ]);
    }

    const CODECS: [VideoCodec; 4] = [Vp8, Vp9, H264, Av1];

    /// Keyframe starts among all 1- and 2-byte payloads, counted by hand from the formats:
    /// VP8 needs `S=1, PID=0, X=0` (8 first bytes) and `P=0` (128 second bytes); VP9 needs
    /// `B=1` with `I, P, L, V` clear (8 first bytes) and any frame byte; H.264 has 16 first
    /// bytes naming IDR or SPS, plus FU-A (8 first bytes) with 8 start-of-IDR/SPS headers;
    /// AV1 needs `N=1, Z=0` (64 first bytes) and any OBU byte.
    const SHORT_KEYFRAMES: [(VideoCodec, usize, usize); 4] = [
        (Vp8, 0, 8 * 128),
        (Vp9, 0, 8 * 256),
        (H264, 16, 16 * 256 + 8 * 8),
        (Av1, 0, 64 * 256),
    ];

    #[test]
    fn every_input_up_to_two_bytes_is_classified_exactly() {
        for (codec, want1, want2) in SHORT_KEYFRAMES {
            assert!(!is_keyframe_start(codec, &[]), "{codec:?} empty");
            let mut got1 = 0;
            let mut got2 = 0;
            for a in 0..=255u8 {
                got1 += usize::from(is_keyframe_start(codec, &[a]));
                for b in 0..=255u8 {
                    got2 += usize::from(is_keyframe_start(codec, &[a, b]));
                }
            }
            assert_eq!((got1, got2), (want1, want2), "{codec:?}");
        }
    }

    #[test]
    fn three_and_four_byte_inputs_are_handled_without_panicking() {
        // Every first and second byte (the flag bytes of every format), with edge values
        // for the rest: exhausting all 4-byte strings would take 2^34 calls.
        let edges3 = [
            0x00, 0x01, 0x02, 0x03, 0x05, 0x07, 0x08, 0x10, 0x40, 0x7f, 0x80, 0x81, 0x85, 0x87,
            0xc0, 0xff,
        ];
        let edges4 = [0x00, 0x01, 0x05, 0x80, 0x85, 0xff];
        for codec in CODECS {
            for a in 0..=255u8 {
                for b in 0..=255u8 {
                    for c in edges3 {
                        is_keyframe_start(codec, &[a, b, c]);
                    }
                    for c in edges4 {
                        for d in edges4 {
                            is_keyframe_start(codec, &[a, b, c, d]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn random_and_truncated_inputs_are_handled_without_panicking() {
        // xorshift64: deterministic, no dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut buf = [0u8; 64];
        for _ in 0..20_000 {
            let len = (next() % 65) as usize;
            for byte in buf.iter_mut() {
                *byte = next() as u8;
            }
            for codec in CODECS {
                for cut in 0..=len {
                    is_keyframe_start(codec, &buf[..cut]);
                }
            }
        }
        // Every prefix of a real keyframe start is handled too.
        let keyframes: &[(VideoCodec, &[u8])] = &[
            (
                Vp8,
                &[0x90, 0xf0, 0x85, 0x01, 0x07, 0x20, 0x50, 0x9d, 0x01, 0x2a],
            ),
            (
                Vp9,
                &[
                    0x8a, 0x12, 0x38, 0x01, 0x40, 0x00, 0xb4, 0x02, 0x80, 0x01, 0x68, 0x02, 0x04,
                    0x01, 0x00, 0x82,
                ],
            ),
            (
                H264,
                &[
                    0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce, 0x00, 0x02, 0x65, 0x88,
                ],
            ),
            (Av1, &[0x18, 0x0a, 0x0b]),
        ];
        for (codec, full) in keyframes {
            assert!(is_keyframe_start(*codec, full), "{codec:?} full");
            for cut in 0..full.len() {
                is_keyframe_start(*codec, &full[..cut]);
            }
        }
    }
}
