//! The trust model of issue 16, state side: commands only a KMA may issue, the destroy by key ID
//! that carries its preview, agents confined to their key groups, approvals of removed quorum
//! members, what the audit log records, node IDs never reused, certificates bound to the state
//! (user sessions, a KMA's certificate, a join granted once), the cluster CA's key recorded
//! wrapped, once, and failed proofs of users and agents counted in the state. The rules of log
//! format 3: each test opens that format first, as a cluster of this software runs at it.
mod support;

use statemachine::audit::{AuditWhat, Outcome};
use statemachine::backup::BackupKind;
use statemachine::cluster::{FailureWindow, SecuritySettings};
use statemachine::command::Legacy1xKey;
use statemachine::format::LOG_FORMAT_3;
use statemachine::key::KeyCheckValue;
use statemachine::{Actor, Command, CommandKind, KeyId, Reject, Reply, RoleSet, State};
use support::*;

/// The commands that carry what only a KMA makes, each with the user role that issued it below
/// format 3.
fn kma_only_commands(cluster: &TestCluster, fixture: &Fixture) -> Vec<(Actor, Command)> {
    let legacy = Legacy1xKey {
        id: KeyId([0x55; 30]),
        material: fake_wrap([0x55; 32]),
        check_value: KeyCheckValue([0x55; 16]),
        description: String::new(),
    };
    vec![
        (bo(), record_backup(cluster.index)),
        (
            so(),
            // The pair the prepared cluster holds: from log format 3 a KMA records it once.
            Command::SetTransferKeyPair {
                public_key: vec![6; 32],
                wrapped_private_key: vec![7; 48],
            },
        ),
        (op(), Command::RecordKeyExport { partner: "p1".into(), data_units: vec![fixture.unit] }),
        (
            op(),
            Command::ImportTransferredKeys {
                partner: "p1".into(),
                group: "std".into(),
                data_units: vec![],
            },
        ),
        (co(), Command::Import1xKeys { group: "std".into(), keys: vec![legacy] }),
    ]
}

fn record_backup(covers_index: u64) -> Command {
    Command::RecordBackupBeforeFormat3 {
        kind: BackupKind::Database,
        kma: "kma1".into(),
        file_name: "b1.kms".into(),
        covers_index,
    }
}

/// Setup: the prepared cluster at log format 3. Action: each command that carries what only a
/// KMA makes (a backup record, a transfer key pair, an export record, transferred and 1.x keys
/// wrapped under the master key), issued by the user whose role issued it before, then by the
/// KMA software. Expect: the user is refused as the wrong issuer, with a message that names the
/// rule ("only a KMA issues RecordBackup"); the refusal is audited with its frozen code and
/// changes nothing else; the KMA's command is applied. (SPEC S1, issue 16 point 4)
#[test]
fn s1_only_a_kma_issues_what_only_a_kma_makes() {
    let (mut cluster, fixture) = prepared();
    cluster.open_format(LOG_FORMAT_3);
    for (user, command) in kma_only_commands(&cluster, &fixture) {
        let kind = command.kind();
        let refused = cluster.apply(user.clone(), command.clone());
        assert_eq!(refused, Err(Reject::WrongIssuer { kind }), "{kind:?} by {user:?}");
        let message = refused.expect_err("refused").to_string();
        assert!(message.starts_with(&format!("only a KMA issues {kind:?}")), "{message}");
        let applied = cluster.last.as_ref().expect("applied");
        let expected = vec![AuditWhat::Command {
            kind,
            actor: user,
            origin_node_id: 1,
            request_id: None,
            outcome: Outcome::Rejected { code: 9 },
        }];
        let events: Vec<AuditWhat> = applied.events.iter().map(|e| e.what.clone()).collect();
        assert_eq!(events, expected, "the refusal of {kind:?} is audited");
        let before = cluster.before_last.as_ref().expect("before");
        assert!(
            without_what_a_refusal_changes(&cluster.state, before) == *before,
            "a refused {kind:?} changes nothing"
        );
        let by_kma = cluster.fork().apply(Actor::System, command);
        assert!(by_kma.is_ok(), "{kind:?} by the KMA software: {by_kma:?}");
    }
}

/// Setup: the prepared cluster, whose KMAs never reported a format (log format 1, as a cluster
/// of older KMAs). Action: the KMA-only commands by their former users, and a backup record by
/// the KMA software. Expect: the table of formats 1 and 2 still holds, so that every KMA of a
/// mixed cluster, and every replay of an old log, applies them alike: the users' commands are
/// applied and the KMA's is refused for the missing role, as before. (SPEC C7, S1)
#[test]
fn c7_kma_only_commands_keep_their_older_issuers_below_format_3() {
    let (mut cluster, fixture) = prepared();
    for (user, command) in kma_only_commands(&cluster, &fixture) {
        let kind = command.kind();
        let result = cluster.fork().apply(user, command);
        assert!(result.is_ok(), "{kind:?} by its former user at format 1: {result:?}");
    }
    let by_kma = cluster.apply(Actor::System, record_backup(cluster.index));
    let required = RoleSet::of(statemachine::Role::BackupOperator);
    let expected =
        Reject::MissingRole { kind: CommandKind::RecordBackup, required, held: RoleSet::EMPTY };
    assert_eq!(by_kma, Err(expected));
}

/// Setup: the prepared cluster at log format 3; the imported 1.x key compromised, and its
/// destroy previewed: no data unit uses it. Action: a drive reads the key for a tape (the key
/// is now that tape's), then the Operator's destroy comes with the digest of the preview,
/// then with a fresh one. Expect: the first is refused as a stale preview, naming both digests,
/// and destroys nothing; the second destroys the key. Below format 3 the command is not
/// available yet (retryable), and the destroy without a digest still applies as before. (SPEC
/// O7, O9, C7; issue 16 point 4)
#[test]
fn o9_a_destroy_by_key_id_is_refused_when_its_preview_went_stale() {
    let (mut cluster, fixture) = prepared();
    let legacy = fixture.legacy;
    cluster.ok(co(), Command::CompromiseKeys { keys: vec![legacy] });
    let seen = cluster.state.key_destroy_preview(&[legacy]).expect("preview").digest;
    let previewed =
        |preview_digest| Command::DestroyKeysPreviewed { keys: vec![legacy], preview_digest };
    let closed = cluster.fork().apply(op(), previewed(seen));
    let expected = Reject::FormatNotYetAvailable {
        kind: CommandKind::DestroyKeys,
        format_needed: 3,
        cluster_format: 1,
    };
    assert_eq!(closed, Err(expected));
    let unpreviewed = cluster.fork().apply(op(), Command::DestroyKeys { keys: vec![legacy] });
    assert_eq!(unpreviewed, Ok(Reply::KeysChanged { count: 1 }), "format 1 destroys as before");

    cluster.open_format(LOG_FORMAT_3);
    let read = Command::AssociateKeyForRead {
        key_id: legacy,
        data_unit: Some(fixture.empty_unit),
        external_tag: String::new(),
    };
    cluster.ok(agent("drive1"), read);
    let now = cluster.state.key_destroy_preview(&[legacy]).expect("preview").digest;
    assert_ne!(now, seen, "the tape now loses access too");
    let stale = cluster.apply(op(), previewed(seen));
    assert_eq!(stale, Err(Reject::ImpactPreviewChanged { expected: seen, actual: now }));
    assert_eq!(cluster.key_state(&legacy), statemachine::KeyState::Compromised);
    assert_eq!(cluster.apply(op(), previewed(now)), Ok(Reply::KeysChanged { count: 1 }));
    assert!(cluster.key_state(&legacy).is_destroyed());
}

/// A drive `drive7` of its own group `other` only, beside drive1 of `std` and `second`.
fn drive_of_another_group(cluster: &mut TestCluster) {
    cluster.policy_and_group("other", 10 * DAY_MS, 54 * WEEK_MS);
    cluster.enrolled_agent("drive7", &["other"]);
}

/// Setup: the prepared cluster at log format 3: tape VOL002 of group `std` holds the key a
/// Compliance Officer compromised; drive7 accesses group `other` only. Action: drive7 writes
/// VOL002 from BOT (it disassociates, then asks for a write key), then drive1 mounts VOL002.
/// Expect: drive7's disassociation leaves the `std` key in use (none taken out of use); its
/// write from BOT still gets a new key in `other` (SPEC A3); drive1 still mounts the
/// compromised key, which it may access. This is the bug of issue 16 point 9: drive7 took the
/// key out of use, and drive1 could no longer mount it. (SPEC A2, A3)
#[test]
fn a3_a_drive_of_another_group_leaves_the_keys_it_cannot_access_in_use() {
    let (mut cluster, fixture) = prepared();
    drive_of_another_group(&mut cluster);
    cluster.open_format(LOG_FORMAT_3);
    let tape = fixture.spoiled_unit;
    assert_eq!(cluster.mount("drive1", &tape), vec![fixture.compromised]);
    let disassociate = Command::DisassociateKeysOnBot { data_unit: tape };
    assert_eq!(cluster.ok(agent("drive7"), disassociate), Reply::KeysDisassociated { count: 0 });
    assert_eq!(cluster.last_events(), vec![], "nothing taken out of use");
    let (new_key, reused) = cluster.write_key("drive7", tape, true);
    assert!(!reused, "a new key in drive7's default group");
    assert_eq!(cluster.mount("drive7", &tape), vec![new_key]);
    assert_eq!(cluster.mount("drive1", &tape), vec![fixture.compromised]);

    // drive1 may access the key: its own disassociation takes it out of use as before.
    let disassociate = Command::DisassociateKeysOnBot { data_unit: tape };
    assert_eq!(cluster.ok(agent("drive1"), disassociate), Reply::KeysDisassociated { count: 1 });
    assert_eq!(cluster.mount("drive1", &tape), Vec::<KeyId>::new());
}

/// Setup: the same, at log format 1 (a cluster of older KMAs). Action: drive7 disassociates
/// VOL002's keys. Expect: the rule of format 1 still holds, so that every KMA of a mixed
/// cluster applies it alike: the compromised key is taken out of use. (SPEC C7)
#[test]
fn c7_below_format_3_a_drive_takes_any_key_out_of_use() {
    let (mut cluster, fixture) = prepared();
    drive_of_another_group(&mut cluster);
    let disassociate = Command::DisassociateKeysOnBot { data_unit: fixture.spoiled_unit };
    assert_eq!(cluster.ok(agent("drive7"), disassociate), Reply::KeysDisassociated { count: 1 });
    assert_eq!(cluster.mount("drive1", &fixture.spoiled_unit), Vec::<KeyId>::new());
}

fn create_kma(cluster: &mut TestCluster, name: &str) -> u64 {
    let command = Command::CreateKma {
        name: name.into(),
        site: "east".into(),
        passphrase_verifier: vec![3; 32],
    };
    match cluster.ok(so(), command) {
        Reply::KmaCreated { node_id } => node_id,
        other => panic!("expected a node ID, got {other:?}"),
    }
}

/// Setup: a two-KMA cluster (the first KMA is node 1, the joiner node 2). Action: create KMA
/// kma3, delete it, create a KMA of the same name again, delete the member kma2; then
/// snapshot, restore and create one more. Expect: every KMA gets a node ID never given before
/// (the first KMA too), across deletes and snapshots; `kma_deleted` is true exactly for the IDs
/// given and no longer held (the deny list every KMA enforces), false for IDs held or never
/// given; `kma_by_node_id` finds the holder. (SPEC C5; issue 16 points 2 and 3)
#[test]
fn c5_node_ids_are_never_reused_and_deleted_kmas_stay_known() {
    let mut cluster = TestCluster::multi();
    let name_of =
        |cluster: &TestCluster, id| cluster.state.kma_by_node_id(id).map(|k| k.name.clone());
    assert_eq!(name_of(&cluster, 1).as_deref(), Some("kma1"), "the first KMA is node 1");
    assert_eq!(name_of(&cluster, 2).as_deref(), Some("kma2"));
    assert_eq!(cluster.state.meta().next_node_id, 3);
    let first = create_kma(&mut cluster, "kma3");
    assert_eq!(first, 3);
    cluster.ok(so(), Command::DeleteKma { name: "kma3".into() });
    let again = create_kma(&mut cluster, "kma3");
    assert_eq!(again, 4, "a KMA of a deleted one's name gets a new node ID");
    cluster.ok(so(), Command::DeleteKma { name: "kma2".into() });
    let deleted: Vec<bool> = (0..6).map(|id| cluster.state.kma_deleted(id)).collect();
    assert_eq!(deleted, [false, false, true, true, false, false], "nodes 0 to 5");
    assert_eq!(name_of(&cluster, 2), None);

    let snapshot = statemachine::codec::decode_snapshot(&cluster.snapshot()).expect("decodes");
    assert!(snapshot == cluster.state, "the snapshot holds next_node_id");
    cluster.state = snapshot;
    assert_eq!(create_kma(&mut cluster, "kma6"), 5, "after a snapshot as before");
    let deleted: Vec<bool> = (0..7).map(|id| cluster.state.kma_deleted(id)).collect();
    assert_eq!(deleted, [false, false, true, true, false, false, false], "nodes 0 to 6");
}

/// Setup: a state before the quickstart. Action: ask about node IDs 0 and 1. Expect: none is
/// deleted or held: nothing was assigned yet. (SPEC C4, C5)
#[test]
fn c5_before_the_quickstart_no_node_id_is_deleted() {
    let cluster = TestCluster::blank();
    assert!(!cluster.state.kma_deleted(0) && !cluster.state.kma_deleted(1));
    assert!(cluster.state.kma_by_node_id(1).is_none());
}

/// Setup: the prepared cluster at log format 3 (kma3 created as node 3, its join pending).
/// Action: a Security Officer gives co a second role; an Operator disables drive1; the quorum
/// approves kma3's join, kma3 joins, then is deleted; a quorum change takes effect. Expect:
/// beside each `Command` record, an event says what changed: co's whole new role set, drive1's
/// enabled flag, each membership change of kma3 with its node ID, the new quorum's members and
/// threshold. Below format 3 none of them (format rule 2). (SPEC S5; issue 16 point 9)
#[test]
fn s5_the_audit_log_records_what_a_command_changed() {
    use statemachine::audit::{AgentChange, KmaChange, UserChange};
    use statemachine::quorum::QuorumOperation;
    use statemachine::Role;
    let (mut below, fixture) = prepared();
    let roles = RoleSet::of(Role::ComplianceOfficer).with(Role::Auditor);
    below.ok(so(), Command::SetUserRoles { id: "co".into(), roles });
    assert_eq!(below.last_events(), vec![], "no change events below format 3");

    let (mut cluster, _) = prepared();
    cluster.open_format(LOG_FORMAT_3);
    cluster.ok(so(), Command::SetUserRoles { id: "co".into(), roles });
    let user = AuditWhat::UserChanged { user: "co".into(), change: UserChange::Roles { roles } };
    assert_eq!(cluster.last_events(), vec![user]);
    cluster.ok(op(), Command::SetAgentEnabled { id: "drive1".into(), enabled: false });
    let change = AgentChange::Enabled { enabled: false };
    assert_eq!(
        cluster.last_events(),
        vec![AuditWhat::AgentChanged { agent: "drive1".into(), change }]
    );

    let kma3 = |change| AuditWhat::KmaChanged { kma: "kma3".into(), node_id: 3, change };
    let approve = |id, member: &str| Command::ApproveQuorumOperation { id, member: member.into() };
    cluster.ok(so(), approve(fixture.pending, "q1"));
    cluster.ok(so(), approve(fixture.pending, "q2"));
    let events = cluster.last_events();
    assert_eq!(
        events[1..],
        [
            kma3(KmaChange::JoinApproved),
            AuditWhat::QuorumOperationCompleted { id: fixture.pending }
        ]
    );
    // A KMA approved to join applies the log: the format stays 3 once it reports it.
    cluster.report_log_format(&["kma3"], 3);
    cluster.ok(Actor::System, Command::KmaJoined { name: "kma3".into() });
    assert_eq!(cluster.last_events(), vec![kma3(KmaChange::Joined)]);
    cluster.ok(so(), Command::DeleteKma { name: "kma3".into() });
    assert_eq!(cluster.last_events(), vec![kma3(KmaChange::Deleted)]);

    let operation = QuorumOperation::ChangeQuorum { quorum: quorum(2, 1) };
    let Reply::QuorumOperationStarted { id, .. } =
        cluster.ok(so(), Command::StartQuorumOperation { operation, ttl_ms: None })
    else {
        panic!("started")
    };
    cluster.ok(so(), approve(id, "q1"));
    cluster.ok(so(), approve(id, "q2"));
    let members = vec!["q1".to_string(), "q2".to_string()];
    let quorum_changed = AuditWhat::QuorumChanged { members, threshold: 1 };
    assert_eq!(cluster.last_events()[1], quorum_changed);
}

/// Setup: the prepared cluster at log format 3. Action: the commands that carry secrets, each
/// with bytes of its own: passphrase verifiers (users, agents, a KMA), quorum shares, wrapped
/// 1.x and transfer keys, a wrapped transfer private key, the cluster CA's wrapped key. Expect:
/// no audit event of the whole log, encoded as the audit log stores it, holds any of those
/// bytes. (SPEC S5; issue 16 point 1)
#[test]
fn s5_audit_events_hold_no_passphrase_verifier_share_or_wrapped_key() {
    use statemachine::quorum::{Quorum, QuorumMember, QuorumOperation};
    // Without the prepared transfer key pair: this test records one (a KMA records it once).
    let mut cluster = standard(10 * DAY_MS, 54 * WEEK_MS);
    cluster.open_format(LOG_FORMAT_3);
    let secret = |byte: u8| vec![byte; 32];
    let verifier = |id: &str, byte| Command::CreateUser {
        id: id.into(),
        roles: RoleSet::of(statemachine::Role::Operator),
        passphrase_verifier: secret(byte),
    };
    cluster.ok(so(), verifier("op2", 0xa1));
    cluster.ok(
        so(),
        Command::SetUserPassphrase { id: "op2".into(), passphrase_verifier: secret(0xa2) },
    );
    cluster.ok(
        op(),
        Command::CreateAgent {
            id: "d9".into(),
            site: "east".into(),
            passphrase_verifier: secret(0xa3),
        },
    );
    cluster.ok(
        op(),
        Command::SetAgentPassphrase { id: "d9".into(), passphrase_verifier: secret(0xa4) },
    );
    cluster.ok(
        so(),
        Command::CreateKma {
            name: "kma9".into(),
            site: "east".into(),
            passphrase_verifier: secret(0xa5),
        },
    );
    let members = (1..=2)
        .map(|n| QuorumMember { id: format!("q{n}"), wrapped_share: vec![0xa6; 48] })
        .collect();
    let operation = QuorumOperation::ChangeQuorum { quorum: Quorum { members, threshold: 1 } };
    let Reply::QuorumOperationStarted { id, .. } =
        cluster.ok(so(), Command::StartQuorumOperation { operation, ttl_ms: None })
    else {
        panic!("started")
    };
    cluster.ok(so(), Command::ApproveQuorumOperation { id, member: "q1".into() });
    cluster.ok(so(), Command::ApproveQuorumOperation { id, member: "q2".into() });
    let legacy = Legacy1xKey {
        id: KeyId([0x56; 30]),
        material: statemachine::WrappedKey {
            nonce: [0xa7; 12],
            ciphertext: [0xa7; 32],
            tag: [0xa7; 16],
        },
        check_value: KeyCheckValue([0x01; 16]),
        description: String::new(),
    };
    cluster.ok(Actor::System, Command::Import1xKeys { group: "std".into(), keys: vec![legacy] });
    let pair =
        Command::SetTransferKeyPair { public_key: vec![1; 32], wrapped_private_key: secret(0xa8) };
    cluster.ok(Actor::System, pair);
    let ca_key = Command::RecordCaKey { ca_certificate_sha256: [1; 32], wrapped_key: secret(0xa9) };
    cluster.ok(Actor::System, ca_key);

    let encoded = every_audit_event_encoded(&cluster);
    for byte in 0xa1..=0xa9u8 {
        let run = [byte; 8];
        let found = encoded.windows(8).any(|window| window == run);
        assert!(!found, "secret bytes {byte:#x} reached the audit log");
    }
}

/// Every audit event of the cluster's whole log, encoded as the audit log stores it.
fn every_audit_event_encoded(cluster: &TestCluster) -> Vec<u8> {
    let mut replayed = statemachine::State::new();
    let mut encoded = Vec::new();
    for (position, envelope) in cluster.log.iter().enumerate() {
        for event in replayed.apply(position as u64 + 1, envelope).events {
            encoded.extend(postcard::to_allocvec(&event).expect("encodes"));
        }
    }
    encoded
}

// Certificates bound to the replicated state (issue 16 point 2).

/// A login of `user` whose session certificate has fingerprint `[byte; 32]`.
fn session(user: &str, byte: u8, expires_at_ms: u64) -> Command {
    Command::RecordUserSession {
        principal: user.into(),
        source: "10.0.0.7".into(),
        certificate_sha256: [byte; 32],
        expires_at_ms,
    }
}

/// The first byte of each session fingerprint `user` holds, oldest first.
fn sessions_of(cluster: &TestCluster, user: &str) -> Vec<u8> {
    let user = &cluster.state.meta().users[user];
    user.sessions.iter().map(|session| session.certificate_sha256[0]).collect()
}

/// Setup: the prepared cluster at log format 1, then at 3. Action: a login of op that records
/// its session certificate, and beside it the login without one (`RecordLogin`). Expect:
/// below format 3 it is not available yet (retryable) and listeners do not check sessions
/// (`certificates_recorded`); at format 3 it is applied with the very audit events of a login
/// (the kind RecordLogin, then `Login`); op's certificate is certified, and no other: not a
/// certificate minted for op's name (another fingerprint), not op's for another user, not for
/// a user that does not exist. (SPEC S2, S5; issue 16 point 2)
#[test]
fn s2_a_login_records_its_session_certificate_and_only_that_one_is_certified() {
    let (mut cluster, _) = prepared();
    let expires_at_ms = cluster.now_ms + DAY_MS;
    let closed = cluster.fork().apply(Actor::System, session("op", 0xd1, expires_at_ms));
    let expected = Reject::FormatNotYetAvailable {
        kind: CommandKind::RecordLogin,
        format_needed: 3,
        cluster_format: 1,
    };
    assert_eq!(closed, Err(expected));
    assert!(!cluster.state.certificates_recorded());

    cluster.open_format(LOG_FORMAT_3);
    assert!(cluster.state.certificates_recorded());
    let mut plain = cluster.fork();
    plain.ok(
        Actor::System,
        Command::RecordLogin { principal: "op".into(), source: "10.0.0.7".into() },
    );
    assert_eq!(cluster.ok(Actor::System, session("op", 0xd1, expires_at_ms)), Reply::Done);
    let whats = |cluster: &TestCluster| -> Vec<AuditWhat> {
        let applied = cluster.last.as_ref().expect("applied");
        applied.events.iter().map(|event| event.what.clone()).collect()
    };
    assert_eq!(whats(&cluster), whats(&plain), "audited as the login it is");
    assert_eq!(
        cluster.last_events(),
        vec![AuditWhat::Login { principal: "op".into(), source: "10.0.0.7".into() }]
    );
    assert!(cluster.state.user_session_certified("op", &[0xd1; 32]));
    assert!(!cluster.state.user_session_certified("op", &[0xd2; 32]), "a minted certificate");
    assert!(!cluster.state.user_session_certified("co", &[0xd1; 32]), "another user's");
    assert!(!cluster.state.user_session_certified("ghost", &[0xd1; 32]));
}

/// Setup: the prepared cluster at log format 3. Action: op logs in nine times, then once more
/// with the newest certificate again; a session expiring in one hour, then time passing by
/// exactly one hour before the next login; a login whose certificate expired already; logins
/// of a disabled and of an unknown user. Expect: at most 8 sessions, the oldest dropped; the
/// same certificate counted once; a session whose expiry is at or before the entry's time is
/// dropped at op's next login; the expired certificate is refused (an invalid expiry), as are
/// the disabled and the unknown user; the state stays bounded. (SPEC S2; issue 16 point 2;
/// STYLE 9)
#[test]
fn s2_a_user_keeps_at_most_8_sessions_and_expired_ones_are_pruned() {
    let (mut cluster, _) = prepared();
    cluster.open_format(LOG_FORMAT_3);
    let day = cluster.now_ms + DAY_MS;
    for byte in 1..=9 {
        cluster.ok(Actor::System, session("op", byte, day));
    }
    assert_eq!(sessions_of(&cluster, "op"), [2, 3, 4, 5, 6, 7, 8, 9], "the oldest dropped");
    assert!(!cluster.state.user_session_certified("op", &[1; 32]));
    cluster.ok(Actor::System, session("op", 9, day));
    assert_eq!(sessions_of(&cluster, "op"), [2, 3, 4, 5, 6, 7, 8, 9], "counted once");

    let hour_ms = 3_600 * SECOND_MS;
    let mut pruned = cluster.fork();
    pruned.ok(Actor::System, session("co", 0x10, pruned.now_ms + hour_ms));
    pruned.advance(hour_ms);
    pruned.ok(Actor::System, session("co", 0x11, pruned.now_ms + hour_ms));
    assert_eq!(sessions_of(&pruned, "co"), [0x11], "expired at the entry's time: dropped");

    let expired = cluster.apply(Actor::System, session("co", 0x12, cluster.now_ms));
    let Err(Reject::InvalidSetting { field, .. }) = expired else {
        panic!("an expired certificate is refused: {expired:?}")
    };
    assert_eq!(field, "expires_at_ms");
    cluster.ok(so(), Command::SetUserEnabled { id: "au2".into(), enabled: false });
    let disabled = cluster.apply(Actor::System, session("au2", 0x13, day));
    assert_eq!(disabled, Err(Reject::UserDisabled { user: "au2".into() }));
    let unknown = cluster.apply(Actor::System, session("ghost", 0x14, day));
    assert_eq!(unknown, Err(Reject::UnknownUser { user: "ghost".into() }));
    assert!(sessions_of(&cluster, "co").is_empty() && sessions_of(&cluster, "au2").is_empty());
}

/// Setup: the prepared cluster at log format 3; co, op and au2 logged in. Action: a Security
/// Officer gives co a second role, then disables co and enables it again; sets op a new
/// passphrase; deletes au2. Expect: the role change keeps co's session (roles are read from
/// the state at each request); disabling revokes it, and enabling brings none back; the new
/// passphrase revokes op's; au2's goes with its record. Each is refused by every listener, as
/// the issue asks: "disabling or deleting a user, or changing a passphrase, revokes its
/// certificates everywhere". (SPEC S2; issue 16 point 2)
#[test]
fn s2_disabling_deleting_or_a_new_passphrase_revokes_a_users_sessions() {
    let (mut cluster, _) = prepared();
    cluster.open_format(LOG_FORMAT_3);
    let day = cluster.now_ms + DAY_MS;
    for (user, byte) in [("co", 0xc0), ("op", 0x0b), ("au2", 0xa2)] {
        cluster.ok(Actor::System, session(user, byte, day));
    }
    let certified = |cluster: &TestCluster, user: &str, byte| {
        cluster.state.user_session_certified(user, &[byte; 32])
    };
    let roles =
        RoleSet::of(statemachine::Role::ComplianceOfficer).with(statemachine::Role::Auditor);
    cluster.ok(so(), Command::SetUserRoles { id: "co".into(), roles });
    assert!(certified(&cluster, "co", 0xc0), "a role change keeps the session");
    cluster.ok(so(), Command::SetUserEnabled { id: "co".into(), enabled: false });
    assert!(!certified(&cluster, "co", 0xc0), "disabled: revoked");
    cluster.ok(so(), Command::SetUserEnabled { id: "co".into(), enabled: true });
    assert!(!certified(&cluster, "co", 0xc0), "enabled again: still revoked");
    let verifier = vec![0x0e; 32];
    cluster.ok(so(), Command::SetUserPassphrase { id: "op".into(), passphrase_verifier: verifier });
    assert!(!certified(&cluster, "op", 0x0b), "a new passphrase: revoked");
    assert!(certified(&cluster, "au2", 0xa2));
    cluster.ok(so(), Command::DeleteUser { id: "au2".into() });
    assert!(!certified(&cluster, "au2", 0xa2), "deleted: revoked");
}

fn grant(name: &str, byte: u8) -> Command {
    Command::GrantKmaJoin { name: name.into(), certificate_sha256: [byte; 32] }
}

fn kma_certificate(name: &str, byte: u8) -> Command {
    Command::RecordKmaCertificate { name: name.into(), certificate_sha256: [byte; 32] }
}

/// Setup: the prepared cluster: kma5 (node 4) approved to join, kma3 (node 3) created only.
/// Action: the join grant of kma5 below format 3, then at 3; the same grant again; a grant of
/// another certificate (a second proof of the passphrase); a grant to kma3; then kma5 joins.
/// Expect: not available below format 3; granted once, audited with the fingerprint; from
/// then on only that certificate is accepted for node 4, before the joiner applied anything
/// and after it joined; the same grant again is answered Done and changes nothing; the second
/// is refused, naming the next step; kma3's is refused for its status, and no certificate is
/// accepted for node 3, to which none was handed out. (SPEC C4, S2; issue 16 points 2, 5)
#[test]
fn c4_a_join_is_granted_once_and_its_certificate_is_known_at_once() {
    use statemachine::audit::KmaChange;
    let (mut cluster, _) = prepared();
    let closed = cluster.fork().apply(Actor::System, grant("kma5", 0xc5));
    let expected = Reject::FormatNotYetAvailable {
        kind: CommandKind::GrantKmaJoin,
        format_needed: 3,
        cluster_format: 1,
    };
    assert_eq!(closed, Err(expected));

    cluster.open_format(LOG_FORMAT_3);
    assert!(cluster.state.kma_certificate_accepted(4, &[0xee; 32]), "none recorded yet");
    assert_eq!(cluster.ok(Actor::System, grant("kma5", 0xc5)), Reply::Done);
    let change = KmaChange::JoinGranted { certificate_sha256: [0xc5; 32] };
    let granted = AuditWhat::KmaChanged { kma: "kma5".into(), node_id: 4, change };
    assert_eq!(cluster.last_events(), vec![granted]);
    assert!(cluster.state.kma_certificate_accepted(4, &[0xc5; 32]));
    assert!(!cluster.state.kma_certificate_accepted(4, &[0xee; 32]), "a minted certificate");

    let before = cluster.state.clone();
    assert_eq!(cluster.ok(Actor::System, grant("kma5", 0xc5)), Reply::Done, "retried");
    assert_eq!(cluster.last_events(), vec![], "nothing changed");
    assert!(without_what_a_refusal_changes(&cluster.state, &before) == before);
    let spent = cluster.apply(Actor::System, grant("kma5", 0xc6));
    assert_eq!(spent, Err(Reject::JoinAlreadyGranted { name: "kma5".into() }));
    let message = spent.expect_err("spent").to_string();
    assert_eq!(
        message,
        "the join passphrase of KMA 'kma5' was already used; to join again, a Security Officer \
         deletes the entry and creates a new one (with a new join passphrase)"
    );
    let created = cluster.apply(Actor::System, grant("kma3", 0xc3));
    assert!(matches!(created, Err(Reject::KmaWrongStatus { .. })), "{created:?}");
    assert!(!cluster.state.kma_certificate_accepted(3, &[0xc3; 32]), "no join approved yet");

    cluster.report_log_format(&["kma5"], 3);
    cluster.ok(Actor::System, Command::KmaJoined { name: "kma5".into() });
    assert!(cluster.state.kma_certificate_accepted(4, &[0xc5; 32]), "a member keeps its own");
    assert!(!cluster.state.kma_certificate_accepted(4, &[0xee; 32]));
}

/// Setup: the prepared cluster: kma1 (node 1) and kma2 (node 2) members from before
/// certificates were recorded. Action: below format 3, then at 3: whether each should report;
/// kma1's node reports kma2's certificate, then its own, then its own again, then another.
/// Expect: nothing to report below format 3; at 3 the members should, a created KMA or an
/// unknown name not; while none is recorded any certificate of kma1 is accepted (as before
/// the upgrade); another KMA's report is refused, naming both nodes; kma1's own is recorded
/// and audited, after which kma1 has nothing to report and only that certificate is accepted;
/// the same again is Done; another is refused. (SPEC C4, S2; issue 16 point 2)
#[test]
fn c4_a_kma_reports_its_own_certificate_once() {
    use statemachine::audit::KmaChange;
    let (mut cluster, _) = prepared();
    assert!(!cluster.state.kma_certificate_to_report("kma1"), "format 1: nothing recorded yet");
    cluster.open_format(LOG_FORMAT_3);
    assert!(cluster.state.kma_certificate_to_report("kma1"));
    assert!(cluster.state.kma_certificate_to_report("kma2"));
    assert!(!cluster.state.kma_certificate_to_report("kma3"), "created only");
    assert!(!cluster.state.kma_certificate_to_report("ghost"));
    assert!(cluster.state.kma_certificate_accepted(1, &[0xee; 32]), "legacy: by name");

    let other = cluster.apply_from(1, Actor::System, kma_certificate("kma2", 0xc2));
    let expected =
        Reject::KmaCertificateFromAnotherKma { kma: "kma2".into(), node_id: 2, origin_node_id: 1 };
    assert_eq!(other, Err(expected));
    assert!(cluster.state.meta().kmas["kma2"].certificate_sha256.is_none());

    cluster.apply_from(1, Actor::System, kma_certificate("kma1", 0xc1)).expect("its own");
    let change = KmaChange::CertificateRecorded { certificate_sha256: [0xc1; 32] };
    assert_eq!(
        cluster.last_events(),
        vec![AuditWhat::KmaChanged { kma: "kma1".into(), node_id: 1, change }]
    );
    assert!(!cluster.state.kma_certificate_to_report("kma1"), "reported");
    assert!(cluster.state.kma_certificate_accepted(1, &[0xc1; 32]));
    assert!(!cluster.state.kma_certificate_accepted(1, &[0xee; 32]), "a minted certificate");
    let again = cluster.apply_from(1, Actor::System, kma_certificate("kma1", 0xc1));
    assert_eq!(again, Ok(Reply::Done), "the same report retried");
    let another = cluster.apply_from(1, Actor::System, kma_certificate("kma1", 0xc9));
    assert_eq!(another, Err(Reject::KmaCertificateAlreadyRecorded { name: "kma1".into() }));
    assert!(cluster.state.kma_certificate_accepted(1, &[0xc1; 32]), "unchanged");
}

/// Setup: the prepared cluster at log format 3; kma2 (node 2) reported its certificate.
/// Action: a Security Officer deletes kma2. Expect: no certificate is accepted for node 2 any
/// more, its recorded one neither: node 2 is on the deny list (`kma_deleted`); kma2 has
/// nothing to report; a node ID never assigned, or 0, is accepted for no certificate either.
/// Every KMA decides alike from the state. (SPEC C5, S2; issue 16 points 2, 3)
#[test]
fn c5_a_deleted_kma_is_never_accepted() {
    let (mut cluster, _) = prepared();
    cluster.open_format(LOG_FORMAT_3);
    cluster.apply_from(2, Actor::System, kma_certificate("kma2", 0xc2)).expect("its own");
    assert!(cluster.state.kma_certificate_accepted(2, &[0xc2; 32]));
    cluster.ok(so(), Command::DeleteKma { name: "kma2".into() });
    assert!(cluster.state.kma_deleted(2));
    assert!(!cluster.state.kma_certificate_accepted(2, &[0xc2; 32]), "deleted: refused");
    assert!(!cluster.state.kma_certificate_accepted(2, &[0xee; 32]));
    assert!(!cluster.state.kma_certificate_to_report("kma2"));
    assert!(!cluster.state.kma_certificate_accepted(99, &[0xee; 32]), "never assigned");
    assert!(!cluster.state.kma_certificate_accepted(0, &[0xee; 32]));
}

/// Setup: the prepared cluster at log format 3 with kma1's certificate, kma5's join granted
/// and two sessions of op. Action: write a snapshot (format 4) and read it back. Expect: the
/// same state, and the same answers to the listeners' questions. (SPEC S2, C7)
#[test]
fn s2_recorded_certificates_survive_a_snapshot() {
    let (mut cluster, _) = prepared();
    cluster.open_format(LOG_FORMAT_3);
    cluster.ok(Actor::System, kma_certificate("kma1", 0xc1));
    cluster.ok(Actor::System, grant("kma5", 0xc5));
    let day = cluster.now_ms + DAY_MS;
    cluster.ok(Actor::System, session("op", 0xd1, day));
    cluster.ok(Actor::System, session("op", 0xd2, day));
    let snapshot = cluster.snapshot();
    assert_eq!(snapshot[0], 4, "snapshot format 4");
    let read = statemachine::codec::decode_snapshot(&snapshot).expect("decodes");
    assert!(read == cluster.state);
    assert!(read.user_session_certified("op", &[0xd2; 32]));
    assert!(read.kma_certificate_accepted(1, &[0xc1; 32]));
    assert!(!read.kma_certificate_accepted(4, &[0xc1; 32]));
    assert_eq!(read.meta().users["op"].sessions.len(), 2);
}

// The cluster CA's key, wrapped under the master key (issue 16 point 1).

fn ca_key(byte: u8, wrapped_key: Vec<u8>) -> Command {
    Command::RecordCaKey { ca_certificate_sha256: [byte; 32], wrapped_key }
}

/// Setup: the prepared cluster at log format 3, no CA key recorded. Action: a user of every
/// role records a CA key; then the KMA software; the same record again (fingerprint and bytes);
/// another certificate's key; the same certificate with other bytes. Expect: every user is
/// refused as the wrong issuer ("only a KMA issues RecordCaKey") and changes nothing but what a
/// refusal changes; the KMA's is recorded, read back by `wrapped_ca_key`, and audited with the
/// certificate's fingerprint in hex and without the wrapped bytes; the same again is answered
/// Done with no second audit event and no change; both others are refused, naming the CA
/// recorded and the CA rotation, and the first key stays. (SPEC S1, S2, S5; issue 16 point 1)
#[test]
fn s2_the_ca_key_is_recorded_wrapped_once_by_a_kma_only() {
    let (mut cluster, _) = prepared();
    cluster.open_format(LOG_FORMAT_3);
    for user in [so(), co(), op(), bo(), auditor()] {
        let refused = cluster.apply(user.clone(), ca_key(0xca, vec![0x77; 96]));
        assert_eq!(
            refused,
            Err(Reject::WrongIssuer { kind: CommandKind::RecordCaKey }),
            "{user:?}"
        );
        let message = refused.expect_err("refused").to_string();
        assert!(message.starts_with("only a KMA issues RecordCaKey"), "{message}");
        let before = cluster.before_last.as_ref().expect("before");
        assert!(without_what_a_refusal_changes(&cluster.state, before) == *before, "{user:?}");
        assert_eq!(cluster.state.wrapped_ca_key(), None, "{user:?}");
    }

    assert_eq!(cluster.ok(Actor::System, ca_key(0xca, vec![0x77; 96])), Reply::Done);
    let recorded = cluster.state.wrapped_ca_key().expect("recorded").clone();
    assert_eq!(
        (recorded.ca_certificate_sha256, recorded.wrapped_key.clone()),
        ([0xca; 32], vec![0x77; 96])
    );
    let ca_certificate_sha256 = statemachine::ids::Fingerprint([0xca; 32]);
    let events = cluster.last_events();
    assert_eq!(events, vec![AuditWhat::CaKeyRecorded { ca_certificate_sha256 }]);
    let text = format!("{:?}", events[0]);
    assert_eq!(
        text,
        format!("CaKeyRecorded {{ ca_certificate_sha256: Fingerprint({}) }}", "ca".repeat(32))
    );

    let before = cluster.state.clone();
    assert_eq!(cluster.ok(Actor::System, ca_key(0xca, vec![0x77; 96])), Reply::Done, "retried");
    assert_eq!(cluster.last_events(), vec![], "no second audit event");
    assert!(without_what_a_refusal_changes(&cluster.state, &before) == before, "nothing changed");

    for other in [ca_key(0xcb, vec![0x78; 96]), ca_key(0xca, vec![0x78; 96])] {
        let refused = cluster.apply(Actor::System, other);
        assert_eq!(refused, Err(Reject::CaKeyAlreadyRecorded { ca_certificate_sha256 }));
        assert_eq!(cluster.last_events(), vec![]);
        assert_eq!(cluster.state.wrapped_ca_key(), Some(&recorded), "the first stays");
        let message = refused.expect_err("refused").to_string();
        assert_eq!(
            message,
            format!(
                "the cluster CA's key is already recorded, for the CA certificate of SHA-256 {}: \
                 a new CA comes only through a CA rotation approved by the quorum",
                "ca".repeat(32)
            )
        );
    }
}

/// Setup: the prepared cluster at log format 3. Action: the KMA records a CA key of no bytes,
/// then one a byte over `WRAPPED_CA_KEY_LEN_MAX`, then one of exactly that length. Expect: the
/// first two are refused as invalid, naming the field and the bound, and record nothing; the
/// last is recorded. (SPEC S2; issue 16 point 1; STYLE 9)
#[test]
fn s2_a_wrapped_ca_key_empty_or_too_long_is_refused() {
    use statemachine::limits::WRAPPED_CA_KEY_LEN_MAX;
    use statemachine::reject::TextProblem;
    let (mut cluster, _) = prepared();
    cluster.open_format(LOG_FORMAT_3);
    let field = "wrapped CA key".to_string();
    let empty = cluster.apply(Actor::System, ca_key(0xca, vec![]));
    let problem = TextProblem::Empty;
    assert_eq!(empty, Err(Reject::InvalidText { field: field.clone(), problem }));
    let long = cluster.apply(Actor::System, ca_key(0xca, vec![0x77; WRAPPED_CA_KEY_LEN_MAX + 1]));
    let problem = TextProblem::TooLong { len_max: WRAPPED_CA_KEY_LEN_MAX as u32 };
    assert_eq!(long, Err(Reject::InvalidText { field, problem }));
    assert_eq!(cluster.state.wrapped_ca_key(), None, "nothing recorded");
    cluster.ok(Actor::System, ca_key(0xca, vec![0x77; WRAPPED_CA_KEY_LEN_MAX]));
    assert_eq!(cluster.state.wrapped_ca_key().expect("recorded").wrapped_key.len(), 4096);
}

/// Setup: the prepared cluster, whose KMAs never reported a format (log format 1), then at
/// format 2. Action: the KMA software records a CA key. Expect: refused as not available yet
/// (retryable), needing format 3, and nothing recorded: a KMA of an older release could not
/// decode the entry. (SPEC C7; issue 16 point 1)
#[test]
fn c7_the_ca_key_waits_for_log_format_3() {
    let (mut cluster, _) = prepared();
    for cluster_format in [1, 2] {
        if cluster_format > 1 {
            cluster.open_format(cluster_format);
        }
        let closed = cluster.apply(Actor::System, ca_key(0xca, vec![0x77; 96]));
        let expected = Reject::FormatNotYetAvailable {
            kind: CommandKind::RecordCaKey,
            format_needed: 3,
            cluster_format,
        };
        assert_eq!(closed, Err(expected));
        assert!(closed.expect_err("closed").is_retryable());
        assert_eq!(cluster.state.wrapped_ca_key(), None);
    }
}

/// Setup: the prepared cluster at log format 3 with the CA key recorded. Action: write a
/// snapshot (format 4) and read it back. Expect: the same state, the same wrapped key and
/// fingerprint, and a different key still refused from the read state. (SPEC S2, C7; issue 16
/// point 1)
#[test]
fn s2_the_wrapped_ca_key_survives_a_snapshot() {
    let (mut cluster, _) = prepared();
    cluster.open_format(LOG_FORMAT_3);
    cluster.ok(Actor::System, ca_key(0xca, vec![0x77; 96]));
    let snapshot = cluster.snapshot();
    assert_eq!(snapshot[0], 4, "snapshot format 4");
    let read = statemachine::codec::decode_snapshot(&snapshot).expect("decodes");
    assert!(read == cluster.state);
    let wrapped = read.wrapped_ca_key().expect("kept");
    assert_eq!(
        (wrapped.ca_certificate_sha256, &wrapped.wrapped_key[..]),
        ([0xca; 32], &[0x77; 96][..])
    );
    cluster.state = read;
    let refused = cluster.apply(Actor::System, ca_key(0xcb, vec![0x78; 96]));
    assert!(matches!(refused, Err(Reject::CaKeyAlreadyRecorded { .. })), "{refused:?}");
}

/// Setup: a fingerprint as audit events and refusals carry it. Action: encode it with postcard
/// and show it. Expect: the bare 32 bytes, as a `[u8; 32]` is encoded, so the newtype changes
/// only the text, which is 64 hex digits. (SPEC S5; issue 16 point 1)
#[test]
fn s5_a_fingerprint_is_encoded_as_its_32_bytes_and_shown_in_hex() {
    let bytes: [u8; 32] = std::array::from_fn(|n| n as u8);
    let fingerprint = statemachine::ids::Fingerprint(bytes);
    let encoded = postcard::to_allocvec(&fingerprint).expect("encodes");
    assert_eq!(encoded, postcard::to_allocvec(&bytes).expect("encodes"));
    assert_eq!(
        fingerprint.to_string(),
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    );
}

/// Setup: the prepared cluster at log format 3 (kma1 is node 1; quorum q1, q2, q3). Action: a
/// user of every role records that members unlocked kma1; kma2's node records it for kma1; the
/// KMA records it naming nobody, a member twice, a member who is not one; then kma1, through its
/// own node, names q1 and q2. Expect: users are refused as the wrong issuer; another node's
/// record is refused (`NotFromThatKma`); the bad member lists are refused as invalid; the last
/// is Done, changes nothing but the audit log, and is audited as kma1 unlocked by q1 and q2.
/// (SPEC S4, S5; issue 16 point 5)
#[test]
fn s4_an_unlock_by_members_passphrases_is_audited_by_the_kma_it_unlocked() {
    let (mut cluster, _) = prepared();
    cluster.open_format(LOG_FORMAT_3);
    let unlock = |members: &[&str]| Command::RecordMemberUnlock {
        kma: "kma1".into(),
        members: members.iter().map(|m| m.to_string()).collect(),
    };
    for user in [so(), co(), op(), bo(), auditor()] {
        let refused = cluster.apply(user.clone(), unlock(&["q1", "q2"]));
        let kind = CommandKind::RecordMemberUnlock;
        assert_eq!(refused, Err(Reject::WrongIssuer { kind }), "{user:?}");
    }
    let node_of = |cluster: &TestCluster, name: &str| cluster.state.meta().kmas[name].node_id;
    let (kma1, kma2) = (node_of(&cluster, "kma1"), node_of(&cluster, "kma2"));
    let refused = cluster.apply_from(kma2, Actor::System, unlock(&["q1", "q2"]));
    let expected =
        Reject::NotFromThatKma { kma: "kma1".into(), node_id: kma1, origin_node_id: kma2 };
    assert_eq!(refused, Err(expected));
    for members in [&[][..], &["q1", "q1"], &["q1", "nobody"]] {
        let refused = cluster.apply_from(kma1, Actor::System, unlock(members));
        assert!(matches!(refused, Err(Reject::InvalidSetting { .. })), "{members:?}: {refused:?}");
    }
    let before = cluster.state.clone();
    let done = cluster.apply_from(kma1, Actor::System, unlock(&["q1", "q2"]));
    assert_eq!(done, Ok(Reply::Done));
    assert!(without_what_a_refusal_changes(&cluster.state, &before) == before, "nothing else");
    let members = vec!["q1".to_string(), "q2".to_string()];
    let change = statemachine::audit::KmaChange::UnlockedByMembers { members };
    let event = AuditWhat::KmaChanged { kma: "kma1".into(), node_id: kma1, change };
    assert_eq!(cluster.last_events(), vec![event]);
}

// Failed proofs counted in the replicated state (issue 16 point 5).

/// A failed proof of `principal`, from a client at 10.0.0.9.
fn failure(principal: &str) -> Command {
    Command::RecordAuthenticationFailure { principal: principal.into(), source: "10.0.0.9".into() }
}

fn window_of(cluster: &TestCluster, principal: &str) -> Option<FailureWindow> {
    cluster.state.meta().login_failures.get(principal).copied()
}

/// The prepared cluster at log format 3, its Security Officer allowing 3 failures per minute.
fn throttling_cluster() -> TestCluster {
    let (mut cluster, _) = prepared();
    cluster.open_format(LOG_FORMAT_3);
    let security = cluster.state.meta().security;
    let settings =
        SecuritySettings { login_failures_max: 3, login_throttle_ms: 60_000, ..security };
    cluster.ok(so(), Command::SetSecuritySettings(settings));
    cluster
}

/// Setup: the prepared cluster at log format 3, 3 failures allowed per 60 s window. Action:
/// failed proofs of op proposed by kma1 (node 1), 10 s later by kma2 (node 2), 5 s later by
/// kma5 (node 4), as a client spreading its guesses over the KMAs; then the query at several
/// instants. Expect: the three add up in one window that opened with the first; each is
/// audited as before (`AuthenticationFailure`, nothing more); below the limit op is not
/// throttled; at the limit it is, for what is left of the window (45 s), down to 1 ms before
/// its end, and no longer at its end; a clock behind the leader's waits one window at most;
/// other users are not throttled. (SPEC S2, S5; issue 16 point 5)
#[test]
fn s2_failed_proofs_of_a_known_user_are_counted_across_kmas() {
    let mut cluster = throttling_cluster();
    let since_ms = cluster.now_ms;
    cluster.apply_from(1, Actor::System, failure("op")).expect("audited");
    cluster.advance(10 * SECOND_MS);
    cluster.apply_from(2, Actor::System, failure("op")).expect("audited");
    assert_eq!(window_of(&cluster, "op"), Some(FailureWindow { since_ms, count: 2 }));
    assert_eq!(cluster.state.login_throttled("op", cluster.now_ms), None, "below the limit");
    cluster.advance(5 * SECOND_MS);
    cluster.apply_from(4, Actor::System, failure("op")).expect("audited");
    let audited =
        AuditWhat::AuthenticationFailure { principal: "op".into(), source: "10.0.0.9".into() };
    assert_eq!(cluster.last_events(), vec![audited], "the audit record is unchanged");
    assert_eq!(window_of(&cluster, "op"), Some(FailureWindow { since_ms, count: 3 }));

    let throttled = |at_ms: u64| cluster.state.login_throttled("op", at_ms);
    assert_eq!(throttled(cluster.now_ms), Some(45 * SECOND_MS), "the rest of the window");
    assert_eq!(throttled(since_ms + 60 * SECOND_MS - 1), Some(1));
    assert_eq!(throttled(since_ms + 60 * SECOND_MS), None, "the window ended");
    assert_eq!(throttled(since_ms - SECOND_MS), Some(60 * SECOND_MS), "one window at most");
    assert_eq!(cluster.state.login_throttled("co", cluster.now_ms), None, "another user");
}

/// Setup: the prepared cluster at log format 3, 3 failures allowed per 60 s window; op failed
/// three times. Action: a fourth failure within the window; then one exactly when it ends;
/// then, on a state whose window holds `u32::MAX` failures, one more. Expect: the fourth adds
/// to the window without moving its start; the one at the end opens a new window of one
/// failure, and op is not throttled; the count saturates instead of wrapping. (SPEC S2; issue
/// 16 point 5)
#[test]
fn s2_a_new_failure_window_starts_after_the_last_one_ended() {
    let mut cluster = throttling_cluster();
    let since_ms = cluster.now_ms;
    for _ in 0..3 {
        cluster.ok(Actor::System, failure("op"));
    }
    cluster.advance(59 * SECOND_MS);
    cluster.ok(Actor::System, failure("op"));
    assert_eq!(window_of(&cluster, "op"), Some(FailureWindow { since_ms, count: 4 }));
    assert_eq!(cluster.state.login_throttled("op", cluster.now_ms), Some(SECOND_MS));
    cluster.advance(SECOND_MS);
    cluster.ok(Actor::System, failure("op"));
    let since_ms = cluster.now_ms;
    assert_eq!(window_of(&cluster, "op"), Some(FailureWindow { since_ms, count: 1 }), "new");
    assert_eq!(cluster.state.login_throttled("op", cluster.now_ms), None);

    let mut meta = cluster.state.meta().clone();
    meta.login_failures.insert("op".into(), FailureWindow { since_ms, count: u32::MAX });
    let state = &cluster.state;
    cluster.state = State::from_parts(meta, state.keys().clone(), state.data_units().clone());
    cluster.ok(Actor::System, failure("op"));
    let count = window_of(&cluster, "op").expect("counted").count;
    assert_eq!(count, u32::MAX, "saturates");
}

/// Setup: the prepared cluster at log format 3, 3 failures allowed per 60 s window. op, co
/// and au2 throttled, bo failed once; agents drive8 (not enrolled) and drive1 failed once as
/// `agent:<ID>`. Action: op logs in (`RecordLogin`), co logs in with its session certificate
/// (`RecordUserSession`), au2 is given a new passphrase; drive8 is given a new passphrase,
/// fails again, then enrolls. Expect: each of these clears its own principal's window, and
/// op, co and au2 are no longer throttled; bo's and drive1's windows stay. (SPEC S2, A1;
/// issue 16 point 5)
#[test]
fn s2_a_successful_login_or_a_new_passphrase_clears_failed_proofs() {
    let mut cluster = throttling_cluster();
    for user in ["op", "co", "au2"] {
        for _ in 0..3 {
            cluster.ok(Actor::System, failure(user));
        }
        assert!(cluster.state.login_throttled(user, cluster.now_ms).is_some(), "{user}");
    }
    for principal in ["bo", "agent:drive8", "agent:drive1"] {
        cluster.ok(Actor::System, failure(principal));
    }
    let login = Command::RecordLogin { principal: "op".into(), source: "10.0.0.7".into() };
    cluster.ok(Actor::System, login);
    cluster.ok(Actor::System, session("co", 0xc0, cluster.now_ms + DAY_MS));
    let verifier = vec![0x0e; 32];
    cluster
        .ok(so(), Command::SetUserPassphrase { id: "au2".into(), passphrase_verifier: verifier });
    for user in ["op", "co", "au2"] {
        assert_eq!(window_of(&cluster, user), None, "{user}: cleared");
        assert_eq!(cluster.state.login_throttled(user, cluster.now_ms), None, "{user}");
    }

    let verifier = vec![0x0f; 32];
    cluster.ok(
        op(),
        Command::SetAgentPassphrase { id: "drive8".into(), passphrase_verifier: verifier },
    );
    assert_eq!(window_of(&cluster, "agent:drive8"), None, "a new passphrase clears");
    cluster.ok(Actor::System, failure("agent:drive8"));
    assert!(window_of(&cluster, "agent:drive8").is_some());
    let enrolled =
        Command::RecordAgentEnrollment { id: "drive8".into(), certificate_fingerprint: [0x88; 32] };
    cluster.ok(Actor::System, enrolled);
    assert_eq!(window_of(&cluster, "agent:drive8"), None, "an enrollment clears");
    let stayed: Vec<&String> = cluster.state.meta().login_failures.keys().collect();
    assert_eq!(stayed, ["agent:drive1", "bo"]);
}

/// Setup: the prepared cluster at log format 3. Action: failed proofs of principals that are
/// no user or agent: an unknown name, the summary sentence of failures for unknown principals,
/// a quorum member, a KMA, an unknown agent, an agent's ID without its `agent:` prefix, the
/// bare prefix and the empty name; then one of `agent:drive8`. Expect: each is audited as
/// before and changes nothing else: no failure window, nobody throttled, so that made-up names
/// cannot grow the state; drive8's failure is counted under `agent:drive8`. (SPEC S2, S5;
/// issue 16 points 5 and 9; STYLE 9)
#[test]
fn s2_failed_proofs_are_counted_only_for_users_and_agents_that_exist() {
    let mut cluster = throttling_cluster();
    let uncounted = [
        "ghost",
        "3 failed logins for unknown principals in the last minute",
        "quorum member q1",
        "kma1",
        "agent:ghost",
        "drive8",
        "agent:",
        "",
    ];
    for principal in uncounted {
        cluster.ok(Actor::System, failure(principal));
        let audited = AuditWhat::AuthenticationFailure {
            principal: principal.into(),
            source: "10.0.0.9".into(),
        };
        assert_eq!(cluster.last_events(), vec![audited], "{principal:?}");
        let before = cluster.before_last.as_ref().expect("before");
        assert!(
            without_what_a_refusal_changes(&cluster.state, before) == *before,
            "{principal:?} changes nothing but the audit log"
        );
        assert_eq!(cluster.state.login_throttled(principal, cluster.now_ms), None);
    }
    assert!(cluster.state.meta().login_failures.is_empty());
    cluster.ok(Actor::System, failure("agent:drive8"));
    let since_ms = cluster.now_ms;
    assert_eq!(window_of(&cluster, "agent:drive8"), Some(FailureWindow { since_ms, count: 1 }));
}

/// Setup: the prepared cluster at log format 3; au2 and agent drive8 failed; a user whose ID
/// reads `agent:drive1` exists beside agent drive1, and both failed under that one name.
/// Action: delete au2 and drive8; then the user `agent:drive1`, then agent drive1. Expect:
/// each deletion removes its principal's window; the shared window stays while agent drive1
/// still exists, and goes with it: no window outlives what it counts. (SPEC S2; issue 16 point
/// 5; STYLE 9)
#[test]
fn s2_deleting_a_user_or_agent_removes_its_failure_window() {
    let mut cluster = throttling_cluster();
    let roles = RoleSet::of(statemachine::Role::Auditor);
    let user =
        Command::CreateUser { id: "agent:drive1".into(), roles, passphrase_verifier: vec![2; 32] };
    cluster.ok(so(), user);
    for principal in ["au2", "agent:drive8", "agent:drive1", "agent:drive1"] {
        cluster.ok(Actor::System, failure(principal));
    }
    cluster.ok(so(), Command::DeleteUser { id: "au2".into() });
    assert_eq!(window_of(&cluster, "au2"), None, "deleted user");
    cluster.ok(op(), Command::DeleteAgent { id: "drive8".into() });
    assert_eq!(window_of(&cluster, "agent:drive8"), None, "deleted agent");
    cluster.ok(so(), Command::DeleteUser { id: "agent:drive1".into() });
    let count = window_of(&cluster, "agent:drive1").map(|window| window.count);
    assert_eq!(count, Some(2), "agent drive1 still exists under that name");
    cluster.ok(op(), Command::DeleteAgent { id: "drive1".into() });
    assert!(cluster.state.meta().login_failures.is_empty(), "gone with agent drive1");
}

/// Setup: the prepared cluster, whose KMAs never reported a format (log format 1), then at
/// format 2, one failure allowed per window. Action: failed proofs of op and of
/// `agent:drive8`, each twice. Expect: applied and audited as before, and nothing else
/// changes: no failure window and nobody throttled, so that a KMA of an older release, which
/// counts nothing, applies the same log to the same state; at format 3 the same failure is
/// counted. (SPEC C7, S2; issue 16 point 5)
#[test]
fn c7_failed_proofs_are_not_counted_below_format_3() {
    let (mut cluster, _) = prepared();
    let security = cluster.state.meta().security;
    cluster.ok(
        so(),
        Command::SetSecuritySettings(SecuritySettings { login_failures_max: 1, ..security }),
    );
    for format in [1, 2] {
        if format > 1 {
            cluster.open_format(format);
        }
        assert_eq!(cluster.state.cluster_format_version(), format);
        for principal in ["op", "op", "agent:drive8", "agent:drive8"] {
            cluster.ok(Actor::System, failure(principal));
            let audited = AuditWhat::AuthenticationFailure {
                principal: principal.into(),
                source: "10.0.0.9".into(),
            };
            assert_eq!(cluster.last_events(), vec![audited]);
            let before = cluster.before_last.as_ref().expect("before");
            assert!(
                without_what_a_refusal_changes(&cluster.state, before) == *before,
                "format {format}: {principal} is audited only"
            );
            assert_eq!(cluster.state.login_throttled(principal, cluster.now_ms), None);
        }
        assert!(cluster.state.meta().login_failures.is_empty(), "format {format}");
    }
    cluster.open_format(LOG_FORMAT_3);
    cluster.ok(Actor::System, failure("op"));
    assert!(cluster.state.login_throttled("op", cluster.now_ms).is_some(), "format 3 counts");
}

/// Setup: the prepared cluster at log format 3, 3 failures allowed per 60 s window; op failed
/// three times, drive8 once. Action: write a snapshot (format 4) and read it back. Expect: the
/// same state with the same windows, and the same answer to whether op is throttled. (SPEC S2,
/// C7; issue 16 point 5)
#[test]
fn s2_failure_windows_survive_a_snapshot() {
    let mut cluster = throttling_cluster();
    for principal in ["op", "op", "op", "agent:drive8"] {
        cluster.ok(Actor::System, failure(principal));
    }
    let snapshot = cluster.snapshot();
    assert_eq!(snapshot[0], 4, "snapshot format 4");
    let read = statemachine::codec::decode_snapshot(&snapshot).expect("decodes");
    assert!(read == cluster.state);
    assert_eq!(read.meta().login_failures.len(), 2);
    let now_ms = cluster.now_ms;
    assert_eq!(read.login_throttled("op", now_ms), Some(60 * SECOND_MS));
    assert_eq!(read.login_throttled("op", now_ms), cluster.state.login_throttled("op", now_ms));
}

/// Setup: the prepared cluster at log format 3 with a failure window of op, then states whose
/// windows break a rule: one for a principal that does not exist, one holding no failure, one
/// opened after the last applied entry. Action: check the invariants of each. Expect: the
/// first holds; each other panics, naming the rule: the map stays bounded by the users and
/// agents that exist. (SPEC S2; issue 16 point 5; STYLE 8, 9)
#[test]
fn s2_the_invariants_bound_failure_windows() {
    let mut cluster = throttling_cluster();
    cluster.ok(Actor::System, failure("op"));
    cluster.state.check_invariants();
    let now_ms = cluster.now_ms;
    let broken = [
        ("ghost", FailureWindow { since_ms: now_ms, count: 1 }, "exists"),
        ("op", FailureWindow { since_ms: now_ms, count: 0 }, "holds a failure"),
        ("op", FailureWindow { since_ms: now_ms + 1, count: 1 }, "opened at an applied entry"),
    ];
    for (principal, window, rule) in broken {
        let mut meta = cluster.state.meta().clone();
        meta.login_failures.insert(principal.into(), window);
        let state = State::from_parts(
            meta,
            cluster.state.keys().clone(),
            cluster.state.data_units().clone(),
        );
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            state.check_invariants();
        }))
        .expect_err(rule);
        let message = panic.downcast_ref::<String>().map_or("", String::as_str);
        assert!(message.contains(rule), "{rule}: {message}");
    }
}

/// Setup: a one-KMA cluster at log format 3, and a copy of it at format 2. Action: in each, a
/// new KMA is created and the quorum approves its join, before it reports any version. Expect:
/// at format 3 the cluster stays at format 3 (the joiner is taken to read it until it reports),
/// so the rules of format 3 (session certificates, the CA key) go on applying; at format 2
/// the joiner counts as the baseline, as before, and the cluster dips to format 1. (SPEC C7;
/// issue 16 point 2)
#[test]
fn c7_an_approved_joiner_keeps_a_format_3_cluster_at_format_3() {
    for (format, after_join) in [(LOG_FORMAT_3, LOG_FORMAT_3), (2, 1)] {
        let mut cluster = TestCluster::single();
        cluster.open_format(format);
        cluster.ok(
            so(),
            Command::CreateKma {
                name: "kma7".into(),
                site: "east".into(),
                passphrase_verifier: vec![3; 32],
            },
        );
        let operation = statemachine::quorum::QuorumOperation::JoinKma { kma: "kma7".into() };
        let Reply::QuorumOperationStarted { id, .. } =
            cluster.ok(so(), Command::StartQuorumOperation { operation, ttl_ms: None })
        else {
            panic!("expected a started quorum operation");
        };
        for member in ["q1", "q2"] {
            cluster.ok(so(), Command::ApproveQuorumOperation { id, member: member.into() });
        }
        assert!(cluster.state.meta().kmas["kma7"].applies_the_log(), "approved");
        assert_eq!(cluster.state.cluster_format_version(), after_join, "from format {format}");
        assert_eq!(cluster.state.certificates_recorded(), after_join >= LOG_FORMAT_3);
    }
}
