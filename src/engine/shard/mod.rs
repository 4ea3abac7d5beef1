//! The shard: one engine on its own thread — its event loop, socket, sessions, timers, the
//! sending threads it hands batches to, and its queues to the other shards.
//!
//! This file is what makes an engine one shard of several: its number, the rooms placement
//! gave it, and the datagrams of other shards' sessions that the kernel delivered to its
//! socket.
//!
//! Each shard is a whole engine on its own thread and socket (all sockets in one
//! `SO_REUSEPORT` group on the media port). A datagram is routed by its source address
//! (addresses a shard confirmed for one of its sessions, shared in [`Owners`]) or, for a STUN
//! binding request from an address not seen yet, by the shard number its server ufrag begins
//! with. One that belongs elsewhere is handed over (`handoff`); the owner answers from its
//! own socket, on the same local port, so the client sees one 5-tuple. Where the kernel can
//! run Parley's steering program (`steer`), a confirmed address is also steered straight to
//! its shard's socket, and only a client's first checks are handed over.

pub mod batch;
pub mod demux;
pub(in crate::engine) mod event_loop;
pub mod handoff;
pub(in crate::engine) mod lifecycle;
pub mod sender;
pub(in crate::engine) mod session;
pub mod socket;
mod start;
pub(in crate::engine) mod steer;
pub mod tcp;
pub(in crate::engine) mod upstream;

pub use start::spawn;

use crate::engine::placement::{shard_of_id, Placement};
use crate::engine::rooms::relay::{Control, Relayed};
use crate::metrics;
use bytes::BytesMut;
use dashmap::DashMap;
use demux::stun_local_ufrag;
use event_loop::Engine;
use handoff::{Handed, Inbox, Outbox};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use steer::Steering;
use tokio::sync::mpsc;

/// Client addresses confirmed by a shard for one of its sessions, by shard.
pub type Owners = Arc<DashMap<SocketAddr, usize>>;

/// One shard's place among the others.
pub struct ShardLink {
    /// This shard's number.
    pub id: usize,
    /// Rooms to shards, shared with the HTTP side.
    pub placement: Arc<Placement>,
    /// Which shard owns which client address.
    pub owners: Owners,
    /// The kernel's steering of known addresses, where it could be loaded.
    pub steering: Option<Arc<Steering>>,
    /// Datagrams to other shards.
    pub outbox: Outbox,
    /// Datagrams from other shards.
    pub inbox: Inbox,
    /// Publisher packets of rooms homed here, to shards serving more of their viewers.
    pub relay_out: Outbox<Relayed>,
    /// Publisher packets of rooms homed elsewhere, for this shard's viewers.
    pub relay_in: Inbox<Relayed>,
    /// Every shard's control queue (`relay`), with the sender's number.
    pub controls: Arc<[mpsc::UnboundedSender<(usize, Control)>]>,
    /// This shard's control queue.
    pub control_in: mpsc::UnboundedReceiver<(usize, Control)>,
}

impl ShardLink {
    /// Notes that a session of this shard now uses a client address (and stopped using
    /// `dropped`), for the other shards to route by.
    pub fn own_address(&self, addr: SocketAddr, dropped: Option<SocketAddr>) {
        if self.placement.shards() < 2 {
            return;
        }
        self.owners.insert(addr, self.id);
        if let Some(steering) = &self.steering {
            steering.steer(addr, self.id);
        }
        if let Some(old) = dropped {
            self.disown_address(old);
        }
    }

    /// Forgets an address this shard owned.
    pub fn disown_address(&self, addr: SocketAddr) {
        if self.placement.shards() < 2 {
            return;
        }
        let mine = self
            .owners
            .remove_if(&addr, |_, owner| *owner == self.id)
            .is_some();
        if let (true, Some(steering)) = (mine, &self.steering) {
            steering.forget(addr);
        }
    }

    /// Sends a control message to another shard (dropped if that shard has stopped).
    pub fn control(&self, to: usize, control: Control) {
        if let Some(tx) = self.controls.get(to).filter(|_| to != self.id) {
            let _ = tx.send((self.id, control));
        }
    }

    /// The shard that owns a datagram this shard could not route, if another one does.
    fn owner(&self, from: SocketAddr, data: &[u8]) -> Option<usize> {
        let owner = self
            .owners
            .get(&from)
            .map(|o| *o)
            .or_else(|| stun_local_ufrag(data).and_then(shard_of_id))?;
        (owner != self.id && owner < self.placement.shards()).then_some(owner)
    }
}

impl Engine {
    /// A datagram no session of this shard claims: handed to the shard that owns it, or
    /// dropped as unroutable.
    pub(in crate::engine) fn hand_off(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Some(owner) = self.shard.owner(from, data) else {
            self.tally.drop(metrics::Drop::Unroutable);
            tracing::trace!("unroutable datagram from {from}");
            return;
        };
        let handed = Handed {
            from,
            at: now,
            data: BytesMut::from(data),
        };
        if self.shard.outbox.push(owner, handed) {
            self.tally.handoffs += 1;
        } else {
            self.tally.drop(metrics::Drop::QueueFull);
        }
    }

    /// Feeds the datagrams other shards handed over to this shard's sessions. One this
    /// shard does not know (its session just ended) is dropped, never handed on again.
    pub(in crate::engine) fn take_handed(&mut self) {
        while let Some((_, mut d)) = self.shard.inbox.pop() {
            match self.demux.route(d.from, &d.data) {
                Some(key) => self.feed(key, d.at, d.from, &mut d.data),
                None => self.tally.drop(metrics::Drop::Unroutable),
            }
        }
    }
}
