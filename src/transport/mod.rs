//! The only part of Parley that talks to the WebRTC stack (`rtc`, webrtc-rs's sans-IO core).
//!
//! It turns an SDP offer into a [`Peer`]: ICE-lite on the server's one shared UDP socket,
//! DTLS server role with one ECDSA certificate for the whole process, SRTP. Outside this module
//! the rest of Parley sees only media-level types: tracks, slots, codecs, RTP packets, and
//! datagrams to send. It never does I/O itself and never awaits.

mod keyframe_tap;
mod peer;
pub mod rids;
mod rtcp_figures;
mod rtcp_opener;
mod rtp_opener;
pub mod sdp;
pub mod sdpfrag;
mod sealer;
mod sent;
mod srtp_keys;
mod twcc;
mod uplink;

/// Also used by Parley's test peers, to see the keyframe requests Parley relays.
pub use keyframe_tap::KeyframeTap;
pub use peer::{
    Codec, Fed, Feedback, HeaderExt, InboundLayer, InboundTrack, OutboundSlot, Path, Peer,
    PeerEvent, PeerState, MAX_LAYERS,
};
pub use rtcp_figures::RtcpFigures;
pub use sealer::SEAL_OVERHEAD;
pub use twcc::Delivery;

use rtc::crypto::{self, SignatureScheme};
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// RTP packet type re-exported for the forwarding path.
pub use rtc::rtp::Packet as RtpPacket;

/// Errors from building or driving a peer connection.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The offer cannot be served; the text says why.
    #[error("{0}")]
    Offer(#[from] sdp::OfferError),
    /// The WebRTC stack refused the offer or an operation on it.
    #[error("{0}")]
    Stack(#[from] rtc::shared::error::Error),
    /// No certificate could be made at start-up.
    #[error("cannot create the DTLS certificate: {0}")]
    Certificate(String),
}

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// An audio track (Opus).
    Audio,
    /// A video track (VP8, VP9, H264, AV1).
    Video,
}

impl MediaKind {
    /// Lower-case name, as in SDP.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

/// What every peer connection of this server shares.
#[derive(Clone)]
pub struct TransportContext {
    certificate: RTCCertificate,
    /// The shared media socket's local address.
    pub local_addr: SocketAddr,
    /// Addresses put in host candidates.
    pub advertised: Vec<IpAddr>,
    /// Port put in host candidates.
    pub advertised_port: u16,
    /// How long without ICE consent before a connection fails.
    pub consent_timeout: Duration,
    /// The ICE-TCP port put in passive TCP host candidates, when Parley listens on one.
    pub tcp_port: Option<u16>,
}

impl TransportContext {
    /// The address every connection's ICE agent knows as its local candidate. The socket may
    /// be bound to a wildcard or sit behind a port mapping, so datagrams are presented to the
    /// agent as arriving here: the first advertised address with the advertised port.
    pub fn candidate_addr(&self) -> SocketAddr {
        let ip = self
            .advertised
            .first()
            .copied()
            .unwrap_or(self.local_addr.ip());
        SocketAddr::new(ip, self.advertised_port)
    }

    /// The same for ICE over TCP: the address a connection's agent knows as its local TCP
    /// candidate.
    pub fn tcp_candidate_addr(&self) -> Option<SocketAddr> {
        let udp = self.candidate_addr();
        self.tcp_port.map(|port| SocketAddr::new(udp.ip(), port))
    }

    /// Makes the server's ECDSA P-256 certificate and records where media is served.
    pub fn new(
        local_addr: SocketAddr,
        advertised: Vec<IpAddr>,
        advertised_port: Option<u16>,
        consent_timeout: Duration,
    ) -> Result<Self, TransportError> {
        let provider =
            crypto::default_provider().map_err(|e| TransportError::Certificate(e.to_string()))?;
        let params = CertificateParams::new(vec!["parley".to_owned()])
            .map_err(|e| TransportError::Certificate(e.to_string()))?;
        let certificate =
            RTCCertificate::generate(provider.crypto(), SignatureScheme::EcdsaP256Sha256, params)
                .map_err(|e| TransportError::Certificate(e.to_string()))?;
        Ok(Self {
            certificate,
            local_addr,
            advertised,
            advertised_port: advertised_port.unwrap_or(local_addr.port()),
            consent_timeout,
            tcp_port: None,
        })
    }
}
