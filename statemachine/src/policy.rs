//! Key policies and key groups (SPEC O1, O2).

use alloc::string::String;
use serde::{Deserialize, Serialize};

use crate::ids::{KeyGroupId, KeyPolicyId};

/// Lifecycle of the keys in the groups bound to it. The periods are fixed once created (changing
/// them would silently change the dates of keys in use); the import/export flags stay modifiable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPolicy {
    pub id: KeyPolicyId,
    pub name: String,
    pub encryption_period_ms: u64,
    pub cryptoperiod_ms: u64,
    pub allow_export: bool,
    pub allow_import: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGroup {
    pub id: KeyGroupId,
    pub name: String,
    pub policy: KeyPolicyId,
    pub created_at_ms: u64,
}
