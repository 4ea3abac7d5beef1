//! Read-only views of rooms for the room API (`GET /rooms`, `GET /rooms/{room}`). They show
//! names, tracks with their layers, slots with the layer they play, and counters, never
//! session ids (a session URL is its capability).

use crate::engine::rooms::events::LayerInfo;
use crate::engine::shard::event_loop::Engine;
use crate::engine::shard::session::SessionKind;
use crate::transport::MediaKind;
use serde::Serialize;
use std::time::Instant;

/// One line of `GET /rooms`.
#[derive(Debug, Clone, Serialize)]
pub struct RoomSummary {
    /// Room name.
    pub name: String,
    /// Distinct participants.
    pub participants: usize,
    /// Publishing participants.
    pub publishers: usize,
    /// WHEP sessions.
    pub viewers: usize,
    /// Seconds since the room was created.
    pub age_secs: u64,
    /// The media shard the room lives on (its home: publishers join it).
    pub shard: usize,
    /// Every shard that serves its sessions: the home shard first, then those serving more
    /// of its viewers with packets relayed from home.
    pub shards: Vec<usize>,
    /// Participant names, to count them once over shards.
    #[serde(skip)]
    pub names: Vec<String>,
}

/// `GET /rooms/{room}`.
#[derive(Debug, Clone, Serialize)]
pub struct RoomView {
    /// Room name.
    pub name: String,
    /// Who speaks now.
    pub active_speaker: Option<String>,
    /// Everyone with a session.
    pub participants: Vec<ParticipantView>,
    /// Room totals.
    pub counters: Counters,
    /// Seconds since the room was created.
    pub age_secs: u64,
    /// The media shard the room lives on (its home: publishers join it).
    pub shard: usize,
    /// Every shard that serves its sessions, the home shard first.
    pub shards: Vec<usize>,
}

/// Totals of a room.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// RTP packets received from publishers.
    pub packets_in: u64,
    /// RTP payload bytes received from publishers.
    pub bytes_in: u64,
    /// RTP packets forwarded to viewers.
    pub packets_out: u64,
    /// RTP payload bytes forwarded to viewers.
    pub bytes_out: u64,
}

/// One participant of a room.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantView {
    /// Its name.
    pub name: String,
    /// Whether it has a WHIP session.
    pub publishing: bool,
    /// Its published tracks.
    pub tracks: Vec<TrackView>,
    /// Its sessions' kinds and states, e.g. `{"kind":"whep","connected":true}`.
    pub sessions: Vec<SessionView>,
    /// The slots of its WHEP sessions and whom they show.
    pub slots: Vec<SlotView>,
}

/// A published track.
#[derive(Debug, Clone, Serialize)]
pub struct TrackView {
    /// `audio` or `video`.
    pub kind: &'static str,
    /// Codec name.
    pub codec: String,
    /// No packets for a second.
    pub stalled: bool,
    /// Video: its live layers, smallest first (one without simulcast).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerInfo>,
}

/// A session, without its id.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    /// `whip` or `whep`.
    pub kind: &'static str,
    /// ICE and DTLS are up.
    pub connected: bool,
    /// How it reaches its client, once connected: `udp` or `tcp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<&'static str>,
    /// The type of the client's candidate in the selected pair: `host`, `srflx`, `prflx` or
    /// `relay` (through a TURN server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<&'static str>,
    /// `POST /whep/{room}/{participant}`: the participant it plays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plays: Option<String>,
    /// WHEP: what Parley knows of the viewer's downlink.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downlink: Option<DownlinkView>,
}

/// A viewer's downlink estimate.
#[derive(Debug, Clone, Serialize)]
pub struct DownlinkView {
    /// Bits per second.
    pub estimate: u64,
    /// What it rests on: `twcc`, `remb` or `loss`; `none` before any feedback (the viewer's
    /// slots are not managed until then).
    pub signal: &'static str,
    /// Bits per second sent to the viewer over about the last second.
    pub sent: u64,
    /// Whether Parley is probing the link with padding now.
    pub probing: bool,
    /// Padding bytes sent to it so far.
    pub padding_bytes: u64,
}

/// A WHEP slot.
#[derive(Debug, Clone, Serialize)]
pub struct SlotView {
    /// The slot's m-line id.
    pub mid: String,
    /// `audio` or `video`.
    pub kind: &'static str,
    /// Who it shows.
    pub participant: Option<String>,
    /// Video: the layer it plays now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<LayerInfo>,
    /// Video: paused because the viewer's link does not carry it.
    pub paused: bool,
    /// Video: why it plays what it plays (`highest`, `limit`, `pin`, `bandwidth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

impl Engine {
    pub(in crate::engine) fn room_summaries(&self) -> Vec<RoomSummary> {
        let now = Instant::now();
        let mut rooms: Vec<RoomSummary> = self
            .rooms
            .iter()
            .map(|(name, r)| {
                // A room homed elsewhere: only this shard's viewers (its publishers are
                // mirrors, counted at home).
                let names: Vec<String> = match r.home {
                    Some(_) => r.viewers.iter().map(|v| v.participant.clone()).collect(),
                    None => r.participants().into_iter().map(str::to_owned).collect(),
                };
                RoomSummary {
                    name: name.clone(),
                    participants: names.len(),
                    publishers: if r.home.is_some() {
                        0
                    } else {
                        r.publishers.len()
                    },
                    viewers: r.viewers.len(),
                    age_secs: now.saturating_duration_since(r.created).as_secs(),
                    shard: r.home.unwrap_or(self.shard.id),
                    shards: vec![self.shard.id],
                    names,
                }
            })
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        rooms
    }

    pub(in crate::engine) fn room_view(&self, name: &str) -> Option<RoomView> {
        let room = self.rooms.get(name)?;
        let mut counters = Counters::default();
        let mut participants = Vec::new();
        let mirrored = room.home.is_some();
        for who in room.participants() {
            let local = |s: &&crate::engine::shard::session::Session| {
                s.room == name && s.participant == who
            };
            if mirrored && !self.sessions.values().any(|s| local(&s)) {
                // Only a mirror here: its home shard shows it.
                continue;
            }
            let mut view = ParticipantView {
                name: who.to_owned(),
                publishing: false,
                tracks: Vec::new(),
                sessions: Vec::new(),
                slots: Vec::new(),
            };
            let publisher = room
                .publishers
                .iter()
                .find(|p| p.participant == who)
                .filter(|_| !mirrored);
            if let Some(p) = publisher {
                view.publishing = true;
                view.tracks = p
                    .tracks
                    .iter()
                    .map(|t| TrackView {
                        kind: t.kind.as_str(),
                        codec: t.codec.clone(),
                        stalled: t.stalled,
                        layers: self.live_layers(p.session, t.index),
                    })
                    .collect();
            }
            for s in self.sessions.values().filter(local) {
                counters.packets_in += s.received.0;
                counters.bytes_in += s.received.1;
                counters.packets_out += s.sent.0;
                counters.bytes_out += s.sent.1;
                let plays = room
                    .viewers
                    .iter()
                    .find(|v| v.session == s.key)
                    .and_then(|v| v.target.clone());
                view.sessions.push(SessionView {
                    kind: s.kind.as_str(),
                    connected: s.connected,
                    transport: s.peer.path().map(|p| p.transport),
                    candidate: s.peer.path().map(|p| p.candidate),
                    plays,
                    downlink: s.downlink.as_deref().map(|d| DownlinkView {
                        estimate: d.estimator.estimate(),
                        signal: d.estimator.signal().name(),
                        sent: d.sent_rate,
                        probing: d.prober.probing(),
                        padding_bytes: d.padding.1,
                    }),
                });
                if s.kind == SessionKind::Whep {
                    let slots = s.peer.slots().iter().zip(&s.slot_participants);
                    for (i, (slot, assigned)) in slots.enumerate() {
                        view.slots.push(SlotView {
                            mid: slot.mid.clone(),
                            kind: slot.kind.as_str(),
                            participant: assigned.and_then(|k| room.name_of(k)).map(str::to_owned),
                            layer: self.active_layer(s.key, i),
                            paused: s.forwarders.get(i).is_some_and(|f| f.paused()),
                            reason: (slot.kind == MediaKind::Video)
                                .then(|| s.slot_layers.get(i).map(|l| l.reason))
                                .flatten()
                                .filter(|r| !r.is_empty()),
                        });
                    }
                }
            }
            participants.push(view);
        }
        Some(RoomView {
            name: name.to_owned(),
            active_speaker: room
                .speakers
                .active()
                .filter(|_| !mirrored)
                .and_then(|k| room.name_of(k))
                .map(str::to_owned),
            participants,
            counters,
            age_secs: Instant::now()
                .saturating_duration_since(room.created)
                .as_secs(),
            shard: room.home.unwrap_or(self.shard.id),
            shards: vec![self.shard.id],
        })
    }
}

impl RoomSummary {
    /// Folds in the same room's summary from another shard.
    pub(in crate::engine) fn merge(&mut self, other: RoomSummary) {
        self.publishers += other.publishers;
        self.viewers += other.viewers;
        self.age_secs = self.age_secs.max(other.age_secs);
        self.shards.extend(other.shards);
        for name in other.names {
            if !self.names.contains(&name) {
                self.names.push(name);
            }
        }
        self.participants = self.names.len();
    }
}

impl RoomView {
    /// Folds in the same room's view from another shard (which serves more of its viewers).
    pub(in crate::engine) fn merge(&mut self, other: RoomView) {
        self.counters.packets_in += other.counters.packets_in;
        self.counters.bytes_in += other.counters.bytes_in;
        self.counters.packets_out += other.counters.packets_out;
        self.counters.bytes_out += other.counters.bytes_out;
        self.age_secs = self.age_secs.max(other.age_secs);
        self.shards.extend(other.shards);
        for p in other.participants {
            match self.participants.iter_mut().find(|q| q.name == p.name) {
                Some(q) => {
                    q.publishing |= p.publishing;
                    q.tracks.extend(p.tracks);
                    q.sessions.extend(p.sessions);
                    q.slots.extend(p.slots);
                }
                None => self.participants.push(p),
            }
        }
        self.participants.sort_by(|a, b| a.name.cmp(&b.name));
    }
}
