//! What a viewer measures: per-stream continuity from the clear RTP headers of every packet,
//! and, from the decrypted packets, the first keyframe (join time) and one-way delay.
//!
//! Decrypting costs the generator far more than counting, so after a stream's first keyframe
//! only one packet in `sample` goes through the WebRTC stack; the rest are counted from their
//! headers (sequence number and SSRC are not encrypted in SRTP). Pure state: no I/O.
//!
//! Simulcast runs also count what arrives per layer: with `count_layers`, the first packet
//! of every frame (the one after a packet with the marker bit, also in the clear) is
//! decrypted too, so its stamp tells the frame's spatial and temporal layer; the packets
//! that follow, up to the next frame, are counted for the same spatial layer. Layers change
//! only at frame boundaries (on keyframes), so the attribution is exact when packets
//! arrive in order.

use crate::payload::{Stamp, FLAG_AUDIO};
use crate::stats::{SeqCounters, SeqTracker};

/// How a datagram from the server should be handled (RFC 7983 demultiplexing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// RTP: sequence number, SSRC and marker bit.
    Rtp {
        /// Sequence number.
        seq: u16,
        /// SSRC.
        ssrc: u32,
        /// Marker bit (video: the last packet of a frame).
        marker: bool,
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
        marker: data[1] & 0x80 != 0,
    }
}

/// What a viewer received per simulcast layer, from the layer tags of the stamps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerCounts {
    /// RTP packets per spatial layer (lowest first).
    pub packets: [u64; 3],
    /// Frames per spatial layer and temporal layer id.
    pub frames: [[u64; 3]; 3],
    /// Streams (video slots) on each spatial layer now: a state, not a counter.
    pub streams: [u32; 3],
}

impl LayerCounts {
    /// `self - earlier`, counter by counter (`streams` stays the later state).
    pub fn since(&self, earlier: &LayerCounts) -> LayerCounts {
        let mut d = *self;
        for l in 0..3 {
            d.packets[l] = d.packets[l].saturating_sub(earlier.packets[l]);
            for t in 0..3 {
                d.frames[l][t] = d.frames[l][t].saturating_sub(earlier.frames[l][t]);
            }
        }
        d
    }

    /// Adds another viewer's counts.
    pub fn add(&mut self, other: &LayerCounts) {
        for l in 0..3 {
            self.packets[l] += other.packets[l];
            self.streams[l] += other.streams[l];
            for t in 0..3 {
                self.frames[l][t] += other.frames[l][t];
            }
        }
    }

    /// Frames of spatial layer `l`, all temporal layers.
    pub fn frames_of(&self, l: usize) -> u64 {
        self.frames[l].iter().sum()
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
    /// The previous packet had the marker bit: this one starts a frame.
    after_marker: bool,
    /// The spatial layer of the last decrypted frame start (simulcast streams).
    layer: Option<usize>,
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
    /// Packets and frames per simulcast layer.
    pub layers: LayerCounts,
    streams: Vec<Stream>,
    sample: u32,
    count_layers: bool,
}

impl ViewerStats {
    /// A viewer that decrypts one packet in `sample` after each stream is ready (and each
    /// frame's first packet, with `count_layers`).
    pub fn new(posted_ns: u64, expects_video: bool, sample: u32, count_layers: bool) -> Self {
        ViewerStats {
            posted_ns,
            expects_video,
            joined_ns: None,
            first_media_ns: None,
            bytes: 0,
            socket_drops: 0,
            layers: LayerCounts::default(),
            streams: Vec::new(),
            sample: sample.max(1),
            count_layers,
        }
    }

    /// Accounts one RTP datagram; returns whether the stack should decrypt it.
    pub fn on_rtp(&mut self, seq: u16, ssrc: u32, marker: bool, len: usize) -> bool {
        self.bytes += len as u64;
        let i = match self.streams.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => i,
            None => {
                self.streams.push(Stream {
                    ssrc,
                    seq: SeqTracker::default(),
                    ready: false,
                    counter: 0,
                    after_marker: false,
                    layer: None,
                });
                self.streams.len() - 1
            }
        };
        let s = &mut self.streams[i];
        s.seq.on_packet(seq);
        if let Some(l) = s.layer {
            self.layers.packets[l] += 1;
        }
        let frame_start = std::mem::replace(&mut s.after_marker, marker);
        if !s.ready || (self.count_layers && frame_start) {
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
            if let Some(tag) = stamp.layer.filter(|t| t.spatial < 3) {
                // This packet was just counted for the stream's previous layer, if any.
                let l = usize::from(tag.spatial);
                if s.layer != Some(l) {
                    if let Some(old) = s.layer {
                        self.layers.packets[old] = self.layers.packets[old].saturating_sub(1);
                    }
                    self.layers.packets[l] += 1;
                    s.layer = Some(l);
                }
                if self.count_layers && stamp.frame_start() {
                    self.layers.frames[l][usize::from(tag.temporal.min(2))] += 1;
                }
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

    /// The per-layer counts, with the streams now on each layer.
    pub fn layer_counts(&self) -> LayerCounts {
        let mut c = self.layers;
        for s in &self.streams {
            if let Some(l) = s.layer {
                c.streams[l] += 1;
            }
        }
        c
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
                ssrc: 0xabcd,
                marker: false
            }
        );
        let mut last = rtp(8, 1);
        last[1] |= 0x80;
        assert!(matches!(classify(&last), Class::Rtp { marker: true, .. }));
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
        let mut v = ViewerStats::new(1_000, true, 4, false);
        let frame = |keyframe| {
            video_frame(&FrameSpec {
                codec: VideoCodec::Vp8,
                keyframe,
                size: 100,
                max_payload: 1100,
                stream: 0,
                frame: 1,
                send_ns: 5_000_000,
                width: 640,
                height: 360,
                layered: None,
            })
            .remove(0)
        };
        assert!(v.on_rtp(10, 1, false, 100));
        assert_eq!(v.on_decrypted(1, &frame(false), 6_000_000), Some(1000));
        assert!(v.joined_ns.is_none());
        assert!(v.on_rtp(11, 1, false, 100), "still waiting for a keyframe");
        assert_eq!(v.on_decrypted(1, &frame(true), 7_000_000), Some(2000));
        assert_eq!(v.joined_ns, Some(7_000_000));
        // Marker bits do not matter without count_layers.
        let fed: Vec<bool> = (12..20).map(|s| v.on_rtp(s, 1, true, 100)).collect();
        assert_eq!(fed.iter().filter(|f| **f).count(), 2);
        let c = v.counters();
        assert_eq!((c.expected, c.received, c.lost()), (10, 10, 0));
        assert_eq!(v.bytes, 1000);
    }

    #[test]
    fn audio_only_viewer_joins_on_first_audio() {
        let mut v = ViewerStats::new(0, false, 8, false);
        assert!(v.on_rtp(1, 9, false, 120));
        let p = opus_packet(120, 0, 1, 10);
        assert_eq!(v.on_decrypted(9, &p, 2_010), Some(2));
        assert_eq!(v.joined_ns, Some(2_010));
        assert_eq!(v.streams.len(), 1);
        assert_eq!(v.on_decrypted(9, b"no stamp here", 5), None);
    }

    /// The first packet of a one-packet-per-frame layered stream's frame `n`.
    fn layered_packet(spatial: u8, tid: u8, keyframe: bool) -> Vec<u8> {
        use crate::payload::{Layered, Vp8Layering};
        video_frame(&FrameSpec {
            codec: VideoCodec::Vp8,
            keyframe,
            size: 300,
            max_payload: 1100,
            stream: 0,
            frame: 1,
            send_ns: 0,
            width: 320,
            height: 180,
            layered: Some(Layered {
                spatial,
                vp8: Vp8Layering {
                    picture_id: 1,
                    tl0_pic_idx: 1,
                    tid,
                    layer_sync: false,
                },
            }),
        })
        .remove(0)
    }

    /// Feeds one packet as the media thread does: count it, decrypt it if asked.
    fn feed(v: &mut ViewerStats, seq: u16, marker: bool, payload: &[u8]) -> bool {
        let decrypt = v.on_rtp(seq, 5, marker, payload.len());
        if decrypt {
            v.on_decrypted(5, payload, 1);
        }
        decrypt
    }

    #[test]
    fn counts_packets_and_frames_per_layer() {
        let mut v = ViewerStats::new(0, true, 1000, true);
        let key = layered_packet(0, 0, true);
        // Frame 1 (layer 0 keyframe): two packets, the second with the marker.
        assert!(feed(&mut v, 1, false, &key));
        assert!(!feed(&mut v, 2, true, b"middle"), "sampled out");
        // Frame 2 (layer 0, T2): its first packet is decrypted because of the marker.
        assert!(feed(&mut v, 3, true, &layered_packet(0, 2, false)));
        // The server switches this slot to layer 2 at a keyframe.
        assert!(feed(&mut v, 4, false, &layered_packet(2, 0, true)));
        assert!(!feed(&mut v, 5, false, b"middle"));
        assert!(!feed(&mut v, 6, true, b"end"));
        assert!(feed(&mut v, 7, true, &layered_packet(2, 1, false)));
        assert_eq!(v.layers.packets, [3, 0, 4]);
        assert_eq!(
            v.layer_counts().streams,
            [0, 0, 1],
            "the stream is on layer 2 now"
        );
        assert_eq!(v.layers.frames, [[1, 0, 1], [0, 0, 0], [1, 1, 0]]);
        let before = v.layers;
        assert!(feed(&mut v, 8, true, &layered_packet(2, 2, false)));
        let d = v.layers.since(&before);
        assert_eq!((d.packets, d.frames_of(2)), ([0, 0, 1], 1));
        let mut sum = d;
        sum.add(&before);
        assert_eq!(sum, v.layers);
        assert_eq!(
            v.layer_counts().since(&before).streams,
            [0, 0, 1],
            "a state, not a difference"
        );
    }

    #[test]
    fn plain_streams_have_no_layer_counts() {
        let mut v = ViewerStats::new(0, true, 1000, true);
        let key = video_frame(&FrameSpec {
            codec: VideoCodec::Vp8,
            keyframe: true,
            size: 100,
            max_payload: 1100,
            stream: 0,
            frame: 1,
            send_ns: 0,
            width: 640,
            height: 360,
            layered: None,
        })
        .remove(0);
        feed(&mut v, 1, true, &key);
        feed(&mut v, 2, true, b"x");
        assert_eq!(v.layers, LayerCounts::default());
    }
}
