//! One bad client must not cost anyone else their call. Every test here runs a live call (a
//! webrtc-rs publisher sending paced VP8 + Opus, and a viewer), attacks the server on its
//! HTTP port or its media port, and then checks that the call still flows, that no payload
//! reached the viewer twice, and that a fresh valid POST is still answered 201.
//!
//! Hostile traffic is built by hand (`common::hostile_wire`), so each case says exactly what
//! went on the wire; media-port junk is deterministic (seeded), so a failure can be replayed.

mod common;

use common::hostile_call::{
    assert_fresh_post, dropped, fence, good_offer, metrics, patient_delete, series, sum,
    wait_for_metrics, LiveCall, PROBE,
};
use common::hostile_http::{http_cases, idle, location, post_sdp, slow_body, slow_headers};
use common::hostile_raw::RawPeer;
use common::hostile_replay::{is_dtls, is_srtcp, is_srtp, is_stun, Tap};
use common::hostile_storm::play_storming;
use common::hostile_wire::{
    drain, dtls_junk, dtls_record, kernel_drops, pli, random_datagrams, raw_http, request, rtp,
    rtp_rtcp_junk, sdp_attr, send_paced, stun_binding, stun_request, Rng,
};
use parley::config::Config;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

#[tokio::test]
async fn hostile_http_requests_get_a_4xx_and_the_call_goes_on() {
    let mut config = Config::loopback();
    config.max_body_bytes = 128 * 1024;
    config.request_timeout_secs = 3;
    let server = parley::start(config).await.expect("server");
    let base = server.base_url();
    let call = LiveCall::start(&base, "live").await;
    let viewer = call.viewer_path();
    let ufrag = sdp_attr(&call.viewer.offer_sdp, "ice-ufrag").expect("the viewer's ufrag");
    let mut rng = Rng::new(7);
    let cases = http_cases(&viewer, &ufrag, &mut rng);

    let mut wrong = Vec::new();
    let mut created = Vec::new();
    println!("{:<58} | status | time  | reason", "request");
    for c in &cases {
        let r = raw_http(server.http_addr, &c.request, PROBE).await;
        let reason = r.body.lines().next().unwrap_or("").trim().to_owned();
        let shown = r.status.map_or("none".to_owned(), |s| s.to_string());
        println!(
            "{:<58} | {shown:>6} | {:>5.2} | {reason}",
            c.what,
            r.elapsed.as_secs_f64()
        );
        if r.status == Some(201) {
            created.extend(location(&r.head));
        }
        let ok_status = r.status.is_some_and(|s| c.expect.contains(&s));
        if !ok_status || !reason.contains(c.reason) {
            wrong.push(format!(
                "{}: got {shown} {reason:?}, expected {:?} with {:?}",
                c.what, c.expect, c.reason
            ));
        }
    }
    // Every prefix of a valid offer: never a 5xx, never a hang.
    let good = good_offer();
    let mut prefixes = std::collections::BTreeMap::<String, usize>::new();
    for cut in (1..good.len()).step_by(11) {
        let r = raw_http(
            server.http_addr,
            &post_sdp("/whip/cut", &good.as_bytes()[..cut]),
            PROBE,
        )
        .await;
        let status = r.status.map_or("none".to_owned(), |s| s.to_string());
        *prefixes.entry(status.clone()).or_default() += 1;
        match r.status {
            Some(201) => {
                println!("the offer cut at {cut} of {} bytes is accepted", good.len());
                created.extend(location(&r.head));
            }
            Some(400 | 422) => {}
            _ => wrong.push(format!("offer cut at {cut} bytes: got {status}")),
        }
    }
    println!(
        "prefixes of a valid offer ({} bytes), by status: {prefixes:?}",
        good.len()
    );
    // The live viewer's session means nothing to another server.
    let other = parley::start(Config::loopback())
        .await
        .expect("second server");
    let r = raw_http(
        other.http_addr,
        &request("DELETE", viewer.as_bytes(), &[], b""),
        PROBE,
    )
    .await;
    if r.status != Some(404) {
        wrong.push(format!(
            "DELETE of a session of another server: {:?}",
            r.status
        ));
    }
    other.shutdown().await;

    for path in &created {
        let r = raw_http(
            server.http_addr,
            &request("DELETE", path.as_bytes(), &[], b""),
            PROBE,
        )
        .await;
        assert_eq!(r.status, Some(200), "DELETE {path}");
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(server.session_count(), 2, "only the live call is left");
    call.assert_flowing("after the hostile requests").await;
    assert_fresh_post(&base, "after the hostile requests").await;
    call.end().await;
    server.shutdown().await;
}

/// Longest a slow client may hold a connection past the request timeout.
const CUT_SLACK: Duration = Duration::from_secs(5);

#[tokio::test]
async fn slow_clients_are_cut_off_and_the_call_goes_on() {
    let mut config = Config::loopback();
    config.request_timeout_secs = 2;
    let timeout = Duration::from_secs(2);
    let server = parley::start(config).await.expect("server");
    let base = server.base_url();
    let call = LiveCall::start(&base, "live").await;
    let addr = server.http_addr;
    let cap = timeout + CUT_SLACK + Duration::from_secs(5);

    // 20 slowloris connections and one slow body at once.
    let mut loris = tokio::task::JoinSet::new();
    for _ in 0..20 {
        loris.spawn(slow_headers(addr, cap));
    }
    let body = tokio::spawn(slow_body(addr, cap));
    // While they hang on, the call goes on and newcomers are served.
    call.assert_flowing("while slow clients hold connections")
        .await;
    assert_fresh_post(&base, "while slow clients hold connections").await;

    let mut cut = Vec::new();
    while let Some(result) = loris.join_next().await {
        cut.push(result.expect("slow client task"));
    }
    let (body_cut, body_status) = body.await.expect("slow body task");
    let secs = |d: &Option<Duration>| {
        d.map_or("still open".into(), |d| format!("{:.2} s", d.as_secs_f64()))
    };
    for (i, (at, status)) in cut.iter().enumerate() {
        println!(
            "slow headers #{i}: cut after {}, status {status:?}",
            secs(at)
        );
    }
    println!(
        "slow body: cut after {}, status {body_status:?}",
        secs(&body_cut)
    );
    for (i, (at, _)) in cut.iter().enumerate() {
        let at = at.unwrap_or_else(|| panic!("slow-header client #{i} was never cut off"));
        assert!(
            at <= timeout + CUT_SLACK,
            "slow-header client #{i} held its connection for {at:?}"
        );
    }
    let at = body_cut.expect("the slow-body client was never cut off");
    assert!(
        at <= timeout + CUT_SLACK,
        "the slow body held its connection for {at:?}"
    );
    assert!(
        body_status.is_none() || body_status == Some(408),
        "a slow body gets 408 or a closed connection, not {body_status:?}"
    );
    call.assert_flowing("after the slow clients").await;
    assert_fresh_post(&base, "after the slow clients").await;
    assert_eq!(server.session_count(), 2, "only the live call is left");
    call.end().await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_like_a_slow_one() {
    let mut config = Config::loopback();
    config.request_timeout_secs = 2;
    let server = parley::start(config).await.expect("server");
    let base = server.base_url();
    let call = LiveCall::start(&base, "live").await;
    let cap = Duration::from_secs(2) + CUT_SLACK + Duration::from_secs(5);
    let idlers: Vec<_> = (0..20)
        .map(|_| tokio::spawn(idle(server.http_addr, cap)))
        .collect();
    call.assert_flowing("while idle connections are open").await;
    for (i, idler) in idlers.into_iter().enumerate() {
        let at = idler.await.expect("idle task");
        let at = at.unwrap_or_else(|| panic!("idle connection #{i} still open after {cap:?}"));
        assert!(
            at <= Duration::from_secs(2) + CUT_SLACK,
            "idle connection #{i} stayed open {at:?}"
        );
    }
    call.assert_flowing("after the idle connections").await;
    assert_fresh_post(&base, "after the idle connections").await;
    call.end().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_port_garbage_is_dropped_and_the_call_goes_on() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let media = server.media_addr;
    let call = LiveCall::start(&base, "live").await;
    let server_ufrag = sdp_attr(&call.viewer.answer_sdp, "ice-ufrag").expect("answer ufrag");
    let client_ufrag = sdp_attr(&call.viewer.offer_sdp, "ice-ufrag").expect("offer ufrag");
    let mut rng = Rng::new(0x5eed);
    let before = fence(&base, media).await;
    let drops_before = kernel_drops(media.port());

    // From addresses the server has never seen: all of it must be dropped as unroutable.
    let stranger = UdpSocket::bind("127.0.0.1:0").await.expect("socket");
    let mut unknown: Vec<Vec<u8>> = Vec::new();
    unknown.extend(random_datagrams(&mut rng, 1000));
    let full = stun_binding(
        &format!("{server_ufrag}:{client_ufrag}"),
        Some("not-the-password-at-all"),
    );
    unknown.extend((0..full.len()).map(|n| full[..n].to_vec()));
    unknown.push(stun_binding("nobody:nobody", Some("whatever-password-123")));
    unknown.extend(dtls_junk(&mut rng));
    unknown.extend(rtp_rtcp_junk(&mut rng));
    unknown.extend((0..2000u32).map(|i| pli(i, 0x1234_5678)));
    let oversized = [vec![0x80u8; 3000], vec![0x17u8; 9000]];
    send_paced(&stranger, media, &oversized).await;
    send_paced(&stranger, media, &unknown).await;
    call.assert_flowing("after junk from unknown addresses")
        .await;
    let mid = fence(&base, media).await;
    let drops_mid = kernel_drops(media.port());

    // From an address that names the live viewer's server ufrag in a STUN request with a
    // wrong MESSAGE-INTEGRITY (the ufrag travels in clear text in every STUN request). The
    // demultiplexer binds this address to the viewer's session, so everything after it
    // reaches that session's ICE, DTLS and SRTP stacks, which must reject it.
    let spoofer = UdpSocket::bind("127.0.0.1:0").await.expect("socket");
    let wrong_integrity = stun_binding(
        &format!("{server_ufrag}:{client_ufrag}"),
        Some("not-the-password-at-all"),
    );
    let no_integrity = stun_binding(&format!("{server_ufrag}:{client_ufrag}"), None);
    let mut bound: Vec<Vec<u8>> = vec![wrong_integrity.clone(); 10];
    bound.extend(vec![no_integrity; 10]);
    bound.extend(random_datagrams(&mut rng, 300));
    bound.extend(dtls_junk(&mut rng));
    bound.extend(rtp_rtcp_junk(&mut rng));
    bound.extend((0..2000u32).map(|i| pli(i, 0x1234_5678)));
    bound.push(wrong_integrity);
    send_paced(&spoofer, media, &bound).await;
    send_paced(&spoofer, media, &oversized).await;
    call.assert_flowing("after junk from an address bound to the viewer's session")
        .await;

    let after = fence(&base, media).await;
    let drops_after = kernel_drops(media.port());
    let unroutable = (dropped(&mid, "unroutable") - dropped(&before, "unroutable") - 1.0) as u64;
    let too_big = (dropped(&after, "oversized") - dropped(&before, "oversized")) as u64;
    let (lost_first, lost) = (drops_mid - drops_before, drops_after - drops_before);
    println!(
        "sent {} junk datagrams from an unknown address: {unroutable} counted unroutable \
         ({lost_first} lost to a full socket buffer meanwhile); {} from an address bound to \
         the viewer; 4 oversized: {too_big} counted ({lost} lost in all)",
        unknown.len(),
        bound.len()
    );
    for reason in [
        "unknown_ssrc",
        "not_connected",
        "stale",
        "no_codec",
        "queue_full",
    ] {
        println!(
            "dropped {reason}: +{}",
            dropped(&after, reason) - dropped(&before, reason)
        );
    }
    let sent = unknown.len() as u64;
    assert!(
        unroutable <= sent && unroutable + lost_first >= sent,
        "every datagram from the stranger that reached the engine is unroutable"
    );
    assert!(
        too_big <= 4 && too_big + lost >= 4,
        "each oversized datagram that reached the engine is counted"
    );
    // The server may answer a bad STUN request with an error, never with a success.
    let answers = drain(&spoofer);
    let successes = answers
        .iter()
        .filter(|d| d.starts_with(&[0x01, 0x01]))
        .count();
    println!(
        "the spoofer got {} answers, {successes} binding successes",
        answers.len()
    );
    assert_eq!(
        successes, 0,
        "a STUN request without the password must not succeed"
    );
    assert!(
        drain(&stranger).is_empty(),
        "the server never answers a stranger"
    );

    assert_eq!(
        server.session_count(),
        2,
        "the live call's sessions are still there"
    );
    call.assert_flowing("at the end").await;
    assert_eq!(call.duplicates(), 0);
    assert_fresh_post(&base, "after the media-port garbage").await;
    call.end().await;
    server.shutdown().await;
}

/// Waits until only the live call's two sessions are left; returns how long the raw
/// session lived.
async fn wait_for_expiry(server: &parley::Server, raw: &RawPeer, limit: Duration) -> Duration {
    while server.session_count() > 2 {
        assert!(
            raw.posted.elapsed() < limit,
            "the unconnected session never expired ({} sessions)",
            server.session_count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    raw.posted.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_before_dtls_is_dropped_and_the_unconnected_session_expires() {
    let mut config = Config::loopback();
    config.connect_timeout_secs = 2;
    let server = parley::start(config).await.expect("server");
    let base = server.base_url();
    let media = server.media_addr;
    let call = LiveCall::start(&base, "live").await;
    let raw = RawPeer::connect(&base, media, "/whip/raw", "sendonly").await;
    assert_eq!(server.session_count(), 3);

    // Everything but a DTLS handshake: SRTP/SRTCP-looking packets, a PLI flood, DTLS
    // records that are not a ClientHello, random bytes, an oversized datagram. (Not the
    // plaintext close_notify: see `a_plaintext_close_notify_does_not_make_a_session_connected`.)
    let mut rng = Rng::new(0xd71);
    let mut junk = rtp_rtcp_junk(&mut rng);
    junk.extend((0..1000u32).map(|i| pli(i, 1)));
    junk.extend(dtls_junk(&mut rng).into_iter().skip(1));
    junk.extend(random_datagrams(&mut rng, 300));
    junk.push(vec![0x80; 3000]);
    send_paced(&raw.socket, media, &junk).await;
    call.assert_flowing("while a raw peer sends media before DTLS")
        .await;

    // The session never connects, so it expires after the connect timeout and frees
    // everything: its session, and the address binding in the demultiplexer.
    let lived = wait_for_expiry(&server, &raw, Duration::from_secs(2) + PROBE).await;
    println!("the unconnected session lived {lived:?}");
    assert!(
        lived >= Duration::from_millis(1900),
        "expired too early: {lived:?}"
    );
    let ended = wait_for_metrics(&base, "the session ended by timeout", |t| {
        series(
            t,
            "parley_sessions_ended_total{kind=\"whip\",reason=\"timeout\"}",
        ) == Some(1.0)
    })
    .await;
    assert_eq!(
        series(
            &ended,
            "parley_sessions_ended_total{kind=\"whep\",reason=\"timeout\"}"
        ),
        Some(0.0)
    );
    let status = reqwest::Client::new()
        .delete(format!("{base}{}", raw.session))
        .send()
        .await
        .expect("DELETE")
        .status();
    assert_eq!(
        status,
        reqwest::StatusCode::NOT_FOUND,
        "the expired session is gone"
    );
    // Its address is forgotten: the same bytes from it are now unroutable.
    let before = dropped(&metrics(&base).await, "unroutable");
    raw.socket
        .send_to(&rtp(96, 1, 1, b"late"), media)
        .await
        .expect("send");
    wait_for_metrics(
        &base,
        "a datagram from the expired address as unroutable",
        |t| dropped(t, "unroutable") > before,
    )
    .await;

    call.assert_flowing("after the raw session expired").await;
    assert_fresh_post(&base, "after the raw session expired").await;
    call.end().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_close_notify_does_not_make_a_session_connected() {
    let mut config = Config::loopback();
    config.connect_timeout_secs = 2;
    let server = parley::start(config).await.expect("server");
    let base = server.base_url();
    let media = server.media_addr;
    let call = LiveCall::start(&base, "live").await;
    // A viewer of the live room, so the server also tries to forward media into it.
    let raw = RawPeer::connect(&base, media, "/whep/live", "recvonly").await;
    let close_notify = dtls_record(21, 0, 1, &[1, 0]);
    raw.socket
        .send_to(&close_notify, media)
        .await
        .expect("send");
    call.assert_flowing("after the raw viewer's close_notify")
        .await;
    let lived = wait_for_expiry(&server, &raw, Duration::from_secs(2) + PROBE).await;
    println!("the raw session lived {lived:?}");
    call.assert_flowing("at the end").await;
    call.end().await;
    server.shutdown().await;
}

/// A server whose advertised media port is a tap, and a live call through it. The tap's
/// first client is the publisher (it connects before the viewer starts).
async fn call_through_tap() -> (parley::Server, Tap, LiveCall) {
    let mut tap = Tap::bind().await.expect("tap");
    let mut config = Config::loopback();
    config.public_port = Some(tap.addr.port());
    let server = parley::start(config).await.expect("server");
    tap.forward_to(server.media_addr);
    let call = LiveCall::start(&server.base_url(), "live").await;
    assert_eq!(
        tap.clients().len(),
        2,
        "publisher and viewer go through the tap"
    );
    (server, tap, call)
}

/// RTP packets received from publishers and forwarded to viewers, per `/metrics`.
fn rtp_counts(text: &str) -> (f64, f64) {
    (
        sum(text, "parley_rtp_received_packets_total"),
        sum(text, "parley_rtp_forwarded_packets_total"),
    )
}

const PUBLISHER: usize = 0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_srtp_from_the_publishers_address_is_not_forwarded() {
    let (server, tap, mut call) = call_through_tap().await;
    let base = server.base_url();
    let media = server.media_addr;
    // Two seconds of media: more than 200 SRTP packets captured.
    for _ in 0..8 {
        if tap.last_sent(PUBLISHER, 200, is_srtp).len() == 200 {
            break;
        }
        call.assert_flowing("while capturing").await;
    }
    let captured = tap.last_sent(PUBLISHER, 200, is_srtp);
    assert_eq!(captured.len(), 200, "200 SRTP packets captured");

    // Quiesce: nothing in flight once the viewer has the barrier frame, and the fence
    // makes the counters include it.
    call.stop_sending().await;
    let barrier = call.send_frames(1).await;
    call.viewer
        .wait_for("the barrier frame", PROBE, |r| {
            r.iter().any(|p| p.payload == barrier[0])
        })
        .await
        .expect("the barrier frame arrives");
    let text = fence(&base, media).await;
    let (received0, forwarded0) = rtp_counts(&text);
    let unauthentic0 = dropped(&text, "unauthentic");

    // Replay the 200 captured SRTP packets from the publisher's own address, then send 10
    // new frames (20 RTP packets) and wait for the viewer to have all of them.
    let replayed = tap.send_as(PUBLISHER, &captured).await.expect("replay");
    let sentinels = call.send_frames(10).await;
    call.viewer
        .wait_for("the 10 frames after the replay", PROBE, |r| {
            sentinels.iter().all(|s| r.iter().any(|p| p.payload == *s))
        })
        .await
        .expect("new media arrives after the replay");
    let text = fence(&base, media).await;
    let (received1, forwarded1) = rtp_counts(&text);
    let unauthentic = dropped(&text, "unauthentic") - unauthentic0;
    let duplicates = call.duplicates();
    println!(
        "replayed {replayed} SRTP packets; the server then counted {} received and {} forwarded \
         RTP packets for 20 new ones; the viewer got {duplicates} duplicate payloads",
        received1 - received0,
        forwarded1 - forwarded0
    );
    assert_eq!(duplicates, 0, "no payload reached the viewer twice");
    assert_eq!(
        received1 - received0,
        20.0,
        "replayed SRTP is not accepted as new RTP"
    );
    assert_eq!(
        forwarded1 - forwarded0,
        20.0,
        "replayed SRTP is not forwarded"
    );
    assert_eq!(
        unauthentic, 200.0,
        "Parley's own receive path dropped and counted each replay"
    );

    // Replayed SRTCP and the replayed DTLS handshake and STUN from the call's start.
    let srtcp = tap.last_sent(PUBLISHER, 50, is_srtcp);
    let handshake = tap.first_sent(PUBLISHER, |d| is_dtls(d) || is_stun(d));
    println!(
        "replaying {} SRTCP packets and {} handshake datagrams (DTLS + STUN)",
        srtcp.len(),
        handshake.len()
    );
    assert!(
        handshake.iter().any(|d| is_dtls(d)),
        "the DTLS handshake was captured"
    );
    call.start_sending();
    tap.send_as(PUBLISHER, &srtcp).await.expect("replay SRTCP");
    tap.send_as(PUBLISHER, &handshake)
        .await
        .expect("replay the handshake");
    call.assert_flowing("after the replayed handshake").await;
    call.assert_flowing("a little later").await;

    assert_eq!(server.session_count(), 2);
    assert_eq!(call.duplicates(), 0);
    assert_fresh_post(&base, "after the replays").await;
    call.end().await;
    drop(tap);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_datagrams_from_the_publishers_address_do_not_end_the_call() {
    let (server, tap, call) = call_through_tap().await;
    let base = server.base_url();
    let mut rng = Rng::new(0xa11);
    // Datagrams that look like the publisher's own traffic but are not authentic: DTLS
    // alerts in epoch 0 (plaintext close_notify and fatal alerts), records that fail to
    // decrypt, captured SRTP and SRTCP with a flipped authentication tag, STUN without
    // integrity, random bytes, oversized datagrams.
    call.assert_flowing("before the spoofing").await;
    let unauthentic0 = dropped(&metrics(&base).await, "unauthentic");
    let mut forged: Vec<Vec<u8>> = tap
        .last_sent(PUBLISHER, 100, |d| is_srtp(d) || is_srtcp(d))
        .into_iter()
        .map(|mut d| {
            let last = d.len() - 1;
            d[last] ^= 0xff;
            d
        })
        .collect();
    let flipped_srtp = forged.iter().filter(|d| is_srtp(d)).count() as f64;
    assert!(flipped_srtp > 0.0, "SRTP among the captured datagrams");
    for seq in [1u64, 1 << 20, (1 << 48) - 1] {
        forged.push(dtls_record(21, 0, seq, &[1, 0]));
        forged.push(dtls_record(21, 0, seq + 1, &[2, 40]));
        forged.push(dtls_record(21, 1, seq, &rng.bytes(26)));
        forged.push(dtls_record(23, 1, seq, &rng.bytes(200)));
    }
    forged.extend(dtls_junk(&mut rng));
    forged.push(stun_binding("nobody:nobody", None));
    forged.extend(random_datagrams(&mut rng, 200));
    forged.push(vec![0x80; 3000]);
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    for chunk in forged.chunks(8) {
        pace.tick().await;
        tap.send_as(PUBLISHER, chunk).await.expect("spoof");
    }
    println!(
        "sent {} forged datagrams from the publisher's address",
        forged.len()
    );
    call.assert_flowing("after the forged datagrams").await;
    call.assert_flowing("a little later").await;
    assert_eq!(server.session_count(), 2);
    let text = metrics(&base).await;
    assert_eq!(
        sum(&text, "parley_sessions_ended_total"),
        0.0,
        "no session ended"
    );
    assert!(
        dropped(&text, "unauthentic") - unauthentic0 >= flipped_srtp,
        "each SRTP packet with a flipped tag dropped and counted"
    );
    assert_fresh_post(&base, "after the spoofing").await;
    call.end().await;
    drop(tap);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewers_pli_storm_is_rate_limited_upstream() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let media = server.media_addr;
    let call = LiveCall::start(&base, "live").await;
    let storm = play_storming(&base, "live", Duration::from_millis(2))
        .await
        .expect("the storming viewer connects");
    storm
        .wait_for_video(10, PROBE)
        .await
        .expect("the storming viewer gets video");
    let before = fence(&base, media).await;
    let requests_before = call.publisher.keyframe_requests();

    // About 500 PLIs per second for two seconds.
    let started = Instant::now();
    storm.storm(true);
    while storm.plis_sent() < 1000 {
        assert!(started.elapsed() < PROBE, "the storm did not get going");
        call.assert_flowing("during the PLI storm").await;
    }
    storm.storm(false);
    let lasted = started.elapsed();
    let after = fence(&base, media).await;
    let requests = call.publisher.keyframe_requests() - requests_before;
    let delta = |name: &str| sum(&after, name) - sum(&before, name);
    let (received, sent, suppressed) = (
        delta("parley_keyframe_requests_received_total"),
        delta("parley_plis_sent_total"),
        delta("parley_keyframe_requests_suppressed_total"),
    );
    println!(
        "storm of {} PLIs over {lasted:?}: the server received {received}, sent {sent} PLIs \
         upstream, suppressed {suppressed}; the publisher saw {requests} keyframe requests",
        storm.plis_sent()
    );
    // One per 500 ms per track, plus the storm's edges.
    let allowed = (lasted.as_millis() / 500) as f64 + 3.0;
    assert!(
        received >= 500.0,
        "the storm reached the server: {received}"
    );
    assert!(sent <= allowed, "{sent} PLIs upstream in {lasted:?}");
    assert!(
        f64::from(requests) <= allowed,
        "{requests} keyframe requests at the publisher"
    );
    assert!(suppressed >= received - sent, "the rest was suppressed");

    let video = storm.video_packets();
    storm
        .wait_for_video(video + 25, PROBE)
        .await
        .expect("the storming viewer still gets video");
    call.assert_flowing("after the storm").await;
    assert_eq!(
        storm.close().await.expect("DELETE"),
        reqwest::StatusCode::OK
    );
    assert_fresh_post(&base, "after the storm").await;
    call.end().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_one_address_gets_429_with_retry_after() {
    let mut config = Config::loopback();
    config.rate_limit_per_ip = 5; // a burst of 10, then 5 per second
    let server = parley::start(config).await.expect("server");
    let base = server.base_url();
    let call = LiveCall::start(&base, "live").await;

    // 30 POSTs as fast as one client can send them.
    let http = reqwest::Client::new();
    let mut created = Vec::new();
    let mut limited = 0;
    let started = Instant::now();
    for i in 0..30 {
        let resp = post_offer(&http, &format!("{base}/whip/burst{i}")).await;
        match resp.status().as_u16() {
            201 => created.push(session_url(&base, &resp)),
            429 => {
                limited += 1;
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok());
                let secs: u64 = retry
                    .and_then(|v| v.parse().ok())
                    .expect("Retry-After in seconds");
                assert!(secs >= 1, "Retry-After {secs}");
                let reason = resp.text().await.expect("reason");
                assert!(reason.contains("too many requests"), "{reason:?}");
            }
            other => panic!("POST #{i}: unexpected {other}"),
        }
    }
    let burst = started.elapsed();
    // A full bucket holds 10 tokens and refills at 5 per second.
    let most = 10 + (burst.as_secs_f64() * 5.0).ceil() as usize;
    println!(
        "30 POSTs in {burst:?}: {} created, {limited} refused with 429",
        created.len()
    );
    assert!(
        !created.is_empty() && created.len() <= most,
        "{} created (at most {most})",
        created.len()
    );
    assert_eq!(created.len() + limited, 30);
    // PATCH and DELETE share the bucket; GET does not.
    let delete = http
        .delete(format!("{base}/sessions/0123456789abcdef0123456789abcdef"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(delete.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    let get = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET");
    assert_eq!(get.status(), reqwest::StatusCode::OK, "GET is not limited");
    // Another address has its own bucket.
    let other = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().expect("address")))
        .build()
        .expect("client");
    let resp = post_offer(&other, &format!("{base}/whip/other")).await;
    assert_eq!(
        resp.status(),
        reqwest::StatusCode::CREATED,
        "127.0.0.2 is not limited"
    );
    created.push(session_url(&base, &resp));
    call.assert_flowing("while the address is limited").await;

    // After Retry-After, the address may POST again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resp = post_offer(&http, &format!("{base}/whip/again")).await;
    assert_eq!(
        resp.status(),
        reqwest::StatusCode::CREATED,
        "accepted after Retry-After"
    );
    created.push(session_url(&base, &resp));

    for url in &created {
        assert_eq!(
            patient_delete(url).await,
            reqwest::StatusCode::OK,
            "DELETE {url}"
        );
    }
    assert_eq!(server.session_count(), 2);
    call.assert_flowing("after the burst").await;
    call.end_patiently().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_without_the_password_does_not_bind_addresses() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let media = server.media_addr;
    let call = LiveCall::start(&base, "live").await;
    let raw = RawPeer::post(&base, "/whip/raw", "sendonly").await;
    // Eight strangers who know the session's ufrag (it travels in clear text in every STUN
    // request) but not its password.
    let mut strangers = Vec::new();
    for _ in 0..8 {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("socket");
        let forged = stun_request(&raw.username, Some("not-the-password-at-all"), false);
        s.send_to(&forged, media).await.expect("send");
        strangers.push(s);
    }
    // The rightful client then connects from its own address; what it sends next must reach
    // its session, not be dropped as unroutable.
    raw.ice(media).await;
    let before = dropped(&fence(&base, media).await, "unroutable");
    raw.socket
        .send_to(&dtls_record(22, 0, 0, &[1, 0, 0, 0]), media)
        .await
        .expect("send");
    let after = dropped(&fence(&base, media).await, "unroutable");
    assert_eq!(
        after - before,
        1.0,
        "only the fence is unroutable, not the rightful client's DTLS"
    );
    call.assert_flowing("at the end").await;
    call.end().await;
    server.shutdown().await;
}

/// POSTs a good WHIP offer to `url`.
async fn post_offer(client: &reqwest::Client, url: &str) -> reqwest::Response {
    client
        .post(url)
        .header("content-type", "application/sdp")
        .body(good_offer())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// The session URL a 201 answer names.
fn session_url(base: &str, resp: &reqwest::Response) -> String {
    let location = resp.headers()["location"].to_str().expect("Location");
    format!("{base}{location}")
}
