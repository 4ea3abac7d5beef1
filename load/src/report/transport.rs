//! A step's viewers split by transport (`--tcp-share`): for the ICE-TCP viewers and the UDP
//! viewers apart, how many there were, joined and failed, their loss and their one-way delay
//! over the window. The server's CPU per forwarded packet stays one figure for the step.

use super::Millis;
use crate::engine::Snapshot;
use crate::stats::{Distribution, SeqCounters};
use serde::Serialize;

/// One transport's viewers over a window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TransportGroup {
    /// Viewer sessions.
    pub viewers: usize,
    /// Viewers that got their first keyframe.
    pub joined: usize,
    /// Viewers whose connection failed or, over TCP, was closed by the end of the window.
    pub failed: usize,
    /// Lost / expected RTP packets over their streams in the window, %.
    pub loss_pct: f64,
    /// Publisher stamp → arrival at the viewer (kernel receive time; over TCP, of the read
    /// that completed the frame).
    pub delay_ms: Millis,
}

/// The step's viewers split by transport.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TransportReport {
    /// Viewers over ICE-TCP.
    pub tcp: TransportGroup,
    /// Viewers over UDP.
    pub udp: TransportGroup,
}

/// The viewers `ids`, by transport: joins from `joined` (the snapshot when the joins were
/// done), loss between `a` and `b`, delays from `b`'s samples. `None` when none of them is a
/// TCP viewer.
pub fn transport_report(
    joined: &Snapshot,
    a: &Snapshot,
    b: &Snapshot,
    ids: &[u64],
) -> Option<TransportReport> {
    let is_tcp = |id: &u64| b.viewers.get(id).or(joined.viewers.get(id)).map(|v| v.tcp);
    if !ids.iter().any(|id| is_tcp(id) == Some(true)) {
        return None;
    }
    let group = |tcp: bool, delays: &[u32]| {
        let mut g = TransportGroup::default();
        let mut total = SeqCounters::default();
        for id in ids.iter().filter(|id| is_tcp(id) == Some(tcp)) {
            g.viewers += 1;
            if joined.viewers.get(id).is_some_and(|v| v.join_ms.is_some()) {
                g.joined += 1;
            }
            if let Some(v1) = b.viewers.get(id) {
                if v1.state == crate::peer::PeerState::Failed {
                    g.failed += 1;
                }
                let zero = SeqCounters::default();
                let v0 = a.viewers.get(id).map_or(&zero, |v| &v.counters);
                total.add(&v1.counters.since(v0));
            }
        }
        g.loss_pct = match total.expected {
            0 => 0.0,
            e => total.lost() as f64 * 100.0 / e as f64,
        };
        g.delay_ms = Millis::from_us(&Distribution::of(&mut delays.to_vec()));
        g
    };
    Some(TransportReport {
        tcp: group(true, &b.tcp_delays_us),
        udp: group(false, &b.udp_delays_us),
    })
}

/// The step's transport line, e.g. `  transport tcp 50: 50 joined, 0 failed, loss 0.000%,
/// delay p50/p99 0.61/2.10 ms; udp 50: ...`.
pub fn transport_line(r: &TransportReport) -> String {
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    let group = |name: &str, g: &TransportGroup| {
        format!(
            "{name} {}: {} joined, {} failed, loss {:.3}%, delay p50/p99 {}/{} ms",
            g.viewers,
            g.joined,
            g.failed,
            g.loss_pct,
            opt(g.delay_ms.p50),
            opt(g.delay_ms.p99)
        )
    };
    format!(
        "  transport {}; {}",
        group("tcp", &r.tcp),
        group("udp", &r.udp)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ViewerSnap;
    use crate::peer::PeerState;

    fn viewer(tcp: bool, received: u64, expected: u64, joined: bool) -> ViewerSnap {
        ViewerSnap {
            join_ms: joined.then_some(120.0),
            tcp,
            ..ViewerSnap::counted(received, expected)
        }
    }

    #[test]
    fn tcp_and_udp_viewers_are_reported_apart() {
        let (mut joined, mut a, mut b) = (
            Snapshot::default(),
            Snapshot::default(),
            Snapshot::default(),
        );
        for id in 1..=4 {
            let tcp = id % 2 == 0;
            joined.viewers.insert(id, viewer(tcp, 0, 0, id != 4));
            a.viewers.insert(id, viewer(tcp, 100, 100, true));
        }
        b.viewers.insert(1, viewer(false, 300, 300, true));
        b.viewers.insert(2, viewer(true, 290, 300, true));
        b.viewers.insert(3, viewer(false, 200, 200, true));
        let mut failed = viewer(true, 100, 100, false);
        failed.state = PeerState::Failed;
        b.viewers.insert(4, failed);
        b.udp_delays_us = vec![1000, 2000, 3000];
        b.tcp_delays_us = vec![5000];
        let r = transport_report(&joined, &a, &b, &[1, 2, 3, 4]).expect("TCP viewers");
        assert_eq!(
            (r.tcp.viewers, r.tcp.joined, r.tcp.failed),
            (2, 1, 1),
            "{r:?}"
        );
        assert_eq!((r.udp.viewers, r.udp.joined, r.udp.failed), (2, 2, 0));
        assert_eq!((r.tcp.loss_pct, r.udp.loss_pct), (5.0, 0.0));
        assert_eq!((r.tcp.delay_ms.count, r.tcp.delay_ms.p50), (1, Some(5.0)));
        assert_eq!((r.udp.delay_ms.count, r.udp.delay_ms.p50), (3, Some(2.0)));
        assert_eq!(
            transport_line(&r),
            "  transport tcp 2: 1 joined, 1 failed, loss 5.000%, delay p50/p99 5.00/5.00 ms; \
             udp 2: 2 joined, 0 failed, loss 0.000%, delay p50/p99 2.00/3.00 ms"
        );
        // Without TCP viewers there is no split.
        b.viewers.retain(|id, _| id % 2 == 1);
        joined.viewers.retain(|id, _| id % 2 == 1);
        assert_eq!(transport_report(&joined, &a, &b, &[1, 3]), None);
    }
}
