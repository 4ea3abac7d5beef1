//! Sessions end on their own when a peer vanishes or never connects, a viewer's keyframe
//! request reaches the publisher, and the process stops cleanly on SIGTERM.

mod common;

use common::{
    play, publish, vp8_delta_payload, vp8_keyframe_payload, Kind, PlayOptions, PublishOptions,
    Publisher, Relay, Viewer,
};
use parley::config::Config;
use std::time::{Duration, Instant};

/// Waits until `cond` holds, checking every 50 ms, for at most `limit`.
async fn until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server behind a relay, with one publisher and one viewer connected through it and a
/// first keyframe received. `config` is adjusted to advertise the relay.
async fn relayed_call(mut config: Config) -> (Relay, parley::Server, Publisher, Viewer) {
    let mut relay = Relay::bind().await.expect("relay");
    config.public_port = Some(relay.addr.port());
    let server = parley::start(config).await.expect("server");
    relay.forward_to(server.media_addr);
    let base = server.base_url();
    let publisher = publish(&base, "r", PublishOptions::vp8())
        .await
        .expect("publish via relay");
    let viewer = play(&base, "r", PlayOptions::default())
        .await
        .expect("play via relay");
    publisher
        .send_video(&vp8_keyframe_payload(0), true, 0)
        .await
        .expect("send");
    viewer
        .wait_for(
            "a keyframe through the relay",
            Duration::from_secs(10),
            |r| r.iter().any(|p| p.kind == Kind::Video),
        )
        .await
        .expect("media flows through the relay");
    (relay, server, publisher, viewer)
}

#[tokio::test]
async fn peers_that_vanish_are_cleaned_up_by_consent_freshness() {
    let mut config = Config::loopback();
    config.consent_timeout_secs = 3;
    let (relay, server, publisher, viewer) = relayed_call(config).await;
    assert_eq!(server.session_count(), 2);
    // Both clients vanish: no DELETE, no DTLS close, no more STUN.
    relay.cut();
    let cut_at = Instant::now();
    until(
        "both sessions to be closed",
        Duration::from_secs(15),
        || server.session_count() == 0,
    )
    .await;
    let took = cut_at.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "closed after {took:?}: too early for consent loss"
    );
    viewer.disconnect().await;
    publisher.disconnect().await;
    server.shutdown().await;
}

#[tokio::test]
async fn offers_that_never_connect_expire() {
    let mut config = Config::loopback();
    config.connect_timeout_secs = 1;
    let server = parley::start(config).await.expect("server");
    let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtcp-mux\r\na=mid:0\r\na=sendonly\r\n\
a=ice-ufrag:Abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=rtpmap:96 VP8/90000\r\n";
    let resp = reqwest::Client::new()
        .post(format!("{}/whip/r", server.base_url()))
        .header("content-type", "application/sdp")
        .body(sdp)
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    assert_eq!(server.session_count(), 1);
    until(
        "the unconnected session to expire",
        Duration::from_secs(5),
        || server.session_count() == 0,
    )
    .await;
    server.shutdown().await;
}

/// Sends `frames` VP8 delta frames, one every 20 ms (a publisher that never sends a keyframe
/// unless the test does).
async fn send_deltas(publisher: &Publisher, frames: u32) {
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    for n in 0..frames {
        pace.tick().await;
        let _ = publisher
            .send_video(&vp8_delta_payload(n), true, n * 3000)
            .await;
    }
}

#[tokio::test]
async fn a_new_viewer_makes_the_publisher_send_a_keyframe() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let publisher = publish(&base, "r", PublishOptions::vp8())
        .await
        .expect("publish");
    // A publisher sends continuously; its track opens with its first packet.
    let sender = send_deltas(&publisher, 250);
    let check = async {
        let before = publisher.keyframe_requests();
        let viewer = play(&base, "r", PlayOptions::default())
            .await
            .expect("play");
        publisher
            .wait_for_keyframe_request(before + 1, Duration::from_secs(5))
            .await
            .expect("the server relays a PLI when a viewer connects");
        viewer
    };
    let viewer = tokio::select! {
        v = check => v,
        _ = sender => panic!("no keyframe request while the publisher sent for 5 s"),
    };
    viewer.close().await;
    publisher.close().await;
    server.shutdown().await;
}

/// The value of an unlabelled counter in a `/metrics` text.
fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn video_lost_on_the_way_to_a_viewer_is_resent_after_its_nack() {
    // With downlink estimation on (the default), probe padding shares the slot's numbering: a
    // lost padding packet is answered with fresh padding under its number, so no gap stays.
    let (relay, server, publisher, viewer) = relayed_call(Config::loopback()).await;
    let base = server.base_url();

    // One datagram in 10 from the server to the clients is lost: the viewer's NACKs must
    // bring back every video packet.
    relay.drop_toward_clients(10);
    const SENT: u32 = 300;
    let mut pace = tokio::time::interval(Duration::from_millis(5));
    for n in 1..=SENT {
        pace.tick().await;
        publisher
            .send_video(&vp8_delta_payload(n), true, n * 3000)
            .await
            .expect("send");
    }
    let complete = |r: &[common::Received]| {
        let mut seqs: Vec<u16> = r
            .iter()
            .filter(|p| p.kind == Kind::Video)
            .map(|p| p.seq)
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        seqs.len() as u32 > SENT && seqs.windows(2).all(|w| w[1] == w[0] + 1)
    };
    let result = viewer
        .wait_for(
            "every video packet, lost ones resent",
            Duration::from_secs(10),
            complete,
        )
        .await;
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    let resent = counter(&metrics, "parley_retransmissions_sent_total");
    if let Err(e) = result {
        let got = viewer.received_of(Kind::Video).len();
        panic!("{e}: {got} video packets received, {resent} resent");
    }
    assert!(resent >= 1.0, "the server counted {resent} retransmissions");
    viewer.close().await;
    publisher.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_crowd_joining_together_shares_one_keyframe_request() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let publisher = publish(&base, "r", PublishOptions::vp8())
        .await
        .expect("publish");
    // The publisher sends delta frames only: a keyframe request stays unanswered.
    let sender = send_deltas(&publisher, 500);
    const CROWD: usize = 6;
    let crowd = async {
        let before = publisher.keyframe_requests();
        let started = Instant::now();
        let joins = (0..CROWD).map(|_| play(&base, "r", PlayOptions::default()));
        let viewers: Vec<_> = futures::future::join_all(joins)
            .await
            .into_iter()
            .map(|v| v.expect("play"))
            .collect();
        for v in &viewers {
            v.wait_for_state(
                webrtc::peer_connection::RTCPeerConnectionState::Connected,
                Duration::from_secs(10),
            )
            .await
            .expect("connected");
        }
        // Let the server see every connection (it asks as each one connects).
        until("all viewer sessions", Duration::from_secs(5), || {
            server.session_count() == CROWD + 1
        })
        .await;
        let elapsed = started.elapsed();
        let asked = publisher.keyframe_requests() - before;
        // One request, plus one retry per 500 ms window (the keyframe never comes).
        let allowed = 2 + (elapsed.as_millis() / 500) as u32;
        (viewers, asked, allowed, elapsed)
    };
    let (viewers, asked, allowed, elapsed) = tokio::select! {
        r = crowd => r,
        _ = sender => panic!("the crowd did not connect while the publisher sent for 10 s"),
    };
    assert!(asked >= 1, "no keyframe request at all");
    assert!(
        asked <= allowed && (asked as usize) < CROWD,
        "{CROWD} viewers joining in {elapsed:?} made {asked} keyframe requests (at most {allowed})"
    );
    for v in viewers {
        v.close().await;
    }
    publisher.close().await;
    server.shutdown().await;
}
