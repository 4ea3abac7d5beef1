//! CPU time and memory of a process, read from Linux `/proc` or from a Prometheus endpoint,
//! the CPU time of each of its threads grouped by name, and the kernel's UDP counters.
//!
//! CPU time comes from `/proc/PID/task/*/schedstat` (nanoseconds on CPU, per thread) when
//! available, else from `utime + stime` in `/proc/PID/stat` (clock ticks of 10 ms). The parsers
//! and the grouping of threads are pure functions over text and values, so they are tested
//! without a process; only the `sample_*` and `read` functions touch `/proc`.

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fs;

/// One reading of a process's CPU time and resident memory.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// CPU time used so far (user + system), seconds.
    pub cpu_secs: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// Where a server's CPU and RSS come from.
#[derive(Clone, Debug)]
pub enum ServerProbe {
    /// A local process id.
    Pid(u32),
    /// A Prometheus text endpoint with `process_cpu_seconds_total` and
    /// `process_resident_memory_bytes`.
    Metrics(String),
    /// Not measured.
    None,
}

impl ServerProbe {
    /// Reads the server's counters now; `None` when there is no probe.
    pub async fn sample(&self, http: &reqwest::Client) -> Result<Option<ProcSample>> {
        match self {
            ServerProbe::Pid(pid) => Ok(Some(sample_pid(&pid.to_string())?)),
            ServerProbe::Metrics(url) => {
                let text = http
                    .get(url)
                    .send()
                    .await
                    .with_context(|| format!("GET {url}"))?
                    .text()
                    .await
                    .with_context(|| format!("GET {url}"))?;
                Ok(Some(parse_prometheus(&text)?))
            }
            ServerProbe::None => Ok(None),
        }
    }

    /// Reads the CPU time of each of the server's threads now; `None` unless the server is
    /// a local process.
    pub fn threads(&self) -> Option<Result<Vec<ThreadCpu>>> {
        match self {
            ServerProbe::Pid(pid) => Some(sample_threads(&pid.to_string())),
            ServerProbe::Metrics(_) | ServerProbe::None => None,
        }
    }
}

/// CPU and RSS of `/proc/{pid}` (`pid` may be `self`).
pub fn sample_pid(pid: &str) -> Result<ProcSample> {
    let cpu_secs = match schedstat_cpu_secs(pid) {
        Some(secs) => secs,
        None => {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
                .with_context(|| format!("reading /proc/{pid}/stat (is the server running?)"))?;
            parse_stat_cpu_secs(&stat)?
        }
    };
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok(ProcSample {
        cpu_secs,
        rss_bytes: parse_status_rss(&status)?,
    })
}

/// Sum of the first field of every thread's schedstat, in seconds.
fn schedstat_cpu_secs(pid: &str) -> Option<f64> {
    let mut total: u64 = 0;
    for entry in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = entry.ok()?.path().join("schedstat");
        // A thread may exit between read_dir and read: skip it.
        let Ok(text) = fs::read_to_string(path) else {
            continue;
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    (total > 0).then_some(total as f64 / 1e9)
}

/// One thread's name and CPU time so far.
#[derive(Clone, Debug, PartialEq)]
pub struct ThreadCpu {
    /// Thread id.
    pub tid: u32,
    /// Its name (`comm`, at most 15 bytes).
    pub name: String,
    /// CPU time used so far (user + system), seconds.
    pub cpu_secs: f64,
}

/// Every thread of `/proc/{pid}` (`pid` may be `self`): name and CPU time. A thread that
/// exits while it is read is left out.
pub fn sample_threads(pid: &str) -> Result<Vec<ThreadCpu>> {
    let dir = format!("/proc/{pid}/task");
    let entries = fs::read_dir(&dir).with_context(|| format!("reading {dir}"))?;
    let mut threads = Vec::new();
    for entry in entries.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let path = entry.path();
        let Ok(stat) = fs::read_to_string(path.join("stat")) else {
            continue;
        };
        let cpu_secs = match fs::read_to_string(path.join("schedstat")) {
            Ok(text) => parse_schedstat_secs(&text),
            Err(_) => parse_stat_cpu_secs(&stat).ok(),
        };
        if let (Some(name), Some(cpu_secs)) = (parse_stat_comm(&stat), cpu_secs) {
            threads.push(ThreadCpu {
                tid,
                name: name.to_owned(),
                cpu_secs,
            });
        }
    }
    Ok(threads)
}

/// The first field of a `schedstat` (nanoseconds on CPU), in seconds.
pub fn parse_schedstat_secs(text: &str) -> Option<f64> {
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// The command name of a `/proc/PID/stat` or `/proc/PID/task/TID/stat` line: what lies
/// between the first `(` and the last `)` (the name may itself hold either).
pub fn parse_stat_comm(stat: &str) -> Option<&str> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    (open < close).then(|| &stat[open + 1..close])
}

/// How a server's threads are reported: each Parley media shard on its own, Parley's
/// sending threads together, and everything else together. The order is the report's:
/// shards by number, then `send`, then `other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ThreadGroup {
    /// `parley-shard-N`.
    Shard(u32),
    /// `parley-send-*`, all of them (their names repeat from shard to shard).
    Send,
    /// Any other thread: HTTP runtime, timers, or every thread of a server that is not
    /// Parley.
    Other,
}

impl ThreadGroup {
    /// The group of a thread named `name`.
    pub fn of(name: &str) -> ThreadGroup {
        if let Some(n) = name.strip_prefix("parley-shard-") {
            if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(n) = n.parse() {
                    return ThreadGroup::Shard(n);
                }
            }
        }
        if name.starts_with("parley-send-") {
            return ThreadGroup::Send;
        }
        ThreadGroup::Other
    }

    /// Its name in the report: `parley-shard-N`, `send` or `other`.
    pub fn label(&self) -> String {
        match self {
            ThreadGroup::Shard(n) => format!("parley-shard-{n}"),
            ThreadGroup::Send => "send".to_owned(),
            ThreadGroup::Other => "other".to_owned(),
        }
    }
}

/// One group's CPU over a window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupCpu {
    /// `parley-shard-N`, `send` or `other`.
    pub group: String,
    /// Whether it is a media shard (`parley-shard-N`).
    pub shard: bool,
    /// Its threads alive at the window's end.
    pub threads: usize,
    /// CPU seconds in the window.
    pub cpu_secs: f64,
    /// The same over the window's length: cores busy.
    pub cores: f64,
}

/// CPU of each group of threads between two samples `secs` apart, in the group order. A
/// thread is matched by id, never by name (names repeat); one that started during the window
/// counts all its time, one that ended during it is missed. Groups with no thread at the
/// window's end are left out.
pub fn group_cpu(start: &[ThreadCpu], end: &[ThreadCpu], secs: f64) -> Vec<GroupCpu> {
    let before: HashMap<u32, f64> = start.iter().map(|t| (t.tid, t.cpu_secs)).collect();
    let mut groups: BTreeMap<ThreadGroup, (usize, f64)> = BTreeMap::new();
    for t in end {
        let used = (t.cpu_secs - before.get(&t.tid).copied().unwrap_or(0.0)).max(0.0);
        let g = groups.entry(ThreadGroup::of(&t.name)).or_default();
        g.0 += 1;
        g.1 += used;
    }
    let secs = secs.max(1e-9);
    groups
        .into_iter()
        .map(|(group, (threads, cpu_secs))| GroupCpu {
            group: group.label(),
            shard: matches!(group, ThreadGroup::Shard(_)),
            threads,
            cpu_secs,
            cores: cpu_secs / secs,
        })
        .collect()
}

/// `utime + stime` of a `/proc/PID/stat` line, in seconds (USER_HZ = 100 on Linux).
pub fn parse_stat_cpu_secs(stat: &str) -> Result<f64> {
    // The command name (field 2) may contain spaces: count fields after its closing ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unexpected /proc stat format"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("no field {} in /proc stat", i + 3))
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// `VmRSS` of a `/proc/PID/status` text, in bytes.
pub fn parse_status_rss(status: &str) -> Result<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| anyhow!("no VmRSS in /proc status"))
}

/// `process_cpu_seconds_total` and `process_resident_memory_bytes` of a Prometheus text page.
pub fn parse_prometheus(text: &str) -> Result<ProcSample> {
    let value = |name: &str| -> Option<f64> {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?;
            // Exactly this metric (no suffix), with or without labels.
            let rest = match rest.chars().next()? {
                ' ' => rest,
                '{' => rest.split_once('}')?.1,
                _ => return None,
            };
            rest.split_whitespace().next()?.parse().ok()
        })
    };
    let cpu_secs = value("process_cpu_seconds_total")
        .ok_or_else(|| anyhow!("the metrics page has no process_cpu_seconds_total"))?;
    let rss = value("process_resident_memory_bytes")
        .ok_or_else(|| anyhow!("the metrics page has no process_resident_memory_bytes"))?;
    Ok(ProcSample {
        cpu_secs,
        rss_bytes: rss as u64,
    })
}

/// Busy CPU time of the whole machine so far, seconds (all cores; from `/proc/stat`).
pub fn machine_busy_secs() -> Option<f64> {
    parse_proc_stat_busy(&fs::read_to_string("/proc/stat").ok()?)
}

/// Busy seconds (all but idle and iowait) of the `cpu` line of `/proc/stat`.
pub fn parse_proc_stat_busy(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(busy as f64 / 100.0)
}

/// The kernel's UDP counters that reveal drops (from `/proc/net/snmp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UdpCounters {
    /// Datagrams dropped because a receive buffer was full.
    pub rcvbuf_errors: u64,
    /// Datagrams dropped because a send buffer was full.
    pub sndbuf_errors: u64,
    /// All receive errors (includes `rcvbuf_errors`).
    pub in_errors: u64,
}

impl UdpCounters {
    /// Reads `/proc/net/snmp`; zeros if unreadable.
    pub fn read() -> UdpCounters {
        fs::read_to_string("/proc/net/snmp")
            .ok()
            .and_then(|t| parse_snmp_udp(&t))
            .unwrap_or_default()
    }

    /// `self - earlier`.
    pub fn since(&self, earlier: &UdpCounters) -> UdpCounters {
        UdpCounters {
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(earlier.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(earlier.sndbuf_errors),
            in_errors: self.in_errors.saturating_sub(earlier.in_errors),
        }
    }
}

/// The `Udp:` header and value lines of `/proc/net/snmp`.
pub fn parse_snmp_udp(text: &str) -> Option<UdpCounters> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let get = |name: &str| -> u64 {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(UdpCounters {
        rcvbuf_errors: get("RcvbufErrors"),
        sndbuf_errors: get("SndbufErrors"),
        in_errors: get("InErrors"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_the_name() {
        let stat = "1234 (my server) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 \
                    100 1000 500 18446744073709551615";
        assert!((parse_stat_cpu_secs(stat).expect("parses") - 3.0).abs() < 1e-9);
        assert!(parse_stat_cpu_secs("garbage").is_err());
    }

    #[test]
    fn status_rss() {
        let status = "Name:\tparley\nVmPeak:\t  9999 kB\nVmRSS:\t   20480 kB\nThreads: 4\n";
        assert_eq!(parse_status_rss(status).expect("parses"), 20480 * 1024);
        assert!(parse_status_rss("Name: x\n").is_err());
    }

    #[test]
    fn prometheus_process_metrics() {
        let text = "# HELP process_cpu_seconds_total Total user and system CPU time.\n\
                    # TYPE process_cpu_seconds_total counter\n\
                    process_cpu_seconds_total_extra 99\n\
                    process_cpu_seconds_total 12.5\n\
                    process_resident_memory_bytes{instance=\"a\"} 1.048576e+07\n";
        let s = parse_prometheus(text).expect("parses");
        assert!((s.cpu_secs - 12.5).abs() < 1e-9);
        assert_eq!(s.rss_bytes, 10_485_760);
        assert!(parse_prometheus("up 1\n").is_err());
    }

    #[test]
    fn snmp_udp_counters() {
        let text = "Ip: a b\nIp: 1 2\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 100 2 7 200 5 1\n\
                    UdpLite: InDatagrams NoPorts InErrors\nUdpLite: 0 0 0\n";
        let c = parse_snmp_udp(text).expect("parses");
        assert_eq!((c.in_errors, c.rcvbuf_errors, c.sndbuf_errors), (7, 5, 1));
    }

    #[test]
    fn proc_stat_busy() {
        let text = "cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        assert!((parse_proc_stat_busy(text).expect("parses") - 1.6).abs() < 1e-9);
        assert!(parse_proc_stat_busy("intr 1\n").is_none());
    }

    #[test]
    fn self_is_readable() {
        let s = sample_pid("self").expect("/proc/self");
        assert!(s.rss_bytes > 0);
    }

    #[test]
    fn thread_stat_name_and_schedstat() {
        let stat = "4242 (parley-shard-1) S 4200 4200 4200 0 -1 4194368 10 0 0 0 31 7 0 0 \
                    20 0 12 0 100 1000 500";
        assert_eq!(parse_stat_comm(stat), Some("parley-shard-1"));
        assert!((parse_stat_cpu_secs(stat).expect("parses") - 0.38).abs() < 1e-9);
        assert_eq!(parse_stat_comm("7 (a) b)) R 1"), Some("a) b)"));
        assert_eq!(parse_stat_comm("7 ) R ("), None);
        assert_eq!(parse_stat_comm("garbage"), None);
        let secs = parse_schedstat_secs("1234567890 5000 42\n").expect("parses");
        assert!((secs - 1.23456789).abs() < 1e-12);
        assert_eq!(parse_schedstat_secs(""), None);
        assert_eq!(parse_schedstat_secs("x 1 2"), None);
    }

    #[test]
    fn thread_names_to_groups() {
        let cases = [
            ("parley-shard-0", ThreadGroup::Shard(0)),
            ("parley-shard-12", ThreadGroup::Shard(12)),
            ("parley-shard-", ThreadGroup::Other),
            ("parley-shard-1x", ThreadGroup::Other),
            ("parley-shard--1", ThreadGroup::Other),
            ("parley-send-0", ThreadGroup::Send),
            ("parley-send-13", ThreadGroup::Send),
            ("parley-sender", ThreadGroup::Other),
            ("parley", ThreadGroup::Other),
            ("tokio-runtime-w", ThreadGroup::Other),
            ("pion-whip", ThreadGroup::Other),
        ];
        for (name, group) in cases {
            assert_eq!(ThreadGroup::of(name), group, "{name}");
        }
        let labels: Vec<String> = [ThreadGroup::Shard(3), ThreadGroup::Send, ThreadGroup::Other]
            .iter()
            .map(ThreadGroup::label)
            .collect();
        assert_eq!(labels, ["parley-shard-3", "send", "other"]);
    }

    fn thread(tid: u32, name: &str, cpu_secs: f64) -> ThreadCpu {
        ThreadCpu {
            tid,
            name: name.to_owned(),
            cpu_secs,
        }
    }

    fn cores(groups: &[GroupCpu]) -> Vec<(&str, usize, f64)> {
        groups
            .iter()
            .map(|g| {
                (
                    g.group.as_str(),
                    g.threads,
                    (g.cores * 1000.0).round() / 1000.0,
                )
            })
            .collect()
    }

    #[test]
    fn parley_threads_are_grouped_per_shard() {
        // Two shards, each with a sending thread named parley-send-0: matched by tid.
        let start = [
            thread(1, "parley", 5.0),
            thread(2, "tokio-runtime-w", 1.0),
            thread(10, "parley-shard-1", 3.0),
            thread(11, "parley-shard-0", 4.0),
            thread(12, "parley-send-0", 2.0),
            thread(13, "parley-send-0", 2.5),
            thread(99, "short-lived", 7.0),
        ];
        let end = [
            thread(1, "parley", 5.0),
            thread(2, "tokio-runtime-w", 1.1),
            thread(10, "parley-shard-1", 4.0),
            thread(11, "parley-shard-0", 6.0),
            thread(12, "parley-send-0", 3.0),
            thread(13, "parley-send-0", 3.0),
            // Started in the window: all its time counts.
            thread(14, "parley-send-1", 0.5),
        ];
        let groups = group_cpu(&start, &end, 10.0);
        assert_eq!(
            cores(&groups),
            [
                ("parley-shard-0", 1, 0.2),
                ("parley-shard-1", 1, 0.1),
                ("send", 3, 0.2),
                ("other", 2, 0.01),
            ]
        );
        assert!(groups[0].shard && groups[1].shard && !groups[2].shard && !groups[3].shard);
        assert!((groups[2].cpu_secs - 2.0).abs() < 1e-9);
    }

    #[test]
    fn other_servers_are_one_group() {
        let start = [thread(1, "pion-whip", 1.0), thread(2, "pion-whip", 1.0)];
        let end = [thread(1, "pion-whip", 2.0), thread(2, "pion-whip", 1.5)];
        assert_eq!(cores(&group_cpu(&start, &end, 2.0)), [("other", 2, 0.75)]);
        assert!(group_cpu(&start, &[], 2.0).is_empty());
        // A counter that went backwards (a reused tid) counts nothing, not negative time.
        let reused = [thread(1, "pion-whip", 0.5)];
        assert_eq!(cores(&group_cpu(&start, &reused, 2.0)), [("other", 1, 0.0)]);
    }

    #[test]
    fn own_threads_are_readable() {
        let threads = sample_threads("self").expect("/proc/self/task");
        assert!(!threads.is_empty());
        assert!(threads
            .iter()
            .all(|t| t.cpu_secs >= 0.0 && !t.name.is_empty()));
    }
}
