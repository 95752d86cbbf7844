//! The `kma` daemon: one Key Management Appliance. It wires the pure state machine
//! (`statemachine`) to Raft on RocksDB (`raft-storage`) and serves it over mutual TLS.
//!
//! This crate owns configuration, certificates, the network between KMAs, the write path (the
//! leader's time stamp, forwarding to the leader) and process life. It must not hold domain
//! rules: every decision about keys, roles and lifecycles is `statemachine`'s.
//!
//! Layers, each a folder whose `mod.rs` says what it owns and must never touch; imports run
//! one way only, down (`scripts/check-layers.sh` checks it in CI):
//! - [`listen`]: the routers of both listeners and their adapters (security API, health and
//!   metrics, the management API's node, the agent gateway's backend).
//! - [`write`]: the write path: proposals, the leader's stamp, batching, forwarding, intake,
//!   membership changes and the version gate, behind [`write::Proposer`].
//! - [`transport`]: TLS, Raft links, openraft's network, sending ahead, forward links, the
//!   accept loop, the wire types between KMAs.
//!
//! Beside them: [`kma`] wires one KMA together; [`leader`] holds the leader's duties (pulse,
//! promotion, pool refill) and [`duties`] every KMA's (vault in step, election watchdog,
//! communication errors into the audit log); [`departure`] takes out a KMA the cluster deleted;
//! [`ca_rotation`] runs this KMA's steps of a CA rotation; [`backup`] takes database and core
//! security backups (their files, and the schedule on a follower);
//! [`view`] is the read-only view of the KMA the listeners take; [`setup`] is `kma init`,
//! `join`, `reset`, `restore`, `recover-from-lost-majority`, `local` and the quickstart.
//! Foundations used by all: [`config`], [`pki`], [`vault`], [`login`], [`wire`] (messages on
//! the management listener) and [`client`] (a client for tools and tests).

pub mod backup;
pub mod ca_rotation;
pub mod client;
pub mod config;
pub mod departure;
pub mod duties;
pub mod kma;
pub mod leader;
pub mod listen;
pub mod login;
pub mod pki;
pub mod setup;
pub mod transport;
pub mod vault;
pub mod view;
pub mod wire;
pub mod write;
