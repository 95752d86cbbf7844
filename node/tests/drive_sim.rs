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
        duration: Some(Duration::from_secs(13)),
        tape_dir: tape_dir.to_path_buf(),
        seed: 7,
    }
}

/// Completed data operations so far, from the fleet's progress line ("N ops, ...").
fn ops_so_far(bar: &indicatif::ProgressBar) -> u64 {
    let message = bar.message();
    let count = message.split(" ops").next().and_then(|n| n.trim().parse().ok());
    count.unwrap_or(0)
}

/// Waits `seconds`, then asserts the fleet completed more operations than `before`.
async fn progressed(bar: &indicatif::ProgressBar, before: u64, seconds: u64, what: &str) -> u64 {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let now = ops_so_far(bar);
    assert!(now > before, "no operation completed {what} ({before} before, {now} after)");
    now
}

/// Setup: three KMAs, one enrolled agent, four drives in `mode` spreading their requests over
/// all three KMAs. Action: a 13 s run; after 3 s kma2 is killed (-9); 3 s later it is restarted
/// and the leader is killed; then, with one KMA still down, every tape is read back whole.
/// Expect: the drives complete operations in every phase (they go on through the KMAs left),
/// no drive gives up, zero verification failures in the run and in the read-back, and the
/// read-back (after both kills) verifies every record written.
async fn fleet_survives_kills(base: u16, mode: DriveMode) {
    let mut cluster = Cluster::start(3, base, no_change).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (DAY_MS, 2 * DAY_MS)).await;
    let credentials = agent_gateway::client::enroll(
        &service(base, 2),
        &ca_pem(&cluster),
        "drive1",
        "drive-one-passphrase",
    )
    .await
    .expect("enrollment");
    let addresses = vec![service(base, 2), service(base, 1), service(base, 3)];
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
    let config = fleet_config(tapes.path(), mode);
    let bar = indicatif::ProgressBar::hidden();
    let run = tokio::spawn(run_fleet(clients.clone(), config.clone(), Some(bar.clone())));

    let before_kill = progressed(&bar, 0, 3, "with all KMAs up").await;
    cluster.kill9(1).await;
    let after_kill = progressed(&bar, before_kill, 3, "while kma2 was down").await;
    cluster.restart(1).await;
    let leader =
        cluster.admin.status(&cluster.nodes[2].address).await.ok().and_then(|s| s.leader_id);
    if let Some(leader) = leader.map(|id| id as usize - 1).filter(|index| *index != 1) {
        cluster.kill9(leader).await;
    }
    progressed(&bar, after_kill, 4, "after the leader was killed").await;
    let report = run.await.expect("fleet task").expect("fleet ran");
    println!("{report}");
    assert_eq!(report.verification_failures, 0, "{report}");
    assert_eq!(report.drives_given_up, 0, "{report}");
    assert!(report.ops > 0 && report.records_written > 0, "{report}");

    let verified = verify_fleet(clients, config, None).await.expect("read-back ran");
    println!("{verified}");
    assert_eq!(verified.verification_failures, 0, "{verified}");
    assert_eq!(verified.drives_given_up, 0, "{verified}");
    assert!(verified.records_verified > 0, "{verified}");
}

/// StorageTek drives (prefetch on mount, disassociation on a write from BOT); see
/// [`fleet_survives_kills`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a6_storagetek_fleet_survives_kills_of_the_kmas_it_uses_with_no_verification_failure() {
    fleet_survives_kills(BASE, DriveMode::StorageTek).await;
}

/// LTO4 drives (keys fetched per read on demand, write keys after repositioning; SPEC A4); see
/// [`fleet_survives_kills`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_a6_lto4_fleet_survives_kills_of_the_kmas_it_uses_with_no_verification_failure() {
    fleet_survives_kills(BASE + 40, DriveMode::Lto4).await;
}
