//! How much one viewer's downlink carries: a bitrate estimate per viewer connection.
//!
//! Three signals, best first:
//! - **TWCC** (send-side): Parley numbers every packet it seals for the connection and the
//!   viewer reports when each arrived (Chromium, Firefox, webrtc-rs). Arrival-time trends go
//!   through a delay trend ([`super::trendline`], GCC's), and the rate control here decides.
//!   On overuse (or heavy loss) it steps down: to 0.85 × what the link carried while busy
//!   when the link fell behind what was sent, else to 0.85 × the estimate — a keyframe that
//!   queued for a moment, or a false reading while little is sent, is no reason to fall to
//!   what happened to be sent. Otherwise it grows 8 % a second, never below what the link
//!   has just delivered (a probe that got through proves its rate at once) and never above
//!   1.5 × it (an estimate must rest on traffic sent).
//! - **REMB** (receiver-side): the viewer's own estimate (aiortc; any client that stamps
//!   abs-send-time arrivals), taken as it is, but capped by heavy loss in its receiver
//!   reports (a delay-only estimator misses a drop-tail queue).
//! - **Receiver reports**: for a client that sends neither, the loss it reports: above 10 %
//!   the estimate falls to what was sent less half the loss, below 2 % it grows 5 % a
//!   second up to 1.5 × what was sent.
//!
//! No clock and no I/O: time and feedback come in as arguments, so recorded feedback
//! sequences replay exactly in tests.

use super::trendline::{Trendline, Usage};
use crate::transport::Delivery;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// TWCC or REMB feedback older than this no longer counts: the next signal takes over.
pub const FEEDBACK_STALE: Duration = Duration::from_secs(2);

/// The window delivered bytes are measured over (on the receiver's clock).
const DELIVERED_WINDOW: Duration = Duration::from_millis(500);

/// The window [`Estimator::busy_rate`] looks for the link's busiest stretch in.
const BUSY_WINDOW: Duration = Duration::from_millis(100);

/// A link that delivered this share of what left in the same window kept up with it.
const KEPT_UP: f64 = 0.8;

/// A TWCC feedback losing this share of its packets says the path is full.
pub const CONGESTED_LOSS: f64 = 0.05;

/// At most one decrease this often (about a round trip and a reaction).
const DECREASE_EVERY: Duration = Duration::from_millis(300);

/// What the estimate rests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// No feedback yet (the estimate is the configured starting value).
    Initial,
    /// Transport-wide congestion control feedback.
    Twcc,
    /// The viewer's REMB.
    Remb,
    /// Loss in receiver reports.
    Loss,
}

impl Signal {
    /// The name used in the room API and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Initial => "none",
            Signal::Twcc => "twcc",
            Signal::Remb => "remb",
            Signal::Loss => "loss",
        }
    }
}

/// The estimate's bounds and starting value, in bits per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Before any feedback.
    pub initial: u64,
    /// Never below.
    pub min: u64,
    /// Never above.
    pub max: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            initial: 1_000_000,
            min: 100_000,
            max: 20_000_000,
        }
    }
}

/// One viewer connection's downlink estimate.
pub struct Estimator {
    bounds: Bounds,
    estimate: f64,
    signal: Signal,
    trend: Trendline,
    /// Delivered packets by arrival on the receiver's clock.
    delivered: Window<Duration>,
    /// Reported packets, delivered or lost, by departure.
    departed: Window<Instant>,
    loss: f64,
    /// Whether the latest TWCC feedback read overuse or showed loss.
    congested: bool,
    last_twcc: Option<Instant>,
    last_update: Option<Instant>,
    last_decrease: Option<Instant>,
    remb: Option<Instant>,
}

impl Estimator {
    /// An estimator at `bounds.initial`.
    pub fn new(bounds: Bounds) -> Self {
        let bounds = Bounds {
            min: bounds.min.min(bounds.max),
            ..bounds
        };
        Estimator {
            bounds,
            estimate: bounds.initial.clamp(bounds.min, bounds.max) as f64,
            signal: Signal::Initial,
            trend: Trendline::default(),
            delivered: Window::default(),
            departed: Window::default(),
            loss: 0.0,
            congested: false,
            last_twcc: None,
            last_update: None,
            last_decrease: None,
            remb: None,
        }
    }

    /// The estimate, in bits per second.
    pub fn estimate(&self) -> u64 {
        self.estimate as u64
    }

    /// Whether the latest TWCC feedback read a growing queue or showed loss (at least
    /// [`CONGESTED_LOSS`]): the path is full now, whatever the estimate says yet.
    pub fn congested(&self) -> bool {
        self.congested
    }

    /// What the estimate rests on.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    fn clamp(&mut self) {
        self.estimate = self
            .estimate
            .clamp(self.bounds.min as f64, self.bounds.max as f64);
    }

    /// What the link delivered over the last [`DELIVERED_WINDOW`], in bits per second, once
    /// the reports span most of it.
    fn delivered_rate(&self) -> Option<f64> {
        self.delivered
            .rate(|last, first| last.saturating_sub(first))
    }

    /// The most the link delivered in any [`BUSY_WINDOW`] of the last [`DELIVERED_WINDOW`],
    /// in bits per second: what it carries while it is busy. A keyframe that overflowed its
    /// queue kept it busy for a moment, between frames that leave it idle.
    fn busy_rate(&self) -> Option<f64> {
        let mut best: Option<u64> = None;
        let mut bytes = 0u64;
        let mut start = 0;
        let delivered = &self.delivered.packets;
        for (end, &(at, size)) in delivered.iter().enumerate() {
            bytes += u64::from(size);
            while let Some(&(first, first_size)) = delivered.get(start) {
                if at.saturating_sub(first) < BUSY_WINDOW || start == end {
                    break;
                }
                bytes -= u64::from(first_size);
                start += 1;
            }
            let (first, _) = delivered[start];
            if at.saturating_sub(first) >= BUSY_WINDOW / 2 {
                best = Some(best.unwrap_or(0).max(bytes));
            }
        }
        best.map(|b| b as f64 * 8.0 / BUSY_WINDOW.as_secs_f64())
    }

    /// What left for the viewer over the last [`DELIVERED_WINDOW`] of reported packets (lost
    /// ones too), in bits per second, once they span most of it.
    fn departed_rate(&self) -> Option<f64> {
        self.departed
            .rate(|last, first| last.saturating_duration_since(first))
    }

    /// Raises the estimate to at least `bps` (within the bounds): after a failed probe, the
    /// loss and queueing its own padding caused say nothing about the media alone.
    pub fn hold_at_least(&mut self, bps: u64) {
        self.estimate = self.estimate.max(bps as f64);
        self.clamp();
    }

    /// TWCC feedback: the packets it reported on, in send order.
    pub fn on_twcc(&mut self, now: Instant, reports: &[Delivery]) {
        if reports.is_empty() {
            return;
        }
        let mut usage = self.trend.usage();
        let mut lost = 0usize;
        for r in reports {
            self.departed.push(r.departure, r.size);
            match (r.arrived, r.arrival) {
                (true, Some(at)) => {
                    self.delivered.push(at, r.size);
                    usage = self.trend.on_packet(r.departure, at);
                }
                (true, None) => {}
                (false, _) => lost += 1,
            }
        }
        self.delivered.trim(|newest, at| newest.saturating_sub(at));
        self.departed
            .trim(|newest, at| newest.saturating_duration_since(at));
        let sample = lost as f64 / reports.len() as f64;
        self.loss = 0.5 * self.loss + 0.5 * sample;
        self.congested = usage == Usage::Over || sample >= CONGESTED_LOSS;
        // Losing now, and lately: one lossy batch is not a trend, an old one is over.
        let losing = self.loss.min(sample) > 0.1;
        self.last_twcc = Some(now);
        self.signal = Signal::Twcc;
        let delivered = self.delivered_rate();
        let may_decrease = self
            .last_decrease
            .is_none_or(|t| now.saturating_duration_since(t) >= DECREASE_EVERY);
        let elapsed = self
            .last_update
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
            .min(Duration::from_secs(1));
        self.last_update = Some(now);
        if usage == Usage::Over || losing {
            if may_decrease {
                // A link that fell behind what was sent carries what it delivered while busy;
                // one that kept up only queued a burst (a keyframe) for a moment, or carries
                // less than it did since just now: a step down from the estimate, not a fall
                // to what happened to be sent.
                let kept_up = match (delivered, self.departed_rate()) {
                    (Some(delivered), Some(departed)) => delivered >= KEPT_UP * departed,
                    _ => false,
                };
                let stepped = if !kept_up {
                    // What the link carries, whatever the loss: the busy rate is what got
                    // through. Never below that on repeated readings while its queue drains.
                    0.85 * self.busy_rate().or(delivered).unwrap_or(self.estimate)
                } else if usage == Usage::Over {
                    0.85 * self.estimate
                } else {
                    (1.0 - 0.5 * self.loss) * self.estimate
                };
                self.estimate = self.estimate.min(stepped);
                self.last_decrease = Some(now);
            }
        } else if let Some(delivered) = delivered {
            let grown = if usage == Usage::Normal && self.loss.max(sample) < 0.02 {
                self.estimate * 1.08f64.powf(elapsed.as_secs_f64())
            } else {
                self.estimate
            };
            // Growth rests on traffic sent (at most 1.5 times what was delivered), but sending
            // little is no reason to cut: only overuse and loss do.
            let cap = 1.5 * delivered + 50_000.0;
            self.estimate = self.estimate.max(grown.min(cap)).max(delivered);
        }
        self.clamp();
    }

    /// A REMB from the viewer. Used while no TWCC feedback comes.
    pub fn on_remb(&mut self, now: Instant, bitrate: f64) {
        if !bitrate.is_finite() || bitrate <= 0.0 {
            return;
        }
        self.remb = Some(now);
        if self.twcc_fresh(now) {
            return;
        }
        self.signal = Signal::Remb;
        self.estimate = bitrate;
        self.clamp();
    }

    /// A receiver report's fraction lost (0..1) while `sent` bits per second went out. Used
    /// while neither TWCC nor REMB comes; with REMB, heavy loss caps it.
    pub fn on_loss(&mut self, now: Instant, fraction: f64, sent: u64) {
        if self.twcc_fresh(now) {
            return;
        }
        if self
            .remb
            .is_some_and(|t| now.saturating_duration_since(t) < FEEDBACK_STALE)
        {
            // A receiver's own estimate is taken as it is, except that heavy loss caps it,
            // as mediasoup does: a delay-only estimator misses a drop-tail queue.
            if fraction > 0.1 && sent > 0 {
                let capped = sent as f64 * (1.0 - 0.5 * fraction);
                self.estimate = self.estimate.min(capped);
                self.clamp();
            }
            return;
        }
        self.signal = Signal::Loss;
        let sent = sent as f64;
        let elapsed = self
            .last_update
            .map_or(Duration::from_secs(1), |t| now.saturating_duration_since(t))
            .min(Duration::from_secs(1));
        self.last_update = Some(now);
        if fraction > 0.1 {
            self.estimate = self.estimate.min(sent * (1.0 - 0.5 * fraction));
            self.last_decrease = Some(now);
        } else if fraction < 0.02 {
            let grown = self.estimate * 1.05f64.powf(elapsed.as_secs_f64());
            self.estimate = self.estimate.max(grown.min(1.5 * sent + 50_000.0));
        }
        self.clamp();
    }

    fn twcc_fresh(&self, now: Instant) -> bool {
        self.last_twcc
            .is_some_and(|t| now.saturating_duration_since(t) < FEEDBACK_STALE)
    }
}

/// `bytes` (timed packets, oldest first) over `span` in bits per second, the first packet's
/// bytes left out (they arrived at the span's start); `None` while `span` is under half of
/// [`DELIVERED_WINDOW`].
/// Packets of the last [`DELIVERED_WINDOW`] with their byte total, kept as they come, so
/// a rate costs nothing per feedback.
struct Window<T> {
    /// (time, bytes), oldest first.
    packets: VecDeque<(T, u32)>,
    bytes: u64,
}

impl<T> Default for Window<T> {
    fn default() -> Self {
        Window {
            packets: VecDeque::with_capacity(256),
            bytes: 0,
        }
    }
}

impl<T: Copy> Window<T> {
    fn push(&mut self, at: T, size: u32) {
        self.packets.push_back((at, size));
        self.bytes += u64::from(size);
    }

    /// Drops the packets older than [`DELIVERED_WINDOW`] before the newest
    /// (`age(newest, at)`).
    fn trim(&mut self, age: impl Fn(T, T) -> Duration) {
        let Some(&(newest, _)) = self.packets.back() else {
            return;
        };
        while let Some(&(at, size)) = self.packets.front() {
            if age(newest, at) <= DELIVERED_WINDOW {
                break;
            }
            self.packets.pop_front();
            self.bytes -= u64::from(size);
        }
    }

    /// Bits per second from the first packet to the last (`span(last, first)`), once that
    /// spans most of the window. The first packet's bytes count as before the span.
    fn rate(&self, span: impl Fn(T, T) -> Duration) -> Option<f64> {
        let &(first, first_size) = self.packets.front()?;
        let &(last, _) = self.packets.back()?;
        let span = span(last, first);
        if span < DELIVERED_WINDOW / 2 {
            return None;
        }
        let bytes = self.bytes - u64::from(first_size);
        Some(bytes as f64 * 8.0 / span.as_secs_f64())
    }
}

#[cfg(test)]
mod tests;
