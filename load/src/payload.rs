//! Synthetic media payloads: pre-packetized VP8 and H264 frames and Opus packets that look
//! real enough for an SFU's keyframe and codec checks, each carrying a [`Stamp`].
//!
//! The stamp holds the publisher's send time (CLOCK_REALTIME nanoseconds) and frame flags,
//! so a viewer measures one-way delay and sees keyframes without decoding anything. It sits
//! right after each codec's payload header, inside the first 64 bytes of every packet. A
//! simulcast publisher's stamps also carry the packet's spatial and temporal layer, so a
//! viewer counts which layer the server forwards to it.
//! Pure functions: no I/O, no clock reads (the send time is an argument).

/// Marks a stamp inside a payload.
pub const MAGIC: [u8; 4] = *b"PLd1";
/// Encoded size of a stamp.
pub const STAMP_LEN: usize = 20;
/// A viewer looks for the magic this far into a payload.
const SEARCH_WINDOW: usize = 64;

/// Flag: the packet belongs to a keyframe.
pub const FLAG_KEYFRAME: u8 = 1;
/// Flag: the packet is the first of its frame.
pub const FLAG_FRAME_START: u8 = 2;
/// Flag: the packet is audio.
pub const FLAG_AUDIO: u8 = 4;
/// Flag: the stamp carries a [`LayerTag`] (in its otherwise spare sixth byte).
pub const FLAG_LAYERED: u8 = 8;

/// The layers a packet of a simulcast stream belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerTag {
    /// Spatial layer (simulcast encoding) index, 0 = lowest (0..=3).
    pub spatial: u8,
    /// VP8 temporal layer id (0..=3).
    pub temporal: u8,
}

impl LayerTag {
    fn encode(self) -> u8 {
        (self.spatial & 0x0f) | (self.temporal << 4)
    }

    fn decode(b: u8) -> LayerTag {
        LayerTag {
            spatial: b & 0x0f,
            temporal: b >> 4,
        }
    }
}

/// What every synthetic packet carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// `FLAG_*` bits.
    pub flags: u8,
    /// The publisher (stream) index within the run.
    pub stream: u16,
    /// When the publisher handed the packet to its stack (CLOCK_REALTIME, ns).
    pub send_ns: u64,
    /// Frame number (video) or packet number (audio).
    pub frame: u32,
    /// The packet's layers (simulcast publishers only).
    pub layer: Option<LayerTag>,
}

impl Stamp {
    /// Appends the 20-byte encoding.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        match self.layer {
            Some(tag) => {
                out.push(self.flags | FLAG_LAYERED);
                out.push(tag.encode());
            }
            None => {
                out.push(self.flags & !FLAG_LAYERED);
                out.push(0);
            }
        }
        out.extend_from_slice(&self.stream.to_be_bytes());
        out.extend_from_slice(&self.send_ns.to_be_bytes());
        out.extend_from_slice(&self.frame.to_be_bytes());
    }

    /// Decodes a stamp that starts exactly at `bytes[0]`.
    pub fn decode(bytes: &[u8]) -> Option<Stamp> {
        let b = bytes.get(..STAMP_LEN)?;
        if b[..4] != MAGIC {
            return None;
        }
        Some(Stamp {
            flags: b[4] & !FLAG_LAYERED,
            stream: u16::from_be_bytes([b[6], b[7]]),
            send_ns: u64::from_be_bytes(b[8..16].try_into().ok()?),
            frame: u32::from_be_bytes(b[16..20].try_into().ok()?),
            layer: (b[4] & FLAG_LAYERED != 0).then(|| LayerTag::decode(b[5])),
        })
    }

    /// Finds and decodes the stamp in a synthetic payload of any codec.
    pub fn find(payload: &[u8]) -> Option<Stamp> {
        let window = &payload[..payload.len().min(SEARCH_WINDOW)];
        let at = window.windows(MAGIC.len()).position(|w| w == MAGIC)?;
        Stamp::decode(&payload[at..])
    }

    /// Overwrites the send time of the stamp in `payload`; false if there is none.
    pub fn restamp(payload: &mut [u8], send_ns: u64) -> bool {
        let window = &payload[..payload.len().min(SEARCH_WINDOW)];
        let Some(at) = window.windows(MAGIC.len()).position(|w| w == MAGIC) else {
            return false;
        };
        match payload.get_mut(at + 8..at + 16) {
            Some(field) => {
                field.copy_from_slice(&send_ns.to_be_bytes());
                true
            }
            None => false,
        }
    }

    /// Whether the packet starts a keyframe.
    pub fn keyframe_start(&self) -> bool {
        self.flags & (FLAG_KEYFRAME | FLAG_FRAME_START) == FLAG_KEYFRAME | FLAG_FRAME_START
    }

    /// Whether the packet starts a frame.
    pub fn frame_start(&self) -> bool {
        self.flags & FLAG_FRAME_START != 0
    }
}

/// Video codecs the publisher can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    /// VP8 (RFC 7741).
    Vp8,
    /// H264 packetization-mode 1 (RFC 6184): STAP-A and FU-A.
    H264,
}

/// The VP8 payload descriptor's extension fields (RFC 7741 section 4.2) for one frame of a
/// temporally layered stream: I (15-bit PictureID), L (TL0PICIDX) and T (TID, Y).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vp8Layering {
    /// PictureID, 15 bits.
    pub picture_id: u16,
    /// Index of the last base-layer (T0) frame.
    pub tl0_pic_idx: u8,
    /// Temporal layer id.
    pub tid: u8,
    /// Layer sync (Y): the frame depends only on T0 frames.
    pub layer_sync: bool,
}

/// A frame of one simulcast layer: its spatial index and VP8 temporal fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layered {
    /// Spatial layer index (into [`crate::simulcast::LAYERS`]).
    pub spatial: u8,
    /// The descriptor's extension fields.
    pub vp8: Vp8Layering,
}

/// One video frame to packetize.
#[derive(Clone, Copy, Debug)]
pub struct FrameSpec {
    /// Codec.
    pub codec: VideoCodec,
    /// Keyframe or delta frame.
    pub keyframe: bool,
    /// Frame size in bytes (payload bytes over all its packets, roughly).
    pub size: usize,
    /// Largest RTP payload.
    pub max_payload: usize,
    /// Publisher index.
    pub stream: u16,
    /// Frame number.
    pub frame: u32,
    /// Send time (CLOCK_REALTIME ns).
    pub send_ns: u64,
    /// Keyframe dimensions (VP8 keyframe header).
    pub width: u16,
    /// Keyframe height.
    pub height: u16,
    /// Simulcast layer fields; `None` for a plain stream (one-byte VP8 descriptor).
    pub layered: Option<Layered>,
}

fn stamp(spec: &FrameSpec, first: bool) -> Stamp {
    let mut flags = 0;
    if spec.keyframe {
        flags |= FLAG_KEYFRAME;
    }
    if first {
        flags |= FLAG_FRAME_START;
    }
    Stamp {
        flags,
        stream: spec.stream,
        send_ns: spec.send_ns,
        frame: spec.frame,
        layer: spec.layered.map(|l| LayerTag {
            spatial: l.spatial,
            temporal: l.vp8.tid,
        }),
    }
}

/// Pads `p` with a byte pattern up to `len` bytes.
fn fill(p: &mut Vec<u8>, len: usize, seed: u32) {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    while p.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p.push(x as u8);
    }
}

/// How many packets of at most `room` content bytes carry `size` bytes (at least one).
fn packet_count(size: usize, room: usize) -> usize {
    size.div_ceil(room.max(1)).max(1)
}

/// The RTP payloads of one video frame, in send order. Every packet carries a stamp; the
/// first carries the codec's frame or keyframe header so an SFU can recognise a keyframe.
pub fn video_frame(spec: &FrameSpec) -> Vec<Vec<u8>> {
    match spec.codec {
        VideoCodec::Vp8 => vp8_frame(spec),
        VideoCodec::H264 => h264_frame(spec),
    }
}

/// The VP8 payload descriptor: one byte, or six with the layering extension (X; I with
/// a 15-bit PictureID, L, T; N on T2 frames, which nothing references).
fn vp8_descriptor(p: &mut Vec<u8>, start: bool, layering: Option<Vp8Layering>) {
    let s = if start { 0x10 } else { 0x00 };
    let Some(l) = layering else {
        p.push(s); // PID=0
        return;
    };
    let n = if l.tid == 2 { 0x20 } else { 0x00 };
    p.push(0x80 | n | s);
    p.push(0x80 | 0x40 | 0x20); // I, L, T
    p.push(0x80 | ((l.picture_id >> 8) & 0x7f) as u8);
    p.push(l.picture_id as u8);
    p.push(l.tl0_pic_idx);
    p.push((l.tid << 6) | (u8::from(l.layer_sync) << 5));
}

fn vp8_frame(spec: &FrameSpec) -> Vec<Vec<u8>> {
    // Descriptor + stamp; the first packet also has the 3-byte frame tag and, for a
    // keyframe, the start code and dimensions (7 more).
    let layering = spec.layered.map(|l| l.vp8);
    let descriptor = if layering.is_some() { 6 } else { 1 };
    let overhead = descriptor + STAMP_LEN;
    let n = packet_count(spec.size, spec.max_payload.saturating_sub(overhead + 10));
    let per = spec.size / n;
    (0..n)
        .map(|i| {
            let mut p = Vec::with_capacity(spec.max_payload);
            vp8_descriptor(&mut p, i == 0, layering);
            if i == 0 {
                let first_part = (per.min(0x7_ffff)) as u32;
                let tag = (first_part << 5) | (1 << 4) | u32::from(!spec.keyframe);
                p.extend_from_slice(&[tag as u8, (tag >> 8) as u8, (tag >> 16) as u8]);
                if spec.keyframe {
                    p.extend_from_slice(&[0x9d, 0x01, 0x2a]);
                    p.extend_from_slice(&(spec.width & 0x3fff).to_le_bytes());
                    p.extend_from_slice(&(spec.height & 0x3fff).to_le_bytes());
                }
            }
            stamp(spec, i == 0).encode_into(&mut p);
            let target = (overhead + per).max(p.len());
            fill(&mut p, target, spec.frame ^ i as u32);
            p
        })
        .collect()
}

/// SPS and PPS (Constrained Baseline 3.1) plus an unspecified NAL (type 30) with the stamp,
/// in one STAP-A.
fn h264_parameter_sets(spec: &FrameSpec) -> Vec<u8> {
    let sps: &[u8] = &[
        0x67, 0x42, 0xe0, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10,
    ];
    let pps: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
    let mut tagged = vec![0x1e];
    stamp(spec, true).encode_into(&mut tagged);
    let mut p = vec![0x78]; // STAP-A, NRI=3
    for nal in [sps, pps, &tagged[..]] {
        p.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        p.extend_from_slice(nal);
    }
    p
}

fn h264_frame(spec: &FrameSpec) -> Vec<Vec<u8>> {
    let (nal_type, nri) = if spec.keyframe { (5u8, 3u8) } else { (1, 2) };
    let mut out = Vec::new();
    if spec.keyframe {
        out.push(h264_parameter_sets(spec));
    }
    // FU indicator + FU header (+ one slice-header byte in the first fragment) + stamp.
    let overhead = 3 + STAMP_LEN;
    let n = packet_count(spec.size, spec.max_payload.saturating_sub(overhead));
    let per = spec.size / n;
    for i in 0..n {
        let mut p = Vec::with_capacity(spec.max_payload);
        let first_packet = out.is_empty();
        if n == 1 {
            p.push((nri << 5) | nal_type); // single NAL unit
            p.push(0x88);
        } else {
            let mut header = nal_type;
            if i == 0 {
                header |= 0x80;
            }
            if i == n - 1 {
                header |= 0x40;
            }
            p.push((nri << 5) | 28);
            p.push(header);
            if i == 0 {
                p.push(0x88);
            }
        }
        stamp(spec, first_packet).encode_into(&mut p);
        let target = (overhead + per).max(p.len());
        fill(&mut p, target, spec.frame ^ i as u32);
        out.push(p);
    }
    out
}

/// One 20 ms Opus packet of `size` bytes: TOC 0xf8 (CELT FB 20 ms, mono, one frame), stamp,
/// filler.
pub fn opus_packet(size: usize, stream: u16, n: u32, send_ns: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(size.max(1 + STAMP_LEN));
    p.push(0xf8);
    Stamp {
        flags: FLAG_AUDIO | FLAG_FRAME_START,
        stream,
        send_ns,
        frame: n,
        layer: None,
    }
    .encode_into(&mut p);
    fill(&mut p, size, n);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(codec: VideoCodec, keyframe: bool, size: usize) -> FrameSpec {
        FrameSpec {
            codec,
            keyframe,
            size,
            max_payload: 1100,
            stream: 7,
            frame: 42,
            send_ns: 1_700_000_000_123_456_789,
            width: 640,
            height: 360,
            layered: None,
        }
    }

    #[test]
    fn stamp_round_trips() {
        let s = Stamp {
            flags: FLAG_KEYFRAME | FLAG_FRAME_START,
            stream: 65535,
            send_ns: u64::MAX - 1,
            frame: 0xdead_beef,
            layer: None,
        };
        let mut buf = vec![0x10, 1, 2, 3];
        s.encode_into(&mut buf);
        buf.extend_from_slice(&[0; 9]);
        assert_eq!(Stamp::find(&buf), Some(s));
        assert!(s.keyframe_start());
        let mut copy = buf.clone();
        assert!(Stamp::restamp(&mut copy, 42));
        assert_eq!(Stamp::find(&copy).map(|s| s.send_ns), Some(42));
        assert!(!Stamp::restamp(&mut [0u8; 30], 1));
        assert_eq!(Stamp::decode(&buf[4..]), Some(s));
        assert_eq!(Stamp::decode(&buf[5..]), None);
        assert_eq!(Stamp::find(&buf[..10]), None, "truncated stamp");
        assert_eq!(Stamp::find(&[]), None);
    }

    #[test]
    fn vp8_keyframe_is_recognisable_and_sized() {
        let packets = video_frame(&spec(VideoCodec::Vp8, true, 20_000));
        assert!(
            packets.len() >= 19 && packets.len() <= 20,
            "{}",
            packets.len()
        );
        assert!(packets.iter().all(|p| p.len() <= 1100));
        let total: usize = packets.iter().map(Vec::len).sum();
        assert!((20_000..21_000).contains(&total), "{total}");
        let first = &packets[0];
        assert_eq!(first[0], 0x10);
        assert_eq!(first[1] & 1, 0, "P=0 on a keyframe");
        assert_eq!(&first[4..7], &[0x9d, 0x01, 0x2a]);
        assert!(Stamp::find(first).is_some_and(|s| s.keyframe_start()));
        let second = Stamp::find(&packets[1]).expect("every packet is stamped");
        assert!(!second.keyframe_start());
        assert_eq!(second.send_ns, 1_700_000_000_123_456_789);
        assert_eq!(packets[1][0], 0x00);
    }

    #[test]
    fn stamp_carries_the_layer() {
        let s = Stamp {
            flags: FLAG_FRAME_START,
            stream: 1,
            send_ns: 5,
            frame: 9,
            layer: Some(LayerTag {
                spatial: 2,
                temporal: 1,
            }),
        };
        let mut buf = Vec::new();
        s.encode_into(&mut buf);
        assert_eq!(buf[4], FLAG_FRAME_START | FLAG_LAYERED);
        assert_eq!(buf[5], 0x12);
        assert_eq!(Stamp::decode(&buf), Some(s));
        let plain = Stamp { layer: None, ..s };
        buf.clear();
        plain.encode_into(&mut buf);
        assert_eq!((buf[4], buf[5]), (FLAG_FRAME_START, 0));
        assert_eq!(Stamp::decode(&buf), Some(plain));
    }

    fn layered(spatial: u8, tid: u8, layer_sync: bool) -> Option<Layered> {
        Some(Layered {
            spatial,
            vp8: Vp8Layering {
                picture_id: 0x1234,
                tl0_pic_idx: 0xab,
                tid,
                layer_sync,
            },
        })
    }

    #[test]
    fn vp8_layered_keyframe_has_the_extended_descriptor_and_its_size() {
        let mut s = spec(VideoCodec::Vp8, true, 5000);
        (s.width, s.height, s.layered) = (1280, 720, layered(2, 0, false));
        let packets = video_frame(&s);
        let first = &packets[0];
        // X and S; I, L, T; M + 15-bit PictureID; TL0PICIDX; TID 0, Y 0.
        assert_eq!(&first[..6], &[0x90, 0xe0, 0x92, 0x34, 0xab, 0x00]);
        assert_eq!(first[6] & 1, 0, "P=0 on a keyframe");
        assert_eq!(&first[9..12], &[0x9d, 0x01, 0x2a]);
        assert_eq!(u16::from_le_bytes([first[12], first[13]]), 1280);
        assert_eq!(u16::from_le_bytes([first[14], first[15]]), 720);
        let stamp = Stamp::find(first).expect("stamped");
        assert!(stamp.keyframe_start());
        assert_eq!(
            stamp.layer,
            Some(LayerTag {
                spatial: 2,
                temporal: 0
            })
        );
        // Continuation packets repeat the extension fields without S.
        assert_eq!(&packets[1][..6], &[0x80, 0xe0, 0x92, 0x34, 0xab, 0x00]);
        assert!(packets.iter().all(|p| p.len() <= 1100));
        let total: usize = packets.iter().map(Vec::len).sum();
        assert!((5000..5200).contains(&total), "{total}");
    }

    #[test]
    fn vp8_layered_delta_frames_carry_tid_y_and_n() {
        let mut s = spec(VideoCodec::Vp8, false, 400);
        s.layered = layered(0, 2, true);
        let p = &video_frame(&s)[0];
        assert_eq!(p[0], 0xb0, "X, N (T2 is never referenced), S");
        assert_eq!(p[5], 0xa0, "TID 2, Y");
        assert_eq!(p[6] & 1, 1, "P=1 on a delta frame");
        s.layered = layered(0, 1, false);
        let p = &video_frame(&s)[0];
        assert_eq!((p[0], p[5]), (0x90, 0x40));
        assert_eq!(
            Stamp::find(p).and_then(|s| s.layer).map(|l| l.temporal),
            Some(1)
        );
    }

    #[test]
    fn vp8_delta_frame_has_p_bit() {
        let packets = video_frame(&spec(VideoCodec::Vp8, false, 500));
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0][1] & 1, 1);
        assert!(!Stamp::find(&packets[0]).expect("stamped").keyframe_start());
    }

    #[test]
    fn h264_keyframe_starts_with_parameter_sets_then_fu_a() {
        let packets = video_frame(&spec(VideoCodec::H264, true, 5000));
        assert_eq!(packets[0][0] & 0x1f, 24, "STAP-A");
        assert_eq!(packets[0][3] & 0x1f, 7, "SPS first");
        assert!(Stamp::find(&packets[0]).is_some_and(|s| s.keyframe_start()));
        assert_eq!(packets[1][0] & 0x1f, 28, "FU-A");
        assert_eq!(packets[1][1], 0x85, "start of an IDR");
        assert_eq!(packets.last().map(|p| p[1]), Some(0x45), "end of the IDR");
        assert!(packets[1..]
            .iter()
            .all(|p| Stamp::find(p).is_some_and(|s| !s.keyframe_start())));
    }

    #[test]
    fn h264_small_delta_is_a_single_nal() {
        let packets = video_frame(&spec(VideoCodec::H264, false, 300));
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0][0], 0x41);
    }

    #[test]
    fn opus_packet_has_toc_and_stamp() {
        let p = opus_packet(120, 3, 9, 77);
        assert_eq!(p.len(), 120);
        assert_eq!(p[0], 0xf8);
        let s = Stamp::find(&p).expect("stamped");
        assert_eq!((s.stream, s.frame, s.send_ns), (3, 9, 77));
        assert_ne!(s.flags & FLAG_AUDIO, 0);
    }
}
