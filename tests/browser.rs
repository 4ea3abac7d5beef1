//! The built-in page (`web/`, served at `/`) in a real browser: Debian's Chromium driven by
//! npm's playwright-core, with fake camera and microphone, against a server started here; one
//! downlink test watches with Debian's Firefox ESR instead, driven by npm's puppeteer-core.
//!
//! Each test runs one script of `tests/browser/` (`node SCRIPT BASE_URL ARTIFACT_DIR ...`),
//! reads the JSON line it prints, and asserts on it. `./scripts/test.sh` installs
//! playwright-core and puppeteer-core under `target/node` and the `chromium`, `firefox-esr`
//! and `ffmpeg` packages (ffmpeg makes the 1280x720 camera clips of the simulcast and
//! downlink tests). Artifacts
//! (screenshots of the pages) go to `target/browser-artifacts/`.
//!
//! The downlink test puts the test relay (`tests/common/relay.rs`) between the browsers and
//! the server, and shapes a viewer's downlink when its script asks (it prints a step and
//! waits for a line on stdin).
//!
//! The browsers are not put in a network namespace: the server runs in this process, outside
//! any namespace the script could enter, and everything listens on 127.0.0.1 anyway.

use parley::config::Config;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[allow(dead_code)]
#[path = "common/relay.rs"]
mod relay;
use relay::{Relay, Shape};

/// Longest a script may run before the test fails (each script also stops itself earlier).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(150);

/// Two CPUs run a browser test at a time at most: the tests of this file take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the scripts need: where npm installed the browser drivers, and the browsers.
struct Prerequisites {
    node_dir: PathBuf,
    chromium: PathBuf,
    firefox: PathBuf,
}

/// Finds the prerequisites; fails with what to run.
fn prerequisites() -> Prerequisites {
    let from_env = |name: &str, default: &str| {
        std::env::var_os(name).map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    let node_dir = std::env::var_os("PARLEY_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/node"));
    let chromium = from_env("PARLEY_CHROMIUM", "/usr/bin/chromium");
    let firefox = from_env("PARLEY_FIREFOX", "/usr/bin/firefox-esr");
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is not installed: run ./scripts/test.sh (it installs the test prerequisites)"
    );
    for package in ["playwright-core", "puppeteer-core"] {
        assert!(
            node_dir.join("node_modules").join(package).is_dir(),
            "{package} is not installed in {}: run ./scripts/test.sh \
             (npm install --prefix target/node {package})",
            node_dir.display()
        );
    }
    for (browser, path, package, variable) in [
        ("Chromium", &chromium, "chromium", "PARLEY_CHROMIUM"),
        ("Firefox", &firefox, "firefox-esr", "PARLEY_FIREFOX"),
    ] {
        assert!(
            path.exists(),
            "{browser} is not installed at {}: run ./scripts/test.sh (apt-get install \
             {package}), or set {variable}",
            path.display()
        );
    }
    Prerequisites {
        node_dir,
        chromium,
        firefox,
    }
}

fn artifact_dir() -> PathBuf {
    let dir = root().join("target/browser-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

/// Runs `tests/browser/{script}` with the given base URLs and returns its JSON result.
async fn run_script(script: &str, bases: &[String]) -> Value {
    run_script_with_steps(script, bases, |_| {}).await
}

/// Like [`run_script`], with the browser inside the network namespace `netns`.
async fn run_script_in(netns: &str, script: &str, bases: &[String]) -> Value {
    run_script_as(
        &["ip", "netns", "exec", netns, "node"],
        script,
        bases,
        |_| {},
    )
    .await
}

/// Runs `tests/browser/{script}` with `args` (a base URL first) and returns its JSON result.
/// A line `{"step": ...}` the script prints is handed to `on_step`, and the script gets a line
/// on its stdin once `on_step` returned (so it can wait for the test to act).
async fn run_script_with_steps(
    script: &str,
    args: &[String],
    on_step: impl FnMut(&Value),
) -> Value {
    run_script_as(&["node"], script, args, on_step).await
}

/// Runs a script with `node` as `command` names it (the program and its first arguments).
async fn run_script_as(
    command: &[&str],
    script: &str,
    args: &[String],
    mut on_step: impl FnMut(&Value),
) -> Value {
    let needs = prerequisites();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(command[0])
        .args(&command[1..])
        .arg(root().join("tests/browser").join(script))
        .arg(&args[0])
        .arg(artifact_dir())
        .args(&args[1..])
        .env("PARLEY_NODE_DIR", needs.node_dir)
        .env("PARLEY_CHROMIUM", needs.chromium)
        .env("PARLEY_FIREFOX", needs.firefox)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let talk = async {
        let mut lines = BufReader::new(stdout).lines();
        let mut stdout = String::new();
        while let Some(line) = lines.next_line().await.expect("script stdout") {
            let step = serde_json::from_str::<Value>(&line)
                .ok()
                .filter(|v| v.get("step").is_some());
            if let Some(step) = step {
                on_step(&step);
                eprintln!(
                    "{script} at {:.1} s: {step}",
                    started.elapsed().as_secs_f64()
                );
                // A script that has already stopped does not read it: that is its business.
                let _ = stdin.write_all(b"ok\n").await;
            } else {
                stdout.push_str(&line);
                stdout.push('\n');
            }
        }
        (stdout, child.wait().await.expect("script exit status"))
    };
    let (stdout, status) = tokio::time::timeout(SCRIPT_TIMEOUT, talk)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {SCRIPT_TIMEOUT:?}"));
    let stderr = errors.await.unwrap_or_default();
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_default();
    let result: Value = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "{script} printed no JSON result\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        )
    });
    assert!(
        status.success() && result["ok"] == true,
        "{script} failed: {}\n--- stderr ---\n{stderr}",
        result["error"].as_str().unwrap_or(line)
    );
    println!(
        "{script} ({:.1} s): {result:#}",
        started.elapsed().as_secs_f64()
    );
    result
}

/// Waits until the server has no session left (the pages DELETEd theirs).
async fn wait_for_no_sessions(server: &parley::Server, what: &str) {
    let end = Instant::now() + Duration::from_secs(5);
    while server.session_count() > 0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.session_count(), 0, "{what}");
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

#[tokio::test]
async fn the_page_and_its_files_are_served() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let client = reqwest::Client::new();
    for (path, kind, needle) in [
        ("/", "text/html", "/app.js"),
        ("/app.js", "text/javascript", "./webrtc.js"),
        ("/webrtc.js", "text/javascript", "keepalive"),
        ("/style.css", "text/css", ".tile"),
    ] {
        let res = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers();
        let ct = h[reqwest::header::CONTENT_TYPE].to_str().unwrap_or("");
        assert!(ct.starts_with(kind), "{path}: {ct}");
        assert_eq!(h[reqwest::header::CACHE_CONTROL], "no-cache", "{path}");
        let body = res.text().await.expect("body");
        assert!(body.contains(needle), "{path} lacks {needle}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn two_pages_in_a_call_decode_each_other_and_never_themselves() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let server = parley::start(Config::loopback()).await.expect("server");
    let result = run_script("call.mjs", &[server.base_url()]).await;

    let pages = result["pages"].as_array().expect("pages");
    assert_eq!(pages.len(), 2, "{result}");
    for p in pages {
        let (me, other) = (&p["name"], &p["other"]);
        assert_eq!(p["label"], *other, "{me}'s tile is labelled with {other}");
        assert!(
            u64_of(&p["frames_later"]) > u64_of(&p["frames_first"]),
            "{me} keeps decoding {other}: {p}"
        );
        assert_eq!(
            u64_of(&p["frames_elsewhere"]),
            0,
            "{me} decodes video only on {other}'s slot: {p}"
        );
        assert_eq!(
            u64_of(&p["own_slot_events"]),
            0,
            "{me} is never in its own slots: {p}"
        );
        assert_eq!(
            p["slot_participants_seen"]
                .as_array()
                .map(|a| a.iter().filter(|v| !v.is_null()).count()),
            Some(1),
            "only {other} ever fills {me}'s slots: {p}"
        );
        assert_eq!(
            p["colour_seen"], p["colour_expected"],
            "{me} sees {other}'s camera (by its colour), not its own: {p}"
        );
        assert_ne!(p["own_colour_seen"], p["colour_seen"], "{p}");
        // ann talks and bob is silent: both pages highlight ann (her own preview on her page).
        assert_eq!(p["speaking"], serde_json::json!(["ann"]), "{p}");
    }
    assert_eq!(result["server_active_speaker"], "ann", "{result}");
    assert_eq!(result["speaker"], "ann", "{result}");
    let energy = |i: usize| pages[i]["audio_energy"].as_f64().unwrap_or(0.0);
    assert!(energy(1) > 0.01, "bob hears ann: {result}");
    assert!(energy(0) < 0.001, "ann hears only bob's silence: {result}");
    let shot = &result["screenshot"];
    let path = Path::new(shot["path"].as_str().expect("screenshot path"));
    let bytes = std::fs::metadata(path).expect("call.png saved").len();
    assert!(
        bytes > 20_000,
        "the screenshot is too small to hold video: {shot}"
    );
    assert!(
        u64_of(&shot["colours"]) > 50 && u64_of(&shot["stddev"]) > 10,
        "the screenshot is not blank: {shot}"
    );
    // Each page limits the other's slot to its tile's size, asks again when the tile
    // shrinks, and never asks twice in a row for the same size.
    let layers = &result["layers"];
    for p in pages {
        let (me, mid) = (p["name"].as_str().unwrap_or_default(), &p["mid"]);
        let asked = &layers[me];
        assert!(u64_of(&asked["tile"]["maxWidth"]) > 0, "{me}: {asked}");
        let sizes: Vec<(u64, u64)> = asked["requests"]
            .as_array()
            .expect("layer requests")
            .iter()
            .filter(|r| r["mediaId"] == *mid)
            .map(|r| (u64_of(&r["maxWidth"]), u64_of(&r["maxHeight"])))
            .collect();
        assert!(
            sizes.windows(2).all(|w| w[0] != w[1]),
            "{me} posts only a changed size: {asked}"
        );
    }
    let ann = &layers["ann"];
    assert!(
        u64_of(&ann["resized"]["maxWidth"]) < u64_of(&ann["tile"]["maxWidth"]),
        "a narrower window asks for a smaller layer: {ann}"
    );
    assert_eq!(result["room_after_leave"], "gone", "{result}");
    wait_for_no_sessions(&server, "Leave DELETEd every session").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_watch_page_without_a_camera_plays_a_publish_page() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let server = parley::start(Config::loopback()).await.expect("server");
    let result = run_script("watch.mjs", &[server.base_url()]).await;

    assert_eq!(
        result["home"],
        serde_json::json!(["Publish", "Watch", "Join a call"]),
        "{result}"
    );
    let loopback = result["loopback"].as_array().expect("loopback");
    assert!(
        loopback.iter().any(|l| l["codec"] == "VP8"),
        "the browser offers VP8: {result}"
    );
    for l in loopback {
        let codec = l["codec"].as_str().unwrap_or_default();
        let wanted = format!("video/{codec}");
        assert_eq!(l["sent"], wanted, "the codec choice is what is sent: {l}");
        assert_eq!(l["received"], wanted, "and what comes back: {l}");
        assert!(u64_of(&l["frames"]) > 5, "{l}");
        assert_eq!(
            u64_of(&l["width"]),
            320,
            "a 320x240 camera is sent whole, not as simulcast's 80x60 quarter: {l}"
        );
    }
    let watch = &result["watch"];
    assert_eq!(
        watch["mdns_only"], true,
        "the watch page offered only mDNS candidates, so the server accepted a \
         peer-reflexive one: {watch}"
    );
    assert_watch_plays(watch);
    assert_eq!(watch["caption"], "Playing cam from room browser-watch");
    assert_eq!(watch["unmuted"], true, "{watch}");
    assert_eq!(result["deleted_on_close"], true, "{result}");
    assert_eq!(result["room_gone_after_stop"], true, "{result}");
    wait_for_no_sessions(&server, "the pages DELETEd their sessions").await;
    server.shutdown().await;
}

#[tokio::test]
async fn tokens_are_asked_for_and_errors_are_shown_in_words() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut with_tokens = Config::loopback();
    with_tokens.publish_token = Some("pub-secret".into());
    with_tokens.play_token = Some("play-secret".into());
    let server = parley::start(with_tokens).await.expect("server");
    // A server that advertises a media port nothing answers on (and a STUN server there),
    // without ICE over TCP (which would reach it), one participant per room.
    let dead_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    let mut broken = Config::loopback();
    broken.public_ip = vec![std::net::Ipv4Addr::LOCALHOST.into()];
    broken.public_port = Some(dead_port);
    broken.max_participants_per_room = 1;
    broken.ice_tcp_listen = "off".into();
    let stun = format!("stun:127.0.0.1:{dead_port}");
    broken.ice_server = vec![stun.clone()];
    let broken = parley::start(broken).await.expect("broken server");

    let result = run_script("errors.mjs", &[server.base_url(), broken.base_url()]).await;
    let token = &result["token"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    assert!(
        text(&token["asked"]).contains("The server answered 401: a bearer token is required"),
        "{token}"
    );
    assert!(
        text(&token["rejected"]).contains("401: the bearer token is not valid"),
        "{token}"
    );
    assert!(text(&token["play"]).contains("for playing"), "{token}");
    assert!(u64_of(&token["loopback_frames"]) > 5, "{token}");
    assert!(
        text(&token["watch_caption"]).starts_with("Playing tok"),
        "{token}"
    );
    assert!(
        text(&result["denied"]).starts_with("Camera/microphone access was denied"),
        "{result}"
    );
    assert!(
        text(&result["full"]).starts_with("The server answered 403: "),
        "{result}"
    );
    assert_eq!(result["start_shown_again"], true, "{result}");
    assert_eq!(result["ice_start_shown_again"], true, "{result}");
    assert_eq!(
        result["ice_servers"][0]["urls"],
        serde_json::json!([stun]),
        "the page uses the server's --ice-server: {result}"
    );
    assert!(
        text(&result["ice"]).starts_with("The connection failed (ICE)"),
        "{result}"
    );
    assert!(
        text(&result["ice"]).contains(&format!("127.0.0.1:{dead_port}")),
        "the message names the address the browser could not reach: {result}"
    );
    wait_for_no_sessions(&server, "the token pages DELETEd their sessions").await;
    server.shutdown().await;
    broken.shutdown().await;
}

#[tokio::test]
async fn simulcast_from_a_publish_page_reaches_each_viewer_at_the_size_it_asked_for() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let server = parley::start(Config {
        // Limits decide here; downlink estimates have their own test below.
        bwe: false,
        ..Config::loopback()
    })
    .await
    .expect("server");
    let result = run_script("simulcast.mjs", &[server.base_url()]).await;

    assert_eq!(
        result["simulcast_box_checked"], true,
        "simulcast is on by default"
    );
    let sent = result["sent_first"].as_array().expect("layers sent");
    let rids: Vec<&str> = sent.iter().filter_map(|l| l["rid"].as_str()).collect();
    assert_eq!(
        rids,
        ["q", "h", "f"],
        "three layers, smallest first: {result}"
    );
    assert!(u64_of(&sent[2]["width"]) >= 960, "{result}");

    let widths = |who: &str| -> Vec<u64> {
        result["measured"][who]["widths_seen"]
            .as_array()
            .map(|a| a.iter().map(u64_of).collect())
            .unwrap_or_default()
    };
    let (auto, small) = (&result["measured"]["auto"], &result["measured"]["small"]);
    assert!(
        !widths("auto").is_empty() && widths("auto").iter().all(|w| *w >= 960),
        "the viewer without limits decodes 960 or wider throughout: {auto}"
    );
    assert!(
        !widths("small").is_empty() && widths("small").iter().all(|w| (1..=320).contains(w)),
        "the viewer limited to maxWidth 320 decodes 320 or narrower throughout: {small}"
    );
    for (who, m) in [("auto", auto), ("small", small)] {
        assert!(
            u64_of(&m["freezes"]) <= 1,
            "{who}: at most one freeze in 10 s: {m}"
        );
        assert!(
            m["fps"].as_f64().unwrap_or(0.0) >= 5.0,
            "{who} keeps decoding: {m}"
        );
        assert_eq!(m["layers"].as_array().map(Vec::len), Some(3), "{who}: {m}");
    }
    // The layers events name what each slot plays, and the watch page shows it.
    assert_eq!(auto["active"]["rid"], "f", "{auto}");
    assert_eq!(auto["active"]["spatialLayerId"], 2, "{auto}");
    assert_eq!(small["active"]["rid"], "q", "{small}");
    assert_eq!(small["active"]["spatialLayerId"], 0, "{small}");
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    assert!(
        text(&auto["line"]).starts_with("Layer: f 1280×720 of q 320×180 · h 640×360 · f 1280×720"),
        "{auto}"
    );
    assert!(
        text(&small["line"]).starts_with("Layer: q 320×180"),
        "{small}"
    );
    assert!(
        text(&auto["line"]).contains("decoding 1280×720"),
        "the line shows the decoder's size: {auto}"
    );
    assert_eq!(
        auto["options"],
        serde_json::json!([
            "Auto",
            "High (1280×720)",
            "Medium (640×360)",
            "Low (320×180)"
        ]),
        "{auto}"
    );
    // The Quality menu pins Low, then Auto gives the full size back.
    let menu = &result["menu"];
    assert!((1..=320).contains(&u64_of(&menu["low"]["width"])), "{menu}");
    assert_eq!(menu["low"]["shown"], "q", "{menu}");
    assert!(u64_of(&menu["auto"]["width"]) >= 960, "{menu}");
    assert_eq!(result["room_gone_after_stop"], true, "{result}");
    wait_for_no_sessions(&server, "the pages DELETEd their sessions").await;
    server.shutdown().await;
}

/// This host's address on its default route (found without sending anything).
fn host_ip() -> IpAddr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
    probe
        .connect("192.0.2.1:9")
        .and_then(|()| probe.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback())
        .expect("a network interface besides loopback, for Firefox to reach the relay on")
}

/// A server that every client reaches through a relay on `ip` (it advertises only the relay).
async fn relayed_server(bwe: bool, ip: IpAddr) -> (Relay, parley::Server) {
    let mut relay = Relay::bind_on(ip).await.expect("relay");
    let config = Config {
        bwe,
        public_ip: vec![ip],
        public_port: Some(relay.addr.port()),
        ..Config::loopback()
    };
    let server = parley::start(config).await.expect("server");
    relay.forward_to(server.media_addr);
    (relay, server)
}

/// Runs `downlink.mjs` through a relay with `phases` (see the script) against a server with
/// or without downlink estimation, the narrow viewer in `browser` (`chromium` or `firefox`).
/// The script's steps shape the narrow viewer's downlink (a 100 ms drop-tail queue and 20 ms
/// delay at the phase's rate) and change its rate. Adds what the relay counted per client.
async fn downlink_run(bwe: bool, phases: Value, browser: &str) -> Value {
    // Firefox gathers no loopback candidates: it reaches the relay on this host's address.
    let ip = if browser == "firefox" {
        host_ip()
    } else {
        Ipv4Addr::LOCALHOST.into()
    };
    let (relay, server) = relayed_server(bwe, ip).await;
    let mut result = run_script_with_steps(
        "downlink.mjs",
        &[server.base_url(), phases.to_string(), browser.to_owned()],
        |step| {
            let bps = u64_of(&step["bps"]);
            match step["step"].as_str() {
                Some("shape") => relay.shape_new_clients(
                    Shape::rate(bps)
                        .queue(Duration::from_millis(100))
                        .delay(Duration::from_millis(20)),
                ),
                Some("rate") => relay.set_rate(bps),
                _ => panic!("downlink.mjs asked for an unknown step: {step}"),
            }
        },
    )
    .await;
    result["relay"] = relay
        .client_stats()
        .iter()
        .map(|c| {
            serde_json::json!({
                "shaped": c.shaped,
                "datagrams": c.stats.datagrams,
                "bytes": c.stats.bytes,
                "queue_drops": c.stats.queue_drops,
            })
        })
        .collect();
    wait_for_no_sessions(&server, "the pages DELETEd their sessions").await;
    server.shutdown().await;
    result
}

/// A watch page's report shows the published picture (its green test colour) and frames
/// still being decoded at the later check.
fn assert_watch_plays(watch: &Value) {
    assert!(
        u64_of(&watch["frames_later"]) > u64_of(&watch["frames_first"]),
        "the watch page keeps decoding: {watch}"
    );
    assert_eq!(watch["colour_seen"], "green", "{watch}");
}

/// The bits per second a page's "downlink 1.2 Mbit/s" or "downlink 850 kbit/s" stands for,
/// and the rounding step of the text (0.1 Mbit/s or 1 kbit/s).
fn shown_downlink(text: &str) -> Option<(f64, f64)> {
    let rest = text.strip_prefix("downlink ")?;
    let (value, unit) = rest.split_once(' ')?;
    let value: f64 = value.parse().ok()?;
    match unit {
        "Mbit/s" => Some((value * 1e6, 1e5)),
        "kbit/s" => Some((value * 1e3, 1e3)),
        _ => None,
    }
}

/// The narrow viewer's figures over a phase's measured window, as part of the report.
fn summary(phase: &Value) -> Value {
    let v = &phase["narrow"];
    serde_json::json!({
        "fps": v["fps"],
        "freezes": v["freezes"],
        "freeze_secs": v["freeze_secs"],
        "width": v["width"],
        "min_width": v["min_width"],
        "paused_seen": v["paused_seen"],
        "overlay_seen": v["overlay_seen"],
        "estimate": v["estimate"],
        "first_frame_ms": phase["first_frame_ms"],
    })
}

// The relay's tasks run on this runtime: two threads, so that they do not wait behind the
// HTTP server and the script's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_behind_a_1_mbit_link_decodes_a_layer_that_fits_while_another_keeps_the_full_one()
{
    let _turn = ONE_AT_A_TIME.lock().await;
    // With estimation: 1 Mbit/s for 25 s (the last 15 measured), then 300 kbit/s for 15 s
    // (the last 10). Without: the same 1 Mbit/s phase, for the record only.
    let with = downlink_run(
        true,
        serde_json::json!([
            { "bps": 1_000_000, "secs": 25, "measure": 15 },
            { "bps": 300_000, "secs": 15, "measure": 10 },
        ]),
        "chromium",
    )
    .await;
    let without = downlink_run(
        false,
        serde_json::json!([{ "bps": 1_000_000, "secs": 25, "measure": 15 }]),
        "chromium",
    )
    .await;
    let (mbit, low, before) = (
        &with["phases"][0],
        &with["phases"][1],
        &without["phases"][0],
    );
    let phases = [mbit, low, before];
    let full_widths: Vec<&Value> = phases.iter().map(|p| &p["full"]["min_width"]).collect();
    let publisher_fps: Vec<&Value> = phases.iter().map(|p| &p["publisher_fps"]).collect();
    eprintln!(
        "{}",
        serde_json::json!({
            "bwe_1mbit": summary(mbit),
            "bwe_300kbit": summary(low),
            "no_bwe_1mbit": summary(before),
            "full_viewer_min_width": full_widths,
            "publisher_fps": publisher_fps,
            "relay": [&with["relay"], &without["relay"]],
        })
    );

    // At 1 Mbit/s the narrow viewer plays a layer that fits, smoothly.
    let narrow = &mbit["narrow"];
    let fps = narrow["fps"].as_f64().unwrap_or(0.0);
    assert!(
        fps >= 20.0,
        "at least 20 frames a second at 1 Mbit/s: {narrow:#}"
    );
    assert!(
        u64_of(&narrow["freezes"]) <= 1,
        "at most one freeze in 15 s at 1 Mbit/s: {narrow:#}"
    );
    // A layer that fits throughout: 480 or wider, never the full one, which the link cannot
    // carry.
    assert!(
        u64_of(&narrow["min_width"]) >= 480 && u64_of(&narrow["max_width"]) < 1280,
        "480 wide or more and never the full layer at 1 Mbit/s: {narrow:#}"
    );
    // The other viewer's open link carries the full layer meanwhile.
    for phase in [mbit, low] {
        let full = &phase["full"];
        assert!(
            u64_of(&full["min_width"]) >= 960,
            "the unconstrained viewer keeps 960 or wider in each phase: {full:#}"
        );
    }
    // The watch page shows the estimate, and its pause overlay follows the layers events.
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    for (phase, v) in [(mbit, narrow), (low, &low["narrow"])] {
        let shown = shown_downlink(&text(&v["downlink_text"]));
        let estimate = u64_of(&v["estimate"]) as f64;
        assert!(
            shown.is_some_and(|(bps, unit)| (bps - estimate).abs() <= unit / 2.0 + 1.0),
            "the watch page shows the latest downlink estimate, {estimate} bit/s: {v:#}"
        );
        assert_eq!(
            u64_of(&v["overlay_mismatches"]),
            0,
            "the overlay shows exactly while paused for bandwidth ({} bit/s): {v:#}",
            phase["bps"]
        );
    }
    assert_eq!(
        text(&before["narrow"]["downlink_text"]),
        "",
        "without estimation the page shows no estimate: {before:#}"
    );
}

// Firefox estimates nothing for Parley: it sends transport-wide-cc feedback, and Parley's
// estimator does the rest, as for Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firefox_viewer_behind_a_shaped_link_gets_a_layer_that_fits_and_follows_it_down() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let run = downlink_run(
        true,
        serde_json::json!([
            { "bps": 1_000_000, "secs": 25, "measure": 15 },
            { "bps": 300_000, "secs": 15, "measure": 10 },
        ]),
        "firefox",
    )
    .await;
    let (mbit, low) = (&run["phases"][0], &run["phases"][1]);
    eprintln!(
        "{}",
        serde_json::json!({
            "firefox_1mbit": summary(mbit),
            "firefox_300kbit": summary(low),
            "room": [&mbit["narrow"]["room"], &low["narrow"]["room"]],
            "relay": &run["relay"],
        })
    );
    // At 1 Mbit/s a layer that fits throughout. At 300 kbit/s the smallest layer: Firefox sometimes
    // keeps showing the last larger frame through a freeze of about 3 s after the step down
    // (with or without Parley's own SRTCP path), so there the width it shows at the end
    // counts. At full frame rate the smallest layer fits only just (one run on a busy machine
    // decoded 18.7 frames a second, the others 25 or more).
    for (phase, min_fps) in [(mbit, 20.0), (low, 15.0)] {
        let narrow = &phase["narrow"];
        assert_eq!(
            narrow["room"]["downlink"]["signal"], "twcc",
            "Firefox's feedback is TWCC: {narrow:#}"
        );
        let fps = narrow["fps"].as_f64().unwrap_or(0.0);
        assert!(
            fps >= min_fps,
            "at least {min_fps} frames a second at {} bit/s: {narrow:#}",
            phase["bps"]
        );
    }
    let narrow = &mbit["narrow"];
    assert!(
        (480..1280).contains(&u64_of(&narrow["min_width"]))
            && (480..1280).contains(&u64_of(&narrow["max_width"])),
        "480 wide or more, never the full layer, at 1 Mbit/s: {narrow:#}"
    );
    let narrow = &low["narrow"];
    assert!(
        (1..480).contains(&u64_of(&narrow["width"])) && narrow["room"]["layer"] == "q",
        "the smallest layer at 300 kbit/s: {narrow:#}"
    );
}

/// A network namespace joined to this one by a veth pair (`10.231.N.1` here, `.2` there),
/// whose firewall drops every UDP datagram in and out. Removed on drop.
struct NoUdpNamespace {
    name: String,
    host_ip: std::net::Ipv4Addr,
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NoUdpNamespace {
    fn create() -> NoUdpNamespace {
        let id = std::process::id();
        let subnet = 20 + id % 200;
        let ns = NoUdpNamespace {
            name: format!("parley-noudp-{id}"),
            host_ip: std::net::Ipv4Addr::new(10, 231, subnet as u8, 1),
        };
        let (here, there) = (format!("pvh{id}"), format!("pvn{id}"));
        let (host, peer) = (
            format!("10.231.{subnet}.1/24"),
            format!("10.231.{subnet}.2/24"),
        );
        let rules = "table inet parley { \
            chain in { type filter hook input priority 0; meta l4proto udp drop; }; \
            chain out { type filter hook output priority 0; meta l4proto udp drop; }; }";
        let steps: Vec<Vec<&str>> = vec![
            vec!["ip", "netns", "add", &ns.name],
            vec![
                "ip", "link", "add", &here, "type", "veth", "peer", "name", &there,
            ],
            vec!["ip", "link", "set", &there, "netns", &ns.name],
            vec!["ip", "addr", "add", &host, "dev", &here],
            vec!["ip", "link", "set", &here, "up"],
            vec![
                "ip", "netns", "exec", &ns.name, "ip", "addr", "add", &peer, "dev", &there,
            ],
            vec![
                "ip", "netns", "exec", &ns.name, "ip", "link", "set", &there, "up",
            ],
            vec![
                "ip", "netns", "exec", &ns.name, "ip", "link", "set", "lo", "up",
            ],
            vec!["ip", "netns", "exec", &ns.name, "nft", rules],
        ];
        for step in steps {
            if let Err(e) = sh(&step) {
                panic!("setting up the namespace without UDP (needs root and nftables): {e}");
            }
        }
        ns
    }
}

impl NoUdpNamespace {
    /// Also drops TCP out of the namespace except to `ports`.
    fn only_tcp_to(&self, ports: &[u16]) {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let rule = format!(
            "add rule inet parley out oif != \"lo\" tcp dport != {{ {} }} drop",
            ports.join(", ")
        );
        if let Err(e) = sh(&["ip", "netns", "exec", &self.name, "nft", &rule]) {
            panic!("restricting TCP in the namespace: {e}");
        }
    }
}

impl Drop for NoUdpNamespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and with it ours.
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

// A browser on a network that drops all UDP publishes and plays through the ICE-TCP port;
// the same pages on loopback (UDP open) keep UDP.
#[tokio::test]
async fn browsers_without_udp_publish_and_play_over_ice_tcp() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let ns = NoUdpNamespace::create();
    let mut config = Config::loopback();
    config.http_listen = std::net::SocketAddr::new(ns.host_ip.into(), 0);
    config.media_listen = std::net::SocketAddr::new(ns.host_ip.into(), 0);
    let server = parley::start(config).await.expect("server");
    let result = run_script_in(&ns.name, "tcp.mjs", &[server.base_url()]).await;
    assert_eq!(result["publish"]["protocol"], "tcp", "{result}");
    assert_eq!(result["watch"]["protocol"], "tcp", "{result}");
    assert_watch_plays(&result["watch"]);
    server.shutdown().await;
    drop(ns);

    let server = parley::start(Config::loopback()).await.expect("server");
    let result = run_script("tcp.mjs", &[server.base_url()]).await;
    assert_eq!(
        result["publish"]["protocol"], "udp",
        "UDP when it works: {result}"
    );
    assert_eq!(
        result["watch"]["protocol"], "udp",
        "UDP when it works: {result}"
    );
    server.shutdown().await;
}

/// coturn (Debian's `turnserver`) on `ip`, TCP only, with the REST secret `secret`; stopped
/// on drop.
struct Coturn {
    child: std::process::Child,
    port: u16,
    _dir: tempfile_dir::Dir,
}

mod tempfile_dir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Dir {
            let path = std::env::temp_dir().join(format!("parley-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("a temporary directory");
            Dir(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Coturn {
    async fn start(ip: std::net::Ipv4Addr, secret: &str) -> Coturn {
        let free = || {
            std::net::TcpListener::bind((ip, 0))
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        };
        let (port, relay) = (free(), free());
        let dir = tempfile_dir::Dir::new("coturn");
        let child = std::process::Command::new("turnserver")
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--fingerprint"])
            .arg(format!("--listening-ip={ip}"))
            .arg(format!("--relay-ip={ip}"))
            .arg(format!("--listening-port={port}"))
            .arg(format!("--min-port={relay}"))
            .arg(format!("--max-port={}", relay.saturating_add(50)))
            .args(["--use-auth-secret", "--realm=parley"])
            .arg(format!("--static-auth-secret={secret}"))
            .arg(format!("--db={}", dir.0.join("turndb").display()))
            .arg(format!("--pidfile={}", dir.0.join("pid").display()))
            .arg(format!("--log-file={}", dir.0.join("log").display()))
            .arg("--simple-log")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver starts (Debian's coturn)");
        let end = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect((ip, port)).await.is_err() {
            assert!(Instant::now() < end, "coturn never listened on {ip}:{port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Coturn {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// A browser whose network lets out neither UDP nor TCP except to a TURN server (coturn, TCP)
// and Parley's HTTP port connects through a relay candidate, with credentials from
// `/ice-servers`, and media flows.
#[tokio::test]
async fn browsers_behind_a_tcp_only_firewall_connect_through_coturn() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let ns = NoUdpNamespace::create();
    let secret = "browser-relay-secret";
    let coturn = Coturn::start(ns.host_ip, secret).await;
    let mut config = Config::loopback();
    config.http_listen = std::net::SocketAddr::new(ns.host_ip.into(), 0);
    config.media_listen = std::net::SocketAddr::new(ns.host_ip.into(), 0);
    config.turn_url = vec![format!("turn:{}:{}?transport=tcp", ns.host_ip, coturn.port)];
    config.turn_secret = Some(secret.into());
    let server = parley::start(config).await.expect("server");
    ns.only_tcp_to(&[server.http_addr.port(), coturn.port]);
    let result = run_script_in(&ns.name, "tcp.mjs", &[server.base_url()]).await;
    for page in ["publish", "watch"] {
        assert_eq!(
            result[page]["candidate"], "relay",
            "{page} through TURN: {result}"
        );
    }
    assert_watch_plays(&result["watch"]);
    server.shutdown().await;
    drop(coturn);
    drop(ns);
}
