//! The TLS accept loop of both listeners. The loop itself is the agent gateway's
//! (`agent_gateway::server::serve_tls`, which its own tests run without a node); this module is
//! where the node's layers reach it, so that listeners never depend on how connections are
//! accepted.

pub use agent_gateway::server::{serve_tls, HandedOff, Handoff};
