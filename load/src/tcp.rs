//! ICE over TCP for viewers (`--tcp-share`): the server's passive candidate in its answer,
//! the connection to it, and RFC 4571 framing on the media thread.
//!
//! Every packet on the stream (STUN, DTLS, SRTP, SRTCP) is preceded by its length, two bytes
//! big-endian. [`Deframer`] reassembles frames across reads (a frame split over several
//! reads, several frames in one read); [`TcpLink`] is one viewer's connection: framed,
//! non-blocking writes that keep what the kernel would not take for the next round, and
//! reads that hand each complete frame on with its arrival time.
//!
//! Arrival time: the socket has `SO_TIMESTAMPNS`, so each `recvmsg` returns the kernel
//! receive time of the last segment it read (Linux's TCP receive timestamp). Every frame
//! completed by a read gets that time. A frame is complete when its last segment arrives,
//! so this is its arrival as UDP timestamps are; only when one read spans segments that
//! arrived at different times do the earlier frames get the later time, over-stating their
//! delay by up to the gap (about one media-thread round when the generator keeps up; reads
//! are at most [`READ_CHUNK`] bytes). When the kernel gives no timestamp, the read time is
//! used.

use anyhow::{anyhow, Context, Result};
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;
use std::io::{IoSliceMut, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// The most a viewer reads from its stream in one `recvmsg`.
pub const READ_CHUNK: usize = 8192;
/// Framed bytes a link keeps for a server that does not read, before it drops packets.
const MAX_PENDING: usize = 1 << 20;

/// The address of the first `tcptype passive` candidate in `sdp`, preferring the family of
/// `local` (the generator's `--bind-ip`).
pub fn passive_candidate(sdp: &str, local: IpAddr) -> Option<SocketAddr> {
    let found: Vec<SocketAddr> = sdp
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .filter_map(|c| {
            // foundation component transport priority address port typ host [tcptype t] ...
            let f: Vec<&str> = c.split_whitespace().collect();
            let tcptype = f
                .iter()
                .position(|&w| w == "tcptype")
                .and_then(|i| f.get(i + 1));
            let passive = f.get(2)?.eq_ignore_ascii_case("tcp") && tcptype == Some(&"passive");
            let ip: IpAddr = f.get(4)?.parse().ok()?;
            let port: u16 = f.get(5)?.parse().ok()?;
            (passive && port != 0).then_some(SocketAddr::new(ip, port))
        })
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4() == local.is_ipv4())
        .or(found.first())
        .copied()
}

/// Opens a connection from `local` (any port) to the server's passive candidate `to`:
/// non-blocking, `TCP_NODELAY`, with kernel receive timestamps.
pub async fn connect(local: IpAddr, to: SocketAddr) -> Result<TcpStream> {
    let socket = match to {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }?;
    socket
        .bind(SocketAddr::new(local, 0))
        .with_context(|| format!("bind {local}:0"))?;
    let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(to))
        .await
        .map_err(|_| anyhow!("ICE-TCP connect to {to}: timed out"))?
        .with_context(|| format!("ICE-TCP connect to {to}"))?
        .into_std()?;
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)?;
    setsockopt(&stream, sockopt::ReceiveTimestampns, &true).context("SO_TIMESTAMPNS")?;
    Ok(stream)
}

/// Reassembles RFC 4571 frames from a byte stream.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Deframer {
    /// Room for the next read of at most `max` bytes (moves a partial frame to the front).
    pub fn spare(&mut self, max: usize) -> &mut [u8] {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.buf.len() < self.end + max {
            self.buf.resize(self.end + max, 0);
        }
        &mut self.buf[self.end..self.end + max]
    }

    /// Accounts `n` bytes read into [`Deframer::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Appends bytes (what a read into `spare` + `filled` does).
    #[cfg(test)]
    pub fn push(&mut self, data: &[u8]) {
        self.spare(data.len()).copy_from_slice(data);
        self.filled(data.len());
    }

    /// The next complete frame, if one is buffered (empty frames are skipped).
    pub fn next_frame(&mut self) -> Option<&[u8]> {
        loop {
            let have = &self.buf[self.start..self.end];
            if have.len() < 2 {
                return None;
            }
            let len = usize::from(u16::from_be_bytes([have[0], have[1]]));
            if have.len() < 2 + len {
                return None;
            }
            let at = self.start + 2;
            self.start = at + len;
            if len > 0 {
                return Some(&self.buf[at..at + len]);
            }
        }
    }

    /// Bytes buffered that do not make a whole frame yet.
    #[cfg(test)]
    pub fn partial(&self) -> usize {
        self.end - self.start
    }
}

/// Appends `data` to `out` as one RFC 4571 frame; false (nothing appended) if it is longer
/// than a frame can be.
pub fn frame_into(out: &mut Vec<u8>, data: &[u8]) -> bool {
    let Ok(len) = u16::try_from(data.len()) else {
        return false;
    };
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    true
}

/// One viewer's ICE-TCP connection.
#[derive(Debug)]
pub struct TcpLink {
    stream: TcpStream,
    peer: SocketAddr,
    deframer: Deframer,
    /// Framed bytes the kernel has not taken yet, from `sent` on.
    pending: Vec<u8>,
    sent: usize,
    cmsg: Vec<u8>,
    closed: bool,
    /// The closure was handed to the caller ([`TcpLink::newly_closed`]).
    closure_taken: bool,
}

impl TcpLink {
    /// Wraps a connected, non-blocking stream.
    pub fn new(stream: TcpStream) -> Result<TcpLink> {
        Ok(TcpLink {
            peer: stream.peer_addr()?,
            stream,
            deframer: Deframer::default(),
            pending: Vec::new(),
            sent: 0,
            cmsg: nix::cmsg_space!(TimeSpec),
            closed: false,
            closure_taken: false,
        })
    }

    /// The stream (for epoll).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The server's end: where every frame comes from.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the connection ended (EOF, a read or write error).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// True once, the first time it is asked after the connection ended: the caller then
    /// fails the viewer and stops polling the stream.
    pub fn newly_closed(&mut self) -> bool {
        let new = self.closed && !self.closure_taken;
        self.closure_taken |= self.closed;
        new
    }

    /// Framed bytes waiting for the kernel.
    pub fn has_pending(&self) -> bool {
        self.sent < self.pending.len()
    }

    /// Queues one packet, framed; false if it was dropped (too long, too much pending, or
    /// the link is closed). [`TcpLink::flush`] writes it.
    pub fn queue(&mut self, data: &[u8]) -> bool {
        if self.closed || self.pending.len() - self.sent + data.len() > MAX_PENDING {
            return false;
        }
        if self.sent == self.pending.len() {
            self.pending.clear();
            self.sent = 0;
        }
        frame_into(&mut self.pending, data)
    }

    /// Writes what is pending until the kernel buffer is full; never blocks. False if the
    /// connection failed (it is then closed).
    pub fn flush(&mut self) -> bool {
        while self.has_pending() && !self.closed {
            match self.stream.write(&self.pending[self.sent..]) {
                Ok(0) => self.closed = true,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
        if self.sent == self.pending.len() {
            self.pending.clear();
            self.sent = 0;
        }
        !self.closed
    }

    /// Reads what the stream has, up to `max_reads` reads, and hands every complete frame
    /// to `on` with its arrival time (CLOCK_REALTIME ns; `fallback_ns` when the kernel gave
    /// none). `Err` when the connection ended (`UnexpectedEof`: the server closed it): the
    /// link is then closed.
    pub fn read(
        &mut self,
        max_reads: usize,
        fallback_ns: u64,
        mut on: impl FnMut(&[u8], u64),
    ) -> std::io::Result<()> {
        for _ in 0..max_reads {
            let fd = self.stream.as_raw_fd();
            let spare = self.deframer.spare(READ_CHUNK);
            let mut iov = [IoSliceMut::new(spare)];
            let got = recvmsg::<()>(fd, &mut iov, Some(&mut self.cmsg), MsgFlags::MSG_DONTWAIT);
            let (n, arrival) = match got {
                Ok(msg) => {
                    let mut arrival = None;
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                                arrival =
                                    Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64);
                            }
                        }
                    }
                    (msg.bytes, arrival)
                }
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    self.closed = true;
                    return Err(e.into());
                }
            };
            if n == 0 {
                self.closed = true;
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.deframer.filled(n);
            let arrival_ns = arrival.unwrap_or(fallback_ns);
            while let Some(frame) = self.deframer.next_frame() {
                on(frame, arrival_ns);
            }
            if n < READ_CHUNK {
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    fn framed(frames: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            assert!(frame_into(&mut out, f));
        }
        out
    }

    fn drain(d: &mut Deframer) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = d.next_frame() {
            out.push(f.to_vec());
        }
        out
    }

    #[test]
    fn several_frames_in_one_read() {
        let mut d = Deframer::default();
        d.push(&framed(&[b"one", b"", b"three", &[7u8; 1200]]));
        let frames = drain(&mut d);
        assert_eq!(frames.len(), 3, "the empty frame is skipped");
        assert_eq!(frames[0], b"one");
        assert_eq!(frames[1], b"three");
        assert_eq!(frames[2], vec![7u8; 1200]);
        assert_eq!(d.partial(), 0);
    }

    #[test]
    fn frames_split_across_reads() {
        let bytes = framed(&[&[1u8; 1000], &[2u8; 300], b"x", &[3u8; 65535]]);
        // Every split point, and byte by byte: the same frames come out.
        for chunk in [1, 2, 3, 7, 999, 1001, 1500, 4096, 8192] {
            let mut d = Deframer::default();
            let mut frames = Vec::new();
            for piece in bytes.chunks(chunk) {
                d.push(piece);
                frames.extend(drain(&mut d));
            }
            let lens: Vec<usize> = frames.iter().map(Vec::len).collect();
            assert_eq!(lens, [1000, 300, 1, 65535], "chunks of {chunk}");
            assert!(frames[0].iter().all(|&b| b == 1) && frames[3].iter().all(|&b| b == 3));
            assert_eq!(d.partial(), 0);
        }
        // A length prefix split in two, then the rest.
        let mut d = Deframer::default();
        d.push(&[0]);
        assert!(d.next_frame().is_none());
        d.push(&[3, b'a']);
        assert!(d.next_frame().is_none());
        assert_eq!(d.partial(), 3);
        d.push(b"bc\x00\x01");
        assert_eq!(d.next_frame(), Some(&b"abc"[..]));
        assert!(d.next_frame().is_none());
        d.push(b"z");
        assert_eq!(d.next_frame(), Some(&b"z"[..]));
    }

    #[test]
    fn frames_longer_than_a_frame_are_refused() {
        let mut out = Vec::new();
        assert!(!frame_into(&mut out, &vec![0u8; 65536]));
        assert!(out.is_empty());
        assert!(frame_into(&mut out, &[9u8; 2]));
        assert_eq!(out, [0, 2, 9, 9]);
    }

    #[test]
    fn the_passive_candidate_of_an_answer() {
        let v4: IpAddr = "127.0.0.1".parse().expect("ip");
        let v6: IpAddr = "::1".parse().expect("ip");
        let sdp = "v=0\r\n\
            a=candidate:1 1 udp 2130706431 127.0.0.1 18489 typ host\r\n\
            a=candidate:2 1 tcp 1671430143 ::1 18490 typ host tcptype passive\r\n\
            a=candidate:3 1 TCP 1671430143 127.0.0.1 18489 typ host tcptype passive\r\n\
            a=candidate:4 1 tcp 1671430143 127.0.0.1 9 typ host tcptype active\r\n";
        assert_eq!(passive_candidate(sdp, v4), "127.0.0.1:18489".parse().ok());
        assert_eq!(passive_candidate(sdp, v6), "[::1]:18490".parse().ok());
        let udp_only = "a=candidate:1 1 udp 2130706431 127.0.0.1 18489 typ host\r\n\
                        a=candidate:4 1 tcp 1 127.0.0.1 9 typ host tcptype active\r\n";
        assert_eq!(passive_candidate(udp_only, v4), None);
    }

    #[tokio::test]
    async fn a_link_frames_writes_and_reads_with_timestamps() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let stream = connect(ip, listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let mut link = TcpLink::new(stream).expect("link");
        assert_eq!(link.peer_addr(), listener.local_addr().expect("addr"));
        assert!(link.queue(b"hello") && link.queue(b"world!"));
        assert!(link.flush() && !link.has_pending());
        let mut got = [0u8; 15];
        server.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"\x00\x05hello\x00\x06world!");
        let before = crate::net::realtime_ns();
        let bytes = framed(&[b"abc", &[5u8; 3000]]);
        server.write_all(&bytes[..1000]).expect("write");
        std::thread::sleep(Duration::from_millis(20));
        let mut frames = Vec::new();
        let mut on = |f: &[u8], at: u64| frames.push((f.len(), at));
        link.read(8, 0, &mut on).expect("open");
        server.write_all(&bytes[1000..]).expect("write");
        std::thread::sleep(Duration::from_millis(20));
        link.read(8, 0, &mut on).expect("open");
        assert_eq!(frames.len(), 2);
        assert_eq!((frames[0].0, frames[1].0), (3, 3000));
        let after = crate::net::realtime_ns();
        assert!(frames.iter().all(|&(_, at)| at >= before && at <= after));
        assert!(
            frames[1].1 > frames[0].1 + 10_000_000,
            "the second part came later"
        );
        drop(server);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!link.newly_closed());
        let eof = link.read(8, 0, |_, _| {}).expect_err("closed");
        assert_eq!(eof.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(link.newly_closed() && !link.newly_closed(), "reported once");
        assert!(link.is_closed() && !link.queue(b"late"));
    }
}
