//! A tapping relay for the hostile tests: like [`super::Relay`], each client gets its own
//! upstream socket, but the tap also records what each client sends and can send datagrams
//! *from a client's own upstream socket*, so the server sees them arriving from that
//! client's address: replayed SRTP, replayed DTLS handshakes, spoofed junk.
//!
//! Owns: the relay tasks (dropping the tap aborts them) and the captures. Never: any
//! decision about what is hostile (tests choose what to send).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

/// The first datagrams of each client are kept (the ICE and DTLS handshake).
const KEEP_FIRST: usize = 64;
/// And the most recent ones.
const KEEP_LAST: usize = 1024;

/// One client seen on the front socket.
struct Client {
    addr: SocketAddr,
    up: Arc<UdpSocket>,
    first: Vec<Vec<u8>>,
    last: VecDeque<Vec<u8>>,
}

impl Client {
    fn record(&mut self, data: &[u8]) {
        if self.first.len() < KEEP_FIRST {
            self.first.push(data.to_vec());
        }
        if self.last.len() == KEEP_LAST {
            self.last.pop_front();
        }
        self.last.push_back(data.to_vec());
    }
}

#[derive(Default)]
struct Clients(Mutex<Vec<Client>>);

impl Clients {
    fn lock(&self) -> MutexGuard<'_, Vec<Client>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// RFC 7983 demultiplexing by first byte, as the server does it.
pub fn is_stun(d: &[u8]) -> bool {
    d.first().is_some_and(|b| *b < 4)
}

pub fn is_dtls(d: &[u8]) -> bool {
    d.first().is_some_and(|b| (20..=63).contains(b))
}

/// SRTCP: version 2 and an RTCP packet type (192..=223) in the second byte.
pub fn is_srtcp(d: &[u8]) -> bool {
    d.len() >= 8 && (128..=191).contains(&d[0]) && (192..=223).contains(&d[1])
}

/// SRTP: version 2 and not RTCP.
pub fn is_srtp(d: &[u8]) -> bool {
    d.len() >= 12 && (128..=191).contains(&d[0]) && !(192..=223).contains(&d[1])
}

/// A relay that records and can speak for its clients. Dropping it stops everything.
pub struct Tap {
    /// Where clients send (advertise this port from the server).
    pub addr: SocketAddr,
    front: Option<UdpSocket>,
    server: Option<SocketAddr>,
    clients: Arc<Clients>,
    tasks: JoinSet<()>,
}

impl Tap {
    /// Binds the client-facing socket; call [`Tap::forward_to`] once the server runs.
    pub async fn bind() -> std::io::Result<Tap> {
        let front = UdpSocket::bind("127.0.0.1:0").await?;
        Ok(Tap {
            addr: front.local_addr()?,
            front: Some(front),
            server: None,
            clients: Arc::default(),
            tasks: JoinSet::new(),
        })
    }

    /// Starts relaying between clients and `server` (the media socket).
    pub fn forward_to(&mut self, server: SocketAddr) {
        if let Some(front) = self.front.take() {
            self.server = Some(server);
            self.tasks
                .spawn(run(Arc::new(front), server, Arc::clone(&self.clients)));
        }
    }

    /// Client addresses in the order their first datagram arrived.
    pub fn clients(&self) -> Vec<SocketAddr> {
        self.clients.lock().iter().map(|c| c.addr).collect()
    }

    /// The first datagrams client `index` sent (up to 64) that match `keep`.
    pub fn first_sent(&self, index: usize, keep: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        self.clients
            .lock()
            .get(index)
            .map(|c| c.first.iter().filter(|d| keep(d)).cloned().collect())
            .unwrap_or_default()
    }

    /// The last `n` datagrams client `index` sent that match `keep`, oldest first.
    pub fn last_sent(&self, index: usize, n: usize, keep: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let clients = self.clients.lock();
        let Some(c) = clients.get(index) else {
            return Vec::new();
        };
        let mut picked: Vec<Vec<u8>> = c
            .last
            .iter()
            .rev()
            .filter(|d| keep(d))
            .take(n)
            .cloned()
            .collect();
        picked.reverse();
        picked
    }

    /// Sends `datagrams` to the server from client `index`'s upstream socket, in order.
    /// Returns how many were sent.
    pub async fn send_as(&self, index: usize, datagrams: &[Vec<u8>]) -> std::io::Result<usize> {
        let up = self
            .clients
            .lock()
            .get(index)
            .map(|c| Arc::clone(&c.up))
            .ok_or_else(|| std::io::Error::other(format!("no client #{index} yet")))?;
        let server = self
            .server
            .ok_or_else(|| std::io::Error::other("forward_to was not called"))?;
        let mut sent = 0;
        for d in datagrams {
            up.send_to(d, server).await?;
            sent += 1;
        }
        Ok(sent)
    }
}

async fn run(front: Arc<UdpSocket>, server: SocketAddr, clients: Arc<Clients>) {
    // Dropping the set (when this task is aborted) aborts the return paths too.
    let mut returns = JoinSet::new();
    let mut buf = vec![0u8; 65536];
    while let Ok((n, from)) = front.recv_from(&mut buf).await {
        let data = &buf[..n];
        let known = {
            let mut list = clients.lock();
            list.iter_mut().find(|c| c.addr == from).map(|c| {
                c.record(data);
                Arc::clone(&c.up)
            })
        };
        let up = match known {
            Some(up) => up,
            None => {
                let Ok(up) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                let up = Arc::new(up);
                let mut client = Client {
                    addr: from,
                    up: Arc::clone(&up),
                    first: Vec::new(),
                    last: VecDeque::new(),
                };
                client.record(data);
                clients.lock().push(client);
                let (front, back) = (Arc::clone(&front), Arc::clone(&up));
                returns.spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok((n, _)) = back.recv_from(&mut buf).await {
                        let _ = front.send_to(&buf[..n], from).await;
                    }
                });
                up
            }
        };
        let _ = up.send_to(data, server).await;
    }
}
