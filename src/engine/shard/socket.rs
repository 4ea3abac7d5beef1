//! The media socket as the engine holds it: registered with the reactor for reading only.
//!
//! Sends never wait for the socket: a full send buffer drops that datagram (counted), as on
//! any congested path. Registered for writes as well, the socket would turn writable each
//! time the kernel finished sending a batch, and every such edge would wake an idle runtime
//! thread for nothing: thousands of futile wake-ups a second under load, paid by the
//! forwarding thread. Read-only registration leaves the kernel nobody to wake.

use std::io;
use std::net::{SocketAddr, UdpSocket};
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
}
