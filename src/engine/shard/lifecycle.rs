//! Sessions coming and going: create from an offer, trickle, ICE restart, end.

use crate::engine::fanout::downlink::Downlink;
use crate::engine::placement::shard_prefix;
use crate::engine::rooms::events::RoomEvent;
use crate::engine::rooms::relay::Control;
use crate::engine::rooms::room::{Publisher, Room, SessionKey, Viewer};
use crate::engine::shard::event_loop::{Engine, RTCP_STATS_EVERY};
use crate::engine::shard::session::{source_parts, EndReason, Session, SessionKind, SlotLayers};
use crate::engine::{Created, EngineError, SessionInfo};
use crate::forward::selector::Pin;
use crate::forward::slot::{LegParams, SlotForwarder};
use crate::transport::sdpfrag::SdpFrag;
use crate::transport::{sdp, HeaderExt, MediaKind, Peer, TransportError};
use rand::distr::{Alphanumeric, SampleString};
use rtc::sdp::extmap::{ABS_SEND_TIME_URI, TRANSPORT_CC_URI};
use std::time::Instant;

/// Most slots of one kind a WHEP offer may ask for.
pub const MAX_SLOTS_PER_KIND: usize = 16;

/// Who a new session is, in its room.
pub(in crate::engine) struct Joining {
    /// The room's name.
    pub room: String,
    /// The participant's name.
    pub participant: String,
    /// Viewer: the one participant it plays (`None`: the room, last-N).
    pub target: Option<String>,
    /// Viewer: another node's upstream of a cascade (see [`Session::for_node`]).
    pub for_node: bool,
}

fn random_token(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

fn new_etag() -> String {
    format!("\"{}\"", random_token(16))
}

const NO_CODEC: &str = "no codec in the offer that Parley forwards (Opus; VP8, VP9, H264, AV1)";

impl Engine {
    pub(in crate::engine) fn open(
        &mut self,
        kind: SessionKind,
        room: String,
        participant: Option<String>,
        (target, for_node): (Option<String>, bool),
        offer: &str,
    ) -> Result<Created, EngineError> {
        let summary = sdp::inspect_offer(offer).map_err(TransportError::from)?;
        let (most, what) = match kind {
            SessionKind::Whip => (1, "one"),
            SessionKind::Whep => (MAX_SLOTS_PER_KIND, "16"),
        };
        if summary.audio > most || summary.video > most {
            return Err(EngineError::Unserviceable(format!(
                "the offer has {} audio and {} video sections; a {} offer may have at most \
                 {what} of each",
                summary.audio,
                summary.video,
                kind.as_str().to_uppercase()
            )));
        }
        if summary.audio + summary.video > 1 && !summary.bundled {
            return Err(EngineError::Unserviceable(
                "the offer does not BUNDLE its media sections (a=group:BUNDLE); Parley serves \
                 all media on one transport"
                    .into(),
            ));
        }
        let participant = participant.unwrap_or_else(|| format!("p-{}", random_token(8)));
        if let Some(r) = self.rooms.get(&room) {
            let max = self.config.max_participants_per_room;
            // Viewers other shards serve for this room count too (`relay`).
            let elsewhere: usize = self
                .relays
                .get(&room)
                .map_or(0, |r| r.viewers.values().sum());
            let count = r.participants().len() + elsewhere;
            if !r.has_participant(&participant) && count >= max {
                let noun = if max == 1 {
                    "participant"
                } else {
                    "participants"
                };
                return Err(EngineError::Forbidden(format!(
                    "room {room} is full ({max} {noun})"
                )));
            }
        }
        let now = Instant::now();
        // The shard's number first: any shard routes a binding request by it.
        let ufrag = format!("{}{}", shard_prefix(self.shard.id), random_token(14));
        let pwd = random_token(32);
        let (peer, answer) = match kind {
            SessionKind::Whip => Peer::publisher(&self.ctx, offer, (&ufrag, &pwd), now)?,
            SessionKind::Whep => {
                Peer::viewer(&self.ctx, offer, (&ufrag, &pwd), &offer_kinds(offer), now)?
            }
        };
        let usable = match kind {
            SessionKind::Whep => peer.slots().iter().any(|s| !s.codecs.is_empty()),
            SessionKind::Whip => answer.contains("a=rtpmap:"),
        };
        if !usable {
            return Err(EngineError::Unserviceable(NO_CODEC.into()));
        }
        if kind == SessionKind::Whep {
            self.check_decodable(&room, &participant, target.as_deref(), &peer)?;
        }
        let (id, etag) = self.admit(
            kind,
            Joining {
                room,
                participant,
                target,
                for_node: for_node && kind == SessionKind::Whep,
            },
            peer,
            Some(&ufrag),
            offer_ufrag(offer),
            now,
        );
        Ok(Created { id, answer, etag })
    }

    /// Takes a new session into the shard and its room: the demultiplexer (by `ufrag`, for
    /// a session clients reach on the media port), the registry, the room's members and
    /// slots. Returns its public id and ETag.
    pub(in crate::engine) fn admit(
        &mut self,
        kind: SessionKind,
        Joining {
            room,
            participant,
            target,
            for_node,
        }: Joining,
        mut peer: Peer,
        ufrag: Option<&str>,
        remote_ufrag: String,
        now: Instant,
    ) -> (String, String) {
        let key = self.next_key;
        self.next_key += 1;
        let public_id = format!(
            "{}{:030x}",
            shard_prefix(self.shard.id),
            rand::random::<u128>() >> 8
        );
        let etag = new_etag();

        // A new WHIP session of a participant already publishing replaces the old one.
        if kind == SessionKind::Whip {
            let old = self
                .rooms
                .get(&room)
                .and_then(|r| r.publisher_of(&participant));
            if let Some(old) = old {
                self.end(old, EndReason::Replaced);
            }
        }

        if self.config.downlink.is_none() {
            peer.stop_stamping();
        }
        let forwarders: Vec<SlotForwarder> = peer
            .slots()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // Only the extensions Parley stamps get placeholders in the header.
                let stamped = peer.stamps(i);
                let extensions: Vec<HeaderExt> = s
                    .extensions
                    .iter()
                    .filter(|e| {
                        let congestion = e.uri == TRANSPORT_CC_URI || e.uri == ABS_SEND_TIME_URI;
                        !congestion || Some(e.id) == stamped.0 || Some(e.id) == stamped.1
                    })
                    .cloned()
                    .collect();
                SlotForwarder::new(s.ssrc, &s.mid, LegParams::from_leg(&s.codecs, &extensions))
            })
            .collect();
        let slot_count = forwarders.len();
        let mut slot_layers = vec![SlotLayers::default(); slot_count];
        let video: Vec<usize> = (0..slot_count)
            .filter(|&i| peer.slots()[i].kind == MediaKind::Video)
            .collect();
        if for_node && video.len() > 1 {
            // Another node's upstream with a section per layer: its video slots carry the
            // broadcast's layers, one each, smallest first (that node chooses for its
            // viewers). With one section it gets the highest layer.
            for (rank, &i) in (0u8..).zip(&video) {
                slot_layers[i].prefs.pin = Some(Pin::Spatial(rank));
            }
        }
        self.sessions.insert(
            key,
            Session {
                peer,
                key,
                public_id: public_id.clone(),
                kind,
                room: room.clone(),
                participant: participant.clone(),
                created: now,
                connected: false,
                forwarders,
                slot_participants: vec![None; slot_count],
                slot_layers,
                events: None,
                published: Default::default(),
                relay_to: Vec::new(),
                received: (0, 0),
                sent: (0, 0),
                media_started: false,
                rtcp_due: now + RTCP_STATS_EVERY.mul_f64(rand::random::<f64>()),
                nacks_sent: 0,
                downlink: match (kind, self.config.downlink) {
                    (SessionKind::Whep, Some(bounds)) if !for_node => {
                        Some(Box::new(Downlink::new(bounds, slot_count, now)))
                    }
                    _ => None,
                },
                for_node,
            },
        );
        self.by_public.insert(public_id.clone(), key);
        if let Some(ufrag) = ufrag {
            self.demux.add_session(key, ufrag);
        }
        self.registry.insert(
            public_id.clone(),
            SessionInfo {
                kind,
                room: room.clone(),
                participant: participant.clone(),
                etag: etag.clone(),
                remote_ufrag,
            },
        );
        let r = self
            .rooms
            .entry(room.clone())
            .or_insert_with(|| Room::new(now));
        let joined = !r.present(&participant);
        if let (Some(home), SessionKind::Whep) = (r.home, kind) {
            self.shard.control(
                home,
                Control::ViewerJoined {
                    room: room.clone(),
                    participant: participant.clone(),
                },
            );
        }
        let Some(r) = self.rooms.get_mut(&room) else {
            return (public_id, etag);
        };
        match kind {
            SessionKind::Whip => {
                let pkey = r.key_for(&participant);
                r.speakers.add(pkey, now);
                r.publishers.push(Publisher {
                    session: key,
                    participant: participant.clone(),
                    key: pkey,
                    tracks: Vec::new(),
                });
            }
            SessionKind::Whep => r.viewers.push(Viewer {
                session: key,
                participant: participant.clone(),
                target,
            }),
        }
        if joined {
            self.emit_room(&room, &RoomEvent::ParticipantJoined { participant });
        }
        match kind {
            // A new viewer changes nobody else's slots.
            SessionKind::Whep => self.reassign_viewers(&room, Some(key), now),
            SessionKind::Whip => {
                self.reassign(&room, now);
                self.refresh_relay_targets(&room);
            }
        }
        self.mark(key);
        self.metrics.session_started(kind.as_str());
        tracing::info!(
            room,
            kind = kind.as_str(),
            session = public_id,
            "session created"
        );
        (public_id, etag)
    }

    pub(in crate::engine) fn trickle(
        &mut self,
        id: &str,
        frag: &SdpFrag,
    ) -> Result<(), EngineError> {
        let key = *self.by_public.get(id).ok_or(EngineError::NotFound)?;
        let session = self.sessions.get_mut(&key).ok_or(EngineError::NotFound)?;
        for (mid, candidate) in frag.candidates() {
            session
                .peer
                .add_remote_candidate(candidate, mid)
                .map_err(|e| EngineError::BadFragment(format!("candidate rejected: {e}")))?;
        }
        self.mark(key);
        Ok(())
    }

    pub(in crate::engine) fn restart(
        &mut self,
        id: &str,
        frag: &SdpFrag,
    ) -> Result<(String, String), EngineError> {
        let key = *self.by_public.get(id).ok_or(EngineError::NotFound)?;
        let (Some(ufrag), Some(pwd)) = (frag.ice_ufrag.as_deref(), frag.ice_pwd.as_deref()) else {
            return Err(EngineError::BadFragment(
                "an ICE restart needs a=ice-ufrag and a=ice-pwd".into(),
            ));
        };
        let session = self.sessions.get_mut(&key).ok_or(EngineError::NotFound)?;
        let (local_ufrag, local_pwd) = session
            .peer
            .restart_ice(Instant::now(), ufrag, pwd)
            .map_err(|e| EngineError::BadFragment(format!("ICE restart failed: {e}")))?;
        for (mid, candidate) in frag.candidates() {
            let _ = session.peer.add_remote_candidate(candidate, mid);
        }
        self.demux.add_session(key, &local_ufrag);
        let etag = new_etag();
        if let Some(mut info) = self.registry.get_mut(id) {
            info.etag = etag.clone();
            info.remote_ufrag = ufrag.to_owned();
        }
        let mut body = format!("a=ice-ufrag:{local_ufrag}\r\na=ice-pwd:{local_pwd}\r\n");
        for ip in &self.ctx.advertised {
            body.push_str(&format!(
                "a=candidate:1 1 udp 2130706431 {ip} {} typ host\r\n",
                self.ctx.advertised_port
            ));
        }
        body.push_str("a=end-of-candidates\r\n");
        self.mark(key);
        Ok((etag, body))
    }

    /// Ends a session and releases everything it held.
    pub(in crate::engine) fn end(&mut self, key: SessionKey, reason: EndReason) {
        let Some(mut session) = self.sessions.remove(&key) else {
            return;
        };
        session.peer.close();
        self.sessions.insert(key, session);
        self.transmit(key);
        let Some(session) = self.sessions.remove(&key) else {
            return;
        };
        self.by_public.remove(&session.public_id);
        self.registry.remove(&session.public_id);
        for addr in self.demux.remove_session(key) {
            self.shard.disown_address(addr);
        }
        self.tcp.close_session(key);
        self.drop_upstream(key);
        self.shard.placement.release(&session.room, self.shard.id);
        self.clear_timer(key);
        self.metrics
            .session_ended(session.kind.as_str(), reason.as_str());
        tracing::info!(
            room = session.room,
            participant = session.participant,
            kind = session.kind.as_str(),
            session = session.public_id,
            reason = reason.as_str(),
            "session ended"
        );
        self.leave_room(key, &session.room, &session.participant, session.kind);
        if session.kind == SessionKind::Whep {
            self.viewer_left_relay(&session.room, Some(&session.participant));
        }
    }

    /// Takes an ended publisher or viewer (or a mirror, `relay`) out of its room: events,
    /// and the slots and fan-out lists it changes.
    pub(in crate::engine) fn leave_room(
        &mut self,
        key: SessionKey,
        room: &str,
        participant: &str,
        kind: SessionKind,
    ) {
        self.subscribers
            .retain(|sid, _| source_parts(*sid).0 != key);
        self.caches.retain(|sid, _| source_parts(*sid).0 != key);
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let tracks: Vec<MediaKind> = r
            .publishers
            .iter()
            .find(|p| p.session == key)
            .map(|p| p.tracks.iter().map(|t| t.kind).collect())
            .unwrap_or_default();
        let left = r.remove(key).filter(|name| !r.elsewhere.contains_key(name));
        let empty = r.is_empty();
        for kind in tracks {
            self.emit_room(
                room,
                &RoomEvent::TrackUnpublished {
                    participant: participant.to_owned(),
                    kind: kind.as_str(),
                },
            );
        }
        if let Some(participant) = left {
            self.emit_room(room, &RoomEvent::ParticipantLeft { participant });
        }
        if empty {
            self.rooms.remove(room);
        } else {
            if let Some(r) = self.rooms.get_mut(room) {
                r.forget_departed();
            }
            match kind {
                // A viewer leaving changes nobody else's slots: only its fan-out entries go.
                SessionKind::Whep => self.refresh_viewer_fanout(room, key),
                SessionKind::Whip => {
                    self.reassign(room, Instant::now());
                    self.refresh_relay_targets(room);
                }
            }
        }
    }

    pub(in crate::engine) fn end_all(&mut self, reason: EndReason) {
        let keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        for key in keys {
            self.end(key, reason);
        }
    }

    /// Ends every session of `participant` in `room`.
    pub(in crate::engine) fn remove_participant(&mut self, room: &str, participant: &str) -> bool {
        let keys: Vec<SessionKey> = self
            .sessions
            .values()
            .filter(|s| s.room == room && s.participant == participant)
            .map(|s| s.key)
            .collect();
        for key in &keys {
            self.end(*key, EndReason::Removed);
        }
        !keys.is_empty()
    }
}

/// The kinds of the offer's active m-lines, in order. Port 0 rejects an m-line unless it is
/// `a=bundle-only` (Firefox's offers under `max-bundle` put every section but the first
/// there: they ride on the first one's transport).
fn offer_kinds(offer: &str) -> Vec<MediaKind> {
    let bundle_only = sdp::bundle_only_sections(offer);
    offer
        .lines()
        .filter_map(|l| l.strip_prefix("m="))
        .zip(bundle_only)
        .filter(|(m, bundle_only)| *bundle_only || m.split(' ').nth(1) != Some("0"))
        .filter_map(|(m, _)| match m.split(' ').next() {
            Some("audio") => Some(MediaKind::Audio),
            Some("video") => Some(MediaKind::Video),
            _ => None,
        })
        .collect()
}

/// The offer's first `a=ice-ufrag` value.
fn offer_ufrag(offer: &str) -> String {
    offer
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("a=ice-ufrag:"))
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_kinds_skip_rejected_sections_but_not_bundle_only_ones() {
        let offer = "v=0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=bundle-only\r\na=mid:1\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:3\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:4\r\n";
        assert_eq!(
            offer_kinds(offer),
            [MediaKind::Audio, MediaKind::Video, MediaKind::Audio]
        );
    }
}
