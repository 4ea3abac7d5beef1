//! What Parley sent on each of a viewer's streams through its own send path, and the RTCP
//! sender reports that describe it (RFC 3550 §6.4.1): receivers need them for lip sync and
//! for round-trip times.

use super::rtcp_figures::ntp_full;
use rtc::rtcp::sender_report::SenderReport;
use std::time::{Instant, SystemTime};

/// One outgoing stream's counters.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SentStream {
    packets: u32,
    octets: u32,
    /// The last sequence number sent, for loss estimates from receiver reports.
    pub(crate) last_seq: Option<u16>,
    /// The newest RTP timestamp sent and when it was sent.
    last_ts: Option<(u32, Instant)>,
}

impl SentStream {
    /// Counts one packet of `payload_len` bytes sent now with `seq` and `ts`.
    pub(crate) fn on_sent(&mut self, seq: u16, ts: u32, payload_len: usize, now: Instant) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload_len as u32);
        let newer = self
            .last_seq
            .is_none_or(|last| (seq.wrapping_sub(last) as i16) > 0);
        if newer {
            self.last_seq = Some(seq);
            if self.last_ts.is_none_or(|(last, _)| last != ts) {
                self.last_ts = Some((ts, now));
            }
        }
    }

    /// The sender report for this stream now, or `None` before its first packet. The RTP
    /// time is the last timestamp advanced by the wall time since it was sent.
    pub(crate) fn report(
        &self,
        ssrc: u32,
        clock_rate: u32,
        now: Instant,
        wall: SystemTime,
    ) -> Option<SenderReport> {
        let (ts, at) = self.last_ts?;
        let elapsed = now.saturating_duration_since(at).as_secs_f64();
        Some(SenderReport {
            ssrc,
            ntp_time: ntp_full(wall),
            rtp_time: ts.wrapping_add((elapsed * f64::from(clock_rate)) as u32),
            packet_count: self.packets,
            octet_count: self.octets,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reports_count_packets_and_extrapolate_the_timestamp() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut s = SentStream::default();
        assert!(s.report(7, 90_000, t0, wall).is_none(), "nothing sent yet");
        s.on_sent(10, 9_000, 1_000, t0);
        s.on_sent(11, 9_000, 500, t0 + Duration::from_millis(5));
        s.on_sent(9, 6_000, 700, t0 + Duration::from_millis(6));
        let sr = s
            .report(7, 90_000, t0 + Duration::from_millis(100), wall)
            .expect("report");
        assert_eq!(sr.ssrc, 7);
        assert_eq!(sr.packet_count, 3);
        assert_eq!(sr.octet_count, 2_200);
        assert_eq!(
            sr.rtp_time,
            9_000 + 9_000,
            "100 ms at 90 kHz past the newest frame"
        );
        assert_eq!(sr.ntp_time >> 32, 1_000 + 2_208_988_800);
        assert_eq!(
            s.last_seq,
            Some(11),
            "a late packet does not move the newest"
        );
    }
}
