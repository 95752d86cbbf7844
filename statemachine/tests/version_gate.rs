//! The cluster version gate, state side (SPEC C7): what each KMA reports, the format the
//! cluster reads, and commands of a newer format held back until every KMA reads it.

mod support;

use statemachine::codec::encode_envelope;
use statemachine::format::{LOG_FORMAT_MAX, SNAPSHOT_FORMAT_BASELINE};
use statemachine::quorum::QuorumOperation;
use statemachine::{Actor, Command, Formats, KmaVersion, Reject, RejectClass, SoftwareVersion};
use support::*;

fn version(log: u16) -> KmaVersion {
    let software = SoftwareVersion { major: 0, minor: 2, patch: 0 };
    KmaVersion { software, formats: Formats { log, snapshot: 3 } }
}

fn full_report(kma: &str, log: u16) -> Command {
    Command::ReportKmaVersion { kma: kma.into(), version: version(log) }
}

/// Setup: one command of every kind, and the full version report. Action: ask each the log
/// format it needs. Expect: 1 for all but the full report, which needs 2, and the destroy by key
/// ID with its preview, the certificate records (user sessions, join grants, a KMA's own
/// certificate), the cluster CA's wrapped key, a member unlock, and the CA rotation (its quorum
/// operation, though started by a command of format 1, its three steps and the adoptions of
/// its new CA), and the backup records, restore drills and ceremonies of issue 17, which need
/// 3; an entry's version byte is that format, so older KMAs read every
/// entry the gate lets in. (SPEC C7, S4)
#[test]
fn c7_every_command_but_those_of_formats_2_and_3_needs_format_1() {
    let (mut cluster, fixture) = prepared();
    for command in samples(&mut cluster, &fixture) {
        let needed = match command {
            Command::DestroyKeysPreviewed { .. }
            | Command::RecordUserSession { .. }
            | Command::GrantKmaJoin { .. }
            | Command::RecordKmaCertificate { .. }
            | Command::RecordCaKey { .. }
            | Command::RecordMemberUnlock { .. }
            | Command::StartQuorumOperation { operation: QuorumOperation::RotateCa, .. }
            | Command::BeginCaRotation { .. }
            | Command::RecordReissuedKmaCertificate { .. }
            | Command::CompleteCaRotation
            | Command::RecordCaAdopted { .. }
            | Command::RecordBackup { .. }
            | Command::RecordBackupDrill { .. }
            | Command::RestoreCluster(_)
            | Command::RecoverFromLostMajority { .. }
            | Command::StageImport1x { .. }
            | Command::CommitImport1x { .. }
            | Command::AbandonImport1x { .. }
            | Command::SetTransferPartnerEnabled { .. }
            | Command::RecordTransferExport(_)
            | Command::ImportTransferFile(_)
            | Command::CreateKmipKey { .. }
            | Command::RegisterKmipKey { .. }
            | Command::ActivateKmipKey { .. }
            | Command::SetKmipAttributes { .. }
            | Command::RevokeKmipKey { .. }
            | Command::DestroyKmipKey { .. }
            | Command::SetAgentKmipRights { .. }
            | Command::RecordKmipReads { .. } => 3,
            _ => 1,
        };
        assert_eq!(command.format_needed(), needed, "{:?}", command.kind());
        assert_eq!(encode_envelope(&cluster.envelope(Actor::System, command))[0], needed as u8);
    }
    let full = full_report("kma1", 2);
    assert_eq!((full.format_needed(), LOG_FORMAT_MAX), (2, 3));
    assert_eq!(encode_envelope(&cluster.envelope(Actor::System, full))[0], 2);
}

/// Setup: the prepared cluster: kma1 and kma2 members, kma5 approved to join, kma3 created
/// only; nobody reported. Action: report format 2 for each in turn. Expect: format 1 until the
/// last KMA that applies the log reports; kma3, not yet applying it, does not count; its join
/// brings the cluster back to format 1 until it reports. (SPEC C7)
#[test]
fn c7_the_cluster_reads_the_lowest_format_of_its_members_and_approved_joiners() {
    let (mut cluster, _) = prepared();
    assert_eq!(cluster.state.cluster_formats(), Formats::BASELINE);
    assert_eq!(Formats::BASELINE, Formats { log: 1, snapshot: SNAPSHOT_FORMAT_BASELINE });
    cluster.report_log_format(&["kma1", "kma2"], 2);
    assert_eq!(cluster.state.cluster_format_version(), 1, "kma5, approved to join, never reported");
    cluster.report_log_format(&["kma5"], 2);
    assert_eq!(cluster.state.cluster_format_version(), 2, "kma3 does not apply the log yet");
    let join = statemachine::quorum::QuorumOperation::JoinKma { kma: "kma3".into() };
    let pending = cluster.state.meta().quorum_operations.values().find(|op| op.operation == join);
    let id = pending.expect("the pending join of kma3").id;
    for member in ["q1", "q2"] {
        cluster.ok(so(), Command::ApproveQuorumOperation { id, member: member.into() });
    }
    assert_eq!(cluster.state.cluster_format_version(), 1, "kma3 joins and never reported");
}

/// Setup: a cluster in which one KMA (kma2) reports an older software, of log format 1.
/// Action: propose the full version report, of format 2. Expect: refused, retryably, naming
/// the format needed and the cluster's, on every KMA alike; once kma2 reports format 2 the
/// same report is applied. (SPEC C7: "available once every KMA runs version N")
#[test]
fn c7_one_kma_of_an_older_version_holds_format_2_back() {
    let (mut cluster, _) = prepared();
    cluster.report_log_format(&["kma1", "kma5"], 2);
    cluster.report_log_format(&["kma2"], 1);
    let refused = cluster.apply_from(1, Actor::System, full_report("kma1", 2)).expect_err("gate");
    let expected = Reject::FormatNotYetAvailable {
        kind: statemachine::CommandKind::ReportSoftwareVersion,
        format_needed: 2,
        cluster_format: 1,
    };
    assert_eq!(refused, expected);
    assert_eq!(cluster.state.check_format(&full_report("kma1", 2)), Err(expected.clone()));
    assert!(refused.is_retryable() && refused.class() == RejectClass::Unavailable);
    assert!(refused.to_string().contains("available once every KMA runs software of format 2"));
    cluster.report_log_format(&["kma2"], 2);
    cluster.apply_from(1, Actor::System, full_report("kma1", 2)).expect("the gate is open");
    assert_eq!(cluster.state.meta().kmas["kma1"].version, Some(version(2)));
}

/// Setup: kma1 starts in a cluster whose other KMAs never reported. Action: ask the state how
/// kma1 reports, apply that, and ask again as the others report. Expect: the format-1 report
/// first (old KMAs decode it), then nothing while the cluster is below 2, then the full report
/// once it is, then nothing: the report itself never needs a format the cluster lacks. (C7)
#[test]
fn c7_a_kma_reports_in_format_1_until_the_cluster_reads_format_2() {
    let (mut cluster, _) = prepared();
    let mine = version(2);
    let first = cluster.state.version_report("kma1", &mine).expect("a report");
    assert_eq!(first, Command::ReportSoftwareVersion { kma: "kma1".into(), version: 2 });
    cluster.apply_from(1, Actor::System, first).expect("format 1 is applied everywhere");
    assert_eq!(cluster.state.version_report("kma1", &mine), None, "reported already");
    cluster.report_log_format(&["kma2", "kma5"], 2);
    let full = cluster.state.version_report("kma1", &mine).expect("now in full");
    assert_eq!(full, full_report("kma1", 2));
    cluster.apply_from(1, Actor::System, full).expect("the full report");
    assert_eq!(cluster.state.version_report("kma1", &mine), None, "recorded");
    assert_eq!(cluster.state.version_report("nowhere", &mine), None, "no such KMA");
    let upgraded =
        KmaVersion { software: SoftwareVersion { major: 0, minor: 3, patch: 0 }, ..mine };
    assert!(cluster.state.version_report("kma1", &upgraded).is_some(), "a new release reports");
}

/// Setup: every KMA reads format 2. Action: kma2's full report comes through node 1, then
/// through node 2. Expect: refused the first time, since a KMA reports its own version only
/// (the gate trusts the report); applied the second. (SPEC C7, trust model)
#[test]
fn c7_a_kma_reports_only_its_own_version() {
    let (mut cluster, _) = prepared();
    cluster.report_log_format(&["kma1", "kma2", "kma5"], 2);
    let refused = cluster.apply_from(1, Actor::System, full_report("kma2", 2));
    let expected =
        Reject::VersionReportFromAnotherKma { kma: "kma2".into(), node_id: 2, origin_node_id: 1 };
    assert_eq!(refused, Err(expected));
    cluster.apply_from(2, Actor::System, full_report("kma2", 2)).expect("its own report");
    let by_user = cluster.apply_from(2, so(), full_report("kma2", 2)).expect_err("a user");
    assert!(matches!(by_user, Reject::WrongIssuer { .. }), "{by_user:?}");
}

/// Setup: every KMA reads format 2. Action: a full report claiming log format 1, then one
/// claiming snapshot format 0; then a full report followed by a format-1 report. Expect: the
/// first two are invalid (a full report is itself of format 2); the format-1 report replaces
/// the full one, which no longer describes the software. (SPEC C7)
#[test]
fn c7_a_full_report_claims_format_2_and_a_format_1_report_replaces_it() {
    let (mut cluster, _) = prepared();
    cluster.report_log_format(&["kma1", "kma2", "kma5"], 2);
    let low = cluster.apply_from(1, Actor::System, full_report("kma1", 1)).expect_err("log 1");
    assert!(matches!(low, Reject::InvalidSetting { .. }), "{low:?}");
    let mut no_snapshot = version(2);
    no_snapshot.formats.snapshot = 0;
    let report = Command::ReportKmaVersion { kma: "kma1".into(), version: no_snapshot };
    let zero = cluster.apply_from(1, Actor::System, report).expect_err("snapshot 0");
    assert!(matches!(zero, Reject::InvalidSetting { .. }), "{zero:?}");
    cluster.apply_from(1, Actor::System, full_report("kma1", 2)).expect("full report");
    assert_eq!(cluster.state.meta().kmas["kma1"].formats(), version(2).formats);
    cluster.report_log_format(&["kma1"], 2);
    let kma1 = &cluster.state.meta().kmas["kma1"];
    assert_eq!((kma1.version, kma1.software_version), (None, 2));
    assert_eq!(kma1.formats(), Formats { log: 2, snapshot: SNAPSHOT_FORMAT_BASELINE });
}

/// `CARGO_PKG_VERSION`-style versions are read; anything else is not a version.
#[test]
fn c7_software_versions_read_as_cargo_writes_them() {
    let parsed = SoftwareVersion::parse("0.3.1-dev+abc").expect("a version");
    assert_eq!(parsed, SoftwareVersion { major: 0, minor: 3, patch: 1 });
    assert_eq!(parsed.to_string(), "0.3.1");
    for bad in ["", "1.2", "1.2.3.4", "a.b.c", "1.2.70000"] {
        assert_eq!(SoftwareVersion::parse(bad), None, "{bad:?}");
    }
}
