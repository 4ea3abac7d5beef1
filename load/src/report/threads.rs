//! The server's CPU per thread group over a step's window: each Parley media shard
//! (`parley-shard-N`) apart, Parley's sending threads together (`send`), everything else
//! (`other`). A server that is not Parley shows as `other` only.
//!
//! Only whole groups are divided by forwarded packets: which rooms a shard served, and what
//! it did for other shards' sessions (datagrams handed over between shards), cannot be seen
//! from outside, so no shard gets a cost per packet of its own.

use crate::procfs::GroupCpu;
use serde::Serialize;

/// Server CPU by thread group in a window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThreadsReport {
    /// Each group's CPU: shards by number, then `send`, then `other`.
    pub groups: Vec<GroupCpu>,
    /// All shard threads' CPU over all forwarded packets, µs (none without shard threads).
    pub shards_us_per_packet: Option<f64>,
    /// All sending threads' CPU over all forwarded packets, µs (none without them).
    pub send_us_per_packet: Option<f64>,
}

impl ThreadsReport {
    /// The report of `groups` in a window in which the viewers received `forwarded` packets.
    pub fn new(groups: Vec<GroupCpu>, forwarded: u64) -> ThreadsReport {
        let per_packet = |of: &dyn Fn(&GroupCpu) -> bool| {
            let mut matching = groups.iter().filter(|g| of(g)).peekable();
            matching.peek()?;
            let cpu: f64 = matching.map(|g| g.cpu_secs).sum();
            (forwarded > 0).then(|| cpu * 1e6 / forwarded as f64)
        };
        ThreadsReport {
            shards_us_per_packet: per_packet(&|g| g.shard),
            send_us_per_packet: per_packet(&|g| g.group == "send"),
            groups,
        }
    }
}

/// The step's server-threads line, e.g. `  server threads: parley-shard-0 0.21,
/// parley-shard-1 0.19, send 0.30, other 0.01 cores; per forwarded packet: shards 1.32 µs,
/// send 0.99 µs`.
pub fn threads_line(r: &ThreadsReport) -> Option<String> {
    if r.groups.is_empty() {
        return None;
    }
    let groups: Vec<String> = r
        .groups
        .iter()
        .map(|g| format!("{} {:.2}", g.group, g.cores))
        .collect();
    let mut line = format!("  server threads: {} cores", groups.join(", "));
    let per_packet: Vec<String> = [
        ("shards", r.shards_us_per_packet),
        ("send", r.send_us_per_packet),
    ]
    .iter()
    .filter_map(|(name, us)| us.map(|us| format!("{name} {us:.2} µs")))
    .collect();
    if !per_packet.is_empty() {
        line.push_str(&format!(
            "; per forwarded packet: {}",
            per_packet.join(", ")
        ));
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::{group_cpu, ThreadCpu};

    fn thread(tid: u32, name: &str, cpu_secs: f64) -> ThreadCpu {
        ThreadCpu {
            tid,
            name: name.to_owned(),
            cpu_secs,
        }
    }

    #[test]
    fn a_sharded_parley() {
        let start = [
            thread(1, "parley", 0.0),
            thread(2, "parley-shard-0", 0.0),
            thread(3, "parley-shard-1", 0.0),
            thread(4, "parley-send-0", 0.0),
            thread(5, "parley-send-0", 0.0),
        ];
        let end = [
            thread(1, "parley", 0.05),
            thread(2, "parley-shard-0", 1.05),
            thread(3, "parley-shard-1", 0.95),
            thread(4, "parley-send-0", 0.75),
            thread(5, "parley-send-0", 0.75),
        ];
        let r = ThreadsReport::new(group_cpu(&start, &end, 5.0), 1_000_000);
        assert_eq!(
            threads_line(&r).as_deref(),
            Some(
                "  server threads: parley-shard-0 0.21, parley-shard-1 0.19, send 0.30, \
                 other 0.01 cores; per forwarded packet: shards 2.00 µs, send 1.50 µs"
            )
        );
        let none_forwarded = ThreadsReport::new(group_cpu(&start, &end, 5.0), 0);
        assert_eq!(none_forwarded.shards_us_per_packet, None);
        assert!(threads_line(&none_forwarded)
            .unwrap_or_default()
            .ends_with("other 0.01 cores"));
    }

    #[test]
    fn a_server_without_shards() {
        let start = [thread(7, "pion-whip", 1.0), thread(8, "pion-whip", 1.0)];
        let end = [thread(7, "pion-whip", 1.5), thread(8, "pion-whip", 1.3)];
        let r = ThreadsReport::new(group_cpu(&start, &end, 2.0), 50_000);
        assert_eq!((r.shards_us_per_packet, r.send_us_per_packet), (None, None));
        assert_eq!(
            threads_line(&r).as_deref(),
            Some("  server threads: other 0.40 cores")
        );
        assert_eq!(threads_line(&ThreadsReport::new(Vec::new(), 10)), None);
    }
}
