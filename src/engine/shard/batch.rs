//! Outgoing media datagrams, gathered while one batch of input is fanned out and sent with
//! as few system calls as possible: `sendmmsg`, and UDP GSO on Linux.
//!
//! The fan-out writes each viewer's SRTP packet straight into a slot of one preallocated
//! arena, so queueing a datagram never allocates. [`SendBatch::flush`] orders the queued
//! datagrams by destination (keeping each destination's order) and, where a viewer has several
//! datagrams of one size in a row (a video frame's packets), hands them to the kernel as one
//! segmentation-offloaded message (`UDP_SEGMENT`); messages go out [`GROUP`] per `sendmmsg`.
//! A kernel that refuses GSO turns it off for good. A full socket buffer drops the rest of the
//! batch (counted by the caller), as on any congested path: nothing here waits.
//!
//! This is the only module with `unsafe` code: the `sendmmsg` call, whose pointers all refer to
//! locals that outlive it. It was measured against the stack's one send per datagram (see the
//! README's Performance section).

use std::io;
use std::net::SocketAddr;
use std::net::UdpSocket;

/// Room for one datagram: the largest accepted input plus header growth and the SRTP tag.
pub const SLOT: usize = 2048 + 128;
/// Datagrams queued before a flush is forced.
pub const CAPACITY: usize = 512;
/// Messages per `sendmmsg` call.
const GROUP: usize = 64;
/// Datagrams (I/O vectors) per `sendmmsg` call.
const IOVS: usize = 256;
/// Segments per GSO message (the kernel's limit is 64 on older releases).
const MAX_SEGMENTS: usize = 64;
/// Bytes per GSO message (an IP datagram's limit, with room for headers).
const MAX_GSO_BYTES: usize = 65_000;

/// One queued datagram.
#[derive(Clone, Copy, Debug)]
struct Queued {
    to: SocketAddr,
    len: usize,
    /// Groups datagrams by destination (the viewer's session).
    dest: u64,
}

/// Datagrams waiting to be sent.
pub struct SendBatch {
    arena: Vec<u8>,
    queued: Vec<Queued>,
    /// Send order: indices into `queued`, by destination.
    order: Vec<u32>,
    gso: bool,
}

/// What one flush did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Datagrams the kernel took.
    pub sent: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Datagrams dropped (socket buffer full, or an error for that destination).
    pub dropped: u64,
}

/// One message of a `sendmmsg` call: `count` datagrams from `order[first..]`, all of
/// `segment` bytes but possibly the last (shorter).
#[derive(Clone, Copy, Debug, Default)]
struct Message {
    first: usize,
    count: usize,
    segment: usize,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self {
            arena: vec![0; SLOT * CAPACITY],
            queued: Vec::with_capacity(CAPACITY),
            order: Vec::with_capacity(CAPACITY),
            gso: cfg!(target_os = "linux"),
        }
    }
}

impl SendBatch {
    /// A batch that sends every datagram on its own (no GSO), e.g. to compare.
    pub fn without_gso() -> Self {
        Self {
            gso: false,
            ..Self::default()
        }
    }

    /// Whether no datagram waits.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// Whether the arena is full (flush before writing more).
    pub fn is_full(&self) -> bool {
        self.queued.len() == CAPACITY
    }

    /// The next free slot to write a datagram into, or `None` when full.
    pub fn slot(&mut self) -> Option<&mut [u8]> {
        let i = self.queued.len();
        self.arena.get_mut(i * SLOT..(i + 1) * SLOT)
    }

    /// Queues the `len` bytes just written into [`SendBatch::slot`] for `to`; `dest` names
    /// the destination's session (datagrams of one `dest` may share a GSO message).
    pub fn commit(&mut self, to: SocketAddr, len: usize, dest: u64) {
        if !self.is_full() && len <= SLOT {
            self.queued.push(Queued { to, len, dest });
        }
    }

    /// Sends everything queued and empties the batch.
    pub fn flush(&mut self, socket: &UdpSocket) -> Flushed {
        self.order.clear();
        self.order.extend(0..self.queued.len() as u32);
        if self.gso {
            let queued = &self.queued;
            self.order
                .sort_unstable_by_key(|&i| (queued[i as usize].dest, i));
        }
        let mut done = Flushed::default();
        let mut next = 0;
        while next < self.order.len() {
            let mut messages = [Message::default(); GROUP];
            let (mut m, mut iovs, mut i) = (0, 0, next);
            while m < GROUP && i < self.order.len() {
                let msg = self.message_at(i, IOVS - iovs);
                if msg.count == 0 {
                    break;
                }
                messages[m] = msg;
                m += 1;
                iovs += msg.count;
                i += msg.count;
            }
            match send_messages(
                socket,
                &self.arena,
                &self.queued,
                &self.order,
                &messages[..m],
            ) {
                Ok(0) => {
                    done.dropped += (self.order.len() - next) as u64;
                    break;
                }
                Ok(k) => {
                    for msg in &messages[..k] {
                        done.sent += msg.count as u64;
                        done.bytes += self.order[msg.first..msg.first + msg.count]
                            .iter()
                            .map(|&q| self.queued[q as usize].len as u64)
                            .sum::<u64>();
                        next += msg.count;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    done.dropped += (self.order.len() - next) as u64;
                    break;
                }
                Err(e) => {
                    // The first message failed: a kernel without GSO, or no route to that
                    // viewer. Drop it alone and go on (without GSO if it was one).
                    let first = messages[0];
                    if first.count > 1 {
                        tracing::info!("UDP GSO refused ({e}); sending datagrams one by one");
                        self.gso = false;
                    } else {
                        let to = self.queued[self.order[first.first] as usize].to;
                        tracing::trace!("send to {to} failed: {e}");
                    }
                    done.dropped += first.count as u64;
                    next += first.count;
                }
            }
        }
        self.queued.clear();
        done
    }

    /// The message starting at `order[first]`: with GSO, the following datagrams to the same
    /// destination of the same size (the last may be shorter), at most `room` of them.
    fn message_at(&self, first: usize, room: usize) -> Message {
        let head = self.queued[self.order[first] as usize];
        let mut msg = Message {
            first,
            count: usize::from(room > 0),
            segment: head.len,
        };
        if !self.gso {
            return msg;
        }
        let mut bytes = head.len;
        let limit = room.min(MAX_SEGMENTS);
        while msg.count < limit {
            let Some(&q) = self.order.get(first + msg.count) else {
                break;
            };
            let q = self.queued[q as usize];
            if q.dest != head.dest || q.to != head.to || q.len > head.len || {
                bytes += q.len;
                bytes > MAX_GSO_BYTES
            } {
                break;
            }
            msg.count += 1;
            if q.len < head.len {
                break;
            }
        }
        msg
    }
}

#[cfg(target_os = "linux")]
const UDP_SEGMENT: libc::c_int = 103;

/// Sends `messages` in one `sendmmsg`; returns how many messages the kernel took.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn send_messages(
    socket: &UdpSocket,
    arena: &[u8],
    queued: &[Queued],
    order: &[u32],
    messages: &[Message],
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    /// Room for one control message carrying a `u16` (8-byte aligned).
    type Control = [u64; 4];
    let addrs: [Option<socket2::SockAddr>; GROUP] = std::array::from_fn(|k| {
        messages
            .get(k)
            .map(|m| socket2::SockAddr::from(queued[order[m.first] as usize].to))
    });
    // SAFETY: all-zero is a valid value for these plain C structs and arrays.
    let mut iovs: [libc::iovec; IOVS] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; GROUP] = unsafe { std::mem::zeroed() };
    let mut controls: [Control; GROUP] = [[0; 4]; GROUP];
    let mut v = 0;
    for (k, m) in messages.iter().enumerate() {
        let Some(addr) = addrs[k].as_ref() else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        let start_iov = v;
        for &q in &order[m.first..m.first + m.count] {
            let q = q as usize;
            let Some(data) = arena.get(q * SLOT..q * SLOT + queued[q].len) else {
                return Err(io::Error::from(io::ErrorKind::InvalidInput));
            };
            let Some(iov) = iovs.get_mut(v) else {
                return Err(io::Error::from(io::ErrorKind::InvalidInput));
            };
            iov.iov_base = data.as_ptr() as *mut libc::c_void;
            iov.iov_len = data.len();
            v += 1;
        }
        let hdr = &mut msgs[k].msg_hdr;
        hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
        hdr.msg_namelen = addr.len();
        hdr.msg_iov = iovs[start_iov..].as_mut_ptr();
        hdr.msg_iovlen = m.count;
        if m.count > 1 {
            let control = &mut controls[k];
            hdr.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations.
            hdr.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
            // SAFETY: `hdr.msg_control` points at `control`, which has room for one
            // `cmsghdr` and two bytes of data (CMSG_SPACE(2) <= 32).
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(hdr);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, m.segment as u16);
            }
        }
    }
    // SAFETY: `msgs[..messages.len()]` point into `iovs`, `addrs`, `controls` and `arena`,
    // which all outlive the call; the kernel only reads them (and writes `msg_len`).
    let n = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            messages.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Sends `messages` one datagram at a time (systems without `sendmmsg`; GSO is off there, so
/// every message is one datagram).
#[cfg(not(target_os = "linux"))]
fn send_messages(
    socket: &UdpSocket,
    arena: &[u8],
    queued: &[Queued],
    order: &[u32],
    messages: &[Message],
) -> io::Result<usize> {
    for (k, m) in messages.iter().enumerate() {
        let q = order[m.first] as usize;
        let data = &arena[q * SLOT..q * SLOT + queued[q].len];
        if let Err(e) = socket.send_to(data, queued[q].to) {
            return if k == 0 { Err(e) } else { Ok(k) };
        }
    }
    Ok(messages.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flush_delivers_every_queued_datagram_in_order() {
        let tx = sender();
        let rx = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let to = rx.local_addr().expect("addr");
        let mut batch = SendBatch::default();
        for k in 0..150u8 {
            let slot = batch.slot().expect("room");
            slot[..3].copy_from_slice(&[k, k, k]);
            batch.commit(to, 3, 1);
        }
        let done = batch.flush(&tx);
        assert_eq!(
            done,
            Flushed {
                sent: 150,
                bytes: 450,
                dropped: 0
            }
        );
        assert_eq!(
            batch.gso,
            cfg!(target_os = "linux"),
            "GSO stays on where it exists"
        );
        assert!(batch.is_empty());
        let mut buf = [0u8; 16];
        for k in 0..150u8 {
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv(&mut buf))
                .await
                .expect("datagram in time")
                .expect("recv");
            assert_eq!(&buf[..n], &[k, k, k]);
        }
    }

    /// Receives `count` datagrams on `rx` within a few seconds.
    /// A non-blocking sending socket, as the engine's.
    fn sender() -> UdpSocket {
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        tx.set_nonblocking(true).expect("non-blocking");
        tx
    }

    async fn receive(rx: &tokio::net::UdpSocket, count: usize) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        for _ in 0..count {
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv(&mut buf))
                .await
                .expect("datagram in time")
                .expect("recv");
            got.push(buf[..n].to_vec());
        }
        got
    }

    #[tokio::test]
    async fn frames_of_interleaved_viewers_arrive_whole_and_in_order_with_and_without_gso() {
        for mut batch in [SendBatch::default(), SendBatch::without_gso()] {
            let tx = sender();
            let a = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let b = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let dests = [
                (a.local_addr().expect("a"), 1),
                (b.local_addr().expect("b"), 2),
            ];
            // Three frames of packets fanned out to both viewers in turn: per frame, equal
            // sizes but a shorter last packet; one odd larger packet in the middle.
            let sizes = [1200, 1200, 1200, 700, 1200, 1300, 1200, 90, 1200, 1200];
            for (k, size) in sizes.iter().enumerate() {
                for (to, dest) in dests {
                    let slot = batch.slot().expect("room");
                    slot[..*size].fill(k as u8 + dest as u8 * 100);
                    batch.commit(to, *size, dest);
                }
            }
            let done = batch.flush(&tx);
            let total: usize = sizes.iter().sum();
            assert_eq!(done.sent, 20);
            assert_eq!(done.bytes, 2 * total as u64);
            assert_eq!(done.dropped, 0);
            for (rx, dest) in [(&a, 1u8), (&b, 2u8)] {
                let got = receive(rx, sizes.len()).await;
                for (k, (d, size)) in got.iter().zip(sizes).enumerate() {
                    assert_eq!(d.len(), size, "viewer {dest}, datagram {k}");
                    assert!(
                        d.iter().all(|x| *x == k as u8 + dest * 100),
                        "viewer {dest} {k}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_full_batch_takes_no_more() {
        let mut batch = SendBatch::default();
        let to: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        for _ in 0..CAPACITY {
            assert!(batch.slot().is_some());
            batch.commit(to, 10, 1);
        }
        assert!(batch.is_full());
        assert!(batch.slot().is_none());
        batch.commit(to, 10, 1);
        assert_eq!(batch.queued.len(), CAPACITY);
    }
}
