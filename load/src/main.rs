//! `parley-load`: a WHIP/WHEP load generator and forwarding-cost benchmark.
//!
//! Parses the command line and runs a scenario (`broadcast`, `meeting`, `audio`) or the
//! `ceiling` benchmark. See `load/README.md` for how to read the results.

#![forbid(unsafe_code)]

mod ceiling;
mod cli;
mod engine;
mod keyframe_tap;
mod link;
mod net;
mod payload;
mod peer;
mod procfs;
mod report;
mod scenario;
mod signaling;
mod simulcast;
mod stats;
mod tcp;
mod twcc;

use anyhow::Result;
use clap::Parser;
use cli::{Cli, Command};
use scenario::Scenario;

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Broadcast { viewers, load } => {
            runtime.block_on(run(Scenario::Broadcast { viewers }, load))
        }
        Command::Meeting {
            participants,
            slots,
            load,
        } => runtime.block_on(run(
            Scenario::Meeting {
                participants,
                slots,
            },
            load,
        )),
        Command::Audio {
            participants,
            slots,
            load,
        } => runtime.block_on(run(
            Scenario::Audio {
                participants,
                slots,
            },
            load,
        )),
        Command::Ceiling {
            copies,
            size,
            secs,
            ceiling,
            bind_ip,
            json,
        } => {
            let mut results = Vec::new();
            for &c in &copies {
                for &mode in &ceiling.modes {
                    eprintln!("[parley-load] ceiling {mode:?}: {c} copies of {size} B, {secs} s");
                    results.push(ceiling::measure(ceiling::Spec {
                        mode,
                        copies: c,
                        size,
                        secs,
                        gso_segments: ceiling.gso_segments,
                        ip: bind_ip,
                    })?);
                }
            }
            report::print_ceiling(&results);
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
            }
            Ok(())
        }
    }
}

async fn run(scenario: Scenario, load: cli::LoadArgs) -> Result<()> {
    let json = load.json.clone();
    let report = scenario::run(scenario, load).await?;
    report.print_table();
    if let Some(path) = json {
        report.write_json(&path)?;
        eprintln!("[parley-load] report written to {}", path.display());
    }
    Ok(())
}
