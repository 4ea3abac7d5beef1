//! What a viewer measures: per-stream continuity from the clear RTP headers of every packet,
//! and, from the decrypted packets, the first keyframe (join time) and one-way delay.
//!
//! Decrypting costs the generator far more than counting, so after a stream's first keyframe
//! only one packet in `sample` goes through the WebRTC stack; the rest are counted from their
//! headers (sequence number and SSRC are not encrypted in SRTP). Pure state: no I/O.

use crate::payload::{Stamp, FLAG_AUDIO};
use crate::stats::{SeqCounters, SeqTracker};

/// How a datagram from the server should be handled (RFC 7983 demultiplexing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// RTP: sequence number and SSRC.
    Rtp {
        /// Sequence number.
        seq: u16,
        /// SSRC.
        ssrc: u32,
    },
    /// STUN, DTLS, RTCP or anything else: always for the stack.
    Other,
}

/// Classifies a datagram by its first bytes.
pub fn classify(data: &[u8]) -> Class {
    if data.len() < 12 || !(128..=191).contains(&data[0]) {
        return Class::Other;
    }
    // RTCP packet types 192..=223 sit where marker + payload type would be.
    if (192..=223).contains(&data[1]) {
        return Class::Other;
    }
    Class::Rtp {
        seq: u16::from_be_bytes([data[2], data[3]]),
        ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
    }
}

#[derive(Debug)]
struct Stream {
    ssrc: u32,
    seq: SeqTracker,
    /// The stack decrypted a packet that showed what this stream needs: an audio packet or a
    /// video keyframe start. Until then every packet is decrypted.
    ready: bool,
    counter: u32,
}

/// One viewer's measurements.
#[derive(Debug)]
pub struct ViewerStats {
    /// When its offer was POSTed (CLOCK_REALTIME ns).
    pub posted_ns: u64,
    /// Whether it expects video (join = first keyframe) or only audio (join = first packet).
    pub expects_video: bool,
    /// Arrival of the first video keyframe (or first audio packet for audio-only viewers).
    pub joined_ns: Option<u64>,
    /// Arrival of the first media packet of any kind (the connection is up and forwarding).
    pub first_media_ns: Option<u64>,
    /// Bytes of RTP received.
    pub bytes: u64,
    /// The socket's kernel drop counter (datagrams the generator failed to read in time).
    pub socket_drops: u32,
    streams: Vec<Stream>,
    sample: u32,
}

impl ViewerStats {
    /// A viewer that decrypts one packet in `sample` after each stream is ready.
    pub fn new(posted_ns: u64, expects_video: bool, sample: u32) -> Self {
        ViewerStats {
            posted_ns,
            expects_video,
            joined_ns: None,
            first_media_ns: None,
            bytes: 0,
            socket_drops: 0,
            streams: Vec::new(),
            sample: sample.max(1),
        }
    }

    /// Accounts one RTP datagram; returns whether the stack should decrypt it.
    pub fn on_rtp(&mut self, seq: u16, ssrc: u32, len: usize) -> bool {
        self.bytes += len as u64;
        let i = match self.streams.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => i,
            None => {
                self.streams.push(Stream {
                    ssrc,
                    seq: SeqTracker::default(),
                    ready: false,
                    counter: 0,
                });
                self.streams.len() - 1
            }
        };
        let s = &mut self.streams[i];
        s.seq.on_packet(seq);
        if !s.ready {
            return true;
        }
        s.counter = s.counter.wrapping_add(1);
        s.counter.is_multiple_of(self.sample)
    }

    /// Takes a decrypted packet's stamp; returns the one-way delay in µs if it is a sample.
    pub fn on_decrypted(&mut self, ssrc: u32, payload: &[u8], arrival_ns: u64) -> Option<u32> {
        let stamp = Stamp::find(payload)?;
        self.first_media_ns.get_or_insert(arrival_ns);
        let audio = stamp.flags & FLAG_AUDIO != 0;
        if let Some(s) = self.streams.iter_mut().find(|s| s.ssrc == ssrc) {
            if audio || stamp.keyframe_start() {
                s.ready = true;
            }
        }
        if self.joined_ns.is_none()
            && ((self.expects_video && stamp.keyframe_start()) || (!self.expects_video && audio))
        {
            self.joined_ns = Some(arrival_ns);
        }
        let delay_ns = arrival_ns.saturating_sub(stamp.send_ns);
        Some((delay_ns / 1000).min(u64::from(u32::MAX)) as u32)
    }

    /// Milliseconds from the POST to `at_ns`, if it happened.
    pub fn since_post_ms(&self, at_ns: Option<u64>) -> Option<f64> {
        at_ns.map(|t| t.saturating_sub(self.posted_ns) as f64 / 1e6)
    }

    /// Sum of all streams' continuity counters.
    pub fn counters(&self) -> SeqCounters {
        let mut total = SeqCounters::default();
        for s in &self.streams {
            total.add(&s.seq.counters());
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{opus_packet, video_frame, FrameSpec, VideoCodec};

    fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        p.extend_from_slice(&ssrc.to_be_bytes());
        p
    }

    #[test]
    fn classifies_rtp_rtcp_stun_dtls() {
        assert_eq!(
            classify(&rtp(7, 0xabcd)),
            Class::Rtp {
                seq: 7,
                ssrc: 0xabcd
            }
        );
        let mut rtcp = rtp(0, 1);
        rtcp[1] = 200; // SR
        assert_eq!(classify(&rtcp), Class::Other);
        assert_eq!(
            classify(&[0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Class::Other
        );
        assert_eq!(classify(&[22; 40]), Class::Other);
        assert_eq!(classify(&[0x80]), Class::Other);
    }

    #[test]
    fn decrypts_everything_until_keyframe_then_samples() {
        let mut v = ViewerStats::new(1_000, true, 4);
        let frame = |keyframe| {
            video_frame(&FrameSpec {
                codec: VideoCodec::Vp8,
                keyframe,
                size: 100,
                max_payload: 1100,
                stream: 0,
                frame: 1,
                send_ns: 5_000_000,
            })
            .remove(0)
        };
        assert!(v.on_rtp(10, 1, 100));
        assert_eq!(v.on_decrypted(1, &frame(false), 6_000_000), Some(1000));
        assert!(v.joined_ns.is_none());
        assert!(v.on_rtp(11, 1, 100), "still waiting for a keyframe");
        assert_eq!(v.on_decrypted(1, &frame(true), 7_000_000), Some(2000));
        assert_eq!(v.joined_ns, Some(7_000_000));
        let fed: Vec<bool> = (12..20).map(|s| v.on_rtp(s, 1, 100)).collect();
        assert_eq!(fed.iter().filter(|f| **f).count(), 2);
        let c = v.counters();
        assert_eq!((c.expected, c.received, c.lost()), (10, 10, 0));
        assert_eq!(v.bytes, 1000);
    }

    #[test]
    fn audio_only_viewer_joins_on_first_audio() {
        let mut v = ViewerStats::new(0, false, 8);
        assert!(v.on_rtp(1, 9, 120));
        let p = opus_packet(120, 0, 1, 10);
        assert_eq!(v.on_decrypted(9, &p, 2_010), Some(2));
        assert_eq!(v.joined_ns, Some(2_010));
        assert_eq!(v.streams.len(), 1);
        assert_eq!(v.on_decrypted(9, b"no stamp here", 5), None);
    }
}
