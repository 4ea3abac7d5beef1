//! One WebRTC peer connection (a WHIP publisher or a WHEP viewer) on the shared socket.
//!
//! `Peer` wraps `rtc`'s `RTCPeerConnection` and speaks in media terms: inbound tracks of a
//! publisher, outbound slots of a viewer, RTP packets, keyframe requests and datagrams. It is
//! driven by the media engine: datagrams and timeouts in, datagrams and [`PeerEvent`]s out.

use super::keyframe_tap::KeyframeTap;
use super::rtcp_figures::RtcpFigures;
use super::rtcp_opener::RtcpOpener;
use super::rtp_opener::{Opened, RtpOpener};
use super::sdp;
use super::sealer::{RtpSealer, SealProfile};
use super::sent::SentStream;
use super::srtp_keys::{KeyTap, Tapped};
use super::twcc::{is_feedback, write_extension, Delivery, SendHistory};
use super::uplink::Uplink;
use super::{MediaKind, TransportContext, TransportError};
use bytes::BytesMut;
use rtc::crypto::RTCCryptoProvider;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::{Registry, SenderReportBuilder, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_AV1, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RTCRtpHeaderExtensionParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::{
    ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, SDES_MID_URI, TRANSPORT_CC_URI, VIDEO_ORIENTATION_URI,
};
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::shared::{TaggedBytesMut, TransportContext as Tuple, TransportProtocol};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

mod upstream;

/// How often Parley sends sender reports for the streams it seals itself.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// One negotiated codec of a leg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Codec {
    /// Payload type on this leg.
    pub payload_type: u8,
    /// e.g. `video/H264`.
    pub mime: String,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Audio channels (0 for video).
    pub channels: u16,
    /// The `a=fmtp` parameters.
    pub fmtp: String,
}

/// One negotiated RTP header extension of a leg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderExt {
    /// Extension id on this leg (1..=14).
    pub id: u8,
    /// Extension URI.
    pub uri: String,
}

/// Most simulcast layers Parley keeps apart per track; further ones are ignored (RFC 8853
/// lets an answerer take a subset).
pub const MAX_LAYERS: usize = 3;

/// One RTP stream of a publisher's track: the whole track, or one simulcast layer of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundLayer {
    /// The layer's RTP stream id (`a=rid`), empty without simulcast.
    pub rid: String,
    /// The publisher's SSRC for this layer.
    pub ssrc: u32,
    /// The last sender report's (NTP time, RTP timestamp), which maps this layer's timestamps
    /// onto the track's other layers.
    pub sender_report: Option<(u64, u32)>,
}

/// A track a publisher sends to the server.
#[derive(Clone, Debug)]
pub struct InboundTrack {
    /// Audio or video.
    pub kind: MediaKind,
    /// Its RTP streams in the order they started: one, or one per simulcast layer (at most
    /// [`MAX_LAYERS`]).
    pub layers: Vec<InboundLayer>,
    /// Codecs negotiated on the publisher's leg.
    pub codecs: Vec<Codec>,
    /// Header extensions negotiated on the publisher's leg.
    pub extensions: Vec<HeaderExt>,
    receiver: RTCRtpReceiverId,
    /// The negotiated RTCP feedback (type, parameter) of its first codec.
    feedback: Vec<(String, String)>,
}

/// A sending m-line of a viewer: Parley fills it with a publisher's track.
#[derive(Clone, Debug)]
pub struct OutboundSlot {
    /// Audio or video.
    pub kind: MediaKind,
    /// The viewer's m-line identifier.
    pub mid: String,
    /// The SSRC Parley sends this slot with, fixed for the session.
    pub ssrc: u32,
    /// Codecs negotiated on the viewer's leg.
    pub codecs: Vec<Codec>,
    /// Header extensions negotiated on the viewer's leg.
    pub extensions: Vec<HeaderExt>,
    sender: RTCRtpSenderId,
    /// The leg's transport-wide-cc and abs-send-time extension ids, stamped as Parley seals.
    stamps: (Option<u8>, Option<u8>),
}

/// Connection state as Parley acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// ICE/DTLS not up yet, or temporarily disconnected.
    Connecting,
    /// Media can flow.
    Connected,
    /// ICE consent or DTLS failed, or the connection was closed.
    Failed,
}

/// Something a peer reports to the engine.
#[derive(Debug)]
pub enum PeerEvent {
    /// The connection state changed.
    State(PeerState),
    /// A publisher's track started; the index is into [`Peer::inbound`].
    TrackOpened(usize),
    /// Another simulcast layer of a publisher's track started.
    LayerOpened {
        /// Index into [`Peer::inbound`].
        track: usize,
        /// Index into that track's layers.
        layer: usize,
    },
    /// An RTP packet from a publisher's track.
    Rtp {
        /// Index into [`Peer::inbound`].
        track: usize,
        /// Index into the track's layers.
        layer: usize,
        /// The packet, decrypted.
        packet: rtc::rtp::Packet,
        /// When its datagram arrived.
        received: Instant,
    },
    /// A viewer asked for a keyframe on one of its slots.
    KeyframeRequest {
        /// Index into [`Peer::slots`].
        slot: usize,
    },
    /// What a viewer's connection said about its downlink.
    Downlink(Feedback),
    /// A viewer reported lost packets on a slot Parley seals itself (the stack answers NACKs
    /// only for packets it sent).
    Nack {
        /// Index into [`Peer::slots`].
        slot: usize,
        /// The lost sequence numbers, as sent.
        seqs: Vec<u16>,
    },
}

/// How a connection reaches its client: the selected ICE pair's transport and the type of
/// the client's candidate in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path {
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// `host`, `srflx`, `prflx` or `relay` (through a TURN server).
    pub candidate: &'static str,
}

impl Path {
    /// The selected pair's, from the bundled transport of any receiver or sender.
    fn of(pc: &mut RTCPeerConnection, sender: Option<RTCRtpSenderId>) -> Option<Path> {
        use rtc::peer_connection::transport::RTCIceCandidateType as Type;
        let receivers: Vec<_> = pc.get_receivers().collect();
        let pair = receivers
            .into_iter()
            .find_map(|id| {
                pc.rtp_receiver(id)?
                    .transport()?
                    .ice_transport()
                    .get_selected_candidate_pair()
            })
            .or_else(|| {
                pc.rtp_sender(sender?)?
                    .transport()?
                    .ice_transport()
                    .get_selected_candidate_pair()
            })?;
        let remote = pair.remote();
        let candidate = match remote.typ {
            Type::Host => "host",
            Type::Srflx => "srflx",
            Type::Prflx => "prflx",
            Type::Relay => "relay",
            _ => return None,
        };
        let transport = match remote.protocol {
            rtc::peer_connection::transport::RTCIceProtocol::Tcp => "tcp",
            _ => "udp",
        };
        Some(Path {
            transport,
            candidate,
        })
    }
}

/// Who read a datagram (see [`Peer::handle_datagram`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fed {
    /// The WebRTC stack.
    Stack,
    /// Parley alone: the stack has nothing new.
    Parley,
}

/// Downlink feedback from a viewer, for its estimator.
#[derive(Debug)]
pub enum Feedback {
    /// Transport-wide congestion control: the packets reported on wait in
    /// [`Peer::deliveries`] (one event for all the feedback read until they are cleared).
    Twcc,
    /// The viewer's own estimate (REMB), bits per second.
    Remb(f64),
    /// The mean fraction lost (0..1) over the video streams a receiver report covered.
    Loss(f64),
}

/// One peer connection on the shared socket.
pub struct Peer {
    pc: RTCPeerConnection,
    local_addr: SocketAddr,
    /// The local address of the ICE-TCP candidate, when there is one.
    tcp_addr: Option<SocketAddr>,
    inbound: Vec<InboundTrack>,
    inbound_by_track_id: HashMap<String, usize>,
    slots: Vec<OutboundSlot>,
    events: VecDeque<PeerEvent>,
    state: PeerState,
    unknown_rtp: u64,
    /// What was sent per slot: sender reports and loss estimates.
    sent: Vec<SentStream>,
    figures: RtcpFigures,
    /// The connection's crypto provider, which learns the local SRTP master key.
    tap: Arc<KeyTap>,
    keys: Arc<Tapped>,
    /// Parley's own send path, once DTLS negotiated the profile it implements.
    sealer: Option<RtpSealer>,
    /// Parley's own receive path for the viewer's SRTCP, once the keys are known.
    opener: Option<RtcpOpener>,
    /// Where media goes: the selected ICE pair's remote address.
    media_addr: Option<SocketAddr>,
    next_report: Option<Instant>,
    /// Transport-wide numbering and send times of what Parley seals.
    history: SendHistory,
    /// What TWCC feedback reported since the engine last took it; reused.
    deliveries: Vec<Delivery>,
    /// The selected ICE pair, as the statistics last showed it.
    path: Option<Path>,
    /// A publisher's receive-side feedback (TWCC, NACKs, receiver reports), which Parley
    /// keeps instead of the stack's chain.
    uplink: Option<Uplink>,
    /// Parley's own receive path for a publisher's SRTP, once the keys are known.
    rtp_opener: Option<RtpOpener>,
    /// A publisher's known layers by SSRC: (SSRC, track, layer).
    layer_ssrcs: Vec<(u32, usize, usize)>,
    /// A copy of a datagram the stack takes after Parley checked it; reused.
    scratch: Vec<u8>,
    /// Publisher SRTP packets dropped as unauthentic since the last call.
    unauthentic: u64,
    /// An upstream's video sections are the layers of one track (`upstream`).
    merge_video: bool,
    /// An upstream's video receivers and the rid each layer goes by here.
    video_rids: Vec<(RTCRtpReceiverId, String)>,
}

/// What Parley's own receive path did with a publisher's datagram.
enum Opening {
    /// Done: the stack is not involved.
    Done,
    /// Authenticated and reported on; the stack takes it as it came (to bind a stream, or
    /// to unwrap a retransmission).
    Checked,
    /// Not opened: the stack decides alone.
    Unopened,
}

fn codec(mime: &str, clock_rate: u32, channels: u16, fmtp: &str, pt: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    }
}

/// The codecs Parley forwards. H264 covers every profile OBS and browsers send; the level is
/// not part of matching, so one entry per profile suffices. A viewer's leg also offers REMB
/// (`goog-remb`): clients without transport-wide feedback (aiortc) send their own estimate.
/// The stack's interceptors for a leg, with the SDP features they answer for registered on
/// `me` (nack, nack pli, transport-cc and the header extensions, as the stack's defaults).
/// A viewer's leg sends nothing through them when Parley seals its media, and Parley answers
/// its NACKs itself; a publisher's feedback is Parley's [`Uplink`]. Only the sender reports
/// stay, for a connection that falls back to the stack's send path. Every RTCP packet passes
/// each interceptor in the chain, so fewer is cheaper.
fn interceptors(me: &mut MediaEngine) -> Result<Registry, TransportError> {
    let _ = configure_nack(Registry::new(), me);
    configure_simulcast_extension_headers(me)?;
    let _ = configure_twcc_receiver_only(Registry::new(), me)?;
    Ok(Registry::new().with(Slot::SenderReport, SenderReportBuilder::new().build()))
}

/// The video codecs Parley forwards, as every leg registers them.
fn video_codecs() -> [RTCRtpCodecParameters; 10] {
    let h264 = |profile: &str, mode: u8| {
        format!("level-asymmetry-allowed=1;packetization-mode={mode};profile-level-id={profile}")
    };
    [
        codec(MIME_TYPE_VP8, 90000, 0, "", 96),
        codec(MIME_TYPE_VP9, 90000, 0, "profile-id=0", 98),
        codec(MIME_TYPE_VP9, 90000, 0, "profile-id=2", 100),
        codec(MIME_TYPE_H264, 90000, 0, &h264("42e01f", 1), 102),
        codec(MIME_TYPE_H264, 90000, 0, &h264("42001f", 1), 104),
        codec(MIME_TYPE_H264, 90000, 0, &h264("4d001f", 1), 106),
        codec(MIME_TYPE_H264, 90000, 0, &h264("640032", 1), 108),
        codec(MIME_TYPE_H264, 90000, 0, &h264("640c1f", 1), 112),
        codec(MIME_TYPE_H264, 90000, 0, &h264("42e01f", 0), 114),
        codec(MIME_TYPE_AV1, 90000, 0, "profile=0", 45),
    ]
}

fn media_engine(viewer: bool) -> Result<MediaEngine, TransportError> {
    let mut me = MediaEngine::default();
    me.register_codec(
        codec(MIME_TYPE_OPUS, 48000, 2, "minptime=10;useinbandfec=1", 111),
        RtpCodecKind::Audio,
    )?;
    for c in video_codecs() {
        me.register_codec(c, RtpCodecKind::Video)?;
    }
    if viewer {
        me.register_feedback(
            RTCPFeedback {
                typ: "goog-remb".to_owned(),
                parameter: String::new(),
            },
            RtpCodecKind::Video,
        );
    }
    for (uri, kind) in [
        (SDES_MID_URI, RtpCodecKind::Audio),
        (SDES_MID_URI, RtpCodecKind::Video),
        (AUDIO_LEVEL_URI, RtpCodecKind::Audio),
        (ABS_SEND_TIME_URI, RtpCodecKind::Video),
        (VIDEO_ORIENTATION_URI, RtpCodecKind::Video),
    ] {
        me.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            kind,
            None,
        )?;
    }
    Ok(me)
}

fn codecs_of(params: &[RTCRtpCodecParameters]) -> Vec<Codec> {
    params
        .iter()
        .map(|c| Codec {
            payload_type: c.payload_type,
            mime: c.rtp_codec.mime_type.clone(),
            clock_rate: c.rtp_codec.clock_rate,
            channels: c.rtp_codec.channels,
            fmtp: c.rtp_codec.sdp_fmtp_line.clone(),
        })
        .collect()
}

fn extensions_of(params: &[RTCRtpHeaderExtensionParameters]) -> Vec<HeaderExt> {
    params
        .iter()
        .filter_map(|e| {
            Some(HeaderExt {
                id: u8::try_from(e.id).ok()?,
                uri: e.uri.clone(),
            })
        })
        .collect()
}

/// Which side of which session a connection is.
#[derive(Clone, Copy)]
enum Role<'a> {
    /// Answers a WHIP offer (ICE-lite, DTLS server) with these ICE credentials.
    Publisher((&'a str, &'a str)),
    /// Answers a WHEP offer, likewise.
    Viewer((&'a str, &'a str)),
    /// Offers to play a room from another node, from this local address (`upstream`).
    Upstream(SocketAddr),
}

fn kind_of(kind: RtpCodecKind) -> Option<MediaKind> {
    match kind {
        RtpCodecKind::Audio => Some(MediaKind::Audio),
        RtpCodecKind::Video => Some(MediaKind::Video),
        _ => None,
    }
}

impl Peer {
    /// Builds a connection for a publisher's (sendonly) offer and returns it with its answer.
    pub fn publisher(
        ctx: &TransportContext,
        offer: &str,
        ice: (&str, &str),
        now: Instant,
    ) -> Result<(Peer, String), TransportError> {
        let offer = super::rids::limit_simulcast(offer)?;
        let mut peer = Self::build(ctx, Role::Publisher(ice), now)?;
        peer.pc
            .set_remote_description(now, RTCSessionDescription::offer(offer.into_owned())?)?;
        let answer = peer.answer(ctx, now)?;
        Ok((peer, answer))
    }

    /// Builds a connection for a viewer's (recvonly) offer: one sending slot per offered
    /// audio and video m-line. Returns it with its answer.
    pub fn viewer(
        ctx: &TransportContext,
        offer: &str,
        ice: (&str, &str),
        kinds: &[MediaKind],
        now: Instant,
    ) -> Result<(Peer, String), TransportError> {
        let mut peer = Self::build(ctx, Role::Viewer(ice), now)?;
        peer.pc
            .set_remote_description(now, RTCSessionDescription::offer(offer.to_owned())?)?;
        for (i, kind) in kinds.iter().enumerate() {
            let ssrc = loop {
                let s: u32 = rand::random();
                if s != 0 {
                    break s;
                }
            };
            let rtc_kind = match kind {
                MediaKind::Audio => RtpCodecKind::Audio,
                MediaKind::Video => RtpCodecKind::Video,
            };
            let track = MediaStreamTrack::new(
                "parley".to_owned(),
                format!("slot{i}"),
                format!("slot{i}"),
                rtc_kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    active: true,
                    ..Default::default()
                }],
            );
            let sender = peer.pc.add_track(track)?;
            peer.slots.push(OutboundSlot {
                kind: *kind,
                mid: String::new(),
                ssrc,
                codecs: Vec::new(),
                extensions: Vec::new(),
                sender,
                stamps: (None, None),
            });
        }
        let answer = peer.answer(ctx, now)?;
        // The negotiated parameters of each slot are known once the answer is set.
        let transceivers: Vec<_> = peer.pc.get_transceivers().collect();
        for id in transceivers {
            let Some(t) = peer.pc.rtp_transceiver(id) else {
                continue;
            };
            let (Some(sender), mid) = (t.sender(), t.mid().clone()) else {
                continue;
            };
            let Some(slot) = peer.slots.iter_mut().find(|s| s.sender == sender) else {
                continue;
            };
            slot.mid = mid.unwrap_or_default();
            if let Some(mut s) = peer.pc.rtp_sender(sender) {
                let params = &s.get_parameters().rtp_parameters;
                slot.codecs = codecs_of(&params.codecs);
                slot.extensions = extensions_of(&params.header_extensions);
                let id = |uri: &str| slot.extensions.iter().find(|e| e.uri == uri).map(|e| e.id);
                slot.stamps = (id(TRANSPORT_CC_URI), id(ABS_SEND_TIME_URI));
            }
        }
        Ok((peer, answer))
    }

    fn build(ctx: &TransportContext, role: Role, now: Instant) -> Result<Peer, TransportError> {
        let provider = rtc::crypto::default_provider()
            .map_err(|e| TransportError::Certificate(e.to_string()))?;
        let (tap, keys) = KeyTap::new(provider);
        let viewer = matches!(role, Role::Viewer(_));
        let mut settings = SettingEngineBuilder::new()
            .with_crypto_provider(tap.clone())
            // AES-128-GCM first: Parley seals that profile itself. Clients list AES-256-GCM
            // first and the DTLS server follows the client's order, so it is not offered.
            .with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ])
            // As wide as libwebrtc's: a publisher's retransmission may come a thousand
            // packets (probe padding, simulcast bursts) after the packet it repairs.
            .with_srtp_replay_protection_window(1024)
            .with_ice_timeouts(
                Some(Duration::from_secs(15).min(ctx.consent_timeout)),
                Some(ctx.consent_timeout),
                Some(Duration::from_secs(2)),
            );
        settings = match role {
            Role::Publisher(ice) | Role::Viewer(ice) => settings
                .with_lite(true)
                .with_answering_dtls_role(RTCDtlsRole::Server)
                .with_ice_credentials(ice.0.to_owned(), ice.1.to_owned()),
            // The offering side of a node-to-node session: full ICE, controlling, DTLS
            // client; checks paced as browsers pace them.
            Role::Upstream(_) => settings
                .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                .with_ice_connection_attempts(Some(Duration::from_millis(50)), None),
        };
        let settings = settings.build();
        let mut me = media_engine(viewer)?;
        let registry = interceptors(&mut me)?.with(Slot::Custom(14_000), KeyframeTap::default());
        let config = RTCConfigurationBuilder::new()
            .with_certificates(vec![ctx.certificate.clone()])
            .build();
        let pc = RTCPeerConnectionBuilder::new()
            .with_configuration(config)
            .with_setting_engine(settings)
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(now)?;
        let (local_addr, tcp_addr) = match role {
            Role::Upstream(addr) => (addr, None),
            _ => (ctx.candidate_addr(), ctx.tcp_candidate_addr()),
        };
        Ok(Peer {
            pc,
            local_addr,
            tcp_addr,
            inbound: Vec::new(),
            inbound_by_track_id: HashMap::new(),
            slots: Vec::new(),
            events: VecDeque::new(),
            state: PeerState::Connecting,
            unknown_rtp: 0,
            sent: Vec::new(),
            figures: RtcpFigures::default(),
            tap,
            keys,
            sealer: None,
            opener: None,
            media_addr: None,
            next_report: None,
            history: SendHistory::new(now),
            deliveries: Vec::new(),
            path: None,
            uplink: (!viewer).then(Uplink::default),
            rtp_opener: None,
            layer_ssrcs: Vec::new(),
            scratch: Vec::new(),
            unauthentic: 0,
            merge_video: false,
            video_rids: Vec::new(),
        })
    }

    fn answer(&mut self, ctx: &TransportContext, now: Instant) -> Result<String, TransportError> {
        for ip in &ctx.advertised {
            let addr = SocketAddr::new(*ip, ctx.advertised_port);
            self.add_host_candidate(addr, rtc::ice::tcp_type::TcpType::Unspecified)?;
        }
        // ICE over TCP, passive (clients connect): ranked below UDP by its type preference,
        // so a client keeps UDP when it works.
        if let Some(port) = ctx.tcp_port {
            for ip in &ctx.advertised {
                let addr = SocketAddr::new(*ip, port);
                self.add_host_candidate(addr, rtc::ice::tcp_type::TcpType::Passive)?;
            }
        }
        self.pc
            .add_local_candidate(RTCIceCandidateInit::default())?;
        let answer = self.pc.create_answer(None)?;
        self.pc.set_local_description(now, answer)?;
        let local = self
            .pc
            .local_description()
            .ok_or(rtc::shared::error::Error::ErrPeerConnLocalDescriptionNil)?;
        Ok(sdp::spread_candidates(&local.sdp))
    }

    /// Adds a host candidate at `addr`: UDP, or TCP of `tcp_type` (anything but
    /// `Unspecified`).
    fn add_host_candidate(
        &mut self,
        addr: SocketAddr,
        tcp_type: rtc::ice::tcp_type::TcpType,
    ) -> Result<(), TransportError> {
        let network = match tcp_type {
            rtc::ice::tcp_type::TcpType::Unspecified => "udp",
            _ => "tcp",
        };
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: network.to_owned(),
                address: addr.ip().to_string(),
                port: addr.port(),
                component: 1,
                ..Default::default()
            },
            tcp_type,
        }
        .new_candidate_host()?;
        self.pc
            .add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
        Ok(())
    }

    /// The publisher's tracks seen so far.
    pub fn inbound(&self) -> &[InboundTrack] {
        &self.inbound
    }

    /// The viewer's sending slots.
    pub fn slots(&self) -> &[OutboundSlot] {
        &self.slots
    }

    /// Current connection state.
    pub fn state(&self) -> PeerState {
        self.state
    }

    /// Feeds one datagram from `from` to the connection. `data` may be changed in place.
    /// Returns whether the stack took it, so has output, events or timers to collect; when
    /// not, Parley read it itself and only [`Peer::poll_own_event`] has news.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) -> Fed {
        self.handle_input(now, from, data, TransportProtocol::UDP)
    }

    /// Feeds one RFC 4571 frame from the ICE-TCP connection of `from`, as
    /// [`Peer::handle_datagram`] feeds a datagram.
    pub fn handle_tcp_frame(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) -> Fed {
        self.handle_input(now, from, data, TransportProtocol::TCP)
    }

    fn handle_input(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &mut [u8],
        protocol: TransportProtocol,
    ) -> Fed {
        // A viewer's SRTCP, opened here rather than through the stack's pipeline (see
        // `rtcp_opener`); what the opener does not take goes to the stack unchanged.
        if let Some(n) = self.opener.as_mut().and_then(|o| o.open(data)) {
            self.on_plain_rtcp(from, &data[..n]);
            return Fed::Parley;
        }
        // A publisher's RTP: opened by Parley where it can. Where it cannot, the header
        // (SRTP leaves it in the clear) is reported on once the stack took the datagram.
        let header = match self.uplink.is_some().then(|| self.open_rtp(now, data)) {
            Some(Opening::Done) => return Fed::Parley,
            Some(Opening::Unopened) => rtp_header(data),
            Some(Opening::Checked) | None => None,
        };
        let msg = TaggedBytesMut {
            now,
            transport: Tuple {
                local_addr: match protocol {
                    TransportProtocol::TCP => self.tcp_addr.unwrap_or(self.local_addr),
                    _ => self.local_addr,
                },
                peer_addr: from,
                ecn: None,
                transport_protocol: protocol,
            },
            message: BytesMut::from(&data[..]),
        };
        match self.pc.handle_read(msg) {
            Ok(()) => {
                if let (Some(uplink), Some(header)) = (self.uplink.as_mut(), header) {
                    let packet = rtc::rtp::Packet {
                        header,
                        payload: bytes::Bytes::new(),
                    };
                    uplink.received(now, packet);
                }
            }
            Err(e) => tracing::debug!("datagram from {from} rejected: {e}"),
        }
        Fed::Stack
    }

    /// A publisher's SRTP RTP through Parley's own receive path: a packet of a known layer
    /// is opened in place, reported on and becomes an event, without the stack; any other
    /// (a retransmission, padding, a stream not yet announced) is authenticated on a copy and
    /// reported on, and the stack takes the original.
    fn open_rtp(&mut self, now: Instant, data: &mut [u8]) -> Opening {
        let (Some(opener), Some(uplink)) = (self.rtp_opener.as_mut(), self.uplink.as_mut()) else {
            return Opening::Unopened;
        };
        let Some(ssrc) = rtp_header_ssrc(data) else {
            return Opening::Unopened;
        };
        let known = self.layer_ssrcs.iter().find(|(s, ..)| *s == ssrc);
        if let Some(&(_, track, layer)) = known {
            match opener.open(data) {
                Opened::Plain(len) => {
                    match rtc::rtp::Packet::unmarshal(&mut &data[..len]) {
                        Ok(packet) => {
                            if let Some(packet) = uplink.received(now, packet) {
                                self.events.push_back(PeerEvent::Rtp {
                                    track,
                                    layer,
                                    packet,
                                    received: now,
                                });
                            }
                        }
                        Err(e) => tracing::debug!("publisher RTP not parsed: {e}"),
                    }
                    return Opening::Done;
                }
                Opened::Rejected => {
                    self.unauthentic += 1;
                    return Opening::Done;
                }
                Opened::NotMine => return Opening::Unopened,
            }
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(data);
        match opener.open(&mut self.scratch) {
            Opened::Plain(len) => {
                if let Ok(header) = rtc::rtp::Header::unmarshal(&mut &self.scratch[..len]) {
                    let payload = bytes::Bytes::new();
                    uplink.received(now, rtc::rtp::Packet { header, payload });
                }
                Opening::Checked
            }
            Opened::Rejected => {
                self.unauthentic += 1;
                Opening::Done
            }
            Opened::NotMine => Opening::Unopened,
        }
    }

    /// A viewer's RTCP compound, opened: TWCC feedback is read straight from its bytes (the
    /// most frequent packet by far); anything else goes through the stack's parser.
    fn on_plain_rtcp(&mut self, from: SocketAddr, compound: &[u8]) {
        let mut rest = compound;
        let mut others = false;
        while let [_, _, hi, lo, ..] = *rest {
            let len = 4 * (usize::from(u16::from_be_bytes([hi, lo])) + 1);
            let Some(packet) = rest.get(..len) else {
                tracing::debug!("RTCP from {from} cut short");
                return;
            };
            if is_feedback(packet) {
                self.read_feedback(packet);
            } else {
                others = true;
            }
            rest = &rest[len..];
        }
        if !others {
            return;
        }
        match rtc::rtcp::packet::unmarshal(&mut &compound[..]) {
            Ok(mut packets) => {
                packets.retain(|p| p.as_any().downcast_ref::<TransportLayerCc>().is_none());
                self.on_rtcp(&packets);
            }
            Err(e) => tracing::debug!("RTCP from {from} not parsed: {e}"),
        }
    }

    /// Reads one TWCC feedback packet into the deliveries the engine takes next.
    fn read_feedback(&mut self, packet: &[u8]) {
        let pending = !self.deliveries.is_empty();
        match self.history.read_feedback(packet, &mut self.deliveries) {
            Ok(n) if n > 0 && !pending => {
                self.events.push_back(PeerEvent::Downlink(Feedback::Twcc))
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("TWCC feedback not read: {e}"),
        }
    }

    /// The packets TWCC feedback reported on since [`Peer::clear_deliveries`], in send
    /// order within each feedback.
    pub fn deliveries(&self) -> &[Delivery] {
        &self.deliveries
    }

    /// Forgets the deliveries read so far (the next feedback raises a new event).
    pub fn clear_deliveries(&mut self) {
        self.deliveries.clear();
    }

    /// Takes the next datagram to send, and whether it goes on an ICE-TCP connection.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut, bool)> {
        self.pc.poll_write().map(|m| {
            let tcp = m.transport.transport_protocol == TransportProtocol::TCP;
            (m.transport.peer_addr, m.message, tcp)
        })
    }

    /// Takes the next event Parley raised itself (from what it read without the stack).
    pub fn poll_own_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    /// Takes the next event: state changes, opened tracks, RTP, keyframe requests.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        while let Some(event) = self.pc.poll_event() {
            self.on_stack_event(event);
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
        }
        while let Some(TaggedRTCMessage { now, message }) = self.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(track_id, packet) => {
                    let found = self.inbound_by_track_id.get(&track_id).and_then(|&track| {
                        let layers = &self.inbound.get(track)?.layers;
                        let layer = layers.iter().position(|l| l.ssrc == packet.header.ssrc)?;
                        Some((track, layer))
                    });
                    if let Some((track, layer)) = found {
                        return Some(PeerEvent::Rtp {
                            track,
                            layer,
                            packet,
                            received: now,
                        });
                    }
                    self.unknown_rtp += 1;
                    tracing::trace!("RTP for unknown track {track_id}");
                }
                RTCMessage::RtcpPacket(_, packets) => {
                    self.on_rtcp(&packets);
                    if let Some(e) = self.events.pop_front() {
                        return Some(e);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Whether the DTLS handshake completed (and SRTP keys exist).
    fn dtls_connected(&mut self) -> bool {
        use rtc::peer_connection::transport::RTCDtlsTransportState;
        use rtc::statistics::StatsSelector;
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None);
        report
            .transport()
            .is_some_and(|t| t.dtls_state == RTCDtlsTransportState::Connected)
    }

    /// Inbound RTCP the tap let through: keyframe requests become events, reports and NACKs
    /// become figures.
    fn on_rtcp(&mut self, packets: &[Box<dyn rtc::rtcp::Packet>]) {
        for p in packets {
            let any = p.as_any();
            if let Some(sr) = any.downcast_ref::<SenderReport>() {
                let layer = self
                    .inbound
                    .iter_mut()
                    .flat_map(|t| t.layers.iter_mut())
                    .find(|l| l.ssrc == sr.ssrc);
                if let Some(layer) = layer {
                    layer.sender_report = Some((sr.ntp_time, sr.rtp_time));
                }
                if let Some(uplink) = self.uplink.as_mut() {
                    uplink.rtcp(Instant::now(), vec![Box::new(sr.clone())]);
                }
            }
            let asked = if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                Some(pli.media_ssrc)
            } else {
                any.downcast_ref::<FullIntraRequest>()
                    .and_then(|fir| fir.fir.first().map(|e| e.ssrc))
            };
            if let Some(slot) =
                asked.and_then(|ssrc| self.slots.iter().position(|s| s.ssrc == ssrc))
            {
                self.events.push_back(PeerEvent::KeyframeRequest { slot });
            }
            if let Some(cc) = any.downcast_ref::<TransportLayerCc>() {
                // From the stack's path (a connection Parley does not open SRTCP for): read
                // as the opened path reads it.
                match cc.marshal() {
                    Ok(raw) => self.read_feedback(&raw),
                    Err(e) => tracing::debug!("TWCC feedback not re-read: {e}"),
                }
            }
            if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                self.events
                    .push_back(PeerEvent::Downlink(Feedback::Remb(f64::from(remb.bitrate))));
            }
            if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                let slot = self.slots.iter().position(|s| s.ssrc == nack.media_ssrc);
                if let (Some(slot), Some(_)) = (slot, self.sealer.as_ref()) {
                    let seqs = nack.nacks.iter().flat_map(|p| p.packet_list()).collect();
                    self.events.push_back(PeerEvent::Nack { slot, seqs });
                }
            }
        }
        if let Some(loss) = self.video_loss(packets) {
            self.events
                .push_back(PeerEvent::Downlink(Feedback::Loss(loss)));
        }
        let slots = &self.slots;
        let last_sent = &self.sent;
        let lookup = |ssrc: u32| {
            let i = slots.iter().position(|s| s.ssrc == ssrc)?;
            let clock = slots[i]
                .codecs
                .first()
                .map(|c| c.clock_rate)
                .unwrap_or(90_000);
            Some((clock, last_sent.get(i).and_then(|s| s.last_seq)))
        };
        self.figures
            .observe(packets, lookup, std::time::SystemTime::now());
    }

    /// The mean fraction lost over the reception reports about this connection's video
    /// slots in one compound, if it has any.
    fn video_loss(&self, packets: &[Box<dyn rtc::rtcp::Packet>]) -> Option<f64> {
        let (mut sum, mut n) = (0.0, 0u32);
        for p in packets {
            let any = p.as_any();
            let reports = if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                &rr.reports
            } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
                &sr.reports
            } else {
                continue;
            };
            for r in reports {
                let video = self
                    .slots
                    .iter()
                    .any(|s| s.ssrc == r.ssrc && s.kind == MediaKind::Video);
                if video {
                    sum += f64::from(r.fraction_lost) / 256.0;
                    n += 1;
                }
            }
        }
        (n > 0).then(|| sum / f64::from(n))
    }

    fn on_stack_event(&mut self, event: RTCPeerConnectionEvent) {
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let mapped = match state {
                    // The stack also reports "connected" when ICE is up and DTLS was closed
                    // (a bare close_notify before any handshake): only a completed DTLS
                    // handshake counts.
                    RTCPeerConnectionState::Connected if !self.dtls_connected() => {
                        PeerState::Failed
                    }
                    RTCPeerConnectionState::Connected => {
                        self.start_sealing();
                        self.start_opening();
                        PeerState::Connected
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        PeerState::Failed
                    }
                    _ => PeerState::Connecting,
                };
                if mapped != self.state {
                    self.state = mapped;
                    self.events.push_back(PeerEvent::State(mapped));
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                let upstream_rid = self.video_rids.iter().find(|(r, _)| *r == init.receiver_id);
                let layer = InboundLayer {
                    rid: match upstream_rid {
                        Some((_, rid)) => rid.clone(),
                        None => init.rid.clone().unwrap_or_default(),
                    },
                    ssrc: init.ssrc,
                    sender_report: None,
                };
                if let Some(&track) = self.inbound_by_track_id.get(&init.track_id) {
                    self.add_layer(track, layer);
                    return;
                }
                let kind = self
                    .pc
                    .rtp_receiver(init.receiver_id)
                    .and_then(|r| kind_of(r.track().kind()));
                let Some(kind) = kind else {
                    return;
                };
                if let Some(track) = self.merged_video(kind) {
                    // Another video section of an upstream: another layer of its video.
                    self.inbound_by_track_id.insert(init.track_id, track);
                    self.add_layer(track, layer);
                    return;
                }
                let Some(mut receiver) = self.pc.rtp_receiver(init.receiver_id) else {
                    return;
                };
                let params = &receiver.get_parameters().rtp_parameters;
                let feedback = params
                    .codecs
                    .first()
                    .map(|c| {
                        let fb = &c.rtp_codec.rtcp_feedback;
                        fb.iter().map(|f| (f.typ.clone(), f.parameter.clone()))
                    })
                    .into_iter()
                    .flatten()
                    .collect();
                let track = InboundTrack {
                    kind,
                    layers: vec![layer],
                    codecs: codecs_of(&params.codecs),
                    extensions: extensions_of(&params.header_extensions),
                    receiver: init.receiver_id,
                    feedback,
                };
                self.inbound.push(track);
                let index = self.inbound.len() - 1;
                self.bind_uplink(index, init.ssrc);
                self.inbound_by_track_id.insert(init.track_id, index);
                self.events.push_back(PeerEvent::TrackOpened(index));
            }
            _ => {}
        }
    }

    /// The video track further video sections of an upstream add layers to, once it has one.
    fn merged_video(&self, kind: MediaKind) -> Option<usize> {
        if !self.merge_video || kind != MediaKind::Video {
            return None;
        }
        self.inbound.iter().position(|t| t.kind == MediaKind::Video)
    }

    /// A further layer of an open track: a new simulcast layer (at most [`MAX_LAYERS`]), or a
    /// layer that came back with a new SSRC.
    fn add_layer(&mut self, track: usize, layer: InboundLayer) {
        let Some(t) = self.inbound.get_mut(track) else {
            return;
        };
        if let Some(known) = t
            .layers
            .iter_mut()
            .find(|l| !l.rid.is_empty() && l.rid == layer.rid)
        {
            let ssrc = layer.ssrc;
            *known = layer;
            self.bind_uplink(track, ssrc);
            return;
        }
        if t.layers.iter().any(|l| l.ssrc == layer.ssrc) || t.layers.len() >= MAX_LAYERS {
            return;
        }
        let ssrc = layer.ssrc;
        t.layers.push(layer);
        let layer = t.layers.len() - 1;
        self.bind_uplink(track, ssrc);
        self.events
            .push_back(PeerEvent::LayerOpened { track, layer });
    }

    /// Starts reporting on a publisher's stream.
    fn bind_uplink(&mut self, track: usize, ssrc: u32) {
        let (Some(uplink), Some(t)) = (self.uplink.as_mut(), self.inbound.get(track)) else {
            return;
        };
        self.layer_ssrcs = self
            .inbound
            .iter()
            .enumerate()
            .flat_map(|(i, t)| {
                t.layers
                    .iter()
                    .enumerate()
                    .map(move |(l, x)| (x.ssrc, i, l))
            })
            .collect();
        if let Some(codec) = t.codecs.first() {
            uplink.bind(ssrc, codec, &t.feedback, &t.extensions);
        }
    }

    /// Sends the publisher the feedback its uplink made.
    fn flush_uplink(&mut self, now: Instant) {
        let Some(uplink) = self.uplink.as_mut() else {
            return;
        };
        let receiver = self.inbound.first().map(|t| t.receiver);
        while let Some(packets) = uplink.poll_rtcp() {
            let Some(mut r) = receiver.and_then(|id| self.pc.rtp_receiver(id)) else {
                continue;
            };
            if let Err(e) = r.write_rtcp(now, packets) {
                tracing::debug!("uplink feedback not sent: {e}");
            }
        }
    }

    /// Sends one RTP packet on a viewer's slot. The packet must already carry the slot's SSRC,
    /// a payload type and header extension ids negotiated on this leg.
    pub fn write_rtp(&mut self, now: Instant, slot: usize, mut packet: rtc::rtp::Packet) -> bool {
        let Some((sender, (twcc, abs))) = self.slots.get(slot).map(|s| (s.sender, s.stamps)) else {
            return false;
        };
        // Stamped as Parley's own send path stamps (`seal_rtp`), so that this viewer's
        // congestion feedback (ICE-TCP viewers') speaks of packets the history knows.
        if let Some(id) = twcc {
            use rtc::shared::marshal::MarshalSize;
            let len = packet.header.marshal_size() + packet.payload.len();
            let seq = self.history.record(now, len);
            let _ = packet
                .header
                .set_extension(id, bytes::Bytes::copy_from_slice(&seq.to_be_bytes()));
        }
        if let Some(id) = abs {
            let at = self.history.abs_send_time(now);
            let _ = packet
                .header
                .set_extension(id, bytes::Bytes::copy_from_slice(&at));
        }
        let (seq, ts, len) = (
            packet.header.sequence_number,
            packet.header.timestamp,
            packet.payload.len(),
        );
        match self.pc.rtp_sender(sender) {
            Some(mut s) => match s.write_rtp(now, packet) {
                Ok(()) => {
                    self.stream(slot).on_sent(seq, ts, len, now);
                    true
                }
                Err(e) => {
                    tracing::debug!("slot {slot}: RTP not sent: {e}");
                    false
                }
            },
            None => false,
        }
    }

    fn stream(&mut self, slot: usize) -> &mut SentStream {
        if self.sent.len() <= slot {
            self.sent.resize(slot + 1, SentStream::default());
        }
        &mut self.sent[slot]
    }

    /// Turns on Parley's own send path when DTLS negotiated AEAD_AES_128_GCM and the
    /// connection's master key was seen; otherwise slots keep using the stack's `write_rtp`.
    fn start_sealing(&mut self) {
        use rtc::statistics::StatsSelector;
        if self.sealer.is_some() || self.slots.is_empty() {
            return;
        }
        // Over ICE-TCP every datagram is framed on the connection: the stack sends the media
        // (it is the fallback path, and rare).
        let sender = self.slots.first().map(|s| s.sender);
        if Path::of(&mut self.pc, sender).is_some_and(|p| p.transport == "tcp") {
            return;
        }
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None);
        let profile = report
            .transport()
            .and_then(|t| SealProfile::from_stats_name(&t.srtp_cipher));
        let (Some(profile), Some(keys)) = (profile, self.keys.local()) else {
            tracing::debug!("SRTP profile without Parley's send path; using the stack's");
            return;
        };
        match RtpSealer::new(self.tap.crypto(), profile, keys, self.slots.len()) {
            Ok(sealer) => self.sealer = Some(sealer),
            Err(e) => tracing::warn!("cannot start the SRTP send path: {e}"),
        }
        if let (SealProfile::AeadAes128Gcm, Some(remote)) = (profile, self.keys.remote()) {
            match RtcpOpener::new(self.tap.crypto(), remote) {
                Ok(opener) => self.opener = Some(opener),
                Err(e) => tracing::warn!("cannot start the SRTCP receive path: {e}"),
            }
        }
        self.refresh_media_addr();
    }

    /// A publisher's own receive path, once DTLS negotiated the profile Parley opens.
    fn start_opening(&mut self) {
        use rtc::statistics::StatsSelector;
        if self.uplink.is_none() || self.rtp_opener.is_some() {
            return;
        }
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None);
        let profile = report
            .transport()
            .and_then(|t| SealProfile::from_stats_name(&t.srtp_cipher));
        let (Some(SealProfile::AeadAes128Gcm), Some(remote)) = (profile, self.keys.remote()) else {
            tracing::debug!("SRTP profile without Parley's receive path; using the stack's");
            return;
        };
        match RtpOpener::new(self.tap.crypto(), remote) {
            Ok(opener) => self.rtp_opener = Some(opener),
            Err(e) => tracing::warn!("cannot start the SRTP receive path: {e}"),
        }
    }

    fn refresh_media_addr(&mut self) {
        let Some(sender) = self.slots.first().map(|s| s.sender) else {
            return;
        };
        let pair = self
            .pc
            .rtp_sender(sender)
            .and_then(|s| s.transport()?.ice_transport().get_selected_candidate_pair());
        if let Some(pair) = pair {
            let remote = pair.remote();
            if let Ok(ip) = remote.address.parse() {
                self.media_addr = Some(SocketAddr::new(ip, remote.port));
            }
        }
    }

    /// Where sealed media for this connection goes, when Parley's own send path is on.
    pub fn sealed_media_addr(&self) -> Option<SocketAddr> {
        self.sealer.as_ref().and(self.media_addr)
    }

    /// Stops stamping transport-wide sequence numbers and abs-send-time on what Parley seals
    /// (no one estimates this viewer's downlink).
    pub fn stop_stamping(&mut self) {
        for slot in &mut self.slots {
            slot.stamps = (None, None);
        }
    }

    /// The leg's transport-wide-cc and abs-send-time extension ids on `slot` that Parley
    /// stamps as it seals.
    pub fn stamps(&self, slot: usize) -> (Option<u8>, Option<u8>) {
        self.slots.get(slot).map_or((None, None), |s| s.stamps)
    }

    /// Seals an RTP packet of `slot` written in `buf` (see [`RtpSealer::seal`]) and counts it
    /// for sender reports. Returns the SRTP length.
    pub fn seal_rtp(
        &mut self,
        now: Instant,
        slot: usize,
        buf: &mut [u8],
        header_len: usize,
        len: usize,
    ) -> Option<usize> {
        let (twcc, abs) = self.slots.get(slot)?.stamps;
        if let Some(id) = twcc {
            let seq = self.history.record(now, len);
            write_extension(&mut buf[..len], header_len, id, &seq.to_be_bytes());
        }
        if let Some(id) = abs {
            let at = self.history.abs_send_time(now);
            write_extension(&mut buf[..len], header_len, id, &at);
        }
        let n = self.sealer.as_mut()?.seal(slot, buf, header_len, len)?;
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ts = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        self.stream(slot).on_sent(seq, ts, len - header_len, now);
        Some(n)
    }

    /// Periodic upkeep of the own send path: follows the selected ICE pair and sends sender
    /// reports about once a second for the slots that sent media. The interval is
    /// randomized (0.5–1.5 ×, as RFC 3550 §6.3.1 asks), so sessions that started together do
    /// not all report on the same tick. True when reports were queued to send.
    pub fn on_tick(&mut self, now: Instant) -> bool {
        if self.sealer.is_none() {
            return false;
        }
        self.refresh_media_addr();
        if self.next_report.is_some_and(|at| now < at) {
            return false;
        }
        self.next_report = Some(now + REPORT_EVERY.mul_f64(0.5 + rand::random::<f64>()));
        let mut queued = false;
        let wall = SystemTime::now();
        for (slot, sent) in self.slots.iter().zip(&self.sent) {
            let clock = slot.codecs.first().map(|c| c.clock_rate).unwrap_or(90_000);
            let Some(sr) = sent.report(slot.ssrc, clock, now, wall) else {
                continue;
            };
            if let Some(mut s) = self.pc.rtp_sender(slot.sender) {
                match s.write_rtcp(now, vec![Box::new(sr)]) {
                    Ok(()) => queued = true,
                    Err(e) => tracing::debug!("sender report not sent: {e}"),
                }
            }
        }
        queued
    }

    /// Asks a publisher for a keyframe on one layer of one of its tracks (PLI).
    pub fn request_keyframe(&mut self, now: Instant, track: usize, layer: usize) {
        let Some(t) = self.inbound.get(track) else {
            return;
        };
        let Some(media_ssrc) = t.layers.get(layer).map(|l| l.ssrc) else {
            return;
        };
        let receiver = t.receiver;
        if let Some(mut r) = self.pc.rtp_receiver(receiver) {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            };
            if let Err(e) = r.write_rtcp(now, vec![Box::new(pli)]) {
                tracing::debug!("PLI not sent: {e}");
            }
        }
    }

    /// Adds a candidate the client trickled (`candidate:...` without `a=`).
    pub fn add_remote_candidate(
        &mut self,
        candidate: &str,
        mid: Option<&str>,
    ) -> Result<(), TransportError> {
        self.pc.add_remote_candidate(RTCIceCandidateInit {
            candidate: candidate.to_owned(),
            sdp_mid: mid.map(str::to_owned),
            ..Default::default()
        })?;
        Ok(())
    }

    /// ICE restart: applies the client's new credentials by renegotiating its last offer with
    /// them, and returns the server's (ufrag, pwd) for the answer fragment.
    pub fn restart_ice(
        &mut self,
        now: Instant,
        ufrag: &str,
        pwd: &str,
    ) -> Result<(String, String), TransportError> {
        let offer = self
            .pc
            .remote_description()
            .map(|d| d.sdp.clone())
            .ok_or(rtc::shared::error::Error::ErrNoRemoteDescription)?;
        let offer: String = offer
            .lines()
            .map(|l| {
                if l.starts_with("a=ice-ufrag:") {
                    format!("a=ice-ufrag:{ufrag}\r\n")
                } else if l.starts_with("a=ice-pwd:") {
                    format!("a=ice-pwd:{pwd}\r\n")
                } else if l.starts_with("a=candidate:") || l.starts_with("a=end-of-candidates") {
                    String::new()
                } else {
                    format!("{}\r\n", l.trim_end_matches('\r'))
                }
            })
            .collect();
        self.pc
            .set_remote_description(now, RTCSessionDescription::offer(offer)?)?;
        let answer = self.pc.create_answer(None)?;
        self.pc.set_local_description(now, answer)?;
        let local = self
            .pc
            .local_description()
            .ok_or(rtc::shared::error::Error::ErrPeerConnLocalDescriptionNil)?;
        let find = |key: &str| {
            local
                .sdp
                .lines()
                .find_map(|l| {
                    l.trim_end_matches('\r')
                        .strip_prefix(key)
                        .map(str::to_owned)
                })
                .unwrap_or_default()
        };
        Ok((find("a=ice-ufrag:"), find("a=ice-pwd:")))
    }

    /// RTP packets that matched no track since the last call.
    pub fn take_unknown_rtp(&mut self) -> u64 {
        std::mem::take(&mut self.unknown_rtp)
    }

    /// Publisher SRTP packets that failed authentication or were replays, since the last
    /// call.
    pub fn take_unauthentic(&mut self) -> u64 {
        std::mem::take(&mut self.unauthentic)
    }

    /// How the connection reaches its client, once ICE selected a pair (read with the
    /// statistics: at connection and with the RTCP figures).
    pub fn path(&self) -> Option<Path> {
        self.path
    }

    /// Reads the selected ICE pair now.
    pub fn read_path(&mut self) {
        let sender = self.slots.first().map(|s| s.sender);
        self.path = Path::of(&mut self.pc, sender).or(self.path);
    }

    /// The RTCP figures gathered since the last call (NACKs, loss, jitter, RTT), plus the
    /// NACKs this connection sent (from its statistics; cumulative).
    pub fn take_rtcp_figures(&mut self, now: Instant) -> (RtcpFigures, u64) {
        use rtc::statistics::StatsSelector;
        self.read_path();
        let report = self.pc.get_stats(now, StatsSelector::None);
        let nack_sent = match &self.uplink {
            Some(uplink) => uplink.nacks_sent(),
            None => report
                .inbound_rtp_streams()
                .map(|s| u64::from(s.nack_count))
                .sum(),
        };
        (std::mem::take(&mut self.figures), nack_sent)
    }

    /// When the connection next needs [`Peer::handle_timeout`].
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let uplink = self.uplink.as_mut().and_then(Uplink::poll_timeout);
        match (self.pc.poll_timeout(), uplink) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the connection's timers up to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(e) = self.pc.handle_timeout(now) {
            tracing::debug!("timeout handling: {e}");
        }
        if let Some(uplink) = self.uplink.as_mut() {
            uplink.handle_timeout(now);
            self.flush_uplink(now);
        }
    }

    /// Closes the connection (a DTLS close_notify may follow in `poll_transmit`).
    pub fn close(&mut self) {
        if let Err(e) = self.pc.close() {
            tracing::debug!("close: {e}");
        }
        self.state = PeerState::Failed;
    }
}

/// The RTP header of a datagram that is SRTP RTP (RFC 7983: first byte 128–191, and not an
/// RTCP payload type), read without decrypting: SRTP leaves it in the clear.
fn rtp_header(data: &[u8]) -> Option<rtc::rtp::Header> {
    match data {
        [first, pt, ..] if (128..=191).contains(first) && !(192..=223).contains(pt) => {
            rtc::rtp::Header::unmarshal(&mut &data[..]).ok()
        }
        _ => None,
    }
}

/// The SSRC of a datagram that is SRTP RTP, read without decrypting.
fn rtp_header_ssrc(data: &[u8]) -> Option<u32> {
    match data {
        [first, pt, _, _, _, _, _, _, a, b, c, d, ..]
            if (128..=191).contains(first) && !(192..=223).contains(pt) =>
        {
            Some(u32::from_be_bytes([*a, *b, *c, *d]))
        }
        _ => None,
    }
}
