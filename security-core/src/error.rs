//! Why a security operation failed, phrased for the operator who has to act on it.
//!
//! No message carries a key, a share, a passphrase or a proof: errors end up in logs and on
//! screens. Wrong passphrases, wrong members and wrong clusters all read as
//! [`SecurityError::WrongPassphrase`], so that an error never tells a guesser which part was
//! wrong.

/// Every failure of this crate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    /// The passphrase (or the member, cluster or principal it is used for) does not match.
    #[error(
        "the passphrase does not match this member or principal: check it and try again; \
         failed attempts are counted"
    )]
    WrongPassphrase,

    /// A stored or received blob is truncated, altered or of another kind.
    #[error(
        "the {what} is damaged or is not a {what}: use an intact copy (from a backup or the \
         member's own records) or create it again"
    )]
    MalformedBlob { what: &'static str },

    /// A blob written by a newer format version than this build reads.
    #[error(
        "the {what} has format version {version}, which this build cannot read: upgrade this \
         KMA to the release that wrote it"
    )]
    UnsupportedVersion { what: &'static str, version: u8 },

    /// argon2id parameters outside the bounds in [`crate::kdf`].
    #[error(
        "argon2id parameters out of range ({memory_kib} KiB, {iterations} iterations, \
         parallelism {parallelism}): use {mem_min} to {mem_max} KiB (at least 8 per lane), 1 \
         to {it_max} iterations and 1 to {par_max} lanes, or the defaults (19456 KiB, 2, 1)",
        mem_min = crate::kdf::MEMORY_KIB_MIN,
        mem_max = crate::kdf::MEMORY_KIB_MAX,
        it_max = crate::kdf::ITERATIONS_MAX,
        par_max = crate::kdf::PARALLELISM_MAX
    )]
    KdfParamsOutOfRange { memory_kib: u32, iterations: u32, parallelism: u32 },

    /// A quorum needs 1 to `max` members.
    #[error("a quorum has 1 to {max} members, {count} were given: add or remove members")]
    QuorumSizeOutOfRange { count: usize, max: usize },

    /// The threshold must be between 1 and the number of members.
    #[error(
        "a threshold of {threshold} does not fit a quorum of {members} members: choose 1 to \
         {members}"
    )]
    ThresholdOutOfRange { threshold: u8, members: usize },

    /// Member IDs are 1 to `max` bytes.
    #[error("a quorum member ID is {len} bytes long: give each member an ID of 1 to {max} bytes")]
    MemberIdLength { len: usize, max: usize },

    /// Two members share one ID.
    #[error("the quorum member ID {member:?} is given twice: give each member its own ID")]
    DuplicateMember { member: String },

    /// A passphrase is empty or longer than the bound.
    #[error("the passphrase for {who} is {len} bytes long: choose one of 1 to {max} bytes")]
    PassphraseLength { who: String, len: usize, max: usize },

    /// Fewer shares than the quorum's threshold.
    #[error(
        "{given} quorum shares were given and this quorum needs {needed}: ask more quorum \
         members to enter their passphrases"
    )]
    NotEnoughShares { given: usize, needed: u8 },

    /// The same member's share was given twice.
    #[error(
        "the share of quorum member {member:?} was given twice: each member enters a \
         passphrase once"
    )]
    DuplicateShare { member: String },

    /// The shares do not rebuild one master key.
    #[error(
        "the quorum shares do not belong together (another cluster, an older quorum, or an \
         altered share): use shares of the current quorum of this cluster only"
    )]
    SharesDoNotMatch,

    /// A wrapped data key does not open under this master key.
    #[error(
        "a wrapped key does not open under this cluster's master key: it belongs to another \
         key ID or cluster, or its stored value is damaged; restore the key from a backup"
    )]
    KeyUnwrapFailed,

    /// A sealed master key does not open with this node's secret.
    #[error(
        "the sealed master key does not open with this KMA's secret (its TLS key changed, or \
         the file belongs to another cluster or is damaged): unlock this KMA with the quorum"
    )]
    UnsealFailed,

    /// A backup key file does not open for this backup under this master key.
    #[error(
        "the backup key file does not belong to this backup, or the master key is not this \
         cluster's: check that you gave the key file taken with this data file and the core \
         security backup of the same cluster"
    )]
    WrongBackupKey,

    /// A chunk of a backup data file fails its check: damaged, reordered, or opened with
    /// another backup key or header.
    #[error(
        "chunk {chunk} of the backup data file does not open: the file is damaged or altered, \
         or the backup key file or header given with it belongs to another backup; use the key \
         file taken with this data file, or another copy of the backup"
    )]
    BackupChunkDamaged { chunk: u32 },

    /// A backup data file ends before its last chunk.
    #[error(
        "the backup data file ends before its last chunk (after {chunks_opened} whole chunks): \
         it was cut short while being written or copied; use a complete copy of the backup"
    )]
    BackupTruncated { chunks_opened: u32 },

    /// A backup data file goes on after its last chunk.
    #[error(
        "the backup data file goes on after its last chunk: it was altered or joined with other \
         data; use an intact copy of the backup"
    )]
    BackupTrailingBytes,

    /// A chunk of a backup data file claims more bytes than a sealer ever writes.
    #[error(
        "chunk {chunk} of the backup data file claims {len} bytes, at most {len_max} are \
         possible: the file is damaged or is not a backup data file; use an intact copy of the \
         backup"
    )]
    BackupChunkTooLong { chunk: u32, len: u32, len_max: usize },

    /// A backup exceeds what one backup key may encrypt (2^32 chunks).
    #[error(
        "the backup is larger than {len_max} bytes, the most one backup key may encrypt: a \
         key manager's database never is, so report this as a bug"
    )]
    BackupTooLarge { len_max: u64 },

    /// A backup stream is used again after one of its reads or writes failed.
    #[error(
        "an earlier read or write of this backup failed, so it cannot go on: fix the cause of \
         that first error, then take the backup (or start the restore) again"
    )]
    BackupStreamAbandoned,

    /// A login message field is too long.
    #[error("the {field} of a login is {len} bytes long, at most {max} are accepted: shorten it")]
    FieldTooLong { field: &'static str, len: usize, max: usize },

    /// A login proof answers another challenge than the one pending (replayed or stale).
    #[error(
        "this login proof answers another challenge (it is stale or replayed): start the \
         login again"
    )]
    ChallengeMismatch,

    /// The server could not prove it holds the principal's verifier.
    #[error(
        "the server could not prove that it knows this principal's verifier: it may be an \
         impostor; stop, check the KMA's address and certificate, and tell a Security Officer"
    )]
    ServerNotAuthentic,
}
