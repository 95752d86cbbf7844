//! The role matrix (SPEC S1): for every kind of command, who may issue it.
//!
//! `CommandKind` is persisted in audit events, so variants are only ever appended.

use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::quorum::QuorumOperation;
use crate::role::{Role, RoleSet};

/// One kind per command variant; starting a quorum operation has one kind per operation, since
/// the roles that may start them differ.
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
    /// The role matrix. The Auditor issues no command: it only reads. No command deactivates a
    /// key: only the end of its cryptoperiod does (SPEC O7).
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
            K::SetTransferKeyPair | K::DeleteTransferPartner => Users(SO),
            K::AssignKeyGroupToPartner | K::UnassignKeyGroupFromPartner => Users(CO),
            K::RecordKeyExport | K::ImportTransferredKeys => Users(OP),
            K::Import1xKeys => Users(CO),
            K::RecordBackup | K::MarkBackupDestroyed | K::SetBackupSchedule => Users(BO),
        }
    }

    /// Every kind, in declaration order (for the role-matrix test and documentation).
    pub const ALL: [CommandKind; 62] = {
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
            C::RecordBackup { .. } => K::RecordBackup,
            C::MarkBackupDestroyed { .. } => K::MarkBackupDestroyed,
            C::SetBackupSchedule { .. } => K::SetBackupSchedule,
            C::RecordLogin { .. } => K::RecordLogin,
        }
    }
}
