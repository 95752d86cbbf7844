//! The agent path through three real KMAs on loopback (issue #5, point 7): get-keys requests
//! served by one KMA from its local state, and new-key assignments committed through the
//! cluster, at 1, 16 and 64 concurrent drives. Prints one table.
//!
//! `cargo bench -p node --bench agent_path`. `BENCH_SECS` (default 5) is the measured time of
//! each run, `BENCH_DRIVES` (default `1,16,64`) the concurrency levels.
//!
//! Each drive is one task with its own TLS connection (HTTP/1.1, kept alive) and the enrolled
//! agent's certificate, sending one request after another, all to kma1's service listener (a
//! follower or the leader: kma1 forwards to the leader as any KMA does). The drives speak HTTP
//! through hyper directly, not through `reqwest` as the agent client library does: on these two
//! shared cores `reqwest` cost the bench client about 17 µs of CPU per read, more than kma1
//! spent serving it, and that CPU was taken from the KMA being measured. Each row also gives the
//! CPU time the KMAs and the bench client spent per operation. A read is `GET keys of a data
//! unit`. The data units for the assignments are created first, in a phase of their own (a
//! committed command each; its row is printed too); an assignment is then `POST write-key`
//! (from BOT) on one of them: a pool key is activated and associated by a committed command,
//! and its value unwrapped for the drive. Refused or failed requests are counted, not timed.
//! The pool is filled before the runs and its low water mark is below what a run can drain, so
//! no refill runs beside the measured requests.
//!
//! The KMIP rows (issue 19) are the same requests as a tape library sends them, to kma1's KMIP
//! listener: each client is one TLS 1.3 connection with the same agent certificate (a KMIP
//! client is an agent; how its certificate was issued does not change the request path), one
//! KMIP 1.4 message at a time. A Get reads a key the client created before the run; a
//! Create+Get is the Tape Library profile's first write (TL-M-2): one batch, a Create with the
//! tape's Application Specific Information, then a Get of the placeholder, committed through
//! the cluster before the value is returned.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_gateway::wire::{CreateDataUnitRequest, WireRequestId, WriteKeyRequest};
use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{header, Method, Request};
use hyper_util::rt::TokioIo;
use kmip::attribute::Attribute;
use kmip::enums::Operation;
use kmip::message::ProtocolVersion;
use kmip::{tag, Item, Value};
use node::client::KmaClient;
use statemachine::cluster::KeyPoolLimits;
use statemachine::Command;
use tokio::sync::Mutex;

mod support;
use support::cpu_seconds;

const BASE_PORT: u16 = 25000;
const DAY_MS: u64 = 86_400_000;
const LATENCIES_PER_DRIVE_MAX: usize = 2_000_000;
/// Pool keys made ready before the runs; with the default `BENCH_SECS` they drain less.
const POOL_HIGH_WATER: u32 = 250_000;
const POOL_LOW_WATER: u32 = 2_000;
const POOL_FILL_MAX: Duration = Duration::from_secs(180);

struct Run {
    ops: usize,
    errors: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    /// CPU seconds spent meanwhile by the three KMAs and by the bench process.
    kmas_cpu_s: f64,
    client_cpu_s: f64,
}

impl Run {
    fn row(&self, what: &str, drives: usize) -> String {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let pick = |q: f64| {
            let at = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
            sorted.get(at).copied().unwrap_or(0) as f64 / 1000.0
        };
        let per_op_us = |seconds: f64| seconds * 1e6 / self.ops.max(1) as f64;
        format!(
            "| {what} | {drives} | {:.0} | {:.2} | {:.2} | {} | {:.1} | {:.1} |",
            self.ops as f64 / self.elapsed.as_secs_f64(),
            pick(0.50),
            pick(0.99),
            self.errors,
            per_op_us(self.kmas_cpu_s),
            per_op_us(self.client_cpu_s),
        )
    }
}

async fn ok(admin: &KmaClient, address: &str, command: Command, passphrase: Option<&str>) {
    let applied = admin.propose_with_passphrase(address, None, command, passphrase).await;
    match applied {
        Ok(Ok(applied)) if applied.result.is_ok() => {}
        other => panic!("setup command refused: {:?}", other.map(|r| r.map(|a| a.result))),
    }
}

/// Policy, group, a large pool and agent `bench` with access; returns its credentials.
async fn setup(
    admin: &KmaClient,
    address: &str,
    service: &str,
    ca_pem: &str,
) -> agent_gateway::AgentCredentials {
    let roles = statemachine::RoleSet::of(statemachine::Role::SecurityOfficer)
        .with(statemachine::Role::ComplianceOfficer)
        .with(statemachine::Role::Operator);
    ok(admin, address, Command::SetUserRoles { id: "admin".into(), roles }, None).await;
    // A pool below its low mark is refilled up to the high one: this fills it now, and
    // `wait_for_full_pool` lowers the low mark once it is full.
    let limits = KeyPoolLimits { low_water: POOL_HIGH_WATER - 1, high_water: POOL_HIGH_WATER };
    ok(admin, address, Command::SetKeyPoolLimits(limits), None).await;
    let policy = Command::CreateKeyPolicy {
        name: "bench".into(),
        encryption_period_ms: 30 * DAY_MS,
        cryptoperiod_ms: 365 * DAY_MS,
        allow_export: false,
        allow_import: false,
    };
    ok(admin, address, policy, None).await;
    ok(
        admin,
        address,
        Command::CreateKeyGroup { name: "bench".into(), policy: "bench".into() },
        None,
    )
    .await;
    let agent = Command::CreateAgent {
        id: "bench".into(),
        site: "east".into(),
        passphrase_verifier: Vec::new(),
    };
    ok(admin, address, agent, Some("bench-agent-passphrase")).await;
    let assign = Command::AssignKeyGroupToAgent { agent: "bench".into(), group: "bench".into() };
    ok(admin, address, assign, None).await;
    agent_gateway::client::enroll(service, ca_pem, "bench", "bench-agent-passphrase")
        .await
        .expect("enrollment")
}

/// One drive's connection to a service listener: TLS 1.3 with the agent's certificate and
/// HTTP/1.1 kept alive, one request at a time.
struct DriveConnection {
    authority: String,
    sender: http1::SendRequest<Full<Bytes>>,
}

type Drive = Arc<Mutex<DriveConnection>>;

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS 1.3 connection to a service listener with the agent's certificate, Nagle off.
async fn tls_connect(
    credentials: &agent_gateway::AgentCredentials,
    address: &str,
) -> anyhow::Result<TlsStream> {
    let tls = node::transport::tls::client_config_from_pem(
        &credentials.ca_pem,
        &credentials.certificate_pem,
        &credentials.private_key_pem,
    )?;
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_nodelay(true)?;
    let name = node::transport::tls::server_name(address).map_err(anyhow::Error::msg)?;
    tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, stream)
        .await
        .with_context(|| format!("TLS handshake with {address}"))
}

impl DriveConnection {
    async fn connect(
        credentials: &agent_gateway::AgentCredentials,
        service: &str,
    ) -> anyhow::Result<Drive> {
        let tls = tls_connect(credentials, service).await?;
        let (sender, connection) = http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ended = connection.await;
        });
        let connection = DriveConnection { authority: service.to_owned(), sender };
        Ok(Arc::new(Mutex::new(connection)))
    }

    /// Sends one request; the status and the whole body of the answer.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
        let mut request = Request::builder().method(method).uri(path);
        request = request.header(header::HOST, &self.authority);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body.map(Bytes::from).unwrap_or_default()))?;
        self.sender.ready().await?;
        let answer = self.sender.send_request(request).await?;
        let status = answer.status();
        let body = answer.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

fn json(value: &impl serde::Serialize) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(value).expect("a request body encodes"))
}

/// A request ID: one client ID per drive and level, so that no two drives share a session.
fn request_id(drives: usize, drive: usize, seq: u64) -> WireRequestId {
    WireRequestId { client: ((drives as u64) << 32) | drive as u64, seq }
}

/// Creates a data unit (not timed); its ID in hex.
async fn new_data_unit(drive: &Drive, tag: &str, request_id: WireRequestId) -> String {
    let body = json(&CreateDataUnitRequest { external_tag: tag.into(), request_id });
    let path = "/agent/v1/data-units";
    let (status, answer) =
        drive.lock().await.send(Method::POST, path, body).await.expect("create data unit");
    assert!(status.is_success(), "create data unit: {status}");
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("json");
    answer["data_unit"].as_str().expect("data unit id").to_string()
}

/// What one timed request gave: its latency, a failure, or nothing left to do for this drive.
enum Done {
    Took(Duration),
    Failed,
    Exhausted,
}

async fn measure<F, Fut>(drives: usize, duration: Duration, kma_pids: &[u32], work: F) -> Run
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Done> + Send,
{
    let cpu = || -> (f64, f64) {
        let kmas = cpu_seconds(kma_pids).expect("KMA CPU time");
        (kmas, cpu_seconds(&[std::process::id()]).expect("bench CPU time"))
    };
    let cpu_before = cpu();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for drive in 0..drives {
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0usize);
            let mut n = 0u64;
            while Instant::now() < deadline && latencies.len() < LATENCIES_PER_DRIVE_MAX {
                match work(drive, n).await {
                    Done::Took(took) => latencies.push(took.as_micros() as u64),
                    Done::Failed => errors += 1,
                    Done::Exhausted => break,
                }
                n += 1;
            }
            (latencies, errors)
        }));
    }
    let (mut latencies_us, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (latencies, failed) = task.await.expect("drive task");
        latencies_us.extend(latencies);
        errors += failed;
    }
    let elapsed = started.elapsed();
    let cpu_after = cpu();
    Run {
        ops: latencies_us.len(),
        errors,
        elapsed,
        latencies_us,
        kmas_cpu_s: cpu_after.0 - cpu_before.0,
        client_cpu_s: cpu_after.1 - cpu_before.1,
    }
}

/// Sends one request and times it until the whole answer has arrived; with `parse` the JSON
/// answer is decoded too (creates need the data unit ID; for reads and assignments the bench
/// client's own parsing would only take CPU from the KMAs on these two cores).
async fn timed(
    drive: &Drive,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    parse: bool,
) -> (Done, Option<serde_json::Value>) {
    let mut drive = drive.lock().await;
    let started = Instant::now();
    let Ok((status, answer)) = drive.send(method, path, body).await else {
        return (Done::Failed, None);
    };
    let took = started.elapsed();
    if !status.is_success() {
        return (Done::Failed, None);
    }
    if !parse {
        return (Done::Took(took), None);
    }
    match serde_json::from_slice::<serde_json::Value>(&answer) {
        Ok(answer) => (Done::Took(took), Some(answer)),
        Err(_) => (Done::Failed, None),
    }
}

/// One KMIP client's connection, one message at a time.
type KmipClient = Arc<Mutex<TlsStream>>;

const KMIP_VERSION: ProtocolVersion = ProtocolVersion::V1_4;
const KMIP_ANSWER_MAX: Duration = Duration::from_secs(30);

/// TL-M-2's first write of tape `tape`: a Create of an AES-256 key carrying the tape's
/// Application Specific Information, then a Get of the ID placeholder, in one ordered batch.
fn kmip_create_and_get(tape: u128) -> Vec<u8> {
    let asi = Value::Structure(vec![
        Item::text(tag::APPLICATION_NAMESPACE, "LIBRARY-LTO"),
        Item::text(tag::APPLICATION_DATA, format!("{tape:064X}")),
    ]);
    let template = vec![
        Attribute::new("Cryptographic Algorithm", Value::Enumeration(3)).to_pair(),
        Attribute::new("Cryptographic Length", Value::Integer(256)).to_pair(),
        Attribute::new("Cryptographic Usage Mask", Value::Integer(12)).to_pair(),
        Attribute::new("Application Specific Information", asi).to_pair(),
    ];
    let create = vec![
        Item::enumeration(tag::OBJECT_TYPE, 2),
        Item::structure(tag::TEMPLATE_ATTRIBUTE, template),
    ];
    let batch = vec![(Operation::CREATE, create), (Operation::GET, Vec::new())];
    encoded(kmip::client::request(KMIP_VERSION, true, batch))
}

fn kmip_get(key_id: &str) -> Vec<u8> {
    let get = vec![Item::text(tag::UNIQUE_IDENTIFIER, key_id)];
    encoded(kmip::client::request(KMIP_VERSION, false, vec![(Operation::GET, get)]))
}

fn encoded(message: Item) -> Vec<u8> {
    message.encode().expect("a request within the codec's bounds").to_vec()
}

/// A tape number no other drive, level or request uses.
fn tape(drives: usize, drive: usize, n: u64) -> u128 {
    ((drives as u128) << 96) | ((drive as u128) << 64) | u128::from(n)
}

/// Sends one KMIP message and times it until its response is read and decoded; a response
/// with any failed batch item counts as a failure.
async fn kmip_timed(client: &KmipClient, request: &[u8]) -> Done {
    let mut stream = client.lock().await;
    let started = Instant::now();
    let exchanged =
        agent_gateway::kmip::client::exchange(&mut *stream, request, KMIP_ANSWER_MAX).await;
    let took = started.elapsed();
    let Ok(response) = exchanged else {
        return Done::Failed;
    };
    let items = kmip::client::batch_items(&response);
    if items.is_empty() || items.iter().any(|item| kmip::client::outcome(item).is_err()) {
        return Done::Failed;
    }
    Done::Took(took)
}

/// The KMIP runs of one level: Get of a key each client created before, then Create+Get.
async fn kmip_level(
    drives: usize,
    duration: Duration,
    credentials: &agent_gateway::AgentCredentials,
    kmip: &str,
    kma_pids: &[u32],
) -> anyhow::Result<Vec<String>> {
    let mut clients = Vec::new();
    let mut gets = Vec::new();
    let identity = (credentials.certificate_pem.as_str(), credentials.private_key_pem.as_str());
    for drive in 0..drives {
        let mut stream =
            agent_gateway::kmip::client::connect(kmip, &credentials.ca_pem, identity).await?;
        let first = kmip_create_and_get(tape(drives, drive, 0));
        let response =
            agent_gateway::kmip::client::exchange(&mut stream, &first, KMIP_ANSWER_MAX).await?;
        let items = kmip::client::batch_items(&response);
        let created = items.first().context("an empty KMIP response")?;
        let payload = kmip::client::outcome(created)
            .map_err(|failure| anyhow::anyhow!("the first KMIP Create: {}", failure.message))?;
        let key_id = kmip::client::unique_identifier(payload).context("a created key's ID")?;
        gets.push(kmip_get(key_id));
        clients.push(KmipClient::new(Mutex::new(stream)));
    }
    let (clients, gets) = (Arc::new(clients), Arc::new(gets));
    let clients_g = clients.clone();
    let reads = measure(drives, duration, kma_pids, move |drive, _| {
        let (clients, gets) = (clients_g.clone(), gets.clone());
        async move { kmip_timed(&clients[drive], &gets[drive]).await }
    })
    .await;
    let creates = measure(drives, duration, kma_pids, move |drive, n| {
        let clients = clients.clone();
        let request = kmip_create_and_get(tape(drives, drive, 1 + n));
        async move { kmip_timed(&clients[drive], &request).await }
    })
    .await;
    Ok(vec![
        reads.row("KMIP Get, one KMA (local reads)", drives),
        creates.row("KMIP Create+Get in one batch, 3 KMAs", drives),
    ])
}

fn settings() -> (Duration, Vec<usize>) {
    let secs = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let drives = std::env::var("BENCH_DRIVES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 64]);
    (Duration::from_secs(secs), drives)
}

/// The three runs of one concurrency level: reads, creates, assignments; one row each.
async fn level(
    drives: usize,
    duration: Duration,
    credentials: &agent_gateway::AgentCredentials,
    service: &str,
    kma_pids: &[u32],
) -> anyhow::Result<Vec<String>> {
    let mut rows = Vec::new();
    let mut connections = Vec::new();
    for _ in 0..drives {
        connections.push(DriveConnection::connect(credentials, service).await?);
    }
    let connections = Arc::new(connections);
    let mut units = Vec::new();
    for (drive, connection) in connections.iter().enumerate() {
        let tag = format!("R{drive:05}");
        let unit = new_data_unit(connection, &tag, request_id(drives, drive, 0)).await;
        let path = format!("/agent/v1/data-units/{unit}/write-key");
        let body =
            json(&WriteKeyRequest { from_bot: true, request_id: request_id(drives, drive, 1) });
        let (status, _) = connection.lock().await.send(Method::POST, &path, body).await?;
        anyhow::ensure!(status.is_success(), "first write key: {status}");
        units.push(unit);
    }
    let read_paths: Arc<Vec<String>> =
        Arc::new(units.iter().map(|unit| format!("/agent/v1/data-units/{unit}/keys")).collect());
    let connections_r = connections.clone();
    let reads = measure(drives, duration, kma_pids, move |drive, _| {
        let (connections, paths) = (connections_r.clone(), read_paths.clone());
        async move { timed(&connections[drive], Method::GET, &paths[drive], None, false).await.0 }
    })
    .await;
    rows.push(reads.row("get keys, one KMA (local reads)", drives));

    // The data units to assign keys to, one committed command each.
    let created: Vec<std::sync::Mutex<Vec<String>>> =
        (0..drives).map(|_| std::sync::Mutex::new(Vec::new())).collect();
    let created = Arc::new(created);
    let (connections_c, created_c) = (connections.clone(), created.clone());
    let creates = measure(drives, duration, kma_pids, move |drive, n| {
        let (connections, created) = (connections_c.clone(), created_c.clone());
        let body = json(&CreateDataUnitRequest {
            external_tag: "A".into(),
            request_id: request_id(drives, drive, 2 + n),
        });
        async move {
            let connection = &connections[drive];
            let path = "/agent/v1/data-units";
            let (done, answer) = timed(connection, Method::POST, path, body, true).await;
            if let Some(unit) = answer.as_ref().and_then(|b| b["data_unit"].as_str()) {
                created[drive].lock().expect("units").push(unit.to_owned());
            }
            done
        }
    })
    .await;
    rows.push(creates.row("create data unit, 3 KMAs", drives));

    let assigns = measure(drives, duration, kma_pids, move |drive, n| {
        let connections = connections.clone();
        let unit = created[drive].lock().expect("units").get(n as usize).cloned();
        let body = json(&WriteKeyRequest {
            from_bot: true,
            request_id: request_id(drives, drive, 10_000_000 + n),
        });
        let path = unit.map(|u| format!("/agent/v1/data-units/{u}/write-key"));
        async move {
            match path {
                Some(path) => timed(&connections[drive], Method::POST, &path, body, false).await.0,
                None => Done::Exhausted,
            }
        }
    })
    .await;
    rows.push(assigns.row("new-key assignments, 3 KMAs", drives));
    Ok(rows)
}

/// Waits until the pool holds `POOL_HIGH_WATER` ready keys, then lowers its low water mark to
/// `POOL_LOW_WATER`, so that no refill (nor a key becoming ready) is replicated beside the
/// measured requests: with the default `BENCH_SECS` the runs drain less than the gap.
async fn wait_for_full_pool(admin: &KmaClient, address: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let status = admin.status(address).await?;
        eprintln!(
            "filling the key pool: {} ready, {} generated of {POOL_HIGH_WATER}",
            status.key_pool_ready, status.key_pool_generated
        );
        if status.key_pool_ready >= POOL_HIGH_WATER as usize {
            let limits = KeyPoolLimits { low_water: POOL_LOW_WATER, high_water: POOL_HIGH_WATER };
            ok(admin, address, Command::SetKeyPoolLimits(limits), None).await;
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < POOL_FILL_MAX,
            "the pool was not full within {POOL_FILL_MAX:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (duration, levels) = settings();
    let root = tempfile::tempdir()?;
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_kma"));
    let dir = root.path().join("kms");
    let children =
        node::setup::local::start(binary, &dir, 3, BASE_PORT).await.context("local cluster")?;
    let kma_pids: Vec<u32> = children.iter().filter_map(tokio::process::Child::id).collect();
    let address = format!("127.0.0.1:{}", BASE_PORT + 1);
    let secrets = node::setup::read_secrets(&dir.join(node::setup::local::SECRETS_FILE))?;
    let admin = node::setup::local::officer_session(&dir.join("kma1"), &address, &secrets).await?;
    let service = format!("127.0.0.1:{}", BASE_PORT + 101);
    let kmip = format!("127.0.0.1:{}", BASE_PORT + 201);
    let ca_pem = node::pki::read(&dir.join("kma1/tls/ca.pem"))?;
    let credentials = setup(&admin, &address, &service, &ca_pem).await;
    wait_for_full_pool(&admin, &address).await?;

    let mut rows = Vec::new();
    for &drives in &levels {
        rows.extend(level(drives, duration, &credentials, &service, &kma_pids).await?);
        rows.extend(kmip_level(drives, duration, &credentials, &kmip, &kma_pids).await?);
    }
    println!(
        "| operation | drives | ops/s | p50 ms | p99 ms | errors | KMAs CPU µs/op | bench client CPU µs/op |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}
