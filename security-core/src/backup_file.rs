//! Database backups encrypted under a fresh backup key (SPEC B2, issue #17).
//!
//! Each backup gets its own random [`BackupKey`], so that no two backups share a key and the
//! master key never encrypts bulk data. The backup key travels next to the data file as a
//! *backup key file*: the key wrapped under a subkey of the master key of its own label
//! (AES-256-GCM, random 96-bit nonce), the AAD binding the blob header, the cluster ID and the
//! backup's UUID. So a key file opens only with this cluster's master key, and only for the
//! backup it was taken with; restoring needs the key file, the data file and the core security
//! backup (which holds the master key) of the same cluster.
//!
//! The data file is the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár
//! ("Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", 2015) over
//! AES-256-GCM, as `aead::stream::StreamBE32` implements it. A database does not fit in memory,
//! and a single AEAD message can only be checked once it has been read whole; STREAM cuts the
//! plaintext into chunks, each its own AEAD message under
//! `nonce = prefix (7 random bytes) || chunk counter (u32 BE) || last flag (1 for the last)`.
//! The counter refuses reordered, repeated or dropped chunks, the last flag refuses a file cut
//! short at a chunk boundary, and every chunk's AAD is the caller's file header, so that a
//! header cannot be swapped onto another data file; that header (the caller's) carries the
//! format version of the data file. The layout after it:
//!
//! ```text
//! nonce prefix (7 bytes) || { sealed length (u32 BE) || ciphertext || GCM tag (16 bytes) }*
//! ```
//!
//! Every chunk but the last holds exactly [`BACKUP_CHUNK_LEN`] bytes and the last holds fewer
//! (possibly none): the reader knows from a chunk's length whether it must be the last, holds
//! one chunk in memory, and tells truncation from damage without reading ahead. The backup key
//! has this one use, so it keys AES-256-GCM directly; the random prefix needs no uniqueness
//! across backups for the same reason.
//!
//! The plaintext a [`BackupOpener`] yields is authentic chunk by chunk, and whole only once
//! `read` returns 0: a restore writes into a staging place and commits only then.

use core::fmt;
use std::io::{self, Read, Write};

use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::Aes256Gcm;
use serde::{Deserialize, Serialize};
use statemachine::ClusterId;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::blob::{self, Kind};
use crate::crypto::{self, NONCE_LEN, TAG_LEN};
use crate::error::SecurityError;
use crate::master_key::MasterKey;

/// Length of a backup key in bytes (AES-256).
pub const BACKUP_KEY_LEN: usize = 32;
/// Plaintext bytes in every chunk of a data file but the last (1 MiB): large enough that the
/// 20 bytes of length and tag per chunk cost nothing, small enough to hold in memory.
pub const BACKUP_CHUNK_LEN: usize = 1 << 20;
/// Length of the random nonce prefix at the start of a data file (96-bit nonce minus the
/// 4-byte counter and the last flag).
pub const BACKUP_NONCE_PREFIX_LEN: usize = 7;
/// The most bytes one data file can hold: 2^32 - 1 full chunks (the counter of the last
/// chunk may be u32::MAX, no counter after it), then a last chunk of fewer than a full one.
pub const BACKUP_LEN_MAX: u64 = (u32::MAX as u64 + 1) * BACKUP_CHUNK_LEN as u64 - 1;

/// A sealed full chunk: its plaintext and the GCM tag.
const SEALED_CHUNK_LEN: usize = BACKUP_CHUNK_LEN + TAG_LEN;
/// Format version of backup key files.
const WRAP_VERSION: u8 = 1;
/// Label of the master key's subkey that wraps backup keys (no other key is wrapped under it).
const WRAP_LABEL: &[u8] = b"kma wrap backup key v1";

/// A backup's own key. Zeroized on drop; `Debug` prints `BackupKey(..)`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct BackupKey([u8; BACKUP_KEY_LEN]);

impl BackupKey {
    /// A new random backup key from the operating system's generator: one per backup.
    pub fn generate() -> BackupKey {
        BackupKey(crypto::random())
    }

    /// The key's bytes, for one purpose: handing the key to the restore drill of a scheduled
    /// backup (SPEC B5), a separate process, over a pipe. Never log or store them.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<[u8; BACKUP_KEY_LEN]> {
        zeroize::Zeroizing::new(self.0)
    }

    /// A key handed over by [`BackupKey::to_bytes`].
    pub fn from_bytes(bytes: &[u8; BACKUP_KEY_LEN]) -> BackupKey {
        BackupKey(*bytes)
    }
}

impl fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackupKey(..)")
    }
}

/// The body of a backup key file after the blob header.
#[derive(Serialize, Deserialize)]
struct WrappedBackupKeyV1 {
    nonce: [u8; NONCE_LEN],
    /// Backup key || GCM tag.
    sealed: Vec<u8>,
}

/// AAD of a backup key file: blob header || cluster ID (big-endian) || backup UUID.
fn wrap_aad(cluster_id: ClusterId, backup_uuid: &[u8; 16]) -> [u8; blob::HEADER_LEN + 8 + 16] {
    let mut aad = [0u8; blob::HEADER_LEN + 8 + 16];
    aad[..blob::HEADER_LEN].copy_from_slice(&blob::header(Kind::WrappedBackupKey, WRAP_VERSION));
    aad[blob::HEADER_LEN..blob::HEADER_LEN + 8].copy_from_slice(&cluster_id.0.to_be_bytes());
    aad[blob::HEADER_LEN + 8..].copy_from_slice(backup_uuid);
    aad
}

/// The backup key file of the backup `backup_uuid` of `cluster_id`: `key` wrapped under the
/// master key.
pub fn wrap_backup_key(
    master: &MasterKey,
    cluster_id: ClusterId,
    backup_uuid: &[u8; 16],
    key: &BackupKey,
) -> Vec<u8> {
    let subkey = master.subkey(WRAP_LABEL);
    let (nonce, sealed) = crypto::aead_seal(&subkey, &wrap_aad(cluster_id, backup_uuid), &key.0);
    blob::encode(Kind::WrappedBackupKey, WRAP_VERSION, &WrappedBackupKeyV1 { nonce, sealed })
}

/// Opens a backup key file made by [`wrap_backup_key`] for the same backup and cluster under
/// the same master key.
pub fn unwrap_backup_key(
    master: &MasterKey,
    cluster_id: ClusterId,
    backup_uuid: &[u8; 16],
    wrapped: &[u8],
) -> Result<BackupKey, SecurityError> {
    let body: WrappedBackupKeyV1 = blob::decode(wrapped, Kind::WrappedBackupKey, WRAP_VERSION)?;
    if body.sealed.len() != BACKUP_KEY_LEN + TAG_LEN {
        return Err(SecurityError::MalformedBlob { what: Kind::WrappedBackupKey.what() });
    }
    let subkey = master.subkey(WRAP_LABEL);
    let clear =
        crypto::aead_open(&subkey, &body.nonce, &wrap_aad(cluster_id, backup_uuid), &body.sealed)
            .ok_or(SecurityError::WrongBackupKey)?;
    let mut key = BackupKey([0; BACKUP_KEY_LEN]);
    // The sealed length was checked above, so the clear key is BACKUP_KEY_LEN bytes.
    key.0.copy_from_slice(clear.get(..BACKUP_KEY_LEN).ok_or(SecurityError::WrongBackupKey)?);
    Ok(key)
}

/// The `io::Error` that carries a refused data file: kind `InvalidData`, the cause inside.
fn invalid_data(error: SecurityError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// The `io::Error` of a stream that failed before and cannot go on.
fn abandoned() -> io::Error {
    io::Error::other(SecurityError::BackupStreamAbandoned)
}

/// Encrypts a database backup as it is written (see the module documentation for the format).
///
/// Chunks are written to `out` as they fill; [`BackupSealer::finish`] writes the last one. A
/// sealer dropped without `finish` leaves a data file that [`BackupOpener`] refuses as
/// truncated. After a failed write the sealer refuses every further call: take the backup again.
pub struct BackupSealer<W: Write> {
    out: W,
    encryptor: EncryptorBE32<Aes256Gcm>,
    header_aad: Vec<u8>,
    /// Plaintext of the chunk being filled; a full chunk is sealed by the next write or by
    /// `finish`, so that the last chunk is always shorter than a full one.
    chunk: Zeroizing<Vec<u8>>,
    broken: bool,
}

impl<W: Write> BackupSealer<W> {
    /// Starts a data file: writes a random nonce prefix to `out`. `header_aad` is the caller's
    /// file header (written before, by the caller), bound into every chunk.
    pub fn new(mut out: W, key: &BackupKey, header_aad: &[u8]) -> io::Result<Self> {
        let prefix = crypto::random::<BACKUP_NONCE_PREFIX_LEN>();
        out.write_all(&prefix)?;
        Ok(BackupSealer {
            out,
            encryptor: EncryptorBE32::new((&key.0).into(), (&prefix).into()),
            header_aad: header_aad.to_vec(),
            chunk: Zeroizing::new(Vec::with_capacity(SEALED_CHUNK_LEN)),
            broken: false,
        })
    }

    /// Seals the full chunk in the buffer as a chunk that is not the last, and writes it.
    fn seal_full_chunk(&mut self) -> io::Result<()> {
        debug_assert_eq!(self.chunk.len(), BACKUP_CHUNK_LEN);
        // STREAM refuses a chunk once the counter reaches u32::MAX (kept for the last chunk);
        // GCM's other limit, 64 GiB per message, is far above a chunk.
        self.encryptor.encrypt_next_in_place(&self.header_aad, &mut *self.chunk).map_err(|_| {
            io::Error::other(SecurityError::BackupTooLarge { len_max: BACKUP_LEN_MAX })
        })?;
        write_sealed_chunk(&mut self.out, &self.chunk)?;
        self.chunk.clear();
        Ok(())
    }

    /// Seals the last chunk (what is buffered, possibly nothing), writes it, flushes, and
    /// returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        if self.broken {
            return Err(abandoned());
        }
        if self.chunk.len() == BACKUP_CHUNK_LEN {
            self.seal_full_chunk()?;
        }
        let BackupSealer { mut out, encryptor, header_aad, mut chunk, .. } = self;
        // The last chunk has no counter limit, and it is under 1 MiB, far below GCM's 64 GiB
        // per message; a Vec buffer always has room for the tag.
        encryptor
            .encrypt_last_in_place(&header_aad, &mut *chunk)
            .expect("AES-GCM seals the last chunk of a backup (under 1 MiB)");
        write_sealed_chunk(&mut out, &chunk)?;
        out.flush()?;
        Ok(out)
    }
}

/// Writes one sealed chunk: its length (u32 big-endian), then ciphertext || tag.
fn write_sealed_chunk<W: Write>(out: &mut W, sealed: &[u8]) -> io::Result<()> {
    // A sealed chunk holds at most BACKUP_CHUNK_LEN + TAG_LEN bytes, far below u32::MAX.
    let len = u32::try_from(sealed.len()).expect("a sealed chunk is shorter than 4 GiB");
    out.write_all(&len.to_be_bytes())?;
    out.write_all(sealed)
}

impl<W: Write> Write for BackupSealer<W> {
    /// Buffers up to the end of the current chunk; seals and writes a full chunk first.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.broken {
            return Err(abandoned());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if self.chunk.len() == BACKUP_CHUNK_LEN {
            if let Err(error) = self.seal_full_chunk() {
                self.broken = true;
                return Err(error);
            }
        }
        let taken = buf.len().min(BACKUP_CHUNK_LEN - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..taken]);
        Ok(taken)
    }

    /// Flushes the output; a partial chunk stays buffered (only full chunks and the last one
    /// are ever sealed).
    fn flush(&mut self) -> io::Result<()> {
        if self.broken {
            return Err(abandoned());
        }
        self.out.flush()
    }
}

/// Decrypts and checks a data file written by [`BackupSealer`] as it is read.
///
/// `read` fails with `io::ErrorKind::InvalidData`, the [`SecurityError`] inside, when a chunk
/// does not open (damage, another backup key or header), the file ends before its last chunk,
/// goes on after it, or claims a chunk longer than any sealer writes. After a failure every
/// further call fails too: the plaintext already read must be thrown away.
pub struct BackupOpener<R: Read> {
    input: R,
    /// `None` once the last chunk was taken to be opened.
    decryptor: Option<DecryptorBE32<Aes256Gcm>>,
    header_aad: Vec<u8>,
    /// Plaintext of the current chunk and how much of it was read.
    chunk: Zeroizing<Vec<u8>>,
    chunk_read: usize,
    /// Chunks opened so far, for error messages.
    chunks_opened: u32,
    done: bool,
    broken: bool,
}

impl<R: Read> BackupOpener<R> {
    /// Starts reading a data file at its nonce prefix (the caller has read its header, and
    /// gives it as `header_aad`).
    pub fn new(mut input: R, key: &BackupKey, header_aad: &[u8]) -> io::Result<Self> {
        let mut prefix = [0u8; BACKUP_NONCE_PREFIX_LEN];
        read_exact_or_truncated(&mut input, &mut prefix, 0)?;
        Ok(BackupOpener {
            input,
            decryptor: Some(DecryptorBE32::new((&key.0).into(), (&prefix).into())),
            header_aad: header_aad.to_vec(),
            chunk: Zeroizing::new(Vec::with_capacity(SEALED_CHUNK_LEN)),
            chunk_read: 0,
            chunks_opened: 0,
            done: false,
            broken: false,
        })
    }

    /// Reads and opens the next chunk into the buffer; after the last one, checks that the
    /// input ends there.
    fn open_next_chunk(&mut self) -> io::Result<()> {
        let index = self.chunks_opened;
        self.chunk.clear();
        self.chunk_read = 0;
        let mut len_bytes = [0u8; 4];
        read_exact_or_truncated(&mut self.input, &mut len_bytes, index)?;
        let len = u32::from_be_bytes(len_bytes);
        // A u32 fits a usize on every platform this crate builds for (32 and 64 bits).
        let len_usize = len as usize;
        if len_usize > SEALED_CHUNK_LEN {
            return Err(invalid_data(SecurityError::BackupChunkTooLong {
                chunk: index,
                len,
                len_max: SEALED_CHUNK_LEN,
            }));
        }
        self.chunk.resize(len_usize, 0);
        read_exact_or_truncated(&mut self.input, &mut self.chunk, index)?;
        // Only the last chunk is shorter than a full one; the last flag in its nonce makes
        // sure that a chunk sealed as not the last cannot pass for it.
        let last = len_usize < SEALED_CHUNK_LEN;
        let opened = match (last, self.decryptor.take()) {
            (false, Some(mut decryptor)) => {
                let opened = decryptor.decrypt_next_in_place(&self.header_aad, &mut *self.chunk);
                self.decryptor = Some(decryptor);
                opened
            }
            (true, Some(decryptor)) => {
                decryptor.decrypt_last_in_place(&self.header_aad, &mut *self.chunk)
            }
            // The decryptor is taken only for the last chunk, after which `done` or `broken`
            // stops reading; refuse rather than panic should that ever change.
            (_, None) => Err(aes_gcm::aead::Error),
        };
        if opened.is_err() {
            return Err(invalid_data(SecurityError::BackupChunkDamaged { chunk: index }));
        }
        // The counter of an opened chunk that is not the last is below u32::MAX.
        self.chunks_opened = index.saturating_add(1);
        if last {
            expect_end(&mut self.input)?;
            self.done = true;
        }
        Ok(())
    }
}

/// `read_exact`, with an early end of input reported as a truncated data file.
fn read_exact_or_truncated<R: Read>(input: &mut R, buf: &mut [u8], chunks: u32) -> io::Result<()> {
    input.read_exact(buf).map_err(|error| match error.kind() {
        io::ErrorKind::UnexpectedEof => {
            invalid_data(SecurityError::BackupTruncated { chunks_opened: chunks })
        }
        _ => error,
    })
}

/// Succeeds when `input` has nothing after the last chunk.
fn expect_end<R: Read>(input: &mut R) -> io::Result<()> {
    let mut probe = [0u8; 1];
    loop {
        match input.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err(invalid_data(SecurityError::BackupTrailingBytes)),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
}

impl<R: Read> Read for BackupOpener<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.broken {
            return Err(abandoned());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        // Loops only past an empty last chunk: every other chunk holds BACKUP_CHUNK_LEN bytes.
        while self.chunk_read == self.chunk.len() {
            if self.done {
                return Ok(0);
            }
            if let Err(error) = self.open_next_chunk() {
                self.broken = true;
                self.chunk.zeroize();
                return Err(error);
            }
        }
        let available = &self.chunk[self.chunk_read..];
        let given = buf.len().min(available.len());
        buf[..given].copy_from_slice(&available[..given]);
        self.chunk_read += given;
        Ok(given)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: ClusterId = ClusterId(0x00c0_ffee_0000_0017);
    const UUID: [u8; 16] = [0x17; 16];

    /// Setup: a master key and a backup key. Action: wrap, unwrap. Expectation: the same key
    /// bytes back, and the key file does not hold them.
    #[test]
    fn b2_backup_key_file_round_trip() {
        let master = MasterKey::generate();
        let key = BackupKey::generate();
        let wrapped = wrap_backup_key(&master, CLUSTER, &UUID, &key);
        assert!(!wrapped.windows(16).any(|w| key.0.windows(16).any(|k| k == w)));
        let opened = unwrap_backup_key(&master, CLUSTER, &UUID, &wrapped).expect("opened");
        assert_eq!(opened.0, key.0);
        assert_ne!(BackupKey::generate().0, key.0);
    }

    /// Setup: a backup key file. Action: change its sealed length. Expectation: a malformed
    /// backup key file, not a wrong key.
    #[test]
    fn b2_backup_key_file_of_wrong_length_is_malformed() {
        let master = MasterKey::generate();
        let nonce = [0; NONCE_LEN];
        let short = WrappedBackupKeyV1 { nonce, sealed: vec![0; BACKUP_KEY_LEN + TAG_LEN - 1] };
        let wrapped = blob::encode(Kind::WrappedBackupKey, WRAP_VERSION, &short);
        assert_eq!(
            unwrap_backup_key(&master, CLUSTER, &UUID, &wrapped).map(drop),
            Err(SecurityError::MalformedBlob { what: "backup key file" })
        );
    }
}
