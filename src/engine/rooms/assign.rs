//! Who feeds which slot: the room's policy (last-N by speaker activity, or one named
//! participant) applied to every viewer, plus keyframe requests and the periodic speaker and
//! stall checks that can change the answer.

use crate::engine::keymap::KeyMap;
use crate::engine::rooms::decodable::decodable;
use crate::engine::rooms::events::RoomEvent;
use crate::engine::rooms::room::{ParticipantKey, SessionKey, Track};
use crate::engine::shard::event_loop::Engine;
use crate::engine::shard::lifecycle::MAX_SLOTS_PER_KIND;
use crate::engine::shard::session::{
    layer_slot, source_id, source_parts, track_of, Session, TrackTap,
};
use crate::forward::keyframe::VideoCodec;
use crate::forward::layers::LayerSet;
use crate::forward::slot::LegParams;
use crate::forward::speakers::assign_slots;
use crate::transport::MediaKind;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Keyframe requests to one publisher layer are at most this frequent.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// What one viewer slot should carry after a reassignment.
struct Plan {
    viewer: SessionKey,
    slot: usize,
    kind: MediaKind,
    mid: String,
    participant: Option<ParticipantKey>,
    name: Option<String>,
    source: Option<(SessionKey, usize)>,
    /// Participants left out because the viewer cannot decode their codec.
    skipped: Vec<String>,
}

fn kind_index(kind: MediaKind) -> usize {
    usize::from(kind == MediaKind::Video)
}

/// Adds a viewer's entries to the lists of the publisher tracks its forwarders carry (lists
/// exist for every track of a room's publishers; a source outside them is left out).
fn add_fanout_entries(
    subscribers: &mut KeyMap<u64, Vec<(SessionKey, usize)>>,
    viewer: SessionKey,
    session: &Session,
) {
    for (slot, f) in session.forwarders.iter().enumerate() {
        for sid in f.sources() {
            if let Some(list) = subscribers.get_mut(&sid) {
                list.push((viewer, slot));
            }
        }
    }
}

impl Engine {
    /// Re-decides every viewer slot's source in a room, applies the changes (keyframe
    /// requests, events) and rebuilds the room's fan-out lists.
    pub(in crate::engine) fn reassign(&mut self, room_name: &str, now: Instant) {
        self.reassign_viewers(room_name, None, now);
    }

    /// Like [`Engine::reassign`], for one viewer only (a viewer joining changes nobody else).
    pub(in crate::engine) fn reassign_viewers(
        &mut self,
        room_name: &str,
        only: Option<SessionKey>,
        now: Instant,
    ) {
        let plans = self.plan(room_name, only, now);
        let mut keyframes = Vec::new();
        let mut events = Vec::new();
        for p in plans {
            let current = self
                .sessions
                .get(&p.viewer)
                .and_then(|v| v.forwarders.get(p.slot))
                .map(|f| f.source().map(track_of));
            let Some(current) = current else {
                continue;
            };
            // A slot bound to a new track starts on the layer its preferences allow.
            let wanted = p.source.map(|(session, track)| {
                let track_sid = source_id(session, track, 0);
                if current == Some(track_sid) {
                    return track_sid;
                }
                source_id(
                    session,
                    track,
                    self.initial_layer(p.viewer, p.slot, track_sid),
                )
            });
            let wanted_track = wanted.map(track_of);
            // The leg parameters are looked up only for slots that change source.
            let params: Option<LegParams> = match p.source {
                Some((session, track)) if current != wanted.map(track_of) => self
                    .inbound(session)
                    .and_then(|i| i.get(track))
                    .map(|t| LegParams::from_leg(&t.codecs, &t.extensions)),
                _ => None,
            };
            let Some(viewer) = self.sessions.get_mut(&p.viewer) else {
                continue;
            };
            let (Some(forwarder), Some(assigned)) = (
                viewer.forwarders.get_mut(p.slot),
                viewer.slot_participants.get_mut(p.slot),
            ) else {
                continue;
            };
            if current != wanted_track {
                if let Some(layers) = viewer.slot_layers.get_mut(p.slot) {
                    match wanted.filter(|_| p.kind == MediaKind::Video) {
                        Some(sid) => layers.switch.begin(source_parts(sid).2, now),
                        None => layers.switch.reset(),
                    }
                    layers.active_spatial = None;
                }
                match (wanted, params) {
                    (Some(sid), Some(params)) => {
                        if forwarder.bind(sid, &params) {
                            if p.kind == MediaKind::Video {
                                keyframes.push(sid);
                            }
                        } else {
                            forwarder.unbind();
                        }
                    }
                    _ => forwarder.unbind(),
                }
            }
            let participant = forwarder.source().and(p.participant);
            let skipped_changed = viewer
                .slot_layers
                .get(p.slot)
                .is_some_and(|l| l.skipped != p.skipped);
            if *assigned != participant || skipped_changed {
                *assigned = participant;
                if let Some(l) = viewer.slot_layers.get_mut(p.slot) {
                    l.skipped.clone_from(&p.skipped);
                }
                events.push((
                    p.viewer,
                    RoomEvent::SlotAssigned {
                        mid: p.mid,
                        kind: p.kind.as_str(),
                        participant: participant.and(p.name),
                        skipped: p.skipped.into_iter().map(|n| (n, "codec")).collect(),
                    },
                ));
            }
        }
        for (viewer, event) in events {
            self.emit_to(viewer, &event);
        }
        match only {
            Some(viewer) => self.refresh_viewer_fanout(room_name, viewer),
            None => self.rebuild_fanout(room_name),
        }
        for sid in keyframes {
            self.request_keyframe(sid, now, true);
        }
    }

    /// The desired source of every viewer slot in a room (or of one viewer's slots). The
    /// room's sources and speaker orders are computed once, not per viewer.
    fn plan(&mut self, room_name: &str, only: Option<SessionKey>, now: Instant) -> Vec<Plan> {
        let Some(room) = self.rooms.get(room_name) else {
            return Vec::new();
        };
        // Live sources per kind: participant → (publisher session, track).
        let mut sources: [HashMap<ParticipantKey, (SessionKey, usize)>; 2] = Default::default();
        for p in &room.publishers {
            for t in p.tracks.iter().filter(|t| !t.stalled) {
                sources[kind_index(t.kind)]
                    .entry(p.key)
                    .or_insert((p.session, t.index));
            }
        }
        let mut plans = Vec::new();
        let mut current = Vec::new();
        let mut desired = Vec::new();
        let mut assigned = Vec::new();
        let mut video_rank = Vec::new();
        let mut video_ranked = false;
        for viewer in room
            .viewers
            .iter()
            .filter(|v| only.is_none_or(|o| o == v.session))
        {
            let Some(session) = self.sessions.get(&viewer.session) else {
                continue;
            };
            let own = room.key_of(&viewer.participant);
            let target = viewer.target.as_deref().map(|t| room.key_of(t));
            for kind in [MediaKind::Audio, MediaKind::Video] {
                let all_live = &sources[kind_index(kind)];
                // Sources this viewer cannot decode are left out; the next participant
                // fills the slot.
                let codecs = self.viewer_codecs(viewer.session, kind).unwrap_or(&[]);
                let mut skipped = Vec::new();
                let mut live = HashMap::with_capacity(all_live.len());
                for (k, (s, t)) in all_live {
                    let fits = self
                        .track_codecs(*s, *t)
                        .is_some_and(|pc| decodable(codecs, pc));
                    if fits {
                        live.insert(*k, (*s, *t));
                    } else if Some(*k) != own {
                        if let Some(name) = room.name_of(*k) {
                            skipped.push(name.to_owned());
                        }
                    }
                }
                skipped.sort_unstable();
                let live = &live;
                let slots: Vec<usize> = session
                    .peer
                    .slots()
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.kind == kind)
                    .map(|(i, _)| i)
                    .collect();
                if slots.is_empty() {
                    continue;
                }
                if session.for_node && kind == MediaKind::Video {
                    // Another node's upstream: every video slot is a layer of the broadcast's
                    // one video (its pin says which).
                    let one = live.keys().min().copied();
                    assigned.clear();
                    assigned.extend(slots.iter().map(|_| one));
                } else {
                    current.clear();
                    current.extend(slots.iter().map(|i| session.slot_participants[*i]));
                    desired.clear();
                    match target {
                        Some(t) => desired.extend(t.filter(|k| live.contains_key(k))),
                        None if kind == MediaKind::Video => {
                            if !video_ranked {
                                // Long enough for any viewer: the viewer's own key may be in it.
                                let most = MAX_SLOTS_PER_KIND + 1;
                                room.speakers.video_order(
                                    None,
                                    |k| live.contains_key(&k),
                                    most,
                                    &mut video_rank,
                                );
                                video_ranked = true;
                            }
                            desired.extend(
                                video_rank
                                    .iter()
                                    .copied()
                                    .filter(|k| Some(*k) != own)
                                    .take(slots.len()),
                            );
                        }
                        None if live.len() <= slots.len() + usize::from(own.is_some()) => {
                            // Room for everyone: no choice to make.
                            desired.extend(live.keys().copied().filter(|k| Some(*k) != own));
                            desired.sort_unstable();
                        }
                        None => {
                            let shown: Vec<u64> = current.iter().flatten().copied().collect();
                            room.speakers.audio_order(
                                own,
                                |k| live.contains_key(&k),
                                &shown,
                                slots.len(),
                                now,
                                &mut desired,
                            )
                        }
                    }
                    assign_slots(&current, &desired, &mut assigned);
                }
                for (i, who) in slots.iter().zip(assigned.iter()) {
                    plans.push(Plan {
                        viewer: viewer.session,
                        slot: *i,
                        kind,
                        mid: session.peer.slots()[*i].mid.clone(),
                        participant: *who,
                        name: who.and_then(|k| room.name_of(k)).map(str::to_owned),
                        source: who.and_then(|k| live.get(&k).copied()),
                        skipped: skipped.clone(),
                    });
                }
            }
        }
        plans
    }

    /// Puts one viewer's entries in the room's (publisher track → viewer slots) lists in line
    /// with its forwarders, or takes them out if the session has ended. A viewer joining or
    /// leaving costs a pass over the room's lists, not a rebuild of them from every viewer.
    pub(in crate::engine) fn refresh_viewer_fanout(&mut self, room_name: &str, viewer: SessionKey) {
        let Some(room) = self.rooms.get(room_name) else {
            return;
        };
        for sid in room.source_ids() {
            if let Some(list) = self.subscribers.get_mut(&sid) {
                list.retain(|(v, _)| *v != viewer);
            }
        }
        if let Some(session) = self.sessions.get(&viewer) {
            add_fanout_entries(&mut self.subscribers, viewer, session);
        }
    }

    /// Rebuilds the (publisher track → viewer slots) lists of a room from its forwarders.
    fn rebuild_fanout(&mut self, room_name: &str) {
        let Some(room) = self.rooms.get(room_name) else {
            return;
        };
        for sid in room.source_ids() {
            self.subscribers.insert(sid, Vec::new());
        }
        for viewer in &room.viewers {
            if let Some(session) = self.sessions.get(&viewer.session) {
                add_fanout_entries(&mut self.subscribers, viewer.session, session);
            }
        }
    }

    /// Asks a publisher for a keyframe on one layer of a track (source id `sid`), at most
    /// every 500 ms per layer unless `urgent`.
    pub(in crate::engine) fn request_keyframe(&mut self, sid: u64, now: Instant, urgent: bool) {
        let (key, track, layer) = source_parts(sid);
        let index = layer_slot(track, layer);
        let Some(published) = self.published_mut(key) else {
            return;
        };
        if published.last_keyframe_request.len() <= index {
            published.last_keyframe_request.resize(index + 1, None);
            published.keyframe_pending.resize(index + 1, false);
        }
        let last = &mut published.last_keyframe_request[index];
        let recent =
            last.is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL);
        // An urgent request (a viewer just connected) goes out at once unless a recent one is
        // still unanswered: the keyframe on its way serves every viewer waiting for it, so a
        // crowd joining together does not make the publisher send a keyframe each.
        if recent && (!urgent || published.keyframe_pending[index]) {
            self.tally.keyframe_requests_suppressed += 1;
            return;
        }
        *last = Some(now);
        published.keyframe_pending[index] = true;
        match self.sessions.get_mut(&key) {
            Some(session) => {
                self.tally.pli_sent += 1;
                session.peer.request_keyframe(now, track, layer);
                self.mark(key);
            }
            // A mirror: the publisher is on the room's home shard.
            None => self.request_home_keyframe(key, sid, urgent),
        }
    }

    /// Viewers still waiting for a keyframe ask again (rate-limited per track).
    pub(in crate::engine) fn retry_keyframes(&mut self, now: Instant) {
        let waiting: Vec<u64> = self
            .sessions
            .values()
            .filter(|s| s.connected)
            .flat_map(|s| s.forwarders.iter().filter(|f| f.waiting_for_keyframe()))
            .filter_map(|f| f.source())
            .collect();
        for sid in waiting {
            self.request_keyframe(sid, now, false);
        }
    }

    /// A publisher's track started: it joins the room's sources.
    pub(in crate::engine) fn track_opened(&mut self, key: SessionKey, index: usize) {
        let Some(t) = self.inbound(key).and_then(|i| i.get(index)).cloned() else {
            return;
        };
        let codec = t
            .codecs
            .first()
            .map(|c| c.mime.split('/').nth(1).unwrap_or(&c.mime).to_owned())
            .unwrap_or_default();
        let track = Track {
            index,
            kind: t.kind,
            codec: codec.clone(),
            audio_level_id: t
                .extensions
                .iter()
                .find(|e| e.uri == AUDIO_LEVEL_URI)
                .map(|e| e.id),
            last_packet: Instant::now(),
            stalled: false,
        };
        let Some((room, participant)) = self
            .publisher_names(key)
            .map(|(r, p)| (r.to_owned(), p.to_owned()))
        else {
            return;
        };
        let Some(publisher) = self.rooms.get_mut(&room).and_then(|r| r.publisher_mut(key)) else {
            return;
        };
        if publisher.tracks.iter().any(|t| t.index == index) {
            return;
        }
        let kind = track.kind.as_str();
        let mut layers = LayerSet::new();
        for l in &t.layers {
            layers.add(&l.rid);
        }
        let tap = TrackTap {
            participant: publisher.key,
            audio_level_id: track.audio_level_id,
            last_packet: track.last_packet,
            stalled: false,
            video: t
                .codecs
                .iter()
                .filter_map(|c| Some((c.payload_type, VideoCodec::from_mime(&c.mime)?)))
                .collect(),
            layers,
        };
        publisher.tracks.push(track);
        if let Some(published) = self.published_mut(key) {
            if published.taps.len() <= index {
                published.taps.resize(index + 1, None);
            }
            published.taps[index] = Some(tap);
        }
        self.emit_room(
            &room,
            &RoomEvent::TrackPublished {
                participant,
                kind,
                codec,
            },
        );
        self.reassign(&room, Instant::now());
    }

    /// Per packet of a publisher: freshness of the track, and the speaker's audio level.
    pub(in crate::engine) fn observe_track(
        &mut self,
        key: SessionKey,
        index: usize,
        packet: &rtc::rtp::Packet,
        now: Instant,
    ) {
        let Some(tap) = self
            .published_mut(key)
            .and_then(|p| p.taps.get_mut(index))
            .and_then(Option::as_mut)
        else {
            return;
        };
        tap.last_packet = now;
        let resumed = std::mem::take(&mut tap.stalled);
        let (level_id, participant) = (tap.audio_level_id, tap.participant);
        if resumed {
            self.resume_track(key, index, now);
        }
        let Some(id) = level_id else {
            return;
        };
        let level = packet
            .header
            .extensions
            .iter()
            .find(|e| e.id == id)
            .and_then(|e| e.payload.first())
            .map(|b| b & 0x7f);
        let Some(level) = level else {
            return;
        };
        // Fields apart, not `publisher_names`: the room is changed while its name is borrowed.
        let room = match self.sessions.get(&key) {
            Some(s) => Some(&s.room),
            None => self.mirrors.get(&key).map(|m| &m.room),
        };
        if let Some(room) = room.and_then(|name| self.rooms.get_mut(name)) {
            room.speakers.observe(participant, level, now);
        }
    }

    /// A stalled track of publisher `key` sent a packet: it is offered to the slots again now,
    /// not on the next tick, so the packet (a keyframe, when the publisher answers the
    /// keyframe request its return brings) reaches the viewers.
    fn resume_track(&mut self, key: SessionKey, index: usize, now: Instant) {
        let name = match self.sessions.get(&key) {
            Some(s) => s.room.clone(),
            None => match self.mirrors.get(&key) {
                Some(m) => m.room.clone(),
                None => return,
            },
        };
        let Some(room) = self.rooms.get_mut(&name) else {
            return;
        };
        let track = room
            .publishers
            .iter_mut()
            .filter(|p| p.session == key)
            .flat_map(|p| p.tracks.iter_mut())
            .find(|t| t.index == index);
        if let Some(t) = track {
            t.last_packet = now;
            t.stalled = false;
            self.reassign(&name, now);
        }
    }

    /// Periodic: active speaker changes and stalled tracks may change slot assignments.
    pub(in crate::engine) fn rooms_tick(&mut self, now: Instant) {
        let mut changed = Vec::new();
        for (name, room) in self.rooms.iter_mut() {
            for p in &mut room.publishers {
                let published = match self.sessions.get(&p.session) {
                    Some(s) => &s.published,
                    None => match self.mirrors.get(&p.session) {
                        Some(m) => &m.published,
                        None => continue,
                    },
                };
                for t in &mut p.tracks {
                    if let Some(Some(tap)) = published.taps.get(t.index) {
                        t.last_packet = tap.last_packet;
                    }
                }
            }
            let stalls = room.update_stalls(now);
            // The publishers' taps learn which tracks stalled, so a packet of one resumes it.
            for p in &room.publishers {
                let published = match self.sessions.get_mut(&p.session) {
                    Some(s) => &mut s.published,
                    None => match self.mirrors.get_mut(&p.session) {
                        Some(m) => &mut m.published,
                        None => continue,
                    },
                };
                for t in &p.tracks {
                    if let Some(Some(tap)) = published.taps.get_mut(t.index) {
                        tap.stalled = t.stalled;
                    }
                }
            }
            let speaker = room.speakers.update(now);
            if stalls || speaker.is_some() {
                let who = speaker.and_then(|k| room.name_of(k)).map(str::to_owned);
                changed.push((name.clone(), speaker.map(|_| who)));
            }
        }
        for (room, speaker) in changed {
            if let Some(participant) = speaker {
                self.emit_room(&room, &RoomEvent::ActiveSpeaker { participant });
            }
            self.reassign(&room, now);
        }
    }
}
