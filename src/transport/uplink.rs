//! A publisher's receive-side feedback, kept by Parley: transport-wide congestion control
//! feedback, NACKs for lost packets and receiver reports.
//!
//! The stack's interceptors make them as they would inside its pipeline (the same
//! `rtc-interceptor` builders with the stack's default settings), but in a chain Parley owns
//! and feeds itself. That lets a publisher's RTP take Parley's own receive path (decrypted in
//! place, never through the stack's handler pipeline) and still be reported on: every RTP
//! packet the connection accepts is fed here once, as it arrives, whichever path opened it.
//! The stack's own chain for a publisher leg keeps none of these, so nothing is reported
//! twice.

use super::peer::{Codec, HeaderExt};
use rtc::interceptor::{
    Interceptor, NackGeneratorBuilder, Packet, RTCPFeedback, RTPHeaderExtension,
    ReceiverReportBuilder, Registry, Slot, StreamInfo, TaggedPacket, TwccReceiverBuilder,
};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::{TransportContext, TransportMessage};
use std::time::Instant;

/// What the uplink reports on and how.
pub struct Uplink {
    chain: Box<dyn Interceptor>,
    /// SSRCs bound so far (a publisher has a handful).
    bound: Vec<u32>,
    /// NACK packets sent so far.
    nacks_sent: u64,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("bound", &self.bound)
            .field("nacks_sent", &self.nacks_sent)
            .finish()
    }
}

impl Default for Uplink {
    fn default() -> Self {
        let chain = Registry::new()
            .with(Slot::NackGenerator, NackGeneratorBuilder::new().build())
            .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build())
            .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
            .build();
        Self {
            chain: Box::new(chain),
            bound: Vec::new(),
            nacks_sent: 0,
        }
    }
}

impl Uplink {
    /// Starts reporting on the stream `ssrc` of a track with `codec` (the negotiated RTCP
    /// feedback says whether it is NACKed) and `extensions` (transport-wide sequence numbers).
    pub fn bind(
        &mut self,
        ssrc: u32,
        codec: &Codec,
        feedback: &[(String, String)],
        extensions: &[HeaderExt],
    ) {
        if self.bound.contains(&ssrc) {
            return;
        }
        self.bound.push(ssrc);
        self.chain.bind_remote_stream(&StreamInfo {
            ssrc,
            payload_type: codec.payload_type,
            mime_type: codec.mime.clone(),
            clock_rate: codec.clock_rate,
            channels: codec.channels,
            sdp_fmtp_line: codec.fmtp.clone(),
            rtcp_feedback: feedback
                .iter()
                .map(|(typ, parameter)| RTCPFeedback {
                    typ: typ.clone(),
                    parameter: parameter.clone(),
                })
                .collect(),
            rtp_header_extensions: extensions
                .iter()
                .map(|e| RTPHeaderExtension {
                    id: u16::from(e.id),
                    uri: e.uri.clone(),
                })
                .collect(),
            ..Default::default()
        });
    }

    /// One RTP packet the connection accepted, at its arrival. Returns it.
    pub fn received(&mut self, now: Instant, packet: rtc::rtp::Packet) -> Option<rtc::rtp::Packet> {
        self.feed(now, Packet::Rtp(packet));
        let mut back = None;
        while let Some(out) = self.chain.poll_read() {
            if let Packet::Rtp(p) = out.message.packet {
                back = Some(p);
            }
        }
        back
    }

    /// Sender reports and the rest of the publisher's RTCP (for the reports' round-trip
    /// fields).
    pub fn rtcp(&mut self, now: Instant, packets: Vec<Box<dyn rtc::rtcp::Packet>>) {
        self.feed(now, Packet::Rtcp(packets));
        while self.chain.poll_read().is_some() {}
    }

    fn feed(&mut self, now: Instant, packet: Packet) {
        let msg = TransportMessage {
            now,
            transport: TransportContext::default(),
            message: packet.into(),
        };
        if let Err(e) = self.chain.handle_read(msg) {
            tracing::debug!("uplink feedback: {e}");
        }
    }

    /// When [`Uplink::handle_timeout`] is next due.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.chain.poll_timeout()
    }

    /// Makes the feedback due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(e) = self.chain.handle_timeout(now) {
            tracing::debug!("uplink feedback timer: {e}");
        }
    }

    /// The next RTCP compound to send the publisher.
    pub fn poll_rtcp(&mut self) -> Option<Vec<Box<dyn rtc::rtcp::Packet>>> {
        loop {
            let out: TaggedPacket = self.chain.poll_write()?;
            if let Packet::Rtcp(packets) = out.message.packet {
                self.nacks_sent += packets
                    .iter()
                    .filter(|p| p.as_any().is::<TransportLayerNack>())
                    .count() as u64;
                if !packets.is_empty() {
                    return Some(packets);
                }
            }
        }
    }

    /// NACK packets sent so far (cumulative).
    pub fn nacks_sent(&self) -> u64 {
        self.nacks_sent
    }
}

#[cfg(test)]
mod tests;
