//! Each site cut off from the other two in turn (SPEC "Availability trade-off", C2; issue 20
//! point 5): the compose layout has one KMA per site (kma1 at `east`, kma2 at `west`, kma3 at
//! `north`), so losing any one site leaves a majority (docs/docker.md). The cut is made with
//! iptables inside the site's KMA's network namespace: its WAN link to the other KMAs is down,
//! while its drives (on the host, through the published ports) still reach it, as on a LAN.
//!
//! Needs Docker Engine, docker-compose, nsenter and iptables (run as root); without them it
//! fails and says so.

use std::future::Future;
use std::time::{Duration, Instant};

use agent_gateway::client::{AgentClient, AgentCredentials, ClientError, WriteKey};
use agent_gateway::wire::ErrorBody;
use chaos_tests::agents;
use chaos_tests::cluster::{DockerCluster, SERVICES};
use chaos_tests::compose::Compose;
use chaos_tests::workload::Acked;
use node::write::batching::COMMIT_TIMEOUT;
use statemachine::Command;

/// The compose file's sites, each with its one KMA.
const SITES: [(&str, &str); 3] = [("east", "kma1"), ("west", "kma2"), ("north", "kma3")];
const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// The first tapes wait for the key pool, which the leader fills after the catalogue.
const POOL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the drives of the sites not cut off retry a new tape while they elect a leader.
const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// A cut-off follower knows that it has no leader: it refuses a new tape at once.
const FOLLOWER_REFUSAL_MAX: Duration = Duration::from_secs(3);
/// A cut-off leader still leads in its own eyes (an openraft 0.9 leader does not step down when
/// it loses its majority): it queues the new tape and refuses it once the entry has not
/// committed within `COMMIT_TIMEOUT`; the bound leaves room for one entry of its own (a pulse,
/// a pool refill, the audit of its lost links) ahead of it.
const LEADER_REFUSAL_MAX: Duration = Duration::from_secs(2 * COMMIT_TIMEOUT.as_secs() + 3);

/// A site's drive: its agent, its KMA, and the tapes it wrote with their keys.
struct Drive {
    site: &'static str,
    kma: &'static str,
    /// The published service address of the site's KMA.
    address: String,
    credentials: AgentCredentials,
    /// A client that knows only the site's KMA, as a drive on a LAN cut off from the WAN.
    home: AgentClient,
    tapes: Vec<WriteKey>,
}

/// A site's KMA cut off from the other two. `heal` takes the cut out; a check that panics
/// before drops it, and the drop heals synchronously, so no fault outlives the round.
struct Cut<'a> {
    compose: &'a Compose,
    kma: &'static str,
    others: [&'static str; 2],
    healed: bool,
}

impl<'a> Cut<'a> {
    async fn new(compose: &'a Compose, kma: &'static str, others: [&'static str; 2]) -> Cut<'a> {
        // Armed before the rules go in: a cut that fails halfway heals what it added.
        let cut = Cut { compose, kma, others, healed: false };
        compose.cut_off(kma, &others).await.unwrap_or_else(|e| panic!("cut off {kma}: {e:#}"));
        cut
    }

    async fn heal(mut self) {
        self.healed = true;
        let healed = self.compose.heal(self.kma, &self.others).await;
        healed.unwrap_or_else(|e| panic!("heal {}: {e:#}", self.kma));
    }
}

impl Drop for Cut<'_> {
    fn drop(&mut self) {
        if self.healed {
            return;
        }
        // Nothing can be awaited here: the heal runs on a thread of its own with its own runtime.
        let (compose, kma, others) = (self.compose, self.kma, self.others);
        let healed = std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(compose.heal(kma, &others))
            });
            thread.join()
        });
        match healed {
            Ok(Ok(())) => eprintln!("the cut of {kma} healed after a failed check"),
            Ok(Err(error)) => eprintln!("warning: the cut of {kma} did not heal: {error:#}"),
            Err(_) => eprintln!("warning: the thread healing the cut of {kma} panicked"),
        }
    }
}

/// Setup: the compose cluster, a key group, and one drive (agent) per site enrolled at its
/// site's KMA; each drive writes one tape (a data unit and its write key) through its own KMA.
/// Action: for each site in turn (east, west, north; one of them holds the leadership, so one
/// cut forces an election), its KMA is cut off from the other two while the host still reaches
/// it, then the cut heals and the KMA catches up. Expect, during each cut: the site's drive,
/// knowing only its KMA, reads the keys of every tape it wrote before (same key bytes); a new
/// tape there is refused with HTTP 503 and `retryable: true` (at once on a follower, within the
/// commit timeout on a leader); the drives of the two other sites, knowing their own KMA and
/// the other uncut one, get a new tape and its write key within 20 s (an election included) and
/// read it back. At the end every drive reads every tape at every KMA and the three state
/// digests are equal. (SPEC "Availability trade-off", C2; issue 20 point 5)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2_each_site_cut_off_in_turn_reads_locally_refuses_new_tapes_and_the_others_write() {
    let started = Instant::now();
    let cluster = DockerCluster::start().await.unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("compose project {} formed in {:?}", cluster.compose.project(), started.elapsed());
    let mut drives = enrolled_drives(&cluster).await;
    let deadline = Instant::now() + POOL_TIMEOUT;
    for drive in &mut drives {
        let tag = format!("{}-before", drive.site);
        drive.tapes.push(write_tape(&drive.home, &tag, deadline).await);
    }
    for cut in 0..SITES.len() {
        let summary = cut_site(&cluster, &mut drives, cut).await;
        println!("{summary}");
    }
    wait_all_applied(&cluster).await;
    let digest = cluster.check_converged(&Acked::default()).await;
    let digest = digest.unwrap_or_else(|e| panic!("{e:#}"));
    let reads = read_everywhere(&drives).await;
    println!(
        "after the three cuts: {reads} tape reads at the three KMAs, same keys; digests equal at \
         index {}; {:?} in all",
        digest.applied_index,
        started.elapsed()
    );
}

/// One round: `drives[cut]`'s site is cut off, checked on both sides, healed and caught up.
/// Returns the round's summary line.
async fn cut_site(cluster: &DockerCluster, drives: &mut [Drive], cut: usize) -> String {
    wait_all_applied(cluster).await;
    let (site, kma) = (drives[cut].site, drives[cut].kma);
    let [a, b] = [(cut + 1) % drives.len(), (cut + 2) % drives.len()];
    let others = [drives[a].kma, drives[b].kma];
    let leader = cluster.leader(ELECTION_TIMEOUT).await.unwrap_or_else(|e| panic!("{e:#}"));
    let led = leader == kma;
    let cut_at = Instant::now();
    let guard = Cut::new(&cluster.compose, kma, others).await;
    let (drive, first, second) = (&drives[cut], &drives[a], &drives[b]);
    let tag_a = format!("{}-during-{site}", first.site);
    let tag_b = format!("{}-during-{site}", second.site);
    let ((noticed, refusal), (tape_a, took_a), (tape_b, took_b)) = tokio::join!(
        async {
            let noticed = wait_noticed(cluster, kma, others, cut_at).await;
            (noticed, check_cut_site(drive, led, cut as u64 + 1).await)
        },
        write_elsewhere(first, &second.address, &tag_a, cut_at),
        write_elsewhere(second, &first.address, &tag_b, cut_at),
    );
    guard.heal().await;
    let healed_at = Instant::now();
    let leader_now = cluster.leader(ELECTION_TIMEOUT).await.unwrap_or_else(|e| panic!("{e:#}"));
    let status = cluster.status(leader_now).await.unwrap_or_else(|e| panic!("{e:#}"));
    let last = status.last_log_index.unwrap_or(0);
    let caught_up = cluster.wait_ready(kma, last, CATCH_UP_TIMEOUT).await;
    caught_up.unwrap_or_else(|e| panic!("{kma} after the heal: {e:#}"));
    let caught_up = healed_at.elapsed();
    let read = drives[cut].tapes.len();
    drives[a].tapes.push(tape_a);
    drives[b].tapes.push(tape_b);
    let (site_a, site_b) = (drives[a].site, drives[b].site);
    let noticed = if led {
        format!("led before the cut: {leader_now} leads after {noticed:.1?}")
    } else {
        format!("followed {leader}: saw no leader after {noticed:.1?}")
    };
    format!(
        "{site} ({kma}) cut off, {noticed}; {kma} served {read} tape(s) to its drive and refused a \
         new one in {refusal:.1?} (503, retryable); {site_a} had a new tape's key {took_a:.1?} \
         after the cut, {site_b} {took_b:.1?}; {kma} caught up {caught_up:.1?} after the heal"
    )
}

/// Waits until the cut shows on both sides: the cut-off KMA knows no leader (a follower that
/// stopped hearing one) or leads only in its own eyes (a leader), and the other two follow a
/// leader of their own. Returns the time since `since` (the cut).
async fn wait_noticed(
    cluster: &DockerCluster,
    kma: &str,
    others: [&str; 2],
    since: Instant,
) -> Duration {
    let deadline = since + ELECTION_TIMEOUT;
    loop {
        let alone = cluster.status(kma).await.unwrap_or_else(|e| panic!("{e:#}"));
        let alone_noticed =
            alone.role == "leader" || alone.role == "candidate" || alone.leader_id.is_none();
        let mut statuses = Vec::new();
        for other in others {
            statuses.extend(cluster.status(other).await.ok());
        }
        let led = statuses.len() == others.len()
            && statuses.iter().any(|status| {
                status.role == "leader"
                    && statuses.iter().all(|other| other.leader_id == Some(status.node_id))
            });
        if alone_noticed && led {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the cut of {kma} did not show within {ELECTION_TIMEOUT:?}: {alone:?}; {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// At the cut-off site: the drive, knowing only its KMA, reads every tape it wrote with the
/// same key; a new tape there is refused with a retryable 503. Returns how long the refusal
/// took.
async fn check_cut_site(drive: &Drive, led: bool, seq: u64) -> Duration {
    let (site, kma) = (drive.site, drive.kma);
    for tape in &drive.tapes {
        let read = drive.home.keys(tape.data_unit).await;
        let read = read.unwrap_or_else(|e| panic!("{site} reads a tape at its cut-off {kma}: {e}"));
        assert_eq!(read.keys.len(), 1, "{site}: {read:?}");
        assert_eq!(read.keys[0].key_id, tape.key.key_id, "{site}: {read:?}");
        assert!(*read.keys[0].value == *tape.key.value, "{site}: other key bytes at {kma}");
    }
    let asked = Instant::now();
    let (status, answer) = agents::create_on(
        &drive.credentials,
        &drive.address,
        &format!("{}-refused", drive.credentials.agent_id),
        (0x5173e0, seq),
        LEADER_REFUSAL_MAX + Duration::from_secs(5),
    )
    .await;
    let refusal = asked.elapsed();
    assert_eq!(status, 503, "a new tape at the cut-off {kma}: {answer}");
    let body: ErrorBody = serde_json::from_value(answer.clone()).expect("an error body");
    assert!(body.retryable, "a KMA without a majority refuses retryably: {answer}");
    let bound = if led { LEADER_REFUSAL_MAX } else { FOLLOWER_REFUSAL_MAX };
    assert!(refusal < bound, "{kma} (led: {led}) refused after {refusal:?}, not within {bound:?}");
    refusal
}

/// A drive of a site that is not cut off gets a new tape and its write key through its own
/// KMA or the other uncut one (retrying while they elect a leader), and reads the key back.
/// Returns the tape and how long after `since` (the cut) it had its key.
async fn write_elsewhere(
    drive: &Drive,
    other: &str,
    tag: &str,
    since: Instant,
) -> (WriteKey, Duration) {
    let client = agents::client(&[drive.address.clone(), other.to_string()], &drive.credentials);
    let written = write_tape(&client, tag, since + WRITE_TIMEOUT).await;
    let took = since.elapsed();
    let read = client.keys(written.data_unit).await;
    let read = read.unwrap_or_else(|e| panic!("{} reads back {tag}: {e}", drive.site));
    assert_eq!(read.keys.len(), 1, "{tag}: {read:?}");
    assert!(*read.keys[0].value == *written.key.value, "{tag}: other key bytes read back");
    (written, took)
}

/// A new data unit tagged `tag` and its write key from BOT, each step retried until `deadline`.
async fn write_tape(client: &AgentClient, tag: &str, deadline: Instant) -> WriteKey {
    let created = retry(tag, deadline, || client.create_data_unit(tag)).await;
    retry(tag, deadline, || client.write_key(created.data_unit, true)).await
}

/// `attempt` until it succeeds; each try is cut short at `deadline`, which fails the test with
/// the last error.
async fn retry<T, F, Fut>(what: &str, deadline: Instant, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut last = String::from("no attempt");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what}: no success before the deadline; last: {last}");
        match tokio::time::timeout(left, attempt()).await {
            Ok(Ok(done)) => return done,
            Ok(Err(error)) => last = error.to_string(),
            Err(_) => last = "the attempt ran into the deadline".into(),
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Waits until every KMA has applied the leader's last log index.
async fn wait_all_applied(cluster: &DockerCluster) {
    let leader = cluster.leader(ELECTION_TIMEOUT).await.unwrap_or_else(|e| panic!("{e:#}"));
    let status = cluster.status(leader).await.unwrap_or_else(|e| panic!("{e:#}"));
    let last = status.last_log_index.unwrap_or(0);
    for kma in SERVICES {
        let ready = cluster.wait_ready(kma, last, CATCH_UP_TIMEOUT).await;
        ready.unwrap_or_else(|e| panic!("{kma} did not apply {last}: {e:#}"));
    }
}

/// Every drive reads every tape it wrote at each KMA alone, with the same key. Returns the
/// number of reads.
async fn read_everywhere(drives: &[Drive]) -> usize {
    let mut reads = 0;
    for drive in drives {
        for kma in drives {
            let client = agents::client(std::slice::from_ref(&kma.address), &drive.credentials);
            for tape in &drive.tapes {
                let read = client.keys(tape.data_unit).await;
                let read = read.unwrap_or_else(|e| panic!("{} at {}: {e}", drive.site, kma.kma));
                assert_eq!(read.keys.len(), 1, "{} at {}: {read:?}", drive.site, kma.kma);
                assert!(*read.keys[0].value == *tape.key.value, "{} at {}", drive.site, kma.kma);
                reads += 1;
            }
        }
    }
    reads
}

/// The catalogue of `chaos_tests::agents` (group `tapes`, its pool; its `drive1` stays unused)
/// and one agent per site, `drive-<site>`, with access to `tapes`, each enrolled at its site's
/// KMA once that KMA has applied the agents.
async fn enrolled_drives(cluster: &DockerCluster) -> Vec<Drive> {
    let leader = cluster.leader(ELECTION_TIMEOUT).await.unwrap_or_else(|e| panic!("{e:#}"));
    agents::catalogue(cluster, leader).await;
    let address = cluster.address(leader).await.unwrap_or_else(|e| panic!("{e:#}"));
    let mut index = 0;
    for (site, _) in SITES {
        let (id, passphrase) = (format!("drive-{site}"), passphrase(site));
        let agent =
            Command::CreateAgent { id: id.clone(), site: site.into(), passphrase_verifier: vec![] };
        propose(cluster, &address, agent, Some(&passphrase)).await;
        let assign = Command::AssignKeyGroupToAgent { agent: id, group: "tapes".into() };
        index = propose(cluster, &address, assign, None).await;
    }
    let ca = std::fs::read_to_string(cluster.export_dir().join("tls/ca.pem")).expect("the CA");
    let mut drives = Vec::new();
    for (site, kma) in SITES {
        let ready = cluster.wait_ready(kma, index, CATCH_UP_TIMEOUT).await;
        ready.unwrap_or_else(|e| panic!("{kma} did not apply the agents: {e:#}"));
        let address = agents::service_address(cluster, kma).await;
        let (id, passphrase) = (format!("drive-{site}"), passphrase(site));
        let enrolled = agent_gateway::client::enroll(&address, &ca, &id, &passphrase).await;
        let credentials = enrolled.unwrap_or_else(|e| panic!("enrollment of {id} at {kma}: {e}"));
        let home = agents::client(std::slice::from_ref(&address), &credentials);
        drives.push(Drive { site, kma, address, credentials, home, tapes: Vec::new() });
    }
    drives
}

fn passphrase(site: &str) -> String {
    format!("drive-at-{site}-passphrase")
}

/// Proposes an administrator's command that must apply; returns its log index.
async fn propose(
    cluster: &DockerCluster,
    address: &str,
    command: Command,
    passphrase: Option<&str>,
) -> u64 {
    let kind = command.kind();
    let applied = cluster
        .admin
        .propose_with_passphrase(address, None, command, passphrase)
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"))
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    assert!(applied.result.is_ok(), "{kind:?}: {:?}", applied.result);
    applied.index
}
