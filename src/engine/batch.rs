//! Outgoing media datagrams, gathered while one batch of input is fanned out and sent with
//! as few system calls as possible (`sendmmsg` on Linux).
//!
//! The fan-out writes each viewer's SRTP packet straight into a slot of one preallocated
//! arena, so queueing a datagram never allocates. [`SendBatch::flush`] hands the queued
//! datagrams to the kernel in groups of [`GROUP`]. A full socket buffer drops the rest of the
//! batch (counted by the caller), as on any congested path: nothing here waits.
//!
//! This is the only module with `unsafe` code: the `sendmmsg` call, whose pointers all refer to
//! locals that outlive it. It was measured against one `send_to` per datagram (see the README's
//! Performance section).

use std::io;
use std::net::SocketAddr;
use tokio::net::UdpSocket;

/// Room for one datagram: the largest accepted input plus header growth and the SRTP tag.
pub const SLOT: usize = 2048 + 128;
/// Datagrams queued before a flush is forced.
pub const CAPACITY: usize = 512;
/// Datagrams per `sendmmsg` call.
const GROUP: usize = 64;

/// Datagrams waiting to be sent.
pub struct SendBatch {
    arena: Vec<u8>,
    queued: Vec<(SocketAddr, usize)>,
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

impl Default for SendBatch {
    fn default() -> Self {
        Self {
            arena: vec![0; SLOT * CAPACITY],
            queued: Vec::with_capacity(CAPACITY),
        }
    }
}

impl SendBatch {
    /// Whether no datagram waits.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
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

    /// Queues the `len` bytes just written into [`SendBatch::slot`] for `to`.
    pub fn commit(&mut self, to: SocketAddr, len: usize) {
        if !self.is_full() && len <= SLOT {
            self.queued.push((to, len));
        }
    }

    /// Sends everything queued and empties the batch.
    pub fn flush(&mut self, socket: &UdpSocket) -> Flushed {
        let mut done = Flushed::default();
        let mut i = 0;
        while i < self.queued.len() {
            let end = (i + GROUP).min(self.queued.len());
            match send_group(socket, &self.arena, &self.queued[i..end], i) {
                Ok(0) => {
                    // Nothing was taken without an error: give up on this batch.
                    done.dropped += (self.queued.len() - i) as u64;
                    break;
                }
                Ok(n) => {
                    done.sent += n as u64;
                    done.bytes += self.queued[i..i + n]
                        .iter()
                        .map(|(_, l)| *l as u64)
                        .sum::<u64>();
                    i += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    done.dropped += (self.queued.len() - i) as u64;
                    break;
                }
                Err(e) => {
                    // The first datagram of the group failed (e.g. no route to that viewer):
                    // drop it alone and go on.
                    tracing::trace!("send to {} failed: {e}", self.queued[i].0);
                    done.dropped += 1;
                    i += 1;
                }
            }
        }
        self.queued.clear();
        done
    }
}

/// Sends `group` (datagrams `first..` of the arena) in one `sendmmsg`; returns how many the
/// kernel took.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn send_group(
    socket: &UdpSocket,
    arena: &[u8],
    group: &[(SocketAddr, usize)],
    first: usize,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let addrs: [Option<socket2::SockAddr>; GROUP] =
        std::array::from_fn(|k| group.get(k).map(|(to, _)| socket2::SockAddr::from(*to)));
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut iovs: [libc::iovec; GROUP] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; GROUP] = unsafe { std::mem::zeroed() };
    for (k, (_, len)) in group.iter().enumerate() {
        let start = (first + k) * SLOT;
        let Some(data) = arena.get(start..start + len) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        let Some(addr) = addrs[k].as_ref() else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        iovs[k].iov_base = data.as_ptr() as *mut libc::c_void;
        iovs[k].iov_len = data.len();
        msgs[k].msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
        msgs[k].msg_hdr.msg_namelen = addr.len();
        msgs[k].msg_hdr.msg_iov = &mut iovs[k];
        msgs[k].msg_hdr.msg_iovlen = 1;
    }
    let fd = socket.as_raw_fd();
    // SAFETY: `msgs[..group.len()]` point into `iovs`, `addrs` and `arena`, which all outlive
    // the call; the kernel only reads them (and writes `msg_len`).
    let n = unsafe {
        libc::sendmmsg(
            fd,
            msgs.as_mut_ptr(),
            group.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Sends `group` one datagram at a time (systems without `sendmmsg`).
#[cfg(not(target_os = "linux"))]
fn send_group(
    socket: &UdpSocket,
    arena: &[u8],
    group: &[(SocketAddr, usize)],
    first: usize,
) -> io::Result<usize> {
    for (k, (to, len)) in group.iter().enumerate() {
        let start = (first + k) * SLOT;
        if let Err(e) = socket.try_send_to(&arena[start..start + len], *to) {
            return if k == 0 { Err(e) } else { Ok(k) };
        }
    }
    Ok(group.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flush_delivers_every_queued_datagram_in_order() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let rx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let to = rx.local_addr().expect("addr");
        let mut batch = SendBatch::default();
        for k in 0..150u8 {
            let slot = batch.slot().expect("room");
            slot[..3].copy_from_slice(&[k, k, k]);
            batch.commit(to, 3);
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

    #[test]
    fn a_full_batch_takes_no_more() {
        let mut batch = SendBatch::default();
        let to: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        for _ in 0..CAPACITY {
            assert!(batch.slot().is_some());
            batch.commit(to, 10);
        }
        assert!(batch.is_full());
        assert!(batch.slot().is_none());
        batch.commit(to, 10);
        assert_eq!(batch.queued.len(), CAPACITY);
    }
}
