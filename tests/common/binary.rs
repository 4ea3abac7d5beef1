//! The `parley` binary as a child process, on ephemeral ports, with its HTTP address read
//! from its first line on stdout.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};

/// The binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_parley");

/// Starts the binary with `args` and `envs` on 127.0.0.1 ephemeral ports, with two shards. Returns it with
/// its HTTP address and the rest of its stdout (keep reading it: a full pipe blocks logging).
pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> (Child, String, BufReader<ChildStdout>) {
    let mut child = Command::new(BIN)
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--media-listen",
            "127.0.0.1:0",
            "--shards",
            "2",
        ])
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("parley starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    // Log lines may come first (e.g. joining a cluster).
    let mut first = String::new();
    while !first.starts_with("Parley is serving") {
        first.clear();
        if stdout.read_line(&mut first).expect("a line") == 0 {
            panic!("parley exited before announcing its addresses");
        }
    }
    // "Parley is serving HTTP on 127.0.0.1:PORT and media on UDP ..."
    let addr = first
        .split_whitespace()
        .nth(5)
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    (child, addr, stdout)
}

/// Kills the child if the test fails before it exits.
pub struct Reap(pub Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
