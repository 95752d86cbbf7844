//! The agent path through three real KMAs on loopback (issue #5, point 7): get-keys requests
//! served by one KMA from its local state, and new-key assignments committed through the
//! cluster, at 1, 16 and 64 concurrent drives. Prints one table.
//!
//! `cargo bench -p node --bench agent_path`. `BENCH_SECS` (default 5) is the measured time of
//! each run, `BENCH_DRIVES` (default `1,16,64`) the concurrency levels.
//!
//! Each drive is one task with its own TLS connection (HTTP/2) and the enrolled agent's
//! certificate, sending one request after another, all to kma1's service listener (a follower
//! or the leader: kma1 forwards to the leader as any KMA does). A read is `GET keys of a data
//! unit`. The data units for the assignments are created first, in a phase of their own (a
//! committed command each; its row is printed too); an assignment is then `POST write-key`
//! (from BOT) on one of them: a pool key is activated and associated by a committed command,
//! and its value unwrapped for the drive. Refused or failed requests are counted, not timed.
//! The pool is filled before the runs and its low water mark is below what a run can drain, so
//! no refill runs beside the measured requests.

use std::time::{Duration, Instant};

use agent_gateway::wire::{CreateDataUnitRequest, WireRequestId, WriteKeyRequest};
use anyhow::Context;
use node::client::KmaClient;
use statemachine::cluster::KeyPoolLimits;
use statemachine::Command;

const BASE_PORT: u16 = 25000;
const DAY_MS: u64 = 86_400_000;
const LATENCIES_PER_DRIVE_MAX: usize = 2_000_000;

struct Run {
    ops: usize,
    errors: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Run {
    fn row(&self, what: &str, drives: usize) -> String {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let pick = |q: f64| {
            let at = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
            sorted.get(at).copied().unwrap_or(0) as f64 / 1000.0
        };
        format!(
            "| {what} | {drives} | {:.0} | {:.2} | {:.2} | {} |",
            self.ops as f64 / self.elapsed.as_secs_f64(),
            pick(0.50),
            pick(0.99),
            self.errors
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
    // Filled once up to the high mark; the runs drain less than the gap, so no refill starts.
    let limits = KeyPoolLimits { low_water: 2_000, high_water: 120_000 };
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

fn drive_client(credentials: &agent_gateway::AgentCredentials) -> reqwest::Client {
    let tls = node::tls::client_config_from_pem(
        &credentials.ca_pem,
        &credentials.certificate_pem,
        &credentials.private_key_pem,
    )
    .expect("agent TLS");
    node::kma::https_client(tls).expect("client")
}

/// A request ID: one client ID per drive and level, so that no two drives share a session.
fn request_id(drives: usize, drive: usize, seq: u64) -> WireRequestId {
    WireRequestId { client: ((drives as u64) << 32) | drive as u64, seq }
}

/// Creates a data unit through `service` (not timed); its ID in hex.
async fn new_data_unit(
    client: &reqwest::Client,
    service: &str,
    tag: &str,
    request_id: WireRequestId,
) -> String {
    let body = CreateDataUnitRequest { external_tag: tag.into(), request_id };
    let answer: serde_json::Value = client
        .post(format!("https://{service}/agent/v1/data-units"))
        .json(&body)
        .send()
        .await
        .expect("create data unit")
        .json()
        .await
        .expect("json");
    answer["data_unit"].as_str().expect("data unit id").to_string()
}

/// What one timed request gave: its latency, a failure, or nothing left to do for this drive.
enum Done {
    Took(Duration),
    Failed,
    Exhausted,
}

async fn measure<F, Fut>(drives: usize, duration: Duration, work: F) -> Run
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Done> + Send,
{
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
    Run { ops: latencies_us.len(), errors, elapsed: started.elapsed(), latencies_us }
}

/// Sends `request` and times it until the whole answer has arrived; `parse` decodes the JSON
/// (creates need the data unit ID; for reads and assignments the bench client's own parsing
/// would only take CPU from the KMAs on these two cores).
async fn timed(request: reqwest::RequestBuilder, parse: bool) -> (Done, Option<serde_json::Value>) {
    let started = Instant::now();
    let Ok(answer) = request.send().await else { return (Done::Failed, None) };
    if !answer.status().is_success() {
        return (Done::Failed, None);
    }
    let Ok(body) = answer.bytes().await else { return (Done::Failed, None) };
    let took = started.elapsed();
    if !parse {
        return (Done::Took(took), None);
    }
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(body) => (Done::Took(took), Some(body)),
        Err(_) => (Done::Failed, None),
    }
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
) -> anyhow::Result<Vec<String>> {
    let service = service.to_owned();
    let mut rows = Vec::new();
    let clients: Vec<reqwest::Client> = (0..drives).map(|_| drive_client(credentials)).collect();
    let mut units = Vec::new();
    for (drive, client) in clients.iter().enumerate() {
        let tag = format!("R{drive:05}");
        let unit = new_data_unit(client, &service, &tag, request_id(drives, drive, 0)).await;
        let write = format!("https://{service}/agent/v1/data-units/{unit}/write-key");
        let body = WriteKeyRequest { from_bot: true, request_id: request_id(drives, drive, 1) };
        client.post(write).json(&body).send().await?.error_for_status()?;
        units.push(unit);
    }
    let (clients_r, units_r, service_r) = (clients.clone(), units.clone(), service.clone());
    let reads = measure(drives, duration, move |drive, _| {
        let client = clients_r[drive].clone();
        let url = format!("https://{service_r}/agent/v1/data-units/{}/keys", units_r[drive]);
        async move { timed(client.get(url), false).await.0 }
    })
    .await;
    rows.push(reads.row("get keys, one KMA (local reads)", drives));

    // The data units to assign keys to, one committed command each.
    let created: Vec<std::sync::Mutex<Vec<String>>> =
        (0..drives).map(|_| std::sync::Mutex::new(Vec::new())).collect();
    let created = std::sync::Arc::new(created);
    let (clients_c, service_c, created_c) = (clients.clone(), service.clone(), created.clone());
    let creates = measure(drives, duration, move |drive, n| {
        let (client, created) = (clients_c[drive].clone(), created_c.clone());
        let body = CreateDataUnitRequest {
            external_tag: "A".into(),
            request_id: request_id(drives, drive, 2 + n),
        };
        let url = format!("https://{service_c}/agent/v1/data-units");
        async move {
            let (done, body) = timed(client.post(url).json(&body), true).await;
            if let Some(unit) = body.as_ref().and_then(|b| b["data_unit"].as_str()) {
                created[drive].lock().expect("units").push(unit.to_owned());
            }
            done
        }
    })
    .await;
    rows.push(creates.row("create data unit, 3 KMAs", drives));

    let service_w = service.clone();
    let assigns = measure(drives, duration, move |drive, n| {
        let client = clients[drive].clone();
        let unit = created[drive].lock().expect("units").get(n as usize).cloned();
        let body = WriteKeyRequest {
            from_bot: true,
            request_id: request_id(drives, drive, 10_000_000 + n),
        };
        let url = unit.map(|u| format!("https://{service_w}/agent/v1/data-units/{u}/write-key"));
        async move {
            match url {
                Some(url) => timed(client.post(url).json(&body), false).await.0,
                None => Done::Exhausted,
            }
        }
    })
    .await;
    rows.push(assigns.row("new-key assignments, 3 KMAs", drives));
    Ok(rows)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (duration, levels) = settings();
    let root = tempfile::tempdir()?;
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_kma"));
    let dir = root.path().join("kms");
    let _children =
        node::local::start(binary, &dir, 3, BASE_PORT).await.context("local cluster")?;
    let admin = KmaClient::admin(&dir.join("kma1"))?;
    let address = format!("127.0.0.1:{}", BASE_PORT + 1);
    let service = format!("127.0.0.1:{}", BASE_PORT + 101);
    let ca_pem = node::pki::read(&dir.join("kma1/tls/ca.pem"))?;
    let credentials = setup(&admin, &address, &service, &ca_pem).await;
    eprintln!("filling the key pool...");
    tokio::time::sleep(Duration::from_secs(15)).await;

    let mut rows = Vec::new();
    for &drives in &levels {
        rows.extend(level(drives, duration, &credentials, &service).await?);
    }
    println!("| operation | drives | ops/s | p50 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}
