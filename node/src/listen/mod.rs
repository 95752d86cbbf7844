//! The top layer of a KMA: its two listeners' routers and the adapters that let the agent
//! gateway and the management API run on this KMA.
//!
//! - [`management`]: the management listener: its router, the node's own routes (proposals,
//!   status, digests, membership, the CA) and who may use them.
//! - [`security_api`]: logins, joins and quorum approvals; [`quorum_change`]: a new quorum,
//!   each new member entering their own passphrase; [`member_unlock`]: a locked KMA unlocked
//!   with the members' passphrases alone, when nobody can log in.
//! - [`backups`]: database and core security backups taken through this KMA (SPEC B1, B2).
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`; [`metrics`]: request metrics of both
//!   listeners; [`scrape`]: the rest of what `/metrics` reports.
//! - [`admin`]: this KMA as `admin_api`'s node; [`gateway_backend`]: as `agent_gateway`'s
//!   backend on the service listener.
//!
//! Each router takes the handles it needs (`write::Proposer`, `view::Local`, the logins, the
//! peer links), never the whole KMA. It may call down into `write/` and `transport/`; nothing
//! below may call up into it (`scripts/check-layers.sh`).

pub mod admin;
pub mod backups;
pub mod gateway_backend;
pub mod health;
pub mod management;
pub mod member_unlock;
pub mod metrics;
pub mod quorum_change;
pub mod scrape;
pub mod security_api;
