//! drive-sim against three running KMAs while the KMAs the drives use are killed (SPEC A2–A6,
//! C1, C7): the fleet goes on through the others and every record reads back exactly.
//! Management ports 17700-17799 (service ports 500 above).

mod support;

use std::time::Duration;

use agent_gateway::drive_sim::{run_fleet, verify_fleet, DriveMode, FleetConfig};
use agent_gateway::{AgentClient, ClientOptions};
use support::agents::{ca_pem, catalogue, service, DAY_MS};
use support::{no_change, Cluster};

const BASE: u16 = 17700;
const DRIVES: usize = 4;

fn fleet_config(tape_dir: &std::path::Path, mode: DriveMode) -> FleetConfig {
    FleetConfig {
        drives: DRIVES,
        mode,
        tapes_per_drive: 2,
        block_len: 512,
        ops: None,
        duration: Some(Duration::from_secs(12)),
        tape_dir: tape_dir.to_path_buf(),
        seed: 7,
    }
}

/// Setup: three KMAs, one enrolled agent, four StorageTek drives each preferring kma2 (their
/// list starts with it). Action: a 12 s run; after 3 s kma2 is killed (-9), after 7 s it is
/// restarted and the leader is killed; then, with one KMA still down, every tape is read back
/// whole. Expect: zero verification failures in the run and in the read-back, and the read-back
/// (after both kills) verifies every record written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a6_fleet_survives_the_loss_of_the_kma_it_uses_with_no_verification_failure() {
    let mut cluster = Cluster::start(3, BASE, no_change).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (DAY_MS, 2 * DAY_MS)).await;
    let credentials = agent_gateway::client::enroll(
        &service(BASE, 2),
        &ca_pem(&cluster),
        "drive1",
        "drive-one-passphrase",
    )
    .await
    .expect("enrollment");
    let addresses = vec![service(BASE, 2), service(BASE, 1), service(BASE, 3)];
    let options = ClientOptions {
        request_timeout: Duration::from_secs(2),
        failover_pause: Duration::from_secs(1),
        rounds: 4,
        ..ClientOptions::default()
    };
    let clients: Vec<AgentClient> = (0..DRIVES)
        .map(|_| {
            AgentClient::from_credentials(&addresses, &credentials, options.clone())
                .expect("client")
        })
        .collect();
    let tapes = tempfile::tempdir().expect("tape dir");
    let config = fleet_config(tapes.path(), DriveMode::StorageTek);
    let run = tokio::spawn(run_fleet(clients.clone(), config.clone(), None));

    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.kill9(1).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.restart(1).await;
    let leader =
        cluster.admin.status(&cluster.nodes[2].address).await.ok().and_then(|s| s.leader_id);
    if let Some(leader) = leader.map(|id| id as usize - 1).filter(|index| *index != 1) {
        cluster.kill9(leader).await;
    }
    let report = run.await.expect("fleet task").expect("fleet ran");
    println!("{report}");
    assert_eq!(report.verification_failures, 0, "{report}");
    assert!(report.ops > 0 && report.records_written > 0, "{report}");

    let verified = verify_fleet(clients, config, None).await.expect("read-back ran");
    println!("{verified}");
    assert_eq!(verified.verification_failures, 0, "{verified}");
    assert!(verified.records_verified > 0, "{verified}");
}
