//! The shaped test relay: first the pure [`Shaper`] (rate, bucket, queue drops, rate changes,
//! schedule, seeded loss) on a clock the test holds, then real UDP on 127.0.0.1 through a
//! [`Relay`] to a socket that stands for the server; no Parley server is involved.

mod common;

use common::{Relay, Shape, Shaper, Verdict};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Whether two instants agree to within a microsecond (rates are computed in floats).
fn same(a: Instant, b: Instant) -> bool {
    let gap = if a > b { a - b } else { b - a };
    gap <= Duration::from_micros(1)
}

#[track_caller]
fn assert_delivers(verdict: Verdict, at: Instant) {
    match verdict {
        Verdict::Deliver(when) if same(when, at) => {}
        other => panic!("expected delivery at {at:?}, got {other:?}"),
    }
}

/// Offers `count` datagrams of `size` bytes, all at `at`.
fn burst(shaper: &mut Shaper<usize>, at: Instant, count: usize, size: usize) -> Vec<Verdict> {
    (0..count).map(|i| shaper.offer(at, size, i)).collect()
}

/// Everything `pop_due` hands out at `at`.
fn due(shaper: &mut Shaper<usize>, at: Instant) -> Vec<usize> {
    std::iter::from_fn(|| shaper.pop_due(at)).collect()
}

#[test]
fn an_unlimited_link_only_delays() {
    let t0 = Instant::now();
    let mut shaper = Shaper::new(t0, &Shape::default().delay(ms(20)));
    for verdict in burst(&mut shaper, t0, 10, 1200) {
        assert_delivers(verdict, t0 + ms(20));
    }
    assert_eq!(shaper.next_wake(), Some(t0 + ms(20)));
    assert!(due(&mut shaper, t0 + ms(19)).is_empty());
    assert_eq!(due(&mut shaper, t0 + ms(20)), (0..10).collect::<Vec<_>>());
    let stats = shaper.stats();
    assert_eq!((stats.datagrams, stats.bytes), (10, 12_000));
    assert_eq!((stats.queue_drops, stats.loss_drops), (0, 0));
    assert_eq!(shaper.next_wake(), None);
}

#[test]
fn datagrams_leave_at_the_rate_after_a_full_bucket() {
    // 1250 bytes take 10 ms at 1 Mbit/s; the bucket holds 1500 bytes (12 ms).
    let t0 = Instant::now();
    let shape = Shape::rate(1_000_000).queue(ms(1000)).delay(ms(20));
    let mut shaper = Shaper::new(t0, &shape);
    let verdicts = burst(&mut shaper, t0, 10, 1250);
    assert_delivers(verdicts[0], t0 + ms(20));
    for (k, &verdict) in verdicts.iter().enumerate().skip(1) {
        assert_delivers(verdict, t0 + ms(10 * k as u64 - 2) + ms(20));
    }
    // The last left at 88 ms; by 110 ms the bucket is full again.
    assert_delivers(shaper.offer(t0 + ms(110), 1250, 10), t0 + ms(130));
    assert_delivers(shaper.offer(t0 + ms(110), 1250, 11), t0 + ms(138));
}

#[test]
fn the_queue_drops_what_would_wait_too_long() {
    // Datagram k leaves at 10k - 2 ms: the eleventh (98 ms) fits a 100 ms queue, not the
    // twelfth (108 ms).
    let t0 = Instant::now();
    let mut shaper = Shaper::new(t0, &Shape::rate(1_000_000).queue(ms(100)));
    let verdicts = burst(&mut shaper, t0, 20, 1250);
    assert!(verdicts[..11]
        .iter()
        .all(|v| matches!(v, Verdict::Deliver(_))));
    assert!(verdicts[11..].iter().all(|v| *v == Verdict::QueueDrop));
    assert_eq!(shaper.stats().queue_drops, 9);
    // Dropped datagrams took no room: 50 ms later one waits 58 ms behind the rest.
    assert_delivers(shaper.offer(t0 + ms(50), 1250, 20), t0 + ms(108));
    assert_eq!(due(&mut shaper, t0 + ms(200)).len(), 12);
    assert_eq!(shaper.stats().datagrams, 12);
    assert_eq!(shaper.stats().bytes, 12 * 1250);
}

#[test]
fn a_rate_change_rescales_what_is_queued() {
    let t0 = Instant::now();
    let mut shaper = Shaper::new(t0, &Shape::rate(1_000_000).queue(ms(1000)));
    burst(&mut shaper, t0, 10, 1250); // leaving at 0, 8, 18, ... 88 ms
    assert_eq!(due(&mut shaper, t0 + ms(28)), vec![0, 1, 2, 3]);
    // At 2 Mbit/s the 60 ms still queued take 30 ms: 33, 38, ... 58 ms.
    shaper.set_rate(t0 + ms(28), 2_000_000);
    assert_eq!(shaper.rate_bps(), 2_000_000);
    assert_eq!(shaper.next_wake(), Some(t0 + ms(33)));
    assert_eq!(due(&mut shaper, t0 + ms(40)), vec![4, 5]);
    // A new datagram waits behind them: the last leaves at 58 ms, then 5 ms of its own.
    assert_delivers(shaper.offer(t0 + ms(40), 1250, 10), t0 + ms(63));
    // Unlimited: everything still queued leaves at once.
    shaper.set_rate(t0 + ms(41), 0);
    assert_eq!(due(&mut shaper, t0 + ms(41)), vec![6, 7, 8, 9, 10]);
}

#[test]
fn a_schedule_changes_the_rate_at_its_instants() {
    let t0 = Instant::now();
    let mut shaper = Shaper::new(t0, &Shape::rate(1_000_000).queue(ms(1000)));
    shaper.schedule(t0, [(t0 + ms(300), 0), (t0 + ms(28), 2_000_000)]);
    assert_eq!(shaper.next_wake(), Some(t0 + ms(28)));
    burst(&mut shaper, t0, 10, 1250); // leaving at 0, 8, 18, ... 88 ms
                                      // Looked at only at 40 ms, the step still applied at 28 ms: 33, 38, ... 58 ms.
    assert_eq!(due(&mut shaper, t0 + ms(40)), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(shaper.rate_bps(), 2_000_000);
    assert_eq!(shaper.next_wake(), Some(t0 + ms(43)));
    assert_eq!(due(&mut shaper, t0 + ms(100)).len(), 4);
    assert_eq!(shaper.next_wake(), Some(t0 + ms(300)));
    assert!(due(&mut shaper, t0 + ms(300)).is_empty());
    assert_eq!(shaper.rate_bps(), 0);
    // `set_rate` cancels what is left of a schedule.
    shaper.schedule(t0 + ms(300), [(t0 + ms(400), 500_000)]);
    shaper.set_rate(t0 + ms(310), 3_000_000);
    assert!(due(&mut shaper, t0 + ms(500)).is_empty());
    assert_eq!(shaper.rate_bps(), 3_000_000);
}

#[test]
fn loss_is_random_but_seeded() {
    let t0 = Instant::now();
    let run = |seed| {
        let mut shaper = Shaper::new(t0, &Shape::default().loss(0.1, seed));
        let verdicts = burst(&mut shaper, t0, 10_000, 100);
        (verdicts, shaper.stats())
    };
    let (first, stats) = run(42);
    assert!(
        (900..=1100).contains(&stats.loss_drops),
        "{} lost of 10000 at 10%",
        stats.loss_drops
    );
    let lost = first.iter().filter(|v| **v == Verdict::Lost).count() as u64;
    assert_eq!(lost, stats.loss_drops);
    assert_eq!(run(42).0, first, "the same seed loses the same datagrams");
    assert_ne!(run(43).0, first, "another seed loses others");
}

/// Bytes of a test datagram's header: kind, sequence number, send time.
const HEADER: usize = 17;
const DATA: u8 = 0;
const MARKER: u8 = 1;

/// A datagram as a client received it.
#[derive(Debug)]
struct Arrival {
    size: usize,
    /// How long it took from the server's socket to the client's.
    delay: Duration,
    received: Instant,
}

fn datagram(kind: u8, seq: u64, epoch: Instant, size: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; size.max(HEADER)];
    bytes[0] = kind;
    bytes[1..9].copy_from_slice(&seq.to_be_bytes());
    let sent = epoch.elapsed().as_nanos() as u64;
    bytes[9..17].copy_from_slice(&sent.to_be_bytes());
    bytes
}

/// A "server" socket, a relay in front of it shaping clients first seen after `shape`
/// (if any) was set, and a way to add clients.
struct Bench {
    relay: Relay,
    server: UdpSocket,
    epoch: Instant,
}

impl Bench {
    async fn new() -> Bench {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("server");
        let mut relay = Relay::bind().await.expect("relay");
        relay.forward_to(server.local_addr().expect("server addr"));
        Bench {
            relay,
            server,
            epoch: Instant::now(),
        }
    }

    /// A client that said hello through the relay, and where the server sees it.
    async fn client(&self) -> (UdpSocket, SocketAddr) {
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        client.send_to(b"hello", self.relay.addr).await.expect("hi");
        let mut buf = [0u8; 64];
        let (_, seen) =
            tokio::time::timeout(Duration::from_secs(5), self.server.recv_from(&mut buf))
                .await
                .expect("the hello reaches the server through the relay")
                .expect("recv");
        (client, seen)
    }

    /// Sends `count` datagrams of `size` bytes to `to`, one every `every` (all at once if
    /// zero).
    async fn send(&self, to: SocketAddr, count: u64, size: usize, every: Duration) {
        let mut pace = (!every.is_zero()).then(|| tokio::time::interval(every));
        for seq in 0..count {
            if let Some(pace) = &mut pace {
                pace.tick().await;
            }
            let bytes = datagram(DATA, seq, self.epoch, size);
            self.server.send_to(&bytes, to).await.expect("send");
        }
    }

    /// Sends markers to `to` every 20 ms until the client's `receiver` saw one (the shaper
    /// may drop a marker behind a full queue), and returns what the client received.
    async fn finish(&self, to: SocketAddr, receiver: JoinHandle<Vec<Arrival>>) -> Vec<Arrival> {
        let mut receiver = std::pin::pin!(receiver);
        let mut pace = tokio::time::interval(ms(20));
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                received = &mut receiver => return received.expect("receiver"),
                _ = pace.tick() => {
                    let marker = datagram(MARKER, 0, self.epoch, HEADER);
                    self.server.send_to(&marker, to).await.expect("marker");
                }
                _ = &mut deadline => panic!("no marker reached the client in 10 s"),
            }
        }
    }
}

/// Receives data datagrams until the first marker sent after this call (an earlier round
/// may have left markers behind).
fn receive(client: Arc<UdpSocket>, epoch: Instant) -> JoinHandle<Vec<Arrival>> {
    let start = epoch.elapsed();
    tokio::spawn(async move {
        let mut arrivals = Vec::new();
        let mut buf = vec![0u8; 2048];
        loop {
            let n = client.recv(&mut buf).await.expect("client recv");
            let received = Instant::now();
            let sent =
                Duration::from_nanos(u64::from_be_bytes(buf[9..17].try_into().expect("8 bytes")));
            if buf[0] == MARKER {
                if sent >= start {
                    return arrivals;
                }
                continue;
            }
            arrivals.push(Arrival {
                size: n,
                delay: received - epoch - sent,
                received,
            });
        }
    })
}

#[tokio::test]
async fn a_shaped_downlink_runs_at_its_rate_drops_at_its_queue_and_delays() {
    let bench = Bench::new().await;
    let delay = ms(20);
    let queue = ms(100);
    bench
        .relay
        .shape_new_clients(Shape::rate(1_000_000).queue(queue).delay(delay));
    let (client, seen) = bench.client().await;
    let receiver = receive(Arc::new(client), bench.epoch);

    // 2 Mbit/s for 2 s: 1000-byte datagrams every 4 ms.
    const SENT: u64 = 500;
    bench.send(seen, SENT, 1000, ms(4)).await;
    let arrivals = bench.finish(seen, receiver).await;

    let (first, last) = (&arrivals[0], arrivals.last().expect("arrivals"));
    let bits: usize = arrivals[1..].iter().map(|a| a.size * 8).sum();
    let rate = bits as f64 / (last.received - first.received).as_secs_f64();
    assert!(
        (850_000.0..=1_050_000.0).contains(&rate),
        "the client received {rate:.0} bit/s through a 1 Mbit/s link"
    );
    let fastest = arrivals.iter().map(|a| a.delay).min().expect("arrivals");
    let slowest = arrivals.iter().map(|a| a.delay).max().expect("arrivals");
    assert!(
        fastest >= delay,
        "a datagram arrived after only {fastest:?}"
    );
    assert!(
        slowest <= delay + queue + ms(40),
        "a datagram waited {slowest:?} behind a {queue:?} queue"
    );

    let stats = bench.relay.stats();
    let received = arrivals.len() as u64;
    assert!(stats.queue_drops > 100, "{stats:?}");
    assert!(
        SENT - received <= stats.queue_drops,
        "{received} of {SENT} received: {stats:?}"
    );
    assert_eq!(stats.loss_drops, 0);
    assert!(stats.datagrams > received, "data and a marker: {stats:?}");
    let clients = bench.relay.client_stats();
    assert_eq!(clients.len(), 1);
    assert!(clients[0].shaped);
    assert_eq!(clients[0].stats, stats);
}

#[tokio::test]
async fn only_clients_seen_after_the_rule_are_shaped_and_rates_change_live() {
    let bench = Bench::new().await;
    let (publisher, publisher_seen) = bench.client().await;
    bench.relay.shape_new_clients(Shape::rate(1_000_000));
    let (viewer_socket, viewer_seen) = bench.client().await;
    let viewer_socket = Arc::new(viewer_socket);

    // A burst of 40 kB: the unshaped client gets it all, the shaped one what fits 100 ms
    // of queue at 1 Mbit/s (about 14 datagrams).
    let to_publisher = receive(Arc::new(publisher), bench.epoch);
    let to_viewer = receive(viewer_socket.clone(), bench.epoch);
    bench.send(publisher_seen, 40, 1000, Duration::ZERO).await;
    bench.send(viewer_seen, 40, 1000, Duration::ZERO).await;
    assert_eq!(bench.finish(publisher_seen, to_publisher).await.len(), 40);
    let viewer = bench.finish(viewer_seen, to_viewer).await.len() as u64;
    assert!(
        (10..=20).contains(&viewer),
        "{viewer} of 40 through 1 Mbit/s"
    );

    let clients = bench.relay.client_stats();
    assert_eq!(clients.len(), 2);
    assert!(!clients[0].shaped && clients[1].shaped);
    assert_eq!(clients[0].stats.queue_drops, 0);
    assert!(clients[1].stats.queue_drops >= 40 - viewer, "{clients:?}");

    // Unlimited now: the next burst reaches the viewer whole.
    bench.relay.set_rate(0);
    let to_viewer = receive(viewer_socket, bench.epoch);
    bench.send(viewer_seen, 40, 1000, Duration::ZERO).await;
    assert_eq!(bench.finish(viewer_seen, to_viewer).await.len(), 40);
    let after = bench.relay.client_stats()[1].stats;
    assert_eq!(after.queue_drops, clients[1].stats.queue_drops);
}
