//! Which layer of a track one viewer slot should receive, and when to switch to it.
//!
//! [`choose`] is a pure decision over the track's layers as they are now ([`LayerSet`]), the
//! slot's [`Preferences`] (set by the viewer through the WHEP layer endpoint or by its tile
//! size): no limits means the highest live layer. A
//! switch takes effect only on a keyframe of the target layer, so [`Switch`] follows one
//! slot's attempt: start it (the engine binds the target as pending and asks for a keyframe),
//! cancel it when the target changes back, or give up after [`KEYFRAME_WAIT`] and stay where
//! the slot is, not trying that layer again for [`RETRY_AFTER`] while the current one plays.

use super::layers::LayerSet;
use std::time::{Duration, Instant};

/// The highest VP8 temporal layer id (Chromium sends three temporal layers: 0, 1, 2).
pub const MAX_TEMPORAL: u8 = 2;

/// A switch whose keyframe has not come by then is abandoned.
pub const KEYFRAME_WAIT: Duration = Duration::from_millis(2500);

/// A layer whose switch was abandoned is not tried again this soon, while the slot's
/// current layer plays.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// A viewer's choice of one layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pin {
    /// The layer with this rid.
    Rid(String),
    /// The layer with this spatial rank (0 the smallest).
    Spatial(u8),
}

/// What a viewer asked of one slot; all `None` is automatic (the highest layer).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preferences {
    /// One layer, whatever else.
    pub pin: Option<Pin>,
    /// One temporal layer (the most it gets).
    pub temporal: Option<u8>,
    /// The highest spatial rank allowed.
    pub max_spatial: Option<u8>,
    /// The highest temporal layer allowed.
    pub max_temporal: Option<u8>,
    /// The widest picture wanted.
    pub max_width: Option<u32>,
    /// The tallest picture wanted.
    pub max_height: Option<u32>,
}

/// Why the chosen layer is not simply the highest one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No constraint: the highest live layer.
    Highest,
    /// The slot's limits (spatial, width, height).
    Limit,
    /// The viewer pinned a layer.
    Pin,
}

/// The layer a slot should carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// Layer index in the track, `None` when no layer is live.
    pub layer: Option<usize>,
    /// The highest temporal layer to forward.
    pub temporal: u8,
    /// What decided it.
    pub reason: Reason,
}

fn fits(prefs: &Preferences, spatial: u8, size: (u16, u16)) -> bool {
    let (w, h) = (u32::from(size.0), u32::from(size.1));
    let known = w > 0 && h > 0;
    prefs.max_spatial.is_none_or(|m| spatial <= m)
        && prefs.max_width.is_none_or(|m| !known || w <= m)
        && prefs.max_height.is_none_or(|m| !known || h <= m)
}

/// The layer and temporal layer a slot should receive.
///
/// Only live layers are chosen. A pinned layer that is not live gives way to the nearest
/// live one below it, else above. Limits pick the highest live layer within them, or the
/// smallest live layer when none fits. (What the viewer's downlink carries lowers it further:
/// `forward::allocate`.)
pub fn choose(layers: &LayerSet, prefs: &Preferences) -> Choice {
    let temporal = prefs
        .temporal
        .or(prefs.max_temporal)
        .unwrap_or(MAX_TEMPORAL)
        .min(MAX_TEMPORAL);
    let all = layers.layers();
    // Live layers, smallest first.
    let mut live: Vec<(u8, usize)> = all
        .iter()
        .enumerate()
        .filter(|(_, l)| l.live)
        .map(|(i, l)| (l.spatial, i))
        .collect();
    live.sort_unstable();
    let Some(&(_, smallest)) = live.first() else {
        return Choice {
            layer: None,
            temporal,
            reason: Reason::Highest,
        };
    };
    let pinned = match &prefs.pin {
        Some(Pin::Rid(rid)) => layers.by_rid(rid).map(|i| all[i].spatial),
        Some(Pin::Spatial(s)) => Some(*s),
        None => None,
    };
    let (pick, reason) = match pinned {
        Some(want) => {
            let below = live.iter().rev().find(|(s, _)| *s <= want);
            let above = live.iter().find(|(s, _)| *s > want);
            (
                below.or(above).map(|(_, i)| *i).unwrap_or(smallest),
                Reason::Pin,
            )
        }
        None => {
            let highest = live.last().map(|(_, i)| *i).unwrap_or(smallest);
            let within = live
                .iter()
                .rev()
                .find(|(s, i)| fits(prefs, *s, all[*i].size))
                .map(|(_, i)| *i)
                .unwrap_or(smallest);
            let reason = if within == highest {
                Reason::Highest
            } else {
                Reason::Limit
            };
            (within, reason)
        }
    };
    Choice {
        layer: Some(pick),
        temporal,
        reason,
    }
}

/// What the engine should do about a slot's layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing changes.
    Keep,
    /// Bind this layer as pending and ask it for a keyframe.
    Start(usize),
    /// Drop the pending layer: the current one is wanted again.
    Cancel,
    /// The pending layer sent no keyframe in time: drop it and stay.
    GiveUp(usize),
}

/// One slot's switch in progress, and the layers it gave up on.
#[derive(Clone, Debug, Default)]
pub struct Switch {
    pending: Option<(usize, Instant)>,
    failed: [Option<Instant>; 4],
}

impl Switch {
    /// The layer being switched to, if any.
    pub fn pending(&self) -> Option<usize> {
        self.pending.map(|(l, _)| l)
    }

    /// Whether the slot has a switch in progress, or gave up on a layer recently enough
    /// that it will try again: either way it needs looking at on the next tick.
    pub fn unsettled(&self, now: Instant) -> bool {
        self.pending.is_some()
            || self
                .failed
                .iter()
                .flatten()
                .any(|t| now.saturating_duration_since(*t) <= RETRY_AFTER + Duration::from_secs(1))
    }

    /// Forgets everything (the slot changed track).
    pub fn reset(&mut self) {
        *self = Switch::default();
    }

    /// A slot bound to a new track starts on `layer`: it waits for that layer's keyframe
    /// like any switch.
    pub fn begin(&mut self, layer: usize, now: Instant) {
        *self = Switch::default();
        self.pending = Some((layer, now));
    }

    /// The switch landed: the pending layer now plays.
    pub fn landed(&mut self) {
        self.pending = None;
    }

    /// The next step for a slot playing `current` (a layer index, `None` before its first
    /// keyframe) whose choice is `target`; `current_live` says whether the current layer
    /// still sends.
    pub fn step(
        &mut self,
        current: Option<usize>,
        current_live: bool,
        target: Option<usize>,
        now: Instant,
    ) -> Step {
        let Some(target) = target else {
            return Step::Keep;
        };
        if Some(target) == current {
            return match self.pending.take() {
                Some(_) => Step::Cancel,
                None => Step::Keep,
            };
        }
        let playing = current.is_some() && current_live;
        if let Some((pending, since)) = self.pending {
            if pending == target {
                if playing && now.saturating_duration_since(since) > KEYFRAME_WAIT {
                    self.pending = None;
                    if let Some(f) = self.failed.get_mut(target) {
                        *f = Some(now);
                    }
                    return Step::GiveUp(target);
                }
                return Step::Keep;
            }
        }
        let failed_recently = self
            .failed
            .get(target)
            .copied()
            .flatten()
            .is_some_and(|t| now.saturating_duration_since(t) < RETRY_AFTER);
        if playing && failed_recently {
            return match self.pending.take() {
                Some(_) => Step::Cancel,
                None => Step::Keep,
            };
        }
        self.pending = Some((target, now));
        Step::Start(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three live layers: q 320x180 at 150 kbit/s, h 640x360 at 500, f 1280x720 at 1500.
    fn three(now: Instant) -> LayerSet {
        let mut set = LayerSet::new();
        for (i, (rid, size)) in [("q", (320, 180)), ("h", (640, 360)), ("f", (1280, 720))]
            .into_iter()
            .enumerate()
        {
            set.add(rid);
            set.on_packet(i, [18_750, 62_500, 187_500][i], true, Some(Some(size)), now);
        }
        set.tick(now + Duration::from_secs(1));
        set
    }

    fn prefs() -> Preferences {
        Preferences::default()
    }

    #[test]
    fn choices_by_limits_and_pins() {
        let now = Instant::now();
        let set = three(now);
        // (name, preferences, layer, temporal, reason)
        type Case = (&'static str, Preferences, Option<usize>, u8, Reason);
        let cases: Vec<Case> = vec![
            ("no limits", prefs(), Some(2), 2, Reason::Highest),
            (
                "max width 640",
                Preferences {
                    max_width: Some(640),
                    ..prefs()
                },
                Some(1),
                2,
                Reason::Limit,
            ),
            (
                "max height 200",
                Preferences {
                    max_height: Some(200),
                    ..prefs()
                },
                Some(0),
                2,
                Reason::Limit,
            ),
            (
                "too small for any: the smallest",
                Preferences {
                    max_width: Some(100),
                    ..prefs()
                },
                Some(0),
                2,
                Reason::Limit,
            ),
            (
                "max spatial 1, max temporal 0",
                Preferences {
                    max_spatial: Some(1),
                    max_temporal: Some(0),
                    ..prefs()
                },
                Some(1),
                0,
                Reason::Limit,
            ),
            (
                "pin by rid beats limits",
                Preferences {
                    pin: Some(Pin::Rid("q".into())),
                    max_width: Some(1280),
                    ..prefs()
                },
                Some(0),
                2,
                Reason::Pin,
            ),
            (
                "pin spatial 1, temporal 1",
                Preferences {
                    pin: Some(Pin::Spatial(1)),
                    temporal: Some(1),
                    ..prefs()
                },
                Some(1),
                1,
                Reason::Pin,
            ),
            (
                "absurd temporal is capped",
                Preferences {
                    max_temporal: Some(9),
                    ..prefs()
                },
                Some(2),
                2,
                Reason::Highest,
            ),
        ];
        for (name, p, layer, temporal, reason) in cases {
            let c = choose(&set, &p);
            assert_eq!(
                (c.layer, c.temporal, c.reason),
                (layer, temporal, reason),
                "{name}"
            );
        }
    }

    #[test]
    fn only_live_layers_are_chosen() {
        let now = Instant::now();
        let mut set = three(now);
        // f and q stop; h goes on.
        set.on_packet(1, 100, true, None, now + Duration::from_millis(1500));
        set.tick(now + Duration::from_millis(2100));
        let live: Vec<bool> = set.layers().iter().map(|l| l.live).collect();
        assert_eq!(live, vec![false, true, false]);
        assert_eq!(choose(&set, &prefs()).layer, Some(1));
        let pin_f = Preferences {
            pin: Some(Pin::Rid("f".into())),
            ..prefs()
        };
        assert_eq!(choose(&set, &pin_f).layer, Some(1), "nearest below");
        let pin_q = Preferences {
            pin: Some(Pin::Spatial(0)),
            ..prefs()
        };
        assert_eq!(choose(&set, &pin_q).layer, Some(1), "nearest above");
        set.tick(now + Duration::from_secs(5));
        assert_eq!(choose(&set, &prefs()).layer, None, "nothing live");
    }

    #[test]
    fn a_single_layer_track_is_always_that_layer() {
        let now = Instant::now();
        let mut set = LayerSet::new();
        set.add("");
        set.on_packet(0, 1000, true, Some(Some((1920, 1080))), now);
        let small = Preferences {
            max_width: Some(320),
            ..prefs()
        };
        assert_eq!(choose(&set, &small).layer, Some(0));
    }

    #[test]
    fn switches_start_wait_cancel_and_give_up() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut sw = Switch::default();
        // First layer of a fresh slot.
        assert_eq!(sw.step(None, false, Some(2), t0), Step::Start(2));
        assert_eq!(
            sw.step(None, false, Some(2), t0 + s(5)),
            Step::Keep,
            "no current: wait on"
        );
        sw.landed();
        assert_eq!(sw.step(Some(2), true, Some(2), t0 + s(5)), Step::Keep);
        // Down to 0, then back up before the keyframe came.
        assert_eq!(sw.step(Some(2), true, Some(0), t0 + s(6)), Step::Start(0));
        assert_eq!(sw.pending(), Some(0));
        assert_eq!(sw.step(Some(2), true, Some(2), t0 + s(6)), Step::Cancel);
        assert_eq!(sw.pending(), None);
        // To 1, whose keyframe never comes: give up and stay.
        assert_eq!(sw.step(Some(2), true, Some(1), t0 + s(7)), Step::Start(1));
        assert_eq!(sw.step(Some(2), true, Some(1), t0 + s(8)), Step::Keep);
        assert_eq!(sw.step(Some(2), true, Some(1), t0 + s(10)), Step::GiveUp(1));
        assert_eq!(
            sw.step(Some(2), true, Some(1), t0 + s(12)),
            Step::Keep,
            "backing off"
        );
        assert_eq!(
            sw.step(Some(2), true, Some(1), t0 + s(21)),
            Step::Start(1),
            "retried"
        );
        // A dead current layer never stops the slot from trying.
        sw.reset();
        assert_eq!(sw.step(Some(2), false, Some(0), t0), Step::Start(0));
        assert_eq!(sw.step(Some(2), false, Some(0), t0 + s(9)), Step::Keep);
        // Nothing live: keep what is there.
        assert_eq!(sw.step(Some(2), false, None, t0), Step::Keep);
    }
}
