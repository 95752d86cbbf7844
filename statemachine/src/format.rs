//! The cluster version gate (SPEC C7): which formats each KMA reads, which the cluster as a whole
//! reads, and which format each command needs. Old KMAs never meet an entry they cannot apply.
//!
//! A *log format* covers everything the bytes of a log entry mean to `apply`: the envelope
//! layout, the command variants (postcard encodes a variant by its position, so new ones are
//! appended) and the rule each one applies. Format 1 is everything before issue 15. Format 2:
//! - adds `Command::ReportKmaVersion`, the full version report;
//! - stops counting the approvals of members who left the quorum (`State::quorum_approvers`).
//!
//! Format 3 (issue 16, the trust model):
//! - adds `Command::DestroyKeysPreviewed`, a destroy by key ID that carries its preview digest;
//! - makes the commands that carry what only a KMA makes (backup records, transfer key pairs,
//!   export records, wrapped imports) KMA-only (`CommandKind::issuer_before_format_3`);
//! - refuses an agent that takes keys of a key group it cannot access out of use on a data unit;
//! - drops, when a quorum change applies, the approvals of the members it removes;
//! - records what some commands changed in the audit log (`AuditWhat::UserRolesSet` and the
//!   events after it).
//! - binds certificates to the state (issue 16 point 2): `Command::RecordUserSession` records a
//!   user's session certificate, `Command::GrantKmaJoin` and `Command::RecordKmaCertificate` a
//!   KMA's; disabling or deleting a user, or a new passphrase, drops its sessions.
//! - keeps no clear CA key at rest (issue 16 point 1): `Command::RecordCaKey` records the
//!   cluster CA's key, wrapped under the master key, once.
//! - audits an unlock by quorum members' passphrases alone (issue 16 point 5):
//!   `Command::RecordMemberUnlock`.
//! - counts the failed proofs of users and agents in the state (issue 16 point 5):
//!   `Command::RecordAuthenticationFailure` adds to the principal's window in
//!   `Meta::login_failures`, which every KMA reads (`State::login_throttled`).
//! - rotates the cluster CA (issue 16 point 1): `QuorumOperation::RotateCa` (its start needs
//!   format 3, though `Command::StartQuorumOperation` is of format 1), then
//!   `Command::BeginCaRotation`, `Command::RecordReissuedKmaCertificate` and
//!   `Command::CompleteCaRotation`, and `Command::RecordCaAdopted` until the old CA is retired;
//!   no KMA joins while a rotation is under way or its old CA is not retired yet.
//! - backups, restore and disaster recovery (issue 17): `Command::RecordBackup` carries who
//!   asked, the file's size and digests and its UUID, and comes through the node of the KMA
//!   it names (the format-1 record, `Command::RecordBackupBeforeFormat3`, applies the same
//!   rules); a core security backup must hold the current quorum (`Meta::quorum_changed_index`,
//!   set and audited by each quorum change from format 3 on); `Command::RecordBackupDrill`
//!   records a restore drill; starting `QuorumOperation::RestoreFromBackup` is refused
//!   (`Reject::RestoreIsALocalCeremony`). `Command::RestoreCluster` and
//!   `Command::RecoverFromLostMajority` are local ceremonies, never in a log: see
//!   [`Command::is_local_ceremony`].
//!
//! The rules, all pure functions of the state so that every KMA decides alike:
//! 1. A command is proposed, and applied, only once every KMA that applies the log reports a
//!    log format of at least [`Command::format_needed`]: the members and the KMAs whose join was
//!    approved (learners replay the log too). A KMA that never reported counts as format 1.
//!    `apply` checks it again (`Reject::FormatNotYetAvailable`, retryable), so a proposal that
//!    raced a join is refused alike on every KMA instead of reaching an entry nobody proposed.
//! 2. A rule of format N applies only while the cluster is at format N or above: an old KMA
//!    applies the same log to the same state, byte for byte in the fields it knows.
//! 3. Reporting must work in a cluster of old KMAs, which cannot decode `ReportKmaVersion`. So a
//!    starting KMA reports with the format-1 `Command::ReportSoftwareVersion` (its log format
//!    alone: every KMA ever released decodes and applies it) while the cluster is below format 2,
//!    and in full once the cluster is at 2. [`State::version_report`] picks the command; once
//!    the last old KMA has reported (or left), the next call returns the full report. Who may
//!    report: the KMA software (`Actor::System`), and for the full report only the KMA named,
//!    through its own node (`origin_node_id`): the gate trusts reports. The format-1 report
//!    cannot gain that check (every KMA must apply it alike), so a member KMA could misreport
//!    with it, as it could write any entry while leader: members are trusted as Raft requires.
//! 4. Formats only go forward in the log: once a format-N entry is committed, a KMA that cannot
//!    decode format N cannot replay it. A KMA joins only with software at least as new as the
//!    cluster's format; the gate closing again (an older KMA joined) only stops new proposals.
//! 5. Snapshots are written in the newest snapshot format and read in every older one
//!    (`codec`). A KMA that must install a snapshot of a newer format refuses it with "upgrade
//!    the KMA software", never misreads it, and catches up once upgraded.
//! 6. Log entries are written at the format their command needs (`codec::encode_envelope`), so
//!    older KMAs read every entry the gate lets in.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::cluster::{Kma, KmaStatus};
use crate::codec::SNAPSHOT_FORMAT_VERSION;
use crate::command::Command;
use crate::quorum::QuorumOperation;
use crate::reject::Reject;
use crate::state::State;

/// The log format of every KMA before version reports existed, and of one that never reported.
pub const LOG_FORMAT_BASELINE: u16 = 1;
/// Log format 2: the full version report, and approvals that count only current members.
pub const LOG_FORMAT_2: u16 = 2;
/// Log format 3: the rules of the trust model (issue 16; see the module doc).
pub const LOG_FORMAT_3: u16 = 3;
/// The newest log format this software decodes, applies and may write.
pub const LOG_FORMAT_MAX: u16 = LOG_FORMAT_3;
/// The snapshot format of a KMA that never reported: what the software before issue 15 read.
pub const SNAPSHOT_FORMAT_BASELINE: u16 = 2;

// The envelope's version byte carries the log format.
const _: () = assert!(LOG_FORMAT_MAX <= u8::MAX as u16);

/// A KMA software release.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct SoftwareVersion {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
}

impl SoftwareVersion {
    /// Reads `major.minor.patch`, ignoring a pre-release or build suffix (`0.3.1-dev`), as in
    /// `CARGO_PKG_VERSION`. `None` when it is not three numbers.
    pub fn parse(text: &str) -> Option<SoftwareVersion> {
        let core = text.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(str::parse::<u16>);
        let version = SoftwareVersion {
            major: parts.next()?.ok()?,
            minor: parts.next()?.ok()?,
            patch: parts.next()?.ok()?,
        };
        parts.next().is_none().then_some(version)
    }
}

impl fmt::Display for SoftwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Format versions: the newest a KMA reads, or the newest every KMA of the cluster reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Formats {
    /// Log entries: envelope layout, command variants and their rules (see the module doc).
    pub log: u16,
    /// Snapshots (`codec::SNAPSHOT_FORMAT_VERSION`).
    pub snapshot: u16,
}

impl Formats {
    /// What a KMA that never reported is taken to read.
    pub const BASELINE: Formats =
        Formats { log: LOG_FORMAT_BASELINE, snapshot: SNAPSHOT_FORMAT_BASELINE };
    /// What this software reads.
    pub const CURRENT: Formats =
        Formats { log: LOG_FORMAT_MAX, snapshot: SNAPSHOT_FORMAT_VERSION as u16 };

    fn min(self, other: Formats) -> Formats {
        Formats { log: self.log.min(other.log), snapshot: self.snapshot.min(other.snapshot) }
    }
}

/// What a KMA reports when it starts: its release and the newest formats it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KmaVersion {
    pub software: SoftwareVersion,
    pub formats: Formats,
}

impl Kma {
    /// The formats this KMA reads, by its latest report: the full one, or the log format alone
    /// (a format-1 report), or the baseline when it never reported.
    pub fn formats(&self) -> Formats {
        if let Some(version) = self.version {
            return version.formats;
        }
        let log = u16::try_from(self.software_version).unwrap_or(u16::MAX);
        Formats { log: log.max(LOG_FORMAT_BASELINE), snapshot: SNAPSHOT_FORMAT_BASELINE }
    }

    /// Whether this KMA applies the log: a member, or a learner whose join was approved.
    pub fn applies_the_log(&self) -> bool {
        matches!(self.status, KmaStatus::Member | KmaStatus::JoinApproved)
    }
}

impl State {
    /// The newest formats every KMA that applies the log reads (the minimum of each); the
    /// baseline before any KMA exists.
    pub fn cluster_formats(&self) -> Formats {
        let kmas = self.meta.kmas.values().filter(|kma| kma.applies_the_log());
        kmas.map(Kma::formats).reduce(Formats::min).unwrap_or(Formats::BASELINE)
    }

    /// The newest log format every KMA that applies the log reads: the gate of rule 1.
    pub fn cluster_format_version(&self) -> u16 {
        self.cluster_formats().log
    }

    /// Whether the rules of log format `format` apply (rule 2): every KMA that applies the log
    /// reads it, so every one of them applies them alike.
    pub fn format_rules_apply(&self, format: u16) -> bool {
        format <= LOG_FORMAT_BASELINE || self.cluster_format_version() >= format
    }

    /// Whether `command` may enter the log now (rule 1): the write path asks before proposing,
    /// `apply` again before executing.
    pub fn check_format(&self, command: &Command) -> Result<(), Reject> {
        let format_needed = command.format_needed();
        if format_needed <= LOG_FORMAT_BASELINE || command.is_local_ceremony() {
            // Every KMA reads the baseline: no need to look at them on the hot path.
            return Ok(());
        }
        let cluster_format = self.cluster_format_version();
        if format_needed > cluster_format {
            return Err(Reject::FormatNotYetAvailable {
                kind: command.kind(),
                format_needed,
                cluster_format,
            });
        }
        Ok(())
    }

    /// The command by which KMA `kma` reports `version` now (rule 3), or `None` when the state
    /// already holds that report or has no such KMA. Ask again after each applied report: the
    /// format-1 report of the last old KMA opens format 2, and the full report follows.
    pub fn version_report(&self, kma: &str, version: &KmaVersion) -> Option<Command> {
        let record = self.meta.kmas.get(kma)?;
        let full = Command::ReportKmaVersion { kma: kma.into(), version: *version };
        // A KMA that reads only format 1 (an older release, or one held back on purpose) says
        // so in the format-1 report: the full report is itself of format 2.
        if version.formats.log >= LOG_FORMAT_2 && self.check_format(&full).is_ok() {
            return (record.version != Some(*version)).then_some(full);
        }
        let log_format = u32::from(version.formats.log);
        let reported = record.version.is_none() && record.software_version == log_format;
        (!reported).then(|| Command::ReportSoftwareVersion { kma: kma.into(), version: log_format })
    }
}

impl State {
    /// The backup record to propose for `record` (a [`Command::RecordBackup`]): itself once the
    /// cluster is at log format 3, else the format-1 record with the fields that format knows,
    /// which KMAs of older software decode. Any other command is returned unchanged.
    pub fn backup_record_to_propose(&self, record: Command) -> Command {
        if self.check_format(&record).is_ok() {
            return record;
        }
        match record {
            Command::RecordBackup { kind, kma, file_name, covers_index, .. } => {
                Command::RecordBackupBeforeFormat3 { kind, kma, file_name, covers_index }
            }
            other => other,
        }
    }
}

impl Command {
    /// Whether this command is a ceremony a KMA applies to its own state, never proposed
    /// through Raft: a restore (SPEC B3) and the recovery from a lost majority (SPEC B7). The
    /// format gate does not hold them back: the KMAs whose formats it would look at are the
    /// ones the ceremony removes, and the KMA applying it runs software that reads it.
    pub const fn is_local_ceremony(&self) -> bool {
        matches!(self, Command::RestoreCluster(_) | Command::RecoverFromLostMajority { .. })
    }

    /// The log format a KMA must read to decode and apply this command (see the module doc).
    /// Every variant is listed: a new one must say which format it needs.
    #[allow(clippy::too_many_lines)] // One arm per variant: a table reads best whole.
    pub const fn format_needed(&self) -> u16 {
        use Command as C;
        match self {
            // A quorum operation of format 3 (issue 16 point 1), started by a command of
            // format 1: listed before that command's arm, which holds every other operation.
            C::StartQuorumOperation { operation: QuorumOperation::RotateCa, .. } => LOG_FORMAT_3,
            C::InitCluster(_)
            | C::CreateSite { .. }
            | C::DeleteSite { .. }
            | C::CreateKma { .. }
            | C::KmaJoined { .. }
            | C::DeleteKma { .. }
            | C::LockKma { .. }
            | C::DisableAutonomousUnlock { .. }
            | C::ReportSoftwareVersion { .. }
            | C::RecordCommunicationError { .. }
            | C::SetSecuritySettings(_)
            | C::SetKeyPoolLimits(_)
            | C::CreateUser { .. }
            | C::SetUserRoles { .. }
            | C::SetUserEnabled { .. }
            | C::SetUserPassphrase { .. }
            | C::DeleteUser { .. }
            | C::RecordAuthenticationFailure { .. }
            | C::StartQuorumOperation { .. }
            | C::ApproveQuorumOperation { .. }
            | C::CancelQuorumOperation { .. }
            | C::CreateKeyPolicy { .. }
            | C::SetKeyPolicyFlags { .. }
            | C::DeleteKeyPolicy { .. }
            | C::CreateKeyGroup { .. }
            | C::DeleteKeyGroup { .. }
            | C::CreateAgent { .. }
            | C::SetAgentPassphrase { .. }
            | C::SetAgentEnabled { .. }
            | C::SetAgentSite { .. }
            | C::DeleteAgent { .. }
            | C::RecordAgentEnrollment { .. }
            | C::AssignKeyGroupToAgent { .. }
            | C::UnassignKeyGroupFromAgent { .. }
            | C::SetAgentDefaultKeyGroup { .. }
            | C::GeneratePoolKeys { .. }
            | C::QuarantineKeyPool
            | C::Pulse
            | C::CreateDataUnit { .. }
            | C::AssignWriteKey { .. }
            | C::DisassociateKeysOnBot { .. }
            | C::AssociateKeyForRead { .. }
            | C::CompromiseKeys { .. }
            | C::DestroyKeys { .. }
            | C::DestroyDataUnitKeys { .. }
            | C::ChangeDataUnitKeyGroup { .. }
            | C::SetTransferKeyPair { .. }
            | C::DeleteTransferPartner { .. }
            | C::AssignKeyGroupToPartner { .. }
            | C::UnassignKeyGroupFromPartner { .. }
            | C::RecordKeyExport { .. }
            | C::ImportTransferredKeys { .. }
            | C::Import1xKeys { .. }
            | C::RecordBackupBeforeFormat3 { .. }
            | C::MarkBackupDestroyed { .. }
            | C::SetBackupSchedule { .. }
            | C::RecordLogin { .. } => LOG_FORMAT_BASELINE,
            C::ReportKmaVersion { .. } => LOG_FORMAT_2,
            C::DestroyKeysPreviewed { .. }
            | C::RecordUserSession { .. }
            | C::GrantKmaJoin { .. }
            | C::RecordKmaCertificate { .. }
            | C::RecordCaKey { .. }
            | C::RecordMemberUnlock { .. }
            | C::BeginCaRotation { .. }
            | C::RecordReissuedKmaCertificate { .. }
            | C::CompleteCaRotation
            | C::RecordCaAdopted { .. }
            | C::RecordBackup { .. }
            | C::RecordBackupDrill { .. }
            | C::RestoreCluster(_)
            | C::RecoverFromLostMajority { .. }
            | C::StageImport1x { .. }
            | C::CommitImport1x { .. }
            | C::AbandonImport1x { .. }
            | C::SetTransferPartnerEnabled { .. }
            | C::RecordTransferExport(_)
            | C::ImportTransferFile(_)
            | C::CreateKmipKey { .. }
            | C::RegisterKmipKey { .. }
            | C::ActivateKmipKey { .. }
            | C::SetKmipAttributes { .. }
            | C::RevokeKmipKey { .. }
            | C::DestroyKmipKey { .. }
            | C::SetAgentKmipRights { .. }
            | C::RecordKmipReads { .. } => LOG_FORMAT_3,
        }
    }
}
