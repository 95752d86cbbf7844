//! The access table for reads and Raft membership changes (SPEC S1, S5), checked whole by
//! `State::check_access`: the checks the shells made themselves before issue 15.

mod support;

use statemachine::{
    Access, Actor, Command, CommandKind, Issuer, Read, Reject, RejectClass, Role, RoleSet,
};
use support::*;

/// Every actor of the prepared cluster: one user per role, an enrolled agent, the KMA itself.
fn actors() -> Vec<(&'static str, Actor, RoleSet)> {
    vec![
        ("Security Officer", so(), RoleSet::of(Role::SecurityOfficer)),
        ("Compliance Officer", co(), RoleSet::of(Role::ComplianceOfficer)),
        ("Operator", op(), RoleSet::of(Role::Operator)),
        ("Backup Operator", bo(), RoleSet::of(Role::BackupOperator)),
        ("Auditor", auditor(), RoleSet::of(Role::Auditor)),
        ("agent", agent("drive1"), RoleSet::EMPTY),
        ("KMA", Actor::System, RoleSet::EMPTY),
    ]
}

/// The policy, written out by hand rather than read from the table: the audit log is the
/// Auditor's, the keys of a drive its own, and every other read open to every user.
fn may_read(read: Read, actor: &Actor) -> bool {
    match (read, actor) {
        (Read::AuditLog, Actor::User(id)) => id == "au",
        (Read::AgentKeys, actor) => matches!(actor, Actor::Agent(_)),
        (_, actor) => matches!(actor, Actor::User(_)),
    }
}

/// Setup: the prepared cluster. Action: every read by every actor. Expect: allowed as the
/// policy says; a user without the role is told the roles it needs and those it holds; an
/// agent or the KMA asking for a user's read is told the roles, with none held; a user asking
/// for an agent's read is the wrong kind of actor. (SPEC S1, S5)
#[test]
fn s1_every_read_by_every_role() {
    let (cluster, _) = prepared();
    for read in Read::ALL {
        for (name, actor, held) in actors() {
            let access = Access::Read(read);
            let answer = cluster.state.check_access(&actor, access);
            if may_read(read, &actor) {
                assert_eq!(answer, Ok(()), "{read:?} by {name}");
                continue;
            }
            let expected = match read.reader() {
                Issuer::Users(required) => Reject::AccessNeedsRole { access, required, held },
                _ => Reject::AccessWrongActor { access },
            };
            assert_eq!(answer, Err(expected), "{read:?} by {name}");
        }
    }
}

/// Setup: the prepared cluster. Action: the Auditor and the Security Officer ask to read the
/// audit log. Expect: the Auditor reads it; the officer is refused as forbidden, the message
/// naming the read and both role sets. (SPEC S5; was `admin-api` `routes/records.rs`)
#[test]
fn s5_auditor_alone_reads_the_audit_log() {
    let (cluster, _) = prepared();
    let audit_log = Access::Read(Read::AuditLog);
    assert_eq!(cluster.state.check_access(&auditor(), audit_log), Ok(()));
    let refused = cluster.state.check_access(&so(), audit_log).expect_err("officer");
    assert_eq!(refused.class(), RejectClass::Forbidden);
    assert_eq!(
        refused.to_string(),
        "reading the audit log needs the role Auditor; the user has Security Officer"
    );
}

/// Setup: a user that does not exist, one that is disabled, and a state before the
/// quickstart. Action: each asks to read the keys. Expect: refused in that order of rules,
/// each naming the user: the checks `node` `admitted` and `admin-api` `check_user` made.
/// (SPEC S1, S2)
#[test]
fn s1_a_missing_or_disabled_user_reads_nothing() {
    let (mut cluster, _) = prepared();
    let keys = Access::Read(Read::Keys);
    let ghost = cluster.state.check_access(&Actor::User("ghost".into()), keys);
    assert_eq!(ghost, Err(Reject::UnknownUser { user: "ghost".into() }));
    cluster.ok(so(), Command::SetUserEnabled { id: "au2".into(), enabled: false });
    let disabled = cluster.state.check_access(&Actor::User("au2".into()), keys);
    assert_eq!(disabled, Err(Reject::UserDisabled { user: "au2".into() }));
    assert_eq!(disabled.expect_err("disabled").class(), RejectClass::Forbidden);
    let blank = TestCluster::blank();
    assert_eq!(blank.state.check_access(&so(), keys), Err(Reject::ClusterNotInitialized));
}

/// Setup: the prepared cluster. Action: every role asks to change the Raft membership.
/// Expect: only the Security Officer may (KMAs are the officer's); the others are told that
/// role. (SPEC S1, C4, C5; was `node` `server.rs` `members`)
#[test]
fn c5_raft_membership_is_the_security_officers() {
    let (cluster, _) = prepared();
    for (name, actor, held) in actors() {
        let answer = cluster.state.check_access(&actor, Access::RaftMembership);
        if name == "Security Officer" {
            assert_eq!(answer, Ok(()));
            continue;
        }
        let required = RoleSet::of(Role::SecurityOfficer);
        let expected = Reject::AccessNeedsRole { access: Access::RaftMembership, required, held };
        assert_eq!(answer, Err(expected), "{name}");
    }
}

/// Setup: the prepared cluster. Action: every role asks to enter a quorum approval, before the
/// node opens the member's share. Expect: Security Officers and Backup Operators may; the
/// others are told so, by the same rule `apply` uses. (SPEC S4; was `node`
/// `security_api.rs` `pending_view`)
#[test]
fn s4_approvals_are_entered_by_security_officers_and_backup_operators() {
    let (cluster, _) = prepared();
    let approve = Access::Command(CommandKind::ApproveQuorumOperation);
    for (name, actor, _) in actors().into_iter().filter(|(_, a, _)| matches!(a, Actor::User(_))) {
        let answer = cluster.state.check_access(&actor, approve);
        if matches!(name, "Security Officer" | "Backup Operator") {
            assert_eq!(answer, Ok(()), "{name}");
        } else {
            let message = answer.expect_err(name).to_string();
            assert!(message.contains("Security Officer or Backup Operator"), "{message}");
        }
    }
}

/// Setup: an enrolled drive, a drive never enrolled, and the enrolled drive disabled. Action:
/// each asks for its keys. Expect: only the enrolled, enabled drive; the same rule guards
/// `keys_for_data_unit`. (SPEC A1, A2, O3)
#[test]
fn a2_a_drive_reads_its_keys_only_while_enrolled_and_enabled() {
    let (mut cluster, fixture) = prepared();
    let keys = Access::Read(Read::AgentKeys);
    assert_eq!(cluster.state.check_access(&agent("drive1"), keys), Ok(()));
    let new = cluster.state.check_access(&agent("drive8"), keys);
    assert_eq!(new, Err(Reject::AgentNotEnrolled { agent: "drive8".into() }));
    cluster.ok(op(), Command::SetAgentEnabled { id: "drive1".into(), enabled: false });
    let disabled = Err(Reject::AgentDisabled { agent: "drive1".into() });
    assert_eq!(cluster.state.check_access(&agent("drive1"), keys), disabled);
    let mount = cluster.state.keys_for_data_unit("drive1", &fixture.unit, cluster.now_ms);
    assert_eq!(mount.map(|keys| keys.len()), disabled.map(|()| 0));
}
