//! The cluster layer's metrics, registered in the server's one registry. None of them has a
//! room or node label: a cluster's size shows as a level, never as series.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// How a request for a room on another node was passed on (`cascaded`: served here, from
/// the room played from its node).
pub const PASSED: [&str; 3] = ["proxied", "redirected", "cascaded"];

/// The cluster layer's metric handles.
#[derive(Clone)]
pub struct ClusterMetrics {
    /// 1 while Redis answers.
    pub up: IntGauge,
    /// Live nodes seen at the last heartbeat, this one included.
    pub nodes: IntGauge,
    /// Rooms this node holds the claim of.
    pub rooms_owned: IntGauge,
    /// WHIP/WHEP requests passed to the room's node, by how.
    pub passed: IntCounterVec,
    /// Requests that could not be passed to the room's node (it did not answer).
    pub pass_failures: IntCounter,
    /// Redis commands that failed.
    pub redis_errors: IntCounter,
    /// Rooms this node plays from other nodes (cascades).
    pub cascades: IntGauge,
}

impl ClusterMetrics {
    /// Registers the cluster metrics in `r`.
    pub fn new(r: &Registry) -> Self {
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            let _ = r.register(Box::new(g.clone()));
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            let _ = r.register(Box::new(c.clone()));
            c
        };
        let passed = IntCounterVec::new(
            Opts::new(
                "parley_cluster_requests_passed_total",
                "WHIP/WHEP requests for a room owned by another node, by how they were passed \
                 on (proxied, redirected; cascaded: served here from the room played from \
                 its node).",
            ),
            &["how"],
        )
        .expect("valid metric");
        let _ = r.register(Box::new(passed.clone()));
        for how in PASSED {
            passed.with_label_values(&[how]);
        }
        ClusterMetrics {
            up: gauge(
                "parley_cluster_up",
                "1 while the cluster's Redis answers, 0 while this node serves on its own.",
            ),
            nodes: gauge(
                "parley_cluster_nodes",
                "Live nodes seen at the last heartbeat, this one included.",
            ),
            rooms_owned: gauge(
                "parley_cluster_rooms_owned",
                "Rooms this node holds the cluster claim of.",
            ),
            passed,
            pass_failures: counter(
                "parley_cluster_pass_failures_total",
                "Requests for a room on another node that the node did not answer.",
            ),
            redis_errors: counter(
                "parley_redis_errors_total",
                "Redis commands that failed (unreachable, timed out, refused).",
            ),
            cascades: gauge(
                "parley_cluster_cascade_sessions",
                "Rooms this node plays from other nodes for its own viewers (one upstream \
                 session each).",
            ),
        }
    }
}

impl ClusterMetrics {
    /// Counts a viewer served here from a room played from its node.
    pub fn served_by_cascade(&self) {
        self.passed.with_label_values(&["cascaded"]).inc();
    }
}
