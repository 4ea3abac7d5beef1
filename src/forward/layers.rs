//! What each layer of a published video track carries: bitrate, frame rate, resolution and
//! liveness, and the layers' spatial order.
//!
//! A publisher's track has one RTP stream, or up to three simulcast layers, each its own
//! SSRC. Their rids say nothing reliable about size (OBS's `0` is the largest layer, a
//! browser's `f`), so layers are ranked by what they carry: the picture size their keyframes
//! announce, else their measured bitrate. An encoder drops layers under CPU or bandwidth
//! pressure; a layer silent for [`SILENT_AFTER`] is unavailable until it sends a keyframe
//! again (a viewer switched onto it could not start decoding before that anyway).
//!
//! The per-packet part ([`LayerSet::on_packet`]) adds to counters and compares; windows roll
//! and liveness is judged on the engine's tick ([`LayerSet::tick`]). No I/O, no clock: time
//! comes in as an argument.

use std::time::{Duration, Instant};

/// A layer without packets for this long is unavailable.
pub const SILENT_AFTER: Duration = Duration::from_millis(1000);

/// Bitrate and frame rate are measured over windows of this length.
pub const WINDOW: Duration = Duration::from_secs(1);

/// One layer of a track.
#[derive(Clone, Debug)]
pub struct Layer {
    /// RTP stream id (`a=rid`), empty without simulcast.
    pub rid: String,
    /// Picture size from the last keyframe, (0, 0) until one was read.
    pub size: (u16, u16),
    /// Bits per second over the last full window.
    pub bitrate: u64,
    /// Frames per second over the last full window.
    pub frame_rate: f32,
    /// Sending now: packets within [`SILENT_AFTER`], and a keyframe after any silence.
    pub live: bool,
    /// Rank among the track's layers, 0 the smallest.
    pub spatial: u8,
    /// Bits per second of each VP8 temporal layer alone over the last full window, when
    /// the layer carries temporal layers (all zero otherwise).
    pub temporal_bitrate: [u64; 3],
    window_temporal: [u64; 3],
    window_start: Option<Instant>,
    window_bytes: u64,
    window_frames: u32,
    last_packet: Option<Instant>,
}

impl Layer {
    fn new(rid: &str) -> Self {
        Layer {
            rid: rid.to_owned(),
            size: (0, 0),
            bitrate: 0,
            frame_rate: 0.0,
            live: false,
            spatial: 0,
            temporal_bitrate: [0; 3],
            window_temporal: [0; 3],
            window_start: None,
            window_bytes: 0,
            window_frames: 0,
            last_packet: None,
        }
    }

    /// Whether the layer carries VP8 temporal layers above the base one.
    pub fn has_temporal_layers(&self) -> bool {
        self.temporal_bitrate[1..].iter().any(|b| *b > 0)
    }

    /// Bits per second when forwarded up to temporal layer `temporal` (the whole layer when
    /// it carries no temporal layers).
    pub fn bitrate_at(&self, temporal: u8) -> u64 {
        if !self.has_temporal_layers() {
            return self.bitrate;
        }
        let upto = usize::from(temporal).min(2);
        self.temporal_bitrate[..=upto].iter().sum()
    }

    fn pixels(&self) -> u32 {
        u32::from(self.size.0) * u32::from(self.size.1)
    }
}

/// The layers of one track, in the order they started (the transport's layer indexes).
#[derive(Clone, Debug, Default)]
pub struct LayerSet {
    layers: Vec<Layer>,
}

impl LayerSet {
    /// No layers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A layer started; its index is the next one.
    pub fn add(&mut self, rid: &str) {
        self.layers.push(Layer::new(rid));
        self.rank();
    }

    /// The layers by index.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// How many layers the track has.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether the track has no layer yet.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Whether this is a simulcast track (more than one layer).
    pub fn simulcast(&self) -> bool {
        self.layers.len() > 1
    }

    /// One packet of `layer`: `bytes` of payload, `frame_end` when it carries the marker bit,
    /// `keyframe` when it starts a keyframe (with the picture size, if it could be read).
    /// Returns true when the layer became available or its size changed: the layers a
    /// viewer can choose from changed.
    pub fn on_packet(
        &mut self,
        layer: usize,
        bytes: usize,
        frame_end: bool,
        keyframe: Option<Option<(u16, u16)>>,
        now: Instant,
    ) -> bool {
        let Some(l) = self.layers.get_mut(layer) else {
            return false;
        };
        if bytes == 0 {
            // Padding only: an encoder that paused a layer may keep probing the link on its
            // SSRC. That carries no picture and does not keep the layer available.
            return false;
        }
        l.window_start.get_or_insert(now);
        l.window_bytes += bytes as u64;
        l.window_frames += u32::from(frame_end);
        let first = l.last_packet.is_none();
        l.last_packet = Some(now);
        let mut changed = false;
        if !l.live && (first || keyframe.is_some()) {
            l.live = true;
            changed = true;
        }
        if let Some(Some(size)) = keyframe {
            if size != l.size && size.0 > 0 && size.1 > 0 {
                l.size = size;
                changed = true;
            }
        }
        if changed {
            self.rank();
        }
        changed
    }

    /// Counts `bytes` of a VP8 packet of temporal layer `tid` on `layer` (packets above
    /// temporal layer 2 count as layer 2).
    pub fn on_temporal(&mut self, layer: usize, tid: u8, bytes: usize) {
        if let Some(l) = self.layers.get_mut(layer) {
            l.window_temporal[usize::from(tid).min(2)] += bytes as u64;
        }
    }

    /// Rolls the measurement windows and marks silent layers unavailable. Returns true when
    /// a layer became unavailable or the order of layers changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for l in &mut self.layers {
            if let Some(start) = l.window_start {
                let span = now.saturating_duration_since(start);
                if span >= WINDOW {
                    let secs = span.as_secs_f64();
                    l.bitrate = (l.window_bytes as f64 * 8.0 / secs) as u64;
                    l.frame_rate = (f64::from(l.window_frames) / secs) as f32;
                    for (rate, bytes) in l.temporal_bitrate.iter_mut().zip(&mut l.window_temporal) {
                        *rate = (*bytes as f64 * 8.0 / secs) as u64;
                        *bytes = 0;
                    }
                    l.window_start = Some(now);
                    l.window_bytes = 0;
                    l.window_frames = 0;
                }
            }
            let silent = l
                .last_packet
                .is_some_and(|t| now.saturating_duration_since(t) > SILENT_AFTER);
            if silent && l.live {
                l.live = false;
                l.bitrate = 0;
                l.frame_rate = 0.0;
                l.temporal_bitrate = [0; 3];
                changed = true;
            }
        }
        self.rank() || changed
    }

    /// Orders the layers by picture size, then by bitrate (for layers whose size is not
    /// known), and stores each one's rank. Returns true when a rank changed.
    fn rank(&mut self) -> bool {
        let mut order: Vec<usize> = (0..self.layers.len()).collect();
        order.sort_by_key(|&i| (self.layers[i].pixels(), self.layers[i].bitrate, i));
        let mut changed = false;
        for (rank, i) in order.into_iter().enumerate() {
            let rank = rank as u8;
            if self.layers[i].spatial != rank {
                self.layers[i].spatial = rank;
                changed = true;
            }
        }
        changed
    }

    /// The layer index with rank `spatial`.
    pub fn by_spatial(&self, spatial: u8) -> Option<usize> {
        self.layers.iter().position(|l| l.spatial == spatial)
    }

    /// The layer index with rid `rid`.
    pub fn by_rid(&self, rid: &str) -> Option<usize> {
        self.layers.iter().position(|l| l.rid == rid)
    }
}

/// What to add to layer `to`'s RTP timestamps to put them on layer `from`'s timeline, from
/// each layer's last sender report (NTP time in RFC 3550's 32.32 fixed point, RTP timestamp).
/// The layers of one track are captured together, so one wall-clock instant maps to both.
pub fn timestamp_alignment(from: (u64, u32), to: (u64, u32), clock_rate: u32) -> u32 {
    let (ntp_from, rtp_from) = from;
    let (ntp_to, rtp_to) = to;
    // Seconds from `from`'s report to `to`'s, as 32.32 fixed point (signed).
    let delta = ntp_to.wrapping_sub(ntp_from) as i64;
    let ticks = ((i128::from(delta) * i128::from(clock_rate)) >> 32) as i64;
    let from_at_to = rtp_from.wrapping_add(ticks as u32);
    from_at_to.wrapping_sub(rtp_to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// OBS names its layers 0 (full size), 1, 2; browsers q, h, f (smallest first).
    #[test]
    fn layers_rank_by_picture_size_not_by_rid() {
        for (rids, sizes, expected) in [
            (
                ["0", "1", "2"],
                [(1280, 720), (852, 480), (426, 240)],
                [2u8, 1, 0],
            ),
            (
                ["q", "h", "f"],
                [(320, 180), (640, 360), (1280, 720)],
                [0, 1, 2],
            ),
            (
                ["f", "q", "h"],
                [(1280, 720), (320, 180), (640, 360)],
                [2, 0, 1],
            ),
        ] {
            let t0 = Instant::now();
            let mut set = LayerSet::new();
            for (i, rid) in rids.iter().enumerate() {
                set.add(rid);
                set.on_packet(i, 1000, true, Some(Some(sizes[i])), t0);
            }
            let ranks: Vec<u8> = set.layers().iter().map(|l| l.spatial).collect();
            assert_eq!(ranks, expected, "{rids:?}");
            assert_eq!(set.by_spatial(expected[0]), Some(0));
            assert_eq!(set.by_rid(rids[2]), Some(2));
        }
    }

    #[test]
    fn temporal_layers_are_measured_apart() {
        let t0 = Instant::now();
        let mut set = LayerSet::new();
        set.add("");
        set.on_packet(0, 10, true, Some(None), t0);
        // One second: TL0 5,000 bytes, TL1 2,500, TL2 5,000 (40 / 20 / 40 kbit/s).
        for (tid, bytes) in [(0u8, 5000usize), (1, 2500), (2, 5000)] {
            set.on_packet(0, bytes, true, None, t0 + ms(500));
            set.on_temporal(0, tid, bytes);
        }
        set.tick(t0 + ms(1000));
        let l = &set.layers()[0];
        assert!(l.has_temporal_layers());
        assert_eq!(
            [
                l.bitrate_at(0),
                l.bitrate_at(1),
                l.bitrate_at(2),
                l.bitrate_at(9)
            ],
            [40_000, 60_000, 100_000, 100_000]
        );
        // A layer without temporal layers costs its whole bitrate at any temporal layer.
        let mut plain = LayerSet::new();
        plain.add("");
        plain.on_packet(0, 10, true, Some(None), t0);
        plain.on_packet(0, 12_490, true, None, t0 + ms(500));
        plain.on_temporal(0, 0, 12_500);
        plain.tick(t0 + ms(1000));
        let l = &plain.layers()[0];
        assert!(!l.has_temporal_layers());
        assert_eq!(l.bitrate_at(0), 100_000);
    }

    #[test]
    fn without_sizes_layers_rank_by_bitrate() {
        let t0 = Instant::now();
        let mut set = LayerSet::new();
        for (i, rid) in ["a", "b", "c"].iter().enumerate() {
            set.add(rid);
            set.on_packet(i, 1, false, None, t0);
        }
        // One second of packets: layer a carries the most, c the least.
        for (i, bytes) in [(0, 5000), (1, 1000), (2, 200)] {
            set.on_packet(i, bytes, true, None, t0 + ms(500));
        }
        assert!(set.tick(t0 + ms(1000)), "the order changed");
        let layers = set.layers();
        assert_eq!(
            (layers[0].spatial, layers[1].spatial, layers[2].spatial),
            (2, 1, 0)
        );
        assert_eq!(layers[0].bitrate, 5001 * 8);
        assert!((layers[0].frame_rate - 1.0).abs() < 0.01);
    }

    #[test]
    fn a_silent_layer_is_unavailable_until_its_next_keyframe() {
        let t0 = Instant::now();
        let mut set = LayerSet::new();
        set.add("f");
        assert!(set.on_packet(0, 100, false, None, t0), "first packet: live");
        assert!(set.layers()[0].live);
        assert!(!set.tick(t0 + ms(900)));
        assert!(set.tick(t0 + ms(1100)), "silent for over a second");
        assert!(!set.layers()[0].live);
        assert!(
            !set.on_packet(0, 100, false, None, t0 + ms(1200)),
            "a delta frame does not revive it"
        );
        assert!(!set.layers()[0].live);
        assert!(set.on_packet(0, 100, false, Some(None), t0 + ms(1300)));
        assert!(set.layers()[0].live);
    }

    #[test]
    fn sender_reports_align_two_layers_timelines() {
        let second = 1u64 << 32;
        // Layer f: at NTP 100 s its RTP clock read 1_000_000. Layer q's base is 3_000_000
        // higher, and its report came 0.5 s later.
        let f = (100 * second, 1_000_000u32);
        let q = (100 * second + second / 2, 4_000_000u32 + 45_000);
        let align = timestamp_alignment(f, q, 90_000);
        assert_eq!(q.1.wrapping_add(align), 1_000_000 + 45_000);
        assert_eq!(align, 0u32.wrapping_sub(3_000_000));
        // Reports in the other order, and across the 32-bit wrap of the RTP clock.
        let a = (200 * second, u32::MAX - 10);
        let b = (200 * second - second, 5u32);
        let align = timestamp_alignment(a, b, 90_000);
        assert_eq!(
            b.1.wrapping_add(align),
            (u32::MAX - 10).wrapping_sub(90_000)
        );
    }

    #[test]
    fn padding_alone_does_not_keep_a_layer_available() {
        let t0 = Instant::now();
        let mut set = LayerSet::new();
        set.add("f");
        set.on_packet(0, 1200, true, Some(Some((1280, 720))), t0);
        for i in 1..20 {
            assert!(!set.on_packet(0, 0, false, None, t0 + ms(i * 100)));
        }
        assert!(set.tick(t0 + ms(2000)), "silent but for padding");
        assert!(!set.layers()[0].live);
    }

    #[test]
    fn a_new_size_is_a_change_and_bad_layers_are_ignored() {
        let t0 = Instant::now();
        let mut set = LayerSet::new();
        set.add("");
        assert!(set.on_packet(0, 1, false, Some(Some((640, 360))), t0));
        assert!(!set.on_packet(0, 1, false, Some(Some((640, 360))), t0));
        assert!(set.on_packet(0, 1, false, Some(Some((1280, 720))), t0));
        assert!(!set.on_packet(0, 1, false, Some(Some((0, 0))), t0));
        assert!(!set.on_packet(7, 1, true, None, t0), "unknown layer");
        assert_eq!(set.layers()[0].size, (1280, 720));
        assert!(!set.simulcast());
    }
}
