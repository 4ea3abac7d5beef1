//! Per-viewer downlink adaptation in the engine: feedback into each viewer's estimator, the
//! estimate shared over its video slots on the tick, and probe padding at frame boundaries.
//!
//! The decisions are pure and live in `forward/` ([`Estimator`], [`allocate`], [`Prober`]);
//! this file feeds them and carries out what they say. A probe's padding is capped so that
//! media and padding together stay within 1.5 times the estimate: a step too large for that
//! is climbed over several probes, and a link that cannot carry it queues a little, which
//! ends the probe at the first feedback that shows it (before its queue drops media). Per packet only
//! [`Engine::pad_after`] runs, for the one slot of a probing viewer that carries the probe.

use crate::engine::fanout::seal_padding;
use crate::engine::rooms::room::SessionKey;
use crate::engine::shard::event_loop::Engine;
use crate::engine::shard::session::source_parts;
use crate::forward::allocate::{self, ladder, SlotState, Step, Target, MIN_PROBE};
use crate::forward::estimate::{Bounds, Estimator, Signal};
use crate::forward::probe::{Prober, PADDING};
use crate::forward::selector::{self, Preferences};
use crate::transport::{Feedback, MediaKind};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A viewer that has sent no congestion feedback this long after its offer is not managed.
const NO_FEEDBACK_GRACE: Duration = Duration::from_secs(5);

/// Ticks the sent rate is measured over (a second at 250 ms).
const SENT_WINDOW_TICKS: usize = 4;

/// What audio is assumed to take of a viewer's estimate, per audio slot with a source.
const AUDIO_SHARE: u64 = 40_000;

/// One viewer connection's estimate, probe, and what it was sent.
pub(in crate::engine) struct Downlink {
    pub estimator: Estimator,
    pub prober: Prober,
    /// Bits per second sent over about the last second (media and padding).
    pub sent_rate: u64,
    /// The same without probe padding: what the media alone takes.
    pub media_rate: u64,
    /// Bytes sent so far (all, and padding) at each of the last ticks, oldest first.
    sent_then: VecDeque<(u64, u64, Instant)>,
    /// The slot that carries probe padding (the first video slot that plays), if any.
    pub probe_slot: Option<usize>,
    /// Padding packets and bytes sent.
    pub padding: (u64, u64),
    /// Per slot: its allocation over time.
    pub slots: Vec<SlotState>,
    /// Probes started and failed, as last counted into metrics.
    probes_counted: (u64, u64),
    created: Instant,
}

impl Downlink {
    pub fn new(bounds: Bounds, slots: usize, created: Instant) -> Self {
        Downlink {
            estimator: Estimator::new(bounds),
            prober: Prober::default(),
            sent_rate: 0,
            media_rate: 0,
            sent_then: VecDeque::with_capacity(SENT_WINDOW_TICKS),
            probe_slot: None,
            padding: (0, 0),
            slots: vec![SlotState::default(); slots],
            probes_counted: (0, 0),
            created,
        }
    }

    /// Whether the viewer has sent no congestion feedback yet (no TWCC, no REMB, not even a
    /// receiver report).
    pub fn waiting(&self) -> bool {
        self.estimator.signal() == Signal::Initial
    }

    /// Whether the viewer sent no congestion feedback in its first [`NO_FEEDBACK_GRACE`]:
    /// a client that cannot say what its link carries is not managed, and its slots get what
    /// their limits allow, as with `--bwe false`.
    pub fn unmanaged(&self, now: Instant) -> bool {
        self.waiting() && now.saturating_duration_since(self.created) > NO_FEEDBACK_GRACE
    }
}

impl Engine {
    /// On the tick, before allocating: each viewer's sent rate since the last tick, and
    /// once a second its estimate for the histogram; probes started and failed.
    pub(in crate::engine) fn downlink_tick(&mut self, now: Instant) {
        let sample = self
            .last_estimate_sample
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if sample {
            self.last_estimate_sample = Some(now);
        }
        for s in self.sessions.values_mut() {
            let sent = s.sent.1;
            let Some(d) = s.downlink.as_deref_mut() else {
                continue;
            };
            // Over the last second or so: padding goes out at frame ends, in bursts.
            let padding = d.padding.1;
            if let Some((bytes, padded, then)) = d.sent_then.front().copied() {
                let secs = now.saturating_duration_since(then).as_secs_f64();
                if secs > 0.0 {
                    let all = sent.saturating_sub(bytes);
                    let media = all.saturating_sub(padding.saturating_sub(padded));
                    d.sent_rate = (all as f64 * 8.0 / secs) as u64;
                    d.media_rate = (media as f64 * 8.0 / secs) as u64;
                }
            }
            if d.sent_then.len() == SENT_WINDOW_TICKS {
                d.sent_then.pop_front();
            }
            d.sent_then.push_back((sent, padding, now));
            if sample && s.connected && !d.unmanaged(now) {
                self.tally
                    .estimates
                    .push(d.estimator.estimate() as f64 / 8.0);
            }
            let (started, failed) = (d.prober.started, d.prober.failed);
            self.tally.probes[0] += started - d.probes_counted.0;
            self.tally.probes[1] += failed - d.probes_counted.1;
            d.probes_counted = (started, failed);
        }
    }

    /// A viewer's congestion feedback. An estimate that falls below what the viewer is sent
    /// re-allocates its slots at once, not at the next tick: down at once.
    pub(in crate::engine) fn on_feedback(
        &mut self,
        key: SessionKey,
        feedback: Feedback,
        now: Instant,
    ) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(d) = session.downlink.as_deref_mut() else {
            session.peer.clear_deliveries();
            return;
        };
        let before = d.estimator.estimate();
        match feedback {
            Feedback::Twcc => {
                d.estimator.on_twcc(now, session.peer.deliveries());
                session.peer.clear_deliveries();
            }
            Feedback::Remb(bitrate) => d.estimator.on_remb(now, bitrate),
            Feedback::Loss(fraction) => d.estimator.on_loss(now, fraction, d.sent_rate),
        }
        let after = d.estimator.estimate();
        // The probe's own padding filled the link (a growing queue or loss while it runs,
        // or an estimate that fell, also just after it ended): stop it at once, and judge
        // the media by what the link carried before the probe, not by the loss and
        // queueing the padding caused.
        let filled = d.prober.probing() && d.estimator.congested();
        if let Some(start) = d
            .prober
            .started_at(now)
            .filter(|s| filled || after < s * 9 / 10)
        {
            d.prober.abort(now);
            // A REMB is the viewer's own estimate, taken as it is (padding included).
            if d.estimator.signal() != Signal::Remb {
                d.estimator.hold_at_least(start * 9 / 10);
            }
            return;
        }
        if after < before && after < d.media_rate {
            let room = session.room.clone();
            self.select_layers(&room, Some(key), false, now);
        }
    }

    /// On the tick, for one viewer: measures what it was sent, shares its estimate over its
    /// video slots and updates its probe. Returns each slot's target (`None` for audio, for
    /// slots without a source, and when the viewer has no estimator).
    pub(in crate::engine) fn allocate_viewer(
        &mut self,
        viewer: SessionKey,
        now: Instant,
    ) -> Vec<Option<Target>> {
        let Some(session) = self.sessions.get(&viewer) else {
            return Vec::new();
        };
        if session.downlink.as_ref().is_none_or(|d| d.unmanaged(now)) {
            return Vec::new();
        }
        let active = self
            .rooms
            .get(&session.room)
            .and_then(|r| r.speakers.active());
        let mut audio = 0u64;
        // (priority, slot, steps)
        let mut demands: Vec<(bool, usize, Vec<Step>)> = Vec::new();
        for (slot, s) in session.peer.slots().iter().enumerate() {
            let Some(source) = session.forwarders.get(slot).and_then(|f| f.source()) else {
                continue;
            };
            if s.kind == MediaKind::Audio {
                audio += AUDIO_SHARE;
                continue;
            }
            let prefs = session
                .slot_layers
                .get(slot)
                .map(|l| l.prefs.clone())
                .unwrap_or_default();
            let speaking =
                active.is_some_and(|a| session.slot_participants.get(slot) == Some(&Some(a)));
            demands.push((speaking, slot, self.steps(source, &prefs)));
        }
        demands.sort_by_key(|(speaking, slot, _)| (!speaking, *slot));
        let probe_slot = demands
            .iter()
            .find(|(_, slot, steps)| {
                !steps.is_empty()
                    && session
                        .forwarders
                        .get(*slot)
                        .is_some_and(|f| f.playing_source().is_some() || f.paused())
            })
            .map(|(_, slot, _)| *slot);
        let Some(d) = self
            .sessions
            .get_mut(&viewer)
            .and_then(|s| s.downlink.as_deref_mut())
        else {
            return Vec::new();
        };
        d.probe_slot = probe_slot;
        let estimate = d.estimator.estimate();
        // A REMB covers the streams stamped with abs-send-time: video only.
        let video = if d.estimator.signal() == Signal::Remb {
            estimate
        } else {
            estimate.saturating_sub(audio)
        };
        let slot_count = d.slots.len();
        let mut states: Vec<SlotState> = demands
            .iter()
            .map(|(_, slot, _)| d.slots.get(*slot).cloned().unwrap_or_default())
            .collect();
        let ladders: Vec<&[Step]> = demands.iter().map(|(_, _, s)| s.as_slice()).collect();
        let probed = d.prober.rate() > 0;
        // The padding is capped so that media and padding stay within 1.5 times the estimate;
        // a probe capped to nothing still counts as asked for (it then fails and backs off,
        // rather than reading as satisfied and starting over).
        let probe = allocate::allocate(video, &ladders, &mut states, probed, now).map(|want| {
            let pad = want.min((estimate + estimate / 2).saturating_sub(d.media_rate));
            if pad >= MIN_PROBE / 2 {
                pad
            } else {
                0
            }
        });
        // Before the first feedback there is nothing to measure a probe with, and nothing is
        // paused: the estimate is only the configured guess.
        let waiting = d.waiting();
        let probing = self.config.probe && probe_slot.is_some() && !waiting;
        d.prober.update(now, probe.filter(|_| probing), estimate);
        let mut out = vec![None; slot_count];
        for ((_, slot, steps), state) in demands.iter().zip(states) {
            if let Some(t) = out.get_mut(*slot) {
                *t = match (state.target(), steps.first()) {
                    (Some(Target::Paused), Some(lowest)) if waiting => Some(Target::Play(*lowest)),
                    (target, _) => target,
                };
            }
            if let Some(s) = d.slots.get_mut(*slot) {
                *s = state;
            }
        }
        out
    }

    /// The steps a slot bound to `source` may climb, within its preferences.
    fn steps(&self, source: u64, prefs: &Preferences) -> Vec<Step> {
        let (publisher, track, _) = source_parts(source);
        let Some(set) = self
            .published(publisher)
            .and_then(|p| p.taps.get(track))
            .and_then(Option::as_ref)
            .map(|t| &t.layers)
        else {
            return Vec::new();
        };
        let ceiling = selector::choose(set, prefs);
        let Some(top) = ceiling.layer.and_then(|l| set.layers().get(l)) else {
            return Vec::new();
        };
        let pinned = prefs.pin.is_some();
        // A layer whose bitrate is not measured yet (its first second) costs an unknown
        // amount: only the smallest such layer is offered until it is.
        let smallest_unmeasured = set
            .layers()
            .iter()
            .filter(|l| l.live && l.bitrate == 0)
            .map(|l| l.spatial)
            .min();
        let mut candidates = Vec::new();
        for (i, l) in set.layers().iter().enumerate() {
            let unmeasured = l.bitrate == 0 && Some(l.spatial) != smallest_unmeasured;
            if !l.live
                || l.spatial > top.spatial
                || (pinned && l.spatial != top.spatial)
                || unmeasured
            {
                continue;
            }
            if l.has_temporal_layers() {
                for t in 0..=ceiling.temporal {
                    candidates.push(Step {
                        layer: i,
                        spatial: l.spatial,
                        temporal: t,
                        bitrate: l.bitrate_at(t),
                    });
                }
            } else {
                candidates.push(Step {
                    layer: i,
                    spatial: l.spatial,
                    temporal: ceiling.temporal,
                    bitrate: l.bitrate,
                });
            }
        }
        ladder(candidates)
    }

    /// Called after a packet of `sid` with the marker bit reached (or was held back from) a
    /// viewer's slot: when the viewer probes through this slot, sends the padding due.
    pub(in crate::engine) fn pad_after(&mut self, viewer: SessionKey, slot: usize, now: Instant) {
        let Some(session) = self.sessions.get_mut(&viewer) else {
            return;
        };
        let Some(d) = session.downlink.as_deref_mut() else {
            return;
        };
        if d.probe_slot != Some(slot) || !d.prober.probing() {
            return;
        }
        let n = d.prober.padding_due(now);
        let Some(to) = session.peer.sealed_media_addr() else {
            return;
        };
        for _ in 0..n {
            let Some(forwarder) = session.forwarders.get_mut(slot) else {
                return;
            };
            if !forwarder.pad_header(&mut self.scratch) {
                return;
            }
            let batch = self.senders.batch_for(viewer);
            let sealed = seal_padding(batch, session, slot, &self.scratch, PADDING, to, now);
            let Some(len) = sealed else {
                return;
            };
            if let Some(d) = session.downlink.as_deref_mut() {
                d.padding.0 += 1;
                d.padding.1 += len as u64;
            }
            session.sent.1 += len as u64;
            self.tally.padding_packets += 1;
            self.tally.padding_bytes += len as u64;
        }
    }
}
