//! When one viewer's connection sends padding to prove it can carry more.
//!
//! An estimate rests on what is sent, so it cannot show room for a layer that is not sent.
//! When the allocator asks ([`crate::forward::allocate::probe_rate`]), a [`Prober`] adds
//! padding-only packets at that rate for up to [`PROBE_FOR`], at the viewer's frame
//! boundaries (so no frame is split). The probe succeeds when the allocator stops asking
//! (the estimate grew to the next step), when the estimate grew by a quarter, or when its
//! time is up and the estimate grew by a tenth (a step too large for one probe is climbed in
//! several, each from the estimate the last one proved); it fails when the estimate
//! falls, or does not grow, and the next try waits [`FIRST_BACKOFF`], 1.5 times longer after
//! each failure up to [`MAX_BACKOFF`].

use std::time::{Duration, Instant};

/// The longest one probe lasts.
pub const PROBE_FOR: Duration = Duration::from_millis(1000);

/// The wait after a first failed probe.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(3);

/// The longest wait between probes.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long after a probe ended feedback may still be about its padding.
pub const PROBE_ECHO: Duration = Duration::from_millis(500);

/// Padding bytes per probe packet (RTP padding holds at most 255).
pub const PADDING: usize = 255;

/// The most padding packets sent at one frame boundary.
pub const MAX_PER_BOUNDARY: usize = 64;

/// One viewer connection's probing.
#[derive(Clone, Debug)]
pub struct Prober {
    /// Padding bits per second while probing, 0 when not.
    rate: u64,
    until: Option<Instant>,
    started_at_estimate: u64,
    next_try: Option<Instant>,
    backoff: Duration,
    /// Padding bytes owed.
    owed: f64,
    last: Option<Instant>,
    /// When the last probe ended.
    ended: Option<Instant>,
    /// Probes started, and of those the ones that failed.
    pub started: u64,
    /// Probes that failed.
    pub failed: u64,
}

impl Default for Prober {
    fn default() -> Self {
        Prober {
            rate: 0,
            until: None,
            started_at_estimate: 0,
            next_try: None,
            backoff: FIRST_BACKOFF,
            owed: 0.0,
            last: None,
            ended: None,
            started: 0,
            failed: 0,
        }
    }
}

impl Prober {
    /// Whether a probe runs (a probe capped to a rate of 0 runs without padding: it ends as
    /// a failure unless the estimate grows anyway).
    pub fn probing(&self) -> bool {
        self.until.is_some()
    }

    /// The estimate the running probe started from, or the last one's for
    /// [`PROBE_ECHO`] after it ended (feedback about its padding comes a round trip later).
    pub fn started_at(&self, now: Instant) -> Option<u64> {
        let echo = self
            .ended
            .is_some_and(|t| now.saturating_duration_since(t) < PROBE_ECHO);
        (self.probing() || echo).then_some(self.started_at_estimate)
    }

    /// Ends the running probe as a failure (the link did not carry it): padding stops and
    /// the next try waits the backoff.
    pub fn abort(&mut self, now: Instant) {
        self.ended = None;
        if self.probing() {
            self.stop();
            self.failed += 1;
            self.next_try = Some(now + self.backoff);
            self.backoff = self.backoff.mul_f64(1.5).min(MAX_BACKOFF);
        }
    }

    /// The padding rate, 0 when not probing.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// After each allocation: `want` is the probe rate the allocator asks for, `estimate`
    /// the estimate now.
    pub fn update(&mut self, now: Instant, want: Option<u64>, estimate: u64) {
        if self.probing() {
            let fell = estimate < self.started_at_estimate * 9 / 10;
            let grew = estimate >= self.started_at_estimate + self.started_at_estimate / 10;
            // Grown by a quarter: this probe proved what it could at its rate; the next one
            // goes on from the new estimate.
            let proved = estimate >= self.started_at_estimate + self.started_at_estimate / 4;
            let expired = self.until.is_some_and(|t| now >= t) || proved;
            match want {
                None if !fell => {
                    self.stop();
                    self.backoff = FIRST_BACKOFF;
                    self.next_try = None;
                }
                Some(_) if expired && grew => {
                    // Proved more than it started from: the next probe starts now, from the
                    // new estimate, without a gap in the padding.
                    let owed = self.owed;
                    let last = self.last;
                    self.stop();
                    self.backoff = FIRST_BACKOFF;
                    self.next_try = None;
                    self.start(now, want, estimate);
                    self.owed = owed;
                    self.last = last;
                }
                _ if fell || expired => {
                    self.stop();
                    self.failed += 1;
                    self.next_try = Some(now + self.backoff);
                    self.backoff = self.backoff.mul_f64(1.5).min(MAX_BACKOFF);
                }
                Some(rate) => self.rate = rate,
                None => {}
            }
            return;
        }
        if self.next_try.is_none_or(|t| now >= t) {
            self.start(now, want, estimate);
        }
    }

    fn start(&mut self, now: Instant, want: Option<u64>, estimate: u64) {
        if let Some(rate) = want {
            self.rate = rate;
            self.until = Some(now + PROBE_FOR);
            self.started_at_estimate = estimate;
            self.owed = 0.0;
            self.last = Some(now);
            self.started += 1;
        }
    }

    fn stop(&mut self) {
        if self.until.is_some() {
            self.ended = self.last;
        }
        self.rate = 0;
        self.until = None;
        self.owed = 0.0;
        self.last = None;
    }

    /// At a frame boundary of the viewer's video: how many padding packets of [`PADDING`]
    /// bytes to send now.
    pub fn padding_due(&mut self, now: Instant) -> usize {
        if !self.probing() {
            return 0;
        }
        let since = self
            .last
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
            .min(Duration::from_millis(200));
        self.last = Some(now);
        self.owed += self.rate as f64 / 8.0 * since.as_secs_f64();
        let n = ((self.owed / PADDING as f64) as usize).min(MAX_PER_BOUNDARY);
        self.owed = (self.owed - (n * PADDING) as f64).min((MAX_PER_BOUNDARY * PADDING) as f64);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_runs_until_the_allocator_is_satisfied() {
        let t0 = Instant::now();
        let mut p = Prober::default();
        p.update(t0, Some(400_000), 1_000_000);
        assert_eq!(p.rate(), 400_000);
        // 33 ms at 400 kbit/s is 1,650 bytes: 6 paddings, the rest owed.
        assert_eq!(p.padding_due(t0 + Duration::from_millis(33)), 6);
        assert_eq!(p.padding_due(t0 + Duration::from_millis(66)), 6);
        p.update(t0 + Duration::from_millis(500), None, 1_500_000);
        assert!(!p.probing());
        assert_eq!(p.padding_due(t0 + Duration::from_millis(600)), 0);
        p.update(t0 + Duration::from_millis(600), Some(300_000), 1_500_000);
        assert!(
            p.probing(),
            "after a success the next step may be probed at once"
        );
        assert_eq!((p.started, p.failed), (2, 0));
    }

    #[test]
    fn failures_back_off_longer_each_time() {
        let t0 = Instant::now();
        let mut p = Prober::default();
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..12 {
            p.update(now, Some(300_000), 1_000_000);
            assert!(p.probing());
            now += PROBE_FOR;
            p.update(now, Some(300_000), 1_000_000);
            assert!(!p.probing(), "timed out");
            let start = now;
            while !p.probing() {
                now += Duration::from_millis(100);
                p.update(now, Some(300_000), 1_000_000);
            }
            waits.push((now - start).as_secs_f64().round() as u64);
        }
        assert_eq!(&waits[..4], &[3, 5, 5, 5]);
        assert_eq!(*waits.last().unwrap(), 5);
        assert_eq!(p.failed, 12);
    }

    #[test]
    fn a_probe_that_raised_the_estimate_is_a_success_even_short_of_the_step() {
        let t0 = Instant::now();
        let mut p = Prober::default();
        p.update(t0, Some(1_000_000), 1_000_000);
        p.update(t0 + PROBE_FOR, Some(800_000), 1_200_000);
        assert!(p.probing(), "the next probe starts at once");
        assert_eq!((p.started, p.failed), (2, 0));
    }

    #[test]
    fn a_falling_estimate_ends_the_probe_as_a_failure() {
        let t0 = Instant::now();
        let mut p = Prober::default();
        p.update(t0, Some(300_000), 1_000_000);
        p.update(t0 + Duration::from_millis(300), None, 800_000);
        assert!(!p.probing());
        assert_eq!(p.failed, 1);
        p.update(t0 + Duration::from_secs(1), Some(300_000), 800_000);
        assert!(!p.probing(), "backing off");
    }

    #[test]
    fn bursts_are_bounded() {
        let t0 = Instant::now();
        let mut p = Prober::default();
        p.update(t0, Some(10_000_000), 1_000_000);
        assert_eq!(p.padding_due(t0 + Duration::from_secs(5)), MAX_PER_BOUNDARY);
        assert!(p.padding_due(t0 + Duration::from_secs(5)) <= MAX_PER_BOUNDARY);
    }
}
