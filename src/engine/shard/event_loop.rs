//! A shard's state and its event loop: commands from HTTP, datagrams from its socket and
//! from other shards, and timers, all handled on one task so no state is shared or locked.
//! What a datagram produced is drained here; a publisher's packet goes to `fanout`.

use crate::engine::keymap::KeyMap;
use crate::engine::rooms::relay::{Mirror, Relays};
use crate::engine::rooms::room::{Room, SessionKey};
use crate::engine::shard::demux::Demux;
use crate::engine::shard::sender::Senders;
use crate::engine::shard::session::{EndReason, Session};
use crate::engine::shard::socket::{MediaSocket, RecvBatch};
use crate::engine::shard::tcp::TcpConns;
use crate::engine::shard::upstream::Upstreams;
use crate::engine::shard::ShardLink;
use crate::engine::{Command, EngineConfig, Registry};
use crate::forward::cache::PacketCache;
use crate::metrics::{self, Levels, Metrics, Tally};
use crate::transport::{Fed, MediaKind, PeerEvent, PeerState, TransportContext};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Housekeeping period: speakers, stalls, keyframe retries, connect timeouts.
const TICK: Duration = Duration::from_millis(250);
/// Largest datagram accepted; anything longer is dropped and counted.
const MAX_DATAGRAM: usize = 2048;
/// RTCP statistics (NACKs, RTT, jitter, loss) are read this often per session.
pub(in crate::engine) const RTCP_STATS_EVERY: Duration = Duration::from_secs(5);

pub(in crate::engine) struct Engine {
    pub(in crate::engine) ctx: TransportContext,
    pub(in crate::engine) config: EngineConfig,
    socket: MediaSocket,
    /// This engine's place among the shards.
    pub(in crate::engine) shard: ShardLink,
    /// When the shard's load was last published, and its forwarded packets then.
    load_mark: (Instant, u64),
    /// Packets forwarded since start, for the load published to placement.
    forwarded: u64,
    pub(in crate::engine) registry: Registry,
    pub(in crate::engine) sessions: KeyMap<SessionKey, Session>,
    pub(in crate::engine) by_public: HashMap<String, SessionKey>,
    pub(in crate::engine) demux: Demux,
    pub(in crate::engine) rooms: HashMap<String, Room>,
    /// Source id (publisher session, track, layer) → viewer slots fed by it.
    pub(in crate::engine) subscribers: KeyMap<u64, Vec<(SessionKey, usize)>>,
    timers: BTreeSet<(Instant, SessionKey)>,
    deadlines: HashMap<SessionKey, Instant>,
    pub(in crate::engine) dirty: Vec<SessionKey>,
    pub(in crate::engine) dirty_set: HashSet<SessionKey>,
    /// Sessions with events Parley raised itself from what it read without the stack (a
    /// viewer's TWCC feedback, most often): their stack has nothing new to collect.
    pub(in crate::engine) own_events: Vec<SessionKey>,
    pub(in crate::engine) next_key: SessionKey,
    pub(in crate::engine) metrics: Arc<Metrics>,
    pub(in crate::engine) tally: Tally,
    latency: prometheus::local::LocalHistogram,
    send_wait: prometheus::local::LocalHistogram,
    /// Sealed media, gathered per sending thread until the end of the input batch.
    pub(in crate::engine) senders: Senders,
    /// The header being rewritten for one slot (reused: the fan-out does not allocate).
    pub(in crate::engine) scratch: rtc::rtp::Header,
    /// Viewer slots that reached a frame end while their viewer probes: padding follows.
    pub(in crate::engine) probe_queue: Vec<(SessionKey, usize)>,
    /// When viewers' estimates were last sampled for the histogram.
    pub(in crate::engine) last_estimate_sample: Option<Instant>,
    /// Recent packets of each published video track (by source id), for NACKs.
    pub(in crate::engine) caches: KeyMap<u64, PacketCache>,
    /// Rooms whose tracks' layers changed since the last tick.
    pub(in crate::engine) layers_dirty: HashSet<String>,
    /// Publishers of rooms homed on other shards, as this shard serves them (`relay`).
    pub(in crate::engine) mirrors: KeyMap<SessionKey, Mirror>,
    /// (Home shard, publisher key there) → the mirror's key here.
    pub(in crate::engine) mirror_of: HashMap<(usize, SessionKey), SessionKey>,
    /// Rooms homed here with viewers on other shards, by name.
    pub(in crate::engine) relays: HashMap<String, Relays>,
    /// The version of the last room state sent to another shard.
    pub(in crate::engine) state_version: u64,
    /// ICE-TCP connections of this shard's sessions.
    pub(in crate::engine) tcp: TcpConns,
    /// Rooms this shard plays from other nodes of the cluster.
    pub(in crate::engine) upstreams: Upstreams,
}

pub(in crate::engine) fn kind_index(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

/// Whose events [`Engine::drain_events`] collects.
#[derive(Clone, Copy)]
enum Source {
    /// Only those Parley raised itself.
    Own,
    /// The stack's too.
    All,
}

impl Engine {
    pub(in crate::engine) fn new(
        ctx: TransportContext,
        config: EngineConfig,
        metrics: Arc<Metrics>,
        socket: MediaSocket,
        senders: Senders,
        registry: Registry,
        shard: ShardLink,
    ) -> Self {
        Self {
            shard,
            load_mark: (Instant::now(), 0),
            forwarded: 0,
            latency: metrics.local_forwarding_latency(),
            send_wait: metrics.local_send_wait(),
            tcp: TcpConns::new(metrics.ice_tcp_writers()),
            upstreams: Upstreams::default(),
            metrics,
            tally: Tally::default(),
            senders,
            scratch: rtc::rtp::Header::default(),
            probe_queue: Vec::with_capacity(64),
            last_estimate_sample: None,
            caches: KeyMap::default(),
            layers_dirty: HashSet::new(),
            mirrors: KeyMap::default(),
            mirror_of: HashMap::new(),
            relays: HashMap::new(),
            state_version: 0,
            ctx,
            config,
            socket,
            registry,
            sessions: KeyMap::default(),
            by_public: HashMap::new(),
            demux: Demux::default(),
            rooms: HashMap::new(),
            subscribers: KeyMap::default(),
            timers: BTreeSet::new(),
            deadlines: HashMap::new(),
            dirty: Vec::new(),
            dirty_set: HashSet::new(),
            own_events: Vec::new(),
            next_key: 1,
        }
    }

    pub(in crate::engine) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        // One byte more than the largest accepted datagram, to tell oversized ones apart.
        let mut batch = RecvBatch::new(MAX_DATAGRAM + 1);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = self
                .timers
                .first()
                .map(|(t, _)| *t)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            // Unbiased: the ready sources take turns in random order. Checking commands first
            // let a crowd of POSTs (each open is most of a millisecond) hold off every STUN
            // check and DTLS flight of the sessions already set up, and their media.
            tokio::select! {
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
                res = self.socket.recv_batch(&mut batch) => {
                    if let Ok(n) = res {
                        let now = Instant::now();
                        for i in 0..n {
                            if let Some((from, data)) = batch.get(i) {
                                self.on_datagram(now, from, data);
                            }
                        }
                        self.shard.outbox.wake();
                    }
                }
                () = self.shard.inbox.ready() => self.take_handed(),
                () = self.shard.relay_in.ready() => self.take_relayed(),
                Some((from, control)) = self.shard.control_in.recv() => self.on_control(from, control),
                Some(input) = self.tcp.input.recv() => self.on_tcp_input(input),
                Some(input) = self.upstreams.input.recv() => self.on_upstream_input(input),
                _ = tokio::time::sleep_until(next.into()) => self.on_timers(Instant::now()),
                _ = tick.tick() => self.on_tick(Instant::now()),
            }
            self.drain();
        }
    }

    /// Notes that a session has output, events or a new timer to collect.
    pub(in crate::engine) fn mark(&mut self, key: SessionKey) {
        if self.dirty_set.insert(key) {
            self.dirty.push(key);
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::AdoptTcp {
                ufrag,
                stream,
                peer,
                first,
                guard,
            } => self.adopt_tcp(&ufrag, stream, peer, first, guard),
            Command::Open {
                kind,
                room,
                participant,
                target,
                for_node,
                offer,
                mirror,
                reply,
            } => {
                if let Some((home, state)) = mirror {
                    self.mirror(home, state, Instant::now());
                }
                let opened = self.open(kind, room.clone(), participant, (target, for_node), &offer);
                if opened.is_err() && kind == crate::engine::SessionKind::Whep {
                    // The home shard counted this viewer when it was placed here.
                    self.viewer_left_relay(&room, None);
                }
                let _ = reply.send(opened);
            }
            Command::Relay {
                room,
                participant,
                shard,
                reply,
            } => {
                let _ = reply.send(self.relay_to(&room, participant.as_deref(), shard));
            }
            Command::PlayFrom {
                room,
                participant,
                video,
                rids,
                reply,
            } => {
                let video = (video.as_deref(), rids.as_slice());
                let _ = reply.send(self.open_upstream(room, participant, video));
            }
            Command::Answer { id, answer, reply } => {
                let _ = reply.send(self.answer_upstream(&id, &answer));
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
            Command::SetLayer {
                id,
                mid,
                prefs,
                reply,
            } => {
                let _ = reply.send(self.set_layer_prefs(&id, &mid, prefs));
            }
            Command::Subscribe { id, reply } => {
                let _ = reply.send(self.subscribe(&id));
            }
            Command::Rooms { reply } => {
                let _ = reply.send(self.room_summaries());
            }
            Command::Room { name, reply } => {
                let _ = reply.send(self.room_view(&name));
            }
            Command::RemoveParticipant {
                room,
                participant,
                reply,
            } => {
                let _ = reply.send(self.remove_participant(&room, &participant));
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        self.tally.udp_in.0 += 1;
        self.tally.udp_in.1 += data.len() as u64;
        if data.len() > MAX_DATAGRAM {
            self.tally.drop(metrics::Drop::Oversized);
            return;
        }
        match self.demux.route(from, data) {
            Some(key) => self.feed(key, now, from, data),
            None => self.hand_off(now, from, data),
        }
    }

    /// Feeds a datagram to the peer of the session it was routed to.
    pub(in crate::engine) fn feed(
        &mut self,
        key: SessionKey,
        now: Instant,
        from: SocketAddr,
        data: &mut [u8],
    ) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        match session.peer.handle_datagram(now, from, data) {
            Fed::Stack => self.mark(key),
            // Duplicates are harmless: a second look finds no more events.
            Fed::Parley => self.own_events.push(key),
        }
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
        let connect_timeout = self.config.connect_timeout;
        let expired: Vec<SessionKey> = self
            .sessions
            .values()
            .filter(|s| !s.connected && now.saturating_duration_since(s.created) > connect_timeout)
            .map(|s| s.key)
            .collect();
        for key in expired {
            self.end(key, EndReason::Timeout);
        }
        for s in self.sessions.values_mut().filter(|s| s.connected) {
            if s.peer.on_tick(now) {
                self.dirty_set.insert(s.key).then(|| self.dirty.push(s.key));
            }
        }
        self.rooms_tick(now);
        self.upstreams_tick(now);
        self.layers_tick(now);
        self.send_room_states();
        self.retry_keyframes(now);
        self.read_rtcp_stats(now);
        self.flush_metrics();
    }

    /// Reads each connected session's RTCP statistics every [`RTCP_STATS_EVERY`].
    fn read_rtcp_stats(&mut self, now: Instant) {
        for s in self.sessions.values_mut().filter(|s| s.connected) {
            if now < s.rtcp_due {
                continue;
            }
            s.rtcp_due = now + RTCP_STATS_EVERY;
            let (figures, nack_sent) = s.peer.take_rtcp_figures(now);
            let sent_before = std::mem::replace(&mut s.nacks_sent, nack_sent);
            self.tally.nack_received += figures.nacked;
            if s.peer.sealed_media_addr().is_none() {
                // The stack answered these NACKs; Parley counts its own resends as it sends.
                self.tally.retransmissions += figures.retransmitted;
            }
            self.tally.nack_sent += nack_sent.saturating_sub(sent_before);
            self.tally.rtt_s.extend(&figures.rtt);
            self.tally.jitter_s.extend(&figures.jitter);
            self.tally.loss.extend(&figures.loss);
        }
    }

    /// Moves the tally into the Prometheus metrics, with the current levels.
    pub(in crate::engine) fn flush_metrics(&mut self) {
        let mut levels = Levels {
            tcp_connections: self.tcp.count() as i64,
            ..Levels::default()
        };
        for room in self.rooms.values() {
            if room.home.is_some() {
                // Served here for more of its viewers: the home shard counts the room and its
                // tracks, and this shard its own viewers.
                let names: HashSet<&str> = room
                    .viewers
                    .iter()
                    .map(|v| v.participant.as_str())
                    .collect();
                levels.participants += names.len() as i64;
                continue;
            }
            levels.rooms += 1;
            levels.participants += room.participants().len() as i64;
            for t in room.publishers.iter().flat_map(|p| p.tracks.iter()) {
                let codec = metrics::CODECS
                    .iter()
                    .position(|c| *c == metrics::codec_label(&t.codec))
                    .unwrap_or(metrics::CODECS.len() - 1);
                levels.tracks[kind_index(t.kind)][codec] += 1;
            }
        }
        for s in self.sessions.values() {
            levels.sessions[usize::from(s.kind == crate::engine::SessionKind::Whep)] += 1;
            if let Some(path) = s.peer.path().filter(|_| s.connected) {
                let t = metrics::TRANSPORTS
                    .iter()
                    .position(|t| *t == path.transport);
                let c = metrics::CANDIDATES
                    .iter()
                    .position(|c| *c == path.candidate);
                if let (Some(t), Some(c)) = (t, c) {
                    levels.paths[t][c] += 1;
                }
            }
            levels.paused_slots += s.forwarders.iter().filter(|f| f.paused()).count() as i64;
            for tap in s.published.taps.iter().flatten() {
                for l in tap.layers.layers().iter().filter(|l| l.live) {
                    if let Some(n) = levels.layers.get_mut(usize::from(l.spatial)) {
                        *n += 1;
                    }
                }
            }
        }
        for s in self.sessions.values_mut() {
            self.tally.dropped[metrics::Drop::UnknownSsrc as usize] += s.peer.take_unknown_rtp();
            self.tally.dropped[metrics::Drop::Unauthentic as usize] += s.peer.take_unauthentic();
        }
        self.forwarded += self.tally.rtp_out.iter().sum::<u64>();
        self.publish_load();
        self.metrics.flush(self.shard.id, &mut self.tally, &levels);
        self.latency.flush();
        self.send_wait.flush();
    }

    /// Publishes this shard's forwarded packets a second since the last time, for placement.
    fn publish_load(&mut self) {
        let now = Instant::now();
        let (at, before) = self.load_mark;
        let secs = now.saturating_duration_since(at).as_secs_f64();
        if secs < 0.5 {
            return;
        }
        let rate = (self.forwarded - before) as f64 / secs;
        self.shard
            .placement
            .publish_load(self.shard.id, rate as u64);
        self.load_mark = (now, self.forwarded);
    }

    /// Forgets a session's timer.
    pub(in crate::engine) fn clear_timer(&mut self, key: SessionKey) {
        if let Some(at) = self.deadlines.remove(&key) {
            self.timers.remove(&(at, key));
        }
    }

    /// Sends what a session has to send, ignoring a full socket buffer (that datagram is lost,
    /// as on any congested path; nobody else waits for it).
    pub(in crate::engine) fn transmit(&mut self, key: SessionKey) {
        loop {
            let Some(session) = self.sessions.get_mut(&key) else {
                return;
            };
            let Some((to, data, tcp)) = session.peer.poll_transmit() else {
                return;
            };
            if tcp {
                self.send_tcp(key, to, &data);
                continue;
            }
            if self.is_upstream(key) {
                self.send_upstream(key, to, &data);
                continue;
            }
            if let Some(dropped) = self.demux.confirm(key, to) {
                self.shard.own_address(to, dropped);
            }
            match self.socket.try_send_to(&data, to) {
                Ok(n) => {
                    self.tally.udp_out.0 += 1;
                    self.tally.udp_out.1 += n as u64;
                }
                Err(e) => {
                    self.tally.drop(metrics::Drop::QueueFull);
                    tracing::trace!("send to {to} dropped: {e}");
                }
            }
        }
    }

    /// Hands the sealed media of this input batch to the sending threads, and counts what
    /// they have sent so far.
    fn flush_outgoing(&mut self) {
        self.senders.submit();
        let (latency, wait) = (&mut self.latency, &mut self.send_wait);
        let done = self.senders.take(
            |d| latency.observe(d.as_secs_f64()),
            |d| wait.observe(d.as_secs_f64()),
        );
        self.tally.udp_out.0 += done.sent;
        self.tally.udp_out.1 += done.bytes;
        for _ in 0..done.dropped {
            self.tally.drop(metrics::Drop::QueueFull);
        }
    }

    /// Drains every session touched since the last drain: events, RTP fan-out, datagrams out,
    /// and the next timer.
    fn drain(&mut self) {
        // First what Parley read itself: handling it may mark sessions for the full walk.
        let mut own = std::mem::take(&mut self.own_events);
        for &key in &own {
            if !self.dirty_set.contains(&key) {
                self.drain_events(key, Source::Own);
            }
        }
        own.clear();
        self.own_events = own;
        let mut i = 0;
        while i < self.dirty.len() {
            let key = self.dirty[i];
            i += 1;
            self.drain_events(key, Source::All);
        }
        // Nothing below marks a session, so the list is walked in place and kept for reuse
        // (taking it would allocate a new one every input batch).
        for i in 0..self.dirty.len() {
            let key = self.dirty[i];
            self.transmit(key);
            let Some(session) = self.sessions.get_mut(&key) else {
                continue;
            };
            let next = session.peer.poll_timeout();
            self.clear_timer(key);
            if let Some(at) = next {
                self.deadlines.insert(key, at);
                self.timers.insert((at, key));
            }
        }
        self.dirty.clear();
        self.dirty_set.clear();
        self.flush_outgoing();
        self.shard.relay_out.wake();
    }

    fn drain_events(&mut self, key: SessionKey, source: Source) {
        loop {
            let Some(session) = self.sessions.get_mut(&key) else {
                return;
            };
            let event = match source {
                Source::Own => session.peer.poll_own_event(),
                Source::All => session.peer.poll_event(),
            };
            let Some(event) = event else {
                return;
            };
            match event {
                PeerEvent::Rtp {
                    track,
                    layer,
                    packet,
                    received,
                } => self.fan_out(key, track, layer, &packet, received),
                PeerEvent::TrackOpened(track) => self.track_opened(key, track),
                PeerEvent::LayerOpened { track, layer } => self.layer_opened(key, track, layer),
                PeerEvent::Nack { slot, seqs } => self.resend(key, slot, &seqs),
                PeerEvent::Downlink(feedback) => self.on_feedback(key, feedback, Instant::now()),
                PeerEvent::KeyframeRequest { slot } => {
                    self.tally.keyframe_requests_received += 1;
                    // Another node's upstream asks for its viewers that just joined there.
                    let urgent = session.for_node;
                    if let Some(sid) = session.forwarders.get(slot).and_then(|f| f.source()) {
                        self.request_keyframe(sid, Instant::now(), urgent);
                    }
                }
                PeerEvent::State(PeerState::Connected) => {
                    session.connected = true;
                    session.peer.read_path();
                    tracing::debug!(
                        session = session.public_id,
                        "connected {} ms after the offer",
                        session.created.elapsed().as_millis()
                    );
                    let sources: Vec<u64> = session
                        .forwarders
                        .iter()
                        .zip(session.peer.slots())
                        .filter(|(_, s)| s.kind == MediaKind::Video)
                        .filter_map(|(f, _)| f.source())
                        .collect();
                    for sid in sources {
                        self.request_keyframe(sid, Instant::now(), true);
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
}
