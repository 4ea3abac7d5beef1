//! Several Parley nodes serving one set of rooms through Redis (`--redis-url`).
//!
//! Each node registers itself (its URL, media address and load) every [`HEARTBEAT`] with a
//! time-to-live, so a node that stops is forgotten within [`store::NODE_TTL`]. A room lives
//! on one node: the first request for it claims it, atomically, for the least-loaded live
//! node ([`node::choose`]); the owner renews the claim while the room has sessions there.
//! A request that reaches another node is passed to the owner (`crate::http::cluster`).
//!
//! Redis is never on the packet path, and never a reason to refuse a call: while it does not
//! answer, the node serves every request itself (rooms it cannot locate are opened here: a
//! split room is better than no call), `parley_cluster_up` is 0, and once it answers again
//! the node registers and takes back the claims of the rooms it kept serving.

pub mod cascade;
mod metrics;
pub mod node;
pub mod store;

pub use metrics::ClusterMetrics;
pub use node::{Load, NodeRecord};

use crate::engine::EngineHandle;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::Store;
use tokio::sync::watch;

/// How often a node writes its record, reads the others' and renews its claims.
pub const HEARTBEAT: Duration = Duration::from_millis(1000);
/// How long one Redis command may take before the node treats Redis as unreachable.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// The header a node puts on a request it passes to a room's owner: the owner serves it
/// without placing it again.
pub const FORWARDED: &str = "x-parley-forwarded";
/// The header on a node's upstream WHEP request of a cascade, with the admin token (any
/// value in a cluster without one): the owner pins each of its video slots to a layer and
/// asks for keyframes on its behalf as for a joining viewer.
pub const CASCADE: &str = "x-parley-cascade";
/// The client address the passing node saw, for the owner's per-IP request limit.
pub const FORWARDED_FOR: &str = "x-parley-forwarded-for";

/// How a request for a room on another node is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Signaling {
    /// This node sends the request to the owner and returns its answer (works for browsers,
    /// which drop `Authorization` on a cross-origin redirect).
    Proxy,
    /// `307 Temporary Redirect` to the owner (OBS and GStreamer follow it with their token).
    Redirect,
}

/// What the cluster layer needs to know at start.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Redis URL (`redis://host:port/db`).
    pub redis_url: String,
    /// This node's id.
    pub node_id: String,
    /// This node's public HTTP base URL, without a trailing slash.
    pub advertise_url: String,
    /// This node's media address, as its candidates name it.
    pub media: String,
    /// Proxy or redirect.
    pub signaling: Signaling,
    /// This node keeps new rooms while it has fewer sessions than this.
    pub local_below: u64,
    /// WHEP viewers of a broadcast held by a node with at least this many sessions are
    /// served by the node they reach, from a cascade.
    pub cascade_above: u64,
    /// The play token, for the sessions this node opens on other nodes.
    pub play_token: Option<String>,
    /// The admin token, for the room API of other nodes.
    pub admin_token: Option<String>,
}

/// Where a room lives.
#[derive(Debug, Clone, PartialEq)]
pub enum Owner {
    /// On this node.
    Here,
    /// On another live node.
    There(NodeRecord),
}

/// The cluster layer of one node.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterConfig,
    store: Store,
    up: AtomicBool,
    /// This node's record as last written, with the load placed on it since.
    me: Mutex<NodeRecord>,
    /// The other live nodes as last read, with the load placed on them since.
    others: Mutex<Vec<NodeRecord>>,
    metrics: ClusterMetrics,
    http: reqwest::Client,
    /// Rooms played here from other nodes.
    cascades: cascade::Cascades,
    /// The addresses the other nodes' URLs name, by URL (resolved once per URL).
    addresses: Mutex<std::collections::HashMap<String, Vec<std::net::IpAddr>>>,
}

/// Why the cluster layer could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("--redis-url {url}: {source}")]
pub struct ClusterError {
    url: String,
    source: redis::RedisError,
}

impl Cluster {
    /// The cluster layer for `config`; it connects to Redis on first use.
    pub fn new(
        config: ClusterConfig,
        registry: &prometheus::Registry,
    ) -> Result<Self, ClusterError> {
        let store =
            Store::new(&config.redis_url, REDIS_TIMEOUT).map_err(|source| ClusterError {
                url: config.redis_url.clone(),
                source,
            })?;
        let me = NodeRecord {
            id: config.node_id.clone(),
            url: config.advertise_url.clone(),
            media: config.media.clone(),
            load: Load::default(),
            draining: false,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Ok(Cluster {
            inner: Arc::new(Inner {
                config,
                store,
                up: AtomicBool::new(false),
                me: Mutex::new(me),
                others: Mutex::new(Vec::new()),
                metrics: ClusterMetrics::new(registry),
                http,
                cascades: Default::default(),
                addresses: Default::default(),
            }),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.config.node_id
    }

    /// This node's public HTTP base URL.
    pub fn url(&self) -> &str {
        &self.inner.config.advertise_url
    }

    /// Proxy or redirect.
    pub fn signaling(&self) -> Signaling {
        self.inner.config.signaling
    }

    /// Whether Redis answered at the last heartbeat.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// The metrics handles.
    pub fn metrics(&self) -> &ClusterMetrics {
        &self.inner.metrics
    }

    /// The HTTP client that passes requests to other nodes (no redirects followed).
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The IP addresses of the other live nodes, as their URLs name them (a host name
    /// resolved when the node was first seen): a request from one of them comes from the
    /// cluster.
    pub fn node_addresses(&self) -> Vec<std::net::IpAddr> {
        lock(&self.inner.addresses)
            .values()
            .flatten()
            .copied()
            .collect()
    }

    /// Resolves the URLs of nodes not seen before, and forgets those of nodes gone.
    async fn resolve_nodes(&self) {
        let urls: Vec<String> = lock(&self.inner.others)
            .iter()
            .map(|n| n.url.clone())
            .collect();
        lock(&self.inner.addresses).retain(|url, _| urls.contains(url));
        for url in urls {
            if lock(&self.inner.addresses).contains_key(&url) {
                continue;
            }
            let ips = node::addresses_of(&url).await;
            lock(&self.inner.addresses).insert(url, ips);
        }
    }

    /// Every live node as last seen, this one first.
    pub fn nodes(&self) -> Vec<NodeRecord> {
        let mut all = vec![lock(&self.inner.me).clone()];
        all.extend(lock(&self.inner.others).iter().cloned());
        all
    }

    /// Where `room` lives, placing it if nobody holds it. While Redis does not answer, here.
    pub async fn locate(&self, room: &str) -> Owner {
        if !self.is_up() {
            return Owner::Here;
        }
        let candidate = {
            let me = lock(&self.inner.me);
            let others = lock(&self.inner.others);
            node::choose(&others, &me, self.inner.config.local_below)
                .map_or_else(|| me.id.clone(), |n| n.id.clone())
        };
        let owner = match self.inner.store.claim(room, &candidate).await {
            Ok(owner) => owner,
            Err(e) => {
                self.redis_failed(&e);
                return Owner::Here;
            }
        };
        // Until the next heartbeat shows it, count the new session where it goes, so that a
        // burst of new rooms spreads.
        self.placed_on(&owner);
        if owner == self.inner.config.node_id {
            return Owner::Here;
        }
        let known = lock(&self.inner.others)
            .iter()
            .find(|n| n.id == owner)
            .cloned();
        match known {
            Some(n) => Owner::There(n),
            None => match self.inner.store.node(&owner).await {
                Ok(Some(n)) => Owner::There(n),
                // The claim's node vanished between the two reads: serve here.
                Ok(None) => Owner::Here,
                Err(e) => {
                    self.redis_failed(&e);
                    Owner::Here
                }
            },
        }
    }

    fn placed_on(&self, id: &str) {
        if id == self.inner.config.node_id {
            lock(&self.inner.me).load.sessions += 1;
        } else if let Some(n) = lock(&self.inner.others).iter_mut().find(|n| n.id == id) {
            n.load.sessions += 1;
        }
    }

    fn redis_failed(&self, e: &redis::RedisError) {
        self.inner.metrics.redis_errors.inc();
        if self.inner.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "cluster: Redis does not answer ({e}); serving every request on this node"
            );
        }
        self.inner.metrics.up.set(0);
    }

    /// One heartbeat: write this node's record with `load`, read the others', renew the
    /// claims of `rooms` (the rooms with sessions here) and release those of `ended`.
    pub async fn beat(&self, load: Load, draining: bool, rooms: &[String], ended: &[String]) {
        let me = {
            let mut me = lock(&self.inner.me);
            me.load = load;
            me.draining = draining;
            me.clone()
        };
        let store = &self.inner.store;
        let result = async {
            store.register(&me).await?;
            let lost = store.renew(&me.id, rooms).await?;
            store.release(&me.id, ended).await?;
            let nodes = store.nodes().await?;
            Ok::<_, redis::RedisError>((lost, nodes))
        }
        .await;
        match result {
            Ok((lost, nodes)) => {
                if !self.inner.up.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        "cluster: registered as {} ({} live nodes, {} rooms held here)",
                        me.id,
                        nodes.len().max(1),
                        rooms.len() - lost.len()
                    );
                }
                if !lost.is_empty() {
                    tracing::warn!(
                        "cluster: {} rooms served here are held by other nodes (opened on \
                         both while Redis was away): {}",
                        lost.len(),
                        lost.join(", ")
                    );
                }
                let others: Vec<NodeRecord> = nodes.into_iter().filter(|n| n.id != me.id).collect();
                let m = &self.inner.metrics;
                m.up.set(1);
                m.nodes.set(others.len() as i64 + 1);
                m.rooms_owned.set((rooms.len() - lost.len()) as i64);
                *lock(&self.inner.others) = others;
            }
            Err(e) => self.redis_failed(&e),
        }
    }

    /// Leaves the cluster: removes this node's record and releases `rooms`.
    pub async fn leave(&self, rooms: &[String]) {
        let store = &self.inner.store;
        let _ = store.release(self.node_id(), rooms).await;
        let _ = store.deregister(self.node_id()).await;
    }

    /// Runs the heartbeat until `stop`, then leaves the cluster.
    pub async fn run(
        self,
        engine: EngineHandle,
        draining: Arc<AtomicBool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut held: BTreeSet<String> = BTreeSet::new();
        let mut cpu = CpuMeter::default();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            self.tend_cascades(&engine).await;
            let mut rooms = local_rooms(&engine);
            // Rooms played from other nodes are theirs to claim.
            for (room, _) in self.cascades() {
                rooms.remove(&room);
            }
            let ended: Vec<String> = held.difference(&rooms).cloned().collect();
            let load = Load {
                sessions: engine.registry.len() as u64,
                rooms: rooms.len() as u64,
                packets_per_second: engine.placement.packets_per_second(),
                cpu: cpu.cores(),
            };
            let list: Vec<String> = rooms.iter().cloned().collect();
            self.beat(load, draining.load(Ordering::Relaxed), &list, &ended)
                .await;
            self.resolve_nodes().await;
            held = rooms;
        }
        self.end_cascades().await;
        let list: Vec<String> = held.into_iter().collect();
        self.leave(&list).await;
    }
}

/// The rooms with a session on this node.
fn local_rooms(engine: &EngineHandle) -> BTreeSet<String> {
    engine
        .registry
        .iter()
        .map(|s| s.value().room.clone())
        .collect()
}

/// CPU in use by this process between two reads, in cores.
#[derive(Default)]
struct CpuMeter {
    last: Option<(Instant, f64)>,
}

impl CpuMeter {
    fn cores(&mut self) -> f64 {
        #[cfg(target_os = "linux")]
        let secs = crate::process_metrics::read_stat().map(|s| s.cpu_secs);
        #[cfg(not(target_os = "linux"))]
        let secs: Option<f64> = None;
        let Some(secs) = secs else { return 0.0 };
        let now = Instant::now();
        let cores = match self.last {
            Some((then, before)) => {
                let wall = now.duration_since(then).as_secs_f64();
                if wall > 0.0 {
                    ((secs - before) / wall).max(0.0)
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((now, secs));
        (cores * 100.0).round() / 100.0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
