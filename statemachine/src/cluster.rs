//! Cluster-wide records: sites, KMAs, users and the settings a Security Officer controls.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::format::KmaVersion;
use crate::ids::{ClusterId, NodeId};
use crate::role::RoleSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: ClusterId,
    pub created_at_ms: u64,
}

/// The cluster CA's private key, wrapped under the master key by the KMA that recorded it (issue
/// 16 point 1): the state holds no clear CA key, so a copy of the state, a snapshot or a backup
/// mints no certificate without the master key. Only a KMA unwraps it, to sign a certificate.
/// `Debug` shows the bytes: they are wrapped, no secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedCaKey {
    /// SHA-256 of the DER of the CA certificate whose key this is: which CA it is, without
    /// unwrapping.
    pub ca_certificate_sha256: [u8; 32],
    /// Opaque here; at most [`crate::limits::WRAPPED_CA_KEY_LEN_MAX`] bytes.
    pub wrapped_key: Vec<u8>,
}

/// A rotation of the cluster CA that the quorum approved (issue 16 point 1): old disks hold the
/// old CA's key in clear, so the quorum can retire that CA. The state only records and checks;
/// the KMAs do the work, in three steps, each a command:
/// 1. an unlocked KMA makes the new CA, wraps its key under the master key and records both
///    (`Command::BeginCaRotation`): `new_ca`;
/// 2. every KMA that applies the log signs itself a certificate under the new CA and records
///    its fingerprint (`Command::RecordReissuedKmaCertificate`): `reissued`;
/// 3. once all have, a KMA completes it (`Command::CompleteCaRotation`): the new CA becomes the
///    cluster CA, each KMA's reissued certificate its certificate, and every user session ends;
///    the old CA is still trusted, until it is retired ([`RetiringCa`]);
/// 4. every KMA that applies the log records that it switched to its new certificate
///    (`Command::RecordCaAdopted`); once all have, the old CA is retired.
///
/// While it lasts, a listener accepts a KMA's recorded certificate and its reissued one
/// ([`crate::State::accepted_kma_certificates`]), and no KMA joins: a joiner's certificate would
/// come from the CA being retired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRotation {
    /// The time of the entry whose approval completed the quorum operation.
    pub approved_at_ms: u64,
    /// The quorum operation (`QuorumOperation::RotateCa`) that approved it.
    pub operation_id: u64,
    /// The new CA, once a KMA began the rotation; the first record wins.
    pub new_ca: Option<NewCa>,
    /// KMA name to the SHA-256 of the DER of the certificate it signed itself under the new CA;
    /// at most one per KMA that applies the log ([`crate::limits::KMAS_MAX`]). A deleted KMA
    /// leaves it.
    pub reissued: BTreeMap<String, [u8; 32]>,
}

/// The CA a rotation moves to: its certificate, which every KMA needs to trust the new
/// certificates (a KMA that was away learns it from here, and once the rotation is complete from
/// `Meta::ca_certificate_der`), and its private key wrapped under the master key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCa {
    /// The new CA certificate's DER: public, at most
    /// [`crate::limits::CA_CERTIFICATE_DER_LEN_MAX`] bytes.
    pub ca_certificate_der: Vec<u8>,
    /// Its key, and the certificate's fingerprint (SHA-256 of `ca_certificate_der`, checked).
    pub ca_key: WrappedCaKey,
}

/// The last phase of a CA rotation (issue 16 point 1): the rotation completed and the new CA is
/// the cluster CA, but every KMA still trusts the old one. A KMA starts presenting its new
/// certificate when it applies the completion, and until then presents its old one: were it
/// refused meanwhile, it could never receive the completion. So the old CA is refused only once
/// every KMA that applies the log has switched and recorded it (`Command::RecordCaAdopted`);
/// the entry that records the last one (or deletes the last KMA missing) sets
/// `Meta::retiring_ca` to `None`: the old CA is retired. No rotation starts and no KMA joins
/// meanwhile, so that the KMAs the retirement waits for can only become fewer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiringCa {
    /// SHA-256 of the DER of the old CA's certificate: the CA being retired.
    pub ca_certificate_sha256: [u8; 32],
    /// The time of the entry that completed the rotation.
    pub completed_at_ms: u64,
    /// The KMAs that recorded they present their certificate of the new CA; empty at the
    /// completion, at most one name per KMA that applies the log ([`crate::limits::KMAS_MAX`]).
    /// A deleted KMA leaves it.
    pub adopted: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub name: String,
    pub created_at_ms: u64,
}

/// Where a KMA is on its way into the cluster (SPEC C4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KmaStatus {
    /// Entry created by a Security Officer; the machine has not joined yet.
    Created,
    /// The quorum approved the join; the node may now be added as a learner.
    JoinApproved,
    /// A voting member that has caught up.
    Member,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kma {
    pub name: String,
    pub node_id: NodeId,
    pub site: String,
    pub status: KmaStatus,
    /// Argon2id-based verifier of the one-time join passphrase (opaque here).
    pub passphrase_verifier: Vec<u8>,
    /// A locked KMA hands out no key material (SPEC C6). New members start locked.
    pub locked: bool,
    /// Unlock by itself after a reboot (enabling it is a quorum operation).
    pub autonomous_unlock: bool,
    /// Highest state-machine format version the KMA's software understands (SPEC C7): the log
    /// format of its latest report (see [`crate::format`]); 0 when it never reported.
    pub software_version: u32,
    pub created_at_ms: u64,
    /// The KMA's latest full version report (log format 2, snapshot format 3); `None` before
    /// one, and again after a format-1 report, which carries the log format alone.
    pub version: Option<KmaVersion>,
    /// SHA-256 of the DER of the certificate this KMA holds (log format 3, snapshot format 4):
    /// recorded when its join is granted, before the certificate is handed out, so that every
    /// KMA knows it even before the joiner applied anything; or reported once by the KMA itself
    /// when it holds one from before (the first KMA, joins before format 3). `None` until then:
    /// see [`crate::State::kma_certificate_accepted`] for what the links accept meanwhile.
    pub certificate_sha256: Option<[u8; 32]>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub roles: RoleSet,
    pub enabled: bool,
    /// Challenge/response verifier of the user's passphrase (opaque here).
    pub passphrase_verifier: Vec<u8>,
    pub created_at_ms: u64,
    /// The session certificates this user holds (log format 3, snapshot format 4), oldest
    /// first, at most [`crate::limits::USER_SESSIONS_MAX`]: a listener accepts a user's
    /// certificate only when it is one of these (issue 16 point 2), so that disabling or
    /// deleting the user, or a new passphrase, which empty the list, revoke every certificate
    /// on every KMA, and a certificate minted with a stolen CA key is recorded nowhere.
    pub sessions: Vec<UserSession>,
}

/// A session certificate handed out at a login: its fingerprint and the end of its validity.
/// The fingerprint is no secret: it names a certificate, it does not prove holding its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSession {
    /// SHA-256 of the certificate's DER.
    pub certificate_sha256: [u8; 32],
    /// The certificate's end of validity; the session is dropped from the state once the time
    /// of an entry that records a session of the same user has passed it.
    pub expires_at_ms: u64,
}

/// The failed proofs of one principal in its current throttle window, as the replicated state
/// counts them (log format 3, snapshot format 4; issue 16 point 5): every KMA adds the failures
/// that any KMA proposed, so N KMAs together allow no more than `login_failures_max` per
/// window. See [`crate::State::login_throttled`] for what a KMA asks of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureWindow {
    /// The time of the entry that recorded the window's first failure; the window lasts
    /// [`SecuritySettings::login_throttle_ms`] from it.
    pub since_ms: u64,
    /// Failures recorded since, at least 1 (a window starts with its first failure); saturates.
    pub count: u32,
}

/// Settings a Security Officer controls (SPEC S2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecuritySettings {
    pub passphrase_len_min: u32,
    /// Failed logins before a user or source address is throttled.
    pub login_failures_max: u32,
    pub login_throttle_ms: u64,
    /// How long a quorum operation waits for approvals unless the starter says otherwise.
    pub quorum_operation_ttl_ms: u64,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            passphrase_len_min: 8,
            login_failures_max: 5,
            login_throttle_ms: 60_000,
            quorum_operation_ttl_ms: 24 * 3_600_000,
        }
    }
}

/// The water marks between which the leader keeps the key pool (SPEC O5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPoolLimits {
    pub low_water: u32,
    pub high_water: u32,
}

impl Default for KeyPoolLimits {
    fn default() -> Self {
        KeyPoolLimits { low_water: 1_000, high_water: 5_000 }
    }
}

/// Automatic database backups (SPEC B5): taken every `interval_ms` by the named KMA, or by the
/// leader when `kma` is empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSchedule {
    pub interval_ms: u64,
    pub kma: String,
}
