//! Named bounds on everything that grows (STYLE 9). Past a bound, `apply` rejects with
//! `Reject::TooMany` or `Reject::InvalidText` instead of growing without limit.

pub const NAME_LEN_MAX: usize = 64;
pub const EXTERNAL_TAG_LEN_MAX: usize = 32;
pub const DESCRIPTION_LEN_MAX: usize = 128;
pub const DETAIL_LEN_MAX: usize = 256;
pub const FILE_NAME_LEN_MAX: usize = 256;
pub const VERIFIER_LEN_MAX: usize = 1024;
pub const PUBLIC_KEY_LEN_MAX: usize = 4096;
pub const SHARE_LEN_MAX: usize = 512;
/// The cluster CA's private key as the proposing KMA wrapped it under the master key (the key's
/// encoding, with AES-GCM's nonce and tag). An ECDSA P-256 key takes under 250 bytes even in
/// PEM, an RSA-4096 one about 2,400 in DER and 3,300 in PEM: room for either, and no more,
/// since the blob stays in every snapshot.
pub const WRAPPED_CA_KEY_LEN_MAX: usize = 4096;
/// A CA certificate's DER, as a CA rotation records it: an X.509v3 CA certificate with an
/// RSA-4096 key and a few extensions takes under 2,000 bytes; twice that leaves room, and the
/// certificate stays in every snapshot.
pub const CA_CERTIFICATE_DER_LEN_MAX: usize = 4096;

pub const SITES_MAX: usize = 256;
pub const KMAS_MAX: usize = 32;
pub const USERS_MAX: usize = 10_000;
/// Session certificates kept per user; a login beyond it drops the oldest. A user logs in from
/// a few terminals at once, and each session is short, so eight is room, and users times eight
/// stays a small part of the state.
pub const USER_SESSIONS_MAX: usize = 8;
pub const AGENTS_MAX: usize = 1_000_000;
/// Failed-proof windows the state keeps (`Meta::login_failures`): one per user and agent at
/// most, since only principals that exist are counted and a window goes with its principal.
pub const LOGIN_FAILURE_WINDOWS_MAX: usize = USERS_MAX + AGENTS_MAX;
pub const POLICIES_MAX: usize = 1_024;
pub const GROUPS_MAX: usize = 4_096;
pub const GROUPS_PER_AGENT_MAX: usize = 256;
pub const PARTNERS_MAX: usize = 256;
pub const BACKUPS_MAX: usize = 100_000;
pub const DATA_UNITS_MAX: u64 = 1_000_000_000;
pub const QUORUM_OPERATIONS_PENDING_MAX: usize = 64;
pub const QUORUM_OPERATION_TTL_MS_MAX: u64 = 30 * 24 * 3_600_000;

pub const POOL_KEYS_PER_COMMAND_MAX: usize = 1_024;
pub const KEY_POOL_HIGH_WATER_MAX: u32 = 2_000_000;
/// Every rekey adds one; a tape rekeyed this often has a policy problem, not a key problem.
pub const KEYS_PER_DATA_UNIT_MAX: usize = 1_024;
/// 1.x imports may share one key across many tapes (SPEC O8).
pub const DATA_UNITS_PER_KEY_MAX: usize = 100_000;
pub const KEYS_PER_COMMAND_MAX: usize = 10_000;
pub const DATA_UNITS_PER_COMMAND_MAX: usize = 10_000;
pub const IMPORT_KEYS_PER_COMMAND_MAX: usize = 50_000;
/// A pulse records at most this many transitions; the leader pulses again while more are due.
pub const PULSE_TRANSITIONS_MAX: usize = 10_000;
/// Envelopes the leader puts into one log entry (see [`crate::Batch`]).
pub const ENVELOPES_PER_ENTRY_MAX: usize = 256;

/// Outcomes remembered per client for retries (SPEC A6).
pub const CLIENT_OUTCOMES_KEPT: usize = 32;
/// Client sessions remembered per actor; the least recently used is forgotten first.
pub const CLIENT_SESSIONS_PER_ACTOR_MAX: usize = 64;

/// Longest period a policy may set: keys are kept for decades, not centuries.
pub const PERIOD_MS_MAX: u64 = 200 * 365 * 24 * 3_600_000;

/// Rows one page of an admin list returns at most (SPEC U2).
pub const LIST_PAGE_MAX: usize = 1_000;
/// Records one page may examine: a selective filter returns a short page and a cursor rather
/// than scanning the whole state in one request.
pub const LIST_SCAN_MAX: usize = 20_000;

/// Keys of one staged KMS 1.x import batch (issue 18 point 4): about 250 bytes each with the
/// longest description, so a batch stays far below what one forwarded proposal may carry
/// (`wire::REQUEST_BODY_LEN_MAX`, 2 MiB).
pub const IMPORT_1X_BATCH_KEYS_MAX: usize = 2_000;
/// Lines of one KMS 1.x file, imported all or nothing: its commit inserts them in one entry.
/// A larger export is split into files, each imported whole.
pub const IMPORT_1X_FILE_KEYS_MAX: usize = 250_000;
/// KMS 1.x imports staged at once: each holds its keys in every KMA's memory until it commits.
pub const IMPORTS_1X_STAGED_MAX: usize = 4;
/// A staged import whose KMA sent no batch for this long is dropped by the next pulse: its
/// KMA crashed or lost its client, and nothing of it was ever visible.
pub const IMPORT_1X_IDLE_MS: u64 = 3_600_000;

/// Data units one partner transfer file holds, and keys: one file is imported by one entry.
pub const TRANSFER_DATA_UNITS_MAX: usize = 5_000;
pub const TRANSFER_KEYS_MAX: usize = 5_000;
/// A transfer key pair's public keys: X25519, then Ed25519.
pub const TRANSFER_PUBLIC_KEYS_LEN: usize = 64;
/// Transfer files whose IDs are remembered against replay: decades of weekly shipments from
/// every partner.
pub const TRANSFER_FILES_MAX: usize = 100_000;
