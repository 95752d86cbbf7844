//! Answers the state gives the shells, as pure functions of the state: who may approve a
//! quorum operation (SPEC S4) and how many keys a pool refill wants (SPEC O5). Before issue 15
//! the node worked them out itself (`security_api.rs`, `kma_security.rs`).

mod support;

use statemachine::cluster::KeyPoolLimits;
use statemachine::limits::POOL_KEYS_PER_COMMAND_MAX;
use statemachine::quorum::QuorumOperation;
use statemachine::{Actor, Command, Reject, Reply};
use support::*;

fn start(cluster: &mut TestCluster, operation: QuorumOperation) -> u64 {
    match cluster.ok(so(), Command::StartQuorumOperation { operation, ttl_ms: None }) {
        Reply::QuorumOperationStarted { id, .. } => id,
        other => panic!("expected a started operation, got {other:?}"),
    }
}

fn approve(cluster: &mut TestCluster, id: u64, member: &str) -> Result<Reply, Reject> {
    cluster.apply(so(), Command::ApproveQuorumOperation { id, member: member.into() })
}

/// Setup: the prepared cluster (quorum q1..q3, threshold 2) and its pending join of kma3.
/// Action: q2 approves. Expect: q1 and q3 may still approve, one approval counts of two, and
/// the operation expires when it said. (SPEC S4)
#[test]
fn s4_approvers_are_the_members_who_have_not_approved() {
    let (mut cluster, fixture) = prepared();
    let before = cluster.state.quorum_approvers(fixture.pending, cluster.now_ms).expect("pending");
    assert_eq!(before.eligible, ["q1", "q2", "q3"]);
    assert_eq!((before.approvals, before.threshold), (0, 2));
    approve(&mut cluster, fixture.pending, "q2").expect("q2 approves");
    let after = cluster.state.quorum_approvers(fixture.pending, cluster.now_ms).expect("pending");
    assert_eq!(after.eligible, ["q1", "q3"]);
    assert_eq!(
        (after.id, after.approvals, after.expires_at_ms),
        (fixture.pending, 1, before.expires_at_ms)
    );
}

/// Setup: the prepared cluster and its pending join. Action: `check_approval` for an unknown
/// operation, a non-member, a member who approved, an expired operation, and a member who may.
/// Expect: the member's record (its wrapped share) for the last, and for the others the very
/// refusal `apply` gives the approval. (SPEC S4; was `node` `security_api.rs` `pending_view`)
#[test]
fn s4_check_approval_refuses_as_apply_does_and_gives_the_members_share() {
    let (mut cluster, fixture) = prepared();
    let id = fixture.pending;
    approve(&mut cluster, id, "q1").expect("q1 approves");
    let now = cluster.now_ms;
    let share = cluster.state.check_approval(id, "q2", now).expect("q2 may").wrapped_share.clone();
    assert_eq!(share, vec![2u8; 48]);
    for (what, op, member, later_ms) in [
        ("unknown", 999, "q2", 0),
        ("non-member", id, "q9", 0),
        ("again", id, "q1", 0),
        ("expired", id, "q2", 2 * DAY_MS),
    ] {
        let mut copy = cluster.fork();
        copy.advance(later_ms);
        let checked =
            copy.state.check_approval(op, member, copy.now_ms).map(|_| ()).expect_err(what);
        let applied = approve(&mut copy, op, member).expect_err(what);
        assert_eq!(checked, applied, "{what}");
    }
}

/// Setup: the pending join approved by q3; then a quorum change removes q3. Action: every KMA
/// reports log format 2, then q1 approves the join. Expect: q3's approval no longer counts: q1
/// brings one of two, and the join waits for q2. (SPEC S4, C7: the rule of log format 2)
#[test]
fn s4_a_removed_members_approval_stops_counting_at_format_2() {
    let (mut cluster, fixture) = prepared();
    approve(&mut cluster, fixture.pending, "q3").expect("q3 approves");
    let change = start(&mut cluster, QuorumOperation::ChangeQuorum { quorum: quorum(2, 2) });
    approve(&mut cluster, change, "q1").expect("q1");
    approve(&mut cluster, change, "q2").expect("q2 completes the change");
    cluster.report_log_format(&["kma1", "kma2", "kma5"], 2);
    let approvers = cluster.state.quorum_approvers(fixture.pending, cluster.now_ms).expect("op");
    assert_eq!(
        (approvers.approvals, approvers.eligible.clone()),
        (0, vec!["q1".into(), "q2".into()])
    );
    let reply = approve(&mut cluster, fixture.pending, "q1").expect("q1 approves");
    assert!(
        matches!(reply, Reply::QuorumApproval { approvals: 1, completed: false, .. }),
        "{reply:?}"
    );
    let reply = approve(&mut cluster, fixture.pending, "q2").expect("q2 approves");
    assert!(
        matches!(reply, Reply::QuorumApproval { approvals: 2, completed: true, .. }),
        "{reply:?}"
    );
}

/// The prepared cluster at log format `log`; q3 approves the pending join, then a quorum
/// change removes q3 and a second one adds it back. Returns the pending join.
fn remove_and_add_back_q3(log: u16) -> (TestCluster, u64) {
    let (mut cluster, fixture) = prepared();
    cluster.open_format(log);
    approve(&mut cluster, fixture.pending, "q3").expect("q3 approves");
    for members in [2, 3] {
        let change =
            start(&mut cluster, QuorumOperation::ChangeQuorum { quorum: quorum(members, 2) });
        approve(&mut cluster, change, "q1").expect("q1");
        approve(&mut cluster, change, "q2").expect("q2 completes the change");
    }
    (cluster, fixture.pending)
}

/// Setup: the pending join approved by q3; every KMA reads log format 3, then 2. Action: a quorum
/// change removes q3, a second one adds q3 back. Expect: at format 3 the first change drops
/// q3's approval from the pending join, so once back q3 has approved nothing: it is eligible
/// again and its old approval counts for nothing. At format 2 the approval was kept, uncounted
/// while q3 was away, and counts again once it is back, and q3 cannot approve anew. Whatever
/// the format, `quorum_approvers` and `check_approval` agree with `apply`. (SPEC S4, C7;
/// issue 16 point 9)
#[test]
fn s4_a_removed_members_approval_is_dropped_at_format_3() {
    let (mut cluster, pending) = remove_and_add_back_q3(3);
    let approvers = cluster.state.quorum_approvers(pending, cluster.now_ms).expect("op");
    let all: Vec<String> = vec!["q1".into(), "q2".into(), "q3".into()];
    assert_eq!((approvers.approvals, approvers.eligible), (0, all));
    assert!(cluster.state.meta().quorum_operations[&pending].approvals.is_empty());
    cluster.state.check_approval(pending, "q3", cluster.now_ms).expect("q3 may approve again");
    let reply = approve(&mut cluster, pending, "q3").expect("q3 approves anew");
    assert!(
        matches!(reply, Reply::QuorumApproval { approvals: 1, completed: false, .. }),
        "{reply:?}"
    );

    let (mut cluster, pending) = remove_and_add_back_q3(2);
    let approvers = cluster.state.quorum_approvers(pending, cluster.now_ms).expect("op");
    let others: Vec<String> = vec!["q1".into(), "q2".into()];
    assert_eq!((approvers.approvals, approvers.eligible), (1, others), "format 2 kept it");
    let again = Reject::AlreadyApproved { id: pending, member: "q3".into() };
    let checked = cluster.state.check_approval(pending, "q3", cluster.now_ms).map(|_| ());
    assert_eq!(checked, Err(again.clone()));
    assert_eq!(approve(&mut cluster, pending, "q3").map(|_| ()), Err(again));
}

/// Setup: as above, but one KMA never reported (it may run older software). Action: q1
/// approves the join. Expect: the rule of log format 1 still holds, so that every KMA applies
/// the log alike: q3's approval counts and q1's completes the join. (SPEC C7)
#[test]
fn s4_a_removed_members_approval_still_counts_at_format_1() {
    let (mut cluster, fixture) = prepared();
    approve(&mut cluster, fixture.pending, "q3").expect("q3 approves");
    let change = start(&mut cluster, QuorumOperation::ChangeQuorum { quorum: quorum(2, 2) });
    approve(&mut cluster, change, "q1").expect("q1");
    approve(&mut cluster, change, "q2").expect("q2 completes the change");
    cluster.report_log_format(&["kma1", "kma2"], 2);
    assert_eq!(cluster.state.cluster_format_version(), 1, "kma5 never reported");
    let approvers = cluster.state.quorum_approvers(fixture.pending, cluster.now_ms).expect("op");
    assert_eq!(approvers.approvals, 1);
    let reply = approve(&mut cluster, fixture.pending, "q1").expect("q1 approves");
    assert!(
        matches!(reply, Reply::QuorumApproval { approvals: 2, completed: true, .. }),
        "{reply:?}"
    );
}

/// Setup: a pool of 50 keys, water marks 60 and 3000. Action: ask, refilling or not, as the
/// pool fills and drains. Expect: nothing while at least the low mark and not refilling; up to
/// the high mark, at most one command's worth, while below it or refilling; nothing at the high
/// mark or before the quickstart. (SPEC O5; was `node` `kma_security.rs` `refill_key_pool_once`)
#[test]
fn o5_pool_refill_wants_keys_below_low_water_and_up_to_high_water() {
    let mut cluster = standard(DAY_MS, DAY_MS);
    assert_eq!(TestCluster::blank().state.pool_keys_wanted(true), 0);
    let limits = KeyPoolLimits { low_water: 60, high_water: 3_000 };
    cluster.ok(so(), Command::SetKeyPoolLimits(limits));
    assert_eq!(cluster.state.pool_size(), (50, 0));
    assert_eq!(cluster.state.pool_keys_wanted(false), POOL_KEYS_PER_COMMAND_MAX);
    cluster.fill_pool(20);
    assert_eq!(cluster.state.pool_keys_wanted(false), 0, "at least the low water mark");
    assert_eq!(cluster.state.pool_keys_wanted(true), POOL_KEYS_PER_COMMAND_MAX);
    cluster.ok(so(), Command::SetKeyPoolLimits(KeyPoolLimits { low_water: 60, high_water: 100 }));
    assert_eq!(cluster.state.pool_keys_wanted(true), 30, "up to the high water mark");
    cluster.fill_pool(30);
    assert_eq!(cluster.state.pool_keys_wanted(true), 0, "at the high water mark");
}

/// Setup: a drained pool. Action: generate, again and again, exactly what the state wants,
/// carrying the refilling flag as the leader does. Expect: never refused as full, and the pool
/// ends at its high water mark. (SPEC O5: the rule and the bound agree)
#[test]
fn o5_a_refill_of_the_wanted_size_is_never_refused_as_full() {
    let mut cluster = standard(DAY_MS, DAY_MS);
    cluster
        .ok(so(), Command::SetKeyPoolLimits(KeyPoolLimits { low_water: 900, high_water: 2_500 }));
    let mut refilling = false;
    for _ in 0..10 {
        let wanted = cluster.state.pool_keys_wanted(refilling);
        if wanted == 0 {
            break;
        }
        let keys = (0..wanted).map(|_| cluster.new_key()).collect();
        cluster.ok(Actor::System, Command::GeneratePoolKeys { keys });
        refilling = true;
    }
    let (ready, generated) = cluster.state.pool_size();
    assert_eq!(ready + generated, 2_500);
}
