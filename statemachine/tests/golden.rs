//! Golden files: checked-in logs, the snapshots and audit events they produce, one file of every
//! format version. A change that would make old logs, snapshots or audit records unreadable, or
//! read differently, fails here (SPEC "Serialization", C7).
//!
//! - `log-v1.bin`, `audit-v1.bin`: a history in log format 1 and its audit events.
//! - `snapshot-v1.bin` (before the audit chain), `snapshot-v2.bin` (before version reports):
//!   the state that log replays to, in the older snapshot formats; both are still read.
//! - `commands-v1.bin`: one command of every kind in log format 1, pinned before issue 15.
//! - `log-v2.bin`, `audit-v2.bin`, `snapshot-v3.bin`: the same history, then the version gate
//!   opening to format 2 (reports, a full report, approvals of a removed member no longer
//!   counting); the snapshot, of format 3, is still read.
//! - `snapshot-v3-log-v3.bin`: a snapshot of format 3 of an earlier log of format 3, before
//!   certificates were recorded; still read, with no certificate or session.
//! - `log-v3.bin`, `audit-v3.bin`, `snapshot-v4-log-v3.bin`: the history of format 2, then every
//!   KMA reporting format 3 and its rules (issue 16): a KMA-only command refused from a user and
//!   applied from the KMA, a destroy by key ID refused on a stale preview then applied, a drive
//!   leaving another group's keys in use, a quorum change dropping a removed member's approval,
//!   the audit events of what commands changed, certificates bound to the state (a KMA's own
//!   certificate, a join granted once, user sessions recorded and revoked), the cluster CA's
//!   key recorded wrapped, once, failed proofs counted in the state for the users and agents
//!   that exist only, a login clearing them, and a CA rotation completed, its old CA retired
//!   once every KMA adopted the new one, then a second rotation under way; and (issue 17)
//!   backup records of format 3 through their KMA's own node, a restore drill, a core security
//!   backup refused for an old quorum after a quorum change, which audits that one is due, and
//!   the start of the retired quorum operation of restore refused. The snapshot is of format 4.
//!
//! `BLESS=1 cargo test -p statemachine --test golden` rewrites the files of the newest log
//! format only, for a deliberate change of them; the older files are never rewritten.

mod support;

use std::path::PathBuf;

use statemachine::audit::AuditChain;
use statemachine::audit::AuditWhat;
use statemachine::cluster::FailureWindow;
use statemachine::codec::{decode_envelope, decode_snapshot, encode_envelope, encode_snapshot};
use statemachine::command::{Command, DestroySelection};
use statemachine::ids::Fingerprint;
use statemachine::quorum::QuorumOperation;
use statemachine::state::Meta;
use statemachine::{Actor, Envelope, Formats, KmaVersion, Reply, SoftwareVersion, State};
use support::*;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

fn read_golden(name: &str) -> Vec<u8> {
    std::fs::read(golden(name)).unwrap_or_else(|e| panic!("tests/golden/{name}: {e}"))
}

/// Writes a golden file of the newest formats under `BLESS=1`.
fn bless(name: &str, bytes: &[u8]) {
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(golden(name), bytes).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    }
}

/// The sample history of format 1: the prepared cluster, then time passing, a pulse and a
/// destroy.
fn sample_cluster() -> (TestCluster, Fixture) {
    let (mut cluster, fixture) = prepared();
    cluster.advance(11 * DAY_MS);
    cluster.ok(Actor::System, Command::Pulse);
    let digest = cluster
        .state
        .destroy_preview(&[fixture.spoiled_unit], DestroySelection::CompromisedOnly, cluster.now_ms)
        .expect("preview")
        .digest;
    cluster.ok(
        op(),
        Command::DestroyDataUnitKeys {
            data_units: vec![fixture.spoiled_unit],
            selection: DestroySelection::CompromisedOnly,
            preview_digest: digest,
        },
    );
    (cluster, fixture)
}

/// The sample history, then the gate opening: quorum member q3 approves a join of kma3 and
/// leaves the quorum; every KMA that applies the log reports format 2, then in full;
/// q1's approval then brings the join to one counted approval, not two, and q2's completes it.
fn sample_cluster_v2() -> (TestCluster, Fixture) {
    let (mut cluster, fixture) = sample_cluster();
    let join = QuorumOperation::JoinKma { kma: "kma3".into() };
    let Reply::QuorumOperationStarted { id: pending, .. } =
        cluster.ok(so(), Command::StartQuorumOperation { operation: join, ttl_ms: None })
    else {
        panic!("started")
    };
    cluster.ok(so(), Command::ApproveQuorumOperation { id: pending, member: "q3".into() });
    let operation = QuorumOperation::ChangeQuorum { quorum: quorum(2, 2) };
    let Reply::QuorumOperationStarted { id, .. } =
        cluster.ok(so(), Command::StartQuorumOperation { operation, ttl_ms: None })
    else {
        panic!("started")
    };
    cluster.ok(bo(), Command::ApproveQuorumOperation { id, member: "q1".into() });
    cluster.ok(bo(), Command::ApproveQuorumOperation { id, member: "q2".into() });
    cluster.report_log_format(&["kma1", "kma2", "kma5"], 2);
    let software = SoftwareVersion { major: 0, minor: 2, patch: 0 };
    let version = KmaVersion { software, formats: Formats { log: 2, snapshot: 3 } };
    for (kma, node_id) in [("kma1", 1), ("kma2", 2), ("kma5", 4)] {
        let report = Command::ReportKmaVersion { kma: kma.into(), version };
        cluster.apply_from(node_id, Actor::System, report).expect("own report");
    }
    let first =
        cluster.ok(so(), Command::ApproveQuorumOperation { id: pending, member: "q1".into() });
    assert!(matches!(first, Reply::QuorumApproval { approvals: 1, completed: false, .. }));
    cluster.ok(so(), Command::ApproveQuorumOperation { id: pending, member: "q2".into() });
    (cluster, fixture)
}

/// Every KMA that applies the log reports `version`, each through its own node, with the
/// command the state picks (`State::version_report`) until none is left to send.
fn report_everywhere(cluster: &mut TestCluster, version: &KmaVersion) {
    loop {
        let kmas: Vec<(String, u64)> = cluster
            .state
            .meta()
            .kmas
            .values()
            .filter(|kma| kma.applies_the_log())
            .map(|kma| (kma.name.clone(), kma.node_id))
            .collect();
        let mut reported = false;
        for (kma, node_id) in kmas {
            if let Some(report) = cluster.state.version_report(&kma, version) {
                cluster.apply_from(node_id, Actor::System, report).expect("own report");
                reported = true;
            }
        }
        if !reported {
            return;
        }
    }
}

/// The history of format 2, then the gate opening to format 3 and each of its rules.
fn sample_cluster_v3() -> TestCluster {
    let (mut cluster, fixture) = sample_cluster_v2();
    let software = SoftwareVersion { major: 0, minor: 3, patch: 0 };
    report_everywhere(&mut cluster, &KmaVersion { software, formats: Formats::CURRENT });
    assert_eq!(cluster.state.cluster_format_version(), 3);
    let backup_id = record_backups(&mut cluster);
    // A destroy by key ID on a stale preview, then on a fresh one.
    cluster.ok(co(), Command::CompromiseKeys { keys: vec![fixture.legacy] });
    let preview = |cluster: &TestCluster| {
        cluster.state.key_destroy_preview(&[fixture.legacy]).expect("preview").digest
    };
    let seen = preview(&cluster);
    let read = Command::AssociateKeyForRead {
        key_id: fixture.legacy,
        data_unit: Some(fixture.empty_unit),
        external_tag: String::new(),
    };
    cluster.ok(agent("drive1"), read);
    let destroy = |preview_digest| Command::DestroyKeysPreviewed {
        keys: vec![fixture.legacy],
        preview_digest,
    };
    cluster.apply(op(), destroy(seen)).expect_err("stale");
    let fresh = preview(&cluster);
    cluster.ok(op(), destroy(fresh));
    // A drive of another group leaves the keys of VOL001 in use.
    cluster.policy_and_group("other", 10 * DAY_MS, 54 * WEEK_MS);
    cluster.enrolled_agent("drive7", &["other"]);
    cluster.ok(agent("drive7"), Command::DisassociateKeysOnBot { data_unit: fixture.unit });
    // q2 approves a join, then leaves the quorum: its approval is dropped.
    let verifier = vec![3; 32];
    let kma6 = Command::CreateKma {
        name: "kma6".into(),
        site: "east".into(),
        passphrase_verifier: verifier,
    };
    cluster.ok(so(), kma6);
    let join = QuorumOperation::JoinKma { kma: "kma6".into() };
    let Reply::QuorumOperationStarted { id: pending, .. } =
        cluster.ok(so(), Command::StartQuorumOperation { operation: join, ttl_ms: None })
    else {
        panic!("started")
    };
    cluster.ok(so(), Command::ApproveQuorumOperation { id: pending, member: "q2".into() });
    let mut without_q2 = quorum(3, 2);
    without_q2.members.remove(1);
    let operation = QuorumOperation::ChangeQuorum { quorum: without_q2 };
    let Reply::QuorumOperationStarted { id, .. } =
        cluster.ok(so(), Command::StartQuorumOperation { operation, ttl_ms: None })
    else {
        panic!("started")
    };
    cluster.ok(bo(), Command::ApproveQuorumOperation { id, member: "q1".into() });
    cluster.ok(bo(), Command::ApproveQuorumOperation { id, member: "q2".into() });
    assert!(cluster.state.meta().quorum_operations[&pending].approvals.is_empty());
    // The quorum changed: the core security backup of the old one is due again (issue 17).
    let version = cluster.state.quorum_changed_index();
    assert_eq!(cluster.state.core_security_backup_due(), Some(version));
    cluster.apply(Actor::System, core_security_backup(0)).expect_err("the old quorum");
    cluster.ok(Actor::System, core_security_backup(version));
    assert_eq!(cluster.state.core_security_backup_due(), None);
    let restore = QuorumOperation::RestoreFromBackup { backup_id };
    let start = Command::StartQuorumOperation { operation: restore, ttl_ms: None };
    cluster.apply(bo(), start).expect_err("a local ceremony from format 3");
    // What commands changed.
    let roles = statemachine::RoleSet::of(statemachine::Role::ComplianceOfficer)
        .with(statemachine::Role::Auditor);
    cluster.ok(so(), Command::SetUserRoles { id: "co".into(), roles });
    cluster.ok(op(), Command::SetAgentEnabled { id: "drive7".into(), enabled: false });
    cluster.ok(so(), Command::DeleteKma { name: "kma6".into() });
    record_certificates(&mut cluster);
    record_ca_key(&mut cluster);
    record_login_failures(&mut cluster);
    record_ca_rotation(&mut cluster);
    cluster
}

/// Backup records of log format 3 (issue 17): a database backup refused from a user and through
/// another KMA's node, then recorded by kma1; a core security backup of the current quorum; a
/// restore drill of the database backup. Returns the database backup's ID.
fn record_backups(cluster: &mut TestCluster) -> u64 {
    let backup = Command::RecordBackup {
        kind: statemachine::backup::BackupKind::Database,
        kma: "kma1".into(),
        file_name: "b3.kms".into(),
        covers_index: cluster.index,
        taken_by: "bo".into(),
        size_bytes: 4_096,
        file_sha256: [0xf3; 32],
        state_sha256: [0x53; 32],
        backup_uuid: [0xb3; 16],
    };
    cluster.apply(bo(), backup.clone()).expect_err("a user");
    cluster.apply_from(2, Actor::System, backup.clone()).expect_err("through kma2's node");
    let Reply::BackupRecorded { id } = cluster.ok(Actor::System, backup) else {
        panic!("recorded")
    };
    let version = cluster.state.quorum_changed_index();
    cluster.ok(Actor::System, core_security_backup(version));
    let drill = Command::RecordBackupDrill {
        backup_id: id,
        kma: "kma1".into(),
        passed: true,
        detail: "restored into a scratch state".into(),
    };
    cluster.ok(Actor::System, drill);
    id
}

/// A core security backup written by kma1 (issue 17), holding the quorum of `covers_index`.
fn core_security_backup(covers_index: u64) -> Command {
    Command::RecordBackup {
        kind: statemachine::backup::BackupKind::CoreSecurity,
        kma: "kma1".into(),
        file_name: format!("core-{covers_index}.xml"),
        covers_index,
        taken_by: String::new(),
        size_bytes: 1_024,
        file_sha256: [covers_index as u8; 32],
        state_sha256: [0; 32],
        backup_uuid: [covers_index as u8 ^ 0xcc; 16],
    }
}

/// A CA rotation (issue 16 point 1): approved; kma1's reissued certificate refused before the
/// new CA; begun, the same beginning retried; every KMA reissues, kma2 twice; completed, which
/// ends co's session. Then the old CA's retirement: a second rotation refused while it lasts,
/// kma1 adopts the new CA, again (Done), kma2's adoption refused through kma1's node, and
/// every KMA adopts, which retires the old CA. Then a second rotation approved and begun, kma1
/// reissued, so that the snapshot holds one under way.
fn record_ca_rotation(cluster: &mut TestCluster) {
    let reissued = |name: &str, byte| Command::RecordReissuedKmaCertificate {
        name: name.into(),
        certificate_sha256: [byte; 32],
    };
    cluster.approve_ca_rotation();
    cluster.apply_from(1, Actor::System, reissued("kma1", 0xe1)).expect_err("not begun");
    cluster.ok(Actor::System, begin_ca_rotation(0xcc));
    cluster.ok(Actor::System, begin_ca_rotation(0xcc));
    cluster.apply_from(2, Actor::System, reissued("kma2", 0xee)).expect("its own");
    cluster.reissue_every_kma();
    cluster.ok(Actor::System, Command::CompleteCaRotation);
    let rotate = QuorumOperation::RotateCa;
    let start = Command::StartQuorumOperation { operation: rotate, ttl_ms: None };
    cluster.apply(so(), start).expect_err("the old CA retires");
    let adopted = |name: &str| Command::RecordCaAdopted { name: name.into() };
    cluster.apply_from(1, Actor::System, adopted("kma1")).expect("its own");
    cluster.apply_from(1, Actor::System, adopted("kma1")).expect("the same again");
    cluster.apply_from(1, Actor::System, adopted("kma2")).expect_err("another KMA's");
    cluster.adopt_every_kma();
    cluster.approve_ca_rotation();
    cluster.ok(Actor::System, begin_ca_rotation(0xcd));
    cluster.apply_from(1, Actor::System, reissued("kma1", 0xf1)).expect("its own");
}

/// Failed proofs counted in the state (issue 16 point 5), each entry of format 1: co fails at
/// two KMAs; the summary of failures for unknown principals and a quorum member's failure are
/// audited only; drive1 fails its enrollment; bo fails, then logs in, which clears its window.
fn record_login_failures(cluster: &mut TestCluster) {
    let failure = |principal: &str, source: &str| Command::RecordAuthenticationFailure {
        principal: principal.into(),
        source: source.into(),
    };
    let failures = [
        (1, "co", "10.0.0.7"),
        (2, "co", "10.0.0.8"),
        (2, "3 failed logins for unknown principals in the last minute", "10.0.0.9"),
        (1, "quorum member q1", "10.0.0.7"),
        (1, "agent:drive1", "10.0.1.1"),
        (2, "bo", "10.0.0.7"),
    ];
    for (node_id, principal, source) in failures {
        cluster.apply_from(node_id, Actor::System, failure(principal, source)).expect("audited");
    }
    let login = Command::RecordLogin { principal: "bo".into(), source: "10.0.0.7".into() };
    cluster.apply_from(2, Actor::System, login).expect("logged in");
}

/// The cluster CA's key, wrapped under the master key (issue 16 point 1): recorded, the same
/// record retried, another one refused.
fn record_ca_key(cluster: &mut TestCluster) {
    let ca_key = |byte| Command::RecordCaKey {
        ca_certificate_sha256: [byte; 32],
        wrapped_key: vec![byte ^ 0xff; 96],
    };
    cluster.ok(Actor::System, ca_key(0xca));
    cluster.ok(Actor::System, ca_key(0xca));
    cluster.apply(Actor::System, ca_key(0xcb)).expect_err("recorded once");
}

/// Certificates bound to the state (issue 16 point 2): kma1 reports its own, kma1's report of
/// kma2's is refused; kma3's join is granted, a second grant refused; two users log in, one
/// of them then gets a new passphrase, which revokes its session.
fn record_certificates(cluster: &mut TestCluster) {
    let own = |name: &str, byte| Command::RecordKmaCertificate {
        name: name.into(),
        certificate_sha256: [byte; 32],
    };
    cluster.apply_from(1, Actor::System, own("kma1", 0xc1)).expect("its own");
    cluster.apply_from(1, Actor::System, own("kma2", 0xc2)).expect_err("another KMA's");
    let grant =
        |byte| Command::GrantKmaJoin { name: "kma3".into(), certificate_sha256: [byte; 32] };
    cluster.ok(Actor::System, grant(0xc3));
    cluster.apply(Actor::System, grant(0xc4)).expect_err("spent");
    for (user, byte) in [("op", 0xd1), ("co", 0xd2)] {
        let session = Command::RecordUserSession {
            principal: user.into(),
            source: "10.0.0.7".into(),
            certificate_sha256: [byte; 32],
            expires_at_ms: cluster.now_ms + DAY_MS,
        };
        cluster.ok(Actor::System, session);
    }
    let verifier = vec![0x0d; 32];
    cluster.ok(so(), Command::SetUserPassphrase { id: "op".into(), passphrase_verifier: verifier });
}

fn frame(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in entries {
        bytes.extend_from_slice(&(entry.len() as u32).to_le_bytes());
        bytes.extend_from_slice(entry);
    }
    bytes
}

fn unframe(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_le_bytes(bytes[..4].try_into().expect("length")) as usize;
        entries.push(&bytes[4..4 + len]);
        bytes = &bytes[4 + len..];
    }
    entries
}

/// Applies the log and returns the state and the postcard encoding of every audit event.
fn replay(entries: &[&[u8]]) -> (State, Vec<u8>) {
    let mut state = State::new();
    let mut events = Vec::new();
    for (position, bytes) in entries.iter().enumerate() {
        let envelope = decode_envelope(bytes).expect("a golden entry decodes");
        assert_eq!(
            &encode_envelope(&envelope),
            bytes,
            "entry {position} re-encodes to the same bytes"
        );
        let applied = state.apply(position as u64 + 1, &envelope);
        state.check_invariants();
        for event in applied.events {
            events.extend(postcard::to_allocvec(&event).expect("event encodes"));
        }
    }
    (state, events)
}

/// Setup: the checked-in log of format 1. Action: decode and apply it on a fresh state.
/// Expect: every entry re-encodes to its bytes; the audit events equal the checked-in ones byte
/// for byte; the state equals the golden snapshot of format 2, read by today's decoder.
#[test]
fn golden_log_v1_decodes_and_replays_to_the_golden_snapshot() {
    let log = read_golden("log-v1.bin");
    let entries = unframe(&log);
    assert!(entries.len() > 40, "the sample log covers a real history");
    assert!(entries.iter().all(|entry| entry[0] == 1), "every entry is of format 1");
    let (state, events) = replay(&entries);
    let snapshot = decode_snapshot(&read_golden("snapshot-v2.bin")).expect("format 2 is read");
    assert!(snapshot == state, "replaying the golden log gives the state of snapshot-v2.bin");
    assert!(events == read_golden("audit-v1.bin"), "the audit events keep their encoding");
}

/// Setup: the checked-in snapshot of format 1, from before the audit chain. Action: decode.
/// Expect: the state the golden log replays to, with the audit chain starting again at
/// genesis: an audit log continued from it is anchored there. (SPEC S5, C7)
#[test]
fn c7_golden_snapshot_v1_decodes_with_the_audit_chain_restarted() {
    let entries = read_golden("log-v1.bin");
    let (state, _) = replay(&unframe(&entries));
    let decoded = decode_snapshot(&read_golden("snapshot-v1.bin")).expect("format 1 is read");
    assert_eq!(decoded.audit_chain(), AuditChain::GENESIS);
    let meta = Meta { audit_chain: AuditChain::GENESIS, ..state.meta().clone() };
    let expected = State::from_parts(meta, state.keys().clone(), state.data_units().clone());
    assert!(decoded == expected, "snapshot-v1.bin holds the state of the golden log");
}

/// Setup: the checked-in log of format 2 (the format-1 history, then the version gate opening).
/// Action: decode and apply it. Expect: entries of format 1 but the full version reports;
/// each re-encodes to its bytes; the snapshot (format 3) and the audit events equal the
/// checked-in ones; the snapshot of format 3 decodes to the state the log replays to, with no
/// certificate or session (snapshot format 4 added them, and a log of format 2 records none).
/// (SPEC C7, S4)
#[test]
fn c7_golden_log_v2_replays_to_the_golden_snapshot_v3() {
    let log = read_golden("log-v2.bin");
    let entries = unframe(&log);
    let full_reports = entries.iter().filter(|entry| entry[0] == 2).count();
    assert_eq!(full_reports, 3, "the full reports are the entries of format 2");
    let (state, events) = replay(&entries);
    assert_eq!(state.cluster_format_version(), 1, "kma3 joined last and never reported");
    let snapshot = read_golden("snapshot-v3.bin");
    assert_eq!(snapshot[0], 3, "snapshot-v3.bin is of snapshot format 3");
    assert!(decode_snapshot(&snapshot).expect("format 3 is read") == state);
    assert!(events == read_golden("audit-v2.bin"), "the audit events keep their encoding");
}

/// Setup: the checked-in snapshot of format 3 of an earlier log of format 3, written before
/// certificates were recorded. Action: decode it, encode it in today's format, decode again.
/// Expect: it reads, at log format 3, with every KMA certificate `None`, every user's sessions
/// empty, no CA key, no failure window, no CA rotation and no CA retiring, its invariants hold,
/// and today's format carries the same state. (SPEC C7, S4; issue 16 points 1, 2, 5)
#[test]
fn c7_golden_snapshot_v3_reads_with_no_certificate_or_session() {
    let snapshot = read_golden("snapshot-v3-log-v3.bin");
    assert_eq!(snapshot[0], 3, "a snapshot of format 3");
    let state = decode_snapshot(&snapshot).expect("format 3 is read");
    state.check_invariants();
    assert_eq!(state.cluster_format_version(), 3);
    assert!(state.meta().kmas.values().all(|kma| kma.certificate_sha256.is_none()));
    assert!(state.meta().users.values().all(|user| user.sessions.is_empty()));
    assert_eq!(state.wrapped_ca_key(), None);
    assert!(state.meta().login_failures.is_empty(), "no failure window before format 4");
    assert_eq!((state.ca_rotation(), state.ca_certificate_der()), (None, None), "no rotation");
    assert_eq!(state.retiring_ca(), None, "no CA retiring before format 4");
    let today = encode_snapshot(&state);
    assert_eq!(today[0], 4, "written in snapshot format 4");
    assert!(decode_snapshot(&today).expect("format 4 is read") == state);
}

/// Setup: the checked-in log of format 3 (the history of format 2, then the gate opening to
/// format 3 and each of its rules). Action: decode and apply it. Expect: the destroys by key ID
/// with their preview, the certificate records, the CA key records and the steps of the CA
/// rotations are the entries of format 3; each entry re-encodes to its bytes; the state and the
/// audit events equal the checked-in ones, and the snapshot (format 4) decodes to the same
/// state: the KMAs hold the certificates they reissued (kma2 its second), co's session ended
/// with the first CA, the CA of the completed rotation with its certificate, its old CA
/// retired (audited once, after the last adoption), the second rotation under way with kma1's
/// certificate, and the failure windows of co (two failures) and
/// drive1 (one), bo's cleared by its login. (SPEC C7, S1, S2, S4, S5, O9, A3; issue 16)
#[test]
fn c7_golden_log_v3_replays_to_its_golden_snapshot() {
    let log: Vec<Vec<u8>> = sample_cluster_v3().log.iter().map(encode_envelope).collect();
    let refs: Vec<&[u8]> = log.iter().map(Vec::as_slice).collect();
    let (state, events) = replay(&refs);
    bless("log-v3.bin", &frame(&log));
    bless("snapshot-v4-log-v3.bin", &encode_snapshot(&state));
    bless("audit-v3.bin", &events);

    let log = read_golden("log-v3.bin");
    let entries = unframe(&log);
    let of_format_3 = entries.iter().filter(|entry| entry[0] == 3).count();
    assert_eq!(
        of_format_3,
        11 + 14 + 7 + 7,
        "2 previewed destroys, 2 KMA reports, 2 grants, 2 sessions, 3 CA key records; 3 CA \
         rotations started (one refused), 3 beginnings, 7 reissued certificates, 1 completion; \
         7 adoptions (kma1 twice, kma2's through kma1's node, then kma1 to kma5); 3 database \
         backup records (a user's and one through kma2's node refused), 3 core security \
         backup records (one of the old quorum refused), 1 restore drill"
    );
    let (state, events) = replay(&entries);
    assert_eq!(state.cluster_format_version(), 3);
    let snapshot = read_golden("snapshot-v4-log-v3.bin");
    assert_eq!(snapshot[0], 4, "a snapshot of format 4");
    assert!(encode_snapshot(&state) == snapshot, "the log replays to snapshot-v4-log-v3.bin");
    assert!(decode_snapshot(&snapshot).expect("format 4 is read") == state);
    assert!(events == read_golden("audit-v3.bin"), "the audit events keep their encoding");
    let kmas = &state.meta().kmas;
    let certificates: Vec<(&str, Option<[u8; 32]>)> =
        kmas.values().map(|kma| (kma.name.as_str(), kma.certificate_sha256)).collect();
    let reissued = |node_id| Some(reissued_certificate(node_id));
    assert_eq!(
        certificates,
        [
            ("kma1", reissued(1)),
            ("kma2", reissued(2)),
            ("kma3", reissued(3)),
            ("kma5", reissued(4))
        ]
    );
    assert!(!state.user_session_certified("co", &[0xd2; 32]), "ended by the rotation");
    assert!(!state.user_session_certified("op", &[0xd1; 32]), "revoked by the new passphrase");
    let ca_key = state.wrapped_ca_key().expect("recorded");
    let rotated = ca_certificate_der(0xcc);
    assert_eq!(
        (ca_key.ca_certificate_sha256, &ca_key.wrapped_key[..]),
        (sha256(&rotated), &[0x33; 96][..])
    );
    assert_eq!(state.ca_certificate_der(), Some(&rotated[..]));
    assert_eq!(state.retiring_ca(), None, "the first CA retired");
    let retired = AuditWhat::CaRetired { ca_certificate_sha256: Fingerprint([0xca; 32]) };
    let retired = postcard::to_allocvec(&retired).expect("encodes");
    assert_eq!(events.windows(retired.len()).filter(|w| *w == &retired[..]).count(), 1);
    let rotation = state.ca_rotation().expect("the second rotation");
    let new_ca = rotation.new_ca.as_ref().expect("begun");
    assert_eq!(new_ca.ca_key.ca_certificate_sha256, sha256(&ca_certificate_der(0xcd)));
    assert_eq!(rotation.reissued.iter().collect::<Vec<_>>(), [(&"kma1".to_string(), &[0xf1; 32])]);
    let at_ms = state.meta().time_ms_last;
    let windows: Vec<(&str, FailureWindow)> =
        state.meta().login_failures.iter().map(|(p, window)| (p.as_str(), *window)).collect();
    assert_eq!(
        windows,
        [
            ("agent:drive1", FailureWindow { since_ms: at_ms, count: 1 }),
            ("co", FailureWindow { since_ms: at_ms, count: 2 }),
        ]
    );
}

/// A version byte this software does not know is refused with an upgrade hint, not misread;
/// an entry whose command is newer than its version byte is corrupt.
#[test]
fn unknown_format_versions_are_refused() {
    let log = read_golden("log-v1.bin");
    let mut entry = unframe(&log)[0].to_vec();
    entry[0] = 4;
    let error = decode_envelope(&entry).expect_err("version 4 is unknown");
    assert_eq!(
        error.to_string(),
        "log entry has format version 4; this software reads versions 1 to 3: upgrade the KMA \
         software"
    );
    entry[0] = 0;
    decode_envelope(&entry).expect_err("version 0 is no format");
    let log = read_golden("log-v2.bin");
    let mut full_report = unframe(&log).into_iter().find(|e| e[0] == 2).expect("one").to_vec();
    full_report[0] = 1;
    let error = decode_envelope(&full_report).expect_err("a format-2 command in a v1 entry");
    assert_eq!(error.to_string(), "corrupt log entry: a command of log format 2 in an entry of 1");
    let mut snapshot = read_golden("snapshot-v3.bin");
    snapshot[0] = 5;
    let newer = decode_snapshot(&snapshot).expect_err("version 5 is unknown");
    assert_eq!(
        newer.to_string(),
        "snapshot has format version 5; this software reads versions 1 to 4: upgrade the KMA \
         software"
    );
    snapshot[0] = 3;
    snapshot.truncate(snapshot.len() - 3);
    let truncated = decode_snapshot(&snapshot).expect_err("truncated");
    assert_eq!(truncated.to_string(), "corrupt snapshot: truncated: no trailer");
}

/// One envelope per command variant of format 1 (a quorum operation per kind).
fn sample_commands() -> Vec<Envelope> {
    let (mut cluster, fixture) = prepared();
    let commands = samples(&mut cluster, &fixture);
    commands
        .into_iter()
        .filter(|command| command.format_needed() == 1)
        .enumerate()
        .map(|(n, command)| Envelope {
            time_ms: START_MS + n as u64,
            origin_node_id: 1 + n as u64 % 3,
            actor: Actor::System,
            request_id: (n % 2 == 0)
                .then_some(statemachine::RequestId { client: 7, seq: n as u64 }),
            command,
        })
        .collect()
}

/// Setup: the checked-in encoding of one command of every kind of log format 1, pinned before
/// the version gate (issue 15) added a command. Action: decode each entry. Expect: every entry
/// decodes and re-encodes to its bytes, and together they cover every command kind, so a
/// reordered or changed variant of format 1 fails here. (SPEC C7, "Serialization")
#[test]
fn c7_golden_commands_v1_decode_unchanged() {
    if std::env::var_os("BLESS").is_some() && !golden("commands-v1.bin").exists() {
        let entries: Vec<Vec<u8>> = sample_commands().iter().map(encode_envelope).collect();
        std::fs::write(golden("commands-v1.bin"), frame(&entries)).expect("write commands");
    }
    let bytes = read_golden("commands-v1.bin");
    let mut kinds = std::collections::BTreeSet::new();
    for (position, entry) in unframe(&bytes).into_iter().enumerate() {
        assert_eq!(entry[0], 1, "entry {position} is of format 1");
        let envelope = decode_envelope(entry).expect("a format 1 entry decodes");
        assert_eq!(encode_envelope(&envelope), entry, "entry {position} re-encodes unchanged");
        kinds.insert(envelope.command.kind());
    }
    // The kinds that log format 3 added have no command of format 1.
    use statemachine::CommandKind as K;
    let added = [
        K::GrantKmaJoin,
        K::RecordKmaCertificate,
        K::RecordCaKey,
        K::RecordMemberUnlock,
        K::StartRotateCa,
        K::BeginCaRotation,
        K::RecordReissuedKmaCertificate,
        K::CompleteCaRotation,
        K::RecordCaAdopted,
        K::RecordBackupDrill,
        K::RestoreCluster,
        K::RecoverFromLostMajority,
        K::SetTransferPartnerEnabled,
        K::CreateKmipKey,
        K::RegisterKmipKey,
        K::ActivateKmipKey,
        K::SetKmipAttributes,
        K::RevokeKmipKey,
        K::DestroyKmipKey,
        K::SetAgentKmipRights,
        K::RecordKmipReads,
    ];
    let all: std::collections::BTreeSet<_> =
        K::ALL.into_iter().filter(|kind| !added.contains(kind)).collect();
    assert_eq!(kinds, all, "one entry of every command kind of format 1");
}
