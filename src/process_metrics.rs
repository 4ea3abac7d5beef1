//! The standard `process_*` metrics on Linux, read from `/proc/self` at each scrape.
//!
//! The prometheus crate's own process collector counts `process_cpu_seconds_total` in whole
//! seconds: over a ten-second load-test window that is an error of up to 10% of a core, and
//! the dashboard's CPU panel moves in steps. This one keeps the kernel's clock-tick
//! resolution (10 ms) and exports the same names: CPU seconds, resident and virtual memory,
//! open and maximum file descriptors, threads and start time.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, Opts};

/// Clock ticks per second in `/proc/*/stat` (`USER_HZ`, fixed at 100 by the kernel's ABI).
const TICKS_PER_SEC: f64 = 100.0;

/// Collects the `process_*` metrics of this process.
pub struct ProcessCollector {
    cpu: Counter,
    resident: Gauge,
    virtual_memory: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    threads: Gauge,
    start_time: Gauge,
    descs: Vec<Desc>,
}

/// What one read of `/proc/self` found.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Sample {
    /// User + system CPU time, seconds.
    pub cpu_secs: f64,
    /// Resident set size, bytes.
    pub resident_bytes: f64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: f64,
    /// Threads.
    pub threads: f64,
    /// Start time, seconds since the Unix epoch.
    pub start_time_secs: f64,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessCollector {
    /// The collector, with nothing read yet.
    pub fn new() -> Self {
        let counter = |name: &str, help: &str| {
            Counter::with_opts(Opts::new(name, help)).expect("valid metric")
        };
        let gauge =
            |name: &str, help: &str| Gauge::with_opts(Opts::new(name, help)).expect("valid metric");
        let cpu = counter(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        );
        let resident = gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        );
        let virtual_memory = gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        );
        let open_fds = gauge("process_open_fds", "Number of open file descriptors.");
        let max_fds = gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
        );
        let threads = gauge("process_threads", "Number of OS threads in the process.");
        let start_time = gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        );
        let descs = [
            cpu.desc(),
            resident.desc(),
            virtual_memory.desc(),
            open_fds.desc(),
            max_fds.desc(),
            threads.desc(),
            start_time.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        Self {
            cpu,
            resident,
            virtual_memory,
            open_fds,
            max_fds,
            threads,
            start_time,
            descs,
        }
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Some(s) = read_stat() {
            // A counter only goes up: add what has been used since the last scrape.
            let past = self.cpu.get();
            if s.cpu_secs > past {
                self.cpu.inc_by(s.cpu_secs - past);
            }
            self.resident.set(s.resident_bytes);
            self.virtual_memory.set(s.virtual_bytes);
            self.threads.set(s.threads);
            self.start_time.set(s.start_time_secs);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as f64);
        }
        if let Some(max) = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| max_open_files(&l))
        {
            self.max_fds.set(max);
        }
        [
            &self.cpu as &dyn Collector,
            &self.resident,
            &self.virtual_memory,
            &self.open_fds,
            &self.max_fds,
            &self.threads,
            &self.start_time,
        ]
        .into_iter()
        .flat_map(|c| c.collect())
        .collect()
    }
}

/// Reads `/proc/self/stat`, `/proc/self/status` and the boot time.
pub fn read_stat() -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let boot = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    parse(&stat, &status, &boot)
}

/// The figures of one process from the texts of its `stat` and `status` files and of
/// `/proc/stat` (for the boot time).
pub fn parse(stat: &str, status: &str, proc_stat: &str) -> Option<Sample> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // Field 3 (state) is index 0: utime 14, stime 15, threads 20, starttime 22, vsize 23.
    let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse::<f64>()
            .ok()
    };
    let boot_secs = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    Some(Sample {
        cpu_secs: (field(14)? + field(15)?) / TICKS_PER_SEC,
        resident_bytes: kib("VmRSS:").unwrap_or(0.0) * 1024.0,
        virtual_bytes: field(23)?,
        threads: field(20)?,
        start_time_secs: boot_secs + field(22)? / TICKS_PER_SEC,
    })
}

/// The soft limit on open files from the text of `/proc/*/limits`.
fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.get("Max open files".len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fields_of_stat_status_and_limits() {
        // A command name with a space and a parenthesis, as the kernel allows.
        let stat = "4242 (parley (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    1234 567 0 0 20 0 7 0 4200 123456789 2048 18446744073709551615";
        let status = "Name:\tparley\nVmPeak:\t  200000 kB\nVmRSS:\t   51200 kB\nThreads:\t7\n";
        let proc_stat = "cpu  1 2 3 4\nbtime 1700000000\nprocesses 10\n";
        let s = parse(stat, status, proc_stat).expect("parsed");
        assert_eq!(s.cpu_secs, 18.01, "(1234 + 567) ticks at 100 per second");
        assert_eq!(s.resident_bytes, 51200.0 * 1024.0);
        assert_eq!(s.virtual_bytes, 123456789.0);
        assert_eq!(s.threads, 7.0);
        assert_eq!(s.start_time_secs, 1_700_000_042.0);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024.0));
        assert_eq!(parse("garbage", "", ""), None);
    }

    #[test]
    fn cpu_time_has_tick_resolution_not_whole_seconds() {
        let c = ProcessCollector::new();
        let names: Vec<String> = c.collect().iter().map(|f| f.name().to_owned()).collect();
        for want in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_threads",
            "process_start_time_seconds",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        // Burn CPU until the counter moves, for at most a few seconds: it moves by ticks.
        let before = c.cpu.get();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut x = 0u64;
        while c.cpu.get() == before && std::time::Instant::now() < deadline {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
            c.collect();
        }
        let step = c.cpu.get() - before;
        assert!(
            step > 0.0 && step < 1.0,
            "CPU seconds moved by {step} (whole seconds would be 1)"
        );
    }
}
