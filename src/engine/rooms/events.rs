//! Room events for WHEP sessions (served as server-sent events): who joined or left, which
//! tracks are published, which participant each of the session's slots shows, who is
//! speaking, and which layers each video slot can get and plays. A subscriber first gets a snapshot of the room in the same event forms, then
//! changes in the order they happen; all come from the engine task, so order is the engine's.

use crate::engine::rooms::room::SessionKey;
use crate::engine::shard::event_loop::Engine;
use crate::engine::EngineError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Events buffered per subscriber; a subscriber this far behind is dropped (it reconnects and
/// gets a fresh snapshot).
const EVENT_BUFFER: usize = 256;

/// One room event, as JSON `{"type": ..., ...}`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RoomEvent {
    /// A participant has a first session in the room.
    ParticipantJoined {
        /// Its name.
        participant: String,
    },
    /// A participant's last session ended.
    ParticipantLeft {
        /// Its name.
        participant: String,
    },
    /// A participant's track started.
    TrackPublished {
        /// Who publishes.
        participant: String,
        /// `audio` or `video`.
        kind: &'static str,
        /// Codec name, e.g. `VP8`.
        codec: String,
    },
    /// A participant's track ended.
    TrackUnpublished {
        /// Who published.
        participant: String,
        /// `audio` or `video`.
        kind: &'static str,
    },
    /// One of this session's slots now shows another participant (or nobody).
    SlotAssigned {
        /// The slot's m-line id.
        mid: String,
        /// `audio` or `video`.
        kind: &'static str,
        /// Who it shows; null when idle.
        participant: Option<String>,
        /// Participants the slot cannot show and why (`"codec"`: the viewer's offer cannot
        /// decode their video); absent when none.
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        skipped: BTreeMap<String, &'static str>,
    },
    /// The room's active speaker changed.
    ActiveSpeaker {
        /// Who speaks now; null when nobody.
        participant: Option<String>,
    },
    /// A video slot's layers, or the layer it plays, changed.
    Layers {
        /// The slot's m-line id.
        mid: String,
        /// The layer the slot plays now; null before its first keyframe.
        active: Option<LayerInfo>,
        /// The source track's live layers, smallest first.
        layers: Vec<LayerInfo>,
        /// The slot's video is paused: the viewer's link does not carry even its lowest
        /// layer (audio goes on).
        paused: bool,
        /// Why the slot plays what it plays: `highest`, `limit` (the slot's limits), `pin`,
        /// or `bandwidth` (the viewer's downlink estimate; with `paused`, why it paused).
        reason: &'static str,
        /// The viewer's downlink estimate in bits per second, when Parley estimates it.
        #[serde(skip_serializing_if = "Option::is_none")]
        estimate: Option<u64>,
    },
}

/// One layer of a track, as the `layers` event and the room API describe it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LayerInfo {
    /// RTP stream id (empty without simulcast).
    pub rid: String,
    /// Rank by picture size, 0 the smallest.
    pub spatial_layer_id: u8,
    /// For the active layer: the highest temporal layer forwarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporal_layer_id: Option<u8>,
    /// Picture width from its last keyframe (0 when not known).
    pub width: u16,
    /// Picture height.
    pub height: u16,
    /// Bits per second over the last second.
    pub bitrate: u64,
    /// The layer's index in the track.
    #[serde(skip)]
    pub index: usize,
}

impl RoomEvent {
    fn encode(&self) -> Arc<str> {
        serde_json::to_string(self)
            .unwrap_or_else(|_| String::from("{}"))
            .into()
    }
}

impl Engine {
    /// Sends an event to one session's subscriber, dropping a subscriber that fell behind.
    pub(in crate::engine) fn emit_to(&mut self, session: SessionKey, event: &RoomEvent) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if let Some(tx) = &s.events {
            if tx.try_send(event.encode()).is_err() {
                s.events = None;
            }
        }
    }

    /// Sends an event to every subscribed WHEP session of a room.
    pub(in crate::engine) fn emit_room(&mut self, room: &str, event: &RoomEvent) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let viewers: Vec<SessionKey> = r.viewers.iter().map(|v| v.session).collect();
        if viewers.is_empty() {
            return;
        }
        let encoded = event.encode();
        for v in viewers {
            let Some(s) = self.sessions.get_mut(&v) else {
                continue;
            };
            if let Some(tx) = &s.events {
                if tx.try_send(encoded.clone()).is_err() {
                    s.events = None;
                }
            }
        }
    }

    /// Subscribes to a WHEP session's events: the room as it is now, then every change.
    pub(in crate::engine) fn subscribe(
        &mut self,
        id: &str,
    ) -> Result<mpsc::Receiver<Arc<str>>, EngineError> {
        let key = *self.by_public.get(id).ok_or(EngineError::NotFound)?;
        let session = self.sessions.get(&key).ok_or(EngineError::NotFound)?;
        let room = self.rooms.get(&session.room).ok_or(EngineError::NotFound)?;
        let mut snapshot = Vec::new();
        for participant in room.members() {
            snapshot.push(RoomEvent::ParticipantJoined {
                participant: participant.to_owned(),
            });
        }
        for p in &room.publishers {
            for t in &p.tracks {
                snapshot.push(RoomEvent::TrackPublished {
                    participant: p.participant.clone(),
                    kind: t.kind.as_str(),
                    codec: t.codec.clone(),
                });
            }
        }
        let slots = session.peer.slots().iter().zip(&session.slot_participants);
        for ((slot, who), layers) in slots.zip(&session.slot_layers) {
            snapshot.push(RoomEvent::SlotAssigned {
                mid: slot.mid.clone(),
                kind: slot.kind.as_str(),
                participant: who.and_then(|k| room.name_of(k)).map(str::to_owned),
                skipped: layers
                    .skipped
                    .iter()
                    .map(|n| (n.clone(), "codec"))
                    .collect(),
            });
        }
        snapshot.push(RoomEvent::ActiveSpeaker {
            participant: room
                .speakers
                .active()
                .and_then(|k| room.name_of(k))
                .map(str::to_owned),
        });
        snapshot.extend(self.layer_events(key));
        let (tx, rx) = mpsc::channel(EVENT_BUFFER.max(snapshot.len() + 16));
        for e in &snapshot {
            let _ = tx.try_send(e.encode());
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            s.events = Some(tx);
        }
        Ok(rx)
    }
}
