//! Multi-party interop with an independent WebRTC implementation: three aiortc participants
//! each publish (WHIP) and play (WHEP, two video and two audio slots) one room, and each
//! decodes the video and audio of the other two and never its own, telling senders apart by
//! what they decode (luma level, tone). The WHEP sessions' server-sent events must name the
//! other two in the slots. VP8 and H264 with everyone joining at once, and VP8 with
//! participants joining 1.5 s apart: later joiners' slots only get a picture if the server
//! relays their keyframe request (aiortc's VP8 encoder makes a keyframe every 3000 frames).
//!
//! `./scripts/test.sh` installs aiortc in `target/pyenv` and exports `PARLEY_PYTHON`.

mod common;

use parley::config::Config;
use std::time::Duration;

const PARTICIPANTS: [&str; 3] = ["p1", "p2", "p3"];
const FRAMES: u64 = 20;
const AUDIO_FRAMES: u64 = 10;

async fn aiortc_room(codec: &str, stagger_secs: &str) {
    let server = parley::start(Config::loopback()).await.expect("server");
    let frames = FRAMES.to_string();
    let audio_frames = AUDIO_FRAMES.to_string();
    let base = server.base_url();
    let args = [
        "--base",
        &base,
        "--room",
        "interop-room",
        "--codec",
        codec,
        "--participants",
        "3",
        "--frames",
        &frames,
        "--audio-frames",
        &audio_frames,
        "--timeout",
        "40",
        "--stagger",
        stagger_secs,
    ];
    let what = format!("aiortc room {codec}");
    let report =
        common::aiortc::run("aiortc_room.py", &args, Duration::from_secs(120), &what).await;
    let people = report["participants"].as_array().expect("participants");
    assert_eq!(people.len(), PARTICIPANTS.len(), "{report}");
    for (p, name) in people.iter().zip(PARTICIPANTS) {
        assert_eq!(p["name"], name, "{report}");
        assert_eq!(p["own_frames"], 0, "{name} decoded itself: {report}");
        let video = p["decoded_from"].as_object().expect("decoded_from");
        let audio = p["audio_from"].as_object().expect("audio_from");
        let slots = p["slots"].as_object().expect("slots");
        let others: Vec<&str> = PARTICIPANTS.into_iter().filter(|o| *o != name).collect();
        assert_eq!(video.len(), others.len(), "{report}");
        for other in &others {
            let v = video.get(*other).and_then(|n| n.as_u64()).unwrap_or(0);
            let a = audio.get(*other).and_then(|n| n.as_u64()).unwrap_or(0);
            assert!(
                v >= FRAMES,
                "{name}: {v} video frames from {other}: {report}"
            );
            assert!(
                a >= AUDIO_FRAMES,
                "{name}: {a} audio frames from {other}: {report}"
            );
        }
        // Slots 0 and 1 are video, 2 and 3 audio; each kind shows both others, once.
        for mids in [["0", "1"], ["2", "3"]] {
            let mut shown: Vec<&str> = mids
                .iter()
                .filter_map(|m| slots.get(*m).and_then(|s| s.as_str()))
                .collect();
            shown.sort_unstable();
            assert_eq!(shown, others, "{name}: slots {mids:?}: {report}");
        }
    }
    println!("aiortc room {codec} (stagger {stagger_secs} s): {report}");
    assert_eq!(
        server.session_count(),
        0,
        "the participants' DELETEs freed their sessions"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn aiortc_room_vp8_three_participants_see_each_other() {
    aiortc_room("VP8", "0").await;
}

#[tokio::test]
async fn aiortc_room_h264_three_participants_see_each_other() {
    aiortc_room("H264", "0").await;
}

#[tokio::test]
async fn aiortc_room_vp8_late_joiners_get_keyframes() {
    aiortc_room("VP8", "1.5").await;
}
