//! What the viewers behind capped links, and the others, received in a step's window: the
//! rate per viewer (RTP datagrams with their UDP/IP headers, the unit of the cap), the share
//! their links dropped, sequence loss, and the congestion feedback they sent.

use crate::engine::{LinkCounters, Snapshot};
use crate::link::{LinkSpec, UDP_IP_OVERHEAD};
use crate::stats::SeqCounters;
use serde::Serialize;

/// One group of viewers (capped or not) over a window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GroupReport {
    /// Viewers in the group.
    pub viewers: usize,
    /// Received kbit/s per viewer (RTP datagrams + 28 bytes each): mean over the viewers.
    pub kbps_mean: f64,
    /// The lowest viewer's.
    pub kbps_min: f64,
    /// The highest viewer's.
    pub kbps_max: f64,
    /// RTP datagrams their links dropped, % of those that reached the links.
    pub link_drop_pct: f64,
    /// Lost / expected RTP packets (sequence gaps, link drops included), %.
    pub loss_pct: f64,
    /// Congestion feedback packets sent per second per viewer.
    pub feedback_per_sec: f64,
}

/// The step's viewers split by their links.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DownlinkReport {
    /// The capped links' rate, kbit/s.
    pub cap_kbps: u32,
    /// Their queue bound, ms.
    pub cap_queue_ms: u32,
    /// Viewers behind capped links.
    pub capped: GroupReport,
    /// The others.
    pub uncapped: GroupReport,
}

/// One viewer's window.
struct ViewerWindow {
    kbps: f64,
    counters: SeqCounters,
    link: LinkCounters,
}

impl GroupReport {
    fn of(viewers: &[ViewerWindow], secs: f64) -> GroupReport {
        if viewers.is_empty() {
            return GroupReport::default();
        }
        let (mut counters, mut link) = (SeqCounters::default(), LinkCounters::default());
        for v in viewers {
            counters.add(&v.counters);
            link.add(&v.link);
        }
        let pct = |part: u64, whole: u64| match whole {
            0 => 0.0,
            w => part as f64 * 100.0 / w as f64,
        };
        let n = viewers.len() as f64;
        GroupReport {
            viewers: viewers.len(),
            kbps_mean: viewers.iter().map(|v| v.kbps).sum::<f64>() / n,
            kbps_min: viewers.iter().map(|v| v.kbps).fold(f64::INFINITY, f64::min),
            kbps_max: viewers.iter().map(|v| v.kbps).fold(0.0, f64::max),
            link_drop_pct: pct(link.rtp_dropped, link.rtp_offered),
            loss_pct: pct(counters.lost(), counters.expected),
            feedback_per_sec: link.feedbacks as f64 / secs / n,
        }
    }
}

/// The viewers `ids` between two snapshots `secs` apart, split by whether they are capped.
pub fn downlink_report(
    a: &Snapshot,
    b: &Snapshot,
    ids: &[u64],
    secs: f64,
    cap: LinkSpec,
) -> DownlinkReport {
    let secs = secs.max(1e-9);
    let (mut capped, mut uncapped) = (Vec::new(), Vec::new());
    for id in ids {
        let Some(v1) = b.viewers.get(id) else {
            continue;
        };
        let (counters, bytes, link) = match a.viewers.get(id) {
            Some(v0) => (
                v1.counters.since(&v0.counters),
                v1.bytes.saturating_sub(v0.bytes),
                v1.link.since(&v0.link),
            ),
            None => (v1.counters, v1.bytes, v1.link),
        };
        let wire = bytes + counters.received * UDP_IP_OVERHEAD as u64;
        let window = ViewerWindow {
            kbps: wire as f64 * 8.0 / secs / 1000.0,
            counters,
            link,
        };
        match v1.capped {
            true => capped.push(window),
            false => uncapped.push(window),
        }
    }
    DownlinkReport {
        cap_kbps: cap.kbps,
        cap_queue_ms: cap.queue_ms,
        capped: GroupReport::of(&capped, secs),
        uncapped: GroupReport::of(&uncapped, secs),
    }
}

/// The step's downlink line, e.g. `  capped 50 (1000 kbit/s, 100 ms queue): 905 kbit/s each
/// (870-940), link drops 0.31%, loss 0.31%, feedback 20.0/s each; uncapped 150: ...`.
pub fn downlink_line(r: &DownlinkReport) -> String {
    let group = |g: &GroupReport| {
        format!(
            "{:.0} kbit/s each ({:.0}-{:.0}), link drops {:.2}%, loss {:.2}%, feedback {:.1}/s each",
            g.kbps_mean, g.kbps_min, g.kbps_max, g.link_drop_pct, g.loss_pct, g.feedback_per_sec
        )
    };
    let mut parts = Vec::new();
    if r.capped.viewers > 0 {
        parts.push(format!(
            "capped {} ({} kbit/s, {} ms queue): {}",
            r.capped.viewers,
            r.cap_kbps,
            r.cap_queue_ms,
            group(&r.capped)
        ));
    }
    if r.uncapped.viewers > 0 {
        parts.push(format!(
            "uncapped {}: {}",
            r.uncapped.viewers,
            group(&r.uncapped)
        ));
    }
    format!("  {}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ViewerSnap;

    fn snap(
        received: u64,
        expected: u64,
        bytes: u64,
        link: LinkCounters,
        capped: bool,
    ) -> ViewerSnap {
        ViewerSnap {
            bytes,
            capped,
            link,
            ..ViewerSnap::counted(received, expected)
        }
    }

    fn link(offered: u64, dropped: u64, feedbacks: u64) -> LinkCounters {
        LinkCounters {
            rtp_offered: offered,
            rtp_dropped: dropped,
            feedbacks,
        }
    }

    #[test]
    fn capped_and_uncapped_viewers_are_reported_apart() {
        let (mut a, mut b) = (Snapshot::default(), Snapshot::default());
        // Viewer 1, capped: in 2 s, 200 of 250 packets through, 972 + 28 bytes each.
        a.viewers
            .insert(1, snap(1000, 1000, 972_000, link(1000, 0, 10), true));
        b.viewers.insert(
            1,
            snap(1200, 1250, 972_000 + 194_400, link(1250, 50, 50), true),
        );
        // Viewer 2, capped, got half as much and lost nothing.
        b.viewers
            .insert(2, snap(100, 100, 97_200, link(100, 0, 40), true));
        // Viewer 3, uncapped.
        b.viewers
            .insert(3, snap(500, 500, 1_236_000, link(500, 0, 40), false));
        let cap = LinkSpec {
            kbps: 1000,
            queue_ms: 100,
        };
        let r = downlink_report(&a, &b, &[1, 2, 3, 4], 2.0, cap);
        assert_eq!(r.capped.viewers, 2);
        assert_eq!((r.capped.kbps_min, r.capped.kbps_max), (400.0, 800.0));
        assert_eq!(r.capped.kbps_mean, 600.0);
        assert_eq!(r.capped.link_drop_pct, 50.0 * 100.0 / 350.0);
        assert_eq!(r.capped.loss_pct, 50.0 * 100.0 / 350.0);
        assert_eq!(r.capped.feedback_per_sec, 20.0);
        assert_eq!(r.uncapped.viewers, 1);
        assert_eq!(r.uncapped.kbps_mean, 5000.0);
        assert_eq!((r.uncapped.link_drop_pct, r.uncapped.loss_pct), (0.0, 0.0));
        assert_eq!(
            downlink_line(&r),
            "  capped 2 (1000 kbit/s, 100 ms queue): 600 kbit/s each (400-800), link drops \
             14.29%, loss 14.29%, feedback 20.0/s each; uncapped 1: 5000 kbit/s each \
             (5000-5000), link drops 0.00%, loss 0.00%, feedback 20.0/s each"
        );
    }

    #[test]
    fn no_capped_viewers_no_capped_part() {
        let a = Snapshot::default();
        let mut b = Snapshot::default();
        b.viewers
            .insert(1, snap(10, 10, 1000, link(10, 0, 0), false));
        let cap = LinkSpec {
            kbps: 1000,
            queue_ms: 100,
        };
        let r = downlink_report(&a, &b, &[1], 1.0, cap);
        assert_eq!(r.capped, GroupReport::default());
        assert!(downlink_line(&r).starts_with("  uncapped 1: "));
    }
}
