//! One session as the engine keeps it: the peer connection, its room and role, and for a
//! viewer the forwarder of each slot.

use crate::engine::fanout::downlink::Downlink;
use crate::engine::rooms::room::{ParticipantKey, SessionKey};
use crate::forward::keyframe::VideoCodec;
use crate::forward::layers::LayerSet;
use crate::forward::selector::{Preferences, Switch};
use crate::forward::slot::SlotForwarder;
use crate::metrics::SwitchReason;
use crate::transport::{Peer, MAX_LAYERS};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// WHIP (publish) or WHEP (play).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionKind {
    /// A publisher.
    Whip,
    /// A viewer.
    Whep,
}

impl SessionKind {
    /// `whip` or `whep`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Whip => "whip",
            SessionKind::Whep => "whep",
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The client sent DELETE.
    Deleted,
    /// ICE consent or DTLS failed.
    IceFailed,
    /// Never connected in time.
    Timeout,
    /// A newer WHIP session of the same participant took over.
    Replaced,
    /// An operator removed it.
    Removed,
    /// The server is stopping.
    Shutdown,
}

impl EndReason {
    /// Lower-case label.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Deleted => "deleted",
            EndReason::IceFailed => "ice_failed",
            EndReason::Timeout => "timeout",
            EndReason::Replaced => "replaced",
            EndReason::Removed => "removed",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// A live session.
pub(in crate::engine) struct Session {
    pub peer: Peer,
    pub key: SessionKey,
    pub public_id: String,
    pub kind: SessionKind,
    pub room: String,
    pub participant: String,
    pub created: Instant,
    pub connected: bool,
    /// Viewer: one forwarder per slot, same order as `peer.slots()`.
    pub forwarders: Vec<SlotForwarder>,
    /// Viewer: the participant each slot is assigned to.
    pub slot_participants: Vec<Option<ParticipantKey>>,
    /// Viewer: per slot, the layer the viewer asked for and the switch in progress.
    pub slot_layers: Vec<SlotLayers>,
    /// Viewer: where its room events go, once it subscribed.
    pub events: Option<mpsc::Sender<Arc<str>>>,
    /// Publisher: what its tracks carry and what was asked of them.
    pub published: Published,
    /// Publisher: the shards its packets are relayed to, which serve more of its room's
    /// viewers (`relay`).
    pub relay_to: Vec<usize>,
    /// RTP packets and bytes received from this session.
    pub received: (u64, u64),
    /// RTP packets and bytes forwarded to this session.
    pub sent: (u64, u64),
    /// Whether media has flowed (for the setup-time histogram).
    pub media_started: bool,
    /// When RTCP statistics are read next (each session at its own phase, so a crowd that
    /// joined together is not read in one go).
    pub rtcp_due: Instant,
    /// NACKs the session had sent at the last read.
    pub nacks_sent: u64,
    /// Viewer: its downlink estimate, allocation and probe (when estimation is on).
    pub downlink: Option<Box<Downlink>>,
    /// Viewer: another node's upstream (a cascade), whose keyframe requests stand for
    /// viewers joining there: they go out as a joining viewer's do.
    pub for_node: bool,
}

/// A publisher's state that the fan-out and slot assignment read, kept alike for a
/// publisher's own session and for its mirror on another shard (`relay`).
#[derive(Default)]
pub(in crate::engine) struct Published {
    /// Per inbound track (by index), what each of its packets updates.
    pub taps: Vec<Option<TrackTap>>,
    /// When each inbound layer was last asked for a keyframe (by [`layer_slot`]).
    pub last_keyframe_request: Vec<Option<Instant>>,
    /// Whether each inbound layer's last keyframe request is still unanswered (no keyframe
    /// seen since), by [`layer_slot`].
    pub keyframe_pending: Vec<bool>,
}

/// What a publisher's packet updates, kept on its session so the per-packet path needs no
/// search through the room: freshness (copied to the room's track on each tick), loudness,
/// and what each of its layers carries.
#[derive(Clone, Debug)]
pub(in crate::engine) struct TrackTap {
    /// The publishing participant, as the room's speaker state knows it.
    pub participant: ParticipantKey,
    /// The RFC 6464 audio-level extension id on the publisher's leg, if negotiated.
    pub audio_level_id: Option<u8>,
    /// Last packet seen.
    pub last_packet: Instant,
    /// The room's track was stalled at the last tick (copied from the room): its next packet
    /// offers it to the slots again at once, before it is fanned out.
    pub stalled: bool,
    /// The track's video codecs by payload type (empty for audio).
    pub video: Vec<(u8, VideoCodec)>,
    /// Its layers: one, or one per simulcast layer.
    pub layers: LayerSet,
}

/// A viewer slot's layer state, and who it leaves out.
#[derive(Clone, Debug, Default)]
pub(in crate::engine) struct SlotLayers {
    /// What the viewer asked for (the WHEP layer endpoint).
    pub prefs: Preferences,
    /// The switch in progress.
    pub switch: Switch,
    /// The signature of the last `layers` event sent for the slot, to send only changes.
    pub reported: Option<u64>,
    /// The spatial rank of the layer the slot plays, once it plays one.
    pub active_spatial: Option<u8>,
    /// The participants last reported as left out of the slot for their codec.
    pub skipped: Vec<String>,
    /// Why the switch in progress was started.
    pub switch_reason: Option<SwitchReason>,
    /// Why the slot plays what it plays (`highest`, `limit`, `pin`, `bandwidth`).
    pub reason: &'static str,
}

/// A forwarding source id: publisher session, track index and layer index in one number.
pub(in crate::engine) fn source_id(session: SessionKey, track: usize, layer: usize) -> u64 {
    (session << 16) | ((track as u64 & 0xff) << 8) | (layer as u64 & 0xff)
}

/// The (publisher session, track index, layer index) of a source id.
pub(in crate::engine) fn source_parts(sid: u64) -> (SessionKey, usize, usize) {
    (
        sid >> 16,
        ((sid >> 8) & 0xff) as usize,
        (sid & 0xff) as usize,
    )
}

/// A source id without its layer: the track it belongs to.
pub(in crate::engine) fn track_of(sid: u64) -> u64 {
    sid & !0xff
}

/// Index of a (track, layer) in a publisher's per-layer vectors.
pub(in crate::engine) fn layer_slot(track: usize, layer: usize) -> usize {
    track * MAX_LAYERS + layer
}
