//! Rooms larger than a shard: a room's publishers live on its home shard, and viewers the home
//! shard cannot take (placement spreads them, see `placement`) are served by other shards.
//!
//! The home shard decrypts each publisher packet once and hands it to every shard with viewers
//! of the room, once per packet per shard (the `handoff` rings, one wake-up per batch), never
//! per viewer. A shard serving viewers of a room homed elsewhere keeps a *mirror* of each
//! publisher: its tracks, layers and keyframe state, under a key of its own, so its fan-out,
//! slot assignment, layer choice, speaker detection and packet cache work exactly as for a
//! local publisher. Its viewers' NACKs are answered from its own cache; their keyframe
//! requests go home, where the publisher is.
//!
//! Membership travels as [`Control`] messages, which are rare: the home shard sends the room's
//! publishers ([`RoomState`]) on every tick to each shard that serves its viewers, and those
//! shards report each viewer that ends, so the home shard knows when to stop relaying.

use crate::engine::rooms::events::RoomEvent;
use crate::engine::rooms::room::{Publisher, Room, SessionKey};
use crate::engine::shard::event_loop::Engine;
use crate::engine::shard::session::{source_id, source_parts, Published};
use crate::engine::EngineError;
use crate::metrics;
use crate::transport::InboundTrack;
use std::collections::HashMap;
use std::time::Instant;

/// A publisher of another shard's room, as this shard serves it to its own viewers.
pub(in crate::engine) struct Mirror {
    /// The home shard.
    pub home: usize,
    /// The publisher's session key on the home shard.
    pub home_key: SessionKey,
    /// Room name.
    pub room: String,
    /// Participant name.
    pub participant: String,
    /// Its tracks as the home shard negotiated them.
    pub inbound: Vec<InboundTrack>,
    /// Taps and keyframe state, as for a local publisher.
    pub published: Published,
}

/// One publisher of a relayed room, as its home shard describes it.
#[derive(Clone, Debug)]
pub struct PublisherState {
    /// Session key on the home shard.
    pub key: SessionKey,
    /// Participant name.
    pub participant: String,
    /// Its inbound tracks, with their layers and last sender reports.
    pub inbound: Vec<InboundTrack>,
    /// The indexes of the tracks that have started, in the order they did.
    pub opened: Vec<usize>,
}

/// A relayed room's publishers, as its home shard sends them to the shards that serve more
/// of its viewers.
#[derive(Clone, Debug)]
pub struct RoomState {
    /// Room name.
    pub room: String,
    /// Increases with each state the home shard sends (an older one is ignored).
    pub version: u64,
    /// Its publishers.
    pub publishers: Vec<PublisherState>,
    /// Everyone with a session of the room on a shard other than the one it is sent to.
    pub members: Vec<String>,
}

/// Messages between shards about relayed rooms.
#[derive(Debug)]
pub enum Control {
    /// Home to relay: the room's publishers now.
    State(RoomState),
    /// Relay to home: a viewer asks for a keyframe of (publisher, track, layer).
    Keyframe {
        /// The publisher's session key on the home shard.
        publisher: SessionKey,
        /// Track index.
        track: usize,
        /// Layer index.
        layer: usize,
        /// A viewer just connected or switched.
        urgent: bool,
    },
    /// Relay to home: a viewer of `room` joined on the sending shard.
    ViewerJoined {
        /// Room name.
        room: String,
        /// Its participant name.
        participant: String,
    },
    /// Relay to home: one viewer of `room` on the sending shard ended (or was never opened).
    ViewerGone {
        /// Room name.
        room: String,
        /// Its participant name, if it had joined.
        participant: Option<String>,
    },
}

/// A publisher packet on its way from the room's home shard to a shard with more viewers.
pub struct Relayed {
    /// The publisher's session key on the home shard.
    pub publisher: SessionKey,
    /// Track index.
    pub track: usize,
    /// Layer index.
    pub layer: usize,
    /// The decrypted packet (its payload shared, not copied).
    pub packet: rtc::rtp::Packet,
    /// When it arrived at the home shard.
    pub received: Instant,
}

/// On a room's home shard: how many viewers each other shard serves, and who they are.
#[derive(Debug, Default)]
pub(in crate::engine) struct Relays {
    /// Viewers, by shard.
    pub viewers: HashMap<usize, usize>,
    /// The participant names of the viewers that joined, by shard (one entry per session).
    pub names: HashMap<usize, Vec<String>>,
}

impl Engine {
    /// The shared state of a publisher: its session's, or its mirror's.
    pub(in crate::engine) fn published(&self, key: SessionKey) -> Option<&Published> {
        match self.sessions.get(&key) {
            Some(s) => Some(&s.published),
            None => self.mirrors.get(&key).map(|m| &m.published),
        }
    }

    /// Like [`Engine::published`], to change.
    pub(in crate::engine) fn published_mut(&mut self, key: SessionKey) -> Option<&mut Published> {
        match self.sessions.get_mut(&key) {
            Some(s) => Some(&mut s.published),
            None => self.mirrors.get_mut(&key).map(|m| &mut m.published),
        }
    }

    /// A publisher's inbound tracks: its peer's, or those its home shard described.
    pub(in crate::engine) fn inbound(&self, key: SessionKey) -> Option<&[InboundTrack]> {
        match self.sessions.get(&key) {
            Some(s) => Some(s.peer.inbound()),
            None => self.mirrors.get(&key).map(|m| m.inbound.as_slice()),
        }
    }

    /// A publisher's room and participant name.
    pub(in crate::engine) fn publisher_names(&self, key: SessionKey) -> Option<(&str, &str)> {
        match self.sessions.get(&key) {
            Some(s) => Some((&s.room, &s.participant)),
            None => self
                .mirrors
                .get(&key)
                .map(|m| (m.room.as_str(), m.participant.as_str())),
        }
    }

    /// Home side: shard `shard` serves one more viewer of `room`. Returns the room's state
    /// for it to mirror, or refuses a new participant when the room is full (every viewer on
    /// another shard counts as a participant of its own).
    pub(in crate::engine) fn relay_to(
        &mut self,
        room: &str,
        participant: Option<&str>,
        shard: usize,
    ) -> Result<RoomState, EngineError> {
        let here = self.rooms.get(room);
        let known = here.is_some_and(|r| participant.is_some_and(|p| r.has_participant(p)));
        let elsewhere: usize = self
            .relays
            .get(room)
            .map_or(0, |r| r.viewers.values().sum());
        let count = here.map_or(0, |r| r.participants().len()) + elsewhere;
        let max = self.config.max_participants_per_room;
        if !known && count >= max {
            return Err(EngineError::Forbidden(format!(
                "room {room} is full ({max} participants)"
            )));
        }
        *self
            .relays
            .entry(room.to_owned())
            .or_default()
            .viewers
            .entry(shard)
            .or_default() += 1;
        self.refresh_relay_targets(room);
        Ok(self.room_state(room, shard))
    }

    /// Home side: a viewer of `room` joined on `shard`.
    fn remote_joined(&mut self, room: &str, shard: usize, participant: String) {
        if let Some(relays) = self.relays.get_mut(room) {
            let names = relays.names.entry(shard).or_default();
            names.push(participant.clone());
        }
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let joined = !r.present(&participant);
        *r.elsewhere.entry(participant.clone()).or_default() += 1;
        if joined {
            self.emit_room(room, &RoomEvent::ParticipantJoined { participant });
        }
    }

    /// Home side: a viewer of `room` that had joined on `shard` ended.
    fn remote_left(&mut self, room: &str, shard: usize, participant: String) {
        if let Some(names) = self
            .relays
            .get_mut(room)
            .and_then(|r| r.names.get_mut(&shard))
        {
            if let Some(i) = names.iter().position(|n| *n == participant) {
                names.swap_remove(i);
            }
        }
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if let Some(n) = r.elsewhere.get_mut(&participant) {
            *n -= 1;
            if *n == 0 {
                r.elsewhere.remove(&participant);
            }
        }
        if !r.present(&participant) {
            self.emit_room(room, &RoomEvent::ParticipantLeft { participant });
        }
    }

    /// Home side: one viewer of `room` on `shard` ended (or was never opened).
    pub(in crate::engine) fn unrelay(&mut self, room: &str, shard: usize) {
        let Some(relays) = self.relays.get_mut(room) else {
            return;
        };
        if let Some(n) = relays.viewers.get_mut(&shard) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                relays.viewers.remove(&shard);
                relays.names.remove(&shard);
            }
        }
        if relays.viewers.is_empty() {
            self.relays.remove(room);
        }
        self.refresh_relay_targets(room);
    }

    /// Home side: puts the shards a room is relayed to on each of its publisher sessions,
    /// where the fan-out reads them per packet.
    pub(in crate::engine) fn refresh_relay_targets(&mut self, room: &str) {
        let mut targets: Vec<usize> = self
            .relays
            .get(room)
            .map(|r| r.viewers.keys().copied().collect())
            .unwrap_or_default();
        targets.sort_unstable();
        let publishers: Vec<SessionKey> = self
            .rooms
            .get(room)
            .map(|r| r.publishers.iter().map(|p| p.session).collect())
            .unwrap_or_default();
        for key in publishers {
            if let Some(s) = self.sessions.get_mut(&key) {
                s.relay_to.clone_from(&targets);
            }
        }
    }

    /// Home side: a room's publishers and members, for `shard`, which mirrors them.
    pub(in crate::engine) fn room_state(&mut self, room: &str, shard: usize) -> RoomState {
        self.state_version += 1;
        let theirs = self
            .relays
            .get(room)
            .and_then(|r| r.names.get(&shard))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let members = self
            .rooms
            .get(room)
            .map(|r| {
                let mut names: Vec<String> =
                    r.participants().into_iter().map(str::to_owned).collect();
                for (name, &n) in &r.elsewhere {
                    let there = theirs.iter().filter(|t| *t == name).count();
                    if n > there && !names.contains(name) {
                        names.push(name.clone());
                    }
                }
                names
            })
            .unwrap_or_default();
        let publishers = self
            .rooms
            .get(room)
            .filter(|r| r.home.is_none())
            .map(|r| {
                r.publishers
                    .iter()
                    .filter_map(|p| {
                        let s = self.sessions.get(&p.session)?;
                        Some(PublisherState {
                            key: p.session,
                            participant: p.participant.clone(),
                            inbound: s.peer.inbound().to_vec(),
                            opened: p.tracks.iter().map(|t| t.index).collect(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        RoomState {
            room: room.to_owned(),
            version: self.state_version,
            publishers,
            members,
        }
    }

    /// Home side, every tick: sends each relayed room's state to the shards serving it (it
    /// carries the layers' latest sender reports, so it is sent even when nobody came or
    /// went).
    pub(in crate::engine) fn send_room_states(&mut self) {
        let rooms: Vec<(String, Vec<usize>)> = self
            .relays
            .iter()
            .map(|(room, r)| (room.clone(), r.viewers.keys().copied().collect()))
            .collect();
        for (room, shards) in rooms {
            for shard in shards {
                let state = self.room_state(&room, shard);
                self.shard.control(shard, Control::State(state));
            }
        }
    }

    /// Home side: passes one publisher packet to every shard serving viewers of its room.
    pub(in crate::engine) fn relay_packet(
        &mut self,
        key: SessionKey,
        track: usize,
        layer: usize,
        packet: &rtc::rtp::Packet,
        received: Instant,
    ) {
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        for &shard in &session.relay_to {
            let relayed = Relayed {
                publisher: key,
                track,
                layer,
                packet: packet.clone(),
                received,
            };
            if self.shard.relay_out.push(shard, relayed) {
                self.tally.relayed += 1;
            } else {
                self.tally.drop(metrics::Drop::QueueFull);
            }
        }
    }

    /// Relay side: fans out the packets home shards relayed to this one.
    pub(in crate::engine) fn take_relayed(&mut self) {
        while let Some((home, r)) = self.shard.relay_in.pop() {
            // A packet of a room this shard no longer serves (its last viewer just left).
            if let Some(&key) = self.mirror_of.get(&(home, r.publisher)) {
                self.fan_out(key, r.track, r.layer, &r.packet, r.received);
            }
        }
    }

    /// A message from another shard.
    pub(in crate::engine) fn on_control(&mut self, from: usize, control: Control) {
        let now = Instant::now();
        match control {
            Control::State(state) => self.mirror(from, state, now),
            Control::Keyframe {
                publisher,
                track,
                layer,
                urgent,
            } => self.request_keyframe(source_id(publisher, track, layer), now, urgent),
            Control::ViewerJoined { room, participant } => {
                self.remote_joined(&room, from, participant)
            }
            Control::ViewerGone { room, participant } => {
                if let Some(participant) = participant {
                    self.remote_left(&room, from, participant);
                }
                self.unrelay(&room, from);
            }
        }
    }

    /// Relay side: asks a mirrored publisher's home shard for a keyframe.
    pub(in crate::engine) fn request_home_keyframe(
        &mut self,
        mirror: SessionKey,
        sid: u64,
        urgent: bool,
    ) {
        let Some(m) = self.mirrors.get(&mirror) else {
            return;
        };
        let (_, track, layer) = source_parts(sid);
        let (home, publisher) = (m.home, m.home_key);
        self.shard.control(
            home,
            Control::Keyframe {
                publisher,
                track,
                layer,
                urgent,
            },
        );
    }

    /// Relay side: brings the mirror of a room homed on shard `home` up to `state`.
    pub(in crate::engine) fn mirror(&mut self, home: usize, state: RoomState, now: Instant) {
        let room_name = state.room.clone();
        let room = self.rooms.entry(room_name.clone()).or_insert_with(|| {
            let mut room = Room::new(now);
            room.home = Some(home);
            room
        });
        if room.home != Some(home) || state.version <= room.mirror_version {
            return;
        }
        room.mirror_version = state.version;
        // Publishers gone from the home shard go here too.
        let gone: Vec<SessionKey> = room
            .publishers
            .iter()
            .filter(|p| {
                self.mirrors
                    .get(&p.session)
                    .is_some_and(|m| !state.publishers.iter().any(|s| s.key == m.home_key))
            })
            .map(|p| p.session)
            .collect();
        for key in gone {
            self.drop_mirror(key);
        }
        self.learn_members(&room_name, state.members);
        let mut changed = false;
        for p in state.publishers {
            let key = match self.mirror_of.get(&(home, p.key)) {
                Some(&key) => key,
                None => {
                    changed = true;
                    self.add_mirror(home, &room_name, &p, now)
                }
            };
            let Some(m) = self.mirrors.get_mut(&key) else {
                continue;
            };
            m.inbound = p.inbound;
            for index in p.opened {
                let tap = self
                    .mirrors
                    .get(&key)
                    .and_then(|m| m.published.taps.get(index))
                    .and_then(Option::as_ref);
                let known = tap.map(|t| t.layers.len());
                if known.is_none() {
                    self.track_opened(key, index);
                }
                let layers = self
                    .inbound(key)
                    .and_then(|i| i.get(index))
                    .map_or(0, |t| t.layers.len());
                for layer in known.unwrap_or(layers)..layers {
                    self.layer_opened(key, index, layer);
                }
            }
        }
        if changed {
            self.reassign(&room_name, now);
        }
    }

    /// Relay side: who has sessions of the room on other shards, from its home's state;
    /// those who came or went are announced to this shard's viewers.
    fn learn_members(&mut self, room: &str, members: Vec<String>) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let before = std::mem::take(&mut r.elsewhere);
        r.elsewhere = members.into_iter().map(|m| (m, 1)).collect();
        let came: Vec<String> = r
            .elsewhere
            .keys()
            .filter(|m| !before.contains_key(*m) && !r.has_participant(m))
            .cloned()
            .collect();
        let went: Vec<String> = before
            .into_keys()
            .filter(|m| !r.elsewhere.contains_key(m) && !r.has_participant(m))
            .collect();
        for participant in came {
            self.emit_room(room, &RoomEvent::ParticipantJoined { participant });
        }
        for participant in went {
            self.emit_room(room, &RoomEvent::ParticipantLeft { participant });
        }
    }

    /// Relay side: a mirror for a publisher of a room homed elsewhere.
    fn add_mirror(
        &mut self,
        home: usize,
        room_name: &str,
        p: &PublisherState,
        now: Instant,
    ) -> SessionKey {
        let key = self.next_key;
        self.next_key += 1;
        self.mirrors.insert(
            key,
            Mirror {
                home,
                home_key: p.key,
                room: room_name.to_owned(),
                participant: p.participant.clone(),
                inbound: Vec::new(),
                published: Published::default(),
            },
        );
        self.mirror_of.insert((home, p.key), key);
        let Some(room) = self.rooms.get_mut(room_name) else {
            return key;
        };
        let joined = !room.present(&p.participant);
        let pkey = room.key_for(&p.participant);
        room.speakers.add(pkey, now);
        room.publishers.push(Publisher {
            session: key,
            participant: p.participant.clone(),
            key: pkey,
            tracks: Vec::new(),
        });
        if joined {
            self.emit_room(
                room_name,
                &RoomEvent::ParticipantJoined {
                    participant: p.participant.clone(),
                },
            );
        }
        key
    }

    /// Relay side: removes a mirrored publisher (it left its home shard, or this shard no
    /// longer serves its room).
    pub(in crate::engine) fn drop_mirror(&mut self, key: SessionKey) {
        let Some(m) = self.mirrors.remove(&key) else {
            return;
        };
        self.mirror_of.remove(&(m.home, m.home_key));
        self.leave_room(
            key,
            &m.room,
            &m.participant,
            crate::engine::SessionKind::Whip,
        );
    }

    /// Relay side: after a viewer of a room homed elsewhere ended, tells the home shard, and
    /// forgets the room's mirrors once none of its viewers is left here.
    pub(in crate::engine) fn viewer_left_relay(&mut self, room: &str, participant: Option<&str>) {
        let Some(home) = self.rooms.get(room).and_then(|r| r.home) else {
            return;
        };
        self.shard.control(
            home,
            Control::ViewerGone {
                room: room.to_owned(),
                participant: participant.map(str::to_owned),
            },
        );
        let idle = self.rooms.get(room).is_some_and(|r| r.viewers.is_empty());
        if idle {
            let mirrors: Vec<SessionKey> = self
                .rooms
                .get(room)
                .map(|r| r.publishers.iter().map(|p| p.session).collect())
                .unwrap_or_default();
            for key in mirrors {
                self.drop_mirror(key);
            }
            self.rooms.remove(room);
        }
    }
}
