//! Agents against a test cluster: the catalogue a drive needs (pool, policy, group, agent),
//! enrollment, and a write key that waits for the pool to fill.

use std::time::Duration;

use agent_gateway::{AgentClient, AgentCredentials};
use node::client::KmaClient;
use statemachine::cluster::KeyPoolLimits;
use statemachine::{Command, DataUnitId};

use super::Cluster;

pub const DAY_MS: u64 = 86_400_000;

pub async fn ok(admin: &KmaClient, address: &str, command: Command, passphrase: Option<&str>) {
    let applied = admin
        .propose_with_passphrase(address, None, command, passphrase)
        .await
        .expect("reachable")
        .expect("proposed");
    assert!(applied.result.is_ok(), "{:?}", applied.result);
}

/// A small pool, policy and group `tapes` with the given periods, and agent `drive1` with
/// access to it (passphrase `drive-one-passphrase`).
pub async fn catalogue(cluster: &Cluster, address: &str, (encryption_ms, crypto_ms): (u64, u64)) {
    let admin = &cluster.admin;
    // The bootstrap officer gets the other roles for the setup.
    let roles = statemachine::RoleSet::of(statemachine::Role::SecurityOfficer)
        .with(statemachine::Role::ComplianceOfficer)
        .with(statemachine::Role::Operator);
    ok(admin, address, Command::SetUserRoles { id: "admin".into(), roles }, None).await;
    let limits = KeyPoolLimits { low_water: 20, high_water: 40 };
    ok(admin, address, Command::SetKeyPoolLimits(limits), None).await;
    let policy = Command::CreateKeyPolicy {
        name: "tapes".into(),
        encryption_period_ms: encryption_ms,
        cryptoperiod_ms: crypto_ms,
        allow_export: false,
        allow_import: false,
    };
    ok(admin, address, policy, None).await;
    let group = Command::CreateKeyGroup { name: "tapes".into(), policy: "tapes".into() };
    ok(admin, address, group, None).await;
    let agent = Command::CreateAgent {
        id: "drive1".into(),
        site: "east".into(),
        passphrase_verifier: Vec::new(),
    };
    ok(admin, address, agent, Some("drive-one-passphrase")).await;
    let assign = Command::AssignKeyGroupToAgent { agent: "drive1".into(), group: "tapes".into() };
    ok(admin, address, assign, None).await;
}

pub fn ca_pem(cluster: &Cluster) -> String {
    node::pki::read(&cluster.nodes[0].data_dir.join("tls/ca.pem")).expect("CA")
}

/// A write key for `unit`, retried while the pool fills after the setup.
pub async fn write_key_for(
    client: &AgentClient,
    unit: DataUnitId,
    from_bot: bool,
) -> agent_gateway::client::WriteKey {
    let what = format!("a write key for {unit} (the pool fills after the setup)");
    super::wait_until(Duration::from_secs(30), &what, async || {
        client.write_key(unit, from_bot).await.map_err(|error| error.to_string())
    })
    .await
}

/// A new data unit tagged `tag` and its first write key (from BOT).
pub async fn write_key(client: &AgentClient, tag: &str) -> (DataUnitId, [u8; 32]) {
    let unit = client.create_data_unit(tag).await.expect("data unit").data_unit;
    (unit, *write_key_for(client, unit, true).await.key.value)
}

/// A drive's raw HTTPS client with its enrolled certificate: for requests the agent library
/// would never send twice on its own (a retry with a fixed request ID).
pub fn raw_drive(credentials: &agent_gateway::AgentCredentials) -> reqwest::Client {
    let tls = node::transport::tls::client_config_from_pem(
        &credentials.ca_pem,
        &credentials.certificate_pem,
        &credentials.private_key_pem,
    )
    .expect("agent TLS");
    node::kma::https_client(tls).expect("client")
}

/// Enrolls `drive1` (made by [`catalogue`]) through the service listener `enroll_at`.
pub async fn enroll_drive1(cluster: &Cluster, enroll_at: &str) -> AgentCredentials {
    agent_gateway::client::enroll(enroll_at, &ca_pem(cluster), "drive1", "drive-one-passphrase")
        .await
        .expect("enrollment")
}

/// Enrolls `drive1` through the service listener `enroll_at` and gives a client that talks to
/// `only` and nothing else (discovery off): for tests that must know which KMA answers.
pub async fn pinned_drive(cluster: &Cluster, enroll_at: &str, only: &str) -> AgentClient {
    let credentials = enroll_drive1(cluster, enroll_at).await;
    let options = agent_gateway::ClientOptions { discovery: false, ..Default::default() };
    AgentClient::from_credentials(&[only.to_owned()], &credentials, options).expect("drive")
}
