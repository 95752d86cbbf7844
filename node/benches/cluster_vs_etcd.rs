//! Three KMAs against three etcd members, side by side in one run, all on loopback: committed
//! writes per second and per-write latency at 1, 16 and 64 concurrent writers (issue #3).
//!
//! `cargo bench -p node --bench cluster_vs_etcd` (etcd from `scripts/install-bench-deps.sh`).
//! `BENCH_SECS` (default 10) is the measured time of each run, `BENCH_WARMUP_SECS` (default 2)
//! the unmeasured lead-in, `BENCH_WRITERS` (default `1,16,64`) the concurrency levels.
//!
//! Each writer is one task with its own connection, sending one write after another. A KMS
//! write is a `SetKeyPoolLimits` proposal through the admin client; an etcd write is a `Put` of
//! a 16-byte value over etcd's own gRPC API (a minimal unary gRPC client over hyper's HTTP/2,
//! because the etcd client crates compile `.proto` files with `protoc`). A write counts only once
//! the cluster answered that it was committed and applied. Both systems keep their default
//! durability: every KMA syncs its RocksDB WAL before acknowledging a Raft append; every etcd
//! member fsyncs its WAL. The two clusters share the same two cores and disk, so each run has the
//! machine to itself apart from the other cluster's idle heartbeats.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use node::client::KmaClient;
use statemachine::cluster::KeyPoolLimits;
use statemachine::Command;
use tokio::process::Child;

mod support;
use support::cpu_seconds;

/// KMA management ports are `KMA_BASE_PORT + 1..=3`, service ports `+ 101..=103`.
const KMA_BASE_PORT: u16 = 24000;
/// etcd member `n` (1..=3) serves clients on `ETCD_CLIENT_PORT_BASE + n`, peers on `+ 10 + n`.
const ETCD_CLIENT_PORT_BASE: u16 = 23000;
const MEMBERS: usize = 3;
/// Latencies kept per writer and run; a writer stops early rather than grow past it.
const LATENCIES_PER_WRITER_MAX: usize = 1_000_000;
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const ETCD_WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// Synced appends of the fsync probe that reports what one durable write costs on this disk.
const FSYNC_PROBES: usize = 200;

struct Settings {
    measured: Duration,
    warmup: Duration,
    levels: Vec<usize>,
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
        Ok(Settings { measured, warmup: seconds("BENCH_WARMUP_SECS", 2)?, levels })
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
        let mut cluster = KmsCluster { children, admin, leader, follower };
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
// The etcd side.

struct EtcdCluster {
    children: Vec<Child>,
    leader: String,
    follower: String,
}

fn etcd_client_address(member: usize) -> String {
    format!("127.0.0.1:{}", ETCD_CLIENT_PORT_BASE + member as u16)
}

fn etcd_peer_url(member: usize) -> String {
    format!("http://127.0.0.1:{}", ETCD_CLIENT_PORT_BASE + 10 + member as u16)
}

/// One etcd member with default durability (no `--unsafe-no-fsync`), its log in `etcd.log`.
fn spawn_etcd_member(root: &Path, member: usize) -> anyhow::Result<Child> {
    let data_dir = root.join(format!("etcd{member}"));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let log_path = data_dir.join("etcd.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let initial_cluster: Vec<String> =
        (1..=MEMBERS).map(|n| format!("e{n}={}", etcd_peer_url(n))).collect();
    let client_url = format!("http://{}", etcd_client_address(member));
    tokio::process::Command::new("etcd")
        .args(["--name", &format!("e{member}")])
        .arg("--data-dir")
        .arg(data_dir.join("data"))
        .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &etcd_peer_url(member)])
        .args(["--initial-advertise-peer-urls", &etcd_peer_url(member)])
        .args(["--initial-cluster", &initial_cluster.join(",")])
        .args(["--initial-cluster-state", "new", "--initial-cluster-token", "bench"])
        .args(["--logger", "zap", "--log-outputs", "stderr"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the etcd log handle")?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting etcd (install it with scripts/install-bench-deps.sh)")
}

impl EtcdCluster {
    async fn start(root: &Path) -> anyhow::Result<EtcdCluster> {
        let dir = root.join("etcd");
        let mut children = Vec::new();
        for member in 1..=MEMBERS {
            children.push(spawn_etcd_member(&dir, member)?);
        }
        let mut cluster = EtcdCluster { children, leader: String::new(), follower: String::new() };
        match etcd_leader_and_follower().await {
            Ok((leader, follower)) => {
                cluster.leader = leader;
                cluster.follower = follower;
            }
            Err(error) => {
                cluster.stop().await;
                let logs = dir.join("etcd*/etcd.log");
                return Err(error.context(format!("etcd did not start (logs: {})", logs.display())));
            }
        }
        let mut probe = cluster.writer(SentTo::Leader).await?;
        if let Err(error) = probe.put(0, 0).await {
            cluster.stop().await;
            bail!("the first etcd write was refused: {error}");
        }
        Ok(cluster)
    }

    async fn writer(&self, sent_to: SentTo) -> anyhow::Result<Writer> {
        let address = match sent_to {
            SentTo::Leader => &self.leader,
            SentTo::Follower => &self.follower,
        };
        Ok(Writer::Etcd(GrpcConnection::connect(address).await?))
    }

    async fn stop(&mut self) {
        stop_all(&mut self.children).await;
    }
}

/// Asks every member (JSON gateway `POST /v3/maintenance/status`) who leads, until all agree.
async fn etcd_leader_and_follower() -> anyhow::Result<(String, String)> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let mut members = Vec::new();
        for member in 1..=MEMBERS {
            let url = format!("http://{}/v3/maintenance/status", etcd_client_address(member));
            let status: Option<serde_json::Value> = match http.post(url).body("{}").send().await {
                Ok(response) => response.json().await.ok(),
                Err(_) => None,
            };
            let id_of = |value: &serde_json::Value| value.as_str().map(str::to_string);
            members.push(status.map(|s| (id_of(&s["header"]["member_id"]), id_of(&s["leader"]))));
        }
        let all: Option<Vec<(Option<String>, Option<String>)>> = members.into_iter().collect();
        if let Some(all) = all {
            let leader = all[0].1.clone();
            let at = all.iter().position(|(id, _)| leader.is_some() && *id == leader);
            if let (Some(at), true) = (at, all.iter().all(|(_, l)| *l == leader)) {
                let follower = (at + 1) % MEMBERS;
                return Ok((etcd_client_address(at + 1), etcd_client_address(follower + 1)));
            }
        }
        ensure!(Instant::now() < deadline, "the etcd members did not agree on a leader in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A unary gRPC client for etcd's `KV/Put` on one HTTP/2 connection (h2c, as etcd serves gRPC
/// without TLS), enough to drive etcd the way its own Go client does.
struct GrpcConnection {
    uri: String,
    sender: http2::SendRequest<Full<Bytes>>,
    connection: tokio::task::JoinHandle<()>,
}

impl GrpcConnection {
    async fn connect(address: &str) -> anyhow::Result<GrpcConnection> {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .with_context(|| format!("connecting to etcd at {address}"))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP/2 handshake with etcd at {address}"))?;
        let connection = tokio::spawn(async move {
            let _ended = connection.await;
        });
        Ok(GrpcConnection {
            uri: format!("http://{address}/etcdserverpb.KV/Put"),
            sender,
            connection,
        })
    }

    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let mut message = Vec::with_capacity(key.len() + value.len() + 4);
        protobuf_bytes_field(&mut message, 1, key);
        protobuf_bytes_field(&mut message, 2, value);
        let mut frame = Vec::with_capacity(message.len() + 5);
        frame.push(0); // not compressed
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(&message);
        let request = hyper::Request::post(&self.uri)
            .header(hyper::header::CONTENT_TYPE, "application/grpc")
            .header(hyper::header::TE, "trailers")
            .body(Full::new(Bytes::from(frame)))
            .map_err(|e| format!("building the request: {e}"))?;
        self.sender.ready().await.map_err(|e| format!("connection: {e}"))?;
        let call = async {
            let response = self.sender.send_request(request).await.map_err(|e| e.to_string())?;
            let headers_status = response.headers().get("grpc-status").cloned();
            let body = response.into_body().collect().await.map_err(|e| e.to_string())?;
            let trailers_status = body.trailers().and_then(|t| t.get("grpc-status").cloned());
            match trailers_status.or(headers_status) {
                Some(status) if status == "0" => Ok(()),
                Some(status) => Err(format!("grpc-status {status:?}")),
                None => Err("no grpc-status in the answer".to_string()),
            }
        };
        tokio::time::timeout(ETCD_WRITE_TIMEOUT, call)
            .await
            .map_err(|_| format!("no answer within {ETCD_WRITE_TIMEOUT:?}"))?
    }
}

impl Drop for GrpcConnection {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Appends a length-delimited protobuf field (wire type 2).
fn protobuf_bytes_field(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push(field << 3 | 2);
    let mut length = bytes.len();
    while length >= 0x80 {
        out.push((length as u8 & 0x7f) | 0x80);
        length >>= 7;
    }
    out.push(length as u8);
    out.extend_from_slice(bytes);
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
) -> anyhow::Result<Measured> {
    let measure_from = Instant::now() + settings.warmup;
    let stop_at = measure_from + settings.measured;
    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(index, writer)| tokio::spawn(drive(writer, index, measure_from, stop_at)))
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = (cpu_seconds(pids)?, cpu_seconds(&[std::process::id()])?);
    let mut tallies = Vec::new();
    for task in tasks {
        tallies.push(task.await.context("a writer task panicked")?);
    }
    let cpu_after = (cpu_seconds(pids)?, cpu_seconds(&[std::process::id()])?);
    let finished = tallies.iter().filter_map(|t| t.finished).max().unwrap_or(stop_at);
    let elapsed_s = finished.duration_since(measure_from).as_secs_f64();
    let mut latencies: Vec<u32> =
        tallies.iter().flat_map(|t| t.latencies_us.iter().copied()).collect();
    latencies.sort_unstable();
    Ok(Measured {
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
}

async fn measure_all(
    settings: &Settings,
    kms: &KmsCluster,
    etcd: &EtcdCluster,
) -> anyhow::Result<Vec<Row>> {
    let kms_pids = pids_of(&kms.children)?;
    let etcd_pids = pids_of(&etcd.children)?;
    let mut rows = Vec::new();
    for sent_to in [SentTo::Leader, SentTo::Follower] {
        for &writers in &settings.levels {
            eprintln!("KMS, {writers} writers to the {}...", sent_to.name());
            let kms_writers =
                (0..writers).map(|_| kms.writer(sent_to)).collect::<Result<_, _>>()?;
            let kms_measured = run_writers(kms_writers, &kms_pids, settings).await?;
            eprintln!("etcd, {writers} writers to the {}...", sent_to.name());
            let mut etcd_writers = Vec::with_capacity(writers);
            for _ in 0..writers {
                etcd_writers.push(etcd.writer(sent_to).await?);
            }
            let etcd_measured = run_writers(etcd_writers, &etcd_pids, settings).await?;
            rows.push(Row { writers, sent_to, kms: kms_measured, etcd: etcd_measured });
        }
    }
    Ok(rows)
}

async fn start_and_measure(settings: &Settings, root: &Path) -> anyhow::Result<Vec<Row>> {
    let mut kms = KmsCluster::start(root).await?;
    let mut etcd = match EtcdCluster::start(root).await {
        Ok(etcd) => etcd,
        Err(error) => {
            kms.stop().await;
            return Err(error);
        }
    };
    let rows = measure_all(settings, &kms, &etcd).await;
    kms.stop().await;
    etcd.stop().await;
    rows
}

fn print_table(rows: &[Row]) {
    println!(
        "| writers | sent to | KMS writes/s | KMS p50 ms | KMS p99 ms | etcd writes/s | etcd p50 ms \
         | etcd p99 ms | throughput ratio | p99 ratio |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let (kms, etcd) = (&row.kms, &row.etcd);
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2}x | {:.2}x |",
            row.writers,
            row.sent_to.name(),
            kms.writes_per_second,
            kms.p50_ms,
            kms.p99_ms,
            etcd.writes_per_second,
            etcd.p50_ms,
            etcd.p99_ms,
            kms.writes_per_second / etcd.writes_per_second,
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
        "| writers | sent to | KMAs CPU µs/write | KMS bench client µs/write | KMS cores busy \
         | etcd CPU µs/write | etcd bench client µs/write | etcd cores busy |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let (kms, etcd) = (&row.kms, &row.etcd);
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} |",
            row.writers,
            row.sent_to.name(),
            per_write_us(kms.cluster_cpu_s, kms),
            per_write_us(kms.bench_cpu_s, kms),
            busy(kms),
            per_write_us(etcd.cluster_cpu_s, etcd),
            per_write_us(etcd.bench_cpu_s, etcd),
            busy(etcd),
        );
    }
}

fn print_verdict(rows: &[Row]) {
    let leader_64 = rows.iter().find(|r| r.writers == 64 && r.sent_to == SentTo::Leader);
    if let Some(row) = leader_64 {
        let ratio = row.kms.writes_per_second / row.etcd.writes_per_second;
        let met = if ratio >= 1.5 { "met" } else { "missed" };
        println!();
        println!(
            "target throughput >= 1.5x etcd at 64 writers (to the leader): {met} ({ratio:.2}x)"
        );
    }
    let worse: Vec<String> = rows
        .iter()
        .filter(|r| r.kms.p99_ms.is_nan() || r.kms.p99_ms > r.etcd.p99_ms)
        .map(|r| format!("{} writers to the {}", r.writers, r.sent_to.name()))
        .collect();
    if worse.is_empty() {
        println!("target p99 no worse than etcd's at every level: met");
    } else {
        println!("target p99 no worse than etcd's at every level: missed at {}", worse.join(", "));
    }
    for row in rows {
        for (system, m) in [("KMS", &row.kms), ("etcd", &row.etcd)] {
            if m.errors > 0 {
                let last = m.last_error.as_deref().unwrap_or("");
                println!(
                    "{system}, {} writers to the {}: {} failed writes (last: {last})",
                    row.writers,
                    row.sent_to.name(),
                    m.errors
                );
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
    let root = tempfile::Builder::new().prefix("cluster-vs-etcd-").tempdir().context("temp dir")?;
    let (fsync_p50_ms, fsync_p99_ms) = fsync_probe(root.path())?;
    let rows = match runtime.block_on(start_and_measure(&settings, root.path())) {
        Ok(rows) => rows,
        Err(error) => {
            let kept = root.keep();
            return Err(error.context(format!("data and logs kept in {}", kept.display())));
        }
    };
    println!(
        "Three KMAs vs three etcd members on loopback, {} s measured after {} s warm-up per run; \
         one synced 512-byte append on this disk: p50 {fsync_p50_ms:.2} ms, p99 {fsync_p99_ms:.2} ms",
        settings.measured.as_secs(),
        settings.warmup.as_secs()
    );
    println!();
    print_table(&rows);
    print_cpu_table(&rows);
    print_verdict(&rows);
    Ok(())
}
