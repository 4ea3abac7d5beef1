//! Tests of `forward::estimate`: feedback from a simulated bottleneck, replayed exactly.

use super::*;

/// A bottleneck of `capacity` bits per second with a `queue` drop-tail buffer and a fixed
/// 20 ms delay, fed at `rate` by 1,000-byte packets; the estimator hears about each 100 ms
/// of traffic 100 ms later. Returns the estimate after each feedback.
struct Link {
    t0: Instant,
    free_at: Duration,
    queue: Duration,
}

impl Link {
    fn new(t0: Instant, queue: Duration) -> Self {
        Link {
            t0,

            free_at: Duration::ZERO,
            queue,
        }
    }

    /// Runs `secs` of traffic at `rate` through a link of `capacity`, feeding `e`.
    fn run(
        &mut self,
        e: &mut Estimator,
        from: Duration,
        secs: f64,
        rate: f64,
        capacity: f64,
    ) -> Vec<u64> {
        let size = 1_000usize;
        let gap = Duration::from_secs_f64(size as f64 * 8.0 / rate);
        let mut at = from;
        let end = from + Duration::from_secs_f64(secs);
        let mut batch = Vec::new();
        let mut next_feedback = from + Duration::from_millis(100);
        let mut out = Vec::new();
        while at < end {
            let serialize = Duration::from_secs_f64(size as f64 * 8.0 / capacity);
            let start = self.free_at.max(at);
            let arrived = start.saturating_sub(at) <= self.queue;
            if arrived {
                self.free_at = start + serialize;
            }
            batch.push(Delivery {
                size: size as u32,
                arrived,
                departure: self.t0 + at,
                arrival: arrived.then(|| self.free_at + Duration::from_millis(20)),
            });
            at += gap;
            if at >= next_feedback {
                e.on_twcc(self.t0 + at + Duration::from_millis(40), &batch);
                batch.clear();
                out.push(e.estimate());
                next_feedback += Duration::from_millis(100);
            }
        }
        if !batch.is_empty() {
            e.on_twcc(self.t0 + at + Duration::from_millis(40), &batch);
            out.push(e.estimate());
        }
        out
    }

    /// Like [`Link::run`], with the sender following the estimate (as the allocator makes
    /// it): each 100 ms it sends the lesser of `want` and the estimate.
    fn follow(
        &mut self,
        e: &mut Estimator,
        from: Duration,
        secs: f64,
        want: f64,
        capacity: f64,
    ) -> Vec<u64> {
        let mut out = Vec::new();
        for i in 0..(secs * 10.0) as u32 {
            let rate = want.min(e.estimate() as f64);
            let at = from + Duration::from_millis(100 * u64::from(i));
            out.extend(self.run(e, at, 0.1, rate, capacity));
        }
        out
    }
}

fn estimator() -> Estimator {
    Estimator::new(Bounds {
        initial: 1_000_000,
        min: 50_000,
        max: 20_000_000,
    })
}

#[test]
fn below_capacity_the_estimate_grows_only_on_what_is_delivered_and_is_not_cut() {
    let t0 = Instant::now();
    // From 300k, sending 500k: it grows to what is delivered and at most 1.5 times that.
    let mut e = Estimator::new(Bounds {
        initial: 300_000,
        ..Bounds::default()
    });
    let mut link = Link::new(t0, Duration::from_millis(100));
    let trace = link.run(&mut e, Duration::ZERO, 5.0, 500_000.0, 5_000_000.0);
    let last = *trace.last().unwrap();
    assert_eq!(e.signal(), Signal::Twcc);
    assert!((500_000..=800_000).contains(&last), "{trace:?}");
    // From 1 Mbit/s, sending 300k: sending little is no reason to cut it.
    let mut e = estimator();
    let mut link = Link::new(t0, Duration::from_millis(100));
    let trace = link.run(&mut e, Duration::ZERO, 5.0, 300_000.0, 5_000_000.0);
    assert!(trace.iter().all(|b| *b == 1_000_000), "{trace:?}");
}

#[test]
fn over_capacity_the_estimate_falls_below_the_link_within_two_seconds() {
    let t0 = Instant::now();
    let mut e = estimator();
    let mut link = Link::new(t0, Duration::from_millis(100));
    link.run(&mut e, Duration::ZERO, 3.0, 600_000.0, 1_000_000.0);
    let trace = link.run(
        &mut e,
        Duration::from_secs(3),
        2.0,
        2_500_000.0,
        1_000_000.0,
    );
    let last = *trace.last().unwrap();
    assert!(last <= 1_000_000, "{trace:?}");
    // A sender that follows the estimate settles near the link, not far below it.
    let trace = link.follow(
        &mut e,
        Duration::from_secs(5),
        10.0,
        2_500_000.0,
        1_000_000.0,
    );
    let tail = &trace[trace.len() - 30..];
    assert!(
        tail.iter().all(|b| (500_000..=1_600_000).contains(b)),
        "{trace:?}"
    );
}

#[test]
fn a_probe_that_gets_through_proves_its_rate_at_once() {
    let t0 = Instant::now();
    let mut e = Estimator::new(Bounds {
        initial: 300_000,
        ..Bounds::default()
    });
    let mut link = Link::new(t0, Duration::from_millis(100));
    link.run(&mut e, Duration::ZERO, 3.0, 300_000.0, 5_000_000.0);
    assert!(e.estimate() < 600_000, "{}", e.estimate());
    let trace = link.run(
        &mut e,
        Duration::from_secs(3),
        1.0,
        1_500_000.0,
        5_000_000.0,
    );
    assert!(*trace.last().unwrap() >= 1_400_000, "{trace:?}");
}

#[test]
fn a_probe_the_link_cannot_carry_proves_nothing() {
    let t0 = Instant::now();
    let mut e = estimator();
    let mut link = Link::new(t0, Duration::from_millis(100));
    link.run(&mut e, Duration::ZERO, 3.0, 300_000.0, 600_000.0);
    let trace = link.run(&mut e, Duration::from_secs(3), 1.0, 1_500_000.0, 600_000.0);
    assert!(trace.iter().all(|b| *b <= 950_000), "{trace:?}");
}

#[test]
fn remb_counts_while_twcc_is_absent_and_loss_last() {
    let t0 = Instant::now();
    let mut e = estimator();
    assert_eq!((e.signal(), e.estimate()), (Signal::Initial, 1_000_000));
    e.on_loss(t0, 0.0, 400_000);
    assert_eq!(e.signal(), Signal::Loss);
    let grown = e.estimate();
    assert!(grown >= 1_000_000, "no loss: holds or grows ({grown})");
    e.on_loss(t0 + Duration::from_secs(1), 0.3, 400_000);
    assert_eq!(e.estimate(), 340_000, "30 % loss: sent less half of it");
    e.on_remb(t0 + Duration::from_secs(2), 750_000.0);
    assert_eq!((e.signal(), e.estimate()), (Signal::Remb, 750_000));
    e.on_loss(t0 + Duration::from_secs(2), 0.05, 100_000);
    assert_eq!(
        e.estimate(),
        750_000,
        "light loss does not override a fresh REMB"
    );
    e.on_loss(t0 + Duration::from_secs(2), 0.5, 1_000_000);
    assert_eq!(
        e.estimate(),
        750_000,
        "heavy loss caps it at what was sent less half"
    );
    e.on_loss(t0 + Duration::from_secs(2), 0.5, 800_000);
    assert_eq!(e.estimate(), 600_000);
    e.on_remb(t0 + Duration::from_secs(2), 750_000.0);
    e.on_remb(t0 + Duration::from_secs(3), f64::NAN);
    e.on_remb(t0 + Duration::from_secs(3), -5.0);
    assert_eq!(e.estimate(), 750_000, "nonsense REMB values are ignored");
    e.on_remb(t0 + Duration::from_secs(3), 1e12);
    assert_eq!(e.estimate(), 20_000_000, "clamped to the bounds");
    e.on_loss(t0 + Duration::from_secs(6), 0.5, 1_000_000);
    assert_eq!(
        (e.signal(), e.estimate()),
        (Signal::Loss, 750_000),
        "a stale REMB gives way to loss"
    );
}

#[test]
fn twcc_outranks_remb() {
    let t0 = Instant::now();
    let mut e = estimator();
    let mut link = Link::new(t0, Duration::from_millis(100));
    link.run(&mut e, Duration::ZERO, 2.0, 500_000.0, 5_000_000.0);
    let before = e.estimate();
    e.on_remb(t0 + Duration::from_millis(2_100), 5_000_000.0);
    assert_eq!((e.signal(), e.estimate()), (Signal::Twcc, before));
}

#[test]
fn a_burst_the_link_carries_late_steps_the_estimate_down_without_falling_to_what_was_sent() {
    let t0 = Instant::now();
    let mut e = estimator();
    let mut link = Link::new(t0, Duration::from_millis(100));
    link.run(&mut e, Duration::ZERO, 3.0, 300_000.0, 1_000_000.0);
    assert_eq!(e.estimate(), 1_000_000);
    // A 20 kB keyframe at once: it queues 160 ms on a 1 Mbit/s link (the tail is dropped),
    // then 300 kbit/s again.
    let mut trace = link.run(
        &mut e,
        Duration::from_secs(3),
        0.016,
        10_000_000.0,
        1_000_000.0,
    );
    trace.extend(link.run(
        &mut e,
        Duration::from_millis(3016),
        2.0,
        300_000.0,
        1_000_000.0,
    ));
    assert!(
        trace.iter().all(|b| *b >= 700_000),
        "a step down, not to 0.85 × 300 kbit/s: {trace:?}"
    );
}

#[test]
fn while_an_overflowing_queue_drains_the_estimate_holds_near_the_link() {
    let t0 = Instant::now();
    let mut e = estimator();
    let mut link = Link::new(t0, Duration::from_millis(100));
    link.run(&mut e, Duration::ZERO, 3.0, 600_000.0, 1_000_000.0);
    // The link drops to 300 kbit/s and 600 keep coming for two seconds (the sender is slow
    // to follow): loss and queueing all along, yet the link carries 300.
    let trace = link.run(&mut e, Duration::from_secs(3), 2.0, 600_000.0, 300_000.0);
    let last = *trace.last().unwrap();
    assert!(
        (200_000..=300_000).contains(&last),
        "below the link, not compounded toward the minimum: {trace:?}"
    );
}
