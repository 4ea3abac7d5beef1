//! Several Parley nodes serving one set of rooms through a real Redis (Debian's
//! `redis-server`, started by the test on a free port): a room lives on one node, a request
//! that reaches another node is passed there (by proxy or by redirect) and media flows to the
//! room's node; new rooms spread over the nodes; Redis stopping stops no call and no new
//! room; a killed node's rooms open elsewhere once its record expires.

mod common;

use common::cluster::{frame, node, plays_exactly, wait_for_nodes, WAIT};
use common::hostile_call::good_offer;
use common::metrics::metric;
use common::redis::Redis;
use common::{binary, play, publish, Kind, PlayOptions, PublishOptions, Publisher, Viewer};
use parley::cluster::Signaling;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// `GET /readyz` as JSON.
async fn readyz(base: &str) -> serde_json::Value {
    reqwest::get(format!("{base}/readyz"))
        .await
        .expect("GET /readyz")
        .json()
        .await
        .expect("JSON")
}

async fn a_viewer_on_another_node_plays_the_room(signaling: Signaling, how: &str) {
    let redis = Redis::start().await;
    let a = node(&redis, "a", signaling).await;
    let b = node(&redis, "b", signaling).await;
    wait_for_nodes(&[&a, &b], 2).await;
    let (base_a, base_b) = (a.base_url(), b.base_url());

    let publisher = publish(&base_a, "stage", PublishOptions::vp8())
        .await
        .expect("publish on a");
    assert!(
        publisher
            .location
            .starts_with(&format!("{base_a}/sessions/")),
        "a cluster node's session URL is absolute: {}",
        publisher.location
    );
    assert_eq!(redis.get("parley:room:stage").await.as_deref(), Some("a"));
    let viewer = play(&base_b, "stage", PlayOptions::default())
        .await
        .expect("play through b");
    assert!(
        viewer.location.starts_with(&format!("{base_a}/sessions/")),
        "the viewer's session lives on the room's node: {}",
        viewer.location
    );
    assert_eq!((a.session_count(), b.session_count()), (2, 0));
    assert_eq!(
        metric(
            &base_b,
            &format!("parley_cluster_requests_passed_total{{how=\"{how}\"}}")
        )
        .await,
        1.0
    );
    // The session's other resources point at the room's node too.
    assert!(
        viewer
            .links
            .iter()
            .any(|l| l.contains(&format!("<{base_a}/sessions/")) && l.contains("layer")),
        "{:?}",
        viewer.links
    );

    plays_exactly(&publisher, &viewer, 0, 60).await;

    // The room API of either node sees the room, and which node serves it.
    for base in [&base_a, &base_b] {
        let list = common::room_api::list(base).await;
        let rooms = list["rooms"].as_array().expect("a list");
        assert_eq!(rooms.len(), 1, "{list}");
        assert_eq!(
            (&rooms[0]["name"], &rooms[0]["node"], &rooms[0]["viewers"]),
            (&"stage".into(), &"a".into(), &1.into()),
            "{list}"
        );
        let view = common::room_api::view(base, "stage").await;
        assert_eq!(view["node"], "a", "{view}");
    }

    // PATCH and DELETE go straight to the session URL.
    let client = reqwest::Client::new();
    let patched = client
        .patch(&viewer.location)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .body("a=end-of-candidates\r\n")
        .send()
        .await
        .expect("PATCH");
    assert_eq!(patched.status(), 204);
    let deleted = client
        .delete(&viewer.location)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 200);
    assert_eq!(a.session_count(), 1);
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn a_viewer_on_another_node_plays_the_room_through_a_proxy() {
    a_viewer_on_another_node_plays_the_room(Signaling::Proxy, "proxied").await;
}

#[tokio::test]
async fn a_viewer_on_another_node_plays_the_room_after_a_redirect() {
    a_viewer_on_another_node_plays_the_room(Signaling::Redirect, "redirected").await;
}

#[tokio::test]
async fn new_rooms_spread_over_the_nodes_by_load() {
    let redis = Redis::start().await;
    let nodes = [
        node(&redis, "a", Signaling::Proxy).await,
        node(&redis, "b", Signaling::Proxy).await,
        node(&redis, "c", Signaling::Proxy).await,
    ];
    wait_for_nodes(&nodes.iter().collect::<Vec<_>>(), 3).await;
    let client = reqwest::Client::new();
    let base = nodes[0].base_url();
    let mut on = std::collections::BTreeMap::<String, usize>::new();
    for r in 0..30 {
        let room = format!("room-{r}");
        let answer = client
            .post(format!("{base}/whip/{room}"))
            .header("content-type", "application/sdp")
            .body(good_offer())
            .send()
            .await
            .expect("POST");
        assert_eq!(answer.status(), 201, "{room}");
        let location = answer.headers()["location"]
            .to_str()
            .expect("text")
            .to_owned();
        let owner = redis
            .get(&format!("parley:room:{room}"))
            .await
            .expect("the room is claimed");
        let node = nodes
            .iter()
            .position(|n| location.starts_with(&n.base_url()))
            .expect("a node's URL");
        assert_eq!(
            ["a", "b", "c"][node],
            owner,
            "the session is on the node that holds the room's claim"
        );
        *on.entry(owner).or_default() += 1;
    }
    let counts: Vec<usize> = nodes.iter().map(|n| n.session_count()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 30, "{counts:?}");
    assert!(
        counts.iter().all(|&c| (7..=13).contains(&c)),
        "30 new rooms asked of one node spread over three by load: {on:?}"
    );
    for n in nodes {
        n.shutdown().await;
    }
}

/// Sends frames (a keyframe every tenth) at 50 a second from 0 until `stop`, counting them
/// in `sent`.
async fn stream(publisher: &Publisher, sent: &AtomicU32, stop: &watch::Receiver<bool>) {
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    let mut n = 0;
    while !*stop.borrow() {
        pace.tick().await;
        publisher
            .send_video(&frame(n), true, n * 3000)
            .await
            .expect("send");
        n += 1;
        sent.store(n, Ordering::SeqCst);
    }
}

/// Waits until the viewer has every frame of `range`.
async fn has_frames(viewer: &Viewer, range: std::ops::Range<u32>, what: &str) {
    let wanted: Vec<Vec<u8>> = range.clone().map(frame).collect();
    let got = viewer
        .wait_for(what, WAIT, |r| {
            wanted
                .iter()
                .all(|w| r.iter().any(|p| p.kind == Kind::Video && &p.payload == w))
        })
        .await;
    if let Err(e) = got {
        let received = viewer.received_of(Kind::Video);
        let missing: Vec<u32> = range
            .filter(|&n| !received.iter().any(|p| p.payload == frame(n)))
            .collect();
        panic!("{what}: {e}; missing frames {missing:?}");
    }
}

#[tokio::test]
async fn calls_go_on_and_rooms_open_while_redis_is_down_and_nodes_come_back_with_it() {
    let mut redis = Redis::start().await;
    let a = node(&redis, "a", Signaling::Proxy).await;
    let b = node(&redis, "b", Signaling::Proxy).await;
    wait_for_nodes(&[&a, &b], 2).await;
    let (base_a, base_b) = (a.base_url(), b.base_url());
    let publisher = publish(&base_a, "call", PublishOptions::vp8())
        .await
        .expect("publish on a");
    let viewer = play(&base_b, "call", PlayOptions::default())
        .await
        .expect("play through b");
    let sent = AtomicU32::new(0);
    let (stop_tx, stop) = watch::channel(false);
    let outage = async {
        has_frames(&viewer, 0..20, "the call plays").await;
        assert_eq!(readyz(&base_a).await["cluster"]["up"], true);
        assert_eq!(metric(&base_a, "parley_cluster_up").await, 1.0);

        redis.stop();
        let deadline = Instant::now() + WAIT;
        while readyz(&base_a).await["cluster"]["up"] != false
            || readyz(&base_b).await["cluster"]["up"] != false
        {
            assert!(Instant::now() < deadline, "the nodes notice Redis is gone");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(metric(&base_b, "parley_cluster_up").await, 0.0);
        assert!(metric(&base_b, "parley_redis_errors_total").await >= 1.0);
        // Still ready: a node without Redis serves on its own.
        let ready = reqwest::get(format!("{base_b}/readyz")).await.expect("GET");
        assert_eq!(ready.status(), 200);
        let health = reqwest::get(format!("{base_b}/healthz"))
            .await
            .expect("GET");
        assert_eq!(health.status(), 200);

        // The call goes on, and a new room opens on the node asked, without waiting.
        let now = sent.load(Ordering::SeqCst);
        has_frames(&viewer, 0..now + 20, "the call goes on without Redis").await;
        let started = Instant::now();
        let fresh = publish(&base_b, "fresh", PublishOptions::vp8())
            .await
            .expect("a new room opens while Redis is down");
        assert!(fresh.location.starts_with(&base_b), "{}", fresh.location);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "without Redis a new room does not wait for it: {:?}",
            started.elapsed()
        );

        // Redis comes back empty: both nodes register again and claim the rooms they serve.
        redis.restart().await;
        wait_for_nodes(&[&a, &b], 2).await;
        let deadline = Instant::now() + WAIT;
        loop {
            let (call, new) = (
                redis.get("parley:room:call").await,
                redis.get("parley:room:fresh").await,
            );
            if call.as_deref() == Some("a") && new.as_deref() == Some("b") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the rooms are claimed again by the nodes serving them: {call:?} {new:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let now = sent.load(Ordering::SeqCst);
        has_frames(&viewer, 0..now + 20, "the call goes on after Redis returns").await;
        let _ = stop_tx.send(true);
        drop(fresh);
    };
    tokio::join!(stream(&publisher, &sent, &stop), outage);
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn a_killed_nodes_room_opens_on_another_once_its_record_expires() {
    let redis = Redis::start().await;
    let url = redis.url();
    let (child, addr, _stdout) = binary::spawn(&["--redis-url", &url, "--node-id", "a"], &[]);
    let mut child = binary::Reap(child);
    let base_a = format!("http://{addr}");
    let b = node(&redis, "b", Signaling::Proxy).await;
    wait_for_nodes(&[&b], 2).await;
    let client = reqwest::Client::new();
    let post = |base: String| {
        let client = client.clone();
        async move {
            client
                .post(format!("{base}/whip/lost"))
                .header("content-type", "application/sdp")
                .body(good_offer())
                .send()
                .await
                .expect("POST")
        }
    };
    assert_eq!(post(base_a.clone()).await.status(), 201);
    assert_eq!(redis.get("parley:room:lost").await.as_deref(), Some("a"));

    child.0.kill().expect("SIGKILL");
    let _ = child.0.wait();
    let killed = Instant::now();
    // Until a's record expires, b passes the room to a, which does not answer: 503 with
    // Retry-After, at once. Then b takes the room.
    let base_b = b.base_url();
    let answer = loop {
        let answer = post(base_b.clone()).await;
        match answer.status().as_u16() {
            201 => break answer,
            503 => assert!(answer.headers().contains_key("retry-after")),
            other => panic!("201 or 503 while a's record lives, not {other}"),
        }
        assert!(
            killed.elapsed() < parley::cluster::store::NODE_TTL + Duration::from_secs(5),
            "the room opens elsewhere within the node record's lifetime"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let location = answer.headers()["location"]
        .to_str()
        .expect("text")
        .to_owned();
    assert!(location.starts_with(&base_b), "{location}");
    assert_eq!(redis.get("parley:room:lost").await.as_deref(), Some("b"));
    assert_eq!(b.cluster.as_ref().map(|c| c.nodes().len()), Some(1));
    b.shutdown().await;
}

#[tokio::test]
async fn a_node_named_by_host_name_is_trusted_with_its_clients_addresses() {
    let redis = Redis::start().await;
    let a = common::cluster::node_with(&redis, "a", |c| c.rate_limit_per_ip = 1).await;
    // b's URL names it by host name: a resolves it to learn that requests from 127.0.0.1
    // come from a node, and takes the client address b passes on for the request limit.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let b = common::cluster::node_with(&redis, "b", |c| {
        c.http_listen = format!("127.0.0.1:{port}").parse().expect("address");
        c.advertise_url = Some(format!("http://localhost:{port}"));
    })
    .await;
    wait_for_nodes(&[&a, &b], 2).await;
    let base_a = a.base_url();
    let cluster_a = a.cluster.clone().expect("a cluster node");
    let loopback = "127.0.0.1".parse().expect("address");
    common::cluster::eventually("a resolves b's host name", async || {
        cluster_a.node_addresses().contains(&loopback)
    })
    .await;
    let client = reqwest::Client::new();
    let post = |from: &'static str| {
        client
            .post(format!("{base_a}/whip/limits"))
            .header("content-type", "application/sdp")
            .header(parley::cluster::FORWARDED_FOR, from)
            .body(good_offer())
            .send()
    };
    // One client's burst (twice the per-second limit) is used up, then it is refused...
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(post("10.9.9.9").await.expect("POST").status().as_u16());
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // ...while another client behind the same node is not.
    assert_ne!(post("10.9.9.8").await.expect("POST").status(), 429);
    b.shutdown().await;
    a.shutdown().await;
}
