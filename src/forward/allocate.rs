//! How one viewer's downlink estimate is shared over its video slots.
//!
//! Each slot offers [`Step`]s, cheapest first: its track's layers at each temporal layer,
//! within the slot's limits (the last step is the most the viewer asked for), as a
//! [`ladder`] that climbs temporal layers before spatial ones and never trades frame rate
//! for size. [`share`] fills
//! the estimate in rounds: every slot first gets its lowest step in priority order (the
//! active speaker's slot first; a slot whose lowest step does not fit is paused, though one
//! already playing keeps it down to [`KEEP_LOWEST`] of its cost), then slots
//! climb one step at a time, again in priority order, while the next step fits. Audio is
//! small and always sent: the caller takes it off the estimate first.
//!
//! [`allocate`] adds time: a slot goes down at once when its share falls below what it gets,
//! and up only once the estimate has covered the higher step for [`UP_HOLD`] (or
//! [`UP_HOLD_AFTER_DOWN`] within [`RECENT_DOWN`] of going down; [`PROBED_HOLD`] while a probe
//! proves the step with padding). When a slot could go
//! higher than it is, it says how much padding would prove its next step ([`probe_rate`]).

use std::time::{Duration, Instant};

/// The estimate must cover a higher step this long before a slot takes it.
pub const UP_HOLD: Duration = Duration::from_millis(1000);

/// The same, shortly after the slot went down.
pub const UP_HOLD_AFTER_DOWN: Duration = Duration::from_millis(3000);

/// The hold while a probe runs: its padding is what proves the higher step.
pub const PROBED_HOLD: Duration = Duration::from_millis(500);

/// How long after going down a slot is slower to go up.
pub const RECENT_DOWN: Duration = Duration::from_secs(10);

/// A slot playing its lowest step keeps it while its share covers this fraction of it.
pub const KEEP_LOWEST: (u64, u64) = (3, 4);

/// The smallest probe worth sending, in bits per second.
pub const MIN_PROBE: u64 = 200_000;

/// One step a slot can take: a layer at a temporal layer, and what it costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Layer index in the track.
    pub layer: usize,
    /// The layer's spatial rank (0 the smallest).
    pub spatial: u8,
    /// The highest temporal layer forwarded.
    pub temporal: u8,
    /// Bits per second.
    pub bitrate: u64,
}

/// What a slot gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// This step.
    Play(Step),
    /// No video: not even the lowest step fits.
    Paused,
}

/// One slot's allocation over time.
#[derive(Clone, Debug, Default)]
pub struct SlotState {
    target: Option<Target>,
    /// Since when the share has allowed more than the target.
    more_since: Option<Instant>,
    last_down: Option<Instant>,
}

impl SlotState {
    /// What the slot gets now (`None` before its first allocation).
    pub fn target(&self) -> Option<Target> {
        self.target
    }

    /// Forgets everything (the slot changed track).
    pub fn reset(&mut self) {
        *self = SlotState::default();
    }
}

/// The steps a slot climbs, from every (layer, temporal layer) it may have: cheapest first,
/// keeping only steps that lower neither the spatial nor the temporal layer of a cheaper
/// one. So the smallest layer offers its temporal layers (quarter, half, full frame rate),
/// and larger layers come at the full frame rate the slot allows.
pub fn ladder(mut candidates: Vec<Step>) -> Vec<Step> {
    candidates.sort_by_key(|s| (s.bitrate, s.spatial, s.temporal));
    let mut out: Vec<Step> = Vec::with_capacity(candidates.len());
    for c in candidates {
        let keeps = out
            .last()
            .is_none_or(|top| c.spatial >= top.spatial && c.temporal >= top.temporal && c != *top);
        if keeps {
            out.push(c);
        }
    }
    out
}

/// The step index each slot's share allows (`None`: paused), slots in priority order.
pub fn share(estimate: u64, slots: &[&[Step]]) -> Vec<Option<usize>> {
    share_keeping(estimate, slots, &[])
}

/// [`share`], where a slot whose `playing[i]` is true keeps its lowest step while the share
/// left covers [`KEEP_LOWEST`] of it: one overuse reading is no reason to stop its video.
pub fn share_keeping(estimate: u64, slots: &[&[Step]], playing: &[bool]) -> Vec<Option<usize>> {
    let mut left = estimate;
    let mut picks: Vec<Option<usize>> = slots
        .iter()
        .enumerate()
        .map(|(i, steps)| {
            let lowest = steps.first()?;
            let needed = if playing.get(i).copied().unwrap_or(false) {
                lowest.bitrate * KEEP_LOWEST.0 / KEEP_LOWEST.1
            } else {
                lowest.bitrate
            };
            (needed <= left).then(|| {
                left = left.saturating_sub(lowest.bitrate);
                0
            })
        })
        .collect();
    loop {
        let mut climbed = false;
        for (steps, pick) in slots.iter().zip(picks.iter_mut()) {
            let Some(i) = *pick else { continue };
            let Some(next) = steps.get(i + 1) else {
                continue;
            };
            let extra = next.bitrate.saturating_sub(steps[i].bitrate);
            if extra <= left {
                left -= extra;
                *pick = Some(i + 1);
                climbed = true;
            }
        }
        if !climbed {
            return picks;
        }
    }
}

/// How far `a` is above `b`: steps compare by cost; paused is below everything.
fn cost(target: Target) -> Option<u64> {
    match target {
        Target::Play(s) => Some(s.bitrate),
        Target::Paused => None,
    }
}

/// Updates each slot's target from the estimate (bits per second for video) and returns the
/// probe rate that would prove the next step up, when one is worth sending. `probed`: a
/// probe runs, so an estimate above the next step was measured with traffic at that rate,
/// and the step is taken after [`PROBED_HOLD`] only.
pub fn allocate(
    estimate: u64,
    slots: &[&[Step]],
    states: &mut [SlotState],
    probed: bool,
    now: Instant,
) -> Option<u64> {
    let playing: Vec<bool> = states
        .iter()
        .map(|s| matches!(s.target, Some(Target::Play(_))))
        .collect();
    let picks = share_keeping(estimate, slots, &playing);
    for ((steps, pick), state) in slots.iter().zip(&picks).zip(states.iter_mut()) {
        if steps.is_empty() {
            state.more_since = None;
            continue;
        }
        let wanted = match pick {
            Some(i) => Target::Play(steps[*i]),
            None => Target::Paused,
        };
        let current = state.target.map(|t| match t {
            // The track's layers changed: the same layer, or the nearest cheaper step.
            Target::Play(s) => steps
                .iter()
                .rev()
                .find(|c| (c.layer, c.temporal) == (s.layer, s.temporal))
                .or_else(|| steps.iter().rev().find(|c| c.bitrate <= s.bitrate))
                .map_or(Target::Paused, |c| Target::Play(*c)),
            Target::Paused => Target::Paused,
        });
        let Some(current) = current else {
            state.target = Some(wanted);
            continue;
        };
        let (have, want) = (cost(current), cost(wanted));
        if want < have {
            state.target = Some(wanted);
            state.last_down = Some(now);
            state.more_since = None;
        } else if want > have {
            let since = *state.more_since.get_or_insert(now);
            let hold = if probed {
                PROBED_HOLD
            } else if state
                .last_down
                .is_some_and(|t| now.saturating_duration_since(t) < RECENT_DOWN)
            {
                UP_HOLD_AFTER_DOWN
            } else {
                UP_HOLD
            };
            if now.saturating_duration_since(since) >= hold {
                state.target = Some(wanted);
                state.more_since = None;
            } else {
                state.target = Some(current);
            }
        } else {
            state.target = Some(current);
            state.more_since = None;
        }
    }
    let at: Vec<Option<usize>> = slots
        .iter()
        .zip(states.iter())
        .map(|(steps, state)| match state.target {
            Some(Target::Play(s)) => steps.iter().position(|c| *c == s),
            _ => None,
        })
        .collect();
    probe_rate(slots, &at)
}

/// The padding rate that would prove the next step of the first slot (in priority order)
/// below the most its limits allow, from where it is (`at`: its step index, `None` when
/// paused): 120 % of the step's extra cost, at least [`MIN_PROBE`]. A slot waiting out its
/// hold keeps asking, so the padding holds the estimate up until the slot goes up.
pub fn probe_rate(slots: &[&[Step]], at: &[Option<usize>]) -> Option<u64> {
    slots.iter().zip(at).find_map(|(steps, at)| {
        let extra = match at {
            Some(i) => steps.get(i + 1)?.bitrate.saturating_sub(steps[*i].bitrate),
            None => steps.first()?.bitrate,
        };
        Some((extra + extra / 5).max(MIN_PROBE))
    })
}

#[cfg(test)]
mod tests;
