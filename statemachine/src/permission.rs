//! The access table (SPEC S1): for every kind of command, who may issue it, and for every read
//! of the state and every action outside the log, who may do it. [`crate::State::check_access`]
//! applies it whole (the actor exists, may act, holds an allowed role); `apply` authorizes each
//! command through it, and the shells (admin API, node endpoints, agent gateway) ask it before
//! a read, so that each rule is written once, here.
//!
//! `CommandKind`, `Read` and `Access` are persisted (audit events, rejections), so variants are
//! only ever appended.

use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::quorum::QuorumOperation;
use crate::role::{Role, RoleSet};

/// One kind per command variant; starting a quorum operation has one kind per operation, since
/// the roles that may start them differ. The version report has two variants, of log formats 1
/// and 2 (see [`crate::format`]), and one kind: the same intent, by the same issuer. So do the
/// destroy by key ID with and without its preview, the login with and without its session
/// certificate (`RecordLogin`, `RecordUserSession`), the backup record of formats 1 and 3
/// (`RecordBackupBeforeFormat3`, `RecordBackup`), and the 1.x import in one command and in
/// batches (`Import1xKeys`, `StageImport1x`, `CommitImport1x`, `AbandonImport1x`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CommandKind {
    InitCluster,
    CreateSite,
    DeleteSite,
    CreateKma,
    KmaJoined,
    DeleteKma,
    LockKma,
    DisableAutonomousUnlock,
    ReportSoftwareVersion,
    RecordCommunicationError,
    SetSecuritySettings,
    SetKeyPoolLimits,
    CreateUser,
    SetUserRoles,
    SetUserEnabled,
    SetUserPassphrase,
    DeleteUser,
    RecordAuthenticationFailure,
    StartJoinKma,
    StartUnlockKma,
    StartEnableAutonomousUnlock,
    StartChangeQuorum,
    StartCreateTransferPartner,
    StartRestoreFromBackup,
    ApproveQuorumOperation,
    CancelQuorumOperation,
    CreateKeyPolicy,
    SetKeyPolicyFlags,
    DeleteKeyPolicy,
    CreateKeyGroup,
    DeleteKeyGroup,
    CreateAgent,
    SetAgentPassphrase,
    SetAgentEnabled,
    SetAgentSite,
    DeleteAgent,
    RecordAgentEnrollment,
    AssignKeyGroupToAgent,
    UnassignKeyGroupFromAgent,
    SetAgentDefaultKeyGroup,
    GeneratePoolKeys,
    QuarantineKeyPool,
    Pulse,
    CreateDataUnit,
    AssignWriteKey,
    DisassociateKeysOnBot,
    AssociateKeyForRead,
    CompromiseKeys,
    DestroyKeys,
    DestroyDataUnitKeys,
    ChangeDataUnitKeyGroup,
    SetTransferKeyPair,
    DeleteTransferPartner,
    AssignKeyGroupToPartner,
    UnassignKeyGroupFromPartner,
    RecordKeyExport,
    ImportTransferredKeys,
    Import1xKeys,
    RecordBackup,
    MarkBackupDestroyed,
    SetBackupSchedule,
    RecordLogin,
    // Issue 16 point 2 (log format 3).
    GrantKmaJoin,
    RecordKmaCertificate,
    // Issue 16 point 1 (log format 3).
    RecordCaKey,
    // Issue 16 point 5 (log format 3).
    RecordMemberUnlock,
    // Issue 16 point 1, CA rotation (log format 3).
    StartRotateCa,
    BeginCaRotation,
    RecordReissuedKmaCertificate,
    CompleteCaRotation,
    RecordCaAdopted,
    // Issue 17: restore drills and the local ceremonies of restore and recovery (log format 3).
    RecordBackupDrill,
    RestoreCluster,
    RecoverFromLostMajority,
    SetTransferPartnerEnabled,
    // Issue 19: KMIP clients (log format 3).
    CreateKmipKey,
    RegisterKmipKey,
    ActivateKmipKey,
    SetKmipAttributes,
    RevokeKmipKey,
    DestroyKmipKey,
    SetAgentKmipRights,
    RecordKmipReads,
}

/// Who may issue a kind of command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Issuer {
    /// A user holding at least one of these roles.
    Users(RoleSet),
    /// An enrolled, enabled agent.
    Agent,
    /// The KMA software itself.
    System,
}

const SO: RoleSet = RoleSet::of(Role::SecurityOfficer);
const CO: RoleSet = RoleSet::of(Role::ComplianceOfficer);
const OP: RoleSet = RoleSet::of(Role::Operator);
const BO: RoleSet = RoleSet::of(Role::BackupOperator);
/// Approving and cancelling is open to the roles that may start some quorum operation.
const SO_BO: RoleSet = SO.with(Role::BackupOperator);

impl CommandKind {
    /// The role matrix. The Auditor issues no command: it only reads. No user deactivates a
    /// key: the end of its cryptoperiod does (SPEC O7), or a KMIP client's Revoke once a
    /// Security Officer granted it that right (issue 19).
    #[allow(clippy::too_many_lines)] // One line per command kind: a table reads best whole.
    pub const fn issuer(self) -> Issuer {
        use CommandKind as K;
        use Issuer::{Agent, System, Users};
        match self {
            K::InitCluster => System,
            K::CreateSite | K::DeleteSite => Users(SO),
            K::CreateKma | K::DeleteKma | K::LockKma | K::DisableAutonomousUnlock => Users(SO),
            K::KmaJoined | K::ReportSoftwareVersion | K::RecordCommunicationError => System,
            K::SetSecuritySettings | K::SetKeyPoolLimits => Users(SO),
            K::CreateUser | K::SetUserRoles | K::SetUserEnabled => Users(SO),
            K::SetUserPassphrase | K::DeleteUser => Users(SO),
            K::RecordAuthenticationFailure | K::RecordLogin => System,
            // A KMA proves a joiner's passphrase and signs its certificate; a KMA knows its own.
            K::GrantKmaJoin | K::RecordKmaCertificate => System,
            // Only a KMA holds the master key the CA key is wrapped under.
            K::RecordCaKey => System,
            // The KMA the members unlocked reports it.
            K::RecordMemberUnlock => System,
            // A CA rotation is a security setting; its steps carry what only a KMA makes: a CA
            // key wrapped under the master key, a certificate it signed itself.
            K::StartRotateCa => Users(SO),
            K::BeginCaRotation | K::RecordReissuedKmaCertificate => System,
            K::CompleteCaRotation => System,
            // Only the KMA itself knows which certificate it presents.
            K::RecordCaAdopted => System,
            // A KMA reads the backup back; the ceremonies run on a KMA's console, where the
            // quorum members' passphrases, not a user's role, authorize them.
            K::RecordBackupDrill | K::RestoreCluster | K::RecoverFromLostMajority => System,
            K::StartJoinKma | K::StartUnlockKma | K::StartEnableAutonomousUnlock => Users(SO),
            K::StartChangeQuorum | K::StartCreateTransferPartner => Users(SO),
            K::StartRestoreFromBackup => Users(BO),
            K::ApproveQuorumOperation | K::CancelQuorumOperation => Users(SO_BO),
            K::CreateKeyPolicy | K::SetKeyPolicyFlags | K::DeleteKeyPolicy => Users(CO),
            K::CreateKeyGroup | K::DeleteKeyGroup => Users(CO),
            K::CreateAgent | K::SetAgentPassphrase | K::SetAgentEnabled => Users(OP),
            K::SetAgentSite | K::DeleteAgent => Users(OP),
            K::RecordAgentEnrollment => System,
            K::AssignKeyGroupToAgent | K::UnassignKeyGroupFromAgent => Users(CO),
            K::SetAgentDefaultKeyGroup => Users(CO),
            K::GeneratePoolKeys | K::QuarantineKeyPool | K::Pulse => System,
            K::CreateDataUnit | K::AssignWriteKey | K::DisassociateKeysOnBot => Agent,
            K::AssociateKeyForRead => Agent,
            K::CompromiseKeys => Users(CO),
            K::DestroyKeys | K::DestroyDataUnitKeys => Users(OP),
            K::ChangeDataUnitKeyGroup => Users(CO),
            K::DeleteTransferPartner | K::SetTransferPartnerEnabled => Users(SO),
            // A KMIP client is an agent; revoking and destroying also need the right a
            // Security Officer grants per agent (`SetAgentKmipRights`), checked in apply.
            K::CreateKmipKey | K::RegisterKmipKey | K::ActivateKmipKey => Agent,
            K::SetKmipAttributes | K::RevokeKmipKey | K::DestroyKmipKey => Agent,
            K::SetAgentKmipRights => Users(SO),
            K::RecordKmipReads => System,
            K::AssignKeyGroupToPartner | K::UnassignKeyGroupFromPartner => Users(CO),
            K::MarkBackupDestroyed | K::SetBackupSchedule => Users(BO),
            // What only a KMA makes (issue 16): a key pair or keys wrapped under the master key,
            // or the record of an export or a backup file the KMA wrote. No user can make these
            // honestly, so from log format 3 on none may issue them: the KMA does the work and
            // issues the command itself (see `issuer_before_format_3` for older formats).
            K::SetTransferKeyPair | K::RecordKeyExport | K::ImportTransferredKeys => System,
            K::Import1xKeys | K::RecordBackup => System,
        }
    }

    /// The issuer of log formats 1 and 2 for the kinds that format 3 made KMA-only, `None` for
    /// the others. A cluster below format 3 holds KMAs that apply the older table, so every KMA
    /// applies it there (see [`crate::format`], rule 2), and logs written before replay alike.
    pub const fn issuer_before_format_3(self) -> Option<Issuer> {
        use CommandKind as K;
        match self {
            K::SetTransferKeyPair => Some(Issuer::Users(SO)),
            K::RecordKeyExport | K::ImportTransferredKeys => Some(Issuer::Users(OP)),
            K::Import1xKeys => Some(Issuer::Users(CO)),
            K::RecordBackup => Some(Issuer::Users(BO)),
            _ => None,
        }
    }

    /// Who issues this kind, in words, for refusals: "a KMA", "an agent (a drive)", "a user with
    /// the role Operator".
    pub fn issuer_text(self) -> alloc::string::String {
        match self.issuer() {
            Issuer::System => "a KMA".into(),
            Issuer::Agent => "an agent (a drive)".into(),
            Issuer::Users(roles) => alloc::format!("a user with the role {roles}"),
        }
    }

    /// Every kind, in declaration order (for the role-matrix test and documentation).
    pub const ALL: [CommandKind; 83] = {
        use CommandKind as K;
        [
            K::InitCluster,
            K::CreateSite,
            K::DeleteSite,
            K::CreateKma,
            K::KmaJoined,
            K::DeleteKma,
            K::LockKma,
            K::DisableAutonomousUnlock,
            K::ReportSoftwareVersion,
            K::RecordCommunicationError,
            K::SetSecuritySettings,
            K::SetKeyPoolLimits,
            K::CreateUser,
            K::SetUserRoles,
            K::SetUserEnabled,
            K::SetUserPassphrase,
            K::DeleteUser,
            K::RecordAuthenticationFailure,
            K::StartJoinKma,
            K::StartUnlockKma,
            K::StartEnableAutonomousUnlock,
            K::StartChangeQuorum,
            K::StartCreateTransferPartner,
            K::StartRestoreFromBackup,
            K::ApproveQuorumOperation,
            K::CancelQuorumOperation,
            K::CreateKeyPolicy,
            K::SetKeyPolicyFlags,
            K::DeleteKeyPolicy,
            K::CreateKeyGroup,
            K::DeleteKeyGroup,
            K::CreateAgent,
            K::SetAgentPassphrase,
            K::SetAgentEnabled,
            K::SetAgentSite,
            K::DeleteAgent,
            K::RecordAgentEnrollment,
            K::AssignKeyGroupToAgent,
            K::UnassignKeyGroupFromAgent,
            K::SetAgentDefaultKeyGroup,
            K::GeneratePoolKeys,
            K::QuarantineKeyPool,
            K::Pulse,
            K::CreateDataUnit,
            K::AssignWriteKey,
            K::DisassociateKeysOnBot,
            K::AssociateKeyForRead,
            K::CompromiseKeys,
            K::DestroyKeys,
            K::DestroyDataUnitKeys,
            K::ChangeDataUnitKeyGroup,
            K::SetTransferKeyPair,
            K::DeleteTransferPartner,
            K::AssignKeyGroupToPartner,
            K::UnassignKeyGroupFromPartner,
            K::RecordKeyExport,
            K::ImportTransferredKeys,
            K::Import1xKeys,
            K::RecordBackup,
            K::MarkBackupDestroyed,
            K::SetBackupSchedule,
            K::RecordLogin,
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
        ]
    };
}

impl Command {
    #[allow(clippy::too_many_lines)] // One arm per variant.
    pub fn kind(&self) -> CommandKind {
        use Command as C;
        use CommandKind as K;
        match self {
            C::InitCluster(_) => K::InitCluster,
            C::CreateSite { .. } => K::CreateSite,
            C::DeleteSite { .. } => K::DeleteSite,
            C::CreateKma { .. } => K::CreateKma,
            C::KmaJoined { .. } => K::KmaJoined,
            C::DeleteKma { .. } => K::DeleteKma,
            C::LockKma { .. } => K::LockKma,
            C::DisableAutonomousUnlock { .. } => K::DisableAutonomousUnlock,
            C::ReportSoftwareVersion { .. } => K::ReportSoftwareVersion,
            C::RecordCommunicationError { .. } => K::RecordCommunicationError,
            C::SetSecuritySettings(_) => K::SetSecuritySettings,
            C::SetKeyPoolLimits(_) => K::SetKeyPoolLimits,
            C::CreateUser { .. } => K::CreateUser,
            C::SetUserRoles { .. } => K::SetUserRoles,
            C::SetUserEnabled { .. } => K::SetUserEnabled,
            C::SetUserPassphrase { .. } => K::SetUserPassphrase,
            C::DeleteUser { .. } => K::DeleteUser,
            C::RecordAuthenticationFailure { .. } => K::RecordAuthenticationFailure,
            C::StartQuorumOperation { operation, .. } => match operation {
                QuorumOperation::JoinKma { .. } => K::StartJoinKma,
                QuorumOperation::UnlockKma { .. } => K::StartUnlockKma,
                QuorumOperation::EnableAutonomousUnlock { .. } => K::StartEnableAutonomousUnlock,
                QuorumOperation::ChangeQuorum { .. } => K::StartChangeQuorum,
                QuorumOperation::CreateTransferPartner { .. } => K::StartCreateTransferPartner,
                QuorumOperation::RestoreFromBackup { .. } => K::StartRestoreFromBackup,
                QuorumOperation::RotateCa => K::StartRotateCa,
            },
            C::ApproveQuorumOperation { .. } => K::ApproveQuorumOperation,
            C::CancelQuorumOperation { .. } => K::CancelQuorumOperation,
            C::CreateKeyPolicy { .. } => K::CreateKeyPolicy,
            C::SetKeyPolicyFlags { .. } => K::SetKeyPolicyFlags,
            C::DeleteKeyPolicy { .. } => K::DeleteKeyPolicy,
            C::CreateKeyGroup { .. } => K::CreateKeyGroup,
            C::DeleteKeyGroup { .. } => K::DeleteKeyGroup,
            C::CreateAgent { .. } => K::CreateAgent,
            C::SetAgentPassphrase { .. } => K::SetAgentPassphrase,
            C::SetAgentEnabled { .. } => K::SetAgentEnabled,
            C::SetAgentSite { .. } => K::SetAgentSite,
            C::DeleteAgent { .. } => K::DeleteAgent,
            C::RecordAgentEnrollment { .. } => K::RecordAgentEnrollment,
            C::AssignKeyGroupToAgent { .. } => K::AssignKeyGroupToAgent,
            C::UnassignKeyGroupFromAgent { .. } => K::UnassignKeyGroupFromAgent,
            C::SetAgentDefaultKeyGroup { .. } => K::SetAgentDefaultKeyGroup,
            C::GeneratePoolKeys { .. } => K::GeneratePoolKeys,
            C::QuarantineKeyPool => K::QuarantineKeyPool,
            C::Pulse => K::Pulse,
            C::CreateDataUnit { .. } => K::CreateDataUnit,
            C::AssignWriteKey { .. } => K::AssignWriteKey,
            C::DisassociateKeysOnBot { .. } => K::DisassociateKeysOnBot,
            C::AssociateKeyForRead { .. } => K::AssociateKeyForRead,
            C::CompromiseKeys { .. } => K::CompromiseKeys,
            C::DestroyKeys { .. } => K::DestroyKeys,
            C::DestroyDataUnitKeys { .. } => K::DestroyDataUnitKeys,
            C::ChangeDataUnitKeyGroup { .. } => K::ChangeDataUnitKeyGroup,
            C::SetTransferKeyPair { .. } => K::SetTransferKeyPair,
            C::DeleteTransferPartner { .. } => K::DeleteTransferPartner,
            C::AssignKeyGroupToPartner { .. } => K::AssignKeyGroupToPartner,
            C::UnassignKeyGroupFromPartner { .. } => K::UnassignKeyGroupFromPartner,
            C::RecordKeyExport { .. } => K::RecordKeyExport,
            C::ImportTransferredKeys { .. } => K::ImportTransferredKeys,
            C::Import1xKeys { .. } => K::Import1xKeys,
            C::RecordBackupBeforeFormat3 { .. } => K::RecordBackup,
            C::MarkBackupDestroyed { .. } => K::MarkBackupDestroyed,
            C::SetBackupSchedule { .. } => K::SetBackupSchedule,
            C::RecordLogin { .. } => K::RecordLogin,
            // The full report of format 2: the same intent and issuer as the format-1 one.
            C::ReportKmaVersion { .. } => K::ReportSoftwareVersion,
            // The destroy of format 3 carries its preview: the same intent and issuer.
            C::DestroyKeysPreviewed { .. } => K::DestroyKeys,
            // A login that also records its session certificate: the same intent and issuer,
            // so the role matrix and the audit log read it as the login it is.
            C::RecordUserSession { .. } => K::RecordLogin,
            C::GrantKmaJoin { .. } => K::GrantKmaJoin,
            C::RecordKmaCertificate { .. } => K::RecordKmaCertificate,
            C::RecordCaKey { .. } => K::RecordCaKey,
            C::RecordMemberUnlock { .. } => K::RecordMemberUnlock,
            C::BeginCaRotation { .. } => K::BeginCaRotation,
            C::RecordReissuedKmaCertificate { .. } => K::RecordReissuedKmaCertificate,
            C::CompleteCaRotation => K::CompleteCaRotation,
            C::RecordCaAdopted { .. } => K::RecordCaAdopted,
            // The record of format 3 carries more: the same intent and issuer.
            C::RecordBackup { .. } => K::RecordBackup,
            C::RecordBackupDrill { .. } => K::RecordBackupDrill,
            C::RestoreCluster(_) => K::RestoreCluster,
            C::RecoverFromLostMajority { .. } => K::RecoverFromLostMajority,
            // The steps of a 1.x import in batches: the same intent and issuer as the import
            // in one command.
            C::StageImport1x { .. } | C::CommitImport1x { .. } | C::AbandonImport1x { .. } => {
                K::Import1xKeys
            }
            C::SetTransferPartnerEnabled { .. } => K::SetTransferPartnerEnabled,
            // The export and import of format 3 carry the file and its user: the same intents
            // and issuer as those of format 1.
            C::RecordTransferExport(_) => K::RecordKeyExport,
            C::ImportTransferFile(_) => K::ImportTransferredKeys,
            C::CreateKmipKey { .. } => K::CreateKmipKey,
            C::RegisterKmipKey { .. } => K::RegisterKmipKey,
            C::ActivateKmipKey { .. } => K::ActivateKmipKey,
            C::SetKmipAttributes { .. } => K::SetKmipAttributes,
            C::RevokeKmipKey { .. } => K::RevokeKmipKey,
            C::DestroyKmipKey { .. } => K::DestroyKmipKey,
            C::SetAgentKmipRights { .. } => K::SetAgentKmipRights,
            C::RecordKmipReads { .. } => K::RecordKmipReads,
        }
    }
}

/// A read of the replicated state that a shell serves. The table says who may read it:
/// [`Read::reader`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Read {
    /// Cluster status and health, replication, the state digest (node `status`, `digest`;
    /// admin `GET /v1/cluster/status`).
    ClusterStatus,
    /// Sites.
    Sites,
    /// KMA records (admin `GET /v1/kmas`).
    Kmas,
    /// Security settings, key pool limits, the backup schedule.
    Settings,
    /// Users and their roles.
    Users,
    /// The quorum's members and threshold, and the pending quorum operations with their
    /// approvals (admin `GET /v1/quorum`).
    PendingOperations,
    /// Key policies.
    Policies,
    /// Key groups.
    Groups,
    /// Agents and their key groups.
    Agents,
    /// Keys, one or listed, without material (admin `GET /v1/keys`).
    Keys,
    /// Data units, one or listed.
    DataUnits,
    /// What a destroy or a key group change would touch (SPEC O8, O9).
    ImpactPreview,
    /// Backup records.
    Backups,
    /// The audit log and its chain head (SPEC S5: Auditors).
    AuditLog,
    /// The keys a drive gets for a data unit, or one by ID (SPEC A2): its own, still wrapped.
    AgentKeys,
    /// Transfer partners, their groups and this cluster's transfer public keys (SPEC T1, T2).
    Partners,
}

impl Read {
    /// The read table: every user reads the state (the Auditor is the read-only role, SPEC S1);
    /// only the Auditor reads the audit log (SPEC S5); an agent reads its keys.
    pub const fn reader(self) -> Issuer {
        use Read as R;
        match self {
            R::ClusterStatus | R::Sites | R::Kmas | R::Settings | R::Users => Issuer::Users(ANY),
            R::PendingOperations | R::Policies | R::Groups | R::Agents => Issuer::Users(ANY),
            R::Keys | R::DataUnits | R::ImpactPreview | R::Backups => Issuer::Users(ANY),
            R::Partners => Issuer::Users(ANY),
            R::AuditLog => Issuer::Users(AUDITOR),
            R::AgentKeys => Issuer::Agent,
        }
    }

    /// What it reads, as refusals name it.
    pub const fn name(self) -> &'static str {
        use Read as R;
        match self {
            R::ClusterStatus => "the cluster status",
            R::Sites => "the sites",
            R::Kmas => "the KMAs",
            R::Settings => "the settings",
            R::Users => "the users",
            R::PendingOperations => "the quorum and its pending operations",
            R::Policies => "the key policies",
            R::Groups => "the key groups",
            R::Agents => "the agents",
            R::Keys => "the keys",
            R::DataUnits => "the data units",
            R::ImpactPreview => "an impact preview",
            R::Backups => "the backups",
            R::AuditLog => "the audit log",
            R::AgentKeys => "the keys of a drive",
            R::Partners => "the transfer partners",
        }
    }

    /// Every read, in declaration order (for tests and documentation).
    pub const ALL: [Read; 16] = {
        use Read as R;
        [
            R::ClusterStatus,
            R::Sites,
            R::Kmas,
            R::Settings,
            R::Users,
            R::PendingOperations,
            R::Policies,
            R::Groups,
            R::Agents,
            R::Keys,
            R::DataUnits,
            R::ImpactPreview,
            R::Backups,
            R::AuditLog,
            R::AgentKeys,
            R::Partners,
        ]
    };
}

const ANY: RoleSet = RoleSet::ALL;
const AUDITOR: RoleSet = RoleSet::of(Role::Auditor);

/// Anything an actor may be allowed to do: the key of the access table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Access {
    /// Issuing a command of this kind.
    Command(CommandKind),
    /// Reading part of the state.
    Read(Read),
    /// Changing the Raft membership directly (add a learner, promote, remove a voter): what the
    /// join and removal of a KMA do on a Security Officer's behalf (node `POST /v1/members`).
    RaftMembership,
    /// Asking this KMA to do, on the user's behalf, the work behind a command only a KMA issues
    /// (issue 18): reading a 1.x file and wrapping its keys (`Import1xKeys`), writing or opening
    /// a partner's transfer file (`RecordKeyExport`, `ImportTransferredKeys`). Granted to the
    /// roles that issued those commands themselves below log format 3.
    AskKma(CommandKind),
}

impl Access {
    /// The whole table: who may have this access.
    pub const fn granted_to(self) -> Issuer {
        match self {
            Access::Command(kind) => kind.issuer(),
            Access::Read(read) => read.reader(),
            Access::RaftMembership => Issuer::Users(SO),
            // An Operator asks a KMA to enroll a KMIP client from its certificate request:
            // the KMA signs it and records the enrollment itself (issue 19).
            Access::AskKma(CommandKind::RecordAgentEnrollment) => Issuer::Users(OP),
            Access::AskKma(kind) => match kind.issuer_before_format_3() {
                Some(issuer) => issuer,
                None => Issuer::System,
            },
        }
    }
}

impl From<CommandKind> for Access {
    fn from(kind: CommandKind) -> Access {
        Access::Command(kind)
    }
}

impl From<&Command> for Access {
    fn from(command: &Command) -> Access {
        Access::Command(command.kind())
    }
}

impl From<Read> for Access {
    fn from(read: Read) -> Access {
        Access::Read(read)
    }
}

impl core::fmt::Display for Access {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Access::Command(kind) => write!(f, "{kind:?}"),
            Access::Read(read) => write!(f, "reading {}", read.name()),
            Access::RaftMembership => f.write_str("changing the Raft membership"),
            Access::AskKma(kind) => write!(f, "asking a KMA for {kind:?}"),
        }
    }
}
