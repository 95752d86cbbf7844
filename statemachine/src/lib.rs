//! The KMA state machine: every rule of the key lifecycle, as a pure, deterministic function of
//! (state, command). Each KMA applies the same Raft log through [`State::apply`] and reaches the
//! same state, byte for byte.
//!
//! This crate owns the domain: managed objects, the role matrix, the lifecycle of keys and data
//! units, audit events, and the persisted formats of log entries and snapshots. It must never
//! reach a clock, a file, a socket, a random number generator or clear key material: time, IDs
//! and wrapped key values arrive inside commands, decided by the proposing node.
//!
//! Module map:
//! - [`command`]: the `Command` enum (one variant per mutation) and its `Envelope`.
//! - [`state`]: the `State` records and derived views; `apply` and its handlers live in
//!   `apply*.rs`, one file per area (cluster, catalog, keys, agent protocol, transfer/backup).
//! - [`permission`]: the access table (who may issue each command, read each part of the state),
//!   applied whole by `State::check_access`. [`reject`]: why a command or a read was refused,
//!   with frozen codes and a class for shells.
//! - [`format`]: the cluster version gate: the formats each KMA reads, the one the cluster
//!   reads, the one each command needs.
//! - [`key`], [`data_unit`], [`policy`], [`agent`], [`cluster`], [`quorum`], [`partner`],
//!   [`backup`]: the managed objects. [`audit`]: the events `apply` returns and the hash chain
//!   they form. [`reply`]: answers.
//! - [`query`]: reads for the gateway and the admin API (keys for a drive, impact previews,
//!   the approvers of a quorum operation, the keys a pool refill wants);
//!   [`list`]: paged, filtered lists for the admin API, bounded per page.
//! - `apply_ca_rotation`: the steps of a CA rotation the quorum approved
//!   ([`cluster::CaRotation`]) and of the old CA's retirement ([`cluster::RetiringCa`]), and
//!   [`State::ca_rotation`] and the reads after it in [`query`].
//! - `apply_backup`: backup records and restore drills, and the local ceremonies of a restore
//!   (`Command::RestoreCluster`) and of the recovery from a lost majority
//!   (`Command::RecoverFromLostMajority`), with [`State::core_security_backup_due`].
//! - `login_failure`: failed proofs of users and agents counted in the replicated state, so
//!   that N KMAs together allow no more than the limit ([`State::login_throttled`]).
//! - [`codec`]: versioned envelope and chunked snapshot encodings.
//! - [`migration`]: the KMS 1.x key file reader; [`import_1x`]: a file's keys staged in
//!   batches, invisible until one commit makes them all keys (issue 18 point 4). [`duration`]: `10d`-style durations.
//! - [`kmip`]: the KMIP side of keys KMIP clients made (attributes, activation, the state
//!   mapping, Locate), with its handlers in `apply_kmip` (issue 19).
//! - [`limits`]: every bound, named.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod access;
pub mod agent;
mod apply;
mod apply_agent;
mod apply_backup;
mod apply_ca_rotation;
mod apply_catalog;
mod apply_certificate;
mod apply_cluster;
mod apply_keys;
mod apply_kmip;
mod apply_transfer;
pub mod audit;
pub mod backup;
mod change;
mod check;
pub mod cluster;
pub mod codec;
pub mod command;
pub mod data_unit;
pub mod digest;
pub mod duration;
pub mod format;
pub mod ids;
pub mod import_1x;
mod invariants;
pub mod key;
pub mod kmip;
pub mod limits;
pub mod list;
mod login_failure;
pub mod migration;
pub mod partner;
pub mod permission;
pub mod policy;
pub mod query;
pub mod quorum;
pub mod reject;
pub mod reply;
pub mod role;
pub mod state;

pub use apply::Applied;
pub use audit::{
    verify_chain, AuditChain, AuditEvent, AuditLink, AuditWhat, ChainBreak, ChainCheck,
    ChainedAuditEvent, Outcome,
};
pub use command::{Actor, Batch, Command, Envelope};
pub use data_unit::DataUnitState;
pub use format::{Formats, KmaVersion, SoftwareVersion};
pub use ids::{ClusterId, DataUnitId, KeyGroupId, KeyId, KeyPolicyId, NodeId, RequestId};
pub use key::{KeyState, WrappedKey};
pub use permission::{Access, CommandKind, Issuer, Read};
pub use reject::{Reject, RejectClass};
pub use reply::Reply;
pub use role::{Role, RoleSet};
pub use state::State;
