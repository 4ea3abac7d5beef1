//! Interop with an independent WebRTC implementation: aiortc (Python) publishes over WHIP and
//! two aiortc viewers play over WHEP and decode video frames, for VP8 and for H264.
//!
//! `./scripts/test.sh` installs aiortc in `target/pyenv` and exports `PARLEY_PYTHON`.

use parley::config::Config;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("PARLEY_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python");
    assert!(
        venv.exists(),
        "aiortc is not installed: run ./scripts/test.sh (it creates target/pyenv), \
         or set PARLEY_PYTHON to a Python with aiortc"
    );
    venv
}

async fn aiortc_round_trip(codec: &str) {
    let server = parley::start(Config::loopback()).await.expect("server");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/aiortc_peer.py");
    let child = tokio::process::Command::new(python())
        .arg(script)
        .args([
            "--base",
            &server.base_url(),
            "--room",
            "interop",
            "--codec",
            codec,
        ])
        .args(["--viewers", "2", "--frames", "30", "--timeout", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python starts");
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("aiortc peer finishes within 90 s")
        .expect("aiortc peer output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_default();
    assert!(
        out.status.success(),
        "aiortc {codec} failed: {report}\n--- stderr ---\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(report).expect("JSON report");
    assert_eq!(report["ok"], true, "{report}");
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
