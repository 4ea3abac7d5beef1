//! Simulcast in the engine: what each publisher layer carries, which layer each viewer slot
//! gets, and the `layers` events that tell a viewer.
//!
//! Per packet only [`Engine::observe_layer`] runs (counters, and the picture size of a
//! keyframe). Choosing runs on the tick for rooms whose layers changed and for slots with a
//! switch in progress, when a slot is bound to a new track, and when a viewer asks through
//! the layer endpoint: [`selector::choose`] decides, [`Switch`] paces the switch, and the
//! slot's forwarder carries it out on the target's keyframe.

use crate::engine::rooms::events::{LayerInfo, RoomEvent};
use crate::engine::rooms::room::SessionKey;
use crate::engine::shard::event_loop::Engine;
use crate::engine::shard::session::{source_id, source_parts, track_of};
use crate::engine::EngineError;
use crate::forward::allocate::Target;
use crate::forward::keyframe::{is_keyframe_start, VideoCodec};
use crate::forward::layers::{timestamp_alignment, Layer, LayerSet};
use crate::forward::selector::{self, Preferences, Reason, Step, Switch};
use crate::forward::slot::LegParams;
use crate::metrics::SwitchReason;
use crate::transport::MediaKind;
use std::hash::{Hash, Hasher};
use std::time::Instant;

impl Engine {
    /// Per packet of a publisher's track: the layer's counters, freshness, and (on a
    /// keyframe) its picture size. Returns whether the packet starts a keyframe.
    pub(in crate::engine) fn observe_layer(
        &mut self,
        key: SessionKey,
        track: usize,
        layer: usize,
        packet: &rtc::rtp::Packet,
        now: Instant,
    ) -> bool {
        let (published, room) = match self.sessions.get_mut(&key) {
            Some(s) => (&mut s.published, &s.room),
            None => match self.mirrors.get_mut(&key) {
                Some(m) => (&mut m.published, &m.room),
                None => return false,
            },
        };
        let Some(tap) = published.taps.get_mut(track).and_then(Option::as_mut) else {
            return false;
        };
        let codec = tap
            .video
            .iter()
            .find(|(pt, _)| *pt == packet.header.payload_type)
            .map(|(_, c)| *c);
        let keyframe = codec.is_some_and(|c| is_keyframe_start(c, &packet.payload));
        let size = match codec {
            Some(c) if keyframe => Some(crate::forward::resolution::keyframe_size(
                c,
                &packet.payload,
            )),
            _ => None,
        };
        if codec == Some(VideoCodec::Vp8) {
            if let Some(tid) = crate::forward::vp8::parse(&packet.payload).and_then(|d| d.tid) {
                tap.layers.on_temporal(layer, tid, packet.payload.len());
            }
        }
        if tap
            .layers
            .on_packet(layer, packet.payload.len(), packet.header.marker, size, now)
            && !self.layers_dirty.contains(room)
        {
            self.layers_dirty.insert(room.clone());
        }
        keyframe
    }

    /// A further simulcast layer of a publisher's track started.
    pub(in crate::engine) fn layer_opened(&mut self, key: SessionKey, track: usize, layer: usize) {
        let rid = self
            .inbound(key)
            .and_then(|i| i.get(track))
            .and_then(|t| t.layers.get(layer))
            .map(|l| l.rid.clone())
            .unwrap_or_default();
        let Some(room) = self.publisher_names(key).map(|(r, _)| r.to_owned()) else {
            return;
        };
        let Some(tap) = self
            .published_mut(key)
            .and_then(|p| p.taps.get_mut(track))
            .and_then(Option::as_mut)
        else {
            return;
        };
        while tap.layers.len() <= layer {
            tap.layers.add(&rid);
        }
        tracing::debug!(room, track, layer, rid, "layer opened");
        self.layers_dirty.insert(room);
    }

    /// The layer a slot bound to a new track starts on.
    pub(in crate::engine) fn initial_layer(
        &self,
        viewer: SessionKey,
        slot: usize,
        source: u64,
    ) -> usize {
        let (publisher, track, _) = source_parts(source);
        let prefs = self
            .sessions
            .get(&viewer)
            .and_then(|v| v.slot_layers.get(slot))
            .map(|l| l.prefs.clone())
            .unwrap_or_default();
        self.track_layers(publisher, track)
            .and_then(|set| selector::choose(set, &prefs).layer)
            .unwrap_or(0)
    }

    /// What a publisher's track negotiated, as a slot binds it.
    fn leg_params(&self, publisher: SessionKey, track: usize) -> Option<LegParams> {
        let t = self.inbound(publisher)?.get(track)?;
        Some(LegParams::from_leg(&t.codecs, &t.extensions))
    }

    /// What to add to layer `to`'s timestamps to put them on layer `from`'s timeline, when
    /// both layers have sent a sender report.
    fn alignment(
        &self,
        publisher: SessionKey,
        track: usize,
        from: usize,
        to: usize,
    ) -> Option<u32> {
        let t = self.inbound(publisher)?.get(track)?;
        let clock = t.codecs.first().map(|c| c.clock_rate).unwrap_or(90_000);
        let from = t.layers.get(from)?.sender_report?;
        let to = t.layers.get(to)?.sender_report?;
        Some(timestamp_alignment(from, to, clock))
    }

    fn track_layers(&self, publisher: SessionKey, track: usize) -> Option<&LayerSet> {
        self.published(publisher)?
            .taps
            .get(track)?
            .as_ref()
            .map(|t| &t.layers)
    }

    /// Periodic: rolls every layer's measurements, then re-chooses the layers of the slots in
    /// rooms whose layers changed and of slots with a switch in progress.
    pub(in crate::engine) fn layers_tick(&mut self, now: Instant) {
        self.downlink_tick(now);
        let sessions = self
            .sessions
            .values_mut()
            .map(|s| (&mut s.published, &s.room));
        let mirrors = self
            .mirrors
            .values_mut()
            .map(|m| (&mut m.published, &m.room));
        for (published, room) in sessions.chain(mirrors) {
            let mut changed = false;
            for tap in published.taps.iter_mut().flatten() {
                changed |= tap.layers.tick(now);
            }
            if changed {
                self.layers_dirty.insert(room.clone());
            }
        }
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let dirty = self.layers_dirty.remove(&room);
            self.select_layers(&room, None, dirty, now);
        }
    }

    /// Re-chooses the layer of video slots in a room (all of them when `all`, else those with
    /// a switch in progress, and every slot of a viewer whose downlink Parley estimates),
    /// for every viewer or one, and reports changes.
    pub(in crate::engine) fn select_layers(
        &mut self,
        room: &str,
        only: Option<SessionKey>,
        all: bool,
        now: Instant,
    ) {
        let viewers = self.room_viewers(room, only);
        let mut keyframes = Vec::new();
        let mut refresh = Vec::new();
        let mut touched = all;
        for viewer in viewers {
            let targets = self.allocate_viewer(viewer, now);
            let Some(session) = self.sessions.get(&viewer) else {
                continue;
            };
            // A viewer with an estimator is re-chosen every tick, also once it turned out
            // unmanaged (no feedback): its slots then climb back to what their limits allow.
            let adaptive = !targets.is_empty() || session.downlink.is_some();
            let slots: Vec<usize> = session
                .peer
                .slots()
                .iter()
                .zip(&session.slot_layers)
                .enumerate()
                .filter(|(_, (s, l))| {
                    s.kind == MediaKind::Video && (all || adaptive || l.switch.unsettled(now))
                })
                .map(|(i, _)| i)
                .collect();
            touched |= !slots.is_empty();
            for slot in slots {
                let target = targets.get(slot).copied().flatten();
                if let Some((want_keyframe, moved)) = self.select_slot(viewer, slot, target, now) {
                    keyframes.extend(want_keyframe);
                    if moved && !refresh.contains(&viewer) {
                        refresh.push(viewer);
                    }
                }
            }
        }
        for viewer in refresh {
            self.refresh_viewer_fanout(room, viewer);
        }
        for sid in keyframes {
            self.request_keyframe(sid, now, true);
        }
        if touched {
            self.report_layers(room, only);
        }
    }

    /// Chooses one slot's layer (lowered or paused by `target`, the viewer's allocation,
    /// when it has one) and takes the switch's next step. Returns the source to ask for a
    /// keyframe, if any, and whether the slot's sources changed.
    fn select_slot(
        &mut self,
        viewer: SessionKey,
        slot: usize,
        target: Option<Target>,
        now: Instant,
    ) -> Option<(Option<u64>, bool)> {
        let session = self.sessions.get(&viewer)?;
        let forwarder = session.forwarders.get(slot)?;
        let assigned = forwarder.source()?;
        let current = forwarder
            .playing_source()
            .filter(|c| track_of(*c) == track_of(assigned));
        let (publisher, track, _) = source_parts(assigned);
        let set = self.track_layers(publisher, track)?;
        let layers = session.slot_layers.get(slot)?;
        let mut choice = selector::choose(set, &layers.prefs);
        let (mut reason, mut label) = match choice.reason {
            Reason::Highest => (SwitchReason::Limit, "highest"),
            Reason::Limit => (SwitchReason::Limit, "limit"),
            Reason::Pin => (SwitchReason::Pin, "pin"),
        };
        let paused = target == Some(Target::Paused);
        if let Some(Target::Play(step)) = target {
            if Some(step.layer) != choice.layer || step.temporal < choice.temporal {
                (reason, label) = (SwitchReason::Bandwidth, "bandwidth");
            }
            choice.layer = Some(step.layer);
            choice.temporal = step.temporal.min(choice.temporal);
        }
        if paused {
            (reason, label) = (SwitchReason::Bandwidth, "bandwidth");
        }
        let current_layer = current.map(|c| source_parts(c).2);
        let current_live = current_layer
            .and_then(|l| set.layers().get(l))
            .is_some_and(|l| l.live);
        let spatial_of = |l: usize| set.layers().get(l).map(|l| l.spatial);
        let mut switch = layers.switch.clone();
        let mut active = layers.active_spatial;
        let mut moved = None;
        let now_spatial = current_layer.and_then(spatial_of);
        if switch.pending().is_some() && switch.pending() == current_layer {
            // The pending layer's keyframe came: the switch landed.
            switch.landed();
            if let (Some(before), Some(after)) = (active, now_spatial) {
                moved = Some(after > before);
            }
        }
        if current_layer.is_some() {
            active = now_spatial;
        }
        let step = if paused {
            switch.reset();
            Step::Cancel
        } else {
            switch.step(current_layer, current_live, choice.layer, now)
        };
        let landed_reason = layers.switch_reason.unwrap_or(reason);
        let starts_down = matches!(step, Step::Start(l) if spatial_of(l) < now_spatial);
        let pending_down = switch.pending().is_some_and(|p| {
            p != current_layer.unwrap_or(usize::MAX) && spatial_of(p) < now_spatial
        });
        let gave_up = match step {
            Step::GiveUp(target) => Some(spatial_of(target) > now_spatial),
            _ => None,
        };
        if let Some(up) = moved {
            self.tally.layer_switches[usize::from(up)][landed_reason as usize] += 1;
        }
        if let Some(up) = gave_up {
            self.tally.layer_switches[usize::from(up)][SwitchReason::KeyframeTimeout as usize] += 1;
        }
        let session = self.sessions.get_mut(&viewer)?;
        if let Some(l) = session.slot_layers.get_mut(slot) {
            l.switch = switch;
            l.active_spatial = active;
            l.reason = label;
            if let Step::Start(_) = step {
                l.switch_reason = Some(reason);
            }
        }
        let forwarder = session.forwarders.get_mut(slot)?;
        let resumed = forwarder.paused() && !paused;
        forwarder.set_paused(paused);
        if paused {
            forwarder.cancel_pending();
            return Some((None, false));
        }
        // Going down for bandwidth, the current layer's frames above the base temporal layer
        // stop at once while the smaller layer's keyframe is awaited: down at once.
        let temporal = if (starts_down || pending_down) && reason == SwitchReason::Bandwidth {
            0
        } else {
            choice.temporal
        };
        let before = forwarder.max_temporal();
        forwarder.set_max_temporal(temporal);
        if before != temporal && current.is_some() {
            let up = temporal > before;
            self.tally.layer_switches[usize::from(up)][reason as usize] += 1;
        }
        let resume_keyframe = resumed.then_some(current).flatten();
        match step {
            Step::Keep => Some((resume_keyframe, false)),
            Step::Cancel | Step::GiveUp(_) => {
                forwarder.cancel_pending();
                Some((resume_keyframe, true))
            }
            Step::Start(layer) => {
                let target = source_id(publisher, track, layer);
                if forwarder.source() == Some(target) {
                    return Some((Some(target), false));
                }
                let params = self.leg_params(publisher, track)?;
                let align =
                    current_layer.and_then(|from| self.alignment(publisher, track, from, layer));
                let session = self.sessions.get_mut(&viewer)?;
                let forwarder = session.forwarders.get_mut(slot)?;
                forwarder.bind_aligned(target, &params, align);
                Some((Some(target), true))
            }
        }
    }

    /// Applies what a viewer asked of one slot through the layer endpoint.
    pub(in crate::engine) fn set_layer_prefs(
        &mut self,
        id: &str,
        mid: &str,
        prefs: Preferences,
    ) -> Result<(), EngineError> {
        let key = *self.by_public.get(id).ok_or(EngineError::NotFound)?;
        let session = self.sessions.get_mut(&key).ok_or(EngineError::NotFound)?;
        let slot = session
            .peer
            .slots()
            .iter()
            .position(|s| s.mid == mid)
            .ok_or_else(|| EngineError::BadRequest(format!("no media section with mid {mid:?}")))?;
        if session.peer.slots()[slot].kind != MediaKind::Video {
            return Err(EngineError::BadRequest(format!(
                "media section {mid:?} is not video: only video has layers"
            )));
        }
        if let Some(l) = session.slot_layers.get_mut(slot) {
            l.prefs = prefs;
            l.switch = Switch::default();
        }
        let room = session.room.clone();
        self.select_layers(&room, Some(key), true, Instant::now());
        Ok(())
    }

    /// A room's WHEP sessions, or just `only`.
    fn room_viewers(&self, room: &str, only: Option<SessionKey>) -> Vec<SessionKey> {
        self.rooms
            .get(room)
            .map(|r| {
                r.viewers
                    .iter()
                    .map(|v| v.session)
                    .filter(|v| only.is_none_or(|o| o == *v))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends each viewer's slots' `layers` event where it changed.
    fn report_layers(&mut self, room: &str, only: Option<SessionKey>) {
        for viewer in self.room_viewers(room, only) {
            let Some(session) = self.sessions.get(&viewer) else {
                continue;
            };
            for slot in 0..session.peer.slots().len() {
                let Some(signature) = self.layer_signature(viewer, slot) else {
                    continue;
                };
                let Some(l) = self
                    .sessions
                    .get_mut(&viewer)
                    .and_then(|s| s.slot_layers.get_mut(slot))
                else {
                    continue;
                };
                if l.reported == Some(signature) {
                    continue;
                }
                l.reported = Some(signature);
                if let Some(event) = self.layer_event(viewer, slot) {
                    self.emit_to(viewer, &event);
                }
            }
        }
    }

    /// The live layers of a publisher's track, smallest first.
    pub(in crate::engine) fn live_layers(
        &self,
        publisher: SessionKey,
        track: usize,
    ) -> Vec<LayerInfo> {
        let Some(set) = self.track_layers(publisher, track) else {
            return Vec::new();
        };
        let mut live: Vec<LayerInfo> = set
            .layers()
            .iter()
            .enumerate()
            .filter(|(_, l)| l.live)
            .map(|(i, l)| layer_info(i, l))
            .collect();
        live.sort_by_key(|l| l.spatial_layer_id);
        live
    }

    /// The layer a viewer's slot plays now (None before its first keyframe, while paused,
    /// and for audio).
    pub(in crate::engine) fn active_layer(
        &self,
        viewer: SessionKey,
        slot: usize,
    ) -> Option<LayerInfo> {
        let forwarder = self.sessions.get(&viewer)?.forwarders.get(slot)?;
        if forwarder.paused() {
            return None;
        }
        let assigned = forwarder.source()?;
        let current = forwarder
            .playing_source()
            .filter(|c| track_of(*c) == track_of(assigned))?;
        let (publisher, track, layer) = source_parts(current);
        let set = self.track_layers(publisher, track)?;
        let mut info = layer_info(layer, set.layers().get(layer)?);
        if set.layers().len() > 1 || forwarder.max_temporal() < selector::MAX_TEMPORAL {
            info.temporal_layer_id = Some(forwarder.max_temporal());
        }
        Some(info)
    }

    /// The `layers` event of each video slot of a viewer, with a signature that leaves out
    /// measured bitrates (which change every second).
    /// The `layers` events of every video slot of a viewer (its snapshot on connecting).
    pub(in crate::engine) fn layer_events(&self, viewer: SessionKey) -> Vec<RoomEvent> {
        let slots = self
            .sessions
            .get(&viewer)
            .map_or(0, |s| s.peer.slots().len());
        (0..slots)
            .filter_map(|slot| self.layer_event(viewer, slot))
            .collect()
    }

    /// The estimate a viewer's `layers` events show: none while it is unmanaged.
    fn shown_estimate(&self, viewer: SessionKey) -> Option<u64> {
        self.sessions
            .get(&viewer)?
            .downlink
            .as_ref()
            .filter(|d| !d.unmanaged(Instant::now()))
            .map(|d| d.estimator.estimate())
    }

    /// What a video slot's `layers` event would say, hashed without building it: its event
    /// goes out again only when this changes. The estimate moves all the time, so it counts
    /// only when it moved by a fifth. `None` for audio.
    fn layer_signature(&self, viewer: SessionKey, slot: usize) -> Option<u64> {
        let session = self.sessions.get(&viewer)?;
        if session.peer.slots().get(slot)?.kind != MediaKind::Video {
            return None;
        }
        let forwarder = session.forwarders.get(slot)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.active_layer(viewer, slot)
            .map(|a| (a.index, a.temporal_layer_id, a.width, a.height))
            .hash(&mut h);
        let source = forwarder.source().map(source_parts);
        source
            .map(|(publisher, track, _)| (publisher, track))
            .hash(&mut h);
        if let Some(set) =
            source.and_then(|(publisher, track, _)| self.track_layers(publisher, track))
        {
            for (i, l) in set.layers().iter().enumerate().filter(|(_, l)| l.live) {
                (i, l.spatial, l.size).hash(&mut h);
            }
        }
        forwarder.paused().hash(&mut h);
        session.slot_layers.get(slot).map(|l| l.reason).hash(&mut h);
        self.shown_estimate(viewer)
            .map(|e| ((e.max(1) as f64).ln() / 1.2f64.ln()) as i64)
            .hash(&mut h);
        Some(h.finish())
    }

    /// A video slot's `layers` event: the layers of its track, the one it plays, whether it
    /// is paused and why it plays what it plays.
    fn layer_event(&self, viewer: SessionKey, slot: usize) -> Option<RoomEvent> {
        let session = self.sessions.get(&viewer)?;
        let s = session.peer.slots().get(slot)?;
        if s.kind != MediaKind::Video {
            return None;
        }
        let forwarder = session.forwarders.get(slot)?;
        let layers = forwarder
            .source()
            .map(|sid| {
                let (publisher, track, _) = source_parts(sid);
                self.live_layers(publisher, track)
            })
            .unwrap_or_default();
        let reason = session
            .slot_layers
            .get(slot)
            .map(|l| l.reason)
            .filter(|r| !r.is_empty())
            .unwrap_or("highest");
        Some(RoomEvent::Layers {
            mid: s.mid.clone(),
            active: self.active_layer(viewer, slot),
            layers,
            paused: forwarder.paused(),
            reason,
            estimate: self.shown_estimate(viewer),
        })
    }
}

fn layer_info(index: usize, l: &Layer) -> LayerInfo {
    LayerInfo {
        rid: l.rid.clone(),
        spatial_layer_id: l.spatial,
        temporal_layer_id: None,
        width: l.size.0,
        height: l.size.1,
        bitrate: l.bitrate,
        index,
    }
}
