//! Property tests over what peers send: SDP offers, trickle fragments, datagrams on the media
//! socket and RTP packets through the per-slot rewrite. None may panic; the answers must stay
//! within their contracts. `PROPTEST_CASES` raises the case count for longer runs.

use parley::engine::{stun_local_ufrag, Demux};
use parley::forward::slot::{LegCodec, LegParams, SlotForwarder};
use parley::transport::sdpfrag;
use parley::transport::{sdp, Peer, TransportContext};
use proptest::prelude::*;
use rtc::shared::marshal::Unmarshal;
use std::time::{Duration, Instant};

const OFFER: &str = "v=0\r\no=- 4215 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtcp-mux\r\na=mid:0\r\na=sendonly\r\n\
a=ice-ufrag:Abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=rtpmap:111 opus/48000/2\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=ssrc:1111 cname:x\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=rtcp-mux\r\na=mid:1\r\na=sendonly\r\n\
a=ice-ufrag:Abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=rtpmap:96 H264/90000\r\na=fmtp:96 profile-level-id=64001f;packetization-mode=1\r\n\
a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=rtcp-fb:96 nack pli\r\na=ssrc:2222 cname:x\r\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n";

fn context() -> TransportContext {
    TransportContext::new(
        "127.0.0.1:40001".parse().expect("addr"),
        vec!["127.0.0.1".parse().expect("ip")],
        None,
        Duration::from_secs(30),
    )
    .expect("certificate")
}

/// An edit of the valid offer: drop, duplicate, truncate or garble one line.
fn mutated_offer() -> impl Strategy<Value = String> {
    let lines: Vec<&'static str> = OFFER.split("\r\n").filter(|l| !l.is_empty()).collect();
    let n = lines.len();
    (0..n, 0u8..5, "[ -~]{0,40}").prop_map(move |(at, how, junk)| {
        let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        match how {
            0 => {
                out.remove(at);
            }
            1 => out.insert(at, out[at].clone()),
            2 => {
                let half = out[at].len() / 2;
                out[at].truncate(half);
            }
            3 => out[at] = junk,
            _ => out[at] = format!("{}{}", out[at], junk),
        }
        out.join("\r\n") + "\r\n"
    })
}

/// A STUN binding request whose USERNAME is `user`, optionally cut short.
fn stun(user: String, cut: usize) -> Vec<u8> {
    let mut attr = vec![0x00, 0x06];
    attr.extend_from_slice(&(user.len() as u16).to_be_bytes());
    attr.extend_from_slice(user.as_bytes());
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    m.extend_from_slice(&[9; 12]);
    m.extend_from_slice(&attr);
    let keep = m.len().saturating_sub(cut);
    m.truncate(keep);
    m
}

fn datagram() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        (
            "(known|other|[a-z]{1,8})(:[a-zA-Z0-9]{0,8})?",
            prop_oneof![Just(0usize), 0usize..30]
        )
            .prop_map(|(user, cut)| stun(user, cut)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn offers_never_panic_the_negotiation(offer in prop_oneof![mutated_offer(), ".{0,400}"]) {
        let ctx = context();
        // The structural check either refuses with a reason or the stack decides.
        if sdp::inspect_offer(&offer).is_ok() {
            let _ = Peer::publisher(&ctx, &offer, ("Ufrag0123456789", "Pwd0123456789012345678901234567"), Instant::now());
            let _ = Peer::viewer(&ctx, &offer, ("Ufrag0123456789", "Pwd0123456789012345678901234567"),
                &[parley::transport::MediaKind::Audio, parley::transport::MediaKind::Video], Instant::now());
        }
    }

    #[test]
    fn fragments_parse_or_refuse(body in prop_oneof![
        ".{0,300}",
        "(a=(ice-ufrag|ice-pwd|mid|candidate|end-of-candidates)(:[ -~]{0,60})?\r\n){0,8}",
    ]) {
        if let Ok(frag) = sdpfrag::parse(&body) {
            prop_assert!(frag.media.len() <= sdpfrag::MAX_MEDIA_SECTIONS);
            prop_assert!(frag.candidates().count() <= sdpfrag::MAX_CANDIDATES);
        }
    }

    #[test]
    fn datagrams_route_only_by_known_ufrag(data in datagram(), port in 1024u16..65535) {
        let mut demux = Demux::default();
        demux.add_session(1, "known");
        let from = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let routed = demux.route(from, &data);
        match stun_local_ufrag(&data) {
            Some("known") => prop_assert_eq!(routed, Some(1)),
            _ => prop_assert_eq!(routed, None),
        }
    }

    #[test]
    fn any_rtp_packet_is_rewritten_or_skipped(raw in proptest::collection::vec(any::<u8>(), 12..1500), source in 0u64..3) {
        let Ok(packet) = rtc::rtp::Packet::unmarshal(&mut raw.as_slice()) else {
            return Ok(());
        };
        let vp8 = |pt: u8| LegCodec { payload_type: pt, mime: "video/VP8".into(), clock_rate: 90_000, channels: 0, fmtp: String::new() };
        let viewer = LegParams { codecs: vec![vp8(100)], extensions: vec![(3, "urn:ietf:params:rtp-hdrext:sdes:mid".into())] };
        let publisher = LegParams { codecs: (0..128).map(vp8).collect(), extensions: (1..15).map(|i| (i, format!("urn:x:{i}"))).collect() };
        let mut slot = SlotForwarder::new(4242, "1", viewer);
        slot.bind(1, &publisher);
        if let Ok(out) = slot.forward(source, &packet, Instant::now()) {
            prop_assert_eq!(out.header.ssrc, 4242);
            prop_assert_eq!(out.header.payload_type, 100);
            prop_assert_eq!(out.payload, packet.payload);
            prop_assert!(out.header.extensions.iter().all(|e| e.id == 3));
        }
    }
}
