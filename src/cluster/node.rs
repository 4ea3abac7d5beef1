//! What a node tells the cluster about itself, and where a new room goes: pure data and
//! pure choices, no Redis and no clock.

use serde::{Deserialize, Serialize};

/// A node's record in Redis (`parley:node:<id>`, JSON, rewritten every heartbeat with a
/// time-to-live, so a node that stops is gone within [`super::NODE_TTL`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's id (`--node-id`).
    pub id: String,
    /// Its public HTTP base URL (`--advertise-url`), without a trailing slash.
    pub url: String,
    /// Its media address (what its ICE candidates name), for operators.
    pub media: String,
    /// Its load when it last wrote the record.
    pub load: Load,
    /// Draining (SIGTERM): it takes no new rooms.
    #[serde(default)]
    pub draining: bool,
}

/// A node's load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Live sessions (WHIP and WHEP).
    pub sessions: u64,
    /// Rooms with a session on the node.
    pub rooms: u64,
    /// Forwarded packets a second.
    pub packets_per_second: u64,
    /// CPU in use, in cores (1.0 = one core busy).
    pub cpu: f64,
}

impl Load {
    /// The order placement prefers: fewer sessions, then fewer forwarded packets, then
    /// fewer rooms.
    fn key(&self) -> (u64, u64, u64) {
        (self.sessions, self.packets_per_second, self.rooms)
    }
}

/// Where a new room should be claimed for: this node while it carries fewer than
/// `local_below` sessions (0: never preferred), else the least-loaded live node that is not
/// draining (this one included; ties go to this one, then by id). `None` when no node can
/// take it (all draining).
pub fn choose<'a>(
    nodes: &'a [NodeRecord],
    me: &'a NodeRecord,
    local_below: u64,
) -> Option<&'a NodeRecord> {
    if !me.draining && me.load.sessions < local_below {
        return Some(me);
    }
    let others = nodes.iter().filter(|n| n.id != me.id);
    std::iter::once(me)
        .chain(others)
        .filter(|n| !n.draining)
        .min_by(|a, b| {
            a.load
                .key()
                .cmp(&b.load.key())
                .then_with(|| (a.id != me.id).cmp(&(b.id != me.id)))
                .then_with(|| a.id.cmp(&b.id))
        })
}

/// The IP addresses a node's URL names: its host as an IP literal, or what the host name
/// resolves to (none when it does not resolve within a second).
pub async fn addresses_of(url: &str) -> Vec<std::net::IpAddr> {
    let Ok(url) = reqwest::Url::parse(url) else {
        return Vec::new();
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let Some(host) = url.host_str() else {
        return Vec::new();
    };
    // An IPv6 literal comes in brackets.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return vec![ip];
    }
    let host = host.to_owned();
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(std::time::Duration::from_secs(1), lookup).await {
        Ok(Ok(addrs)) => {
            let mut ips: Vec<std::net::IpAddr> = addrs.map(|a| a.ip()).collect();
            ips.sort();
            ips.dedup();
            ips
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, sessions: u64) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            url: format!("http://{id}"),
            media: "127.0.0.1:1".into(),
            load: Load {
                sessions,
                ..Load::default()
            },
            draining: false,
        }
    }

    #[test]
    fn the_least_loaded_node_gets_the_room() {
        let me = node("a", 5);
        let nodes = [node("a", 5), node("b", 2), node("c", 3)];
        assert_eq!(choose(&nodes, &me, 0).map(|n| n.id.as_str()), Some("b"));
    }

    #[test]
    fn ties_go_to_this_node_then_by_id() {
        let me = node("b", 1);
        let nodes = [node("c", 1), node("a", 1)];
        assert_eq!(choose(&nodes, &me, 0).map(|n| n.id.as_str()), Some("b"));
        let me = node("z", 2);
        assert_eq!(choose(&nodes, &me, 0).map(|n| n.id.as_str()), Some("a"));
    }

    #[test]
    fn under_the_local_threshold_this_node_keeps_the_room() {
        let me = node("a", 9);
        let nodes = [node("b", 0)];
        assert_eq!(choose(&nodes, &me, 10).map(|n| n.id.as_str()), Some("a"));
        assert_eq!(choose(&nodes, &me, 9).map(|n| n.id.as_str()), Some("b"));
    }

    #[test]
    fn draining_nodes_take_no_rooms() {
        let mut me = node("a", 0);
        me.draining = true;
        let mut b = node("b", 0);
        assert_eq!(
            choose(std::slice::from_ref(&b), &me, 100).map(|n| n.id.as_str()),
            Some("b")
        );
        b.draining = true;
        assert!(choose(&[b], &me, 100).is_none());
    }

    #[test]
    fn packets_break_a_tie_in_sessions() {
        let mut me = node("a", 3);
        me.load.packets_per_second = 500;
        let mut b = node("b", 3);
        b.load.packets_per_second = 100;
        assert_eq!(choose(&[b], &me, 0).map(|n| n.id.as_str()), Some("b"));
    }

    #[test]
    fn a_record_survives_json() {
        let n = node("a", 4);
        let text = serde_json::to_string(&n).expect("serializes");
        assert_eq!(serde_json::from_str::<NodeRecord>(&text).ok(), Some(n));
    }

    #[tokio::test]
    async fn a_nodes_url_names_its_addresses() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("an address");
        assert_eq!(addresses_of("http://10.0.0.5:8080").await, [ip("10.0.0.5")]);
        assert_eq!(
            addresses_of("https://[fd00::5]:8443/x").await,
            [ip("fd00::5")]
        );
        assert!(addresses_of("http://localhost:8080")
            .await
            .iter()
            .all(|a| a.is_loopback()));
        assert!(addresses_of("not a url").await.is_empty());
    }
}
