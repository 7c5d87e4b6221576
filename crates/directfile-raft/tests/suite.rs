//! openraft's own conformance suite (`openraft::testing::Suite::test_all`) on directfile-raft,
//! on real files, with the in-memory key-value state machine. Every case of the suite runs.

mod common;

use common::{small_options, TestDir};
use directfile_raft::kv::{KvConfig, KvStateMachine};
use directfile_raft::LogStore;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{StorageError, StorageIOError};

struct Builder;

impl StoreBuilder<KvConfig, LogStore<KvConfig>, KvStateMachine, TestDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TestDir, LogStore<KvConfig>, KvStateMachine), StorageError<u64>> {
        let dir = TestDir::new("suite");
        let (store, _report) = LogStore::open(dir.path(), small_options())
            .await
            .map_err(|e| StorageIOError::read_logs(&e))?;
        Ok((dir, store, KvStateMachine::new()))
    }
}

#[test]
fn openraft_suite_passes() {
    Suite::test_all(Builder).expect("openraft's storage suite");
}
