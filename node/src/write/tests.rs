//! Unit tests of the write path with fakes of the layer below: an in-memory Raft log that
//! answers (or holds) each entry, and a leader link that records what it was sent. The real
//! Raft log and links are exercised by the process tests (`node/tests/cluster_processes.rs`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use raft_storage::{ApplyResponse, EntryResponse};
use statemachine::quorum::QuorumOperation;
use statemachine::{Actor, Batch, Command, Reply};
use tokio::sync::Semaphore;

use super::forward::Unreachable;
use super::intake::{prepare_user_command, propose_forwarded};
use super::*;

const ME: u64 = 1;
const OTHER: u64 = 2;

/// A Raft log whose leader, members and answers the test sets.
struct FakeLog {
    leader: Mutex<Option<u64>>,
    members: Vec<u64>,
    /// Entries written so far: their envelopes' commands and stamps.
    written: Mutex<Vec<Batch>>,
    /// Writes begun (some may wait for a permit).
    started: std::sync::atomic::AtomicUsize,
    /// Each write takes a permit before it answers: a test holds entries in flight with it.
    permits: Arc<Semaphore>,
    /// Answers other than success, taken in order by the next writes.
    failures: Mutex<VecDeque<WriteFailure>>,
}

impl FakeLog {
    fn leading(leader: Option<u64>, permits: usize) -> Arc<FakeLog> {
        Arc::new(FakeLog {
            leader: Mutex::new(leader),
            members: vec![ME, OTHER],
            written: Mutex::default(),
            started: Default::default(),
            permits: Arc::new(Semaphore::new(permits)),
            failures: Mutex::default(),
        })
    }

    fn batch_sizes(&self) -> Vec<usize> {
        self.written.lock().unwrap().iter().map(|batch| batch.envelopes.len()).collect()
    }
}

impl RaftLog for FakeLog {
    fn leader(&self) -> Option<u64> {
        *self.leader.lock().unwrap()
    }

    fn address_of(&self, node_id: u64) -> Option<String> {
        self.members.contains(&node_id).then(|| format!("kma{node_id}:7001"))
    }

    fn write(&self, batch: Batch) -> BoxFuture<'_, Result<EntryResponse, WriteFailure>> {
        Box::pin(async move {
            if let Some(failure) = self.failures.lock().unwrap().pop_front() {
                return Err(failure);
            }
            self.started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let permit = self.permits.acquire().await.expect("semaphore open");
            permit.forget();
            let results = batch.envelopes.iter().map(|_| Ok(Reply::Done)).collect();
            let mut written = self.written.lock().unwrap();
            written.push(batch);
            Ok(EntryResponse { index: written.len() as u64, results })
        })
    }
}

/// A leader link that records each request and answers from `answer`.
#[derive(Default)]
struct FakeLink {
    sent: Mutex<Vec<(String, ProposeRequest)>>,
    unreachable: bool,
}

impl LeaderLink for FakeLink {
    fn propose(
        &self,
        address: &str,
        request: ProposeRequest,
    ) -> BoxFuture<'_, Result<ProposeResponse, Unreachable>> {
        self.sent.lock().unwrap().push((address.to_string(), request));
        let answer = match self.unreachable {
            true => Err(Unreachable("connection refused".into())),
            false => Ok(Ok(ApplyResponse { index: 42, result: Ok(Reply::Done) })),
        };
        Box::pin(async move { answer })
    }
}

/// Lets the other tasks run until `done` holds; fails after 10 s of not holding.
async fn until(what: &str, done: impl Fn() -> bool) {
    let waited = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !done() {
            tokio::task::yield_now().await;
        }
    });
    assert!(waited.await.is_ok(), "never happened: {what}");
}

fn proposer(log: &Arc<FakeLog>, link: &Arc<FakeLink>) -> Proposer {
    let (proposer, batcher) =
        Proposer::new(ME, log.clone(), link.clone(), None, WriteStages::default());
    tokio::spawn(batcher);
    proposer
}

fn by(user: &str) -> Proposal {
    Proposal {
        actor: Actor::User(user.into()),
        origin_node_id: ME,
        request_id: None,
        command: Command::Pulse,
    }
}

/// Setup: this KMA leads. Action: one proposal. Expect: one entry with one envelope, stamped
/// and carrying the actor; the proposer gets the entry's index and its own result. (SPEC C1)
#[tokio::test]
async fn c1_a_lone_proposal_is_written_at_once_with_its_actor() {
    let (log, link) = (FakeLog::leading(Some(ME), 100), Arc::new(FakeLink::default()));
    let answer = proposer(&log, &link).propose(by("alice")).await.expect("applied");
    assert_eq!(answer, ApplyResponse { index: 1, result: Ok(Reply::Done) });
    assert_eq!(log.batch_sizes(), [1]);
    let envelope = &log.written.lock().unwrap()[0].envelopes[0];
    assert_eq!(envelope.actor, Actor::User("alice".into()));
    assert!(envelope.time_ms > 0, "stamped with the leader's clock");
    assert!(link.sent.lock().unwrap().is_empty(), "nothing forwarded");
}

/// Setup: this KMA leads; the log holds every entry until released. Action: two proposals
/// (filling both entry slots), then five more while those are in flight; release. Expect: the
/// five share one entry, each answered with its own result. (SPEC "Known pitfalls": batching)
#[tokio::test]
async fn c1_proposals_that_wait_for_a_slot_share_the_next_entry() {
    let (log, link) = (FakeLog::leading(Some(ME), 0), Arc::new(FakeLink::default()));
    let proposer = proposer(&log, &link);
    let spawn = |n: usize| {
        let proposer = proposer.clone();
        tokio::spawn(async move { proposer.propose(by(&format!("u{n}"))).await })
    };
    let started = || log.started.load(std::sync::atomic::Ordering::SeqCst);
    let mut waiting = vec![spawn(0)];
    until("the first entry in flight", || started() == 1).await;
    waiting.push(spawn(1));
    until("both entry slots in flight", || started() == 2).await;
    waiting.extend((2..7).map(spawn));
    // The batcher holds the third proposal while it waits for a slot; four stay queued.
    let queued = || batching::QUEUED_PROPOSALS_MAX - proposer.inner.queue.capacity();
    until("four proposals queued behind the third", || queued() == 4).await;
    log.permits.add_permits(3);
    for answer in waiting {
        assert!(answer.await.expect("task").is_ok());
    }
    let sizes = log.batch_sizes();
    assert_eq!(sizes.iter().sum::<usize>(), 7);
    assert_eq!(sizes.len(), 3, "two entries in flight, then one for the rest: {sizes:?}");
    assert_eq!(sizes[2], 5);
}

/// Setup: another KMA leads. Action: propose as a user. Expect: the request goes to the
/// leader's address with the actor and this KMA as origin, no passphrase, and the leader's
/// answer comes back. (SPEC C1)
#[tokio::test]
async fn c1_a_follower_forwards_with_the_actor_and_its_origin() {
    let (log, link) = (FakeLog::leading(Some(OTHER), 100), Arc::new(FakeLink::default()));
    let answer = proposer(&log, &link).propose(by("bob")).await.expect("forwarded");
    assert_eq!(answer.index, 42);
    let sent = link.sent.lock().unwrap();
    let (address, request) = &sent[0];
    assert_eq!(address, "kma2:7001");
    assert_eq!(request.actor, Some(Actor::User("bob".into())));
    assert_eq!(request.origin_node_id, Some(ME));
    assert!(request.passphrase.is_none(), "a verifier is made where the passphrase arrived");
    assert!(log.batch_sizes().is_empty());
}

/// Setup: another KMA leads and cannot be reached; then no leader at all. Action: propose.
/// Expect: `LeaderUnreachable` and `NoLeader`, both retryable. (SPEC "Availability")
#[tokio::test]
async fn c1_an_unreachable_or_missing_leader_is_a_retryable_refusal() {
    let log = FakeLog::leading(Some(OTHER), 100);
    let link = Arc::new(FakeLink { unreachable: true, ..FakeLink::default() });
    let error = proposer(&log, &link).propose(by("bob")).await.expect_err("unreachable");
    assert!(matches!(error, ProposeError::LeaderUnreachable { leader_id: OTHER, .. }));
    assert!(error.is_retryable());
    *log.leader.lock().unwrap() = None;
    let error = proposer(&log, &link).propose(by("bob")).await.expect_err("no leader");
    assert!(matches!(error, ProposeError::NoLeader) && error.is_retryable());
}

/// Setup: this KMA believes it leads, but the log answers that KMA 2 leads now. Action:
/// propose. Expect: the proposal is forwarded to KMA 2 and answered from there. (SPEC C1)
#[tokio::test]
async fn c1_leadership_lost_mid_write_sends_each_proposal_to_the_new_leader() {
    let (log, link) = (FakeLog::leading(Some(ME), 100), Arc::new(FakeLink::default()));
    log.failures.lock().unwrap().push_back(WriteFailure::ForwardTo(Some(OTHER)));
    let answer = proposer(&log, &link).propose(by("carol")).await.expect("forwarded");
    assert_eq!(answer.index, 42);
    assert_eq!(link.sent.lock().unwrap().len(), 1);
}

/// Setup: this KMA leads, and the log never commits (no majority). Action: propose, with time
/// paused. Expect: `NotCommitted` after the commit timeout, retryable. (SPEC "Availability")
#[tokio::test(start_paused = true)]
async fn c1_an_entry_not_committed_in_time_is_a_retryable_refusal() {
    let (log, link) = (FakeLog::leading(Some(ME), 0), Arc::new(FakeLink::default()));
    let error = proposer(&log, &link).propose(by("dave")).await.expect_err("timed out");
    let seconds = batching::COMMIT_TIMEOUT.as_secs();
    assert!(matches!(error, ProposeError::NotCommitted { seconds: s } if s == seconds));
    assert!(error.is_retryable());
}

/// Setup: a leader. Action: a proposal forwarded by member KMA 2, then one by KMA 9 (not a
/// member: deleted, or never joined), then one from KMA 2 naming no actor. Expect: the first
/// is applied with KMA 2 as origin; the others are refused as unauthorised. (SPEC S2, C5)
#[tokio::test]
async fn s2_only_a_member_kma_naming_its_client_may_forward() {
    let (log, link) = (FakeLog::leading(Some(ME), 100), Arc::new(FakeLink::default()));
    let proposer = proposer(&log, &link);
    let request = |actor: Option<Actor>| ProposeRequest {
        actor,
        origin_node_id: None,
        request_id: None,
        command: Command::Pulse,
        passphrase: None,
    };
    let user = Some(Actor::User("erin".into()));
    let applied = propose_forwarded(&proposer, OTHER, request(user.clone())).await;
    assert!(applied.is_ok());
    assert_eq!(log.written.lock().unwrap()[0].envelopes[0].origin_node_id, OTHER);
    let stranger = propose_forwarded(&proposer, 9, request(user)).await;
    assert!(matches!(stranger, Err(ProposeError::Unauthorised(_))));
    let anonymous = propose_forwarded(&proposer, OTHER, request(None)).await;
    assert!(matches!(anonymous, Err(ProposeError::Unauthorised(_))));
    assert_eq!(log.batch_sizes(), [1], "nothing refused reached the log");
}

/// Setup: none. Action: user commands that approve a quorum operation, change the quorum, set
/// a passphrase without sending one, or send one where none is taken. Expect: each refused
/// with where to go instead; a passphrase that is too short is refused. (SPEC S2, S4)
#[tokio::test]
async fn s4_users_send_neither_approvals_nor_verifiers_of_their_own() {
    let check = |command, passphrase: Option<&str>| {
        let passphrase = passphrase.map(|p| zeroize::Zeroizing::new(p.to_string()));
        prepare_user_command(command, passphrase, true, 8)
    };
    let approval = Command::ApproveQuorumOperation { id: 1, member: "m1".into() };
    let refused = check(approval, None).await.expect_err("approval");
    assert!(refused.to_string().contains("/v1/quorum/approve"), "{refused}");
    let quorum = statemachine::quorum::Quorum { threshold: 1, members: Vec::new() };
    let operation = QuorumOperation::ChangeQuorum { quorum };
    let change = Command::StartQuorumOperation { operation, ttl_ms: None };
    assert!(check(change, None).await.is_err());
    assert!(check(Command::Pulse, Some("a passphrase")).await.is_err());
    assert!(check(Command::Pulse, None).await.is_ok());
    let short = Command::CreateUser {
        id: "u".into(),
        roles: statemachine::RoleSet::of(statemachine::Role::Auditor),
        passphrase_verifier: Vec::new(),
    };
    assert!(check(short, Some("short")).await.is_err());
}

/// Setup: a user who may not create users sends a CreateUser with a passphrase. Action:
/// prepare it. Expect: it goes on to `apply` (which refuses it, audited) without a verifier:
/// no argon2 work was done for a caller who may not issue the command. (issue #16 point 8)
#[tokio::test]
async fn s1_no_argon2_work_for_a_user_without_the_role() {
    let command = Command::CreateUser {
        id: "u".into(),
        roles: statemachine::RoleSet::of(statemachine::Role::Auditor),
        passphrase_verifier: vec![1, 2, 3],
    };
    let passphrase = Some(zeroize::Zeroizing::new("long enough passphrase".to_string()));
    let prepared = prepare_user_command(command, passphrase, false, 8).await.expect("goes on");
    assert!(matches!(
        prepared,
        Command::CreateUser { passphrase_verifier, .. } if passphrase_verifier.is_empty()
    ));
}

/// Setup: a stamp. Action: stamp at 100 ms, then at 50 ms (the clock stepped back). Expect:
/// 100 both times: stamps never go backwards. (SPEC "Determinism")
#[test]
fn c7_the_leaders_stamp_never_goes_backwards() {
    let stamp = Stamp::default();
    assert_eq!(stamp.stamp_at(100), 100);
    assert_eq!(stamp.stamp_at(50), 100);
    assert_eq!(stamp.stamp_at(150), 150);
}

/// Setup: a state in which no KMA has reported its version (so the cluster reads format 1
/// only). Action: pass a format-1 command and the format-2 full version report through the
/// gate. Expect: the first passes; the second is refused as not available yet, retryable,
/// naming the format it needs and the cluster's. (SPEC C7)
#[test]
fn c7_the_gate_refuses_a_format_the_cluster_cannot_read_yet() {
    use statemachine::format::{LOG_FORMAT_2, LOG_FORMAT_BASELINE};
    use statemachine::{Formats, KmaVersion, SoftwareVersion};
    let state = statemachine::State::default();
    assert!(gate::check(&state, &Command::Pulse).is_ok());
    let software = SoftwareVersion::parse("0.1.0").expect("version");
    let version = KmaVersion { software, formats: Formats::CURRENT };
    let report = Command::ReportKmaVersion { kma: "kma1".into(), version };
    let refused = gate::check(&state, &report).expect_err("format 2 is not open");
    assert!(refused.is_retryable(), "{refused}");
    let expected = (LOG_FORMAT_2, LOG_FORMAT_BASELINE);
    assert!(
        matches!(refused, ProposeError::NotAvailableYet { needed, cluster, .. } if (needed, cluster) == expected),
        "{refused:?}"
    );
}

/// Setup: a leader and a follower over fakes, each with its own stage timers. Action: one
/// proposal to each. Expect: the leader times it as queued and written by Raft, the follower
/// as forwarded, both as proposed; nothing else (issue 21 point 2: the breakdown of one write).
#[tokio::test]
async fn u3_each_write_is_timed_by_the_stages_it_went_through() {
    let link = Arc::new(FakeLink::default());
    let leader_stages = WriteStages::default();
    let log = FakeLog::leading(Some(ME), 100);
    let (leader, batcher) = Proposer::new(ME, log, link.clone(), None, leader_stages.clone());
    tokio::spawn(batcher);
    leader.propose(by("alice")).await.expect("applied on the leader");
    let follower_stages = WriteStages::default();
    let log = FakeLog::leading(Some(OTHER), 100);
    let (follower, batcher) = Proposer::new(ME, log, link, None, follower_stages.clone());
    tokio::spawn(batcher);
    follower.propose(by("bob")).await.expect("applied through the leader");
    let counts = |stages: &WriteStages| {
        Stage::ALL.map(|stage| (stage.name(), stages.totals(stage).count)).to_vec()
    };
    let expect = |ran: &[Stage]| {
        Stage::ALL.map(|stage| (stage.name(), u64::from(ran.contains(&stage)))).to_vec()
    };
    assert_eq!(counts(&leader_stages), expect(&[Stage::Propose, Stage::Queue, Stage::RaftWrite]));
    assert_eq!(counts(&follower_stages), expect(&[Stage::Propose, Stage::Forward]));
}
