//! Real `kma` processes on loopback under a stream of writes: crashes, restarts, joins after the
//! log was purged, whole-cluster restarts, and a five-KMA cluster losing two (SPEC C1, C7).

mod support;

/// `kma reset` (SPEC C5), here to share this binary's link.
#[path = "more/reset.rs"]
mod reset;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

/// Writes through every running KMA until `count` more writes are acknowledged.
async fn write_more(cluster: &Cluster, prefix: &str, acked: &Acked, count: usize) {
    let target = acked.count() + count;
    let stop = Arc::new(AtomicBool::new(false));
    let addresses = cluster.running_addresses();
    let writer =
        spawn_writer(cluster.admin.clone(), addresses, prefix, acked.clone(), stop.clone());
    acked.wait_count(target, &format!("'{prefix}' writes through the running KMAs")).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
}

/// Setup: three KMAs, a writer sending to all of them. Action: once writes are acknowledged,
/// kill -9 the leader, then a follower, restarting each. Expect: a new leader; writes continue
/// through the remaining majority each time (20 more acknowledged while a KMA is down, 20
/// more once all are back); every acknowledged write is on every KMA and the state digests
/// agree. (SPEC C1, C7)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_c7_kill_leader_then_follower_under_writes() {
    let mut cluster = Cluster::start(3, no_change).await;
    let acked = Acked::default();
    let stop = Arc::new(AtomicBool::new(false));
    let addresses = cluster.running_addresses();
    let writer = spawn_writer(cluster.admin.clone(), addresses, "w", acked.clone(), stop.clone());
    acked.wait_count(20, "writes flow before any kill").await;

    let leader = cluster.leader(Duration::from_secs(10)).await;
    cluster.kill9(leader).await;
    let new_leader = cluster.leader(Duration::from_secs(15)).await;
    assert_ne!(new_leader, leader);
    acked.wait_count(acked.count() + 20, "writes go on with the old leader down").await;
    cluster.restart(leader).await;
    cluster.wait_ready(leader).await;

    let follower = (0..3).find(|i| *i != new_leader).expect("a follower");
    cluster.kill9(follower).await;
    acked.wait_count(acked.count() + 20, "writes go on with a follower down").await;
    cluster.restart(follower).await;
    cluster.wait_ready(follower).await;
    acked.wait_count(acked.count() + 20, "writes go on once every KMA is back").await;
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");

    assert!(acked.count() > 50, "only {} writes were acknowledged", acked.count());
    cluster.assert_converged(&acked).await;
}

/// Setup: three KMAs that snapshot every 200 entries and keep 50. Action: 600 writes, then a
/// fourth KMA joins. Expect: the leader purged its log behind a snapshot, so the newcomer is
/// brought up by a snapshot install; it becomes a voter and its digest equals the others'.
/// (SPEC C4, C7)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_new_kma_joins_after_log_purge_and_gets_a_snapshot() {
    let mut cluster = Cluster::start(3, small_snapshots).await;
    let acked = Acked::default();
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let address = cluster.nodes[leader].address.clone();
    for n in 0..600 {
        assert!(write_user(&cluster.admin, &address, format!("u{n}"), &acked).await);
    }
    // openraft purges behind a snapshot once the followers have the entries: one more write
    // at each look, so that a purge that waits for the next snapshot gets one.
    let mut n = 600;
    wait_until(Duration::from_secs(20), "the leader to purge its log", async || {
        let status = cluster.admin.status(&address).await.expect("status");
        if status.purged_index.unwrap_or(0) > 100 {
            return Ok(());
        }
        assert!(write_user(&cluster.admin, &address, format!("u{n}"), &acked).await);
        n += 1;
        Err(status)
    })
    .await;

    let newcomer = cluster.add_node(4, small_snapshots).await;
    cluster.wait_voters(4).await;
    cluster.assert_converged(&acked).await;
    let status = cluster.admin.status(&cluster.nodes[newcomer].address).await.expect("status");
    assert!(status.snapshot_index.is_some(), "the newcomer holds a snapshot: {status:?}");
    assert_eq!(status.voters.len(), 4);
}

/// Setup: three KMAs with 30 acknowledged writes. Action: stop all three, start all three.
/// Expect: the same digest as before, and the cluster takes 20 writes again. (SPEC C1, C7)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_whole_cluster_stopped_and_restarted_keeps_its_digest() {
    let mut cluster = Cluster::start(3, no_change).await;
    let acked = Acked::default();
    write_more(&cluster, "before", &acked, 30).await;
    let (_, index) = acked.snapshot();
    let before = cluster.admin.digest(&cluster.nodes[0].address, index).await.expect("digest");
    for index in 0..3 {
        cluster.stop(index).await;
    }
    for index in 0..3 {
        cluster.restart(index).await;
    }
    for index in 0..3 {
        cluster.wait_ready(index).await;
        let after = cluster.admin.digest(&cluster.nodes[index].address, before.applied_index).await;
        let after = after.expect("digest");
        if after.applied_index == before.applied_index {
            assert_eq!(after.sha256, before.sha256, "{} after restart", cluster.nodes[index].name);
        }
    }
    write_more(&cluster, "after", &acked, 20).await;
    cluster.assert_converged(&acked).await;
}

/// Setup: five KMAs with 20 acknowledged writes. Action: kill -9 the leader and one follower.
/// Expect: the three left elect a leader, take 20 more writes, and agree. (SPEC C1)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_five_kmas_survive_two_losses() {
    let mut cluster = Cluster::start(5, no_change).await;
    let acked = Acked::default();
    write_more(&cluster, "five", &acked, 20).await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let follower = (0..5).find(|i| *i != leader).expect("follower");
    cluster.kill9(leader).await;
    cluster.kill9(follower).await;
    cluster.leader(Duration::from_secs(15)).await;
    write_more(&cluster, "three", &acked, 20).await;
    cluster.assert_converged(&acked).await;
}

/// openraft 0.9 draws election timeouts once per process; the node adds per-process jitter.
/// Setup: three KMAs. Action: kill the leader five times (restarting it each time). Expect: a
/// new leader each time (a liveness bound of 20 s, not a speed target); the times are printed.
/// (SPEC "Known pitfalls")
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_repeated_leader_kills_always_elect_a_new_leader() {
    let mut cluster = Cluster::start(3, no_change).await;
    let mut times = Vec::new();
    for _round in 0..5 {
        let leader = cluster.leader(Duration::from_secs(15)).await;
        let started = Instant::now();
        cluster.kill9(leader).await;
        let next = cluster.leader(Duration::from_secs(20)).await;
        times.push(started.elapsed());
        assert_ne!(next, leader);
        cluster.restart(leader).await;
        cluster.wait_ready(leader).await;
    }
    println!("time to a new leader after kill -9: {times:?}");
}

/// Setup: four KMAs. Action: a Security Officer deletes one (`DeleteKma`, what `kmsctl kma
/// delete` sends) through a follower; a write through one KMA is read through another, first
/// waiting for its index, then linearizably. Expect: the leader takes the deleted KMA out of
/// the Raft membership: every remaining KMA reports three voters, none of them the deleted
/// one. The deleted KMA stops by itself, leaves a record that keeps it from starting again,
/// and keeps no sealed master key; its certificate can neither forward a command nor send an
/// AppendEntries or a vote request. The three remaining voters take writes and both reads see
/// the write. (SPEC C1, C5; issue #16 point 3)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c5_a_deleted_kma_leaves_the_membership_and_its_certificate_is_refused() {
    let mut cluster = Cluster::start(4, no_change).await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let follower = (0..4).find(|i| *i != leader).expect("follower");
    let removed = (0..4).find(|i| *i != leader && *i != follower).expect("another follower");
    let removed_dir = cluster.nodes[removed].data_dir.clone();
    let removed_id = node::config::NodeConfig::load(&removed_dir).expect("config").node_id;
    let name = cluster.nodes[removed].name.clone();
    let follower_address = cluster.nodes[follower].address.clone();
    let deleted = cluster
        .admin
        .propose(&follower_address, None, statemachine::Command::DeleteKma { name })
        .await;
    let applied = deleted.expect("reached").expect("proposed");
    assert!(applied.result.is_ok(), "{:?}", applied.result);

    let mut child = cluster.nodes[removed].child.take().expect("running");
    let exited = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    let status = exited.expect("the deleted KMA stops by itself").expect("reaped");
    assert!(!status.success(), "a deleted KMA exits with an error: {status}");
    assert!(removed_dir.join(node::departure::DEPARTED_FILE).exists());
    assert!(!removed_dir.join(node::vault::SEALED_FILE).exists(), "sealed key left behind");
    cluster.wait_voters(3).await;
    for index in cluster.running() {
        let status = cluster.admin.status(&cluster.nodes[index].address).await.expect("status");
        assert!(!status.voters.contains(&removed_id), "{}: {:?}", status.name, status.voters);
    }

    refused_on_links(&cluster, leader, &removed_dir, removed_id).await;
    let start_again = node::setup::local::spawn_run(Path::new(KMA), &removed_dir)
        .expect("spawn")
        .wait()
        .await
        .expect("ran");
    let log = std::fs::read_to_string(removed_dir.join("kma.log")).expect("its log");
    let said = log.rsplit("Error:").next().unwrap_or_default();
    assert!(!start_again.success() && said.contains("was deleted"), "{said}");

    let acked = Acked::default();
    assert!(write_user(&cluster.admin, &follower_address, "ryw".into(), &acked).await);
    let (_, index) = acked.snapshot();
    let other = (0..4).find(|i| *i != follower && *i != removed).expect("third KMA");
    let address = &cluster.nodes[other].address;
    let seen = cluster.admin.users_read(address, index, false).await.expect("read at index");
    assert!(seen.contains(&"ryw".to_string()));
    let current = cluster.admin.users_read(address, 0, true).await.expect("linearizable read");
    assert!(current.contains(&"ryw".to_string()));
}

/// The deleted KMA's own certificate on a Raft link to the leader: a forwarded proposal, an
/// AppendEntries in its own name and a vote request are each refused as from a deleted KMA.
async fn refused_on_links(cluster: &Cluster, leader: usize, removed_dir: &Path, removed_id: u64) {
    use node::transport::link::{Answer, Link, RaftCall, REFUSED_DELETED};
    use openraft::raft::{AppendEntriesRequest, VoteRequest};
    use openraft::Vote;
    let tls_dir = removed_dir.join("tls");
    let tls = node::transport::tls::client_config(&tls_dir, "node.pem", "node-key.pem")
        .expect("the deleted KMA's certificate");
    let tls = node::transport::link::client_config(tls);
    let address = &cluster.nodes[leader].address;
    let vote = Vote::new_committed(1_000, removed_id);
    let calls = [
        RaftCall::Propose(node::wire::ProposeRequest {
            actor: Some(statemachine::Actor::User("admin".into())),
            origin_node_id: Some(removed_id),
            request_id: None,
            command: statemachine::Command::Pulse,
            passphrase: None,
        }),
        RaftCall::Append(AppendEntriesRequest {
            vote,
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        }),
        RaftCall::Vote(VoteRequest { vote: Vote::new(1_000, removed_id), last_log_id: None }),
    ];
    for call in &calls {
        let mut link = Link::connect(tls.clone(), address).await.expect("TLS with its certificate");
        let answer = link.exchange::<()>(call).await.expect("an answer").expect("decodes");
        match answer {
            Answer::Refused(why) => assert!(why.starts_with(REFUSED_DELETED), "{why}"),
            Answer::Done(()) => panic!("a deleted KMA's call was run"),
        }
    }
}

/// Setup: a three-KMA cluster made as `kma local --base-port 0` makes it
/// (`node::setup::local::start`), with writes. Action: kill -9 all three, then start the same
/// cluster again the same way. Expect: it comes back on the ports each KMA got at its creation
/// and takes writes through every KMA. A KMA that led must win a new term after a restart, so
/// `kma local` starts every KMA before it waits for any (it used to wait for the first one
/// alone, which only worked while that one could take up its old term). (SPEC C7)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_t90_issue_3_a_local_cluster_restarts_with_its_data() {
    let root = tempfile::tempdir().expect("temp dir");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_kma"));
    // Base port 0: ports the OS chooses when each KMA is created, kept across the restart.
    let children = node::setup::local::start(binary, root.path(), 3, 0).await.expect("first start");
    let layout = node::setup::local::layout(root.path(), 3, 0).expect("layout");
    let secrets_path = root.path().join(node::setup::local::SECRETS_FILE);
    let secrets = node::setup::read_secrets(&secrets_path).expect("the local secrets");
    let first = &layout[0];
    let admin = node::setup::local::officer_session(&first.data_dir, &first.management, &secrets)
        .await
        .expect("the officer logs in");
    let acked = Acked::default();
    for node in &layout {
        assert!(
            write_user(&admin, &node.management, format!("before-{}", node.name), &acked).await
        );
    }
    for mut child in children {
        child.kill().await.expect("kill -9");
    }
    let _children = node::setup::local::start(binary, root.path(), 3, 0).await.expect("restart");
    let again = node::setup::local::layout(root.path(), 3, 0).expect("layout");
    let addresses = |kmas: &[node::setup::local::LocalNode]| {
        kmas.iter().map(|kma| (kma.management.clone(), kma.service.clone())).collect::<Vec<_>>()
    };
    assert_eq!(addresses(&again), addresses(&layout), "each KMA keeps its ports");
    for node in &layout {
        assert!(write_user(&admin, &node.management, format!("after-{}", node.name), &acked).await);
    }
    // Read at the index the last write was acknowledged at: a write through another KMA may
    // not be applied here yet.
    let (users, acked_index) = acked.snapshot();
    let present = admin.users_read(&layout[2].management, acked_index, false).await.expect("users");
    assert!(users.iter().all(|user| present.contains(user)), "{users:?} in {present:?}");
}

/// Quick elections: the KMA restarted with a wrong clock is the first to stand once the
/// leader is gone.
fn eager_candidate(config: &mut node::config::NodeConfig) {
    config.election_timeout_ms_min = 400;
    config.election_timeout_ms_max = 500;
}

/// Setup: three KMAs; a drive wrote with a key whose cryptoperiod is 30 days. One follower,
/// with quicker elections, is restarted with its clock a year ahead (`faketime`); then the
/// leader is killed, so the skewed KMA is elected, and the leader comes back. Action: as
/// leader, the skewed KMA stamps a pulse (by its clock every period has ended). Expect: the
/// voters refuse its entries, it steps down, a KMA with the right clock leads; no key ever
/// becomes Deactivated; the audit log names the KMA whose clock runs ahead; writes go on.
/// (SPEC O4; issue #16 point 7)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o4_a_leader_a_year_ahead_deactivates_no_key() {
    let mut cluster = Cluster::start(3, no_change).await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let address = cluster.nodes[leader].address.clone();
    agents::catalogue(&cluster, &address, (30 * agents::DAY_MS, 30 * agents::DAY_MS)).await;
    // The administrator reads the audit log too.
    let roles = statemachine::RoleSet::of(statemachine::Role::SecurityOfficer)
        .with(statemachine::Role::ComplianceOfficer)
        .with(statemachine::Role::Operator)
        .with(statemachine::Role::Auditor);
    let auditor = statemachine::Command::SetUserRoles { id: "admin".into(), roles };
    agents::ok(&cluster.admin, &address, auditor, None).await;
    let service = cluster.nodes[leader].service.clone();
    let drive = agents::pinned_drive(&cluster, &service, &service).await;
    let (unit, _key) = agents::write_key(&drive, "VOL001").await;

    let skewed = (0..3).find(|i| *i != leader).expect("a follower");
    let skewed_name = cluster.nodes[skewed].name.clone();
    restart_a_year_ahead(&mut cluster, skewed, leader).await;
    cluster.kill9(leader).await;
    let sane = (0..3).find(|i| *i != leader && *i != skewed).expect("the third KMA");
    let sane_address = cluster.nodes[sane].address.clone();
    let role = wait_until(Duration::from_secs(30), "the skewed KMA to lead", async || {
        let role = cluster.status(skewed).await.map(|s| s.role);
        done_if(role.as_deref() == Ok("leader"), role)
    })
    .await;
    assert_eq!(role.as_deref(), Ok("leader"));
    cluster.restart(leader).await;

    let api = admin_api_client(&cluster, &sane_address).await;
    let audit: Vec<String> =
        wait_until(Duration::from_secs(90), "the clock in the audit log", async || {
            let page: Result<admin_api::api::Page<admin_api::api::AuditRecord>, _> =
                api.get("/v1/audit?limit=1000").await;
            let details: Vec<String> = page
                .map(|page| page.rows.into_iter().map(|row| row.detail).collect())
                .unwrap_or_default();
            let found = details.iter().any(|d| d.contains(&skewed_name) && d.contains("s ahead"));
            done_if(found, details)
        })
        .await;
    let record = audit.iter().find(|d| d.contains("s ahead")).expect("found above");
    let seconds: u64 = record
        .split("stamped ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_default();
    assert!(seconds > 364 * 86_400, "the record says by how much: {record}");

    let new_leader = cluster.leader(Duration::from_secs(30)).await;
    assert_ne!(new_leader, skewed, "the KMA whose clock runs ahead leads no more");
    let acked = Acked::default();
    let address = cluster.nodes[new_leader].address.clone();
    assert!(write_user(&cluster.admin, &address, "after-the-clock".into(), &acked).await);
    let (_, at) = acked.snapshot();
    no_key_deactivated(&cluster, skewed, unit, at).await;
    // What the skewed KMA stores is the same state: the digests agree.
    cluster.assert_converged(&acked).await;
}

/// Key states as a KMA shows them are as of its own clock, so the KMA whose clock runs a year
/// ahead (`skewed`) shows every period ended: the others are read, at index `at`.
async fn no_key_deactivated(
    cluster: &Cluster,
    skewed: usize,
    unit: statemachine::DataUnitId,
    at: u64,
) {
    for index in cluster.running().into_iter().filter(|index| *index != skewed) {
        let api = admin_api_client(cluster, &cluster.nodes[index].address).await;
        // The client passes the highest index it saw as `min_index` on every read.
        api.observe_index(at);
        let path = "/v1/keys?state=deactivated";
        let deactivated: admin_api::api::Page<admin_api::api::Key> =
            api.get(path).await.expect("key list");
        assert!(deactivated.rows.is_empty(), "deactivated: {:?}", deactivated.rows);
        let path = format!("/v1/keys?data_unit={unit}");
        let keys: admin_api::api::Page<admin_api::api::Key> = api.get(&path).await.expect("keys");
        assert!(!keys.rows.is_empty(), "the drive's key is listed");
        assert!(
            keys.rows
                .iter()
                .all(|key| key.state != "deactivated" && key.deactivates_at_ms.is_some()),
            "{:?}",
            keys.rows
        );
    }
}

/// Restarts KMA `skewed` with quick elections and its wall clock a year ahead (`faketime`;
/// monotonic time stays true, as with a bad NTP source), and waits until it has caught up with
/// `leader`, so that the voters grant it their votes once the leader is gone.
async fn restart_a_year_ahead(cluster: &mut Cluster, skewed: usize, leader: usize) {
    cluster.stop(skewed).await;
    tweak(&cluster.nodes[skewed].data_dir, eager_candidate);
    // libfaketime preloaded by `env`, which execs the KMA: the `faketime` command would fork,
    // and killing it would leave the KMA running.
    let library = ["x86_64-linux-gnu", "aarch64-linux-gnu", ""]
        .iter()
        .map(|arch| format!("/usr/lib/{arch}/faketime/libfaketime.so.1").replace("//", "/"))
        .find(|path| Path::new(path).exists())
        .expect("libfaketime (scripts/install-system-deps.sh installs faketime)");
    let preload = format!("LD_PRELOAD={library}");
    let wrapper = ["env", &preload, "FAKETIME=+365d", "FAKETIME_DONT_FAKE_MONOTONIC=1"];
    cluster.restart_under(skewed, &wrapper).await;
    cluster.wait_voters(3).await;
    let led = cluster.admin.status(&cluster.nodes[leader].address).await.expect("status");
    wait_until(Duration::from_secs(30), "the skewed KMA to catch up", async || {
        // Read with a KMA's certificate (cluster.status): the officer's 8-hour session is not
        // valid a year ahead.
        let applied = cluster.status(skewed).await.map(|s| s.applied_index).unwrap_or(0);
        done_if(applied >= led.applied_index, applied)
    })
    .await;
}
