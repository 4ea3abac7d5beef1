//! A capped downlink: a token-bucket bottleneck with a drop-tail queue, in virtual time.
//!
//! Nothing is delayed for real: for each datagram that reaches a capped viewer's socket,
//! [`CappedLink::offer`] says when it would have left the bottleneck (its arrival time as the
//! viewer reports it in congestion feedback) or that the queue was full and it was dropped.
//! The bucket fills at the link rate and holds one MTU, so a packet that finds the link idle
//! passes at once and a burst queues behind it. A packet whose wait (queueing plus its own
//! transmission beyond the bucket) would exceed the queue bound is dropped and takes no
//! tokens. Pure: times come in as nanoseconds (any clock, as long as it is one clock).

/// Bytes one datagram costs the link beyond its UDP payload (IPv4 20 + UDP 8).
pub const UDP_IP_OVERHEAD: usize = 28;

/// Bucket depth: one Ethernet MTU, so an idle link passes any single datagram at once.
const BUCKET_BYTES: u64 = 1500;

/// The link's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkSpec {
    /// Rate, kbit/s (1000 bit/s units).
    pub kbps: u32,
    /// Longest a packet may wait in the queue, ms; one that would wait longer is dropped.
    pub queue_ms: u32,
}

/// One capped link's state.
#[derive(Clone, Debug)]
pub struct CappedLink {
    /// Nanoseconds of transmission per byte, scaled by 1000 (ps per byte).
    ps_per_byte: u64,
    /// The bucket's depth as transmission time, ns.
    burst_ns: u64,
    /// Queue bound, ns.
    queue_ns: u64,
    /// Theoretical arrival time (GCRA): when the link will have sent everything accepted so
    /// far at its rate, ns. Before any packet, 0.
    tat_ns: u64,
}

impl CappedLink {
    /// A link of `spec` (a rate of 0 counts as 1 kbit/s).
    pub fn new(spec: LinkSpec) -> Self {
        // 8 bits per byte / (kbps * 1000 bit/s) = 8e9 / (kbps * 1000) ns = 8e9 ps / kbps.
        let ps_per_byte = 8_000_000_000 / u64::from(spec.kbps.max(1));
        CappedLink {
            ps_per_byte,
            burst_ns: BUCKET_BYTES * ps_per_byte / 1000,
            queue_ns: u64::from(spec.queue_ms) * 1_000_000,
            tat_ns: 0,
        }
    }

    /// Time to send `bytes` at the link rate, ns.
    fn cost_ns(&self, bytes: usize) -> u64 {
        bytes as u64 * self.ps_per_byte / 1000
    }

    /// A datagram of `bytes` (UDP/IP overhead included) reaches the bottleneck at `now_ns`:
    /// its virtual departure (>= `now_ns`), or `None` when the queue drops it.
    pub fn offer(&mut self, now_ns: u64, bytes: usize) -> Option<u64> {
        let tat = self.tat_ns.max(now_ns);
        let cost = self.cost_ns(bytes);
        // It leaves once the bucket holds its bytes: when the link has worked off what was
        // accepted before it, less the bucket's depth.
        let departure = (tat + cost).saturating_sub(self.burst_ns).max(now_ns);
        if departure - now_ns > self.queue_ns {
            return None;
        }
        self.tat_ns = tat + cost;
        Some(departure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn link(kbps: u32, queue_ms: u32) -> CappedLink {
        CappedLink::new(LinkSpec { kbps, queue_ms })
    }

    #[test]
    fn an_idle_link_passes_at_once() {
        let mut l = link(1000, 100);
        assert_eq!(l.offer(5 * MS, 1228), Some(5 * MS));
        // Long after, the bucket is full again.
        assert_eq!(l.offer(500 * MS, 1228), Some(500 * MS));
        // A small packet right behind a large one fits in what is left of the bucket.
        assert_eq!(l.offer(500 * MS, 200), Some(500 * MS));
    }

    #[test]
    fn a_burst_queues_at_the_link_rate() {
        // 1000 kbit/s: 1000 bytes take 8 ms.
        let mut l = link(1000, 100);
        let departures: Vec<u64> = (0..5).map(|_| l.offer(0, 1000).expect("fits")).collect();
        // The first passes at once; the bucket then holds 500 bytes, so the second leaves
        // after 4 ms, then one every 8 ms.
        assert_eq!(departures, [0, 4 * MS, 12 * MS, 20 * MS, 28 * MS]);
    }

    #[test]
    fn the_rate_is_respected_under_overload() {
        // 2 Mbit/s offered for 10 s to a 1 Mbit/s link: 1250-byte packets every 5 ms.
        let mut l = link(1000, 100);
        let (mut sent, mut dropped, mut last) = (0u64, 0u64, 0u64);
        for i in 0..2000u64 {
            let now = i * 5 * MS;
            match l.offer(now, 1250) {
                Some(d) => {
                    assert!(d >= now && d >= last, "FIFO, never before arrival");
                    assert!(d - now <= 100 * MS, "bounded by the queue");
                    sent += 1250;
                    last = d;
                }
                None => dropped += 1,
            }
        }
        let kbps = sent as f64 * 8.0 / (last as f64 / 1e9) / 1000.0;
        assert!((990.0..=1010.0).contains(&kbps), "{kbps} kbit/s");
        let share = dropped as f64 / 2000.0;
        assert!((0.48..=0.52).contains(&share), "dropped {share}");
    }

    #[test]
    fn the_queue_bound_drops_and_a_drop_takes_no_tokens() {
        // 100 kbit/s: 1250 bytes take 100 ms; with a 200 ms queue a burst of three passes.
        let mut l = link(100, 200);
        let burst: Vec<Option<u64>> = (0..4).map(|_| l.offer(0, 1250)).collect();
        // Bucket 1500 B = 120 ms of tokens: the first at once, the second when 1000 more
        // bytes have come in (80 ms), the third 100 ms later; the fourth would wait 280 ms.
        assert_eq!(burst, [Some(0), Some(80 * MS), Some(180 * MS), None]);
        // The drop did not occupy the link: the next packet after the third is scheduled as
        // if the fourth never came.
        assert_eq!(l.offer(180 * MS, 1250), Some(280 * MS));
    }

    #[test]
    fn wait_is_measured_from_each_arrival() {
        let mut l = link(1000, 20);
        // 10 packets of 1000 bytes, one every 4 ms, at twice the link rate: the queue grows
        // by 4 ms per packet until the 20 ms bound drops every other one.
        let waits: Vec<Option<u64>> = (0..10u64)
            .map(|i| l.offer(i * 4 * MS, 1000).map(|d| (d - i * 4 * MS) / MS))
            .collect();
        assert_eq!(
            waits,
            [
                Some(0),
                Some(0),
                Some(4),
                Some(8),
                Some(12),
                Some(16),
                Some(20),
                None,
                Some(20),
                None
            ]
        );
    }
}
