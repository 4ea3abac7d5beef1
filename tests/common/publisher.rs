//! The WHIP publisher: offers one sendonly Opus and one sendonly video track in a single
//! codec, the way OBS does, and writes RTP packets whose payloads the test chooses.

use super::peer::Peer;
use super::signaling::{endpoint_url, post_offer, try_delete};
use super::{HarnessError, CONNECT_TIMEOUT};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{MediaEngine, RTCPeerConnectionState};

/// The publisher's payload types, as OBS (libdatachannel) numbers them.
const VIDEO_PT: u8 = 96;
const AUDIO_PT: u8 = 111;
const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    /// H264 packetization-mode=1 with `PublishOptions::h264_profile` as profile-level-id
    /// (OBS: `64001f`, High; browsers: `42e01f`, Constrained Baseline).
    H264,
}

#[derive(Clone, Debug)]
pub struct PublishOptions {
    pub video: VideoCodec,
    /// profile-level-id for `VideoCodec::H264` (six hex digits); ignored for VP8.
    pub h264_profile: &'static str,
    pub participant: Option<String>,
    /// Sent as `Authorization: Bearer {token}` on POST and DELETE.
    pub token: Option<String>,
    /// Reach the server over ICE-TCP only (its UDP candidates are ignored).
    pub tcp: bool,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            video: VideoCodec::Vp8,
            h264_profile: "64001f",
            participant: None,
            token: None,
            tcp: false,
        }
    }
}

impl PublishOptions {
    pub fn vp8() -> Self {
        PublishOptions::default()
    }

    /// H264 as OBS sends it with this profile-level-id, e.g. `"64001f"` or `"42e01f"`.
    pub fn h264(profile: &'static str) -> Self {
        PublishOptions {
            video: VideoCodec::H264,
            h264_profile: profile,
            ..PublishOptions::default()
        }
    }
}

/// One local track and the header fields the harness picks for it.
struct Outbound {
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
    seq: AtomicU16,
}

impl Outbound {
    async fn send(&self, payload: &[u8], marker: bool, timestamp: u32) -> Result<(), HarnessError> {
        self.send_with(payload, marker, timestamp, None).await
    }

    async fn send_with(
        &self,
        payload: &[u8],
        marker: bool,
        timestamp: u32,
        extension: Option<(u8, u8)>,
    ) -> Result<(), HarnessError> {
        let mut packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                marker,
                payload_type: self.payload_type,
                sequence_number: self.seq.fetch_add(1, Ordering::Relaxed),
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: bytes::Bytes::copy_from_slice(payload),
        };
        if let Some((id, value)) = extension {
            packet
                .header
                .set_extension(id, bytes::Bytes::copy_from_slice(&[value]))
                .map_err(|e| HarnessError::Negotiation(format!("audio level: {e}")))?;
        }
        // Only a queue hand-off: the driver logs (and drops) packets the sender rejects,
        // which is why the SSRC and payload type are checked at publish time.
        self.track
            .write_rtp(packet)
            .await
            .map_err(HarnessError::webrtc("write_rtp"))
    }
}

pub struct Publisher {
    /// Absolute session URL (the Location header resolved against the POST URL).
    pub location: String,
    pub etag: Option<String>,
    pub offer_sdp: String,
    pub answer_sdp: String,
    token: Option<String>,
    video_codec: VideoCodec,
    h264_profile: &'static str,
    video: Outbound,
    audio: Outbound,
    peer: Peer,
    /// Keyframe requests (PLI/FIR) received for the video track so far.
    keyframe_requests: watch::Receiver<u32>,
    pli_task: JoinHandle<()>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.pli_task.abort();
    }
}

/// Counts the keyframe requests that arrive for `track`.
fn count_keyframe_requests(
    track: Arc<TrackLocalStaticRTP>,
) -> (watch::Receiver<u32>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(0u32);
    let task = tokio::spawn(async move {
        while let Some(event) = track.poll().await {
            let TrackLocalEvent::OnRtcpPacket(packets) = event else {
                continue;
            };
            let asks = packets.iter().any(|p| {
                let any = p.as_any();
                any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
            });
            if asks {
                tx.send_modify(|n| *n += 1);
            }
        }
    });
    (rx, task)
}

/// WHIP-publish to `{base}/whip/{room}`: POST a gathered (non-trickle) offer, apply the
/// answer and wait until the peer connection is `Connected`.
pub async fn publish(
    base: &str,
    room: &str,
    opts: PublishOptions,
) -> Result<Publisher, HarnessError> {
    let video_codec = match opts.video {
        VideoCodec::Vp8 => codec(MIME_TYPE_VP8, 90000, 0, String::new()),
        VideoCodec::H264 => codec(
            MIME_TYPE_H264,
            90000,
            0,
            format!(
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={}",
                opts.h264_profile
            ),
        ),
    };
    let audio_codec = codec(
        MIME_TYPE_OPUS,
        48000,
        2,
        "minptime=10;useinbandfec=1".into(),
    );

    // Only the two codecs we send, so the offer carries exactly those (like OBS).
    let mut media_engine = MediaEngine::default();
    for (codec, payload_type, kind) in [
        (&audio_codec, AUDIO_PT, RtpCodecKind::Audio),
        (&video_codec, VIDEO_PT, RtpCodecKind::Video),
    ] {
        let rtp_codec = RTCRtpCodec {
            rtcp_feedback: if kind == RtpCodecKind::Video {
                [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
                    .into_iter()
                    .map(|(typ, parameter)| RTCPFeedback {
                        typ: typ.into(),
                        parameter: parameter.into(),
                    })
                    .collect()
            } else {
                vec![]
            },
            ..codec.clone()
        };
        media_engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec,
                    payload_type,
                },
                kind,
            )
            .map_err(HarnessError::webrtc("register_codec"))?;
    }
    // Browsers and OBS send the RFC 6464 audio level; the server picks speakers by it.
    media_engine
        .register_header_extension(
            rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionCapability {
                uri: AUDIO_LEVEL_URI.to_owned(),
            },
            RtpCodecKind::Audio,
            None,
        )
        .map_err(HarnessError::webrtc("register_header_extension"))?;
    let peer = Peer::with_tcp(media_engine, None, opts.tcp).await?;

    // OBS adds audio first, then video; both sendonly.
    let audio = add_sendonly(&peer, RtpCodecKind::Audio, audio_codec).await?;
    let video = add_sendonly(&peer, RtpCodecKind::Video, video_codec).await?;

    let offer_sdp = peer.gathered_offer().await?;
    let url = endpoint_url(base, "whip", room, opts.participant.as_deref())?;
    let client = reqwest::Client::new();
    let answer = post_offer(&client, url, opts.token.as_deref(), offer_sdp.clone()).await?;

    let (keyframe_requests, pli_task) = count_keyframe_requests(Arc::clone(&video.track));
    let publisher = Publisher {
        keyframe_requests,
        pli_task,
        location: answer.location,
        etag: answer.etag,
        offer_sdp,
        answer_sdp: answer.sdp,
        token: opts.token,
        video_codec: opts.video,
        h264_profile: opts.h264_profile,
        video,
        audio,
        peer,
    };
    // From here on the server holds a session: release it if we cannot finish.
    match publisher.finish_negotiation().await {
        Ok(()) => Ok(publisher),
        Err(e) => {
            let _ = try_delete(&publisher.location, publisher.token.as_deref()).await;
            Err(e)
        }
    }
}

fn codec(mime: &str, clock_rate: u32, channels: u16, fmtp: String) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: mime.to_owned(),
        clock_rate,
        channels,
        sdp_fmtp_line: fmtp,
        rtcp_feedback: vec![],
    }
}

fn random_u32() -> u32 {
    RandomState::new().build_hasher().finish() as u32
}

async fn add_sendonly(
    peer: &Peer,
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
) -> Result<Outbound, HarnessError> {
    // The SSRC is chosen here rather than left to webrtc-rs, so it is known without asking
    // the sender (the core would pick a random one when `ssrc` is `None`).
    let ssrc = random_u32();
    let label = format!("{kind}");
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "parley-test".to_owned(),
        format!("parley-test-{label}-{ssrc:08x}"),
        label,
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            active: true,
            codec,
            ..Default::default()
        }],
    )));
    peer.pc
        .add_transceiver_from_track(
            Arc::clone(&track) as Arc<dyn TrackLocal>,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                ..Default::default()
            }),
        )
        .await
        .map_err(HarnessError::webrtc("add_transceiver_from_track"))?;
    Ok(Outbound {
        track,
        ssrc,
        payload_type: if kind == RtpCodecKind::Video {
            VIDEO_PT
        } else {
            AUDIO_PT
        },
        seq: AtomicU16::new(random_u32() as u16),
    })
}

impl Publisher {
    async fn finish_negotiation(&self) -> Result<(), HarnessError> {
        self.peer.apply_answer(&self.answer_sdp).await?;
        // The sender writes with our payload types (the answer is expected to echo them, as
        // RFC 3264 asks); a server that renumbered or dropped the codec would see nothing.
        for (kind, out) in [("audio", &self.audio), ("video", &self.video)] {
            let codec = &self.codec_name(out)?;
            let rtpmap = format!("a=rtpmap:{} {codec}/", out.payload_type);
            if !self
                .answer_sdp
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with(&rtpmap))
            {
                return Err(HarnessError::Negotiation(format!(
                    "the answer does not accept {kind} {codec} as payload type {}:\n{}",
                    out.payload_type, self.answer_sdp
                )));
            }
        }
        self.peer
            .wait_for_state(RTCPeerConnectionState::Connected, CONNECT_TIMEOUT)
            .await
    }

    /// Lower-case encoding name of a track's codec, as in `a=rtpmap` ("vp8", "h264", "opus").
    fn codec_name(&self, out: &Outbound) -> Result<String, HarnessError> {
        let offer_rtpmap = format!("a=rtpmap:{} ", out.payload_type);
        self.offer_sdp
            .lines()
            .find_map(|l| l.strip_prefix(&offer_rtpmap))
            .and_then(|rest| rest.split('/').next())
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| {
                HarnessError::Negotiation(format!(
                    "payload type {} missing from our own offer",
                    out.payload_type
                ))
            })
    }

    /// Write one RTP packet on the video track (next sequence number, our SSRC and PT).
    pub async fn send_video(
        &self,
        payload: &[u8],
        marker: bool,
        timestamp: u32,
    ) -> Result<(), HarnessError> {
        self.video.send(payload, marker, timestamp).await
    }

    /// Write one RTP packet on the audio track (marker bit clear).
    /// An audio packet with an RFC 6464 audio level (0 = loudest, 127 = silence).
    pub async fn send_audio_level(
        &self,
        payload: &[u8],
        timestamp: u32,
        level: u8,
    ) -> Result<(), HarnessError> {
        let id = self
            .offer_sdp
            .lines()
            .find_map(|l| {
                let rest = l.trim_end().strip_prefix("a=extmap:")?;
                let (id, uri) = rest.split_once(' ')?;
                (uri == AUDIO_LEVEL_URI).then(|| id.split('/').next()?.parse::<u8>().ok())?
            })
            .ok_or_else(|| {
                HarnessError::Negotiation("no audio-level extension in the offer".into())
            })?;
        self.audio
            .send_with(payload, false, timestamp, Some((id, level & 0x7f)))
            .await
    }

    pub async fn send_audio(&self, payload: &[u8], timestamp: u32) -> Result<(), HarnessError> {
        self.audio.send(payload, false, timestamp).await
    }

    pub fn video_codec(&self) -> VideoCodec {
        self.video_codec
    }

    /// The profile-level-id offered for H264 (meaningless for VP8).
    pub fn h264_profile(&self) -> &'static str {
        self.h264_profile
    }

    pub fn video_ssrc(&self) -> u32 {
        self.video.ssrc
    }

    /// How many keyframe requests (PLI/FIR) the server has sent for the video track.
    pub fn keyframe_requests(&self) -> u32 {
        *self.keyframe_requests.borrow()
    }

    /// Waits until at least `count` keyframe requests have arrived.
    pub async fn wait_for_keyframe_request(
        &self,
        count: u32,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let mut rx = self.keyframe_requests.clone();
        let waited = tokio::time::timeout(timeout, async {
            rx.wait_for(|n| *n >= count).await.map(|_| ())
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(HarnessError::Negotiation(
                "the keyframe counter stopped".into(),
            )),
            Err(_) => Err(HarnessError::Timeout {
                what: format!("waiting for keyframe request #{count}"),
                timeout,
                detail: format!(": {} arrived", self.keyframe_requests()),
            }),
        }
    }

    pub fn audio_ssrc(&self) -> u32 {
        self.audio.ssrc
    }

    pub fn video_payload_type(&self) -> u8 {
        self.video.payload_type
    }

    pub fn audio_payload_type(&self) -> u8 {
        self.audio.payload_type
    }

    pub fn connection_state(&self) -> RTCPeerConnectionState {
        self.peer.state()
    }

    /// Wait for a connection state, e.g. `Failed`/`Closed` after the server drops the session.
    pub async fn wait_for_state(
        &self,
        state: RTCPeerConnectionState,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        self.peer.wait_for_state(state, timeout).await
    }

    /// DELETE the session (with the token, if any), then close the peer connection.
    /// Panics unless the server answers 200: use `delete` + `disconnect` to test otherwise.
    pub async fn close(mut self) {
        let status = try_delete(&self.location, self.token.as_deref()).await;
        self.peer.close().await;
        match status {
            Ok(reqwest::StatusCode::OK) => {}
            Ok(status) => panic!("DELETE {} returned {status}, expected 200", self.location),
            Err(e) => panic!("{e}"),
        }
    }

    /// Close the peer connection without telling the server (a crashed or vanished client).
    pub async fn disconnect(mut self) {
        self.peer.close().await;
    }
}
