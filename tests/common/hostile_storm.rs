//! A hostile WHEP viewer for the RTCP-flood test: it plays a room like any viewer, and while
//! told to storm it sends a PLI on its video track every `interval` (a broken or malicious
//! client hammering the publisher's encoder through the SFU).
//!
//! Owns: its peer connection and the one task per remote track (dropping the viewer aborts
//! them). Never: judging the server (the test reads the counters).

use super::peer::Peer;
use super::signaling::{endpoint_url, post_offer, try_delete};
use super::{HarnessError, CONNECT_TIMEOUT};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{MediaEngine, RTCPeerConnectionState};

/// What the storming viewer's track tasks share with the test.
#[derive(Default)]
struct Shared {
    storming: AtomicBool,
    plis_sent: AtomicU64,
}

pub struct StormViewer {
    pub location: String,
    shared: Arc<Shared>,
    video_packets: watch::Receiver<u64>,
    peer: Peer,
}

/// Plays `{base}/whep/{room}` with one audio and one video slot; PLIs go out every `interval`
/// while [`StormViewer::storm`] is on.
pub async fn play_storming(
    base: &str,
    room: &str,
    interval: Duration,
) -> Result<StormViewer, HarnessError> {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_default_codecs()
        .map_err(HarnessError::webrtc("register_default_codecs"))?;
    let shared = Arc::new(Shared::default());
    let (video_tx, video_packets) = watch::channel(0u64);
    let video_tx = Arc::new(video_tx);
    let on_track_shared = Arc::clone(&shared);
    let peer = Peer::new(
        media_engine,
        Some(Box::new(move |track, _pc| {
            Box::pin(storm_track(
                track,
                Arc::clone(&on_track_shared),
                Arc::clone(&video_tx),
                interval,
            ))
        })),
    )
    .await?;
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
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
    let offer = peer.gathered_offer().await?;
    let url = endpoint_url(base, "whep", room, None)?;
    let answer = post_offer(&reqwest::Client::new(), url, None, offer).await?;
    let viewer = StormViewer {
        location: answer.location,
        shared,
        video_packets,
        peer,
    };
    let negotiated = async {
        viewer.peer.apply_answer(&answer.sdp).await?;
        viewer
            .peer
            .wait_for_state(RTCPeerConnectionState::Connected, CONNECT_TIMEOUT)
            .await
    };
    match negotiated.await {
        Ok(()) => Ok(viewer),
        Err(e) => {
            let _ = try_delete(&viewer.location, None).await;
            Err(e)
        }
    }
}

/// Reads a remote track; on video, also sends PLIs while storming.
async fn storm_track(
    track: Arc<dyn TrackRemote>,
    shared: Arc<Shared>,
    video_packets: Arc<watch::Sender<u64>>,
    interval: Duration,
) {
    let video = track.kind().await == RtpCodecKind::Video;
    let media_ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            event = track.poll() => match event {
                Some(TrackRemoteEvent::OnRtpPacket(_)) if video => {
                    video_packets.send_modify(|n| *n += 1);
                }
                Some(_) => {}
                None => return,
            },
            _ = tick.tick(), if video => {
                if shared.storming.load(Ordering::Relaxed) {
                    let pli = PictureLossIndication { sender_ssrc: 1, media_ssrc };
                    if track.write_rtcp(vec![Box::new(pli)]).await.is_ok() {
                        shared.plis_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

impl StormViewer {
    /// Starts or stops the PLI storm.
    pub fn storm(&self, on: bool) {
        self.shared.storming.store(on, Ordering::Relaxed);
    }

    /// PLIs handed to the peer connection so far.
    pub fn plis_sent(&self) -> u64 {
        self.shared.plis_sent.load(Ordering::Relaxed)
    }

    /// Video packets received so far.
    pub fn video_packets(&self) -> u64 {
        *self.video_packets.borrow()
    }

    /// Waits until at least `n` video packets have arrived.
    pub async fn wait_for_video(&self, n: u64, timeout: Duration) -> Result<(), HarnessError> {
        let mut rx = self.video_packets.clone();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|got| *got >= n))
            .await
            .map(|r| r.is_ok());
        match reached {
            Ok(true) => Ok(()),
            _ => Err(HarnessError::Timeout {
                what: format!("waiting for {n} video packets at the storming viewer"),
                timeout,
                detail: format!(": {} arrived", self.video_packets()),
            }),
        }
    }

    /// DELETEs the session (its status is returned) and closes the peer connection.
    pub async fn close(mut self) -> Result<reqwest::StatusCode, HarnessError> {
        self.storm(false);
        let status = try_delete(&self.location, None).await;
        self.peer.close().await;
        status
    }
}
