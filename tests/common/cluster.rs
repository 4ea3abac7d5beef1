//! Nodes of a cluster on 127.0.0.1 with a real Redis, and media checks across them.

use super::redis::Redis;
use super::{vp8_delta_payload, vp8_keyframe_payload, Kind, Publisher, Viewer};
use parley::cluster::Signaling;
use parley::config::Config;
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(20);

/// A node on 127.0.0.1 ephemeral ports with `redis` as its cluster.
pub async fn node(redis: &Redis, id: &str, signaling: Signaling) -> parley::Server {
    node_with(redis, id, |c| c.cluster_signaling = signaling).await
}

/// A node as [`node`] makes it, with `tune` applied to its configuration.
pub async fn node_with(redis: &Redis, id: &str, tune: impl FnOnce(&mut Config)) -> parley::Server {
    let mut config = Config::loopback();
    config.redis_url = Some(redis.url());
    config.node_id = Some(id.into());
    tune(&mut config);
    parley::start(config).await.expect("node starts")
}

/// Waits until each node's cluster is up and sees `count` live nodes.
pub async fn wait_for_nodes(nodes: &[&parley::Server], count: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let seen: Vec<(bool, usize)> = nodes
            .iter()
            .map(|n| {
                let c = n.cluster.as_ref().expect("a cluster node");
                (c.is_up(), c.nodes().len())
            })
            .collect();
        if seen.iter().all(|&(up, n)| up && n == count) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "every node sees {count} live nodes: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn frame(n: u32) -> Vec<u8> {
    match n % 10 {
        0 => vp8_keyframe_payload(n),
        _ => vp8_delta_payload(n),
    }
}

/// Sends frames `from..to` (a keyframe every tenth) at 50 a second.
pub async fn send_frames(publisher: &Publisher, from: u32, to: u32) {
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    for n in from..to {
        pace.tick().await;
        publisher
            .send_video(&frame(n), true, n * 3000)
            .await
            .expect("send");
    }
}

/// Sends frames until the viewer has every payload from `from` on (from the first keyframe
/// it gets); returns the next frame number.
pub async fn plays_exactly(publisher: &Publisher, viewer: &Viewer, from: u32, frames: u32) -> u32 {
    let to = from + frames;
    send_frames(publisher, from, to).await;
    let wanted: Vec<Vec<u8>> = (from..to).map(frame).collect();
    let got = viewer
        .wait_for("the frames sent", WAIT, |r| {
            let video: Vec<&[u8]> = r
                .iter()
                .filter(|p| p.kind == Kind::Video && !p.payload.is_empty())
                .map(|p| p.payload.as_slice())
                .collect();
            wanted.iter().all(|w| video.contains(&w.as_slice()))
        })
        .await;
    if let Err(e) = got {
        let received = viewer.received_of(Kind::Video);
        let missing: Vec<u32> = (from..to)
            .filter(|&n| !received.iter().any(|p| p.payload == frame(n)))
            .collect();
        panic!("the viewer gets every frame {from}..{to}: {e}; missing {missing:?}");
    }
    to
}

/// Waits until `what` holds, polling the nodes' state every 50 ms.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
