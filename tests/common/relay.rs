//! A user-space UDP relay that stands between WebRTC clients and the server, so tests can
//! drop, cut and shape traffic (there is no `tc netem` here). The server advertises the
//! relay's address (`--public-port`); each client address gets its own upstream socket.
//!
//! Shaping acts on each client's downlink (server → client) only, like a viewer's access
//! link: a token-bucket rate limit, a drop-tail queue measured in time at the current rate,
//! seeded random loss and a fixed one-way delay. Every client has its own [`Shaper`]; a
//! client is *shaped* when a rule gave it a [`Shape`] ([`Relay::shape_new_clients`],
//! [`Relay::shape_all`]), and the others pass unshaped but counted. The client → server
//! direction is never shaped; [`Relay::cut`] and [`Relay::drop_one_in`] act on both.
//!
//! ```ignore
//! let mut relay = Relay::bind().await?;
//! config.public_port = Some(relay.addr.port());
//! let server = parley::start(config).await?;
//! relay.forward_to(server.media_addr);
//! let publisher = publish(&base, "r", PublishOptions::vp8()).await?; // unshaped
//! relay.shape_new_clients(Shape::rate(1_000_000).delay(Duration::from_millis(20)));
//! let viewer = play(&base, "r", PlayOptions::default()).await?; // shaped
//! relay.set_rate(300_000);
//! let viewer_stats = relay.client_stats().into_iter().find(|c| c.shaped).unwrap().stats;
//! ```
//!
//! Dropping the [`Relay`] stops it and every task it started.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::AddAssign;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// How a client's downlink is shaped. Build one with [`Shape::rate`] and the setters.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    /// Link rate in bits per second of UDP payload; 0 is unlimited.
    pub rate_bps: u64,
    /// Drop-tail limit: a datagram that would wait longer than this for the link is dropped.
    pub queue: Duration,
    /// One-way delay added to every datagram that leaves the link.
    pub delay: Duration,
    /// Probability (0 to 1) that a datagram is lost before it reaches the queue.
    pub loss: f64,
    /// Seed of the loss draws, so runs repeat.
    pub seed: u64,
}

impl Default for Shape {
    /// Unlimited, with a 100 ms queue (should a rate be set later), no delay and no loss.
    fn default() -> Self {
        Shape {
            rate_bps: 0,
            queue: Duration::from_millis(100),
            delay: Duration::ZERO,
            loss: 0.0,
            seed: 1,
        }
    }
}

impl Shape {
    /// A link of `bps` bits per second (0: unlimited) with a 100 ms queue, no delay, no loss.
    pub fn rate(bps: u64) -> Shape {
        Shape {
            rate_bps: bps,
            ..Shape::default()
        }
    }

    /// Sets the drop-tail queue limit.
    pub fn queue(self, queue: Duration) -> Shape {
        Shape { queue, ..self }
    }

    /// Sets the one-way delay.
    pub fn delay(self, delay: Duration) -> Shape {
        Shape { delay, ..self }
    }

    /// Loses each datagram with probability `p`, drawn from a generator seeded with `seed`.
    pub fn loss(self, p: f64, seed: u64) -> Shape {
        Shape {
            loss: p,
            seed,
            ..self
        }
    }
}

/// Counters of a client's downlink (or their sum). Datagrams dropped by [`Relay::cut`],
/// [`Relay::drop_one_in`] or [`Relay::drop_toward_clients`] are not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to the client (after the delay).
    pub datagrams: u64,
    /// Payload bytes of those datagrams.
    pub bytes: u64,
    /// Datagrams dropped because they would have waited longer than the queue limit.
    pub queue_drops: u64,
    /// Datagrams dropped by random loss.
    pub loss_drops: u64,
}

impl AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        self.datagrams += other.datagrams;
        self.bytes += other.bytes;
        self.queue_drops += other.queue_drops;
        self.loss_drops += other.loss_drops;
    }
}

/// One client of the relay, as [`Relay::client_stats`] lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientStats {
    /// The client's address as the relay sees it.
    pub addr: SocketAddr,
    /// Whether a rule gave it a [`Shape`] (rate changes apply to shaped clients only).
    pub shaped: bool,
    /// Its downlink counters.
    pub stats: Stats,
}

/// What a [`Shaper`] did with an offered datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Queued; it reaches the client at this instant (unless the rate changes meanwhile).
    Deliver(Instant),
    /// Dropped: it would have waited longer than the queue limit.
    QueueDrop,
    /// Dropped by random loss.
    Lost,
}

/// The token bucket never holds less than one full-size datagram...
const BUCKET_MIN_BYTES: f64 = 1500.0;
/// ...nor less than this much of the rate.
const BUCKET_TIME: Duration = Duration::from_millis(2);

/// The pure shaping of one downlink: no sockets, no clock (the caller passes `now`).
///
/// A datagram first meets random loss, then the token bucket: it leaves the link when the
/// bucket holds its size (behind every datagram queued before it), and is dropped instead
/// if that is further away than the queue limit. It reaches the client `delay` after it
/// leaves. A rate change rescales the wait of every datagram still queued.
pub struct Shaper<T> {
    rate_bps: u64,
    queue: Duration,
    delay: Duration,
    loss: f64,
    rng: XorShift,
    /// When the bucket is (or would be) empty; before `now` it holds tokens, after it owes.
    empty_at: Instant,
    /// Datagrams not yet delivered, with the instant they leave the link, in FIFO order.
    pending: VecDeque<(Instant, usize, T)>,
    /// Rate changes still to come, in time order.
    schedule: VecDeque<(Instant, u64)>,
    stats: Stats,
}

impl<T> Shaper<T> {
    /// A shaper with a full bucket.
    pub fn new(now: Instant, shape: &Shape) -> Self {
        let mut shaper = Shaper {
            rate_bps: 0,
            queue: Duration::ZERO,
            delay: Duration::ZERO,
            loss: 0.0,
            rng: XorShift::new(shape.seed),
            empty_at: now,
            pending: VecDeque::new(),
            schedule: VecDeque::new(),
            stats: Stats::default(),
        };
        shaper.reshape(now, shape);
        shaper
    }

    /// Replaces the shape (and any schedule), keeping the queue and the counters.
    pub fn reshape(&mut self, now: Instant, shape: &Shape) {
        self.queue = shape.queue;
        self.delay = shape.delay;
        self.loss = shape.loss;
        self.rng = XorShift::new(shape.seed);
        self.set_rate(now, shape.rate_bps);
    }

    /// Changes the rate at `now` (0: unlimited) and cancels any schedule.
    pub fn set_rate(&mut self, now: Instant, bps: u64) {
        self.schedule.clear();
        self.change_rate(now, bps);
    }

    /// Applies the rate of each step at its instant (replacing any earlier schedule).
    pub fn schedule(&mut self, now: Instant, steps: impl IntoIterator<Item = (Instant, u64)>) {
        self.schedule = steps.into_iter().collect();
        self.schedule.make_contiguous().sort_by_key(|&(at, _)| at);
        self.advance(now);
    }

    /// The current rate in bits per second (0: unlimited).
    pub fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    /// Offers a datagram of `size` bytes arriving at `now`.
    pub fn offer(&mut self, now: Instant, size: usize, item: T) -> Verdict {
        self.advance(now);
        if self.loss > 0.0 && self.rng.unit() < self.loss {
            self.stats.loss_drops += 1;
            return Verdict::Lost;
        }
        let departure = match self.rate_bps {
            0 => now,
            _ => {
                let depth = self.bucket_depth();
                let start = self.empty_at.max(now.checked_sub(depth).unwrap_or(now));
                // A datagram larger than the bucket leaves once the bucket is full.
                let needed = self.transmit(size.min(self.bucket_bytes() as usize));
                let departure = now.max(start + needed);
                if departure - now > self.queue {
                    self.stats.queue_drops += 1;
                    return Verdict::QueueDrop;
                }
                self.empty_at = start + self.transmit(size);
                departure
            }
        };
        self.pending.push_back((departure, size, item));
        Verdict::Deliver(departure + self.delay)
    }

    /// The next instant something is due: a delivery or a scheduled rate change.
    pub fn next_wake(&self) -> Option<Instant> {
        let delivery = self.pending.front().map(|&(at, _, _)| at + self.delay);
        let step = self.schedule.front().map(|&(at, _)| at);
        delivery.into_iter().chain(step).min()
    }

    /// Takes the next datagram due for delivery at `now`, counting it.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        self.advance(now);
        if self.pending.front()?.0 + self.delay > now {
            return None;
        }
        let (_, size, item) = self.pending.pop_front()?;
        self.stats.datagrams += 1;
        self.stats.bytes += size as u64;
        Some(item)
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Applies every scheduled rate change due by `now`, each at its own instant.
    fn advance(&mut self, now: Instant) {
        while let Some(&(at, bps)) = self.schedule.front() {
            if at > now {
                break;
            }
            self.schedule.pop_front();
            self.change_rate(at, bps);
        }
    }

    /// Changes the rate at `at`: queued datagrams keep the bytes ahead of them, so their
    /// remaining wait scales by old/new rate, and the bucket keeps its tokens.
    fn change_rate(&mut self, at: Instant, bps: u64) {
        let old = self.rate_bps;
        self.rate_bps = bps;
        if old == bps {
            return;
        }
        let scale = |t: Instant| match (old, bps) {
            (0, _) => t,
            (_, 0) => at,
            _ => at + (t - at).mul_f64(old as f64 / bps as f64),
        };
        for (departure, _, _) in &mut self.pending {
            if *departure > at {
                *departure = scale(*departure);
            }
        }
        self.empty_at = if bps == 0 {
            at
        } else if old != 0 && self.empty_at > at {
            scale(self.empty_at)
        } else {
            // Not in debt (or was unlimited): keep the tokens, at most a full bucket.
            let tokens = match old {
                0 => f64::INFINITY,
                _ => (at - self.empty_at).as_secs_f64() * old as f64 / 8.0,
            };
            let held = tokens.min(self.bucket_bytes());
            at.checked_sub(self.transmit_f(held)).unwrap_or(at)
        };
    }

    fn bucket_bytes(&self) -> f64 {
        (BUCKET_TIME.as_secs_f64() * self.rate_bps as f64 / 8.0).max(BUCKET_MIN_BYTES)
    }

    fn bucket_depth(&self) -> Duration {
        self.transmit_f(self.bucket_bytes())
    }

    /// How long `bytes` take at the current (limited) rate.
    fn transmit(&self, bytes: usize) -> Duration {
        self.transmit_f(bytes as f64)
    }

    fn transmit_f(&self, bytes: f64) -> Duration {
        Duration::from_secs_f64(bytes * 8.0 / self.rate_bps as f64)
    }
}

/// xorshift64*: a few lines of seeded randomness, good enough for loss draws.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    /// A draw in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Shared switches of a running relay.
#[derive(Default)]
struct Controls {
    cut: AtomicBool,
    /// Drop one datagram in this many (0: none), in both directions.
    drop_one_in: AtomicU32,
    counter: AtomicU32,
    /// Drop one datagram in this many (0: none) on the way from the server to clients.
    drop_toward_clients: AtomicU32,
    toward_clients: AtomicU32,
    shaping: Mutex<Shaping>,
}

/// Which clients are shaped, and how.
#[derive(Default)]
struct Shaping {
    /// The shape clients first seen from now on get (None: they pass unshaped).
    rule: Option<Shape>,
    /// The schedule of [`Relay::schedule`], which new shaped clients get too.
    schedule: Vec<(Instant, u64)>,
    /// Every client, in the order first seen.
    clients: Vec<Arc<Client>>,
}

/// One client's downlink.
struct Client {
    addr: SocketAddr,
    shaped: AtomicBool,
    shaper: Mutex<Shaper<Vec<u8>>>,
    /// Wakes the client's return task when its shaper changed from outside.
    changed: Notify,
}

impl Client {
    /// Changes the shaper and lets the return task see its new timing.
    fn update(&self, f: impl FnOnce(&mut Shaper<Vec<u8>>)) {
        f(&mut lock(&self.shaper));
        self.changed.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Controls {
    fn pass(&self) -> bool {
        if self.cut.load(Ordering::Relaxed) {
            return false;
        }
        let n = self.drop_one_in.load(Ordering::Relaxed);
        n == 0
            || !self
                .counter
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(n)
    }

    fn pass_toward_client(&self) -> bool {
        let n = self.drop_toward_clients.load(Ordering::Relaxed);
        self.pass()
            && (n == 0
                || !self
                    .toward_clients
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(n))
    }

    /// Registers a client seen for the first time, shaped if a rule says so.
    fn new_client(&self, addr: SocketAddr) -> Arc<Client> {
        let now = Instant::now();
        let mut shaping = lock(&self.shaping);
        let shape = shaping.rule.clone();
        let mut shaper = Shaper::new(now, shape.as_ref().unwrap_or(&Shape::default()));
        if shape.is_some() {
            shaper.schedule(now, shaping.schedule.iter().copied());
        }
        let client = Arc::new(Client {
            addr,
            shaped: AtomicBool::new(shape.is_some()),
            shaper: Mutex::new(shaper),
            changed: Notify::new(),
        });
        shaping.clients.push(client.clone());
        client
    }

    fn shaped_clients(&self) -> Vec<Arc<Client>> {
        lock(&self.shaping)
            .clients
            .iter()
            .filter(|c| c.shaped.load(Ordering::Relaxed))
            .cloned()
            .collect()
    }
}

/// A relay; dropping it stops it and every task it started.
pub struct Relay {
    /// Where clients send (advertise this port from the server).
    pub addr: SocketAddr,
    front: Option<UdpSocket>,
    controls: Arc<Controls>,
    tasks: JoinSet<()>,
}

impl Relay {
    /// Binds the client-facing socket on 127.0.0.1; call [`Relay::forward_to`] once the
    /// server runs.
    pub async fn bind() -> std::io::Result<Relay> {
        Relay::bind_on(std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// [`Relay::bind`] on `ip`, for clients that do not use loopback candidates.
    pub async fn bind_on(ip: std::net::IpAddr) -> std::io::Result<Relay> {
        let front = UdpSocket::bind((ip, 0)).await?;
        Ok(Relay {
            addr: front.local_addr()?,
            front: Some(front),
            controls: Arc::new(Controls::default()),
            tasks: JoinSet::new(),
        })
    }

    /// Starts relaying between clients and `server` (the media socket).
    pub fn forward_to(&mut self, server: SocketAddr) {
        if let Some(front) = self.front.take() {
            self.tasks
                .spawn(run(Arc::new(front), server, self.controls.clone()));
        }
    }

    /// Stops forwarding anything (a client that vanished without a word).
    pub fn cut(&self) {
        self.controls.cut.store(true, Ordering::Relaxed);
    }

    /// Drops one datagram in `n` in each direction (0: none).
    pub fn drop_one_in(&self, n: u32) {
        self.controls.drop_one_in.store(n, Ordering::Relaxed);
    }

    /// Drops one datagram in `n` from the server to clients only (0: none).
    #[allow(dead_code)]
    pub fn drop_toward_clients(&self, n: u32) {
        self.controls
            .drop_toward_clients
            .store(n, Ordering::Relaxed);
    }

    /// Shapes the downlink of every client first seen from now on (clients already seen
    /// keep theirs), with the current [`Relay::schedule`] if any.
    #[allow(dead_code)]
    pub fn shape_new_clients(&self, shape: Shape) {
        lock(&self.controls.shaping).rule = Some(shape);
    }

    /// Lets clients first seen from now on pass unshaped.
    #[allow(dead_code)]
    pub fn stop_shaping_new_clients(&self) {
        lock(&self.controls.shaping).rule = None;
    }

    /// Shapes every client, those already seen (keeping their queue and counters) and new
    /// ones; cancels any schedule.
    #[allow(dead_code)]
    pub fn shape_all(&self, shape: Shape) {
        let now = Instant::now();
        let mut shaping = lock(&self.controls.shaping);
        shaping.schedule.clear();
        for client in &shaping.clients {
            client.shaped.store(true, Ordering::Relaxed);
            client.update(|s| s.reshape(now, &shape));
        }
        shaping.rule = Some(shape);
    }

    /// Sets the rate (bits per second, 0: unlimited) of every shaped client and of the
    /// shape new clients get; cancels any schedule.
    #[allow(dead_code)]
    pub fn set_rate(&self, bps: u64) {
        let now = Instant::now();
        {
            let mut shaping = lock(&self.controls.shaping);
            shaping.schedule.clear();
            if let Some(rule) = &mut shaping.rule {
                rule.rate_bps = bps;
            }
        }
        for client in self.controls.shaped_clients() {
            client.update(|s| s.set_rate(now, bps));
        }
    }

    /// Sets the rate of one client (its index in [`Relay::client_stats`]), shaped or not;
    /// cancels its schedule. Returns false if there is no such client.
    #[allow(dead_code)]
    pub fn set_rate_for(&self, client: usize, bps: u64) -> bool {
        let Some(client) = lock(&self.controls.shaping).clients.get(client).cloned() else {
            return false;
        };
        client.update(|s| s.set_rate(Instant::now(), bps));
        true
    }

    /// Applies each `(offset from now, bits per second)` step to every shaped client, and
    /// to shaped clients first seen later (they start at the rate of the last step due).
    /// Replaces any earlier schedule; [`Relay::set_rate`] cancels it.
    #[allow(dead_code)]
    pub fn schedule(&self, steps: Vec<(Duration, u64)>) {
        let now = Instant::now();
        let steps: Vec<_> = steps.into_iter().map(|(at, bps)| (now + at, bps)).collect();
        lock(&self.controls.shaping).schedule = steps.clone();
        for client in self.controls.shaped_clients() {
            client.update(|s| s.schedule(now, steps.iter().copied()));
        }
    }

    /// Every client, in the order first seen, with its counters.
    #[allow(dead_code)]
    pub fn client_stats(&self) -> Vec<ClientStats> {
        lock(&self.controls.shaping)
            .clients
            .iter()
            .map(|c| ClientStats {
                addr: c.addr,
                shaped: c.shaped.load(Ordering::Relaxed),
                stats: lock(&c.shaper).stats(),
            })
            .collect()
    }

    /// The counters of all clients together.
    #[allow(dead_code)]
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for client in self.client_stats() {
            total += client.stats;
        }
        total
    }
}

async fn run(front: Arc<UdpSocket>, server: SocketAddr, controls: Arc<Controls>) {
    let mut upstream: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    // Dropping the set (when this task is aborted) aborts the return paths too.
    let mut returns = JoinSet::new();
    let mut buf = vec![0u8; 2048];
    let front_ip = front
        .local_addr()
        .map_or(std::net::Ipv4Addr::LOCALHOST.into(), |a| a.ip());
    while let Ok((n, client)) = front.recv_from(&mut buf).await {
        let up = match upstream.get(&client) {
            Some(up) => up.clone(),
            None => {
                // From the front's address: the server's view of the client (its STUN mapped
                // address) stays on the address family and scope the client uses.
                let Ok(up) = UdpSocket::bind((front_ip, 0)).await else {
                    continue;
                };
                let up = Arc::new(up);
                upstream.insert(client, up.clone());
                let downlink = controls.new_client(client);
                returns.spawn(run_downlink(
                    front.clone(),
                    up.clone(),
                    downlink,
                    controls.clone(),
                ));
                up
            }
        };
        if controls.pass() {
            let _ = up.send_to(&buf[..n], server).await;
        }
    }
}

/// Carries what the server sends to one client through its shaper.
async fn run_downlink(
    front: Arc<UdpSocket>,
    up: Arc<UdpSocket>,
    client: Arc<Client>,
    controls: Arc<Controls>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let wake = lock(&client.shaper).next_wake();
        let sleep = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now).into());
        tokio::select! {
            received = up.recv_from(&mut buf) => {
                let Ok((n, _)) = received else { return };
                if controls.pass_toward_client() {
                    lock(&client.shaper).offer(Instant::now(), n, buf[..n].to_vec());
                }
            }
            _ = sleep, if wake.is_some() => {}
            _ = client.changed.notified() => {}
        }
        loop {
            let Some(datagram) = lock(&client.shaper).pop_due(Instant::now()) else {
                break;
            };
            let _ = front.send_to(&datagram, client.addr).await;
        }
    }
}
