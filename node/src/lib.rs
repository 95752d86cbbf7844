//! The `kma` daemon: one Key Management Appliance. It wires the pure state machine
//! (`statemachine`) to Raft on RocksDB (`raft-storage`) and serves it over mutual TLS.
//!
//! This crate owns configuration, certificates, the network between KMAs, the write path (the
//! leader's time stamp, forwarding to the leader) and process life. It must not hold domain
//! rules: every decision about keys, roles and lifecycles is `statemachine`'s.
//!
//! Module map:
//! - [`config`]: `kma.toml` and the data dir layout.
//! - [`pki`]: the cluster CA, KMA, user and agent certificates.
//! - [`tls`]: rustls configurations (TLS 1.3, mutual authentication).
//! - [`kma`]: one running KMA: Raft, propose/forward, status, digest, membership, pulse.
//!   [`batching`]: the leader's group commit of proposals into one log entry.
//!   [`parallel_append`]: the leader's new entries sent to the followers during its own sync.
//! - [`network`]: Raft RPCs to other KMAs, and their failures in the audit log.
//!   [`raft_link`]: the framed mutual-TLS streams they travel on. [`forward`]: proposals
//!   forwarded to the leader on such links.
//!   [`server`]: the management listener. [`admin`]: this KMA as the management API's node
//!   (`admin-api` serves the JSON API and `kmsctl` on the management listener).
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`. [`metrics`]: request metrics of both
//!   listeners and the Prometheus text format.
//! - [`wire`]: messages on the management listener. [`client`]: a client for tools and tests.
//! - [`setup`]: `kma init` and `kma join`. [`reset`]: `kma reset` (factory defaults, scrub). [`local`]: a whole cluster on one machine.
//! - [`vault`]: the master key in memory, sealed for autonomous unlock. [`login`]: passphrase
//!   challenges and throttling. [`security_api`]: login, join, quorum approvals.
//!   [`kma_security`]: the vault kept in step with the state, pool refills, joined KMAs.
//! - [`gateway_backend`]: this KMA as the agent gateway's backend (service listener).
//! - [`prompt`]: secrets typed in. [`quorum_flow`]: scripted quorum operations (local setups).

pub mod admin;
pub mod batching;
pub mod client;
pub mod config;
pub mod forward;
pub mod gateway_backend;
pub mod health;
pub mod kma;
pub mod kma_security;
pub mod local;
pub mod login;
pub mod metrics;
pub mod network;
pub mod parallel_append;
pub mod pki;
pub mod prompt;
pub mod quorum_flow;
pub mod raft_link;
pub mod reset;
pub mod security_api;
pub mod server;
pub mod setup;
pub mod tls;
pub mod vault;
pub mod wire;
