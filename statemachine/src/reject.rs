//! Why `apply` refused a command, or the access table a read. Each variant names the rule that
//! failed and carries the values involved; `code()` is persisted (audit log, API) and frozen: a
//! golden test guards it. Variants are only appended (postcard encodes the position, and
//! rejections are kept with the outcome of each request ID). `class()` says what kind of rule
//! failed, for shells.

use alloc::string::String;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{DataUnitId, Fingerprint, Fingerprint16, KeyId, NodeId};
use crate::key::KeyState;
use crate::permission::{Access, CommandKind};
use crate::role::RoleSet;

/// What is wrong with a name or a free-text field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TextProblem {
    Empty,
    TooLong { len_max: u32 },
    ControlCharacter,
}

/// What is wrong with a proposed quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuorumProblem {
    NoMembers,
    TooManyMembers { members_max: u32 },
    ThresholdOutOfRange { threshold: u8, members: u32 },
    DuplicateMember,
    ShareMissingOrTooLarge,
}

#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum Reject {
    #[error("the cluster is not initialised yet: run the quickstart (kma init) first")]
    ClusterNotInitialized,
    #[error("the cluster is already initialised")]
    ClusterAlreadyInitialized,
    #[error("unknown user '{user}'")]
    UnknownUser { user: String },
    #[error("user '{user}' is disabled: a Security Officer can enable it")]
    UserDisabled { user: String },
    #[error("unknown agent '{agent}'")]
    UnknownAgent { agent: String },
    #[error("agent '{agent}' is disabled: an Operator can enable it")]
    AgentDisabled { agent: String },
    #[error("agent '{agent}' is not enrolled: enroll the drive with its passphrase")]
    AgentNotEnrolled { agent: String },
    #[error("{kind:?} needs the role {required}; the user has {held}")]
    MissingRole { kind: CommandKind, required: RoleSet, held: RoleSet },
    #[error("only {} issues {kind:?}: users, agents and KMAs differ", .kind.issuer_text())]
    WrongIssuer { kind: CommandKind },
    #[error(
        "request {seq} of client {client:016x} is older than the {kept} \
         remembered; query the state instead of retrying"
    )]
    RequestTooOld { client: u64, seq: u64, kept: u32 },
    #[error("request {seq} of client {client:016x} was already used for a different command")]
    ExistsWithDifferentBody { client: u64, seq: u64 },
    #[error("invalid {field}: {problem:?}")]
    InvalidText { field: String, problem: TextProblem },
    #[error("too many {what}: {count} given, at most {max}")]
    TooMany { what: String, count: u64, max: u64 },
    #[error("invalid setting {field}: {reason}")]
    InvalidSetting { field: String, reason: String },
    #[error("site '{name}' already exists")]
    SiteExists { name: String },
    #[error("unknown site '{name}': create it first")]
    UnknownSite { name: String },
    #[error("site '{name}' is still used by {kmas} KMAs and {agents} agents")]
    SiteInUse { name: String, kmas: u32, agents: u32 },
    #[error("KMA '{name}' already exists")]
    KmaExists { name: String },
    #[error("unknown KMA '{name}'")]
    UnknownKma { name: String },
    #[error("KMA '{name}' cannot do this in status {status}")]
    KmaWrongStatus { name: String, status: String },
    #[error("KMA '{name}' is the last member of the cluster and cannot be deleted")]
    LastKma { name: String },
    #[error("user '{user}' already exists")]
    UserExists { user: String },
    #[error("a user needs at least one role")]
    NoRoles,
    #[error("this would leave no enabled Security Officer")]
    LastSecurityOfficer,
    #[error("invalid quorum: {problem:?}")]
    InvalidQuorum { problem: QuorumProblem },
    #[error("unknown quorum operation {id}")]
    UnknownQuorumOperation { id: u64 },
    #[error("quorum operation {id} expired at {expired_at_ms} ms; start it again")]
    QuorumOperationExpired { id: u64, expired_at_ms: u64 },
    #[error("'{member}' is not a quorum member")]
    NotAQuorumMember { member: String },
    #[error("quorum member '{member}' already approved operation {id}")]
    AlreadyApproved { id: u64, member: String },
    #[error("key policy '{name}' already exists")]
    PolicyExists { name: String },
    #[error("unknown key policy '{name}'")]
    UnknownPolicy { name: String },
    #[error(
        "the cryptoperiod ({cryptoperiod_ms} ms) must be at least the \
         encryption period ({encryption_period_ms} ms), both above zero"
    )]
    PolicyPeriodsInvalid { encryption_period_ms: u64, cryptoperiod_ms: u64 },
    #[error("key policy '{name}' is used by {groups} key groups")]
    PolicyInUse { name: String, groups: u32 },
    #[error("key group '{name}' already exists")]
    GroupExists { name: String },
    #[error("unknown key group '{name}'")]
    UnknownGroup { name: String },
    #[error(
        "key group '{name}' still holds {keys} keys and is assigned to {agents} \
         agents and {partners} partners"
    )]
    GroupInUse { name: String, keys: u64, agents: u32, partners: u32 },
    #[error("agent '{agent}' already exists")]
    AgentExists { agent: String },
    #[error(
        "key group '{group}' is not assigned to agent '{agent}': a Compliance \
         Officer can assign it"
    )]
    GroupNotAssignedToAgent { agent: String, group: String },
    #[error("agent '{agent}' has no default key group: a Compliance Officer can set one")]
    AgentHasNoDefaultGroup { agent: String },
    #[error("key group '{group}' is the default of agent '{agent}': set another default first")]
    GroupIsAgentDefault { agent: String, group: String },
    #[error("key {key_id} already exists")]
    KeyExists { key_id: KeyId },
    #[error("key {key_id} does not carry this cluster's ID")]
    KeyFromOtherCluster { key_id: KeyId },
    #[error(
        "the key pool holds {size} keys; {adding} more would pass the high water mark {high_water}"
    )]
    KeyPoolFull { size: u64, adding: u64, high_water: u64 },
    #[error(
        "no Ready key in the pool (retryable: the pool refills once the cluster has a majority)"
    )]
    KeyPoolEmpty,
    #[error("unknown data unit {data_unit}")]
    UnknownDataUnit { data_unit: DataUnitId },
    #[error(
        "agent cannot access key group of write key {key_id} of data unit \
         {data_unit}; only a write from BOT may start a new key"
    )]
    AgentCannotAccessWriteKey { data_unit: DataUnitId, key_id: KeyId },
    #[error("data unit {data_unit} is shredded: only a write from BOT can use it again")]
    DataUnitShredded { data_unit: DataUnitId },
    #[error("unknown key {key_id}")]
    UnknownKey { key_id: KeyId },
    #[error("key {key_id} is {state}")]
    KeyUnusable { key_id: KeyId, state: KeyState },
    #[error("agent cannot access the key group of key {key_id}")]
    AgentCannotAccessKey { key_id: KeyId },
    #[error("key {key_id} is {state}: only deactivated or compromised keys can be destroyed")]
    DestroyNeedsDeactivatedOrCompromised { key_id: KeyId, state: KeyState },
    #[error("no data units selected")]
    NothingSelected,
    #[error(
        "the impact preview changed (digest {expected:016x}, now \
         {actual:016x}): preview again and confirm"
    )]
    ImpactPreviewChanged { expected: u64, actual: u64 },
    #[error("transfer partner '{name}' already exists")]
    PartnerExists { name: String },
    #[error("unknown transfer partner '{name}'")]
    UnknownPartner { name: String },
    #[error("the policy of key group '{group}' does not allow export")]
    PolicyForbidsExport { group: String },
    #[error("the policy of key group '{group}' does not allow import")]
    PolicyForbidsImport { group: String },
    #[error("key group '{group}' is not assigned to partner '{partner}' for this direction")]
    GroupNotAssignedToPartner { partner: String, group: String },
    #[error("key {key_id} exists with a different value: nothing imported (is the file corrupt?)")]
    ImportValueMismatch { key_id: KeyId },
    #[error("unknown backup {id}")]
    UnknownBackup { id: u64 },
    #[error("backup {id} is already marked destroyed")]
    BackupAlreadyDestroyed { id: u64 },
    #[error("a backup cannot cover log index {covers_index}, past the current index {index}")]
    BackupCoversFuture { covers_index: u64, index: u64 },
    #[error("the cluster has no transfer key pair: a Security Officer must create one")]
    NoTransferKeyPair,
    #[error("agent '{agent}' is already enrolled: an Operator sets a new passphrase to re-enroll it (the old certificate is revoked then)")]
    AgentAlreadyEnrolled { agent: String },
    #[error("{access} needs the role {required}; the user has {held}")]
    AccessNeedsRole { access: Access, required: RoleSet, held: RoleSet },
    #[error("{access} is not open to this kind of actor (users, agents and KMAs differ)")]
    AccessWrongActor { access: Access },
    #[error(
        "{kind:?} needs log format {format_needed}, and some KMA reads only format \
         {cluster_format}: available once every KMA runs software of format {format_needed} \
         (retryable after the upgrade)"
    )]
    FormatNotYetAvailable { kind: CommandKind, format_needed: u16, cluster_format: u16 },
    #[error(
        "KMA '{kma}' is node {node_id}, but its version report came through node \
         {origin_node_id}: a KMA reports its own version only"
    )]
    VersionReportFromAnotherKma { kma: String, node_id: NodeId, origin_node_id: NodeId },
    /// A second join granted to one entry: the join passphrase is spent by its first successful
    /// proof (issue 16 point 5), so a relay or a second machine that learnt it gets nothing.
    #[error(
        "the join passphrase of KMA '{name}' was already used; to join again, a Security \
         Officer deletes the entry and creates a new one (with a new join passphrase)"
    )]
    JoinAlreadyGranted { name: String },
    #[error(
        "KMA '{kma}' is node {node_id}, but its certificate report came through node \
         {origin_node_id}: a KMA reports its own certificate only"
    )]
    KmaCertificateFromAnotherKma { kma: String, node_id: NodeId, origin_node_id: NodeId },
    #[error(
        "KMA '{name}' already has its certificate recorded: a KMA reports its certificate once, \
         and the links accept only the one recorded"
    )]
    KmaCertificateAlreadyRecorded { name: String },
    /// A CA key other than the one recorded (issue 16 point 1): whoever could replace it could
    /// mint certificates every listener accepts, so it is recorded once. `ca_certificate_sha256`
    /// names the CA recorded.
    #[error(
        "the cluster CA's key is already recorded, for the CA certificate of SHA-256 \
         {ca_certificate_sha256}: a new CA comes only through a CA rotation approved by the quorum"
    )]
    CaKeyAlreadyRecorded { ca_certificate_sha256: Fingerprint },
    #[error(
        "KMA '{kma}' is node {node_id}, but a record of its own came through node \
         {origin_node_id}: a KMA reports only what happened to itself"
    )]
    NotFromThatKma { kma: String, node_id: NodeId, origin_node_id: NodeId },
    // CA rotation (issue 16 point 1).
    /// A CA rotation needs the current CA's key in the state: it is what the rotation retires,
    /// and a cluster that never recorded it (below log format 3) has no CA the state knows.
    #[error(
        "the cluster CA's key is not recorded in the state, so there is no CA to rotate: an \
         unlocked KMA records it by itself once every KMA runs software of log format 3; \
         upgrade the KMAs or unlock one, then start the rotation again"
    )]
    CaKeyNotRecorded,
    /// One rotation at a time, and no join during one: a joiner's certificate would come from
    /// the CA being retired.
    #[error(
        "a CA rotation is under way (approved at {approved_at_ms} ms, quorum operation \
         {operation_id}): no second rotation starts and no KMA joins until it completes, since \
         a joiner's certificate would come from the CA being retired; let every KMA reissue its \
         certificate and the rotation complete, then try again"
    )]
    CaRotationUnderWay { approved_at_ms: u64, operation_id: u64 },
    #[error(
        "no CA rotation is approved: a Security Officer starts one (quorum operation RotateCa) \
         and the quorum approves it before a KMA makes the new CA"
    )]
    CaRotationNotApproved,
    /// The fingerprint a KMA sent is not that of the certificate it sent: a bug in the KMA,
    /// or a forged record; nothing is recorded.
    #[error(
        "the new CA certificate's SHA-256 is {computed}, not {stated} as the record says: \
         nothing recorded; the KMA that proposed it must send the fingerprint of the certificate \
         it made (report it as a bug)"
    )]
    CaCertificateFingerprintMismatch { stated: Fingerprint, computed: Fingerprint },
    /// A rotation to the CA it retires would retire nothing.
    #[error(
        "the new CA certificate (SHA-256 {ca_certificate_sha256}) is the current cluster CA: a \
         rotation moves to a CA made for it; the KMA must make a new CA key and certificate"
    )]
    NewCaIsCurrentCa { ca_certificate_sha256: Fingerprint },
    /// The first new CA recorded wins: the KMAs reissue their certificates under that one.
    #[error(
        "the CA rotation already began with the new CA certificate of SHA-256 \
         {ca_certificate_sha256}: a rotation has one new CA; the KMAs reissue their \
         certificates under that one"
    )]
    CaRotationAlreadyBegun { ca_certificate_sha256: Fingerprint },
    #[error(
        "the approved CA rotation has no new CA yet: an unlocked KMA makes it \
         (BeginCaRotation) before KMAs reissue their certificates or the rotation completes; \
         unlock a KMA if none is"
    )]
    CaRotationNotBegun,
    /// Completing before every KMA holds a certificate of the new CA would cut the others off.
    #[error(
        "the CA rotation waits for KMAs {} to reissue their certificates under the new CA: \
         unlock them so that they do, or delete those that are gone for good, then complete \
         the rotation again",
        .waiting_for.join(", ")
    )]
    CaRotationIncomplete { waiting_for: alloc::vec::Vec<String> },
    /// An adoption is recorded only between a rotation's completion and the old CA's
    /// retirement: before, the new CA is not the cluster CA; after, every KMA adopted it.
    #[error(
        "no old CA is being retired, so there is nothing to adopt: a KMA records that it \
         adopted the new CA only after a CA rotation completed, until every KMA has; nothing \
         to do"
    )]
    CaNotRetiring,
    /// The old CA of the last rotation is still trusted: a new rotation would have every KMA
    /// trust three CAs, and a joiner would be one more KMA the retirement waits for. Not
    /// `CaRotationUnderWay`: the rotation is over, and its approval is not kept.
    #[error(
        "the CA rotation completed at {completed_at_ms} ms waits for KMAs {} to adopt the new \
         CA before the old CA (SHA-256 {ca_certificate_sha256}) is retired: no CA rotation \
         starts and no KMA joins until then; let those KMAs catch up with the log (each records \
         its adoption by itself), or delete those that are gone for good, then try again",
        .waiting_for.join(", ")
    )]
    CaRetirementUnderWay {
        ca_certificate_sha256: Fingerprint,
        completed_at_ms: u64,
        waiting_for: alloc::vec::Vec<String>,
    },
    // Backups, restore and disaster recovery (issue 17).
    /// A core security backup holds one quorum; the file of an older quorum restores members
    /// who may have left, and may miss those who joined.
    #[error(
        "the core security backup holds the quorum of log index {covers_index}, but the quorum \
         changed at index {quorum_changed_index}: the quorum changed meanwhile; take a new core \
         security backup, which holds the current quorum"
    )]
    CoreSecurityBackupOutdated { covers_index: u64, quorum_changed_index: u64 },
    /// The quorum operation of restore is retired (log format 3): a restore replaces a fresh
    /// KMA's state, which a command of the cluster being replaced cannot do.
    #[error(
        "restore is no longer a quorum operation: restore now runs on a factory-fresh KMA: \
         kma restore --data FILE --key FILE --core-security FILE, with the quorum members \
         typing their passphrases at its console"
    )]
    RestoreIsALocalCeremony,
    /// A restore drill reads a database backup back; a core security backup holds no state.
    #[error(
        "backup {id} is a core security backup, which holds no state to read back: drill a \
         database backup (kmsctl backup list shows each backup's kind)"
    )]
    BackupNotADatabaseBackup { id: u64 },
    /// The recovery from a lost majority names the survivor, as the state knows it.
    #[error(
        "KMA '{kma}' is node {recorded_node_id} in the state, not node {node_id}: run the \
         recovery on the surviving KMA itself, which names its own node"
    )]
    SurvivingKmaIsAnotherNode { kma: String, node_id: NodeId, recorded_node_id: NodeId },
    // KMS 1.x imports in batches (issue 18 point 4).
    #[error(
        "no KMS 1.x import {import_id} is staged: it committed, was abandoned, or expired after \
         an hour without a batch; import the file again"
    )]
    UnknownImport { import_id: u64 },
    /// A batch was lost between the KMA and the log: committing would import part of a file.
    #[error(
        "import {import_id} staged {staged} keys, not the {expected} its KMA read: nothing was \
         imported; import the file again"
    )]
    ImportIncomplete { import_id: u64, staged: u64, expected: u64 },
    /// A file whose every key is held already (imported before): nothing would change.
    #[error(
        "all {keys} keys of the file are held already with the same values (the file was \
         imported before): nothing was imported"
    )]
    ImportAllDuplicates { keys: u64 },
    // Partner key transfer (issue 18 points 1-3).
    #[error(
        "this cluster has a transfer key pair already, which its partners hold: it is not \
         replaced (the partners would be cut off); nothing to do"
    )]
    TransferKeyPairExists,
    #[error(
        "transfer partner '{name}' is disabled: no file goes to it or comes from it; a Security \
         Officer enables it again (kmsctl partner enable {name})"
    )]
    PartnerDisabled { name: String },
    #[error(
        "transfer file {file_id} was imported already, from partner '{partner}' at \
         {imported_at_ms} ms: a file is imported once; nothing was imported"
    )]
    TransferFileReplayed { file_id: Fingerprint16, partner: String, imported_at_ms: u64 },
    #[error(
        "the keys of the selected data units changed while the export to '{partner}' was \
         written: nothing was exported; export again"
    )]
    ExportSelectionChanged { partner: String },
    // KMIP clients (issue 19).
    #[error(
        "KMIP attribute '{name}' cannot be set by a client here, or not with that type: set \
         Name, Alternative Name, Application Specific Information, Object Group, Contact \
         Information, Operation Policy Name, or custom x- attributes of Text, Integer or \
         Date-Time"
    )]
    KmipAttributeNotSettable { name: String },
    #[error(
        "a KMIP Locate without a Name or Application Specific Information would examine {objects} \
         objects: narrow it by one of those"
    )]
    KmipLocateTooBroad { objects: u64 },
    #[error("key {key_id} was not made over KMIP: it has no KMIP attributes or activation")]
    NotKmipObject { key_id: KeyId },
    #[error("key {key_id} is {state}: that KMIP operation does not apply to it in this state")]
    KmipWrongState { key_id: KeyId, state: KeyState },
    #[error(
        "the KMIP attributes of key {key_id} changed (revision {current}, the request was made \
         from {revision}): read them again and retry"
    )]
    KmipRevisionStale { key_id: KeyId, revision: u64, current: u64 },
    #[error(
        "KMIP client '{agent}' may not revoke or destroy keys: a Security Officer grants that \
         right with `kmsctl agent kmip-rights {agent} --revoke-destroy on`"
    )]
    KmipRightNotGranted { agent: String },
}

/// What kind of rule a [`Reject`] names, for shells to choose their protocol's answer (an HTTP
/// status, an exit code) without looking at the variant. Not persisted: a variant may move to a
/// better class; its `code()` is what is frozen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectClass {
    /// An object the command or read names does not exist, or the actor's own record is gone
    /// (`UnknownUser` is the same rule for both). HTTP: 404.
    NotFound,
    /// The actor may not do this: disabled or not enrolled, a role or group access missing, the
    /// wrong kind of actor, not a quorum member. HTTP: 403.
    Forbidden,
    /// The request itself is malformed or contradicts itself: a bad name or setting, an invalid
    /// quorum, no roles, nothing selected, a key of another cluster. HTTP: 400 or 422.
    Invalid,
    /// A named bound (STYLE 9) would be passed: too many in one command or in the state, a full
    /// key pool, a request ID older than those remembered. HTTP: 400, 413 or 429.
    Limit,
    /// The state does not allow it now: something exists already, is still in use, is in the
    /// wrong status, has expired or changed since a preview. Retrying unchanged fails again.
    /// HTTP: 409.
    Conflict,
    /// Not possible now, but the same request may succeed later unchanged: exactly the
    /// [`Reject::is_retryable`] ones. HTTP: 503.
    Unavailable,
}

impl Reject {
    /// Frozen numeric code of each rule. Never renumber; append new codes.
    #[allow(clippy::too_many_lines)] // One line per variant: a table reads best whole.
    pub fn code(&self) -> u16 {
        use Reject as R;
        match self {
            R::ClusterNotInitialized => 1,
            R::ClusterAlreadyInitialized => 2,
            R::UnknownUser { .. } => 3,
            R::UserDisabled { .. } => 4,
            R::UnknownAgent { .. } => 5,
            R::AgentDisabled { .. } => 6,
            R::AgentNotEnrolled { .. } => 7,
            R::MissingRole { .. } => 8,
            R::WrongIssuer { .. } => 9,
            R::RequestTooOld { .. } => 10,
            R::ExistsWithDifferentBody { .. } => 11,
            R::InvalidText { .. } => 12,
            R::TooMany { .. } => 13,
            R::InvalidSetting { .. } => 14,
            R::SiteExists { .. } => 15,
            R::UnknownSite { .. } => 16,
            R::SiteInUse { .. } => 17,
            R::KmaExists { .. } => 18,
            R::UnknownKma { .. } => 19,
            R::KmaWrongStatus { .. } => 20,
            R::LastKma { .. } => 21,
            R::UserExists { .. } => 22,
            R::NoRoles => 23,
            R::LastSecurityOfficer => 24,
            R::InvalidQuorum { .. } => 25,
            R::UnknownQuorumOperation { .. } => 26,
            R::QuorumOperationExpired { .. } => 27,
            R::NotAQuorumMember { .. } => 28,
            R::AlreadyApproved { .. } => 29,
            R::PolicyExists { .. } => 30,
            R::UnknownPolicy { .. } => 31,
            R::PolicyPeriodsInvalid { .. } => 32,
            R::PolicyInUse { .. } => 33,
            R::GroupExists { .. } => 34,
            R::UnknownGroup { .. } => 35,
            R::GroupInUse { .. } => 36,
            R::AgentExists { .. } => 37,
            R::GroupNotAssignedToAgent { .. } => 38,
            R::AgentHasNoDefaultGroup { .. } => 39,
            R::GroupIsAgentDefault { .. } => 40,
            R::KeyExists { .. } => 41,
            R::KeyFromOtherCluster { .. } => 42,
            R::KeyPoolFull { .. } => 43,
            R::KeyPoolEmpty => 44,
            R::UnknownDataUnit { .. } => 45,
            R::AgentCannotAccessWriteKey { .. } => 46,
            R::DataUnitShredded { .. } => 47,
            R::UnknownKey { .. } => 48,
            R::KeyUnusable { .. } => 49,
            R::AgentCannotAccessKey { .. } => 50,
            R::DestroyNeedsDeactivatedOrCompromised { .. } => 51,
            R::NothingSelected => 52,
            R::ImpactPreviewChanged { .. } => 53,
            R::PartnerExists { .. } => 54,
            R::UnknownPartner { .. } => 55,
            R::PolicyForbidsExport { .. } => 56,
            R::PolicyForbidsImport { .. } => 57,
            R::GroupNotAssignedToPartner { .. } => 58,
            R::ImportValueMismatch { .. } => 59,
            R::UnknownBackup { .. } => 60,
            R::BackupAlreadyDestroyed { .. } => 61,
            R::BackupCoversFuture { .. } => 62,
            R::NoTransferKeyPair => 63,
            R::AgentAlreadyEnrolled { .. } => 64,
            R::AccessNeedsRole { .. } => 65,
            R::AccessWrongActor { .. } => 66,
            R::FormatNotYetAvailable { .. } => 67,
            R::VersionReportFromAnotherKma { .. } => 68,
            R::JoinAlreadyGranted { .. } => 69,
            R::KmaCertificateFromAnotherKma { .. } => 70,
            R::KmaCertificateAlreadyRecorded { .. } => 71,
            R::CaKeyAlreadyRecorded { .. } => 72,
            R::NotFromThatKma { .. } => 73,
            R::CaKeyNotRecorded => 74,
            R::CaRotationUnderWay { .. } => 75,
            R::CaRotationNotApproved => 76,
            R::CaCertificateFingerprintMismatch { .. } => 77,
            R::NewCaIsCurrentCa { .. } => 78,
            R::CaRotationAlreadyBegun { .. } => 79,
            R::CaRotationNotBegun => 80,
            R::CaRotationIncomplete { .. } => 81,
            R::CaNotRetiring => 82,
            R::CaRetirementUnderWay { .. } => 83,
            R::CoreSecurityBackupOutdated { .. } => 84,
            R::RestoreIsALocalCeremony => 85,
            R::BackupNotADatabaseBackup { .. } => 86,
            R::SurvivingKmaIsAnotherNode { .. } => 87,
            R::UnknownImport { .. } => 88,
            R::ImportIncomplete { .. } => 89,
            R::ImportAllDuplicates { .. } => 90,
            R::TransferKeyPairExists => 91,
            R::PartnerDisabled { .. } => 92,
            R::TransferFileReplayed { .. } => 93,
            R::ExportSelectionChanged { .. } => 94,
            R::KmipAttributeNotSettable { .. } => 95,
            R::KmipLocateTooBroad { .. } => 96,
            R::NotKmipObject { .. } => 97,
            R::KmipWrongState { .. } => 98,
            R::KmipRevisionStale { .. } => 99,
            R::KmipRightNotGranted { .. } => 100,
        }
    }

    /// The kind of rule that failed (see [`RejectClass`]); every variant is classified here.
    #[allow(clippy::too_many_lines)] // Every variant, grouped by class: a table reads best whole.
    pub fn class(&self) -> RejectClass {
        use Reject as R;
        use RejectClass as C;
        match self {
            R::UnknownUser { .. }
            | R::UnknownAgent { .. }
            | R::UnknownSite { .. }
            | R::UnknownKma { .. }
            | R::UnknownQuorumOperation { .. }
            | R::UnknownPolicy { .. }
            | R::UnknownGroup { .. }
            | R::UnknownDataUnit { .. }
            | R::UnknownKey { .. }
            | R::UnknownPartner { .. }
            | R::UnknownBackup { .. }
            | R::UnknownImport { .. }
            | R::NotKmipObject { .. } => C::NotFound,
            R::UserDisabled { .. }
            | R::AgentDisabled { .. }
            | R::AgentNotEnrolled { .. }
            | R::MissingRole { .. }
            | R::WrongIssuer { .. }
            | R::AccessNeedsRole { .. }
            | R::AccessWrongActor { .. }
            | R::NotAQuorumMember { .. }
            | R::AgentCannotAccessWriteKey { .. }
            | R::AgentCannotAccessKey { .. }
            | R::KmipRightNotGranted { .. }
            | R::VersionReportFromAnotherKma { .. }
            | R::KmaCertificateFromAnotherKma { .. }
            | R::NotFromThatKma { .. }
            | R::SurvivingKmaIsAnotherNode { .. } => C::Forbidden,
            R::InvalidText { .. }
            | R::InvalidSetting { .. }
            | R::NoRoles
            | R::InvalidQuorum { .. }
            | R::PolicyPeriodsInvalid { .. }
            | R::KeyFromOtherCluster { .. }
            | R::NothingSelected
            | R::BackupCoversFuture { .. }
            | R::CaCertificateFingerprintMismatch { .. }
            | R::NewCaIsCurrentCa { .. }
            | R::RestoreIsALocalCeremony
            | R::BackupNotADatabaseBackup { .. }
            | R::KmipAttributeNotSettable { .. } => C::Invalid,
            R::TooMany { .. } | R::KeyPoolFull { .. } | R::RequestTooOld { .. } => C::Limit,
            R::KmipLocateTooBroad { .. } => C::Limit,
            R::KeyPoolEmpty | R::FormatNotYetAvailable { .. } => C::Unavailable,
            R::ClusterNotInitialized
            | R::ClusterAlreadyInitialized
            | R::ExistsWithDifferentBody { .. }
            | R::SiteExists { .. }
            | R::SiteInUse { .. }
            | R::KmaExists { .. }
            | R::KmaWrongStatus { .. }
            | R::LastKma { .. }
            | R::UserExists { .. }
            | R::LastSecurityOfficer
            | R::QuorumOperationExpired { .. }
            | R::AlreadyApproved { .. }
            | R::PolicyExists { .. }
            | R::PolicyInUse { .. }
            | R::GroupExists { .. }
            | R::GroupInUse { .. }
            | R::AgentExists { .. }
            | R::GroupNotAssignedToAgent { .. }
            | R::AgentHasNoDefaultGroup { .. }
            | R::GroupIsAgentDefault { .. }
            | R::KeyExists { .. }
            | R::DataUnitShredded { .. }
            | R::KeyUnusable { .. }
            | R::DestroyNeedsDeactivatedOrCompromised { .. }
            | R::ImpactPreviewChanged { .. }
            | R::PartnerExists { .. }
            | R::PolicyForbidsExport { .. }
            | R::PolicyForbidsImport { .. }
            | R::GroupNotAssignedToPartner { .. }
            | R::ImportValueMismatch { .. }
            | R::ImportIncomplete { .. }
            | R::ImportAllDuplicates { .. }
            | R::TransferKeyPairExists
            | R::PartnerDisabled { .. }
            | R::TransferFileReplayed { .. }
            | R::ExportSelectionChanged { .. }
            | R::KmipWrongState { .. }
            | R::KmipRevisionStale { .. }
            | R::BackupAlreadyDestroyed { .. }
            | R::NoTransferKeyPair
            | R::AgentAlreadyEnrolled { .. }
            | R::JoinAlreadyGranted { .. }
            | R::KmaCertificateAlreadyRecorded { .. }
            | R::CaKeyAlreadyRecorded { .. }
            | R::CaKeyNotRecorded
            | R::CaRotationUnderWay { .. }
            | R::CaRotationNotApproved
            | R::CaRotationAlreadyBegun { .. }
            | R::CaRotationNotBegun
            | R::CaRotationIncomplete { .. }
            | R::CaNotRetiring
            | R::CaRetirementUnderWay { .. }
            | R::CoreSecurityBackupOutdated { .. } => C::Conflict,
        }
    }

    /// A retryable rejection may succeed later unchanged; it is not remembered for the request
    /// ID, so the client's retry runs again instead of getting this answer back.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Reject::KeyPoolEmpty | Reject::FormatNotYetAvailable { .. })
    }
}
