//! The Raft log on RocksDB: entries in [`CF_LOG`], vote, committed and last purged log ids in
//! [`CF_LOG_META`].
//!
//! openraft's storage contract (SPEC "Known pitfalls"): every write it must find again after a
//! crash goes through [`RocksDataDir::write_synced`], and `append` reports its entries flushed
//! only after that synced write returned. Writes are made inline, one at a time, so vote and log
//! writes reach the disk in the order openraft issued them. Throughput comes from openraft
//! batching many entries into one `append`, never from skipping the sync.

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogId, RaftLogReader,
    RaftTypeConfig, Vote,
};
use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::data_dir::{encode, RocksDataDir, CF_LOG, CF_LOG_META};
use crate::error::StorageError;
use crate::leader_appends::{AppendTap, LeaderAppend};
use crate::types::KmaRaft;
use crate::write_stages::Stage;

type RaftResult<T> = Result<T, openraft::StorageError<u64>>;

pub(crate) const KEY_VOTE: &str = "vote";
pub(crate) const KEY_COMMITTED: &str = "committed";
pub(crate) const KEY_LAST_PURGED: &str = "last_purged";

/// The Raft log of one KMA. Generic over the type config only so that tests can observe the
/// flush callback; the node uses the default, [`KmaRaft`].
pub struct RocksLogStore<C: RaftTypeConfig = KmaRaft> {
    data_dir: Arc<RocksDataDir>,
    syncer: Arc<WalSyncer>,
    tap: Arc<AppendTap<C>>,
    _config: PhantomData<fn() -> C>,
}

impl<C: RaftTypeConfig> Clone for RocksLogStore<C> {
    fn clone(&self) -> Self {
        RocksLogStore {
            data_dir: self.data_dir.clone(),
            syncer: self.syncer.clone(),
            tap: self.tap.clone(),
            _config: PhantomData,
        }
    }
}

/// Tells openraft that appended entries are on disk.
type FlushedCallback = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Group commit: appends write to RocksDB without syncing (so they are readable at once, as
/// openraft requires) and queue their flush callbacks here; one thread syncs the WAL once for
/// every callback queued meanwhile, then completes them all. Under load one fsync covers many
/// entries; alone, an append costs one fsync as before. A callback is never completed before
/// the sync that covers its write (the write returned before the callback was queued).
struct WalSyncer {
    queue: std::sync::Mutex<Option<std::sync::mpsc::Sender<FlushedCallback>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl WalSyncer {
    fn start(data_dir: Arc<RocksDataDir>) -> Arc<WalSyncer> {
        let (sender, receiver) = std::sync::mpsc::channel::<FlushedCallback>();
        let spawned = std::thread::Builder::new().name("wal-sync".into()).spawn(move || {
            while let Ok(first) = receiver.recv() {
                let mut waiting = vec![first];
                waiting.extend(receiver.try_iter());
                let synced = data_dir.sync_wal().map_err(|e| e.to_string());
                for callback in waiting {
                    callback(synced.clone().map_err(io::Error::other));
                }
            }
        });
        let thread = match spawned {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::error!(%error, "cannot start the WAL sync thread: every append will fail");
                None
            }
        };
        Arc::new(WalSyncer {
            queue: std::sync::Mutex::new(Some(sender)),
            thread: std::sync::Mutex::new(thread),
        })
    }

    /// Queues a callback; if the sync thread is gone, fails it at once.
    fn after_next_sync(&self, callback: FlushedCallback) {
        let queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let refused = match queue.as_ref() {
            Some(sender) => sender.send(callback).err().map(|std::sync::mpsc::SendError(c)| c),
            None => Some(callback),
        };
        if let Some(callback) = refused {
            callback(Err(io::Error::other("the WAL sync thread stopped: restart the KMA")));
        }
    }
}

impl Drop for WalSyncer {
    /// Closes the queue and waits for the thread, so the database (which the thread holds) is
    /// closed when the last log store is dropped, and the data dir can be opened again at once.
    fn drop(&mut self) {
        let queue = self.queue.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(queue.take());
        let thread = self.thread.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(handle) = thread.take() {
            if handle.join().is_err() {
                tracing::error!("the WAL sync thread panicked");
            }
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl<C> RocksLogStore<C>
where
    C: RaftTypeConfig<NodeId = u64>,
    C::Entry: Clone,
{
    pub fn new(data_dir: Arc<RocksDataDir>) -> Self {
        let syncer = WalSyncer::start(data_dir.clone());
        RocksLogStore { data_dir, syncer, tap: Arc::new(AppendTap::new()), _config: PhantomData }
    }

    /// Called once as the data dir is opened, before openraft reads the vote: a committed vote
    /// is written back uncommitted (synced), so a KMA that led before it stopped cannot take up
    /// the same term again at start-up, as openraft 0.9 would. It led with parallel append:
    /// followers may hold entries its own log lost in a crash (they were not synced here yet),
    /// and leading the same term again would give their log IDs to other entries. The vote
    /// still names the candidate this KMA chose in that term, so it cannot vote twice; to lead
    /// again it wins a new term (one election timeout). A follower's vote becomes committed
    /// again with the leader's first request.
    pub fn step_down_at_start(&self) -> Result<(), StorageError> {
        let vote: Option<Vote<u64>> = self.read_meta("vote", KEY_VOTE)?;
        if let Some(vote) = vote.filter(Vote::is_committed) {
            let uncommitted = Vote { leader_id: vote.leader_id, committed: false };
            self.write_meta("vote", KEY_VOTE, &uncommitted)?;
        }
        Ok(())
    }

    /// The entries this KMA (`node_id`) appends as leader, each handed over as soon as it is
    /// written and before it is synced, at most `depth` waiting (see [`crate::leader_appends`]).
    /// `None` if someone already subscribed.
    pub fn leader_appends(
        &self,
        node_id: u64,
        depth: usize,
    ) -> Option<tokio::sync::mpsc::Receiver<Arc<LeaderAppend<C>>>> {
        self.tap.subscribe(node_id, depth)
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        what: &'static str,
        key: &'static str,
    ) -> Result<Option<T>, StorageError> {
        self.data_dir.get_decoded(what, CF_LOG_META, key)
    }

    fn write_meta<T: Serialize>(
        &self,
        what: &'static str,
        key: &'static str,
        value: &T,
    ) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.data_dir.cf(CF_LOG_META)?, key, encode(what, value)?);
        if key == KEY_COMMITTED {
            // Optional for openraft: a committed index lost in a crash is learnt again from
            // the leader, and the next synced write makes this one durable anyway.
            return self.data_dir.write_unsynced(batch, CF_LOG_META, key);
        }
        self.data_dir.write_synced(batch, CF_LOG_META, key)
    }

    /// Entries with indexes in `range`, in order, stopping at the first gap.
    pub(crate) fn read_entries(
        &self,
        range: &impl RangeBounds<u64>,
    ) -> Result<Vec<C::Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&start) => start,
            Bound::Excluded(&start) => start.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let db = &self.data_dir;
        let from = index_key(start);
        let mode = IteratorMode::From(&from, Direction::Forward);
        let mut entries = Vec::new();
        for item in db.db().iterator_cf(db.cf(CF_LOG)?, mode) {
            let (key, value) =
                item.map_err(|e| db.rocks_error("read", CF_LOG, format!("index {start}.."), e))?;
            let index = decode_index(db, &key)?;
            if !range.contains(&index) {
                break;
            }
            let entry: C::Entry =
                db.decode("log entry", CF_LOG, format!("index {index}"), &value)?;
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Index of the last entry in the log, 0 when it is empty.
    pub(crate) fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.last_log_id_in_log()?.map_or(0, |id| id.index))
    }

    fn last_log_id_in_log(&self) -> Result<Option<LogId<u64>>, StorageError> {
        let db = &self.data_dir;
        let Some(item) = db.db().iterator_cf(db.cf(CF_LOG)?, IteratorMode::End).next() else {
            return Ok(None);
        };
        let (key, value) = item.map_err(|e| db.rocks_error("read", CF_LOG, "last", e))?;
        let index = decode_index(db, &key)?;
        let entry: C::Entry = db.decode("log entry", CF_LOG, format!("index {index}"), &value)?;
        Ok(Some(*entry.get_log_id()))
    }

    fn log_state(&self) -> Result<LogState<C>, StorageError> {
        let last_purged_log_id: Option<LogId<u64>> =
            self.read_meta("last purged log id", KEY_LAST_PURGED)?;
        let last_log_id = self.last_log_id_in_log()?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    /// Writes `entries` in one batch, not synced (see [`WalSyncer`]).
    fn append_entries(&self, entries: &[C::Entry]) -> Result<(), StorageError> {
        let cf = self.data_dir.cf(CF_LOG)?;
        let mut batch = WriteBatch::default();
        let (mut first, mut last) = (None, 0);
        for entry in entries {
            let index = entry.get_log_id().index;
            first.get_or_insert(index);
            last = index;
            batch.put_cf(cf, index_key(index), encode("log entry", entry)?);
        }
        let Some(first) = first else { return Ok(()) };
        self.data_dir.write_unsynced(batch, CF_LOG, format!("indexes {first}..={last}"))
    }

    /// Deletes every entry from `index` on.
    fn truncate_from(&self, index: u64) -> Result<(), StorageError> {
        let cf = self.data_dir.cf(CF_LOG)?;
        let mut batch = WriteBatch::default();
        // The range end is exclusive: the entry at u64::MAX needs its own delete.
        batch.delete_range_cf(cf, index_key(index), index_key(u64::MAX));
        batch.delete_cf(cf, index_key(u64::MAX));
        self.tap.truncated();
        self.data_dir.write_synced(batch, CF_LOG, format!("indexes {index}.."))
    }

    /// Records `log_id` as last purged and deletes the entries up to it, in one atomic batch:
    /// no crash can leave entries deleted without the purge recorded (the contract asks for
    /// last-purged first; atomicity gives that and more).
    fn purge_upto(&self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        let purged = encode("last purged log id", &log_id)?;
        batch.put_cf(self.data_dir.cf(CF_LOG_META)?, KEY_LAST_PURGED, purged);
        let end = log_id.index.saturating_add(1);
        self.tap.purged(log_id);
        batch.delete_range_cf(self.data_dir.cf(CF_LOG)?, index_key(0), index_key(end));
        self.data_dir.write_synced(batch, CF_LOG, format!("indexes ..={}", log_id.index))
    }
}

fn decode_index(db: &RocksDataDir, key: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| db.decode_error("log index", CF_LOG, format!("{key:02x?}"), "not 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

impl<C> RaftLogReader<C> for RocksLogStore<C>
where
    C: RaftTypeConfig<NodeId = u64>,
    C::Entry: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> RaftResult<Vec<C::Entry>> {
        self.read_entries(&range).map_err(|e| e.into_raft(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl<C> RaftLogStorage<C> for RocksLogStore<C>
where
    C: RaftTypeConfig<NodeId = u64>,
    C::Entry: Clone,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> RaftResult<LogState<C>> {
        let state =
            self.log_state().map_err(|e| e.into_raft(ErrorSubject::Logs, ErrorVerb::Read))?;
        self.tap.log_read(state.last_log_id);
        Ok(state)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> RaftResult<()> {
        self.write_meta("vote", KEY_VOTE, vote)
            .map_err(|e| e.into_raft(ErrorSubject::Vote, ErrorVerb::Write))?;
        self.tap.vote_saved(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> RaftResult<Option<Vote<u64>>> {
        let vote: Option<Vote<u64>> = self
            .read_meta("vote", KEY_VOTE)
            .map_err(|e| e.into_raft(ErrorSubject::Vote, ErrorVerb::Read))?;
        if let Some(vote) = vote {
            self.tap.vote_saved(vote);
        }
        Ok(vote)
    }

    /// Persisted so that after a restart openraft re-applies the committed tail of the log onto
    /// the state loaded from the latest snapshot.
    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> RaftResult<()> {
        self.write_meta("committed log id", KEY_COMMITTED, &committed)
            .map_err(|e| e.into_raft(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> RaftResult<Option<LogId<u64>>> {
        let committed: Option<Option<LogId<u64>>> = self
            .read_meta("committed log id", KEY_COMMITTED)
            .map_err(|e| e.into_raft(ErrorSubject::Store, ErrorVerb::Read))?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> RaftResult<()>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // The callback tells openraft the entries are durable: only after a WAL sync that
        // started after the write returned (group commit, see `WalSyncer`). The entries are
        // handed to the followers before that sync (see `leader_appends`).
        let started = std::time::Instant::now();
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        match self.append_entries(&entries) {
            Ok(()) => {
                self.tap.appended(&entries);
                let stages = self.data_dir.write_stages();
                self.syncer.after_next_sync(Box::new(move |synced| {
                    if synced.is_ok() {
                        stages.record(Stage::LogAppend, started.elapsed());
                    }
                    callback.log_io_completed(synced);
                }));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(io::Error::other(error.to_string())));
                Err(error.into_raft(ErrorSubject::Logs, ErrorVerb::Write))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> RaftResult<()> {
        self.truncate_from(log_id.index)
            .map_err(|e| e.into_raft(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> RaftResult<()> {
        self.purge_upto(log_id)
            .map_err(|e| e.into_raft(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }
}
