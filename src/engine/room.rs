//! Room membership and the choice of which published track feeds which viewer slot.
//!
//! A room is a list of publishers (in order of arrival, each with its open tracks) and a list
//! of viewers. `source_for` is the whole policy: a slot of a kind carries the most recent
//! publisher's track of that kind, never the viewer's own participant. Pure data, no I/O.

use crate::transport::MediaKind;

/// Internal session key.
pub type SessionKey = u64;

/// A publishing participant of a room.
#[derive(Debug, Clone)]
pub struct Publisher {
    /// Its WHIP session.
    pub session: SessionKey,
    /// Participant name.
    pub participant: String,
    /// Its open tracks: (index in the session's inbound tracks, kind).
    pub tracks: Vec<(usize, MediaKind)>,
}

/// One room: publishers and viewers.
#[derive(Debug, Default)]
pub struct Room {
    /// Publishers in order of arrival.
    pub publishers: Vec<Publisher>,
    /// Viewer sessions with their participant names.
    pub viewers: Vec<(SessionKey, String)>,
}

impl Room {
    /// Whether nobody is left.
    pub fn is_empty(&self) -> bool {
        self.publishers.is_empty() && self.viewers.is_empty()
    }

    /// The publisher session of `participant`, if any.
    pub fn publisher_of(&self, participant: &str) -> Option<SessionKey> {
        self.publishers
            .iter()
            .find(|p| p.participant == participant)
            .map(|p| p.session)
    }

    /// Removes a session, publisher or viewer.
    pub fn remove(&mut self, session: SessionKey) {
        self.publishers.retain(|p| p.session != session);
        self.viewers.retain(|(s, _)| *s != session);
    }

    /// Records that a publisher's track opened.
    pub fn track_opened(&mut self, session: SessionKey, track: usize, kind: MediaKind) {
        if let Some(p) = self.publishers.iter_mut().find(|p| p.session == session) {
            if !p.tracks.iter().any(|(t, _)| *t == track) {
                p.tracks.push((track, kind));
            }
        }
    }

    /// The (publisher session, track) that a `kind` slot of `viewer` should carry.
    pub fn source_for(&self, viewer: &str, kind: MediaKind) -> Option<(SessionKey, usize)> {
        self.publishers
            .iter()
            .rev()
            .filter(|p| p.participant != viewer)
            .find_map(|p| {
                p.tracks
                    .iter()
                    .find(|(_, k)| *k == kind)
                    .map(|(t, _)| (p.session, *t))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(session: SessionKey, name: &str, kinds: &[MediaKind]) -> Publisher {
        Publisher {
            session,
            participant: name.into(),
            tracks: kinds.iter().enumerate().map(|(i, k)| (i, *k)).collect(),
        }
    }

    #[test]
    fn slots_carry_the_latest_publisher_but_never_the_viewer_itself() {
        use MediaKind::*;
        let mut room = Room::default();
        assert_eq!(room.source_for("v", Video), None);
        room.publishers.push(publisher(1, "alice", &[Audio, Video]));
        room.publishers.push(publisher(2, "bob", &[Audio]));
        assert_eq!(room.source_for("v", Video), Some((1, 1)));
        assert_eq!(room.source_for("v", Audio), Some((2, 0)));
        assert_eq!(room.source_for("bob", Audio), Some((1, 0)));
        assert_eq!(room.source_for("alice", Video), None);
        room.remove(2);
        assert_eq!(room.source_for("v", Audio), Some((1, 0)));
        room.remove(1);
        assert!(room.is_empty());
    }

    #[test]
    fn tracks_open_once() {
        let mut room = Room::default();
        room.publishers.push(publisher(1, "a", &[]));
        room.track_opened(1, 0, MediaKind::Video);
        room.track_opened(1, 0, MediaKind::Video);
        room.track_opened(9, 0, MediaKind::Video);
        assert_eq!(room.publishers[0].tracks.len(), 1);
        assert_eq!(room.publisher_of("a"), Some(1));
    }
}
