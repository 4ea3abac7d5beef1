//! Per-viewer downlink adaptation through a real server with webrtc-rs peers behind a shaped
//! relay (token bucket, 100 ms drop-tail queue, 20 ms delay): a viewer settles on the layer
//! its link carries, follows the link down and back up, and keeps its audio; a viewer of a
//! publisher without layers to choose from is paused, then resumed. The viewers send TWCC
//! feedback (webrtc-rs's default interceptors), which is what Chromium and Firefox send.

mod common;

use common::layer_api::latest_layers;
use common::simulcast::{publish_simulcast, SimulcastOptions, SimulcastPublisher};
use common::{play, Events, Kind, PlayOptions, Relay, Shape, Viewer};
use parley::config::Config;
use serde_json::Value;
use std::time::{Duration, Instant};

const SERVER_SENT_EVENTS: &str = "urn:ietf:params:whep:ext:core:server-sent-events";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A server behind a relay; every client reaches it through the relay.
async fn relayed_server() -> (Relay, parley::Server, String) {
    let mut relay = Relay::bind().await.expect("relay");
    let config = Config {
        public_port: Some(relay.addr.port()),
        ..Config::loopback()
    };
    let server = parley::start(config).await.expect("server");
    relay.forward_to(server.media_addr);
    let base = server.base_url();
    (relay, server, base)
}

/// Three VP8 layers with temporal layers, as a browser sends them, at 150 / 500 / 1,500
/// kbit/s, with audio.
async fn three_layers(base: &str, room: &str) -> SimulcastPublisher {
    let opts = SimulcastOptions {
        temporal: true,
        bitrates: Some(vec![150_000, 500_000, 1_500_000]),
        audio: true,
        ..SimulcastOptions::browser_vp8()
    };
    publish_simulcast(base, room, opts).await.expect("publish")
}

async fn play_with_events(base: &str, room: &str) -> (Viewer, Events) {
    let viewer = play(base, room, PlayOptions::default())
        .await
        .expect("play");
    let url = viewer
        .link(SERVER_SENT_EVENTS)
        .expect("the 201 links the session's events");
    let session = url.strip_suffix("/events").expect("events URL");
    let events = Events::open(session, None).await.expect("events");
    (viewer, events)
}

fn video_mid(viewer: &Viewer) -> String {
    viewer
        .slots()
        .into_iter()
        .find(|s| s.kind == Kind::Video)
        .map(|s| s.mid)
        .expect("a video slot")
}

/// Waits until the latest `layers` event of `mid` satisfies `want`; returns it.
async fn wait_layers(
    events: &Events,
    mid: &str,
    what: &str,
    within: Duration,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let all = events
        .wait_for(what, within, |e| latest_layers(e, mid).is_some_and(&want))
        .await
        .unwrap_or_else(|e| {
            let trail: Vec<String> = events
                .all()
                .iter()
                .filter(|e| e["type"] == "layers")
                .map(|e| {
                    format!(
                        "{}@{}T{} paused={} {} est={}",
                        e["active"]["rid"],
                        e["active"]["spatialLayerId"],
                        e["active"]["temporalLayerId"],
                        e["paused"],
                        e["reason"],
                        e["estimate"]
                    )
                })
                .collect();
            panic!("{e}\nlayers events: {trail:#?}")
        });
    latest_layers(&all, mid).cloned().expect("just matched")
}

fn spatial(e: &Value) -> Option<u64> {
    e["active"]["spatialLayerId"].as_u64()
}

/// Audio packets the viewer received so far, and the longest run of consecutive sequence
/// numbers missing among them.
fn audio_gap(viewer: &Viewer) -> (usize, u16) {
    let audio = viewer.received_of(Kind::Audio);
    let worst = audio
        .windows(2)
        .map(|w| w[1].seq.wrapping_sub(w[0].seq).saturating_sub(1))
        .max()
        .unwrap_or(0);
    (audio.len(), worst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_follows_its_link_down_and_back_up_and_its_audio_goes_on() {
    let (relay, server, base) = relayed_server().await;
    let publisher = three_layers(&base, "bwe").await;
    relay.shape_new_clients(Shape::rate(1_000_000).queue(ms(100)).delay(ms(20)));
    let (viewer, events) = play_with_events(&base, "bwe").await;
    let mid = video_mid(&viewer);

    // 1 Mbit/s: the 500 kbit/s layer fits, the 1.5 Mbit/s one does not.
    let t = Instant::now();
    let settled = wait_layers(
        &events,
        &mid,
        "the middle layer at 1 Mbit/s",
        Duration::from_secs(5),
        |e| spatial(e) == Some(1),
    )
    .await;
    eprintln!("1 Mbit/s: {} after {:?}", settled["active"], t.elapsed());
    // It stays there: no climb to a layer the link cannot carry.
    let start = events.all().len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later: Vec<Value> = events.all()[start..].to_vec();
    assert!(
        later
            .iter()
            .filter(|e| e["type"] == "layers" && e["mid"] == mid.as_str())
            .all(|e| spatial(e) != Some(2)),
        "climbed past the link: {later:#?}"
    );
    let (audio_before, _) = audio_gap(&viewer);
    let since_settled = Instant::now();

    // Down to 300 kbit/s: the smallest layer within 2 s, said to be for bandwidth.
    relay.set_rate(300_000);
    let t = Instant::now();
    let down = wait_layers(
        &events,
        &mid,
        "the smallest layer at 300 kbit/s",
        Duration::from_secs(2),
        |e| spatial(e) == Some(0) && e["reason"] == "bandwidth",
    )
    .await;
    eprintln!("300 kbit/s: {} after {:?}", down["active"], t.elapsed());

    // Up to 5 Mbit/s: back to the full layer within 15 s.
    relay.set_rate(5_000_000);
    let t = Instant::now();
    let up = wait_layers(
        &events,
        &mid,
        "the full layer at 5 Mbit/s",
        Duration::from_secs(15),
        |e| spatial(e) == Some(2),
    )
    .await;
    eprintln!("5 Mbit/s: {} after {:?}", up["active"], t.elapsed());

    // Audio went on all along: about 50 packets a second. The relay's queue was full when
    // its rate fell to 300 kbit/s, so whatever arrived in the next moment was lost, audio
    // too; after that nothing.
    let (audio_after, worst) = audio_gap(&viewer);
    let expected = since_settled.elapsed().as_millis() as usize / 20;
    eprintln!(
        "audio: {} of about {expected}, longest loss {worst} packets",
        audio_after - audio_before
    );
    assert!(
        (audio_after - audio_before) * 100 >= expected * 90,
        "audio kept coming: {} packets of about {expected}",
        audio_after - audio_before
    );
    assert!(
        worst <= 15,
        "at most 300 ms of audio lost at once: {worst} packets"
    );
    let stats = relay.stats();
    eprintln!("relay: {stats:?}");

    viewer.close().await;
    publisher.close().await;
    server.shutdown().await;
}
