//! A viewer's receive path in front of its measurements: the capped link its datagrams cross
//! ([`crate::link`]: virtual drops and arrival times) and the congestion feedback it sends
//! about what got through ([`crate::twcc`]).
//!
//! Runs for every datagram, so it must stay cheap: a few comparisons, the transport-wide
//! sequence number read from the clear header, one push into a buffer that does not
//! reallocate once grown. Pure state: datagrams and CLOCK_REALTIME nanoseconds come in,
//! decisions and feedback packets go out; the media thread sends them.

use crate::link::{CappedLink, LinkSpec, UDP_IP_OVERHEAD};
use crate::twcc::{transport_seq, TwccRecorder};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;

/// How a viewer's downlink behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DownlinkPlan {
    /// The capped link its datagrams cross, if any.
    pub cap: Option<LinkSpec>,
    /// The transport-wide-cc extension id its answer negotiated (no feedback without one).
    pub transport_cc_id: Option<u8>,
    /// Milliseconds between congestion feedback packets (0: none).
    pub feedback_ms: u32,
}

/// What a viewer's link and feedback did (counters since it joined).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// RTP datagrams that reached the viewer's link.
    pub rtp_offered: u64,
    /// RTP datagrams the link dropped (its queue was full).
    pub rtp_dropped: u64,
    /// Congestion feedback packets built for the server.
    pub feedbacks: u64,
}

impl LinkCounters {
    /// `self - earlier`, counter by counter.
    pub fn since(&self, earlier: &LinkCounters) -> LinkCounters {
        LinkCounters {
            rtp_offered: self.rtp_offered.saturating_sub(earlier.rtp_offered),
            rtp_dropped: self.rtp_dropped.saturating_sub(earlier.rtp_dropped),
            feedbacks: self.feedbacks.saturating_sub(earlier.feedbacks),
        }
    }

    /// Adds another viewer's counters.
    pub fn add(&mut self, other: &LinkCounters) {
        self.rtp_offered += other.rtp_offered;
        self.rtp_dropped += other.rtp_dropped;
        self.feedbacks += other.feedbacks;
    }
}

/// One viewer's link and feedback state.
#[derive(Debug)]
pub struct Downlink {
    link: Option<CappedLink>,
    twcc: Option<(u8, TwccRecorder)>,
    interval_ns: u64,
    next_feedback_ns: u64,
    /// What it did so far.
    pub counters: LinkCounters,
}

impl Downlink {
    /// A viewer's downlink from `now_ns` on; its feedback names `sender_ssrc`.
    pub fn new(plan: DownlinkPlan, now_ns: u64, sender_ssrc: u32) -> Self {
        let interval_ns = u64::from(plan.feedback_ms) * 1_000_000;
        let twcc = plan
            .transport_cc_id
            .filter(|_| interval_ns > 0)
            .map(|id| (id, TwccRecorder::new(now_ns, sender_ssrc)));
        Downlink {
            link: plan.cap.map(CappedLink::new),
            twcc,
            interval_ns,
            next_feedback_ns: now_ns + interval_ns,
            counters: LinkCounters::default(),
        }
    }

    /// Whether a capped link sits in front of this viewer.
    pub fn capped(&self) -> bool {
        self.link.is_some()
    }

    /// A datagram reached the viewer's socket at `arrival_ns` (`ssrc`: it is RTP). False when
    /// the link dropped it; otherwise an RTP packet's transport-wide sequence number is
    /// recorded with the time it left the link.
    pub fn on_datagram(&mut self, data: &[u8], ssrc: Option<u32>, arrival_ns: u64) -> bool {
        let rtp = ssrc.is_some();
        self.counters.rtp_offered += u64::from(rtp);
        let arrival = match &mut self.link {
            Some(link) => match link.offer(arrival_ns, data.len() + UDP_IP_OVERHEAD) {
                Some(departure) => departure,
                None => {
                    self.counters.rtp_dropped += u64::from(rtp);
                    return false;
                }
            },
            None => arrival_ns,
        };
        if let (Some(ssrc), Some((id, recorder))) = (ssrc, &mut self.twcc) {
            if let Some(seq) = transport_seq(data, *id) {
                recorder.record(seq, ssrc, arrival);
            }
        }
        true
    }

    /// Whether a feedback is due at `now_ns`.
    pub fn feedback_due(&self, now_ns: u64) -> bool {
        self.twcc.is_some() && now_ns >= self.next_feedback_ns
    }

    /// The feedback due at `now_ns` (about everything that left the link by then), if
    /// anything arrived since the last one.
    pub fn feedback(&mut self, now_ns: u64) -> Option<TransportLayerCc> {
        if !self.feedback_due(now_ns) {
            return None;
        }
        // Keep the cadence (rounds come a few ms late), but never catch up in a burst.
        self.next_feedback_ns += self.interval_ns;
        if self.next_feedback_ns <= now_ns {
            self.next_feedback_ns = now_ns + self.interval_ns;
        }
        let fb = self.twcc.as_mut()?.1.feedback(now_ns)?;
        self.counters.feedbacks += 1;
        Some(fb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::convert_twcc;
    use rtc::shared::marshal::Marshal;

    const T0: u64 = 1_000_000_000_000;
    const MS: u64 = 1_000_000;
    const TWCC_ID: u8 = 3;

    /// An RTP datagram of `len` bytes with transport-wide sequence number `seq`.
    fn rtp(seq: u16, len: usize) -> Vec<u8> {
        let mut h = rtc::rtp::Header {
            version: 2,
            extension: true,
            extension_profile: 0xbede,
            ssrc: 77,
            ..Default::default()
        };
        h.set_extension(TWCC_ID, bytes::Bytes::copy_from_slice(&seq.to_be_bytes()))
            .expect("ext");
        let mut p = h.marshal().expect("marshal").to_vec();
        p.resize(len, 0);
        p
    }

    fn plan(cap: Option<LinkSpec>) -> DownlinkPlan {
        DownlinkPlan {
            cap,
            transport_cc_id: Some(TWCC_ID),
            feedback_ms: 50,
        }
    }

    #[test]
    fn an_uncapped_viewer_reports_kernel_arrival_times() {
        let mut d = Downlink::new(plan(None), T0, 1);
        assert!(!d.capped());
        for i in 0..10u16 {
            assert!(d.on_datagram(&rtp(i, 1200), Some(77), T0 + u64::from(i) * MS));
        }
        assert!(d.on_datagram(&[22; 100], None, T0), "DTLS passes");
        assert!(!d.feedback_due(T0 + 49 * MS));
        assert!(d.feedback(T0 + 49 * MS).is_none());
        let fb = d.feedback(T0 + 50 * MS).expect("feedback");
        let acks = convert_twcc(&fb);
        assert_eq!(acks.len(), 10);
        assert!(acks.iter().all(|a| a.arrived));
        assert!(!d.feedback_due(T0 + 99 * MS), "the next one is 50 ms later");
        assert!(d.feedback(T0 + 100 * MS).is_none(), "nothing new arrived");
        // A late round keeps the cadence; a stall does not make a burst.
        assert!(d.feedback_due(T0 + 153 * MS));
        d.feedback(T0 + 153 * MS);
        assert!(d.feedback_due(T0 + 200 * MS));
        d.feedback(T0 + 1000 * MS);
        assert!(!d.feedback_due(T0 + 1049 * MS) && d.feedback_due(T0 + 1050 * MS));
        assert_eq!(
            d.counters,
            LinkCounters {
                rtp_offered: 10,
                rtp_dropped: 0,
                feedbacks: 1
            }
        );
    }

    #[test]
    fn a_capped_viewer_drops_and_reports_departures() {
        // 1000 kbit/s, 20 ms queue: 1222 + 28 bytes take 10 ms. Twenty packets in one burst:
        // the first passes at once, the second 8 ms later (the bucket held 250 bytes beyond
        // the first), the third 10 ms after that; the fourth would wait 28 ms.
        let cap = LinkSpec {
            kbps: 1000,
            queue_ms: 20,
        };
        let mut d = Downlink::new(plan(Some(cap)), T0, 1);
        assert!(d.capped());
        let passed: Vec<bool> = (0..20u16)
            .map(|i| d.on_datagram(&rtp(i, 1222), Some(77), T0))
            .collect();
        assert_eq!(passed.iter().filter(|p| **p).count(), 3);
        assert_eq!(d.counters.rtp_dropped, 17);
        // Only what left the link by `now` is reported; the rest waits for the next one.
        let fb = d.feedback(T0 + 50 * MS).expect("feedback");
        let arrivals: Vec<_> = convert_twcc(&fb)
            .iter()
            .map(|a| a.arrival.map(|t| t.as_micros()))
            .collect();
        assert_eq!(arrivals, [Some(0), Some(8_000), Some(18_000)]);
    }

    #[test]
    fn no_feedback_without_a_negotiated_id_or_interval() {
        for p in [
            DownlinkPlan {
                transport_cc_id: None,
                ..plan(None)
            },
            DownlinkPlan {
                feedback_ms: 0,
                ..plan(None)
            },
        ] {
            let mut d = Downlink::new(p, T0, 1);
            assert!(d.on_datagram(&rtp(1, 500), Some(77), T0));
            assert!(!d.feedback_due(T0 + 10_000 * MS));
            assert!(d.feedback(T0 + 10_000 * MS).is_none());
        }
    }
}
