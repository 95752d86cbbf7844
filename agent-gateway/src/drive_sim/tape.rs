//! A simulated tape: one file holding a header and fixed-size records, each encrypted with
//! AES-256-GCM under the key the drive got from the KMAs.
//!
//! Layout (all integers big endian):
//! - header, [`HEADER_LEN`] bytes: magic `DSIMTAP1`, VOLSER (8 bytes, zero padded), data unit
//!   flag (1) and ID (16), generation (8), seed (8), block length (4), zero padding;
//! - records from offset [`HEADER_LEN`], each [`record_len`] bytes: key ID (30), nonce (12),
//!   record number (8), ciphertext with its tag (block length + 16).
//!
//! The clear block of a record is a pure function of (seed, VOLSER, generation, record number),
//! so a read knows exactly what it must decrypt to. The generation grows on every write from
//! BOT, so a record left over from an earlier use of the tape never passes for a current one.
//! Fixed-size records keep a damaged byte confined to the record it falls in.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};
use statemachine::ids::KEY_ID_LEN;
use statemachine::{ClusterId, DataUnitId, KeyId};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

const MAGIC: &[u8; 8] = b"DSIMTAP1";
pub const HEADER_LEN: usize = 64;
const VOLSER_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Key ID, nonce and record number in front of each ciphertext.
const RECORD_HEAD_LEN: usize = KEY_ID_LEN + NONCE_LEN + 8;

/// What the header says about the tape's current contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapeHeader {
    pub volser: String,
    /// Created on the tape's first mount and kept for its whole life.
    pub data_unit: Option<DataUnitId>,
    pub generation: u64,
    pub seed: u64,
    pub block_len: usize,
}

/// One record as read back, not yet decrypted.
pub struct Record<'a> {
    pub key_id: KeyId,
    pub nonce: [u8; NONCE_LEN],
    pub record_no: u64,
    pub ciphertext: &'a [u8],
}

pub fn record_len(block_len: usize) -> usize {
    RECORD_HEAD_LEN + block_len + TAG_LEN
}

pub fn path_for(tape_dir: &Path, volser: &str) -> PathBuf {
    tape_dir.join(format!("{volser}.tape"))
}

impl TapeHeader {
    pub fn blank(volser: &str, seed: u64, block_len: usize) -> Self {
        TapeHeader { volser: volser.into(), data_unit: None, generation: 0, seed, block_len }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(MAGIC);
        let volser = self.volser.as_bytes();
        let volser_len = volser.len().min(VOLSER_LEN);
        out[8..8 + volser_len].copy_from_slice(&volser[..volser_len]);
        if let Some(data_unit) = self.data_unit {
            out[16] = 1;
            out[17..25].copy_from_slice(&data_unit.cluster_id.0.to_be_bytes());
            out[25..33].copy_from_slice(&data_unit.serial.to_be_bytes());
        }
        out[33..41].copy_from_slice(&self.generation.to_be_bytes());
        out[41..49].copy_from_slice(&self.seed.to_be_bytes());
        let block_len = u32::try_from(self.block_len).unwrap_or(u32::MAX);
        out[49..53].copy_from_slice(&block_len.to_be_bytes());
        out
    }

    /// `None` when the bytes are not a header this simulator wrote.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes = bytes.get(..HEADER_LEN)?;
        if &bytes[..8] != MAGIC || bytes[16] > 1 {
            return None;
        }
        let volser_bytes = &bytes[8..16];
        let end = volser_bytes.iter().position(|b| *b == 0).unwrap_or(VOLSER_LEN);
        let volser = std::str::from_utf8(&volser_bytes[..end]).ok()?.to_owned();
        let data_unit = (bytes[16] == 1).then(|| DataUnitId {
            cluster_id: ClusterId(be_u64(&bytes[17..25])),
            serial: be_u64(&bytes[25..33]),
        });
        let mut block_len = [0u8; 4];
        block_len.copy_from_slice(&bytes[49..53]);
        Some(TapeHeader {
            volser,
            data_unit,
            generation: be_u64(&bytes[33..41]),
            seed: be_u64(&bytes[41..49]),
            block_len: u32::from_be_bytes(block_len) as usize,
        })
    }

    /// What a record of this tape must decrypt to.
    pub fn block(&self, record_no: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.block_len + 32);
        let mut counter = 0u64;
        while out.len() < self.block_len {
            let mut hash = Sha256::new();
            hash.update(b"drive-sim block");
            hash.update(self.seed.to_be_bytes());
            hash.update(self.volser.as_bytes());
            hash.update(self.generation.to_be_bytes());
            hash.update(record_no.to_be_bytes());
            hash.update(counter.to_be_bytes());
            out.extend_from_slice(&hash.finalize());
            counter += 1;
        }
        out.truncate(self.block_len);
        out
    }

    /// Binds a ciphertext to its place: a record copied to another tape, generation or
    /// position fails authentication.
    fn aad(&self, record_no: u64) -> Vec<u8> {
        let mut aad = self.volser.as_bytes().to_vec();
        aad.extend_from_slice(&self.generation.to_be_bytes());
        aad.extend_from_slice(&record_no.to_be_bytes());
        aad
    }

    /// Encrypts record `record_no` under `cipher` (the key `key_id`) with a random nonce.
    pub fn seal(
        &self,
        cipher: &Aes256Gcm,
        key_id: &KeyId,
        record_no: u64,
    ) -> Result<Vec<u8>, aes_gcm::Error> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let block = self.block(record_no);
        let aad = self.aad(record_no);
        let payload = Payload { msg: &block, aad: &aad };
        let ciphertext = cipher.encrypt(Nonce::from_slice(&nonce), payload)?;
        let mut out = Vec::with_capacity(record_len(self.block_len));
        out.extend_from_slice(&key_id.0);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&record_no.to_be_bytes());
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Whether `record`, found at position `position`, decrypts to exactly what was written.
    pub fn verify(&self, cipher: &Aes256Gcm, record: &Record<'_>, position: u64) -> bool {
        if record.record_no != position {
            return false;
        }
        let aad = self.aad(position);
        let payload = Payload { msg: record.ciphertext, aad: &aad };
        match cipher.decrypt(Nonce::from_slice(&record.nonce), payload) {
            Ok(clear) => clear == self.block(position),
            Err(_) => false,
        }
    }

    /// The records that follow the header in `file`; a partial record at the end is left out
    /// (the caller sees it through [`TapeImage::torn_tail`]).
    pub fn records<'a>(&self, file: &'a [u8]) -> impl Iterator<Item = Record<'a>> + 'a {
        let body = file.get(HEADER_LEN..).unwrap_or_default();
        body.chunks_exact(record_len(self.block_len)).map(|chunk| {
            let mut key_id = [0u8; KEY_ID_LEN];
            key_id.copy_from_slice(&chunk[..KEY_ID_LEN]);
            let mut nonce = [0u8; NONCE_LEN];
            nonce.copy_from_slice(&chunk[KEY_ID_LEN..KEY_ID_LEN + NONCE_LEN]);
            Record {
                key_id: KeyId(key_id),
                nonce,
                record_no: be_u64(&chunk[KEY_ID_LEN + NONCE_LEN..RECORD_HEAD_LEN]),
                ciphertext: &chunk[RECORD_HEAD_LEN..],
            }
        })
    }
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(out)
}

/// A tape file as found on disk at mount or read time.
pub struct TapeImage {
    /// `None` when the file exists but its header is unreadable.
    pub header: Option<TapeHeader>,
    pub records: u64,
    /// Bytes after the last whole record (a torn or damaged write).
    pub torn_tail: bool,
    pub bytes: Vec<u8>,
}

/// Reads the tape file; `Ok(None)` when there is none yet.
pub async fn load(path: &Path) -> std::io::Result<Option<TapeImage>> {
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let header = TapeHeader::decode(&bytes);
    let (records, torn_tail) = match &header {
        Some(header) => {
            let body = bytes.len().saturating_sub(HEADER_LEN);
            let len = record_len(header.block_len);
            ((body / len) as u64, body % len != 0)
        }
        None => (0, false),
    };
    Ok(Some(TapeImage { header, records, torn_tail, bytes }))
}

/// Writes `header` and `records` (already sealed) at record position `from`, and cuts the file
/// there: a write ends the tape's valid data, as on a real tape.
pub async fn write(
    path: &Path,
    header: &TapeHeader,
    from: u64,
    records: &[Vec<u8>],
) -> std::io::Result<()> {
    let mut file =
        tokio::fs::OpenOptions::new().create(true).write(true).truncate(false).open(path).await?;
    file.write_all(&header.encode()).await?;
    let offset = HEADER_LEN as u64 + from * record_len(header.block_len) as u64;
    file.seek(SeekFrom::Start(offset)).await?;
    let mut written = 0u64;
    for record in records {
        file.write_all(record).await?;
        written += record.len() as u64;
    }
    file.set_len(offset + written).await?;
    file.flush().await
}

#[cfg(test)]
mod tests {
    use aes_gcm::KeyInit;

    use super::*;

    fn header() -> TapeHeader {
        let mut header = TapeHeader::blank("T00017", 42, 100);
        header.data_unit = Some(DataUnitId { cluster_id: ClusterId(7), serial: 9 });
        header.generation = 3;
        header
    }

    #[test]
    fn header_round_trips_and_rejects_foreign_bytes() {
        let header = header();
        assert_eq!(TapeHeader::decode(&header.encode()), Some(header));
        assert_eq!(TapeHeader::decode(&[0u8; HEADER_LEN]), None);
        assert_eq!(TapeHeader::decode(b"DSIMTAP1"), None);
    }

    #[test]
    fn a_sealed_record_verifies_only_in_its_place() {
        let header = header();
        let cipher = Aes256Gcm::new_from_slice(&[5u8; 32]).expect("key");
        let key_id = KeyId([1; KEY_ID_LEN]);
        let sealed = header.seal(&cipher, &key_id, 4).expect("seal");
        assert_eq!(sealed.len(), record_len(100));
        let mut file = header.encode().to_vec();
        file.extend_from_slice(&sealed);
        let record = header.records(&file).next().expect("one record");
        assert_eq!(record.key_id, key_id);
        assert!(header.verify(&cipher, &record, 4));
        assert!(!header.verify(&cipher, &record, 5), "another position");
        let mut later = header.clone();
        later.generation += 1;
        assert!(!later.verify(&cipher, &record, 4), "another generation");
        let last = file.len() - 1;
        file[last] ^= 1;
        let damaged = header.records(&file).next().expect("one record");
        assert!(!header.verify(&cipher, &damaged, 4), "a flipped bit");
    }
}
