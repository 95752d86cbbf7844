//! The vocabulary that crosses a socket between a KMA cluster and its clients (drives through
//! the agent gateway, `kmsctl` and scripts through the management and security APIs, other
//! KMAs forwarding a proposal): what an applied command answered, the one list of error codes
//! every API refuses with, and the error body of the management and security APIs.
//!
//! Client crates (the agent client library, `drive-sim`, `kmsctl`) depend on this crate and not
//! on the server's storage: it must never reach RocksDB, Raft, a file or a socket, and holds no
//! axum or hyper server code (the listeners map these types to their framework). Its
//! dependencies are serde, utoipa (the OpenAPI schema of the error body) and `statemachine`
//! (the `Reply` and `Reject` an applied command answers).
//!
//! Module map:
//! - [`apply_response`]: [`ApplyResponse`], what one command answered, with its log index.
//! - [`error_code`]: [`ErrorCode`], every refusal's code, its two spellings (the agent API's
//!   frozen snake_case, the kebab-case of the management and security APIs) and its HTTP status.
//! - [`error_body`]: [`ErrorBody`], the JSON body of every refusal of the management and
//!   security APIs.
//!
//! The codes are pinned by `tests/error_code_golden.rs`: a spelling or a status that changes
//! fails it, because installed drives and scripts match on them.

pub mod apply_response;
pub mod error_body;
pub mod error_code;

pub use apply_response::ApplyResponse;
pub use error_body::ErrorBody;
pub use error_code::ErrorCode;

/// Largest request body a KMA listener reads (management, security and agent routes). A larger
/// one is refused with [`ErrorCode::BodyTooLarge`] (HTTP 413). Bounds what one request can make
/// a KMA buffer; the largest legitimate body, a command on `statemachine::limits::
/// KEYS_PER_COMMAND_MAX` key IDs, is about 0.7 MB.
pub const REQUEST_BODY_LEN_MAX: usize = 2 * 1024 * 1024;
