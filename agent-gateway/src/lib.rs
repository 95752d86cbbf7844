//! The agent gateway: the service listener through which drives (agents) enroll and get their
//! keys, and the client library those drives link (SPEC A1–A6, C2, C3).
//!
//! This crate owns the agent protocol: JSON over HTTPS (HTTP/1.1 and HTTP/2, TLS 1.3 with the
//! agent's client certificate), who an agent is (its certificate's common name `agent:<ID>` and
//! the fingerprint recorded at enrollment), enrollment throttling, and the unwrapping of key
//! values on their way into an agent's TLS session. It must never decide a rule about keys or
//! data units (the state machine does, through [`Backend::propose`] and the state's queries),
//! never log or keep a clear key value, and never reach Raft or storage except through
//! [`Backend`].
//!
//! Module map:
//! - [`backend`]: [`Backend`], what the gateway needs from the KMA it runs in.
//! - [`server`]: [`serve`] (TLS listener) and [`router`]; peer certificates and the per-request
//!   check against the state; [`server::serve_tls`], the TLS server of both KMA listeners, with
//!   [`unread_body`], which reads what a refused request still sends before answering.
//!   `routes` holds the agent operations, `enroll` the enrollment challenge/response,
//!   `throttle` its in-memory tables; [`connections`], what bounds each listener's connections
//!   ([`ConnectionLimits`], [`ConnectionStats`]): how many, and for how long.
//! - [`wire`]: the JSON bodies and error codes, shared with the client; `error`: how the gateway
//!   turns rejects and backend errors into refusals, with the codes of the `wire` crate's
//!   `ErrorCode` in the agent spelling; `extract`: the body, query and path extractors whose
//!   rejections are refusals of that shape too.
//! - [`kmip`]: the KMIP listener ([`kmip::serve_kmip`]): TTLV over mutual TLS for tape libraries
//!   and other KMIP clients, who are agents too (issue 19).
//! - `handout`: one log line per key value handed to an agent (route, agent, key ID, index), never
//!   the value: what the chaos suite's checker compares with the committed log.
//! - [`epoch`]: the cluster epoch a certificate names (SPEC B7); the client refuses KMAs of an
//!   older epoch than one it has seen.
//! - [`client`]: [`AgentClient`] and [`enroll`](client::enroll), for drives and integrators.
//! - [`drive_sim`]: a fleet of simulated StorageTek or LTO4 drives writing and verifying
//!   encrypted tapes through [`AgentClient`] ([`run_fleet`](drive_sim::run_fleet)); the
//!   `drive-sim` binary is its command line.
//!
//! The protocol is described for integrators in `docs/agent-protocol.md`.

pub mod backend;
pub mod client;
pub mod connections;
pub mod drive_sim;
mod enroll;
pub mod epoch;
mod error;
mod extract;
mod handout;
pub mod kmip;
mod routes;
pub mod server;
pub mod throttle;
pub mod unread_body;
pub mod wire;

pub use backend::{Backend, BackendError, KmaEndpoint};
pub use client::{AgentClient, AgentCredentials, ClientError, ClientOptions};
pub use connections::{ConnectionLimits, ConnectionStats};
pub use server::{router, serve, serve_limited, Peer, PeerCertificate};
