//! Drives against the compose cluster, as an Operator would set them up: a key policy and group,
//! a pool, an agent with access, its enrollment through a published service port, and agent
//! clients that know the three KMAs by their published addresses.

use std::time::Duration;

use agent_gateway::{AgentClient, AgentCredentials, ClientOptions};
use node::client::KmaClient;
use statemachine::cluster::KeyPoolLimits;
use statemachine::{Command, Role, RoleSet};

use crate::cluster::{DockerCluster, SERVICES};

/// The service (agent) port inside each container (`KMS_SERVICE` in the compose file).
pub const SERVICE_PORT: u16 = 7101;
pub const AGENT: &str = "drive1";
const AGENT_PASSPHRASE: &str = "drive-one-passphrase";
const DAY_MS: u64 = 86_400_000;

async fn ok(admin: &KmaClient, address: &str, command: Command, passphrase: Option<&str>) {
    let kind = command.kind();
    let applied = admin
        .propose_with_passphrase(address, None, command, passphrase)
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"))
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    assert!(applied.result.is_ok(), "{kind:?}: {:?}", applied.result);
}

/// Policy and group `tapes` (a day's encryption period), a pool of 40 to 80 keys, and agent
/// `drive1` at site `east` with access to `tapes`; the bootstrap officer takes the roles the
/// setup needs. Through the management listener of `service`.
pub async fn catalogue(cluster: &DockerCluster, service: &str) {
    let address = cluster.address(service).await.unwrap_or_else(|e| panic!("{e:#}"));
    let admin = &cluster.admin;
    let roles =
        RoleSet::of(Role::SecurityOfficer).with(Role::ComplianceOfficer).with(Role::Operator);
    ok(admin, &address, Command::SetUserRoles { id: "admin".into(), roles }, None).await;
    let limits = KeyPoolLimits { low_water: 40, high_water: 80 };
    ok(admin, &address, Command::SetKeyPoolLimits(limits), None).await;
    let policy = Command::CreateKeyPolicy {
        name: "tapes".into(),
        encryption_period_ms: DAY_MS,
        cryptoperiod_ms: 2 * DAY_MS,
        allow_export: false,
        allow_import: false,
    };
    ok(admin, &address, policy, None).await;
    let group = Command::CreateKeyGroup { name: "tapes".into(), policy: "tapes".into() };
    ok(admin, &address, group, None).await;
    let agent =
        Command::CreateAgent { id: AGENT.into(), site: "east".into(), passphrase_verifier: vec![] };
    ok(admin, &address, agent, Some(AGENT_PASSPHRASE)).await;
    let assign = Command::AssignKeyGroupToAgent { agent: AGENT.into(), group: "tapes".into() };
    ok(admin, &address, assign, None).await;
}

/// `127.0.0.1:PORT` of `service`'s published service port.
pub async fn service_address(cluster: &DockerCluster, service: &str) -> String {
    let address = cluster.compose.port(service, SERVICE_PORT).await;
    address.unwrap_or_else(|e| panic!("{e:#}"))
}

/// The published service addresses of all three KMAs, in the order of [`SERVICES`].
pub async fn service_addresses(cluster: &DockerCluster) -> Vec<String> {
    let mut addresses = Vec::new();
    for service in SERVICES {
        addresses.push(service_address(cluster, service).await);
    }
    addresses
}

/// Enrolls `drive1` through `service`'s published service port, trusting the exported CA.
pub async fn enroll(cluster: &DockerCluster, service: &str) -> AgentCredentials {
    let ca = std::fs::read_to_string(cluster.export_dir().join("tls/ca.pem"))
        .unwrap_or_else(|e| panic!("exported CA: {e}"));
    let address = service_address(cluster, service).await;
    agent_gateway::client::enroll(&address, &ca, AGENT, AGENT_PASSPHRASE)
        .await
        .unwrap_or_else(|e| panic!("enrollment through {service}: {e}"))
}

/// Short timeouts, so a drive fails over within a second or two. Discovery would name the KMAs
/// by their addresses inside the compose network, which the host cannot reach: the client keeps
/// the published addresses it was given.
pub fn options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(1),
        discovery_interval: Duration::from_secs(3600),
        discovery: false,
        failover_pause: Duration::from_secs(1),
        rounds: 4,
        round_pause: Duration::from_millis(100),
        site: None,
        cluster_epoch_seen: 0,
    }
}

pub fn client(addresses: &[String], credentials: &AgentCredentials) -> AgentClient {
    AgentClient::from_credentials(addresses, credentials, options())
        .unwrap_or_else(|e| panic!("agent client: {e}"))
}

/// One new data unit asked of the single KMA at `address`, with no failover: the site tests
/// need the answer of that KMA itself (a refusal is the point), which the agent client would
/// hide by trying the next KMA. Returns the HTTP status and the JSON body.
pub async fn create_on(
    credentials: &AgentCredentials,
    address: &str,
    external_tag: &str,
    request: (u64, u64),
    timeout: Duration,
) -> (u16, serde_json::Value) {
    let tls = node::transport::tls::client_config_from_pem(
        &credentials.ca_pem,
        &credentials.certificate_pem,
        &credentials.private_key_pem,
    )
    .unwrap_or_else(|e| panic!("agent TLS: {e}"));
    let http = node::kma::https_client(tls).unwrap_or_else(|e| panic!("HTTPS client: {e}"));
    let (client, seq) = request;
    let body = serde_json::json!({
        "external_tag": external_tag,
        "request_id": {"client": format!("{client:016x}"), "seq": seq},
    });
    let response = http
        .post(format!("https://{address}/agent/v1/data-units"))
        .json(&body)
        .timeout(timeout)
        .send()
        .await
        .unwrap_or_else(|e| panic!("the KMA at {address} answers its drives: {e}"));
    let status = response.status().as_u16();
    let answer =
        response.json().await.unwrap_or_else(|e| panic!("a JSON answer from {address}: {e}"));
    (status, answer)
}
