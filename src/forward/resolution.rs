//! The picture size a keyframe carries (placeholder until the parsers land).

use super::keyframe::VideoCodec;

/// Width and height announced by the first packet of a keyframe, if it can be read.
pub fn keyframe_size(_codec: VideoCodec, _payload: &[u8]) -> Option<(u16, u16)> {
    None
}
