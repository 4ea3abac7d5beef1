//! Loss, jitter, round-trip time and NACK figures from the RTCP a connection receives.
//!
//! The stack's own statistics do not carry receiver-report figures through (they stay at
//! their defaults), so Parley reads the reception reports and NACKs itself. Pure: the
//! packets, a slot lookup and the clocks come in as arguments.

use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// The NACK responder's send buffer: NACKed packets older than this are not resent.
pub const SEND_BUFFER: u16 = 1024;

/// Figures gathered since they were last taken.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RtcpFigures {
    /// Packets the remote asked to be resent.
    pub nacked: u64,
    /// Of those, the ones still in the send buffer (so the responder resent them).
    pub retransmitted: u64,
    /// Fraction lost (0..1) per reception report.
    pub loss: Vec<f64>,
    /// Interarrival jitter (s) per reception report.
    pub jitter: Vec<f64>,
    /// Round-trip time (s) per reception report that echoes a sender report.
    pub rtt: Vec<f64>,
}

/// The 64-bit NTP time of `wall` (what a sender report carries).
pub fn ntp_full(wall: SystemTime) -> u64 {
    let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The middle 32 bits of the NTP time of `wall` (what LSR echoes).
pub fn ntp_middle(wall: SystemTime) -> u32 {
    let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (((secs & 0xffff) << 16) | (frac >> 16)) as u32
}

impl RtcpFigures {
    /// Reads one RTCP compound. `lookup(ssrc)` gives, for a stream Parley sends, its clock
    /// rate and the last sequence number sent.
    pub fn observe(
        &mut self,
        packets: &[Box<dyn rtc::rtcp::Packet>],
        lookup: impl Fn(u32) -> Option<(u32, Option<u16>)>,
        wall: SystemTime,
    ) {
        for p in packets {
            let any = p.as_any();
            let reports: &[ReceptionReport] = if let Some(rr) = any.downcast_ref::<ReceiverReport>()
            {
                &rr.reports
            } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
                &sr.reports
            } else {
                &[]
            };
            for r in reports {
                let Some((clock, _)) = lookup(r.ssrc) else {
                    continue;
                };
                self.loss.push(f64::from(r.fraction_lost) / 256.0);
                self.jitter
                    .push(f64::from(r.jitter) / f64::from(clock.max(1)));
                if r.last_sender_report != 0 {
                    let units = ntp_middle(wall)
                        .wrapping_sub(r.last_sender_report)
                        .wrapping_sub(r.delay);
                    let rtt = f64::from(units) / 65536.0;
                    // A wrapped (negative) difference is a clock glitch, not a 18-hour RTT.
                    if rtt < 60.0 {
                        self.rtt.push(rtt);
                    }
                }
            }
            if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                let last = lookup(nack.media_ssrc).and_then(|(_, last)| last);
                for pair in &nack.nacks {
                    for seq in pair.packet_list() {
                        self.nacked += 1;
                        if last.is_some_and(|l| l.wrapping_sub(seq) < SEND_BUFFER) {
                            self.retransmitted += 1;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;
    use std::time::Duration;

    fn lookup(ssrc: u32) -> Option<(u32, Option<u16>)> {
        (ssrc == 7).then_some((90_000, Some(5000)))
    }

    #[test]
    fn reports_give_loss_jitter_and_rtt() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let sent = wall - Duration::from_millis(150);
        let rr = ReceiverReport {
            ssrc: 1,
            reports: vec![
                ReceptionReport {
                    ssrc: 7,
                    fraction_lost: 64,
                    jitter: 900,
                    last_sender_report: ntp_middle(sent),
                    delay: 65536 / 20, // 50 ms held by the receiver
                    ..Default::default()
                },
                ReceptionReport {
                    ssrc: 99,
                    fraction_lost: 255,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let mut f = RtcpFigures::default();
        f.observe(&[Box::new(rr)], lookup, wall);
        assert_eq!(f.loss, vec![0.25]);
        assert_eq!(f.jitter, vec![0.01]);
        assert_eq!(f.rtt.len(), 1);
        assert!((f.rtt[0] - 0.100).abs() < 0.001, "{:?}", f.rtt);
    }

    #[test]
    fn nacks_count_and_estimate_retransmissions() {
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 7,
            nacks: vec![
                NackPair {
                    packet_id: 4990,
                    lost_packets: 0b11,
                },
                NackPair {
                    packet_id: 1000,
                    lost_packets: 0,
                },
            ],
        };
        let mut f = RtcpFigures::default();
        f.observe(&[Box::new(nack)], lookup, SystemTime::now());
        assert_eq!(f.nacked, 4);
        assert_eq!(
            f.retransmitted, 3,
            "seq 1000 fell out of the 1024-packet buffer"
        );
    }
}
