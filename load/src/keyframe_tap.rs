//! An interceptor that lets the server's keyframe requests (PLI, FIR) reach a publisher.
//!
//! The WebRTC stack ends inbound RTCP inside its interceptor chain. A synthetic publisher
//! must answer a PLI with a keyframe, so this interceptor marks exactly those RTCP compounds
//! for delivery to the application and passes everything else through (the same idea as
//! Parley's own `src/transport/keyframe_tap.rs`).

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::time::Instant;

/// Marks inbound RTCP compounds that carry a PLI or FIR with `DeliverToApplication`.
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

/// The media SSRCs the compound's PLIs and FIRs ask a keyframe of (empty: no request).
pub fn keyframe_ssrcs(packets: &[Box<dyn rtc::rtcp::Packet>]) -> Vec<u32> {
    let mut ssrcs = Vec::new();
    for p in packets {
        let any = p.as_any();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            ssrcs.push(pli.media_ssrc);
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            ssrcs.extend(fir.fir.iter().map(|e| e.ssrc));
            if fir.fir.is_empty() {
                ssrcs.push(fir.media_ssrc);
            }
        }
    }
    ssrcs
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            if asks_for_keyframe(packets) {
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
