//! Per-viewer downlink adaptation through a real server with webrtc-rs peers behind a shaped
//! relay (token bucket, 100 ms drop-tail queue, 20 ms delay): a viewer settles on the layer
//! its link carries, follows the link down and back up, and keeps its audio; a viewer of a
//! publisher without layers to choose from is paused, then resumed, its audio never. The viewers send TWCC
//! feedback (webrtc-rs's default interceptors), which is what Chromium and Firefox send.

mod common;

use common::layer_api::{brief, latest_layers};
use common::layered::{vp8_frame_sized, Vp8Fields};
use common::simulcast::{publish_simulcast, SimulcastOptions, SimulcastPublisher};
use common::{
    play, publish, Events, Kind, PlayOptions, PublishOptions, Publisher, Relay, Shape, Viewer,
};
use parley::config::Config;
use serde_json::Value;
use std::sync::Arc;
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
                .map(brief)
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
    // The room API says what the viewer's link is thought to carry, and why its slot plays
    // what it plays.
    let room = common::room_api::view(&base, "bwe").await;
    let whep = common::room_api::sessions(&room)
        .into_iter()
        .find(|s| s["kind"] == "whep")
        .expect("the viewer's session");
    assert_eq!(whep["downlink"]["signal"], "twcc", "{whep}");
    let estimate = whep["downlink"]["estimate"].as_u64().expect("an estimate");
    assert!((100_000..=1_600_000).contains(&estimate), "{whep}");
    let slot = room["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["slots"].as_array().cloned().unwrap_or_default())
        .find(|s| s["kind"] == "video")
        .expect("the viewer's video slot");
    assert_eq!(
        (&slot["paused"], &slot["reason"]),
        (&Value::Bool(false), &Value::from("bandwidth")),
        "{slot}"
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

/// Sends, from `publisher` (no simulcast), VP8 at `bitrate` (30 frames a second, a keyframe
/// first and after each keyframe request) and audio every 20 ms, until the task is aborted.
fn send_plain(publisher: Arc<Publisher>, bitrate: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pace = tokio::time::interval(ms(20));
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut tick, mut frame, mut answered) = (0u64, 0u32, u32::MAX);
        loop {
            pace.tick().await;
            let audio_ts = (tick as u32).wrapping_mul(960);
            if publisher.send_audio(&[0xfc; 100], audio_ts).await.is_err() {
                return;
            }
            // A video frame every 33 ms or so: on two ticks of three at 20 ms, 1.5 frames
            // per 40 ms... simpler: one frame on each tick where 33 ms have passed.
            if tick * 20 >= u64::from(frame) * 100 / 3 {
                let requests = publisher.keyframe_requests();
                let key = frame == 0 || requests != answered;
                answered = requests;
                let fields = Vp8Fields {
                    picture_id: (frame & 0x7fff) as u16,
                    temporal: None,
                };
                let bytes = (bitrate / 8 / 30) as usize;
                for (payload, marker) in vp8_frame_sized(0, frame, key, (1280, 720), &fields, bytes)
                {
                    let ts = frame.wrapping_mul(3000);
                    if publisher.send_video(&payload, marker, ts).await.is_err() {
                        return;
                    }
                }
                frame += 1;
            }
            tick += 1;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_whose_link_cannot_carry_the_only_layer_is_paused_then_resumed() {
    let (relay, server, base) = relayed_server().await;
    let publisher = Arc::new(
        publish(&base, "plain", PublishOptions::vp8())
            .await
            .expect("publish"),
    );
    let sending = send_plain(Arc::clone(&publisher), 800_000);
    relay.shape_new_clients(Shape::rate(2_000_000).queue(ms(100)).delay(ms(20)));
    let (viewer, events) = play_with_events(&base, "plain").await;
    let mid = video_mid(&viewer);

    wait_layers(
        &events,
        &mid,
        "playing at 2 Mbit/s",
        Duration::from_secs(5),
        |e| e["active"].is_object() && e["paused"] == false,
    )
    .await;
    viewer
        .wait_for("video at 2 Mbit/s", Duration::from_secs(5), |r| {
            r.iter().filter(|p| p.kind == Kind::Video).count() >= 30
        })
        .await
        .expect("video plays before the step down");

    // 300 kbit/s cannot carry 800 kbit/s: paused for bandwidth, audio goes on.
    relay.set_rate(300_000);
    let t = Instant::now();
    wait_layers(
        &events,
        &mid,
        "paused at 300 kbit/s",
        Duration::from_secs(3),
        |e| e["paused"] == true && e["reason"] == "bandwidth",
    )
    .await;
    eprintln!("paused {:?} after the step down", t.elapsed());
    // A second for what was already on its way, then two seconds of audio and no video
    // but padding probes.
    let audio_count = |r: &[common::Received]| r.iter().filter(|p| p.kind == Kind::Audio).count();
    let (audio_at_pause, _) = audio_gap(&viewer);
    viewer
        .wait_for("audio while paused", Duration::from_secs(3), |r| {
            audio_count(r) >= audio_at_pause + 50
        })
        .await
        .expect("audio keeps coming while video is paused");
    let video_then = viewer.received_of(Kind::Video).len();
    let audio_then = audio_count(&viewer.received());
    viewer
        .wait_for("more audio while paused", Duration::from_secs(4), |r| {
            audio_count(r) >= audio_then + 100
        })
        .await
        .expect("audio keeps coming while video is paused");
    let media_during = viewer.received_of(Kind::Video)[video_then..]
        .iter()
        .filter(|p| !p.payload.is_empty())
        .count();
    assert_eq!(media_during, 0, "video packets while paused");

    // 5 Mbit/s: resumed, on a keyframe.
    relay.set_rate(5_000_000);
    let t = Instant::now();
    wait_layers(
        &events,
        &mid,
        "resumed at 5 Mbit/s",
        Duration::from_secs(15),
        |e| e["paused"] == false && e["active"].is_object(),
    )
    .await;
    eprintln!("resumed {:?} after the step up", t.elapsed());
    let resumed = viewer.received_of(Kind::Video).len();
    viewer
        .wait_for("video after the resume", Duration::from_secs(5), |r| {
            r.iter().filter(|p| p.kind == Kind::Video).count() >= resumed + 60
        })
        .await
        .expect("video flows again");

    sending.abort();
    viewer.close().await;
    if let Ok(p) = Arc::try_unwrap(publisher) {
        p.close().await;
    }
    server.shutdown().await;
}
