//! openraft's own storage test suite against RocksDB (STYLE 15).

use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageIOError};
use raft_storage::{open_stores, KmaRaft, RocksLogStore, RocksStateMachine};
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<KmaRaft, RocksLogStore, RocksStateMachine, TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, RocksLogStore, RocksStateMachine), openraft::StorageError<u64>> {
        let dir = TempDir::new().map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let (_data_dir, log_store, state_machine) =
            open_stores(dir.path()).map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        Ok((dir, log_store, state_machine))
    }
}

/// Setup: a fresh data dir per case. Action: every case of `openraft::testing::Suite`.
/// Expectation: all pass (vote, log reads, purge, truncate, membership, snapshot transfer).
#[test]
fn c7_openraft_storage_suite_passes_on_rocksdb() {
    Suite::test_all(RocksBuilder).expect("openraft storage suite");
}
