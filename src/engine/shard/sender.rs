//! Sending threads: the kernel's part of the fan-out, off the engine thread.
//!
//! Sealing a copy costs the engine about a microsecond; handing it to the kernel costs
//! several (the UDP send path, and on loopback the delivery to the receiving socket, which
//! the kernel runs in the sender's context). The engine therefore only fills
//! [`SendBatch`]es and hands each full or finished batch to a sending thread, one channel
//! message per batch (never per copy). Destinations are spread over the threads by session,
//! so one viewer's datagrams always leave in order from one thread, while the kernel work of
//! a large fan-out runs on several cores at once. The engine stays free for handshakes,
//! RTCP and the next packet.
//!
//! Waking a thread costs more than sending a few datagrams (a cross-core wake-up, dearer
//! still in a virtual machine), so a round of fewer than [`INLINE_BELOW`] datagrams is sent
//! by the engine itself, lane by lane, wherever that lane has no batch in flight that the
//! inline send could overtake.
//!
//! Each thread owns a few batches that travel engine → thread → engine, so steady state
//! allocates nothing. When a thread falls behind by all of its batches, the engine waits
//! for one to come back: the same back-pressure as sending inline.
//!
//! Forwarding latency (arrival of a packet to the end of the send of all its copies) is
//! observed when every batch of the round that carried the packet has been sent. Each
//! handed-over batch also reports how long it waited for its thread to start on it: an
//! earlier batch still being sent, or the thread being woken and scheduled (in a virtual
//! machine, a halted virtual CPU woken by the host).

use crate::engine::shard::batch::{Flushed, SendBatch};
use std::collections::VecDeque;
use std::io;
use std::net::UdpSocket;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Batches per thread: one being filled by the engine, the others in flight or ready.
const BATCHES_PER_THREAD: usize = 3;
/// Rounds with fewer datagrams than this are sent by the engine thread.
pub const INLINE_BELOW: usize = 64;

/// A batch on its way to a sending thread.
struct Job {
    batch: SendBatch,
    round: u64,
    handed: Instant,
}

/// A batch back from a sending thread.
struct Done {
    batch: SendBatch,
    round: u64,
    flushed: Flushed,
    /// From the hand-over to the thread starting on the batch.
    waited: Duration,
    at: Instant,
}

/// One sending thread and the engine's end of it.
struct Lane {
    /// The batch the engine is filling.
    filling: SendBatch,
    /// Sent batches back from the thread, ready to fill again.
    spare: Vec<SendBatch>,
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Done>,
    thread: Option<JoinHandle<()>>,
}

impl Lane {
    /// Whether the thread holds none of the lane's batches (all but the filling one spare).
    fn idle(&self) -> bool {
        self.spare.len() == BATCHES_PER_THREAD - 1
    }
}

/// The packets fanned out in one round and the batches that carry their copies.
struct Round {
    id: u64,
    arrivals: Vec<Instant>,
    /// Batches of the round handed over and not yet back.
    outstanding: usize,
    /// The round has ended: no more batches will join it.
    closed: bool,
    last_sent: Option<Instant>,
}

/// The sending threads.
pub struct Senders {
    lanes: Vec<Lane>,
    /// For sending inline should a thread be gone.
    fallback: UdpSocket,
    /// The id of the round being filled.
    round: u64,
    /// Arrivals of the packets fanned out in the round being filled.
    arrivals: Vec<Instant>,
    /// Rounds with batches still out (the round being filled last, once it has one).
    rounds: VecDeque<Round>,
    /// Emptied arrival lists, reused.
    free_arrivals: Vec<Vec<Instant>>,
    /// Totals from batches back since the last [`Senders::take`].
    sent: Flushed,
    /// Latencies of fully sent packets since the last [`Senders::take`].
    latencies: Vec<Duration>,
    /// Waits of handed-over batches since the last [`Senders::take`].
    waits: Vec<Duration>,
}

impl Senders {
    /// Starts `threads` (at least one) sending threads on clones of `socket`, named
    /// `parley-send-{shard}-{i}`.
    pub fn start(socket: &UdpSocket, shard: usize, threads: usize) -> io::Result<Self> {
        let mut lanes = Vec::new();
        for i in 0..threads.max(1) {
            let socket = socket.try_clone()?;
            let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
            let (done_tx, done_rx) = mpsc::channel::<Done>();
            let thread = std::thread::Builder::new()
                .name(format!("parley-send-{shard}-{i}"))
                .spawn(move || {
                    while let Ok(mut job) = jobs_rx.recv() {
                        let waited = job.handed.elapsed();
                        let flushed = job.batch.flush(&socket);
                        let done = Done {
                            batch: job.batch,
                            round: job.round,
                            flushed,
                            waited,
                            at: Instant::now(),
                        };
                        if done_tx.send(done).is_err() {
                            return;
                        }
                    }
                })?;
            lanes.push(Lane {
                filling: SendBatch::default(),
                spare: (1..BATCHES_PER_THREAD)
                    .map(|_| SendBatch::default())
                    .collect(),
                jobs: Some(jobs_tx),
                done: done_rx,
                thread: Some(thread),
            });
        }
        Ok(Self {
            lanes,
            fallback: socket.try_clone()?,
            round: 0,
            arrivals: Vec::new(),
            rounds: VecDeque::new(),
            free_arrivals: Vec::new(),
            sent: Flushed::default(),
            latencies: Vec::new(),
            waits: Vec::new(),
        })
    }

    /// The batch for datagrams to `dest` (a session key), with room for at least one more.
    pub fn batch_for(&mut self, dest: u64) -> &mut SendBatch {
        let lane = (dest % self.lanes.len() as u64) as usize;
        if self.lanes[lane].filling.is_full() {
            self.hand_over(lane);
        }
        &mut self.lanes[lane].filling
    }

    /// Notes that a packet that arrived at `at` was fanned out in this round.
    pub fn note_arrival(&mut self, at: Instant) {
        self.arrivals.push(at);
    }

    /// Ends the round: hands every filled batch to its thread, or sends a small round
    /// from this thread.
    pub fn submit(&mut self) {
        self.collect();
        let queued: usize = self.lanes.iter().map(|l| l.filling.len()).sum();
        let mut inline_at = None;
        for lane in 0..self.lanes.len() {
            let l = &self.lanes[lane];
            if l.filling.is_empty() {
                continue;
            }
            if queued < INLINE_BELOW && l.idle() {
                self.send_inline(lane);
                inline_at = Some(Instant::now());
            } else {
                self.hand_over(lane);
            }
        }
        let next = self.free_arrivals.pop().unwrap_or_default();
        let arrivals = std::mem::replace(&mut self.arrivals, next);
        match self.rounds.back_mut().filter(|r| r.id == self.round) {
            Some(r) => {
                r.arrivals = arrivals;
                r.closed = true;
                if let Some(at) = inline_at {
                    r.last_sent = Some(r.last_sent.map_or(at, |t| t.max(at)));
                }
            }
            None => {
                // Nothing was handed over: the round is sent already.
                let at = inline_at.unwrap_or_else(Instant::now);
                for &arrival in &arrivals {
                    self.latencies.push(at.saturating_duration_since(arrival));
                }
                self.recycle(arrivals);
            }
        }
        self.round += 1;
        self.retire();
    }

    /// Takes what came back since the last call: the send totals, the forwarding latency of
    /// every packet whose copies have all been sent, and the wait of every batch a thread
    /// took up.
    pub fn take(
        &mut self,
        mut latency: impl FnMut(Duration),
        mut wait: impl FnMut(Duration),
    ) -> Flushed {
        self.collect();
        for d in self.latencies.drain(..) {
            latency(d);
        }
        for d in self.waits.drain(..) {
            wait(d);
        }
        std::mem::take(&mut self.sent)
    }

    /// Sends `lane`'s filling batch to its thread and takes a spare one to fill, waiting for
    /// one to come back if the thread holds them all.
    fn hand_over(&mut self, lane: usize) {
        while self.lanes[lane].spare.is_empty() {
            if !self.wait_for(lane) {
                self.send_inline(lane);
                return;
            }
        }
        let round = self.round;
        let l = &mut self.lanes[lane];
        let Some(spare) = l.spare.pop() else {
            return;
        };
        let batch = std::mem::replace(&mut l.filling, spare);
        match l.jobs.as_ref().map(|tx| {
            tx.send(Job {
                batch,
                round,
                handed: Instant::now(),
            })
        }) {
            Some(Ok(())) => {
                if self.rounds.back().is_none_or(|r| r.id != round) {
                    self.rounds.push_back(Round {
                        id: round,
                        arrivals: Vec::new(),
                        outstanding: 0,
                        closed: false,
                        last_sent: None,
                    });
                }
                if let Some(r) = self.rounds.back_mut() {
                    r.outstanding += 1;
                }
            }
            Some(Err(mpsc::SendError(job))) => {
                // The thread is gone: keep both batches and send this one from here.
                let spare = std::mem::replace(&mut l.filling, job.batch);
                l.spare.push(spare);
                self.send_inline(lane);
            }
            None => {}
        }
    }

    /// Sends `lane`'s filling batch from this thread.
    fn send_inline(&mut self, lane: usize) {
        let done = self.lanes[lane].filling.flush(&self.fallback);
        self.add(done);
    }

    /// Blocks until `lane`'s thread returns a batch; false if the thread is gone.
    fn wait_for(&mut self, lane: usize) -> bool {
        match self.lanes[lane].done.recv() {
            Ok(done) => {
                self.on_done(lane, done);
                true
            }
            Err(_) => false,
        }
    }

    /// Takes back every batch the threads have finished.
    fn collect(&mut self) {
        for lane in 0..self.lanes.len() {
            while let Ok(done) = self.lanes[lane].done.try_recv() {
                self.on_done(lane, done);
            }
        }
    }

    fn add(&mut self, f: Flushed) {
        self.sent.sent += f.sent;
        self.sent.bytes += f.bytes;
        self.sent.dropped += f.dropped;
    }

    fn recycle(&mut self, mut arrivals: Vec<Instant>) {
        arrivals.clear();
        self.free_arrivals.push(arrivals);
    }

    fn on_done(&mut self, lane: usize, done: Done) {
        self.lanes[lane].spare.push(done.batch);
        self.add(done.flushed);
        self.waits.push(done.waited);
        if let Some(r) = self.rounds.iter_mut().find(|r| r.id == done.round) {
            r.outstanding = r.outstanding.saturating_sub(1);
            r.last_sent = Some(r.last_sent.map_or(done.at, |t| t.max(done.at)));
        }
        self.retire();
    }

    /// Observes the latencies of the oldest rounds that have ended and been fully sent.
    fn retire(&mut self) {
        while self
            .rounds
            .front()
            .is_some_and(|r| r.closed && r.outstanding == 0)
        {
            let Some(mut r) = self.rounds.pop_front() else {
                break;
            };
            let at = r.last_sent.unwrap_or_else(Instant::now);
            for arrival in r.arrivals.drain(..) {
                self.latencies.push(at.saturating_duration_since(arrival));
            }
            self.recycle(r.arrivals);
        }
    }
}

impl Drop for Senders {
    fn drop(&mut self) {
        for lane in &mut self.lanes {
            lane.jobs = None;
        }
        for lane in &mut self.lanes {
            if let Some(t) = lane.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn receiver() -> UdpSocket {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        rx
    }

    #[test]
    fn every_datagram_arrives_in_order_per_destination_and_comes_back_counted() {
        // One thread: 600 datagrams a round overflow a batch, so batches are also handed
        // over while a round is being filled. Two threads: destinations spread over both.
        for threads in [1, 2] {
            let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
            tx.set_nonblocking(true).expect("non-blocking");
            let rxs: Vec<UdpSocket> = (0..6).map(|_| receiver()).collect();
            let addrs: Vec<SocketAddr> =
                rxs.iter().map(|r| r.local_addr().expect("addr")).collect();
            let mut senders = Senders::start(&tx, 0, threads).expect("start");
            let per_round = 100usize;
            let (mut latencies, mut waits) = (0, 0);
            let mut totals = Flushed::default();
            let mut add = |f: Flushed| {
                totals.sent += f.sent;
                totals.bytes += f.bytes;
                totals.dropped += f.dropped;
            };
            for round in 0..5u8 {
                senders.note_arrival(Instant::now());
                for k in 0..per_round {
                    for (d, to) in addrs.iter().enumerate() {
                        let batch = senders.batch_for(d as u64);
                        let slot = batch.slot().expect("room");
                        slot[..3].copy_from_slice(&[round, d as u8, k as u8]);
                        batch.commit(*to, 3, d as u64);
                    }
                }
                senders.submit();
                // Receive this round before the next, so no socket buffer overflows.
                for (d, rx) in rxs.iter().enumerate() {
                    let mut buf = [0u8; 16];
                    for k in 0..per_round {
                        let n = rx.recv(&mut buf).expect("datagram in time");
                        assert_eq!(
                            &buf[..n],
                            &[round, d as u8, k as u8],
                            "{threads} threads: destination {d}, round {round}, datagram {k}"
                        );
                    }
                }
                add(senders.take(|_| latencies += 1, |_| waits += 1));
            }
            // Everything has been received, so every batch is back or about to be.
            let deadline = Instant::now() + Duration::from_secs(5);
            while latencies < 5 && Instant::now() < deadline {
                add(senders.take(|_| latencies += 1, |_| waits += 1));
                std::thread::yield_now();
            }
            assert_eq!(latencies, 5, "one latency per noted arrival");
            // 600 datagrams a round: one thread gets a full batch of 512 and then the rest,
            // two threads a batch of 300 each.
            assert_eq!(
                waits, 10,
                "{threads} threads: one wait per handed-over batch"
            );
            assert_eq!(totals.sent, 5 * 6 * per_round as u64);
            assert_eq!(totals.bytes, 3 * totals.sent);
            assert_eq!(totals.dropped, 0);
        }
    }

    #[test]
    fn a_small_round_goes_out_at_once_and_never_overtakes_a_large_one() {
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        tx.set_nonblocking(true).expect("non-blocking");
        let rx = receiver();
        let to = rx.local_addr().expect("addr");
        let mut senders = Senders::start(&tx, 0, 1).expect("start");
        let queue = |senders: &mut Senders, from: u8, count: u8| {
            senders.note_arrival(Instant::now());
            for k in from..from + count {
                let batch = senders.batch_for(7);
                batch.slot().expect("room")[0] = k;
                batch.commit(to, 1, 7);
            }
            senders.submit();
        };
        // A small round alone is sent inline: counted and timed by the time `submit` returns.
        queue(&mut senders, 0, 3);
        let (mut latencies, mut waits) = (0, 0);
        let done = senders.take(|_| latencies += 1, |_| waits += 1);
        assert_eq!(
            (done.sent, latencies, waits),
            (3, 1, 0),
            "no thread was involved"
        );
        // A large round goes to the thread; a small one right after must not pass it.
        queue(&mut senders, 3, 150);
        queue(&mut senders, 153, 3);
        let mut buf = [0u8; 4];
        for k in 0..156u8 {
            let n = rx.recv(&mut buf).expect("datagram in time");
            assert_eq!(&buf[..n], &[k], "datagram {k} in order");
        }
    }
}
