//! Multi-party rooms through a real server with webrtc-rs peers: everyone sees the others and
//! never themselves, video slots follow the speaker and switch on keyframes, people leave,
//! rejoin and are removed, and the room events tell a client what each slot shows.

mod common;

use common::{
    is_event, play, position, Events, Kind, Member, PlayOptions, Received, SentLog, Viewer, SILENT,
    SPEAKING,
};
use parley::config::Config;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// Senders seen per slot SSRC, in order of their first packet on it.
fn senders_by_ssrc(log: &SentLog, got: &[Received], kind: Kind) -> HashMap<u32, Vec<String>> {
    let mut by: HashMap<u32, Vec<String>> = HashMap::new();
    for r in got.iter().filter(|r| r.kind == kind) {
        let (who, _) = log.sender(r).expect("every payload was sent by someone");
        let list = by.entry(r.ssrc).or_default();
        if list.last() != Some(&who) {
            list.push(who);
        }
    }
    by
}

#[tokio::test]
async fn in_a_four_person_call_everyone_gets_exactly_the_other_three() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let log = SentLog::default();
    let names = ["ann", "bob", "cat", "dan"];
    let mut members = Vec::new();
    let mut viewers: Vec<Viewer> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        members.push(Member::join(&base, "call", name, i as u32, &log).await);
        viewers.push(
            play(&base, "call", PlayOptions::slots(name, 3, 3))
                .await
                .expect("play"),
        );
    }
    for (name, viewer) in names.iter().zip(&viewers) {
        let others: Vec<&str> = names.iter().copied().filter(|n| n != name).collect();
        let got = viewer
            .wait_for(
                "10 video and 10 audio packets from each of the others",
                WAIT,
                |got| {
                    others.iter().all(|o| {
                        log.count(got, Kind::Video, o) >= 10 && log.count(got, Kind::Audio, o) >= 10
                    })
                },
            )
            .await
            .expect("media from the others");
        assert_eq!(
            log.count(&got, Kind::Video, name),
            0,
            "{name} never gets its own video"
        );
        assert_eq!(
            log.count(&got, Kind::Audio, name),
            0,
            "{name} never gets its own audio"
        );
        for kind in [Kind::Audio, Kind::Video] {
            let by = senders_by_ssrc(&log, &got, kind);
            assert_eq!(by.len(), 3, "{name}: three {kind:?} slots in use: {by:?}");
            let shown: BTreeSet<&String> = by.values().flatten().collect();
            assert_eq!(
                shown.len(),
                3,
                "{name}: each slot shows a different participant: {by:?}"
            );
            assert!(
                by.values().all(|s| s.len() == 1),
                "{name}: no slot switched: {by:?}"
            );
        }
    }
    for v in viewers {
        v.close().await;
    }
    for m in members {
        m.leave().await;
    }
    assert_eq!(server.session_count(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn video_slots_follow_the_speaker_and_switch_on_keyframes() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let log = SentLog::default();
    let mut members = Vec::new();
    for i in 0..6u32 {
        members.push(Member::join(&base, "talk", &format!("p{i}"), i, &log).await);
    }
    let viewer = play(&base, "talk", PlayOptions::slots("p0", 1, 2))
        .await
        .expect("p0 plays");
    let events = Events::open(&viewer.location, None).await.expect("events");
    let video_of = |got: &[Received], who: &str| log.count(got, Kind::Video, who);

    members[1].speak(SPEAKING);
    viewer
        .wait_for("p1's video", WAIT, |got| video_of(got, "p1") >= 5)
        .await
        .expect("the speaker is shown");
    events
        .wait_for("p1 is the active speaker", WAIT, |e| {
            position(e, "active_speaker", &[("participant", "p1")]).is_some()
        })
        .await
        .expect("active speaker event");

    members[1].speak(SILENT);
    members[4].speak(SPEAKING);
    let before = viewer.received().len();
    viewer
        .wait_for("p4's video", WAIT, |got| {
            video_of(&got[before..], "p4") >= 5
        })
        .await
        .expect("the new speaker is shown");

    members[4].speak(SILENT);
    members[5].speak(SPEAKING);
    let before = viewer.received().len();
    // The two most recent speakers fill the two slots now.
    let recent = |got: &[Received]| -> BTreeSet<String> {
        let video: Vec<&Received> = got[before..]
            .iter()
            .filter(|r| r.kind == Kind::Video)
            .collect();
        video[video.len().saturating_sub(20)..]
            .iter()
            .filter_map(|r| log.sender(r).map(|(who, _)| who))
            .collect()
    };
    let want = BTreeSet::from(["p4".to_string(), "p5".to_string()]);
    let got = viewer
        .wait_for("the slots to show p4 and p5", WAIT, |got| {
            recent(got) == want
        })
        .await
        .expect("the two most recent speakers are shown");

    // Every switch of a slot's source starts on a keyframe of the new source. The check runs
    // over each slot's packets in sequence order (retransmissions and reordering fall into
    // place). A switch right after a gap may have lost its first packet (the keyframe) on the
    // way; one such switch per run is tolerated, a switch without a gap never.
    let mut by_slot: HashMap<u32, Vec<&Received>> = HashMap::new();
    for r in got.iter().filter(|r| r.kind == Kind::Video) {
        by_slot.entry(r.ssrc).or_default().push(r);
    }
    let mut switches = 0;
    let mut unchecked = 0;
    for (ssrc, mut packets) in by_slot {
        // Arrival order is near sequence order: unwrap against the first packet.
        let base = packets[0].seq;
        let ext = |r: &Received| i64::from(r.seq.wrapping_sub(base) as i16);
        packets.sort_by_key(|r| ext(r));
        packets.dedup_by_key(|r| r.seq);
        let history: Vec<(String, bool, u16)> = packets
            .iter()
            .filter_map(|p| log.sender(p).map(|(w, k)| (w, k, p.seq)))
            .collect();
        let mut last: Option<(String, i64)> = None;
        for r in &packets {
            let (who, key) = log.sender(r).expect("sent");
            let seq = ext(r);
            let switched = last.as_ref().is_none_or(|(w, _)| *w != who);
            let unbroken = last.as_ref().is_some_and(|(_, s)| *s + 1 == seq);
            if switched {
                switches += 1;
                if unbroken {
                    assert!(
                        key,
                        "slot {ssrc} switched to {who} on a non-keyframe (seq {}): {history:?}",
                        r.seq
                    );
                } else if !key {
                    unchecked += 1;
                }
            }
            last = Some((who, seq));
        }
    }
    assert!(
        unchecked <= 1,
        "{unchecked} switches hidden by losses: too many to trust this run"
    );
    assert!(
        switches >= 4,
        "two initial fills and at least two switches: {switches}"
    );
    assert!(
        log.count(&got, Kind::Video, "p0") == 0,
        "never its own video"
    );

    // The events said which participant each slot shows, ending with p4 and p5.
    let e = events.all();
    let last_shown: BTreeSet<String> = viewer
        .slots()
        .iter()
        .filter(|s| s.kind == Kind::Video)
        .filter_map(|s| {
            e.iter()
                .rev()
                .find(|ev| is_event(ev, "slot_assigned", &[("mid", &s.mid)]))
                .and_then(|ev| ev["participant"].as_str().map(str::to_owned))
        })
        .collect();
    assert_eq!(
        last_shown,
        BTreeSet::from(["p4".to_string(), "p5".to_string()])
    );
    drop(events);
    viewer.close().await;
    for m in members {
        m.leave().await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn leaving_rejoining_crashing_and_removal_move_slots_and_emit_events_in_order() {
    let mut config = Config::loopback();
    config.admin_token = Some("admin".into());
    let server = parley::start(config).await.expect("server");
    let base = server.base_url();
    let log = SentLog::default();
    let viewer = play(&base, "r", PlayOptions::slots("ann", 1, 2))
        .await
        .expect("ann plays");
    let events = Events::open(&viewer.location, None).await.expect("events");
    let bob = Member::join(&base, "r", "bob", 1, &log).await;
    let cat = Member::join(&base, "r", "cat", 2, &log).await;
    let video_of = |got: &[Received], who: &str| log.count(got, Kind::Video, who);
    viewer
        .wait_for("bob's and cat's video", WAIT, |got| {
            video_of(got, "bob") >= 5 && video_of(got, "cat") >= 5
        })
        .await
        .expect("both shown");

    // Bob leaves: his slot goes idle; he rejoins and is shown again.
    bob.leave().await;
    events
        .wait_for("bob left", WAIT, |e| {
            position(e, "participant_left", &[("participant", "bob")]).is_some()
        })
        .await
        .expect("participant_left");
    let bob = Member::join(&base, "r", "bob", 3, &log).await;
    let before = viewer.received().len();
    viewer
        .wait_for("bob's video after rejoining", WAIT, |got| {
            video_of(&got[before..], "bob") >= 5
        })
        .await
        .expect("bob shown again");

    // Cat's media stops (a crash without DELETE): within a few seconds a slot shows dan.
    let dan = Member::join(&base, "r", "dan", 4, &log).await;
    cat.stop_sending();
    let before = viewer.received().len();
    viewer
        .wait_for(
            "dan replacing the frozen cat",
            Duration::from_secs(5),
            |got| video_of(&got[before..], "dan") >= 5,
        )
        .await
        .expect("a stalled source is replaced");

    // An operator removes bob: his sessions end at once.
    let http = reqwest::Client::new();
    let url = format!("{base}/rooms/r/participants/bob");
    assert_eq!(
        http.delete(&url).send().await.expect("DELETE").status(),
        reqwest::StatusCode::UNAUTHORIZED
    );
    let resp = http
        .delete(&url)
        .bearer_auth("admin")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    assert_eq!(
        common::delete(&bob.publisher.location, None).await,
        reqwest::StatusCode::NOT_FOUND,
        "bob's session is gone"
    );
    let resp = http
        .delete(&url)
        .bearer_auth("admin")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(resp.status(), reqwest::StatusCode::NOT_FOUND);

    let e = events
        .wait_for("bob removed", WAIT, |e| {
            e.iter()
                .filter(|ev| is_event(ev, "participant_left", &[("participant", "bob")]))
                .count()
                == 2
        })
        .await
        .expect("second participant_left");
    // Order: bob joins, publishes, is shown, leaves (tracks first), rejoins.
    let at = |kind: &str, f: &[(&str, &str)]| {
        position(&e, kind, f).unwrap_or_else(|| panic!("no {kind} {f:?} in {e:?}"))
    };
    let joined = at("participant_joined", &[("participant", "bob")]);
    let published = at(
        "track_published",
        &[("participant", "bob"), ("kind", "video")],
    );
    let shown = at("slot_assigned", &[("participant", "bob")]);
    let unpublished = at(
        "track_unpublished",
        &[("participant", "bob"), ("kind", "video")],
    );
    let left = at("participant_left", &[("participant", "bob")]);
    assert!(
        joined < published && published < shown && shown < unpublished && unpublished < left,
        "{e:?}"
    );
    let rejoined = e
        .iter()
        .enumerate()
        .skip(left + 1)
        .find(|(_, ev)| is_event(ev, "participant_joined", &[("participant", "bob")]));
    assert!(rejoined.is_some(), "bob rejoined after leaving: {e:?}");
    drop(events);
    drop(bob);
    viewer.close().await;
    cat.leave().await;
    dan.leave().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_named_participant_can_be_played_alone() {
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let log = SentLog::default();
    let ann = Member::join(&base, "r", "ann", 1, &log).await;
    let bob = Member::join(&base, "r", "bob", 2, &log).await;
    bob.speak(SPEAKING);
    let viewer = play(
        &base,
        "r",
        PlayOptions {
            target: Some("ann".into()),
            ..PlayOptions::default()
        },
    )
    .await
    .expect("play ann");
    let got = viewer
        .wait_for("ann's media", WAIT, |got| {
            log.count(got, Kind::Video, "ann") >= 10 && log.count(got, Kind::Audio, "ann") >= 10
        })
        .await
        .expect("ann's media");
    assert_eq!(
        log.count(&got, Kind::Video, "bob") + log.count(&got, Kind::Audio, "bob"),
        0
    );
    viewer.close().await;
    ann.leave().await;
    bob.leave().await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_room_api_describes_rooms_and_the_participant_limit_holds() {
    let mut config = Config::loopback();
    config.max_participants_per_room = 2;
    let server = parley::start(config).await.expect("server");
    let base = server.base_url();
    let log = SentLog::default();
    let ann = Member::join(&base, "r", "ann", 1, &log).await;
    let viewer = play(&base, "r", PlayOptions::slots("bob", 1, 1))
        .await
        .expect("bob plays");
    viewer
        .wait_for("ann's video", WAIT, |got| {
            log.count(got, Kind::Video, "ann") >= 5
        })
        .await
        .expect("media");

    // A third participant is refused; a second session of bob's is not.
    let third = play(&base, "r", PlayOptions::slots("cat", 1, 1)).await;
    let err = third.err().expect("cat is refused").to_string();
    assert!(err.contains("403") && err.contains("full"), "{err}");
    let again = play(&base, "r", PlayOptions::slots("bob", 1, 1))
        .await
        .expect("bob again");
    again.close().await;

    let http = reqwest::Client::new();
    let rooms: serde_json::Value = http
        .get(format!("{base}/rooms"))
        .send()
        .await
        .expect("GET /rooms")
        .json()
        .await
        .expect("JSON");
    assert_eq!(rooms["rooms"][0]["name"], "r");
    assert_eq!(rooms["rooms"][0]["participants"], 2);
    let room: serde_json::Value = http
        .get(format!("{base}/rooms/r"))
        .send()
        .await
        .expect("GET /rooms/r")
        .json()
        .await
        .expect("JSON");
    let people = room["participants"].as_array().expect("participants");
    let ann_view = people.iter().find(|p| p["name"] == "ann").expect("ann");
    assert_eq!(ann_view["publishing"], true);
    let kinds: BTreeSet<&str> = ann_view["tracks"]
        .as_array()
        .expect("tracks")
        .iter()
        .filter_map(|t| t["kind"].as_str())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["audio", "video"]));
    assert!(ann_view["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["codec"] == "VP8"));
    let bob_view = people.iter().find(|p| p["name"] == "bob").expect("bob");
    assert!(bob_view["slots"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["participant"] == "ann" && s["kind"] == "video"));
    assert!(room["counters"]["packets_in"].as_u64().unwrap() > 0);
    assert!(room["counters"]["packets_out"].as_u64().unwrap() > 0);
    assert!(
        !room
            .to_string()
            .contains(viewer.location.rsplit('/').next().unwrap()),
        "no session ids"
    );
    assert_eq!(
        http.get(format!("{base}/rooms/nope"))
            .send()
            .await
            .expect("GET")
            .status(),
        reqwest::StatusCode::NOT_FOUND
    );
    viewer.close().await;
    ann.leave().await;
    let rooms: serde_json::Value = http
        .get(format!("{base}/rooms"))
        .send()
        .await
        .expect("GET /rooms")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        rooms["rooms"].as_array().map(Vec::len),
        Some(0),
        "empty rooms are removed"
    );
    server.shutdown().await;
}
