//! UDP sockets for the generator: one per client peer, non-blocking, with kernel receive
//! timestamps (`SO_TIMESTAMPNS`) and the socket's drop counter (`SO_RXQ_OVFL`), read in
//! batches with `recvmmsg`.
//!
//! Kernel timestamps make delay measurements independent of when the generator gets round
//! to reading a socket, so the media thread can batch its reads (and stay cheap) without
//! adding its own latency to the results.

use anyhow::{Context, Result};
use nix::sys::socket::{
    recvmmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage,
};
use nix::sys::time::TimeSpec;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{SystemTime, UNIX_EPOCH};

/// CLOCK_REALTIME now, in nanoseconds since the Unix epoch (the clock of packet stamps and
/// of kernel receive timestamps).
pub fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Binds a non-blocking UDP socket on `ip` (any port) with timestamps, drop counting and a
/// receive buffer of `rcvbuf` bytes (forced past `rmem_max` when privileged).
pub fn bind_udp(ip: IpAddr, rcvbuf: usize) -> Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).with_context(|| format!("bind {ip}:0"))?;
    socket.set_nonblocking(true)?;
    if setsockopt(&socket, sockopt::RcvBufForce, &rcvbuf).is_err() {
        setsockopt(&socket, sockopt::RcvBuf, &rcvbuf).context("SO_RCVBUF")?;
    }
    setsockopt(&socket, sockopt::ReceiveTimestampns, &true).context("SO_TIMESTAMPNS")?;
    setsockopt(&socket, sockopt::RxqOvfl, &1).context("SO_RXQ_OVFL")?;
    Ok(socket)
}

/// Most datagrams one `recvmmsg` call returns.
pub const BATCH: usize = 32;
/// Receive buffer per datagram.
const DATAGRAM: usize = 2048;

/// One received datagram.
pub struct Datagram<'a> {
    /// Sender.
    pub from: SocketAddr,
    /// Contents.
    pub data: &'a [u8],
    /// Kernel receive time (CLOCK_REALTIME ns), or the read time if the kernel gave none.
    pub arrival_ns: u64,
}

/// Reusable buffers for batched receives.
pub struct Receiver {
    bufs: Vec<Vec<u8>>,
    headers: MultiHeaders<SockaddrStorage>,
}

impl Default for Receiver {
    fn default() -> Self {
        let cmsg = nix::cmsg_space!(TimeSpec, u32);
        Receiver {
            bufs: vec![vec![0u8; DATAGRAM]; BATCH],
            headers: MultiHeaders::preallocate(BATCH, Some(cmsg)),
        }
    }
}

/// What one batched read saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct BatchInfo {
    /// Datagrams read.
    pub count: usize,
    /// The socket's cumulative kernel drop counter, if reported.
    pub drops: Option<u32>,
}

impl Receiver {
    /// Reads up to [`BATCH`] datagrams without blocking and hands each to `on`. Returns how
    /// many were read (0 when the socket is empty).
    pub fn recv_batch(
        &mut self,
        socket: &UdpSocket,
        mut on: impl FnMut(Datagram<'_>),
    ) -> std::io::Result<BatchInfo> {
        let mut info = BatchInfo::default();
        let mut meta = Vec::with_capacity(BATCH);
        {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
                .bufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            let results = match recvmmsg(
                socket.as_raw_fd(),
                &mut self.headers,
                iovs.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(r) => r,
                Err(nix::errno::Errno::EAGAIN) => return Ok(BatchInfo::default()),
                Err(e) => return Err(e.into()),
            };
            for msg in results {
                let mut arrival_ns = None;
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        match c {
                            ControlMessageOwned::ScmTimestampns(ts) => {
                                arrival_ns =
                                    Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
                            }
                            ControlMessageOwned::RxqOvfl(d) => info.drops = Some(d),
                            _ => {}
                        }
                    }
                }
                let from = msg.address.and_then(|a| {
                    a.as_sockaddr_in()
                        .map(|v4| SocketAddr::from(*v4))
                        .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6)))
                });
                meta.push((msg.bytes, from, arrival_ns));
            }
        }
        let fallback = realtime_ns();
        for (i, (len, from, arrival)) in meta.into_iter().enumerate() {
            info.count += 1;
            let Some(from) = from else { continue };
            on(Datagram {
                from,
                data: &self.bufs[i][..len.min(DATAGRAM)],
                arrival_ns: arrival.unwrap_or(fallback),
            });
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_receive_with_kernel_timestamps() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let rx = bind_udp(ip, 1 << 20).expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let before = realtime_ns();
        for i in 0..5u8 {
            tx.send_to(&[i; 100], rx.local_addr().expect("addr"))
                .expect("send");
        }
        let mut r = Receiver::default();
        let mut seen = Vec::new();
        let info = r
            .recv_batch(&rx, |d| {
                assert_eq!(d.from, tx.local_addr().expect("addr"));
                assert!(d.arrival_ns >= before && d.arrival_ns <= realtime_ns());
                seen.push(d.data[0]);
            })
            .expect("recv");
        assert_eq!(info.count, 5);
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert_eq!(r.recv_batch(&rx, |_| {}).expect("empty").count, 0);
    }
}
