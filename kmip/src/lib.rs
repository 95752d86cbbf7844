//! KMIP (OASIS Key Management Interoperability Protocol) as bytes and messages, for the KMA's
//! KMIP listener and for the tests and benches that play a tape library.
//!
//! - `ttlv`: the TTLV codec (items, bounds, errors with byte offsets).
//! - `tag`: the tags this server speaks, with names for logs.
//!
//! It owns no socket, clock, key or state: a server hands it bytes and gets items back, or the
//! reverse. It must never panic on input; `kmip-fuzz` (the binary) feeds it random and mutated
//! messages to hold it to that. It is a crate of its own, not a module of `agent-gateway`, so
//! that the fuzz harness and the test clients link it without a server.

pub mod tag;
pub mod ttlv;

pub use tag::Tag;
pub use ttlv::{decode, DecodeError, EncodeError, Item, ItemType, Limits, Value};

#[cfg(test)]
mod tests;
