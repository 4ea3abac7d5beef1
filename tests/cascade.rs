//! Cascading over a real Redis: a broadcast held by node A, viewers that reach node B are
//! served by B from one upstream session B plays from A. Every viewer gets every frame;
//! B plays the room once however many viewers it has; a viewer's keyframe request on B
//! reaches the publisher on A; B's upstream ends (on A too) once its viewers are gone; what
//! is lost between the nodes is repaired; the copy carries the broadcast's codec and every
//! simulcast layer, and each viewer on B gets the layer its limits allow; B's viewers play
//! on when A dies and the publisher returns; a cascade A refuses leaves nothing on B; a
//! draining A's broadcast takes new viewers through B.

mod common;

use common::cluster::{
    eventually, frame, node_with, plays_exactly, send_frames, wait_for_nodes, WAIT,
};
use common::hostile_storm::play_storming;
use common::layer_api::{post_layer, LAYER_REL};
use common::layered::{check_stream, describe, runs, tagged};
use common::metrics::metric;
use common::redis::Redis;
use common::simulcast::{publish_simulcast, SimulcastOptions};
use common::{binary, play, publish, Kind, PlayOptions, PublishOptions, Relay, Shape};
use std::time::Duration;

/// The admin token of the nodes that have one.
const ADMIN: &str = "ops-secret";

/// Cascades every broadcast viewer that reaches a node not holding the room.
fn cascade(config: &mut parley::config::Config) {
    config.cluster_cascade_sessions = 0;
}

/// Two nodes that cascade every broadcast viewer that reaches the node not holding the room.
async fn cascading_pair(redis: &Redis) -> (parley::Server, parley::Server) {
    let a = node_with(redis, "a", cascade).await;
    let b = node_with(redis, "b", cascade).await;
    wait_for_nodes(&[&a, &b], 2).await;
    (a, b)
}

#[tokio::test]
async fn viewers_on_another_node_are_served_there_from_one_upstream() {
    let redis = Redis::start().await;
    let (a, b) = cascading_pair(&redis).await;
    let (base_a, base_b) = (a.base_url(), b.base_url());

    let publisher = publish(&base_a, "show", PublishOptions::vp8())
        .await
        .expect("publish on a");
    let first = play(&base_b, "show", PlayOptions::default())
        .await
        .expect("play on b");
    let second = play(&base_b, "show", PlayOptions::default())
        .await
        .expect("play on b");
    for v in [&first, &second] {
        assert!(
            v.location.starts_with(&format!("{base_b}/sessions/")),
            "a cascaded viewer's session lives on the node it reached: {}",
            v.location
        );
    }
    // A serves the publisher and one session for b, whatever b's viewer count; b serves
    // its two viewers and its upstream.
    assert_eq!((a.session_count(), b.session_count()), (2, 3));

    let next = plays_exactly(&publisher, &first, 0, 60).await;
    plays_exactly(&publisher, &second, next, 60).await;

    assert_eq!(
        metric(
            &base_b,
            "parley_cluster_requests_passed_total{how=\"cascaded\"}"
        )
        .await,
        2.0
    );
    eventually("b counts its cascade", async || {
        metric(&base_b, "parley_cluster_cascade_sessions").await == 1.0
    })
    .await;
    // The room API: A's view has b's upstream among its viewers; B's says where it plays
    // the room from; the cluster-wide view of a node without the room shows the owner's.
    let on_a = common::room_api::view(&base_a, "show").await;
    let names: Vec<&str> = on_a["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&"cascade-b"), "{on_a}");
    let on_b = common::room_api::view(&base_b, "show").await;
    assert_eq!(
        (&on_b["node"], &on_b["cascade_from"]),
        (&"b".into(), &"a".into())
    );
    let list = common::room_api::list(&base_a).await;
    let cascaded: Vec<&serde_json::Value> = list["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .filter(|r| r["cascade_from"] == "a")
        .collect();
    assert_eq!(cascaded.len(), 1, "{list}");
    assert_eq!(cascaded[0]["node"], "b", "{list}");

    // A publisher that reaches b goes to a: b only plays the room.
    let late = publish(
        &base_b,
        "show",
        PublishOptions {
            participant: Some("second".into()),
            ..PublishOptions::vp8()
        },
    )
    .await
    .expect("publish through b");
    assert!(late.location.starts_with(&base_a), "{}", late.location);
    drop(late);

    // Once its viewers are gone, b ends its upstream, here and on a.
    first.close().await;
    second.close().await;
    eventually("b ends its idle upstream", async || b.session_count() == 0).await;
    eventually("a ends b's session", async || a.session_count() <= 2).await;
    eventually("b no longer counts a cascade", async || {
        metric(&base_b, "parley_cluster_cascade_sessions").await == 0.0
    })
    .await;
    drop(publisher);
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn a_keyframe_request_on_the_cascade_reaches_the_publisher() {
    let redis = Redis::start().await;
    let (a, b) = cascading_pair(&redis).await;
    let (base_a, base_b) = (a.base_url(), b.base_url());
    let publisher = publish(&base_a, "pli", PublishOptions::vp8())
        .await
        .expect("publish on a");
    let viewer = play(&base_b, "pli", PlayOptions::default())
        .await
        .expect("play on b");
    let next = plays_exactly(&publisher, &viewer, 0, 30).await;

    // A viewer on b that asks for keyframes over and over: b passes them up (at most one
    // every half second per layer), a passes them to the publisher.
    let before = publisher.keyframe_requests();
    let storm = play_storming(&base_b, "pli", Duration::from_millis(100))
        .await
        .expect("a storming viewer on b");
    storm.storm(true);
    let sending = send_frames(&publisher, next, next + 150);
    let asked = publisher.wait_for_keyframe_request(before + 3, WAIT);
    let (_, asked) = tokio::join!(sending, asked);
    asked.expect("the viewer's keyframe requests reach the publisher through the cascade");
    assert!(storm.plis_sent() >= 3);
    let got = viewer.received_of(Kind::Video);
    assert!(
        got.iter().any(|p| p.payload == frame(next)),
        "media still flows"
    );
    drop(storm);
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn cascaded_viewers_play_on_when_the_rooms_node_dies_and_its_publisher_returns() {
    let redis = Redis::start().await;
    let url = redis.url();
    let args = [
        "--redis-url",
        &url,
        "--node-id",
        "a",
        "--cluster-cascade-sessions",
        "0",
    ];
    let (child, addr, _stdout) = binary::spawn(&args, &[]);
    let mut child = binary::Reap(child);
    let base_a = format!("http://{addr}");
    let b = node_with(&redis, "b", cascade).await;
    wait_for_nodes(&[&b], 2).await;
    let base_b = b.base_url();
    let publisher = publish(&base_a, "live", PublishOptions::vp8())
        .await
        .expect("publish on a");
    let viewer = play(&base_b, "live", PlayOptions::default())
        .await
        .expect("play on b");
    let next = plays_exactly(&publisher, &viewer, 0, 30).await;

    child.0.kill().expect("SIGKILL");
    let _ = child.0.wait();
    drop(publisher);
    // b sees a's record expire and ends the cascade at once; its viewer stays.
    eventually("b ends the cascade from the node that died", async || {
        metric(&base_b, "parley_cluster_cascade_sessions").await == 0.0
    })
    .await;
    assert_eq!(b.session_count(), 1, "the viewer's session lives on");

    // The publisher comes back through b: the room is b's now, and the viewer plays it.
    let back = publish(&base_b, "live", PublishOptions::vp8())
        .await
        .expect("publish again, through b");
    assert!(back.location.starts_with(&base_b), "{}", back.location);
    plays_exactly(&back, &viewer, next, 30).await;
    drop(back);
    b.shutdown().await;
}

#[tokio::test]
async fn a_cascade_carries_the_broadcasts_codec_and_refuses_viewers_who_cannot_play_it() {
    let redis = Redis::start().await;
    let (a, b) = cascading_pair(&redis).await;
    let (base_a, base_b) = (a.base_url(), b.base_url());
    let publisher = publish(&base_a, "h264", PublishOptions::h264("42e01f"))
        .await
        .expect("publish H264 on a");
    // An IDR slice: what a viewer on b must get byte for byte.
    let idr = |n: u32| [&[0x65, 0x88, 0x84][..], &n.to_be_bytes()].concat();
    // The room is a broadcast with H264 video on a before anyone plays it from b.
    let mut n = 0;
    eventually("a lists the publisher's H264 track", async || {
        n += 1;
        publisher
            .send_video(&idr(n), true, n * 3000)
            .await
            .expect("send");
        let view = common::room_api::view(&base_a, "h264").await;
        view["participants"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["tracks"].as_array().into_iter().flatten())
            .any(|t| t["codec"] == "H264")
    })
    .await;
    let viewer = play(&base_b, "h264", PlayOptions::default())
        .await
        .expect("play on b");
    let sending = async {
        for m in n + 1..n + 250 {
            publisher
                .send_video(&idr(m), true, m * 3000)
                .await
                .expect("send");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let played = viewer.wait_for("H264 frames through the cascade", WAIT, |r| {
        r.iter()
            .any(|p| p.kind == Kind::Video && p.payload.starts_with(&[0x65, 0x88, 0x84]))
    });
    tokio::select! {
        got = played => { got.expect("the viewer on b plays the H264 broadcast"); }
        () = sending => panic!("no H264 frame reached the viewer on b"),
    }
    let on_b = common::room_api::view(&base_b, "h264").await;
    let codecs: Vec<&serde_json::Value> = on_b["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["tracks"].as_array().into_iter().flatten())
        .map(|t| &t["codec"])
        .collect();
    assert_eq!(codecs, ["H264"], "b's copy says what it carries: {on_b}");
    // A viewer that offers only VP8 can play nothing of it: refused with the reason.
    let vp8_only = common::hostile_call::raw_offer(
        "Vwxy",
        "abcdefghijklmnopqrstuvwx",
        &["opus/48000/2"],
        &["VP8/90000"],
        "recvonly",
    );
    let refused = reqwest::Client::new()
        .post(format!("{base_b}/whep/h264"))
        .header("content-type", "application/sdp")
        .body(vp8_only)
        .send()
        .await
        .expect("POST");
    assert_eq!(refused.status(), 422);
    drop(viewer);
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn what_the_cascade_loses_between_the_nodes_is_repaired_from_the_owners_cache() {
    let redis = Redis::start().await;
    // a's media goes through a relay that drops one datagram in 12 toward the clients it
    // shapes: b's upstream, not the publisher.
    let mut relay = Relay::bind().await.expect("relay");
    let port = relay.addr.port();
    let a = node_with(&redis, "a", |c| {
        cascade(c);
        c.public_port = Some(port);
    })
    .await;
    relay.forward_to(a.media_addr);
    let b = node_with(&redis, "b", cascade).await;
    wait_for_nodes(&[&a, &b], 2).await;
    let (base_a, base_b) = (a.base_url(), b.base_url());
    let publisher = publish(&base_a, "lossy", PublishOptions::vp8())
        .await
        .expect("publish on a");
    relay.shape_new_clients(Shape::rate(0).loss(1.0 / 12.0, 7));
    let viewer = play(&base_b, "lossy", PlayOptions::default())
        .await
        .expect("play on b");
    // Every frame from the first keyframe on reaches b's viewer: b asks a again for what
    // was lost on the way (NACK), and a resends it from its cache.
    plays_exactly(&publisher, &viewer, 0, 150).await;
    let lost: u64 = relay
        .client_stats()
        .iter()
        .filter(|c| c.shaped)
        .map(|c| c.stats.loss_drops)
        .sum();
    assert!(lost > 10, "the relay dropped packets toward b: {lost}");
    assert!(metric(&base_a, "parley_retransmissions_sent_total").await >= 10.0);
    drop((viewer, publisher));
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn a_cascade_carries_every_simulcast_layer_and_each_viewer_there_gets_its_own() {
    let redis = Redis::start().await;
    let cascade_without_bwe = |c: &mut parley::config::Config| {
        cascade(c);
        // Layers by the viewers' limits only, as in the simulcast tests.
        c.bwe = false;
        // The nodes prove to each other that an upstream is theirs with the admin token.
        c.admin_token = Some(ADMIN.into());
    };
    let a = node_with(&redis, "a", cascade_without_bwe).await;
    let b = node_with(&redis, "b", cascade_without_bwe).await;
    wait_for_nodes(&[&a, &b], 2).await;
    let (base_a, base_b) = (a.base_url(), b.base_url());
    let rids = ["q", "h", "f"];
    let publisher = publish_simulcast(&base_a, "sim", SimulcastOptions::browser_vp8())
        .await
        .expect("publish simulcast on a");
    eventually("a sees the three layers", async || {
        let view = common::room_api::view_as(&base_a, "sim", ADMIN).await;
        layer_rids(&view) == ["q", "h", "f"]
    })
    .await;

    let auto = play(&base_b, "sim", PlayOptions::default())
        .await
        .expect("play on b");
    let small = play(&base_b, "sim", PlayOptions::default())
        .await
        .expect("play on b");
    let mid = small
        .slots()
        .into_iter()
        .find(|s| s.kind == Kind::Video)
        .map(|s| s.mid)
        .expect("a video slot");
    let layer_url = small.link(LAYER_REL).expect("a layer Link");
    let (status, text) = post_layer(
        &layer_url,
        &format!(r#"{{"mediaId":"{mid}","maxWidth":320}}"#),
    )
    .await;
    assert_eq!(status, 204, "{text}");

    // b plays every layer from a over one session, and gives each viewer its own.
    for (viewer, layer) in [(&auto, 2u8), (&small, 0)] {
        let got = viewer
            .wait_for(&format!("layer {}", rids[usize::from(layer)]), WAIT, |r| {
                runs(&tagged(r))
                    .last()
                    .is_some_and(|run| run.layer == layer && run.packets >= 30)
            })
            .await
            .map(|r| tagged(&r))
            .unwrap_or_else(|e| panic!("{e}: {}", describe(&tagged(&viewer.received()), &rids)));
        if let Err(e) = check_stream(&got, true) {
            panic!("{e}\nlayer runs: {}", describe(&got, &rids));
        }
    }
    assert_eq!((a.session_count(), b.session_count()), (2, 3));
    let on_b = common::room_api::view_as(&base_b, "sim", ADMIN).await;
    assert_eq!(
        layer_rids(&on_b),
        ["q", "h", "f"],
        "b's copy has every layer, named as on a: {on_b}"
    );
    drop((auto, small));
    publisher.close().await;
    b.shutdown().await;
    a.shutdown().await;
}

/// The rids of the live layers of a room view's video track, smallest first.
fn layer_rids(view: &serde_json::Value) -> Vec<String> {
    let mut layers: Vec<(u64, String)> = view["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["tracks"].as_array().into_iter().flatten())
        .filter(|t| t["kind"] == "video")
        .flat_map(|t| t["layers"].as_array().into_iter().flatten())
        .map(|l| {
            let rank = l["spatialLayerId"].as_u64().unwrap_or(0);
            (rank, l["rid"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    layers.sort();
    layers.into_iter().map(|(_, rid)| rid).collect()
}

#[tokio::test]
async fn a_cascade_its_owner_refuses_leaves_nothing_behind_and_the_viewer_gets_the_owners_answer() {
    let redis = Redis::start().await;
    let full_at_two = |c: &mut parley::config::Config| {
        cascade(c);
        c.max_participants_per_room = 2;
    };
    let a = node_with(&redis, "a", full_at_two).await;
    let b = node_with(&redis, "b", full_at_two).await;
    wait_for_nodes(&[&a, &b], 2).await;
    let (base_a, base_b) = (a.base_url(), b.base_url());
    let _publisher = publish(&base_a, "full", PublishOptions::vp8())
        .await
        .expect("publish on a");
    let _viewer = play(&base_a, "full", PlayOptions::default())
        .await
        .expect("play on a");
    // The room is full on a: b's upstream is refused, b ends it, and the viewer's request,
    // passed to a, gets a's answer.
    let refused = reqwest::Client::new()
        .post(format!("{base_b}/whep/full"))
        .header("content-type", "application/sdp")
        .body(common::hostile_call::raw_offer(
            "Abcd",
            "abcdefghijklmnopqrstuvwx",
            &["opus/48000/2"],
            &["VP8/90000"],
            "recvonly",
        ))
        .send()
        .await
        .expect("POST");
    assert_eq!(refused.status(), 403);
    let reason = refused.text().await.expect("a reason");
    assert!(reason.contains("full"), "{reason}");
    assert_eq!(
        b.session_count(),
        0,
        "b keeps no upstream it could not start"
    );
    assert_eq!(
        metric(&base_b, "parley_cluster_cascade_sessions").await,
        0.0
    );
    assert_eq!(a.session_count(), 2);
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn a_draining_owners_broadcast_takes_new_viewers_through_other_nodes() {
    let redis = Redis::start().await;
    // No cascade for load: only a draining owner sends viewers through b.
    let a = node_with(&redis, "a", |_| {}).await;
    let b = node_with(&redis, "b", |_| {}).await;
    wait_for_nodes(&[&a, &b], 2).await;
    let (base_a, base_b) = (a.base_url(), b.base_url());
    let publisher = publish(&base_a, "farewell", PublishOptions::vp8())
        .await
        .expect("publish on a");
    let cluster_b = b.cluster.clone().expect("a cluster node");
    let draining = tokio::spawn(a.drain(Duration::from_secs(60)));
    eventually("b sees a draining", async || {
        cluster_b.nodes().iter().any(|n| n.id == "a" && n.draining)
    })
    .await;
    // a takes no new viewer itself...
    let direct = play(&base_a, "farewell", PlayOptions::default()).await;
    assert!(direct.is_err(), "a draining node refuses new sessions");
    // ...but one that reaches b plays the room from a through b.
    let viewer = play(&base_b, "farewell", PlayOptions::default())
        .await
        .expect("play through b while a drains");
    assert!(viewer.location.starts_with(&base_b), "{}", viewer.location);
    plays_exactly(&publisher, &viewer, 0, 30).await;
    // b's leaving ends its upstream on a, and with the publisher gone a's drain completes.
    viewer.close().await;
    b.shutdown().await;
    publisher.close().await;
    tokio::time::timeout(WAIT, draining)
        .await
        .expect("a drains once its sessions are gone")
        .expect("the drain task");
}
