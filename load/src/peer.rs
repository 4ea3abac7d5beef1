//! One client peer connection (a WHIP publisher or a WHEP viewer) on `rtc`'s sans-IO core.
//!
//! The client is the offerer: full ICE, controlling, DTLS client (`a=setup:actpass`, the
//! server answers passive). Its offer is complete (host candidate + end of candidates) so
//! no trickle is needed. `ClientPeer` does no I/O and reads no clock: datagrams and instants
//! come in, datagrams and [`PeerEvent`]s go out; the media thread drives it.
//!
//! Viewers have no interceptors at all: no NACKs, no reports. The media thread may skip
//! feeding most RTP packets to the stack (it counts them from their clear headers), and a
//! NACK generator would then ask for every skipped packet.

use crate::keyframe_tap::{asks_for_keyframe, KeyframeTap};
use crate::payload::VideoCodec;
use anyhow::{anyhow, Context, Result};
use bytes::{Bytes, BytesMut};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::RTCCertificate;
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
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::AUDIO_LEVEL_URI;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const VIDEO_PT: u8 = 96;
const AUDIO_PT: u8 = 111;

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
    /// The server asked a publisher for a keyframe (PLI or FIR).
    KeyframeRequest,
    /// A decrypted RTP packet reached a viewer.
    Rtp(rtc::rtp::Packet),
}

/// A publisher's outbound track and the header fields negotiated for it.
#[derive(Clone, Debug)]
pub struct Outbound {
    sender: RTCRtpSenderId,
    /// SSRC we chose.
    pub ssrc: u32,
    /// Payload type the answer accepted.
    pub payload_type: u8,
    /// Negotiated id of the audio-level header extension, if any.
    pub audio_level_id: Option<u8>,
    mime: &'static str,
}

/// One client peer connection.
pub struct ClientPeer {
    pc: RTCPeerConnection,
    local_addr: SocketAddr,
    /// Outbound audio track (publisher only).
    pub audio: Option<Outbound>,
    /// Outbound video track (publisher only).
    pub video: Option<Outbound>,
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
    },
    /// Recvonly: this many audio and video m-lines.
    Viewer {
        /// Audio m-lines.
        audio: usize,
        /// Video m-lines.
        video: usize,
    },
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
        Role::Publisher { audio, video } => {
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
            }
        }
        Role::Viewer { .. } => {
            me.register_codec(opus(), RtpCodecKind::Audio)?;
            me.register_codec(video_codec(VideoCodec::Vp8), RtpCodecKind::Video)?;
            me.register_codec(video_codec(VideoCodec::H264), RtpCodecKind::Video)?;
        }
    }
    Ok(me)
}

impl ClientPeer {
    /// Builds a peer bound (by its host candidate) to `local_addr` and returns its complete
    /// offer.
    pub fn new(
        certificate: &RTCCertificate,
        role: Role,
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
            audio: None,
            video: None,
            state: PeerState::Connecting,
        };
        match role {
            Role::Publisher { audio, video } => {
                if audio {
                    peer.audio = Some(peer.add_sendonly(RtpCodecKind::Audio, opus())?);
                }
                if let Some(codec) = video {
                    peer.video = Some(peer.add_sendonly(RtpCodecKind::Video, video_codec(codec))?);
                }
            }
            Role::Viewer { audio, video } => {
                for (kind, n) in [(RtpCodecKind::Audio, audio), (RtpCodecKind::Video, video)] {
                    for _ in 0..n {
                        peer.pc.add_transceiver_from_kind(
                            kind,
                            Some(RTCRtpTransceiverInit {
                                direction: RTCRtpTransceiverDirection::Recvonly,
                                streams: vec![],
                                send_encodings: vec![],
                            }),
                        )?;
                    }
                }
            }
        }
        let offer = peer.pc.create_offer(None)?;
        peer.pc.set_local_description(now, offer)?;
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: local_addr.ip().to_string(),
                port: local_addr.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
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

    fn add_sendonly(
        &mut self,
        kind: RtpCodecKind,
        codec: RTCRtpCodecParameters,
    ) -> Result<Outbound> {
        let ssrc = loop {
            let s: u32 = rand::random();
            if s != 0 {
                break s;
            }
        };
        let mime = if kind == RtpCodecKind::Audio {
            MIME_TYPE_OPUS
        } else if codec.rtp_codec.mime_type == MIME_TYPE_H264 {
            MIME_TYPE_H264
        } else {
            MIME_TYPE_VP8
        };
        let track = MediaStreamTrack::new(
            "parley-load".to_owned(),
            format!("load-{kind}-{ssrc:08x}"),
            format!("{kind}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                active: true,
                codec: codec.rtp_codec.clone(),
                ..Default::default()
            }],
        );
        let id = self.pc.add_transceiver_from_track(
            track,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )?;
        let sender = self
            .pc
            .rtp_transceiver(id)
            .and_then(|t| t.sender())
            .ok_or_else(|| anyhow!("a sendonly transceiver without a sender"))?;
        Ok(Outbound {
            sender,
            ssrc,
            payload_type: codec.payload_type,
            audio_level_id: None,
            mime,
        })
    }

    /// Applies the server's answer; for a publisher, learns the negotiated payload types and
    /// header-extension ids.
    pub fn apply_answer(&mut self, sdp: String, now: Instant) -> Result<()> {
        self.pc
            .set_remote_description(now, RTCSessionDescription::answer(sdp)?)
            .context("applying the answer")?;
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
            out.audio_level_id = params
                .header_extensions
                .iter()
                .find(|e| e.uri == AUDIO_LEVEL_URI)
                .and_then(|e| u8::try_from(e.id).ok());
        }
        Ok(())
    }

    /// Current connection state.
    pub fn state(&self) -> PeerState {
        self.state
    }

    /// Feeds one datagram that arrived from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
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
                RTCMessage::RtcpPacket(_, packets) if asks_for_keyframe(&packets) => {
                    return Some(PeerEvent::KeyframeRequest)
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

    /// Closes the connection (a DTLS close_notify may follow in `poll_transmit`).
    pub fn close(&mut self) {
        let _ = self.pc.close();
        self.state = PeerState::Failed;
    }
}
