//! The media threads: each owns a share of the client peers and their sockets, and drives
//! them from one loop (epoll readiness, batched `recvmmsg`, the stacks' timers, publishers'
//! schedules). The async side talks to a thread only through [`Command`]s.
//!
//! The loop sleeps `batch` between rounds so that each wake-up reads many datagrams: delays
//! are measured with kernel receive timestamps, so batching costs no accuracy.
//!
//! A viewer's datagrams first cross its [`Downlink`] (a capped link may drop them; what gets
//! through is recorded for congestion feedback), then its [`ViewerStats`]; its feedback goes
//! out on the round after it falls due.
//!
//! A viewer over ICE-TCP ([`Socket::Tcp`]) has a [`TcpLink`] instead of a UDP socket, in the
//! same epoll: each RFC 4571 frame it reads takes the path of a datagram (classification,
//! downlink, counters, the stack), with the kernel receive time of the read that completed
//! it ([`crate::tcp`]). What the peer sends is framed and written without blocking; what the
//! kernel does not take waits for the next round. When the server closes the connection (or
//! it fails) the viewer is marked failed and no longer polled. Delay samples are kept apart
//! for TCP and UDP viewers.

mod downlink;
mod publisher;
mod socket;
mod viewer;

pub use downlink::{DownlinkPlan, LinkCounters};
pub use publisher::{AudioPlan, PublisherPlan, Talk, VideoPlan, ALL_LAYERS};
pub use socket::Socket;
pub use viewer::LayerCounts;

use crate::net::{realtime_ns, Datagram, Receiver};
use crate::payload::Stamp;
use crate::peer::{ClientPeer, PeerEvent, PeerState, Transport};
use crate::stats::SeqCounters;
use crate::tcp::TcpLink;
use anyhow::{Context, Result};
use downlink::Downlink;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::time::{clock_gettime, ClockId};
use publisher::{Outgoing, Schedule};
use socket::Link;
use std::collections::HashMap;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use viewer::{classify, Class, ViewerStats};

/// What a new peer does.
pub enum Job {
    /// Send media on this plan.
    Publish(PublisherPlan),
    /// Receive and measure.
    View {
        /// When the offer was POSTed (CLOCK_REALTIME ns).
        posted_ns: u64,
        /// Join means the first video keyframe (else the first audio packet).
        expects_video: bool,
        /// Count frames and packets per simulcast layer (decrypts each frame's first packet).
        count_layers: bool,
        /// Its link and congestion feedback.
        downlink: DownlinkPlan,
    },
}

/// A request to a media thread.
pub enum Command {
    /// Take over a negotiated peer and its socket.
    Add {
        /// Caller's id for the peer.
        id: u64,
        /// The peer (answer applied), boxed: it is large and moves through a channel.
        peer: Box<ClientPeer>,
        /// Its socket.
        socket: Socket,
        /// Its job.
        job: Job,
    },
    /// Close a peer and free its socket.
    Remove(u64),
    /// Start collecting delay samples afresh.
    StartWindow,
    /// Report every peer's counters (and the delay samples, if `take_delays`).
    Snapshot {
        /// Hand over (and clear) the delay samples collected since `StartWindow`.
        take_delays: bool,
        /// Where to answer.
        reply: oneshot::Sender<Snapshot>,
    },
}

/// A viewer's counters.
#[derive(Clone, Debug)]
pub struct ViewerSnap {
    /// Connection state.
    pub state: PeerState,
    /// POST → first keyframe (or first audio packet), ms.
    pub join_ms: Option<f64>,
    /// POST → first media packet of any kind, ms.
    pub media_ms: Option<f64>,
    /// Continuity over all its streams.
    pub counters: SeqCounters,
    /// RTP bytes received.
    pub bytes: u64,
    /// Datagrams the kernel dropped at this viewer's socket.
    pub socket_drops: u32,
    /// Datagrams received from the server (any kind).
    pub rx_datagrams: u64,
    /// Datagrams sent to the server.
    pub tx_datagrams: u64,
    /// What it received per simulcast layer.
    pub layers: LayerCounts,
    /// Whether a capped link sits in front of it.
    pub capped: bool,
    /// Whether it connects over ICE-TCP.
    pub tcp: bool,
    /// What its link dropped and the feedback it sent.
    pub link: LinkCounters,
}

#[cfg(test)]
impl ViewerSnap {
    /// A connected UDP viewer that expected `expected` packets and received `received`,
    /// with nothing else counted (for the reports' tests).
    pub fn counted(received: u64, expected: u64) -> Self {
        ViewerSnap {
            state: PeerState::Connected,
            join_ms: None,
            media_ms: None,
            counters: SeqCounters {
                expected,
                received,
                late: 0,
                gaps: 0,
            },
            bytes: 0,
            socket_drops: 0,
            rx_datagrams: 0,
            tx_datagrams: 0,
            layers: LayerCounts::default(),
            capped: false,
            tcp: false,
            link: LinkCounters::default(),
        }
    }
}

/// A publisher's counters.
#[derive(Clone, Debug)]
pub struct PublisherSnap {
    /// Connection state.
    pub state: PeerState,
    /// RTP packets written.
    pub packets: u64,
    /// Keyframes sent.
    pub keyframes: u64,
    /// Keyframes sent per simulcast layer (a plain stream counts as layer 0).
    pub keyframes_by_layer: [u64; 3],
    /// Keyframe requests (PLI/FIR) received.
    pub requests: u64,
}

/// Everything a media thread (or all of them, merged) measured so far.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Viewers by id.
    pub viewers: HashMap<u64, ViewerSnap>,
    /// Publishers by id.
    pub publishers: HashMap<u64, PublisherSnap>,
    /// One-way delay samples of the UDP viewers, µs (only with `take_delays`).
    pub udp_delays_us: Vec<u32>,
    /// The same of the TCP viewers.
    pub tcp_delays_us: Vec<u32>,
    /// CPU time of the media threads so far, seconds.
    pub thread_cpu_secs: f64,
    /// Datagrams the threads could not send (socket buffer full).
    pub send_errors: u64,
}

enum Role {
    Publisher {
        schedule: Schedule,
        packets: u64,
        bytes: u64,
    },
    Viewer {
        stats: ViewerStats,
        downlink: Downlink,
    },
}

/// Delay samples of the current window, per transport.
#[derive(Default)]
struct Delays {
    collecting: bool,
    udp: Vec<u32>,
    tcp: Vec<u32>,
}

impl Delays {
    /// Where a sample of a TCP (or UDP) viewer goes, if collecting.
    fn sink(&mut self, tcp: bool) -> Option<&mut Vec<u32>> {
        match (self.collecting, tcp) {
            (false, _) => None,
            (true, true) => Some(&mut self.tcp),
            (true, false) => Some(&mut self.udp),
        }
    }
}

struct Entry {
    id: u64,
    peer: Box<ClientPeer>,
    link: Link,
    role: Role,
    next_timeout: Option<Instant>,
    rx: u64,
    tx: u64,
}

/// Handle on the media threads.
pub struct Engine {
    shards: Vec<mpsc::Sender<Command>>,
    threads: Vec<JoinHandle<()>>,
}

impl Engine {
    /// Starts `threads` media threads that sleep `batch` between rounds and decrypt one RTP
    /// packet in `sample` per stream once it is running.
    pub fn start(threads: usize, batch: Duration, sample: u32) -> Result<Engine> {
        let mut shards = Vec::new();
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let (tx, rx) = mpsc::channel();
            // Built on its own thread: the batched-receive buffers are not `Send`.
            handles.push(
                std::thread::Builder::new()
                    .name(format!("media-{i}"))
                    .spawn(move || match MediaThread::new(rx, batch, sample) {
                        Ok(mut thread) => thread.run(),
                        Err(e) => eprintln!("[parley-load] media thread {i}: {e:#}"),
                    })
                    .context("spawning a media thread")?,
            );
            shards.push(tx);
        }
        Ok(Engine {
            shards,
            threads: handles,
        })
    }

    fn shard(&self, id: u64) -> &mpsc::Sender<Command> {
        &self.shards[(id % self.shards.len() as u64) as usize]
    }

    /// Hands a negotiated peer to its media thread.
    pub fn add(&self, id: u64, peer: ClientPeer, socket: Socket, job: Job) {
        let _ = self.shard(id).send(Command::Add {
            id,
            peer: Box::new(peer),
            socket,
            job,
        });
    }

    /// Closes a peer.
    pub fn remove(&self, id: u64) {
        let _ = self.shard(id).send(Command::Remove(id));
    }

    /// Starts a measurement window (delay samples).
    pub fn start_window(&self) {
        for s in &self.shards {
            let _ = s.send(Command::StartWindow);
        }
    }

    /// Merged counters of all media threads.
    pub async fn snapshot(&self, take_delays: bool) -> Snapshot {
        let mut merged = Snapshot::default();
        for s in &self.shards {
            let (tx, rx) = oneshot::channel();
            if s.send(Command::Snapshot {
                take_delays,
                reply: tx,
            })
            .is_err()
            {
                continue;
            }
            if let Ok(part) = rx.await {
                merged.viewers.extend(part.viewers);
                merged.publishers.extend(part.publishers);
                merged.udp_delays_us.extend(part.udp_delays_us);
                merged.tcp_delays_us.extend(part.tcp_delays_us);
                merged.thread_cpu_secs += part.thread_cpu_secs;
                merged.send_errors += part.send_errors;
            }
        }
        merged
    }

    /// Stops the threads (closing their peers) and waits for them.
    pub fn stop(self) {
        drop(self.shards);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

struct MediaThread {
    commands: mpsc::Receiver<Command>,
    epoll: Epoll,
    entries: Vec<Option<Box<Entry>>>,
    by_id: HashMap<u64, usize>,
    free: Vec<usize>,
    receiver: Receiver,
    batch: Duration,
    sample: u32,
    delays: Delays,
    send_errors: u64,
    outgoing: Vec<Outgoing>,
}

fn thread_cpu_secs() -> f64 {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0)
}

impl MediaThread {
    fn new(commands: mpsc::Receiver<Command>, batch: Duration, sample: u32) -> Result<Self> {
        Ok(MediaThread {
            commands,
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create")?,
            entries: Vec::new(),
            by_id: HashMap::new(),
            free: Vec::new(),
            receiver: Receiver::default(),
            batch,
            sample,
            delays: Delays::default(),
            send_errors: 0,
            outgoing: Vec::new(),
        })
    }

    fn run(&mut self) {
        let mut events = vec![EpollEvent::empty(); 1024];
        loop {
            let round = Instant::now();
            loop {
                match self.commands.try_recv() {
                    Ok(c) => self.command(c),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.close_all();
                        return;
                    }
                }
            }
            // Everything readable now; level-triggered, so a socket with more than one
            // batch left is simply reported again next round.
            let n = self.epoll.wait(&mut events, 0u16).unwrap_or(0);
            for ev in &events[..n] {
                self.read_socket(ev.data() as usize);
            }
            let now = Instant::now();
            self.run_timers_and_schedules(now);
            // Sleep until the batch interval is over or something is due.
            let next = self
                .next_deadline()
                .unwrap_or(round + Duration::from_millis(5));
            let until = (round + self.batch).max(next.min(round + Duration::from_millis(5)));
            let wait = until.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for e in self.entries.iter().flatten() {
            let mut consider = |t: Option<Instant>| {
                if let Some(t) = t {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            };
            consider(e.next_timeout);
            if let Role::Publisher { schedule, .. } = &e.role {
                if e.peer.state() == PeerState::Connected {
                    consider(schedule.next_due());
                }
            }
        }
        next
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Add {
                id,
                peer,
                socket,
                job,
            } => {
                let now = Instant::now();
                let role = match job {
                    Job::Publish(plan) => Role::Publisher {
                        schedule: Schedule::new(plan, now),
                        packets: 0,
                        bytes: 0,
                    },
                    Job::View {
                        posted_ns,
                        expects_video,
                        count_layers,
                        downlink,
                    } => Role::Viewer {
                        stats: ViewerStats::new(
                            posted_ns,
                            expects_video,
                            self.sample,
                            count_layers,
                        ),
                        downlink: Downlink::new(downlink, realtime_ns(), rand::random()),
                    },
                };
                let link = match socket {
                    Socket::Udp(s) => Link::Udp(s),
                    Socket::Tcp(stream) => match TcpLink::new(stream) {
                        Ok(l) => Link::Tcp(l),
                        Err(_) => return,
                    },
                };
                let slot = self.free.pop().unwrap_or_else(|| {
                    self.entries.push(None);
                    self.entries.len() - 1
                });
                if self
                    .epoll
                    .add(link.fd(), EpollEvent::new(EpollFlags::EPOLLIN, slot as u64))
                    .is_err()
                {
                    self.free.push(slot);
                    return;
                }
                self.entries[slot] = Some(Box::new(Entry {
                    id,
                    peer,
                    link,
                    role,
                    next_timeout: Some(now),
                    rx: 0,
                    tx: 0,
                }));
                self.by_id.insert(id, slot);
            }
            Command::Remove(id) => {
                if let Some(slot) = self.by_id.remove(&id) {
                    if let Some(mut e) = self.entries[slot].take() {
                        e.peer.close();
                        self.flush(&mut e);
                        // A closed TCP link is out of the epoll already.
                        let _ = self.epoll.delete(e.link.fd());
                    }
                    self.free.push(slot);
                }
            }
            Command::StartWindow => {
                self.delays.udp.clear();
                self.delays.tcp.clear();
                self.delays.collecting = true;
            }
            Command::Snapshot { take_delays, reply } => {
                let _ = reply.send(self.snapshot(take_delays));
            }
        }
    }

    fn snapshot(&mut self, take_delays: bool) -> Snapshot {
        let mut s = Snapshot {
            thread_cpu_secs: thread_cpu_secs(),
            send_errors: self.send_errors,
            ..Default::default()
        };
        if take_delays {
            s.udp_delays_us = std::mem::take(&mut self.delays.udp);
            s.tcp_delays_us = std::mem::take(&mut self.delays.tcp);
            self.delays.collecting = false;
        }
        for e in self.entries.iter().flatten() {
            match &e.role {
                Role::Viewer { stats: v, downlink } => {
                    s.viewers.insert(
                        e.id,
                        ViewerSnap {
                            state: e.peer.state(),
                            join_ms: v.since_post_ms(v.joined_ns),
                            media_ms: v.since_post_ms(v.first_media_ns),
                            counters: v.counters(),
                            bytes: v.bytes,
                            socket_drops: v.socket_drops,
                            rx_datagrams: e.rx,
                            tx_datagrams: e.tx,
                            layers: v.layer_counts(),
                            capped: downlink.capped(),
                            tcp: e.peer.transport() == Transport::Tcp,
                            link: downlink.counters,
                        },
                    );
                }
                Role::Publisher {
                    schedule, packets, ..
                } => {
                    s.publishers.insert(
                        e.id,
                        PublisherSnap {
                            state: e.peer.state(),
                            packets: *packets,
                            keyframes: schedule.keyframes,
                            keyframes_by_layer: schedule.keyframes_by_layer,
                            requests: schedule.requests,
                        },
                    );
                }
            }
        }
        s
    }

    fn read_socket(&mut self, slot: usize) {
        let Some(mut e) = self.entries.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let now = Instant::now();
        let mut delays = self.delays.sink(e.link.is_tcp());
        let Entry {
            peer,
            link,
            role,
            rx,
            ..
        } = &mut *e;
        match link {
            Link::Udp(socket) => {
                for _ in 0..8 {
                    let got = self.receiver.recv_batch(socket, |d| {
                        receive(peer, role, rx, now, d, delays.as_deref_mut())
                    });
                    match got {
                        Ok(info) => {
                            if let (Role::Viewer { stats, .. }, Some(drops)) =
                                (&mut *role, info.drops)
                            {
                                stats.socket_drops = drops;
                            }
                            if info.count < crate::net::BATCH {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
            Link::Tcp(tcp) => {
                let from = tcp.peer_addr();
                // EOF or a read error closes the link; `flush` then fails the viewer.
                let _ = tcp.read(16, realtime_ns(), |data, arrival_ns| {
                    let d = Datagram {
                        from,
                        data,
                        arrival_ns,
                    };
                    receive(peer, role, rx, now, d, delays.as_deref_mut())
                });
            }
        }
        self.flush(&mut e);
        self.entries[slot] = Some(e);
    }

    fn run_timers_and_schedules(&mut self, now: Instant) {
        let wall_ns = realtime_ns();
        for slot in 0..self.entries.len() {
            let due = match &self.entries[slot] {
                Some(e) => {
                    e.next_timeout.is_some_and(|t| t <= now)
                        || match &e.role {
                            Role::Publisher { schedule, .. } => {
                                e.peer.state() == PeerState::Connected
                                    && schedule.next_due().is_none_or(|t| t <= now)
                            }
                            Role::Viewer { downlink, .. } => downlink.feedback_due(wall_ns),
                        }
                        || matches!(&e.link, Link::Tcp(l) if l.has_pending() && !l.is_closed())
                }
                None => false,
            };
            if !due {
                continue;
            }
            let Some(mut e) = self.entries[slot].take() else {
                continue;
            };
            let mut touched = false;
            if e.next_timeout.is_some_and(|t| t <= now) {
                e.peer.handle_timeout(now);
                touched = true;
            }
            if let Role::Publisher {
                schedule,
                packets,
                bytes,
            } = &mut e.role
            {
                if e.peer.state() == PeerState::Connected
                    && schedule.next_due().is_none_or(|t| t <= now)
                {
                    self.outgoing.clear();
                    schedule.due(now, realtime_ns(), &mut self.outgoing);
                    for mut o in self.outgoing.drain(..) {
                        let track = if o.video {
                            &e.peer.video
                        } else {
                            &e.peer.audio
                        };
                        let Some(t) = track else { continue };
                        let mut header = t.header(o.layer, o.marker, o.seq, o.timestamp);
                        if let (Some(id), Some(level)) = (t.audio_level_id, o.audio_level) {
                            let _ = header.set_extension(id, bytes::Bytes::from(vec![level]));
                        }
                        *bytes += o.payload.len() as u64;
                        // Stamp, encrypt and send each packet in turn, so the stamp is the
                        // moment the packet leaves, not the start of its frame's burst.
                        Stamp::restamp(&mut o.payload, realtime_ns());
                        if e.peer
                            .write_rtp(now, o.video, header, o.payload.into())
                            .is_ok()
                        {
                            *packets += 1;
                        }
                        while let Some((to, data)) = e.peer.poll_transmit() {
                            if !e.link.send(to, &data) {
                                self.send_errors += 1;
                            }
                        }
                    }
                    touched = true;
                }
            }
            if let Role::Viewer { downlink, .. } = &mut e.role {
                let feedback = downlink.feedback(wall_ns);
                if let Some(fb) = feedback.filter(|_| e.peer.state() == PeerState::Connected) {
                    if e.peer.write_rtcp(now, Box::new(fb)).is_err() {
                        self.send_errors += 1;
                    }
                    touched = true;
                }
            }
            // A TCP link may be due only for its pending writes.
            if touched || e.link.is_tcp() {
                self.flush(&mut e);
            }
            self.entries[slot] = Some(e);
        }
    }

    /// Sends what the peer queued, handles its events, files its next timeout. A TCP link
    /// writes what it can; when it has closed, the viewer is failed and left alone.
    fn flush(&mut self, e: &mut Entry) {
        let tcp = e.link.is_tcp();
        while let Some(ev) = e.peer.poll_event() {
            on_event(&mut e.role, ev, realtime_ns(), self.delays.sink(tcp));
        }
        if !e.link.is_closed() {
            while let Some((to, data)) = e.peer.poll_transmit() {
                e.tx += 1;
                if !e.link.send(to, &data) {
                    self.send_errors += 1;
                }
            }
            if let Link::Tcp(l) = &mut e.link {
                l.flush();
            }
        }
        if let Link::Tcp(l) = &mut e.link {
            if l.newly_closed() {
                e.peer.close();
                let _ = self.epoll.delete(l.stream());
            }
        }
        if e.link.is_closed() {
            while e.peer.poll_transmit().is_some() {}
            e.next_timeout = None;
            return;
        }
        e.next_timeout = e.peer.poll_timeout();
    }

    fn close_all(&mut self) {
        let ids: Vec<u64> = self.by_id.keys().copied().collect();
        for id in ids {
            self.command(Command::Remove(id));
        }
    }
}

/// One datagram (or TCP frame) from the server: a viewer's link and counters first, then
/// the stack unless the link dropped it or it is not sampled.
fn receive(
    peer: &mut ClientPeer,
    role: &mut Role,
    rx: &mut u64,
    now: Instant,
    d: Datagram<'_>,
    mut delays: Option<&mut Vec<u32>>,
) {
    *rx += 1;
    let feed = match (&mut *role, classify(d.data)) {
        (Role::Viewer { stats, downlink }, Class::Rtp { seq, ssrc, marker }) => {
            downlink.on_datagram(d.data, Some(ssrc), d.arrival_ns)
                && stats.on_rtp(seq, ssrc, marker, d.data.len())
        }
        (Role::Viewer { downlink, .. }, Class::Other) => {
            downlink.on_datagram(d.data, None, d.arrival_ns)
        }
        _ => true,
    };
    if !feed {
        return;
    }
    peer.handle_datagram(now, d.from, d.data);
    while let Some(ev) = peer.poll_event() {
        on_event(role, ev, d.arrival_ns, delays.as_deref_mut());
    }
}

fn on_event(role: &mut Role, ev: PeerEvent, arrival_ns: u64, delays: Option<&mut Vec<u32>>) {
    match (role, ev) {
        (Role::Publisher { schedule, .. }, PeerEvent::KeyframeRequest(layers)) => {
            schedule.request_keyframe(layers)
        }
        (Role::Viewer { stats: v, .. }, PeerEvent::Rtp(packet)) => {
            if let Some(d) = v.on_decrypted(packet.header.ssrc, &packet.payload, arrival_ns) {
                if let Some(delays) = delays {
                    delays.push(d);
                }
            }
        }
        _ => {}
    }
}
