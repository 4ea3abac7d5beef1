//! Whether a viewer's path is queueing: the delay-based half of its downlink estimate.
//!
//! Packets sent within [`BURST`] of each other form a group; for each pair of groups the
//! change in one-way delay is (arrival gap − departure gap). Those changes accumulate into
//! a delay curve, smoothed, and a least-squares line over the last [`WINDOW`] groups gives
//! its slope: a queue that grows makes the slope positive. As in libwebrtc's trendline
//! estimator (the one Chromium's GCC uses), the slope is scaled by the number of groups seen
//! (up to 60) and a gain of 4 and compared with an adaptive threshold (12.5 ms at first,
//! following the signal slowly up and faster down, 6–600 ms): above it for 10 ms and still
//! rising is overuse; below its negative is underuse (a queue draining).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Packets sent this close together are one group.
pub const BURST: Duration = Duration::from_millis(5);

/// Groups the slope is fitted over.
pub const WINDOW: usize = 20;

const SMOOTHING: f64 = 0.9;
const GAIN: f64 = 4.0;
const MAX_DELTAS: f64 = 60.0;
const OVERUSE_TIME_MS: f64 = 10.0;
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;

/// What the trend says about the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Usage {
    /// No queue building or draining.
    #[default]
    Normal,
    /// A queue is building: more is sent than the path carries.
    Over,
    /// A queue is draining.
    Under,
}

#[derive(Clone, Copy, Debug)]
struct Group {
    first_departure: Instant,
    departure: Instant,
    arrival: Duration,
}

/// The delay trend of one path.
#[derive(Clone, Debug)]
pub struct Trendline {
    current: Option<Group>,
    previous: Option<Group>,
    first_arrival: Option<Duration>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    samples: VecDeque<(f64, f64)>,
    deltas: f64,
    threshold_ms: f64,
    last_threshold_update: Option<Duration>,
    over_since_ms: Option<f64>,
    overuse_count: u32,
    previous_trend: f64,
    usage: Usage,
}

impl Default for Trendline {
    fn default() -> Self {
        Trendline {
            current: None,
            previous: None,
            first_arrival: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            samples: VecDeque::with_capacity(WINDOW + 1),
            deltas: 0.0,
            threshold_ms: 12.5,
            last_threshold_update: None,
            over_since_ms: None,
            overuse_count: 0,
            previous_trend: 0.0,
            usage: Usage::Normal,
        }
    }
}

impl Trendline {
    /// What the trend says now.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// One delivered packet: when it left (this side's clock) and arrived (the receiver's).
    /// Returns the usage after it.
    pub fn on_packet(&mut self, departure: Instant, arrival: Duration) -> Usage {
        let Some(current) = self.current.as_mut() else {
            self.current = Some(Group {
                first_departure: departure,
                departure,
                arrival,
            });
            return self.usage;
        };
        if departure.saturating_duration_since(current.first_departure) <= BURST
            || departure < current.first_departure
        {
            current.departure = current.departure.max(departure);
            current.arrival = current.arrival.max(arrival);
            return self.usage;
        }
        let closed = *current;
        self.current = Some(Group {
            first_departure: departure,
            departure,
            arrival,
        });
        if let Some(previous) = self.previous.replace(closed) {
            let arrival_ms = (closed.arrival.as_secs_f64() - previous.arrival.as_secs_f64()) * 1e3;
            let departure_ms = closed
                .departure
                .saturating_duration_since(previous.departure)
                .as_secs_f64()
                * 1e3;
            self.on_delta(arrival_ms - departure_ms, closed.arrival);
        }
        self.usage
    }

    fn on_delta(&mut self, delta_ms: f64, arrival: Duration) {
        self.deltas = (self.deltas + 1.0).min(MAX_DELTAS);
        let first = *self.first_arrival.get_or_insert(arrival);
        let at_ms = arrival.saturating_sub(first).as_secs_f64() * 1e3;
        self.accumulated_ms += delta_ms;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        self.samples.push_back((at_ms, self.smoothed_ms));
        if self.samples.len() > WINDOW {
            self.samples.pop_front();
        }
        let trend = if self.samples.len() == WINDOW {
            slope(&self.samples).unwrap_or(self.previous_trend)
        } else {
            self.previous_trend
        };
        self.detect(trend, delta_ms, at_ms, arrival);
    }

    fn detect(&mut self, trend: f64, delta_ms: f64, at_ms: f64, arrival: Duration) {
        let modified = self.deltas * trend * GAIN;
        if modified > self.threshold_ms {
            let since = *self
                .over_since_ms
                .get_or_insert(at_ms - delta_ms.max(0.0) / 2.0);
            self.overuse_count += 1;
            if at_ms - since > OVERUSE_TIME_MS
                && self.overuse_count > 1
                && trend >= self.previous_trend
            {
                self.usage = Usage::Over;
            }
        } else if modified < -self.threshold_ms {
            self.over_since_ms = None;
            self.overuse_count = 0;
            self.usage = Usage::Under;
        } else {
            self.over_since_ms = None;
            self.overuse_count = 0;
            self.usage = Usage::Normal;
        }
        self.previous_trend = trend;
        self.adapt(modified, arrival);
    }

    /// Moves the threshold toward the signal: slowly up, faster down, ignoring spikes far
    /// above it (a single late packet).
    fn adapt(&mut self, modified: f64, arrival: Duration) {
        let last = self.last_threshold_update.replace(arrival);
        if modified.abs() > self.threshold_ms + 15.0 {
            return;
        }
        let k = if modified.abs() < self.threshold_ms {
            K_DOWN
        } else {
            K_UP
        };
        let dt_ms = last
            .map_or(0.0, |l| arrival.saturating_sub(l).as_secs_f64() * 1e3)
            .min(100.0);
        self.threshold_ms += k * (modified.abs() - self.threshold_ms) * dt_ms;
        self.threshold_ms = self.threshold_ms.clamp(6.0, 600.0);
    }
}

/// The least-squares slope of `points` (x, y), or `None` when x does not vary.
fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packets of `size` bytes every `gap`, through a link of `capacity` bits per second
    /// (an unbounded queue, 20 ms delay): the usage after each.
    fn run(
        t: &mut Trendline,
        t0: Instant,
        from: Duration,
        n: usize,
        gap: Duration,
        capacity: f64,
        free: &mut Duration,
    ) -> Vec<Usage> {
        let serialize = Duration::from_secs_f64(1200.0 * 8.0 / capacity);
        (0..n)
            .map(|i| {
                let sent = from + gap * i as u32;
                *free = (*free).max(sent) + serialize;
                t.on_packet(t0 + sent, *free + Duration::from_millis(20))
            })
            .collect()
    }

    #[test]
    fn a_path_below_capacity_reads_normal() {
        let t0 = Instant::now();
        let mut t = Trendline::default();
        let mut free = Duration::ZERO;
        // 1,200 bytes every 20 ms (480 kbit/s) through 1 Mbit/s.
        let usage = run(
            &mut t,
            t0,
            Duration::ZERO,
            300,
            Duration::from_millis(20),
            1e6,
            &mut free,
        );
        assert!(usage.iter().all(|u| *u == Usage::Normal), "{usage:?}");
    }

    #[test]
    fn a_growing_queue_reads_overuse_within_half_a_second() {
        let t0 = Instant::now();
        let mut t = Trendline::default();
        let mut free = Duration::ZERO;
        run(
            &mut t,
            t0,
            Duration::ZERO,
            100,
            Duration::from_millis(20),
            1e6,
            &mut free,
        );
        // 1.5 Mbit/s into 1 Mbit/s: 6.4 ms apart.
        let usage = run(
            &mut t,
            t0,
            Duration::from_secs(2),
            80,
            Duration::from_micros(6400),
            1e6,
            &mut free,
        );
        let first = usage
            .iter()
            .position(|u| *u == Usage::Over)
            .expect("overuse seen");
        assert!(first < 80, "after {first} packets");
    }

    #[test]
    fn a_draining_queue_reads_underuse() {
        let t0 = Instant::now();
        let mut t = Trendline::default();
        let mut free = Duration::ZERO;
        run(
            &mut t,
            t0,
            Duration::ZERO,
            150,
            Duration::from_micros(6400),
            1e6,
            &mut free,
        );
        let usage = run(
            &mut t,
            t0,
            Duration::from_secs(1),
            100,
            Duration::from_millis(40),
            1e6,
            &mut free,
        );
        assert!(usage.contains(&Usage::Under), "{usage:?}");
    }

    #[test]
    fn jitter_alone_is_not_overuse() {
        let t0 = Instant::now();
        let mut t = Trendline::default();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut usage = Vec::new();
        for i in 0..500u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let jitter = Duration::from_micros(x % 4000);
            let sent = Duration::from_millis(20) * i;
            usage.push(t.on_packet(t0 + sent, sent + Duration::from_millis(20) + jitter));
        }
        assert!(!usage.contains(&Usage::Over), "{usage:?}");
    }
}
