//! What joins in a step: the rooms' names and, for every room, its publishers' and viewers'
//! join specs. Pure: no I/O, so the layout of a step (how many peers, in which room, with
//! which limits) is tested without a server.
//!
//! With `--rooms 1` the names are the ones parley-load always used: the broadcast room
//! `{room}` (its one publisher joins once for the whole run) and `{room}-{step}` for meeting
//! and audio steps. With `--rooms R > 1` every room of every step is its own,
//! `{room}-{step}-{r}` (r from 1), each with its own publishers joining in that step, so the
//! server places each step's rooms afresh.

use super::Scenario;
use crate::cli::{LayerLimits, LoadArgs};
use crate::engine::{AudioPlan, PublisherPlan, Talk, VideoPlan};
use crate::peer::{Role, Transport};
use crate::signaling::Endpoint;

/// What one join does.
#[derive(Clone, Debug)]
pub struct JoinSpec {
    /// The server base URL the offer goes to: `--url`, or for a viewer its `--viewer-url`.
    pub url: String,
    pub endpoint: Endpoint,
    pub room: String,
    /// Which of the step's rooms (0-based) it joins.
    pub room_index: usize,
    pub participant: Option<String>,
    pub role: Role,
    pub plan: Option<PublisherPlan>,
    /// What a viewer asks for through the WHEP layer extension once it has joined.
    pub limits: Option<LayerLimits>,
    /// A viewer behind a capped link.
    pub capped: bool,
    /// UDP, or ICE-TCP (a share of the viewers; publishers always use UDP).
    pub transport: Transport,
}

/// A step's joins. Both lists take the rooms in turns (the first peer of every room, then
/// the second of every room, ...), so the rooms fill together while `--join-concurrency`
/// paces them all.
#[derive(Clone, Debug)]
pub struct StepSpecs {
    /// The rooms' names, by room index.
    pub rooms: Vec<String>,
    /// Publishers that join in this step (none for a broadcast with one room: its publisher
    /// joined for the whole run, [`run_publisher`]).
    pub publishers: Vec<JoinSpec>,
    /// Viewers.
    pub viewers: Vec<JoinSpec>,
}

/// The broadcast publisher that stays for the whole run: only a broadcast with one room has
/// one.
pub fn run_publisher(scenario: &Scenario, args: &LoadArgs) -> Option<JoinSpec> {
    let shared = matches!(scenario, Scenario::Broadcast { .. }) && args.rooms == 1;
    shared.then(|| publisher_spec(args, (&args.room, 0), "publisher", 0, true, (0, 1)))
}

/// The name of room `r` (0-based) of step `index` (0-based).
pub fn room_name(scenario: &Scenario, args: &LoadArgs, index: usize, r: usize) -> String {
    match (scenario, args.rooms) {
        (Scenario::Broadcast { .. }, 1) => args.room.clone(),
        (_, 1) => format!("{}-{}", args.room, index + 1),
        _ => format!("{}-{}-{}", args.room, index + 1, r + 1),
    }
}

/// Everything that joins in step `index` (0-based) of N = `n`: per room, a broadcast's
/// publisher (more than one room) and N viewers, or a meeting's or audio step's N
/// participants, each a publisher and a viewer.
pub fn step_specs(scenario: &Scenario, args: &LoadArgs, index: usize, n: usize) -> StepSpecs {
    let rooms: Vec<String> = (0..usize::from(args.rooms))
        .map(|r| room_name(scenario, args, index, r))
        .collect();
    let in_turns = |make: &dyn Fn(usize, (&str, usize)) -> JoinSpec, count: usize| {
        (0..count)
            .flat_map(|i| rooms.iter().enumerate().map(move |(r, room)| (i, r, room)))
            .map(|(i, r, room)| make(i, (room, r)))
            .collect::<Vec<_>>()
    };
    let (publishers, viewers) = match scenario {
        Scenario::Broadcast { .. } => {
            let publishers = if run_publisher(scenario, args).is_some() {
                Vec::new()
            } else {
                in_turns(
                    &|_, room| {
                        let stream = room.1 as u16;
                        publisher_spec(args, room, "publisher", stream, true, (0, 1))
                    },
                    1,
                )
            };
            let viewers = in_turns(&|i, room| viewer_spec(args, room, None, (1, 1), i), n);
            (publishers, viewers)
        }
        Scenario::Meeting { slots, .. } | Scenario::Audio { slots, .. } => {
            let video = matches!(scenario, Scenario::Meeting { .. });
            let publishers = in_turns(
                &|p, room| {
                    let stream = (room.1 * n + p + 1) as u16;
                    let turn = (p as u32, n as u32);
                    publisher_spec(args, room, &format!("p{p}"), stream, video, turn)
                },
                n,
            );
            let video_slots = if video { *slots } else { 0 };
            let viewers = in_turns(
                &|p, room| viewer_spec(args, room, Some(format!("p{p}")), (*slots, video_slots), p),
                n,
            );
            (publishers, viewers)
        }
    };
    StepSpecs {
        rooms,
        publishers,
        viewers,
    }
}

fn plan(args: &LoadArgs, stream: u16, video: bool, talk: Talk) -> PublisherPlan {
    PublisherPlan {
        stream,
        video: video.then_some(VideoPlan {
            codec: args.codec,
            kbps: args.video_kbps,
            fps: args.fps,
            keyframe_interval: args.keyframe_interval,
            keyframe_ratio: args.keyframe_ratio,
            max_payload: args.max_payload,
            pace_kbps: (f64::from(args.video_kbps) * args.pacing_factor) as u32,
            simulcast: args.simulcast,
        }),
        audio: Some(AudioPlan {
            bytes: args.audio_bytes,
            talk,
        }),
    }
}

/// A WHIP publisher in `room` (name and index); `turn` of `turns` in its room's audio-level
/// turn-taking.
fn publisher_spec(
    args: &LoadArgs,
    (room, room_index): (&str, usize),
    name: &str,
    stream: u16,
    video: bool,
    (turn, turns): (u32, u32),
) -> JoinSpec {
    let talk = Talk {
        index: turn,
        count: turns,
        turn_secs: args.speaker_secs,
    };
    JoinSpec {
        url: args.url.clone(),
        endpoint: Endpoint::Whip,
        room: room.to_owned(),
        room_index,
        participant: Some(name.to_owned()),
        role: Role::Publisher {
            audio: true,
            video: video.then_some(args.codec),
            simulcast: video && args.simulcast,
        },
        plan: Some(plan(args, stream, video, talk)),
        limits: None,
        capped: false,
        transport: Transport::Udp,
    }
}

/// A WHEP viewer in `room` (name and index); `index`, its place in its room, picks its base
/// URL, layer limits, whether its link is capped and whether it uses ICE-TCP from the spread
/// lists.
fn viewer_spec(
    args: &LoadArgs,
    (room, room_index): (&str, usize),
    name: Option<String>,
    (audio, video): (usize, usize),
    index: usize,
) -> JoinSpec {
    JoinSpec {
        url: args.viewer_url(index).to_owned(),
        endpoint: Endpoint::Whep,
        room: room.to_owned(),
        room_index,
        participant: name,
        role: Role::Viewer {
            audio,
            video,
            feedback: args.twcc_interval_ms > 0,
        },
        plan: None,
        limits: if video > 0 {
            args.layer_limits(index)
        } else {
            None
        },
        capped: args.capped(index),
        transport: match args.tcp(index) {
            true => Transport::Tcp,
            false => Transport::Udp,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(argv: &[&str]) -> (Scenario, LoadArgs) {
        let mut full = vec!["parley-load"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).expect("parses").command {
            Command::Broadcast { viewers, load } => (Scenario::Broadcast { viewers }, load),
            Command::Meeting {
                participants,
                slots,
                load,
            } => (
                Scenario::Meeting {
                    participants,
                    slots,
                },
                load,
            ),
            Command::Audio {
                participants,
                slots,
                load,
            } => (
                Scenario::Audio {
                    participants,
                    slots,
                },
                load,
            ),
            other => panic!("not a scenario: {other:?}"),
        }
    }

    /// (room, participant) of each spec, in join order.
    fn layout(specs: &[JoinSpec]) -> Vec<(String, usize, Option<String>)> {
        specs
            .iter()
            .map(|s| (s.room.clone(), s.room_index, s.participant.clone()))
            .collect()
    }

    #[test]
    fn one_broadcast_room_is_the_room_of_the_whole_run() {
        let (scenario, args) = parse(&["broadcast", "--viewers", "3", "--room", "b"]);
        assert_eq!(args.rooms, 1);
        let publisher = run_publisher(&scenario, &args).expect("a publisher for the run");
        assert_eq!(
            (publisher.room.as_str(), publisher.endpoint),
            ("b", Endpoint::Whip)
        );
        let specs = step_specs(&scenario, &args, 1, 3);
        assert_eq!(specs.rooms, ["b"]);
        assert!(specs.publishers.is_empty());
        assert_eq!(specs.viewers.len(), 3);
        assert!(specs
            .viewers
            .iter()
            .all(|v| v.room == "b" && v.endpoint == Endpoint::Whep && v.participant.is_none()));
    }

    #[test]
    fn broadcast_rooms_each_have_a_publisher_and_all_viewers() {
        let (scenario, args) = parse(&["broadcast", "--rooms", "2", "--capped-share", "0.5"]);
        assert!(run_publisher(&scenario, &args).is_none());
        let specs = step_specs(&scenario, &args, 0, 200);
        assert_eq!(specs.rooms, ["bench-1-1", "bench-1-2"]);
        assert_eq!(
            layout(&specs.publishers),
            [
                ("bench-1-1".into(), 0, Some("publisher".into())),
                ("bench-1-2".into(), 1, Some("publisher".into())),
            ]
        );
        let streams: Vec<u16> = specs
            .publishers
            .iter()
            .filter_map(|p| p.plan.as_ref().map(|p| p.stream))
            .collect();
        assert_eq!(streams, [0, 1]);
        assert_eq!(specs.viewers.len(), 400);
        for (r, room) in specs.rooms.iter().enumerate() {
            let mine: Vec<&JoinSpec> = specs.viewers.iter().filter(|v| v.room_index == r).collect();
            assert_eq!(mine.len(), 200);
            assert!(mine.iter().all(|v| &v.room == room));
            // Each room gets the same spread of capped viewers.
            assert_eq!(mine.iter().filter(|v| v.capped).count(), 100);
        }
        // In turns: the rooms fill together.
        let first: Vec<usize> = specs.viewers[..4].iter().map(|v| v.room_index).collect();
        assert_eq!(first, [0, 1, 0, 1]);
        assert_eq!(
            step_specs(&scenario, &args, 2, 1).rooms,
            ["bench-3-1", "bench-3-2"]
        );
    }

    #[test]
    fn a_share_of_each_rooms_viewers_uses_tcp_and_no_publisher_does() {
        let (scenario, args) = parse(&["broadcast", "--rooms", "2", "--tcp-share", "0.5"]);
        let specs = step_specs(&scenario, &args, 0, 10);
        assert!(specs
            .publishers
            .iter()
            .all(|p| p.transport == Transport::Udp));
        for r in 0..2 {
            let tcp: Vec<bool> = specs
                .viewers
                .iter()
                .filter(|v| v.room_index == r)
                .map(|v| v.transport == Transport::Tcp)
                .collect();
            assert_eq!(tcp, [false, true].repeat(5), "room {r}");
        }
        let (scenario, args) = parse(&["meeting", "--tcp-share", "1"]);
        let specs = step_specs(&scenario, &args, 0, 3);
        assert!(specs.viewers.iter().all(|v| v.transport == Transport::Tcp));
        assert!(specs
            .publishers
            .iter()
            .all(|p| p.transport == Transport::Udp));
        let (scenario, args) = parse(&["broadcast"]);
        let specs = step_specs(&scenario, &args, 0, 4);
        assert!(specs.viewers.iter().all(|v| v.transport == Transport::Udp));
    }

    #[test]
    fn viewers_take_the_viewer_urls_in_turn_and_publishers_the_url() {
        let urls = [
            "--url",
            "http://a:1",
            "--viewer-url",
            "http://a:1,http://b:2",
        ];
        let (scenario, args) = parse(&[&["broadcast"][..], &urls].concat());
        let publisher = run_publisher(&scenario, &args).expect("a publisher for the run");
        assert_eq!(publisher.url, "http://a:1");
        let specs = step_specs(&scenario, &args, 0, 5);
        let viewers: Vec<&str> = specs.viewers.iter().map(|v| v.url.as_str()).collect();
        let (a, b) = ("http://a:1", "http://b:2");
        assert_eq!(viewers, [a, b, a, b, a]);
        // Each room's viewers cycle on their own; the rooms' publishers stay on --url.
        let (scenario, args) = parse(&[&["broadcast", "--rooms", "2"][..], &urls].concat());
        let specs = step_specs(&scenario, &args, 0, 3);
        assert!(specs.publishers.iter().all(|p| p.url == a));
        let viewers: Vec<(usize, &str)> = specs
            .viewers
            .iter()
            .map(|v| (v.room_index, v.url.as_str()))
            .collect();
        assert_eq!(viewers, [(0, a), (1, a), (0, b), (1, b), (0, a), (1, a)]);
        let (scenario, args) = parse(&[&["meeting"][..], &urls[2..]].concat());
        let specs = step_specs(&scenario, &args, 0, 3);
        assert!(specs.publishers.iter().all(|p| p.url == args.url));
        let viewers: Vec<&str> = specs.viewers.iter().map(|v| v.url.as_str()).collect();
        assert_eq!(viewers, [a, b, a]);
        // Without --viewer-url every viewer uses --url.
        let (scenario, args) = parse(&["broadcast", "--url", b]);
        let specs = step_specs(&scenario, &args, 0, 3);
        assert!(specs.viewers.iter().all(|v| v.url == b));
    }

    #[test]
    fn meeting_rooms_have_their_own_participants() {
        let (scenario, args) = parse(&["meeting", "--slots", "2"]);
        let one = step_specs(&scenario, &args, 1, 3);
        assert_eq!(one.rooms, ["bench-2"]);
        assert_eq!(
            layout(&one.publishers),
            [
                ("bench-2".into(), 0, Some("p0".into())),
                ("bench-2".into(), 0, Some("p1".into())),
                ("bench-2".into(), 0, Some("p2".into())),
            ]
        );
        let (scenario, args) = parse(&["meeting", "--slots", "2", "--rooms", "3"]);
        let specs = step_specs(&scenario, &args, 0, 2);
        assert_eq!(specs.rooms, ["bench-1-1", "bench-1-2", "bench-1-3"]);
        assert_eq!(
            layout(&specs.viewers),
            [
                ("bench-1-1".into(), 0, Some("p0".into())),
                ("bench-1-2".into(), 1, Some("p0".into())),
                ("bench-1-3".into(), 2, Some("p0".into())),
                ("bench-1-1".into(), 0, Some("p1".into())),
                ("bench-1-2".into(), 1, Some("p1".into())),
                ("bench-1-3".into(), 2, Some("p1".into())),
            ]
        );
        assert!(specs.viewers.iter().all(|v| matches!(
            v.role,
            Role::Viewer {
                audio: 2,
                video: 2,
                ..
            }
        )));
        // Streams stay distinct over the rooms; turns are per room.
        let streams: Vec<u16> = specs
            .publishers
            .iter()
            .filter_map(|p| p.plan.as_ref().map(|p| p.stream))
            .collect();
        assert_eq!(streams, [1, 3, 5, 2, 4, 6]);
        let turns: Vec<(u32, u32)> = specs
            .publishers
            .iter()
            .filter_map(|p| p.plan.as_ref()?.audio.as_ref())
            .map(|a| (a.talk.index, a.talk.count))
            .collect();
        assert_eq!(turns, [(0, 2), (0, 2), (0, 2), (1, 2), (1, 2), (1, 2)]);
    }

    #[test]
    fn audio_rooms_publish_no_video() {
        let (scenario, args) = parse(&["audio", "--rooms", "2", "--slots", "3"]);
        let specs = step_specs(&scenario, &args, 0, 5);
        assert_eq!((specs.publishers.len(), specs.viewers.len()), (10, 10));
        assert!(specs.publishers.iter().all(|p| matches!(
            p.role,
            Role::Publisher {
                audio: true,
                video: None,
                ..
            }
        )));
        assert!(specs.viewers.iter().all(|v| matches!(
            v.role,
            Role::Viewer {
                audio: 3,
                video: 0,
                ..
            }
        )));
    }
}
