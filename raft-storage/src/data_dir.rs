//! The data dir of one KMA: a RocksDB database (`rocksdb/`) shared by the log store and the state
//! machine, and the snapshot files (`snapshots/`).
//!
//! Every value written to RocksDB opens with [`FORMAT_VERSION`], so that a newer or damaged data
//! dir is refused with a clear error instead of being misread (SPEC "Serialization").

use std::fmt::Display;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::statistics::{StatsLevel, Ticker};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, ErrorKind, IteratorMode, Options, WriteBatch,
    WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{StorageError, HELP_DISK, HELP_LOCKED, HELP_RESTORE};
use crate::write_stages::{Stage, WriteStages};

/// First byte of every RocksDB value this crate writes, and the database's format marker.
/// 1: a log entry carried one envelope (development builds before 2026-12). 2: a log entry
/// carries a `statemachine::Batch`. 3: audit rows are chained (`statemachine::
/// ChainedAuditEvent`), the audit anchors are recorded, and snapshots carry the chain head.
/// A database of another version is refused on open, never misread; a KMA of an older format
/// rejoins its cluster and catches up from a snapshot.
pub const FORMAT_VERSION: u8 = 3;

/// Log entries, keyed by index (big endian u64).
pub(crate) const CF_LOG: &str = "log";
/// Log store records: vote, committed, last purged, format marker.
pub(crate) const CF_LOG_META: &str = "log_meta";
/// State machine records: last applied, current snapshot, audit anchors.
pub(crate) const CF_SM_META: &str = "sm_meta";
/// Chained audit events, keyed by (log index, event sequence within the entry), big endian.
pub(crate) const CF_AUDIT: &str = "audit";
const COLUMN_FAMILIES: [&str; 4] = [CF_LOG, CF_LOG_META, CF_SM_META, CF_AUDIT];

/// Key of the format marker in [`CF_LOG_META`]: its presence tells a database we wrote.
const KEY_FORMAT: &str = "format";

/// One KMA's data dir, opened. Shared (`Arc`) by the log store, the state machine and readers.
pub struct RocksDataDir {
    dir: PathBuf,
    db: DB,
    /// Kept for its statistics object, shared with the open database.
    options: Options,
    /// Time per stage of a write on this KMA; the log store and the state machine time theirs.
    stages: WriteStages,
}

impl std::fmt::Debug for RocksDataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDataDir").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl RocksDataDir {
    /// Opens the data dir at `dir`, creating it when it does not exist or is empty. A damaged
    /// database, or one written by a newer version, is refused with an error that says so.
    ///
    /// Blocking: call it before serving, or from `spawn_blocking`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Arc<Self>, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        let db_dir = dir.join("rocksdb");
        let snapshot_dir = dir.join("snapshots");
        fs::create_dir_all(&snapshot_dir).map_err(StorageError::io("create", &snapshot_dir))?;
        let fresh = is_missing_or_empty(&db_dir)?;
        // Without CURRENT, RocksDB would create a new database over the old files: refuse.
        if !fresh && !db_dir.join("CURRENT").is_file() {
            return Err(StorageError::NotADatabase { dir: db_dir });
        }
        let options = db_options(fresh);
        let families = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&options, &db_dir, families).map_err(|source| {
            let help = open_help(&source);
            StorageError::Open { dir: db_dir.clone(), source, help }
        })?;
        let data_dir = RocksDataDir { dir, db, options, stages: WriteStages::default() };
        data_dir.check_format()?;
        Ok(Arc::new(data_dir))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The write stage timers of this KMA (see [`crate::write_stages`]), for the node to time
    /// its own stages with and to report.
    pub fn write_stages(&self) -> WriteStages {
        self.stages.clone()
    }

    pub(crate) fn snapshot_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    /// WAL syncs since the database was opened: each one is a durable write (metrics, tests).
    pub fn wal_syncs_total(&self) -> u64 {
        self.options.get_ticker_count(Ticker::WalFileSynced)
    }

    /// Writes the format marker into a new database, or checks the one already there.
    fn check_format(&self) -> Result<(), StorageError> {
        match self.get(CF_LOG_META, KEY_FORMAT.as_bytes(), KEY_FORMAT)? {
            Some(bytes) if bytes.as_slice() == [FORMAT_VERSION] => Ok(()),
            Some(bytes) => Err(match bytes.first() {
                Some(&found) if bytes.len() == 1 => StorageError::FormatVersion {
                    what: "database",
                    dir: self.dir.clone(),
                    found,
                    supported: FORMAT_VERSION,
                },
                _ => self.decode_error("format marker", CF_LOG_META, KEY_FORMAT, "not one byte"),
            }),
            // A crash right after creating the database leaves it empty: finish creating it.
            None if self.is_empty()? => {
                let mut batch = WriteBatch::default();
                batch.put_cf(self.cf(CF_LOG_META)?, KEY_FORMAT, [FORMAT_VERSION]);
                self.write_synced(batch, CF_LOG_META, KEY_FORMAT)
            }
            None => Err(self.decode_error("format marker", CF_LOG_META, KEY_FORMAT, "missing")),
        }
    }

    fn is_empty(&self) -> Result<bool, StorageError> {
        for name in COLUMN_FAMILIES {
            let mut entries = self.db.iterator_cf(self.cf(name)?, IteratorMode::Start);
            if entries.next().is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub(crate) fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::ColumnFamilyMissing { cf: name, dir: self.dir.clone() })
    }

    pub(crate) fn get(
        &self,
        cf: &'static str,
        key: &[u8],
        key_name: impl Display,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        self.db
            .get_cf(self.cf(cf)?, key)
            .map_err(|source| self.rocks_error("read", cf, key_name, source))
    }

    /// Reads and decodes one versioned value.
    pub(crate) fn get_decoded<T: DeserializeOwned>(
        &self,
        what: &'static str,
        cf: &'static str,
        key: &'static str,
    ) -> Result<Option<T>, StorageError> {
        match self.get(cf, key.as_bytes(), key)? {
            Some(bytes) => self.decode(what, cf, key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Writes `batch` atomically and returns only once the RocksDB WAL is synced to disk: the
    /// one write path for everything openraft must find again after a crash.
    /// Writes without waiting for the disk: the entries are readable at once and become durable
    /// with the next synced write or [`RocksDataDir::sync_wal`].
    pub(crate) fn write_unsynced(
        &self,
        batch: WriteBatch,
        cf: &'static str,
        key_name: impl Display,
    ) -> Result<(), StorageError> {
        self.db
            .write_opt(batch, &WriteOptions::default())
            .map_err(|source| self.rocks_error("write", cf, key_name, source))
    }

    /// Makes every write that already returned durable: one fsync of the write-ahead log.
    pub(crate) fn sync_wal(&self) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let synced = self
            .db
            .flush_wal(true)
            .map_err(|source| self.rocks_error("sync the WAL of", "all", "-", source));
        if synced.is_ok() {
            self.stages.record(Stage::WalSync, started.elapsed());
        }
        synced
    }

    pub(crate) fn write_synced(
        &self,
        batch: WriteBatch,
        cf: &'static str,
        key_name: impl Display,
    ) -> Result<(), StorageError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(|source| self.rocks_error("write", cf, key_name, source))
    }

    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        what: &'static str,
        cf: &'static str,
        key: impl Display,
        bytes: &[u8],
    ) -> Result<T, StorageError> {
        let Some((&version, body)) = bytes.split_first() else {
            return Err(self.decode_error(what, cf, key, "empty value"));
        };
        if version != FORMAT_VERSION {
            let dir = self.dir.clone();
            return Err(StorageError::FormatVersion {
                what,
                dir,
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        match postcard::take_from_bytes(body) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => {
                Err(self.decode_error(what, cf, key, format!("{} trailing bytes", rest.len())))
            }
            Err(error) => Err(self.decode_error(what, cf, key, error)),
        }
    }

    pub(crate) fn decode_error(
        &self,
        what: &'static str,
        cf: &'static str,
        key: impl Display,
        detail: impl Display,
    ) -> StorageError {
        let (key, detail, dir) = (key.to_string(), detail.to_string(), self.dir.clone());
        StorageError::Decode { what, cf, key, dir, detail }
    }

    pub(crate) fn rocks_error(
        &self,
        op: &'static str,
        cf: &'static str,
        key: impl Display,
        source: rocksdb::Error,
    ) -> StorageError {
        StorageError::Rocks { op, cf, key: key.to_string(), dir: self.dir.clone(), source }
    }
}

/// `FORMAT_VERSION` followed by the postcard encoding of `value`.
pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StorageError> {
    let mut bytes = Vec::with_capacity(128);
    bytes.push(FORMAT_VERSION);
    postcard::to_extend(value, bytes)
        .map_err(|error| StorageError::Encode { what, detail: error.to_string() })
}

fn db_options(fresh: bool) -> Options {
    let mut options = Options::default();
    options.create_if_missing(fresh);
    options.create_missing_column_families(true);
    options.set_paranoid_checks(true);
    // Tickers only (no histograms or timers): cheap, and `wal_syncs_total` reads one.
    options.enable_statistics();
    options.set_statistics_level(StatsLevel::ExceptHistogramOrTimers);
    options
}

fn open_help(error: &rocksdb::Error) -> &'static str {
    let message = error.to_string().to_lowercase();
    match error.kind() {
        ErrorKind::IOError if message.contains("lock") => HELP_LOCKED,
        // A file the database lists is gone: the dir is damaged, not the disk.
        ErrorKind::IOError if message.contains("no such file") => HELP_RESTORE,
        ErrorKind::IOError | ErrorKind::Busy | ErrorKind::TimedOut | ErrorKind::TryAgain => {
            HELP_DISK
        }
        _ => HELP_RESTORE,
    }
}

fn is_missing_or_empty(dir: &Path) -> Result<bool, StorageError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(error) => Err(StorageError::io("list", dir)(error)),
    }
}
