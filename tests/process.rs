//! The `parley` binary as a user runs it: `--help` documents every flag, and SIGTERM ends
//! sessions and exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_parley");

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

#[tokio::test]
async fn sigterm_ends_sessions_and_exits_zero() {
    let mut child = Command::new(BIN)
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--media-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("parley starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("first line");
    // "Parley is serving HTTP on 127.0.0.1:PORT and media on UDP ..."
    let addr = first
        .split_whitespace()
        .nth(5)
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    let offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtcp-mux\r\na=mid:0\r\na=sendonly\r\n\
a=ice-ufrag:Abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=rtpmap:96 VP8/90000\r\n";
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/whip/room"))
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("parley did not exit within 10 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    let rest: Vec<String> = stdout.lines().map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("stopping")),
        "it said it was stopping: {rest:?}"
    );
}
