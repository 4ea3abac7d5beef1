//! Tests of `forward::slot`.

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
fn a_video_switch_waits_for_the_new_keyframe_and_continues_the_sequence() {
    let t0 = Instant::now();
    let mut f = SlotForwarder::new(9, "0", leg(vec![vp8(96)], &[]));
    f.bind(1, &leg(vec![vp8(96)], &[]));
    f.forward(1, &packet(5, 65535, 10, 96, true), t0).unwrap();
    f.bind(2, &leg(vec![vp8(100)], &[]));
    assert_eq!(f.source(), Some(2));
    assert!(f.waiting_for_keyframe());
    assert_eq!(f.sources().collect::<Vec<_>>(), vec![1, 2]);
    // The old source still flows until the new one's keyframe.
    let a = f.forward(1, &packet(5, 0, 3010, 96, false), t0).unwrap();
    assert_eq!(
        f.forward(2, &packet(6, 2, 0, 100, false), t0).unwrap_err(),
        Skip::NoKeyframeYet
    );
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
    assert_eq!(
        f.forward(1, &packet(5, 1, 6010, 96, false), t0)
            .unwrap_err(),
        Skip::NotBound,
        "after the switch the old source is cut off"
    );
    assert!(!f.waiting_for_keyframe());
    assert_eq!(f.sources().collect::<Vec<_>>(), vec![2]);
}

#[test]
fn audio_switches_at_once() {
    let opus = |pt| LegCodec {
        payload_type: pt,
        mime: "audio/opus".into(),
        clock_rate: 48_000,
        channels: 2,
        fmtp: String::new(),
    };
    let t0 = Instant::now();
    let mut f = SlotForwarder::new(3, "0", leg(vec![opus(111)], &[]));
    assert!(f.bind(1, &leg(vec![opus(111)], &[])));
    let mut p = packet(5, 10, 960, 111, false);
    p.payload = Bytes::from_static(b"\xf8opus");
    let a = f.forward(1, &p, t0).unwrap();
    assert!(f.bind(2, &leg(vec![opus(109)], &[])));
    let mut q = packet(7, 500, 77, 109, false);
    q.payload = Bytes::from_static(b"\xf8opus");
    let b = f.forward(2, &q, t0 + Duration::from_millis(20)).unwrap();
    assert_eq!(
        b.header.sequence_number,
        a.header.sequence_number.wrapping_add(1)
    );
    assert_eq!(f.forward(1, &p, t0).unwrap_err(), Skip::NotBound);
    assert!(
        !f.bind(3, &leg(vec![vp8(96)], &[])),
        "no codec in common: refused"
    );
    assert_eq!(f.source(), Some(2));
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

/// A VP8 packet with PictureID (15-bit), TL0PICIDX and TID/Y, one packet per frame.
fn vp8_temporal(ssrc: u32, seq: u16, pic: u16, tl0: u8, tid: u8, y: bool, key: bool) -> Packet {
    let mut p = packet(ssrc, seq, u32::from(seq) * 3000, 96, key);
    let tk = (tid << 6) | (u8::from(y) << 5);
    p.payload = Bytes::from(vec![
        0x90, // X=1, S=1, PID=0
        0xe0, // I, L, T
        0x80 | (pic >> 8) as u8,
        pic as u8,
        tl0,
        tk,
        if key { 0x00 } else { 0x01 },
        0x9d,
        0x01,
        0x2a,
    ]);
    p.header.marker = true;
    p
}

#[test]
fn a_lower_temporal_layer_drops_frames_without_gaps_and_renumbers_vp8() {
    let t0 = Instant::now();
    let mut f = SlotForwarder::new(9, "1", leg(vec![vp8(96)], &[]));
    f.bind(1, &leg(vec![vp8(96)], &[]));
    f.set_max_temporal(0);
    // T0 T2 T1 T2 T0 T2 T1 T2 T0: only the T0 frames pass.
    let pattern = [0u8, 2, 1, 2, 0, 2, 1, 2, 0];
    let mut sent = Vec::new();
    for (i, tid) in pattern.iter().enumerate() {
        let i16 = i as u16;
        let tl0 = (i / 4) as u8 + 10;
        let p = vp8_temporal(5, 100 + i16, 300 + i16, tl0, *tid, *tid > 0, i == 0);
        let mut buf = [0u8; 64];
        let mut out = Header::default();
        match f.forward_header(1, &p, t0, &mut out) {
            Ok(()) => {
                buf[..p.payload.len()].copy_from_slice(&p.payload);
                f.patch_payload(&mut buf[..p.payload.len()]);
                let d = vp8::parse(&buf[..p.payload.len()]).expect("descriptor");
                sent.push((d.picture_id, d.tl0picidx, out.sequence_number));
            }
            Err(skip) => assert_eq!(skip, Skip::Temporal, "frame {i}"),
        }
    }
    let pics: Vec<_> = sent.iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(
        pics,
        vec![
            (Some(300), Some(10)),
            (Some(301), Some(11)),
            (Some(302), Some(12))
        ]
    );
    assert_eq!(f.max_temporal(), 0);
}

#[test]
fn nacks_after_a_layer_switch_reach_the_layer_that_was_sent() {
    let t0 = Instant::now();
    let mut f = SlotForwarder::new(9, "1", leg(vec![vp8(96)], &[]));
    f.bind(1, &leg(vec![vp8(96)], &[]));
    let a = f.forward(1, &packet(5, 10, 1000, 96, true), t0).unwrap();
    let b = f.forward(1, &packet(5, 11, 4000, 96, false), t0).unwrap();
    assert!(f.bind_aligned(2, &leg(vec![vp8(96)], &[]), Some(7000u32.wrapping_sub(90))));
    let c = f
        .forward(
            2,
            &packet(6, 500, 90, 96, true),
            t0 + Duration::from_millis(30),
        )
        .unwrap();
    assert_eq!(
        c.header.sequence_number,
        b.header.sequence_number.wrapping_add(1)
    );
    assert_eq!(
        c.header.timestamp, 7000,
        "aligned through the sender reports"
    );
    assert_eq!(f.retransmission(c.header.sequence_number), Some((2, 500)));
    assert_eq!(f.retransmission(a.header.sequence_number), Some((1, 10)));
    let mut out = Header::default();
    f.resend_header(1, &packet(5, 10, 1000, 96, true), &mut out)
        .expect("old layer");
    assert_eq!((out.sequence_number, out.timestamp), (10, 1000));
    assert_eq!(
        f.resend_header(3, &packet(5, 10, 1000, 96, true), &mut out),
        Err(Skip::NotBound)
    );
}

#[test]
fn a_nack_for_a_padding_number_is_answered_with_fresh_padding_under_it() {
    let t0 = Instant::now();
    let mut f = SlotForwarder::new(777, "1", leg(vec![vp8(120)], &[]));
    assert!(f.bind(1, &leg(vec![vp8(96)], &[])));
    let key = f
        .forward(1, &packet(5, 11, 1000, 96, true), t0)
        .expect("keyframe");
    let mut pad = Header::default();
    assert!(f.pad_header(&mut pad));
    assert_eq!(
        pad.sequence_number,
        key.header.sequence_number.wrapping_add(1)
    );
    let next = f
        .forward(1, &packet(5, 12, 4000, 96, false), t0)
        .expect("delta");
    assert_eq!(
        next.header.sequence_number,
        pad.sequence_number.wrapping_add(1),
        "the padding took a number"
    );
    // A media number is resent from the cache, not padded; the padding's number is padded.
    let mut out = Header::default();
    assert!(!f.repad_header(key.header.sequence_number, &mut out));
    assert!(!f.repad_header(next.header.sequence_number, &mut out));
    assert!(f.retransmission(pad.sequence_number).is_none());
    assert!(f.repad_header(pad.sequence_number, &mut out));
    assert_eq!(
        (
            out.sequence_number,
            out.timestamp,
            out.ssrc,
            out.payload_type
        ),
        (pad.sequence_number, pad.timestamp, 777, 120)
    );
    assert!(out.padding && !out.marker);
    // Only the last PADS_KEPT paddings are remembered.
    let first = pad.sequence_number;
    for _ in 0..PADS_KEPT {
        assert!(f.pad_header(&mut pad));
    }
    assert!(!f.repad_header(first, &mut out), "forgotten");
    assert!(f.repad_header(pad.sequence_number, &mut out));
}
