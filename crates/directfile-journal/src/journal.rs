//! The journal: open with recovery, group commit, reader, truncation, rotation.
//!
//! # Group commit
//!
//! A ring of `batches_in_flight_max + 1` batch slots, each owning one aligned buffer allocated
//! at open. Appenders lock the state, encode their record (header, CRC32C, payload) straight
//! into the filling slot's buffer, push their waker into that slot's waiter list and return
//! `Pending`. `batches_in_flight_max` *lanes* (each an async loop on its own thread, driven by
//! `block_on`, so the library needs no runtime) write the batches: an idle lane takes the
//! filling slot as soon as it holds a record (or, while another batch is in flight, once it
//! holds `overlap_records_min` records or half a batch), seals it (batch header, zero padding)
//! and writes it with one write-through write, while appenders go on filling the next slot.
//! Completions may arrive in any order; a batch is acknowledged only when it and every earlier
//! batch completed, so acknowledgements go out in LSN order.
//!
//! An appender that finds nothing in flight writes its batch itself, from its own task: no
//! hand-off to a lane and back, which is what a lone writer's commit latency is made of. If no
//! other append arrived during the previous write it uses [`Storage::write_at_alone`] (on
//! `directfile`: a driver that spins on its completion queue). If such an append future is
//! dropped mid-write, its drop waits for the write (at most one write) and records the result,
//! so a batch is never left in an unknown state; then a lane is woken for what queued behind.
//!
//! Nothing is allocated per append in steady state: buffers and waiter lists are reused (their
//! capacity stays), wakers are cloned (a reference count for the common executors).
//!
//! # Failure
//!
//! The first failed write poisons the journal: the LSNs of the failed batch and all later ones
//! get [`Error::Poisoned`], earlier batches still in flight are acknowledged if their own writes
//! succeed, the lanes stop taking batches, and appends are refused. Nothing is retried.
//!
//! # Segments
//!
//! Each open starts a new segment (so a segment is written by one generation only). When a
//! batch does not fit in the rest of the segment, the lane that took it waits until every
//! earlier batch is acknowledged (so only the newest segment can have a torn tail), takes the
//! spare segment that the maintenance thread created, zero-filled and made durable in advance,
//! writes its header and then the batch. The maintenance thread then prepares the next spare.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use crate::batch_index::BatchIndex;
use crate::format::{
    self, BatchHeader, Head, HeadState, SegmentHeader, BATCH_HEADER_BYTES, RECORD_HEADER_BYTES,
};
use crate::recovery::{self, RecoveryMode, RecoveryReport, SegmentReport};
use crate::storage::{IoBuffer, Storage};
use crate::DirectFileStorage;
use crate::{Error, Lsn, Result};

/// How a journal is laid out and recovered.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// Size of each segment file; a batch that does not fit starts a new segment.
    pub segment_bytes: u64,
    /// Largest batch (one write), padding included; a multiple of the block size.
    pub batch_bytes_max: usize,
    /// Batches written concurrently (lanes).
    pub batches_in_flight_max: usize,
    /// While a batch is in flight, the next one starts only once it holds this many records or
    /// half of `batch_bytes_max`; with nothing in flight a batch starts at once. Fewer, larger
    /// batches under load cost less CPU per record (each write is a submission and a wake-up),
    /// while a lone writer never waits. 1 starts every batch as soon as a lane is free.
    pub overlap_records_min: usize,
    /// What open does with a torn tail: truncate it and report it
    /// ([`RecoveryMode::TolerateTornTail`], the default) or refuse to open
    /// ([`RecoveryMode::Strict`]).
    pub recovery_mode: RecoveryMode,
    /// Alignment unit of batches; 0 means the larger of 4096 and the storage's alignment.
    pub block_bytes: usize,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            segment_bytes: 64 << 20,
            batch_bytes_max: 256 << 10,
            batches_in_flight_max: 4,
            overlap_records_min: 16,
            recovery_mode: RecoveryMode::TolerateTornTail,
            block_bytes: 0,
        }
    }
}

/// Counters of the journal since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Batches whose write completed successfully (each one write-through write).
    pub batches_written: u64,
    /// Records in those batches.
    pub records_written: u64,
    /// Bytes of those batches on the device: batch headers, record headers, payloads and the
    /// zero padding to the block size (segment headers and HEAD writes are not counted).
    pub bytes_written: u64,
    /// Segments this journal started writing: the one begun at open, then one per rotation and
    /// per truncation (`truncate_from` starts a new segment).
    pub segments_created: u64,
}

#[derive(Debug, Clone, Copy)]
struct Config {
    block_bytes: usize,
    batch_bytes_max: usize,
    segment_bytes: u64,
    generation: u64,
    batches_in_flight_max: usize,
    overlap_records_min: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    Filling,
    InFlight,
    Done,
    Failed,
}

struct Slot<B> {
    state: SlotState,
    seq: u64,
    /// The slot's buffer; `None` while a lane writes it.
    buf: Option<B>,
    /// Bytes used, batch header space included.
    len: usize,
    first_lsn: u64,
    record_count: u32,
    waiters: Vec<Waker>,
}

struct ActiveSegment<G> {
    number: u64,
    handle: G,
    write_offset: u64,
}

#[derive(Debug, Clone, Copy)]
struct SegmentEntry {
    number: u64,
    first_lsn: u64,
}

type SpareResult<G> = std::result::Result<(u64, G), Arc<io::Error>>;

struct State<S: Storage> {
    slots: Vec<Slot<S::Buf>>,
    /// Sequence number of the filling batch; its slot is `next_seq % slots.len()`.
    next_seq: u64,
    /// Every batch with a smaller sequence number is acknowledged.
    acked_seq: u64,
    next_lsn: u64,
    durable_lsn: u64,
    /// First LSN that failed, and why.
    poison: Option<(u64, Arc<io::Error>)>,
    closing: bool,
    space_waiters: Vec<Waker>,
    /// Lanes with nothing to take; an append wakes one of them.
    idle_lanes: Vec<Waker>,
    /// The lane that is rotating, or a truncation, waiting for earlier batches or for the
    /// spare segment (the two never run at once).
    rotation_waker: Option<Waker>,
    /// `truncate_from` runs: appends wait.
    truncating: bool,
    active: ActiveSegment<S::Segment>,
    segments: VecDeque<SegmentEntry>,
    rotating: bool,
    /// Batches taken by a lane and not yet completed.
    writes_in_flight: usize,
    /// An appender found the filling batch too full for its record: take it now.
    filling_blocked: bool,
    /// Reusable lists for leading appenders to collect wakers in.
    wake_lists: Vec<Vec<Waker>>,
    /// Appends that arrived while a batch was being written, since the last led batch: zero
    /// means the leading appender is alone and may wait for its write eagerly.
    appends_while_writing: u64,
    spare: Option<SpareResult<S::Segment>>,
    /// Where each batch starts, by LSN, for readers.
    batch_index: BatchIndex,
    header_buf: Option<S::Buf>,
    stats: JournalStats,
}

#[derive(Default)]
struct Maintenance {
    request: Option<u64>,
    stop: bool,
}

/// The HEAD file while the journal is open (see `format`): one slot-sized buffer and the value
/// last written. Behind an async mutex: one HEAD write at a time, from a rotating lane or
/// `set_meta`.
struct HeadFile<S: Storage> {
    handle: S::Segment,
    slot_bytes: usize,
    buf: Option<S::Buf>,
    current: Head,
}

struct Shared<S: Storage> {
    storage: S,
    config: Config,
    head: futures::lock::Mutex<HeadFile<S>>,
    head_slot_bytes: usize,
    /// One `truncate_from` at a time.
    truncation: futures::lock::Mutex<()>,
    /// A copy of the HEAD's metadata for `Journal::meta`, which does not wait.
    meta: Mutex<Vec<u8>>,
    state: Mutex<State<S>>,
    maintenance: Mutex<Maintenance>,
    maintenance_wake: Condvar,
    _lock: S::Lock,
}

/// A durable group-commit journal over a [`Storage`].
pub struct Journal<S: Storage = DirectFileStorage> {
    shared: Arc<Shared<S>>,
    lane_threads: Vec<JoinHandle<()>>,
    maintenance_thread: Option<JoinHandle<()>>,
    /// Serialises `truncate_before`: segments must leave the disk oldest first, or a crash
    /// between two concurrent calls could leave a gap that recovery reads as corruption.
    truncating: Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock is a bug in this module; the state may still be read to
    // shut down, so poisoning of the mutex is ignored.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

fn wake_all(wakers: &mut Vec<Waker>) {
    for waker in wakers.drain(..) {
        waker.wake();
    }
}

fn validate(options: &JournalOptions, storage_block: usize) -> Result<usize> {
    let block = if options.block_bytes == 0 {
        storage_block.max(4096)
    } else {
        options.block_bytes
    };
    let invalid = |why: String| Err(Error::InvalidOptions(why));
    if !block.is_power_of_two()
        || !(512..=format::BLOCK_BYTES_MAX).contains(&block)
        || block % storage_block != 0
    {
        return invalid(format!(
            "block_bytes {block} must be a power of two from 512 to {} and a multiple of the storage alignment {storage_block}",
            format::BLOCK_BYTES_MAX
        ));
    }
    if options.batch_bytes_max < block
        || options.batch_bytes_max % block != 0
        || options.batch_bytes_max > u32::MAX as usize
    {
        return invalid(format!(
            "batch_bytes_max {} must be a non-zero multiple of block_bytes {block}",
            options.batch_bytes_max
        ));
    }
    if options.segment_bytes % block as u64 != 0
        || options.segment_bytes < (block + options.batch_bytes_max) as u64
    {
        return invalid(format!(
            "segment_bytes {} must be a multiple of block_bytes {block} and hold the header block plus one batch of {} bytes",
            options.segment_bytes, options.batch_bytes_max
        ));
    }
    if !(1..=64).contains(&options.batches_in_flight_max) {
        return invalid(format!(
            "batches_in_flight_max {} must be between 1 and 64",
            options.batches_in_flight_max
        ));
    }
    Ok(block)
}

/// Writes `next` (its sequence set to the one after the current value) into its slot of the
/// HEAD file; on success it becomes the current value. The write is durable when it completes.
async fn write_head_slot<S: Storage>(
    storage: &S,
    file: &mut HeadFile<S>,
    mut next: Head,
) -> io::Result<()> {
    next.sequence = file.current.sequence + 1;
    let mut buf = file.buf.take().expect("one HEAD write at a time");
    format::encode_head_slot(&next, file.slot_bytes, buf.as_full_mut());
    buf.set_len(file.slot_bytes);
    let offset = (next.sequence % 2) * file.slot_bytes as u64;
    let (result, buf) = storage.write_at(&file.handle, buf, offset).await;
    file.buf = Some(buf);
    result?;
    file.current = next;
    Ok(())
}

/// Reads a whole segment into `buf` (reallocated when too small); returns the file length.
async fn read_whole<S: Storage>(
    storage: &S,
    segment: &S::Segment,
    buf: &mut Option<S::Buf>,
) -> Result<usize> {
    let len = storage.segment_len(segment)? as usize;
    let capacity = format::round_up(len.max(1), storage.block_bytes());
    let mut current = match buf.take() {
        Some(b) if b.capacity() >= capacity => b,
        _ => storage.alloc_buf(capacity),
    };
    let (result, read) = storage.read_at(segment, current, 0).await;
    current = read;
    let count = result?;
    if count < len {
        *buf = Some(current);
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("short read of a segment: {count} of {len} bytes"),
        )));
    }
    *buf = Some(current);
    Ok(len)
}

fn segment_header(config: &Config, number: u64, first_lsn: u64) -> SegmentHeader {
    SegmentHeader {
        block_bytes: config.block_bytes as u32,
        segment_number: number,
        generation: config.generation,
        first_lsn,
        batch_bytes_max: config.batch_bytes_max as u32,
        batches_in_flight_max: config.batches_in_flight_max as u32,
        truncates: false,
    }
}

/// Reads the HEAD file, if there is one.
async fn read_head<S: Storage>(storage: &S) -> Result<(Option<S::Segment>, HeadState)> {
    let Some(handle) = storage.open_head(false)? else {
        return Ok((None, HeadState::Absent));
    };
    let mut buf = None;
    let len = read_whole(storage, &handle, &mut buf).await?;
    let state = format::decode_head(Some(&buf.expect("read buffer").as_slice()[..len]));
    Ok((Some(handle), state))
}

/// The HEAD file for a journal whose HEAD was `found`: the existing file and its slot size when
/// it has a valid slot; otherwise (no HEAD, or none readable: only possible while no segment
/// holds a record) a fresh file of two empty slots.
async fn open_head_file<S: Storage>(
    storage: &S,
    handle: Option<S::Segment>,
    found: &HeadState,
) -> Result<HeadFile<S>> {
    if let (Some(handle), HeadState::Valid { head, slot_bytes }) = (&handle, found) {
        if slot_bytes % storage.block_bytes() != 0 {
            return Err(Error::InvalidOptions(format!(
                "the HEAD file's slots of {slot_bytes} bytes cannot be written on storage                  with {}-byte alignment",
                storage.block_bytes()
            )));
        }
        return Ok(HeadFile {
            handle: handle.clone(),
            slot_bytes: *slot_bytes,
            buf: Some(storage.alloc_buf(*slot_bytes)),
            current: head.clone(),
        });
    }
    let handle = match handle {
        Some(handle) => handle,
        None => storage
            .open_head(true)?
            .expect("open_head(create) returns the file"),
    };
    // One aligned write per value: slots of the storage's alignment (at least 512 bytes, so
    // the metadata has room for 448 bytes anywhere).
    let slot_bytes = storage.block_bytes().max(format::HEAD_SLOT_BYTES_MIN);
    // Both slots empty: the first value written is sequence 1, in slot 1, which makes the file
    // two slots long (slot 0 reads as zeros).
    storage.truncate_segment(&handle, 0).await?;
    Ok(HeadFile {
        handle,
        slot_bytes,
        buf: Some(storage.alloc_buf(slot_bytes)),
        current: Head::default(),
    })
}

impl Journal<DirectFileStorage> {
    /// Opens (or creates) the journal in directory `dir` on `directfile` (O_DIRECT,
    /// write-through, io_uring or the thread-pool backend); see [`Journal::open_with_storage`].
    ///
    /// # Errors
    /// As [`Journal::open_with_storage`]; also if `dir` is on a file system without direct I/O.
    pub async fn open(
        dir: impl AsRef<std::path::Path>,
        options: JournalOptions,
    ) -> Result<(Journal<DirectFileStorage>, RecoveryReport)> {
        let storage = DirectFileStorage::new(dir)?;
        Journal::open_with_storage(storage, options).await
    }
}

impl<S: Storage> Journal<S> {
    /// Opens (or creates) the journal in `storage`: locks it, recovers it as `options` say,
    /// starts a new segment, and starts the background I/O and maintenance threads.
    ///
    /// # Errors
    /// [`Error::Locked`], [`Error::Corruption`], [`Error::TornTail`] (strict mode),
    /// [`Error::InvalidOptions`], [`Error::Io`].
    pub async fn open_with_storage(
        storage: S,
        options: JournalOptions,
    ) -> Result<(Journal<S>, RecoveryReport)> {
        let block = validate(&options, storage.block_bytes())?;
        let dir_lock = storage.lock()?;
        let (head_handle, head_state) = read_head(&storage).await?;
        let numbers = storage.list_segments()?;
        let mut scans = Vec::with_capacity(numbers.len());
        let mut read_buf = None;
        for &number in &numbers {
            let segment = storage.open_segment(number)?;
            let len = read_whole(&storage, &segment, &mut read_buf).await?;
            let bytes = &read_buf.as_ref().expect("read buffer").as_slice()[..len];
            scans.push(recovery::scan_segment(number, bytes));
        }
        drop(read_buf);
        let plan = recovery::plan(&head_state, &scans).map_err(Error::Corruption)?;
        if options.recovery_mode == RecoveryMode::Strict {
            if let Some(torn) = plan.torn_tail.clone() {
                return Err(Error::TornTail(torn));
            }
        }
        let mut truncated_bytes = 0;
        if let Some((number, valid_end)) = plan.truncate {
            let segment = storage.open_segment(number)?;
            truncated_bytes = storage.segment_len(&segment)?.saturating_sub(valid_end);
            storage.truncate_segment(&segment, valid_end).await?;
        }
        // Segments above the high-water mark hold nothing; they go first, newest first, so at
        // most one segment lies above the mark at any time (the one started next).
        for &number in plan.removed_segments.iter().rev() {
            storage.remove_segment(number)?;
        }
        let config = Config {
            block_bytes: block,
            batch_bytes_max: options.batch_bytes_max,
            segment_bytes: options.segment_bytes,
            generation: plan.max_generation + 1,
            batches_in_flight_max: options.batches_in_flight_max,
            overlap_records_min: options.overlap_records_min.clamp(1, u32::MAX as usize) as u32,
        };
        // A new segment, started (header, then HEAD) before anything is removed below it.
        let number = numbers
            .last()
            .copied()
            .max(plan.head.as_ref().map(|h| h.segment_number))
            .map_or(1, |n| n + 1);
        let handle = storage.create_segment(number, config.segment_bytes).await?;
        let mut header_buf = storage.alloc_buf(block);
        format::encode_segment_header(
            &segment_header(&config, number, plan.next_lsn),
            header_buf.as_full_mut(),
        );
        header_buf.set_len(block);
        let (result, header_buf) = storage.write_at(&handle, header_buf, 0).await;
        result?;
        let mut head_file = open_head_file(&storage, head_handle, &head_state).await?;
        let meta = head_file.current.meta.clone();
        write_head_slot(
            &storage,
            &mut head_file,
            Head {
                sequence: 0,
                segment_number: number,
                first_lsn: plan.next_lsn,
                generation: config.generation,
                meta: meta.clone(),
            },
        )
        .await?;
        // Now the new segment carries the LSN position: segments voided by a truncation, and
        // segments without records that no truncation depends on, go.
        // Void segments newest first: a crash part-way leaves a chain whose truncating segment
        // still voids the rest (removing an older one first would leave a gap in the LSNs).
        let mut removed_segments = plan.removed_segments.clone();
        for &gone in plan.void_segments.iter().rev().chain(&plan.empty_segments) {
            storage.remove_segment(gone)?;
            removed_segments.push(gone);
        }
        removed_segments.sort_unstable();
        let mut segments = VecDeque::new();
        let mut report_segments = Vec::new();
        for scan in scans.iter().filter(|s| {
            plan.kept_segments.contains(&s.segment_number)
                && !plan.empty_segments.contains(&s.segment_number)
        }) {
            let recovery::HeaderState::Valid(header) = &scan.header else {
                continue;
            };
            let record_count = match plan.cuts.iter().find(|c| c.0 == scan.segment_number) {
                Some(&(_, end_lsn)) => end_lsn - header.first_lsn,
                None => scan.record_count(),
            };
            segments.push_back(SegmentEntry {
                number: scan.segment_number,
                first_lsn: header.first_lsn,
            });
            report_segments.push(SegmentReport {
                segment_number: scan.segment_number,
                generation: header.generation,
                first_lsn: header.first_lsn,
                batch_count: scan.batches.len() as u64,
                record_count,
                valid_bytes: scan.valid_end,
                file_bytes: scan.file_bytes,
            });
        }
        segments.push_back(SegmentEntry {
            number,
            first_lsn: plan.next_lsn,
        });
        let report = RecoveryReport {
            mode: options.recovery_mode,
            segments: report_segments,
            record_count: plan.record_count,
            first_lsn: plan.first_lsn,
            last_lsn: plan.first_lsn.map(|_| plan.next_lsn - 1),
            next_lsn: plan.next_lsn,
            generation: config.generation,
            torn_tail: plan.torn_tail.clone(),
            truncated_bytes,
            removed_segments,
            meta: meta.clone(),
        };
        let slots = (0..=options.batches_in_flight_max)
            .map(|_| Slot {
                state: SlotState::Free,
                seq: 0,
                buf: Some(storage.alloc_buf(options.batch_bytes_max)),
                len: 0,
                first_lsn: 0,
                record_count: 0,
                waiters: Vec::with_capacity(256),
            })
            .collect();
        let batch_index = BatchIndex::from_scans(
            scans
                .iter()
                .filter(|s| segments.iter().any(|kept| kept.number == s.segment_number)),
            &plan.cuts,
        );
        let state = State {
            batch_index,
            slots,
            next_seq: 0,
            acked_seq: 0,
            next_lsn: plan.next_lsn,
            durable_lsn: plan.next_lsn - 1,
            poison: None,
            closing: false,
            space_waiters: Vec::with_capacity(256),
            idle_lanes: Vec::with_capacity(options.batches_in_flight_max),
            rotation_waker: None,
            truncating: false,
            active: ActiveSegment {
                number,
                handle,
                write_offset: block as u64,
            },
            segments,
            rotating: false,
            writes_in_flight: 0,
            filling_blocked: false,
            wake_lists: (0..2).map(|_| Vec::with_capacity(256)).collect(),
            appends_while_writing: 0,
            spare: None,
            header_buf: Some(header_buf),
            stats: JournalStats {
                segments_created: 1,
                ..JournalStats::default()
            },
        };
        let shared = Arc::new(Shared {
            storage,
            config,
            head_slot_bytes: head_file.slot_bytes,
            truncation: futures::lock::Mutex::new(()),
            head: futures::lock::Mutex::new(head_file),
            meta: Mutex::new(meta),
            state: Mutex::new(state),
            maintenance: Mutex::new(Maintenance {
                request: Some(number + 1),
                stop: false,
            }),
            maintenance_wake: Condvar::new(),
            _lock: dir_lock,
        });
        // One thread per lane: a lane that waits for its write (or spins on the completion
        // queue) never holds back the others.
        let mut lane_threads = Vec::with_capacity(options.batches_in_flight_max);
        for index in 0..options.batches_in_flight_max {
            let lane_shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("journal-lane-{index}"))
                .spawn(move || futures::executor::block_on(lane(lane_shared)));
            match spawned {
                Ok(thread) => lane_threads.push(thread),
                Err(error) => {
                    stop_threads(&shared, &mut lane_threads, None);
                    return Err(error.into());
                }
            }
        }
        let maintenance_shared = Arc::clone(&shared);
        let maintenance_thread = std::thread::Builder::new()
            .name("journal-prealloc".into())
            .spawn(move || maintenance(&maintenance_shared))?;
        Ok((
            Journal {
                shared,
                lane_threads,
                maintenance_thread: Some(maintenance_thread),
                truncating: Mutex::new(()),
            },
            report,
        ))
    }

    /// Appends one record; resolves to its LSN once it and every earlier record are durable.
    ///
    /// Dropping the future does not withdraw the record: it is already in a batch.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if this or an earlier write failed, [`Error::RecordTooLarge`],
    /// [`Error::Closed`].
    pub fn append<'a>(&'a self, record: &'a [u8]) -> impl Future<Output = Result<Lsn>> + Send + 'a {
        self.shared.append(Records::One(record))
    }

    /// Appends several records with consecutive LSNs in one batch; resolves to the LSN of the
    /// last one once all of them and every earlier record are durable.
    ///
    /// # Errors
    /// As [`Journal::append`]; the records together must fit in one batch.
    pub fn append_batch<'a>(
        &'a self,
        records: &'a [&'a [u8]],
    ) -> impl Future<Output = Result<Lsn>> + Send + 'a {
        self.shared.append(Records::Many(records))
    }

    /// Stores `bytes` as the journal's metadata, durably and atomically, in the HEAD file: once
    /// this resolves, every later open reports it ([`RecoveryReport::meta`]); a crash while it
    /// runs leaves the old value or the new one, never a torn or an older one. For small state
    /// that must survive with the log, such as a Raft vote. At most
    /// [`Journal::meta_bytes_max`] bytes.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] when `bytes` is too long; [`Error::Poisoned`] if the journal
    /// is; [`Error::Io`] if the write fails, which poisons the journal.
    pub async fn set_meta(&self, bytes: &[u8]) -> Result<()> {
        let max = self.meta_bytes_max();
        if bytes.len() > max {
            return Err(Error::InvalidOptions(format!(
                "metadata of {} bytes exceeds the HEAD slot's {max}",
                bytes.len()
            )));
        }
        if let Some((_, error)) = &lock(&self.shared.state).poison {
            return Err(Error::Poisoned(Arc::clone(error)));
        }
        self.shared
            .write_head(|head| head.meta = bytes.to_vec())
            .await
            .map_err(|error| match &lock(&self.shared.state).poison {
                Some((_, poison)) => Error::Poisoned(Arc::clone(poison)),
                None => Error::Io(error),
            })
    }

    /// The journal's metadata: what the last successful [`Journal::set_meta`] stored (empty if
    /// none ever did).
    pub fn meta(&self) -> Vec<u8> {
        lock(&self.shared.meta).clone()
    }

    /// The most bytes [`Journal::set_meta`] takes (the HEAD slot less its header).
    pub fn meta_bytes_max(&self) -> usize {
        format::head_meta_bytes_max(self.shared.head_slot_bytes)
    }

    /// LSN of the last acknowledged (durable) record; `Lsn(0)` if there is none.
    pub fn durable_lsn(&self) -> Lsn {
        Lsn(lock(&self.shared.state).durable_lsn)
    }

    /// LSN the next appended record gets.
    pub fn next_lsn(&self) -> Lsn {
        Lsn(lock(&self.shared.state).next_lsn)
    }

    /// Whether a failed write poisoned the journal.
    pub fn is_poisoned(&self) -> bool {
        lock(&self.shared.state).poison.is_some()
    }

    /// Whether the next segment is already created and zero-filled (rotation will not wait).
    pub fn is_spare_ready(&self) -> bool {
        matches!(lock(&self.shared.state).spare, Some(Ok(_)))
    }

    /// Counters since open.
    pub fn stats(&self) -> JournalStats {
        lock(&self.shared.state).stats
    }

    /// Segment numbers the journal holds, oldest first.
    pub fn segment_numbers(&self) -> Vec<u64> {
        lock(&self.shared.state)
            .segments
            .iter()
            .map(|s| s.number)
            .collect()
    }

    /// The storage the journal runs on.
    pub fn storage(&self) -> &S {
        &self.shared.storage
    }

    /// A reader over the durable records with LSN >= `from` (records older than the oldest
    /// segment are gone after [`Journal::truncate_before`]; the reader starts at the oldest
    /// one kept). Records acknowledged after this call are not included.
    pub fn reader(&self, from: Lsn) -> Reader<'_, S> {
        self.reader_range(from, Lsn(u64::MAX))
    }

    /// A reader over the durable records with LSNs in `from..to`. It costs what the range
    /// costs: an in-memory index of every batch's offset (filled at open from the recovery
    /// scan and as batches are written) takes it to the batch that holds `from`, and it reads
    /// the bytes of the batches up to the one holding `to - 1`, not the segment from its start.
    pub fn reader_range(&self, from: Lsn, to: Lsn) -> Reader<'_, S> {
        let state = lock(&self.shared.state);
        let segments: Vec<SegmentEntry> = state.segments.iter().copied().collect();
        let start = segments
            .iter()
            .rposition(|s| s.first_lsn <= from.0)
            .unwrap_or(0);
        let next_lsn = from.0.max(segments.first().map_or(1, |s| s.first_lsn));
        Reader {
            shared: &self.shared,
            until: state.durable_lsn.min(to.0.saturating_sub(1)),
            seek_end: None,
            next_lsn,
            segments,
            segment_index: start,
            current: None,
            chunk: None,
            chunk_offset: 0,
            cursor: 0,
            expect_lsn: 0,
            record_pos: 0,
            record_end: 0,
            record_lsn: 0,
        }
    }

    /// Durably removes every record with an LSN at or above `lsn` (Raft's log truncation): when
    /// this resolves, [`Journal::next_lsn`] is `lsn`, the next append gets `lsn` again, and
    /// every later open agrees. A crash at any point leaves the log as it was or truncated,
    /// never a mix. This is the only way an LSN is used twice.
    ///
    /// It waits for every record appended before it to be written (those appends resolve as
    /// usual), holds back appends made meanwhile, and starts a new segment (the spare) whose
    /// header carries the truncation (`format`, "Explicit truncation"), named by the HEAD.
    /// Readers made before it may still return records it removes.
    ///
    /// # Errors
    /// [`Error::LsnOutOfRange`] when `lsn` is below the first record kept or above
    /// [`Journal::next_lsn`]; [`Error::Poisoned`], [`Error::Closed`]; [`Error::Io`] if the
    /// segment or HEAD write fails, which poisons the journal. Dropping the future before it
    /// resolves poisons the journal too, once the new segment was taken (the truncation may or
    /// may not have become durable; reopening tells).
    pub async fn truncate_from(&self, lsn: Lsn) -> Result<()> {
        self.shared.truncate_from(lsn.0).await
    }

    /// Removes every whole segment whose records all have LSNs below `lsn` (never the segment
    /// being written); each removal is made durable with a directory sync. Returns how many
    /// segments were removed. Blocks on `unlink(2)` and `fsync(2)`.
    ///
    /// # Errors
    /// [`Error::Io`] from removing a file; segments before it are removed already.
    pub fn truncate_before(&self, lsn: Lsn) -> Result<usize> {
        let _oldest_first = lock(&self.truncating);
        let mut doomed = Vec::new();
        {
            let mut state = lock(&self.shared.state);
            while state.segments.len() >= 2 && state.segments[1].first_lsn <= lsn.0 {
                let entry = state.segments.pop_front().expect("two segments");
                state.batch_index.remove(entry.number);
                doomed.push(entry.number);
            }
        }
        for &number in &doomed {
            self.shared.storage.remove_segment(number)?;
        }
        Ok(doomed.len())
    }
}

impl<S: Storage> Drop for Journal<S> {
    /// Writes what was appended, waits for the writes, and stops the background threads.
    fn drop(&mut self) {
        stop_threads(
            &self.shared,
            &mut self.lane_threads,
            self.maintenance_thread.take(),
        );
    }
}

/// Closes the journal to appends, lets the lanes write what is left, and joins every thread.
fn stop_threads<S: Storage>(
    shared: &Shared<S>,
    lane_threads: &mut Vec<JoinHandle<()>>,
    maintenance_thread: Option<JoinHandle<()>>,
) {
    let mut wake_list = Vec::new();
    {
        let mut state = lock(&shared.state);
        state.closing = true;
        wake_list.append(&mut state.idle_lanes);
        wake_list.extend(state.rotation_waker.take());
    }
    wake_all(&mut wake_list);
    for thread in lane_threads.drain(..) {
        let _ = thread.join();
    }
    lock(&shared.maintenance).stop = true;
    shared.maintenance_wake.notify_all();
    if let Some(thread) = maintenance_thread {
        let _ = thread.join();
    }
}

fn maintenance<S: Storage>(shared: &Shared<S>) {
    loop {
        let number = {
            let mut maintenance = lock(&shared.maintenance);
            loop {
                if maintenance.stop {
                    return;
                }
                if let Some(number) = maintenance.request.take() {
                    break number;
                }
                maintenance = shared
                    .maintenance_wake
                    .wait(maintenance)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        let result = futures::executor::block_on(
            shared
                .storage
                .create_segment(number, shared.config.segment_bytes),
        );
        let waker = {
            let mut state = lock(&shared.state);
            state.spare = Some(result.map(|segment| (number, segment)).map_err(Arc::new));
            state.rotation_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

struct Job<S: Storage> {
    seq: u64,
    buf: S::Buf,
    len: usize,
    first_lsn: u64,
    record_count: u32,
    rotate: bool,
    segment: Option<S::Segment>,
    offset: u64,
}

fn seal<B: IoBuffer>(buf: &mut B, len: usize, block: usize, header: &BatchHeader) -> usize {
    let padded = format::round_up(len, block);
    let bytes = buf.as_full_mut();
    format::encode_batch_header(header, bytes);
    bytes[len..padded].fill(0);
    buf.set_len(padded);
    padded
}

/// One lane: take a batch, write it, report the result; until the journal closes or poisons.
async fn lane<S: Storage>(shared: Arc<Shared<S>>) {
    let mut wake_list: Vec<Waker> = Vec::with_capacity(256);
    loop {
        let Some(mut job) = poll_fn(|cx| shared.poll_take(cx, &mut wake_list)).await else {
            return;
        };
        if job.rotate {
            if let Err(error) = shared.rotate(&mut job, &mut wake_list).await {
                shared.complete(job.seq, Err(error), job.buf, &mut wake_list, true);
                continue;
            }
        }
        let segment = job.segment.take().expect("a taken batch has its segment");
        let (result, buf) = shared.storage.write_at(&segment, job.buf, job.offset).await;
        shared.complete(job.seq, result, buf, &mut wake_list, true);
    }
}

impl<S: Storage> State<S> {
    /// Whether the filling batch should be written now (see `overlap_records_min`).
    fn filling_ready(&self, config: &Config) -> bool {
        let filling = &self.slots[(self.next_seq % self.slots.len() as u64) as usize];
        filling.state == SlotState::Filling
            && filling.record_count > 0
            && (self.writes_in_flight == 0
                || self.closing
                || self.filling_blocked
                || filling.record_count >= config.overlap_records_min
                || 2 * filling.len >= config.batch_bytes_max)
    }

    /// An idle lane to wake if the filling batch is ready for one.
    fn lane_to_wake(&mut self, config: &Config) -> Option<Waker> {
        if self.filling_ready(config) {
            self.idle_lanes.pop()
        } else {
            None
        }
    }
}

impl<S: Storage> Shared<S> {
    fn poll_take(&self, cx: &mut Context<'_>, wake_list: &mut Vec<Waker>) -> Poll<Option<Job<S>>> {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        if state.poison.is_some() {
            return Poll::Ready(None);
        }
        let takeable = !state.rotating && state.filling_ready(&self.config);
        if !takeable {
            if state.closing && !state.rotating {
                return Poll::Ready(None);
            }
            if !state.idle_lanes.iter().any(|w| w.will_wake(cx.waker())) {
                state.idle_lanes.push(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let job = self.take_filling(state);
        wake_list.append(&mut state.space_waiters);
        drop(guard);
        wake_all(wake_list);
        Poll::Ready(Some(job))
    }

    /// Takes the filling batch for writing: assigns its offset (or marks a rotation) and seals
    /// it. The caller checked that it is ready.
    fn take_filling(&self, state: &mut State<S>) -> Job<S> {
        let index = (state.next_seq % state.slots.len() as u64) as usize;
        let seq = state.next_seq;
        state.next_seq += 1;
        state.writes_in_flight += 1;
        state.filling_blocked = false;
        let slot = &mut state.slots[index];
        slot.state = SlotState::InFlight;
        let mut job = Job {
            seq,
            buf: slot.buf.take().expect("a filling slot owns its buffer"),
            len: slot.len,
            first_lsn: slot.first_lsn,
            record_count: slot.record_count,
            rotate: false,
            segment: None,
            offset: 0,
        };
        let block = self.config.block_bytes;
        let padded = format::round_up(job.len, block) as u64;
        if state.active.write_offset + padded > self.config.segment_bytes {
            state.rotating = true;
            job.rotate = true;
        } else {
            job.offset = state.active.write_offset;
            state
                .batch_index
                .record(state.active.number, job.first_lsn, job.offset);
            state.active.write_offset += padded;
            job.segment = Some(state.active.handle.clone());
            self.seal_job(&mut job, state.active.number);
        }
        job
    }

    fn seal_job(&self, job: &mut Job<S>, segment_number: u64) {
        let header = BatchHeader {
            record_count: job.record_count,
            segment_number,
            generation: self.config.generation,
            first_lsn: job.first_lsn,
            body_bytes: (job.len - BATCH_HEADER_BYTES) as u32,
        };
        seal(&mut job.buf, job.len, self.config.block_bytes, &header);
    }

    /// Moves to the spare segment before writing `job`, after every earlier batch is durable.
    async fn rotate(&self, job: &mut Job<S>, wake_list: &mut Vec<Waker>) -> io::Result<()> {
        let seq = job.seq;
        poll_fn(|cx| {
            let mut state = lock(&self.state);
            if let Some((_, error)) = &state.poison {
                return Poll::Ready(Err(io::Error::new(error.kind(), error.to_string())));
            }
            if state.acked_seq == seq {
                return Poll::Ready(Ok(()));
            }
            register(&mut state.rotation_waker, cx);
            Poll::Pending
        })
        .await?;
        let (number, segment) = poll_fn(|cx| {
            let mut state = lock(&self.state);
            match state.spare.take() {
                Some(Ok(spare)) => Poll::Ready(Ok(spare)),
                Some(Err(error)) => Poll::Ready(Err(io::Error::new(
                    error.kind(),
                    format!("creating the next segment failed: {error}"),
                ))),
                None => {
                    register(&mut state.rotation_waker, cx);
                    Poll::Pending
                }
            }
        })
        .await?;
        let mut header_buf = lock(&self.state)
            .header_buf
            .take()
            .expect("one rotation at a time");
        format::encode_segment_header(
            &segment_header(&self.config, number, job.first_lsn),
            header_buf.as_full_mut(),
        );
        header_buf.set_len(self.config.block_bytes);
        let (result, header_buf) = self.storage.write_at(&segment, header_buf, 0).await;
        lock(&self.state).header_buf = Some(header_buf);
        result?;
        // The HEAD names the new segment before any batch goes into it (`format`: a crash
        // leaves at most one segment above the mark, holding nothing).
        self.write_head(|head| {
            head.segment_number = number;
            head.first_lsn = job.first_lsn;
            head.generation = self.config.generation;
        })
        .await?;
        {
            let mut guard = lock(&self.state);
            let state = &mut *guard;
            let block = self.config.block_bytes as u64;
            let padded = format::round_up(job.len, self.config.block_bytes) as u64;
            state.active = ActiveSegment {
                number,
                handle: segment.clone(),
                write_offset: block + padded,
            };
            state.segments.push_back(SegmentEntry {
                number,
                first_lsn: job.first_lsn,
            });
            state.rotating = false;
            state.stats.segments_created += 1;
            job.offset = block;
            state.batch_index.record(number, job.first_lsn, block);
            job.segment = Some(segment);
            // Lanes that found nothing to take during the rotation look again.
            wake_list.append(&mut state.idle_lanes);
        }
        self.seal_job(job, number);
        lock(&self.maintenance).request = Some(number + 1);
        self.maintenance_wake.notify_one();
        wake_all(wake_list);
        Ok(())
    }

    /// See [`Journal::truncate_from`].
    async fn truncate_from(&self, lsn: u64) -> Result<()> {
        let _one_at_a_time = self.truncation.lock().await;
        {
            let mut state = lock(&self.state);
            if let Some((_, error)) = &state.poison {
                return Err(Error::Poisoned(Arc::clone(error)));
            }
            if state.closing {
                return Err(Error::Closed);
            }
            state.truncating = true;
        }
        let mut guard = Truncating {
            shared: self,
            committing: false,
        };
        // Every record appended so far is written and acknowledged first, and no rotation runs.
        poll_fn(|cx| {
            let mut state = lock(&self.state);
            if let Some((_, error)) = &state.poison {
                return Poll::Ready(Err(Error::Poisoned(Arc::clone(error))));
            }
            let filling = &state.slots[(state.next_seq % state.slots.len() as u64) as usize];
            let nothing_unwritten =
                filling.state != SlotState::Filling || filling.record_count == 0;
            if state.acked_seq == state.next_seq && nothing_unwritten && !state.rotating {
                return Poll::Ready(Ok(()));
            }
            register(&mut state.rotation_waker, cx);
            let lane = state.lane_to_wake(&self.config);
            drop(state);
            if let Some(lane) = lane {
                lane.wake();
            }
            Poll::Pending
        })
        .await?;
        {
            let state = lock(&self.state);
            let first = state.segments.front().map_or(1, |s| s.first_lsn);
            if lsn < first || lsn > state.next_lsn {
                return Err(Error::LsnOutOfRange {
                    lsn,
                    first,
                    next: state.next_lsn,
                });
            }
            if lsn == state.next_lsn {
                return Ok(());
            }
        }
        let (number, segment) = poll_fn(|cx| {
            let mut state = lock(&self.state);
            match state.spare.take() {
                Some(Ok(spare)) => Poll::Ready(Ok(spare)),
                Some(Err(error)) => Poll::Ready(Err(Error::Io(io::Error::new(
                    error.kind(),
                    format!("creating the next segment failed: {error}"),
                )))),
                None => {
                    register(&mut state.rotation_waker, cx);
                    Poll::Pending
                }
            }
        })
        .await?;
        // From here a half-done truncation must not be left behind by a dropped future.
        guard.committing = true;
        let mut header_buf = lock(&self.state)
            .header_buf
            .take()
            .expect("no rotation runs during a truncation");
        let header = SegmentHeader {
            truncates: true,
            ..segment_header(&self.config, number, lsn)
        };
        format::encode_segment_header(&header, header_buf.as_full_mut());
        header_buf.set_len(self.config.block_bytes);
        let (result, header_buf) = self.storage.write_at(&segment, header_buf, 0).await;
        lock(&self.state).header_buf = Some(header_buf);
        if let Err(error) = result {
            self.poison(&error, "writing the truncating segment's header");
            return Err(Error::Io(error));
        }
        // The commit point: the HEAD names the truncating segment.
        self.write_head(|head| {
            head.segment_number = number;
            head.first_lsn = lsn;
            head.generation = self.config.generation;
        })
        .await?;
        let void = {
            let mut state = lock(&self.state);
            state.next_lsn = lsn;
            state.durable_lsn = lsn - 1;
            let mut void = Vec::new();
            while state.segments.back().is_some_and(|s| s.first_lsn >= lsn) {
                let number = state.segments.pop_back().expect("a segment").number;
                state.batch_index.remove(number);
                void.push(number);
            }
            state.segments.push_back(SegmentEntry {
                number,
                first_lsn: lsn,
            });
            state.active = ActiveSegment {
                number,
                handle: segment,
                write_offset: self.config.block_bytes as u64,
            };
            state.stats.segments_created += 1;
            // The next batch starts at `lsn` (a slot marked filling without records yet would
            // still carry the old next LSN).
            let filling = (state.next_seq % state.slots.len() as u64) as usize;
            if state.slots[filling].state == SlotState::Filling {
                debug_assert_eq!(state.slots[filling].record_count, 0);
                state.slots[filling].first_lsn = lsn;
            }
            void
        };
        guard.committing = false;
        drop(guard);
        lock(&self.maintenance).request = Some(number + 1);
        self.maintenance_wake.notify_one();
        // Recovery voids them anyway (the truncating segment says so); they only take space, so
        // a failed removal does not make the committed truncation fail. Newest first, as at
        // open.
        for number in void {
            if self.storage.remove_segment(number).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Poisons the journal with `error` (what failed, in `what`) and wakes everyone who waits.
    fn poison(&self, error: &io::Error, what: &str) {
        let mut state = lock(&self.state);
        let next_lsn = state.next_lsn;
        if state.poison.is_none() {
            state.poison = Some((
                next_lsn,
                Arc::new(io::Error::new(
                    error.kind(),
                    format!("{what} failed: {error}"),
                )),
            ));
        }
        let mut wake_list: Vec<Waker> = Vec::new();
        for slot in &state.slots {
            wake_list.extend(slot.waiters.iter().cloned());
        }
        wake_list.append(&mut state.space_waiters);
        wake_list.append(&mut state.idle_lanes);
        wake_list.extend(state.rotation_waker.take());
        drop(state);
        wake_all(&mut wake_list);
    }

    /// Writes a new HEAD value, made by `update` from the current one. Refused once the journal
    /// is poisoned; a failure poisons it (a HEAD write is never retried and assumed).
    async fn write_head(&self, update: impl FnOnce(&mut Head)) -> io::Result<()> {
        let mut file = self.head.lock().await;
        if let Some((_, error)) = &lock(&self.state).poison {
            return Err(io::Error::new(error.kind(), error.to_string()));
        }
        let mut next = file.current.clone();
        update(&mut next);
        // If this future is dropped while the write is in flight, the write may still land, and
        // the slot buffer is gone with the future: the HEAD's state is unknown until a reopen,
        // so the journal is poisoned rather than left to write the same slot again.
        struct InFlight<'a, S: Storage>(&'a Shared<S>, bool);
        impl<S: Storage> Drop for InFlight<'_, S> {
            fn drop(&mut self) {
                if self.1 {
                    self.0.poison(
                        &io::Error::other("a HEAD write was cancelled in flight"),
                        "writing the HEAD file",
                    );
                }
            }
        }
        let mut in_flight = InFlight(self, true);
        let result = write_head_slot(&self.storage, &mut file, next).await;
        in_flight.1 = false;
        match result {
            Ok(()) => {
                *lock(&self.meta) = file.current.meta.clone();
                Ok(())
            }
            Err(error) => {
                self.poison(&error, "writing the HEAD file");
                Err(error)
            }
        }
    }

    /// Records the result of batch `seq` and acknowledges every batch that is now durable in
    /// order.
    /// `by_lane`: a lane that completes goes on to take the next batch itself; an appender
    /// that led its batch does not, so it wakes an idle lane when the filling batch is ready.
    fn complete(
        &self,
        seq: u64,
        result: io::Result<()>,
        buf: S::Buf,
        wake_list: &mut Vec<Waker>,
        by_lane: bool,
    ) {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let slot_count = state.slots.len() as u64;
        let slot = &mut state.slots[(seq % slot_count) as usize];
        debug_assert_eq!(slot.seq, seq);
        debug_assert_eq!(slot.state, SlotState::InFlight);
        let written = buf.len() as u64;
        slot.buf = Some(buf);
        state.writes_in_flight -= 1;
        match result {
            Ok(()) => {
                slot.state = SlotState::Done;
                state.stats.batches_written += 1;
                state.stats.records_written += u64::from(slot.record_count);
                state.stats.bytes_written += written;
            }
            Err(error) => {
                slot.state = SlotState::Failed;
                let from = slot.first_lsn;
                match &mut state.poison {
                    Some((first, _)) => *first = (*first).min(from),
                    None => state.poison = Some((from, Arc::new(error))),
                }
                // Every waiter re-checks: the ones at or after the failed LSN get the error,
                // earlier ones keep waiting for their own batch.
                for slot in &state.slots {
                    wake_list.extend(slot.waiters.iter().cloned());
                }
                wake_list.append(&mut state.space_waiters);
                wake_list.append(&mut state.idle_lanes);
                wake_list.extend(state.rotation_waker.take());
            }
        }
        let mut freed = false;
        while state.acked_seq < state.next_seq {
            let slot = &mut state.slots[(state.acked_seq % slot_count) as usize];
            if slot.state != SlotState::Done {
                break;
            }
            state.durable_lsn = slot.first_lsn + u64::from(slot.record_count) - 1;
            wake_list.append(&mut slot.waiters);
            slot.state = SlotState::Free;
            state.acked_seq += 1;
            freed = true;
        }
        if freed {
            wake_list.append(&mut state.space_waiters);
            wake_list.extend(state.rotation_waker.take());
        }
        if !by_lane {
            wake_list.extend(state.lane_to_wake(&self.config));
        }
        drop(guard);
        wake_all(wake_list);
    }
}

/// Ends a truncation however `truncate_from` returns: appends go on. If its future is dropped
/// while it commits (the new segment taken, its header or the HEAD possibly written), the
/// journal is poisoned: its state on the device is unknown until a reopen.
struct Truncating<'a, S: Storage> {
    shared: &'a Shared<S>,
    committing: bool,
}

impl<S: Storage> Drop for Truncating<'_, S> {
    fn drop(&mut self) {
        if self.committing {
            self.shared.poison(
                &io::Error::other("truncate_from was cancelled while it committed"),
                "truncating the journal",
            );
        }
        let mut state = lock(&self.shared.state);
        state.truncating = false;
        let mut wake_list = std::mem::take(&mut state.space_waiters);
        drop(state);
        wake_all(&mut wake_list);
    }
}

enum Records<'a> {
    One(&'a [u8]),
    Many(&'a [&'a [u8]]),
}

impl Records<'_> {
    fn count(&self) -> usize {
        match self {
            Records::One(_) => 1,
            Records::Many(records) => records.len(),
        }
    }

    fn get(&self, index: usize) -> &[u8] {
        match self {
            Records::One(record) => record,
            Records::Many(records) => records[index],
        }
    }

    fn encoded_bytes(&self) -> usize {
        (0..self.count())
            .map(|i| RECORD_HEADER_BYTES + self.get(i).len())
            .sum()
    }
}

/// What the first step of an append produced.
struct Appended<S: Storage> {
    /// LSN of the (last) record appended.
    lsn: u64,
    /// Sequence number of the batch holding it.
    seq: u64,
    /// The batch, if this appender writes it itself (nothing else was in flight).
    lead: Option<Job<S>>,
    /// No other append arrived while the previous batch was written: a lone writer.
    alone: bool,
}

impl<S: Storage> Shared<S> {
    /// Appends `records`: encodes them into the filling batch, then either writes that batch
    /// from this task (when nothing else is in flight: no thread hand-off on the lone-writer
    /// path) or leaves it to a lane, and waits until the records are acknowledged.
    async fn append(&self, records: Records<'_>) -> Result<Lsn> {
        let appended = poll_fn(|cx| self.poll_append(&records, cx)).await?;
        if let Some(mut job) = appended.lead {
            let segment = job.segment.take().expect("a led batch has its segment");
            let seq = job.seq;
            if appended.alone {
                let write = self.storage.write_at_alone(&segment, job.buf, job.offset);
                LeaderWrite {
                    write,
                    shared: self,
                    seq,
                    done: false,
                }
                .await;
            } else {
                let write = self.storage.write_at(&segment, job.buf, job.offset);
                LeaderWrite {
                    write,
                    shared: self,
                    seq,
                    done: false,
                }
                .await;
            }
        }
        WaitDurable {
            shared: self,
            lsn: appended.lsn,
            seq: appended.seq,
            waker_index: None,
        }
        .await
    }

    fn poll_append(
        &self,
        records: &Records<'_>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Appended<S>>> {
        let config = &self.config;
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        if let Some((_, error)) = &state.poison {
            return Poll::Ready(Err(Error::Poisoned(Arc::clone(error))));
        }
        if state.closing {
            return Poll::Ready(Err(Error::Closed));
        }
        if state.truncating {
            // The LSNs this append would take are being decided: wait for the truncation.
            if !state.space_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                state.space_waiters.push(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let bytes = records.encoded_bytes();
        if BATCH_HEADER_BYTES + bytes > config.batch_bytes_max || records.count() == 0 {
            return Poll::Ready(Err(Error::RecordTooLarge {
                bytes: BATCH_HEADER_BYTES + bytes,
                max_bytes: config.batch_bytes_max,
            }));
        }
        let slot_count = state.slots.len() as u64;
        let seq = state.next_seq;
        let slot = &mut state.slots[(seq % slot_count) as usize];
        if slot.state == SlotState::Free {
            slot.state = SlotState::Filling;
            slot.seq = seq;
            slot.len = BATCH_HEADER_BYTES;
            slot.first_lsn = state.next_lsn;
            slot.record_count = 0;
        }
        if slot.state != SlotState::Filling || slot.len + bytes > config.batch_bytes_max {
            // The filling batch is full or its slot is still in flight: wait for a lane to take
            // it or for an acknowledgement to free the slot.
            if !state.space_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                state.space_waiters.push(cx.waker().clone());
            }
            if slot.state == SlotState::Filling {
                state.filling_blocked = true;
            }
            let waker = state.lane_to_wake(config);
            drop(guard);
            if let Some(waker) = waker {
                waker.wake();
            }
            return Poll::Pending;
        }
        let buf = slot
            .buf
            .as_mut()
            .expect("a filling slot owns its buffer")
            .as_full_mut();
        let mut lsn = state.next_lsn;
        for index in 0..records.count() {
            slot.len += format::encode_record(
                &mut buf[slot.len..],
                config.generation,
                lsn,
                records.get(index),
            );
            lsn += 1;
        }
        slot.record_count += records.count() as u32;
        state.next_lsn = lsn;
        if state.writes_in_flight > 0 {
            state.appends_while_writing += 1;
        }
        let padded = format::round_up(slot.len, config.block_bytes) as u64;
        let lead = state.writes_in_flight == 0
            && !state.rotating
            && state.space_waiters.is_empty()
            && state.active.write_offset + padded <= config.segment_bytes;
        if lead {
            let job = self.take_filling(state);
            let alone = state.appends_while_writing == 0;
            state.appends_while_writing = 0;
            return Poll::Ready(Ok(Appended {
                lsn: lsn - 1,
                seq,
                lead: Some(job),
                alone,
            }));
        }
        let waker = state.lane_to_wake(config);
        drop(guard);
        if let Some(waker) = waker {
            waker.wake();
        }
        Poll::Ready(Ok(Appended {
            lsn: lsn - 1,
            seq,
            lead: None,
            alone: false,
        }))
    }
}

/// Drives `fut` to completion on this thread, parking between polls. Unlike
/// `futures::executor::block_on` this works inside another executor (a dropped append inside
/// `block_on` or a `LocalPool`), which must not panic or leave the batch unrecorded. The
/// storage's write must not need the dropping thread to make progress (directfile's does not:
/// its driver completes operations from its own thread). Allocates one waker: the rare path.
fn wait_here<F: Future>(mut fut: Pin<&mut F>) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

pin_project_lite::pin_project! {
    /// An appender writing its batch itself. If the append future is dropped before the write
    /// completes, dropping this waits for the write to complete (blocking the thread, at most
    /// one write) and records its result, so the batch is never left in an unknown state.
    struct LeaderWrite<'a, S: Storage, F: Future<Output = (io::Result<()>, S::Buf)>> {
        #[pin]
        write: F,
        shared: &'a Shared<S>,
        seq: u64,
        done: bool,
    }

    impl<'a, S: Storage, F: Future<Output = (io::Result<()>, S::Buf)>> PinnedDrop for LeaderWrite<'a, S, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.done {
                let (result, buf) = wait_here(this.write);
                this.shared.complete(*this.seq, result, buf, &mut Vec::new(), false);
            }
        }
    }
}

impl<S: Storage, F: Future<Output = (io::Result<()>, S::Buf)>> Future for LeaderWrite<'_, S, F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let (result, buf) = match this.write.poll(cx) {
            Poll::Ready(done) => done,
            Poll::Pending => return Poll::Pending,
        };
        *this.done = true;
        let mut wake_list = lock(&this.shared.state)
            .wake_lists
            .pop()
            .unwrap_or_default();
        this.shared
            .complete(*this.seq, result, buf, &mut wake_list, false);
        lock(&this.shared.state).wake_lists.push(wake_list);
        Poll::Ready(())
    }
}

/// Waits until `lsn` is acknowledged or the journal is poisoned at or before it.
struct WaitDurable<'a, S: Storage> {
    shared: &'a Shared<S>,
    lsn: u64,
    seq: u64,
    waker_index: Option<usize>,
}

impl<S: Storage> Future for WaitDurable<'_, S> {
    type Output = Result<Lsn>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Lsn>> {
        let this = self.get_mut();
        let mut guard = lock(&this.shared.state);
        let state = &mut *guard;
        if state.durable_lsn >= this.lsn {
            return Poll::Ready(Ok(Lsn(this.lsn)));
        }
        if let Some((first_failed, error)) = &state.poison {
            if this.lsn >= *first_failed {
                return Poll::Ready(Err(Error::Poisoned(Arc::clone(error))));
            }
        }
        // Not acknowledged, so the batch's slot still belongs to it.
        let slot_count = state.slots.len() as u64;
        let slot = &mut state.slots[(this.seq % slot_count) as usize];
        debug_assert_eq!(slot.seq, this.seq);
        match this
            .waker_index
            .and_then(|index| slot.waiters.get_mut(index))
        {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            Some(waker) => *waker = cx.waker().clone(),
            None => {
                slot.waiters.push(cx.waker().clone());
                this.waker_index = Some(slot.waiters.len() - 1);
            }
        }
        Poll::Pending
    }
}

/// One record read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The record's log sequence number.
    pub lsn: Lsn,
    /// The bytes that were appended, borrowed from the reader's buffer until its next call.
    pub payload: &'a [u8],
}

/// Iterates durable records in LSN order; see [`Journal::reader`].
pub struct Reader<'a, S: Storage> {
    shared: &'a Arc<Shared<S>>,
    until: u64,
    /// Where the batches of the range end in the current segment, when the index knows.
    seek_end: Option<u64>,
    next_lsn: u64,
    segments: Vec<SegmentEntry>,
    segment_index: usize,
    current: Option<(S::Segment, SegmentHeader)>,
    chunk: Option<S::Buf>,
    chunk_offset: u64,
    cursor: u64,
    expect_lsn: u64,
    record_pos: usize,
    record_end: usize,
    record_lsn: u64,
}

const READ_CHUNK_BYTES: usize = 1 << 20;

impl<S: Storage> Reader<'_, S> {
    /// The next record, or `None` after the last one that was durable when the reader was made.
    ///
    /// # Errors
    /// [`Error::Io`] from reading; [`Error::Corruption`] if a record that should be there is not
    /// (for example its segment was truncated away while reading).
    pub async fn next(&mut self) -> Result<Option<Record<'_>>> {
        let (start, end, lsn) = loop {
            if self.next_lsn > self.until {
                return Ok(None);
            }
            if self.record_pos < self.record_end {
                let chunk = self.chunk.as_ref().expect("chunk").as_slice();
                let at = self.record_pos;
                let payload_bytes =
                    u32::from_le_bytes(chunk[at..at + 4].try_into().expect("4 bytes")) as usize;
                let start = at + RECORD_HEADER_BYTES;
                self.record_pos = start + payload_bytes;
                let lsn = self.record_lsn;
                self.record_lsn += 1;
                if self.segment_end().is_some_and(|end| lsn >= end) {
                    // A truncation voided the rest of this segment: the next one goes on.
                    self.record_pos = self.record_end;
                    self.current = None;
                    self.segment_index += 1;
                    continue;
                }
                if lsn < self.next_lsn {
                    continue;
                }
                if lsn > self.next_lsn {
                    return Err(Error::Corruption(recovery::Corruption {
                        segment_number: self.segments[self.segment_index].number,
                        offset: self.cursor,
                        reason: format!("records {}..{lsn} are missing", self.next_lsn),
                    }));
                }
                self.next_lsn = lsn + 1;
                break (start, start + payload_bytes, lsn);
            }
            self.next_batch().await?;
        };
        let chunk = self.chunk.as_ref().expect("chunk").as_slice();
        Ok(Some(Record {
            lsn: Lsn(lsn),
            payload: &chunk[start..end],
        }))
    }

    /// Where the current segment's records end: the next segment's first LSN (lower than its
    /// last record's when a truncation cut it).
    fn segment_end(&self) -> Option<u64> {
        self.segments
            .get(self.segment_index + 1)
            .map(|next| next.first_lsn)
    }

    /// Reads `bytes` (rounded up to the storage's block) at `offset` into the chunk.
    async fn fill_chunk(&mut self, segment: &S::Segment, offset: u64, bytes: usize) -> Result<()> {
        let storage = &self.shared.storage;
        let capacity = format::round_up(bytes.max(1), storage.block_bytes());
        let buf = match self.chunk.take() {
            Some(buf) if buf.capacity() == capacity => buf,
            _ => storage.alloc_buf(capacity),
        };
        let (result, buf) = storage.read_at(segment, buf, offset).await;
        self.chunk = Some(buf);
        self.chunk_offset = offset;
        if let Err(e) = result {
            // The chunk holds nothing usable: start this segment again on the next call (the
            // records already returned are skipped by LSN).
            self.current = None;
            self.record_pos = 0;
            self.record_end = 0;
            return Err(e.into());
        }
        Ok(())
    }

    async fn next_batch(&mut self) -> Result<()> {
        loop {
            if self.current.is_none() {
                let Some(entry) = self.segments.get(self.segment_index).copied() else {
                    return Err(Error::Corruption(recovery::Corruption {
                        segment_number: self.segments.last().map_or(0, |s| s.number),
                        offset: self.cursor,
                        reason: format!(
                            "records {}..={} are acknowledged but were not found",
                            self.next_lsn, self.until
                        ),
                    }));
                };
                let segment = self.shared.storage.open_segment(entry.number)?;
                let seek = lock(&self.shared.state).batch_index.seek(
                    entry.number,
                    self.next_lsn,
                    self.until,
                );
                // With the batch known, only the header block is read here; else a chunk from
                // the segment's start (an older open may have used bigger batches than ours:
                // the chunk holds at least two of ours).
                let bytes = match seek {
                    Some(_) => format::SEGMENT_HEADER_BYTES,
                    None => READ_CHUNK_BYTES.max(2 * self.shared.config.batch_bytes_max),
                };
                self.fill_chunk(&segment, 0, bytes).await?;
                let chunk = self.chunk.as_ref().expect("chunk").as_slice();
                let header = format::decode_segment_header(chunk).map_err(|e| {
                    Error::Corruption(recovery::Corruption {
                        segment_number: entry.number,
                        offset: 0,
                        reason: format!("segment header: {e}"),
                    })
                })?;
                match seek {
                    Some(seek) => {
                        self.cursor = seek.offset;
                        self.expect_lsn = seek.first_lsn;
                        // Past the last known batch nothing of the range is left: it ends
                        // within one batch of that batch's start.
                        self.seek_end = Some(
                            seek.end_offset
                                .unwrap_or(seek.last_offset + u64::from(header.batch_bytes_max)),
                        );
                    }
                    None => {
                        self.cursor = u64::from(header.block_bytes);
                        self.expect_lsn = header.first_lsn;
                        self.seek_end = None;
                    }
                }
                self.current = Some((segment, header));
            }
            if self.segment_end().is_some_and(|end| self.expect_lsn >= end) {
                self.current = None;
                self.segment_index += 1;
                continue;
            }
            let (segment, header) = self.current.clone().expect("current segment");
            let batch_max = header.batch_bytes_max as u64;
            let chunk_len = self.chunk.as_ref().map_or(0, |c| c.len()) as u64;
            let chunk_full = chunk_len == self.chunk.as_ref().map_or(0, |c| c.capacity()) as u64;
            // The bytes the next batch may need: up to a whole batch, but never past the end of
            // the range when the index told it (the batch at the cursor ends there or before).
            let range_end = self.seek_end.filter(|&end| end > self.cursor);
            let needed_end = range_end.map_or(self.cursor + batch_max, |end| {
                end.min(self.cursor + batch_max)
            });
            if self.cursor < self.chunk_offset
                || (chunk_full && needed_end > self.chunk_offset + chunk_len)
            {
                // A chunk holds at least two batches of the segment, or exactly the rest of the
                // range.
                let default = READ_CHUNK_BYTES.max(2 * header.batch_bytes_max as usize);
                let bytes =
                    range_end.map_or(default, |end| ((end - self.cursor) as usize).min(default));
                self.fill_chunk(&segment, self.cursor, bytes).await?;
            }
            let chunk = self.chunk.as_ref().expect("chunk").as_slice();
            let at = (self.cursor - self.chunk_offset) as usize;
            match format::decode_batch(&chunk[at.min(chunk.len())..], &header, self.expect_lsn) {
                Ok(batch) => {
                    self.record_pos = at + BATCH_HEADER_BYTES;
                    self.record_end = self.record_pos + batch.header.body_bytes as usize;
                    self.record_lsn = batch.header.first_lsn;
                    self.expect_lsn = batch.header.last_lsn() + 1;
                    self.cursor += batch.padded_bytes as u64;
                    return Ok(());
                }
                Err(e) => {
                    // The end of this segment's records, if the next segment (or the end of
                    // what we must return) starts exactly where they stop; anything else means
                    // durable records are missing.
                    let next_first = self
                        .segments
                        .get(self.segment_index + 1)
                        .map(|n| n.first_lsn);
                    if self.expect_lsn > self.until || next_first == Some(self.expect_lsn) {
                        self.current = None;
                        self.segment_index += 1;
                    } else {
                        return Err(Error::Corruption(recovery::Corruption {
                            segment_number: self.segments[self.segment_index].number,
                            offset: self.cursor,
                            reason: format!(
                                "record {} is acknowledged but its batch does not decode: {e}",
                                self.expect_lsn
                            ),
                        }));
                    }
                }
            }
        }
    }
}
