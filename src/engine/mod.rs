//! The media engine: one or more shards, each a task on its own thread with its own socket
//! on the shared media port, that owns its peer connections, its rooms, and the forwarding
//! between them. Four parts:
//!
//! - `shard`: one engine on its thread — its event loop, socket, sessions, timers, sending
//!   threads and queues to the other shards;
//! - `rooms`: membership, slot assignment, room events, the room API's views, and rooms
//!   spread over shards;
//! - `fanout`: what each viewer receives — the per-packet copy, simulcast layers, downlink
//!   fitting;
//! - this file and `placement`, the HTTP side: the commands and the [`EngineHandle`] that
//!   sends each to the shard owning its room or session, and which shard a room lives on.
//!
//! A shard never awaits while it holds state it shares. Shared structures: the session
//! [`Registry`] (a `DashMap`, read by HTTP handlers for lookups and limits), the room
//! [`Placement`], and which shard owns which client address.
//! Per datagram: demultiplex to a session, feed its peer, then drain what that produced:
//! RTP from a publisher fans out to the slots bound to that track (see `forward::slot`).

pub mod fanout;
mod keymap;
pub mod placement;
pub mod rooms;
pub mod shard;

pub use placement::Placement;
pub use rooms::api::{
    Counters, ParticipantView, RoomSummary, RoomView, SessionView, SlotView, TrackView,
};
pub use rooms::events::{LayerInfo, RoomEvent};
pub use rooms::room::SessionKey;
pub use shard::demux::{stun_local_ufrag, Demux};
pub use shard::session::{EndReason, SessionKind};
pub use shard::spawn;
pub use shard::tcp::WRITE_STALL as TCP_WRITE_STALL;

use crate::forward::selector::Preferences;
use crate::transport::sdpfrag::SdpFrag;
use crate::transport::{sdp::OfferError, TransportError};
use dashmap::DashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What the HTTP side knows of a live session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// WHIP or WHEP.
    pub kind: SessionKind,
    /// Room name.
    pub room: String,
    /// Participant name.
    pub participant: String,
    /// Current strong ETag value (with quotes).
    pub etag: String,
    /// The client's current ICE ufrag (a fragment with another one is an ICE restart).
    pub remote_ufrag: String,
}

/// Live sessions by their public id (the last segment of the session URL).
pub type Registry = Arc<DashMap<String, SessionInfo>>;

/// A session the engine created for an offer.
#[derive(Debug, Clone)]
pub struct Created {
    /// Public session id (128 random bits, hex).
    pub id: String,
    /// SDP answer, with the server's candidates in every m-section.
    pub answer: String,
    /// Strong ETag (with quotes).
    pub etag: String,
}

/// Why the engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The offer is not SDP Parley can read.
    #[error("{0}")]
    BadOffer(String),
    /// The offer is SDP but cannot be served.
    #[error("{0}")]
    Unserviceable(String),
    /// No such session.
    #[error("no such session")]
    NotFound,
    /// The trickle fragment or restart could not be applied.
    #[error("{0}")]
    BadFragment(String),
    /// The request names something the session does not have (400).
    #[error("{0}")]
    BadRequest(String),
    /// The request is refused by a limit (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such room or participant.
    #[error("{0}")]
    NoSuchThing(String),
    /// The engine has stopped.
    #[error("the media engine is shutting down")]
    Stopped,
}

/// Limits and timeouts the engine applies.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A new session that has not connected by then is closed.
    pub connect_timeout: std::time::Duration,
    /// Most participants (distinct names with a session) in one room.
    pub max_participants_per_room: usize,
    /// Threads that send forwarded media (at least one).
    pub send_threads: usize,
    /// Per-viewer downlink estimation, `None` when off.
    pub downlink: Option<crate::forward::estimate::Bounds>,
    /// Whether viewers' links are probed with padding before a layer goes up.
    pub probe: bool,
    /// A room's sessions on its home shard before its further viewers spread.
    pub spread_after: usize,
}

impl From<TransportError> for EngineError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Offer(OfferError::Malformed(_)) => EngineError::BadOffer(e.to_string()),
            TransportError::Offer(OfferError::Unserviceable(why)) => {
                EngineError::Unserviceable(why)
            }
            TransportError::Stack(err) => {
                EngineError::Unserviceable(format!("the offer cannot be negotiated: {err}"))
            }
            TransportError::Certificate(why) => EngineError::Unserviceable(why),
        }
    }
}

/// A request to the engine.
pub(crate) enum Command {
    Open {
        kind: SessionKind,
        room: String,
        participant: Option<String>,
        target: Option<String>,
        /// Another node's upstream.
        for_node: bool,
        offer: String,
        /// For a viewer placed on a shard other than its room's: the home shard and the
        /// room's publishers there, to mirror before the viewer is served.
        mirror: Option<(usize, rooms::relay::RoomState)>,
        reply: oneshot::Sender<Result<Created, EngineError>>,
    },
    /// To a room's home shard: another shard will serve one more of its viewers (refused
    /// when the room is full).
    Relay {
        room: String,
        participant: Option<String>,
        shard: usize,
        reply: oneshot::Sender<Result<rooms::relay::RoomState, EngineError>>,
    },
    Subscribe {
        id: String,
        reply: oneshot::Sender<Result<mpsc::Receiver<Arc<str>>, EngineError>>,
    },
    Rooms {
        reply: oneshot::Sender<Vec<RoomSummary>>,
    },
    Room {
        name: String,
        reply: oneshot::Sender<Option<RoomView>>,
    },
    RemoveParticipant {
        room: String,
        participant: String,
        reply: oneshot::Sender<bool>,
    },
    /// Play a room from another node (a cascade): the upstream session and its offer, or
    /// `None` when the room has one.
    PlayFrom {
        room: String,
        participant: String,
        video: Option<String>,
        rids: Vec<String>,
        reply: oneshot::Sender<Result<Option<Created>, EngineError>>,
    },
    /// The other node's answer to an upstream's offer.
    Answer {
        id: String,
        answer: String,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    Trickle {
        id: String,
        frag: SdpFrag,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    Restart {
        id: String,
        frag: SdpFrag,
        reply: oneshot::Sender<Result<(String, String), EngineError>>,
    },
    Close {
        id: String,
        reason: EndReason,
        reply: oneshot::Sender<bool>,
    },
    SetLayer {
        id: String,
        mid: String,
        prefs: Preferences,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    /// An ICE-TCP connection whose first frame, a STUN binding request, names a session
    /// of the shard by `ufrag`.
    AdoptTcp {
        ufrag: String,
        stream: std::net::TcpStream,
        peer: std::net::SocketAddr,
        first: bytes::BytesMut,
        guard: shard::tcp::ConnGuard,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// The HTTP side's way to reach the engine's shards.
#[derive(Clone)]
pub struct EngineHandle {
    shards: Arc<[mpsc::Sender<Command>]>,
    /// Live sessions.
    pub registry: Registry,
    /// Which shard serves which room.
    pub placement: Arc<Placement>,
    /// Why the kernel does not steer clients to their shards, when it does not (with more
    /// than one shard: datagrams on the wrong shard are then handed over).
    pub unsteered: Option<String>,
}

impl EngineHandle {
    async fn ask<T>(
        &self,
        shard: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.shards
            .get(shard)
            .ok_or(EngineError::NotFound)?
            .send(make(reply))
            .await
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// The shard a session id names.
    fn shard_of(&self, id: &str) -> Result<usize, EngineError> {
        placement::shard_of_id(id)
            .filter(|&s| s < self.shards.len())
            .ok_or(EngineError::NotFound)
    }

    /// How many shards serve media.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Creates a session for an offer, on the shard that serves its room, and returns its
    /// answer. `target` names the one participant a WHEP session plays (None: the room,
    /// last-N); `for_node`: the session is another node's upstream (its keyframe requests stand for viewers joining there).
    pub async fn open(
        &self,
        kind: SessionKind,
        room: &str,
        participant: Option<String>,
        (target, for_node): (Option<String>, bool),
        offer: String,
    ) -> Result<Created, EngineError> {
        let (shard, home) = match kind {
            SessionKind::Whip => {
                let home = self.placement.claim(room);
                (home, home)
            }
            SessionKind::Whep => self.placement.claim_viewer(room),
        };
        let mirror = match shard == home {
            true => Ok(None),
            false => self
                .ask(home, |reply| Command::Relay {
                    room: room.to_owned(),
                    participant: participant.clone(),
                    shard,
                    reply,
                })
                .await
                .and_then(|r| r)
                .map(|state| Some((home, state))),
        };
        let created = match mirror {
            Ok(mirror) => self
                .ask(shard, |reply| Command::Open {
                    kind,
                    room: room.to_owned(),
                    participant,
                    target,
                    for_node,
                    offer,
                    mirror,
                    reply,
                })
                .await
                .and_then(|r| r),
            Err(e) => Err(e),
        };
        if created.is_err() {
            // No session holds the claim; an opened one gives it back when it ends.
            self.placement.release(room, shard);
        }
        created
    }

    /// Starts playing `room` from another node of the cluster as publisher `participant`
    /// (its video in codec `video`, e.g. `H264`, when known, in the simulcast layers `rids`
    /// names, smallest first),
    /// on the room's home shard:
    /// returns the upstream session with its offer (in `answer`), to send to that node, or
    /// `None` when the room is already played from there.
    pub async fn play_from(
        &self,
        room: &str,
        participant: String,
        (video, rids): (Option<String>, Vec<String>),
    ) -> Result<Option<Created>, EngineError> {
        let home = self.placement.claim(room);
        let created = self
            .ask(home, |reply| Command::PlayFrom {
                room: room.to_owned(),
                participant,
                video,
                rids,
                reply,
            })
            .await
            .and_then(|r| r);
        if !matches!(created, Ok(Some(_))) {
            self.placement.release(room, home);
        }
        created
    }

    /// Applies the other node's answer to an upstream's offer ([`EngineHandle::play_from`]).
    pub async fn answer(&self, id: &str, answer: String) -> Result<(), EngineError> {
        self.ask(self.shard_of(id)?, |reply| Command::Answer {
            id: id.to_owned(),
            answer,
            reply,
        })
        .await?
    }

    /// The room events of a WHEP session: a snapshot of the room, then changes as they happen.
    pub async fn subscribe(&self, id: &str) -> Result<mpsc::Receiver<Arc<str>>, EngineError> {
        self.ask(self.shard_of(id)?, |reply| Command::Subscribe {
            id: id.to_owned(),
            reply,
        })
        .await?
    }

    /// Every room, summarized, by name (a room spread over shards once).
    pub async fn rooms(&self) -> Result<Vec<RoomSummary>, EngineError> {
        let mut all: Vec<RoomSummary> = Vec::new();
        for shard in 0..self.shards.len() {
            all.extend(self.ask(shard, |reply| Command::Rooms { reply }).await?);
        }
        // The home shard's summary first, so it leads the merged one.
        all.sort_by(|a, b| {
            let home = |r: &RoomSummary| r.shards.first() != Some(&r.shard);
            (a.name.as_str(), home(a)).cmp(&(b.name.as_str(), home(b)))
        });
        let mut merged: Vec<RoomSummary> = Vec::with_capacity(all.len());
        for summary in all {
            match merged.last_mut().filter(|m| m.name == summary.name) {
                Some(m) => m.merge(summary),
                None => merged.push(summary),
            }
        }
        Ok(merged)
    }

    /// One room in detail, from every shard that serves its sessions.
    pub async fn room(&self, name: &str) -> Result<Option<RoomView>, EngineError> {
        let Some(home) = self.placement.shard_of(name) else {
            return Ok(None);
        };
        let others = self
            .placement
            .sessions_of(name)
            .into_iter()
            .enumerate()
            .filter(|&(s, n)| n > 0 && s != home)
            .map(|(s, _)| s);
        let mut view: Option<RoomView> = None;
        for shard in std::iter::once(home).chain(others) {
            let part = self
                .ask(shard, |reply| Command::Room {
                    name: name.to_owned(),
                    reply,
                })
                .await?;
            match (&mut view, part) {
                (Some(v), Some(part)) => v.merge(part),
                (None, part) => view = part,
                (Some(_), None) => {}
            }
        }
        Ok(view)
    }

    /// Ends every session of a participant in a room, on every shard; false when it has
    /// none.
    pub async fn remove_participant(&self, room: &str, participant: &str) -> bool {
        let shards: Vec<usize> = self
            .placement
            .sessions_of(room)
            .into_iter()
            .enumerate()
            .filter(|&(_, n)| n > 0)
            .map(|(s, _)| s)
            .collect();
        let mut removed = false;
        for shard in shards {
            removed |= self
                .ask(shard, |reply| Command::RemoveParticipant {
                    room: room.to_owned(),
                    participant: participant.to_owned(),
                    reply,
                })
                .await
                .unwrap_or(false);
        }
        removed
    }

    /// Applies trickled candidates.
    pub async fn trickle(&self, id: &str, frag: SdpFrag) -> Result<(), EngineError> {
        self.ask(self.shard_of(id)?, |reply| Command::Trickle {
            id: id.to_owned(),
            frag,
            reply,
        })
        .await?
    }

    /// Restarts ICE with the client's new credentials; returns (new ETag, answer fragment).
    pub async fn restart(&self, id: &str, frag: SdpFrag) -> Result<(String, String), EngineError> {
        self.ask(self.shard_of(id)?, |reply| Command::Restart {
            id: id.to_owned(),
            frag,
            reply,
        })
        .await?
    }

    /// Sets what a viewer's video slot `mid` should receive (the WHEP layer endpoint).
    pub async fn set_layer(
        &self,
        id: &str,
        mid: &str,
        prefs: Preferences,
    ) -> Result<(), EngineError> {
        self.ask(self.shard_of(id)?, |reply| Command::SetLayer {
            id: id.to_owned(),
            mid: mid.to_owned(),
            prefs,
            reply,
        })
        .await?
    }

    /// Ends a session; false when it did not exist.
    pub async fn close(&self, id: &str, reason: EndReason) -> bool {
        let Ok(shard) = self.shard_of(id) else {
            return false;
        };
        self.ask(shard, |reply| Command::Close {
            id: id.to_owned(),
            reason,
            reply,
        })
        .await
        .unwrap_or(false)
    }

    /// Hands an ICE-TCP connection to the shard its server ufrag names. Returns false when
    /// no shard takes it (the connection is then dropped).
    pub async fn adopt_tcp(
        &self,
        ufrag: &str,
        stream: std::net::TcpStream,
        peer: std::net::SocketAddr,
        first: bytes::BytesMut,
        guard: shard::tcp::ConnGuard,
    ) -> bool {
        let Some(tx) = placement::shard_of_id(ufrag).and_then(|s| self.shards.get(s)) else {
            return false;
        };
        let command = Command::AdoptTcp {
            ufrag: ufrag.to_owned(),
            stream,
            peer,
            first,
            guard,
        };
        tx.send(command).await.is_ok()
    }

    /// Ends every session and stops every shard.
    pub async fn shutdown(&self) {
        for shard in 0..self.shards.len() {
            let _ = self.ask(shard, |reply| Command::Shutdown { reply }).await;
        }
    }
}
