//! Viewers only get video they can decode: a VP8-only viewer of a room with an H264 and a
//! VP8 publisher gets the VP8 one in its slot, and the `slot_assigned` event says who was
//! skipped and why; a VP8-only viewer of a room whose only video is H264 gets `422`.

mod common;

use common::hostile_call::raw_offer;
use common::{publish, Events, PublishOptions, Publisher};
use parley::config::Config;
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// Publishes as `name` and sends video until the room API lists its video track.
async fn publish_video(base: &str, room: &str, name: &str, opts: PublishOptions) -> Publisher {
    let publisher = publish(
        base,
        room,
        PublishOptions {
            participant: Some(name.to_owned()),
            ..opts
        },
    )
    .await
    .expect("publish");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let keyframe: &[u8] = match publisher.video_codec() {
        common::VideoCodec::Vp8 => &[0x10, 0x00, 0x9d, 0x01, 0x2a],
        common::VideoCodec::H264 => &[0x65, 0x88, 0x84],
    };
    for n in 0u32.. {
        publisher
            .send_video(keyframe, true, n * 3000)
            .await
            .expect("send");
        let view: Value = http
            .get(format!("{base}/rooms/{room}"))
            .send()
            .await
            .expect("room API")
            .json()
            .await
            .unwrap_or(Value::Null);
        let published = view["participants"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["name"] == name)
            .flat_map(|p| p["tracks"].as_array().into_iter().flatten())
            .any(|t| t["kind"] == "video");
        if published {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}'s video track never opened"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    publisher
}

fn vp8_only_offer() -> String {
    raw_offer(
        "Vwxy",
        "abcdefghijklmnopqrstuvwx",
        &["opus/48000/2"],
        &["VP8/90000"],
        "recvonly",
    )
}

#[tokio::test]
async fn a_slot_skips_video_its_viewer_cannot_decode_and_says_so() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let alice = publish_video(&base, "mixed", "alice", PublishOptions::h264("42e01f")).await;
    let bob = publish_video(&base, "mixed", "bob", PublishOptions::vp8()).await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{base}/whep/mixed"))
        .header("content-type", "application/sdp")
        .body(vp8_only_offer())
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(|l| format!("{base}{l}"))
        .expect("Location");
    let events = Events::open(&location, None).await.expect("events");
    let got = events
        .wait_for(
            "the video slot shows bob and names alice as skipped",
            WAIT,
            |all| {
                all.iter().any(|e| {
                    e["type"] == "slot_assigned"
                        && e["kind"] == "video"
                        && e["participant"] == "bob"
                        && e["skipped"]["alice"] == "codec"
                })
            },
        )
        .await
        .expect("slot_assigned with skipped");
    assert!(
        !got.iter()
            .any(|e| e["type"] == "slot_assigned" && e["participant"] == "alice"),
        "no slot ever shows the H264 publisher: {got:?}"
    );
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn an_offer_that_cannot_decode_the_only_publisher_gets_422_naming_the_codec() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let alice = publish_video(&base, "solo", "alice", PublishOptions::h264("64001f")).await;
    let http = reqwest::Client::new();
    for path in ["/whep/solo", "/whep/solo/alice"] {
        let resp = http
            .post(format!("{base}{path}"))
            .header("content-type", "application/sdp")
            .body(vp8_only_offer())
            .send()
            .await
            .expect("POST");
        assert_eq!(
            resp.status(),
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "{path}"
        );
        let reason = resp.text().await.unwrap_or_default();
        assert!(reason.contains("H264"), "{path}: {reason}");
    }
    // An offer with H264 plays.
    let with_h264 = raw_offer(
        "Vwxy",
        "abcdefghijklmnopqrstuvwx",
        &["opus/48000/2"],
        &["H264/90000\r\na=fmtp:97 packetization-mode=1;profile-level-id=64001f"],
        "recvonly",
    );
    let resp = http
        .post(format!("{base}/whep/solo"))
        .header("content-type", "application/sdp")
        .body(with_h264)
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    alice.close().await;
}
