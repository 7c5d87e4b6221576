//! [`LogStore`]: openraft's `RaftLogStorage` and `RaftLogReader` on a directfile journal.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use directfile_journal::format::{BATCH_HEADER_BYTES, RECORD_HEADER_BYTES};
use directfile_journal::{DirectFileStorage, Journal, JournalOptions, Lsn, Storage};
use futures::channel::{mpsc, oneshot};
use futures::stream::{FuturesOrdered, StreamExt};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogReader, RaftTypeConfig, StorageError, StorageIOError, Vote};

use crate::codec::{self, CodecError, IndexMap, Meta};

/// Recent entries kept in memory after they are durable, for the leader's replication reads;
/// entries not yet durable are always kept (a reader must see them as soon as `append` returns).
const CACHE_ENTRIES_MAX: usize = 16_384;

/// Least time between two background writes of the committed log id.
const COMMITTED_WRITE_INTERVAL: Duration = Duration::from_millis(10);

/// Errors of opening a raft log.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The journal refused to open or to recover.
    Journal(directfile_journal::Error),
    /// A record or the meta blob does not decode.
    Codec(CodecError),
    /// The journal and the meta disagree: not a raft log, or a bug.
    Inconsistent(String),
    /// The flusher thread could not start.
    Thread(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Journal(e) => write!(f, "raft log: {e}"),
            Error::Codec(e) => write!(f, "raft log: {e}"),
            Error::Inconsistent(why) => write!(f, "raft log is inconsistent: {why}"),
            Error::Thread(e) => write!(f, "raft log: cannot start the flusher thread: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Journal(e) => Some(e),
            Error::Codec(e) => Some(e),
            Error::Thread(e) => Some(e),
            Error::Inconsistent(_) => None,
        }
    }
}

impl From<directfile_journal::Error> for Error {
    fn from(e: directfile_journal::Error) -> Self {
        Error::Journal(e)
    }
}

impl From<CodecError> for Error {
    fn from(e: CodecError) -> Self {
        Error::Codec(e)
    }
}

/// Called once with the outcome of an append: `Ok` once the entries are durable.
pub type Durable = Box<dyn FnOnce(io::Result<()>) + Send + 'static>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the store remembers in memory; the flusher and the Raft task share it.
struct State<C: RaftTypeConfig> {
    map: IndexMap,
    vote: Option<Vote<C::NodeId>>,
    /// The last committed log id openraft gave (persisted lazily, see the crate docs).
    committed: Option<LogId<C::NodeId>>,
    last_purged: Option<LogId<C::NodeId>>,
    /// Last entry appended (durable or not).
    last_log_id: Option<LogId<C::NodeId>>,
    /// Encoded entries from index `cache_first` on: every entry not yet durable, and the most
    /// recent durable ones.
    cache: VecDeque<Arc<Vec<u8>>>,
    cache_first: u64,
    /// Index of the last durable entry (its callback fired).
    durable_index: Option<u64>,
    /// The first write that failed: the store refuses writes after it.
    failed: Option<String>,
}

impl<C: RaftTypeConfig> State<C> {
    /// First index that is neither purged nor hidden by the mapping.
    fn first_index(&self) -> u64 {
        let after_purged = self.last_purged.as_ref().map_or(0, |p| p.index + 1);
        after_purged.max(self.map.index_base)
    }

    /// Index the next appended entry must have.
    fn next_index(&self) -> u64 {
        match (&self.last_log_id, &self.last_purged) {
            (Some(last), _) => last.index + 1,
            (None, Some(purged)) => purged.index + 1,
            (None, None) => self.map.index_base,
        }
    }

    /// Drops durable entries from the front of the cache beyond its size.
    fn evict(&mut self) {
        while self.cache.len() > CACHE_ENTRIES_MAX
            && self.durable_index.is_some_and(|d| self.cache_first <= d)
        {
            self.cache.pop_front();
            self.cache_first += 1;
        }
    }
}

enum Command<C: RaftTypeConfig> {
    /// Records with consecutive LSNs from `first_lsn`; `last_index` is the Raft index of the
    /// last one.
    Append {
        records: Vec<Arc<Vec<u8>>>,
        first_lsn: u64,
        last_index: Option<u64>,
        done: Durable,
    },
    /// Runs after every earlier append is durable.
    Barrier {
        op: BarrierOp<C>,
        reply: oneshot::Sender<io::Result<()>>,
    },
}

enum BarrierOp<C: RaftTypeConfig> {
    SaveVote(Vote<C::NodeId>),
    /// A new index mapping for an empty log.
    SetMap(IndexMap),
    Truncate {
        lsn: u64,
    },
    Purge {
        last_purged: LogId<C::NodeId>,
        map: IndexMap,
        /// Whole segments below this LSN may go.
        before_lsn: u64,
    },
}

struct Shared<C: RaftTypeConfig, S: Storage> {
    journal: Arc<Journal<S>>,
    state: Arc<Mutex<State<C>>>,
    /// `None` once the store is dropped (the flusher then finishes and exits).
    commands: Mutex<Option<mpsc::UnboundedSender<Command<C>>>>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    /// Largest sum of `RECORD_HEADER_BYTES + record` one journal batch takes.
    batch_payload_bytes_max: usize,
}

impl<C: RaftTypeConfig, S: Storage> Drop for Shared<C, S> {
    fn drop(&mut self) {
        lock(&self.commands).take();
        if let Some(thread) = lock(&self.flusher).take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// openraft's log store on a directfile journal: entries are journal records (one per entry),
/// the vote, the committed log id, the last purged log id and the index mapping live in the
/// journal's meta. Clones share the store (the log reader is a clone).
pub struct LogStore<C: RaftTypeConfig, S: Storage = DirectFileStorage> {
    shared: Arc<Shared<C, S>>,
}

impl<C: RaftTypeConfig, S: Storage> Clone for LogStore<C, S> {
    fn clone(&self) -> Self {
        LogStore {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// What an open found, for tools and tests.
#[derive(Debug, Clone)]
pub struct OpenReport<C: RaftTypeConfig> {
    /// What the journal's recovery found: the records kept, a torn tail it truncated.
    pub journal: directfile_journal::RecoveryReport,
    /// The meta blob as read at open: mapping, vote, committed and last purged log ids.
    pub meta: Meta<C>,
    /// The last entry of the log, or the last purged log id when no entry is left after it
    /// (`None` for a new log).
    pub last_log_id: Option<LogId<C::NodeId>>,
}

fn io_error(what: impl Into<String>) -> io::Error {
    io::Error::other(what.into())
}

fn write_error<NID: openraft::NodeId>(e: impl fmt::Display) -> StorageError<NID> {
    StorageIOError::write_logs(&io_error(e.to_string())).into()
}

fn read_error<NID: openraft::NodeId>(e: impl fmt::Display) -> StorageError<NID> {
    StorageIOError::read_logs(&io_error(e.to_string())).into()
}

impl<C: RaftTypeConfig> LogStore<C, DirectFileStorage> {
    /// Opens (or creates) the raft log in directory `dir` on `directfile`.
    ///
    /// # Errors
    /// As [`LogStore::open_with_storage`].
    pub async fn open(
        dir: impl AsRef<Path>,
        options: JournalOptions,
    ) -> Result<(LogStore<C, DirectFileStorage>, OpenReport<C>), Error> {
        let storage = DirectFileStorage::new(dir)?;
        LogStore::open_with_storage(storage, options).await
    }
}

impl<C: RaftTypeConfig, S: Storage> LogStore<C, S> {
    /// Opens the raft log in `storage`: recovers the journal, reads the meta, finds the last
    /// entry, and starts the flusher thread.
    ///
    /// # Errors
    /// [`Error::Journal`] from the journal; [`Error::Codec`] or [`Error::Inconsistent`] if the
    /// journal is not a raft log this version can read.
    pub async fn open_with_storage(
        storage: S,
        options: JournalOptions,
    ) -> Result<(LogStore<C, S>, OpenReport<C>), Error> {
        let batch_payload_bytes_max = options.batch_bytes_max.saturating_sub(BATCH_HEADER_BYTES);
        let (journal, report) = Journal::open_with_storage(storage, options).await?;
        let blob = journal.meta();
        if blob.is_empty() && report.last_lsn.is_some() {
            return Err(Error::Inconsistent(format!(
                "the journal holds records up to LSN {} but no raft meta: not a raft log",
                report.next_lsn - 1
            )));
        }
        let meta: Meta<C> = codec::decode_meta(&blob)?;
        let next_lsn = journal.next_lsn().0;
        let first_visible = meta
            .last_purged
            .as_ref()
            .map_or(0, |p| p.index + 1)
            .max(meta.map.index_base);
        // The last record is an entry if the mapping reaches it and it is not purged.
        let last_record_index = Some(next_lsn - 1)
            .filter(|&lsn| lsn >= 1)
            .and_then(|lsn| meta.map.index(lsn))
            .filter(|&index| index >= first_visible);
        let last_log_id = match last_record_index {
            Some(index) => {
                let lsn = next_lsn - 1;
                let mut reader = journal.reader_range(Lsn(lsn), Lsn(lsn + 1));
                let record = reader.next().await?.ok_or_else(|| {
                    Error::Inconsistent(format!("the last record, LSN {lsn}, cannot be read"))
                })?;
                let entry: Entry<C> = codec::decode_entry(record.payload)?;
                if entry.log_id.index != index {
                    return Err(Error::Inconsistent(format!(
                        "LSN {lsn} should hold Raft index {index} (mapping {:?}) but holds {}",
                        meta.map, entry.log_id
                    )));
                }
                Some(entry.log_id)
            }
            None => meta.last_purged.clone(),
        };
        if let Some(last) = &last_log_id {
            let expected = meta.map.lsn(last.index + 1);
            if expected != Some(next_lsn) {
                return Err(Error::Inconsistent(format!(
                    "the next entry, Raft index {}, maps to LSN {expected:?} but the journal's next LSN is {next_lsn}",
                    last.index + 1
                )));
            }
        }
        let state = State {
            map: meta.map,
            vote: meta.vote.clone(),
            committed: meta.committed.clone(),
            last_purged: meta.last_purged.clone(),
            last_log_id: last_log_id.clone(),
            cache: VecDeque::new(),
            cache_first: last_log_id
                .as_ref()
                .map_or(meta.map.index_base, |l| l.index + 1),
            durable_index: last_log_id.as_ref().map(|l| l.index),
            failed: None,
        };
        let state = Arc::new(Mutex::new(state));
        let journal = Arc::new(journal);
        let (sender, receiver) = mpsc::unbounded();
        let flusher = Flusher {
            journal: Arc::clone(&journal),
            state: Arc::clone(&state),
            commands: receiver,
            meta: meta.clone(),
            queued: VecDeque::new(),
            enqueuing: None,
            pending: FuturesOrdered::new(),
            waiting: None,
            barrier: None,
            meta_write: None,
            committed_written_at: None,
            closed: false,
            batch_payload_bytes_max,
        };
        let thread = std::thread::Builder::new()
            .name("raft-log-flusher".into())
            .spawn(move || flusher.run())
            .map_err(Error::Thread)?;
        let store = LogStore {
            shared: Arc::new(Shared {
                journal,
                state,
                commands: Mutex::new(Some(sender)),
                flusher: Mutex::new(Some(thread)),
                batch_payload_bytes_max,
            }),
        };
        Ok((
            store,
            OpenReport {
                journal: report,
                meta,
                last_log_id,
            },
        ))
    }

    /// The journal under the store.
    pub fn journal(&self) -> &Journal<S> {
        &self.shared.journal
    }

    /// Index of the last entry whose append was reported durable.
    pub fn durable_index(&self) -> Option<u64> {
        lock(&self.shared.state).durable_index
    }

    /// The index <-> LSN mapping in force.
    pub fn index_map(&self) -> IndexMap {
        lock(&self.shared.state).map
    }

    // openraft's error type, which every method of the trait returns too.
    #[allow(clippy::result_large_err)]
    fn send(&self, command: Command<C>) -> Result<(), StorageError<C::NodeId>> {
        match lock(&self.shared.commands).as_ref() {
            Some(sender) => sender
                .unbounded_send(command)
                .map_err(|_| write_error("the raft log's flusher thread has stopped")),
            None => Err(write_error("the raft log is closed")),
        }
    }

    async fn barrier(&self, op: BarrierOp<C>) -> Result<(), io::Error> {
        let (reply, done) = oneshot::channel();
        self.send(Command::Barrier { op, reply })
            .map_err(|e| io_error(e.to_string()))?;
        done.await
            .map_err(|_| io_error("the raft log's flusher thread stopped before replying"))?
    }

    /// Appends `entries` and returns at once; `done` is called once they (and every earlier
    /// entry) are durable, or with the error that stopped them. The entries are readable when
    /// this returns. [`RaftLogStorage::append`] is this with openraft's callback.
    ///
    /// # Errors
    /// An entry whose index does not follow the last one, an entry larger than a journal
    /// batch, a payload serde refuses, or a store that an earlier write failure stopped.
    #[allow(clippy::result_large_err)] // openraft's error type, as `RaftLogStorage::append`
    pub fn append_with<I>(&self, entries: I, done: Durable) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = Entry<C>>,
    {
        let mut records = Vec::new();
        let mut log_ids = Vec::new();
        let purged_up_to = lock(&self.shared.state)
            .last_purged
            .as_ref()
            .map(|p| p.index);
        for entry in entries {
            // An entry at or below the last purged one is already covered by the snapshot:
            // there is nothing to keep (openraft's suite appends such entries after
            // `get_initial_state` purged up to the state machine's last applied entry).
            if purged_up_to.is_some_and(|p| entry.log_id.index <= p) {
                continue;
            }
            let mut bytes = Vec::with_capacity(64);
            codec::encode_entry(&entry, &mut bytes).map_err(write_error)?;
            if RECORD_HEADER_BYTES + bytes.len() > self.shared.batch_payload_bytes_max {
                return Err(write_error(format!(
                    "entry {} takes {} bytes, more than a journal batch holds ({}); raise JournalOptions::batch_bytes_max",
                    entry.log_id,
                    bytes.len(),
                    self.shared.batch_payload_bytes_max - RECORD_HEADER_BYTES
                )));
            }
            records.push(Arc::new(bytes));
            log_ids.push(entry.log_id);
        }
        let mut state = lock(&self.shared.state);
        if let Some(why) = &state.failed {
            return Err(write_error(format!(
                "the raft log stopped after a failed write: {why}"
            )));
        }
        // An empty log (nothing appended, nothing purged) may start at any index (openraft's
        // suite does): the mapping moves so that this index gets the journal's next LSN, and
        // the flusher writes it to the meta before the entries.
        if let Some(first) = log_ids.first() {
            if state.last_log_id.is_none()
                && state.last_purged.is_none()
                && first.index != state.map.index_base
            {
                let map = IndexMap {
                    lsn_base: state.map.lsn_base,
                    index_base: first.index,
                };
                state.map = map;
                state.cache_first = first.index;
                let (reply, _ignored) = oneshot::channel();
                self.send(Command::Barrier {
                    op: BarrierOp::SetMap(map),
                    reply,
                })?;
            }
        }
        for (expected, log_id) in (state.next_index()..).zip(&log_ids) {
            if log_id.index != expected {
                return Err(write_error(format!(
                    "append of entry {log_id} would leave a hole: the next index is {expected}"
                )));
            }
        }
        let first_lsn = state
            .map
            .lsn(state.next_index())
            .ok_or_else(|| write_error("append below the index mapping's base"))?;
        if state.cache.is_empty() {
            state.cache_first = state.next_index();
        }
        state.cache.extend(records.iter().cloned());
        if let Some(last) = log_ids.last() {
            state.last_log_id = Some(last.clone());
        }
        // Sent under the state lock, so the flusher sees commands in the order of the cache.
        self.send(Command::Append {
            records,
            first_lsn,
            last_index: log_ids.last().map(|l| l.index),
            done,
        })
    }

    /// Entries with indexes in `range` that the log holds (purged ones are not returned).
    async fn read(&self, start: u64, end: u64) -> Result<Vec<Entry<C>>, StorageError<C::NodeId>> {
        let (journal_part, cached, map) = {
            let state = lock(&self.shared.state);
            let low = start.max(state.first_index());
            let high = end.min(state.last_log_id.as_ref().map_or(0, |l| l.index + 1));
            if low >= high {
                return Ok(Vec::new());
            }
            let cache_end = state.cache_first + state.cache.len() as u64;
            debug_assert_eq!(
                Some(cache_end),
                state.last_log_id.as_ref().map(|l| l.index + 1)
            );
            let from_cache = low.max(state.cache_first);
            let cached: Vec<Arc<Vec<u8>>> = if from_cache < high {
                state
                    .cache
                    .range(
                        (from_cache - state.cache_first) as usize
                            ..(high - state.cache_first) as usize,
                    )
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            };
            (low..high.min(state.cache_first), cached, state.map)
        };
        let mut entries = Vec::with_capacity(
            (journal_part.end.saturating_sub(journal_part.start)) as usize + cached.len(),
        );
        if journal_part.start < journal_part.end {
            let lsn = map
                .lsn(journal_part.start)
                .ok_or_else(|| read_error("read below the index mapping's base"))?;
            let count = journal_part.end - journal_part.start;
            let mut reader = self.shared.journal.reader_range(Lsn(lsn), Lsn(lsn + count));
            for index in journal_part.clone() {
                let record = reader.next().await.map_err(read_error)?.ok_or_else(|| {
                    read_error(format!(
                        "entry {index} (LSN {}) is not in the journal",
                        map.lsn(index).unwrap_or(0)
                    ))
                })?;
                let entry: Entry<C> = codec::decode_entry(record.payload).map_err(read_error)?;
                if entry.log_id.index != index {
                    return Err(read_error(format!(
                        "LSN {} holds entry {} where index {index} belongs",
                        record.lsn, entry.log_id
                    )));
                }
                entries.push(entry);
            }
        }
        for bytes in cached {
            entries.push(codec::decode_entry(&bytes).map_err(read_error)?);
        }
        Ok(entries)
    }
}

fn range_of(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl<C: RaftTypeConfig<Entry = Entry<C>>, S: Storage> RaftLogReader<C> for LogStore<C, S> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        let (start, end) = range_of(&range);
        self.read(start, end).await
    }
}

impl<C: RaftTypeConfig<Entry = Entry<C>>, S: Storage> RaftLogStorage<C> for LogStore<C, S> {
    type LogReader = LogStore<C, S>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let state = lock(&self.shared.state);
        Ok(LogState {
            last_purged_log_id: state.last_purged.clone(),
            last_log_id: state.last_log_id.clone().or(state.last_purged.clone()),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.barrier(BarrierOp::SaveVote(vote.clone()))
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        lock(&self.shared.state).vote = Some(vote.clone());
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(lock(&self.shared.state).vote.clone())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        // Kept in memory now and written by the flusher once the entries up to it are durable
        // here (see the crate docs): a crash may show an older committed id, never a newer one.
        lock(&self.shared.state).committed = committed;
        Ok(())
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(lock(&self.shared.state).committed.clone())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + Send,
        I::IntoIter: Send,
    {
        self.append_with(
            entries,
            Box::new(move |result| callback.log_io_completed(result)),
        )
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let (lsn, first) = {
            let state = lock(&self.shared.state);
            if log_id.index >= state.next_index() {
                return Ok(());
            }
            if log_id.index < state.first_index() {
                return Err(write_error(format!(
                    "truncate at {log_id} reaches purged entries (the first kept index is {})",
                    state.first_index()
                )));
            }
            let lsn = state
                .map
                .lsn(log_id.index)
                .ok_or_else(|| write_error("truncate below the index mapping's base"))?;
            (lsn, state.first_index())
        };
        // The new last entry: its term is not in `log_id`, so it is read back.
        let new_last = if log_id.index > first {
            Some(self.log_id_at(log_id.index - 1).await?)
        } else {
            lock(&self.shared.state).last_purged.clone()
        };
        {
            // Readers stop seeing the entries at once; the flusher removes them from the
            // journal after every earlier append is durable.
            let mut state = lock(&self.shared.state);
            if log_id.index >= state.cache_first {
                let keep = (log_id.index - state.cache_first) as usize;
                state.cache.truncate(keep);
            } else {
                state.cache.clear();
                state.cache_first = log_id.index;
            }
            let first = state.first_index();
            state.last_log_id = new_last.filter(|l| l.index >= first);
            if state.durable_index.is_some_and(|d| d >= log_id.index) {
                state.durable_index = log_id.index.checked_sub(1);
            }
        }
        self.barrier(BarrierOp::Truncate { lsn })
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let op = {
            let mut state = lock(&self.shared.state);
            if state
                .last_purged
                .as_ref()
                .is_some_and(|p| p.index >= log_id.index)
            {
                return Ok(());
            }
            let next = state.next_index();
            let mut map = state.map;
            if log_id.index >= next {
                // Purged beyond the last entry (a snapshot from the leader): the next entry,
                // log_id.index + 1, gets the journal's next LSN.
                map = IndexMap {
                    lsn_base: map
                        .lsn(next)
                        .ok_or_else(|| write_error("purge below the index mapping's base"))?,
                    index_base: log_id.index + 1,
                };
                state.cache.clear();
                state.cache_first = log_id.index + 1;
                state.last_log_id = None;
                // Everything up to the purged id is in the snapshot: nothing below it waits.
                state.durable_index = state.durable_index.max(Some(log_id.index));
            } else {
                while state.cache_first <= log_id.index && !state.cache.is_empty() {
                    state.cache.pop_front();
                    state.cache_first += 1;
                }
            }
            state.last_purged = Some(log_id.clone());
            state.map = map;
            let before_lsn = map.lsn(log_id.index + 1).unwrap_or(map.lsn_base);
            BarrierOp::Purge {
                last_purged: log_id,
                map,
                before_lsn,
            }
        };
        // openraft lets a purge finish in the background: the entries are hidden now; the
        // meta (last purged id, mapping) is written and old segments removed in order with
        // the writes around it.
        let (reply, done) = oneshot::channel();
        self.send(Command::Barrier { op, reply })?;
        drop(done);
        Ok(())
    }
}

impl<C: RaftTypeConfig<Entry = Entry<C>>, S: Storage> LogStore<C, S> {
    /// The log id of the entry at `index`, from the cache or the journal.
    async fn log_id_at(&self, index: u64) -> Result<LogId<C::NodeId>, StorageError<C::NodeId>> {
        self.read(index, index + 1)
            .await?
            .pop()
            .map(|entry| entry.log_id)
            .ok_or_else(|| read_error(format!("entry {index} is not in the log")))
    }
}

/// An append future on its way into the journal: enqueued once the journal's next LSN reaches
/// `end_lsn`.
struct Enqueuing {
    future: BoxFuture<directfile_journal::Result<Lsn>>,
    end_lsn: u64,
    done: Option<Durable>,
    last_index: Option<u64>,
}

type Completion = (io::Result<()>, Option<Durable>, Option<u64>);

/// Where the outcome of a barrier operation goes.
type Reply = oneshot::Sender<io::Result<()>>;

/// The flusher thread: puts appends into the journal in order (each is in a batch before the
/// next starts), waits for them concurrently, fires the callbacks in order, and runs the
/// operations that need every earlier append durable (vote, truncation, purge).
struct Flusher<C: RaftTypeConfig, S: Storage> {
    journal: Arc<Journal<S>>,
    state: Arc<Mutex<State<C>>>,
    commands: mpsc::UnboundedReceiver<Command<C>>,
    /// The meta as last written (or being written).
    meta: Meta<C>,
    /// Chunks of an append command not yet handed to the journal.
    queued: VecDeque<Enqueuing>,
    enqueuing: Option<Enqueuing>,
    pending: FuturesOrdered<BoxFuture<Completion>>,
    waiting: Option<(BarrierOp<C>, Reply)>,
    barrier: Option<(BoxFuture<io::Result<()>>, Reply)>,
    meta_write: Option<BoxFuture<io::Result<()>>>,
    /// When the last background write of the committed id started.
    committed_written_at: Option<Instant>,
    closed: bool,
    batch_payload_bytes_max: usize,
}

fn journal_io(e: directfile_journal::Error) -> io::Error {
    io::Error::from(e)
}

impl<C: RaftTypeConfig, S: Storage> Flusher<C, S> {
    /// Runs on its own thread until the store is dropped and everything is written. Woken by
    /// the futures it waits on, and every `COMMITTED_WRITE_INTERVAL` regardless, so that a
    /// committed id held back by the interval is written without another event.
    fn run(mut self) {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        while self.poll_run(&mut cx).is_pending() {
            std::thread::park_timeout(COMMITTED_WRITE_INTERVAL);
        }
    }

    fn queue_append(
        &mut self,
        records: Vec<Arc<Vec<u8>>>,
        first_lsn: u64,
        last_index: Option<u64>,
        done: Durable,
    ) {
        let batch_payload_bytes_max = self.batch_payload_bytes_max;
        let mut chunks: Vec<Vec<Arc<Vec<u8>>>> = Vec::new();
        let mut bytes = 0;
        for record in records {
            let size = RECORD_HEADER_BYTES + record.len();
            match chunks.last_mut() {
                Some(chunk) if bytes + size <= batch_payload_bytes_max => {
                    chunk.push(record);
                    bytes += size;
                }
                _ => {
                    chunks.push(vec![record]);
                    bytes = size;
                }
            }
        }
        if chunks.is_empty() {
            // Nothing to write: durable once everything before it is.
            self.queued.push_back(Enqueuing {
                future: Box::pin(async move { Ok(Lsn(first_lsn.saturating_sub(1))) }),
                end_lsn: 0,
                done: Some(done),
                last_index,
            });
            return;
        }
        let count = chunks.len();
        let mut lsn = first_lsn;
        let mut done = Some(done);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let end_lsn = lsn + chunk.len() as u64;
            let journal = Arc::clone(&self.journal);
            let future: BoxFuture<directfile_journal::Result<Lsn>> = Box::pin(async move {
                let refs: Vec<&[u8]> = chunk.iter().map(|r| r.as_slice()).collect();
                journal.append_batch(&refs).await
            });
            let last = i + 1 == count;
            self.queued.push_back(Enqueuing {
                future,
                end_lsn,
                done: if last { done.take() } else { None },
                last_index: if last { last_index } else { None },
            });
            lsn = end_lsn;
        }
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut progressed = false;
            // Completions, in order.
            while let Poll::Ready(Some((result, done, last_index))) =
                self.pending.poll_next_unpin(cx)
            {
                self.completed(&result, last_index);
                if let Some(done) = done {
                    done(result);
                }
                progressed = true;
            }
            // The append being put into the journal.
            if let Some(mut enqueuing) = self.enqueuing.take() {
                match enqueuing.future.as_mut().poll(cx) {
                    Poll::Ready(result) => {
                        let completion: Completion = (
                            result.map(|_| ()).map_err(journal_io),
                            enqueuing.done,
                            enqueuing.last_index,
                        );
                        self.pending
                            .push_back(Box::pin(futures::future::ready(completion)));
                        progressed = true;
                    }
                    Poll::Pending if self.journal.next_lsn().0 >= enqueuing.end_lsn => {
                        let Enqueuing {
                            future,
                            done,
                            last_index,
                            ..
                        } = enqueuing;
                        self.pending.push_back(Box::pin(async move {
                            let result = future.await.map(|_| ()).map_err(journal_io);
                            (result, done, last_index)
                        }));
                        progressed = true;
                    }
                    // The journal's batches are all full: it wakes us when one frees.
                    Poll::Pending => self.enqueuing = Some(enqueuing),
                }
            }
            if self.enqueuing.is_none() {
                if let Some(next) = self.queued.pop_front() {
                    self.enqueuing = Some(next);
                    continue;
                }
            }
            // A running barrier operation.
            if let Some((mut future, reply)) = self.barrier.take() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(result) => {
                        if let Err(e) = &result {
                            lock(&self.state)
                                .failed
                                .get_or_insert_with(|| e.to_string());
                        }
                        let _ = reply.send(result);
                        progressed = true;
                    }
                    Poll::Pending => self.barrier = Some((future, reply)),
                }
            }
            // A background write of the committed log id.
            if let Some(mut future) = self.meta_write.take() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(result) => {
                        if let Err(e) = result {
                            lock(&self.state)
                                .failed
                                .get_or_insert_with(|| e.to_string());
                        }
                        progressed = true;
                    }
                    Poll::Pending => self.meta_write = Some(future),
                }
            }
            let idle = self.enqueuing.is_none() && self.queued.is_empty() && self.barrier.is_none();
            if idle {
                if self.waiting.is_some() {
                    if self.pending.is_empty() && self.meta_write.is_none() {
                        let (op, reply) = self.waiting.take().expect("waiting");
                        let future = self.start_barrier(op);
                        self.barrier = Some((future, reply));
                        continue;
                    }
                } else if !self.closed {
                    match self.commands.poll_next_unpin(cx) {
                        Poll::Ready(Some(Command::Append {
                            records,
                            first_lsn,
                            last_index,
                            done,
                        })) => {
                            self.queue_append(records, first_lsn, last_index, done);
                            continue;
                        }
                        Poll::Ready(Some(Command::Barrier { op, reply })) => {
                            self.waiting = Some((op, reply));
                            continue;
                        }
                        Poll::Ready(None) => {
                            self.closed = true;
                            progressed = true;
                        }
                        Poll::Pending => {}
                    }
                }
            }
            if self.meta_write.is_none() && self.barrier.is_none() && self.waiting.is_none() {
                if let Some(meta) = self.committed_to_write() {
                    let blob = codec::encode_meta(&meta);
                    let journal = Arc::clone(&self.journal);
                    self.meta = meta;
                    self.committed_written_at = Some(Instant::now());
                    let future: BoxFuture<io::Result<()>> = Box::pin(async move {
                        let blob = blob.map_err(|e| io_error(e.to_string()))?;
                        journal.set_meta(&blob).await.map_err(journal_io)
                    });
                    self.meta_write = Some(future);
                    continue;
                }
            }
            if self.closed
                && self.pending.is_empty()
                && self.enqueuing.is_none()
                && self.queued.is_empty()
                && self.barrier.is_none()
                && self.waiting.is_none()
                && self.meta_write.is_none()
            {
                return Poll::Ready(());
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }

    /// A newer committed log id that may be written now: every entry up to it is durable here.
    fn committed_to_write(&self) -> Option<Meta<C>> {
        // At most one committed write per interval: each is a durable write of the HEAD, and
        // openraft 0.9 commits entry by entry. The last one is written when the store closes.
        if !self.closed
            && self
                .committed_written_at
                .is_some_and(|at| at.elapsed() < COMMITTED_WRITE_INTERVAL)
        {
            return None;
        }
        let state = lock(&self.state);
        let committed = state.committed.clone()?;
        if Some(&committed) == self.meta.committed.as_ref()
            || state.durable_index.is_none_or(|d| d < committed.index)
            || state.failed.is_some()
        {
            return None;
        }
        let mut meta = self.meta.clone();
        meta.committed = Some(committed);
        Some(meta)
    }

    fn completed(&mut self, result: &io::Result<()>, last_index: Option<u64>) {
        let mut state = lock(&self.state);
        match result {
            Ok(()) => {
                if let Some(index) = last_index {
                    if state.last_log_id.as_ref().is_some_and(|l| l.index >= index) {
                        state.durable_index = Some(index);
                    }
                }
                state.evict();
            }
            Err(e) => {
                state.failed.get_or_insert_with(|| e.to_string());
            }
        }
    }

    fn start_barrier(&mut self, op: BarrierOp<C>) -> BoxFuture<io::Result<()>> {
        let journal = Arc::clone(&self.journal);
        match op {
            BarrierOp::SaveVote(vote) => {
                self.meta.vote = Some(vote);
                let blob = codec::encode_meta(&self.meta);
                Box::pin(async move {
                    let blob = blob.map_err(|e| io_error(e.to_string()))?;
                    journal.set_meta(&blob).await.map_err(journal_io)
                })
            }
            BarrierOp::SetMap(map) => {
                self.meta.map = map;
                let blob = codec::encode_meta(&self.meta);
                Box::pin(async move {
                    let blob = blob.map_err(|e| io_error(e.to_string()))?;
                    journal.set_meta(&blob).await.map_err(journal_io)
                })
            }
            BarrierOp::Truncate { lsn } => {
                Box::pin(async move { journal.truncate_from(Lsn(lsn)).await.map_err(journal_io) })
            }
            BarrierOp::Purge {
                last_purged,
                map,
                before_lsn,
            } => {
                self.meta.last_purged = Some(last_purged);
                self.meta.map = map;
                let blob = codec::encode_meta(&self.meta);
                Box::pin(async move {
                    let blob = blob.map_err(|e| io_error(e.to_string()))?;
                    journal.set_meta(&blob).await.map_err(journal_io)?;
                    journal
                        .truncate_before(Lsn(before_lsn))
                        .map_err(journal_io)?;
                    Ok(())
                })
            }
        }
    }
}
