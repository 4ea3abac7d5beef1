//! Tests of the client peer: offers (plain, simulcast, ICE-TCP), answers from an `rtc`
//! answerer, and what the peer learns from them.

use super::*;

fn publisher(simulcast: bool) -> (ClientPeer, String) {
    let role = Role::Publisher {
        audio: true,
        video: Some(VideoCodec::Vp8),
        simulcast,
    };
    let addr: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    ClientPeer::new(
        &certificate().expect("certificate"),
        role,
        Transport::Udp,
        addr,
        Instant::now(),
    )
    .expect("offer")
}

/// The video m-section of an SDP.
fn video_section(sdp: &str) -> &str {
    let at = sdp.find("m=video").expect("a video m-line");
    &sdp[at..]
}

/// Answers `offer` as a server that accepts simulcast (VP8, Opus, mid and rid).
fn answer(offer: &str) -> String {
    answer_with(offer, false)
}

/// Answers `offer`; with `twcc`, also transport-wide-cc as Parley does (the stack's
/// default interceptors register it).
fn answer_with(offer: &str, twcc: bool) -> String {
    let mut me = MediaEngine::default();
    me.register_codec(opus(), RtpCodecKind::Audio)
        .expect("opus");
    me.register_codec(video_codec(VideoCodec::Vp8), RtpCodecKind::Video)
        .expect("vp8");
    for (uri, kind) in [
        (SDES_MID_URI, RtpCodecKind::Video),
        (SDES_RTP_STREAM_ID_URI, RtpCodecKind::Video),
        (AUDIO_LEVEL_URI, RtpCodecKind::Audio),
    ] {
        me.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            kind,
            None,
        )
        .expect("extension");
    }
    let mut registry = Registry::new();
    if twcc {
        registry = rtc::peer_connection::configuration::interceptor_registry::configure_twcc_receiver_only(registry, &mut me)
            .expect("twcc");
    }
    let now = Instant::now();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .build(now)
        .expect("answerer");
    pc.set_remote_description(
        now,
        RTCSessionDescription::offer(offer.to_owned()).expect("offer"),
    )
    .expect("remote offer");
    let answer = pc.create_answer(None).expect("answer");
    pc.set_local_description(now, answer).expect("local answer");
    pc.local_description().expect("answer").sdp
}

#[test]
fn simulcast_offer_has_three_rids_and_the_extensions() {
    let (peer, offer) = publisher(true);
    let video = video_section(&offer);
    for rid in ["q", "h", "f"] {
        assert!(video.contains(&format!("a=rid:{rid} send")), "{offer}");
    }
    assert!(video.contains("a=simulcast:send q;h;f"), "{offer}");
    assert!(video.contains(SDES_MID_URI) && video.contains(SDES_RTP_STREAM_ID_URI));
    let ssrcs = &peer.video.as_ref().expect("video").ssrcs;
    assert_eq!(ssrcs.len(), 3);
    assert!(ssrcs[0] != ssrcs[1] && ssrcs[1] != ssrcs[2] && ssrcs[0] != ssrcs[2]);
    assert!(!video.contains("a=ssrc-group"), "no RTX");
}

#[test]
fn plain_offer_has_no_simulcast() {
    let (peer, offer) = publisher(false);
    assert!(!offer.contains("a=rid:") && !offer.contains("a=simulcast"));
    assert!(!offer.contains(SDES_RTP_STREAM_ID_URI));
    assert_eq!(peer.video.as_ref().map(|v| v.ssrcs.len()), Some(1));
}

#[test]
fn packets_carry_mid_and_rid_with_the_negotiated_ids() {
    let (mut peer, offer) = publisher(true);
    let sdp = answer(&offer);
    assert!(
        video_section(&sdp).contains("a=simulcast:recv q;h;f"),
        "{sdp}"
    );
    peer.apply_answer(sdp, Instant::now())
        .expect("answer applies");
    let video = peer.video.clone().expect("video");
    let (mid_id, mid) = video.mid.clone().expect("mid negotiated");
    let rid_id = video.rid_id.expect("rid negotiated");
    assert_ne!(mid_id, rid_id);
    for (layer, rid) in ["q", "h", "f"].iter().enumerate() {
        let h = video.header(layer as u8, true, 7, 9);
        assert_eq!(h.ssrc, video.ssrcs[layer]);
        assert_eq!((h.marker, h.sequence_number, h.timestamp), (true, 7, 9));
        assert_eq!(h.payload_type, video.payload_type);
        assert_eq!(h.get_extension(mid_id).as_deref(), Some(&mid[..]));
        assert_eq!(h.get_extension(rid_id).as_deref(), Some(rid.as_bytes()));
        assert_eq!(video.layers_of(video.ssrcs[layer]), 1 << layer);
    }
    assert_eq!(video.layers_of(0), crate::engine::ALL_LAYERS);
    let audio = peer.audio.clone().expect("audio");
    assert!(audio.audio_level_id.is_some());
    let h = audio.header(0, false, 1, 2);
    assert!(
        h.extensions.is_empty(),
        "audio carries only the level, set by the engine"
    );
}

fn viewer(feedback: bool) -> (ClientPeer, String) {
    let addr: SocketAddr = "127.0.0.1:40002".parse().expect("addr");
    let role = Role::Viewer {
        audio: 1,
        video: 1,
        feedback,
    };
    ClientPeer::new(
        &certificate().expect("cert"),
        role,
        Transport::Udp,
        addr,
        Instant::now(),
    )
    .expect("offer")
}

#[test]
fn a_viewer_offers_congestion_feedback_and_learns_its_id() {
    let (mut peer, offer) = viewer(true);
    for section in offer.split("m=").skip(1) {
        assert!(section.contains(TRANSPORT_CC_URI), "{section}");
        assert!(section.contains(ABS_SEND_TIME_URI), "{section}");
        assert!(section.contains(" transport-cc"), "{section}");
    }
    let sdp = answer_with(&offer, true);
    assert!(sdp.contains(TRANSPORT_CC_URI), "{sdp}");
    let id = sdp
        .lines()
        .find(|l| l.ends_with(TRANSPORT_CC_URI))
        .and_then(|l| l.strip_prefix("a=extmap:"))
        .and_then(|l| l.split(' ').next())
        .and_then(|id| id.parse::<u8>().ok());
    peer.apply_answer(sdp, Instant::now()).expect("answer");
    assert!(id.is_some());
    assert_eq!(peer.transport_cc_id(), id);
    assert!(peer.receiver.is_some());
}

#[test]
fn without_feedback_nothing_is_offered_or_learned() {
    let (mut peer, offer) = viewer(false);
    assert!(!offer.contains(TRANSPORT_CC_URI) && !offer.contains("transport-cc"));
    peer.apply_answer(answer_with(&offer, true), Instant::now())
        .expect("answer");
    assert_eq!(peer.transport_cc_id(), None);
    // A server that does not do transport-wide-cc leaves it off too.
    let (mut peer, offer) = viewer(true);
    let sdp = answer_with(&offer, false);
    assert!(!sdp.contains(TRANSPORT_CC_URI), "{sdp}");
    peer.apply_answer(sdp, Instant::now()).expect("answer");
    assert_eq!(peer.transport_cc_id(), None);
}

#[test]
fn viewers_know_their_video_mids() {
    let addr: SocketAddr = "127.0.0.1:40001".parse().expect("addr");
    let role = Role::Viewer {
        audio: 2,
        video: 2,
        feedback: false,
    };
    let (peer, offer) = ClientPeer::new(
        &certificate().expect("cert"),
        role,
        Transport::Udp,
        addr,
        Instant::now(),
    )
    .expect("offer");
    assert_eq!(peer.video_mids(), ["2", "3"]);
    for mid in peer.video_mids() {
        assert!(offer.contains(&format!("a=mid:{mid}")));
    }
}

fn viewer_over(transport: Transport) -> (ClientPeer, String) {
    let addr: SocketAddr = "127.0.0.1:40003".parse().expect("addr");
    let role = Role::Viewer {
        audio: 1,
        video: 1,
        feedback: true,
    };
    let cert = certificate().expect("cert");
    ClientPeer::new(&cert, role, transport, addr, Instant::now()).expect("offer")
}

/// The offer's `a=candidate` lines.
fn candidates(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect()
}

#[test]
fn a_tcp_viewer_offers_one_active_tcp_candidate_and_no_udp() {
    let (peer, offer) = viewer_over(Transport::Tcp);
    assert_eq!(peer.transport(), Transport::Tcp);
    let lines = candidates(&offer);
    assert!(!lines.is_empty(), "{offer}");
    for line in &lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields[2].eq_ignore_ascii_case("tcp"), "{line}");
        assert_eq!((fields[4], fields[5]), ("127.0.0.1", "9"), "{line}");
        assert!(line.contains(" typ host tcptype active"), "{line}");
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.to_ascii_lowercase().contains(" udp ")),
        "{offer}"
    );
    // A UDP viewer is as before: one UDP candidate on its socket's port.
    let (peer, offer) = viewer_over(Transport::Udp);
    assert_eq!(peer.transport(), Transport::Udp);
    let lines = candidates(&offer);
    assert!(!lines.is_empty());
    for line in lines {
        assert!(line.to_ascii_lowercase().contains(" udp "), "{line}");
        assert!(line.contains("127.0.0.1 40003 typ host") && !line.contains("tcptype"));
    }
}

/// An answerer with one passive ICE-TCP candidate on `addr`, as Parley answers (without its
/// UDP candidate): the peer connection and its answer.
fn tcp_answerer(offer: &str, addr: SocketAddr) -> (RTCPeerConnection, String) {
    let mut me = MediaEngine::default();
    me.register_codec(opus(), RtpCodecKind::Audio)
        .expect("opus");
    me.register_codec(video_codec(VideoCodec::Vp8), RtpCodecKind::Video)
        .expect("vp8");
    let now = Instant::now();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_media_engine(me)
        .build(now)
        .expect("answerer");
    let offer = RTCSessionDescription::offer(offer.to_owned()).expect("offer");
    pc.set_remote_description(now, offer).expect("remote offer");
    let answer = pc.create_answer(None).expect("answer");
    pc.set_local_description(now, answer).expect("local answer");
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "tcp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        tcp_type: TcpType::Passive,
    }
    .new_candidate_host()
    .expect("candidate");
    let init = RTCIceCandidate::from(&candidate).to_json().expect("json");
    pc.add_local_candidate(init).expect("local candidate");
    pc.add_local_candidate(RTCIceCandidateInit::default())
        .expect("end of candidates");
    let sdp = pc.local_description().expect("answer").sdp;
    (pc, sdp)
}

#[test]
fn a_tcp_viewer_connects_to_a_passive_candidate() {
    let server_addr: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
    // The connection's local address: same IP as the offered candidate, another port.
    let client_addr: SocketAddr = "127.0.0.1:43210".parse().expect("addr");
    let (mut client, offer) = viewer_over(Transport::Tcp);
    let (mut server, answer) = tcp_answerer(&offer, server_addr);
    assert!(answer.contains("tcptype passive"), "{answer}");
    let mut now = Instant::now();
    client.apply_answer(answer, now).expect("answer");
    client.set_local_addr(client_addr);
    let tcp = |local_addr, peer_addr| TransportContext {
        local_addr,
        peer_addr,
        ecn: None,
        transport_protocol: TransportProtocol::TCP,
    };
    for _ in 0..1000 {
        while let Some((to, data)) = client.poll_transmit() {
            assert_eq!(to, server_addr, "everything goes to the passive candidate");
            let msg = TaggedBytesMut {
                now,
                transport: tcp(server_addr, client_addr),
                message: data,
            };
            let _ = server.handle_read(msg);
        }
        while let Some(m) = server.poll_write() {
            assert_eq!(m.transport.transport_protocol, TransportProtocol::TCP);
            client.handle_datagram(now, server_addr, &m.message);
        }
        while server.poll_read().is_some() || server.poll_event().is_some() {}
        while client.poll_event().is_some() {}
        if client.state() == PeerState::Connected {
            return;
        }
        now += Duration::from_millis(5);
        client.handle_timeout(now);
        let _ = server.handle_timeout(now);
    }
    panic!("not connected over TCP: {:?}", client.state());
}
