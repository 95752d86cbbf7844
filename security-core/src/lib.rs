//! The KMA's cryptography: everything that touches clear key material or a passphrase. The
//! state machine only ever sees what this crate makes from them (wrapped keys, check values,
//! wrapped shares, verifiers); the node holds the results in memory and on disk.
//!
//! This crate owns the master key, its quorum split, the wrapping of data keys, the sealing of the
//! master key to a node, the passphrase challenge/response and the encryption of database
//! backups. It must never reach a file, a socket, a clock or a log: it takes bytes (or a
//! caller's `io::Read`/`io::Write`) and returns bytes, so that no clear value can leak through
//! it into storage or output. Randomness comes from the operating system (`OsRng`).
//!
//! Module map:
//! - [`master_key`]: [`MasterKey`], the cluster's root key, and its check value.
//! - [`kdf`]: [`KdfParams`] for argon2id, the only passphrase hash used.
//! - [`quorum_shares`]: the M-of-N Shamir split of the master key, one share per quorum member,
//!   each wrapped under that member's passphrase (SPEC S3, S4).
//! - [`key_wrap`]: [`KeyMaterial`] of data keys wrapped under the master key, check values, new
//!   pool keys ready to propose.
//! - [`seal`]: the master key sealed to a node's own secret, for autonomous unlock (SPEC C6).
//! - [`ca_key`]: the cluster CA's private key wrapped under the master key (issue #16).
//! - [`backup_file`]: database backups encrypted as they stream under a fresh [`BackupKey`],
//!   and the backup key file that holds that key wrapped under the master key (SPEC B2).
//! - [`transfer`]: the cluster's transfer key pair (X25519, Ed25519) wrapped under the master
//!   key, and the partner transfer file: HPKE-sealed to the receiver, signed by the sender
//!   (SPEC T1–T4).
//! - [`challenge`]: passphrase login in the shape of SCRAM over argon2id (SPEC A1, S2).
//! - [`error`]: [`SecurityError`], each message telling the operator what to do next.
//!
//! Persisted blobs (wrapped shares, sealed master keys, verifiers) start with a format version
//! byte and a kind byte, then a postcard body: they must stay readable for a decade. Secret types
//! are zeroized on drop and print as `Name(..)`; none implements `Display`.
#![forbid(unsafe_code)]

pub mod backup_file;
mod blob;
pub mod ca_key;
pub mod challenge;
mod crypto;
pub mod error;
pub mod kdf;
pub mod key_wrap;
pub mod master_key;
pub mod quorum_shares;
pub mod seal;
pub mod transfer;

pub use backup_file::{
    unwrap_backup_key, wrap_backup_key, BackupKey, BackupOpener, BackupSealer, BACKUP_CHUNK_LEN,
};
pub use challenge::{
    create_verifier, verifier_kdf, ChannelBinding, ClientAwaitingServer, ClientHello, ClientLogin,
    ClientProof, ServerChallenge, ServerFinal, ServerLogin,
};
pub use error::SecurityError;
pub use kdf::KdfParams;
pub use key_wrap::{check_value, new_pool_key, new_pool_keys, unwrap_key, wrap_key, KeyMaterial};
pub use master_key::MasterKey;
pub use quorum_shares::{
    combine_shares, split_master_key, split_master_key_unwrapped, unwrap_share, wrap_member_share,
    Share,
};
pub use seal::{seal_master_key, unseal_master_key};
