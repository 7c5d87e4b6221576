//! A small in-memory key-value state machine and its type configuration: what openraft's
//! conformance suite, the `kv` example, the cluster tests and the peers benchmark run on.
//!
//! Only the log is durable (in the journal); the map is rebuilt on restart by applying the log
//! from the last snapshot (openraft re-applies up to the committed log id, which the log store
//! keeps in its meta).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// The type configuration of the key-value example: `u64` node ids, [`KvRequest`] entries.
    pub KvConfig:
        D = KvRequest,
        R = KvResponse,
        NodeId = u64,
        Node = BasicNode,
        Entry = Entry<KvConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A write to the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvRequest {
    /// Sets `key` to `value`.
    Set {
        /// The key, read back with [`KvStateMachine::get`].
        key: String,
        /// Its new value.
        value: String,
    },
    /// Sets `key` to `value` as raw bytes (the benchmarks' 256-byte writes).
    SetBytes {
        /// The key, read back with [`KvStateMachine::get_bytes`] (a key space of its own,
        /// apart from the `Set` keys).
        key: u64,
        /// Its new value.
        value: Vec<u8>,
    },
}

/// What applying an entry returns: whether it replaced a value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KvResponse {
    /// Whether the key had a value before this write (`false` for blank and membership
    /// entries).
    pub replaced: bool,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Data {
    last_applied: Option<LogId<u64>>,
    last_membership: StoredMembership<u64, BasicNode>,
    strings: BTreeMap<String, String>,
    bytes: BTreeMap<u64, Vec<u8>>,
}

#[derive(Debug, Default)]
struct Inner {
    data: Data,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    snapshot_count: u64,
}

/// The in-memory map; clones share it, so a test or an example reads it while Raft runs.
#[derive(Debug, Clone, Default)]
pub struct KvStateMachine {
    inner: Arc<Mutex<Inner>>,
}

impl KvStateMachine {
    /// An empty map.
    pub fn new() -> KvStateMachine {
        KvStateMachine::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value of a `Set` key.
    pub fn get(&self, key: &str) -> Option<String> {
        self.lock().data.strings.get(key).cloned()
    }

    /// The value of a `SetBytes` key.
    pub fn get_bytes(&self, key: u64) -> Option<Vec<u8>> {
        self.lock().data.bytes.get(&key).cloned()
    }

    /// Number of keys set (both kinds).
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.data.strings.len() + inner.data.bytes.len()
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId<u64>> {
        self.lock().data.last_applied
    }
}

fn snapshot_error(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read_snapshot(None, &e).into()
}

impl RaftSnapshotBuilder<KvConfig> for KvStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<KvConfig>, StorageError<u64>> {
        let mut inner = self.lock();
        let bytes = postcard::to_allocvec(&inner.data).map_err(snapshot_error)?;
        inner.snapshot_count += 1;
        let last = inner.data.last_applied;
        let snapshot_id = match last {
            Some(log_id) => format!("{}-{}", log_id, inner.snapshot_count),
            None => format!("none-{}", inner.snapshot_count),
        };
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: inner.data.last_membership.clone(),
            snapshot_id,
        };
        inner.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<KvConfig> for KvStateMachine {
    type SnapshotBuilder = KvStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let inner = self.lock();
        Ok((inner.data.last_applied, inner.data.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<KvResponse>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<KvConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.lock();
        let data = &mut inner.data;
        let mut responses = Vec::new();
        for entry in entries {
            data.last_applied = Some(entry.log_id);
            let replaced = match entry.payload {
                EntryPayload::Blank => false,
                EntryPayload::Normal(KvRequest::Set { key, value }) => {
                    data.strings.insert(key, value).is_some()
                }
                EntryPayload::Normal(KvRequest::SetBytes { key, value }) => {
                    data.bytes.insert(key, value).is_some()
                }
                EntryPayload::Membership(membership) => {
                    data.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    false
                }
            };
            responses.push(KvResponse { replaced });
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> KvStateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = snapshot.into_inner();
        let mut data: Data = postcard::from_bytes(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        // The snapshot's meta is what openraft checks against.
        data.last_applied = meta.last_log_id;
        data.last_membership = meta.last_membership.clone();
        let mut inner = self.lock();
        inner.data = data;
        inner.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<KvConfig>>, StorageError<u64>> {
        let inner = self.lock();
        Ok(inner.snapshot.as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(bytes.clone())),
        }))
    }
}
