//! Parley: a WHIP/WHEP selective forwarding unit with all media on one UDP port.
//!
//! [`start`] binds the HTTP listener and the media socket, starts the media engine and the
//! HTTP server, and returns a [`Server`] handle that reports its addresses and shuts down
//! cleanly. `main.rs` only parses the configuration and calls it; tests call it on port 0.
#![deny(unsafe_code)] // audited exceptions: engine::shard::batch (sendmmsg), engine::shard::socket (registration), engine::shard::steer (bpf)

pub mod cluster;
pub mod config;
pub mod engine;
pub mod forward;
pub mod http;
pub mod ice_tcp;
pub mod metrics;
#[cfg(target_os = "linux")]
pub mod process_metrics;
pub mod transport;

use config::Config;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A socket could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which socket.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The WebRTC transport could not be set up.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    /// A setting cannot be used as given.
    #[error("{0}")]
    Config(String),
}

/// A running server.
pub struct Server {
    /// Where HTTP is served.
    pub http_addr: SocketAddr,
    /// The media socket's address.
    pub media_addr: SocketAddr,
    /// Where `/metrics` is served when `--metrics-listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// Where ICE over TCP is served, unless `--ice-tcp-listen off`.
    pub ice_tcp_addr: Option<SocketAddr>,
    /// Addresses advertised in ICE candidates.
    pub advertised: Vec<IpAddr>,
    /// The cluster layer, with `--redis-url`.
    pub cluster: Option<cluster::Cluster>,
    engine: engine::EngineHandle,
    draining: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// `http://ADDR` of the HTTP server.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.engine.registry.len()
    }

    /// How many media shards serve, and why the kernel does not steer clients to them (when
    /// it does not).
    pub fn shards(&self) -> (usize, Option<&str>) {
        (self.engine.shards(), self.engine.unsteered.as_deref())
    }

    /// Graceful drain: new sessions are refused with 503 + Retry-After while live ones go on,
    /// until they have all ended or `timeout` passed; then [`Server::shutdown`].
    pub async fn drain(self, timeout: std::time::Duration) {
        self.draining.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut check = tokio::time::interval(std::time::Duration::from_millis(100));
        while self.session_count() > 0 && tokio::time::Instant::now() < deadline {
            check.tick().await;
        }
        self.shutdown().await;
    }

    /// Whether the server is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Stops accepting requests, ends every session (as DELETE would) and waits for every
    /// task to finish.
    pub async fn shutdown(self) {
        self.engine.shutdown().await;
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Socket buffers of the media socket: a burst (a keyframe fanned out to hundreds of viewers,
/// or many publishers at once) must not overflow the kernel's default ~200 KB while the engine
/// is busy. The kernel caps the request at `net.core.{r,w}mem_max`.
const MEDIA_SOCKET_BUFFER: usize = 8 * 1024 * 1024;

/// Binds `count` non-blocking media sockets with large buffers on one address, in one
/// `SO_REUSEPORT` group (one per shard; the kernel spreads clients over them by a hash of
/// their addresses). The group is complete before any datagram is read and never changes:
/// a socket added or closed later would move most clients to another socket.
fn media_sockets(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    if addr.port() != 0 {
        // The group admits any socket of this user that asks: refuse a port some other
        // socket holds, as a plain bind would.
        drop(std::net::UdpSocket::bind(addr)?);
    }
    let mut bound = addr;
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        let _ = socket.set_recv_buffer_size(MEDIA_SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(MEDIA_SOCKET_BUFFER);
        socket.set_nonblocking(true)?;
        if count > 1 {
            socket.set_reuse_port(true)?;
        }
        socket.bind(&bound.into())?;
        let socket: std::net::UdpSocket = socket.into();
        // Port 0 picks a port once; the other sockets join it there.
        bound = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// The addresses to put in host candidates.
fn advertised_ips(config: &Config, media_addr: SocketAddr) -> Vec<IpAddr> {
    if !config.public_ip.is_empty() {
        return config.public_ip.clone();
    }
    if !media_addr.ip().is_unspecified() {
        return vec![media_addr.ip()];
    }
    let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    // The address of the default route, found without sending anything.
    if let Ok(probe) = std::net::UdpSocket::bind("0.0.0.0:0") {
        if probe.connect("192.0.2.1:9").is_ok() {
            if let Ok(local) = probe.local_addr() {
                if !local.ip().is_unspecified() && !local.ip().is_loopback() {
                    ips.push(local.ip());
                }
            }
        }
    }
    ips
}

/// Binds both sockets and starts serving.
pub async fn start(config: Config) -> Result<Server, StartError> {
    let turn = config.turn().map_err(StartError::Config)?;
    let listener = TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| StartError::Bind {
            what: "the HTTP listener",
            addr: config.http_listen,
            source,
        })?;
    let sockets = media_sockets(config.media_listen, config.shard_count()).map_err(|source| {
        StartError::Bind {
            what: "the media socket",
            addr: config.media_listen,
            source,
        }
    })?;
    let bind_err = |what, addr| move |source| StartError::Bind { what, addr, source };
    let http_addr = listener
        .local_addr()
        .map_err(bind_err("the HTTP listener", config.http_listen))?;
    let media_addr = sockets[0]
        .local_addr()
        .map_err(bind_err("the media socket", config.media_listen))?;
    let advertised = advertised_ips(&config, media_addr);
    let ice_tcp_addr = config
        .ice_tcp_addr(media_addr)
        .map_err(StartError::Config)?;
    let ice_tcp = match ice_tcp_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(bind_err("the ICE-TCP listener", addr))?,
        ),
        None => None,
    };
    let ice_tcp_addr = match &ice_tcp {
        Some(l) => Some(
            l.local_addr()
                .map_err(bind_err("the ICE-TCP listener", media_addr))?,
        ),
        None => None,
    };
    let mut ctx = transport::TransportContext::new(
        media_addr,
        advertised.clone(),
        config.public_port,
        config.consent_timeout(),
    )?;
    ctx.tcp_port = ice_tcp_addr.map(|a| a.port());
    let metrics = Arc::new(metrics::Metrics::new());
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(bind_err("the metrics listener", addr))?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let (engine, engine_task) = engine::spawn(
        ctx,
        engine::EngineConfig {
            connect_timeout: config.connect_timeout(),
            max_participants_per_room: config.max_participants_per_room,
            send_threads: match config.send_threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            downlink: config.downlink(),
            probe: config.probe,
            spread_after: config.spread_after,
        },
        metrics.clone(),
        sockets,
    )
    .await
    .map_err(|source| StartError::Bind {
        what: "the media socket",
        addr: media_addr,
        source,
    })?;
    let draining = Arc::new(AtomicBool::new(false));
    let media_public = SocketAddr::new(
        advertised.first().copied().unwrap_or(media_addr.ip()),
        config.public_port.unwrap_or(media_addr.port()),
    );
    let cluster = match config
        .cluster(
            http_addr,
            advertised.first().copied(),
            media_public.to_string(),
        )
        .map_err(StartError::Config)?
    {
        Some(c) => Some(
            cluster::Cluster::new(c, metrics.registry())
                .map_err(|e| StartError::Config(e.to_string()))?,
        ),
        None => None,
    };
    if let Some(c) = &cluster {
        // Registered before the first request, when Redis answers; else the heartbeat
        // keeps trying while this node serves on its own.
        c.beat(cluster::Load::default(), false, &[], &[]).await;
    }
    let state = http::AppState {
        engine: engine.clone(),
        config: Arc::new(config),
        metrics,
        turn: Arc::new(turn),
        draining: draining.clone(),
        limiter: Arc::new(http::RateLimiter::default()),
        cluster: cluster.clone(),
    };
    let (stop, stopped) = watch::channel(false);
    let mut tasks = vec![engine_task];
    if let Some(c) = &cluster {
        tasks.push(tokio::spawn(c.clone().run(
            engine.clone(),
            draining.clone(),
            stopped.clone(),
        )));
    }
    if let Some(listener) = ice_tcp {
        tasks.push(tokio::spawn(ice_tcp::serve(
            listener,
            engine.clone(),
            state.metrics.clone(),
            state.config.ice_tcp_max_connections,
            stopped.clone(),
        )));
    }
    let header_timeout = std::time::Duration::from_secs(state.config.request_timeout_secs.max(1));
    let app = http::router(state.clone());
    tasks.push(tokio::spawn(http::serve(
        listener,
        app,
        header_timeout,
        stopped.clone(),
    )));
    if let Some(listener) = metrics_listener {
        let app = http::metrics_router(state);
        tasks.push(tokio::spawn(http::serve(
            listener,
            app,
            header_timeout,
            stopped,
        )));
    }
    Ok(Server {
        http_addr,
        media_addr,
        metrics_addr,
        ice_tcp_addr,
        advertised,
        cluster,
        engine,
        draining,
        stop,
        tasks,
    })
}
