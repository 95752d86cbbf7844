//! Commands: every mutation of the cluster state, one variant per intent, and the envelope the
//! proposing node wraps around each one before it enters the Raft log.
//!
//! Anything random or time-dependent (key IDs, wrapped key material, the time) is decided by the
//! proposing node and carried here, so that `apply` stays a pure function (SPEC "Determinism").

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::audit::KmipReadCount;
use crate::backup::BackupKind;
use crate::cluster::{BackupSchedule, KeyPoolLimits, SecuritySettings};
use crate::format::KmaVersion;
use crate::ids::{ClusterId, DataUnitId, KeyId, NodeId, RequestId};
use crate::key::{Activation, KeyCheckValue, WrappedKey};
use crate::kmip::KmipAttribute;
use crate::quorum::{Quorum, QuorumOperation};
use crate::role::RoleSet;

/// Who issued a command, as authenticated by the node that proposed it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Actor {
    /// The KMA software itself (key pool refills, pulses, enrollment records); the envelope's
    /// `origin_node_id` says which KMA.
    System,
    /// A logged-in user; the roles come from the state, not from the envelope.
    User(String),
    /// An enrolled agent (drive), authenticated by its certificate.
    Agent(String),
}

/// A command as stored in the Raft log: stamped by the proposing node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Wall-clock time of the leader when it proposed; `apply` never lets time go backwards.
    pub time_ms: u64,
    /// The KMA that accepted the command from its actor (for the audit log).
    pub origin_node_id: NodeId,
    pub actor: Actor,
    /// Present on requests a client may retry (SPEC A6).
    pub request_id: Option<RequestId>,
    pub command: Command,
}

/// What one Raft log entry carries: the envelopes the leader gathered while its earlier entries
/// were being appended, applied in order at the entry's index. One fsync and one replication
/// round trip then carry many commands (SPEC "Known pitfalls": throughput comes from batching,
/// never from skipping the sync). The leader keeps a batch within
/// [`crate::limits::ENVELOPES_PER_ENTRY_MAX`]; `apply` takes any length, since log input is
/// checked, never trusted to be small.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub envelopes: Vec<Envelope>,
}

impl Batch {
    pub fn one(envelope: Envelope) -> Batch {
        Batch { envelopes: alloc::vec![envelope] }
    }
}

/// A new pool key: ID and wrapped material made by the proposing node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewKey {
    pub id: KeyId,
    pub material: WrappedKey,
    pub check_value: KeyCheckValue,
}

/// One key of a KMS 1.x export file, validated and wrapped by the proposing node (SPEC M1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Legacy1xKey {
    pub id: KeyId,
    pub material: WrappedKey,
    pub check_value: KeyCheckValue,
    pub description: String,
}

/// A key received from a transfer partner, re-wrapped under our master key (SPEC T4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferredKey {
    pub id: KeyId,
    pub material: WrappedKey,
    pub check_value: KeyCheckValue,
    pub created_at_ms: u64,
    pub activation: Activation,
    pub compromised_at_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferredDataUnit {
    pub id: DataUnitId,
    pub external_tag: String,
    pub keys: Vec<TransferredKey>,
}

/// Which keys of the selected data units a destroy takes (SPEC O7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DestroySelection {
    DeactivatedOnly,
    CompromisedOnly,
    DeactivatedAndCompromised,
}

/// Direction of a key group's assignment to a transfer partner (SPEC T2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TransferDirection {
    Export,
    Import,
}

/// Everything the quickstart of the first KMA decides (SPEC C4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitCluster {
    pub cluster_id: ClusterId,
    pub kma_name: String,
    pub site: String,
    pub security_officer: String,
    pub security_officer_verifier: Vec<u8>,
    pub quorum: Quorum,
    /// The quorum that `kma init` just created chose to let this first KMA unlock itself after
    /// a reboot (SPEC C6); later KMAs need a quorum operation for it.
    pub autonomous_unlock: bool,
}

/// Every mutation of the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    // Cluster, sites and KMAs (SPEC C1–C8).
    InitCluster(InitCluster),
    CreateSite {
        name: String,
    },
    DeleteSite {
        name: String,
    },
    CreateKma {
        name: String,
        site: String,
        passphrase_verifier: Vec<u8>,
    },
    KmaJoined {
        name: String,
    },
    DeleteKma {
        name: String,
    },
    LockKma {
        name: String,
    },
    DisableAutonomousUnlock {
        name: String,
    },
    /// A KMA reports the newest log format it reads (SPEC C7). Log format 1, so every KMA ever
    /// released decodes it: a KMA reports with it while the cluster is below format 2.
    ReportSoftwareVersion {
        kma: String,
        version: u32,
    },
    RecordCommunicationError {
        from_kma: String,
        to_kma: String,
        detail: String,
    },
    SetSecuritySettings(SecuritySettings),
    SetKeyPoolLimits(KeyPoolLimits),
    // Users (SPEC S1, S2).
    CreateUser {
        id: String,
        roles: RoleSet,
        passphrase_verifier: Vec<u8>,
    },
    SetUserRoles {
        id: String,
        roles: RoleSet,
    },
    SetUserEnabled {
        id: String,
        enabled: bool,
    },
    SetUserPassphrase {
        id: String,
        passphrase_verifier: Vec<u8>,
    },
    DeleteUser {
        id: String,
    },
    RecordAuthenticationFailure {
        principal: String,
        source: String,
    },
    // Quorum operations (SPEC S4).
    StartQuorumOperation {
        operation: QuorumOperation,
        ttl_ms: Option<u64>,
    },
    ApproveQuorumOperation {
        id: u64,
        member: String,
    },
    CancelQuorumOperation {
        id: u64,
    },
    // Key policies and key groups (SPEC O1, O2).
    CreateKeyPolicy {
        name: String,
        encryption_period_ms: u64,
        cryptoperiod_ms: u64,
        allow_export: bool,
        allow_import: bool,
    },
    SetKeyPolicyFlags {
        name: String,
        allow_export: bool,
        allow_import: bool,
    },
    DeleteKeyPolicy {
        name: String,
    },
    CreateKeyGroup {
        name: String,
        policy: String,
    },
    DeleteKeyGroup {
        name: String,
    },
    // Agents (SPEC O3, A1).
    CreateAgent {
        id: String,
        site: String,
        passphrase_verifier: Vec<u8>,
    },
    SetAgentPassphrase {
        id: String,
        passphrase_verifier: Vec<u8>,
    },
    SetAgentEnabled {
        id: String,
        enabled: bool,
    },
    SetAgentSite {
        id: String,
        site: String,
    },
    DeleteAgent {
        id: String,
    },
    RecordAgentEnrollment {
        id: String,
        certificate_fingerprint: [u8; 32],
    },
    AssignKeyGroupToAgent {
        agent: String,
        group: String,
    },
    UnassignKeyGroupFromAgent {
        agent: String,
        group: String,
    },
    SetAgentDefaultKeyGroup {
        agent: String,
        group: String,
    },
    // The key pool and time (SPEC O5, STYLE "Pulse").
    GeneratePoolKeys {
        keys: Vec<NewKey>,
    },
    QuarantineKeyPool,
    Pulse,
    // The agent protocol (SPEC A2–A6).
    CreateDataUnit {
        external_tag: String,
    },
    AssignWriteKey {
        data_unit: DataUnitId,
        from_bot: bool,
    },
    DisassociateKeysOnBot {
        data_unit: DataUnitId,
    },
    AssociateKeyForRead {
        key_id: KeyId,
        data_unit: Option<DataUnitId>,
        external_tag: String,
    },
    // Keys and data units, administered (SPEC O7–O9).
    CompromiseKeys {
        keys: Vec<KeyId>,
    },
    DestroyKeys {
        keys: Vec<KeyId>,
    },
    DestroyDataUnitKeys {
        data_units: Vec<DataUnitId>,
        selection: DestroySelection,
        preview_digest: u64,
    },
    ChangeDataUnitKeyGroup {
        data_units: Vec<DataUnitId>,
        group: String,
        preview_digest: u64,
    },
    // Partner key transfer (SPEC T1–T4).
    SetTransferKeyPair {
        public_key: Vec<u8>,
        wrapped_private_key: Vec<u8>,
    },
    DeleteTransferPartner {
        name: String,
    },
    AssignKeyGroupToPartner {
        partner: String,
        group: String,
        direction: TransferDirection,
    },
    UnassignKeyGroupFromPartner {
        partner: String,
        group: String,
        direction: TransferDirection,
    },
    RecordKeyExport {
        partner: String,
        data_units: Vec<DataUnitId>,
    },
    ImportTransferredKeys {
        partner: String,
        group: String,
        data_units: Vec<TransferredDataUnit>,
    },
    // Migration (SPEC M1).
    Import1xKeys {
        group: String,
        keys: Vec<Legacy1xKey>,
    },
    // Backups (SPEC B1–B5).
    /// The backup record of log formats 1 and 2: [`Command::RecordBackup`] without what log
    /// format 3 added. Kept at its position so that older logs decode; proposed only while the
    /// cluster is below format 3 ([`crate::State::backup_record_to_propose`] picks). At format
    /// 3 it applies the rules of format 3, with the added fields empty.
    RecordBackupBeforeFormat3 {
        kind: BackupKind,
        kma: String,
        file_name: String,
        covers_index: u64,
    },
    MarkBackupDestroyed {
        id: u64,
    },
    SetBackupSchedule {
        schedule: Option<BackupSchedule>,
    },
    // Audit records (SPEC S5), after the others: a variant's encoding is its position.
    /// A user logged in; proposed by the KMA that granted the session, for the audit log. Below
    /// log format 3 only: from then on the login records its certificate too
    /// ([`Command::RecordUserSession`]), which listeners require.
    RecordLogin {
        principal: String,
        source: String,
    },
    // The cluster version gate (SPEC C7): log format 2, appended after every format-1 variant.
    /// A KMA's full version report: its release and the newest formats it reads, recorded in
    /// its entry. Log format 2, so proposed only once every KMA reads format 2; until then a KMA
    /// reports its log format alone with the format-1 [`Command::ReportSoftwareVersion`] (see
    /// [`crate::format`], rule 3, and [`crate::State::version_report`], which picks). Issued by
    /// the KMA software, and only by the KMA it names (its envelope's `origin_node_id`).
    ReportKmaVersion {
        kma: String,
        version: KmaVersion,
    },
    // The trust model (issue 16): log format 3, appended after every format-2 variant.
    /// A destroy by key ID that carries the digest of the impact preview the Operator confirmed
    /// (`State::key_destroy_preview`), as `DestroyDataUnitKeys` does: `apply` recomputes it and
    /// refuses a stale one, so data units that started sharing a key after the preview are never
    /// cut off unseen (SPEC O7, O9). The same intent as `DestroyKeys`, which stays for the
    /// entries already in logs and for clusters below format 3.
    DestroyKeysPreviewed {
        keys: Vec<KeyId>,
        preview_digest: u64,
    },
    /// A user logged in and is handed a session certificate: the login of [`Command::RecordLogin`]
    /// (the same kind, the same audit event), and the certificate's fingerprint and end of
    /// validity recorded in the user's entry, so that every listener accepts that certificate
    /// and no other for the user (issue 16 point 2). Proposed by the KMA that granted the
    /// session, before it hands the certificate out. `principal` is the user ID.
    RecordUserSession {
        principal: String,
        source: String,
        certificate_sha256: [u8; 32],
        expires_at_ms: u64,
    },
    /// A joining KMA proved its join passphrase: the granting KMA records the fingerprint of
    /// the certificate it is about to hand out, before it does, so that every KMA knows the
    /// joiner's certificate before the joiner has applied anything. Once per entry: the join
    /// passphrase is spent by its first successful proof (issue 16 points 2, 5).
    GrantKmaJoin {
        name: String,
        certificate_sha256: [u8; 32],
    },
    /// A KMA whose entry holds no certificate (the first KMA, KMAs that joined before log
    /// format 3) reports the one it holds, once, through its own node (`origin_node_id`).
    RecordKmaCertificate {
        name: String,
        certificate_sha256: [u8; 32],
    },
    /// A KMA records the cluster CA's private key, wrapped under the master key, with the
    /// fingerprint (SHA-256 of the DER) of the CA certificate it belongs to (issue 16 point 1):
    /// the KMA wraps it before proposing, the state stores opaque bytes and never sees the
    /// clear key. Once per cluster: a new CA comes only through a CA rotation the quorum
    /// approves.
    RecordCaKey {
        ca_certificate_sha256: [u8; 32],
        wrapped_key: Vec<u8>,
    },
    /// A locked KMA was unlocked by quorum members' passphrases alone, given straight to it
    /// (issue 16 point 5: after a cold restart nobody can log in to start an unlock
    /// operation). The KMA proposes it through its own node once the cluster can write; the
    /// record names the members whose shares it combined, for the audit log. Changes nothing
    /// else: the members' passphrases, not this entry, unlocked the KMA.
    RecordMemberUnlock {
        kma: String,
        members: Vec<String>,
    },
    // CA rotation (issue 16 point 1): log format 3, appended after the others. See
    // `crate::cluster::CaRotation` for the steps.
    /// An unlocked KMA made the new CA of a rotation the quorum approved: its certificate and
    /// the certificate's fingerprint (SHA-256 of the DER, which `apply` checks), and its private
    /// key wrapped under the master key (opaque here, as in [`Command::RecordCaKey`]). The first
    /// record wins: the same one again is answered `Done`, another is refused.
    BeginCaRotation {
        ca_certificate_der: Vec<u8>,
        ca_certificate_sha256: [u8; 32],
        wrapped_key: Vec<u8>,
    },
    /// KMA `name` signed itself a certificate under the new CA of the rotation under way, and
    /// records its fingerprint, through its own node (`origin_node_id`), as
    /// [`Command::RecordKmaCertificate`]. Again with another fingerprint, it replaces the first:
    /// a KMA that crashed before it saved its new certificate makes another.
    RecordReissuedKmaCertificate {
        name: String,
        certificate_sha256: [u8; 32],
    },
    /// Every KMA that applies the log reissued its certificate: the new CA becomes the cluster
    /// CA, each KMA's reissued certificate its certificate, and every user session ends (their
    /// certificates came from the old CA).
    CompleteCaRotation,
    /// KMA `name` applied the completion of a CA rotation and presents its certificate of the
    /// new CA from now on; it records so through its own node (`origin_node_id`), as
    /// [`Command::RecordReissuedKmaCertificate`]. Once every KMA that applies the log has, the
    /// old CA is retired (see [`crate::cluster::RetiringCa`]). The same again is answered
    /// `Done`.
    RecordCaAdopted {
        name: String,
    },
    // Backups, restore and disaster recovery (issue 17): log format 3, appended after the
    // others.
    /// A KMA wrote a backup file (SPEC B1, B2) and records it, through its own node
    /// (`origin_node_id`). A database backup holds the state at `covers_index` and protects the
    /// Generated pool keys it holds on a single KMA (SPEC O4); a core security backup holds the
    /// quorum of `covers_index`, which must be the current one (`Meta::quorum_changed_index`).
    RecordBackup {
        kind: BackupKind,
        kma: String,
        file_name: String,
        covers_index: u64,
        /// The user ID who asked; empty for the backup schedule (SPEC B5).
        taken_by: String,
        size_bytes: u64,
        file_sha256: [u8; 32],
        /// SHA-256 of the snapshot encoding of the state the file holds; all zero for a core
        /// security backup.
        state_sha256: [u8; 32],
        backup_uuid: [u8; 16],
    },
    /// KMA `kma` read database backup `backup_id` back into a scratch state (a restore drill,
    /// SPEC B6) and records the outcome, through its own node.
    RecordBackupDrill {
        backup_id: u64,
        kma: String,
        passed: bool,
        detail: String,
    },
    /// The `kma restore` ceremony (SPEC B3): never proposed through Raft. A factory-fresh KMA
    /// applies it with `State::apply` to the state decoded from a database backup, at index
    /// `last_applied_index + 1` and through its own new node ID, before it first starts: the
    /// KMAs of the lost cluster leave, the restoring KMA becomes the one member.
    RestoreCluster(RestoreCluster),
    /// Recovery of a cluster that lost its majority (SPEC B7), from one surviving KMA: never
    /// proposed through Raft (there is no majority to commit it). The ceremony on the survivor
    /// applies it locally, at `last_applied_index + 1`, through the survivor's own node, once the
    /// quorum members typed their passphrases there; every other KMA leaves. The survivor
    /// presents a new certificate from then on, of the new cluster epoch: its SHA-256 is
    /// `certificate_sha256`.
    RecoverFromLostMajority {
        kma_name: String,
        node_id: NodeId,
        certificate_sha256: [u8; 32],
    },
    // KMS 1.x imports in batches (issue 18 point 4): log format 3, appended after the others.
    // See `crate::import_1x`. Issued by the KMA that read the file, for `requested_by`.
    /// Up to `limits::IMPORT_1X_BATCH_KEYS_MAX` keys of a 1.x file, wrapped by the KMA, staged
    /// under `import_id` (chosen by that KMA): invisible until [`Command::CommitImport1x`].
    StageImport1x {
        import_id: u64,
        /// The batch's number in the file, from 0: batches are staged in order, and a batch
        /// sent again (its outcome was lost) is answered without being staged twice.
        batch: u32,
        group: String,
        requested_by: String,
        kma: String,
        keys: Vec<Legacy1xKey>,
    },
    /// Every batch of the file is staged: its keys become keys at once, Process-only (SPEC M1).
    /// `keys_received` is how many keys the KMA staged, duplicates included: a batch lost on
    /// the way makes the commit fail rather than import part of the file.
    CommitImport1x {
        import_id: u64,
        keys_received: u64,
    },
    /// The file turned out bad (a conflicting value) or its user gave up: the staged keys go.
    AbandonImport1x {
        import_id: u64,
        reason: String,
    },
    // Partner key transfer, end to end (issue 18 points 1-3): log format 3, appended.
    /// A Security Officer disables a partner (no file goes to it or comes from it) or enables
    /// it again; its keys and group assignments stay.
    SetTransferPartnerEnabled {
        name: String,
        enabled: bool,
    },
    /// A KMA wrote an export file for `requested_by` (SPEC T3): recorded before the file is
    /// handed out, refused if the selection changed since the KMA made the file.
    RecordTransferExport(TransferExport),
    /// A KMA verified and decrypted a partner's file for `requested_by` (SPEC T4): the keys,
    /// re-wrapped under our master key, and the data units, imported with the file's ID.
    ImportTransferFile(TransferImport),
    // KMIP clients (SPEC U5, issue 19): log format 3, appended. A KMIP client is an agent.
    /// KMIP Create: a pool key for the client, Protect-and-process from now, in a new data unit
    /// tagged with the barcode its attributes carry (`kmip.rs`).
    CreateKmipKey {
        usage_mask: u32,
        attributes: Vec<KmipAttribute>,
    },
    /// KMIP Register: the client's key value, wrapped by the KMA that took the request.
    RegisterKmipKey {
        key: NewKey,
        usage_mask: u32,
        attributes: Vec<KmipAttribute>,
    },
    /// KMIP Activate: Pre-Active becomes Active in KMIP's eyes.
    ActivateKmipKey {
        key_id: KeyId,
    },
    /// KMIP Add, Modify or Delete Attribute: the whole new set, computed from `revision`.
    SetKmipAttributes {
        key_id: KeyId,
        revision: u64,
        attributes: Vec<KmipAttribute>,
    },
    /// KMIP Revoke, by a client a Security Officer granted the right.
    RevokeKmipKey {
        key_id: KeyId,
        compromised: bool,
    },
    /// KMIP Destroy, by a client a Security Officer granted the right (O7 still holds).
    DestroyKmipKey {
        key_id: KeyId,
    },
    /// A Security Officer grants or withdraws a KMIP client's right to revoke and destroy.
    SetAgentKmipRights {
        agent: String,
        revoke_and_destroy: bool,
    },
    /// A KMA's count of the KMIP reads it answered from its local state, for the audit log.
    RecordKmipReads {
        reads: Vec<KmipReadCount>,
    },
}

/// See [`Command::RecordTransferExport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferExport {
    pub partner: String,
    pub requested_by: String,
    pub file_id: [u8; 16],
    pub data_units: Vec<DataUnitId>,
    /// The keys the file holds, in ID order: `State::export_to_partner`'s selection.
    pub keys: Vec<KeyId>,
}

/// See [`Command::ImportTransferFile`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferImport {
    pub partner: String,
    pub group: String,
    pub requested_by: String,
    pub file_id: [u8; 16],
    pub data_units: Vec<TransferredDataUnit>,
}

/// What the `kma restore` ceremony knows of the backup it restores and of the KMA it restores
/// on (SPEC B3): see [`Command::RestoreCluster`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreCluster {
    /// From the backup file's header.
    pub backup_uuid: [u8; 16],
    pub file_name: String,
    /// The last log index whose effects the backup holds.
    pub covers_index: u64,
    pub taken_at_ms: u64,
    /// The KMA of the lost cluster that wrote the backup.
    pub taken_on_kma: String,
    /// SHA-256 of the snapshot encoding the backup holds, as the ceremony checked it.
    pub state_sha256: [u8; 32],
    /// The restoring KMA: its name, site and new node ID, the SHA-256 of the certificate it
    /// made for itself, and the newest log format it reads.
    pub kma_name: String,
    pub site: String,
    pub node_id: NodeId,
    pub certificate_sha256: [u8; 32],
    pub software_version: u32,
    /// Keys the backup holds with their material that the lost cluster destroyed after the
    /// backup was taken, as an audit export kept since showed the ceremony (SPEC B4): the
    /// restore brings them back as the whitepaper describes, and the audit log says which.
    /// Empty when no export was given. At most [`crate::limits::KEYS_PER_COMMAND_MAX`].
    pub keys_destroyed_since_backup: Vec<KeyId>,
}
