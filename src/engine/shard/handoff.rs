//! Datagrams the kernel gave to the wrong shard, on their way to the shard that owns them.
//!
//! Every shard has its own socket in one `SO_REUSEPORT` group, and the kernel picks the socket
//! by a hash of the 4-tuple that Parley cannot choose. A datagram whose session lives on
//! another shard goes there through a wait-free single-producer/single-consumer ring per
//! ordered pair of shards (`rtrb`): no lock, and no allocation beyond the datagram's own
//! buffer, which the owner then feeds to its peer as it is. The sender wakes the owner once
//! per batch of datagrams it read, not once per datagram ([`Outbox::wake`]).
//!
//! The same rings, over another item type, carry a relayed room's publisher packets from its
//! home shard to the shards that serve more of its viewers (`relay`).

use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Notify;

/// Datagrams in flight from one shard to another before the sender drops (and counts) more.
pub const RING: usize = 1024;

/// One datagram handed over.
#[derive(Debug)]
pub struct Handed {
    /// Who sent it.
    pub from: SocketAddr,
    /// When it arrived, on the shard that read it.
    pub at: std::time::Instant,
    /// The datagram.
    pub data: BytesMut,
}

/// What one shard uses to hand datagrams (or other items) to the others.
pub struct Outbox<T = Handed> {
    /// By destination shard; `None` for this shard itself.
    rings: Vec<Option<rtrb::Producer<T>>>,
    /// The destinations' wake-ups.
    wakers: Arc<[Notify]>,
    /// Destinations with datagrams pushed since the last [`Outbox::wake`].
    pending: Vec<bool>,
}

/// What one shard reads datagrams (or other items) handed to it from.
pub struct Inbox<T = Handed> {
    /// One ring per other shard, with that shard's number.
    rings: Vec<(usize, rtrb::Consumer<T>)>,
    wakers: Arc<[Notify]>,
    me: usize,
}

/// The rings between `shards` shards: each shard's outbox and inbox, in shard order.
pub fn wire<T>(shards: usize) -> Vec<(Outbox<T>, Inbox<T>)> {
    let wakers: Arc<[Notify]> = (0..shards).map(|_| Notify::new()).collect();
    let mut outs: Vec<Vec<Option<rtrb::Producer<T>>>> = (0..shards)
        .map(|_| (0..shards).map(|_| None).collect())
        .collect();
    let mut ins: Vec<Vec<(usize, rtrb::Consumer<T>)>> = (0..shards).map(|_| Vec::new()).collect();
    for (from, out) in outs.iter_mut().enumerate() {
        for (to, inbox) in ins.iter_mut().enumerate().filter(|(to, _)| *to != from) {
            let (tx, rx) = rtrb::RingBuffer::new(RING);
            out[to] = Some(tx);
            inbox.push((from, rx));
        }
    }
    outs.into_iter()
        .zip(ins)
        .enumerate()
        .map(|(me, (rings, inbox))| {
            (
                Outbox {
                    pending: vec![false; rings.len()],
                    rings,
                    wakers: wakers.clone(),
                },
                Inbox {
                    rings: inbox,
                    wakers: wakers.clone(),
                    me,
                },
            )
        })
        .collect()
}

impl<T> Outbox<T> {
    /// Queues a datagram for shard `to`. False (the datagram is dropped) when `to` is this
    /// shard or unknown, or its ring is full.
    pub fn push(&mut self, to: usize, datagram: T) -> bool {
        let Some(ring) = self.rings.get_mut(to).and_then(Option::as_mut) else {
            return false;
        };
        if ring.push(datagram).is_err() {
            return false;
        }
        self.pending[to] = true;
        true
    }

    /// Wakes every shard that was handed datagrams since the last call: once per batch.
    pub fn wake(&mut self) {
        for (to, pending) in self.pending.iter_mut().enumerate() {
            if std::mem::take(pending) {
                self.wakers[to].notify_one();
            }
        }
    }
}

impl<T> Inbox<T> {
    /// Waits until another shard handed this one datagrams (returns at once if it did since
    /// the last wait).
    pub async fn ready(&self) {
        self.wakers[self.me].notified().await;
    }

    /// Takes the next datagram handed over, from any shard, with the shard's number.
    pub fn pop(&mut self) -> Option<(usize, T)> {
        self.rings
            .iter_mut()
            .find_map(|(from, r)| r.pop().ok().map(|d| (*from, d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn datagram(n: u8) -> Handed {
        Handed {
            from: SocketAddr::from(([127, 0, 0, 1], u16::from(n) + 1000)),
            at: Instant::now(),
            data: BytesMut::from(&[n; 3][..]),
        }
    }

    #[tokio::test]
    async fn datagrams_reach_their_shard_in_order_with_one_wake_per_batch() {
        let mut shards = wire::<Handed>(3);
        let (mut out0, _) = shards.remove(0);
        let (_, mut in1) = shards.remove(0);
        for n in 0..5 {
            assert!(out0.push(1, datagram(n)));
        }
        assert!(!out0.push(0, datagram(9)), "not to itself");
        assert!(!out0.push(7, datagram(9)), "no such shard");
        out0.wake();
        tokio::time::timeout(std::time::Duration::from_secs(1), in1.ready())
            .await
            .expect("woken");
        let got: Vec<(usize, u8)> = std::iter::from_fn(|| in1.pop())
            .map(|(from, d)| (from, d.data[0]))
            .collect();
        assert_eq!(got, (0..5).map(|n| (0, n)).collect::<Vec<_>>());
        // Nothing more was pushed: no second wake-up is stored.
        out0.wake();
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), in1.ready()).await;
        assert!(again.is_err(), "woken without news");
    }

    #[test]
    fn a_full_ring_refuses_and_later_accepts() {
        let mut shards = wire::<Handed>(2);
        let (mut out0, _) = shards.remove(0);
        let (_, mut in1) = shards.remove(0);
        for n in 0..RING {
            assert!(out0.push(1, datagram(n as u8)), "{n}");
        }
        assert!(!out0.push(1, datagram(0)), "full");
        assert!(in1.pop().is_some());
        assert!(out0.push(1, datagram(0)));
    }
}
