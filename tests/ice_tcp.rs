//! ICE over TCP: a publisher and a viewer that reach Parley only through the passive TCP
//! candidate of its answers (RFC 6544, RFC 4571 framing), with real WebRTC peers
//! (webrtc-rs) on 127.0.0.1.

mod common;

use common::metrics::{scrape, value};
use common::{
    opus_payload, play, publish, vp8_delta_payload, vp8_keyframe_payload, Kind, PlayOptions,
    PublishOptions,
};
use parley::config::Config;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_publisher_and_a_viewer_over_tcp_only_get_exactly_the_media() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let tcp = server.ice_tcp_addr.expect("ICE-TCP listens by default");

    let publisher = publish(
        &base,
        "tcp",
        PublishOptions {
            tcp: true,
            ..PublishOptions::vp8()
        },
    )
    .await
    .expect("publish over TCP");
    let candidate = format!("{} {} typ host tcptype passive", tcp.ip(), tcp.port());
    assert!(
        publisher
            .answer_sdp
            .lines()
            .any(|l| l.starts_with("a=candidate:")
                && l.contains(" tcp ")
                && l.contains(&candidate)),
        "the answer offers the passive TCP candidate: {}",
        publisher.answer_sdp
    );
    let viewer = play(
        &base,
        "tcp",
        PlayOptions {
            tcp: true,
            ..PlayOptions::default()
        },
    )
    .await
    .expect("play over TCP");

    // Frames until the viewer has the first keyframe, then 60 more: every payload arrives,
    // byte for byte, in order.
    let mut n = 0u32;
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    let sent = |n: u32| match n % 10 {
        0 => vp8_keyframe_payload(n),
        _ => vp8_delta_payload(n),
    };
    loop {
        pace.tick().await;
        publisher
            .send_video(&sent(n), true, n.wrapping_mul(3000))
            .await
            .expect("video");
        publisher
            .send_audio(&opus_payload(n), n.wrapping_mul(960))
            .await
            .expect("audio");
        n += 1;
        if viewer
            .received_of(Kind::Video)
            .iter()
            .any(|p| p.payload == sent(0))
        {
            break;
        }
        assert!(n < 1000, "no keyframe reached the viewer over TCP");
    }
    let first = n.next_multiple_of(10);
    for k in n..first + 60 {
        pace.tick().await;
        publisher
            .send_video(&sent(k), true, k.wrapping_mul(3000))
            .await
            .expect("video");
        publisher
            .send_audio(&opus_payload(k), k.wrapping_mul(960))
            .await
            .expect("audio");
    }
    let wanted: Vec<Vec<u8>> = (first..first + 60).map(sent).collect();
    viewer
        .wait_for("60 frames over TCP", WAIT, |r| {
            wanted
                .iter()
                .all(|w| r.iter().any(|p| p.kind == Kind::Video && p.payload == *w))
        })
        .await
        .expect("every frame arrives");
    let video: Vec<Vec<u8>> = viewer
        .received_of(Kind::Video)
        .into_iter()
        .map(|p| p.payload)
        .filter(|p| wanted.contains(p))
        .collect();
    assert_eq!(video, wanted, "in order, once each");
    viewer
        .wait_for("audio over TCP", WAIT, |r| {
            r.iter()
                .any(|p| p.kind == Kind::Audio && p.payload == opus_payload(first + 59))
        })
        .await
        .expect("audio arrives");

    // The viewer's congestion feedback over TCP speaks of packets Parley numbered: its
    // downlink is estimated from it.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let room = common::room_api::view(&base, "tcp").await;
        let signal = common::room_api::sessions(&room)
            .into_iter()
            .find(|s| s["kind"] == "whep")
            .map(|s| s["downlink"]["signal"].clone());
        if signal == Some("twcc".into()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the TCP viewer's downlink rests on its TWCC feedback: {room}"
        );
        pace.tick().await;
        publisher
            .send_video(&sent(0), true, 0)
            .await
            .expect("video");
    }

    // Both sessions are on TCP, as the metrics say (a browser's or this peer's active TCP
    // candidate has no port, so its checks make it peer-reflexive).
    let tcp_sessions = |text: &str| value(text, "parley_session_paths", &["transport=\"tcp\""]);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = scrape(&base).await;
        if value(&text, "parley_ice_tcp_connections", &[]) == Some(2.0)
            && tcp_sessions(&text) == Some(2.0)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "two ICE-TCP connections and two sessions on TCP: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    viewer.close().await;
    publisher.close().await;
    server.shutdown().await;
}

/// Waits until the server closes `stream` (a read returns the end, or an error).
async fn closed_by_server(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Refused connections by reason, per `/metrics`.
fn refused(text: &str, reason: &str) -> f64 {
    let label = format!("reason=\"{reason}\"");
    value(text, "parley_ice_tcp_refused_total", &[&label]).expect("the refusals are exported")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tcp_connections_are_closed_and_counted_while_a_call_goes_on() {
    use common::hostile_call::LiveCall;
    use common::hostile_wire::stun_binding;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    let mut config = Config::loopback();
    config.ice_tcp_max_connections = 20;
    let server = parley::start(config).await.expect("server");
    let base = server.base_url();
    let tcp = server.ice_tcp_addr.expect("ICE-TCP");
    let call = LiveCall::start(&base, "live").await;
    call.assert_flowing("before").await;

    let framed = |p: &[u8]| {
        let mut f = u16::try_from(p.len())
            .expect("small")
            .to_be_bytes()
            .to_vec();
        f.extend_from_slice(p);
        f
    };
    // Each opener writes something hostile; the server must close every one of them.
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("garbage as the first frame", framed(&[0xde; 120]), false),
        (
            "a STUN binding for nobody",
            framed(&stun_binding("nobody:x", None)),
            false,
        ),
        (
            "a length over any datagram",
            vec![0xff, 0xff, 1, 2, 3],
            false,
        ),
        ("a frame cut off by the end", vec![0, 100, 1, 2, 3], true),
        ("nothing at all", Vec::new(), false),
    ];
    for (what, bytes, half_close) in cases {
        let mut s = TcpStream::connect(tcp).await.expect("connect");
        s.write_all(&bytes).await.expect("write");
        if half_close {
            s.shutdown().await.expect("shutdown");
        }
        // The silent one waits out the first-binding limit (5 s).
        assert!(
            closed_by_server(&mut s, Duration::from_secs(8)).await,
            "closed: {what}"
        );
    }
    // Past the connection limit, connections are closed at once.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(tcp).await.expect("connect"));
    }
    let mut extra = TcpStream::connect(tcp).await.expect("connect");
    assert!(
        closed_by_server(&mut extra, Duration::from_secs(2)).await,
        "a connection past the limit is closed"
    );
    call.assert_flowing("with the TCP port full of idle connections")
        .await;
    for s in &mut idle {
        assert!(
            closed_by_server(s, Duration::from_secs(8)).await,
            "an idle connection is closed"
        );
    }
    let text = scrape(&base).await;
    assert_eq!(refused(&text, "not_stun"), 1.0, "{text}");
    assert_eq!(refused(&text, "unknown_ufrag"), 1.0, "{text}");
    assert!(refused(&text, "no_frame") >= 23.0, "{text}");
    assert!(refused(&text, "limit") >= 1.0, "{text}");
    assert_eq!(value(&text, "parley_ice_tcp_connections", &[]), Some(0.0));
    call.assert_flowing("after").await;
    assert_eq!(server.session_count(), 2);
    call.end().await;
    server.shutdown().await;
}

/// A TCP relay for one connection that can stop reading from the server, as a client whose
/// application stopped reading its socket.
struct StallingRelay {
    addr: std::net::SocketAddr,
    stall: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl StallingRelay {
    async fn start(server: std::net::SocketAddr) -> StallingRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stall = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stalled = stall.clone();
        // Every connection the client opens is relayed (it may open more than one).
        let task = tokio::spawn(async move {
            let mut relayed = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                relayed.spawn(relay_one(client, server, stalled.clone()));
            }
        });
        StallingRelay { addr, stall, task }
    }
}

/// Relays one connection to `server` until `stall`, then reads nothing more from the server
/// and keeps the connection open.
async fn relay_one(
    client: tokio::net::TcpStream,
    server: std::net::SocketAddr,
    stall: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A small receive window, so the server's side fills soon after the stall.
    let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
        return;
    };
    let _ = socket.set_recv_buffer_size(4096);
    let Ok(upstream) = socket.connect(server).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut uw).await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    while !stall.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(20), ur.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                if cw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            Err(_) => {}
        }
    }
    // Stalled: nothing more is read from the server, and the connection stays open.
    std::future::pending::<()>().await;
    drop((ur, cw));
    up.abort();
}

impl Drop for StallingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_viewer_that_stops_reading_costs_only_itself() {
    use std::sync::atomic::Ordering;
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let tcp = server.ice_tcp_addr.expect("ICE-TCP");
    let relay = StallingRelay::start(tcp).await;
    let publisher = publish(&base, "slow", PublishOptions::vp8())
        .await
        .expect("publish");
    // What this test is about is the stall, not the setup: a second attempt is allowed if the
    // test client's TCP connection does not come up (seen once in CI, not reproduced; the
    // direct TCP test above covers setup without a retry).
    let through_relay = || {
        play(
            &base,
            "slow",
            PlayOptions {
                tcp: true,
                tcp_via: Some(relay.addr),
                ..PlayOptions::default()
            },
        )
    };
    let stalling = match through_relay().await {
        Ok(viewer) => viewer,
        Err(e) => {
            eprintln!("the TCP viewer through the relay did not connect ({e}); once more");
            through_relay()
                .await
                .expect("a TCP viewer through the relay")
        }
    };
    let udp = play(&base, "slow", PlayOptions::default())
        .await
        .expect("a UDP viewer");
    let big = |n: u32| {
        let mut p = match n % 10 {
            0 => vp8_keyframe_payload(n),
            _ => vp8_delta_payload(n),
        };
        p.resize(1000, n as u8);
        p
    };
    let mut pace = tokio::time::interval(Duration::from_millis(2));
    let mut n = 0u32;
    // Both play.
    loop {
        pace.tick().await;
        publisher
            .send_video(&big(n), true, n * 3000)
            .await
            .expect("video");
        n += 1;
        let first = |v: &common::Viewer| {
            v.received_of(Kind::Video)
                .iter()
                .any(|p| p.payload == big(0))
        };
        if first(&stalling) && first(&udp) {
            break;
        }
        assert!(n < 2000, "both viewers play");
    }
    // The TCP viewer stops reading; 2 MB more media (more than the socket buffers and its
    // queue hold) go out while the UDP viewer gets every frame.
    relay.stall.store(true, Ordering::Relaxed);
    let from = n.next_multiple_of(10);
    for k in n..from + 2000 {
        pace.tick().await;
        publisher
            .send_video(&big(k), true, k * 3000)
            .await
            .expect("video");
    }
    let wanted: Vec<Vec<u8>> = (from..from + 2000).map(big).collect();
    udp.wait_for("every frame at the UDP viewer", WAIT, |r| {
        wanted.iter().all(|w| r.iter().any(|p| p.payload == *w))
    })
    .await
    .expect("the UDP viewer is not held up");
    let text = scrape(&base).await;
    let queue_full = value(
        &text,
        "parley_dropped_packets_total",
        &["reason=\"queue_full\""],
    )
    .unwrap_or_default();
    assert!(
        queue_full > 0.0,
        "the stalled viewer's media was dropped: {text}"
    );
    let queued = value(&text, "parley_ice_tcp_queued_bytes", &[]).unwrap_or_default();
    assert!(
        queued > 10_000.0,
        "the stalled viewer's queue shows in the metrics: {queued} bytes"
    );
    assert_eq!(server.session_count(), 3);
    // A client that takes nothing more loses its connection (its session lives on until its
    // consent runs out), and nothing stays queued for it.
    let deadline = tokio::time::Instant::now() + parley::engine::TCP_WRITE_STALL + WAIT;
    loop {
        let text = scrape(&base).await;
        let seen = (
            value(&text, "parley_ice_tcp_stalled_total", &[]),
            value(&text, "parley_ice_tcp_connections", &[]),
            value(&text, "parley_ice_tcp_queued_bytes", &[]),
        );
        if seen == (Some(1.0), Some(0.0), Some(0.0)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled connection is closed and counted (stalled, open, queued bytes): \
             {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    udp.close().await;
    stalling.close().await;
    publisher.close().await;
    server.shutdown().await;
}
