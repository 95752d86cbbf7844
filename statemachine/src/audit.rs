//! Audit events (SPEC S5): what `apply` returns besides its reply, in order. They never carry key
//! material, only IDs, states and names. Persisted for decades: variants are only appended.

use alloc::string::String;
use serde::{Deserialize, Serialize};

use crate::command::Actor;
use crate::data_unit::DataUnitState;
use crate::ids::{DataUnitId, KeyGroupId, KeyId, NodeId, RequestId};
use crate::key::KeyState;
use crate::permission::CommandKind;

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
}
