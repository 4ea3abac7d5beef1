//! A peer's way to the server on the media thread: its own UDP socket, or (a viewer with
//! `--tcp-share`) an ICE-TCP connection with its framing ([`TcpLink`]).

use crate::tcp::TcpLink;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};

/// What a peer talks to the server through.
pub enum Socket {
    /// Its own UDP socket ([`crate::net::bind_udp`]).
    Udp(UdpSocket),
    /// A connection to the server's passive ICE-TCP candidate ([`crate::tcp::connect`]).
    Tcp(TcpStream),
}

/// A peer's socket on the media thread.
pub(super) enum Link {
    /// A UDP socket.
    Udp(UdpSocket),
    /// An ICE-TCP connection.
    Tcp(TcpLink),
}

impl Link {
    /// Its file descriptor, for epoll.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Link::Udp(s) => s.as_fd(),
            Link::Tcp(l) => l.stream().as_fd(),
        }
    }

    /// Whether it is an ICE-TCP connection.
    pub(super) fn is_tcp(&self) -> bool {
        matches!(self, Link::Tcp(_))
    }

    /// Whether it is an ICE-TCP connection that ended.
    pub(super) fn is_closed(&self) -> bool {
        matches!(self, Link::Tcp(l) if l.is_closed())
    }

    /// Sends one packet (over TCP: queues it, framed, for [`TcpLink::flush`]); false if it
    /// could not be.
    pub(super) fn send(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        match self {
            Link::Udp(s) => s.send_to(data, to).is_ok(),
            // Everything goes to the one passive candidate the connection reached: the
            // offer has no other candidate to pair with.
            Link::Tcp(l) => l.queue(data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DownlinkPlan, Engine, Job, Snapshot};
    use super::*;
    use crate::net::realtime_ns;
    use crate::peer::{certificate, ClientPeer, PeerState, Role, Transport};
    use std::io::Write;
    use std::net::{IpAddr, TcpListener};
    use std::time::{Duration, Instant};

    /// Snapshots until `done` holds (or 5 s passed) and returns the last one.
    async fn until(engine: &Engine, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let start = Instant::now();
        loop {
            let snap = engine.snapshot(false).await;
            if done(&snap) || start.elapsed() > Duration::from_secs(5) {
                return snap;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_tcp_viewer_reads_frames_and_fails_when_the_server_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let stream = crate::tcp::connect(ip, listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let role = Role::Viewer {
            audio: 1,
            video: 1,
            feedback: false,
        };
        let cert = certificate().expect("cert");
        let local = SocketAddr::new(ip, 9);
        let (mut peer, _) =
            ClientPeer::new(&cert, role, Transport::Tcp, local, Instant::now()).expect("peer");
        peer.set_local_addr(stream.local_addr().expect("addr"));
        let engine = Engine::start(1, Duration::from_millis(1), 8).expect("engine");
        let job = Job::View {
            posted_ns: realtime_ns(),
            expects_video: true,
            count_layers: false,
            downlink: DownlinkPlan::default(),
        };
        engine.add(7, peer, Socket::Tcp(stream), job);
        // Three frames, the second split over two writes: three datagrams for the viewer.
        let mut bytes = Vec::new();
        for i in 0..3u8 {
            assert!(crate::tcp::frame_into(&mut bytes, &[i; 40]));
        }
        server.write_all(&bytes[..60]).expect("write");
        std::thread::sleep(Duration::from_millis(20));
        server.write_all(&bytes[60..]).expect("write");
        let snap = until(&engine, |s| {
            s.viewers.get(&7).is_some_and(|v| v.rx_datagrams == 3)
        })
        .await;
        let v = snap.viewers.get(&7).expect("the viewer");
        assert_eq!(v.rx_datagrams, 3);
        assert!(v.tcp && v.state == PeerState::Connecting);
        drop(server);
        let snap = until(&engine, |s| {
            s.viewers
                .get(&7)
                .is_some_and(|v| v.state == PeerState::Failed)
        })
        .await;
        assert_eq!(
            snap.viewers.get(&7).map(|v| v.state),
            Some(PeerState::Failed)
        );
        engine.stop();
    }
}
