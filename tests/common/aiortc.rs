//! Runs the aiortc scripts in `tests/interop/`: to the end, returning their JSON report
//! ([`run`]), or in the background, reporting line by line until told to stop ([`Running`]).
//!
//! `./scripts/test.sh` installs aiortc in `target/pyenv` and exports `PARLEY_PYTHON`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The Python with aiortc: `PARLEY_PYTHON`, or the venv `scripts/test.sh` makes.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("PARLEY_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python");
    assert!(
        venv.exists(),
        "aiortc is not installed: run ./scripts/test.sh (it creates target/pyenv), \
         or set PARLEY_PYTHON to a Python with aiortc"
    );
    venv
}

/// Runs `tests/interop/{script}` with `args`, at most `limit`; asserts it succeeded and
/// returns the last JSON line it printed. `what` names the run in failure messages.
pub async fn run(script: &str, args: &[&str], limit: Duration, what: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    let child = tokio::process::Command::new(python())
        .arg(path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python starts");
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} finishes within {limit:?}"))
        .expect("aiortc output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_default();
    assert!(
        out.status.success(),
        "{what} failed: {report}\n--- stderr ---\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(report).expect("JSON report");
    assert_eq!(report["ok"], true, "{report}");
    report
}

/// An aiortc script that runs until told to stop and reports as it goes: one JSON object
/// per stdout line, collected here. Dropping it kills the process.
pub struct Running {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
    changed: watch::Receiver<u64>,
    stderr: Arc<Mutex<String>>,
    tasks: Vec<JoinHandle<()>>,
    what: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // kill_on_drop ends the process; a test that stopped it has already reaped it.
        let _ = self.child.start_kill();
    }
}

impl Running {
    /// Starts `tests/interop/{script}` with `args`; `what` names it in failure messages.
    pub fn spawn(script: &str, args: &[&str], what: &str) -> Running {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/interop")
            .join(script);
        let mut child = tokio::process::Command::new(python())
            .arg(path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python starts");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, changed) = watch::channel(0u64);
        let sink = Arc::clone(&lines);
        let read_stdout = tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    lock(&sink).push(v);
                    tx.send_modify(|n| *n += 1);
                }
            }
            // Dropping `tx` tells waiters the process said its last.
        });
        let err_sink = Arc::clone(&stderr);
        let read_stderr = tokio::spawn(async move {
            let mut reader = BufReader::new(stderr_pipe).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let mut s = lock(&err_sink);
                s.push_str(&line);
                s.push('\n');
            }
        });
        Running {
            child,
            stdin,
            lines,
            changed,
            stderr,
            tasks: vec![read_stdout, read_stderr],
            what: what.to_owned(),
        }
    }

    /// Every line printed so far.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        lock(&self.lines).clone()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// Waits until `pred` holds for the lines so far; returns them. Panics, with the
    /// process's stderr, when `within` passes or the process ends first.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let mut rx = self.changed.clone();
        let waited = tokio::time::timeout(within, async {
            loop {
                let now = self.lines();
                if pred(&now) {
                    return Ok(now);
                }
                if rx.changed().await.is_err() {
                    return Err(self.lines());
                }
            }
        })
        .await;
        match waited {
            Ok(Ok(lines)) => lines,
            Ok(Err(lines)) => panic!(
                "{}: ended before {what}: {:?}\n--- stderr ---\n{}",
                self.what,
                lines.last(),
                self.stderr()
            ),
            Err(_) => panic!(
                "{}: {what}: not within {within:?}: {:?}\n--- stderr ---\n{}",
                self.what,
                self.lines().last(),
                self.stderr()
            ),
        }
    }

    /// Tells the script to stop (`stop` on stdin, then end of input), waits at most `limit`
    /// for it to exit, asserts it succeeded and returns its last line (its result).
    pub async fn stop(mut self, limit: Duration) -> serde_json::Value {
        if let Some(mut stdin) = self.stdin.take() {
            // The script may have ended already; then the result below says why.
            let _ = stdin.write_all(b"stop\n").await;
        }
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} stops within {limit:?}", self.what))
            .expect("wait for python");
        // Its output ends with the process; let the readers finish it.
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        let report = self.lines().last().cloned().unwrap_or_default();
        assert!(
            status.success() && report["ok"] == true,
            "{} failed ({status}): {report}\n--- stderr ---\n{}",
            self.what,
            self.stderr()
        );
        report
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
