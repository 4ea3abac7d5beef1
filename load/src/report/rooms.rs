//! What each room of a step forwarded in the window: with `--rooms` above 1, whether the
//! rooms were served alike (one on a busy shard shows here first).

use crate::engine::Snapshot;
use crate::stats::SeqCounters;
use serde::Serialize;

/// One room over a window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoomReport {
    /// Its name.
    pub room: String,
    /// Its viewer sessions.
    pub viewers: usize,
    /// RTP packets its viewers received per second.
    pub forwarded_pps: f64,
    /// Lost / expected packets over its viewers' streams, %.
    pub loss_pct: f64,
}

/// Per room: what its viewers (`ids[r]` for room `rooms[r]`) received between two snapshots
/// `secs` apart.
pub fn room_reports(
    a: &Snapshot,
    b: &Snapshot,
    rooms: &[String],
    ids: &[Vec<u64>],
    secs: f64,
) -> Vec<RoomReport> {
    let secs = secs.max(1e-9);
    rooms
        .iter()
        .zip(ids)
        .map(|(room, ids)| {
            let mut total = SeqCounters::default();
            for id in ids {
                if let Some(v1) = b.viewers.get(id) {
                    let zero = SeqCounters::default();
                    let v0 = a.viewers.get(id).map_or(&zero, |v| &v.counters);
                    total.add(&v1.counters.since(v0));
                }
            }
            RoomReport {
                room: room.clone(),
                viewers: ids.len(),
                forwarded_pps: total.received as f64 / secs,
                loss_pct: match total.expected {
                    0 => 0.0,
                    e => total.lost() as f64 * 100.0 / e as f64,
                },
            }
        })
        .collect()
}

/// The rooms line of a step with more than one room, e.g. `  rooms 2, fwd pkt/s each:
/// bench-1-1 1520, bench-1-2 1518`; with one room, nothing (the row says it all).
pub fn rooms_line(rooms: &[RoomReport]) -> Option<String> {
    if rooms.len() < 2 {
        return None;
    }
    let each: Vec<String> = rooms
        .iter()
        .map(|r| format!("{} {:.0}", r.room, r.forwarded_pps))
        .collect();
    Some(format!(
        "  rooms {}, fwd pkt/s each: {}",
        rooms.len(),
        each.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ViewerSnap;

    fn viewer(received: u64, expected: u64) -> ViewerSnap {
        ViewerSnap::counted(received, expected)
    }

    #[test]
    fn each_room_counts_its_own_viewers() {
        let (mut a, mut b) = (Snapshot::default(), Snapshot::default());
        a.viewers.insert(1, viewer(100, 100));
        b.viewers.insert(1, viewer(300, 300));
        b.viewers.insert(2, viewer(200, 200));
        a.viewers.insert(3, viewer(50, 50));
        b.viewers.insert(3, viewer(140, 150));
        let rooms = ["r-1-1".to_owned(), "r-1-2".to_owned()];
        // Viewer 4 never reached the engine: it counts as a viewer, with nothing received.
        let r = room_reports(&a, &b, &rooms, &[vec![1, 2], vec![3, 4]], 2.0);
        assert_eq!(
            r,
            [
                RoomReport {
                    room: "r-1-1".into(),
                    viewers: 2,
                    forwarded_pps: 200.0,
                    loss_pct: 0.0,
                },
                RoomReport {
                    room: "r-1-2".into(),
                    viewers: 2,
                    forwarded_pps: 45.0,
                    loss_pct: 10.0,
                },
            ]
        );
        assert_eq!(
            rooms_line(&r).as_deref(),
            Some("  rooms 2, fwd pkt/s each: r-1-1 200, r-1-2 45")
        );
        assert_eq!(rooms_line(&r[..1]), None, "one room: no line");
    }
}
