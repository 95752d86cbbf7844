//! KMIP (OASIS Key Management Interoperability Protocol) as bytes and messages, for the KMA's
//! KMIP listener and for the tests and benches that play a tape library.
//!
//! - `ttlv`: the TTLV codec (items, bounds, errors with byte offsets).
//! - `tag`: the tags this server speaks, with names for logs.
//! - `enums`: the enumerations (operations, result reasons, states …) as newtypes over the
//!   wire value, so an unknown value can be answered rather than fail to parse.
//! - `message`: Request and Response Messages: the header, batch items, protocol versions.
//! - `attribute`: attributes in 1.x's name/value spelling and 2.0's tagged one, read into one
//!   shape.
//! - `client`: the client's side (a request built, a response read), for tests and benches.
//!
//! It owns no socket, clock, key or state: a server hands it bytes and gets items back, or the
//! reverse. It must never panic on input; `kmip-fuzz` (the binary) feeds it random and mutated
//! messages to hold it to that. It is a crate of its own, not a module of `agent-gateway`, so
//! that the fuzz harness and the test clients link it without a server.

pub mod attribute;
pub mod client;
pub mod enums;
pub mod message;
pub mod tag;
pub mod ttlv;

pub use message::{Failure, ProtocolVersion, Request, RequestError};
pub use tag::Tag;
pub use ttlv::{decode, DecodeError, EncodeError, Item, ItemType, Limits, Value};

#[cfg(test)]
mod tests;
