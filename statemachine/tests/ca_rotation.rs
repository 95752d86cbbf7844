//! A rotation of the cluster CA, state side (SPEC S4, S2; issue 16 point 1): the quorum
//! approves it, a KMA records the new CA, every KMA records the certificate it reissued itself,
//! and the completion makes the new CA the cluster CA and the reissued certificates the KMAs'
//! own, ending every user session; the old CA stays trusted until every KMA records that it
//! adopted the new one, and is then retired. Each refusal, who may take each step, joins and
//! new rotations held back, a deleted KMA left out, the audit log and snapshots. The rules of
//! log format 3: each test opens that format first, as a cluster of this software runs at it.
mod support;

use std::collections::BTreeMap;

use statemachine::audit::{AuditWhat, KmaChange};
use statemachine::cluster::{CaRotation, KmaStatus, RetiringCa, WrappedCaKey};
use statemachine::codec::{decode_snapshot, encode_envelope};
use statemachine::format::LOG_FORMAT_3;
use statemachine::ids::Fingerprint;
use statemachine::limits::{CA_CERTIFICATE_DER_LEN_MAX, WRAPPED_CA_KEY_LEN_MAX};
use statemachine::quorum::QuorumOperation;
use statemachine::reject::TextProblem;
use statemachine::{Actor, Command, CommandKind, Outcome, Reject, Reply, Role, RoleSet};
use support::*;

fn start_rotate_ca() -> Command {
    Command::StartQuorumOperation { operation: QuorumOperation::RotateCa, ttl_ms: None }
}

fn approve(id: u64, member: &str) -> Command {
    Command::ApproveQuorumOperation { id, member: member.into() }
}

fn reissue(name: &str, certificate_sha256: [u8; 32]) -> Command {
    Command::RecordReissuedKmaCertificate { name: name.into(), certificate_sha256 }
}

fn adopt(name: &str) -> Command {
    Command::RecordCaAdopted { name: name.into() }
}

fn grant(name: &str, byte: u8) -> Command {
    Command::GrantKmaJoin { name: name.into(), certificate_sha256: [byte; 32] }
}

/// The fingerprint of the CA that [`TestCluster::record_ca_key`] records, which a rotation
/// retires.
fn first_ca() -> [u8; 32] {
    sha256(&ca_certificate_der(0xca))
}

/// The fingerprint of the new CA of [`begin_ca_rotation`]`(0xcc)`.
fn new_ca() -> [u8; 32] {
    sha256(&ca_certificate_der(0xcc))
}

/// The prepared cluster at log format 3 (kma1 and kma2 members, kma5 approved to join, kma3
/// only created, a pending join of kma3), with the CA key recorded, kma1's certificate
/// reported, and op and co logged in with session certificates.
fn rotating_cluster() -> (TestCluster, Fixture) {
    let (mut cluster, fixture) = prepared();
    cluster.open_format(LOG_FORMAT_3);
    cluster.record_ca_key();
    let own = Command::RecordKmaCertificate { name: "kma1".into(), certificate_sha256: [0xc1; 32] };
    cluster.apply_from(1, Actor::System, own).expect("its own certificate");
    for (user, byte) in [("op", 0xd1), ("co", 0xd2)] {
        let session = Command::RecordUserSession {
            principal: user.into(),
            source: "10.0.0.7".into(),
            certificate_sha256: [byte; 32],
            expires_at_ms: cluster.now_ms + DAY_MS,
        };
        cluster.ok(Actor::System, session);
    }
    (cluster, fixture)
}

/// Setup: the rotating cluster: a CA key recorded, kma1's certificate, op and co logged in.
/// Action: the Security Officer starts a CA rotation and q1, then q2 approve it; a KMA begins
/// it; kma1, kma2 and kma5 (approved to join) each reissue through their own node; a KMA
/// completes it. Expect: nothing before the second approval, then the rotation recorded with
/// its time and operation, audited with the CA it retires; the beginning audited with the new
/// CA; each KMA asked to reissue until it did, each reissue audited with its name; kma3, only
/// created, neither asked nor waited for; while it runs, kma1's links accept its recorded and
/// its reissued certificate; the completion audited with both CAs and the two sessions ended,
/// after which the new CA and its certificate are the cluster's, each KMA holds its reissued
/// certificate and no other, no user session is left, agents are untouched, the old CA is
/// retiring since the completion's time, waiting for kma1, kma2 and kma5, the invariants hold
/// and a snapshot carries it all. Then kma1, kma2 and kma5 each adopt the new CA through their
/// own node: each asked to until it did, and audited; the last adoption retires the old CA in
/// the same entry, audited after it, and nothing is left to adopt; the invariants hold
/// throughout. (SPEC S4, S2, S5; issue 16 point 1)
#[test]
fn s4_a_ca_rotation_runs_from_approval_through_every_kma_to_the_old_cas_retirement() {
    let (mut cluster, _) = rotating_cluster();
    let Reply::QuorumOperationStarted { id, .. } = cluster.ok(so(), start_rotate_ca()) else {
        panic!("started")
    };
    cluster.ok(so(), approve(id, "q1"));
    assert_eq!(cluster.state.ca_rotation(), None, "one approval of two");
    cluster.ok(so(), approve(id, "q2"));
    assert_eq!(
        cluster.last_events(),
        vec![
            AuditWhat::QuorumApproval { id, member: "q2".into(), approvals: 2, threshold: 2 },
            AuditWhat::CaRotationApproved { ca_certificate_sha256: Fingerprint(first_ca()) },
            AuditWhat::QuorumOperationCompleted { id },
        ]
    );
    let approved = CaRotation {
        approved_at_ms: cluster.now_ms,
        operation_id: id,
        new_ca: None,
        reissued: BTreeMap::new(),
    };
    assert_eq!(cluster.state.ca_rotation(), Some(&approved));
    assert!(!cluster.state.kma_to_reissue("kma1"), "no new CA to reissue under yet");
    assert!(!cluster.state.ca_rotation_complete_ready());

    cluster.advance(SECOND_MS);
    cluster.ok(Actor::System, begin_ca_rotation(0xcc));
    let begun = AuditWhat::CaRotationBegun { ca_certificate_sha256: Fingerprint(new_ca()) };
    assert_eq!(cluster.last_events(), vec![begun]);
    assert_eq!(cluster.state.ca_rotation_waiting_for(), ["kma1", "kma2", "kma5"]);
    assert!(!cluster.state.kma_to_reissue("kma3"), "only created: it holds no certificate");
    assert!(!cluster.state.kma_to_reissue("ghost"));
    for (name, node_id) in [("kma1", 1), ("kma2", 2), ("kma5", 4)] {
        assert!(cluster.state.kma_to_reissue(name), "{name}");
        let certificate_sha256 = reissued_certificate(node_id);
        cluster.apply_from(node_id, Actor::System, reissue(name, certificate_sha256)).expect(name);
        let change = KmaChange::CertificateReissued { certificate_sha256 };
        let event = AuditWhat::KmaChanged { kma: name.into(), node_id, change };
        assert_eq!(cluster.last_events(), vec![event]);
        assert!(!cluster.state.kma_to_reissue(name), "{name} reissued");
    }
    assert!(cluster.state.ca_rotation_complete_ready());
    assert_eq!(
        cluster.state.accepted_kma_certificates("kma1"),
        [[0xc1; 32], reissued_certificate(1)]
    );
    assert!(cluster.state.kma_certificate_accepted(1, &[0xc1; 32]), "the old one, meanwhile");
    assert!(cluster.state.kma_certificate_accepted(1, &reissued_certificate(1)));
    assert!(!cluster.state.kma_certificate_accepted(1, &[0xee; 32]));

    cluster.advance(SECOND_MS);
    let agents = cluster.state.meta().agents.clone();
    let adopted = std::collections::BTreeSet::new();
    assert_eq!(cluster.ok(Actor::System, Command::CompleteCaRotation), Reply::Done);
    let completed = AuditWhat::CaRotationCompleted {
        retired_ca_certificate_sha256: Fingerprint(first_ca()),
        ca_certificate_sha256: Fingerprint(new_ca()),
        user_sessions_ended: 2,
    };
    assert_eq!(cluster.last_events(), vec![completed]);
    assert!(cluster.state.meta().agents == agents, "agents enroll again; their records stay");
    assert_rotated_to_the_new_ca(&cluster.state);
    let retiring =
        RetiringCa { ca_certificate_sha256: first_ca(), completed_at_ms: cluster.now_ms, adopted };
    assert_eq!(cluster.state.retiring_ca(), Some(&retiring));
    let read = decode_snapshot(&cluster.snapshot()).expect("format 4 is read");
    assert!(read == cluster.state, "a snapshot carries the rotated CA");

    cluster.advance(SECOND_MS);
    each_kma_adopts_the_new_ca_until_the_old_one_retires(&mut cluster);
}

/// The last phase of the rotating cluster's rotation: kma1, kma2 and kma5 (kma3 is only
/// created), each asked to adopt the new CA until it did, adopt it through their own node,
/// each audited; the last adoption retires the old CA, audited after it; then nothing is left
/// to adopt, and the rotated CA stays.
fn each_kma_adopts_the_new_ca_until_the_old_one_retires(cluster: &mut TestCluster) {
    assert_eq!(cluster.state.ca_retirement_waiting_for(), ["kma1", "kma2", "kma5"]);
    assert!(!cluster.state.kma_to_adopt("kma3"), "only created: it applies no log");
    assert!(!cluster.state.kma_to_adopt("ghost"));
    for (name, node_id) in [("kma1", 1), ("kma2", 2), ("kma5", 4)] {
        assert!(cluster.state.kma_to_adopt(name), "{name}");
        assert_eq!(cluster.apply_from(node_id, Actor::System, adopt(name)), Ok(Reply::Done));
        assert!(!cluster.state.kma_to_adopt(name), "{name} adopted");
        let change = KmaChange::AdoptedNewCa { ca_certificate_sha256: new_ca() };
        let mut events = vec![AuditWhat::KmaChanged { kma: name.into(), node_id, change }];
        if name == "kma5" {
            events.push(AuditWhat::CaRetired { ca_certificate_sha256: Fingerprint(first_ca()) });
        } else {
            let adopted = cluster.state.retiring_ca().expect("retiring").adopted.clone();
            assert!(adopted.contains(name), "{name}");
        }
        assert_eq!(cluster.last_events(), events, "{name}");
        cluster.state.check_invariants();
    }
    assert_eq!(cluster.state.retiring_ca(), None, "retired by the last adoption");
    assert!(cluster.state.ca_retirement_waiting_for().is_empty());
    assert!(["kma1", "kma2", "kma5"].iter().all(|name| !cluster.state.kma_to_adopt(name)));
    assert_rotated_to_the_new_ca(&cluster.state);
}

/// The rotating cluster with a rotation to [`new_ca`] completed: its old CA, [`first_ca`],
/// retiring, adopted by no KMA yet.
fn completed_rotation() -> TestCluster {
    let (mut cluster, _) = rotating_cluster();
    cluster.approve_ca_rotation();
    cluster.ok(Actor::System, begin_ca_rotation(0xcc));
    cluster.reissue_every_kma();
    cluster.ok(Actor::System, Command::CompleteCaRotation);
    assert!(cluster.state.retiring_ca().is_some_and(|retiring| retiring.adopted.is_empty()));
    cluster
}

/// Setup: a completed rotation, its old CA retiring. Action: kma1's adoption through kma2's
/// node, kma3's (only created) through its own node, an unknown KMA's, kma1's by a user; then
/// kma1's through its own node, and the same again. Expect: refused as another KMA's report
/// (it could retire the old CA while kma1 still presents a certificate of it), as the wrong
/// status, as unknown, as the wrong issuer, with nothing adopted; then kma1's recorded and
/// audited, the old CA still retiring for kma2 and kma5; the same again Done, with no audit
/// event and no change. (SPEC S4, S2; issue 16 point 1)
#[test]
fn s4_a_kma_records_only_its_own_adoption_of_the_new_ca() {
    let mut cluster = completed_rotation();
    let another = cluster.apply_from(2, Actor::System, adopt("kma1"));
    let expected =
        Reject::KmaCertificateFromAnotherKma { kma: "kma1".into(), node_id: 1, origin_node_id: 2 };
    assert_eq!(another, Err(expected));
    let created = cluster.apply_from(3, Actor::System, adopt("kma3"));
    let status = "created (not joined)".into();
    assert_eq!(created, Err(Reject::KmaWrongStatus { name: "kma3".into(), status }));
    let unknown = cluster.apply_from(1, Actor::System, adopt("ghost"));
    assert_eq!(unknown, Err(Reject::UnknownKma { name: "ghost".into() }));
    let by_user = cluster.apply_from(1, so(), adopt("kma1"));
    assert_eq!(by_user, Err(Reject::WrongIssuer { kind: CommandKind::RecordCaAdopted }));
    assert!(cluster.state.retiring_ca().expect("retiring").adopted.is_empty());

    cluster.apply_from(1, Actor::System, adopt("kma1")).expect("its own");
    let change = KmaChange::AdoptedNewCa { ca_certificate_sha256: new_ca() };
    assert_eq!(
        cluster.last_events(),
        vec![AuditWhat::KmaChanged { kma: "kma1".into(), node_id: 1, change }]
    );
    assert_eq!(cluster.state.ca_retirement_waiting_for(), ["kma2", "kma5"]);
    let before = cluster.state.clone();
    assert_eq!(cluster.apply_from(1, Actor::System, adopt("kma1")), Ok(Reply::Done), "again");
    assert_eq!(cluster.last_events(), vec![]);
    assert!(without_what_a_refusal_changes(&cluster.state, &before) == before, "nothing changed");
}

/// Setup: the rotating cluster. Action: kma1 records an adoption of a new CA before any
/// rotation; with one approved; begun; with every KMA's certificate reissued; then, the
/// rotation completed, every KMA adopts, and kma1 records its adoption again. Expect: each
/// refused as there is nothing to adopt (`CaNotRetiring`), before the completion and after the
/// retirement alike, the message saying so; nothing changes. (SPEC S4; issue 16 point 1)
#[test]
fn s4_an_adoption_outside_the_old_cas_retirement_has_nothing_to_adopt() {
    let (mut cluster, _) = rotating_cluster();
    let refused = |cluster: &mut TestCluster| {
        let before = cluster.state.clone();
        let refused = cluster.apply_from(1, Actor::System, adopt("kma1"));
        assert_eq!(refused, Err(Reject::CaNotRetiring));
        assert!(without_what_a_refusal_changes(&cluster.state, &before) == before);
        refused.expect_err("refused").to_string()
    };
    let message = refused(&mut cluster);
    assert_eq!(
        message,
        "no old CA is being retired, so there is nothing to adopt: a KMA records that it \
         adopted the new CA only after a CA rotation completed, until every KMA has; nothing to \
         do"
    );
    cluster.approve_ca_rotation();
    refused(&mut cluster);
    cluster.ok(Actor::System, begin_ca_rotation(0xcc));
    refused(&mut cluster);
    cluster.reissue_every_kma();
    refused(&mut cluster);
    cluster.ok(Actor::System, Command::CompleteCaRotation);
    cluster.adopt_every_kma();
    refused(&mut cluster);
}

/// Setup: a completed rotation, its old CA retiring. Action: the Security Officer deletes kma3
/// (only created); kma5 adopts the new CA and is deleted; kma1 adopts; kma2, the last KMA
/// missing, is deleted. Expect: kma3's deletion leaves the retirement as it was; kma5's takes
/// its adoption with it, and the retirement still waits for kma1 and kma2; after kma1's
/// adoption it waits for kma2 alone; kma2's deletion retires the old CA in the same entry,
/// audited after the deletion; the invariants hold throughout. (SPEC S4, C5; issue 16 point 1)
#[test]
fn s4_a_deleted_kma_does_not_hold_up_the_retirement_of_the_old_ca() {
    let mut cluster = completed_rotation();
    let delete = |name: &str| Command::DeleteKma { name: name.into() };
    let deleted = |name: &str, node_id| AuditWhat::KmaChanged {
        kma: name.into(),
        node_id,
        change: KmaChange::Deleted,
    };
    cluster.ok(so(), delete("kma3"));
    assert_eq!(cluster.last_events(), vec![deleted("kma3", 3)]);
    assert_eq!(cluster.state.ca_retirement_waiting_for(), ["kma1", "kma2", "kma5"]);
    cluster.apply_from(4, Actor::System, adopt("kma5")).expect("its own");
    cluster.ok(so(), delete("kma5"));
    assert_eq!(cluster.last_events(), vec![deleted("kma5", 4)]);
    let retiring = cluster.state.retiring_ca().expect("still retiring");
    assert!(retiring.adopted.is_empty(), "kma5's adoption left with it");
    assert_eq!(cluster.state.ca_retirement_waiting_for(), ["kma1", "kma2"]);
    cluster.apply_from(1, Actor::System, adopt("kma1")).expect("its own");
    assert_eq!(cluster.state.ca_retirement_waiting_for(), ["kma2"]);
    assert!(cluster.state.retiring_ca().is_some());

    cluster.ok(so(), delete("kma2"));
    let retired = AuditWhat::CaRetired { ca_certificate_sha256: Fingerprint(first_ca()) };
    assert_eq!(cluster.last_events(), vec![deleted("kma2", 2), retired]);
    assert_eq!(cluster.state.retiring_ca(), None, "retired by the deletion");
    assert!(cluster.state.ca_retirement_waiting_for().is_empty());
    assert_eq!(cluster.state.wrapped_ca_key().expect("new").ca_certificate_sha256, new_ca());
    cluster.state.check_invariants();
}

/// Setup: the rotating cluster; two CA rotations started; the first approved, begun, every
/// certificate reissued and completed. Action: a third rotation started; the approval that
/// would complete the second; every KMA adopts the new CA; the same approval again. Expect:
/// while the old CA retires, the third is refused and so is the second's approval
/// (`CaRetirementUnderWay`: not `CaRotationUnderWay`, the rotation is over), the second stays
/// pending and no rotation is recorded; once the old CA is retired, the second is approved and
/// recorded, retiring the CA the first rotation made. (SPEC S4; issue 16 point 1)
#[test]
fn s4_no_ca_rotation_starts_while_the_old_ca_retires() {
    let (mut cluster, _) = rotating_cluster();
    let mut started = Vec::new();
    for _ in 0..2 {
        let Reply::QuorumOperationStarted { id, .. } = cluster.ok(so(), start_rotate_ca()) else {
            panic!("started")
        };
        started.push(id);
    }
    let (first, second) = (started[0], started[1]);
    cluster.ok(so(), approve(first, "q1"));
    cluster.ok(so(), approve(first, "q2"));
    cluster.ok(Actor::System, begin_ca_rotation(0xcc));
    cluster.reissue_every_kma();
    cluster.ok(Actor::System, Command::CompleteCaRotation);
    let retiring = Reject::CaRetirementUnderWay {
        ca_certificate_sha256: Fingerprint(first_ca()),
        completed_at_ms: cluster.now_ms,
        waiting_for: vec!["kma1".into(), "kma2".into(), "kma5".into()],
    };
    assert_eq!(cluster.apply(so(), start_rotate_ca()), Err(retiring.clone()));
    cluster.ok(so(), approve(second, "q1"));
    assert_eq!(cluster.apply(so(), approve(second, "q2")), Err(retiring));
    assert!(cluster.state.meta().quorum_operations.contains_key(&second), "still pending");
    assert_eq!(cluster.state.ca_rotation(), None);

    cluster.adopt_every_kma();
    cluster.ok(so(), approve(second, "q2"));
    let approved = AuditWhat::CaRotationApproved { ca_certificate_sha256: Fingerprint(new_ca()) };
    assert!(cluster.last_events().contains(&approved), "it retires the first rotation's CA");
    assert_eq!(cluster.state.ca_rotation().expect("approved").operation_id, second);
}

/// Setup: a completed rotation, its old CA retiring. Action: kma1's adoption through kma2's
/// node; kma1's own; kma2's own, the same again; kma5's own, the last; every event kept.
/// Expect: the refusal holds the command record alone, rejected with code 70; each adoption
/// its command record and `AdoptedNewCa` with the new CA's fingerprint, the same again the
/// record alone; the last one then `CaRetired` with the old CA's fingerprint, after its
/// adoption; no event holds the wrapped key's bytes, and `CaRetired` reads in hex. (SPEC S5;
/// issue 16 point 1)
#[test]
fn s5_the_audit_log_of_a_retirement_holds_each_adoption_then_the_retired_ca() {
    let mut cluster = completed_rotation();
    let whole = |cluster: &mut TestCluster, node_id, name: &str| {
        let result = cluster.apply_from(node_id, Actor::System, adopt(name));
        let applied = cluster.last.as_ref().expect("applied");
        let AuditWhat::Command { kind, origin_node_id, outcome, .. } = &applied.events[0].what
        else {
            panic!("the command record first")
        };
        assert_eq!((*kind, *origin_node_id), (CommandKind::RecordCaAdopted, node_id));
        let expected = result
            .as_ref()
            .map_or_else(|reject| Outcome::Rejected { code: reject.code() }, |_| Outcome::Applied);
        assert_eq!(*outcome, expected);
        applied.events.iter().skip(1).map(|event| event.what.clone()).collect::<Vec<_>>()
    };
    let adopted = |name: &str, node_id| AuditWhat::KmaChanged {
        kma: name.into(),
        node_id,
        change: KmaChange::AdoptedNewCa { ca_certificate_sha256: new_ca() },
    };
    assert_eq!(whole(&mut cluster, 2, "kma1"), vec![]);
    let refused = cluster.last.as_ref().expect("applied").events[0].what.clone();
    assert!(matches!(refused, AuditWhat::Command { outcome: Outcome::Rejected { code: 70 }, .. }));
    assert_eq!(whole(&mut cluster, 1, "kma1"), vec![adopted("kma1", 1)]);
    assert_eq!(whole(&mut cluster, 2, "kma2"), vec![adopted("kma2", 2)]);
    assert_eq!(whole(&mut cluster, 2, "kma2"), vec![], "the same again");
    let retired = AuditWhat::CaRetired { ca_certificate_sha256: Fingerprint(first_ca()) };
    assert_eq!(whole(&mut cluster, 4, "kma5"), vec![adopted("kma5", 4), retired.clone()]);
    let bytes = postcard::to_allocvec(&cluster.last.as_ref().expect("applied").events)
        .expect("events encode");
    assert!(!bytes.windows(16).any(|w| w == [0x33; 16]), "no wrapped key");
    assert_eq!(
        format!("{retired:?}"),
        format!("CaRetired {{ ca_certificate_sha256: Fingerprint({}) }}", Fingerprint(first_ca()))
    );
}

/// What a completed rotation of the rotating cluster leaves, whether its old CA is retired yet
/// or not: the new CA and its certificate are the cluster's, each KMA that applies the log
/// holds the certificate it reissued and no other is accepted, no user session is left, no
/// rotation is under way, the invariants hold.
fn assert_rotated_to_the_new_ca(state: &statemachine::State) {
    let ca_key = WrappedCaKey { ca_certificate_sha256: new_ca(), wrapped_key: vec![0x33; 96] };
    assert_eq!(state.wrapped_ca_key(), Some(&ca_key));
    assert_eq!(state.ca_certificate_der(), Some(&ca_certificate_der(0xcc)[..]));
    assert_eq!(state.ca_rotation(), None);
    let certificates: Vec<(&str, Option<[u8; 32]>)> =
        state.meta().kmas.values().map(|kma| (kma.name.as_str(), kma.certificate_sha256)).collect();
    let reissued = |node_id| Some(reissued_certificate(node_id));
    assert_eq!(
        certificates,
        [("kma1", reissued(1)), ("kma2", reissued(2)), ("kma3", None), ("kma5", reissued(4))]
    );
    assert!(!state.kma_certificate_accepted(1, &[0xc1; 32]), "the old CA's certificate");
    assert!(state.kma_certificate_accepted(1, &reissued_certificate(1)));
    assert_eq!(state.accepted_kma_certificates("kma1"), [reissued_certificate(1)]);
    assert!(state.meta().users.values().all(|user| user.sessions.is_empty()), "log in again");
    assert!(!state.user_session_certified("op", &[0xd1; 32]));
    assert!(state.ca_rotation_waiting_for().is_empty() && !state.ca_rotation_complete_ready());
    state.check_invariants();
}

/// Setup: the prepared cluster at log format 3 with no CA key recorded. Action: the Security
/// Officer starts a CA rotation. Expect: refused, naming the rule and the next step (let a KMA
/// record the key), and no operation is pending. (SPEC S4; issue 16 point 1)
#[test]
fn s4_a_ca_rotation_needs_a_recorded_ca_key() {
    let (mut cluster, _) = prepared();
    cluster.open_format(LOG_FORMAT_3);
    let pending = cluster.state.meta().quorum_operations.len();
    let refused = cluster.apply(so(), start_rotate_ca());
    assert_eq!(refused, Err(Reject::CaKeyNotRecorded));
    assert_eq!(
        refused.expect_err("refused").to_string(),
        "the cluster CA's key is not recorded in the state, so there is no CA to rotate: an \
         unlocked KMA records it by itself once every KMA runs software of log format 3; \
         upgrade the KMAs or unlock one, then start the rotation again"
    );
    assert_eq!(cluster.state.meta().quorum_operations.len(), pending);
}

/// Setup: the rotating cluster; two CA rotations started. Action: the quorum approves the
/// first, then the second; a third is started while the first is approved, and again once it
/// is begun. Expect: the first is recorded; the approval that would complete the second is
/// refused (`CaRotationUnderWay`, naming the rotation and the next step), which stays pending;
/// the third is refused both times. (SPEC S4; issue 16 point 1)
#[test]
fn s4_one_ca_rotation_at_a_time() {
    let (mut cluster, _) = rotating_cluster();
    let mut started = Vec::new();
    for _ in 0..2 {
        let Reply::QuorumOperationStarted { id, .. } = cluster.ok(so(), start_rotate_ca()) else {
            panic!("started")
        };
        started.push(id);
    }
    let (first, second) = (started[0], started[1]);
    cluster.ok(so(), approve(first, "q1"));
    cluster.ok(so(), approve(first, "q2"));
    let approved_at_ms = cluster.now_ms;
    let under_way = Reject::CaRotationUnderWay { approved_at_ms, operation_id: first };
    cluster.ok(so(), approve(second, "q1"));
    assert_eq!(cluster.apply(so(), approve(second, "q2")), Err(under_way.clone()));
    assert!(cluster.state.meta().quorum_operations.contains_key(&second), "still pending");
    assert_eq!(cluster.state.ca_rotation().expect("the first").operation_id, first);
    let refused = cluster.apply(so(), start_rotate_ca());
    assert_eq!(refused, Err(under_way.clone()));
    assert_eq!(
        refused.expect_err("refused").to_string(),
        format!(
            "a CA rotation is under way (approved at {approved_at_ms} ms, quorum operation \
             {first}): no second rotation starts and no KMA joins until it completes, since a \
             joiner's certificate would come from the CA being retired; let every KMA reissue \
             its certificate and the rotation complete, then try again"
        )
    );
    cluster.ok(Actor::System, begin_ca_rotation(0xcc));
    assert_eq!(cluster.apply(so(), start_rotate_ca()), Err(under_way));
}

/// Setup: the rotating cluster. Action: a KMA begins a rotation before the quorum approved
/// one; then, approved, with a certificate and key empty or a byte over their bounds, a
/// fingerprint that is not the certificate's, the current CA's certificate, and a certificate
/// and key of exactly their bounds. Expect: refused as not approved; then each refused as
/// invalid, naming the field, the bound, both fingerprints or the current CA, with no new CA
/// recorded; the last recorded. (SPEC S4, S2; issue 16 point 1; STYLE 9)
#[test]
fn s2_the_new_ca_is_checked_before_it_is_recorded() {
    let (mut cluster, _) = rotating_cluster();
    let begin = |der: Vec<u8>, sha256: [u8; 32], wrapped_key: Vec<u8>| Command::BeginCaRotation {
        ca_certificate_der: der,
        ca_certificate_sha256: sha256,
        wrapped_key,
    };
    let refused = cluster.apply(Actor::System, begin_ca_rotation(0xcc));
    assert_eq!(refused, Err(Reject::CaRotationNotApproved));
    assert!(refused.expect_err("refused").to_string().contains("a Security Officer starts one"));
    cluster.approve_ca_rotation();

    let der = ca_certificate_der(0xcc);
    let long_der = vec![0xcc; CA_CERTIFICATE_DER_LEN_MAX + 1];
    let invalid = |field: &str, problem| Reject::InvalidText { field: field.into(), problem };
    let too_long = |len_max: usize| TextProblem::TooLong { len_max: len_max as u32 };
    let cases = [
        (begin(vec![], new_ca(), vec![1; 96]), invalid("CA certificate", TextProblem::Empty)),
        (
            begin(long_der.clone(), sha256(&long_der), vec![1; 96]),
            invalid("CA certificate", too_long(CA_CERTIFICATE_DER_LEN_MAX)),
        ),
        (begin(der.clone(), new_ca(), vec![]), invalid("wrapped CA key", TextProblem::Empty)),
        (
            begin(der.clone(), new_ca(), vec![1; WRAPPED_CA_KEY_LEN_MAX + 1]),
            invalid("wrapped CA key", too_long(WRAPPED_CA_KEY_LEN_MAX)),
        ),
        (
            begin(der.clone(), [0xcc; 32], vec![1; 96]),
            Reject::CaCertificateFingerprintMismatch {
                stated: Fingerprint([0xcc; 32]),
                computed: Fingerprint(new_ca()),
            },
        ),
        (
            begin_ca_rotation(0xca),
            Reject::NewCaIsCurrentCa { ca_certificate_sha256: Fingerprint(first_ca()) },
        ),
    ];
    for (command, expected) in cases {
        assert_eq!(cluster.apply(Actor::System, command), Err(expected.clone()));
        assert_eq!(cluster.state.ca_rotation().expect("approved").new_ca, None, "{expected:?}");
    }
    let mismatch = cluster.apply(Actor::System, begin(der, [0xcc; 32], vec![1; 96]));
    assert_eq!(
        mismatch.expect_err("refused").to_string(),
        format!(
            "the new CA certificate's SHA-256 is {}, not {} as the record says: nothing \
             recorded; the KMA that proposed it must send the fingerprint of the certificate it \
             made (report it as a bug)",
            Fingerprint(new_ca()),
            "cc".repeat(32)
        )
    );

    let largest = vec![0xcc; CA_CERTIFICATE_DER_LEN_MAX];
    let command = begin(largest.clone(), sha256(&largest), vec![1; WRAPPED_CA_KEY_LEN_MAX]);
    cluster.ok(Actor::System, command);
    let recorded = cluster.state.ca_rotation().and_then(|r| r.new_ca.as_ref()).expect("begun");
    assert_eq!(recorded.ca_certificate_der, largest);
}

/// Setup: the rotating cluster, a rotation approved and begun. Action: the same beginning
/// again (certificate, fingerprint and key); another CA; the same certificate with another
/// wrapped key. Expect: the same again is answered Done with no audit event and no change;
/// both others are refused, naming the CA begun, which stays. (SPEC S4; issue 16 point 1)
#[test]
fn s4_the_first_new_ca_wins_and_the_same_beginning_again_changes_nothing() {
    let (mut cluster, _) = rotating_cluster();
    cluster.approve_ca_rotation();
    cluster.ok(Actor::System, begin_ca_rotation(0xcc));
    let before = cluster.state.clone();
    assert_eq!(cluster.ok(Actor::System, begin_ca_rotation(0xcc)), Reply::Done, "retried");
    assert_eq!(cluster.last_events(), vec![], "no second audit event");
    assert!(without_what_a_refusal_changes(&cluster.state, &before) == before, "nothing changed");

    let mut other_key = begin_ca_rotation(0xcc);
    if let Command::BeginCaRotation { wrapped_key, .. } = &mut other_key {
        *wrapped_key = vec![0x44; 96];
    }
    let already = Reject::CaRotationAlreadyBegun { ca_certificate_sha256: Fingerprint(new_ca()) };
    for other in [begin_ca_rotation(0xcd), other_key] {
        let refused = cluster.apply(Actor::System, other);
        assert_eq!(refused, Err(already.clone()));
        assert_eq!(cluster.last_events(), vec![]);
        let begun = cluster.state.ca_rotation().and_then(|r| r.new_ca.as_ref()).expect("begun");
        assert_eq!(begun.ca_key.ca_certificate_sha256, new_ca(), "the first stays");
        assert_eq!(begun.ca_key.wrapped_key, vec![0x33; 96]);
        assert_eq!(
            refused.expect_err("refused").to_string(),
            format!(
                "the CA rotation already began with the new CA certificate of SHA-256 {}: a \
                 rotation has one new CA; the KMAs reissue their certificates under that one",
                Fingerprint(new_ca())
            )
        );
    }
}

/// Setup: the rotating cluster. Action: kma1 records a reissued certificate before any
/// rotation, then with one approved and not begun; once begun, kma1's through kma2's node,
/// kma3's (only created) through its own node, an unknown KMA's, kma1's by a user; then
/// kma1's through its own node, the same again, and another. Expect: not approved, not begun;
/// then refused as another KMA's report, as the wrong status, as unknown, as the wrong issuer;
/// kma1's own recorded and audited; the same again Done with no event; another replaces it
/// (a KMA that lost its new certificate makes another), audited, and kma1's links accept its
/// recorded certificate and the latest reissued one. (SPEC S4, S2; issue 16 point 1)
#[test]
fn s4_a_kma_records_only_its_own_reissued_certificate_under_a_begun_rotation() {
    let (mut cluster, _) = rotating_cluster();
    let kma1 = |byte| reissue("kma1", [byte; 32]);
    let early = cluster.apply_from(1, Actor::System, kma1(0xe1));
    assert_eq!(early, Err(Reject::CaRotationNotApproved));
    cluster.approve_ca_rotation();
    let not_begun = cluster.apply_from(1, Actor::System, kma1(0xe1));
    assert_eq!(not_begun, Err(Reject::CaRotationNotBegun));
    assert!(not_begun.expect_err("refused").to_string().contains("an unlocked KMA makes it"));
    cluster.ok(Actor::System, begin_ca_rotation(0xcc));

    let another = cluster.apply_from(2, Actor::System, kma1(0xe1));
    let expected =
        Reject::KmaCertificateFromAnotherKma { kma: "kma1".into(), node_id: 1, origin_node_id: 2 };
    assert_eq!(another, Err(expected));
    let created = cluster.apply_from(3, Actor::System, reissue("kma3", [0xe3; 32]));
    let status = "created (not joined)".into();
    assert_eq!(created, Err(Reject::KmaWrongStatus { name: "kma3".into(), status }));
    let unknown = cluster.apply_from(1, Actor::System, reissue("ghost", [0xe9; 32]));
    assert_eq!(unknown, Err(Reject::UnknownKma { name: "ghost".into() }));
    let by_user = cluster.apply_from(1, so(), kma1(0xe1));
    let kind = CommandKind::RecordReissuedKmaCertificate;
    assert_eq!(by_user, Err(Reject::WrongIssuer { kind }));
    assert_eq!(cluster.state.ca_rotation().expect("begun").reissued, BTreeMap::new());

    let event = |byte| AuditWhat::KmaChanged {
        kma: "kma1".into(),
        node_id: 1,
        change: KmaChange::CertificateReissued { certificate_sha256: [byte; 32] },
    };
    cluster.apply_from(1, Actor::System, kma1(0xe1)).expect("its own");
    assert_eq!(cluster.last_events(), vec![event(0xe1)]);
    let before = cluster.state.clone();
    assert_eq!(cluster.apply_from(1, Actor::System, kma1(0xe1)), Ok(Reply::Done), "retried");
    assert_eq!(cluster.last_events(), vec![]);
    assert!(without_what_a_refusal_changes(&cluster.state, &before) == before, "nothing changed");
    cluster.apply_from(1, Actor::System, kma1(0xf1)).expect("a second one");
    assert_eq!(cluster.last_events(), vec![event(0xf1)]);
    assert_eq!(cluster.state.reissued_certificate("kma1"), Some([0xf1; 32]));
    assert_eq!(cluster.state.accepted_kma_certificates("kma1"), [[0xc1; 32], [0xf1; 32]]);
    assert!(!cluster.state.kma_certificate_accepted(1, &[0xe1; 32]), "the one replaced");
}

/// Setup: the rotating cluster. Action: a KMA completes a rotation before any is approved;
/// then one approved and not begun; then begun with only kma1 reissued; then with kma2 too;
/// then with kma5 too. Expect: not approved; not begun; incomplete, waiting for kma2 and kma5,
/// the message naming them and the next step, with the CA unchanged; then waiting for kma5;
/// then completed. (SPEC S4; issue 16 point 1)
#[test]
fn s4_completion_waits_for_every_kma_that_applies_the_log() {
    let (mut cluster, _) = rotating_cluster();
    let complete = || Command::CompleteCaRotation;
    assert_eq!(cluster.apply(Actor::System, complete()), Err(Reject::CaRotationNotApproved));
    cluster.approve_ca_rotation();
    assert_eq!(cluster.apply(Actor::System, complete()), Err(Reject::CaRotationNotBegun));
    cluster.ok(Actor::System, begin_ca_rotation(0xcc));
    cluster.apply_from(1, Actor::System, reissue("kma1", [0xe1; 32])).expect("its own");
    let refused = cluster.apply(Actor::System, complete());
    let waiting_for = vec!["kma2".to_string(), "kma5".to_string()];
    assert_eq!(refused, Err(Reject::CaRotationIncomplete { waiting_for: waiting_for.clone() }));
    assert_eq!(cluster.state.ca_rotation_waiting_for(), waiting_for);
    assert_eq!(
        refused.expect_err("refused").to_string(),
        "the CA rotation waits for KMAs kma2, kma5 to reissue their certificates under the new \
         CA: unlock them so that they do, or delete those that are gone for good, then complete \
         the rotation again"
    );
    let ca_key = cluster.state.wrapped_ca_key().expect("recorded");
    assert_eq!(ca_key.ca_certificate_sha256, first_ca(), "the CA stays until completion");
    assert!(!cluster.state.ca_rotation_complete_ready());

    cluster.apply_from(2, Actor::System, reissue("kma2", [0xe2; 32])).expect("its own");
    let waiting_for = vec!["kma5".to_string()];
    assert_eq!(
        cluster.apply(Actor::System, complete()),
        Err(Reject::CaRotationIncomplete { waiting_for })
    );
    cluster.apply_from(4, Actor::System, reissue("kma5", [0xe4; 32])).expect("its own");
    assert_eq!(cluster.apply(Actor::System, complete()), Ok(Reply::Done));
    assert_eq!(cluster.state.wrapped_ca_key().expect("new").ca_certificate_sha256, new_ca());
}

/// Setup: the rotating cluster, a rotation begun, kma2's certificate reissued. Action: the
/// Security Officer deletes kma2, then kma5, which never reissued; kma1 reissues; a KMA
/// completes the rotation. Expect: kma2's reissued certificate leaves the rotation; each
/// deletion shortens the list the rotation waits for; the completion is applied with kma1
/// alone, which holds its reissued certificate. (SPEC S4, C5; issue 16 point 1)
#[test]
fn s4_a_deleted_kma_does_not_hold_up_completion() {
    let (mut cluster, _) = rotating_cluster();
    cluster.approve_ca_rotation();
    cluster.ok(Actor::System, begin_ca_rotation(0xcc));
    cluster.apply_from(2, Actor::System, reissue("kma2", [0xe2; 32])).expect("its own");
    assert_eq!(cluster.state.ca_rotation_waiting_for(), ["kma1", "kma5"]);
    cluster.ok(so(), Command::DeleteKma { name: "kma2".into() });
    assert_eq!(cluster.state.reissued_certificate("kma2"), None, "gone with its KMA");
    assert_eq!(cluster.state.ca_rotation_waiting_for(), ["kma1", "kma5"]);
    cluster.ok(so(), Command::DeleteKma { name: "kma5".into() });
    assert_eq!(cluster.state.ca_rotation_waiting_for(), ["kma1"]);
    cluster.apply_from(1, Actor::System, reissue("kma1", [0xe1; 32])).expect("its own");
    assert!(cluster.state.ca_rotation_complete_ready());
    cluster.ok(Actor::System, Command::CompleteCaRotation);
    assert_eq!(cluster.state.meta().kmas["kma1"].certificate_sha256, Some([0xe1; 32]));
    assert_eq!(cluster.state.wrapped_ca_key().expect("new").ca_certificate_sha256, new_ca());
}

/// Setup: the prepared cluster at log format 3, each step of a rotation reached on its own
/// copy (`stage_for`). Action: every user role and an agent take each KMA step (begin, record
/// a reissued certificate, complete, record an adoption of the new CA); every actor but the
/// Security Officer starts a rotation.
/// Expect: the KMA steps are refused to users and agents as the wrong issuer ("only a KMA
/// issues ..."), and change nothing; the start is refused to every other actor for the missing
/// Security Officer role (the KMA and the agent hold none), and no rotation is pending. (SPEC
/// S1, S4; issue 16 point 1)
#[test]
fn s1_only_a_kma_takes_the_steps_of_a_ca_rotation_and_a_security_officer_starts_it() {
    let (mut cluster, _) = prepared();
    cluster.open_format(LOG_FORMAT_3);
    let steps = [
        begin_ca_rotation(0xcc),
        reissue("kma1", [0xe1; 32]),
        Command::CompleteCaRotation,
        adopt("kma1"),
    ];
    for step in steps {
        let mut copy = cluster.fork();
        stage_for(&mut copy, &step);
        let kind = step.kind();
        for actor in [so(), co(), op(), bo(), auditor(), agent("drive1")] {
            let refused = copy.apply(actor.clone(), step.clone());
            assert_eq!(refused, Err(Reject::WrongIssuer { kind }), "{kind:?} by {actor:?}");
            let message = refused.expect_err("refused").to_string();
            assert!(message.starts_with(&format!("only a KMA issues {kind:?}")), "{message}");
            let before = copy.before_last.as_ref().expect("before");
            assert!(without_what_a_refusal_changes(&copy.state, before) == *before, "{kind:?}");
        }
    }
    let mut copy = cluster.fork();
    stage_for(&mut copy, &start_rotate_ca());
    let kind = CommandKind::StartRotateCa;
    let required = RoleSet::of(Role::SecurityOfficer);
    for (actor, held) in [
        (co(), Role::ComplianceOfficer),
        (op(), Role::Operator),
        (bo(), Role::BackupOperator),
        (auditor(), Role::Auditor),
    ] {
        let refused = copy.apply(actor, start_rotate_ca());
        let held = RoleSet::of(held);
        assert_eq!(refused, Err(Reject::MissingRole { kind, required, held }));
    }
    for actor in [Actor::System, agent("drive1")] {
        let refused = copy.apply(actor, start_rotate_ca());
        assert_eq!(refused, Err(Reject::MissingRole { kind, required, held: RoleSet::EMPTY }));
    }
    assert!(copy
        .state
        .meta()
        .quorum_operations
        .values()
        .all(|op| op.operation != QuorumOperation::RotateCa));
}

/// Setup: the rotating cluster; before the rotation, kma5's join granted, and kma6 created and
/// approved to join without a grant yet; the pending join of kma3 (started before). Action:
/// the quorum approves a rotation; then kma5's grant again, kma6's grant, a new join of kma3
/// started, and the pending one approved to its threshold; then kma6 deleted and the rotation
/// completed; the pending join approved again; every KMA adopts the new CA; kma3's join
/// approved and granted. Expect: kma5's grant, retried, is Done; kma6's grant, the new join and
/// the approval that would complete the pending one are refused (`CaRotationUnderWay`: a
/// joiner's certificate would come from the CA being retired), kma3 stays only created; after
/// the completion the approval is refused again while the old CA retires
/// (`CaRetirementUnderWay`, naming the KMAs it waits for and the next step); once it is retired
/// kma3 joins and is granted a certificate. (SPEC C4, S4; issue 16 point 1)
#[test]
fn c4_no_kma_joins_while_a_ca_rotation_is_under_way_or_its_old_ca_retires() {
    let (mut cluster, fixture) = rotating_cluster();
    cluster.ok(Actor::System, grant("kma5", 0xc5));
    let kma6 = Command::CreateKma {
        name: "kma6".into(),
        site: "east".into(),
        passphrase_verifier: vec![3; 32],
    };
    cluster.ok(so(), kma6);
    let join = |kma: &str| Command::StartQuorumOperation {
        operation: QuorumOperation::JoinKma { kma: kma.into() },
        ttl_ms: None,
    };
    let Reply::QuorumOperationStarted { id: join6, .. } = cluster.ok(so(), join("kma6")) else {
        panic!("started")
    };
    cluster.ok(so(), approve(join6, "q1"));
    cluster.ok(so(), approve(join6, "q2"));
    let operation_id = cluster.approve_ca_rotation();
    let under_way = Reject::CaRotationUnderWay { approved_at_ms: cluster.now_ms, operation_id };

    assert_eq!(cluster.apply(Actor::System, grant("kma5", 0xc5)), Ok(Reply::Done), "retried");
    assert_eq!(cluster.apply(Actor::System, grant("kma6", 0xc6)), Err(under_way.clone()));
    assert_eq!(cluster.state.meta().kmas["kma6"].certificate_sha256, None);
    assert_eq!(cluster.apply(so(), join("kma3")), Err(under_way.clone()));
    cluster.ok(so(), approve(fixture.pending, "q1"));
    assert_eq!(cluster.apply(so(), approve(fixture.pending, "q2")), Err(under_way));
    assert_eq!(cluster.state.meta().kmas["kma3"].status, KmaStatus::Created);

    cluster.ok(Actor::System, begin_ca_rotation(0xcc));
    assert_eq!(cluster.state.ca_rotation_waiting_for(), ["kma1", "kma2", "kma5", "kma6"]);
    cluster.ok(so(), Command::DeleteKma { name: "kma6".into() });
    cluster.reissue_every_kma();
    cluster.ok(Actor::System, Command::CompleteCaRotation);
    let completed_at_ms = cluster.now_ms;
    cluster.advance(SECOND_MS);
    let retiring = Reject::CaRetirementUnderWay {
        ca_certificate_sha256: Fingerprint(first_ca()),
        completed_at_ms,
        waiting_for: vec!["kma1".into(), "kma2".into(), "kma5".into()],
    };
    let refused = cluster.apply(so(), approve(fixture.pending, "q2"));
    assert_eq!(refused, Err(retiring));
    assert_eq!(
        refused.expect_err("refused").to_string(),
        format!(
            "the CA rotation completed at {completed_at_ms} ms waits for KMAs kma1, kma2, kma5 \
             to adopt the new CA before the old CA (SHA-256 {}) is retired: no CA rotation \
             starts and no KMA joins until then; let those KMAs catch up with the log (each \
             records its adoption by itself), or delete those that are gone for good, then try \
             again",
            Fingerprint(first_ca())
        )
    );
    assert_eq!(cluster.state.meta().kmas["kma3"].status, KmaStatus::Created);
    cluster.adopt_every_kma();
    cluster.ok(so(), approve(fixture.pending, "q2"));
    assert_eq!(cluster.ok(Actor::System, grant("kma3", 0xc3)), Reply::Done);
    assert_eq!(cluster.state.meta().kmas["kma3"].certificate_sha256, Some([0xc3; 32]));
}

/// Setup: the prepared cluster, whose KMAs never reported a format (log format 1), then at
/// format 2. Action: the Security Officer starts a CA rotation; the KMA software takes each of
/// its steps, an adoption of the new CA among them. Expect: each refused as not available yet
/// (retryably), needing format 3, the start too although `StartQuorumOperation` is of format
/// 1; each entry is written at format 3, so that a KMA of an older release never meets one.
/// (SPEC C7, S4; issue 16 point 1)
#[test]
fn c7_a_ca_rotation_waits_for_log_format_3() {
    let (mut cluster, _) = prepared();
    let commands = [
        (so(), start_rotate_ca()),
        (Actor::System, begin_ca_rotation(0xcc)),
        (Actor::System, reissue("kma1", [0xe1; 32])),
        (Actor::System, Command::CompleteCaRotation),
        (Actor::System, adopt("kma1")),
    ];
    for cluster_format in [1, 2] {
        if cluster_format > 1 {
            cluster.open_format(cluster_format);
        }
        for (actor, command) in commands.clone() {
            let kind = command.kind();
            assert_eq!(command.format_needed(), 3, "{kind:?}");
            assert_eq!(encode_envelope(&cluster.envelope(actor.clone(), command.clone()))[0], 3);
            let closed = cluster.apply(actor, command);
            let expected = Reject::FormatNotYetAvailable { kind, format_needed: 3, cluster_format };
            assert_eq!(closed, Err(expected));
            assert!(closed.expect_err("closed").is_retryable());
        }
        assert_eq!(cluster.state.ca_rotation(), None);
    }
}

/// Setup: the rotating cluster. Action: a whole rotation, keeping every audit event of every
/// step. Expect: the CA key's wrapped bytes and the new CA certificate's bytes appear in none
/// of them (their postcard encoding), only fingerprints do; the completion reads with both
/// fingerprints in hex. (SPEC S5; issue 16 point 1)
#[test]
fn s5_the_audit_log_of_a_ca_rotation_holds_fingerprints_never_key_bytes() {
    let (mut cluster, _) = rotating_cluster();
    let mut events = Vec::new();
    let mut keep = |cluster: &TestCluster| {
        let applied = cluster.last.as_ref().expect("applied");
        events.extend(applied.events.iter().cloned());
    };
    let Reply::QuorumOperationStarted { id, .. } = cluster.ok(so(), start_rotate_ca()) else {
        panic!("started")
    };
    keep(&cluster);
    for member in ["q1", "q2"] {
        cluster.ok(so(), approve(id, member));
        keep(&cluster);
    }
    cluster.ok(Actor::System, begin_ca_rotation(0xcc));
    keep(&cluster);
    for (name, node_id) in cluster.kmas_applying_the_log() {
        let record = reissue(&name, reissued_certificate(node_id));
        cluster.apply_from(node_id, Actor::System, record).expect("its own");
        keep(&cluster);
    }
    cluster.ok(Actor::System, Command::CompleteCaRotation);
    keep(&cluster);
    let rotation_events = events.iter().filter(|event| {
        matches!(
            event.what,
            AuditWhat::CaRotationApproved { .. }
                | AuditWhat::CaRotationBegun { .. }
                | AuditWhat::CaRotationCompleted { .. }
                | AuditWhat::KmaChanged { change: KmaChange::CertificateReissued { .. }, .. }
        )
    });
    assert_eq!(rotation_events.count(), 6, "approved, begun, three reissued, completed");
    for event in &events {
        let bytes = postcard::to_allocvec(event).expect("an event encodes");
        assert!(!bytes.windows(16).any(|w| w == [0x33; 16]), "no wrapped key in {event:?}");
        assert!(!bytes.windows(16).any(|w| w == [0xcc; 16]), "no certificate in {event:?}");
    }
    let completed = format!("{:?}", events.last().expect("the completion").what);
    assert_eq!(
        completed,
        format!(
            "CaRotationCompleted {{ retired_ca_certificate_sha256: Fingerprint({}), \
             ca_certificate_sha256: Fingerprint({}), user_sessions_ended: 2 }}",
            Fingerprint(first_ca()),
            Fingerprint(new_ca())
        )
    );
}

/// Setup: the rotating cluster, a rotation begun and kma1's certificate reissued. Action:
/// write a snapshot (format 4) and read it back; complete the rotation on the read state, kma1
/// adopts the new CA, and snapshot again. Expect: the same state each time: the rotation under
/// way, with its new CA and kma1's certificate, so that a KMA that installs the snapshot knows
/// what it must still reissue; then the rotated CA and its certificate, and the old CA retiring
/// with kma1's adoption, so that it knows whether it must still adopt. (SPEC C7, S4; issue
/// 16 point 1)
#[test]
fn c7_a_ca_rotation_under_way_survives_a_snapshot() {
    let (mut cluster, _) = rotating_cluster();
    cluster.approve_ca_rotation();
    cluster.ok(Actor::System, begin_ca_rotation(0xcc));
    cluster.apply_from(1, Actor::System, reissue("kma1", [0xe1; 32])).expect("its own");
    let snapshot = cluster.snapshot();
    assert_eq!(snapshot[0], 4, "snapshot format 4");
    let read = decode_snapshot(&snapshot).expect("format 4 is read");
    assert!(read == cluster.state);
    assert_eq!(read.ca_rotation(), cluster.state.ca_rotation());
    assert!(read.kma_to_reissue("kma2") && !read.kma_to_reissue("kma1"));
    cluster.state = read;
    for (name, node_id) in [("kma2", 2), ("kma5", 4)] {
        let record = reissue(name, reissued_certificate(node_id));
        cluster.apply_from(node_id, Actor::System, record).expect("its own");
    }
    cluster.ok(Actor::System, Command::CompleteCaRotation);
    cluster.apply_from(1, Actor::System, adopt("kma1")).expect("its own");
    let read = decode_snapshot(&cluster.snapshot()).expect("format 4 is read");
    assert!(read == cluster.state);
    assert_eq!(read.ca_certificate_der(), Some(&ca_certificate_der(0xcc)[..]));
    let retiring = read.retiring_ca().expect("retiring");
    assert_eq!(retiring.ca_certificate_sha256, first_ca());
    assert_eq!(retiring.adopted.iter().collect::<Vec<_>>(), ["kma1"]);
    assert!(read.kma_to_adopt("kma2") && !read.kma_to_adopt("kma1"));
}
