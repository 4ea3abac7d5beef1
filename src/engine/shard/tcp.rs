//! ICE over TCP on a shard: the connections the listener (`crate::ice_tcp`) handed over,
//! each bound to the session its first STUN binding request named, framed as RFC 4571
//! says (a two-byte length before each packet).
//!
//! A connection has a reader task, which reads whole frames and passes them to the shard's
//! loop, and a writer task, which writes what the shard framed for it. The shard never waits
//! on a connection: media goes through a bounded queue ([`MEDIA_QUEUE`] frames), and when a
//! client reads too slowly for it the packet is dropped and counted, so a slow TCP client
//! costs only itself; STUN and DTLS (few and small, and without them the session dies) go
//! through a queue of their own.

use crate::engine::rooms::room::SessionKey;
use crate::engine::shard::event_loop::Engine;
use crate::metrics::{self, TcpWriterMetrics};
use crate::transport::Fed;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The largest frame accepted: no WebRTC packet is larger than a datagram Parley accepts.
pub const MAX_FRAME: usize = 2048;

/// Media frames queued for one connection at most (about a quarter of a second of a
/// 2.5 Mbit/s video and its audio).
pub const MEDIA_QUEUE: usize = 256;

/// The kernel's send buffer for a connection: with the media queue, what a slow client may
/// have waiting (a bound on its delay, too).
const SEND_BUFFER: usize = 128 * 1024;

/// How long a connection may take to accept one frame before it is closed: its client has
/// stopped reading (its queue has long been dropping media by then).
pub const WRITE_STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// Frames read from all of a shard's connections, waiting for its loop.
const INPUT_QUEUE: usize = 1024;

/// Counts the live ICE-TCP connections of the process; each connection holds one.
#[derive(Debug)]
pub struct ConnGuard(Arc<AtomicUsize>);

impl ConnGuard {
    /// Takes a place among `live` if fewer than `max` are taken.
    pub fn take(live: &Arc<AtomicUsize>, max: usize) -> Option<ConnGuard> {
        let taken = live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        });
        taken.ok().map(|_| ConnGuard(live.clone()))
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads one RFC 4571 frame: `None` at the end of the stream, or for a frame that is empty
/// or larger than [`MAX_FRAME`] (the connection is then closed).
pub async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R) -> Option<BytesMut> {
    let mut len = [0u8; 2];
    rd.read_exact(&mut len).await.ok()?;
    let n = usize::from(u16::from_be_bytes(len));
    if n == 0 || n > MAX_FRAME {
        return None;
    }
    let mut frame = BytesMut::zeroed(n);
    rd.read_exact(&mut frame).await.ok()?;
    Some(frame)
}

/// `packet` with its RFC 4571 length before it.
pub fn frame(packet: &[u8]) -> Option<Bytes> {
    let len = u16::try_from(packet.len()).ok()?;
    let mut framed = BytesMut::with_capacity(packet.len() + 2);
    framed.put_u16(len);
    framed.put_slice(packet);
    Some(framed.freeze())
}

/// Whether a packet is RTP or RTCP (RFC 7983), which may be dropped when a client is slow.
fn is_media(packet: &[u8]) -> bool {
    packet.first().is_some_and(|b| (128..=191).contains(b))
}

/// What the reader tasks tell the shard's loop.
#[derive(Debug)]
pub enum TcpInput {
    /// A frame from connection `0`.
    Frame(u64, BytesMut),
    /// Connection `0` ended (end of stream, an error, or a frame over the limit).
    Closed(u64),
}

struct Conn {
    session: SessionKey,
    peer: SocketAddr,
    media: mpsc::Sender<Bytes>,
    control: mpsc::UnboundedSender<Bytes>,
    reader: JoinHandle<()>,
    _guard: ConnGuard,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The writer ends once both queues are dropped.
        self.reader.abort();
    }
}

/// A shard's ICE-TCP connections.
pub struct TcpConns {
    conns: HashMap<u64, Conn>,
    /// The connection of each (session, client address): what a packet to send looks up.
    by_path: HashMap<(SessionKey, SocketAddr), u64>,
    next_id: u64,
    input_tx: mpsc::Sender<TcpInput>,
    /// Frames from every connection, for the shard's loop.
    pub input: mpsc::Receiver<TcpInput>,
    metrics: TcpWriterMetrics,
}

impl TcpConns {
    /// No connections yet; their writers count into `metrics`.
    pub fn new(metrics: TcpWriterMetrics) -> Self {
        let (input_tx, input) = mpsc::channel(INPUT_QUEUE);
        Self {
            conns: HashMap::new(),
            by_path: HashMap::new(),
            next_id: 1,
            input_tx,
            input,
            metrics,
        }
    }
}

impl TcpConns {
    /// How many connections the shard holds.
    pub fn count(&self) -> usize {
        self.conns.len()
    }

    /// Closes every connection of `session`.
    pub fn close_session(&mut self, session: SessionKey) {
        self.conns.retain(|_, c| c.session != session);
        self.by_path.retain(|(s, _), _| *s != session);
    }

    fn insert(&mut self, id: u64, conn: Conn) {
        // A newer connection from the same address replaces the older one.
        if let Some(old) = self.by_path.insert((conn.session, conn.peer), id) {
            self.conns.remove(&old);
        }
        self.conns.insert(id, conn);
    }

    fn remove(&mut self, id: u64) {
        if let Some(c) = self.conns.remove(&id) {
            let path = (c.session, c.peer);
            if self.by_path.get(&path) == Some(&id) {
                self.by_path.remove(&path);
            }
        }
    }

    /// The connection that carries `session`'s packets to `peer`.
    fn find(&self, session: SessionKey, peer: SocketAddr) -> Option<&Conn> {
        self.by_path
            .get(&(session, peer))
            .and_then(|id| self.conns.get(id))
    }
}

async fn read_frames(rd: OwnedReadHalf, id: u64, tx: mpsc::Sender<TcpInput>) {
    let mut rd = BufReader::new(rd);
    while let Some(frame) = read_frame(&mut rd).await {
        if tx.send(TcpInput::Frame(id, frame)).await.is_err() {
            return;
        }
    }
    let _ = tx.send(TcpInput::Closed(id)).await;
}

/// Writes what the shard queued for connection `id`, control frames first. A frame the
/// client does not take within [`WRITE_STALL`] (it stopped reading), or a write error, ends
/// the connection: the shard is told, and what was still queued is no longer counted.
async fn write_frames(
    mut wr: OwnedWriteHalf,
    mut media: mpsc::Receiver<Bytes>,
    mut control: mpsc::UnboundedReceiver<Bytes>,
    metrics: TcpWriterMetrics,
    closed: (u64, mpsc::Sender<TcpInput>),
) {
    let mut broken = false;
    loop {
        let frame = tokio::select! {
            biased;
            Some(f) = control.recv() => f,
            Some(f) = media.recv() => f,
            else => break,
        };
        let written = tokio::time::timeout(WRITE_STALL, wr.write_all(&frame)).await;
        metrics.queued.sub(frame.len() as i64);
        match written {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                broken = true;
                break;
            }
            Err(_) => {
                metrics.stalled.inc();
                broken = true;
                break;
            }
        }
    }
    media.close();
    control.close();
    while let Ok(f) = media.try_recv() {
        metrics.queued.sub(f.len() as i64);
    }
    while let Ok(f) = control.try_recv() {
        metrics.queued.sub(f.len() as i64);
    }
    if broken {
        let (id, shard) = closed;
        let _ = shard.send(TcpInput::Closed(id)).await;
    }
    let _ = wr.shutdown().await;
}

impl Engine {
    /// Takes a connection whose first frame (`first`, a STUN binding request) names a
    /// session of this shard by its ufrag, and feeds that frame to it.
    pub(in crate::engine) fn adopt_tcp(
        &mut self,
        ufrag: &str,
        stream: std::net::TcpStream,
        peer: SocketAddr,
        mut first: BytesMut,
        guard: ConnGuard,
    ) {
        let Some(session) = self.demux.session_of_ufrag(ufrag) else {
            self.tally.drop(metrics::Drop::Unroutable);
            return;
        };
        if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER) {
            tracing::debug!("ICE-TCP send buffer: {e}");
        }
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!("ICE-TCP connection from {peer} not adopted: {e}");
                return;
            }
        };
        let (rd, wr) = stream.into_split();
        let tcp = &mut self.tcp;
        let id = tcp.next_id;
        tcp.next_id += 1;
        let (media_tx, media_rx) = mpsc::channel(MEDIA_QUEUE);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        tokio::spawn(write_frames(
            wr,
            media_rx,
            control_rx,
            tcp.metrics.clone(),
            (id, tcp.input_tx.clone()),
        ));
        let reader = tokio::spawn(read_frames(rd, id, tcp.input_tx.clone()));
        tcp.insert(
            id,
            Conn {
                session,
                peer,
                media: media_tx,
                control: control_tx,
                reader,
                _guard: guard,
            },
        );
        self.on_tcp_frame(id, &mut first);
    }

    /// What a reader task passed on.
    pub(in crate::engine) fn on_tcp_input(&mut self, input: TcpInput) {
        match input {
            TcpInput::Frame(id, mut frame) => self.on_tcp_frame(id, &mut frame),
            TcpInput::Closed(id) => {
                self.tcp.remove(id);
            }
        }
    }

    fn on_tcp_frame(&mut self, id: u64, frame: &mut [u8]) {
        let Some((key, peer)) = self.tcp.conns.get(&id).map(|c| (c.session, c.peer)) else {
            return;
        };
        let now = Instant::now();
        self.tally.udp_in.0 += 1;
        self.tally.udp_in.1 += frame.len() as u64;
        let Some(session) = self.sessions.get_mut(&key) else {
            self.tcp.remove(id);
            return;
        };
        match session.peer.handle_tcp_frame(now, peer, frame) {
            Fed::Stack => self.mark(key),
            Fed::Parley => self.own_events.push(key),
        }
    }

    /// Sends one packet of `session` on its connection from `to`.
    pub(in crate::engine) fn send_tcp(&mut self, session: SessionKey, to: SocketAddr, data: &[u8]) {
        let conn = self.tcp.find(session, to);
        let (Some(conn), Some(framed)) = (conn, frame(data)) else {
            self.tally.drop(metrics::Drop::Unroutable);
            return;
        };
        let len = framed.len() as u64;
        let sent = if is_media(data) {
            conn.media.try_send(framed).is_ok()
        } else {
            conn.control.send(framed).is_ok()
        };
        if sent {
            self.tcp.metrics.queued.add(len as i64);
            self.tally.udp_out.0 += 1;
            self.tally.udp_out.1 += len;
        } else {
            self.tally.drop(metrics::Drop::QueueFull);
        }
    }
}

#[cfg(test)]
mod tests;
