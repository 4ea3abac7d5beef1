//! Pure accounting: sequence-number continuity per RTP stream and percentiles.
//!
//! No I/O and no clock: counters are fed packet by packet and compared between snapshots.

use serde::Serialize;

/// Continuity of one RTP stream as seen by a viewer, from its sequence numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqTracker {
    /// Extended (wrap-corrected) sequence number of the first packet.
    first: Option<i64>,
    /// Highest extended sequence number seen.
    highest: i64,
    /// Packets received (duplicates included).
    received: u64,
    /// Packets that arrived below the highest sequence number seen (late or duplicate).
    late: u64,
    /// Forward jumps: a packet more than one past the highest.
    gaps: u64,
}

/// Counters of a [`SeqTracker`] at one instant, for differences between two instants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SeqCounters {
    /// Packets the stream should have delivered (highest - first + 1).
    pub expected: u64,
    /// Packets received.
    pub received: u64,
    /// Late or duplicate packets.
    pub late: u64,
    /// Forward jumps in the sequence.
    pub gaps: u64,
}

impl SeqCounters {
    /// `self - earlier`, counter by counter.
    pub fn since(&self, earlier: &SeqCounters) -> SeqCounters {
        SeqCounters {
            expected: self.expected.saturating_sub(earlier.expected),
            received: self.received.saturating_sub(earlier.received),
            late: self.late.saturating_sub(earlier.late),
            gaps: self.gaps.saturating_sub(earlier.gaps),
        }
    }

    /// Adds another stream's counters.
    pub fn add(&mut self, other: &SeqCounters) {
        self.expected += other.expected;
        self.received += other.received;
        self.late += other.late;
        self.gaps += other.gaps;
    }

    /// Packets that never arrived (expected but not received; late ones count as received).
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

impl SeqTracker {
    /// Accounts one packet with sequence number `seq`.
    pub fn on_packet(&mut self, seq: u16) {
        self.received += 1;
        let Some(_) = self.first else {
            self.first = Some(i64::from(seq));
            self.highest = i64::from(seq);
            return;
        };
        // Place `seq` in the 2^16 cycle closest to the highest seen so far.
        let delta = i64::from(seq.wrapping_sub(self.highest as u16) as i16);
        let ext = self.highest + delta;
        if delta > 0 {
            if delta > 1 {
                self.gaps += 1;
            }
            self.highest = ext;
        } else {
            self.late += 1;
        }
    }

    /// Current counters.
    pub fn counters(&self) -> SeqCounters {
        let expected = match self.first {
            Some(first) => (self.highest - first + 1).max(0) as u64,
            None => 0,
        };
        SeqCounters {
            expected,
            received: self.received,
            late: self.late,
            gaps: self.gaps,
        }
    }
}

/// The `p`-th percentile (0..=100) of sorted values, nearest-rank; `None` if empty.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p99 and max of a set of samples (microseconds or milliseconds: the caller's unit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Distribution {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50: Option<u32>,
    /// 99th percentile.
    pub p99: Option<u32>,
    /// Largest sample.
    pub max: Option<u32>,
}

impl Distribution {
    /// Summarises `samples` (sorted in place).
    pub fn of(samples: &mut [u32]) -> Distribution {
        samples.sort_unstable();
        Distribution {
            count: samples.len(),
            p50: percentile(samples, 50.0),
            p99: percentile(samples, 99.0),
            max: samples.last().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(seqs: &[u16]) -> SeqCounters {
        let mut t = SeqTracker::default();
        for &s in seqs {
            t.on_packet(s);
        }
        t.counters()
    }

    #[test]
    fn continuous_stream_has_no_loss() {
        let c = feed(&[10, 11, 12, 13]);
        assert_eq!(
            c,
            SeqCounters {
                expected: 4,
                received: 4,
                late: 0,
                gaps: 0
            }
        );
        assert_eq!(c.lost(), 0);
    }

    #[test]
    fn gaps_count_as_loss_until_filled() {
        let c = feed(&[1, 2, 5, 6]);
        assert_eq!((c.expected, c.received, c.gaps, c.lost()), (6, 4, 1, 2));
        let c = feed(&[1, 2, 5, 3, 4, 6]);
        assert_eq!((c.expected, c.received, c.late, c.lost()), (6, 6, 2, 0));
    }

    #[test]
    fn wraparound_is_continuous() {
        let c = feed(&[65534, 65535, 0, 1]);
        assert_eq!((c.expected, c.received, c.gaps, c.lost()), (4, 4, 0, 0));
        let c = feed(&[65535, 2]);
        assert_eq!((c.expected, c.lost(), c.gaps), (4, 2, 1));
    }

    #[test]
    fn late_packet_across_the_wrap() {
        let c = feed(&[65535, 1, 0]);
        assert_eq!((c.expected, c.received, c.late, c.lost()), (3, 3, 1, 0));
    }

    #[test]
    fn duplicates_are_late_not_loss() {
        let c = feed(&[7, 7, 8]);
        assert_eq!((c.expected, c.received, c.late), (2, 3, 1));
        assert_eq!(c.lost(), 0);
    }

    #[test]
    fn window_difference() {
        let mut t = SeqTracker::default();
        for s in 0..10u16 {
            t.on_packet(s);
        }
        let start = t.counters();
        for s in [10u16, 11, 14, 15] {
            t.on_packet(s);
        }
        let w = t.counters().since(&start);
        assert_eq!((w.expected, w.received, w.lost(), w.gaps), (6, 4, 2, 1));
    }

    #[test]
    fn percentiles_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[5], 99.0), Some(5));
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        let mut s = vec![9, 1, 5, 3];
        let d = Distribution::of(&mut s);
        assert_eq!(
            (d.count, d.p50, d.p99, d.max),
            (4, Some(3), Some(9), Some(9))
        );
    }
}
