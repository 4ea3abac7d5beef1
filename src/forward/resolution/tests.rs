//! Tests of `forward::resolution`.

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
    let unit = |nal: &[u8]| [&u16::try_from(nal.len()).unwrap().to_be_bytes()[..], nal].concat();
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
