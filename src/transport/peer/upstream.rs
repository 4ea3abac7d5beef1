//! The offering side of a node-to-node session: a node plays a room another node holds
//! over WHEP, as any viewer would, and its local viewers are fed from it (a cascade).
//!
//! The connection is a publisher as the rest of Parley sees it: its tracks are inbound
//! tracks, its packets go through the same receive path (Parley's SRTP opener, the uplink's
//! NACKs, TWCC and reports) and its keyframe requests go out as PLI. Only the roles differ:
//! it offers (one recvonly audio and one recvonly video section), runs full ICE as the
//! controlling agent from its own UDP socket, and is the DTLS client.

use super::{Peer, Role, MAX_LAYERS};
use crate::transport::{TransportContext, TransportError};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::net::SocketAddr;
use std::time::Instant;

impl Peer {
    /// Builds the connection for playing a room from another node, its host candidate at
    /// `local` (the address of the socket it is fed from), and returns it with its complete
    /// offer (candidates included: no trickle). `video` names the codec the room's video is
    /// in (`VP8`, `H264`...), when the other node said: only that codec is offered, so the
    /// track here says what it carries. One video section is offered per simulcast layer the
    /// other node has (`rids`, smallest first; at least one section): their streams become
    /// the layers of one video track here, named by those rids.
    pub fn upstream(
        ctx: &TransportContext,
        local: SocketAddr,
        video: Option<&str>,
        rids: &[String],
        now: Instant,
    ) -> Result<(Peer, String), TransportError> {
        let mut peer = Self::build(ctx, Role::Upstream(local), now)?;
        peer.merge_video = true;
        let sections = rids.len().clamp(1, MAX_LAYERS);
        let video_sections = std::iter::repeat_n(RtpCodecKind::Video, sections);
        for kind in std::iter::once(RtpCodecKind::Audio).chain(video_sections) {
            let id = peer.pc.add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )?;
            if kind != RtpCodecKind::Video {
                continue;
            }
            let receiver = peer.pc.rtp_transceiver(id).and_then(|t| t.receiver());
            if let (Some(receiver), Some(rid)) = (receiver, rids.get(peer.video_rids.len())) {
                peer.video_rids.push((receiver, rid.clone()));
            }
            let Some(name) = video else {
                continue;
            };
            let only: Vec<_> = super::video_codecs()
                .into_iter()
                .filter(|c| {
                    let mime = &c.rtp_codec.mime_type;
                    mime.rsplit('/')
                        .next()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
                .collect();
            if let (false, Some(mut t)) = (only.is_empty(), peer.pc.rtp_transceiver(id)) {
                t.set_codec_preferences(only)?;
            }
        }
        let offer = peer.pc.create_offer(None)?;
        peer.pc.set_local_description(now, offer)?;
        peer.add_host_candidate(local, rtc::ice::tcp_type::TcpType::Unspecified)?;
        peer.pc
            .add_local_candidate(RTCIceCandidateInit::default())?;
        let offer = peer
            .pc
            .local_description()
            .map(|d| d.sdp.clone())
            .ok_or(rtc::shared::error::Error::ErrPeerConnLocalDescriptionNil)?;
        Ok((peer, offer))
    }

    /// Applies the other node's answer to [`Peer::upstream`]'s offer: ICE starts.
    pub fn apply_answer(&mut self, now: Instant, answer: &str) -> Result<(), TransportError> {
        self.pc
            .set_remote_description(now, RTCSessionDescription::answer(answer.to_owned())?)?;
        Ok(())
    }
}
