//! Publish and play through a real server with real WebRTC peers (webrtc-rs) over UDP on
//! 127.0.0.1: payload bytes arrive unchanged (nothing is decoded or re-encoded), each viewer
//! gets its own SSRC with continuous sequence numbers, and sessions come and go cleanly.

mod common;

use common::{
    h264_idr_payload, h264_non_idr_payload, h264_sps_pps_payload, opus_payload, play, publish,
    vp8_delta_payload, vp8_keyframe_payload, Kind, PlayOptions, PublishOptions, Publisher,
    Received, VideoCodec,
};
use parley::config::Config;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// What one publisher sent, in order.
#[derive(Default)]
struct Sent {
    video: Vec<Vec<u8>>,
    audio: Vec<Vec<u8>>,
}

/// Sends `frames` video frames (a keyframe every 10, starting with one) and as many Opus
/// packets, paced like 100 fps so that the test runs quickly but packets keep their order.
async fn send_media(p: &Publisher, first: u32, frames: u32, sent: &mut Sent) {
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    for i in first..first + frames {
        pace.tick().await;
        let key = (i - first).is_multiple_of(10);
        let ts = i.wrapping_mul(3000);
        let video: Vec<Vec<u8>> = match (p.video_codec(), key) {
            (VideoCodec::Vp8, true) => vec![vp8_keyframe_payload(i)],
            (VideoCodec::Vp8, false) => vec![vp8_delta_payload(i)],
            (VideoCodec::H264, true) => {
                vec![h264_sps_pps_payload(p.h264_profile()), h264_idr_payload(i)]
            }
            (VideoCodec::H264, false) => vec![h264_non_idr_payload(i)],
        };
        let last = video.len() - 1;
        for (k, payload) in video.into_iter().enumerate() {
            p.send_video(&payload, k == last, ts)
                .await
                .expect("video sent");
            sent.video.push(payload);
        }
        let audio = opus_payload(i);
        p.send_audio(&audio, i.wrapping_mul(960))
            .await
            .expect("audio sent");
        sent.audio.push(audio);
    }
}

fn of_kind(r: &[Received], kind: Kind) -> Vec<&Received> {
    r.iter().filter(|p| p.kind == kind).collect()
}

/// Every received payload is one that was sent, in the order sent, on one SSRC that is not
/// the publisher's, with sequence numbers that only go forward.
fn check_stream(got: &[&Received], sent: &[Vec<u8>], publisher_ssrc: u32) {
    assert!(!got.is_empty());
    let ssrc = got[0].ssrc;
    assert_ne!(ssrc, publisher_ssrc, "the viewer's SSRC is its own");
    let mut at = 0;
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p.ssrc, ssrc, "one SSRC per slot");
        let found = sent[at..].iter().position(|s| *s == p.payload);
        let found =
            found.unwrap_or_else(|| panic!("packet {i}: payload not sent (or out of order)"));
        at += found + 1;
        if i > 0 {
            let step = p.seq.wrapping_sub(got[i - 1].seq) as i16;
            assert!(
                step > 0,
                "sequence numbers go forward: {} then {}",
                got[i - 1].seq,
                p.seq
            );
        }
    }
}

async fn three_viewers_receive_what_was_sent(options: PublishOptions, mime: &str) {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let publisher = publish(&base, "show", options).await.expect("publish");
    let mut viewers = Vec::new();
    for _ in 0..3 {
        viewers.push(
            play(&base, "show", PlayOptions::default())
                .await
                .expect("play"),
        );
    }
    let mut sent = Sent::default();
    send_media(&publisher, 0, 60, &mut sent).await;
    for v in &viewers {
        let got = v
            .wait_for("40 video and 40 audio packets", WAIT, |r| {
                of_kind(r, Kind::Video).len() >= 40 && of_kind(r, Kind::Audio).len() >= 40
            })
            .await
            .expect("media arrives");
        let video = of_kind(&got, Kind::Video);
        assert!(
            video[0].mime.eq_ignore_ascii_case(mime),
            "{}",
            video[0].mime
        );
        check_stream(&video, &sent.video, publisher.video_ssrc());
        check_stream(
            &of_kind(&got, Kind::Audio),
            &sent.audio,
            publisher.audio_ssrc(),
        );
    }
    for v in viewers {
        v.close().await;
    }
    publisher.close().await;
    assert_eq!(server.session_count(), 0, "DELETE freed every session");
    server.shutdown().await;
}

#[tokio::test]
async fn vp8_and_opus_reach_three_viewers_unchanged() {
    three_viewers_receive_what_was_sent(PublishOptions::vp8(), "video/VP8").await;
}

#[tokio::test]
async fn obs_h264_high_and_opus_reach_three_viewers_unchanged() {
    three_viewers_receive_what_was_sent(PublishOptions::h264("64001f"), "video/H264").await;
}

#[tokio::test]
async fn h264_constrained_baseline_is_forwarded_too() {
    three_viewers_receive_what_was_sent(PublishOptions::h264("42e01f"), "video/H264").await;
}

#[tokio::test]
async fn a_viewer_may_arrive_before_the_publisher() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let viewer = play(&base, "early", PlayOptions::default())
        .await
        .expect("play");
    let publisher = publish(&base, "early", PublishOptions::vp8())
        .await
        .expect("publish");
    let mut sent = Sent::default();
    send_media(&publisher, 0, 40, &mut sent).await;
    let got = viewer
        .wait_for("video from the late publisher", WAIT, |r| {
            of_kind(r, Kind::Video).len() >= 20
        })
        .await
        .expect("media arrives without renegotiation");
    check_stream(
        &of_kind(&got, Kind::Video),
        &sent.video,
        publisher.video_ssrc(),
    );
    viewer.close().await;
    publisher.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_reconnecting_publisher_replaces_the_old_one_and_viewers_keep_playing() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let obs = || PublishOptions {
        participant: Some("obs".into()),
        ..PublishOptions::vp8()
    };
    let first = publish(&base, "live", obs()).await.expect("publish");
    let viewer = play(&base, "live", PlayOptions::default())
        .await
        .expect("play");
    let mut sent = Sent::default();
    send_media(&first, 0, 30, &mut sent).await;
    viewer
        .wait_for("media from the first session", WAIT, |r| {
            of_kind(r, Kind::Video).len() >= 20
        })
        .await
        .expect("first session's media");
    let old_location = first.location.clone();

    // OBS reconnects: a new WHIP session for the same participant.
    let second = publish(&base, "live", obs()).await.expect("republish");
    assert_eq!(
        common::delete(&old_location, None).await,
        reqwest::StatusCode::NOT_FOUND,
        "the replaced session is gone"
    );
    let before = viewer.received_of(Kind::Video).len();
    // Start the new session's sequence numbers and timestamps far below the old ones.
    send_media(&second, 5000, 30, &mut sent).await;
    let got = viewer
        .wait_for("media from the new session", WAIT, |r| {
            of_kind(r, Kind::Video).len() >= before + 20
        })
        .await
        .expect("second session's media");
    let video = of_kind(&got, Kind::Video);
    check_stream(&video, &sent.video, second.video_ssrc());
    for pair in video.windows(2) {
        let dt = pair[1].timestamp.wrapping_sub(pair[0].timestamp) as i32;
        assert!(
            dt >= 0,
            "timestamps never go backwards: {} then {}",
            pair[0].timestamp,
            pair[1].timestamp
        );
    }
    assert!(video
        .iter()
        .any(|p| p.payload == vp8_keyframe_payload(5000)));
    viewer.close().await;
    second.close().await;
    drop(first);
    server.shutdown().await;
}

#[tokio::test]
async fn delete_releases_the_session_at_once() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let publisher = publish(&base, "r", PublishOptions::vp8())
        .await
        .expect("publish");
    let viewer = play(&base, "r", PlayOptions::default())
        .await
        .expect("play");
    assert_eq!(server.session_count(), 2);
    let location = viewer.location.clone();
    viewer.close().await;
    assert_eq!(server.session_count(), 1);
    assert_eq!(
        common::delete(&location, None).await,
        reqwest::StatusCode::NOT_FOUND
    );
    publisher.close().await;
    assert_eq!(server.session_count(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_wildcard_media_address_serves_loopback_clients() {
    // `cargo run` binds 0.0.0.0; the ICE agent must still accept checks on every address.
    let mut config = Config::loopback();
    config.media_listen = "0.0.0.0:0".parse().expect("address");
    let server = parley::start(config).await.expect("server");
    assert!(server
        .advertised
        .contains(&"127.0.0.1".parse().expect("ip")));
    let base = server.base_url();
    let publisher = publish(&base, "any", PublishOptions::vp8())
        .await
        .expect("publish");
    let viewer = play(&base, "any", PlayOptions::default())
        .await
        .expect("play");
    let mut sent = Sent::default();
    send_media(&publisher, 0, 20, &mut sent).await;
    viewer
        .wait_for("video", WAIT, |r| of_kind(r, Kind::Video).len() >= 10)
        .await
        .expect("media flows through the wildcard socket");
    viewer.close().await;
    publisher.close().await;
    server.shutdown().await;
}

/// Whether the room API shows `room`'s video track stalled (no packets for a second).
async fn video_stalled(base: &str, room: &str) -> bool {
    let view = common::room_api::view(base, room).await;
    common::room_api::tracks(&view)
        .iter()
        .any(|t| t["kind"] == "video" && t["stalled"] == true)
}

#[tokio::test]
async fn a_publisher_that_pauses_is_seen_again_from_its_first_keyframe() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let publisher = publish(&base, "pause", PublishOptions::vp8())
        .await
        .expect("publish");
    let viewer = play(&base, "pause", PlayOptions::default())
        .await
        .expect("play");
    let mut before = Sent::default();
    send_media(&publisher, 0, 30, &mut before).await;
    let last = before.video.last().cloned().expect("frames sent");
    viewer
        .wait_for("the frames before the pause", WAIT, |r| {
            r.iter().any(|p| p.payload == last)
        })
        .await
        .expect("the viewer plays");
    // The publisher pauses (a still screen share sends nothing) until its video is stalled.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !video_stalled(&base, "pause").await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the paused video shows as stalled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It resumes with a keyframe: that frame and every one after it reach the viewer, with
    // no keyframe request needed.
    let mut after = Sent::default();
    send_media(&publisher, 100, 10, &mut after).await;
    viewer
        .wait_for("every frame after the pause", WAIT, |r| {
            after
                .video
                .iter()
                .all(|w| r.iter().any(|p| p.kind == Kind::Video && p.payload == *w))
        })
        .await
        .expect("the resumed video plays from its first keyframe");
    viewer.close().await;
    publisher.close().await;
    server.shutdown().await;
}
