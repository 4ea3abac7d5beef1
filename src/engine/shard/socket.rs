//! The media socket as the engine holds it: registered with the reactor for reading only.
//!
//! Sends never wait for the socket: a full send buffer drops that datagram (counted), as on
//! any congested path. Registered for writes as well, the socket would turn writable each
//! time the kernel finished sending a batch, and every such edge would wake an idle runtime
//! thread for nothing: thousands of futile wake-ups a second under load, paid by the
//! forwarding thread. Read-only registration leaves the kernel nobody to wake.
//!
//! Reads come in batches ([`MediaSocket::recv_batch`], one `recvmmsg` call): a call that
//! returns fewer datagrams than it could take emptied the queue, so the socket is marked not
//! ready at once instead of by a further read that would only say so (a system call per
//! wake-up saved; the kernel signals the next datagram's arrival anyway).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A non-blocking UDP socket, readable through the reactor, written to directly.
pub struct MediaSocket {
    fd: AsyncFd<UdpSocket>,
}

impl MediaSocket {
    /// Registers `socket` (made non-blocking) for readable events with the current runtime.
    #[allow(unsafe_code)]
    pub fn new(socket: UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        // SAFETY: the AsyncFd owns `socket`, an open std socket whose `as_raw_fd` returns
        // the same descriptor for as long as it lives; nothing else closes it.
        let fd = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Waits for and reads one datagram.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.fd
            .async_io(Interest::READABLE, |s| s.recv_from(buf))
            .await
    }

    /// Waits for datagrams and reads as many as are waiting, up to [`RECV_BATCH`], in one
    /// call; returns how many ([`RecvBatch::get`] gives each).
    pub async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| recv_mmsg(fd.get_ref(), batch)) {
                Ok(Ok(n)) => {
                    if n < RECV_BATCH {
                        // The queue was empty at the end of the call.
                        guard.clear_ready();
                    }
                    return Ok(n);
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads one datagram if one is waiting (`WouldBlock` otherwise).
    pub fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.fd.try_io(Interest::READABLE, |s| s.recv_from(buf))
    }

    /// Sends one datagram without waiting (`WouldBlock` when the send buffer is full).
    pub fn try_send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.fd.get_ref().send_to(data, to)
    }

    /// The socket itself, for batched sends.
    pub fn std(&self) -> &UdpSocket {
        self.fd.get_ref()
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.fd.get_ref().local_addr()
    }
}

/// Most datagrams one [`MediaSocket::recv_batch`] call reads.
pub const RECV_BATCH: usize = 64;

/// Buffers for up to [`RECV_BATCH`] datagrams of up to `size` bytes, and where each came
/// from; allocated once and reused.
pub struct RecvBatch {
    data: Vec<u8>,
    size: usize,
    /// How many the last read took.
    count: usize,
    lens: [usize; RECV_BATCH],
    from: [Option<SocketAddr>; RECV_BATCH],
}

impl RecvBatch {
    /// Room for [`RECV_BATCH`] datagrams of `size` bytes each.
    pub fn new(size: usize) -> Self {
        Self {
            data: vec![0; size * RECV_BATCH],
            size,
            count: 0,
            lens: [0; RECV_BATCH],
            from: [None; RECV_BATCH],
        }
    }

    /// The `i`-th datagram of the last read and its sender (`None` past the count read, or
    /// from an address family other than IP).
    pub fn get(&mut self, i: usize) -> Option<(SocketAddr, &mut [u8])> {
        if i >= self.count {
            return None;
        }
        let from = self.from[i]?;
        let len = self.lens[i];
        let start = i * self.size;
        Some((from, &mut self.data[start..start + len]))
    }
}

/// One `recvmmsg` call without waiting: fills `batch` and returns the number of datagrams
/// (`WouldBlock` when there is none).
#[allow(unsafe_code)]
fn recv_mmsg(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut addrs: [libc::sockaddr_storage; RECV_BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; RECV_BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
    let size = batch.size;
    for (i, chunk) in batch.data.chunks_exact_mut(size).enumerate() {
        iovs[i].iov_base = chunk.as_mut_ptr() as *mut libc::c_void;
        iovs[i].iov_len = size;
    }
    for (i, msg) in msgs.iter_mut().enumerate() {
        msg.msg_hdr.msg_iov = &mut iovs[i] as *mut libc::iovec;
        msg.msg_hdr.msg_iovlen = 1;
        msg.msg_hdr.msg_name = &mut addrs[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
        msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    }
    // SAFETY: every header points at its own iovec and address in this frame, and every
    // iovec at its own `size` bytes of `batch.data`, all of which outlive the call; the
    // kernel writes at most `msg_namelen` and `iov_len` bytes to them.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            RECV_BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        batch.count = 0;
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    batch.count = n;
    for i in 0..n {
        batch.lens[i] = msgs[i].msg_len as usize;
        batch.from[i] = socket_addr(&addrs[i]);
    }
    Ok(n)
}

/// The IP address and port in a `sockaddr_storage` the kernel filled.
#[allow(unsafe_code)]
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is sized and
            // aligned for.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage as *const libc::sockaddr_in6)
            };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reads_wait_for_datagrams_and_sends_go_straight_out() {
        let a = MediaSocket::new(UdpSocket::bind("127.0.0.1:0").expect("bind")).expect("a");
        let b = MediaSocket::new(UdpSocket::bind("127.0.0.1:0").expect("bind")).expect("b");
        let mut buf = [0u8; 64];
        assert_eq!(
            a.try_recv_from(&mut buf).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
        let to = a.local_addr().expect("addr");
        for k in 0..3u8 {
            assert_eq!(b.try_send_to(&[k; 5], to).expect("send"), 5);
        }
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), a.recv_from(&mut buf))
            .await
            .expect("in time")
            .expect("recv");
        assert_eq!(
            (&buf[..n], from),
            (&[0u8; 5][..], b.local_addr().expect("b"))
        );
        // The rest are read without waiting, then the socket reports empty again.
        let mut rest = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while rest.len() < 2 && tokio::time::Instant::now() < deadline {
            match a.try_recv_from(&mut buf) {
                Ok((n, _)) => rest.push(buf[..n].to_vec()),
                Err(_) => tokio::task::yield_now().await,
            }
        }
        assert_eq!(rest, vec![vec![1u8; 5], vec![2u8; 5]]);
        assert!(a.try_recv_from(&mut buf).is_err());
        // Readiness was cleared by the empty read: a new datagram wakes the reader again.
        b.try_send_to(&[9; 2], to).expect("send");
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), a.recv_from(&mut buf))
            .await
            .expect("in time")
            .expect("recv");
        assert_eq!(&buf[..n], &[9, 9]);
    }

    #[tokio::test]
    async fn a_batch_read_takes_every_waiting_datagram_and_the_next_one_wakes_it_again() {
        let a = MediaSocket::new(UdpSocket::bind("127.0.0.1:0").expect("bind")).expect("a");
        let b = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = a.local_addr().expect("addr");
        let mut batch = RecvBatch::new(8);
        for k in 1..=3u8 {
            b.send_to(&vec![k; usize::from(k)], to).expect("send");
        }
        // Longer than the batch's buffers: cut to their size (the engine's are one byte
        // longer than any datagram it takes, so it sees such a one as oversized).
        b.send_to(&[7; 20], to).expect("send");
        let mut got = Vec::new();
        while got.len() < 4 {
            let n = tokio::time::timeout(Duration::from_secs(5), a.recv_batch(&mut batch))
                .await
                .expect("in time")
                .expect("recv");
            for i in 0..n {
                let (from, data) = batch.get(i).expect("read");
                assert_eq!(from, b.local_addr().expect("b"));
                got.push(data.to_vec());
            }
            assert!(batch.get(n).is_none());
        }
        assert_eq!(got, vec![vec![1], vec![2, 2], vec![3, 3, 3], vec![7; 8]]);
        // The queue is empty and the socket marked so: a new datagram wakes the reader.
        b.send_to(&[9; 2], to).expect("send");
        let n = tokio::time::timeout(Duration::from_secs(5), a.recv_batch(&mut batch))
            .await
            .expect("a new datagram wakes the reader")
            .expect("recv");
        assert_eq!(n, 1);
        assert_eq!(batch.get(0).map(|(_, d)| d.to_vec()), Some(vec![9, 9]));
    }
}
