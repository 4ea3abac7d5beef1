//! The `parley` binary as a user runs it: `--help` documents every flag, and SIGTERM ends
//! sessions and exits 0.

mod common;

use common::{play, publish, vp8_delta_payload, vp8_keyframe_payload, PlayOptions, PublishOptions};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command};
use std::time::{Duration, Instant};

use common::binary::BIN;

#[test]
fn help_documents_every_flag_and_its_environment_variable() {
    let out = Command::new(BIN).arg("--help").output().expect("runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--http-listen",
        "--media-listen",
        "--public-ip",
        "--public-port",
        "--publish-token",
        "--play-token",
        "--ice-server",
        "--max-sessions",
        "--max-body-bytes",
        "--consent-timeout-secs",
        "--connect-timeout-secs",
        "--admin-token",
        "--max-participants-per-room",
        "--metrics-listen",
        "--drain-timeout-secs",
        "--rate-limit-per-ip",
        "--request-timeout-secs",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
        let env = format!(
            "PARLEY_{}",
            flag.trim_start_matches("--")
                .replace('-', "_")
                .to_uppercase()
        );
        assert!(help.contains(&env), "--help lacks {env}");
    }
}

/// Starts the binary with `args` and returns it with its HTTP address and stdout.
fn start(args: &[&str]) -> (Child, String, BufReader<ChildStdout>) {
    common::binary::spawn(args, &[])
}

use common::binary::Reap;

#[tokio::test]
async fn sigterm_drains_a_live_call_then_exits_zero() {
    let (child, addr, mut stdout) = start(&["--drain-timeout-secs", "3"]);
    let mut child = Reap(child);
    let base = format!("http://{addr}");
    let publisher = publish(&base, "call", PublishOptions::vp8())
        .await
        .expect("publish");
    let viewer = play(&base, "call", PlayOptions::default())
        .await
        .expect("play");
    let sender = async {
        let mut pace = tokio::time::interval(Duration::from_millis(20));
        for n in 0..1000u32 {
            pace.tick().await;
            let payload = if n % 10 == 0 {
                vp8_keyframe_payload(n)
            } else {
                vp8_delta_payload(n)
            };
            let _ = publisher.send_video(&payload, true, n * 1800).await;
        }
    };
    let check = async {
        viewer
            .wait_for("media before SIGTERM", Duration::from_secs(10), |r| {
                r.len() >= 10
            })
            .await
            .expect("media flows");
        let kill = Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(kill.success());
        let line = loop {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).expect("a line") > 0,
                "stdout ended"
            );
            if line.starts_with("stopping") {
                break line;
            }
        };
        assert!(line.contains("draining 2 live session"), "{line:?}");
        // While draining: new sessions are refused, live ones go on.
        let refused = reqwest::Client::new()
            .post(format!("{base}/whip/other"))
            .header("content-type", "application/sdp")
            .body("v=0\r\n")
            .send()
            .await
            .expect("POST");
        assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.headers().contains_key("retry-after"));
        let before = viewer.received().len();
        viewer
            .wait_for("media while draining", Duration::from_secs(2), |r| {
                r.len() >= before + 20
            })
            .await
            .expect("the call goes on while draining");
        // After the drain timeout the server ends the sessions and exits 0.
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.0.try_wait().expect("wait") {
                break status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no exit after the drain"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "exit status {status}");
        let waited = start.elapsed();
        assert!(
            waited > Duration::from_millis(1500),
            "it drained for ~3 s, not {waited:?}"
        );
    };
    tokio::select! {
        _ = check => {}
        _ = sender => panic!("the sender finished first"),
    }
    let rest: Vec<String> = stdout.lines().map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
    viewer.disconnect().await;
    publisher.disconnect().await;
}

#[tokio::test]
async fn a_server_with_no_sessions_stops_at_once_on_sigterm() {
    let (child, _, _stdout) = start(&[]);
    let mut child = Reap(child);
    let start = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success());
}
