//! A user-space UDP relay that stands between WebRTC clients and the server, so tests can
//! drop, and cut, traffic (there is no `tc netem` here). The server advertises the relay's
//! address (`--public-port`); each client address gets its own upstream socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

/// Shared switches of a running relay.
#[derive(Default)]
struct Controls {
    cut: AtomicBool,
    /// Drop one datagram in this many (0: none), in both directions.
    drop_one_in: AtomicU32,
    counter: AtomicU32,
    /// Drop one datagram in this many (0: none) on the way from the server to clients.
    drop_toward_clients: AtomicU32,
    toward_clients: AtomicU32,
}

impl Controls {
    fn pass(&self) -> bool {
        if self.cut.load(Ordering::Relaxed) {
            return false;
        }
        let n = self.drop_one_in.load(Ordering::Relaxed);
        n == 0
            || !self
                .counter
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(n)
    }

    fn pass_toward_client(&self) -> bool {
        let n = self.drop_toward_clients.load(Ordering::Relaxed);
        self.pass()
            && (n == 0
                || !self
                    .toward_clients
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(n))
    }
}

/// A relay; dropping it stops it and every task it started.
pub struct Relay {
    /// Where clients send (advertise this port from the server).
    pub addr: SocketAddr,
    front: Option<UdpSocket>,
    controls: Arc<Controls>,
    tasks: JoinSet<()>,
}

impl Relay {
    /// Binds the client-facing socket; call [`Relay::forward_to`] once the server runs.
    pub async fn bind() -> std::io::Result<Relay> {
        let front = UdpSocket::bind("127.0.0.1:0").await?;
        Ok(Relay {
            addr: front.local_addr()?,
            front: Some(front),
            controls: Arc::new(Controls::default()),
            tasks: JoinSet::new(),
        })
    }

    /// Starts relaying between clients and `server` (the media socket).
    pub fn forward_to(&mut self, server: SocketAddr) {
        if let Some(front) = self.front.take() {
            self.tasks
                .spawn(run(Arc::new(front), server, self.controls.clone()));
        }
    }

    /// Stops forwarding anything (a client that vanished without a word).
    pub fn cut(&self) {
        self.controls.cut.store(true, Ordering::Relaxed);
    }

    /// Drops one datagram in `n` in each direction (0: none).
    pub fn drop_one_in(&self, n: u32) {
        self.controls.drop_one_in.store(n, Ordering::Relaxed);
    }

    /// Drops one datagram in `n` from the server to clients only (0: none).
    #[allow(dead_code)]
    pub fn drop_toward_clients(&self, n: u32) {
        self.controls
            .drop_toward_clients
            .store(n, Ordering::Relaxed);
    }
}

async fn run(front: Arc<UdpSocket>, server: SocketAddr, controls: Arc<Controls>) {
    let mut upstream: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    // Dropping the set (when this task is aborted) aborts the return paths too.
    let mut returns = JoinSet::new();
    let mut buf = vec![0u8; 2048];
    while let Ok((n, client)) = front.recv_from(&mut buf).await {
        let up = match upstream.get(&client) {
            Some(up) => up.clone(),
            None => {
                let Ok(up) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                let up = Arc::new(up);
                upstream.insert(client, up.clone());
                let (front, up2, controls) = (front.clone(), up.clone(), controls.clone());
                returns.spawn(async move {
                    let mut buf = vec![0u8; 2048];
                    while let Ok((n, _)) = up2.recv_from(&mut buf).await {
                        if controls.pass_toward_client() {
                            let _ = front.send_to(&buf[..n], client).await;
                        }
                    }
                });
                up
            }
        };
        if controls.pass() {
            let _ = up.send_to(&buf[..n], server).await;
        }
    }
}
