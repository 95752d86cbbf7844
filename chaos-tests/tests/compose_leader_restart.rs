//! The leader's container fails under a stream of writes and comes back (SPEC C1, C7): the real
//! `kma` image, three KMAs on a compose network, faults by the Docker engine.
//!
//! Needs Docker Engine and docker-compose; without them it fails and says so. It builds the KMA
//! image from `target/release/kma` (and the base image on first use: about a minute).

use std::time::{Duration, Instant};

use chaos_tests::cluster::{DockerCluster, SERVICES};
use chaos_tests::workload::{Acked, Writer};

/// How the leader's container is taken away.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `docker kill -s KILL`: the process dies with no shutdown at all.
    Kill,
    /// `docker stop`: SIGTERM, a clean shutdown.
    Stop,
}

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);
/// Acknowledged writes wanted before the fault, during the outage and after the restart.
const WRITES_PER_STEP: usize = 40;

/// Setup: the compose cluster (kma1 at `east`, kma2 at `west`, kma3 at `north`), a writer of `CreateUser`
/// commands through a follower. Action: `docker kill -s KILL` the leader's container, keep
/// writing, start it again; then the same with `docker stop` on the new leader. Expect: a new
/// leader each time, writes acknowledged during each outage, the restarted KMA catches up; at the
/// end every acknowledged write is on every KMA and the three state digests are equal at the
/// same applied index. (SPEC C1, C7)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_leader_container_stopped_and_restarted_digests_converge() {
    let started = Instant::now();
    let cluster = DockerCluster::start().await.unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("compose project {} formed in {:?}", cluster.compose.project(), started.elapsed());
    let acked = Acked::default();
    leader_outage(&cluster, Fault::Kill, "kill", &acked).await;
    leader_outage(&cluster, Fault::Stop, "stop", &acked).await;
    let digest = cluster.check_converged(&acked).await.unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "{} acknowledged writes on all three KMAs; digests equal at index {}; {:?} in all",
        acked.count(),
        digest.applied_index,
        started.elapsed()
    );
}

/// One fault on the leader while a writer goes through a follower that stays up.
async fn leader_outage(cluster: &DockerCluster, fault: Fault, prefix: &str, acked: &Acked) {
    let leader = cluster.leader(ELECTION_TIMEOUT).await.unwrap_or_else(|e| panic!("{e:#}"));
    let follower = SERVICES.into_iter().find(|service| *service != leader).expect("a follower");
    let address = cluster.address(follower).await.unwrap_or_else(|e| panic!("{e:#}"));
    let writer = Writer::spawn(cluster.admin.clone(), address, prefix, acked.clone());
    wait_for_acks(acked, WRITES_PER_STEP, "before the fault").await;

    let result = match fault {
        Fault::Kill => cluster.compose.kill(leader, "KILL").await,
        Fault::Stop => cluster.compose.stop(leader).await,
    };
    result.unwrap_or_else(|e| panic!("{fault:?} {leader}: {e:#}"));
    let new_leader = cluster.leader(ELECTION_TIMEOUT).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_ne!(new_leader, leader, "{leader} is down, yet it is reported as the leader");
    wait_for_acks(acked, WRITES_PER_STEP, &format!("through {follower} while {leader} is down"))
        .await;

    cluster.compose.start(leader).await.unwrap_or_else(|e| panic!("start {leader}: {e:#}"));
    let caught_up = cluster.wait_ready(leader, acked.index_max(), PROGRESS_TIMEOUT).await;
    caught_up.unwrap_or_else(|e| panic!("{leader} after its restart: {e:#}"));
    wait_for_acks(acked, WRITES_PER_STEP, &format!("after {leader} came back")).await;

    let report = writer.stop().await.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(report.rejected.is_empty(), "refused writes: {:?}", report.rejected);
    eprintln!("{fault:?} of leader {leader}: {report:?}; new leader {new_leader}");
}

/// Waits until `more` writes beyond the current count are acknowledged.
async fn wait_for_acks(acked: &Acked, more: usize, when: &str) {
    let target = acked.count() + more;
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    while acked.count() < target {
        assert!(
            Instant::now() < deadline,
            "only {} of {target} writes acknowledged {when} within {PROGRESS_TIMEOUT:?}",
            acked.count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
