//! Rooms this shard plays from another node of the cluster (a cascade; the HTTP side of it
//! is `crate::cluster::cascade`).
//!
//! An upstream is a session like a publisher's: its tracks fan out to the room's viewers
//! here, their NACKs are answered from this node's caches, and keyframe requests go up as
//! PLI. What differs is how it is reached. Every node serves media on one port, so sessions
//! from node B to node A on that port would all share one 5-tuple, and A could not tell their
//! DTLS handshakes apart. So each upstream has a UDP socket of its own (an ephemeral port):
//! node A sees an ordinary WHEP client. A reader task passes its datagrams to the shard's
//! loop; the shard sends on it directly, never waiting.
//!
//! A room has at most one upstream per node. It ends when the room has had no viewer here
//! for [`IDLE`], and with its connection; the HTTP side then ends its session on the other
//! node and, while viewers remain, plays the room again from wherever it now lives.

use crate::engine::rooms::room::SessionKey;
use crate::engine::shard::event_loop::Engine;
use crate::engine::shard::lifecycle::Joining;
use crate::engine::shard::session::{EndReason, SessionKind};
use crate::engine::{Created, EngineError};
use crate::metrics;
use crate::transport::{Fed, Peer};
use bytes::BytesMut;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long an upstream outlives the last viewer of its room here (a viewer that reloads
/// its page finds it still playing).
pub const IDLE: Duration = Duration::from_secs(5);

/// Datagrams read from all of a shard's upstream sockets, waiting for its loop.
const INPUT_QUEUE: usize = 1024;

/// Largest datagram read from an upstream socket.
const MAX_DATAGRAM: usize = 2048;

/// A datagram an upstream's socket received.
#[derive(Debug)]
pub struct UpstreamInput {
    key: SessionKey,
    from: SocketAddr,
    data: BytesMut,
}

struct Upstream {
    room: String,
    socket: Arc<tokio::net::UdpSocket>,
    reader: JoinHandle<()>,
    /// Since when its room has had no viewer here.
    idle_since: Option<Instant>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A shard's upstreams.
pub struct Upstreams {
    by_session: HashMap<SessionKey, Upstream>,
    by_room: HashMap<String, SessionKey>,
    input_tx: mpsc::Sender<UpstreamInput>,
    /// Datagrams from every upstream socket, for the shard's loop.
    pub input: mpsc::Receiver<UpstreamInput>,
}

impl Default for Upstreams {
    fn default() -> Self {
        let (input_tx, input) = mpsc::channel(INPUT_QUEUE);
        Self {
            by_session: HashMap::new(),
            by_room: HashMap::new(),
            input_tx,
            input,
        }
    }
}

impl Upstreams {
    /// Whether the shard plays no room from another node.
    pub fn is_empty(&self) -> bool {
        self.by_session.is_empty()
    }

    fn remove(&mut self, key: SessionKey) {
        if let Some(u) = self.by_session.remove(&key) {
            if self.by_room.get(&u.room) == Some(&key) {
                self.by_room.remove(&u.room);
            }
        }
    }
}

async fn read_datagrams(
    socket: Arc<tokio::net::UdpSocket>,
    key: SessionKey,
    tx: mpsc::Sender<UpstreamInput>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
        let data = BytesMut::from(&buf[..n]);
        if tx.send(UpstreamInput { key, from, data }).await.is_err() {
            return;
        }
    }
}

impl Engine {
    /// Starts playing `room` from another node as `participant` (its video in the codec
    /// `video` names, when known, in the simulcast layers `rids` names): returns the new session with its offer (in `answer`'s
    /// place) for the HTTP side to send there, or `None` when the room already has an
    /// upstream on this shard.
    pub(in crate::engine) fn open_upstream(
        &mut self,
        room: String,
        participant: String,
        (video, rids): (Option<&str>, &[String]),
    ) -> Result<Option<Created>, EngineError> {
        if self.upstreams.by_room.contains_key(&room) {
            return Ok(None);
        }
        let unavailable = |e: std::io::Error| {
            EngineError::Unserviceable(format!("no socket to play the room from its node: {e}"))
        };
        let socket = UdpSocket::bind(SocketAddr::new(self.ctx.local_addr.ip(), 0))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(unavailable)?;
        let port = socket.local_addr().map_err(unavailable)?.port();
        let socket = Arc::new(tokio::net::UdpSocket::from_std(socket).map_err(unavailable)?);
        let local = SocketAddr::new(self.ctx.candidate_addr().ip(), port);
        let now = Instant::now();
        let (peer, offer) =
            Peer::upstream(&self.ctx, local, video, rids, now).map_err(EngineError::from)?;
        let (id, etag) = self.admit(
            SessionKind::Whip,
            Joining {
                room: room.clone(),
                participant,
                target: None,
                for_node: false,
            },
            peer,
            None,
            String::new(),
            now,
        );
        let key = self
            .by_public
            .get(&id)
            .copied()
            .ok_or(EngineError::NotFound)?;
        let reader = tokio::spawn(read_datagrams(
            socket.clone(),
            key,
            self.upstreams.input_tx.clone(),
        ));
        self.upstreams.by_room.insert(room.clone(), key);
        self.upstreams.by_session.insert(
            key,
            Upstream {
                room,
                socket,
                reader,
                idle_since: None,
            },
        );
        Ok(Some(Created {
            id,
            answer: offer,
            etag,
        }))
    }

    /// Applies the other node's answer to an upstream's offer.
    pub(in crate::engine) fn answer_upstream(
        &mut self,
        id: &str,
        answer: &str,
    ) -> Result<(), EngineError> {
        let key = *self.by_public.get(id).ok_or(EngineError::NotFound)?;
        if !self.upstreams.by_session.contains_key(&key) {
            return Err(EngineError::NotFound);
        }
        let session = self.sessions.get_mut(&key).ok_or(EngineError::NotFound)?;
        session
            .peer
            .apply_answer(Instant::now(), answer)
            .map_err(|e| EngineError::BadOffer(format!("the room's node answered badly: {e}")))?;
        self.mark(key);
        Ok(())
    }

    /// What an upstream's reader task passed on.
    pub(in crate::engine) fn on_upstream_input(&mut self, mut input: UpstreamInput) {
        self.tally.udp_in.0 += 1;
        self.tally.udp_in.1 += input.data.len() as u64;
        let Some(session) = self.sessions.get_mut(&input.key) else {
            return;
        };
        match session
            .peer
            .handle_datagram(Instant::now(), input.from, &mut input.data)
        {
            Fed::Stack => self.mark(input.key),
            Fed::Parley => self.own_events.push(input.key),
        }
    }

    /// Sends one datagram of an upstream session on its own socket; false when `key` is
    /// not an upstream.
    pub(in crate::engine) fn send_upstream(
        &mut self,
        key: SessionKey,
        to: SocketAddr,
        data: &[u8],
    ) -> bool {
        let Some(u) = self.upstreams.by_session.get(&key) else {
            return false;
        };
        match u.socket.try_send_to(data, to) {
            Ok(n) => {
                self.tally.udp_out.0 += 1;
                self.tally.udp_out.1 += n as u64;
            }
            Err(_) => self.tally.drop(metrics::Drop::QueueFull),
        }
        true
    }

    /// Whether `key` is an upstream session.
    pub(in crate::engine) fn is_upstream(&self, key: SessionKey) -> bool {
        !self.upstreams.is_empty() && self.upstreams.by_session.contains_key(&key)
    }

    /// Forgets an ended session's upstream, if it was one.
    pub(in crate::engine) fn drop_upstream(&mut self, key: SessionKey) {
        if !self.upstreams.is_empty() {
            self.upstreams.remove(key);
        }
    }

    /// Ends the upstreams whose rooms have had no viewer here for [`IDLE`].
    pub(in crate::engine) fn upstreams_tick(&mut self, now: Instant) {
        let mut idle = Vec::new();
        for (key, u) in self.upstreams.by_session.iter_mut() {
            let here = self
                .rooms
                .get(&u.room)
                .is_some_and(|r| !r.viewers.is_empty());
            let elsewhere = self
                .relays
                .get(&u.room)
                .is_some_and(|r| r.viewers.values().any(|&n| n > 0));
            if here || elsewhere {
                u.idle_since = None;
                continue;
            }
            let since = *u.idle_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= IDLE {
                idle.push(*key);
            }
        }
        for key in idle {
            self.end(key, EndReason::Deleted);
        }
    }
}
