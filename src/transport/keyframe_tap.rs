//! An interceptor that lets the RTCP Parley acts on or measures reach it.
//!
//! The WebRTC stack ends inbound RTCP inside its interceptor chain: reports, NACKs and
//! congestion feedback are handled per leg. A viewer's PLI or FIR, though, concerns the
//! publisher's encoder, so Parley must see it to relay a PLI upstream; and receiver reports
//! and NACKs carry the loss, jitter and round-trip figures Parley exports. This interceptor,
//! the last of the chain, marks those compounds for delivery to the application too (the
//! interceptors before it have already acted on them) and passes everything through.

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::time::Instant;

/// Marks inbound RTCP compounds that carry a PLI, FIR, NACK, reception or sender report with
/// `DeliverToApplication`.
#[derive(Default)]
pub struct KeyframeTap {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

/// Whether any packet of the compound asks for a keyframe.
pub fn asks_for_keyframe(packets: &[Box<dyn rtc::rtcp::Packet>]) -> bool {
    packets.iter().any(|p| {
        let any = p.as_any();
        any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
    })
}

/// Whether Parley wants to see this compound: keyframe requests, NACKs, reception reports,
/// congestion feedback (TWCC, REMB: a viewer's downlink estimate), and sender reports (their
/// NTP↔RTP mapping aligns a track's simulcast layers).
pub fn wanted(packets: &[Box<dyn rtc::rtcp::Packet>]) -> bool {
    asks_for_keyframe(packets)
        || packets.iter().any(|p| {
            let any = p.as_any();
            any.is::<TransportLayerNack>()
                || any.is::<TransportLayerCc>()
                || any.is::<ReceiverEstimatedMaximumBitrate>()
                || any
                    .downcast_ref::<ReceiverReport>()
                    .is_some_and(|r| !r.reports.is_empty())
                || any.is::<SenderReport>()
        })
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            if wanted(packets) {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }

    fn close(&mut self) -> Result<(), Error> {
        self.reads.clear();
        self.writes.clear();
        Ok(())
    }
}

impl Interceptor for KeyframeTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
