//! N WHEP viewers connected in memory to Parley's server-side `Peer`, for the forwarding bench.
//!
//! Each viewer's client is an `rtc` offerer with one recvonly video m-line and a complete
//! offer (a host candidate at a made-up address, then end-of-candidates). Datagrams are
//! passed between the two sans-IO objects directly, and timers run on a simulated clock,
//! until both sides report Connected. Nothing here touches a socket.

use bytes::{Bytes, BytesMut};
use parley::forward::slot::{write_packet, LegCodec, LegParams, SlotForwarder};
use parley::transport::{MediaKind, Peer, PeerEvent, PeerState, TransportContext};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Registry;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_VP8};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp::header::{Extension, Header};
use rtc::rtp::Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::{ABS_SEND_TIME_URI, SDES_MID_URI, TRANSPORT_CC_URI};
use rtc::shared::{TaggedBytesMut, TransportContext as Tuple, TransportProtocol};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The fan-out sizes measured.
pub const SLOT_COUNTS: [usize; 3] = [1, 10, 100];

type Error = Box<dyn std::error::Error>;

/// The publisher's source id (as `engine::session::source_id` would make it).
const SOURCE: u64 = 1 << 8;
const PUBLISHER_PT: u8 = 96;

struct Viewer {
    peer: Peer,
    forwarder: SlotForwarder,
    client: RTCPeerConnection,
    client_addr: SocketAddr,
}

/// One publisher track fanned out to connected viewers.
pub struct Fanout {
    viewers: Vec<Viewer>,
    packet: Packet,
    now: Instant,
    server_addr: SocketAddr,
    /// The engine's reused scratch header and one send-buffer slot.
    scratch: Header,
    buf: Vec<u8>,
}

fn client_certificate() -> Result<RTCCertificate, Error> {
    let provider = rtc::crypto::default_provider()?;
    let params = CertificateParams::new(vec!["bench-client".to_owned()])?;
    Ok(RTCCertificate::generate(
        provider.crypto(),
        rtc::crypto::SignatureScheme::EcdsaP256Sha256,
        params,
    )?)
}

/// A browser-like viewer: VP8 with mid and abs-send-time. Returns it with its offer.
fn client(
    cert: &RTCCertificate,
    addr: SocketAddr,
    now: Instant,
) -> Result<(RTCPeerConnection, String), Error> {
    let mut me = MediaEngine::default();
    let vp8 = RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
        payload_type: 96,
    };
    me.register_codec(vp8, RtpCodecKind::Video)?;
    for uri in [SDES_MID_URI, ABS_SEND_TIME_URI] {
        let uri = uri.to_owned();
        let cap = RTCRtpHeaderExtensionCapability { uri };
        me.register_header_extension(cap, RtpCodecKind::Video, None)?;
    }
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .build();
    let config = RTCConfigurationBuilder::new()
        .with_certificates(vec![cert.clone()])
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(config)
        .with_setting_engine(settings)
        .with_media_engine(me)
        .with_interceptor_registry(Registry::new())
        .build(now)?;
    let init = RTCRtpTransceiverInit {
        direction: RTCRtpTransceiverDirection::Recvonly,
        streams: vec![],
        send_encodings: vec![],
    };
    pc.add_transceiver_from_kind(RtpCodecKind::Video, Some(init))?;
    let offer = pc.create_offer(None)?;
    pc.set_local_description(now, offer)?;
    let host = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    pc.add_local_candidate(RTCIceCandidate::from(&host).to_json()?)?;
    pc.add_local_candidate(RTCIceCandidateInit::default())?;
    let sdp = pc.local_description().ok_or("no offer")?.sdp.clone();
    Ok((pc, sdp))
}

/// Passes datagrams both ways and runs timers until both sides are connected.
fn connect(
    server: &mut Peer,
    server_addr: SocketAddr,
    client: &mut RTCPeerConnection,
    client_addr: SocketAddr,
    now: &mut Instant,
) -> Result<(), Error> {
    let (mut server_up, mut client_up) = (false, false);
    for _ in 0..10_000 {
        let mut moved = false;
        while let Some(out) = client.poll_write() {
            assert_eq!(out.transport.peer_addr, server_addr);
            server.handle_datagram(*now, client_addr, &mut out.message.to_vec());
            moved = true;
        }
        while let Some((to, message, _)) = server.poll_transmit() {
            assert_eq!(to, client_addr);
            let transport = Tuple {
                local_addr: client_addr,
                peer_addr: server_addr,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            };
            client.handle_read(TaggedBytesMut {
                now: *now,
                transport,
                message,
            })?;
            moved = true;
        }
        while let Some(e) = server.poll_event() {
            server_up |= matches!(e, PeerEvent::State(PeerState::Connected));
        }
        while let Some(e) = client.poll_event() {
            client_up |= matches!(
                e,
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                    RTCPeerConnectionState::Connected
                )
            );
        }
        if server_up && client_up && !moved {
            return Ok(());
        }
        if !moved {
            let next = [client.poll_timeout(), server.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(*now + Duration::from_millis(10));
            *now = next.max(*now + Duration::from_micros(100));
            client.handle_timeout(*now)?;
            server.handle_timeout(*now);
        }
    }
    Err("the in-memory connection did not come up".into())
}

fn publisher_leg() -> LegParams {
    LegParams {
        codecs: vec![LegCodec {
            payload_type: PUBLISHER_PT,
            mime: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            fmtp: String::new(),
        }],
        extensions: vec![
            (2, ABS_SEND_TIME_URI.to_owned()),
            (3, TRANSPORT_CC_URI.to_owned()),
            (4, SDES_MID_URI.to_owned()),
        ],
    }
}

fn publisher_packet(payload: Bytes) -> Packet {
    let mut p = Packet::default();
    p.header.version = 2;
    p.header.payload_type = PUBLISHER_PT;
    p.header.ssrc = 0x5EED_0001;
    p.header.sequence_number = 100;
    p.header.timestamp = 90_000;
    p.header.extension = true;
    p.header.extension_profile = 0xBEDE;
    for (id, value) in [(2u8, &[1u8, 2, 3][..]), (3, &[0, 7]), (4, b"0")] {
        let payload = Bytes::copy_from_slice(value);
        p.header.extensions.push(Extension { id, payload });
    }
    p.payload = payload;
    p
}

/// The viewer slot's negotiated parameters, as the engine converts them.
fn viewer_leg(peer: &Peer) -> Result<(u32, String, LegParams), Error> {
    let slot = peer.slots().first().ok_or("the viewer has no slot")?;
    Ok((
        slot.ssrc,
        slot.mid.clone(),
        LegParams::from_leg(&slot.codecs, &slot.extensions),
    ))
}

impl Fanout {
    /// `viewers` connected viewers, each with its slot bound to the publisher's track, past the
    /// first keyframe. `payload` is the body of every packet (a VP8 frame's middle).
    pub fn new(viewers: usize, payload: Bytes) -> Self {
        Self::build(viewers, payload).expect("in-memory viewers connect")
    }

    fn build(count: usize, payload: Bytes) -> Result<Self, Error> {
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let ctx = TransportContext::new(
            SocketAddr::new(ip, 3478),
            vec![ip],
            None,
            Duration::from_secs(30),
        )?;
        let server_addr = ctx.candidate_addr();
        let cert = client_certificate()?;
        let mut now = Instant::now();
        let mut viewers = Vec::with_capacity(count);
        for i in 0..count {
            let client_addr =
                SocketAddr::from(([10, 0, (i / 200) as u8, 1 + (i % 200) as u8], 40_000));
            let (mut client, offer) = client(&cert, client_addr, now)?;
            let ice = (
                format!("bench{i:04}"),
                "benchpasswordbenchpassword".to_owned(),
            );
            let (mut peer, answer) =
                Peer::viewer(&ctx, &offer, (&ice.0, &ice.1), &[MediaKind::Video], now)?;
            client.set_remote_description(now, RTCSessionDescription::answer(answer)?)?;
            connect(&mut peer, server_addr, &mut client, client_addr, &mut now)?;
            let (ssrc, mid, leg) = viewer_leg(&peer)?;
            let mut forwarder = SlotForwarder::new(ssrc, &mid, leg);
            if !forwarder.bind(SOURCE, &publisher_leg()) {
                return Err("the viewer leg has no VP8".into());
            }
            viewers.push(Viewer {
                peer,
                forwarder,
                client,
                client_addr,
            });
        }
        // A keyframe start (VP8 descriptor S=1, then a key frame header) opens every slot.
        let mut key = payload.to_vec();
        key[..5].copy_from_slice(&[0x10, 0x00, 0x9d, 0x01, 0x2a]);
        let mut fanout = Fanout {
            viewers,
            packet: publisher_packet(Bytes::from(key)),
            now,
            server_addr,
            scratch: Header::default(),
            buf: vec![0; 2048 + 128],
        };
        for v in &mut fanout.viewers {
            let out = v.forwarder.forward(SOURCE, &fanout.packet, now);
            let out = out.map_err(|skip| format!("keyframe not forwarded: {skip:?}"))?;
            if !v.peer.write_rtp(now, 0, out) {
                return Err("write_rtp refused the keyframe".into());
            }
        }
        fanout.drain_all();
        // The rest are frame middles (S=0): no keyframe check succeeds or matters.
        let mut middle = payload.to_vec();
        middle[0] = 0x00;
        fanout.packet.payload = Bytes::from(middle);
        fanout.forward_write(count, true);
        fanout.check_sent()?;
        fanout.check_sealed()?;
        Ok(fanout)
    }

    /// The publisher's next packet: sequence + 1, a new frame every third packet, 1 ms later.
    fn advance(&mut self) {
        let h = &mut self.packet.header;
        h.sequence_number = h.sequence_number.wrapping_add(1);
        if h.sequence_number.is_multiple_of(3) {
            h.timestamp = h.timestamp.wrapping_add(3000);
        }
        self.now += Duration::from_millis(1);
    }

    /// Rewrites the next packet's header for the first `n` slots (into the scratch header).
    pub fn forward_only(&mut self, n: usize) {
        self.advance();
        for v in &mut self.viewers[..n] {
            let out = v
                .forwarder
                .forward_header(SOURCE, &self.packet, self.now, &mut self.scratch);
            black_box((out.ok(), &self.scratch));
        }
    }

    /// Sends the next packet to the first `n` slots (rewrite, `write_rtp`), then, if
    /// `transmit`, takes each slot's datagrams as the engine's `transmit` would.
    pub fn forward_write(&mut self, n: usize, transmit: bool) {
        self.advance();
        let now = self.now;
        for v in &mut self.viewers[..n] {
            if let Ok(out) = v.forwarder.forward(SOURCE, &self.packet, now) {
                black_box(v.peer.write_rtp(now, 0, out));
            }
            if transmit {
                while let Some((to, data, _)) = v.peer.poll_transmit() {
                    black_box((to, data.len()));
                }
            }
        }
    }

    /// Sends the next packet to the first `n` slots as the engine's fan-out does: header
    /// rewritten into the reused scratch header, written into a send buffer and sealed in
    /// place (the datagram would then be queued for `sendmmsg`).
    pub fn forward_seal(&mut self, n: usize) {
        self.advance();
        let now = self.now;
        for v in &mut self.viewers[..n] {
            if v.forwarder
                .forward_header(SOURCE, &self.packet, now, &mut self.scratch)
                .is_err()
            {
                continue;
            }
            let sealed = write_packet(&self.scratch, &self.packet.payload, &mut self.buf)
                .and_then(|(head, len)| v.peer.seal_rtp(now, 0, &mut self.buf, head, len));
            black_box((v.client_addr, sealed));
        }
    }

    /// A sealed packet decrypts at each viewer's client to the rewritten packet.
    fn check_sealed(&mut self) -> Result<(), Error> {
        self.advance();
        let (now, server_addr) = (self.now, self.server_addr);
        for v in &mut self.viewers {
            if v.peer.sealed_media_addr().is_none() {
                return Err("Parley's send path is not on for this viewer".into());
            }
            v.forwarder
                .forward_header(SOURCE, &self.packet, now, &mut self.scratch)
                .map_err(|skip| format!("packet not forwarded: {skip:?}"))?;
            let (head, len) = write_packet(&self.scratch, &self.packet.payload, &mut self.buf)
                .ok_or("no room for the packet")?;
            let n = v
                .peer
                .seal_rtp(now, 0, &mut self.buf, head, len)
                .ok_or("not sealed")?;
            v.deliver(now, server_addr, BytesMut::from(&self.buf[..n]))?;
            let sent = (self.scratch.ssrc, self.scratch.sequence_number);
            v.check_received(sent, &self.packet.payload)?;
        }
        Ok(())
    }

    /// Drops every datagram the viewers have queued.
    fn drain_all(&mut self) {
        for v in &mut self.viewers {
            while v.peer.poll_transmit().is_some() {}
        }
    }

    /// One forwarded packet really reaches each viewer's client: one SRTP datagram that
    /// decrypts to the rewritten packet.
    fn check_sent(&mut self) -> Result<(), Error> {
        self.advance();
        let (now, server_addr) = (self.now, self.server_addr);
        for v in &mut self.viewers {
            let out = v.forwarder.forward(SOURCE, &self.packet, now);
            let out = out.map_err(|skip| format!("packet not forwarded: {skip:?}"))?;
            let sent = (out.header.ssrc, out.header.sequence_number);
            if !v.peer.write_rtp(now, 0, out) {
                return Err("write_rtp refused a packet".into());
            }
            let datagrams: Vec<_> = std::iter::from_fn(|| v.peer.poll_transmit()).collect();
            if datagrams.len() != 1 {
                return Err(format!("{} datagrams for one packet", datagrams.len()).into());
            }
            for (_, message, _) in datagrams {
                v.deliver(now, server_addr, message)?;
            }
            v.check_received(sent, &self.packet.payload)?;
        }
        Ok(())
    }
}

impl Viewer {
    /// Hands one datagram from the server to the viewer's client.
    fn deliver(
        &mut self,
        now: Instant,
        server_addr: SocketAddr,
        message: BytesMut,
    ) -> Result<(), Error> {
        let transport = Tuple {
            local_addr: self.client_addr,
            peer_addr: server_addr,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        };
        self.client.handle_read(TaggedBytesMut {
            now,
            transport,
            message,
        })?;
        Ok(())
    }

    /// The client decrypted an RTP packet with `sent` (SSRC, sequence number) and `payload`.
    fn check_received(&mut self, sent: (u32, u16), payload: &Bytes) -> Result<(), Error> {
        let got = std::iter::from_fn(|| self.client.poll_read()).find_map(|m| match m.message {
            RTCMessage::RtpPacket(_, p) => Some(p),
            _ => None,
        });
        let got = got.ok_or("the client decrypted no RTP packet")?;
        if (got.header.ssrc, got.header.sequence_number) != sent || got.payload != *payload {
            return Err(format!("the client got a different packet: {:?}", got.header).into());
        }
        Ok(())
    }
}
