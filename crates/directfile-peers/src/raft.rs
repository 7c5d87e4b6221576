//! `raft`: three openraft nodes in one process (the in-process router of
//! `directfile_raft::cluster`), `writers` concurrent `client_write`s of `value_bytes` bytes to
//! the leader, each awaited until committed and applied; writes/s and latency, per log store:
//!
//! - `directfile-raft`: this repository's `LogStore` on directfile-journal.
//! - `rocksdb`: a v2 `RaftLogStorage` on RocksDB written after openraft 0.9's
//!   `examples/raft-kv-rocksdb` (entries in a `logs` column family keyed by big-endian index,
//!   vote and purge marker in a `store` family), with one difference: `append` writes the
//!   entries in one `WriteBatch` with `WriteOptions::set_sync(true)` before it calls the
//!   callback, so the entries are durable when openraft counts them (the example writes
//!   without sync and calls the callback at once). Its writes run in the Raft task, as in the
//!   example. (openraft-rocksstore 0.9 on crates.io is a v1 `RaftStorage`, which openraft hides
//!   once `storage-v2` is on for directfile-raft in the same build; and it does not sync
//!   appends either.)
//! - `memory`: a `BTreeMap` log whose callback fires at once: no durability, the ceiling.
//!
//! All three run the same state machine (`directfile_raft::kv`) and encode entries with
//! `directfile_raft::codec`, so only the log store differs.

// openraft's `StorageError` is what every store method returns; the helpers return it too.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use directfile_journal::JournalOptions;
use directfile_raft::cluster::{local_config, Router};
use directfile_raft::codec;
use directfile_raft::kv::{KvConfig, KvRequest, KvStateMachine};
use directfile_raft::LogStore;
use hdrhistogram::Histogram;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{BasicNode, Entry, LogId, Raft, RaftLogReader, StorageError, StorageIOError, Vote};

use crate::util::median;

pub struct Config {
    pub writers: usize,
    pub value_bytes: usize,
    pub runtime: Duration,
    pub rounds: usize,
    pub only: Vec<String>,
    pub dir: PathBuf,
}

const STORES: [&str; 3] = ["directfile-raft", "rocksdb", "memory"];

#[derive(Clone, Debug)]
struct Row {
    store: String,
    writes: u64,
    writes_per_s: f64,
    latency_us_p50: f64,
    latency_us_p99: f64,
}

type StoreResult<T> = Result<T, StorageError<u64>>;

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn range_bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

// ---- the RocksDB log store -------------------------------------------------------------------

#[derive(Clone)]
struct RocksLogStore {
    db: Arc<rocksdb::DB>,
}

const VOTE_KEY: &[u8] = b"vote";
const PURGED_KEY: &[u8] = b"last_purged";
const COMMITTED_KEY: &[u8] = b"committed";

impl RocksLogStore {
    fn open(path: &Path) -> Result<RocksLogStore, String> {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = vec![
            rocksdb::ColumnFamilyDescriptor::new("store", rocksdb::Options::default()),
            rocksdb::ColumnFamilyDescriptor::new("logs", rocksdb::Options::default()),
        ];
        let db = rocksdb::DB::open_cf_descriptors(&options, path, families)
            .map_err(|e| format!("rocksdb: open: {e}"))?;
        Ok(RocksLogStore { db: Arc::new(db) })
    }

    fn logs(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle("logs").expect("logs column family")
    }

    fn store(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle("store").expect("store column family")
    }

    fn sync_write(&self, batch: rocksdb::WriteBatch) -> Result<(), rocksdb::Error> {
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> StoreResult<Option<T>> {
        let bytes = self
            .db
            .get_cf(self.store(), key)
            .map_err(|e| StorageIOError::read(&io_err(e)))?;
        bytes
            .map(|b| postcard::from_bytes(&b).map_err(|e| StorageIOError::read(&io_err(e)).into()))
            .transpose()
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> StoreResult<()> {
        let bytes = postcard::to_allocvec(value).map_err(|e| StorageIOError::write(&io_err(e)))?;
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(self.store(), key, bytes);
        self.sync_write(batch)
            .map_err(|e| StorageIOError::write(&io_err(e)).into())
    }
}

impl RaftLogReader<KvConfig> for RocksLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<KvConfig>>> {
        let (start, end) = range_bounds(&range);
        let mut entries = Vec::new();
        let iter = self.db.iterator_cf(
            self.logs(),
            rocksdb::IteratorMode::From(&start.to_be_bytes(), rocksdb::Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&io_err(e)))?;
            let index = u64::from_be_bytes(key.as_ref().try_into().expect("8-byte key"));
            if index >= end {
                break;
            }
            entries.push(
                codec::decode_entry(&value).map_err(|e| StorageIOError::read_logs(&io_err(e)))?,
            );
        }
        Ok(entries)
    }
}

impl RaftLogStorage<KvConfig> for RocksLogStore {
    type LogReader = RocksLogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<KvConfig>> {
        let last = match self
            .db
            .iterator_cf(self.logs(), rocksdb::IteratorMode::End)
            .next()
        {
            Some(item) => {
                let (_, value) = item.map_err(|e| StorageIOError::read_logs(&io_err(e)))?;
                let entry: Entry<KvConfig> = codec::decode_entry(&value)
                    .map_err(|e| StorageIOError::read_logs(&io_err(e)))?;
                Some(entry.log_id)
            }
            None => None,
        };
        let last_purged: Option<LogId<u64>> = self.get_meta(PURGED_KEY)?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> RocksLogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StoreResult<()> {
        self.put_meta(VOTE_KEY, vote)
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<u64>>> {
        self.get_meta(VOTE_KEY)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StoreResult<()> {
        self.put_meta(COMMITTED_KEY, &committed)
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<u64>>> {
        Ok(self
            .get_meta::<Option<LogId<u64>>>(COMMITTED_KEY)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<KvConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<KvConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = rocksdb::WriteBatch::default();
        let mut bytes = Vec::new();
        for entry in entries {
            codec::encode_entry(&entry, &mut bytes)
                .map_err(|e| StorageIOError::write_logs(&io_err(e)))?;
            batch.put_cf(self.logs(), entry.log_id.index.to_be_bytes(), &bytes);
        }
        let result = self.sync_write(batch).map_err(io_err);
        callback.log_io_completed(result);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StoreResult<()> {
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_range_cf(
            self.logs(),
            log_id.index.to_be_bytes(),
            u64::MAX.to_be_bytes(),
        );
        self.sync_write(batch)
            .map_err(|e| StorageIOError::write_logs(&io_err(e)).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StoreResult<()> {
        self.put_meta(PURGED_KEY, &log_id)?;
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_range_cf(
            self.logs(),
            0u64.to_be_bytes(),
            (log_id.index + 1).to_be_bytes(),
        );
        self.sync_write(batch)
            .map_err(|e| StorageIOError::write_logs(&io_err(e)).into())
    }
}

// ---- the memory log store (no durability: the ceiling) ---------------------------------------

#[derive(Default)]
struct MemInner {
    log: BTreeMap<u64, Entry<KvConfig>>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    last_purged: Option<LogId<u64>>,
}

#[derive(Clone, Default)]
struct MemLogStore {
    inner: Arc<Mutex<MemInner>>,
}

impl MemLogStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemInner> {
        self.inner.lock().expect("memory log")
    }
}

impl RaftLogReader<KvConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<KvConfig>>> {
        Ok(self
            .lock()
            .log
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<KvConfig> for MemLogStore {
    type LogReader = MemLogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<KvConfig>> {
        let inner = self.lock();
        let last = inner.log.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> MemLogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StoreResult<()> {
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<u64>>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StoreResult<()> {
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<u64>>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<KvConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<KvConfig>> + Send,
        I::IntoIter: Send,
    {
        {
            let mut inner = self.lock();
            for entry in entries {
                inner.log.insert(entry.log_id.index, entry);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StoreResult<()> {
        self.lock().log.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StoreResult<()> {
        let mut inner = self.lock();
        let kept = inner.log.split_off(&(log_id.index + 1));
        inner.log = kept;
        inner.last_purged = Some(log_id);
        Ok(())
    }
}

// ---- the workload ------------------------------------------------------------------------------

/// A fresh directory under `parent`, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(parent: &Path, name: &str) -> Result<Scratch, String> {
        let path = parent.join(format!(
            "directfile-peers-raft-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("{name}: mkdir {}: {e}", path.display()))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start_node<LS>(
    id: u64,
    router: &Router<KvConfig>,
    log_store: LS,
) -> Result<Raft<KvConfig>, String>
where
    LS: RaftLogStorage<KvConfig>,
{
    let raft = Raft::new(
        id,
        local_config(),
        router.clone(),
        log_store,
        KvStateMachine::new(),
    )
    .await
    .map_err(|e| format!("node {id}: {e}"))?;
    router.add(id, raft.clone());
    Ok(raft)
}

async fn start_cluster(
    store: &str,
    scratch: &Path,
    router: &Router<KvConfig>,
) -> Result<Vec<Raft<KvConfig>>, String> {
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let node_dir = scratch.join(format!("node-{id}"));
        let raft = match store {
            "directfile-raft" => {
                let (log, _) = LogStore::<KvConfig>::open(&node_dir, JournalOptions::default())
                    .await
                    .map_err(|e| format!("{store}: {e}"))?;
                start_node(id, router, log).await?
            }
            "rocksdb" => start_node(id, router, RocksLogStore::open(&node_dir)?).await?,
            _ => start_node(id, router, MemLogStore::default()).await?,
        };
        nodes.push(raft);
    }
    let members: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|id| (id, BasicNode::new(format!("node {id}"))))
        .collect();
    nodes[0]
        .initialize(members)
        .await
        .map_err(|e| format!("{store}: initialize: {e}"))?;
    Ok(nodes)
}

async fn wait_for_leader(nodes: &[Raft<KvConfig>]) -> Result<Raft<KvConfig>, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leaders: BTreeSet<Option<u64>> = nodes
            .iter()
            .map(|n| n.metrics().borrow().current_leader)
            .collect();
        if leaders.len() == 1 {
            if let Some(&Some(leader)) = leaders.iter().next() {
                return Ok(nodes[(leader - 1) as usize].clone());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no leader within 20 s: {leaders:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn measure(config: &Config, store: &str) -> Result<Row, String> {
    let scratch = Scratch::new(&config.dir, store)?;
    let router = Router::<KvConfig>::new();
    let nodes = start_cluster(store, &scratch.0, &router).await?;
    let leader = wait_for_leader(&nodes).await?;
    let next_key = Arc::new(AtomicU64::new(0));
    let value = vec![0x5Au8; config.value_bytes];
    let began = Instant::now();
    let deadline = began + config.runtime;
    let mut tasks = Vec::new();
    for _ in 0..config.writers {
        let (leader, next_key, value) = (leader.clone(), Arc::clone(&next_key), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut writes = 0u64;
            loop {
                let start = Instant::now();
                if start >= deadline {
                    break;
                }
                let key = next_key.fetch_add(1, Ordering::Relaxed);
                let request = KvRequest::SetBytes {
                    key,
                    value: value.clone(),
                };
                leader
                    .client_write(request)
                    .await
                    .map_err(|e| format!("client_write: {e}"))?;
                histogram.saturating_record((start.elapsed().as_micros() as u64).max(1));
                writes += 1;
            }
            Ok::<_, String>((writes, histogram))
        }));
    }
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut writes = 0;
    for task in tasks {
        let (n, h) = task.await.map_err(|e| format!("writer task: {e}"))??;
        writes += n;
        histogram.add(&h).expect("same bounds");
    }
    let elapsed = began.elapsed().as_secs_f64();
    for (id, node) in (1..=3u64).zip(nodes) {
        router.remove(id);
        node.shutdown()
            .await
            .map_err(|e| format!("{store}: shutdown of node {id}: {e}"))?;
    }
    drop(leader);
    Ok(Row {
        store: store.to_string(),
        writes,
        writes_per_s: writes as f64 / elapsed,
        latency_us_p50: histogram.value_at_quantile(0.50) as f64,
        latency_us_p99: histogram.value_at_quantile(0.99) as f64,
    })
}

pub fn main(config: Config) -> Result<(), String> {
    let stores: Vec<&str> = if config.only.is_empty() {
        STORES.to_vec()
    } else {
        let mut picked = Vec::new();
        for name in &config.only {
            picked.push(
                *STORES
                    .iter()
                    .find(|s| **s == name.as_str())
                    .ok_or_else(|| format!("unknown store {name:?}: one of {STORES:?}"))?,
            );
        }
        picked
    };
    std::fs::create_dir_all(&config.dir)
        .map_err(|e| format!("mkdir {}: {e}", config.dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let mut per_store: Vec<Vec<Row>> = vec![Vec::new(); stores.len()];
    for round in 0..config.rounds {
        for k in 0..stores.len() {
            let index = (k + round) % stores.len();
            let row = runtime.block_on(measure(&config, stores[index]))?;
            eprintln!(
                "round {}/{} {:<16} {:>10.0} writes/s  p50 {:>7.0} us  p99 {:>7.0} us",
                round + 1,
                config.rounds,
                row.store,
                row.writes_per_s,
                row.latency_us_p50,
                row.latency_us_p99
            );
            per_store[index].push(row);
        }
    }
    let medians: Vec<Row> = per_store
        .iter()
        .map(|rows| {
            let field =
                |get: &dyn Fn(&Row) -> f64| median(&mut rows.iter().map(get).collect::<Vec<_>>());
            Row {
                store: rows[0].store.clone(),
                writes: field(&|r| r.writes as f64) as u64,
                writes_per_s: field(&|r| r.writes_per_s),
                latency_us_p50: field(&|r| r.latency_us_p50),
                latency_us_p99: field(&|r| r.latency_us_p99),
            }
        })
        .collect();
    let ours = medians.iter().find(|r| r.store == "directfile-raft");
    println!(
        "raft: 3 in-process nodes, {} concurrent client_write x {} B, {:.1}s, rounds={} (medians)",
        config.writers,
        config.value_bytes,
        config.runtime.as_secs_f64(),
        config.rounds
    );
    println!(
        "{:<16} {:>10} {:>10} {:>10} {:>14}",
        "store", "writes/s", "p50 us", "p99 us", "directfile/this"
    );
    for row in &medians {
        let ratio = ours.map_or("-".to_string(), |o| {
            format!("{:.2}x", o.writes_per_s / row.writes_per_s)
        });
        println!(
            "{:<16} {:>10.0} {:>10.0} {:>10.0} {:>14}",
            row.store, row.writes_per_s, row.latency_us_p50, row.latency_us_p99, ratio
        );
    }
    Ok(())
}
