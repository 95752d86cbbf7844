//! drive-sim against three running KMAs while the KMAs the drives use are killed (SPEC A2–A6,
//! C1, C7): the fleet goes on through the others and every record reads back exactly.

use crate::support;

use std::time::Duration;

use agent_gateway::drive_sim::{run_fleet, verify_fleet, DriveMode, FleetConfig};
use agent_gateway::{AgentClient, ClientOptions};
use support::agents::{ca_pem, catalogue, DAY_MS};
use support::{done_if, no_change, wait_until, Cluster};

const DRIVES: usize = 4;

/// Data operations the fleet completes in each phase of the run (all KMAs up; kma2 down;
/// after the leader was killed; to the end): a phase is work done, not seconds. Both modes
/// send about one agent request per operation, so each phase is hundreds of requests spread
/// over the KMAs; at the rates measured here (StorageTek 700-950 ops/s, LTO4 80-250) a phase
/// lasts about as long as the 3 s phases of the timed run this replaces.
fn ops_per_phase(mode: DriveMode) -> u64 {
    match mode {
        DriveMode::StorageTek => 2_000,
        DriveMode::Lto4 => 500,
    }
}

fn fleet_config(tape_dir: &std::path::Path, mode: DriveMode) -> FleetConfig {
    FleetConfig {
        drives: DRIVES,
        mode,
        tapes_per_drive: 2,
        block_len: 512,
        // Three phases must complete; each may overshoot its target while the test restarts
        // and kills KMAs, so the run has room beyond them.
        ops: Some(5 * ops_per_phase(mode)),
        duration: None,
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

/// Waits until the fleet has completed `phase` more operations than `before`.
async fn progressed(bar: &indicatif::ProgressBar, (before, phase): (u64, u64), what: &str) -> u64 {
    let target = before + phase;
    let what = format!("{target} data operations completed ({what})");
    wait_until(Duration::from_secs(60), &what, async || {
        let now = ops_so_far(bar);
        done_if(now >= target, bar.message())
    })
    .await;
    ops_so_far(bar)
}

/// Setup: three KMAs, one enrolled agent, four drives in `mode` spreading their requests over
/// all three KMAs. Action: a run of four phases of `ops_per_phase` data operations; after the
/// first kma2 is killed (-9); after the second it is restarted and the leader is killed; then,
/// with one KMA still down, every tape is read back whole.
/// Expect: the drives complete operations in every phase (they go on through the KMAs left),
/// no drive gives up, zero verification failures in the run and in the read-back, and the
/// read-back (after both kills) verifies every record written.
async fn fleet_survives_kills(mode: DriveMode) {
    let mut cluster = Cluster::start(3, no_change).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (DAY_MS, 2 * DAY_MS)).await;
    let credentials = agent_gateway::client::enroll(
        &cluster.nodes[1].service,
        &ca_pem(&cluster),
        "drive1",
        "drive-one-passphrase",
    )
    .await
    .expect("enrollment");
    let services = cluster.services();
    let addresses = vec![services[1].clone(), services[0].clone(), services[2].clone()];
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

    let phase = ops_per_phase(mode);
    let before_kill = progressed(&bar, (0, phase), "with all KMAs up").await;
    cluster.kill9(1).await;
    let after_kill = progressed(&bar, (before_kill, phase), "while kma2 was down").await;
    cluster.restart(1).await;
    let leader =
        cluster.admin.status(&cluster.nodes[2].address).await.ok().and_then(|s| s.leader_id);
    if let Some(leader) = leader.and_then(|id| cluster.node_index(id)).filter(|index| *index != 1) {
        cluster.kill9(leader).await;
    }
    // Counted from the leader's kill: the drives went on while kma2 restarted.
    let at_leader_kill = ops_so_far(&bar);
    eprintln!("ops: {before_kill} before the kill, {after_kill} while kma2 was down, {at_leader_kill} when the leader was killed");
    progressed(&bar, (at_leader_kill, phase / 2), "after the leader was killed").await;
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
    fleet_survives_kills(DriveMode::StorageTek).await;
}

/// LTO4 drives (keys fetched per read on demand, write keys after repositioning; SPEC A4); see
/// [`fleet_survives_kills`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_a6_lto4_fleet_survives_kills_of_the_kmas_it_uses_with_no_verification_failure() {
    fleet_survives_kills(DriveMode::Lto4).await;
}
