//! One room's membership: publishers with their tracks, viewers with what they asked to see,
//! and the room's speaker state. Pure data and lookups; the engine decides what to do.

use crate::forward::speakers::{SpeakerConfig, Speakers};
use crate::transport::MediaKind;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Internal session key.
pub type SessionKey = u64;
/// A participant's key within its room (stable across its reconnects while it stays).
pub type ParticipantKey = u64;

/// A video or audio track stops counting as a source after this long without packets.
pub const STALL_AFTER: Duration = Duration::from_millis(1000);

/// A published track.
#[derive(Debug, Clone)]
pub struct Track {
    /// Index in the publisher session's inbound tracks.
    pub index: usize,
    /// Audio or video.
    pub kind: MediaKind,
    /// Codec name, e.g. `VP8` or `opus`.
    pub codec: String,
    /// The publisher's id of the RFC 6464 audio-level header extension, if negotiated.
    pub audio_level_id: Option<u8>,
    /// Last packet seen.
    pub last_packet: Instant,
    /// No packets for [`STALL_AFTER`]: not offered to slots.
    pub stalled: bool,
}

/// A publishing participant.
#[derive(Debug, Clone)]
pub struct Publisher {
    /// Its WHIP session.
    pub session: SessionKey,
    /// Participant name.
    pub participant: String,
    /// Participant key.
    pub key: ParticipantKey,
    /// Its open tracks.
    pub tracks: Vec<Track>,
}

/// A WHEP session.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// Its session.
    pub session: SessionKey,
    /// Participant name.
    pub participant: String,
    /// Set when it plays one named participant (`POST /whep/{room}/{participant}`).
    pub target: Option<String>,
}

/// One room.
pub struct Room {
    /// Publishers in order of arrival.
    pub publishers: Vec<Publisher>,
    /// Viewers in order of arrival.
    pub viewers: Vec<Viewer>,
    /// Who speaks, who spoke.
    pub speakers: Speakers,
    keys: HashMap<String, ParticipantKey>,
    next_key: ParticipantKey,
    /// When the room was created.
    pub created: Instant,
    /// The shard the room lives on when it is not this one: this shard serves more of its
    /// viewers, and its publishers are mirrors (`relay`).
    pub home: Option<usize>,
    /// The last state of the room's publishers this shard mirrored, from its home shard.
    pub mirror_version: u64,
    /// Participants with sessions of the room on other shards, with how many (a home shard
    /// counts its relayed viewers; a serving shard learns the rest from the home's state).
    pub elsewhere: BTreeMap<String, usize>,
}

impl Room {
    /// The forwarding source id of every layer of every track of its publishers.
    pub fn source_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.publishers.iter().flat_map(|p| {
            p.tracks.iter().flat_map(move |t| {
                (0..crate::transport::MAX_LAYERS).map(move |layer| {
                    crate::engine::shard::session::source_id(p.session, t.index, layer)
                })
            })
        })
    }

    /// An empty room.
    pub fn new(now: Instant) -> Self {
        Self {
            publishers: Vec::new(),
            viewers: Vec::new(),
            speakers: Speakers::new(SpeakerConfig::default()),
            keys: HashMap::new(),
            next_key: 1,
            created: now,
            home: None,
            mirror_version: 0,
            elsewhere: BTreeMap::new(),
        }
    }

    /// Whether nobody is left.
    pub fn is_empty(&self) -> bool {
        self.publishers.is_empty() && self.viewers.is_empty()
    }

    /// Names of everyone with a session, sorted.
    pub fn participants(&self) -> BTreeSet<&str> {
        self.publishers
            .iter()
            .map(|p| p.participant.as_str())
            .chain(self.viewers.iter().map(|v| v.participant.as_str()))
            .collect()
    }

    /// Whether `name` has a session of the room on any shard, as far as this one knows.
    pub fn present(&self, name: &str) -> bool {
        self.has_participant(name) || self.elsewhere.contains_key(name)
    }

    /// Names of everyone with a session of the room on any shard, sorted.
    pub fn members(&self) -> BTreeSet<&str> {
        let mut names = self.participants();
        names.extend(self.elsewhere.keys().map(String::as_str));
        names
    }

    /// Whether `name` has any session here.
    pub fn has_participant(&self, name: &str) -> bool {
        self.publishers.iter().any(|p| p.participant == name)
            || self.viewers.iter().any(|v| v.participant == name)
    }

    /// The key of a participant name, made on first use.
    pub fn key_for(&mut self, name: &str) -> ParticipantKey {
        if let Some(k) = self.keys.get(name) {
            return *k;
        }
        let k = self.next_key;
        self.next_key += 1;
        self.keys.insert(name.to_owned(), k);
        k
    }

    /// The key of a participant name, if it has one.
    pub fn key_of(&self, name: &str) -> Option<ParticipantKey> {
        self.keys.get(name).copied()
    }

    /// The name behind a key.
    pub fn name_of(&self, key: ParticipantKey) -> Option<&str> {
        self.keys
            .iter()
            .find(|(_, k)| **k == key)
            .map(|(n, _)| n.as_str())
    }

    /// Forgets keys of names that have no session left.
    pub fn forget_departed(&mut self) {
        let present: BTreeSet<String> =
            self.participants().into_iter().map(str::to_owned).collect();
        self.keys.retain(|name, _| present.contains(name));
    }

    /// The publisher session of `participant`, if any.
    pub fn publisher_of(&self, participant: &str) -> Option<SessionKey> {
        self.publishers
            .iter()
            .find(|p| p.participant == participant)
            .map(|p| p.session)
    }

    /// The publisher with session `session`.
    pub fn publisher_mut(&mut self, session: SessionKey) -> Option<&mut Publisher> {
        self.publishers.iter_mut().find(|p| p.session == session)
    }

    /// The live (not stalled) track of `kind` that participant `key` publishes (tests only;
    /// the engine builds a map of all sources at once):
    /// (publisher session, track index).
    #[cfg(test)]
    pub fn source_of(&self, key: ParticipantKey, kind: MediaKind) -> Option<(SessionKey, usize)> {
        let p = self.publishers.iter().find(|p| p.key == key)?;
        let t = p.tracks.iter().find(|t| t.kind == kind && !t.stalled)?;
        Some((p.session, t.index))
    }

    /// Removes a session, publisher or viewer. Returns the participant's name if it has no
    /// session left in the room (it left).
    pub fn remove(&mut self, session: SessionKey) -> Option<String> {
        let mut name = None;
        if let Some(i) = self.publishers.iter().position(|p| p.session == session) {
            let p = self.publishers.remove(i);
            // A replacement session of the same participant keeps the speaker state.
            if self.publisher_of(&p.participant).is_none() {
                self.speakers.remove(p.key);
            }
            name = Some(p.participant);
        }
        if let Some(i) = self.viewers.iter().position(|v| v.session == session) {
            name = Some(self.viewers.remove(i).participant);
        }
        name.filter(|n| !self.has_participant(n))
    }

    /// Marks tracks without packets for [`STALL_AFTER`] as stalled and revives those with
    /// fresh packets. Returns whether anything changed.
    pub fn update_stalls(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for t in self.publishers.iter_mut().flat_map(|p| p.tracks.iter_mut()) {
            let stalled = now.saturating_duration_since(t.last_packet) > STALL_AFTER;
            if stalled != t.stalled {
                t.stalled = stalled;
                changed = true;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(index: usize, kind: MediaKind, now: Instant) -> Track {
        Track {
            index,
            kind,
            codec: "x".into(),
            audio_level_id: None,
            last_packet: now,
            stalled: false,
        }
    }

    #[test]
    fn membership_and_sources() {
        let now = Instant::now();
        let mut room = Room::new(now);
        let a = room.key_for("alice");
        assert_eq!(room.key_for("alice"), a);
        room.publishers.push(Publisher {
            session: 1,
            participant: "alice".into(),
            key: a,
            tracks: vec![
                track(0, MediaKind::Audio, now),
                track(1, MediaKind::Video, now),
            ],
        });
        room.viewers.push(Viewer {
            session: 2,
            participant: "alice".into(),
            target: None,
        });
        assert_eq!(room.source_of(a, MediaKind::Video), Some((1, 1)));
        assert_eq!(room.participants().len(), 1);
        assert!(!room.update_stalls(now + Duration::from_millis(500)));
        assert!(room.update_stalls(now + Duration::from_secs(2)));
        assert_eq!(room.source_of(a, MediaKind::Video), None, "stalled");
        assert_eq!(room.remove(1), None, "alice still plays");
        assert_eq!(room.remove(2).as_deref(), Some("alice"));
        assert!(room.is_empty());
        room.forget_departed();
        assert_eq!(room.key_of("alice"), None);
    }
}
