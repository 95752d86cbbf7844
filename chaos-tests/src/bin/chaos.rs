//! `chaos`: the long mode of the chaos suite (issue 20 point 3). Runs chaos runs one after the
//! other, each on a fresh compose cluster with a seed of its own, until `--duration` has passed;
//! prints each run's summary and, with `--results DIR`, writes `DIR/chaos-results.md` and
//! `DIR/chaos-results.json`. Ctrl-C ends the current run's faults early: what was injected is
//! healed, the evidence is judged and the results are written.
//!
//!   cargo build --release --workspace --bins
//!   target/release/chaos --duration 2h --results docs        # the published long run
//!   target/release/chaos --seed 17 --faults 12               # replays one run
//!
//! Needs root (iptables and nsenter in the containers' namespaces, a tmpfs mount), Docker
//! Engine and docker-compose 1.29.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaos_tests::history::Verdict;
use chaos_tests::run::{faults_by_kind, run, RunConfig, RunReport};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "chaos", about = "Faults against a compose KMA cluster, with a history checker")]
struct Args {
    /// Total time, e.g. `2h`, `30m`, `600s`: runs follow one another until it has passed.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Length of each run within --duration (each has its own cluster and seed).
    #[arg(long, value_parser = parse_duration, default_value = "30m")]
    run_length: Duration,
    /// Seed of the (first) run; random when absent.
    #[arg(long)]
    seed: Option<u64>,
    /// Faults per run (without --duration: the run ends after them).
    #[arg(long, default_value_t = 12)]
    faults: usize,
    /// Each fault is held between this and twice this, in seconds.
    #[arg(long, default_value_t = 10)]
    hold_s: u64,
    /// Calm seconds before the first fault and after each recovery.
    #[arg(long, default_value_t = 5)]
    calm_s: u64,
    #[arg(long, default_value_t = 2)]
    drives_per_site: usize,
    #[arg(long, default_value_t = 4)]
    tapes_per_drive: usize,
    /// Write chaos-results.md and chaos-results.json into this directory.
    #[arg(long)]
    results: Option<PathBuf>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 =
        number.parse().map_err(|_| format!("'{text}': expected e.g. 2h, 30m, 90s"))?;
    let seconds = match unit {
        "s" | "" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => return Err(format!("'{text}': the unit is s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("chaos: interrupted; healing every fault, then judging what was recorded");
            flag.store(true, Ordering::SeqCst);
        }
    });

    let started = Instant::now();
    let mut seed = args.seed.unwrap_or_else(rand::random);
    let mut reports: Vec<RunReport> = Vec::new();
    loop {
        let left = args.duration.map(|total| total.saturating_sub(started.elapsed()));
        if left.is_some_and(|left| left < Duration::from_secs(120)) && !reports.is_empty() {
            break;
        }
        let config = RunConfig {
            seed,
            faults: if args.duration.is_some() { 100_000 } else { args.faults },
            duration: left.map(|left| left.min(args.run_length)),
            hold_min: Duration::from_secs(args.hold_s),
            calm: Duration::from_secs(args.calm_s),
            drives_per_site: args.drives_per_site,
            tapes_per_drive: args.tapes_per_drive,
        };
        eprintln!("chaos: run {} with seed {seed}", reports.len() + 1);
        let replay = config.replay_command();
        let run_started = Instant::now();
        let report = match run(config.clone(), interrupted.clone()).await {
            Ok(report) => report,
            // A run that could not finish is a failed run, recorded with its seed; the long
            // mode goes on with the next.
            Err(error) => {
                let error = error.context(format!("the run with seed {seed} failed: {replay}"));
                eprintln!("chaos: {error:?}");
                unfinished(config, run_started.elapsed(), &error)
            }
        };
        println!("{}", report.summary());
        reports.push(report);
        if let Some(dir) = &args.results {
            write_results(dir, &reports, started.elapsed())?;
        }
        if args.duration.is_none() || interrupted.load(Ordering::SeqCst) {
            break;
        }
        seed = rand::random();
    }
    let failed: Vec<u64> = reports.iter().filter(|r| !r.passed()).map(|r| r.config.seed).collect();
    anyhow::ensure!(failed.is_empty(), "runs failed, seeds {failed:?} (replay commands above)");
    Ok(())
}

fn unfinished(config: RunConfig, took: Duration, error: &anyhow::Error) -> RunReport {
    let detail = format!("{error:#}").lines().take(12).collect::<Vec<_>>().join(" | ");
    let verdict = Verdict { property: "run_finished", passed: false, detail };
    RunReport {
        config,
        duration_s: took.as_secs_f64(),
        faults: Vec::new(),
        operations: Default::default(),
        calm_assignments_per_s: 0.0,
        calm_read_p99_ms: None,
        verdicts: vec![verdict],
    }
}

/// The replay command of a run: its seed and the number of faults it got to (a run that did
/// not finish: its seed and duration).
fn replay(report: &RunReport) -> String {
    if report.faults.is_empty() {
        return report.config.replay_command();
    }
    let mut config = report.config.clone();
    config.faults = report.faults.len();
    config.duration = None;
    config.replay_command()
}

fn write_results(
    dir: &std::path::Path,
    reports: &[RunReport],
    total: Duration,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut by_kind: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut operations: std::collections::BTreeMap<String, u64> = Default::default();
    for report in reports {
        for (kind, count) in faults_by_kind(report) {
            *by_kind.entry(kind).or_default() += count;
        }
        for (kind, count) in &report.operations {
            *operations.entry(kind.clone()).or_default() += count;
        }
    }
    let runs: Vec<serde_json::Value> = reports
        .iter()
        .map(|report| {
            serde_json::json!({
                "seed": report.config.seed,
                "duration_s": report.duration_s.round(),
                "replay": replay(report),
                "passed": report.passed(),
                "faults": report.faults.iter().map(|f| serde_json::json!({
                    "kind": f.fault.kind.name(),
                    "fault": f.fault.to_string(),
                    "injected_at_s": f.injected_at_s,
                    "healed_at_s": f.healed_at_s,
                    "recovered_after_s": f.recovered_after_s,
                    "assignments_per_s": f.assignments_per_s,
                    "read_p99_ms": f.read_p99_ms,
                    "error": f.error,
                })).collect::<Vec<_>>(),
                "calm": {
                    "assignments_per_s": report.calm_assignments_per_s,
                    "read_p99_ms": report.calm_read_p99_ms,
                },
                "operations": report.operations,
                "verdicts": report.verdicts.iter().map(|v| serde_json::json!({
                    "property": v.property, "passed": v.passed, "detail": v.detail,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let summary = serde_json::json!({
        "duration_s": total.as_secs(),
        "seeds": reports.iter().map(|r| r.config.seed).collect::<Vec<_>>(),
        "faults_by_kind": by_kind,
        "operations": operations,
        "passed": reports.iter().all(RunReport::passed),
        "runs": runs,
    });
    let json = serde_json::to_string_pretty(&summary)?;
    std::fs::write(dir.join("chaos-results.json"), json + "\n")?;
    let path = dir.join("chaos-results.md");
    let mut md = markdown(reports, total, &by_kind, &operations);
    md.push_str(&kept_by_hand(&path));
    std::fs::write(path, md)?;
    Ok(())
}

/// Results written by hand below this line (the rolling upgrade's, issue 20 point 4) are kept
/// when a long run writes the file anew.
const KEPT_BY_HAND: &str =
    "<!-- Below this line: written by hand, kept when chaos writes the file. -->";

fn kept_by_hand(path: &std::path::Path) -> String {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    match old.find(KEPT_BY_HAND) {
        Some(at) => old[at..].to_string(),
        None => format!("{KEPT_BY_HAND}\n"),
    }
}

fn markdown(
    reports: &[RunReport],
    total: Duration,
    by_kind: &std::collections::BTreeMap<&str, usize>,
    operations: &std::collections::BTreeMap<String, u64>,
) -> String {
    let mut md = header(reports, total);
    let _ = writeln!(md, "## Faults injected, by kind\n\n| kind | count |\n|---|---|");
    for (kind, count) in by_kind {
        let _ = writeln!(md, "| {kind} | {count} |");
    }
    let _ = writeln!(md, "\n## Operations\n\n| what | count |\n|---|---|");
    for (kind, count) in operations {
        let _ = writeln!(md, "| {kind} | {count} |");
    }
    let _ = writeln!(md, "\n## Availability and recovery by fault kind\n");
    let _ = writeln!(
        md,
        "Assignments/s: write keys answered to the drives while the fault held (all sites). Read \
         p99: mount reads (key sets) answered meanwhile. Recovery: from the heal until a leader \
         was confirmed and every KMA had caught up.\n"
    );
    let _ = writeln!(
        md,
        "| kind | faults | assignments/s (mean) | read p99 ms (worst) | recovery s (mean / worst) |\n|---|---|---|---|---|"
    );
    let calm_rate: Vec<f64> = reports.iter().map(|r| r.calm_assignments_per_s).collect();
    let calm_p99 = reports.iter().filter_map(|r| r.calm_read_p99_ms).fold(0.0, f64::max);
    let _ = writeln!(md, "| (calm) | - | {:.1} | {calm_p99:.0} | - |", mean(&calm_rate));
    for kind in chaos_tests::nemesis::FaultKind::ALL {
        let records: Vec<_> =
            reports.iter().flat_map(|r| &r.faults).filter(|f| f.fault.kind == kind).collect();
        if records.is_empty() {
            continue;
        }
        let rates: Vec<f64> = records.iter().map(|f| f.assignments_per_s).collect();
        let p99 = records.iter().filter_map(|f| f.read_p99_ms).fold(0.0, f64::max);
        let recoveries: Vec<f64> = records.iter().filter_map(|f| f.recovered_after_s).collect();
        let worst = recoveries.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {p99:.0} | {:.1} / {worst:.1} |",
            kind.name(),
            records.len(),
            mean(&rates),
            mean(&recoveries)
        );
    }
    let _ = writeln!(md, "\n## Runs\n");
    for report in reports {
        let verdict = if report.passed() { "passed" } else { "FAILED" };
        let _ = writeln!(
            md,
            "### Seed {} ({verdict}, {} faults, {:.0} s)\n\nReplay: `{}`\n",
            report.config.seed,
            report.faults.len(),
            report.duration_s,
            replay(report)
        );
        for verdict in &report.verdicts {
            let _ = writeln!(md, "- {verdict}");
        }
        let _ = writeln!(md);
    }
    md
}

/// The title and the paragraph that says how the file was made.
fn header(reports: &[RunReport], total: Duration) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Chaos results\n");
    let command: Vec<String> = std::env::args().collect();
    let _ = writeln!(
        md,
        "Written by `{}` (issue 20; `chaos-tests/src/bin/chaos.rs`) on a host with {} cores. {} \
         runs in {:.1} h, each on a fresh three-site compose cluster with a random seed of its \
         own; every run is replayed by the command in its section. Machine-readable: \
         `chaos-results.json` beside this file.\n",
        command.join(" "),
        std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get),
        reports.len(),
        total.as_secs_f64() / 3600.0
    );
    md
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}
