//! The live call every hostile test keeps running while it attacks the server, and the
//! probes that tell whether the server is still well: new media reaches the viewer, no
//! payload arrives twice, a fresh POST is still answered 201, and `/metrics` counters.
//!
//! Owns: the call's publisher, viewer and sender task (dropping the call aborts the
//! sender; the peers close themselves on drop). Never: any attack.

use super::{
    play, publish, vp8_delta_payload, vp8_keyframe_payload, Kind, PlayOptions, PublishOptions,
    Publisher, Viewer,
};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long a probe waits for the call or a counter.
pub const PROBE: Duration = Duration::from_secs(15);
/// Frames per second of the live call (one VP8 payload and one Opus payload per frame).
const FPS: u64 = 50;

/// A publisher and a viewer in one room, with media flowing.
pub struct LiveCall {
    pub publisher: Arc<Publisher>,
    pub viewer: Viewer,
    next_frame: Arc<AtomicU32>,
    sender: Sender,
}

/// The VP8 payload of frame `n` (a keyframe every 10 frames); every frame's is unique.
fn frame_payload(n: u32) -> Vec<u8> {
    if n.is_multiple_of(10) {
        vp8_keyframe_payload(n)
    } else {
        vp8_delta_payload(n)
    }
}

async fn send_frame(publisher: &Publisher, n: u32) {
    let _ = publisher
        .send_video(&frame_payload(n), true, n.wrapping_mul(1800))
        .await;
    let _ = publisher
        .send_audio(&super::opus_payload(n), n.wrapping_mul(960))
        .await;
}

impl LiveCall {
    /// Publishes to `room` on `base`, plays it, starts sending and waits for media.
    pub async fn start(base: &str, room: &str) -> LiveCall {
        let publisher = Arc::new(
            publish(base, room, PublishOptions::vp8())
                .await
                .expect("the live call's publisher connects"),
        );
        let viewer = play(base, room, PlayOptions::default())
            .await
            .expect("the live call's viewer connects");
        let mut call = LiveCall {
            publisher,
            viewer,
            next_frame: Arc::new(AtomicU32::new(0)),
            sender: Sender(None),
        };
        call.start_sending();
        call.assert_flowing("at the start").await;
        call
    }

    /// (Re)starts the paced sender: 50 frames per second until stopped.
    pub fn start_sending(&mut self) {
        if self.sender.0.is_some() {
            return;
        }
        let (publisher, next) = (Arc::clone(&self.publisher), Arc::clone(&self.next_frame));
        self.sender.0 = Some(tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(1000 / FPS));
            loop {
                pace.tick().await;
                let n = next.fetch_add(1, Ordering::Relaxed);
                send_frame(&publisher, n).await;
            }
        }));
    }

    /// Stops the paced sender; once this returns it sends nothing more.
    pub async fn stop_sending(&mut self) {
        if let Some(task) = self.sender.0.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Sends `count` frames now (the sender should be stopped) and returns their video
    /// payloads.
    pub async fn send_frames(&self, count: u32) -> Vec<Vec<u8>> {
        let mut pace = tokio::time::interval(Duration::from_millis(1000 / FPS));
        let mut sent = Vec::new();
        for _ in 0..count {
            pace.tick().await;
            let n = self.next_frame.fetch_add(1, Ordering::Relaxed);
            send_frame(&self.publisher, n).await;
            sent.push(frame_payload(n));
        }
        sent
    }

    /// Waits until the viewer has received 25 video payloads it had not received before
    /// (half a second of video), and checks that no video payload arrived twice.
    pub async fn assert_flowing(&self, when: &str) {
        let seen: HashSet<Vec<u8>> = self
            .viewer
            .received_of(Kind::Video)
            .into_iter()
            .map(|r| r.payload)
            .collect();
        let got = self
            .viewer
            .wait_for(&format!("25 new video payloads {when}"), PROBE, |r| {
                r.iter()
                    .filter(|p| p.kind == Kind::Video && !seen.contains(&p.payload))
                    .count()
                    >= 25
            })
            .await
            .unwrap_or_else(|e| panic!("the live call stopped {when}: {e}"));
        assert_eq!(
            duplicates(&got),
            0,
            "the viewer received a video payload twice ({when})"
        );
    }

    /// Video payloads the viewer received more than once.
    pub fn duplicates(&self) -> usize {
        duplicates(&self.viewer.received())
    }

    /// The viewer's session path (`/sessions/{id}`).
    pub fn viewer_path(&self) -> String {
        path_of(&self.viewer.location)
    }

    /// Stops sending and closes both sessions with DELETE (each must answer 200).
    pub async fn end(mut self) {
        self.stop_sending().await;
        let LiveCall {
            publisher, viewer, ..
        } = self;
        viewer.close().await;
        match Arc::try_unwrap(publisher) {
            Ok(p) => p.close().await,
            Err(_) => panic!("the publisher is still shared"),
        }
    }
}

impl LiveCall {
    /// Like [`LiveCall::end`] under a rate limit: each DELETE is retried after the
    /// Retry-After the server gives with a 429, until it answers 200.
    pub async fn end_patiently(mut self) {
        self.stop_sending().await;
        let LiveCall {
            publisher, viewer, ..
        } = self;
        assert_eq!(
            patient_delete(&viewer.location).await,
            reqwest::StatusCode::OK
        );
        viewer.disconnect().await;
        assert_eq!(
            patient_delete(&publisher.location).await,
            reqwest::StatusCode::OK
        );
        match Arc::try_unwrap(publisher) {
            Ok(p) => p.disconnect().await,
            Err(_) => panic!("the publisher is still shared"),
        }
    }
}

/// DELETEs `url`, waiting out each 429 for its Retry-After (for at most [`PROBE`]).
pub async fn patient_delete(url: &str) -> reqwest::StatusCode {
    let deadline = tokio::time::Instant::now() + PROBE;
    loop {
        let resp = reqwest::Client::new()
            .delete(url)
            .timeout(PROBE)
            .send()
            .await
            .expect("DELETE answered");
        if resp.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
            return resp.status();
        }
        let wait: u64 = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("a 429 carries Retry-After in seconds");
        assert!(
            tokio::time::Instant::now() < deadline,
            "DELETE {url}: 429 for {PROBE:?}"
        );
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

/// The paced sender's task, aborted on drop.
struct Sender(Option<JoinHandle<()>>);

impl Drop for Sender {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Video payloads that appear more than once in `got`.
pub fn duplicates(got: &[super::Received]) -> usize {
    let mut seen = HashSet::new();
    got.iter()
        .filter(|p| p.kind == Kind::Video)
        .filter(|p| !seen.insert(p.payload.clone()))
        .count()
}

/// The path of an absolute URL (`http://host/sessions/x` -> `/sessions/x`).
pub fn path_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| url.to_owned())
}

/// Any well-formed SHA-256 fingerprint: no DTLS handshake ever checks it.
const FINGERPRINT: &str = "6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:\
                           DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08";

/// A complete offer that Parley accepts without a real peer (it never connects): BUNDLE,
/// ICE credentials `ufrag`/`pwd`, a fingerprint, the given codecs per m-line.
pub fn raw_offer(
    ufrag: &str,
    pwd: &str,
    audio: &[&str],
    video: &[&str],
    direction: &str,
) -> String {
    let mut mids = Vec::new();
    let mut body = String::new();
    for (i, (kind, rtpmap)) in audio
        .iter()
        .map(|c| ("audio", c))
        .chain(video.iter().map(|c| ("video", c)))
        .enumerate()
    {
        let pt = 96 + i;
        mids.push(i.to_string());
        body.push_str(&format!(
            "m={kind} 9 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\na=rtcp-mux\r\na=mid:{i}\r\n\
a={direction}\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=setup:actpass\r\n\
a=fingerprint:sha-256 {FINGERPRINT}\r\na=rtpmap:{pt} {rtpmap}\r\n"
        ));
    }
    format!(
        "v=0\r\no=- 4215 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\n{body}",
        mids.join(" ")
    )
}

/// The WHIP offer the hostile tests mutate: Opus + VP8, sendonly.
pub fn good_offer() -> String {
    raw_offer(
        "Abcd",
        "abcdefghijklmnopqrstuvwx",
        &["opus/48000/2"],
        &["VP8/90000"],
        "sendonly",
    )
}

/// POSTs a valid offer to a new room, expects 201 and DELETEs the session again: the
/// server still serves newcomers.
pub async fn assert_fresh_post(base: &str, when: &str) {
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{base}/whip/fresh"))
        .header("content-type", "application/sdp")
        .body(good_offer())
        .timeout(PROBE)
        .send()
        .await
        .unwrap_or_else(|e| panic!("a fresh POST {when} got no answer: {e}"));
    assert_eq!(
        resp.status(),
        reqwest::StatusCode::CREATED,
        "a fresh valid POST {when}"
    );
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("201 has a Location")
        .to_owned();
    let deleted = http
        .delete(format!("{base}{location}"))
        .timeout(PROBE)
        .send()
        .await
        .expect("DELETE answered");
    assert_eq!(
        deleted.status(),
        reqwest::StatusCode::OK,
        "DELETE {location}"
    );
}

/// The Prometheus text of `{base}/metrics`.
pub async fn metrics(base: &str) -> String {
    reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .timeout(PROBE)
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of one series, e.g. `parley_dropped_packets_total{reason="oversized"}`.
pub fn series(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The sum of every series of metric `name` (all label sets).
pub fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            rest.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

/// `parley_dropped_packets_total{reason="..."}`.
pub fn dropped(text: &str, reason: &str) -> f64 {
    series(
        text,
        &format!("parley_dropped_packets_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Polls `/metrics` (every 100 ms, for up to [`PROBE`]) until `pred` holds; returns that text.
pub async fn wait_for_metrics(base: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + PROBE;
    loop {
        let text = metrics(base).await;
        if pred(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {PROBE:?} waiting for /metrics to show {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A flush barrier: sends one junk datagram to the media socket and waits until `/metrics`
/// counts it as unroutable. The engine handles datagrams in order and flushes all its
/// counters at once, so the text returned counts everything the engine had handled before
/// the junk arrived. Nothing else may send junk meanwhile.
pub async fn fence(base: &str, media: SocketAddr) -> String {
    let before = dropped(&metrics(base).await, "unroutable");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("UDP socket");
    socket
        .send_to(b"fence: not STUN, not from a known address", media)
        .await
        .expect("send the fence datagram");
    wait_for_metrics(base, "the fence datagram as unroutable", |t| {
        dropped(t, "unroutable") > before
    })
    .await
}
