//! The CPU of further local server processes (`--node-pid`, e.g. the other nodes of a
//! cluster) over a step's window, each read from `/proc` at the window's start and end like
//! `--server-pid`'s ([`sample_nodes`]).

use crate::procfs::{sample_pid, ProcSample};
use serde::Serialize;

/// One further server process over a window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeReport {
    /// Its process id.
    pub pid: u32,
    /// CPU seconds during the window.
    pub cpu_secs: f64,
    /// Average cores busy.
    pub cpu_cores: f64,
    /// RSS at the end of the window, MiB.
    pub rss_mib: f64,
}

/// Reads the CPU and RSS of each process in `pids`, in order: one end of a window. A
/// process that cannot be read is recorded in `errors` and leaves `None`, not fatal.
pub fn sample_nodes(pids: &[u32], errors: &mut Vec<String>) -> Vec<Option<ProcSample>> {
    pids.iter()
        .map(|pid| match sample_pid(&pid.to_string()) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(format!("node {pid}: {e:#}"));
                None
            }
        })
        .collect()
}

/// The reports of `pids`, from their readings at the window's start and end (`None`: the
/// read failed, and that process is left out) over a window of `secs`.
pub fn node_reports(
    pids: &[u32],
    start: &[Option<ProcSample>],
    end: &[Option<ProcSample>],
    secs: f64,
) -> Vec<NodeReport> {
    pids.iter()
        .zip(start.iter().zip(end))
        .filter_map(|(&pid, (a, b))| {
            let (a, b) = (a.as_ref()?, b.as_ref()?);
            let cpu_secs = b.cpu_secs - a.cpu_secs;
            Some(NodeReport {
                pid,
                cpu_secs,
                cpu_cores: cpu_secs / secs.max(1e-9),
                rss_mib: b.rss_bytes as f64 / 1048576.0,
            })
        })
        .collect()
}

/// The step's nodes line, e.g. `  nodes: pid 1234 0.31 cores, pid 5678 0.25 cores`; none
/// without nodes.
pub fn nodes_line(nodes: &[NodeReport]) -> Option<String> {
    if nodes.is_empty() {
        return None;
    }
    let each: Vec<String> = nodes
        .iter()
        .map(|n| format!("pid {} {:.2} cores", n.pid, n.cpu_cores))
        .collect();
    Some(format!("  nodes: {}", each.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cpu_secs: f64, mib: u64) -> Option<ProcSample> {
        Some(ProcSample {
            cpu_secs,
            rss_bytes: mib << 20,
        })
    }

    #[test]
    fn nodes_report_their_cpu_over_the_window() {
        let start = [sample(10.0, 50), sample(4.0, 40)];
        let end = [sample(13.1, 60), sample(6.5, 41)];
        let r = node_reports(&[1234, 5678], &start, &end, 10.0);
        let pids: Vec<u32> = r.iter().map(|n| n.pid).collect();
        assert_eq!(pids, [1234, 5678]);
        assert!((r[0].cpu_secs - 3.1).abs() < 1e-9 && (r[0].cpu_cores - 0.31).abs() < 1e-9);
        assert_eq!(r[1].rss_mib, 41.0);
        assert_eq!(
            nodes_line(&r).as_deref(),
            Some("  nodes: pid 1234 0.31 cores, pid 5678 0.25 cores")
        );
    }

    #[test]
    fn a_node_that_could_not_be_read_is_left_out() {
        let start = [sample(1.0, 1), None, sample(1.0, 1)];
        let end = [None, sample(2.0, 1), sample(1.5, 1)];
        let r = node_reports(&[1, 2, 3], &start, &end, 1.0);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].pid, r[0].cpu_cores), (3, 0.5));
        assert_eq!(nodes_line(&node_reports(&[], &[], &[], 1.0)), None);
    }

    #[test]
    fn a_node_that_cannot_be_read_is_an_error_not_a_failure() {
        let mut errors = Vec::new();
        let own = std::process::id();
        let samples = sample_nodes(&[own, u32::MAX], &mut errors);
        assert!(samples[0].is_some() && samples[1].is_none());
        assert_eq!(errors.len(), 1);
        let prefix = format!("node {}:", u32::MAX);
        assert!(errors[0].starts_with(&prefix), "{errors:?}");
    }
}
