//! The machine's ceiling for forwarding: a bare forwarder that does only what an SFU cannot
//! avoid, measured in the same process and on the same loopback as the load test.
//!
//! A sender thread feeds SRTP-like packets (RTP header as AAD, AES-128-GCM payload and tag)
//! to the forwarder's socket, keeping a small window in flight so the forwarder always has
//! work but is never flooded. The forwarder receives them (`recvmmsg`), decrypts each once
//! and, per copy, rewrites SSRC and sequence number, encrypts with that copy's key and sends
//! to that copy's socket: one `sendto` per copy, `sendmmsg` batches, or UDP GSO (several
//! packets to one destination per segment-offloaded send, batched with `sendmmsg`). A drain
//! thread reads the destination sockets the way the generator's viewers do.
//!
//! The result is the forwarder thread's CPU time per copy sent, from its
//! `/proc/self/task/TID/schedstat`; CPU time (not wall time) keeps it meaningful on a busy
//! 2-core machine.

use crate::net::{bind_udp, Receiver};
use anyhow::{anyhow, Context, Result};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{
    recvmmsg, sendmmsg, setsockopt, sockopt, ControlMessage, MsgFlags, MultiHeaders, SockaddrIn,
    SockaddrStorage,
};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use serde::Serialize;
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HEADER: usize = 12;
const TAG: usize = 16;
/// Input packets the sender keeps in flight ahead of the forwarder.
const WINDOW: u64 = 256;
/// Input packets read per `recvmmsg`.
const IN_BATCH: usize = 32;

/// How the forwarder sends its copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One `sendto` per copy.
    Sendto,
    /// `sendmmsg` batches of copies.
    Sendmmsg,
    /// UDP GSO: `gso_segments` packets per destination in one send, batched with `sendmmsg`.
    Gso,
}

/// One ceiling measurement.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Send mode.
    pub mode: Mode,
    /// Copies per input packet (the fan-out).
    pub copies: usize,
    /// Datagram size in bytes (header + payload + tag).
    pub size: usize,
    /// Measurement time.
    pub secs: f64,
    /// Packets per destination per GSO send.
    pub gso_segments: usize,
    /// Local address to bind.
    pub ip: IpAddr,
}

/// What a ceiling run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// Send mode.
    pub mode: Mode,
    /// Copies per input packet.
    pub copies: usize,
    /// Datagram size.
    pub size: usize,
    /// Copies sent per wall-clock second.
    pub copies_per_sec: f64,
    /// Forwarder CPU per copy, µs.
    pub us_per_copy: f64,
    /// Copies per second one core would sustain (1e6 / `us_per_copy`).
    pub per_core_pps: f64,
    /// Share of the sent copies that the drain read.
    pub delivered_ratio: f64,
    /// Input packets that failed authentication (should be 0).
    pub auth_failures: u64,
}

fn key(seed: u8) -> Result<LessSafeKey> {
    let bytes: [u8; 16] = std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8));
    Ok(LessSafeKey::new(
        UnboundKey::new(&AES_128_GCM, &bytes).map_err(|_| anyhow!("AES-128-GCM key"))?,
    ))
}

fn nonce(ssrc: u32, seq: u32) -> Nonce {
    let mut n = [0u8; 12];
    n[2..6].copy_from_slice(&ssrc.to_be_bytes());
    n[8..12].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Encrypts `buf[HEADER..len - TAG]` in place with the header as AAD and writes the tag.
fn seal(key: &LessSafeKey, buf: &mut [u8], ssrc: u32, seq: u32) -> Result<()> {
    let len = buf.len();
    let (header, rest) = buf.split_at_mut(HEADER);
    let (body, tag_out) = rest.split_at_mut(len - HEADER - TAG);
    let tag = key
        .seal_in_place_separate_tag(nonce(ssrc, seq), Aad::from(&header[..]), body)
        .map_err(|_| anyhow!("seal"))?;
    tag_out.copy_from_slice(tag.as_ref());
    Ok(())
}

fn write_header(buf: &mut [u8], seq: u16, ssrc: u32) {
    buf[0] = 0x80;
    buf[1] = 96;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&u32::from(seq).wrapping_mul(3000).to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

fn thread_cpu_secs(tid: u64) -> f64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

struct Shared {
    stop: AtomicBool,
    received: AtomicU64,
    copies: AtomicU64,
    drained: AtomicU64,
    auth_failures: AtomicU64,
    forwarder_tid: AtomicU64,
}

/// Runs one ceiling measurement (blocking; about `secs` + 0.5 s).
pub fn measure(spec: Spec) -> Result<Outcome> {
    if spec.copies == 0 {
        return Err(anyhow!("--copies must be at least 1"));
    }
    if spec.size < HEADER + TAG + 8 || spec.size > 1472 {
        return Err(anyhow!(
            "--size must be between {} and 1472",
            HEADER + TAG + 8
        ));
    }
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        received: AtomicU64::new(0),
        copies: AtomicU64::new(0),
        drained: AtomicU64::new(0),
        auth_failures: AtomicU64::new(0),
        forwarder_tid: AtomicU64::new(0),
    });
    let forward_socket = UdpSocket::bind(SocketAddr::new(spec.ip, 0)).context("bind")?;
    let _ = setsockopt(&forward_socket, sockopt::RcvBufForce, &(4 << 20));
    forward_socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let forward_addr = forward_socket.local_addr()?;
    let mut sinks = Vec::with_capacity(spec.copies);
    for _ in 0..spec.copies {
        sinks.push(bind_udp(spec.ip, 1 << 20)?);
    }
    let dests: Vec<SocketAddr> = sinks
        .iter()
        .map(|s| s.local_addr())
        .collect::<std::io::Result<_>>()?;

    let drain = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || drain_loop(sinks, &shared))
    };
    let forwarder = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || forward_loop(spec, forward_socket, dests, &shared))
    };
    let sender = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || send_loop(spec, forward_addr, &shared))
    };

    let warmup = Duration::from_millis(500);
    std::thread::sleep(warmup);
    let tid = shared.forwarder_tid.load(Ordering::Relaxed);
    let (cpu0, copies0, drained0, t0) = (
        thread_cpu_secs(tid),
        shared.copies.load(Ordering::Relaxed),
        shared.drained.load(Ordering::Relaxed),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs_f64(spec.secs.max(0.2)));
    let (cpu1, copies1, drained1, wall) = (
        thread_cpu_secs(tid),
        shared.copies.load(Ordering::Relaxed),
        shared.drained.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    );
    shared.stop.store(true, Ordering::Relaxed);
    let results = [sender.join(), forwarder.join(), drain.join()];
    for r in results {
        r.map_err(|_| anyhow!("a ceiling thread panicked"))??;
    }
    let copies = (copies1 - copies0) as f64;
    let cpu = cpu1 - cpu0;
    if copies == 0.0 || cpu <= 0.0 {
        return Err(anyhow!("the ceiling forwarder sent nothing"));
    }
    Ok(Outcome {
        mode: spec.mode,
        copies: spec.copies,
        size: spec.size,
        copies_per_sec: copies / wall,
        us_per_copy: cpu * 1e6 / copies,
        per_core_pps: copies / cpu,
        delivered_ratio: ((drained1 - drained0) as f64 / copies).min(1.0),
        auth_failures: shared.auth_failures.load(Ordering::Relaxed),
    })
}

/// Feeds encrypted packets, in bursts of `gso_segments`, keeping `WINDOW` in flight.
fn send_loop(spec: Spec, to: SocketAddr, shared: &Shared) -> Result<()> {
    let socket = UdpSocket::bind(SocketAddr::new(spec.ip, 0))?;
    let ingress = key(0)?;
    let mut buf = vec![0u8; spec.size];
    let mut seq: u32 = 0;
    let burst = spec.gso_segments.max(1) as u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let in_flight = u64::from(seq).saturating_sub(shared.received.load(Ordering::Relaxed));
        if in_flight + burst > WINDOW {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        for _ in 0..burst {
            write_header(&mut buf, seq as u16, 0x1234_5678);
            seal(&ingress, &mut buf, 0x1234_5678, seq)?;
            let _ = socket.send_to(&buf, to);
            seq = seq.wrapping_add(1);
        }
    }
    Ok(())
}

/// Reads the destination sockets like the generator's viewers: epoll, `recvmmsg`, 1 ms naps.
fn drain_loop(sinks: Vec<UdpSocket>, shared: &Shared) -> Result<()> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    for (i, s) in sinks.iter().enumerate() {
        epoll.add(s, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
    }
    let mut events = vec![EpollEvent::empty(); 256];
    let mut rx = Receiver::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let n = epoll.wait(&mut events, 10u16).unwrap_or(0);
        for ev in &events[..n] {
            let Some(s) = sinks.get(ev.data() as usize) else {
                continue;
            };
            for _ in 0..8 {
                match rx.recv_batch(s, |_| {}) {
                    Ok(info) if info.count > 0 => {
                        shared
                            .drained
                            .fetch_add(info.count as u64, Ordering::Relaxed);
                        if info.count < crate::net::BATCH {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Per-copy output buffers and their batched send.
struct Out {
    mode: Mode,
    socket: UdpSocket,
    dests: Vec<Option<SockaddrIn>>,
    keys: Vec<LessSafeKey>,
    /// Datagram (or GSO super-datagram) buffers, and how much of each is used.
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    /// Destination index of each used buffer.
    targets: Vec<usize>,
    headers: MultiHeaders<SockaddrIn>,
    segment: u16,
}

impl Out {
    fn flush(&mut self) -> Result<u64> {
        let used = self.targets.len();
        if used == 0 {
            return Ok(0);
        }
        let mut sent = 0u64;
        match self.mode {
            Mode::Sendto => {
                for i in 0..used {
                    if let Some(Some(d)) = self.dests.get(self.targets[i]) {
                        let addr = SocketAddr::V4((*d).into());
                        if self
                            .socket
                            .send_to(&self.bufs[i][..self.lens[i]], addr)
                            .is_ok()
                        {
                            sent += 1;
                        }
                    }
                }
            }
            Mode::Sendmmsg | Mode::Gso => {
                let addrs: Vec<Option<SockaddrIn>> =
                    self.targets.iter().map(|&t| self.dests[t]).collect();
                let slices: Vec<[IoSlice<'_>; 1]> = (0..used)
                    .map(|i| [IoSlice::new(&self.bufs[i][..self.lens[i]])])
                    .collect();
                let seg = self.segment;
                let gso = [ControlMessage::UdpGsoSegments(&seg)];
                let cmsgs: &[ControlMessage<'_>] = if self.mode == Mode::Gso { &gso } else { &[] };
                let mut start = 0;
                while start < used {
                    let n = sendmmsg(
                        self.socket.as_raw_fd(),
                        &mut self.headers,
                        slices[start..].iter(),
                        &addrs[start..],
                        cmsgs,
                        MsgFlags::empty(),
                    )
                    .map(Iterator::count)
                    .map_err(|e| anyhow!("sendmmsg: {e}"))?;
                    if n == 0 {
                        break;
                    }
                    start += n;
                }
                sent = start as u64;
            }
        }
        if self.mode == Mode::Gso {
            // Each super-datagram carries lens / segment packets.
            sent = self.lens[..used]
                .iter()
                .take(sent as usize)
                .map(|l| l.div_ceil(usize::from(self.segment)) as u64)
                .sum();
        }
        self.targets.clear();
        Ok(sent)
    }
}

fn forward_loop(
    spec: Spec,
    socket: UdpSocket,
    dests: Vec<SocketAddr>,
    shared: &Shared,
) -> Result<()> {
    shared
        .forwarder_tid
        .store(nix::unistd::gettid().as_raw() as u64, Ordering::Relaxed);
    let ingress = key(0)?;
    let keys = (0..spec.copies)
        .map(|i| key(i as u8 ^ 0x5a))
        .collect::<Result<Vec<_>>>()?;
    let segs = if spec.mode == Mode::Gso {
        spec.gso_segments.max(1)
    } else {
        1
    };
    // Up to 256 KiB of output per flush, and whole fan-outs where they fit.
    let per_buf = spec.size * segs;
    let cap = (256 * 1024 / per_buf).clamp(1, 1024);
    let send_socket = socket.try_clone()?;
    let mut out = Out {
        mode: spec.mode,
        socket: send_socket,
        dests: dests
            .iter()
            .map(|d| match d {
                SocketAddr::V4(v4) => Some(SockaddrIn::from(*v4)),
                SocketAddr::V6(_) => None,
            })
            .collect(),
        keys,
        bufs: vec![vec![0u8; per_buf]; cap],
        lens: vec![0; cap],
        targets: Vec::with_capacity(cap),
        // A control buffer only for GSO: the kernel rejects an empty (zeroed) one.
        headers: MultiHeaders::preallocate(
            cap,
            (spec.mode == Mode::Gso).then(|| nix::cmsg_space!(u16)),
        ),
        segment: spec.size as u16,
    };
    let mut in_bufs = vec![vec![0u8; 2048]; IN_BATCH];
    let mut in_headers = MultiHeaders::<SockaddrStorage>::preallocate(IN_BATCH, None);
    let mut out_seq: u32 = 0;
    let mut rollover = Rollover::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let mut lens = [0usize; IN_BATCH];
        let got = {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = in_bufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            match recvmmsg(
                socket.as_raw_fd(),
                &mut in_headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(r) => {
                    let mut n = 0;
                    for (i, m) in r.enumerate() {
                        lens[i] = m.bytes;
                        n += 1;
                    }
                    n
                }
                Err(_) => 0,
            }
        };
        if got == 0 {
            continue;
        }
        shared.received.fetch_add(got as u64, Ordering::Relaxed);
        // Decrypt each input packet once.
        let mut plain: Vec<usize> = Vec::with_capacity(got);
        for (i, buf) in in_bufs.iter_mut().enumerate().take(got) {
            let len = lens[i];
            if len < HEADER + TAG {
                continue;
            }
            let index = rollover.index(u16::from_be_bytes([buf[2], buf[3]]));
            let (header, body) = buf[..len].split_at_mut(HEADER);
            let ssrc = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
            match ingress.open_in_place(nonce(ssrc, index), Aad::from(&header[..]), body) {
                Ok(_) => plain.push(i),
                Err(_) => {
                    shared.auth_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Fan out: per copy, re-header, encrypt, queue; GSO groups `segs` packets per copy.
        for group in plain.chunks(segs) {
            for c in 0..spec.copies {
                if out.targets.len() == cap {
                    let n = out.flush()?;
                    shared.copies.fetch_add(n, Ordering::Relaxed);
                }
                let slot = out.targets.len();
                let mut used = 0;
                for &i in group {
                    let len = lens[i];
                    let dst = &mut out.bufs[slot][used..used + len];
                    dst[HEADER..len - TAG].copy_from_slice(&in_bufs[i][HEADER..len - TAG]);
                    let ssrc = 0x1000 + c as u32;
                    write_header(dst, out_seq as u16, ssrc);
                    seal(&out.keys[c], dst, ssrc, out_seq)?;
                    out_seq = out_seq.wrapping_add(1);
                    used += len;
                }
                out.lens[slot] = used;
                out.targets.push(c);
            }
        }
        let n = out.flush()?;
        shared.copies.fetch_add(n, Ordering::Relaxed);
    }
    Ok(())
}

/// SRTP-style packet index from 16-bit sequence numbers: a rollover counter that advances
/// when the sequence wraps (loopback delivers in order).
#[derive(Default)]
struct Rollover {
    last: Option<u16>,
    roc: u32,
}

impl Rollover {
    fn index(&mut self, seq: u16) -> u32 {
        if let Some(last) = self.last {
            if seq < last && last - seq > 0x8000 {
                self.roc = self.roc.wrapping_add(1);
            }
        }
        self.last = Some(seq);
        (self.roc << 16) | u32::from(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollover_counts_wraps() {
        let mut r = Rollover::default();
        assert_eq!(r.index(65534), 65534);
        assert_eq!(r.index(65535), 65535);
        assert_eq!(r.index(0), 65536);
        assert_eq!(r.index(1), 65537);
    }

    #[test]
    fn seal_then_open() {
        let k = key(3).expect("key");
        let mut buf = vec![0u8; 200];
        write_header(&mut buf, 9, 77);
        buf[HEADER..HEADER + 5].copy_from_slice(b"hello");
        seal(&k, &mut buf, 77, 9).expect("seal");
        assert_ne!(&buf[HEADER..HEADER + 5], b"hello");
        let (h, body) = buf.split_at_mut(HEADER);
        let plain = k
            .open_in_place(nonce(77, 9), Aad::from(&h[..]), body)
            .expect("authentic");
        assert_eq!(&plain[..5], b"hello");
    }

    #[test]
    fn small_run_sends_and_delivers() {
        for mode in [Mode::Sendto, Mode::Sendmmsg, Mode::Gso] {
            let o = measure(Spec {
                mode,
                copies: 3,
                size: 1200,
                secs: 0.2,
                gso_segments: 4,
                ip: "127.0.0.1".parse().expect("ip"),
            })
            .expect("ceiling runs");
            assert!(o.us_per_copy > 0.0, "{mode:?}");
            assert_eq!(o.auth_failures, 0);
            assert!(o.delivered_ratio > 0.5, "{mode:?}: {}", o.delivered_ratio);
        }
    }
}
