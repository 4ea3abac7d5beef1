//! Codec matching between the two legs of the SFU: can packets of the publisher's negotiated
//! codec be sent, unchanged, under one of a viewer's negotiated codecs?
//!
//! The SFU never transcodes, so two codec entries match only when a decoder configured for
//! one can decode the other's bitstream: same MIME type (case-insensitive) and clock rate,
//! same channel count for audio, and the format parameters that change the bitstream:
//!
//! - H.264: `packetization-mode` (absent = 0) and the profile of `profile-level-id`
//!   (absent = `42e01f`, Constrained Baseline). Profiles are classified with libwebrtc's
//!   table of `(profile_idc, profile_iop)` patterns (RFC 6184 §8.1); the level is not
//!   compared, since a decoder at a higher level decodes lower levels too and WebRTC
//!   negotiates with `level-asymmetry-allowed`. A value that does not parse, or names a
//!   profile outside the table, matches nothing (libwebrtc behaves the same).
//! - VP9: `profile-id` (absent = 0). AV1: `profile` (absent = 0).
//!
//! Pure functions over borrowed strings: no allocation, no panic on any SDP text.

/// One leg's codec entry, borrowed from its negotiated parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodecSpec<'a> {
    /// MIME type, e.g. `video/H264`.
    pub mime: &'a str,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channels (0 is read as 1); ignored for video.
    pub channels: u16,
    /// The `a=fmtp` parameter list without the payload type, e.g. `minptime=10;useinbandfec=1`.
    pub fmtp: &'a str,
}

/// Whether packets of `a` can be forwarded as `b` (the relation is symmetric).
pub fn codecs_match(a: &CodecSpec, b: &CodecSpec) -> bool {
    if !a.mime.trim().eq_ignore_ascii_case(b.mime.trim()) || a.clock_rate != b.clock_rate {
        return false;
    }
    let mime = a.mime.trim();
    if starts_with_ignore_case(mime, "audio/") && a.channels.max(1) != b.channels.max(1) {
        return false;
    }
    if mime.eq_ignore_ascii_case("video/H264") {
        let mode = |s: &CodecSpec| numeric_param(s.fmtp, "packetization-mode");
        let profile = |s: &CodecSpec| h264_profile(fmtp_param(s.fmtp, "profile-level-id"));
        return matches!((mode(a), mode(b)), (Some(x), Some(y)) if x == y)
            && matches!((profile(a), profile(b)), (Some(x), Some(y)) if x == y);
    }
    let key = if mime.eq_ignore_ascii_case("video/VP9") {
        "profile-id"
    } else if mime.eq_ignore_ascii_case("video/AV1") {
        "profile"
    } else {
        return true;
    };
    matches!(
        (numeric_param(a.fmtp, key), numeric_param(b.fmtp, key)),
        (Some(x), Some(y)) if x == y
    )
}

/// The value of `key` in an fmtp parameter list (`k=v;k=v`, keys case-insensitive, spaces
/// around items ignored). Items without `=` have no value and are never returned.
pub fn fmtp_param<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';').find_map(|item| {
        let (k, v) = item.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key.trim()).then(|| v.trim())
    })
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// A decimal parameter, 0 when absent, `None` when present but not a number.
fn numeric_param(fmtp: &str, key: &str) -> Option<u32> {
    match fmtp_param(fmtp, key) {
        None => Some(0),
        Some(v) => v.parse().ok(),
    }
}

/// H.264 profiles as libwebrtc names them (`api/video_codecs/h264_profile_level_id.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H264Profile {
    /// Baseline with constraint_set1: what every browser can decode.
    ConstrainedBaseline,
    /// Baseline (FMO/ASO allowed).
    Baseline,
    /// Main.
    Main,
    /// High with constraint_set4 and constraint_set5 (no B-frames).
    ConstrainedHigh,
    /// High.
    High,
    /// High 4:4:4 Predictive.
    PredictiveHigh444,
}

/// `(profile_idc, pattern over profile_iop, profile)`: the pattern is 8 characters for bits
/// 7..0 (constraint_set0 first), `x` meaning "either". First match wins; the order and
/// contents are libwebrtc's `kProfilePatterns`.
const PROFILE_PATTERNS: [(u8, &str, H264Profile); 9] = [
    (0x42, "x1xx0000", H264Profile::ConstrainedBaseline),
    (0x4D, "1xxx0000", H264Profile::ConstrainedBaseline),
    (0x58, "11xx0000", H264Profile::ConstrainedBaseline),
    (0x42, "x0xx0000", H264Profile::Baseline),
    (0x58, "10xx0000", H264Profile::Baseline),
    (0x4D, "0x0x0000", H264Profile::Main),
    (0x64, "00000000", H264Profile::High),
    (0x64, "00001100", H264Profile::ConstrainedHigh),
    (0xF4, "00000000", H264Profile::PredictiveHigh444),
];

/// Whether `iop` fits an 8-character `pattern` of `0`, `1` and `x`.
fn fits(pattern: &str, iop: u8) -> bool {
    pattern.bytes().enumerate().all(|(i, c)| {
        let bit = (iop >> (7 - i)) & 1;
        match c {
            b'0' => bit == 0,
            b'1' => bit == 1,
            _ => true,
        }
    })
}

/// The profile of a `profile-level-id` value (absent = `42e01f`), or `None` when it is not
/// six hex digits or names a profile outside libwebrtc's table.
pub fn h264_profile(profile_level_id: Option<&str>) -> Option<H264Profile> {
    let text = profile_level_id.unwrap_or("42e01f");
    if text.len() != 6 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let value = u32::from_str_radix(text, 16).ok()?;
    let [_, idc, iop, _level] = value.to_be_bytes();
    PROFILE_PATTERNS
        .iter()
        .find(|(i, pattern, _)| *i == idc && fits(pattern, iop))
        .map(|(_, _, profile)| *profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use H264Profile::*;

    fn spec<'a>(mime: &'a str, clock_rate: u32, channels: u16, fmtp: &'a str) -> CodecSpec<'a> {
        CodecSpec {
            mime,
            clock_rate,
            channels,
            fmtp,
        }
    }

    const OBS_H264: &str = "profile-level-id=64001f;packetization-mode=1;level-asymmetry-allowed=1";
    const CHROME_CB: &str =
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

    #[test]
    fn matching() {
        let h = |fmtp| spec("video/H264", 90_000, 0, fmtp);
        let table: &[(&str, CodecSpec, CodecSpec, bool)] = &[
            (
                "OBS High vs viewer High at a higher level",
                h(OBS_H264),
                h("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640032"),
                true,
            ),
            ("OBS High vs CB", h(OBS_H264), h(CHROME_CB), false),
            (
                "OBS High vs High in mode 0",
                h(OBS_H264),
                h("level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=64001f"),
                false,
            ),
            (
                "OBS High vs High, mode absent",
                h(OBS_H264),
                h("profile-level-id=64001f"),
                false,
            ),
            (
                "OBS High vs Constrained High",
                h(OBS_H264),
                h("profile-level-id=640c1f;packetization-mode=1"),
                false,
            ),
            (
                "browser CB 42e01f vs 42c01f",
                h(CHROME_CB),
                h("packetization-mode=1;profile-level-id=42c01f"),
                true,
            ),
            (
                "browser CB vs 4d401f? no: Main",
                h(CHROME_CB),
                h("packetization-mode=1;profile-level-id=4d401f"),
                false,
            ),
            (
                "CB vs Baseline 42001f",
                h(CHROME_CB),
                h("packetization-mode=1;profile-level-id=42001f"),
                false,
            ),
            (
                "CB vs Main-signalled CB 4de01f",
                h(CHROME_CB),
                h("packetization-mode=1;profile-level-id=4de01f"),
                true,
            ),
            (
                "absent profile-level-id is CB",
                h("packetization-mode=1"),
                h(CHROME_CB),
                true,
            ),
            ("both empty fmtp", h(""), h(""), true),
            (
                "mode 0 explicit vs absent",
                h("packetization-mode=0;profile-level-id=42e01f"),
                h("profile-level-id=42e01f"),
                true,
            ),
            (
                "upper-case hex and key, spaces",
                h("Profile-Level-Id=42E01F; packetization-mode=1"),
                h(CHROME_CB),
                true,
            ),
            (
                "bad hex",
                h("packetization-mode=1;profile-level-id=42g01f"),
                h("packetization-mode=1;profile-level-id=42g01f"),
                false,
            ),
            (
                "unknown profile (High 10) on both sides",
                h("packetization-mode=1;profile-level-id=6e001f"),
                h("packetization-mode=1;profile-level-id=6e001f"),
                false,
            ),
            (
                "non-numeric packetization-mode",
                h("packetization-mode=one"),
                h("packetization-mode=one"),
                false,
            ),
            (
                "mime case",
                spec("video/h264", 90_000, 0, CHROME_CB),
                spec("VIDEO/H264", 90_000, 0, CHROME_CB),
                true,
            ),
            (
                "opus stereo",
                spec("audio/opus", 48_000, 2, "minptime=10;useinbandfec=1"),
                spec(
                    "audio/OPUS",
                    48_000,
                    2,
                    "minptime=10;useinbandfec=1;stereo=1",
                ),
                true,
            ),
            (
                "opus channel mismatch",
                spec("audio/opus", 48_000, 2, ""),
                spec("audio/opus", 48_000, 1, ""),
                false,
            ),
            (
                "audio channels 0 reads as 1",
                spec("audio/PCMU", 8_000, 0, ""),
                spec("audio/PCMU", 8_000, 1, ""),
                true,
            ),
            (
                "clock rate mismatch",
                spec("audio/opus", 48_000, 2, ""),
                spec("audio/opus", 16_000, 2, ""),
                false,
            ),
            (
                "video channels ignored",
                spec("video/VP8", 90_000, 0, ""),
                spec("video/vp8", 90_000, 1, ""),
                true,
            ),
            (
                "different mime",
                spec("video/VP8", 90_000, 0, ""),
                spec("video/VP9", 90_000, 0, ""),
                false,
            ),
            (
                "VP9 profile absent vs 0",
                spec("video/VP9", 90_000, 0, ""),
                spec("video/VP9", 90_000, 0, "profile-id=0"),
                true,
            ),
            (
                "VP9 profile 0 vs 2",
                spec("video/VP9", 90_000, 0, "profile-id=0"),
                spec("video/VP9", 90_000, 0, "profile-id=2"),
                false,
            ),
            (
                "VP9 bad profile",
                spec("video/VP9", 90_000, 0, "profile-id=x"),
                spec("video/VP9", 90_000, 0, "profile-id=x"),
                false,
            ),
            (
                "AV1 profile absent vs 0",
                spec("video/AV1", 90_000, 0, "level-idx=5;profile=0;tier=0"),
                spec("video/AV1", 90_000, 0, ""),
                true,
            ),
            (
                "AV1 profile 0 vs 1",
                spec("video/AV1", 90_000, 0, "profile=0"),
                spec("video/AV1", 90_000, 0, "profile=1"),
                false,
            ),
        ];
        for (name, a, b, want) in table {
            assert_eq!(codecs_match(a, b), *want, "{name}");
            assert_eq!(codecs_match(b, a), *want, "{name} (reversed)");
        }
    }

    #[test]
    fn profiles() {
        let table: &[(Option<&str>, Option<H264Profile>)] = &[
            (None, Some(ConstrainedBaseline)),
            (Some("42e01f"), Some(ConstrainedBaseline)),
            (Some("42c01f"), Some(ConstrainedBaseline)),
            (Some("42401f"), Some(ConstrainedBaseline)),
            (Some("42f00b"), Some(ConstrainedBaseline)),
            (Some("4d801f"), Some(ConstrainedBaseline)),
            (Some("58c01f"), Some(ConstrainedBaseline)),
            (Some("42001f"), Some(Baseline)),
            (Some("42a01f"), Some(Baseline)),
            (Some("58801f"), Some(Baseline)),
            (Some("4d001f"), Some(Main)),
            (Some("4d401f"), Some(Main)),
            (Some("4d1032"), Some(Main)),
            (Some("64001f"), Some(High)),
            (Some("640032"), Some(High)),
            (Some("640c1f"), Some(ConstrainedHigh)),
            (Some("640C34"), Some(ConstrainedHigh)),
            (Some("f4001f"), Some(PredictiveHigh444)),
            // Outside the table.
            (Some("58001f"), None),
            (Some("42e81f"), None),
            (Some("4d201f"), None),
            (Some("64081f"), None),
            (Some("6e001f"), None),
            (Some("7a001f"), None),
            // Not six hex digits.
            (Some(""), None),
            (Some("42e01"), None),
            (Some("42e01f0"), None),
            (Some("+42e01"), None),
            (Some("42e0 f"), None),
            (Some("éé01f"), None),
        ];
        for (value, want) in table {
            assert_eq!(h264_profile(*value), *want, "{value:?}");
        }
    }

    #[test]
    fn fmtp_params() {
        let table: &[(&str, &str, Option<&str>)] = &[
            (OBS_H264, "packetization-mode", Some("1")),
            (OBS_H264, "profile-level-id", Some("64001f")),
            (OBS_H264, "PROFILE-LEVEL-ID", Some("64001f")),
            (OBS_H264, "level", None),
            ("minptime=10; useinbandfec=1", "useinbandfec", Some("1")),
            (" a = b ", "a", Some("b")),
            ("a=", "a", Some("")),
            ("0-15", "0-15", None),
            ("", "a", None),
            (";;;", "a", None),
            ("apt=96", "apt", Some("96")),
            ("x=1=2", "x", Some("1=2")),
            ("a=1;a=2", "a", Some("1")),
        ];
        for (fmtp, key, want) in table {
            assert_eq!(fmtp_param(fmtp, key), *want, "{fmtp:?} {key}");
        }
    }
}
