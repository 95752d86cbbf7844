//! One KMA cut off from the other two while drives keep working (SPEC "Availability trade-off",
//! C2, A6): the real `kma` image, three KMAs on a compose network, the cut made with iptables
//! inside the cut-off KMA's network namespace, so that the drives (on the host, through the
//! published ports) still reach it.
//!
//! Needs Docker Engine, docker-compose, nsenter and iptables (run as root); without them it
//! fails and says so.

use std::time::{Duration, Instant};

use agent_gateway::drive_sim::{run_fleet, verify_fleet, DriveMode, FleetConfig};
use agent_gateway::wire::ErrorBody;
use agent_gateway::AgentCredentials;
use chaos_tests::agents;
use chaos_tests::cluster::{DockerCluster, SERVICES};
use chaos_tests::workload::Acked;

/// For the cut-off KMA's answer to a new tape (a follower refuses at once).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const DRIVES: usize = 4;

/// Waits until `service` reports no leader (it has noticed that it is alone).
async fn wait_leaderless(cluster: &DockerCluster, service: &str) {
    let deadline = Instant::now() + ELECTION_TIMEOUT;
    loop {
        let status = cluster.status(service).await.unwrap_or_else(|e| panic!("{e:#}"));
        if status.leader_id.is_none() || status.role == "candidate" {
            return;
        }
        assert!(Instant::now() < deadline, "{service} still follows a leader: {status:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A new tape asked of the cut-off follower alone: refused at once, retryably (503).
async fn assert_new_tape_refused_at_once(credentials: &AgentCredentials, address: &str) {
    let asked = Instant::now();
    let request = (0xc0ff_ee00, 1);
    let (status, answer) =
        agents::create_on(credentials, address, "CUT001", request, REFUSAL_TIMEOUT).await;
    let body: ErrorBody = serde_json::from_value(answer.clone()).expect("an error body");
    assert_eq!(status, 503, "{answer}");
    assert!(body.retryable, "a KMA without a majority refuses retryably: {answer}");
    assert!(asked.elapsed() < Duration::from_secs(3), "refused at once, not after a timeout");
}

/// The value of key `key_id` read over KMIP (a Get, KMIP 1.4) from `service`'s published KMIP
/// port, with the drive's certificate: a KMIP client is an agent.
async fn kmip_get(
    cluster: &DockerCluster,
    service: &str,
    credentials: &AgentCredentials,
    key_id: &str,
) -> Vec<u8> {
    use kmip::{enums::Operation, tag, Item, ProtocolVersion};
    let published = cluster.compose.port(service, agent_gateway::kmip::KMIP_PORT).await;
    let address = published.unwrap_or_else(|e| panic!("{e:#}"));
    let identity = (credentials.certificate_pem.as_str(), credentials.private_key_pem.as_str());
    let connected = agent_gateway::kmip::client::connect(&address, &credentials.ca_pem, identity);
    let mut stream = connected.await.expect("the KMIP port of the compose KMA");
    let get = vec![Item::text(tag::UNIQUE_IDENTIFIER, key_id)];
    let request = kmip::client::request(ProtocolVersion::V1_4, false, vec![(Operation::GET, get)]);
    let request = request.encode().expect("encode");
    let exchanged =
        agent_gateway::kmip::client::exchange(&mut stream, &request, Duration::from_secs(10));
    let response = exchanged.await.expect("a KMIP response");
    let items = kmip::client::batch_items(&response);
    let payload = kmip::client::outcome(items[0]).expect("the Get succeeds");
    kmip::client::key_material(payload).expect("a key value").to_vec()
}

/// Setup: the compose cluster, a catalogue and an enrolled drive; a data unit with its key
/// written through follower F. Action: F is cut off from the other two KMAs (its packets from
/// them are dropped; the host still reaches it) while a fleet of four StorageTek drives that
/// know all three KMAs runs for 12 s; then the cut heals. Expect: F serves the existing key
/// from its own state, on the agent protocol and over KMIP; F refuses a new data unit at once with a retryable 503 (it has no
/// majority); the fleet's writes succeed on the other two (operations complete during the cut,
/// no verification failure, no drive gives up); after the heal F catches up and the three state
/// digests are equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2_a_kma_cut_off_serves_existing_keys_refuses_new_ones_and_drives_write_elsewhere() {
    let started = Instant::now();
    let cluster = DockerCluster::start().await.unwrap_or_else(|e| panic!("{e:#}"));
    let leader = cluster.leader(ELECTION_TIMEOUT).await.unwrap_or_else(|e| panic!("{e:#}"));
    let cut = SERVICES.into_iter().find(|service| *service != leader).expect("a follower");
    let others: Vec<&str> = SERVICES.into_iter().filter(|service| *service != cut).collect();
    agents::catalogue(&cluster, leader).await;
    let credentials = agents::enroll(&cluster, leader).await;
    let cut_address = agents::service_address(&cluster, cut).await;
    let alone = agents::client(std::slice::from_ref(&cut_address), &credentials);
    let unit = loop {
        // The pool fills within a leader tick or two after the catalogue.
        match alone.create_data_unit("VOL001").await {
            Ok(created) => match alone.write_key(created.data_unit, true).await {
                Ok(written) => break (created.data_unit, written),
                Err(error) => eprintln!("waiting for the pool: {error}"),
            },
            Err(error) => eprintln!("waiting for the pool: {error}"),
        }
        assert!(started.elapsed() < Duration::from_secs(400), "no key before the cut");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (unit, written) = unit;

    let tapes = tempfile::tempdir().expect("tape dir");
    let config = FleetConfig {
        drives: DRIVES,
        mode: DriveMode::StorageTek,
        tapes_per_drive: 2,
        block_len: 512,
        ops: None,
        duration: Some(Duration::from_secs(12)),
        tape_dir: tapes.path().to_path_buf(),
        seed: 11,
    };
    let addresses = agents::service_addresses(&cluster).await;
    let fleet: Vec<_> = (0..DRIVES).map(|_| agents::client(&addresses, &credentials)).collect();
    cluster.compose.cut_off(cut, &others).await.unwrap_or_else(|e| panic!("cut off {cut}: {e:#}"));
    let bar = indicatif::ProgressBar::hidden();
    let run = tokio::spawn(run_fleet(fleet.clone(), config.clone(), Some(bar.clone())));
    wait_leaderless(&cluster, cut).await;

    let read = alone.keys(unit).await.expect("the cut-off KMA serves an existing key");
    assert_eq!(read.keys.len(), 1, "{read:?}");
    assert_eq!(*read.keys[0].value, *written.key.value);
    let over_kmip = kmip_get(&cluster, cut, &credentials, &written.key.key_id.to_string()).await;
    assert_eq!(over_kmip, *written.key.value, "a library at that site reads the same key");
    assert_new_tape_refused_at_once(&credentials, &cut_address).await;

    let report = run.await.expect("fleet task").expect("fleet ran");
    println!("during the cut: {report}");
    assert!(report.ops > 0 && report.records_written > 0, "{report}");
    assert_eq!(report.verification_failures, 0, "{report}");
    assert_eq!(report.drives_given_up, 0, "{report}");

    cluster.compose.heal(cut, &others).await.unwrap_or_else(|e| panic!("heal {cut}: {e:#}"));
    let verified = verify_fleet(fleet, config, None).await.expect("read-back ran");
    assert_eq!(verified.verification_failures, 0, "{verified}");
    assert!(verified.records_verified > 0, "{verified}");
    let leader_status = cluster.status(leader).await.unwrap_or_else(|e| panic!("{e:#}"));
    let last = leader_status.last_log_index.unwrap_or(0);
    let caught_up = cluster.wait_ready(cut, last, Duration::from_secs(60)).await;
    caught_up.unwrap_or_else(|e| panic!("{cut} after the heal: {e:#}"));
    let digest = cluster.check_converged(&Acked::default()).await;
    let digest = digest.unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "{cut} cut off for the fleet's run ({} ops elsewhere); digests equal at index {}; {:?}",
        report.ops,
        digest.applied_index,
        started.elapsed()
    );
}
