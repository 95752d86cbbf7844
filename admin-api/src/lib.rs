//! The management API of a KMA cluster and its command-line client, `kmsctl` (SPEC U1–U3, S5,
//! O8, O9). The API is JSON over HTTPS with mutual TLS on each KMA's management listener; the
//! node mounts [`routes::router`] there and implements [`backend::AdminNode`]. Every change
//! goes through the state machine as a `Command`; this crate decides nothing about keys, roles or
//! lifecycles, it translates and renders. `kmsctl` is what operators install: this crate never
//! reaches a storage engine (it reads the state and the audit log only through `AdminNode`), and
//! its error vocabulary is the `wire` crate's, shared with the other APIs of a KMA.
//!
//! Module map:
//! - [`api`]: the JSON shapes (the public contract; `openapi.json` is generated from them),
//!   with the error body and codes of the `wire` crate.
//! - [`backend`]: [`backend::AdminNode`], what the API needs from a KMA (read the state and the
//!   audit log, wait for an index, propose, cluster health), implemented by the node and by an
//!   in-memory fake in the tests.
//! - [`routes`]: the axum handlers, one file per area, the OpenAPI document, and `extract`: the
//!   body, query and path extractors and the fallbacks, whose refusals are JSON too.
//! - [`import_1x`]: the KMS 1.x imports a KMA runs for its users: batches wrapped by the node,
//!   staged, committed at once, with their progress.
//! - [`transfer`]: the partner transfer work both `AdminNode`s run with their master key, and
//!   its refusals.
//! - [`view`]: state records → API shapes; audit events → audit records.
//! - [`client`]: the HTTPS client `kmsctl` uses (profiles, failover, typed errors).
//! - [`cli`]: `kmsctl`'s commands, tables and exit codes.

pub mod api;
pub mod backend;
pub mod cli;
pub mod client;
pub mod import_1x;
pub mod routes;
pub mod transfer;
pub mod view;
