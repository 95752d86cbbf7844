//! Audit events (SPEC S5): what `apply` returns besides its reply, in order. They never carry key
//! material, only IDs, states and names. Persisted for decades: variants are only appended.
//!
//! Every event ever applied is a link of one hash chain, [`AuditChain`], whose head is part of
//! the replicated state: each KMA computes the same links, and a snapshot carries the head. An
//! edited, removed or reordered stored event no longer fits the chain, which [`verify_chain`]
//! reports; a removed tail shows against the head of the state.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Deref;
use postcard::ser_flavors::Flavor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::command::Actor;
use crate::data_unit::DataUnitState;
use crate::ids::{DataUnitId, Fingerprint, KeyGroupId, KeyId, NodeId, RequestId};
use crate::key::KeyState;
use crate::permission::CommandKind;
use crate::role::RoleSet;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Log index of the command that caused the event.
    pub index: u64,
    /// Time the command was applied at (never going backwards).
    pub at_ms: u64,
    pub what: AuditWhat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Applied,
    /// Refused, with the frozen [`crate::Reject::code`].
    Rejected {
        code: u16,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditWhat {
    /// First event of every applied log entry: who asked what, through which KMA, and how it
    /// ended.
    Command {
        kind: CommandKind,
        actor: Actor,
        origin_node_id: NodeId,
        request_id: Option<RequestId>,
        outcome: Outcome,
    },
    /// The same request ID came again; the first outcome was returned and nothing changed.
    RequestReplayed {
        request_id: RequestId,
    },
    /// A key changed state; `effective_at_ms` is when the change became true, which for changes
    /// that time brings is earlier than the pulse that records it.
    KeyStateChanged {
        key_id: KeyId,
        from: KeyState,
        to: KeyState,
        effective_at_ms: u64,
    },
    KeyAssigned {
        key_id: KeyId,
        data_unit: DataUnitId,
        group: KeyGroupId,
    },
    KeyAssociated {
        key_id: KeyId,
        data_unit: DataUnitId,
    },
    KeysDisassociated {
        data_unit: DataUnitId,
        count: u32,
    },
    KeyGroupChanged {
        key_id: KeyId,
        from: Option<KeyGroupId>,
        to: KeyGroupId,
    },
    DataUnitCreated {
        data_unit: DataUnitId,
    },
    DataUnitStateChanged {
        data_unit: DataUnitId,
        from: DataUnitState,
        to: DataUnitState,
    },
    PoolKeysAdded {
        count: u32,
        ready: bool,
    },
    PoolKeysProtected {
        count: u32,
    },
    PoolKeysQuarantined {
        count: u32,
    },
    KeysImported {
        count: u32,
        duplicates: u32,
    },
    KeysExported {
        partner: String,
        count: u32,
    },
    QuorumApproval {
        id: u64,
        member: String,
        approvals: u32,
        threshold: u32,
    },
    QuorumOperationCompleted {
        id: u64,
    },
    QuorumOperationExpired {
        id: u64,
    },
    CommunicationError {
        from_kma: String,
        to_kma: String,
        detail: String,
    },
    AuthenticationFailure {
        principal: String,
        source: String,
    },
    /// A user proved their passphrase and was granted a session certificate.
    Login {
        principal: String,
        source: String,
    },
    // What a command changed (log format 3 on, issue 16 point 9), after the `Command` record
    // that says who asked: the new value, never a passphrase verifier, share or key material.
    /// A user was created, deleted or changed.
    UserChanged {
        user: String,
        change: UserChange,
    },
    /// An agent was created, deleted, enrolled or changed.
    AgentChanged {
        agent: String,
        change: AgentChange,
    },
    /// A KMA was created, approved to join, joined, deleted or changed: the membership changes.
    KmaChanged {
        kma: String,
        node_id: NodeId,
        change: KmaChange,
    },
    /// A quorum change took effect: the new members (their IDs, not their shares) and threshold.
    QuorumChanged {
        members: Vec<String>,
        threshold: u8,
    },
    /// The cluster CA's key was recorded, wrapped under the master key (issue 16 point 1): the
    /// fingerprint of the CA certificate it belongs to, never the wrapped key.
    CaKeyRecorded {
        ca_certificate_sha256: Fingerprint,
    },
    // A CA rotation (issue 16 point 1): fingerprints only, never the wrapped key.
    /// The quorum approved a CA rotation: the fingerprint of the CA certificate it retires.
    CaRotationApproved {
        ca_certificate_sha256: Fingerprint,
    },
    /// A KMA made the new CA of the rotation: the fingerprint of the new CA certificate.
    CaRotationBegun {
        ca_certificate_sha256: Fingerprint,
    },
    /// The rotation completed: the CA retired, the CA that replaced it, and how many user
    /// session certificates it ended (their users log in again).
    CaRotationCompleted {
        retired_ca_certificate_sha256: Fingerprint,
        ca_certificate_sha256: Fingerprint,
        user_sessions_ended: u32,
    },
    /// Every KMA that applies the log adopted the new CA (the last adoption, or the deletion of
    /// the last KMA missing): the old CA, by its fingerprint, is trusted no more.
    CaRetired {
        ca_certificate_sha256: Fingerprint,
    },
    // Backups, restore and disaster recovery (issue 17; log format 3).
    /// The quorum changed (or the cluster was restored onto a new KMA) and no core security
    /// backup holds the current quorum: a reminder to take one (SPEC B1). The quorum version
    /// a new core security backup records as its `covers_index`.
    CoreSecurityBackupDue {
        quorum_changed_index: u64,
    },
    /// A KMA read a database backup back into a scratch state (SPEC B6).
    BackupDrillRecorded {
        backup_id: u64,
        passed: bool,
    },
    /// The `kma restore` ceremony restored a database backup onto a new KMA (SPEC B3): the
    /// backup, the KMAs of the lost cluster that left, the pool keys made recovery-only, the
    /// user sessions ended and the new cluster epoch.
    ClusterRestored {
        backup_uuid: [u8; 16],
        file_name: String,
        covers_index: u64,
        kmas_removed: Vec<String>,
        pool_keys_quarantined: u64,
        sessions_ended: u64,
        epoch: u32,
        /// Keys destroyed by the lost cluster after the backup, which the restore brought
        /// back with their material (SPEC B4): destroy them again if they must stay destroyed.
        keys_destroyed_since_backup: Vec<KeyId>,
    },
    /// A surviving KMA recovered the cluster after it lost its majority (SPEC B7): the other
    /// KMAs left.
    RecoveredFromLostMajority {
        kma: String,
        kmas_removed: Vec<String>,
        pool_keys_quarantined: u64,
        epoch: u32,
    },
    /// A staged KMS 1.x import committed (SPEC M1, issue 18 point 4): who asked, into which
    /// group, how many keys came in and how many were held already.
    Keys1xImported {
        import_id: u64,
        requested_by: String,
        group: KeyGroupId,
        count: u64,
        duplicates: u64,
    },
    /// A transfer partner was created, re-keyed, disabled or enabled (log format 3).
    TransferPartnerChanged {
        name: String,
        change: PartnerChange,
    },
    /// A KMA wrote an export file (SPEC T3): who asked, to whom, which keys.
    KeysExportedTo {
        partner: String,
        requested_by: String,
        file_id: [u8; 16],
        keys: Vec<KeyId>,
        data_units: u32,
    },
    /// A partner's file was imported (SPEC T4): who asked, from whom, what came in.
    KeysImportedFrom {
        partner: String,
        requested_by: String,
        file_id: [u8; 16],
        count: u32,
        duplicates: u32,
        data_units: u32,
    },
    /// A staged KMS 1.x import was dropped, nothing of it visible: its KMA gave up (`reason`),
    /// or it sent no batch for an hour (`expired`).
    Import1xAbandoned {
        import_id: u64,
        requested_by: String,
        keys_received: u64,
        reason: String,
        expired: bool,
    },
    /// A KMIP object was made or its KMIP side changed (attributes, activation): its revision.
    KmipObjectChanged {
        key_id: KeyId,
        revision: u64,
    },
    /// KMIP reads a KMA answered from its local state (issue 19: every KMIP operation is in
    /// the audit log), counted per agent and operation.
    KmipReads(KmipReadCount),
}

/// See [`AuditWhat::KmipReads`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmipReadCount {
    pub agent: String,
    /// The KMIP Operation enumeration's value (0x0A Get, 0x08 Locate …).
    pub operation: u32,
    /// Answered and refused alike.
    pub count: u64,
    pub refused: u64,
    /// The keys read, at most `kmip::KMIP_READ_KEYS_MAX`; `keys_not_named` more.
    pub keys: Vec<KeyId>,
    pub keys_not_named: u64,
    pub from_ms: u64,
    pub to_ms: u64,
}

/// What changed in a user (persisted: variants only appended).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserChange {
    Created {
        roles: RoleSet,
    },
    /// The user's whole new role set.
    Roles {
        roles: RoleSet,
    },
    Enabled {
        enabled: bool,
    },
    /// A new passphrase (its verifier stays out of the audit log).
    PassphraseSet,
    Deleted,
}

/// What changed in an agent (persisted: variants only appended).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentChange {
    Created {
        site: String,
    },
    /// A new enrollment passphrase: the old certificate is revoked.
    PassphraseSet,
    Enabled {
        enabled: bool,
    },
    Site {
        site: String,
    },
    Deleted,
    /// Enrolled, with the fingerprint of the certificate it holds from now on.
    Enrolled {
        certificate_fingerprint: [u8; 32],
    },
    KeyGroupAssigned {
        group: String,
    },
    KeyGroupUnassigned {
        group: String,
    },
    DefaultKeyGroup {
        group: String,
    },
    /// A Security Officer granted or withdrew the right to revoke and destroy over KMIP.
    KmipRights {
        revoke_and_destroy: bool,
    },
}

/// What changed in a KMA (persisted: variants only appended).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KmaChange {
    Created {
        site: String,
    },
    /// The quorum approved its join: it replicates the log as a learner.
    JoinApproved,
    /// It caught up and became a voting member.
    Joined,
    /// It left the cluster: its node ID is never given again (`State::kma_deleted`).
    Deleted,
    Locked,
    /// The quorum unlocked it.
    Unlocked,
    AutonomousUnlock {
        enabled: bool,
    },
    /// Its join was granted: the fingerprint of the certificate it was handed (no secret).
    JoinGranted {
        certificate_sha256: [u8; 32],
    },
    /// It reported the fingerprint of the certificate it held from before (no secret).
    CertificateRecorded {
        certificate_sha256: [u8; 32],
    },
    /// Quorum members unlocked it with their passphrases alone, given straight to it (after a
    /// cold restart): who gave theirs.
    UnlockedByMembers {
        members: Vec<String>,
    },
    /// During a CA rotation it signed itself a certificate under the new CA: that certificate's
    /// fingerprint (no secret), its certificate once the rotation completes.
    CertificateReissued {
        certificate_sha256: [u8; 32],
    },
    /// After a CA rotation completed, it presents its certificate of the new CA: the new CA's
    /// fingerprint. The old CA is retired once every KMA has.
    AdoptedNewCa {
        ca_certificate_sha256: [u8; 32],
    },
}

/// Opens every hashed link, so that a link can never be mistaken for another SHA-256 of ours.
/// Part of the persisted format: a new tag is a new chain.
pub const AUDIT_CHAIN_DOMAIN: &[u8] = b"kma-audit-chain-v1";

/// A position in the audit chain: how many events it holds and the link of the last one. The
/// empty chain of a new cluster is all zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AuditChain {
    pub events: u64,
    pub head: [u8; 32],
}

/// Where one event sits in the chain: its position, counted from 1, and its link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLink {
    pub seq: u64,
    pub link: [u8; 32],
}

/// An event with its place in the chain: the form the audit log stores and readers verify.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainedAuditEvent {
    pub seq: u64,
    pub link: [u8; 32],
    pub event: AuditEvent,
}

/// A chained event reads as the event it carries: readers filter on `what` and `index`, and
/// only a verifier looks at the chain fields.
impl Deref for ChainedAuditEvent {
    type Target = AuditEvent;

    fn deref(&self) -> &AuditEvent {
        &self.event
    }
}

impl AuditChain {
    /// The chain of a cluster before its first event.
    pub const GENESIS: AuditChain = AuditChain { events: 0, head: [0; 32] };

    /// Adds `event` as the next link and returns where it sits.
    pub fn append(&mut self, event: &AuditEvent) -> AuditLink {
        let link = chain_link(&self.head, event);
        // 2^64 events are never reached; were they, a wrapped position would be ambiguous.
        let seq = self.events.wrapping_add(1);
        assert!(seq > self.events, "audit chain positions only grow");
        *self = AuditChain { events: seq, head: link };
        AuditLink { seq, link }
    }

    /// Where the chain stands once `event` is its last event.
    pub fn after(event: &ChainedAuditEvent) -> AuditChain {
        AuditChain { events: event.seq, head: event.link }
    }
}

/// An anchor as (events before the first, head before the first).
impl From<(u64, [u8; 32])> for AuditChain {
    fn from((events, head): (u64, [u8; 32])) -> Self {
        AuditChain { events, head }
    }
}

/// The link of `event` after `previous`: SHA-256(domain tag, previous head, postcard(event)).
pub fn chain_link(previous: &[u8; 32], event: &AuditEvent) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(AUDIT_CHAIN_DOMAIN);
    hasher.update(previous);
    // Serializing plain data into a hasher cannot fail: no flavor method returns an error.
    match postcard::serialize_with_flavor(event, Sha256Flavor(hasher)) {
        Ok(link) => link,
        Err(_) => unreachable!("postcard encodes an audit event into a hasher without error"),
    }
}

/// A postcard flavor that feeds SHA-256 instead of storing: no allocation per event.
struct Sha256Flavor(Sha256);

impl Flavor for Sha256Flavor {
    type Output = [u8; 32];

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.update([byte]);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.update(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<[u8; 32]> {
        Ok(self.0.finalize().into())
    }
}

/// A run of events that fits the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainCheck {
    /// How many events were checked.
    pub events: u64,
    /// The chain after the last of them (the anchor when there were none). Equal to the
    /// state's `audit_chain` when nothing is missing at the end either.
    pub head: AuditChain,
}

/// Where and how a run of stored events stops fitting the chain. `seq` is always the first
/// position that is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ChainBreak {
    /// The event at `seq` does not hash to its link: the event or its link was changed.
    #[error("audit event {seq} does not match its link: it was changed after it was written")]
    LinkMismatch { seq: u64 },
    /// Events `seq` to `found - 1` are missing: the next event present is `found`.
    #[error(
        "audit events {seq} to {last} are missing: the next one present is {found}",
        last = .found.saturating_sub(1)
    )]
    Gap { seq: u64, found: u64 },
    /// Event `found` stands where `seq` belongs: events were reordered or repeated.
    #[error("audit event {found} stands where event {seq} belongs: the log was reordered")]
    OutOfOrder { seq: u64, found: u64 },
}

impl ChainBreak {
    /// The first chain position that is wrong.
    pub fn seq(&self) -> u64 {
        match *self {
            ChainBreak::LinkMismatch { seq }
            | ChainBreak::Gap { seq, .. }
            | ChainBreak::OutOfOrder { seq, .. } => seq,
        }
    }
}

/// Checks that `events` continue the chain from `anchor` = (events before the first, head
/// before the first), one position after another, each hashing to its link. Stops at the first
/// break. A missing event is told from a reordered one by looking one event ahead: if the event
/// that belongs here comes next, the two were swapped.
pub fn verify_chain<'a>(
    anchor: impl Into<AuditChain>,
    events: impl Iterator<Item = &'a ChainedAuditEvent>,
) -> Result<ChainCheck, ChainBreak> {
    let anchor: AuditChain = anchor.into();
    let mut chain = anchor;
    let mut checked = 0u64;
    let mut events = events.peekable();
    while let Some(event) = events.next() {
        let seq = chain.events.saturating_add(1);
        if event.seq < seq {
            return Err(ChainBreak::OutOfOrder { seq, found: event.seq });
        }
        if event.seq > seq {
            let swapped = events.peek().is_some_and(|next| next.seq == seq);
            return Err(if swapped {
                ChainBreak::OutOfOrder { seq, found: event.seq }
            } else {
                ChainBreak::Gap { seq, found: event.seq }
            });
        }
        if chain_link(&chain.head, &event.event) != event.link {
            return Err(ChainBreak::LinkMismatch { seq });
        }
        chain = AuditChain::after(event);
        checked += 1;
    }
    debug_assert_eq!(chain.events, anchor.events + checked, "one position per checked event");
    Ok(ChainCheck { events: checked, head: chain })
}

/// What changed in a transfer partner (persisted: variants only appended).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartnerChange {
    Created,
    /// Its public keys were replaced through the quorum.
    Rekeyed,
    Enabled {
        enabled: bool,
    },
}
