//! Simulcast as a browser sends it: three spatial layers of one VP8 track, each with three
//! temporal layers.
//!
//! Owns the layer table (rids, keyframe dimensions, bitrate shares) and the temporal pattern
//! of libwebrtc's three-layer VP8 encoder: T0 T2 T1 T2, the layer-sync (Y) bit on the first
//! T1/T2 frames after each T0, a 15-bit PictureID per frame and a TL0PICIDX per T0 frame.
//! Pure: no I/O, no clock, no randomness (start values are arguments).

use crate::payload::Vp8Layering;

/// One spatial layer of a simulcast publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpatialLayer {
    /// RTP stream id (`a=rid:` and the rtp-stream-id header extension).
    pub rid: &'static str,
    /// Width in the layer's keyframe header.
    pub width: u16,
    /// Height in the layer's keyframe header.
    pub height: u16,
    /// Share of the publisher's video bitrate, in parts of [`TOTAL_SHARES`].
    pub share: u32,
}

/// The layers, lowest first (the order of `a=simulcast:send q;h;f`). The 1:3:10 split is
/// close to what libwebrtc gives a 720p camera (about 150, 500 and 1700 kbit/s at 2.5 Mbit/s).
pub const LAYERS: [SpatialLayer; 3] = [
    SpatialLayer {
        rid: "q",
        width: 320,
        height: 180,
        share: 1,
    },
    SpatialLayer {
        rid: "h",
        width: 640,
        height: 360,
        share: 3,
    },
    SpatialLayer {
        rid: "f",
        width: 1280,
        height: 720,
        share: 10,
    },
];

/// Sum of the layers' shares.
pub const TOTAL_SHARES: u32 = 14;

/// The bitrate of each layer, kbit/s, for a publisher's total video bitrate.
pub fn layer_kbps(total_kbps: u32) -> [u32; 3] {
    LAYERS.map(|l| (u64::from(total_kbps) * u64::from(l.share) / u64::from(TOTAL_SHARES)) as u32)
}

/// Temporal layer id of the `n`-th frame since the last keyframe: T0 T2 T1 T2, repeated.
pub fn temporal_id(n: u32) -> u8 {
    [0, 2, 1, 2][(n % 4) as usize]
}

/// Layer sync (the Y bit): the frame depends only on T0, so a receiver may start the
/// frame's temporal layer there. True for the first T2 and the T1 after each T0.
pub fn layer_sync(n: u32) -> bool {
    matches!(n % 4, 1 | 2)
}

/// A delta frame's size relative to the stream's average delta frame. libwebrtc gives the
/// three temporal layers 40/20/40 % of the bits at 1/4, 1/4 and 1/2 of the frames, so a T0
/// frame is twice a T1 or T2 frame; over one T0 T2 T1 T2 cycle the weights average 1.
pub fn temporal_weight(tid: u8) -> f64 {
    if tid == 0 {
        1.6
    } else {
        0.8
    }
}

/// The running VP8 temporal pattern of one spatial layer.
#[derive(Clone, Debug)]
pub struct TemporalPattern {
    picture_id: u16,
    tl0_pic_idx: u8,
    since_keyframe: u32,
}

impl TemporalPattern {
    /// A pattern whose first frame carries `picture_id` (15 bits) and `tl0_pic_idx + 1`.
    pub fn new(picture_id: u16, tl0_pic_idx: u8) -> Self {
        TemporalPattern {
            picture_id: picture_id & 0x7fff,
            tl0_pic_idx,
            since_keyframe: 0,
        }
    }

    /// The descriptor fields of the next frame. A keyframe restarts the pattern at T0.
    pub fn next(&mut self, keyframe: bool) -> Vp8Layering {
        if keyframe {
            self.since_keyframe = 0;
        }
        let n = self.since_keyframe;
        let tid = temporal_id(n);
        if tid == 0 {
            self.tl0_pic_idx = self.tl0_pic_idx.wrapping_add(1);
        }
        let fields = Vp8Layering {
            picture_id: self.picture_id,
            tl0_pic_idx: self.tl0_pic_idx,
            tid,
            layer_sync: layer_sync(n),
        };
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        self.since_keyframe = self.since_keyframe.wrapping_add(1);
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrate_split_is_1_3_10() {
        assert_eq!(layer_kbps(2800), [200, 600, 2000]);
        let split = layer_kbps(2500);
        assert_eq!(split, [178, 535, 1785]);
        assert!(split.iter().sum::<u32>() <= 2500);
        assert_eq!(TOTAL_SHARES, LAYERS.iter().map(|l| l.share).sum::<u32>());
        let rids: Vec<_> = LAYERS.iter().map(|l| l.rid).collect();
        assert_eq!(rids, ["q", "h", "f"]);
        assert!(LAYERS.windows(2).all(|w| w[0].width < w[1].width));
    }

    #[test]
    fn pattern_is_t0_t2_t1_t2_with_sync_after_each_t0() {
        let mut p = TemporalPattern::new(100, 7);
        let frames: Vec<_> = (0..8).map(|i| p.next(i == 0)).collect();
        let tids: Vec<u8> = frames.iter().map(|f| f.tid).collect();
        assert_eq!(tids, [0, 2, 1, 2, 0, 2, 1, 2]);
        let sync: Vec<bool> = frames.iter().map(|f| f.layer_sync).collect();
        assert_eq!(sync, [false, true, true, false, false, true, true, false]);
        let ids: Vec<u16> = frames.iter().map(|f| f.picture_id).collect();
        assert_eq!(ids, (100..108).collect::<Vec<_>>());
        // TL0PICIDX counts T0 frames; T1/T2 frames carry the index of the T0 they follow.
        let tl0: Vec<u8> = frames.iter().map(|f| f.tl0_pic_idx).collect();
        assert_eq!(tl0, [8, 8, 8, 8, 9, 9, 9, 9]);
    }

    #[test]
    fn a_keyframe_restarts_the_pattern() {
        let mut p = TemporalPattern::new(0, 0);
        p.next(true);
        p.next(false); // T2
        let key = p.next(true);
        assert_eq!((key.tid, key.layer_sync, key.tl0_pic_idx), (0, false, 2));
        assert_eq!(p.next(false).tid, 2);
    }

    #[test]
    fn picture_id_and_tl0_wrap() {
        let mut p = TemporalPattern::new(0x7fff, 255);
        let a = p.next(true);
        let b = p.next(false);
        assert_eq!((a.picture_id, b.picture_id), (0x7fff, 0));
        assert_eq!(a.tl0_pic_idx, 0);
        assert_eq!(
            TemporalPattern::new(0xffff, 0).next(true).picture_id,
            0x7fff
        );
    }

    #[test]
    fn temporal_weights_average_one_over_a_cycle() {
        let sum: f64 = (0..4).map(|n| temporal_weight(temporal_id(n))).sum();
        assert!((sum / 4.0 - 1.0).abs() < 1e-9);
        assert!(temporal_weight(0) > temporal_weight(1));
    }
}
