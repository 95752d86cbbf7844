//! The persisted forms: log entries (envelopes) and snapshots, each opening with a format
//! version byte, since keys must stay readable for more than a decade (SPEC "Serialization").
//! Every older version is read (the golden tests hold one file of each); the version gate of
//! [`crate::format`] says when a newer one may be written.
//!
//! A log entry's version byte is the log format its command needs (`Command::format_needed`):
//! an entry that an older KMA can apply is written so that it reads it.
//!
//! A snapshot is a stream of length-prefixed records (cluster records, then every key, then every
//! data unit, then a trailer with the counts), so a node can write or install one chunk at a time
//! at 10 million keys instead of holding a second copy of the whole state. It is written in the
//! newest format; `older` holds the shapes of the earlier ones.

mod older;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::command::{Envelope, Legacy1xKey};
use crate::data_unit::DataUnit;
use crate::format::{LOG_FORMAT_BASELINE, LOG_FORMAT_MAX};
use crate::ids::{DataUnitId, KeyId, KEY_ID_LEN};
use crate::key::Key;
use crate::kmip::KmipObject;
use crate::state::{Meta, State};

/// The newest log-entry format this software reads: 1 before issue 15; 2 adds the commands of
/// log format 2, 3 those of format 3 (see [`crate::format`]). Each entry is written at the format its command needs.
pub const ENVELOPE_FORMAT_VERSION: u8 = LOG_FORMAT_MAX as u8;
/// The snapshot format written. 1: before the audit chain. 2: `Meta` ends with `audit_chain`.
/// 3: a KMA record ends with its full version report (`Kma::version`). 4: a KMA record ends
/// with its certificate's fingerprint (`Kma::certificate_sha256`), a user record with its
/// session certificates (`User::sessions`), and `Meta` with the cluster CA's wrapped key
/// (`Meta::ca_key`), then the failed-proof windows (`Meta::login_failures`), the CA rotation
/// under way (`Meta::ca_rotation`), the rotated CA's certificate (`Meta::ca_certificate_der`)
/// and the CA being retired (`Meta::retiring_ca`); and (issue 17, before format 4's release) a
/// backup record with who took it, its size, digests, UUID and drill (`Backup::taken_by` and
/// after), and `Meta` with the quorum version and the cluster epoch
/// (`Meta::quorum_changed_index`, `Meta::cluster_epoch`); and (issue 18, before the release)
/// `Meta` with the staged 1.x imports (`Meta::imports_1x`), their keys in records of their own
/// after the data units; and (issue 19, before the release) `Meta` with the agents that may
/// revoke and destroy over KMIP (`Meta::kmip_revokers`), and the KMIP objects in records of their
/// own after the staged keys.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 4;
/// A single record larger than this is corruption, not data (the largest real one is `Meta`).
const SNAPSHOT_RECORD_LEN_MAX: usize = 256 * 1024 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("empty {what}")]
    Empty { what: &'static str },
    /// `supported` is the newest version read; every one from 1 up is.
    #[error(
        "{what} has format version {found}; this software reads versions 1 to \
         {supported}: upgrade the KMA software"
    )]
    UnknownVersion { what: &'static str, found: u8, supported: u8 },
    /// No longer returned since issue 15: every older version is read. Kept for callers that
    /// match on it.
    #[error(
        "{what} has format version {found}, written by an older KMA software; this software \
         reads version {supported} only: run one software version on every KMA of the cluster"
    )]
    OlderVersion { what: &'static str, found: u8, supported: u8 },
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

/// The entry's bytes: the log format its command needs, then the postcard encoding.
pub fn encode_envelope(envelope: &Envelope) -> Vec<u8> {
    let format = envelope.command.format_needed();
    assert!(format <= LOG_FORMAT_MAX, "a command needs a log format this software writes");
    let mut bytes = Vec::with_capacity(64);
    bytes.push(format as u8);
    // Encoding plain data into a growing vector cannot fail.
    match postcard::to_extend(envelope, bytes) {
        Ok(bytes) => bytes,
        Err(_) => unreachable!("postcard encodes owned data into a Vec without error"),
    }
}

/// Reads an entry of any log format up to [`ENVELOPE_FORMAT_VERSION`]. The layout has not
/// changed since format 1; a command newer than its entry's format is corruption.
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, CodecError> {
    const WHAT: &str = "log entry";
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty { what: WHAT })?;
    if !(LOG_FORMAT_BASELINE..=LOG_FORMAT_MAX).contains(&u16::from(version)) {
        return Err(CodecError::UnknownVersion {
            what: WHAT,
            found: version,
            supported: ENVELOPE_FORMAT_VERSION,
        });
    }
    let (envelope, rest): (Envelope, _) =
        postcard::take_from_bytes(body).map_err(|e| corrupt(WHAT, e))?;
    if !rest.is_empty() {
        return Err(CodecError::Corrupt { what: WHAT, detail: "trailing bytes".into() });
    }
    let needed = envelope.command.format_needed();
    if needed > u16::from(version) {
        let detail = alloc::format!("a command of log format {needed} in an entry of {version}");
        return Err(CodecError::Corrupt { what: WHAT, detail });
    }
    Ok(envelope)
}

fn corrupt(what: &'static str, error: impl ToString) -> CodecError {
    CodecError::Corrupt { what, detail: error.to_string() }
}

/// Borrowing twin of [`SnapshotRecord`]: the same encoding, without cloning the state.
#[derive(Serialize)]
enum SnapshotRecordRef<'a> {
    Meta(&'a Meta),
    Key(&'a Key),
    DataUnit(&'a DataUnit),
    End {
        keys: u64,
        data_units: u64,
    },
    /// A key of a KMS 1.x import being staged (snapshot format 4, issue 18), between the data
    /// units and the trailer.
    Staged1xKey {
        import_id: u64,
        key: &'a Legacy1xKey,
    },
    /// The KMIP side of a key (snapshot format 4, issue 19), after the staged keys.
    KmipObject {
        key_id: KeyId,
        object: &'a KmipObject,
    },
}

/// A snapshot record as read, its cluster record of shape `M`: today's `Meta`, or that of an
/// older format (see `older`).
#[derive(Deserialize)]
enum SnapshotRecord<M = Meta> {
    Meta(Box<M>),
    Key(Key),
    DataUnit(DataUnit),
    End { keys: u64, data_units: u64 },
    Staged1xKey { import_id: u64, key: Legacy1xKey },
    KmipObject { key_id: KeyId, object: KmipObject },
}

impl<M> SnapshotRecord<M> {
    fn upgrade(self, meta: impl FnOnce(M) -> Meta) -> SnapshotRecord {
        match self {
            SnapshotRecord::Meta(old) => SnapshotRecord::Meta(Box::new(meta(*old))),
            SnapshotRecord::Key(key) => SnapshotRecord::Key(key),
            SnapshotRecord::DataUnit(unit) => SnapshotRecord::DataUnit(unit),
            SnapshotRecord::End { keys, data_units } => SnapshotRecord::End { keys, data_units },
            SnapshotRecord::Staged1xKey { import_id, key } => {
                SnapshotRecord::Staged1xKey { import_id, key }
            }
            SnapshotRecord::KmipObject { key_id, object } => {
                SnapshotRecord::KmipObject { key_id, object }
            }
        }
    }
}

/// Reads one record of snapshot format `version` as today's.
fn decode_record(version: u8, body: &[u8]) -> Result<SnapshotRecord, CodecError> {
    fn record<M: DeserializeOwned>(body: &[u8]) -> Result<SnapshotRecord<M>, CodecError> {
        postcard::from_bytes(body).map_err(|e| corrupt(SNAPSHOT, e))
    }
    match version {
        1 => Ok(record::<older::MetaV1>(body)?.upgrade(older::MetaV1::into_meta)),
        2 => Ok(record::<older::MetaV2>(body)?.upgrade(older::MetaV2::into_meta)),
        3 => Ok(record::<older::MetaV3>(body)?.upgrade(older::MetaV3::into_meta)),
        _ => record(body),
    }
}

/// Writes a snapshot in chunks of about `chunk_len` bytes (each holds whole records).
pub fn snapshot_chunks(state: &State, chunk_len: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    let head = core::iter::once(SnapshotRecordRef::Meta(&state.meta));
    let keys = state.keys.values().map(|key| SnapshotRecordRef::Key(key));
    let units = state.data_units.values().map(SnapshotRecordRef::DataUnit);
    let staged = state
        .staged_1x
        .iter()
        .map(|((import_id, _), key)| SnapshotRecordRef::Staged1xKey { import_id: *import_id, key });
    let kmip = state
        .kmip
        .iter()
        .map(|(key_id, object)| SnapshotRecordRef::KmipObject { key_id: *key_id, object });
    let end = core::iter::once(SnapshotRecordRef::End {
        keys: state.keys.len() as u64,
        data_units: state.data_units.len() as u64,
    });
    let mut records = head.chain(keys).chain(units).chain(staged).chain(kmip).chain(end).peekable();
    let mut first = true;
    core::iter::from_fn(move || {
        records.peek()?;
        let mut chunk = Vec::with_capacity(chunk_len.min(1 << 20) + 64);
        if core::mem::take(&mut first) {
            chunk.push(SNAPSHOT_FORMAT_VERSION);
        }
        while chunk.len() < chunk_len {
            let Some(record) = records.next() else { break };
            append_record(&mut chunk, &record);
        }
        Some(chunk)
    })
}

fn append_record(chunk: &mut Vec<u8>, record: &SnapshotRecordRef<'_>) {
    let at = chunk.len();
    chunk.extend_from_slice(&[0; 4]);
    let taken = core::mem::take(chunk);
    *chunk = match postcard::to_extend(record, taken) {
        Ok(bytes) => bytes,
        Err(_) => unreachable!("postcard encodes plain data into a Vec without error"),
    };
    let len = (chunk.len() - at - 4) as u32;
    chunk[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// The whole snapshot in one buffer (tests, small states).
pub fn encode_snapshot(state: &State) -> Vec<u8> {
    snapshot_chunks(state, usize::MAX).flatten().collect()
}

pub fn decode_snapshot(bytes: &[u8]) -> Result<State, CodecError> {
    let mut reader = SnapshotReader::new();
    reader.push(bytes)?;
    reader.finish()
}

/// Rebuilds a state from snapshot bytes fed in pieces of any size, of any snapshot format from
/// 1 to [`SNAPSHOT_FORMAT_VERSION`].
#[derive(Default)]
pub struct SnapshotReader {
    pending: Vec<u8>,
    /// The format of the snapshot, once its first byte was read.
    version: Option<u8>,
    meta: Option<Meta>,
    keys: Vec<(KeyId, Box<Key>)>,
    data_units: Vec<(DataUnitId, DataUnit)>,
    staged_1x: Vec<((u64, KeyId), Legacy1xKey)>,
    kmip: Vec<(KeyId, KmipObject)>,
    end: Option<(u64, u64)>,
}

const SNAPSHOT: &str = "snapshot";

impl SnapshotReader {
    pub fn new() -> Self {
        SnapshotReader::default()
    }

    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), CodecError> {
        let version = match self.version {
            Some(version) => version,
            None => {
                let Some((&version, rest)) = bytes.split_first() else { return Ok(()) };
                if !(1..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
                    return Err(CodecError::UnknownVersion {
                        what: SNAPSHOT,
                        found: version,
                        supported: SNAPSHOT_FORMAT_VERSION,
                    });
                }
                self.version = Some(version);
                bytes = rest;
                version
            }
        };
        self.pending.extend_from_slice(bytes);
        let mut consumed = 0;
        while let Some(header) = self.pending.get(consumed..consumed + 4) {
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            if len > SNAPSHOT_RECORD_LEN_MAX {
                return Err(CodecError::Corrupt {
                    what: SNAPSHOT,
                    detail: alloc::format!("record of {len} bytes"),
                });
            }
            let Some(body) = self.pending.get(consumed + 4..consumed + 4 + len) else { break };
            let record = decode_record(version, body)?;
            consumed += 4 + len;
            self.accept(record)?;
        }
        self.pending.drain(..consumed);
        Ok(())
    }

    fn accept(&mut self, record: SnapshotRecord) -> Result<(), CodecError> {
        let out_of_order =
            |detail: &str| CodecError::Corrupt { what: SNAPSHOT, detail: detail.into() };
        if self.end.is_some() {
            return Err(out_of_order("record after the trailer"));
        }
        match record {
            SnapshotRecord::Meta(meta) if self.meta.is_none() => self.meta = Some(*meta),
            SnapshotRecord::Meta(_) => return Err(out_of_order("second cluster record")),
            _ if self.meta.is_none() => return Err(out_of_order("cluster record missing")),
            SnapshotRecord::Key(key) => {
                if !self.data_units.is_empty()
                    || self.keys.last().is_some_and(|(id, _)| *id >= key.id)
                {
                    return Err(out_of_order("keys out of order"));
                }
                self.keys.push((key.id, Box::new(key)));
            }
            SnapshotRecord::DataUnit(_) if !self.staged_1x.is_empty() || !self.kmip.is_empty() => {
                return Err(out_of_order("data unit after a staged key or a KMIP object"));
            }
            SnapshotRecord::Staged1xKey { .. } if !self.kmip.is_empty() => {
                return Err(out_of_order("staged key after a KMIP object"));
            }
            SnapshotRecord::KmipObject { key_id, object } => {
                if self.kmip.last().is_some_and(|(last, _)| *last >= key_id) {
                    return Err(out_of_order("KMIP objects out of order"));
                }
                self.kmip.push((key_id, object));
            }
            SnapshotRecord::Staged1xKey { import_id, key } => {
                let at = (import_id, key.id);
                if self.staged_1x.last().is_some_and(|(last, _)| *last >= at) {
                    return Err(out_of_order("staged keys out of order"));
                }
                self.staged_1x.push((at, key));
            }
            SnapshotRecord::DataUnit(unit) => {
                if self.data_units.last().is_some_and(|(id, _)| *id >= unit.id) {
                    return Err(out_of_order("data units out of order"));
                }
                self.data_units.push((unit.id, unit));
            }
            SnapshotRecord::End { keys, data_units } => self.end = Some((keys, data_units)),
        }
        Ok(())
    }

    pub fn finish(self) -> Result<State, CodecError> {
        let truncated =
            |detail: &str| CodecError::Corrupt { what: SNAPSHOT, detail: detail.into() };
        let (keys, data_units) = self.end.ok_or_else(|| truncated("truncated: no trailer"))?;
        if !self.pending.is_empty() {
            return Err(truncated("bytes after the trailer"));
        }
        if keys != self.keys.len() as u64 || data_units != self.data_units.len() as u64 {
            return Err(truncated("record counts differ from the trailer"));
        }
        let meta = self.meta.ok_or_else(|| truncated("cluster record missing"))?;
        let keys: BTreeMap<KeyId, Box<Key>> = self.keys.into_iter().collect();
        let data_units: BTreeMap<DataUnitId, DataUnit> = self.data_units.into_iter().collect();
        let staged_1x: BTreeMap<(u64, KeyId), Legacy1xKey> = self.staged_1x.into_iter().collect();
        let staged_of = |import_id: u64| {
            staged_1x
                .range(
                    (import_id, KeyId([0; KEY_ID_LEN]))..=(import_id, KeyId([u8::MAX; KEY_ID_LEN])),
                )
                .count()
        };
        let orphan =
            staged_1x.keys().any(|(import_id, _)| !meta.imports_1x.contains_key(import_id));
        let over =
            meta.imports_1x.iter().any(|(id, staged)| staged_of(*id) as u64 > staged.keys_received);
        if orphan || over {
            return Err(truncated("staged 1.x keys differ from their imports"));
        }
        let kmip: BTreeMap<KeyId, KmipObject> = self.kmip.into_iter().collect();
        if kmip.keys().any(|key_id| !keys.contains_key(key_id)) {
            return Err(truncated("a KMIP object of a key the snapshot does not hold"));
        }
        Ok(State::from_records(meta, keys, data_units, staged_1x, kmip))
    }
}
