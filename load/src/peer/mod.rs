//! One client peer connection (a WHIP publisher or a WHEP viewer) on `rtc`'s sans-IO core.
//!
//! The client is the offerer: full ICE, controlling, DTLS client (`a=setup:actpass`, the
//! server answers passive). Its offer is complete (host candidate + end of candidates) so
//! no trickle is needed. `ClientPeer` does no I/O and reads no clock: datagrams and instants
//! come in, datagrams and [`PeerEvent`]s go out; the media thread drives it.
//!
//! Viewers have no interceptors at all: no NACKs, no reports. The media thread may skip
//! feeding most RTP packets to the stack (it counts them from their clear headers), and a
//! NACK generator would then ask for every skipped packet. For congestion feedback a viewer
//! offers, as browsers do, the transport-wide-cc and abs-send-time header extensions and
//! `a=rtcp-fb:<pt> transport-cc`; the media thread builds the feedback itself from the clear
//! headers ([`crate::twcc`]) and sends it with [`ClientPeer::write_rtcp`].
//!
//! A simulcast publisher offers one video track with three encodings (`a=rid:q send`,
//! `a=rid:h send`, `a=rid:f send`, `a=simulcast:send q;h;f`), each on its own SSRC, and the
//! mid and rtp-stream-id header extensions. `rtc`'s sender does not add those two itself,
//! so [`Outbound::header`] sets them on every packet with the ids negotiated on the leg
//! (and leaves out one the answer did not accept, which the sender would refuse).
//!
//! A viewer may reach the server over ICE-TCP instead ([`Transport::Tcp`], RFC 6544): its
//! offer then has one `tcp` host candidate, `tcptype active` on the discard port 9 (an active
//! candidate listens nowhere), and no UDP candidate, so its only pairs are with the server's
//! passive TCP candidates. The media thread opens the connection and does the RFC 4571
//! framing ([`crate::tcp`]); the peer only learns the connection's local address
//! ([`ClientPeer::set_local_addr`]) and tags what it is fed as TCP.

use crate::keyframe_tap::{keyframe_ssrcs, KeyframeTap};
use crate::payload::VideoCodec;
use crate::simulcast::LAYERS;
use anyhow::{anyhow, Context, Result};
use bytes::{Bytes, BytesMut};
use rtc::crypto::{self, SignatureScheme};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::tcp_type::TcpType;
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
    TYPE_RTCP_FB_TRANSPORT_CC,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverId,
    RTCRtpTransceiverInit,
};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::{
    ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, SDES_MID_URI, SDES_RTP_STREAM_ID_URI, TRANSPORT_CC_URI,
};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const VIDEO_PT: u8 = 96;
const AUDIO_PT: u8 = 111;

/// How a peer reaches the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// ICE over UDP from its own socket (a `udp` host candidate on the socket's port).
    #[default]
    Udp,
    /// ICE over TCP, active (a `tcp ... tcptype active` host candidate on port 9): the
    /// generator connects to the server's passive candidate.
    Tcp,
}

/// Connection state as the generator cares about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// ICE/DTLS in progress (or temporarily disconnected).
    Connecting,
    /// SRTP keys are up.
    Connected,
    /// Failed or closed.
    Failed,
}

/// What a peer reports to the media thread.
#[derive(Debug)]
pub enum PeerEvent {
    /// The connection state changed (read it with [`ClientPeer::state`]).
    StateChanged,
    /// The server asked a publisher for a keyframe (PLI or FIR) on the video layers whose
    /// bits are set (bit i = encoding i; all bits when the SSRC names no layer).
    KeyframeRequest(u8),
    /// A decrypted RTP packet reached a viewer.
    Rtp(rtc::rtp::Packet),
}

/// A publisher's outbound track and the header fields negotiated for it.
#[derive(Clone, Debug)]
pub struct Outbound {
    sender: RTCRtpSenderId,
    transceiver: RTCRtpTransceiverId,
    /// SSRCs we chose, one per encoding (simulcast layer), lowest layer first.
    pub ssrcs: Vec<u32>,
    /// The encodings' rids (empty for a plain track).
    rids: Vec<Bytes>,
    /// Payload type the answer accepted.
    pub payload_type: u8,
    /// Negotiated id of the audio-level header extension, if any.
    pub audio_level_id: Option<u8>,
    /// The track's mid, and the negotiated id of the mid header extension.
    mid: Option<(u8, Bytes)>,
    /// Negotiated id of the rtp-stream-id header extension.
    rid_id: Option<u8>,
    mime: &'static str,
}

impl Outbound {
    /// The RTP header of a packet of encoding `layer`: its SSRC, the negotiated payload type,
    /// and the mid and rid header extensions when the answer accepted them.
    pub fn header(&self, layer: u8, marker: bool, seq: u16, timestamp: u32) -> rtc::rtp::Header {
        let i = usize::from(layer).min(self.ssrcs.len().saturating_sub(1));
        let mut header = rtc::rtp::Header {
            version: 2,
            marker,
            payload_type: self.payload_type,
            sequence_number: seq,
            timestamp,
            ssrc: self.ssrcs.get(i).copied().unwrap_or_default(),
            ..Default::default()
        };
        if let Some((id, mid)) = &self.mid {
            let _ = header.set_extension(*id, mid.clone());
        }
        if let (Some(id), Some(rid)) = (self.rid_id, self.rids.get(i)) {
            let _ = header.set_extension(id, rid.clone());
        }
        header
    }

    /// Which layers (as a bit set) a keyframe request for `ssrc` asks for: that encoding's,
    /// or all of them when `ssrc` is none of ours (0, say).
    pub fn layers_of(&self, ssrc: u32) -> u8 {
        match self.ssrcs.iter().position(|&s| s == ssrc) {
            Some(i) => 1 << i,
            None => crate::engine::ALL_LAYERS,
        }
    }
}

/// One client peer connection.
pub struct ClientPeer {
    pc: RTCPeerConnection,
    local_addr: SocketAddr,
    transport: Transport,
    /// Outbound audio track (publisher only).
    pub audio: Option<Outbound>,
    /// Outbound video track (publisher only).
    pub video: Option<Outbound>,
    /// The mids of a viewer's video m-lines, in offer order.
    video_mids: Vec<String>,
    /// A viewer's first receiver: its RTCP (congestion feedback) goes out through it.
    receiver: Option<RTCRtpReceiverId>,
    /// The transport-wide-cc extension id the answer accepted (a viewer that offered it).
    transport_cc_id: Option<u8>,
    state: PeerState,
}

/// What a peer offers.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    /// Sendonly audio and/or video.
    Publisher {
        /// Send Opus.
        audio: bool,
        /// Send this video codec.
        video: Option<VideoCodec>,
        /// Offer the video as three simulcast encodings.
        simulcast: bool,
    },
    /// Recvonly: this many audio and video m-lines.
    Viewer {
        /// Audio m-lines.
        audio: usize,
        /// Video m-lines.
        video: usize,
        /// Offer transport-wide congestion control feedback (and abs-send-time).
        feedback: bool,
    },
}

/// The one ECDSA P-256 certificate all of a run's peers share.
pub fn certificate() -> Result<RTCCertificate> {
    let provider = crypto::default_provider().map_err(|e| anyhow!("crypto provider: {e}"))?;
    let params = CertificateParams::new(vec!["parley-load".to_owned()])
        .map_err(|e| anyhow!("certificate params: {e}"))?;
    RTCCertificate::generate(provider.crypto(), SignatureScheme::EcdsaP256Sha256, params)
        .map_err(|e| anyhow!("certificate: {e}"))
}

fn codec_params(
    mime: &str,
    clock: u32,
    channels: u16,
    fmtp: &str,
    pt: u8,
) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: clock,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    }
}

const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

fn opus() -> RTCRtpCodecParameters {
    codec_params(
        MIME_TYPE_OPUS,
        48000,
        2,
        "minptime=10;useinbandfec=1",
        AUDIO_PT,
    )
}

fn video_codec(codec: VideoCodec) -> RTCRtpCodecParameters {
    match codec {
        VideoCodec::Vp8 => codec_params(MIME_TYPE_VP8, 90000, 0, "", VIDEO_PT),
        VideoCodec::H264 => codec_params(MIME_TYPE_H264, 90000, 0, H264_FMTP, 102),
    }
}

fn media_engine(role: Role) -> Result<MediaEngine> {
    let mut me = MediaEngine::default();
    match role {
        Role::Publisher {
            audio,
            video,
            simulcast,
        } => {
            if audio {
                me.register_codec(opus(), RtpCodecKind::Audio)?;
                me.register_header_extension(
                    RTCRtpHeaderExtensionCapability {
                        uri: AUDIO_LEVEL_URI.to_owned(),
                    },
                    RtpCodecKind::Audio,
                    None,
                )?;
            }
            if let Some(codec) = video {
                me.register_codec(video_codec(codec), RtpCodecKind::Video)?;
                if simulcast {
                    for uri in [SDES_MID_URI, SDES_RTP_STREAM_ID_URI] {
                        me.register_header_extension(
                            RTCRtpHeaderExtensionCapability {
                                uri: uri.to_owned(),
                            },
                            RtpCodecKind::Video,
                            None,
                        )?;
                    }
                }
            }
        }
        Role::Viewer { feedback, .. } => {
            me.register_codec(opus(), RtpCodecKind::Audio)?;
            me.register_codec(video_codec(VideoCodec::Vp8), RtpCodecKind::Video)?;
            me.register_codec(video_codec(VideoCodec::H264), RtpCodecKind::Video)?;
            if feedback {
                offer_congestion_feedback(&mut me)?;
            }
        }
    }
    Ok(me)
}

/// What a browser's offer carries for congestion control, on audio and video: the
/// transport-wide-cc and abs-send-time extensions and `transport-cc` feedback.
fn offer_congestion_feedback(me: &mut MediaEngine) -> Result<()> {
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        me.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_TRANSPORT_CC.to_owned(),
                parameter: String::new(),
            },
            kind,
        );
        for uri in [ABS_SEND_TIME_URI, TRANSPORT_CC_URI] {
            me.register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: uri.to_owned(),
                },
                kind,
                None,
            )?;
        }
    }
    Ok(())
}

impl ClientPeer {
    /// Builds a peer bound (by its host candidate) to `local_addr` and returns its complete
    /// offer. Over TCP only the address's IP is offered (the candidate's port is 9); set the
    /// connection's real local address with [`ClientPeer::set_local_addr`] once it is open.
    pub fn new(
        certificate: &RTCCertificate,
        role: Role,
        transport: Transport,
        local_addr: SocketAddr,
        now: Instant,
    ) -> Result<(ClientPeer, String)> {
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_ice_timeouts(
                Some(Duration::from_secs(15)),
                Some(Duration::from_secs(30)),
                Some(Duration::from_secs(2)),
            )
            // Checks every 50 ms as browsers pace them (RFC 8445's Ta), not the stack's
            // 200 ms: join times then measure the server, not this client's timer.
            .with_ice_connection_attempts(Some(Duration::from_millis(50)), None)
            .build();
        let registry = match role {
            Role::Publisher { .. } => {
                Registry::new().with(Slot::Custom(14_000), KeyframeTap::default())
            }
            Role::Viewer { .. } => Registry::new(),
        };
        let config = RTCConfigurationBuilder::new()
            .with_certificates(vec![certificate.clone()])
            .build();
        let pc = RTCPeerConnectionBuilder::new()
            .with_configuration(config)
            .with_setting_engine(settings)
            .with_media_engine(media_engine(role)?)
            .with_interceptor_registry(registry)
            .build(now)?;
        let mut peer = ClientPeer {
            pc,
            local_addr,
            transport,
            audio: None,
            video: None,
            video_mids: Vec::new(),
            receiver: None,
            transport_cc_id: None,
            state: PeerState::Connecting,
        };
        let mut video_transceivers = Vec::new();
        match role {
            Role::Publisher {
                audio,
                video,
                simulcast,
            } => {
                if audio {
                    peer.audio = Some(peer.add_sendonly(RtpCodecKind::Audio, opus(), &[])?);
                }
                if let Some(codec) = video {
                    let rids: Vec<&str> = match simulcast {
                        true => LAYERS.iter().map(|l| l.rid).collect(),
                        false => Vec::new(),
                    };
                    peer.video =
                        Some(peer.add_sendonly(RtpCodecKind::Video, video_codec(codec), &rids)?);
                }
            }
            Role::Viewer { audio, video, .. } => {
                for (kind, n) in [(RtpCodecKind::Audio, audio), (RtpCodecKind::Video, video)] {
                    for _ in 0..n {
                        let id = peer.pc.add_transceiver_from_kind(
                            kind,
                            Some(RTCRtpTransceiverInit {
                                direction: RTCRtpTransceiverDirection::Recvonly,
                                streams: vec![],
                                send_encodings: vec![],
                            }),
                        )?;
                        if kind == RtpCodecKind::Video {
                            video_transceivers.push(id);
                        }
                        if peer.receiver.is_none() {
                            peer.receiver = peer.pc.rtp_transceiver(id).and_then(|t| t.receiver());
                        }
                    }
                }
            }
        }
        let offer = peer.pc.create_offer(None)?;
        peer.pc.set_local_description(now, offer)?;
        for id in video_transceivers {
            if let Some(mid) = peer.pc.rtp_transceiver(id).and_then(|t| t.mid().clone()) {
                peer.video_mids.push(mid);
            }
        }
        for out in [peer.audio.as_mut(), peer.video.as_mut()]
            .into_iter()
            .flatten()
        {
            let mid = peer
                .pc
                .rtp_transceiver(out.transceiver)
                .and_then(|t| t.mid().clone());
            // The extension id is filled in from the answer.
            out.mid = mid.map(|m| (0, Bytes::from(m)));
        }
        let (network, port, tcp_type) = match transport {
            Transport::Udp => ("udp", local_addr.port(), TcpType::Unspecified),
            // RFC 6544 §4.5: an active candidate's port is 9; the agent matches what arrives
            // on an active TCP candidate by IP only.
            Transport::Tcp => ("tcp", 9, TcpType::Active),
        };
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: network.to_owned(),
                address: local_addr.ip().to_string(),
                port,
                component: 1,
                ..Default::default()
            },
            tcp_type,
        }
        .new_candidate_host()?;
        peer.pc
            .add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
        peer.pc
            .add_local_candidate(RTCIceCandidateInit::default())?;
        let sdp = peer
            .pc
            .local_description()
            .map(|d| d.sdp.clone())
            .ok_or_else(|| anyhow!("no local description after set_local_description"))?;
        Ok((peer, sdp))
    }

    /// Adds a sendonly track: one encoding, or one per rid (simulcast), each on its own SSRC.
    fn add_sendonly(
        &mut self,
        kind: RtpCodecKind,
        codec: RTCRtpCodecParameters,
        rids: &[&str],
    ) -> Result<Outbound> {
        let mut ssrcs: Vec<u32> = Vec::new();
        while ssrcs.len() < rids.len().max(1) {
            let s: u32 = rand::random();
            if s != 0 && !ssrcs.contains(&s) {
                ssrcs.push(s);
            }
        }
        let mime = if kind == RtpCodecKind::Audio {
            MIME_TYPE_OPUS
        } else if codec.rtp_codec.mime_type == MIME_TYPE_H264 {
            MIME_TYPE_H264
        } else {
            MIME_TYPE_VP8
        };
        let encodings = ssrcs
            .iter()
            .enumerate()
            .map(|(i, &ssrc)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: rids.get(i).map_or_else(String::new, |r| (*r).to_owned()),
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                active: true,
                codec: codec.rtp_codec.clone(),
                ..Default::default()
            })
            .collect();
        let track = MediaStreamTrack::new(
            "parley-load".to_owned(),
            format!("load-{kind}-{:08x}", ssrcs[0]),
            format!("{kind}"),
            kind,
            encodings,
        );
        let transceiver = self.pc.add_transceiver_from_track(
            track,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )?;
        let sender = self
            .pc
            .rtp_transceiver(transceiver)
            .and_then(|t| t.sender())
            .ok_or_else(|| anyhow!("a sendonly transceiver without a sender"))?;
        Ok(Outbound {
            sender,
            transceiver,
            ssrcs,
            rids: rids.iter().map(|r| Bytes::from(r.to_string())).collect(),
            payload_type: codec.payload_type,
            audio_level_id: None,
            mid: None,
            rid_id: None,
            mime,
        })
    }

    /// The mids of a viewer's video m-lines (for layer requests), in offer order.
    pub fn video_mids(&self) -> &[String] {
        &self.video_mids
    }

    /// The transport-wide-cc extension id the answer accepted, if this viewer offered it.
    pub fn transport_cc_id(&self) -> Option<u8> {
        self.transport_cc_id
    }

    /// Applies the server's answer; learns the negotiated payload types and header-extension
    /// ids (a publisher's, and a viewer's transport-wide-cc id).
    pub fn apply_answer(&mut self, sdp: String, now: Instant) -> Result<()> {
        self.pc
            .set_remote_description(now, RTCSessionDescription::answer(sdp)?)
            .context("applying the answer")?;
        if let Some(mut receiver) = self.receiver.and_then(|r| self.pc.rtp_receiver(r)) {
            self.transport_cc_id = receiver
                .get_parameters()
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|e| e.uri == TRANSPORT_CC_URI)
                .and_then(|e| u8::try_from(e.id).ok());
        }
        for out in [self.audio.as_mut(), self.video.as_mut()]
            .into_iter()
            .flatten()
        {
            let Some(mut sender) = self.pc.rtp_sender(out.sender) else {
                continue;
            };
            let params = &sender.get_parameters().rtp_parameters;
            let codec = params
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(out.mime))
                .ok_or_else(|| anyhow!("the answer does not accept {}", out.mime))?;
            out.payload_type = codec.payload_type;
            let id_of = |uri: &str| {
                params
                    .header_extensions
                    .iter()
                    .find(|e| e.uri == uri)
                    .and_then(|e| u8::try_from(e.id).ok())
            };
            out.audio_level_id = id_of(AUDIO_LEVEL_URI);
            out.rid_id = id_of(SDES_RTP_STREAM_ID_URI);
            out.mid = match (id_of(SDES_MID_URI), out.mid.take()) {
                (Some(id), Some((_, mid))) => Some((id, mid)),
                _ => None,
            };
        }
        Ok(())
    }

    /// Current connection state.
    pub fn state(&self) -> PeerState {
        self.state
    }

    /// How it reaches the server.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The local address of what it is fed: over TCP, the connection's local address once
    /// it is open.
    pub fn set_local_addr(&mut self, addr: SocketAddr) {
        self.local_addr = addr;
    }

    /// Feeds one datagram (or, over TCP, one RFC 4571 frame) that arrived from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let transport_protocol = match self.transport {
            Transport::Udp => TransportProtocol::UDP,
            Transport::Tcp => TransportProtocol::TCP,
        };
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol,
            },
            message: BytesMut::from(data),
        };
        // Malformed or unexpected input is the server's problem, not a reason to stop.
        let _ = self.pc.handle_read(msg);
    }

    /// Takes the next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut)> {
        self.pc
            .poll_write()
            .map(|m| (m.transport.peer_addr, m.message))
    }

    /// Takes the next event.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = event {
                let mapped = match s {
                    RTCPeerConnectionState::Connected => PeerState::Connected,
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        PeerState::Failed
                    }
                    _ => PeerState::Connecting,
                };
                if mapped != self.state {
                    self.state = mapped;
                    return Some(PeerEvent::StateChanged);
                }
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(_, packet) => return Some(PeerEvent::Rtp(packet)),
                RTCMessage::RtcpPacket(_, packets) => {
                    let ssrcs = keyframe_ssrcs(&packets);
                    if ssrcs.is_empty() {
                        continue;
                    }
                    let layers = self.video.as_ref().map_or(crate::engine::ALL_LAYERS, |v| {
                        ssrcs.iter().fold(0, |acc, &s| acc | v.layers_of(s))
                    });
                    return Some(PeerEvent::KeyframeRequest(layers));
                }
                _ => {}
            }
        }
        None
    }

    /// When the stack next needs [`ClientPeer::handle_timeout`].
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.pc.poll_timeout()
    }

    /// Runs the stack's timers up to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = self.pc.handle_timeout(now);
    }

    /// Sends one RTP packet on the publisher's audio (`video == false`) or video track.
    pub fn write_rtp(
        &mut self,
        now: Instant,
        video: bool,
        header: rtc::rtp::Header,
        payload: Bytes,
    ) -> Result<()> {
        let out = if video { &self.video } else { &self.audio };
        let sender = out
            .as_ref()
            .map(|o| o.sender)
            .ok_or_else(|| anyhow!("no such track"))?;
        let mut s = self
            .pc
            .rtp_sender(sender)
            .ok_or_else(|| anyhow!("sender gone"))?;
        s.write_rtp(now, rtc::rtp::Packet { header, payload })?;
        Ok(())
    }

    /// Sends RTCP (a viewer's congestion feedback) through its first receiver; the datagram
    /// follows in `poll_transmit`.
    pub fn write_rtcp(&mut self, now: Instant, packet: Box<dyn rtc::rtcp::Packet>) -> Result<()> {
        let id = self
            .receiver
            .ok_or_else(|| anyhow!("RTCP from a peer without a receiver"))?;
        let mut receiver = self
            .pc
            .rtp_receiver(id)
            .ok_or_else(|| anyhow!("receiver gone"))?;
        receiver.write_rtcp(now, vec![packet])?;
        Ok(())
    }

    /// Closes the connection (a DTLS close_notify may follow in `poll_transmit`).
    pub fn close(&mut self) {
        let _ = self.pc.close();
        self.state = PeerState::Failed;
    }
}

#[cfg(test)]
mod tests;
