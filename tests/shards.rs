//! Two media shards on one UDP port, through a real server with webrtc-rs peers: rooms are
//! placed on both, every member of every room gets exactly the other members' media, and
//! the datagrams the kernel gives to the wrong shard reach their session through the
//! hand-off. The room API and the room events see every member wherever its room lives. A
//! broadcast larger than its home shard spreads its viewers over both, with the publisher's
//! packets relayed once per packet to the other shard.

mod common;

use common::metrics::metric;
use common::{
    is_event, play, publish, vp8_delta_payload, vp8_keyframe_payload, Events, Kind, Member,
    PlayOptions, PublishOptions, Publisher, Relay, SentLog, Viewer,
};
use parley::config::Config;
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// The shard a session URL's id names (its first two hex digits).
fn shard_of(location: &str) -> usize {
    let id = location.rsplit('/').next().expect("an id");
    usize::from_str_radix(&id[..2], 16).expect("hex shard")
}

#[tokio::test]
async fn rooms_on_two_shards_each_get_exactly_their_media_whichever_socket_the_kernel_picks() {
    let mut config = Config::loopback();
    config.shards = 2;
    let server = parley::start(config).await.expect("server");
    let base = server.base_url();
    let log = SentLog::default();
    let rooms = ["r0", "r1", "r2", "r3"];
    // Names are unique over the rooms, so a payload names its room too.
    let names = |r: usize| ["ann", "bob", "cat"].map(|n| format!("{n}-r{r}"));
    let mut members: Vec<(usize, Member)> = Vec::new();
    let mut viewers: Vec<(usize, String, Viewer)> = Vec::new();
    let mut shards = vec![BTreeSet::new(); rooms.len()];
    for (r, room) in rooms.iter().enumerate() {
        for (i, name) in names(r).iter().enumerate() {
            let m = Member::join(&base, room, name, (r * 10 + i) as u32, &log).await;
            shards[r].insert(shard_of(&m.publisher.location));
            members.push((r, m));
            let v = play(&base, room, PlayOptions::slots(name, 2, 2))
                .await
                .expect("play");
            shards[r].insert(shard_of(&v.location));
            viewers.push((r, name.clone(), v));
        }
    }
    for (r, on) in shards.iter().enumerate() {
        assert_eq!(on.len(), 1, "room r{r} lives on one shard: {on:?}");
    }
    let used: BTreeSet<usize> = shards.iter().flatten().copied().collect();
    assert_eq!(used.len(), 2, "new rooms are spread over both shards");

    for (r, name, viewer) in &viewers {
        let all = names(*r);
        let others: Vec<&String> = all.iter().filter(|n| *n != name).collect();
        let got = viewer
            .wait_for(
                "20 video and 20 audio packets from each other member",
                WAIT,
                |got| {
                    others.iter().all(|o| {
                        log.count(got, Kind::Video, o) >= 20 && log.count(got, Kind::Audio, o) >= 20
                    })
                },
            )
            .await
            .unwrap_or_else(|e| panic!("r{r}/{name}: {e}"));
        // Padding-only packets (probes of the viewer's link) carry no media.
        for packet in got.iter().filter(|p| !p.payload.is_empty()) {
            let (who, _) = log.sender(packet).unwrap_or_else(|| {
                panic!(
                    "every payload was sent by a member: {:?} {} bytes, seq {}, {:02x?}",
                    packet.kind,
                    packet.payload.len(),
                    packet.seq,
                    &packet.payload[..packet.payload.len().min(12)]
                )
            });
            assert!(
                others.contains(&&who),
                "{name} gets only the other members of its room, not {who}"
            );
        }
    }
    let handoffs = metric(&base, "parley_shard_handoffs_total").await;
    assert!(
        handoffs > 0.0,
        "24 clients on 2 sockets: the kernel gave some first checks to the other shard"
    );
    // Where the steering program loads (root, or CAP_BPF and CAP_NET_ADMIN; `steer`'s unit
    // test tells a refusal from a program the kernel rejects), the kernel steers each
    // confirmed address to its shard: in steady media (almost) nothing is handed over.
    if metric(&base, "parley_shard_steering").await == 1.0 {
        let (h0, r0) = (
            metric(&base, "parley_shard_handoffs_total").await,
            metric(&base, "parley_udp_received_datagrams_total").await,
        );
        let deadline = tokio::time::Instant::now() + WAIT;
        let r1 = loop {
            let r = metric(&base, "parley_udp_received_datagrams_total").await;
            if r >= r0 + 3000.0 || tokio::time::Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let h1 = metric(&base, "parley_shard_handoffs_total").await;
        assert!(r1 >= r0 + 3000.0, "media keeps coming");
        assert!(
            h1 - h0 <= (r1 - r0) / 100.0,
            "steered: {} of {} datagrams handed over",
            h1 - h0,
            r1 - r0
        );
    }

    let http = reqwest::Client::new();
    let listed: serde_json::Value = http
        .get(format!("{base}/rooms"))
        .send()
        .await
        .expect("GET /rooms")
        .json()
        .await
        .expect("JSON");
    let listed: Vec<(String, u64)> = listed["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_owned(),
                r["participants"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = rooms.iter().map(|r| (r.to_string(), 3)).collect();
    assert_eq!(listed, expected, "every room of both shards, by name");
    for (r, room) in rooms.iter().enumerate() {
        let view: serde_json::Value = http
            .get(format!("{base}/rooms/{room}"))
            .send()
            .await
            .expect("GET /rooms/{room}")
            .json()
            .await
            .expect("JSON");
        assert_eq!(
            view["participants"].as_array().map(Vec::len),
            Some(3),
            "{room}: {view}"
        );
        let on = shards[r].first().copied().expect("placed") as u64;
        assert_eq!(
            view["shard"].as_u64(),
            Some(on),
            "the shard its session ids name"
        );
        // The peers offered host candidates on 127.0.0.1 and reach Parley over UDP.
        for p in view["participants"].as_array().expect("participants") {
            for session in p["sessions"].as_array().expect("sessions") {
                assert_eq!(session["transport"], "udp", "{session}");
                assert_eq!(session["candidate"], "host", "{session}");
            }
        }
    }
    assert_eq!(metric(&base, "parley_rooms").await, 4.0);
    assert_eq!(
        metric(
            &base,
            "parley_session_paths{candidate=\"host\",transport=\"udp\"}"
        )
        .await,
        24.0,
        "every session of both shards, connected over UDP from a host candidate"
    );
    assert_eq!(
        metric(
            &base,
            "parley_session_paths{candidate=\"relay\",transport=\"udp\"}"
        )
        .await,
        0.0
    );

    for (_, _, v) in viewers {
        v.close().await;
    }
    for (_, m) in members {
        m.leave().await;
    }
    assert_eq!(server.session_count(), 0);
    for room in rooms {
        let status = http
            .get(format!("{base}/rooms/{room}"))
            .send()
            .await
            .expect("GET /rooms/{room}")
            .status();
        assert_eq!(status, 404, "{room} is gone with its members");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_media_port_in_use_is_refused_although_the_shards_share_theirs() {
    let first = parley::start(Config::loopback()).await.expect("server");
    let mut config = Config::loopback();
    config.shards = 2;
    config.media_listen = first.media_addr;
    let err = parley::start(config)
        .await
        .err()
        .expect("a second server on the same media port is refused");
    assert!(err.to_string().contains("media socket"), "{err}");
    first.shutdown().await;
}

/// Sends VP8 frames every 20 ms, a keyframe every tenth, numbered from `first`, until
/// `stop` says so; returns the number after the last sent.
async fn broadcast(
    publisher: &Publisher,
    first: u32,
    frames: u32,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> u32 {
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    let mut n = first;
    while n < first + frames && !*stop.borrow() {
        pace.tick().await;
        let payload = match n % 10 {
            0 => vp8_keyframe_payload(n),
            _ => vp8_delta_payload(n),
        };
        let _ = publisher.send_video(&payload, true, n * 3000).await;
        n += 1;
    }
    n
}

#[tokio::test]
async fn a_broadcast_larger_than_its_shard_reaches_viewers_on_both_with_nacks_and_keyframe_requests(
) {
    let mut relay = Relay::bind().await.expect("relay");
    let mut config = Config::loopback();
    config.shards = 2;
    // The publisher and one viewer on the room's home shard, then viewers spread.
    config.spread_after = 2;
    config.public_port = Some(relay.addr.port());
    // The publisher and six viewers fill the room, wherever they are served.
    config.max_participants_per_room = 7;
    let server = parley::start(config).await.expect("server");
    relay.forward_to(server.media_addr);
    let base = server.base_url();
    let publisher = publish(&base, "big", PublishOptions::vp8())
        .await
        .expect("publish");
    let home = shard_of(&publisher.location);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);

    // Frames flow (keyframes among them) while viewers join one by one. The first viewer
    // placed on the other shard connects there and asks for a keyframe, which only the
    // home shard can pass to the publisher.
    let mut viewers: Vec<Viewer> = Vec::new();
    let joining = async {
        let mut relayed_keyframe_request = false;
        for _ in 0..6 {
            let before = publisher.keyframe_requests();
            let v = play(&base, "big", PlayOptions::default())
                .await
                .expect("play");
            if shard_of(&v.location) != home && !relayed_keyframe_request {
                publisher
                    .wait_for_keyframe_request(before + 1, WAIT)
                    .await
                    .expect("a viewer on the other shard gets the publisher asked for a keyframe");
                relayed_keyframe_request = true;
            }
            viewers.push(v);
        }
        let _ = stop_tx.send(true);
    };
    let (next, ()) = tokio::join!(broadcast(&publisher, 0, u32::MAX / 4, &stop), joining);
    let on: Vec<usize> = viewers.iter().map(|v| shard_of(&v.location)).collect();
    assert_eq!(on[0], home, "the first viewer joins the home shard: {on:?}");
    assert!(
        on.iter().any(|&s| s != home),
        "viewers beyond the home shard's share go to the other shard: {on:?}"
    );

    // Once every viewer plays (the last one may still wait for a keyframe), one datagram in
    // 10 toward the clients is lost: every viewer, on either shard, gets every frame back
    // through its NACKs, answered from its own shard's cache.
    let (_, no_stop) = tokio::sync::watch::channel(false);
    let next = next.next_multiple_of(10);
    let next = broadcast(&publisher, next, 10, &no_stop).await;
    for (i, v) in viewers.iter().enumerate() {
        v.wait_for("a first frame", WAIT, |r| {
            r.iter().any(|p| p.kind == Kind::Video)
        })
        .await
        .unwrap_or_else(|e| panic!("viewer {i}: {e}"));
    }
    relay.drop_toward_clients(10);
    const FRAMES: u32 = 150;
    let last = broadcast(&publisher, next, FRAMES, &no_stop).await;
    // A lost packet shows as a gap once a later one arrives: the last ten frames only
    // reveal losses before them.
    let wanted: Vec<Vec<u8>> = (next..last - 10)
        .map(|n| match n % 10 {
            0 => vp8_keyframe_payload(n),
            _ => vp8_delta_payload(n),
        })
        .collect();
    for (i, v) in viewers.iter().enumerate() {
        let got = v
            .wait_for("every frame of the burst, lost ones resent", WAIT, |r| {
                wanted
                    .iter()
                    .all(|w| r.iter().any(|p| p.kind == Kind::Video && p.payload == *w))
            })
            .await
            .unwrap_or_else(|e| {
                let got = v.received_of(Kind::Video);
                let missing: Vec<usize> = (0..wanted.len())
                    .filter(|k| !got.iter().any(|p| p.payload == wanted[*k]))
                    .collect();
                let mut seqs: Vec<u16> = got.iter().map(|p| p.seq).collect();
                seqs.sort_unstable();
                panic!(
                    "viewer {i} on shard {} (home {home}): {e}; missing frames {missing:?} of \
                     the burst; seqs {seqs:?}",
                    on[i]
                )
            });
        // Up to the last wanted frame (the tail may still wait for its resends).
        let end = got
            .iter()
            .find(|p| wanted.last() == Some(&p.payload))
            .map(|p| p.seq)
            .expect("the last wanted frame");
        let mut seqs: Vec<u16> = got
            .iter()
            .filter(|p| p.kind == Kind::Video && p.seq <= end)
            .map(|p| p.seq)
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "viewer {i}: no gap in its numbering"
        );
    }
    let relayed = metric(&base, "parley_shard_relayed_packets_total").await;
    assert!(
        relayed >= f64::from(FRAMES),
        "each frame relayed to the other shard once: {relayed}"
    );
    assert!(
        relayed < f64::from(last) * 1.5,
        "once per packet, not per viewer: {relayed} for {last} frames"
    );
    assert!(metric(&base, "parley_retransmissions_sent_total").await >= 1.0);

    // The room API sees one room, on its home shard, served by both, with every viewer.
    let view = common::room_api::view(&base, "big").await;
    assert_eq!(view["shard"].as_u64(), Some(home as u64), "{view}");
    assert_eq!(
        view["shards"].as_array().map(Vec::len),
        Some(2),
        "served by both: {view}"
    );
    let participants = view["participants"].as_array().expect("participants");
    assert_eq!(
        participants.len(),
        7,
        "the publisher and six viewers: {view}"
    );
    let publishing: Vec<&serde_json::Value> = participants
        .iter()
        .filter(|p| p["publishing"] == true)
        .collect();
    assert_eq!(
        publishing.len(),
        1,
        "the publisher once, not its mirror: {view}"
    );
    let listed = common::room_api::list(&base).await;
    let rooms = listed["rooms"].as_array().expect("rooms");
    assert_eq!(rooms.len(), 1, "one room over both shards: {listed}");
    assert_eq!(rooms[0]["viewers"].as_u64(), Some(6), "{listed}");
    assert_eq!(rooms[0]["publishers"].as_u64(), Some(1), "{listed}");
    assert_eq!(metric(&base, "parley_rooms").await, 1.0);
    let refused = play(&base, "big", PlayOptions::default()).await;
    match refused {
        Err(common::HarnessError::Status { status, .. }) => assert_eq!(
            status, 403,
            "a seventh viewer finds the room full, counted over both shards"
        ),
        Err(e) => panic!("a seventh viewer is refused with 403, not {e}"),
        Ok(v) => panic!("a seventh viewer is refused, not served at {}", v.location),
    }

    for v in viewers {
        v.close().await;
    }
    publisher.close().await;
    assert_eq!(server.session_count(), 0);
    let gone = reqwest::get(format!("{base}/rooms/big"))
        .await
        .expect("GET /rooms/big")
        .status();
    assert_eq!(gone, 404, "gone with its sessions on both shards");
    server.shutdown().await;
}

/// Waits until `events` has a `kind` event naming `who`.
async fn saw(events: &Events, kind: &str, who: &str) {
    events
        .wait_for(&format!("{kind} {who}"), WAIT, |e| {
            e.iter().any(|e| is_event(e, kind, &[("participant", who)]))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn room_events_name_every_member_of_a_room_spread_over_shards() {
    let mut config = Config::loopback();
    config.shards = 2;
    config.spread_after = 2;
    let server = parley::start(config).await.expect("server");
    let base = server.base_url();
    let mut opts = PublishOptions::vp8();
    opts.participant = Some("stage".to_owned());
    let publisher = publish(&base, "spread", opts).await.expect("publish");
    let home = shard_of(&publisher.location);
    let viewer = |name: &str| play(&base, "spread", PlayOptions::slots(name, 1, 1));

    // Ann joins the home shard; Bob, past --spread-after, the other one.
    let ann = viewer("ann").await.expect("ann plays");
    assert_eq!(shard_of(&ann.location), home);
    let ann_events = Events::open(&ann.location, None)
        .await
        .expect("ann's events");
    let bob = viewer("bob").await.expect("bob plays");
    assert_ne!(
        shard_of(&bob.location),
        home,
        "bob is served by the other shard"
    );
    saw(&ann_events, "participant_joined", "bob").await;

    // Bob's first events name everyone, wherever they are served.
    let bob_events = Events::open(&bob.location, None)
        .await
        .expect("bob's events");
    for who in ["stage", "ann", "bob"] {
        saw(&bob_events, "participant_joined", who).await;
    }

    // Ann leaves: Bob hears it from the other shard.
    ann.close().await;
    saw(&bob_events, "participant_left", "ann").await;

    // Cat joins (wherever placement puts her) and hears Bob leave.
    let cat = viewer("cat").await.expect("cat plays");
    saw(&bob_events, "participant_joined", "cat").await;
    let cat_events = Events::open(&cat.location, None)
        .await
        .expect("cat's events");
    saw(&cat_events, "participant_joined", "bob").await;
    bob.close().await;
    saw(&cat_events, "participant_left", "bob").await;
    let left: Vec<_> = cat_events
        .all()
        .into_iter()
        .filter(|e| e["type"] == "participant_left")
        .collect();
    assert_eq!(left.len(), 1, "one left event, for bob: {left:?}");
    let joined_twice = bob_events
        .all()
        .iter()
        .filter(|e| is_event(e, "participant_joined", &[("participant", "stage")]))
        .count();
    assert_eq!(joined_twice, 1, "each member announced once");
    cat.close().await;
    publisher.close().await;
    server.shutdown().await;
}
