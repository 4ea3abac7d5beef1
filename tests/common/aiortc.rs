//! Runs one of the aiortc scripts in `tests/interop/` and returns its JSON report.
//!
//! `./scripts/test.sh` installs aiortc in `target/pyenv` and exports `PARLEY_PYTHON`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

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
