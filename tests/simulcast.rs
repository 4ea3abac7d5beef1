//! Simulcast through a real server with webrtc-rs peers: a publisher sends up to three layers
//! of one video track (RFC 8853), Parley ranks them by the picture size their keyframes
//! announce, and gives each viewer slot exactly one layer, the one its limits allow, switching
//! only on a keyframe of the new layer with the viewer's numbering intact. Layers that stop
//! are dropped and come back; OBS's offer shape (rids 0/1/2, one SSRC declared) is served;
//! bad offers and bad layer requests are refused with a reason; VP8 temporal layers are
//! filtered per viewer.

mod common;

use common::layer_api::{active, latest_layers, listed, post_layer, post_raw_offer, LAYER_REL};
use common::layered::{check_stream, describe, read_vp8, runs, tagged, Got, Tag};
use common::simulcast::{
    attributes, media_section, publish_simulcast, simulcast_offer, simulcast_rids, LayerSpec,
    SimulcastOptions, BROWSER_LAYERS, OBS_LAYERS,
};
use common::{play, Events, HarnessError, PlayOptions, Viewer};
use parley::config::Config;
use parley::forward::keyframe::VideoCodec as Codec;
use parley::forward::resolution::keyframe_size;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
const SERVER_SENT_EVENTS: &str = "urn:ietf:params:whep:ext:core:server-sent-events";

/// Rids in the order of the publisher's layers, to name runs in messages.
fn names(layers: &[LayerSpec]) -> Vec<&'static str> {
    layers.iter().map(|l| l.rid).collect()
}

/// The viewer's video mid (its only video slot).
fn video_mid(viewer: &Viewer) -> String {
    viewer
        .slots()
        .into_iter()
        .find(|s| s.kind == common::Kind::Video)
        .map(|s| s.mid)
        .expect("the answer has a video slot")
}

/// Waits until the viewer's stream has settled on `layer`: its last run is that layer and
/// has at least `packets` packets. Returns the whole stream, checked with `check_stream`.
async fn settle(viewer: &Viewer, layer: u8, packets: usize, what: &str, rids: &[&str]) -> Vec<Got> {
    let got = viewer
        .wait_for(what, WAIT, |r| {
            let got = tagged(r);
            runs(&got)
                .last()
                .is_some_and(|run| run.layer == layer && run.packets >= packets)
        })
        .await;
    let got = match got {
        Ok(r) => tagged(&r),
        Err(e) => panic!(
            "{e}\nlayer runs: {}",
            describe(&tagged(&viewer.received()), rids)
        ),
    };
    if let Err(e) = check_stream(&got, true) {
        panic!("{e}\nlayer runs: {}", describe(&got, rids));
    }
    got
}

/// Waits for `more` further packets and returns the stream; fails if it checks out wrong.
async fn more_packets(viewer: &Viewer, after: usize, more: usize, rids: &[&str]) -> Vec<Got> {
    let r = viewer
        .wait_for("more video", WAIT, |r| tagged(r).len() >= after + more)
        .await
        .expect("video keeps flowing");
    let got = tagged(&r);
    if let Err(e) = check_stream(&got, true) {
        panic!("{e}\nlayer runs: {}", describe(&got, rids));
    }
    got
}

/// Waits until the latest `layers` event of `mid` plays `want` (rid, spatial id, width,
/// height) and lists exactly `layers`.
async fn wait_layers_event(
    events: &Events,
    mid: &str,
    want: (&str, u64, u64, u64),
    layers: &[(&str, u64, u64, u64)],
) -> Value {
    let matches = |e: &Value| {
        let owned = |t: &(&str, u64, u64, u64)| (t.0.to_owned(), t.1, t.2, t.3);
        active(e) == Some(owned(&want)) && listed(e) == layers.iter().map(owned).collect::<Vec<_>>()
    };
    let all = events
        .wait_for(
            &format!("a layers event for mid {mid} playing {want:?} of {layers:?}"),
            WAIT,
            |e| latest_layers(e, mid).is_some_and(matches),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    latest_layers(&all, mid).cloned().expect("just matched")
}

/// The browser layers as the `layers` event lists them: (rid, spatialLayerId, w, h).
const BROWSER_LISTED: [(&str, u64, u64, u64); 3] =
    [("q", 0, 320, 180), ("h", 1, 640, 360), ("f", 2, 1280, 720)];

async fn play_with_events(base: &str, room: &str) -> (Viewer, Events) {
    let viewer = play(base, room, PlayOptions::default())
        .await
        .expect("play");
    let events_url = viewer
        .link(SERVER_SENT_EVENTS)
        .expect("the 201 links the session's events");
    let session = events_url
        .strip_suffix("/events")
        .expect("events live under the session URL");
    let events = Events::open(session, None).await.expect("events");
    (viewer, events)
}

/// The layer URL of a viewer, from its `Link` header.
fn layer_url(viewer: &Viewer) -> String {
    let url = viewer
        .link(LAYER_REL)
        .unwrap_or_else(|| panic!("no layer Link in {:?}", viewer.links));
    assert_eq!(url, format!("{}/layer", viewer.location));
    url
}

async fn request(viewer: &Viewer, body: &str) {
    let (status, text) = post_layer(&layer_url(viewer), body).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}: {text}");
}

#[test]
fn the_test_payloads_announce_their_picture_sizes() {
    // The harness's keyframes must carry what Parley ranks by, or the tests below prove nothing.
    use common::layered::{h264_frame, vp8_frame, Vp8Fields};
    let fields = Vp8Fields {
        picture_id: 0x7ffe,
        temporal: Some((9, 0, false)),
    };
    for l in BROWSER_LAYERS {
        let key = vp8_frame(1, 5, true, (l.width, l.height), &fields);
        assert_eq!(
            keyframe_size(Codec::Vp8, &key[0].0),
            Some((l.width, l.height))
        );
        let read = read_vp8(&key[0].0).expect("descriptor");
        assert_eq!(
            (read.picture_id, read.tl0picidx, read.tid),
            (Some(0x7ffe), Some(9), Some(0))
        );
        assert_eq!(
            Tag::find(&key[1].0).map(|t| (t.part, t.parts)),
            Some((1, 2))
        );
    }
    for profile in ["64001f", "42e01f"] {
        for l in OBS_LAYERS {
            let key = h264_frame(profile, 0, 1, true, (l.width, l.height));
            assert_eq!(
                keyframe_size(Codec::H264, &key[0].0),
                Some((l.width, l.height)),
                "{profile} {l:?}"
            );
            assert!(Tag::find(&key[0].0).is_some_and(|t| t.keyframe_start()));
        }
    }
}

#[tokio::test]
async fn each_viewer_gets_the_one_layer_its_limits_allow_and_switches_on_keyframes() {
    let server = parley::start(limits_only()).await.expect("server");
    let base = server.base_url();
    let rids = names(&BROWSER_LAYERS);
    let publisher = publish_simulcast(&base, "sim", SimulcastOptions::browser_vp8())
        .await
        .expect("publish");
    let offer_video = media_section(&publisher.offer_sdp, "video").expect("video");
    assert_eq!(simulcast_rids(offer_video, "send"), ["q", "h", "f"]);
    let answer_video = media_section(&publisher.answer_sdp, "video").expect("video");
    assert_eq!(simulcast_rids(answer_video, "recv"), ["q", "h", "f"]);

    let (auto, auto_events) = play_with_events(&base, "sim").await;
    let (w640, w640_events) = play_with_events(&base, "sim").await;
    let (w320, w320_events) = play_with_events(&base, "sim").await;
    let (pin, pin_events) = play_with_events(&base, "sim").await;
    let mid = video_mid(&auto);
    request(&w640, &format!(r#"{{"mediaId":"{mid}","maxWidth":640}}"#)).await;
    request(&w320, &format!(r#"{{"mediaId":"{mid}","maxWidth":320}}"#)).await;

    // Every viewer settles on its layer, and stays there.
    for (viewer, layer, events) in [
        (&auto, 2u8, &auto_events),
        (&w640, 1, &w640_events),
        (&w320, 0, &w320_events),
        (&pin, 2, &pin_events),
    ] {
        let got = settle(
            viewer,
            layer,
            20,
            &format!("layer {}", rids[usize::from(layer)]),
            &rids,
        )
        .await;
        let got = more_packets(viewer, got.len(), 30, &rids).await;
        let last = runs(&got).last().cloned().expect("a run");
        assert_eq!(last.layer, layer, "{}", describe(&got, &rids));
        assert!(last.packets >= 50, "{}", describe(&got, &rids));
        let want = BROWSER_LISTED[usize::from(layer)];
        wait_layers_event(events, &mid, want, &BROWSER_LISTED).await;
    }
    // The server asked each layer it switched a viewer to for a keyframe, on that layer's
    // SSRC (the publisher sends keyframes only when asked).
    let requests = publisher.keyframe_requests();
    assert!(
        requests.iter().all(|&n| n >= 1),
        "PLIs per layer: {requests:?}"
    );

    // Pin the smallest layer by rid, then return to automatic.
    request(&pin, &format!(r#"{{"mediaId":"{mid}","rid":"q"}}"#)).await;
    let got = settle(&pin, 0, 30, "the pinned layer q", &rids).await;
    wait_layers_event(&pin_events, &mid, BROWSER_LISTED[0], &BROWSER_LISTED).await;
    let before = got.len();
    request(&pin, &format!(r#"{{"mediaId":"{mid}"}}"#)).await;
    let got = settle(&pin, 2, 30, "layer f again, automatically", &rids).await;
    wait_layers_event(&pin_events, &mid, BROWSER_LISTED[2], &BROWSER_LISTED).await;
    let got = more_packets(&pin, got.len(), 10, &rids).await;
    let layers_after: Vec<u8> = runs(&got[before..]).iter().map(|r| r.layer).collect();
    assert_eq!(layers_after, [0, 2], "{}", describe(&got, &rids));

    for v in [auto, w640, w320, pin] {
        v.close().await;
    }
    publisher.close().await;
    assert_eq!(server.session_count(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_layer_that_stops_is_dropped_and_taken_up_again_when_it_resumes() {
    // Liveness decides here, not the viewer's downlink estimate (which, on a busy machine,
    // has passed the viewer through q on the way down).
    let server = parley::start(limits_only()).await.expect("server");
    let base = server.base_url();
    let rids = names(&BROWSER_LAYERS);
    let publisher = publish_simulcast(&base, "drop", SimulcastOptions::browser_vp8())
        .await
        .expect("publish");
    let (viewer, events) = play_with_events(&base, "drop").await;
    let mid = video_mid(&viewer);
    settle(&viewer, 2, 20, "layer f", &rids).await;
    wait_layers_event(&events, &mid, BROWSER_LISTED[2], &BROWSER_LISTED).await;

    // The encoder drops f: the viewer moves down to h within about two seconds.
    publisher.set_sending(2, false);
    let got = viewer
        .wait_for("h after f stopped", Duration::from_millis(2500), |r| {
            runs(&tagged(r)).last().is_some_and(|run| run.layer == 1)
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nruns: {}",
                describe(&tagged(&viewer.received()), &rids)
            )
        });
    check_stream(&tagged(&got), true).unwrap_or_else(|e| panic!("{e}"));
    wait_layers_event(&events, &mid, BROWSER_LISTED[1], &BROWSER_LISTED[..2]).await;
    settle(&viewer, 1, 20, "h while f is silent", &rids).await;

    // f comes back with a keyframe: the viewer goes back up.
    publisher.set_sending(2, true);
    let got = settle(&viewer, 2, 20, "f again", &rids).await;
    wait_layers_event(&events, &mid, BROWSER_LISTED[2], &BROWSER_LISTED).await;
    let got = more_packets(&viewer, got.len(), 10, &rids).await;
    let order: Vec<u8> = runs(&got).iter().map(|r| r.layer).collect();
    assert!(order.ends_with(&[2, 1, 2]), "{}", describe(&got, &rids));

    viewer.close().await;
    publisher.close().await;
    server.shutdown().await;
}

/// (rid, spatialLayerId, width, height) of OBS's layers, smallest first.
const OBS_LISTED: [(&str, u64, u64, u64); 3] =
    [("2", 0, 426, 240), ("1", 1, 852, 480), ("0", 2, 1280, 720)];

#[tokio::test]
async fn an_obs_simulcast_offer_in_h264_high_is_served_and_rid_0_ranks_largest() {
    obs_simulcast_is_served("64001f").await;
}

#[tokio::test]
async fn an_obs_simulcast_offer_in_h264_baseline_is_served_and_rid_0_ranks_largest() {
    obs_simulcast_is_served("42e01f").await;
}

async fn obs_simulcast_is_served(profile: &'static str) {
    let server = parley::start(limits_only()).await.expect("server");
    let base = server.base_url();
    let rids = names(&OBS_LAYERS);
    let publisher = publish_simulcast(&base, "obs", SimulcastOptions::obs_h264(profile))
        .await
        .expect("publish");

    // The offer has OBS's shape...
    let offer = media_section(&publisher.offer_sdp, "video").expect("video");
    assert_eq!(attributes(offer, "rid"), ["0 send", "1 send", "2 send"]);
    assert_eq!(simulcast_rids(offer, "send"), ["0", "1", "2"]);
    assert_eq!(
        attributes(offer, "extmap"),
        [
            "1 urn:ietf:params:rtp-hdrext:sdes:mid",
            "2 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
        ]
    );
    let declared: Vec<&str> = attributes(offer, "ssrc")
        .iter()
        .filter_map(|v| v.split(' ').next())
        .collect();
    let ssrcs = publisher.ssrcs();
    assert_eq!(declared, [ssrcs[0].to_string(), ssrcs[0].to_string()]);
    assert_eq!((ssrcs[1], ssrcs[2]), (ssrcs[0] + 1, ssrcs[0] + 2));
    // ...and the answer takes all three layers.
    let answer = media_section(&publisher.answer_sdp, "video").expect("video");
    assert_eq!(simulcast_rids(answer, "recv"), ["0", "1", "2"], "{answer}");

    let (viewer, events) = play_with_events(&base, "obs").await;
    let mid = video_mid(&viewer);
    // Which layers opened, as the server sees them (a failure shows the events so far).
    wait_layers_event(&events, &mid, OBS_LISTED[2], &OBS_LISTED).await;
    let got = settle(&viewer, 0, 20, "rid 0, the largest layer", &rids).await;
    let got = more_packets(&viewer, got.len(), 20, &rids).await;
    assert!(
        got[0].tag.layer == 0 && got[0].tag.keyframe_start(),
        "{}",
        describe(&got, &rids)
    );
    assert!(
        got.iter().all(|g| g.tag.layer == 0),
        "{}",
        describe(&got, &rids)
    );

    // A width limit picks the middle layer, whatever its rid.
    request(&viewer, &format!(r#"{{"mediaId":"{mid}","maxWidth":900}}"#)).await;
    settle(&viewer, 1, 20, "rid 1 (852x480)", &rids).await;
    wait_layers_event(&events, &mid, OBS_LISTED[1], &OBS_LISTED).await;

    viewer.close().await;
    publisher.close().await;
    server.shutdown().await;
}

/// Four layers, the biggest last.
fn four_layers() -> SimulcastOptions {
    let mut opts = SimulcastOptions::browser_vp8();
    opts.layers.push(LayerSpec {
        rid: "x",
        width: 1920,
        height: 1080,
    });
    opts
}

/// A 4xx must say why in one line.
fn assert_reasoned_refusal(status: StatusCode, body: &str, what: &str) {
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
        "{what}: {status} {body:?}"
    );
    let reason = body.trim();
    assert!(
        !reason.is_empty() && !reason.contains('\n'),
        "{what}: the reason should be one line: {body:?}"
    );
}

#[tokio::test]
async fn an_offer_with_four_rids_is_answered_with_at_most_three() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let offer = simulcast_offer(&four_layers()).await.expect("offer");
    let video = media_section(&offer, "video").expect("video");
    assert_eq!(simulcast_rids(video, "send"), ["q", "h", "f", "x"]);
    let posted = post_raw_offer(&base, "four", &offer).await;
    if posted.status == StatusCode::CREATED {
        let answer = media_section(&posted.body, "video").expect("an answer with video");
        let recv = simulcast_rids(answer, "recv");
        let accepted: Vec<&str> = attributes(answer, "rid")
            .iter()
            .filter(|r| r.ends_with(" recv"))
            .copied()
            .collect();
        assert!(
            !recv.is_empty() && recv.len() <= 3 && accepted.len() <= 3,
            "at most 3 layers may be accepted: simulcast recv {recv:?}, rids {accepted:?}"
        );
        let location = posted.location.expect("201 has a Location");
        assert_eq!(common::delete(&location, None).await, StatusCode::OK);
    } else {
        assert_reasoned_refusal(posted.status, &posted.body, "four rids");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn four_layers_never_share_one_viewer_slot() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let opts = four_layers();
    let rids = names(&opts.layers);
    let publisher = match publish_simulcast(&base, "four", opts).await {
        Ok(p) => p,
        Err(HarnessError::Status { status, body, .. }) => {
            // Refusing the offer is allowed, with a reason.
            assert_reasoned_refusal(status, &body, "four rids");
            server.shutdown().await;
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let (viewer, events) = play_with_events(&base, "four").await;
    let mid = video_mid(&viewer);
    // One layer at a time, whichever it is (`check_stream`), and it settles.
    let got = viewer
        .wait_for("60 packets in a row from one layer", WAIT, |r| {
            runs(&tagged(r)).last().is_some_and(|run| run.packets >= 60)
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nruns: {}",
                describe(&tagged(&viewer.received()), &rids)
            )
        });
    let got = tagged(&got);
    check_stream(&got, true).unwrap_or_else(|e| panic!("{e}\nruns: {}", describe(&got, &rids)));
    let playing = rids[usize::from(runs(&got).last().expect("a run").layer)];
    // The layers event names that layer and lists at most three of the offered ones.
    let all = events
        .wait_for(&format!("a layers event playing {playing}"), WAIT, |e| {
            latest_layers(e, &mid)
                .and_then(active)
                .is_some_and(|a| a.0 == playing)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let latest = latest_layers(&all, &mid).expect("just matched");
    let listed_rids: Vec<String> = listed(latest).into_iter().map(|l| l.0).collect();
    assert!(
        listed_rids.len() <= 3 && listed_rids.iter().all(|r| rids.contains(&r.as_str())),
        "at most three of the offered layers: {latest}"
    );
    more_packets(&viewer, got.len(), 30, &rids).await;
    viewer.close().await;
    publisher.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_simulcast_attributes_are_refused_or_served_within_the_declared_layers() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let offer = simulcast_offer(&SimulcastOptions::browser_vp8())
        .await
        .expect("offer");
    assert!(offer.contains("a=simulcast:send q;h;f\r\n"), "{offer}");
    let many: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
    let cases: [(&str, String); 7] = [
        (
            "an empty list",
            offer.replace("a=simulcast:send q;h;f", "a=simulcast:send"),
        ),
        (
            "empty entries",
            offer.replace("a=simulcast:send q;h;f", "a=simulcast:send q;;;f;"),
        ),
        (
            "an undeclared rid",
            offer.replace("a=simulcast:send q;h;f", "a=simulcast:send q;h;zz"),
        ),
        (
            "the wrong direction",
            offer.replace("a=simulcast:send q;h;f", "a=simulcast:recv q;h;f"),
        ),
        (
            "a rid without direction",
            offer.replace("a=rid:h send", "a=rid:h"),
        ),
        (
            "forty alternatives",
            offer.replace(
                "a=simulcast:send q;h;f",
                &format!("a=simulcast:send {}", many.join(",")),
            ),
        ),
        (
            "a duplicate rid",
            offer.replace("a=simulcast:send q;h;f", "a=simulcast:send q;h;f;f"),
        ),
    ];
    for (what, sdp) in &cases {
        let posted = post_raw_offer(&base, "bad", sdp).await;
        assert!(
            !posted.status.is_server_error(),
            "{what}: {}",
            posted.status
        );
        if posted.status != StatusCode::CREATED {
            assert_reasoned_refusal(posted.status, &posted.body, what);
            continue;
        }
        let video = media_section(&posted.body, "video").expect("answer video");
        let declared: Vec<&str> = ["q", "h", "f"].into();
        let recv = simulcast_rids(video, "recv");
        let mut unique = recv.clone();
        unique.sort();
        unique.dedup();
        assert!(
            recv.len() <= 3
                && unique.len() == recv.len()
                && recv.iter().all(|r| declared.contains(&r.as_str())),
            "{what}: the answer accepts {recv:?}"
        );
        let location = posted.location.expect("201 has a Location");
        assert_eq!(
            common::delete(&location, None).await,
            StatusCode::OK,
            "{what}"
        );
    }
    // The server still takes a good simulcast offer.
    let publisher = publish_simulcast(&base, "bad", SimulcastOptions::browser_vp8())
        .await
        .expect("a good offer after the bad ones");
    publisher.close().await;
    assert_eq!(server.session_count(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_layer_requests_are_refused_with_a_reason() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let viewer = play(&base, "req", PlayOptions::default())
        .await
        .expect("play");
    let url = layer_url(&viewer);
    let audio_mid = viewer
        .slots()
        .into_iter()
        .find(|s| s.kind == common::Kind::Audio)
        .map(|s| s.mid)
        .expect("audio slot");
    let mid = video_mid(&viewer);
    let bad = [
        format!(r#"{{"mediaId":"{mid}9"}}"#),
        format!(r#"{{"mediaId":"{audio_mid}","maxWidth":640}}"#),
        format!(r#"{{"mediaId":"{audio_mid}"}}"#),
        r#"{"maxWidth":640}"#.to_owned(),
        "not json".to_owned(),
        format!(r#"{{"mediaId":{mid}}}"#),
        format!(r#"{{"mediaId":"{mid}","maxWidth":"wide"}}"#),
        format!(r#"{{"mediaId":"{mid}","rid":5}}"#),
        format!(r#"{{"mediaId":"{mid}","maxHeight":-5}}"#),
        format!(r#"{{"mediaId":"{mid}","maxWidth":0}}"#),
        format!(r#"{{"mediaId":"{mid}","maxWidth":99999999}}"#),
        format!(r#"{{"mediaId":"{mid}","spatialLayerId":7}}"#),
        format!(r#"{{"mediaId":"{mid}","temporalLayerId":200}}"#),
        format!(r#"{{"mediaId":"{mid}","maxTemporalLayerId":9}}"#),
        format!(r#"{{"mediaId":"{mid}","maxSpatialLayerId":300}}"#),
        format!(r#"{{"mediaId":"{mid}","rid":"a b"}}"#),
        format!(r#"{{"mediaId":"{mid}","rid":"{}"}}"#, "r".repeat(500)),
    ];
    for body in &bad {
        let (status, text) = post_layer(&url, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        let reason = text.trim();
        assert!(
            !reason.is_empty() && !reason.contains('\n'),
            "{body}: one-line reason expected, got {text:?}"
        );
    }
    // The same endpoint takes good requests (so the refusals above are about the bodies).
    for body in [
        format!(r#"{{"mediaId":"{mid}","maxWidth":640,"maxHeight":360}}"#),
        format!(r#"{{"mediaId":"{mid}","encodingId":"h"}}"#),
        format!(r#"{{"mediaId":"{mid}","spatialLayerId":0,"temporalLayerId":1}}"#),
        format!(r#"{{"mediaId":"{mid}","maxSpatialLayerId":1,"maxTemporalLayerId":0}}"#),
        format!(r#"{{"mediaId":"{mid}"}}"#),
    ] {
        let (status, text) = post_layer(&url, &body).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}: {text}");
    }
    let unknown = url.replace(
        viewer.location.rsplit('/').next().expect("session id"),
        "no-such-session",
    );
    let (status, text) = post_layer(&unknown, &format!(r#"{{"mediaId":"{mid}"}}"#)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}: {text}");
    viewer.close().await;
    server.shutdown().await;
}

/// One received VP8 frame: its descriptor's numbering and where the publisher sent it.
#[derive(Clone, Copy, Debug)]
struct Frame {
    picture_id: u16,
    tl0: u8,
    tid: u8,
    /// The publisher's capture index.
    index: u32,
    key: bool,
}

/// The frames of a stream, read from each frame's first packet.
fn frames(got: &[Got]) -> Vec<Frame> {
    got.iter()
        .filter(|g| g.tag.part == 0)
        .map(|g| {
            let d = read_vp8(&g.payload).expect("a VP8 descriptor");
            Frame {
                picture_id: d.picture_id.expect("PictureID"),
                tl0: d.tl0picidx.expect("TL0PICIDX"),
                tid: d.tid.expect("TID"),
                index: g.tag.frame,
                key: g.tag.key,
            }
        })
        .collect()
}

/// PictureIDs go up by one per frame sent, TL0PICIDX by one per base-layer frame.
fn check_vp8_numbering(frames: &[Frame]) -> Result<(), String> {
    for (i, w) in frames.windows(2).enumerate() {
        let (a, b) = (w[0], w[1]);
        if b.picture_id != (a.picture_id + 1) & 0x7fff {
            return Err(format!(
                "frame {}: PictureID {} after {}",
                i + 1,
                b.picture_id,
                a.picture_id
            ));
        }
        if b.tl0 != a.tl0.wrapping_add(u8::from(b.tid == 0)) {
            return Err(format!(
                "frame {}: TL0PICIDX {} after {} (TID {})",
                i + 1,
                b.tl0,
                a.tl0,
                b.tid
            ));
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_viewer_limited_to_temporal_layer_0_gets_every_fourth_frame_renumbered() {
    let server = parley::start(limits_only()).await.expect("server");
    let base = server.base_url();
    let rids = names(&BROWSER_LAYERS);
    let mut opts = SimulcastOptions::browser_vp8();
    opts.temporal = true;
    let publisher = publish_simulcast(&base, "tl", opts).await.expect("publish");
    let (limited, events) = play_with_events(&base, "tl").await;
    let (full, _full_events) = play_with_events(&base, "tl").await;
    let mid = video_mid(&limited);
    settle(&limited, 2, 20, "layer f", &rids).await;
    settle(&full, 2, 20, "layer f", &rids).await;

    request(
        &limited,
        &format!(r#"{{"mediaId":"{mid}","maxTemporalLayerId":0}}"#),
    )
    .await;
    // Wait until the last 20 frames were all base-layer frames.
    let got = limited
        .wait_for("20 base-layer frames in a row", WAIT, |r| {
            let f = frames(&tagged(r));
            f.len() >= 20 && f[f.len() - 20..].iter().all(|x| x.tid == 0)
        })
        .await
        .unwrap_or_else(|e| {
            let f = frames(&tagged(&limited.received()));
            let tids: Vec<u8> = f.iter().rev().take(24).map(|x| x.tid).collect();
            panic!("{e}\nlast TIDs, newest first: {tids:?}")
        });
    let got = tagged(&got);
    check_stream(&got, false).unwrap_or_else(|e| panic!("{e}\nruns: {}", describe(&got, &rids)));
    let f = frames(&got);
    check_vp8_numbering(&f).unwrap_or_else(|e| panic!("limited viewer: {e}"));
    // From the limit on: one frame in four (a keyframe restarts the pattern).
    let cut = f.iter().rposition(|x| x.tid != 0).map_or(0, |i| i + 1);
    for w in f[cut..].windows(2) {
        let gap = w[1].index.wrapping_sub(w[0].index);
        assert!(
            gap == 4 || (w[1].key && gap < 4),
            "frames {} then {}: one frame in four after the limit",
            w[0].index,
            w[1].index
        );
    }
    let latest = events
        .wait_for("the active layer at temporal layer 0", WAIT, |e| {
            latest_layers(e, &mid).is_some_and(|l| l["active"]["temporalLayerId"] == 0)
        })
        .await
        .expect("layers event");
    assert_eq!(
        active(latest_layers(&latest, &mid).expect("layers")).map(|a| a.0),
        Some("f".to_owned())
    );

    // The unlimited viewer still gets every frame, all three temporal layers.
    let r = full
        .wait_for("as many frames on the unlimited viewer", WAIT, |r| {
            frames(&tagged(r)).len() >= 2 * f.len()
        })
        .await
        .expect("video");
    let all = tagged(&r);
    check_stream(&all, true).unwrap_or_else(|e| panic!("{e}"));
    let all_frames = frames(&all);
    check_vp8_numbering(&all_frames).unwrap_or_else(|e| panic!("unlimited viewer: {e}"));
    let tids: std::collections::BTreeSet<u8> = all_frames.iter().map(|x| x.tid).collect();
    assert_eq!(tids.into_iter().collect::<Vec<_>>(), [0, 1, 2]);

    limited.close().await;
    full.close().await;
    publisher.close().await;
    server.shutdown().await;
}

/// A server whose layer choices follow the slots' limits alone: these tests check limits,
/// pins and switches; `tests/downlink.rs` covers what viewers' downlink estimates change.
fn limits_only() -> Config {
    Config {
        bwe: false,
        ..Config::loopback()
    }
}
