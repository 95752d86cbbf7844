//! Cluster-wide records: sites, KMAs, users and the settings a Security Officer controls.

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
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub roles: RoleSet,
    pub enabled: bool,
    /// Challenge/response verifier of the user's passphrase (opaque here).
    pub passphrase_verifier: Vec<u8>,
    pub created_at_ms: u64,
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
