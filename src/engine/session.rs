//! One session as the engine keeps it: the peer connection, its room and role, and for a
//! viewer the forwarder of each slot.

use super::room::{ParticipantKey, SessionKey};
use crate::forward::slot::SlotForwarder;
use crate::transport::Peer;
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
pub(super) struct Session {
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
    /// Viewer: where its room events go, once it subscribed.
    pub events: Option<mpsc::Sender<Arc<str>>>,
    /// Publisher: when each inbound track was last asked for a keyframe.
    pub last_keyframe_request: Vec<Option<Instant>>,
    /// Publisher: whether each inbound track's last keyframe request is still unanswered
    /// (no keyframe seen since).
    pub keyframe_pending: Vec<bool>,
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
    /// Publisher: per inbound track (by index), what each of its packets updates.
    pub taps: Vec<Option<TrackTap>>,
}

/// What a publisher's packet updates, kept on its session so the per-packet path needs no
/// search through the room: freshness (copied to the room's track on each tick) and loudness.
#[derive(Clone, Copy, Debug)]
pub(super) struct TrackTap {
    /// The publishing participant, as the room's speaker state knows it.
    pub participant: ParticipantKey,
    /// The RFC 6464 audio-level extension id on the publisher's leg, if negotiated.
    pub audio_level_id: Option<u8>,
    /// Last packet seen.
    pub last_packet: Instant,
}

/// A forwarding source id: publisher session and track index in one number.
pub(super) fn source_id(session: SessionKey, track: usize) -> u64 {
    (session << 8) | (track as u64 & 0xff)
}
