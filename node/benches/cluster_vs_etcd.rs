//! Three KMAs against three etcd members, side by side in one run, all on loopback: committed
//! writes per second and per-write latency at 1, 16 and 64 concurrent writers (issues #3, #21).
//! etcd runs twice: plaintext, as in its quick start, and with TLS and client certificates on
//! its client and peer links, as in production and as the KMAs always run (`etcd.rs`).
//!
//! `cargo bench -p node --bench cluster_vs_etcd` (etcd from `scripts/install-bench-deps.sh`).
//! `BENCH_SECS` (default 10) is the measured time of each run, `BENCH_WARMUP_SECS` (default 2)
//! the unmeasured lead-in, `BENCH_WRITERS` (default `1,16,64`) the concurrency levels,
//! `BENCH_RUNS` (default 1) how many times in a row the whole comparison runs, each on fresh
//! clusters; with more than one, the medians of the ratios follow the runs' tables.
//!
//! Each writer is one task with its own connection, sending one write after another. A KMS
//! write is a `SetKeyPoolLimits` proposal through the admin client; an etcd write is a `Put` of
//! a 16-byte value over etcd's own gRPC API. A write counts only once the cluster answered that
//! it was committed and applied. Both systems keep their default durability: every KMA syncs its
//! RocksDB WAL before acknowledging a Raft append; every etcd member fsyncs its WAL. The clusters
//! share the same two cores and disk, so each run has the machine to itself apart from the
//! other clusters' idle heartbeats.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use node::client::KmaClient;
use statemachine::cluster::KeyPoolLimits;
use statemachine::Command;
use tokio::process::Child;

#[path = "cluster_vs_etcd/etcd.rs"]
mod etcd;
#[path = "cluster_vs_etcd/stages.rs"]
mod stages;
mod support;
use etcd::{GrpcConnection, Links};
use support::cpu_seconds;

/// KMA management ports are `KMA_BASE_PORT + 1..=3`, service ports `+ 101..=103`.
const KMA_BASE_PORT: u16 = 24000;
const MEMBERS: usize = 3;
/// Latencies kept per writer and run; a writer stops early rather than grow past it.
const LATENCIES_PER_WRITER_MAX: usize = 1_000_000;
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// The throughput the KMAs must reach at 64 writers, as a multiple of etcd with TLS (#21).
const THROUGHPUT_TARGET_AT_64: f64 = 2.0;
/// Synced appends of the fsync probe that reports what one durable write costs on this disk.
const FSYNC_PROBES: usize = 200;

struct Settings {
    measured: Duration,
    warmup: Duration,
    levels: Vec<usize>,
    /// Whole comparisons in a row, each on fresh clusters.
    runs: usize,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let seconds = |name: &str, default: u64| -> anyhow::Result<Duration> {
            match std::env::var(name) {
                Ok(text) => text
                    .parse::<u64>()
                    .map(Duration::from_secs)
                    .with_context(|| format!("{name}={text}: expected whole seconds")),
                Err(_) => Ok(Duration::from_secs(default)),
            }
        };
        let levels = match std::env::var("BENCH_WRITERS") {
            Ok(text) => text
                .split(',')
                .map(|level| level.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("BENCH_WRITERS={text}: expected e.g. 1,16,64"))?,
            Err(_) => vec![1, 16, 64],
        };
        ensure!(levels.iter().all(|level| (1..=256).contains(level)), "writers: 1 to 256");
        let measured = seconds("BENCH_SECS", 10)?;
        ensure!(measured >= Duration::from_secs(1), "BENCH_SECS: at least 1");
        let runs = match std::env::var("BENCH_RUNS") {
            Ok(text) => text
                .parse::<usize>()
                .with_context(|| format!("BENCH_RUNS={text}: expected a count, e.g. 3"))?,
            Err(_) => 1,
        };
        ensure!((1..=9).contains(&runs), "BENCH_RUNS: 1 to 9");
        Ok(Settings { measured, warmup: seconds("BENCH_WARMUP_SECS", 2)?, levels, runs })
    }
}

/// Where writes are sent: the leader, or a follower that forwards them to the leader.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SentTo {
    Leader,
    Follower,
}

impl SentTo {
    fn name(self) -> &'static str {
        match self {
            SentTo::Leader => "leader",
            SentTo::Follower => "follower",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The KMS side.

struct KmsCluster {
    children: Vec<Child>,
    /// The officer's session; each writer uses it over connections of its own.
    admin: KmaClient,
    leader: String,
    follower: String,
    /// The third KMA, which no writer is sent to.
    other: String,
}

impl KmsCluster {
    async fn start(root: &Path) -> anyhow::Result<KmsCluster> {
        let binary = Path::new(env!("CARGO_BIN_EXE_kma"));
        let dir = root.join("kms");
        let children =
            node::setup::local::start(binary, &dir, MEMBERS, KMA_BASE_PORT).await.with_context(
                || format!("starting three KMAs (logs: {}/kma*/kma.log)", dir.display()),
            )?;
        let secrets = node::setup::read_secrets(&dir.join(node::setup::local::SECRETS_FILE))?;
        let first = node::setup::local::layout(&dir, MEMBERS, KMA_BASE_PORT)?.remove(0);
        let admin =
            node::setup::local::officer_session(&first.data_dir, &first.management, &secrets)
                .await?;
        let addresses: Vec<String> = node::setup::local::layout(&dir, MEMBERS, KMA_BASE_PORT)?
            .into_iter()
            .map(|entry| entry.management)
            .collect();
        let (leader, follower) = kms_leader_and_follower(&admin, &addresses).await?;
        let other = addresses
            .iter()
            .find(|address| **address != leader && **address != follower)
            .context("three KMAs")?
            .clone();
        let mut cluster = KmsCluster { children, admin, leader, follower, other };
        let mut probe = cluster.writer(SentTo::Leader)?;
        if let Err(error) = probe.put(0, 0).await {
            cluster.stop().await;
            bail!("the first KMS write was refused: {error}");
        }
        Ok(cluster)
    }

    fn writer(&self, sent_to: SentTo) -> anyhow::Result<Writer> {
        let address = match sent_to {
            SentTo::Leader => self.leader.clone(),
            SentTo::Follower => self.follower.clone(),
        };
        // A client of its own: its own connection pool, so its own TLS connection.
        Ok(Writer::Kms { client: self.admin.with_own_connections()?, address })
    }

    async fn stop(&mut self) {
        stop_all(&mut self.children).await;
    }

    /// What the leader, the follower written to and the other follower report of their write
    /// stages so far.
    async fn stage_totals(&self) -> anyhow::Result<[stages::Totals; 3]> {
        let mut read = Vec::with_capacity(3);
        for address in [&self.leader, &self.follower, &self.other] {
            let text = self.admin.metrics_text(address).await?;
            read.push(stages::Totals::parse(&text).with_context(|| format!("{address}/metrics"))?);
        }
        let [leader, follower, other]: [stages::Totals; 3] =
            read.try_into().map_err(|_| anyhow::anyhow!("three readings"))?;
        Ok([leader, follower, other])
    }
}

/// The leader's address and one follower's, once all three KMAs name the same leader.
async fn kms_leader_and_follower(
    admin: &KmaClient,
    addresses: &[String],
) -> anyhow::Result<(String, String)> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let mut leaders = Vec::new();
        let mut ids = Vec::new();
        for address in addresses {
            let status = admin.status(address).await?;
            leaders.push(status.leader_id);
            ids.push(status.node_id);
        }
        let agreed = leaders[0].filter(|leader| leaders.iter().all(|l| *l == Some(*leader)));
        if let Some(leader) = agreed {
            let at = ids.iter().position(|id| *id == leader).context("leader not in the layout")?;
            let follower = (at + 1) % addresses.len();
            return Ok((addresses[at].clone(), addresses[follower].clone()));
        }
        ensure!(Instant::now() < deadline, "the KMAs did not agree on a leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn kms_command(writer_index: usize, sequence: u64) -> Command {
    // Varying limits, always valid (low below high, high at most 2,000,000): every write is a
    // distinct committed entry, and settings never grow the state the way users or keys would.
    // The low water mark stays 0, so the leader never starts a pool refill: a refill would
    // generate and replicate thousands of wrapped keys a second beside the measured writes.
    let high_water = 1 + ((sequence * 256 + writer_index as u64) % 1_000_000) as u32;
    Command::SetKeyPoolLimits(KeyPoolLimits { low_water: 0, high_water })
}

// ---------------------------------------------------------------------------------------------
// Writers and runs.

enum Writer {
    Kms { client: KmaClient, address: String },
    Etcd(GrpcConnection),
}

impl Writer {
    /// One write; `Ok` only once the cluster reports it committed and applied.
    async fn put(&mut self, writer_index: usize, sequence: u64) -> Result<(), String> {
        match self {
            Writer::Kms { client, address } => {
                let command = kms_command(writer_index, sequence);
                match client.propose(address, None, command).await {
                    Ok(Ok(applied)) => applied.result.map(|_| ()).map_err(|e| e.to_string()),
                    Ok(Err(refused)) => Err(refused.to_string()),
                    Err(error) => Err(error.to_string()),
                }
            }
            Writer::Etcd(connection) => {
                let key = format!("bench/writer-{writer_index:03}");
                let value = format!("{sequence:016}");
                connection.put(key.as_bytes(), value.as_bytes()).await
            }
        }
    }
}

#[derive(Default)]
struct WriterTally {
    latencies_us: Vec<u32>,
    errors: u64,
    last_error: Option<String>,
    finished: Option<Instant>,
}

/// Writes one after another until `stop_at`; measures those started after `measure_from`.
async fn drive(
    mut writer: Writer,
    writer_index: usize,
    measure_from: Instant,
    stop_at: Instant,
) -> WriterTally {
    let mut tally = WriterTally::default();
    let mut sequence: u64 = 1;
    loop {
        let started = Instant::now();
        if started >= stop_at || tally.latencies_us.len() >= LATENCIES_PER_WRITER_MAX {
            break;
        }
        let outcome = writer.put(writer_index, sequence).await;
        sequence += 1;
        let elapsed_us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        if started < measure_from {
            continue;
        }
        match outcome {
            Ok(()) => tally.latencies_us.push(elapsed_us),
            Err(error) => {
                tally.errors += 1;
                tally.last_error = Some(error);
                // A refusing cluster is not hammered in a tight loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tally.finished = Some(Instant::now());
    tally
}

/// What one run of one system at one concurrency measured.
struct Measured {
    /// For the KMS: where the time went, read from the KMAs.
    breakdown: Option<stages::Breakdown>,
    writes_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    writes: usize,
    errors: u64,
    last_error: Option<String>,
    /// CPU seconds used during the run by the cluster's processes and by this bench.
    cluster_cpu_s: f64,
    bench_cpu_s: f64,
    elapsed_s: f64,
}

async fn run_writers(
    writers: Vec<Writer>,
    pids: &[u32],
    settings: &Settings,
    kms: Option<&KmsCluster>,
) -> anyhow::Result<Measured> {
    let measure_from = Instant::now() + settings.warmup;
    let stop_at = measure_from + settings.measured;
    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(index, writer)| tokio::spawn(drive(writer, index, measure_from, stop_at)))
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let stages_before = match kms {
        Some(kms) => Some(kms.stage_totals().await?),
        None => None,
    };
    let cpu_before = (cpu_seconds(pids)?, cpu_seconds(&[std::process::id()])?);
    let mut tallies = Vec::new();
    for task in tasks {
        tallies.push(task.await.context("a writer task panicked")?);
    }
    let cpu_after = (cpu_seconds(pids)?, cpu_seconds(&[std::process::id()])?);
    let stages_after = match kms {
        Some(kms) => Some(kms.stage_totals().await?),
        None => None,
    };
    let finished = tallies.iter().filter_map(|t| t.finished).max().unwrap_or(stop_at);
    let elapsed_s = finished.duration_since(measure_from).as_secs_f64();
    let mut latencies: Vec<u32> =
        tallies.iter().flat_map(|t| t.latencies_us.iter().copied()).collect();
    latencies.sort_unstable();
    let mean_ms = latencies.iter().map(|us| f64::from(*us)).sum::<f64>()
        / (latencies.len().max(1) as f64)
        / 1000.0;
    let breakdown = match (stages_before, stages_after) {
        (Some([leader0, follower0, other0]), Some([leader1, follower1, other1])) => {
            Some(stages::Breakdown {
                leader: leader1.since(&leader0),
                follower: follower1.since(&follower0),
                other_follower: other1.since(&other0),
                writes: latencies.len(),
                client_mean_ms: mean_ms,
            })
        }
        _ => None,
    };
    Ok(Measured {
        breakdown,
        writes_per_second: latencies.len() as f64 / elapsed_s,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        writes: latencies.len(),
        errors: tallies.iter().map(|t| t.errors).sum(),
        last_error: tallies.iter().rev().find_map(|t| t.last_error.clone()),
        cluster_cpu_s: cpu_after.0 - cpu_before.0,
        bench_cpu_s: cpu_after.1 - cpu_before.1,
        elapsed_s,
    })
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds (NaN when empty).
fn percentile_ms(sorted_us: &[u32], fraction: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = (fraction * sorted_us.len() as f64).ceil() as usize;
    f64::from(sorted_us[rank.clamp(1, sorted_us.len()) - 1]) / 1000.0
}

fn pids_of(children: &[Child]) -> anyhow::Result<Vec<u32>> {
    children.iter().map(|child| child.id().context("a cluster process has already ended")).collect()
}

/// Kills every process and waits for it (they are also killed on drop, should this not run).
async fn stop_all(children: &mut [Child]) {
    for child in children.iter_mut() {
        let _already_ended = child.kill().await;
    }
}

/// The p50 and p99 of synced 512-byte appends to a file in `dir`: what one durable write costs.
fn fsync_probe(dir: &Path) -> anyhow::Result<(f64, f64)> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).context("creating the fsync probe file")?;
    let mut latencies = Vec::with_capacity(FSYNC_PROBES);
    for _ in 0..FSYNC_PROBES {
        let started = Instant::now();
        file.write_all(&[7u8; 512]).context("writing the fsync probe")?;
        file.sync_data().context("syncing the fsync probe")?;
        latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    latencies.sort_unstable();
    std::fs::remove_file(&path).context("removing the fsync probe file")?;
    Ok((percentile_ms(&latencies, 0.50), percentile_ms(&latencies, 0.99)))
}

// ---------------------------------------------------------------------------------------------
// The whole bench and its report.

struct Row {
    writers: usize,
    sent_to: SentTo,
    kms: Measured,
    etcd: Measured,
    etcd_tls: Measured,
}

impl Row {
    /// The ratios the targets are set on (#21): against etcd with TLS.
    fn throughput_ratio(&self) -> f64 {
        self.kms.writes_per_second / self.etcd_tls.writes_per_second
    }

    fn p99_ratio(&self) -> f64 {
        self.kms.p99_ms / self.etcd_tls.p99_ms
    }
}

async fn etcd_writers(
    cluster: &etcd::Cluster,
    sent_to: SentTo,
    writers: usize,
) -> anyhow::Result<Vec<Writer>> {
    let mut connected = Vec::with_capacity(writers);
    for _ in 0..writers {
        connected.push(Writer::Etcd(cluster.connect(sent_to).await?));
    }
    Ok(connected)
}

async fn measure_all(
    settings: &Settings,
    kms: &KmsCluster,
    etcd: &etcd::Cluster,
    etcd_tls: &etcd::Cluster,
) -> anyhow::Result<Vec<Row>> {
    let kms_pids = pids_of(&kms.children)?;
    let etcd_pids = pids_of(&etcd.children)?;
    let etcd_tls_pids = pids_of(&etcd_tls.children)?;
    let mut rows = Vec::new();
    for sent_to in [SentTo::Leader, SentTo::Follower] {
        for &writers in &settings.levels {
            eprintln!("KMS, {writers} writers to the {}...", sent_to.name());
            let kms_writers =
                (0..writers).map(|_| kms.writer(sent_to)).collect::<Result<_, _>>()?;
            let kms_measured = run_writers(kms_writers, &kms_pids, settings, Some(kms)).await?;
            eprintln!("{}, {writers} writers to the {}...", etcd.links.name(), sent_to.name());
            let connected = etcd_writers(etcd, sent_to, writers).await?;
            let etcd_measured = run_writers(connected, &etcd_pids, settings, None).await?;
            eprintln!("{}, {writers} writers to the {}...", etcd_tls.links.name(), sent_to.name());
            let connected = etcd_writers(etcd_tls, sent_to, writers).await?;
            let etcd_tls_measured = run_writers(connected, &etcd_tls_pids, settings, None).await?;
            rows.push(Row {
                writers,
                sent_to,
                kms: kms_measured,
                etcd: etcd_measured,
                etcd_tls: etcd_tls_measured,
            });
        }
    }
    Ok(rows)
}

async fn start_and_measure(settings: &Settings, root: &Path) -> anyhow::Result<Vec<Row>> {
    let mut kms = KmsCluster::start(root).await?;
    let mut etcd = match etcd::Cluster::start(root, Links::Plaintext).await {
        Ok(etcd) => etcd,
        Err(error) => {
            kms.stop().await;
            return Err(error);
        }
    };
    let mut etcd_tls = match etcd::Cluster::start(root, Links::Tls).await {
        Ok(etcd_tls) => etcd_tls,
        Err(error) => {
            kms.stop().await;
            etcd.stop().await;
            return Err(error);
        }
    };
    let rows = measure_all(settings, &kms, &etcd, &etcd_tls).await;
    kms.stop().await;
    etcd.stop().await;
    etcd_tls.stop().await;
    rows
}

fn print_table(rows: &[Row]) {
    println!(
        "| writers | sent to | KMS writes/s | KMS p50 ms | KMS p99 ms | etcd writes/s | etcd p99 ms \
         | etcd TLS writes/s | etcd TLS p50 ms | etcd TLS p99 ms | throughput vs TLS \
         | p99 vs TLS | p99 vs plaintext |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let (kms, etcd, tls) = (&row.kms, &row.etcd, &row.etcd_tls);
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2}x \
             | {:.2}x | {:.2}x |",
            row.writers,
            row.sent_to.name(),
            kms.writes_per_second,
            kms.p50_ms,
            kms.p99_ms,
            etcd.writes_per_second,
            etcd.p99_ms,
            tls.writes_per_second,
            tls.p50_ms,
            tls.p99_ms,
            row.throughput_ratio(),
            row.p99_ratio(),
            kms.p99_ms / etcd.p99_ms,
        );
    }
}

/// CPU per committed write and how busy the two cores were, to tell CPU-bound from waiting.
fn print_cpu_table(rows: &[Row]) {
    let per_write_us = |cpu_s: f64, m: &Measured| cpu_s * 1e6 / (m.writes.max(1) as f64);
    let busy = |m: &Measured| (m.cluster_cpu_s + m.bench_cpu_s) / m.elapsed_s;
    println!();
    println!(
        "| writers | sent to | KMAs CPU µs/write | KMS client µs/write | KMS cores busy \
         | etcd CPU µs/write | etcd client µs/write | etcd cores busy | etcd TLS CPU µs/write \
         | etcd TLS client µs/write | etcd TLS cores busy |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let mut line = format!("| {} | {} |", row.writers, row.sent_to.name());
        for m in [&row.kms, &row.etcd, &row.etcd_tls] {
            line += &format!(
                " {:.0} | {:.0} | {:.2} |",
                per_write_us(m.cluster_cpu_s, m),
                per_write_us(m.bench_cpu_s, m),
                busy(m)
            );
        }
        println!("{line}");
    }
}

/// Where the time of one write goes at the lowest concurrency measured (one writer by
/// default), written to the leader and to a follower.
fn print_breakdowns(rows: &[Row]) {
    let Some(lowest) = rows.iter().map(|row| row.writers).min() else { return };
    for row in rows.iter().filter(|row| row.writers == lowest) {
        if let Some(breakdown) = &row.kms.breakdown {
            let title = format!(
                "One KMS write, stage by stage ({lowest} writer{} to the {}; each cell: mean \
                 per time the stage ran × times per write)",
                if lowest == 1 { "" } else { "s" },
                row.sent_to.name()
            );
            breakdown.print(&title);
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// One line per level and destination: each run's ratios against etcd with TLS, and their
/// median, which is what the targets are judged on.
struct Judged {
    writers: usize,
    sent_to: SentTo,
    throughput: Vec<f64>,
    p99: Vec<f64>,
}

fn judge(runs: &[Vec<Row>]) -> Vec<Judged> {
    let Some(first) = runs.first() else { return Vec::new() };
    first
        .iter()
        .map(|row| {
            let same = |r: &&Row| r.writers == row.writers && r.sent_to == row.sent_to;
            let rows: Vec<&Row> = runs.iter().filter_map(|run| run.iter().find(same)).collect();
            Judged {
                writers: row.writers,
                sent_to: row.sent_to,
                throughput: rows.iter().map(|r| r.throughput_ratio()).collect(),
                p99: rows.iter().map(|r| r.p99_ratio()).collect(),
            }
        })
        .collect()
}

fn print_medians(judged: &[Judged]) {
    let list =
        |values: &[f64]| values.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(", ");
    println!();
    println!(
        "| writers | sent to | throughput vs etcd TLS, each run | median | p99 vs etcd TLS, each \
         run | median |"
    );
    println!("|---:|---|---|---:|---|---:|");
    for line in judged {
        println!(
            "| {} | {} | {} | {:.2}x | {} | {:.2}x |",
            line.writers,
            line.sent_to.name(),
            list(&line.throughput),
            median(&mut line.throughput.clone()),
            list(&line.p99),
            median(&mut line.p99.clone()),
        );
    }
}

fn print_verdict(judged: &[Judged], runs: &[Vec<Row>]) {
    let of = if runs.len() > 1 { "median " } else { "" };
    println!();
    if !judged.iter().any(|line| line.writers == 64) {
        println!("target throughput at 64 writers: not judged, BENCH_WRITERS has no 64");
    }
    for line in judged.iter().filter(|line| line.writers == 64) {
        let ratio = median(&mut line.throughput.clone());
        let met = if ratio >= THROUGHPUT_TARGET_AT_64 { "met" } else { "missed" };
        println!(
            "target throughput >= {THROUGHPUT_TARGET_AT_64}x etcd TLS at 64 writers (to the {}): \
             {met} ({of}{ratio:.2}x)",
            line.sent_to.name()
        );
    }
    let worse: Vec<String> = judged
        .iter()
        .filter(|line| {
            let ratio = median(&mut line.p99.clone());
            ratio.is_nan() || ratio > 1.0
        })
        .map(|line| format!("{} writers to the {}", line.writers, line.sent_to.name()))
        .collect();
    if worse.is_empty() {
        println!("target p99 no worse than etcd TLS's at every level: met");
    } else {
        println!(
            "target p99 no worse than etcd TLS's at every level: missed at {}",
            worse.join(", ")
        );
    }
    for (run, rows) in runs.iter().enumerate() {
        for row in rows {
            let systems = [("KMS", &row.kms), ("etcd", &row.etcd), ("etcd TLS", &row.etcd_tls)];
            for (system, m) in systems {
                if m.errors > 0 {
                    let last = m.last_error.as_deref().unwrap_or("");
                    println!(
                        "run {}: {system}, {} writers to the {}: {} failed writes (last: {last})",
                        run + 1,
                        row.writers,
                        row.sent_to.name(),
                        m.errors
                    );
                }
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut runs = Vec::with_capacity(settings.runs);
    for run in 1..=settings.runs {
        let root =
            tempfile::Builder::new().prefix("cluster-vs-etcd-").tempdir().context("temp dir")?;
        let (fsync_p50_ms, fsync_p99_ms) = fsync_probe(root.path())?;
        if settings.runs > 1 {
            eprintln!("run {run} of {}", settings.runs);
        }
        let rows = match runtime.block_on(start_and_measure(&settings, root.path())) {
            Ok(rows) => rows,
            Err(error) => {
                let kept = root.keep();
                return Err(error.context(format!("data and logs kept in {}", kept.display())));
            }
        };
        println!(
            "Run {run} of {}: three KMAs vs three etcd members (plaintext, then TLS) on loopback, \
             {} s measured after {} s warm-up per level; one synced 512-byte append on this disk: \
             p50 {fsync_p50_ms:.2} ms, p99 {fsync_p99_ms:.2} ms",
            settings.runs,
            settings.measured.as_secs(),
            settings.warmup.as_secs()
        );
        println!();
        print_table(&rows);
        print_cpu_table(&rows);
        print_breakdowns(&rows);
        println!();
        runs.push(rows);
    }
    let judged = judge(&runs);
    if runs.len() > 1 {
        print_medians(&judged);
    }
    print_verdict(&judged, &runs);
    Ok(())
}
