//! CPU time and memory of a process, read from Linux `/proc` or from a Prometheus endpoint,
//! and the kernel's UDP counters.
//!
//! CPU time comes from `/proc/PID/task/*/schedstat` (nanoseconds on CPU, per thread) when
//! available, else from `utime + stime` in `/proc/PID/stat` (clock ticks of 10 ms). The parsers
//! are pure functions over text so they are tested without a process.

use anyhow::{anyhow, Context, Result};
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
}
