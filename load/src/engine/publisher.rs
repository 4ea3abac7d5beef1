//! A synthetic publisher's schedule: which RTP packets are due at an instant.
//!
//! Video frames come at the frame rate (as an encoder emits them), with a keyframe every
//! `keyframe_interval` frames and on request (PLI). Frame sizes average the target
//! bitrate, keyframes being `keyframe_ratio` times a delta frame. A frame's packets leave
//! either as one burst or through a pacer, as browsers send them: a leaky bucket at
//! `pace_kbps`. Audio is one Opus packet every 20 ms and is never paced. Time is an
//! argument: no clock reads, no I/O.
//!
//! A simulcast publisher sends the three layers of [`crate::simulcast::LAYERS`] at each
//! frame tick, each its own RTP stream (sequence numbers, timestamps, VP8 PictureID and
//! temporal pattern) with its share of the bitrate, through the one pacer. Periodic
//! keyframes come on all layers at once; a request names the layers it wants one on.

use crate::payload::{opus_packet, video_frame, FrameSpec, Layered, VideoCodec};
use crate::simulcast::{layer_kbps, temporal_weight, TemporalPattern, LAYERS};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Video parameters of a publisher.
#[derive(Clone, Copy, Debug)]
pub struct VideoPlan {
    /// Codec.
    pub codec: VideoCodec,
    /// Target bitrate, kbit/s.
    pub kbps: u32,
    /// Frames per second.
    pub fps: u32,
    /// A keyframe every this many frames.
    pub keyframe_interval: u32,
    /// Keyframe size relative to a delta frame.
    pub keyframe_ratio: u32,
    /// Largest RTP payload.
    pub max_payload: usize,
    /// Pacing rate in kbit/s for the frames' packets; 0 sends each frame as one burst.
    pub pace_kbps: u32,
    /// Send the three simulcast layers (VP8 with temporal layers) instead of one stream;
    /// `kbps` is then their sum.
    pub simulcast: bool,
}

impl VideoPlan {
    /// (keyframe bytes, delta-frame bytes) of a stream of `kbps` (the plan's, or one
    /// simulcast layer's share), averaging the bitrate over a keyframe interval.
    pub fn frame_sizes(&self, kbps: u32) -> (usize, usize) {
        let avg = f64::from(kbps) * 1000.0 / 8.0 / f64::from(self.fps.max(1));
        let n = f64::from(self.keyframe_interval.max(1));
        let ratio = f64::from(self.keyframe_ratio.max(1));
        let delta = avg * n / (n - 1.0 + ratio);
        ((delta * ratio) as usize, delta as usize)
    }
}

/// Keyframe requests for every layer (a PLI whose SSRC names none of them in particular).
pub const ALL_LAYERS: u8 = 0xff;

/// Audio parameters of a publisher.
#[derive(Clone, Copy, Debug)]
pub struct AudioPlan {
    /// Opus packet size in bytes (every 20 ms).
    pub bytes: usize,
    /// Who talks: publisher `index` of `count` is loud during its turn of `turn_secs`
    /// (turns follow the wall clock, so all publishers of a run agree) and quiet otherwise.
    pub talk: Talk,
}

/// One publisher's place in the turn-taking that drives its audio levels.
#[derive(Clone, Copy, Debug)]
pub struct Talk {
    /// This publisher's turn number.
    pub index: u32,
    /// Publishers taking turns.
    pub count: u32,
    /// Length of a turn.
    pub turn_secs: f64,
}

impl Talk {
    /// Audio level (RFC 6464: V flag and -dBov) of packet `n` at wall-clock time `now_ns`:
    /// about -28 dBov with voice activity during this publisher's turn, about -95 dBov
    /// without otherwise.
    pub fn level(&self, now_ns: u64, n: u32) -> u8 {
        let turn = (now_ns as f64 / 1e9 / self.turn_secs.max(0.02)) as u64;
        if turn % u64::from(self.count.max(1)) == u64::from(self.index) {
            0x80 | (25 + (n % 7) as u8)
        } else {
            90 + (n % 10) as u8
        }
    }
}

/// What a publisher sends.
#[derive(Clone, Copy, Debug)]
pub struct PublisherPlan {
    /// Its index in the run (carried in every stamp).
    pub stream: u16,
    /// Video, if any.
    pub video: Option<VideoPlan>,
    /// Audio, if any.
    pub audio: Option<AudioPlan>,
}

/// One packet to write: on the video track or not, header fields and payload.
pub struct Outgoing {
    /// Video track (else audio).
    pub video: bool,
    /// Simulcast layer (the video encoding's index; 0 for a plain stream or audio).
    pub layer: u8,
    /// Marker bit.
    pub marker: bool,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Sequence number.
    pub seq: u16,
    /// Payload (its stamp's send time is set just before the packet is written).
    pub payload: Vec<u8>,
    /// Audio level for the audio-level header extension (audio only).
    pub audio_level: Option<u8>,
}

/// The running schedule of one publisher.
pub struct Schedule {
    plan: PublisherPlan,
    start: Option<Instant>,
    next_frame: Instant,
    frame: u32,
    /// Offsets this publisher's periodic keyframes from other publishers'.
    keyframe_phase: u32,
    /// Offsets this publisher's frame and audio clocks from other publishers'.
    start_offset: Duration,
    /// One RTP stream per simulcast layer, or the one plain stream.
    streams: Vec<VideoStream>,
    /// Video packets waiting for the pacer.
    paced: VecDeque<Outgoing>,
    /// When the pacer may send the next packet.
    pace_next: Instant,
    next_audio: Instant,
    audio_n: u32,
    audio_seq: u16,
    audio_ts: u32,
    /// Keyframes sent.
    pub keyframes: u64,
    /// Keyframes sent per layer (a plain stream counts as layer 0).
    pub keyframes_by_layer: [u64; 3],
    /// Keyframe requests received.
    pub requests: u64,
}

/// One outgoing video RTP stream: a simulcast layer or the plain stream.
struct VideoStream {
    /// Layer index (0 for a plain stream).
    layer: u8,
    kbps: u32,
    width: u16,
    height: u16,
    seq: u16,
    ts: u32,
    /// VP8 temporal layering (simulcast layers only).
    temporal: Option<TemporalPattern>,
    keyframe_pending: bool,
}

impl VideoStream {
    fn new(layer: u8, kbps: u32, (width, height): (u16, u16), layered: bool) -> Self {
        VideoStream {
            layer,
            kbps,
            width,
            height,
            seq: rand::random(),
            ts: rand::random(),
            temporal: layered.then(|| TemporalPattern::new(rand::random(), rand::random())),
            keyframe_pending: true,
        }
    }
}

fn video_streams(plan: Option<VideoPlan>) -> Vec<VideoStream> {
    match plan {
        Some(v) if v.simulcast => layer_kbps(v.kbps)
            .iter()
            .zip(LAYERS)
            .enumerate()
            .map(|(i, (&kbps, l))| VideoStream::new(i as u8, kbps, (l.width, l.height), true))
            .collect(),
        Some(v) => vec![VideoStream::new(0, v.kbps, (640, 360), false)],
        None => Vec::new(),
    }
}

/// Falling this far behind resets the schedule instead of catching up with a burst.
const MAX_LAG: Duration = Duration::from_millis(200);

impl Schedule {
    /// A schedule that starts sending at the first [`Schedule::due`] call. Publishers get
    /// random frame-clock and keyframe phases, as independent encoders would have, so their
    /// bursts do not line up.
    pub fn new(plan: PublisherPlan, now: Instant) -> Self {
        let fps = plan.video.map_or(50, |v| v.fps.max(1));
        let interval = plan.video.map_or(1, |v| v.keyframe_interval.max(1));
        Schedule {
            plan,
            start: None,
            next_frame: now,
            frame: 0,
            keyframe_phase: rand::random::<u32>() % interval,
            start_offset: Duration::from_secs(1) / fps * (rand::random::<u32>() % 1000) / 1000,
            streams: video_streams(plan.video),
            paced: VecDeque::new(),
            pace_next: now,
            next_audio: now,
            audio_n: 0,
            audio_seq: rand::random(),
            audio_ts: rand::random(),
            keyframes: 0,
            keyframes_by_layer: [0; 3],
            requests: 0,
        }
    }

    /// A keyframe was asked for on the layers whose bits are set in `layers` (bit 0 = the
    /// lowest or the plain stream; [`ALL_LAYERS`] for all): their next frame is one.
    pub fn request_keyframe(&mut self, layers: u8) {
        self.requests += 1;
        for s in &mut self.streams {
            if layers & (1 << s.layer) != 0 {
                s.keyframe_pending = true;
            }
        }
    }

    /// The earliest instant something is due (None before the first call to `due`).
    pub fn next_due(&self) -> Option<Instant> {
        self.start?;
        let v = self.plan.video.map(|_| match self.paced.is_empty() {
            true => self.next_frame,
            false => self.next_frame.min(self.pace_next),
        });
        let a = self.plan.audio.map(|_| self.next_audio);
        match (v, a) {
            (Some(v), Some(a)) => Some(v.min(a)),
            (v, a) => v.or(a),
        }
    }

    /// Packets due at `now`; `send_ns` (wall clock) is the send time stamped into them and
    /// picks the audio level's turn.
    pub fn due(&mut self, now: Instant, send_ns: u64, out: &mut Vec<Outgoing>) {
        if self.start.is_none() {
            self.start = Some(now);
            self.next_frame = now + self.start_offset;
            self.next_audio = now + self.start_offset;
        }
        if let Some(v) = self.plan.video {
            let interval = Duration::from_secs(1) / v.fps.max(1);
            if now.saturating_duration_since(self.next_frame) > MAX_LAG {
                self.next_frame = now;
            }
            while self.next_frame <= now {
                if v.pace_kbps == 0 {
                    self.video_frame(&v, send_ns, out);
                } else {
                    if self.paced.is_empty() {
                        // An idle bucket holds no credit from the past.
                        self.pace_next = self.pace_next.max(now);
                    }
                    let mut frame = Vec::new();
                    self.video_frame(&v, send_ns, &mut frame);
                    self.paced.extend(frame);
                }
                self.next_frame += interval;
            }
            self.pace(&v, now, out);
        }
        if let Some(a) = self.plan.audio {
            let interval = Duration::from_millis(20);
            if now.saturating_duration_since(self.next_audio) > MAX_LAG {
                self.next_audio = now;
            }
            while self.next_audio <= now {
                let payload = opus_packet(a.bytes, self.plan.stream, self.audio_n, send_ns);
                out.push(Outgoing {
                    video: false,
                    layer: 0,
                    marker: self.audio_n == 0,
                    timestamp: self.audio_ts,
                    seq: self.audio_seq,
                    payload,
                    audio_level: Some(a.talk.level(send_ns, self.audio_n)),
                });
                self.audio_n = self.audio_n.wrapping_add(1);
                self.audio_seq = self.audio_seq.wrapping_add(1);
                self.audio_ts = self.audio_ts.wrapping_add(960);
                self.next_audio += interval;
            }
        }
    }

    /// Moves the paced packets whose time has come to `out`, one packet's worth of time at
    /// the pacing rate apart.
    fn pace(&mut self, v: &VideoPlan, now: Instant, out: &mut Vec<Outgoing>) {
        let bytes_per_sec = f64::from(v.pace_kbps.max(1)) * 1000.0 / 8.0;
        while self.pace_next <= now {
            let Some(o) = self.paced.pop_front() else {
                break;
            };
            // RTP, SRTP and UDP/IP headers count too, as in a sender's pacer.
            let wire = o.payload.len() + 12 + 16 + 28;
            self.pace_next += Duration::from_secs_f64(wire as f64 / bytes_per_sec);
            out.push(o);
        }
    }

    fn video_frame(&mut self, v: &VideoPlan, send_ns: u64, out: &mut Vec<Outgoing>) {
        let periodic = self
            .frame
            .wrapping_add(self.keyframe_phase)
            .is_multiple_of(v.keyframe_interval.max(1));
        for s in &mut self.streams {
            let keyframe = s.keyframe_pending || periodic;
            s.keyframe_pending = false;
            if keyframe {
                self.keyframes += 1;
                if let Some(k) = self.keyframes_by_layer.get_mut(usize::from(s.layer)) {
                    *k += 1;
                }
            }
            let vp8 = s.temporal.as_mut().map(|t| t.next(keyframe));
            let (key_size, delta_size) = v.frame_sizes(s.kbps);
            let size = match (keyframe, vp8) {
                (true, _) => key_size,
                (false, Some(l)) => (delta_size as f64 * temporal_weight(l.tid)) as usize,
                (false, None) => delta_size,
            };
            let packets = video_frame(&FrameSpec {
                codec: v.codec,
                keyframe,
                size,
                max_payload: v.max_payload,
                stream: self.plan.stream,
                frame: self.frame,
                send_ns,
                width: s.width,
                height: s.height,
                layered: vp8.map(|vp8| Layered {
                    spatial: s.layer,
                    vp8,
                }),
            });
            let last = packets.len().saturating_sub(1);
            for (i, p) in packets.into_iter().enumerate() {
                out.push(Outgoing {
                    video: true,
                    layer: s.layer,
                    marker: i == last,
                    timestamp: s.ts,
                    seq: s.seq,
                    payload: p,
                    audio_level: None,
                });
                s.seq = s.seq.wrapping_add(1);
            }
            s.ts = s.ts.wrapping_add(90_000 / v.fps.max(1));
        }
        self.frame = self.frame.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Stamp;

    fn plan() -> PublisherPlan {
        PublisherPlan {
            stream: 1,
            video: Some(VideoPlan {
                codec: VideoCodec::Vp8,
                kbps: 2500,
                fps: 30,
                keyframe_interval: 60,
                keyframe_ratio: 5,
                max_payload: 1100,
                pace_kbps: 0,
                simulcast: false,
            }),
            audio: Some(AudioPlan {
                bytes: 120,
                talk: Talk {
                    index: 1,
                    count: 3,
                    turn_secs: 1.0,
                },
            }),
        }
    }

    /// Everything a schedule sends in twenty seconds polled every millisecond: ten keyframe
    /// intervals at 30 fps, whatever the random keyframe phase.
    fn twenty_seconds(plan: PublisherPlan) -> Vec<Outgoing> {
        let t0 = Instant::now();
        let mut s = Schedule::new(plan, t0);
        let mut out = Vec::new();
        for ms in 0..20_000 {
            s.due(t0 + Duration::from_millis(ms), 0, &mut out);
        }
        out
    }

    #[test]
    fn twenty_seconds_average_the_bitrate() {
        let out = twenty_seconds(plan());
        let video: Vec<_> = out.iter().filter(|o| o.video).collect();
        let audio = out.len() - video.len();
        assert!((999..=1000).contains(&audio), "{audio}");
        let bytes: usize = video.iter().map(|o| o.payload.len()).sum();
        let kbps = bytes * 8 / 20 / 1000;
        assert!((2450..2650).contains(&kbps), "{kbps} kbit/s");
        let keyframes = video
            .iter()
            .filter(|o| Stamp::find(&o.payload).is_some_and(|s| s.keyframe_start()))
            .count();
        assert!(
            (10..=11).contains(&keyframes),
            "the first frame and one every 60 frames: {keyframes}"
        );
        // Sequence numbers are continuous.
        for pair in video.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq.wrapping_add(1));
        }
    }

    #[test]
    fn a_request_makes_the_next_frame_a_keyframe() {
        let t0 = Instant::now();
        let mut s = Schedule::new(plan(), t0);
        let mut out = Vec::new();
        s.due(t0, 0, &mut out);
        s.due(t0 + Duration::from_millis(34), 0, &mut out);
        out.clear();
        let before = s.keyframes;
        s.request_keyframe(ALL_LAYERS);
        s.due(t0 + Duration::from_millis(68), 0, &mut out);
        let first = out.iter().find(|o| o.video).expect("a frame");
        assert!(Stamp::find(&first.payload).is_some_and(|s| s.keyframe_start()));
        assert_eq!((s.keyframes - before, s.requests), (1, 1));
    }

    #[test]
    fn audio_levels_take_turns() {
        let talk = |index| Talk {
            index,
            count: 3,
            turn_secs: 2.0,
        };
        let at = |secs: u64| secs * 1_000_000_000;
        // Seconds 0-1: turn 0; 2-3: turn 1; 4-5: turn 2; 6-7: turn 0 again.
        assert!(talk(0).level(at(1), 0) & 0x80 != 0);
        assert_eq!(talk(1).level(at(1), 0) & 0x80, 0);
        assert!(talk(1).level(at(3), 5) & 0x80 != 0);
        assert!(talk(0).level(at(7), 9) & 0x80 != 0);
        assert!(talk(2).level(at(5), 0) & 0x7f < 40, "loud is a small -dBov");
        assert!(
            talk(2).level(at(1), 0) & 0x7f >= 90,
            "quiet is a large -dBov"
        );
    }

    #[test]
    fn a_long_stall_does_not_burst() {
        let t0 = Instant::now();
        let mut s = Schedule::new(plan(), t0);
        let mut out = Vec::new();
        s.due(t0, 0, &mut out);
        out.clear();
        s.due(t0 + Duration::from_secs(5), 0, &mut out);
        assert!(out.iter().filter(|o| !o.video).count() <= 1);
    }

    /// The plan, its video paced at 2.5 times its bitrate.
    fn paced_plan() -> PublisherPlan {
        let mut p = plan();
        if let Some(v) = p.video.as_mut() {
            v.pace_kbps = 6250;
        }
        p
    }

    #[test]
    fn the_pacer_spreads_a_keyframe_at_its_rate() {
        let t0 = Instant::now();
        let mut s = Schedule::new(paced_plan(), t0);
        let mut out = Vec::new();
        // Each 1 ms step releases what 6.25 Mbit/s allows: ~0.7 packets of ~1150 B.
        let mut sent_at = Vec::new();
        for ms in 0..=300 {
            out.clear();
            s.due(t0 + Duration::from_millis(ms), 0, &mut out);
            let n = out.iter().filter(|o| o.video).count();
            assert!(n <= 2, "{n} packets at {ms} ms");
            sent_at.extend(std::iter::repeat_n(ms, n));
        }
        // The first frame is a keyframe of 45 packets (5 delta frames' worth): at the
        // pacing rate it takes about 66 ms to leave, instead of one burst.
        let (_, delta) = plan()
            .video
            .map(|v| v.frame_sizes(v.kbps))
            .unwrap_or_default();
        let key_packets = (delta * 5).div_ceil(1100);
        assert_eq!(key_packets, 45);
        let span = sent_at[key_packets - 1] - sent_at[0];
        assert!((60..=72).contains(&span), "keyframe sent over {span} ms");
        // The rate is above the bitrate, so the queue keeps up: by 300 ms everything from
        // the frames of the first ~260 ms has left.
        assert!(
            sent_at.len() >= key_packets + 6 * 9,
            "{} sent",
            sent_at.len()
        );
    }

    #[test]
    fn the_pacer_sends_every_packet_of_a_frame_in_order() {
        let out = twenty_seconds(paced_plan());
        let video: Vec<_> = out.iter().filter(|o| o.video).collect();
        for pair in video.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq.wrapping_add(1));
        }
        let bytes: usize = video.iter().map(|o| o.payload.len()).sum();
        let kbps = bytes * 8 / 20 / 1000;
        assert!((2400..2650).contains(&kbps), "{kbps} kbit/s");
    }

    fn simulcast_plan() -> PublisherPlan {
        let mut p = plan();
        if let Some(v) = p.video.as_mut() {
            (v.simulcast, v.kbps) = (true, 2800);
        }
        p
    }

    fn layer_of(o: &Outgoing) -> (u8, Option<crate::payload::LayerTag>) {
        (o.layer, Stamp::find(&o.payload).and_then(|s| s.layer))
    }

    #[test]
    fn simulcast_layers_split_the_bitrate_each_on_its_own_stream() {
        let out = twenty_seconds(simulcast_plan());
        for (layer, expected_kbps) in [(0u8, 200), (1, 600), (2, 2000)] {
            let video: Vec<_> = out.iter().filter(|o| o.video && o.layer == layer).collect();
            let bytes: usize = video.iter().map(|o| o.payload.len()).sum();
            let kbps = bytes * 8 / 20 / 1000;
            let lo = expected_kbps * 95 / 100;
            assert!(
                (lo..expected_kbps * 110 / 100).contains(&kbps),
                "layer {layer}: {kbps} kbit/s"
            );
            for pair in video.windows(2) {
                assert_eq!(pair[1].seq, pair[0].seq.wrapping_add(1), "layer {layer}");
            }
            assert!(video
                .iter()
                .all(|o| layer_of(o).1.map(|t| t.spatial) == Some(layer)));
            // 30 frames/s, one marker each.
            let frames = video.iter().filter(|o| o.marker).count();
            assert!((599..=600).contains(&frames), "layer {layer}: {frames}");
            let keyframes = video
                .iter()
                .filter(|o| Stamp::find(&o.payload).is_some_and(|s| s.keyframe_start()))
                .count();
            assert!((10..=11).contains(&keyframes), "layer {layer}: {keyframes}");
        }
    }

    #[test]
    fn simulcast_frames_follow_the_temporal_pattern() {
        let out = twenty_seconds(simulcast_plan());
        let tids: Vec<u8> = out
            .iter()
            .filter(|o| o.video && o.layer == 2)
            .filter_map(|o| Stamp::find(&o.payload).filter(|s| s.frame_start()))
            .filter_map(|s| s.layer.map(|l| l.temporal))
            .collect();
        let count = |t| tids.iter().filter(|&&x| x == t).count();
        // Half the frames are T2, a quarter each T0 and T1 (keyframes restart the pattern).
        assert!((295..=305).contains(&count(2)), "{}", count(2));
        assert!((145..=160).contains(&count(0)), "{}", count(0));
        assert!((140..=155).contains(&count(1)), "{}", count(1));
    }

    #[test]
    fn a_request_names_the_layers_that_get_a_keyframe() {
        let t0 = Instant::now();
        let mut s = Schedule::new(simulcast_plan(), t0);
        s.keyframe_phase = 30; // no periodic keyframe in the frames below
        let mut out = Vec::new();
        s.due(t0, 0, &mut out);
        s.due(t0 + Duration::from_millis(34), 0, &mut out);
        assert_eq!(
            s.keyframes_by_layer,
            [1, 1, 1],
            "the first frame of every layer"
        );
        out.clear();
        s.request_keyframe(0b010);
        s.due(t0 + Duration::from_millis(68), 0, &mut out);
        let starts: Vec<(u8, bool)> = out
            .iter()
            .filter(|o| o.video)
            .filter_map(|o| {
                let st = Stamp::find(&o.payload)?;
                st.frame_start().then_some((o.layer, st.keyframe_start()))
            })
            .collect();
        assert!(starts.contains(&(1, true)), "{starts:?}");
        assert!(starts.contains(&(0, false)) && starts.contains(&(2, false)));
        assert_eq!(s.keyframes_by_layer[1] - s.keyframes_by_layer[0], 1);
    }
}
