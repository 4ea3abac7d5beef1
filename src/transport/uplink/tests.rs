use super::*;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtp::header::Extension;
use std::time::Duration;

const TWCC_ID: u8 = 5;
const TWCC_URI: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

fn codec(mime: &str, clock_rate: u32) -> Codec {
    Codec {
        payload_type: 96,
        mime: mime.to_owned(),
        clock_rate,
        channels: 0,
        fmtp: String::new(),
    }
}

fn feedback(video: bool) -> Vec<(String, String)> {
    let mut fb = vec![("transport-cc".to_owned(), String::new())];
    if video {
        fb.push(("nack".to_owned(), String::new()));
        fb.push(("nack".to_owned(), "pli".to_owned()));
    }
    fb
}

fn extensions() -> Vec<HeaderExt> {
    vec![HeaderExt {
        id: TWCC_ID,
        uri: TWCC_URI.to_owned(),
    }]
}

fn packet(ssrc: u32, seq: u16, transport_seq: u16) -> rtc::rtp::Packet {
    rtc::rtp::Packet {
        header: rtc::rtp::Header {
            version: 2,
            extension: true,
            extension_profile: 0xBEDE,
            extensions: vec![Extension {
                id: TWCC_ID,
                payload: bytes::Bytes::copy_from_slice(&transport_seq.to_be_bytes()),
            }],
            sequence_number: seq,
            timestamp: u32::from(seq) * 3000,
            ssrc,
            payload_type: 96,
            ..Default::default()
        },
        payload: bytes::Bytes::from_static(&[1, 2, 3]),
    }
}

/// Runs the uplink's timers from `from` for `secs`, collecting what it sends.
fn run(uplink: &mut Uplink, from: Instant, secs: f64) -> Vec<Box<dyn rtc::rtcp::Packet>> {
    let end = from + Duration::from_secs_f64(secs);
    let mut sent = Vec::new();
    while let Some(at) = uplink.poll_timeout().filter(|at| *at <= end) {
        uplink.handle_timeout(at);
        while let Some(packets) = uplink.poll_rtcp() {
            sent.extend(packets);
        }
    }
    sent
}

#[test]
fn a_video_stream_with_a_gap_gets_twcc_feedback_a_nack_and_a_receiver_report() {
    let mut uplink = Uplink::default();
    uplink.bind(
        1111,
        &codec("video/VP8", 90_000),
        &feedback(true),
        &extensions(),
    );
    let start = Instant::now();
    for i in 0..20u16 {
        if i == 7 {
            continue; // lost
        }
        let at = start + Duration::from_millis(u64::from(i) * 5);
        let back = uplink.received(at, packet(1111, 100 + i, 500 + i));
        assert_eq!(back.map(|p| p.header.sequence_number), Some(100 + i));
    }
    let sent = run(&mut uplink, start, 2.0);
    let twcc: Vec<&TransportLayerCc> = sent
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<TransportLayerCc>())
        .collect();
    assert!(!twcc.is_empty(), "TWCC feedback sent: {sent:?}");
    assert_eq!(twcc[0].base_sequence_number, 500);
    assert_eq!(twcc[0].packet_status_count, 20, "reports 500..=519");
    let nacks: Vec<u16> = sent
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
        .flat_map(|n| n.nacks.iter().flat_map(|p| p.packet_list()))
        .collect();
    assert!(nacks.contains(&107), "the lost packet is NACKed: {nacks:?}");
    assert!(nacks.iter().all(|&s| s == 107), "only it: {nacks:?}");
    assert!(uplink.nacks_sent() >= 1);
    let report = sent
        .iter()
        .find_map(|p| p.as_any().downcast_ref::<ReceiverReport>())
        .expect("a receiver report within 2 s");
    let r = &report.reports[0];
    assert_eq!(r.ssrc, 1111);
    assert_eq!(r.last_sequence_number, 119);
    assert_eq!(r.total_lost, 1);
}

#[test]
fn audio_without_nack_feedback_is_never_nacked() {
    let mut uplink = Uplink::default();
    uplink.bind(
        2222,
        &codec("audio/opus", 48_000),
        &feedback(false),
        &extensions(),
    );
    let start = Instant::now();
    for i in [0u16, 1, 2, 5, 6] {
        let at = start + Duration::from_millis(u64::from(i) * 20);
        uplink.received(at, packet(2222, i, i));
    }
    let sent = run(&mut uplink, start, 2.0);
    assert!(
        !sent.iter().any(|p| p.as_any().is::<TransportLayerNack>()),
        "{sent:?}"
    );
    assert!(sent.iter().any(|p| p.as_any().is::<TransportLayerCc>()));
    assert_eq!(uplink.nacks_sent(), 0);
}

#[test]
fn nothing_is_sent_before_a_stream_is_bound() {
    let mut uplink = Uplink::default();
    let start = Instant::now();
    uplink.received(start, packet(3333, 1, 1));
    assert!(run(&mut uplink, start, 2.0).is_empty());
}
