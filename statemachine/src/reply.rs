//! What `apply` answers when a command succeeds.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::backup::RestoreSummary;
use crate::ids::{DataUnitId, KeyGroupId, KeyId, KeyPolicyId, NodeId};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Done,
    KmaCreated {
        node_id: NodeId,
    },
    KeyPolicyCreated {
        id: KeyPolicyId,
    },
    KeyGroupCreated {
        id: KeyGroupId,
    },
    QuorumOperationStarted {
        id: u64,
        expires_at_ms: u64,
    },
    QuorumApproval {
        id: u64,
        approvals: u32,
        threshold: u32,
        completed: bool,
    },
    PoolKeysAdded {
        count: u32,
        ready: bool,
    },
    Pulse {
        transitions: u32,
        more_due: bool,
    },
    DataUnitCreated {
        data_unit: DataUnitId,
    },
    /// The key a drive writes with; `reused` when it is the data unit's current
    /// protect-and-process key rather than a new one.
    WriteKey {
        data_unit: DataUnitId,
        key_id: KeyId,
        reused: bool,
    },
    KeysDisassociated {
        count: u32,
    },
    KeyAssociated {
        data_unit: DataUnitId,
        key_id: KeyId,
    },
    KeysChanged {
        count: u32,
    },
    Exported {
        keys: Vec<KeyId>,
        data_units: Vec<DataUnitId>,
    },
    Imported {
        keys: u32,
        duplicates: u32,
        data_units: u32,
    },
    BackupRecorded {
        id: u64,
    },
    /// What the restore restored (SPEC B3), for the ceremony's report.
    ClusterRestored(RestoreSummary),
    /// The survivor of a lost majority is now the one KMA (SPEC B7).
    RecoveredFromLostMajority {
        kmas_removed: u32,
        pool_keys_quarantined: u64,
        cluster_epoch: u32,
    },
    /// A batch of a 1.x import is staged: the import's keys so far, and how many of them were
    /// duplicates (issue 18 point 4).
    Staged1x {
        keys_received: u64,
        duplicates: u64,
    },
    /// A KMIP Create or Register: the key and the data unit it was bound to (issue 19).
    KmipKey {
        key_id: KeyId,
        data_unit: DataUnitId,
    },
}
