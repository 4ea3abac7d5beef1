//! Interop with an independent WebRTC implementation: aiortc (Python) publishes over WHIP and
//! two aiortc viewers play over WHEP and decode video frames, for VP8 and for H264.
//!
//! `./scripts/test.sh` installs aiortc in `target/pyenv` and exports `PARLEY_PYTHON`.

mod common;

use parley::config::Config;
use std::time::Duration;

async fn aiortc_round_trip(codec: &str) {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let args = [
        "--base",
        &base,
        "--room",
        "interop",
        "--codec",
        codec,
        "--viewers",
        "2",
        "--frames",
        "30",
        "--timeout",
        "30",
    ];
    let what = format!("aiortc {codec}");
    let report = common::aiortc::run("aiortc_peer.py", &args, Duration::from_secs(90), &what).await;
    let viewers = report["viewers"].as_array().expect("viewers");
    assert_eq!(viewers.len(), 2);
    for v in viewers {
        assert!(v["video_frames"].as_u64().unwrap_or(0) >= 30, "{report}");
    }
    println!("aiortc {codec}: {report}");
    assert_eq!(
        server.session_count(),
        0,
        "the peers' DELETEs freed their sessions"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn aiortc_vp8_publish_and_play() {
    aiortc_round_trip("VP8").await;
}

#[tokio::test]
async fn aiortc_h264_publish_and_play() {
    aiortc_round_trip("H264").await;
}
