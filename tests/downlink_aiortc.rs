//! Per-viewer downlink adaptation for a viewer that sends REMB instead of TWCC: aiortc
//! (Python) plays a room over WHEP behind the shaped relay and estimates its downlink itself,
//! from the abs-send-time Parley stamps on what it seals (aiortc's `RemoteBitrateEstimator`,
//! GCC's receive side). At 1 Mbit/s the viewer's video slot comes to play a layer that fits
//! on the estimate aiortc sends back (the middle one, or the smallest while aiortc's estimate
//! sits just under it; never the full one); when the link then falls to 300
//! kbit/s, aiortc's REMB falls and the slot steps down, saying it did so for bandwidth, while
//! audio goes on. The estimates behind both decisions are values aiortc sent.
//!
//! The publisher is the Rust simulcast publisher (VP8 at 150 / 500 / 1,500 kbit/s with
//! temporal layers, and audio); its payloads are synthetic, so the viewer counts RTP instead
//! of decoding (`tests/interop/aiortc_viewer.py`), and the test judges by the `layers` events
//! and the room API.
//!
//! The relay's queue holds 500 ms (a bufferbloated access link). aiortc's estimator reacts to
//! delay only: with this queue the overflow of Parley's first probe shows as growing delay,
//! aiortc's first REMB comes at its first overuse (about 1.8 s in), from what the link
//! delivered, and the slot plays the middle layer on it; the test steps the link down then.
//! With a 100 ms queue the overflow is mostly loss: Parley's receiver-report fallback cuts
//! the estimate first, the slot drops to the smallest layer, aiortc's estimator starts from
//! what that layer delivers, and the climb back to the middle layer took from 20 s to over a
//! minute. Three seconds after its first arrivals aiortc also resets its estimate to what
//! arrived over the last second, which can take the slot down at 1 Mbit/s as well.
//!
//! `./scripts/test.sh` installs aiortc in `target/pyenv` and exports `PARLEY_PYTHON`.

mod common;

use common::aiortc::Running;
use common::layer_api::{brief, layer_events};
use common::simulcast::{publish_simulcast, SimulcastOptions, SimulcastPublisher};
use common::{Events, Relay, Shape};
use parley::config::Config;
use serde_json::Value;
use std::time::{Duration, Instant};

const ROOM: &str = "bwe-aiortc";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A server behind a relay; every client reaches it through the relay.
async fn relayed_server(config: Config) -> (Relay, parley::Server, String) {
    let mut relay = Relay::bind().await.expect("relay");
    let config = Config {
        public_port: Some(relay.addr.port()),
        ..config
    };
    let server = parley::start(config).await.expect("server");
    relay.forward_to(server.media_addr);
    let base = server.base_url();
    (relay, server, base)
}

/// Three VP8 layers with temporal layers, as a browser sends them, at 150 / 500 / 1,500
/// kbit/s, with audio.
async fn three_layers(base: &str) -> SimulcastPublisher {
    let opts = SimulcastOptions {
        temporal: true,
        bitrates: Some(vec![150_000, 500_000, 1_500_000]),
        audio: true,
        ..SimulcastOptions::browser_vp8()
    };
    publish_simulcast(base, ROOM, opts).await.expect("publish")
}

/// What the room API says of the room's one WHEP session: its `downlink` and its video
/// slot, taken from one answer (`Null` for what is not there yet).
#[derive(Clone, Debug, Default)]
struct Snapshot {
    downlink: Value,
    video: Value,
}

impl Snapshot {
    fn signal(&self) -> &str {
        self.downlink["signal"].as_str().unwrap_or("none")
    }

    fn spatial(&self) -> Option<u64> {
        self.video["layer"]["spatialLayerId"].as_u64()
    }

    fn paused(&self) -> bool {
        self.video["paused"] == true
    }

    fn describe(&self) -> String {
        format!(
            "{} est={} sent={} probing={} | {}@{}T{} paused={} {}",
            self.signal(),
            self.downlink["estimate"],
            self.downlink["sent"],
            self.downlink["probing"],
            self.video["layer"]["rid"],
            self.video["layer"]["spatialLayerId"],
            self.video["layer"]["temporalLayerId"],
            self.video["paused"],
            self.video["reason"],
        )
    }
}

async fn snapshot(base: &str) -> Snapshot {
    let room: Value = match reqwest::get(format!("{base}/rooms/{ROOM}")).await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Value::Null,
    };
    let viewer = room["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["sessions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["kind"] == "whep")
        });
    let Some(viewer) = viewer else {
        return Snapshot::default();
    };
    let downlink = viewer["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["kind"] == "whep")
        .map(|s| s["downlink"].clone())
        .unwrap_or_default();
    let video = viewer["slots"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["kind"] == "video")
        .cloned()
        .unwrap_or_default();
    Snapshot { downlink, video }
}

/// Asks the room API every 100 ms until `want` holds; returns that answer. Panics with the
/// answers it saw when `within` passes.
async fn wait_room(
    base: &str,
    what: &str,
    within: Duration,
    want: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    let start = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let s = snapshot(base).await;
        if want(&s) {
            return s;
        }
        let line = s.describe();
        if seen.last().is_none_or(|l| !l.ends_with(&line)) {
            seen.push(format!("{:5.1}s {line}", start.elapsed().as_secs_f64()));
        }
        assert!(
            start.elapsed() < within,
            "{what}: not within {within:?}; the room API said: {seen:#?}"
        );
        tokio::time::sleep(ms(100)).await;
    }
}

fn layer_trail(events: &[Value], mid: &str) -> Vec<String> {
    layer_events(events, mid).into_iter().map(brief).collect()
}

fn spatial(e: &Value) -> Option<u64> {
    e["active"]["spatialLayerId"].as_u64()
}

fn ticks(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["type"] == "tick").collect()
}

/// Audio packets the viewer had received at its latest tick.
fn audio_packets(lines: &[Value]) -> u64 {
    ticks(lines)
        .last()
        .and_then(|t| t["audio"]["packets"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aiortc_viewer_follows_its_link_down_by_remb() {
    let (relay, server, base) = relayed_server(Config::loopback()).await;
    let publisher = three_layers(&base).await;
    relay.shape_new_clients(Shape::rate(1_000_000).queue(ms(500)).delay(ms(20)));
    let viewer = Running::spawn(
        "aiortc_viewer.py",
        &["--base", &base, "--room", ROOM, "--timeout", "120"],
        "aiortc viewer",
    );
    let lines = viewer
        .wait_for("the WHEP answer", Duration::from_secs(15), |l| {
            l.iter().any(|l| l["type"] == "started")
        })
        .await;
    let t0 = Instant::now();
    let started = lines
        .iter()
        .find(|l| l["type"] == "started")
        .expect("started");
    // What aiortc needs to send REMB: goog-remb and abs-send-time on the video m-line.
    assert_eq!(started["answer"]["goog_remb"], true, "{started}");
    assert!(started["answer"]["abs_send_time"].is_u64(), "{started}");
    let session = started["session"].as_str().expect("session URL");
    let mid = started["mids"]["video"]
        .as_str()
        .expect("a video mid")
        .to_owned();
    let events = Events::open(session, None).await.expect("events");

    // 1 Mbit/s: the estimate comes to rest on aiortc's REMB (its estimator starts from what
    // arrived over its first 3 s, or at its first overuse) ...
    let remb = wait_room(
        &base,
        "the estimate on REMB",
        Duration::from_secs(10),
        |s| s.signal() == "remb",
    )
    .await;
    eprintln!(
        "1 Mbit/s: REMB after {:?}: {}",
        t0.elapsed(),
        remb.describe()
    );
    // ... and on it the slot plays a layer the link carries: the middle one (500 kbit/s) or,
    // when aiortc's estimate sits just under it, the smallest; never the full one.
    let middle = wait_room(
        &base,
        "a layer that fits, on REMB, at 1 Mbit/s",
        Duration::from_secs(15),
        |s| s.signal() == "remb" && s.spatial().is_some_and(|l| l <= 1) && !s.paused(),
    )
    .await;
    let estimate_then = middle.downlink["estimate"].as_u64().expect("an estimate");
    eprintln!(
        "1 Mbit/s: a layer that fits on REMB after {:?}: {}",
        t0.elapsed(),
        middle.describe()
    );
    // Never the full layer: 1.5 Mbit/s does not fit.
    let so_far = events.all();
    assert!(
        layer_events(&so_far, &mid)
            .iter()
            .all(|e| spatial(e) != Some(2)),
        "played a layer the link cannot carry: {:#?}",
        layer_trail(&so_far, &mid)
    );

    // Down to 300 kbit/s: the middle layer does not fit. aiortc's REMB falls, and on it a
    // smaller layer (or none) follows, said to be for bandwidth.
    let from = so_far.len();
    let audio_then = audio_packets(&viewer.lines());
    relay.set_rate(300_000);
    let t = Instant::now();
    let stepped_down = |e: &Value| {
        (spatial(e) == Some(0) || e["paused"] == true)
            && e["reason"] == "bandwidth"
            && e["estimate"]
                .as_u64()
                .is_some_and(|est| est < estimate_then)
    };
    let after = events
        .wait_for(
            "a smaller layer on a lower estimate at 300 kbit/s",
            Duration::from_secs(10),
            |e| {
                layer_events(&e[from.min(e.len())..], &mid)
                    .into_iter()
                    .any(stepped_down)
            },
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nlayers events: {:#?}",
                layer_trail(&events.all(), &mid)
            )
        });
    let down = layer_events(&after[from..], &mid)
        .into_iter()
        .find(|e| stepped_down(e))
        .cloned()
        .expect("just matched");
    let now = snapshot(&base).await;
    eprintln!(
        "300 kbit/s: {} after {:?}; {}",
        brief(&down),
        t.elapsed(),
        now.describe()
    );
    assert_eq!(now.signal(), "remb", "{}", now.describe());
    // Audio goes on: a second's worth more (50 packets) within 3 s.
    viewer
        .wait_for("audio after the step down", Duration::from_secs(3), |l| {
            audio_packets(l) >= audio_then + 50
        })
        .await;

    let all = events.all();
    assert!(
        layer_events(&all, &mid)
            .iter()
            .all(|e| spatial(e) != Some(2)),
        "played a layer the link cannot carry: {:#?}",
        layer_trail(&all, &mid)
    );
    let report = viewer.stop(Duration::from_secs(15)).await;
    let sent: Vec<u64> = report["rembs"]
        .as_array()
        .expect("rembs")
        .iter()
        .filter_map(|r| r[1].as_u64())
        .collect();
    // The estimates that chose the middle layer and the step down are REMB values aiortc
    // sent (as read back from the packets it sent), or the estimate's floor below them.
    let floor = Config::loopback().bwe_min_kbps * 1000;
    for estimate in [estimate_then, down["estimate"].as_u64().unwrap_or(0)] {
        assert!(
            sent.iter()
                .any(|r| *r == estimate || (estimate == floor && *r < floor)),
            "estimate {estimate} is none of aiortc's REMBs {sent:?}"
        );
    }
    let rembs: Vec<String> = report["rembs"]
        .as_array()
        .expect("rembs")
        .iter()
        .map(|r| format!("{}s {}", r[0], r[1]))
        .collect();
    eprintln!("REMBs aiortc sent: {rembs:?}");
    eprintln!("overuse detected at (s): {}", report["overuses"]);
    eprintln!("layers events: {:#?}", layer_trail(&all, &mid));
    eprintln!(
        "viewer: video {} audio {}",
        report["video"], report["audio"]
    );
    eprintln!("relay: {:?}", relay.stats());
    publisher.close().await;
    assert_eq!(server.session_count(), 0, "both sessions were DELETEd");
    server.shutdown().await;
}
