//! Whether a viewer can decode a publisher's track, so that a slot is never filled with
//! video its viewer cannot play (Firefox offers no H264 without its plugin, for instance):
//! the next participant fills the slot instead, and a WHEP offer that could play nothing
//! the room's only video publisher sends is refused with the codec named.

use crate::engine::rooms::room::SessionKey;
use crate::engine::shard::event_loop::Engine;
use crate::engine::EngineError;
use crate::forward::codec::{codecs_match, CodecSpec};
use crate::transport::{Codec, MediaKind, Peer};

fn spec(c: &Codec) -> CodecSpec<'_> {
    CodecSpec {
        mime: &c.mime,
        clock_rate: c.clock_rate,
        channels: c.channels,
        fmtp: &c.fmtp,
    }
}

/// Whether any codec a viewer's slot negotiated matches one the publisher's leg did.
pub(in crate::engine) fn decodable(viewer: &[Codec], publisher: &[Codec]) -> bool {
    publisher
        .iter()
        .any(|p| viewer.iter().any(|v| codecs_match(&spec(p), &spec(v))))
}

/// A codec's name as a user knows it, e.g. `H264` from `video/H264`.
fn codec_name(c: &Codec) -> &str {
    c.mime.split('/').nth(1).unwrap_or(&c.mime)
}

impl Engine {
    /// The codecs a viewer's slots of `kind` negotiated (the first such slot's; all slots of
    /// one kind share the offer's codec list).
    pub(in crate::engine) fn viewer_codecs(
        &self,
        viewer: SessionKey,
        kind: MediaKind,
    ) -> Option<&[Codec]> {
        let s = self.sessions.get(&viewer)?;
        s.peer
            .slots()
            .iter()
            .find(|s| s.kind == kind)
            .map(|s| s.codecs.as_slice())
    }

    /// The codecs of a publisher's track.
    pub(in crate::engine) fn track_codecs(
        &self,
        publisher: SessionKey,
        track: usize,
    ) -> Option<&[Codec]> {
        let t = self.inbound(publisher)?.get(track)?;
        Some(&t.codecs)
    }

    /// Refuses a WHEP offer that cannot decode the video of the only participant it could
    /// play (`target`, or the room's only video publisher other than the viewer itself).
    pub(in crate::engine) fn check_decodable(
        &self,
        room: &str,
        participant: &str,
        target: Option<&str>,
        peer: &Peer,
    ) -> Result<(), EngineError> {
        let Some(r) = self.rooms.get(room) else {
            return Ok(());
        };
        let Some(viewer) = peer.slots().iter().find(|s| s.kind == MediaKind::Video) else {
            return Ok(());
        };
        let videos: Vec<&[Codec]> = r
            .publishers
            .iter()
            .filter(|p| match target {
                Some(t) => p.participant == t,
                None => p.participant != participant,
            })
            .flat_map(|p| {
                p.tracks
                    .iter()
                    .filter(|t| t.kind == MediaKind::Video)
                    .filter_map(|t| self.track_codecs(p.session, t.index))
            })
            .collect();
        let [only] = videos.as_slice() else {
            return Ok(());
        };
        if decodable(&viewer.codecs, only) {
            return Ok(());
        }
        let name = only.first().map(codec_name).unwrap_or("its codec");
        Err(EngineError::Unserviceable(format!(
            "the offer has no {name} video, the codec the room's video is published in; offer \
             {name} (Firefox: enable the OpenH264 plugin for H264)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(mime: &str, fmtp: &str) -> Codec {
        Codec {
            payload_type: 96,
            mime: mime.into(),
            clock_rate: 90_000,
            channels: 0,
            fmtp: fmtp.into(),
        }
    }

    #[test]
    fn a_viewer_decodes_only_what_it_negotiated() {
        let vp8 = codec("video/VP8", "");
        let h264 = codec("video/H264", "packetization-mode=1;profile-level-id=42e01f");
        let one = std::slice::from_ref;
        assert!(decodable(one(&vp8), one(&vp8)));
        assert!(decodable(&[vp8.clone(), h264.clone()], one(&h264)));
        assert!(!decodable(one(&vp8), one(&h264)));
        assert!(!decodable(&[], one(&vp8)));
        assert_eq!(codec_name(&h264), "H264");
    }
}
