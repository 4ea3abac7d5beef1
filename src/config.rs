//! Server configuration: one `Config` struct filled from command-line flags and `PARLEY_*`
//! environment variables, with defaults that let `cargo run --release` serve at once.
//!
//! This module only describes and validates settings; it never opens a socket.

use clap::Parser;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Everything the server can be told at start-up.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "parley",
    version,
    about = "Parley: a WHIP/WHEP selective forwarding unit"
)]
pub struct Config {
    /// Address of the HTTP server (WHIP, WHEP, API).
    #[arg(long, env = "PARLEY_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: SocketAddr,

    /// Address of the single UDP socket that carries all media (ICE, DTLS, SRTP).
    #[arg(long, env = "PARLEY_MEDIA_LISTEN", default_value = "0.0.0.0:8189")]
    pub media_listen: SocketAddr,

    /// ICE over TCP, passive, for clients whose networks block UDP: `off`, or the TCP address
    /// to listen on. Default: TCP on the media address and port number (any free port when
    /// the media port is 0).
    #[arg(long, env = "PARLEY_ICE_TCP_LISTEN", default_value = "")]
    pub ice_tcp_listen: String,

    /// Most ICE-TCP connections open at once (further ones are closed at once).
    #[arg(long, env = "PARLEY_ICE_TCP_MAX_CONNECTIONS", default_value_t = 1000)]
    pub ice_tcp_max_connections: usize,

    /// Serve `GET /metrics` on this separate address (e.g. an internal interface) instead of
    /// on the HTTP port.
    #[arg(long, env = "PARLEY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Address(es) advertised in ICE candidates, for NAT and containers. Repeat the flag or
    /// separate with commas. Default: the media address when it is specific, else this host's
    /// loopback and primary addresses.
    #[arg(long, env = "PARLEY_PUBLIC_IP", value_delimiter = ',')]
    pub public_ip: Vec<IpAddr>,

    /// UDP port advertised in ICE candidates, when a port mapping (NAT, container) puts the
    /// media socket behind another port. Default: the media socket's own port.
    #[arg(long, env = "PARLEY_PUBLIC_PORT")]
    pub public_port: Option<u16>,

    /// Bearer token required to publish (WHIP). Unset: publishing is open.
    #[arg(long, env = "PARLEY_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,

    /// Bearer token required to play (WHEP). Unset: playing is open.
    #[arg(long, env = "PARLEY_PLAY_TOKEN", hide_env_values = true)]
    pub play_token: Option<String>,

    /// Bearer token required by the room API (`/rooms`). Unset: the room API is open.
    #[arg(long, env = "PARLEY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// ICE server URL announced to clients in `Link: rel="ice-server"` headers
    /// (e.g. `stun:stun.example.org:3478`). Repeat or separate with commas.
    #[arg(long, env = "PARLEY_ICE_SERVER", value_delimiter = ',')]
    pub ice_server: Vec<String>,

    /// TURN server URL (`turn:host:3478?transport=udp`, `turns:host:443?transport=tcp`)
    /// sent to clients with a time-limited credential (coturn's REST scheme). Repeat or
    /// separate with commas. Needs `--turn-secret` or `--turn-secret-file`.
    #[arg(long, env = "PARLEY_TURN_URL", value_delimiter = ',')]
    pub turn_url: Vec<String>,

    /// The secret shared with the TURN server (coturn's `static-auth-secret`).
    #[arg(long, env = "PARLEY_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,

    /// A file holding the TURN secret (its surrounding whitespace is ignored).
    #[arg(long, env = "PARLEY_TURN_SECRET_FILE")]
    pub turn_secret_file: Option<std::path::PathBuf>,

    /// How long a minted TURN credential stays valid, in seconds.
    #[arg(long, env = "PARLEY_TURN_TTL", default_value_t = 86_400)]
    pub turn_ttl: u64,

    /// Maximum number of concurrent sessions (WHIP + WHEP); beyond it POST answers 503.
    #[arg(long, env = "PARLEY_MAX_SESSIONS", default_value_t = 2000)]
    pub max_sessions: usize,

    /// Maximum number of participants (distinct names with a session) in one room; beyond it
    /// POST answers 403.
    #[arg(long, env = "PARLEY_MAX_PARTICIPANTS_PER_ROOM", default_value_t = 500)]
    pub max_participants_per_room: usize,

    /// Media shards: engines on threads of their own, each with its own socket on the media
    /// port, each serving the rooms placed on it; 0 means one per CPU core (at most 256).
    #[arg(long, env = "PARLEY_SHARDS", default_value_t = 0)]
    pub shards: usize,

    /// A room's sessions on its home shard before its further viewers are served by the
    /// least-loaded shard, with the room's packets relayed there once per packet (a broadcast
    /// larger than one core).
    #[arg(long, env = "PARLEY_SPREAD_AFTER", default_value_t = crate::engine::placement::SPREAD_AFTER)]
    pub spread_after: usize,

    /// Threads that hand forwarded media to the kernel (the shards seal the copies and these
    /// send them, each for its share of the viewers), shared out over the shards with at
    /// least one each; 0 means one per CPU core.
    #[arg(long, env = "PARLEY_SEND_THREADS", default_value_t = 0)]
    pub send_threads: usize,

    /// Largest accepted HTTP request body (SDP offer or fragment), in bytes.
    #[arg(long, env = "PARLEY_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Seconds a session may stay without ICE consent before it is closed.
    #[arg(long, env = "PARLEY_CONSENT_TIMEOUT_SECS", default_value_t = 30)]
    pub consent_timeout_secs: u64,

    /// On SIGTERM, seconds to keep live sessions while new ones are refused (503) before
    /// ending them and exiting.
    #[arg(long, env = "PARLEY_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    pub drain_timeout_secs: u64,

    /// Most POST/PATCH/DELETE requests per second from one client IP (burst: twice that);
    /// beyond it the answer is 429 with Retry-After. 0 disables the limit.
    #[arg(long, env = "PARLEY_RATE_LIMIT_PER_IP", default_value_t = 20)]
    pub rate_limit_per_ip: u32,

    /// Seconds a client may take to send a request's headers and body before the server gives
    /// up on it (slow clients).
    #[arg(long, env = "PARLEY_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,

    /// Seconds a new session may take to connect (ICE + DTLS) before it is closed.
    #[arg(long, env = "PARLEY_CONNECT_TIMEOUT_SECS", default_value_t = 15)]
    pub connect_timeout_secs: u64,

    /// Estimate each viewer's downlink and choose its layers, pauses and probes by it
    /// (`false`: every slot gets what its limits allow, whatever the link carries).
    #[arg(long, env = "PARLEY_BWE", default_value_t = true, action = clap::ArgAction::Set)]
    pub bwe: bool,

    /// A viewer's downlink estimate until its first feedback, in kbit/s.
    #[arg(long, env = "PARLEY_BWE_INITIAL_KBPS", default_value_t = 1000)]
    pub bwe_initial_kbps: u64,

    /// The lowest a downlink estimate goes, in kbit/s.
    #[arg(long, env = "PARLEY_BWE_MIN_KBPS", default_value_t = 100)]
    pub bwe_min_kbps: u64,

    /// The highest a downlink estimate goes, in kbit/s.
    #[arg(long, env = "PARLEY_BWE_MAX_KBPS", default_value_t = 20_000)]
    pub bwe_max_kbps: u64,

    /// Send padding to prove a viewer's link carries the next layer before switching up
    /// (`false`: estimates grow only with the media sent).
    #[arg(long, env = "PARLEY_PROBE", default_value_t = true, action = clap::ArgAction::Set)]
    pub probe: bool,

    /// Redis of a cluster (`redis://host:6379`): the nodes given the same Redis serve one set
    /// of rooms, each room on one node. Unset: this node serves alone.
    #[arg(long, env = "PARLEY_REDIS_URL")]
    pub redis_url: Option<String>,

    /// This node's id in the cluster (letters, digits, `-`, `_`, `.`). Default: random.
    #[arg(long, env = "PARLEY_NODE_ID")]
    pub node_id: Option<String>,

    /// This node's HTTP base URL as other nodes and redirected clients reach it (e.g.
    /// `http://10.0.0.5:8080`). Default: `http://` and the HTTP address (the first advertised
    /// IP when it listens on every address).
    #[arg(long, env = "PARLEY_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// How a WHIP/WHEP request for a room on another node is answered: `proxy` (this node
    /// passes it on and returns the answer) or `redirect` (307 to the room's node).
    #[arg(
        long,
        env = "PARLEY_CLUSTER_SIGNALING",
        value_enum,
        default_value = "proxy"
    )]
    pub cluster_signaling: crate::cluster::Signaling,

    /// A node keeps the new rooms it is asked for while it has fewer sessions than this; past
    /// it (and always, at 0) a new room goes to the least-loaded node.
    #[arg(long, env = "PARLEY_CLUSTER_LOCAL_SESSIONS", default_value_t = 0)]
    pub cluster_local_sessions: u64,

    /// A WHEP viewer that reaches this node for a broadcast (a room with at most one
    /// publisher) held by a node with at least this many sessions is served here, from one
    /// copy of the room this node plays from the owner (a cascade); 0: always.
    #[arg(long, env = "PARLEY_CLUSTER_CASCADE_SESSIONS", default_value_t = 500)]
    pub cluster_cascade_sessions: u64,
}

impl Config {
    /// A configuration for tests and embedding: loopback on ephemeral ports, no tokens, two
    /// media shards whatever the machine (so the hand-off between shards is always in play).
    pub fn loopback() -> Self {
        Self {
            http_listen: "127.0.0.1:0".parse().expect("static address"),
            media_listen: "127.0.0.1:0".parse().expect("static address"),
            metrics_listen: None,
            ice_tcp_listen: String::new(),
            ice_tcp_max_connections: 1000,
            public_ip: Vec::new(),
            public_port: None,
            publish_token: None,
            play_token: None,
            admin_token: None,
            ice_server: Vec::new(),
            turn_url: Vec::new(),
            turn_secret: None,
            turn_secret_file: None,
            turn_ttl: 86_400,
            max_sessions: 2000,
            max_participants_per_room: 500,
            shards: 2,
            spread_after: crate::engine::placement::SPREAD_AFTER,
            send_threads: 0,
            max_body_bytes: 64 * 1024,
            consent_timeout_secs: 30,
            connect_timeout_secs: 15,
            drain_timeout_secs: 30,
            rate_limit_per_ip: 0,
            request_timeout_secs: 10,
            bwe: true,
            bwe_initial_kbps: 1000,
            bwe_min_kbps: 100,
            bwe_max_kbps: 20_000,
            probe: true,
            redis_url: None,
            node_id: None,
            advertise_url: None,
            cluster_signaling: crate::cluster::Signaling::Proxy,
            cluster_local_sessions: 0,
            cluster_cascade_sessions: 500,
        }
    }

    /// Where ICE over TCP listens, given where media was bound: `None` when it is off.
    pub fn ice_tcp_addr(&self, media: SocketAddr) -> Result<Option<SocketAddr>, String> {
        match self.ice_tcp_listen.trim() {
            // An ephemeral media port's number may be taken for TCP.
            "" if self.media_listen.port() == 0 => Ok(Some(SocketAddr::new(media.ip(), 0))),
            "" => Ok(Some(media)),
            "off" => Ok(None),
            addr => addr
                .parse()
                .map(Some)
                .map_err(|e| format!("--ice-tcp-listen {addr}: {e}")),
        }
    }

    /// A viewer's downlink estimator settings, `None` when estimation is off.
    pub fn downlink(&self) -> Option<crate::forward::estimate::Bounds> {
        self.bwe.then(|| crate::forward::estimate::Bounds {
            initial: self.bwe_initial_kbps.saturating_mul(1000),
            min: self.bwe_min_kbps.saturating_mul(1000),
            max: self.bwe_max_kbps.saturating_mul(1000).max(1),
        })
    }

    /// How long a connection may go without ICE consent before it is failed.
    pub fn consent_timeout(&self) -> Duration {
        Duration::from_secs(self.consent_timeout_secs.max(2))
    }

    /// The TURN servers and their secret (read from `--turn-secret-file` if given).
    pub fn turn(&self) -> Result<crate::http::ice::Turn, String> {
        if self.turn_url.is_empty() {
            return Ok(crate::http::ice::Turn::default());
        }
        let secret = match (&self.turn_secret, &self.turn_secret_file) {
            (Some(_), Some(_)) => {
                return Err("give --turn-secret or --turn-secret-file, not both".into())
            }
            (Some(s), None) => s.trim().to_owned(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --turn-secret-file {}: {e}", path.display()))?
                .trim()
                .to_owned(),
            (None, None) => {
                return Err("--turn-url needs --turn-secret or --turn-secret-file".into())
            }
        };
        if secret.is_empty() {
            return Err("the TURN secret is empty".into());
        }
        if let Some(bad) = self
            .turn_url
            .iter()
            .find(|u| !(u.starts_with("turn:") || u.starts_with("turns:")))
        {
            return Err(format!("--turn-url {bad} is not a turn: or turns: URL"));
        }
        Ok(crate::http::ice::Turn {
            urls: self.turn_url.clone(),
            secret: secret.into_bytes(),
            ttl_secs: self.turn_ttl.max(60),
        })
    }

    /// The cluster settings, `None` without `--redis-url`. `http` is the bound HTTP address
    /// and `advertised` the first advertised IP (the default URL's host).
    pub fn cluster(
        &self,
        http: SocketAddr,
        advertised: Option<IpAddr>,
        media: String,
    ) -> Result<Option<crate::cluster::ClusterConfig>, String> {
        let Some(redis_url) = self.redis_url.clone() else {
            return Ok(None);
        };
        let node_id = match &self.node_id {
            Some(id) => {
                let ok = !id.is_empty()
                    && id.len() <= 64
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if !ok {
                    return Err(format!(
                        "--node-id {id}: 1 to 64 letters, digits, '-', '_' or '.'"
                    ));
                }
                id.clone()
            }
            None => format!("{:016x}", rand::random::<u64>()),
        };
        let advertise_url = match &self.advertise_url {
            Some(url) => {
                let url = url.trim_end_matches('/');
                let host = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"));
                if host.is_none_or(|h| h.is_empty() || h.contains('/')) {
                    return Err(format!(
                        "--advertise-url {url}: an http:// or https:// base URL without a path"
                    ));
                }
                url.to_owned()
            }
            None => {
                let ip = match http.ip() {
                    ip if ip.is_unspecified() => advertised.unwrap_or(ip),
                    ip => ip,
                };
                format!("http://{}", SocketAddr::new(ip, http.port()))
            }
        };
        Ok(Some(crate::cluster::ClusterConfig {
            redis_url,
            node_id,
            advertise_url,
            media,
            signaling: self.cluster_signaling,
            local_below: self.cluster_local_sessions,
            cascade_above: self.cluster_cascade_sessions,
            play_token: self.play_token.clone(),
            admin_token: self.admin_token.clone(),
        }))
    }

    /// How many shards to run.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .clamp(1, crate::engine::placement::MAX_SHARDS)
    }

    /// How long a new session may take to connect.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_settings_are_checked_and_defaulted() {
        let http: SocketAddr = "0.0.0.0:8080".parse().expect("address");
        let ip: IpAddr = "10.0.0.5".parse().expect("address");
        let mut config = Config::parse_from(["parley"]);
        assert_eq!(config.cluster(http, Some(ip), String::new()), Ok(None));
        config.redis_url = Some("redis://127.0.0.1:6379".into());
        let c = config
            .cluster(http, Some(ip), String::new())
            .expect("valid")
            .expect("on");
        assert_eq!(c.advertise_url, "http://10.0.0.5:8080");
        assert_eq!(c.node_id.len(), 16);
        config.node_id = Some("node-a".into());
        config.advertise_url = Some("https://a.example.org/".into());
        let c = config
            .cluster(http, Some(ip), String::new())
            .expect("valid")
            .expect("on");
        assert_eq!(
            (c.node_id.as_str(), c.advertise_url.as_str()),
            ("node-a", "https://a.example.org")
        );
        for bad in ["ftp://x", "http://", "http://a/b", "a.example.org"] {
            config.advertise_url = Some(bad.into());
            assert!(
                config.cluster(http, Some(ip), String::new()).is_err(),
                "{bad}"
            );
        }
        config.advertise_url = None;
        config.node_id = Some("a b".into());
        assert!(config.cluster(http, Some(ip), String::new()).is_err());
    }

    #[test]
    fn ice_tcp_listens_on_the_media_port_number_unless_told_otherwise() {
        let media: SocketAddr = "0.0.0.0:8189".parse().expect("address");
        let mut config = Config::parse_from(["parley"]);
        assert_eq!(config.ice_tcp_addr(media), Ok(Some(media)));
        config.ice_tcp_listen = "off".into();
        assert_eq!(config.ice_tcp_addr(media), Ok(None));
        config.ice_tcp_listen = "10.0.0.1:443".into();
        assert_eq!(
            config.ice_tcp_addr(media),
            Ok(Some("10.0.0.1:443".parse().expect("address")))
        );
        config.ice_tcp_listen = "nonsense".into();
        assert!(config.ice_tcp_addr(media).is_err());
        // An ephemeral media port: any free TCP port.
        let config = Config::loopback();
        let bound: SocketAddr = "127.0.0.1:40000".parse().expect("address");
        assert_eq!(
            config.ice_tcp_addr(bound),
            Ok(Some("127.0.0.1:0".parse().expect("address")))
        );
    }
}
