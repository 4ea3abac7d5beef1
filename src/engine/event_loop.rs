//! The engine's state and its event loop: commands from HTTP, datagrams from the shared
//! socket, and timers, all handled on one task so no state is shared or locked.

use super::demux::Demux;
use super::room::{Publisher, Room, SessionKey};
use super::session::{leg_params, source_id, EndReason, Session, SessionKind};
use super::{Command, Created, EngineError, Registry, SessionInfo};
use crate::forward::slot::SlotForwarder;
use crate::http::sdpfrag::SdpFrag;
use crate::transport::{sdp, MediaKind, Peer, PeerEvent, PeerState, TransportContext};
use bytes::BytesMut;
use rand::distr::{Alphanumeric, SampleString};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Keyframe requests to one publisher track are at most this frequent.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// Housekeeping period: keyframe retries, connect timeouts.
const TICK: Duration = Duration::from_millis(250);
/// Largest datagram read; anything longer is dropped.
const MAX_DATAGRAM: usize = 2048;
/// Datagrams read in one go before draining the peers they touched.
const READ_BATCH: usize = 64;

pub(super) struct Engine {
    ctx: TransportContext,
    connect_timeout: Duration,
    socket: UdpSocket,
    registry: Registry,
    sessions: HashMap<SessionKey, Session>,
    by_public: HashMap<String, SessionKey>,
    demux: Demux,
    rooms: HashMap<String, Room>,
    /// (publisher session, track) → viewer slots fed by it.
    subscribers: HashMap<(SessionKey, usize), Vec<(SessionKey, usize)>>,
    timers: BTreeSet<(Instant, SessionKey)>,
    deadlines: HashMap<SessionKey, Instant>,
    dirty: Vec<SessionKey>,
    dirty_set: HashSet<SessionKey>,
    next_key: SessionKey,
}

fn random_token(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

fn new_etag() -> String {
    format!("\"{}\"", random_token(16))
}

impl Engine {
    pub(super) fn new(
        ctx: TransportContext,
        connect_timeout: Duration,
        socket: UdpSocket,
        registry: Registry,
    ) -> Self {
        Self {
            ctx,
            connect_timeout,
            socket,
            registry,
            sessions: HashMap::new(),
            by_public: HashMap::new(),
            demux: Demux::default(),
            rooms: HashMap::new(),
            subscribers: HashMap::new(),
            timers: BTreeSet::new(),
            deadlines: HashMap::new(),
            dirty: Vec::new(),
            dirty_set: HashSet::new(),
            next_key: 1,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = self
                .timers
                .first()
                .map(|(t, _)| *t)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        self.end_all(EndReason::Shutdown);
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => {
                        self.end_all(EndReason::Shutdown);
                        return;
                    }
                },
                res = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, from)) = res {
                        self.on_datagram(Instant::now(), from, &buf[..n]);
                        for _ in 1..READ_BATCH {
                            match self.socket.try_recv_from(&mut buf) {
                                Ok((n, from)) => self.on_datagram(Instant::now(), from, &buf[..n]),
                                Err(_) => break,
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(next.into()) => self.on_timers(Instant::now()),
                _ = tick.tick() => self.on_tick(Instant::now()),
            }
            self.drain();
        }
    }

    fn mark(&mut self, key: SessionKey) {
        if self.dirty_set.insert(key) {
            self.dirty.push(key);
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Open {
                kind,
                room,
                participant,
                offer,
                reply,
            } => {
                let _ = reply.send(self.open(kind, room, participant, &offer));
            }
            Command::Trickle { id, frag, reply } => {
                let _ = reply.send(self.trickle(&id, &frag));
            }
            Command::Restart { id, frag, reply } => {
                let _ = reply.send(self.restart(&id, &frag));
            }
            Command::Close { id, reason, reply } => {
                let found = self.by_public.get(&id).copied();
                if let Some(key) = found {
                    self.end(key, reason);
                }
                let _ = reply.send(found.is_some());
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn open(
        &mut self,
        kind: SessionKind,
        room: String,
        participant: Option<String>,
        offer: &str,
    ) -> Result<Created, EngineError> {
        let summary = sdp::inspect_offer(offer).map_err(crate::transport::TransportError::from)?;
        if summary.audio > 1 || summary.video > 1 {
            return Err(EngineError::Unserviceable(format!(
                "the offer has {} audio and {} video sections; at most one of each is supported",
                summary.audio, summary.video
            )));
        }
        if summary.audio + summary.video > 1 && !summary.bundled {
            return Err(EngineError::Unserviceable(
                "the offer does not BUNDLE its media sections (a=group:BUNDLE); Parley serves \
                 all media on one transport"
                    .into(),
            ));
        }
        let now = Instant::now();
        let ufrag = random_token(16);
        let pwd = random_token(32);
        let (peer, answer) = match kind {
            SessionKind::Whip => Peer::publisher(&self.ctx, offer, (&ufrag, &pwd), now)?,
            SessionKind::Whep => {
                let kinds = offer_kinds(offer);
                Peer::viewer(&self.ctx, offer, (&ufrag, &pwd), &kinds, now)?
            }
        };
        if kind == SessionKind::Whep {
            let usable = peer.slots().iter().any(|s| !s.codecs.is_empty());
            if !usable {
                return Err(EngineError::Unserviceable(
                    "no codec in the offer that Parley forwards (Opus; VP8, VP9, H264, AV1)".into(),
                ));
            }
        } else if !answer.contains("a=rtpmap:") {
            return Err(EngineError::Unserviceable(
                "no codec in the offer that Parley forwards (Opus; VP8, VP9, H264, AV1)".into(),
            ));
        }
        let participant = participant.unwrap_or_else(|| format!("p-{}", random_token(8)));
        let key = self.next_key;
        self.next_key += 1;
        let public_id = format!("{:032x}", rand::random::<u128>());
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

        let forwarders = peer
            .slots()
            .iter()
            .map(|s| SlotForwarder::new(s.ssrc, &s.mid, leg_params(&s.codecs, &s.extensions)))
            .collect();
        let session = Session {
            peer,
            key,
            public_id: public_id.clone(),
            kind,
            room: room.clone(),
            participant: participant.clone(),
            created: now,
            connected: false,
            forwarders,
            last_keyframe_request: Vec::new(),
        };
        self.sessions.insert(key, session);
        self.by_public.insert(public_id.clone(), key);
        self.demux.add_session(key, &ufrag);
        self.registry.insert(
            public_id.clone(),
            SessionInfo {
                kind,
                room: room.clone(),
                participant: participant.clone(),
                etag: etag.clone(),
                remote_ufrag: offer_ufrag(offer),
            },
        );
        let r = self.rooms.entry(room.clone()).or_default();
        match kind {
            SessionKind::Whip => r.publishers.push(Publisher {
                session: key,
                participant,
                tracks: Vec::new(),
            }),
            SessionKind::Whep => r.viewers.push((key, participant)),
        }
        self.reassign(&room, now);
        self.mark(key);
        tracing::info!(
            room,
            kind = kind.as_str(),
            session = public_id,
            "session created"
        );
        Ok(Created {
            id: public_id,
            answer,
            etag,
        })
    }

    fn trickle(&mut self, id: &str, frag: &SdpFrag) -> Result<(), EngineError> {
        let key = *self.by_public.get(id).ok_or(EngineError::NotFound)?;
        let session = self.sessions.get_mut(&key).ok_or(EngineError::NotFound)?;
        for media in &frag.media {
            for c in &media.candidates {
                session
                    .peer
                    .add_remote_candidate(c, media.mid.as_deref())
                    .map_err(|e| EngineError::BadFragment(format!("candidate rejected: {e}")))?;
            }
        }
        self.mark(key);
        Ok(())
    }

    fn restart(&mut self, id: &str, frag: &SdpFrag) -> Result<(String, String), EngineError> {
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
        for media in &frag.media {
            for c in &media.candidates {
                let _ = session.peer.add_remote_candidate(c, media.mid.as_deref());
            }
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
    fn end(&mut self, key: SessionKey, reason: EndReason) {
        let Some(mut session) = self.sessions.remove(&key) else {
            return;
        };
        session.peer.close();
        while let Some((to, data)) = session.peer.poll_transmit() {
            let _ = self.socket.try_send_to(&data, to);
        }
        self.by_public.remove(&session.public_id);
        self.registry.remove(&session.public_id);
        self.demux.remove_session(key);
        if let Some(at) = self.deadlines.remove(&key) {
            self.timers.remove(&(at, key));
        }
        self.subscribers.retain(|(p, _), _| *p != key);
        tracing::info!(
            room = session.room,
            participant = session.participant,
            kind = session.kind.as_str(),
            session = session.public_id,
            reason = reason.as_str(),
            "session ended"
        );
        let room = session.room.clone();
        let empty = match self.rooms.get_mut(&room) {
            Some(r) => {
                r.remove(key);
                r.is_empty()
            }
            None => false,
        };
        if empty {
            self.rooms.remove(&room);
        } else {
            self.reassign(&room, Instant::now());
        }
    }

    fn end_all(&mut self, reason: EndReason) {
        let keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        for key in keys {
            self.end(key, reason);
        }
    }

    /// Re-decides every viewer slot's source in a room and rebuilds the fan-out lists.
    fn reassign(&mut self, room_name: &str, now: Instant) {
        let Some(room) = self.rooms.get(room_name) else {
            return;
        };
        let mut keyframes: Vec<(SessionKey, usize)> = Vec::new();
        let mut fanout: HashMap<(SessionKey, usize), Vec<(SessionKey, usize)>> = room
            .publishers
            .iter()
            .flat_map(|p| {
                p.tracks
                    .iter()
                    .map(move |(t, _)| ((p.session, *t), Vec::new()))
            })
            .collect();
        // Decide first (shared borrows), then apply to each viewer's forwarders.
        let mut plan = Vec::new();
        for (viewer_key, participant) in &room.viewers {
            let Some(viewer) = self.sessions.get(viewer_key) else {
                continue;
            };
            for (slot_index, slot) in viewer.peer.slots().iter().enumerate() {
                let wanted = room
                    .source_for(participant, slot.kind)
                    .and_then(|(pkey, track)| {
                        let t = self.sessions.get(&pkey)?.peer.inbound().get(track)?;
                        Some((pkey, track, leg_params(&t.codecs, &t.extensions)))
                    });
                plan.push((*viewer_key, slot_index, slot.kind, wanted));
            }
        }
        for (viewer_key, slot_index, kind, wanted) in plan {
            let Some(forwarder) = self
                .sessions
                .get_mut(&viewer_key)
                .and_then(|v| v.forwarders.get_mut(slot_index))
            else {
                continue;
            };
            match wanted {
                Some((pkey, track, params)) => {
                    let sid = source_id(pkey, track);
                    if forwarder.source() != Some(sid) {
                        forwarder.bind(sid, &params);
                        if kind == MediaKind::Video {
                            keyframes.push((pkey, track));
                        }
                    }
                    if let Some(list) = fanout.get_mut(&(pkey, track)) {
                        list.push((viewer_key, slot_index));
                    }
                }
                None => forwarder.unbind(),
            }
        }
        let Some(room) = self.rooms.get(room_name) else {
            return;
        };
        for p in &room.publishers {
            for (t, _) in &p.tracks {
                self.subscribers.remove(&(p.session, *t));
            }
        }
        self.subscribers.extend(fanout);
        for (pkey, track) in keyframes {
            self.request_keyframe(pkey, track, now, true);
        }
    }

    fn request_keyframe(&mut self, key: SessionKey, track: usize, now: Instant, urgent: bool) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if session.last_keyframe_request.len() <= track {
            session.last_keyframe_request.resize(track + 1, None);
        }
        let last = &mut session.last_keyframe_request[track];
        let recent =
            last.is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL);
        if recent && !urgent {
            return;
        }
        *last = Some(now);
        session.peer.request_keyframe(now, track);
        self.mark(key);
    }

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Some(key) = self.demux.route(from, data) else {
            tracing::trace!("unroutable datagram from {from}");
            return;
        };
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session
            .peer
            .handle_datagram(now, from, BytesMut::from(data));
        self.mark(key);
    }

    fn on_timers(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.deadlines.remove(&key);
            if let Some(s) = self.sessions.get_mut(&key) {
                s.peer.handle_timeout(now);
                self.mark(key);
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let expired: Vec<SessionKey> = self
            .sessions
            .values()
            .filter(|s| {
                !s.connected && now.saturating_duration_since(s.created) > self.connect_timeout
            })
            .map(|s| s.key)
            .collect();
        for key in expired {
            self.end(key, EndReason::Timeout);
        }
        // Viewers still waiting for a keyframe ask again (rate-limited per track).
        let waiting: Vec<(SessionKey, usize)> = self
            .sessions
            .values()
            .filter(|s| s.connected)
            .flat_map(|s| s.forwarders.iter().filter(|f| f.waiting_for_keyframe()))
            .filter_map(|f| f.source())
            .map(|sid| (sid >> 8, (sid & 0xff) as usize))
            .collect();
        for (key, track) in waiting {
            self.request_keyframe(key, track, now, false);
        }
    }

    /// Drains every session touched since the last drain: events, RTP fan-out, datagrams out,
    /// and the next timer.
    fn drain(&mut self) {
        let mut i = 0;
        while i < self.dirty.len() {
            let key = self.dirty[i];
            i += 1;
            self.drain_events(key);
        }
        // Second pass: viewers written to above, and anything marked while draining.
        let keys: Vec<SessionKey> = std::mem::take(&mut self.dirty);
        self.dirty_set.clear();
        for key in keys {
            let Some(session) = self.sessions.get_mut(&key) else {
                continue;
            };
            while let Some((to, data)) = session.peer.poll_transmit() {
                if let Err(e) = self.socket.try_send_to(&data, to) {
                    tracing::trace!("send to {to} dropped: {e}");
                }
            }
            let next = session.peer.poll_timeout();
            if let Some(old) = self.deadlines.remove(&key) {
                self.timers.remove(&(old, key));
            }
            if let Some(at) = next {
                self.deadlines.insert(key, at);
                self.timers.insert((at, key));
            }
        }
    }

    fn drain_events(&mut self, key: SessionKey) {
        loop {
            let Some(session) = self.sessions.get_mut(&key) else {
                return;
            };
            let Some(event) = session.peer.poll_event() else {
                return;
            };
            match event {
                PeerEvent::Rtp {
                    track,
                    packet,
                    received,
                } => self.fan_out(key, track, &packet, received),
                PeerEvent::TrackOpened(track) => {
                    let kind = session.peer.inbound()[track].kind;
                    let room = session.room.clone();
                    if let Some(r) = self.rooms.get_mut(&room) {
                        r.track_opened(key, track, kind);
                    }
                    self.reassign(&room, Instant::now());
                }
                PeerEvent::KeyframeRequest { slot } => {
                    if let Some(sid) = session.forwarders.get(slot).and_then(|f| f.source()) {
                        self.request_keyframe(
                            sid >> 8,
                            (sid & 0xff) as usize,
                            Instant::now(),
                            false,
                        );
                    }
                }
                PeerEvent::State(PeerState::Connected) => {
                    session.connected = true;
                    let sources: Vec<u64> = session
                        .forwarders
                        .iter()
                        .zip(session.peer.slots())
                        .filter(|(_, s)| s.kind == MediaKind::Video)
                        .filter_map(|(f, _)| f.source())
                        .collect();
                    for sid in sources {
                        self.request_keyframe(
                            sid >> 8,
                            (sid & 0xff) as usize,
                            Instant::now(),
                            true,
                        );
                    }
                }
                PeerEvent::State(PeerState::Failed) => {
                    self.end(key, EndReason::IceFailed);
                    return;
                }
                PeerEvent::State(PeerState::Connecting) => {}
            }
        }
    }

    fn fan_out(&mut self, key: SessionKey, track: usize, packet: &rtc::rtp::Packet, now: Instant) {
        let Some(targets) = self.subscribers.get(&(key, track)) else {
            return;
        };
        let sid = source_id(key, track);
        for &(viewer_key, slot) in targets {
            let Some(viewer) = self.sessions.get_mut(&viewer_key) else {
                continue;
            };
            if viewer.peer.state() != PeerState::Connected {
                continue;
            }
            let Some(forwarder) = viewer.forwarders.get_mut(slot) else {
                continue;
            };
            match forwarder.forward(sid, packet, now) {
                Ok(out) => {
                    viewer.peer.write_rtp(now, slot, out);
                    if self.dirty_set.insert(viewer_key) {
                        self.dirty.push(viewer_key);
                    }
                }
                Err(skip) => tracing::trace!(?skip, "packet not forwarded"),
            }
        }
    }
}

/// The kinds of the offer's active m-lines, in order.
fn offer_kinds(offer: &str) -> Vec<MediaKind> {
    offer
        .lines()
        .filter_map(|l| l.strip_prefix("m="))
        .filter(|m| m.split(' ').nth(1) != Some("0"))
        .filter_map(|m| match m.split(' ').next() {
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
