//! The WHEP viewer: offers recvonly audio and video with every default codec, records each
//! RTP packet it receives, and lets a test wait (signalled, not polled) for a condition on
//! everything received so far.

use super::peer::Peer;
use super::signaling::{endpoint_url, post_offer, try_delete};
use super::{HarnessError, CONNECT_TIMEOUT};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::watch;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{MediaEngine, PeerConnection, RTCPeerConnectionState};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Audio,
    Video,
}

/// One RTP packet as the viewer received it (after SRTP, before any depacketization).
#[derive(Clone, Debug)]
pub struct Received {
    pub kind: Kind,
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    pub payload: Vec<u8>,
    /// Mime type of `payload_type` in the viewer's negotiated receive parameters, as
    /// webrtc-rs spells it ("video/VP8", "video/H264", "audio/opus": compare with
    /// `eq_ignore_ascii_case`); empty if the payload type is not among them.
    pub mime: String,
    /// The fmtp line of that payload type (e.g. H264 `profile-level-id`), empty if none.
    pub fmtp: String,
}

#[derive(Clone, Debug)]
pub struct PlayOptions {
    pub participant: Option<String>,
    /// Sent as `Authorization: Bearer {token}` on POST and DELETE.
    pub token: Option<String>,
    /// Recvonly audio m-lines (slots) to offer.
    pub audio_slots: usize,
    /// Recvonly video m-lines (slots) to offer.
    pub video_slots: usize,
    /// Play one named participant (`POST /whep/{room}/{target}`) instead of the room.
    pub target: Option<String>,
    /// Reach the server over ICE-TCP only (its UDP candidates are ignored).
    pub tcp: bool,
    /// With `tcp`: connect to this address instead (a relay in front of the server).
    pub tcp_via: Option<std::net::SocketAddr>,
}

impl Default for PlayOptions {
    fn default() -> Self {
        PlayOptions {
            participant: None,
            token: None,
            audio_slots: 1,
            video_slots: 1,
            target: None,
            tcp: false,
            tcp_via: None,
        }
    }
}

impl PlayOptions {
    /// A participant of a call playing the room with this many audio and video slots.
    pub fn slots(participant: &str, audio: usize, video: usize) -> Self {
        PlayOptions {
            participant: Some(participant.to_owned()),
            audio_slots: audio,
            video_slots: video,
            ..PlayOptions::default()
        }
    }
}

/// One slot of a viewer as the answer describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    pub mid: String,
    pub kind: Kind,
    pub ssrc: u32,
}

/// Everything received so far, and a signal bumped after each packet.
struct Record {
    packets: Mutex<Vec<Received>>,
    changed: watch::Sender<u64>,
}

impl Record {
    fn packets(&self) -> MutexGuard<'_, Vec<Received>> {
        self.packets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, packet: Received) {
        self.packets().push(packet);
        self.changed.send_modify(|n| *n += 1);
    }
}

pub struct Viewer {
    /// Absolute session URL (the Location header resolved against the POST URL).
    pub location: String,
    pub etag: Option<String>,
    pub offer_sdp: String,
    pub answer_sdp: String,
    /// The `Link` header values of the 201.
    pub links: Vec<String>,
    token: Option<String>,
    record: Arc<Record>,
    peer: Peer,
}

/// WHEP-play `{base}/whep/{room}`: POST a gathered recvonly offer (audio, then video, with
/// all of webrtc-rs's default codecs: VP8, VP9, H264 variants, AV1, HEVC, Opus...), apply
/// the answer and wait until the peer connection is `Connected`.
pub async fn play(base: &str, room: &str, opts: PlayOptions) -> Result<Viewer, HarnessError> {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_default_codecs()
        .map_err(HarnessError::webrtc("register_default_codecs"))?;
    let record = Arc::new(Record {
        packets: Mutex::default(),
        changed: watch::Sender::new(0),
    });
    let recorder = Arc::clone(&record);
    let peer = Peer::with_tcp(
        media_engine,
        Some(Box::new(move |track, pc| {
            Box::pin(record_track(track, pc, Arc::clone(&recorder)))
        })),
        opts.tcp,
    )
    .await?;
    let mut peer = peer;
    peer.tcp_via = opts.tcp_via;
    let kinds = std::iter::repeat_n(RtpCodecKind::Audio, opts.audio_slots)
        .chain(std::iter::repeat_n(RtpCodecKind::Video, opts.video_slots));
    for kind in kinds {
        peer.pc
            .add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await
            .map_err(HarnessError::webrtc("add_transceiver_from_kind"))?;
    }

    let offer_sdp = peer.gathered_offer().await?;
    let mut url = endpoint_url(base, "whep", room, opts.participant.as_deref())?;
    if let Some(target) = &opts.target {
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(target);
        }
    }
    let client = reqwest::Client::new();
    let answer = post_offer(&client, url, opts.token.as_deref(), offer_sdp.clone()).await?;
    let viewer = Viewer {
        location: answer.location,
        etag: answer.etag,
        offer_sdp,
        answer_sdp: answer.sdp,
        links: answer.links,
        token: opts.token,
        record,
        peer,
    };
    let negotiated = async {
        viewer.peer.apply_answer(&viewer.answer_sdp).await?;
        viewer
            .peer
            .wait_for_state(RTCPeerConnectionState::Connected, CONNECT_TIMEOUT)
            .await
    };
    match negotiated.await {
        Ok(()) => Ok(viewer),
        Err(e) => {
            let _ = try_delete(&viewer.location, viewer.token.as_deref()).await;
            Err(e)
        }
    }
}

/// Read one remote track until it ends, recording every RTP packet.
async fn record_track(
    track: Arc<dyn TrackRemote>,
    pc: Weak<dyn PeerConnection>,
    record: Arc<Record>,
) {
    let kind = match track.kind().await {
        RtpCodecKind::Audio => Kind::Audio,
        _ => Kind::Video,
    };
    // payload type -> (mime, fmtp), filled from the receiver's parameters on first sight.
    let mut codecs: HashMap<u8, (String, String)> = HashMap::new();
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
            continue;
        };
        let pt = packet.header.payload_type;
        if !codecs.contains_key(&pt) {
            codecs.extend(receive_codecs(&track, &pc).await);
            codecs.entry(pt).or_default();
        }
        let (mime, fmtp) = codecs[&pt].clone();
        record.push(Received {
            kind,
            ssrc: packet.header.ssrc,
            seq: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            payload_type: pt,
            marker: packet.header.marker,
            payload: packet.payload.to_vec(),
            mime,
            fmtp,
        });
    }
}

/// The negotiated codecs of the receiver that owns `track`. webrtc-rs gives the track no
/// link to its receiver, so find it among the connection's receivers by track id.
async fn receive_codecs(
    track: &Arc<dyn TrackRemote>,
    pc: &Weak<dyn PeerConnection>,
) -> Vec<(u8, (String, String))> {
    let Some(pc) = pc.upgrade() else {
        return vec![];
    };
    let id = track.track_id().await;
    for receiver in pc.get_receivers().await {
        if receiver.track().track_id().await != id {
            continue;
        }
        if let Ok(params) = receiver.get_parameters().await {
            return params
                .rtp_parameters
                .codecs
                .into_iter()
                .map(|c| {
                    (
                        c.payload_type,
                        (c.rtp_codec.mime_type, c.rtp_codec.sdp_fmtp_line),
                    )
                })
                .collect();
        }
    }
    vec![]
}

impl Viewer {
    /// Wait until `pred(all packets received so far)` holds, re-checking after each packet,
    /// and return those packets. On timeout the error names `what` and what did arrive.
    pub async fn wait_for<F: Fn(&[Received]) -> bool>(
        &self,
        what: &str,
        timeout: Duration,
        pred: F,
    ) -> Result<Vec<Received>, HarnessError> {
        let mut changed = self.record.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Mark seen before checking, so a packet pushed after the check wakes us.
            changed.borrow_and_update();
            {
                let packets = self.record.packets();
                if pred(&packets) {
                    return Ok(packets.clone());
                }
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                // The sender lives in `self.record`, so this cannot happen; just run out the clock.
                Ok(Err(_)) => tokio::time::sleep_until(deadline).await,
                Err(_) => {}
            }
            let packets = self.received();
            if pred(&packets) {
                return Ok(packets);
            }
            return Err(HarnessError::Timeout {
                what: format!("waiting for {what}"),
                timeout,
                detail: format!(
                    ": {} (viewer {}, peer connection {})",
                    summarize(&packets),
                    self.location,
                    self.peer.state()
                ),
            });
        }
    }

    /// The absolute URL of the `Link` whose `rel` is `rel`, resolved against the session URL.
    pub fn link(&self, rel: &str) -> Option<String> {
        let wanted = format!("rel=\"{rel}\"");
        self.links.iter().find_map(|l| {
            let (target, params) = l.split_once(';')?;
            if !params.split(';').any(|p| p.trim() == wanted) {
                return None;
            }
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            reqwest::Url::parse(&self.location)
                .ok()?
                .join(target)
                .ok()
                .map(String::from)
        })
    }

    /// The slots of the answer: m-line id, kind and the SSRC the server sends it with.
    pub fn slots(&self) -> Vec<SlotInfo> {
        let mut slots = Vec::new();
        for section in self.answer_sdp.split("\r\nm=").skip(1) {
            let kind = if section.starts_with("audio") {
                Kind::Audio
            } else {
                Kind::Video
            };
            let attr = |name: &str| {
                section
                    .lines()
                    .find_map(|l| l.trim_end().strip_prefix(name).map(str::to_owned))
            };
            let mid = attr("a=mid:").unwrap_or_default();
            let ssrc = attr("a=ssrc:")
                .and_then(|v| v.split(' ').next().and_then(|s| s.parse().ok()))
                .unwrap_or(0);
            slots.push(SlotInfo { mid, kind, ssrc });
        }
        slots
    }

    /// Every packet received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.record.packets().clone()
    }

    /// Packets of one kind received so far, in arrival order.
    pub fn received_of(&self, kind: Kind) -> Vec<Received> {
        let packets = self.record.packets();
        packets.iter().filter(|p| p.kind == kind).cloned().collect()
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

/// "12 audio packets (pt 111, 1 ssrc), 0 video packets" for timeout messages.
fn summarize(packets: &[Received]) -> String {
    [Kind::Audio, Kind::Video]
        .iter()
        .map(|&kind| {
            let of_kind: Vec<&Received> = packets.iter().filter(|p| p.kind == kind).collect();
            let name = if kind == Kind::Audio {
                "audio"
            } else {
                "video"
            };
            if of_kind.is_empty() {
                return format!("0 {name} packets");
            }
            let pts: BTreeSet<u8> = of_kind.iter().map(|p| p.payload_type).collect();
            let ssrcs: BTreeSet<u32> = of_kind.iter().map(|p| p.ssrc).collect();
            format!(
                "{} {name} packets (pt {pts:?}, {} ssrc)",
                of_kind.len(),
                ssrcs.len()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
