//! Active speaker and last-N selection for one multi-party room: a pure policy over audio levels.
//!
//! [`Speakers`] owns, per publishing participant, a smoothed loudness built from the RFC 6464
//! audio-level header extension, the order in which participants joined, and the order in which
//! they last took the floor. From that it decides who the active speaker is
//! ([`Speakers::update`]), which participants fill a viewer's video slots (most recently active
//! speakers first, [`Speakers::video_order`]) and audio slots (loudest first,
//! [`Speakers::audio_order`]). [`assign_slots`] then maps a chosen set onto a viewer's slots
//! without ever moving a source from one slot to another. Every choice has hysteresis so it
//! does not flap.
//!
//! It must never do I/O, take a lock, read a clock (time is an argument), panic on what a peer
//! sent, or allocate on the per-packet call ([`Speakers::observe`]). It does not know about
//! tracks or slots' media: callers pass participant keys and filters.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Time constant of the loudness smoothing: a 20 ms packet moves it by 20 / (300 + 20) ≈ 6%.
const SMOOTHING: Duration = Duration::from_millis(300);
/// Weight given to the first packet after a silence (the usual Opus packet duration).
const NOMINAL_PACKET: Duration = Duration::from_millis(20);
/// Gaps longer than this weigh the same (keeps the fixed-point arithmetic far from overflow).
const MAX_WEIGHT_GAP: Duration = Duration::from_secs(60);
/// Fixed-point scale of the smoothed loudness.
const SCALE: u32 = 256;
/// Loudness of the loudest packet (level 0 dBov).
const MAX_LOUDNESS: u8 = 127;

/// Tuning of the speaker policy. Loudness is `127 - level`: 0 is silence, 127 is 0 dBov.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpeakerConfig {
    /// Smoothed loudness above which a participant counts as speaking.
    pub speaking_threshold: u8,
    /// A challenger must be at least this much louder than a still-speaking active speaker.
    pub switch_margin: u8,
    /// A challenger must lead continuously this long before it takes the floor.
    pub switch_after: Duration,
    /// The active speaker keeps the floor at least this long.
    pub min_hold: Duration,
    /// No audio packet for this long means silent (loudness 0).
    pub silence_after: Duration,
    /// Loudness bonus for participants already in a viewer's audio set.
    pub audio_hysteresis: u8,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        Self {
            speaking_threshold: MAX_LOUDNESS - 60,
            switch_margin: 8,
            switch_after: Duration::from_millis(600),
            min_hold: Duration::from_millis(1500),
            silence_after: Duration::from_millis(600),
            audio_hysteresis: 12,
        }
    }
}

/// What the policy keeps about one publishing participant.
#[derive(Clone, Copy, Debug)]
struct Entry {
    joined_at: Instant,
    /// Join counter: breaks ties between participants that joined at the same instant.
    join_seq: u64,
    /// Floor counter value when this participant last took the floor; `None` = never.
    floor_seq: Option<u64>,
    /// Smoothed loudness × [`SCALE`].
    smoothed: u32,
    last_packet: Option<Instant>,
}

/// Priority for video (and audio ties); smaller is first: the active speaker, then the most
/// recent floor holders, then join order.
type Rank = (bool, Reverse<Option<u64>>, Instant, u64);

/// The speaker policy of one room.
#[derive(Clone, Debug)]
pub struct Speakers {
    config: SpeakerConfig,
    entries: HashMap<u64, Entry>,
    next_join: u64,
    next_floor: u64,
    /// The active speaker and since when it holds the floor.
    active: Option<(u64, Instant)>,
    /// The challenger currently leading and since when, continuously.
    challenger: Option<(u64, Instant)>,
}

impl Speakers {
    /// An empty room.
    pub fn new(config: SpeakerConfig) -> Self {
        Self {
            config,
            entries: HashMap::new(),
            next_join: 0,
            next_floor: 0,
            active: None,
            challenger: None,
        }
    }

    /// A participant that publishes joined (order of joining breaks ties: earlier first).
    /// Adding a participant that is already known changes nothing.
    pub fn add(&mut self, who: u64, now: Instant) {
        if self.entries.contains_key(&who) {
            return;
        }
        let entry = Entry {
            joined_at: now,
            join_seq: self.next_join,
            floor_seq: None,
            smoothed: 0,
            last_packet: None,
        };
        self.entries.insert(who, entry);
        self.next_join += 1;
    }

    /// A participant left. If it held the floor, the floor is vacant until the next
    /// [`update`](Self::update) finds someone speaking.
    pub fn remove(&mut self, who: u64) {
        self.entries.remove(&who);
        self.active = self.active.filter(|&(w, _)| w != who);
        self.challenger = self.challenger.filter(|&(w, _)| w != who);
    }

    /// One audio packet's RFC 6464 level (0..=127, -dBov). The extension's byte can be passed
    /// as is: the V bit is ignored. Called per audio packet: O(1), no allocation. Unknown
    /// participants are ignored.
    pub fn observe(&mut self, who: u64, level: u8, now: Instant) {
        let silence_after = self.config.silence_after;
        let Some(entry) = self.entries.get_mut(&who) else {
            return;
        };
        let sample = u32::from(MAX_LOUDNESS - (level & 0x7f)) * SCALE;
        // A packet after a silent gap starts from silence; otherwise its weight is the time
        // since the previous packet (an out-of-order `now` weighs nothing).
        let (from, gap) = match entry.last_packet {
            Some(last) if now.saturating_duration_since(last) < silence_after => {
                (entry.smoothed, now.saturating_duration_since(last))
            }
            _ => (0, NOMINAL_PACKET),
        };
        let gap = micros(gap.min(MAX_WEIGHT_GAP));
        let tau = micros(SMOOTHING);
        let step = (i64::from(sample) - i64::from(from)) * gap / (tau + gap).max(1);
        entry.smoothed = u32::try_from(i64::from(from) + step).unwrap_or(0);
        entry.last_packet = Some(entry.last_packet.map_or(now, |last| last.max(now)));
    }

    /// Re-evaluates the active speaker (call periodically, e.g. every 250 ms). Returns
    /// `Some(new speaker)` when it changed.
    ///
    /// The candidate is the loudest participant above `speaking_threshold` (ties: the current
    /// speaker, then recent speakers, then join order). With no current speaker it takes the
    /// floor at once. Otherwise it leads while the current speaker is not speaking or it is
    /// `switch_margin` louder; it takes the floor once it has led continuously for
    /// `switch_after` and the current speaker has held the floor for `min_hold`.
    pub fn update(&mut self, now: Instant) -> Option<u64> {
        let cfg = self.config;
        let candidate = self
            .entries
            .iter()
            .map(|(&who, e)| (who, self.level(e, now), self.rank_of(who, e)))
            .filter(|&(_, level, _)| level > cfg.speaking_threshold)
            .min_by_key(|&(_, level, rank)| (Reverse(level), rank));
        let Some((candidate, level, _)) = candidate else {
            self.challenger = None;
            return None;
        };
        let Some((current, since)) = self.active else {
            return Some(self.take_floor(candidate, now));
        };
        if candidate == current {
            self.challenger = None;
            return None;
        }
        let current_level = self.loudness(current, now);
        let leads = current_level <= cfg.speaking_threshold
            || level >= current_level.saturating_add(cfg.switch_margin);
        if !leads {
            self.challenger = None;
            return None;
        }
        let lead_since = match self.challenger {
            Some((who, t)) if who == candidate => t,
            _ => {
                self.challenger = Some((candidate, now));
                now
            }
        };
        let held = now.saturating_duration_since(since) >= cfg.min_hold;
        let led = now.saturating_duration_since(lead_since) >= cfg.switch_after;
        (held && led).then(|| self.take_floor(candidate, now))
    }

    /// The active speaker, if anyone has the floor.
    pub fn active(&self) -> Option<u64> {
        self.active.map(|(who, _)| who)
    }

    /// Smoothed loudness 0..=127 (0 when silent, unknown, or no packet for `silence_after`).
    pub fn loudness(&self, who: u64, now: Instant) -> u8 {
        self.entries.get(&who).map_or(0, |e| self.level(e, now))
    }

    /// Participants ordered for VIDEO slots: the active speaker first, then those who held the
    /// floor earlier (most recent first), then those who never did, in join order. `exclude` is
    /// the viewer's own participant; `eligible` filters (e.g. has video and is not stalled).
    /// Writes at most `n` into `out`, which is cleared first.
    pub fn video_order(
        &self,
        exclude: Option<u64>,
        eligible: impl Fn(u64) -> bool,
        n: usize,
        out: &mut Vec<u64>,
    ) {
        self.collect(exclude, eligible, out);
        out.sort_unstable_by_key(|&who| self.rank(who));
        out.truncate(n);
    }

    /// Participants for AUDIO slots: the loudest `n` by smoothed loudness, members of
    /// `current` counting `audio_hysteresis` louder; ties follow the video order (recent
    /// speakers first, then join order). Same conventions as
    /// [`video_order`](Self::video_order).
    pub fn audio_order(
        &self,
        exclude: Option<u64>,
        eligible: impl Fn(u64) -> bool,
        current: &[u64],
        n: usize,
        now: Instant,
        out: &mut Vec<u64>,
    ) {
        self.collect(exclude, eligible, out);
        out.sort_unstable_by_key(|&who| {
            let bonus = if current.contains(&who) {
                self.config.audio_hysteresis
            } else {
                0
            };
            let effective = u16::from(self.loudness(who, now)) + u16::from(bonus);
            (Reverse(effective), self.rank(who))
        });
        out.truncate(n);
    }

    fn collect(&self, exclude: Option<u64>, eligible: impl Fn(u64) -> bool, out: &mut Vec<u64>) {
        out.clear();
        let keys = self.entries.keys().copied();
        out.extend(keys.filter(|&who| Some(who) != exclude && eligible(who)));
    }

    fn take_floor(&mut self, who: u64, now: Instant) -> u64 {
        if let Some(entry) = self.entries.get_mut(&who) {
            entry.floor_seq = Some(self.next_floor);
            self.next_floor += 1;
        }
        self.active = Some((who, now));
        self.challenger = None;
        who
    }

    fn level(&self, entry: &Entry, now: Instant) -> u8 {
        match entry.last_packet {
            Some(last) if now.saturating_duration_since(last) < self.config.silence_after => {
                let rounded = (entry.smoothed + SCALE / 2) / SCALE;
                u8::try_from(rounded).map_or(MAX_LOUDNESS, |l| l.min(MAX_LOUDNESS))
            }
            _ => 0,
        }
    }

    fn rank_of(&self, who: u64, entry: &Entry) -> Rank {
        (
            self.active() != Some(who),
            Reverse(entry.floor_seq),
            entry.joined_at,
            entry.join_seq,
        )
    }

    /// Rank of a key; unknown keys (never produced by `collect`) sort last.
    fn rank(&self, who: u64) -> (bool, Option<Rank>) {
        match self.entries.get(&who) {
            Some(entry) => (false, Some(self.rank_of(who, entry))),
            None => (true, None),
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Stable slot assignment. `current[i]` is slot i's source; `desired` is the set to show, in
/// priority order (only its first `current.len()` distinct members count). Slots whose source
/// is desired keep it; the other slots take the desired members not yet shown, in priority
/// order; slots left over become `None`. Never moves a source from one slot to another, and
/// shows a source at most once. Writes into `out` (cleared first).
pub fn assign_slots(current: &[Option<u64>], desired: &[u64], out: &mut Vec<Option<u64>>) {
    out.clear();
    let slots = current.len();
    let mut end = 0;
    let mut distinct = 0;
    for (i, who) in desired.iter().enumerate() {
        if distinct == slots {
            break;
        }
        if !desired[..i].contains(who) {
            distinct += 1;
        }
        end = i + 1;
    }
    let wanted = &desired[..end];
    for source in current {
        let keep = source.filter(|s| wanted.contains(s) && !out.contains(&Some(*s)));
        out.push(keep);
    }
    for &who in wanted {
        if out.contains(&Some(who)) {
            continue;
        }
        match out.iter_mut().find(|slot| slot.is_none()) {
            Some(free) => *free = Some(who),
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 1;
    const B: u64 = 2;
    const C: u64 = 3;
    const D: u64 = 4;
    const E: u64 = 5;
    const F: u64 = 6;
    const SIX: &[u64] = &[A, B, C, D, E, F];
    const DEFAULT: SpeakerConfig = SpeakerConfig {
        speaking_threshold: 67,
        switch_margin: 8,
        switch_after: Duration::from_millis(600),
        min_hold: Duration::from_millis(1500),
        silence_after: Duration::from_millis(600),
        audio_hysteresis: 12,
    };

    /// One line of a room script; times in ms from the start. Outside any `Talk`/`Mute` line
    /// a participant sends silence (level 127).
    #[derive(Clone, Copy)]
    enum Step {
        /// (who, from, to, level): sends `level` every 20 ms during [from, to).
        Talk(u64, u64, u64, u8),
        /// (who, from, to): sends no packets at all during [from, to).
        Mute(u64, u64, u64),
        /// (who, at): leaves the room.
        Leave(u64, u64),
    }
    use Step::{Leave, Mute, Talk};

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Runs a script for six participants (A..F, joined in that order) with 20 ms packets and
    /// an update every 250 ms. Returns the policy, the start and the floor changes (ms, who).
    fn simulate(config: SpeakerConfig, script: &[Step]) -> (Speakers, Instant, Vec<(u64, u64)>) {
        let end = script.iter().map(|s| match *s {
            Talk(_, _, to, _) | Mute(_, _, to) | Leave(_, to) => to,
        });
        let t0 = Instant::now();
        let mut s = Speakers::new(config);
        for &w in SIX {
            s.add(w, t0);
        }
        let mut log = Vec::new();
        for t in (0..end.max().unwrap_or(0)).step_by(10) {
            let now = ms(t0, t);
            let leaving = script.iter().filter_map(|step| match *step {
                Leave(w, at) if at == t => Some(w),
                _ => None,
            });
            for w in leaving {
                s.remove(w);
                assert_ne!(s.active(), Some(w), "{w} left at {t} but holds the floor");
            }
            for &w in SIX.iter().filter(|_| t % 20 == 0) {
                let level = script.iter().rev().find_map(|step| match *step {
                    Talk(x, from, to, level) if x == w && from <= t && t < to => Some(Some(level)),
                    Mute(x, from, to) if x == w && from <= t && t < to => Some(None),
                    _ => None,
                });
                if let Some(level) = level.unwrap_or(Some(127)) {
                    s.observe(w, level, now);
                }
            }
            if let Some(new) = (t % 250 == 0).then(|| s.update(now)).flatten() {
                assert_eq!(s.active(), Some(new));
                log.push((t, new));
            }
        }
        (s, t0, log)
    }

    #[test]
    fn default_config_matches_the_documented_values() {
        assert_eq!(SpeakerConfig::default(), DEFAULT);
    }

    #[test]
    fn active_speaker_scenarios() {
        let no_wait = SpeakerConfig {
            switch_after: Duration::ZERO,
            ..DEFAULT
        };
        let no_hold = SpeakerConfig {
            min_hold: Duration::ZERO,
            ..no_wait
        };
        // (name, config, script, each floor change as (who, earliest ms, latest ms))
        type Row<'a> = (&'a str, SpeakerConfig, &'a [Step], &'a [(u64, u64, u64)]);
        #[rustfmt::skip]
        let table: &[Row] = &[
            ("a lone speaker takes the empty floor at once", DEFAULT,
                &[Talk(A, 0, 3000, 30)],
                &[(A, 250, 500)]),
            ("a louder challenger waits for switch_after", DEFAULT,
                &[Talk(A, 0, 6000, 30), Talk(B, 3000, 6000, 0)],
                &[(A, 250, 500), (B, 3600, 4500)]),
            ("an immediate leader still waits for min_hold", no_wait,
                &[Talk(A, 0, 4000, 30), Talk(B, 750, 4000, 0)],
                &[(A, 500, 500), (B, 2000, 2000)]),
            ("without min_hold the same leader switches earlier", no_hold,
                &[Talk(A, 0, 4000, 30), Talk(B, 750, 4000, 0)],
                &[(A, 500, 500), (B, 1000, 1750)]),
            ("1 s bursts of louder participants never switch (no flapping)", DEFAULT,
                &[Talk(A, 0, 9000, 30), Talk(B, 2000, 3000, 0), Talk(B, 4000, 5000, 0),
                  Talk(C, 6000, 7000, 0), Talk(B, 7000, 8000, 0)],
                &[(A, 250, 500)]),
            ("an interrupted lead starts over", DEFAULT,
                &[Talk(A, 0, 7000, 30), Talk(B, 3000, 3900, 0), Talk(B, 3900, 4500, 28),
                  Talk(B, 4500, 7000, 0)],
                &[(A, 250, 500), (B, 5250, 5500)]),
            ("a challenger less than switch_margin louder never switches", DEFAULT,
                &[Talk(A, 0, 8000, 30), Talk(B, 2000, 8000, 25)],
                &[(A, 250, 500)]),
            ("the speaker goes quiet and another speaks: switch", DEFAULT,
                &[Talk(A, 0, 3000, 30), Talk(B, 3000, 7000, 30)],
                &[(A, 250, 500), (B, 3600, 4250)]),
            ("a muted speaker (no packets) counts until silence_after, then switch", DEFAULT,
                &[Talk(A, 0, 3000, 30), Mute(A, 3000, 7000), Talk(B, 3000, 7000, 30)],
                &[(A, 250, 500), (B, 4200, 4500)]),
            ("a silent speaker keeps the floor while nobody else speaks", DEFAULT,
                &[Talk(A, 0, 2000, 30), Mute(B, 0, 6000)],
                &[(A, 250, 500)]),
            ("equal speakers: the earlier joiner wins; its leaving hands over at once", DEFAULT,
                &[Talk(A, 0, 6000, 30), Talk(B, 0, 6000, 30), Leave(A, 3000)],
                &[(A, 250, 500), (B, 3000, 3000)]),
            ("the speaker leaves and nobody else speaks: the floor stays empty", DEFAULT,
                &[Talk(A, 0, 6000, 30), Leave(A, 3000)],
                &[(A, 250, 500)]),
            ("quiet talkers under the threshold never take the floor", DEFAULT,
                &[Talk(C, 0, 5000, 80), Talk(D, 0, 5000, 75), Mute(F, 0, 5000)],
                &[]),
            ("taking turns, a short interjection does not steal the floor", DEFAULT,
                &[Talk(A, 0, 3000, 30), Talk(C, 3000, 6000, 20), Talk(F, 6000, 9000, 35),
                  Talk(B, 6000, 6400, 0)],
                &[(A, 250, 500), (C, 3600, 4250), (F, 6600, 7500)]),
        ];
        for &(name, config, script, switches) in table {
            let (_, _, log) = simulate(config, script);
            assert_eq!(log.len(), switches.len(), "{name}: log {log:?}");
            for (&(t, got), &(want, lo, hi)) in log.iter().zip(switches) {
                assert_eq!(got, want, "{name}: log {log:?}");
                assert!(lo <= t && t <= hi, "{name}: {got} at {t} ms, log {log:?}");
            }
        }
    }

    #[test]
    fn loudness_smoothing() {
        let steady: Vec<(u64, u8)> = (0..100).map(|i| (i * 20, 30)).collect();
        let v_bit: Vec<(u64, u8)> = (0..100).map(|i| (i * 20, 0x80 | 30)).collect();
        let decay: Vec<(u64, u8)> = (0..200)
            .map(|i| (i * 20, if i < 100 { 30 } else { 127 }))
            .collect();
        let mut resumed = steady.clone();
        resumed.push((2980, 30));
        // (name, packets as (ms, level), query ms, expected loudness)
        type Row<'a> = (&'a str, &'a [(u64, u8)], u64, u8);
        #[rustfmt::skip]
        let table: &[Row] = &[
            ("no packets: 0", &[], 0, 0),
            ("one loud packet moves ~6%", &[(0, 0)], 0, 8),
            ("two 20 ms packets", &[(0, 0), (20, 0)], 20, 15),
            ("a 300 ms gap weighs half", &[(0, 0), (300, 0)], 300, 67),
            ("steady level 30 converges to 97", &steady, 1980, 97),
            ("the V bit is ignored", &v_bit, 1980, 97),
            ("still fresh just before silence_after", &steady, 2570, 97),
            ("stale at silence_after: 0", &steady, 2580, 0),
            ("silence packets decay: 1 s later", &decay, 2980, 4),
            ("silence packets decay: 2 s later", &decay, 3980, 0),
            ("after a stale gap it restarts from silence", &resumed, 2980, 6),
        ];
        for &(name, packets, at, want) in table {
            let t0 = Instant::now();
            let mut s = Speakers::new(DEFAULT);
            s.add(A, t0);
            for &(t, level) in packets.iter().filter(|p| p.0 <= at) {
                s.observe(A, level, ms(t0, t));
            }
            assert_eq!(s.loudness(A, ms(t0, at)), want, "{name}");
        }
    }

    #[test]
    fn unknown_and_repeated_participants_are_harmless() {
        let t0 = Instant::now();
        let mut s = Speakers::new(DEFAULT);
        s.observe(99, 0, t0);
        s.remove(99);
        assert_eq!(s.update(t0), None);
        assert_eq!(s.loudness(99, t0), 0);
        let mut out = vec![7];
        s.video_order(None, |_| true, 4, &mut out);
        assert!(out.is_empty());

        s.add(A, t0);
        s.observe(A, 0, ms(t0, 20));
        s.add(A, ms(t0, 30));
        s.observe(A, 0, ms(t0, 5)); // out of order: weighs nothing
        assert_eq!(s.loudness(A, ms(t0, 30)), 8, "re-adding keeps the state");
    }

    /// (name, exclude, eligible, current, n, expected)
    #[rustfmt::skip]
    type Pick<'a> = (&'a str, Option<u64>, &'a dyn Fn(u64) -> bool, &'a [u64], usize, &'a [u64]);

    #[test]
    fn video_order_is_most_recent_speaker_first() {
        let script = [
            Talk(A, 0, 2000, 30),
            Talk(C, 2000, 5000, 30),
            Talk(B, 5000, 8000, 30),
        ];
        let (mut s, _, _) = simulate(DEFAULT, &script);
        assert_eq!(s.active(), Some(B));
        let (all, not_c, not_e) = (|_| true, |w| w != C, |w| w != E);
        #[rustfmt::skip]
        let table: &[Pick] = &[
            ("MRU, then join order", None, &all, &[], 10, &[B, C, A, D, E, F]),
            ("the viewer is never included", Some(B), &all, &[], 10, &[C, A, D, E, F]),
            ("eligibility filter", None, &not_c, &[], 10, &[B, A, D, E, F]),
            ("n smaller than participants", None, &all, &[], 3, &[B, C, A]),
            ("exclude, filter and n together", Some(D), &not_e, &[], 4, &[B, C, A, F]),
            ("n = 0", None, &all, &[], 0, &[]),
        ];
        let mut out = vec![99, 98];
        for &(name, exclude, eligible, _, n, want) in table {
            s.video_order(exclude, eligible, n, &mut out);
            assert_eq!(out, want, "{name}");
        }
        s.remove(B);
        s.video_order(None, all, 10, &mut out);
        assert_eq!(
            out,
            [C, A, D, E, F],
            "the speaker left: the floor is empty, MRU stays"
        );

        let t0 = Instant::now();
        let mut fresh = Speakers::new(DEFAULT);
        for (t, w) in [(0, C), (10, A), (20, B), (0, D)] {
            fresh.add(w, ms(t0, t));
        }
        fresh.video_order(None, all, 10, &mut out);
        assert_eq!(
            out,
            [C, D, A, B],
            "nobody spoke: join time, then join call order"
        );
    }

    #[test]
    fn audio_order_is_loudest_with_hysteresis() {
        // F speaks first; from 2 s E (loudest) takes the floor with A, B, C under it.
        let script = [
            Talk(F, 0, 2000, 30),
            Talk(A, 2000, 5000, 30),
            Talk(B, 2000, 5000, 25),
            Talk(C, 2000, 5000, 60),
            Talk(E, 2000, 5000, 20),
        ];
        let (s, t0, log) = simulate(DEFAULT, &script);
        assert_eq!(log.iter().map(|l| l.1).collect::<Vec<_>>(), [F, E]);
        let now = ms(t0, 4990);
        let got: Vec<u8> = SIX.iter().map(|&w| s.loudness(w, now)).collect();
        assert_eq!(got, [97, 102, 67, 0, 107, 0]);
        let (all, not_b, silent) = (|_| true, |w| w != B, |w| w == D || w == F);
        #[rustfmt::skip]
        let table: &[Pick] = &[
            ("the loudest two", None, &all, &[], 2, &[E, B]),
            ("a member keeps its slot against a slightly louder one", None, &all, &[A], 1, &[A]),
            ("but not against a much louder one", None, &all, &[C], 1, &[E]),
            ("members are ranked with their bonus", None, &all, &[A, B], 2, &[B, A]),
            ("the viewer is never included", Some(E), &all, &[], 2, &[B, A]),
            ("eligibility filter", None, &not_b, &[], 3, &[E, A, C]),
            ("n larger than participants", None, &all, &[], 10, &[E, B, A, C, F, D]),
            ("ties: recent speaker before earlier joiner", None, &silent, &[], 2, &[F, D]),
            ("a silent member keeps its slot among the silent", None, &silent, &[D], 1, &[D]),
        ];
        let mut out = vec![99];
        for &(name, exclude, eligible, current, n, want) in table {
            s.audio_order(exclude, eligible, current, n, now, &mut out);
            assert_eq!(out, want, "{name}");
        }
    }

    #[test]
    fn slot_assignment_is_stable() {
        let (a, b, c, d) = (Some(A), Some(B), Some(C), Some(D));
        // (name, current slots, desired, expected slots)
        type Row<'a> = (&'a str, &'a [Option<u64>], &'a [u64], &'a [Option<u64>]);
        #[rustfmt::skip]
        let table: &[Row] = &[
            ("fills empty slots in priority order", &[None, None, None], &[A, B], &[a, b, None]),
            ("keeps sources, never swaps", &[b, a], &[A, B], &[b, a]),
            ("replaces a departed source in place", &[a, b, c], &[C, D, A], &[a, d, c]),
            ("more slots than desired", &[a, None, c, None], &[C], &[None, None, c, None]),
            ("only the top distinct desired fit", &[a, b], &[C, D, A], &[c, d]),
            ("duplicates in desired are ignored", &[None, None, None], &[A, A, B], &[a, b, None]),
            ("duplicates count once for the limit", &[None, None], &[A, A, B], &[a, b]),
            ("a source twice in current is shown once", &[a, a], &[A, B], &[a, b]),
            ("no slots", &[], &[A], &[]),
            ("nothing desired", &[a, b], &[], &[None, None]),
        ];
        let mut out = vec![Some(99)];
        for &(name, current, desired, want) in table {
            assign_slots(current, desired, &mut out);
            assert_eq!(out, want, "{name}");
        }
    }
}
