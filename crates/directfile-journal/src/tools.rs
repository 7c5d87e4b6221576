//! What the `directfile journal {dump, verify, bench}` commands do; the CLI only parses flags
//! and prints these reports.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::format::{self, HeadState, RECORD_HEADER_BYTES};
use crate::recovery::{self, HeaderState, Plan, SegmentEnd, SegmentScan};
use crate::storage::{list_segment_files, segment_file_name, HEAD_FILE_NAME};
use crate::{Corruption, DirectFileStorage, Journal, JournalOptions, StdStorage, Storage};

// ---------------------------------------------------------------------------------------------
// dump and verify

fn scan_dir(dir: &Path) -> io::Result<Vec<(SegmentScan, Vec<u8>)>> {
    let mut scans = Vec::new();
    for number in list_segment_files(dir)? {
        let bytes = fs::read(dir.join(segment_file_name(number)))?;
        scans.push((recovery::scan_segment(number, &bytes), bytes));
    }
    Ok(scans)
}

/// Reads and decodes the HEAD file of the journal in `dir`.
fn read_head_file(dir: &Path) -> io::Result<HeadState> {
    match fs::read(dir.join(HEAD_FILE_NAME)) {
        Ok(bytes) => Ok(format::decode_head(Some(&bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HeadState::Absent),
        Err(e) => Err(e),
    }
}

fn write_head(f: &mut fmt::Formatter<'_>, head: &HeadState) -> fmt::Result {
    match head {
        HeadState::Absent => writeln!(f, "HEAD: missing"),
        HeadState::Unreadable { slot_errors } => writeln!(
            f,
            "HEAD: UNREADABLE ({})",
            slot_errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
        HeadState::Valid { head, slot_bytes } => writeln!(
            f,
            "HEAD: high-water mark segment {} (first LSN {}, generation {}), write {}, {} B of metadata, slots of {slot_bytes} B",
            head.segment_number,
            head.first_lsn,
            head.generation,
            head.sequence,
            head.meta.len()
        ),
    }
}

/// Everything in a journal directory: the HEAD, segments, batches, records.
#[derive(Debug, Clone)]
pub struct DumpReport {
    /// The journal directory that was read.
    pub dir: PathBuf,
    /// What its HEAD file holds (or that it is missing or unreadable).
    pub head: HeadState,
    /// Every segment file, by ascending segment number.
    pub segments: Vec<SegmentDump>,
}

/// One segment of a [`DumpReport`].
#[derive(Debug, Clone)]
pub struct SegmentDump {
    /// The segment's header, valid batches and end, as recovery scans them.
    pub scan: SegmentScan,
    /// For each batch of `scan.batches`, its records as (LSN, payload bytes).
    pub records: Vec<Vec<(u64, usize)>>,
}

/// Reads every segment of the journal in `dir` (without locking it) and lists what it holds.
///
/// # Errors
/// If the directory or a segment cannot be read.
pub fn dump(dir: impl AsRef<Path>) -> io::Result<DumpReport> {
    let dir = dir.as_ref();
    let mut segments = Vec::new();
    for (scan, bytes) in scan_dir(dir)? {
        let mut records = Vec::new();
        if let HeaderState::Valid(header) = &scan.header {
            for batch in &scan.batches {
                let decoded =
                    format::decode_batch(&bytes[batch.offset as usize..], header, batch.first_lsn)
                        .expect("the scan verified this batch");
                records.push(
                    decoded
                        .records()
                        .map(|r| (r.lsn, r.payload.len()))
                        .collect(),
                );
            }
        }
        segments.push(SegmentDump { scan, records });
    }
    Ok(DumpReport {
        dir: dir.to_path_buf(),
        head: read_head_file(dir)?,
        segments,
    })
}

fn write_end(f: &mut fmt::Formatter<'_>, scan: &SegmentScan) -> fmt::Result {
    match &scan.end {
        SegmentEnd::Clean => writeln!(f, "  end: clean at offset {}", scan.valid_end),
        SegmentEnd::Damaged { offset, reason, damaged_end, within_torn_window } => writeln!(
            f,
            "  end: DAMAGED at offset {offset}: {reason}; non-zero bytes up to offset {damaged_end} ({})",
            if *within_torn_window { "within the in-flight window" } else { "beyond the in-flight window" }
        ),
    }
}

impl fmt::Display for DumpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "journal {}: {} segments",
            self.dir.display(),
            self.segments.len()
        )?;
        write_head(f, &self.head)?;
        for segment in &self.segments {
            let scan = &segment.scan;
            match &scan.header {
                HeaderState::Valid(h) => writeln!(
                    f,
                    "segment {} ({} bytes): generation {}, first LSN {}{}, block {} B, batch max {} B, in flight max {}, {} batches, {} records",
                    scan.segment_number,
                    scan.file_bytes,
                    h.generation,
                    h.first_lsn,
                    if h.truncates { " (TRUNCATES: earlier records from this LSN on are void)" } else { "" },
                    h.block_bytes,
                    h.batch_bytes_max,
                    h.batches_in_flight_max,
                    scan.batches.len(),
                    scan.record_count()
                )?,
                HeaderState::Unused => writeln!(
                    f,
                    "segment {} ({} bytes): unused (all zeros, a preallocated spare)",
                    scan.segment_number, scan.file_bytes
                )?,
                HeaderState::Invalid { reason, rest_is_zero, .. } => writeln!(
                    f,
                    "segment {} ({} bytes): INVALID HEADER at offset 0: {reason}{}",
                    scan.segment_number,
                    scan.file_bytes,
                    if *rest_is_zero { " (nothing written after it)" } else { "" }
                )?,
            }
            for (batch, records) in scan.batches.iter().zip(&segment.records) {
                writeln!(
                    f,
                    "  batch at offset {} ({} B): LSNs {}..={} ({} records)",
                    batch.offset,
                    batch.padded_bytes,
                    batch.first_lsn,
                    batch.first_lsn + u64::from(batch.record_count) - 1,
                    batch.record_count
                )?;
                for (lsn, bytes) in records {
                    writeln!(f, "    record LSN {lsn}: {bytes} B")?;
                }
            }
            if matches!(scan.header, HeaderState::Valid(_)) {
                write_end(f, scan)?;
            }
        }
        Ok(())
    }
}

/// The verdict on a journal directory.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The journal directory that was checked.
    pub dir: PathBuf,
    /// What its HEAD file holds (or that it is missing or unreadable).
    pub head: HeadState,
    /// The scan of every segment file, by ascending segment number.
    pub scans: Vec<SegmentScan>,
    /// What recovery would do, or the corruption that stops it.
    pub plan: Result<Plan, Corruption>,
}

impl VerifyReport {
    /// 0 healthy, 1 torn tail found (recoverable), 2 corruption.
    pub fn exit_code(&self) -> i32 {
        match &self.plan {
            Ok(plan) if plan.torn_tail.is_none() => 0,
            Ok(_) => 1,
            Err(_) => 2,
        }
    }
}

/// What an open of the journal in `dir` would keep: its metadata (`Journal::meta`) and every
/// record, in LSN order, passed to `visit(lsn, payload)` (without opening the journal, so a
/// journal in use can be looked at). Records a torn tail, a truncation or a torn segment voids
/// are not visited.
///
/// # Errors
/// The directory cannot be read, or recovery would refuse it (the corruption is in the
/// error's message).
pub fn kept_records(
    dir: impl AsRef<Path>,
    mut visit: impl FnMut(u64, &[u8]),
) -> io::Result<Vec<u8>> {
    let dir = dir.as_ref();
    let scans = scan_dir(dir)?;
    let head = read_head_file(dir)?;
    let plain: Vec<SegmentScan> = scans.iter().map(|(scan, _)| scan.clone()).collect();
    let plan = recovery::plan(&head, &plain)
        .map_err(|c| io::Error::new(io::ErrorKind::InvalidData, c.to_string()))?;
    let truncate_at = |number: u64| plan.truncate.filter(|t| t.0 == number).map(|t| t.1);
    for (scan, bytes) in &scans {
        if !plan.kept_segments.contains(&scan.segment_number) {
            continue;
        }
        let HeaderState::Valid(header) = &scan.header else {
            continue;
        };
        let cut = plan
            .cuts
            .iter()
            .find(|c| c.0 == scan.segment_number)
            .map_or(u64::MAX, |c| c.1);
        for batch in &scan.batches {
            if truncate_at(scan.segment_number).is_some_and(|end| batch.offset >= end) {
                break;
            }
            let decoded =
                format::decode_batch(&bytes[batch.offset as usize..], header, batch.first_lsn)
                    .expect("the scan verified this batch");
            for record in decoded.records().filter(|r| r.lsn < cut) {
                visit(record.lsn, record.payload);
            }
        }
    }
    Ok(plan.head.map(|h| h.meta).unwrap_or_default())
}

/// Checks every segment of the journal in `dir` (read-only, without locking it) the way
/// recovery would.
///
/// # Errors
/// If the directory or a segment cannot be read.
pub fn verify(dir: impl AsRef<Path>) -> io::Result<VerifyReport> {
    let dir = dir.as_ref();
    let scans: Vec<SegmentScan> = scan_dir(dir)?.into_iter().map(|(scan, _)| scan).collect();
    let head = read_head_file(dir)?;
    let plan = recovery::plan(&head, &scans);
    Ok(VerifyReport {
        dir: dir.to_path_buf(),
        head,
        scans,
        plan,
    })
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "journal {}: {} segment files",
            self.dir.display(),
            self.scans.len()
        )?;
        write_head(f, &self.head)?;
        for scan in &self.scans {
            write!(f, "segment {}: ", scan.segment_number)?;
            match &scan.header {
                HeaderState::Valid(_) => {
                    writeln!(
                        f,
                        "{} batches, {} records",
                        scan.batches.len(),
                        scan.record_count()
                    )?;
                    write_end(f, scan)?;
                }
                HeaderState::Unused => writeln!(f, "unused spare")?,
                HeaderState::Invalid { reason, .. } => {
                    writeln!(f, "invalid header at offset 0: {reason}")?
                }
            }
        }
        match &self.plan {
            Ok(plan) => {
                let last = if plan.record_count == 0 {
                    "-".to_string()
                } else {
                    (plan.next_lsn - 1).to_string()
                };
                writeln!(
                    f,
                    "records: {}, LSNs {}..{last}",
                    plan.record_count,
                    plan.first_lsn.map_or("-".to_string(), |l| l.to_string())
                )?;
                for (segment, end) in &plan.cuts {
                    writeln!(
                        f,
                        "segment {segment}: records from LSN {end} on were truncated (truncate_from)"
                    )?;
                }
                match &plan.torn_tail {
                    Some(torn) => writeln!(f, "TORN TAIL: {torn} (recovery truncates it)")?,
                    None => writeln!(f, "healthy")?,
                }
            }
            Err(corruption) => writeln!(f, "CORRUPT: {corruption}")?,
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// bench

/// Which journal a [`BenchResult`] measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchJournal {
    /// This crate's journal on directfile.
    Directfile,
    /// This crate's journal on [`StdStorage`].
    StdODirect,
    /// `std::fs` append plus `fdatasync` per record, under a mutex.
    Naive,
    /// `std::fs` with a leader writing and `fdatasync`ing each accumulated batch.
    BufferedGroupCommit,
}

impl BenchJournal {
    /// The name in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            BenchJournal::Directfile => "directfile",
            BenchJournal::StdODirect => "journal-on-std-odirect",
            BenchJournal::Naive => "naive",
            BenchJournal::BufferedGroupCommit => "buffered-group-commit",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// A directory on the file system to measure; the bench works in a fresh subdirectory.
    pub dir: PathBuf,
    /// Appenders running at once, each appending one record at a time and waiting for it to be
    /// durable (tasks on up to one thread per core for the journal, a thread each for the
    /// `std::fs` baselines).
    pub writers: usize,
    /// Payload bytes of each record.
    pub record_bytes: usize,
    /// How long the measurement lasts (after every writer is set up).
    pub runtime: Duration,
    /// Also run the two `std::fs` baselines.
    pub compare: bool,
    /// Total heap allocations of the process so far (the CLI's counting allocator), if known.
    pub allocs: Option<fn() -> u64>,
    /// The options of the journal measured (the `std::fs` baselines have none).
    pub options: JournalOptions,
    /// The directfile driver for the journal's files (None: a journal driver of its own).
    pub driver: Option<directfile::Driver>,
    /// Run the journal on [`StdStorage`] (blocking `pwrite(2)` with `O_DIRECT | O_DSYNC` on
    /// each lane's thread) instead of directfile.
    pub std_storage: bool,
}

impl BenchConfig {
    /// 64 writers of 256-byte records for 5 s in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> BenchConfig {
        BenchConfig {
            dir: dir.into(),
            writers: 64,
            record_bytes: 256,
            runtime: Duration::from_secs(5),
            compare: false,
            allocs: None,
            options: JournalOptions::default(),
            driver: None,
            std_storage: false,
        }
    }
}

/// One journal's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    /// The journal measured.
    pub journal: BenchJournal,
    /// Appenders running at once ([`BenchConfig::writers`]).
    pub writers: usize,
    /// Payload bytes of each record ([`BenchConfig::record_bytes`]).
    pub record_bytes: usize,
    /// Appends acknowledged as durable during the measurement.
    pub appends: u64,
    /// `appends` per second of measured time.
    pub appends_per_s: f64,
    /// Payload bytes made durable per second (`appends_per_s × record_bytes`; headers and
    /// padding not counted).
    pub bytes_per_s: f64,
    /// Median commit latency in µs: from the call to append until it returned durable.
    pub commit_us_p50: f64,
    /// 99th percentile of the commit latency, in µs.
    pub commit_us_p99: f64,
    /// 99.9th percentile of the commit latency, in µs.
    pub commit_us_p999: f64,
    /// Durable writes (journal batches, or fdatasync calls for the baselines).
    pub batches: u64,
    /// `appends / batches`: how many records one durable write carried on average (0 without
    /// batches).
    pub records_per_batch_mean: f64,
    /// Heap allocations per append during the measurement (None without a counter).
    pub allocs_per_append: Option<f64>,
    /// (commit latency in µs, fraction of appends committed within it), ascending: the CDF
    /// behind the percentiles, for plots. Not part of the JSON.
    pub commit_latency_cdf: Vec<(f64, f64)>,
}

impl BenchResult {
    /// One JSON object with the fields named as in the CLI's documentation.
    pub fn to_json(&self) -> String {
        let allocs = self
            .allocs_per_append
            .map_or("null".to_string(), |a| format!("{a:.6}"));
        format!(
            concat!(
                "{{\"journal\":\"{}\",\"writers\":{},\"record_bytes\":{},\"appends\":{},",
                "\"appends_per_s\":{:.1},\"bytes_per_s\":{:.1},\"commit_us_p50\":{:.1},",
                "\"commit_us_p99\":{:.1},\"commit_us_p999\":{:.1},\"batches\":{},",
                "\"records_per_batch_mean\":{:.2},\"allocs_per_append\":{}}}"
            ),
            self.journal.name(),
            self.writers,
            self.record_bytes,
            self.appends,
            self.appends_per_s,
            self.bytes_per_s,
            self.commit_us_p50,
            self.commit_us_p99,
            self.commit_us_p999,
            self.batches,
            self.records_per_batch_mean,
            allocs
        )
    }
}

impl fmt::Display for BenchResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<22} {} writers x {} B: {:.0} appends/s, {:.2} MiB/s, commit p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, {} batches ({:.1} records/batch)",
            self.journal.name(),
            self.writers,
            self.record_bytes,
            self.appends_per_s,
            self.bytes_per_s / (1024.0 * 1024.0),
            self.commit_us_p50,
            self.commit_us_p99,
            self.commit_us_p999,
            self.batches,
            self.records_per_batch_mean
        )?;
        if let Some(allocs) = self.allocs_per_append {
            write!(f, ", {allocs:.4} allocs/append")?;
        }
        Ok(())
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

struct Measured {
    appends: u64,
    histogram: Histogram<u64>,
    elapsed: Duration,
    allocs: Option<u64>,
}

/// Opens the measurement for one writer thread: waits until every writer has finished its
/// setup (executors, tasks, buffers: allocations that are not per append), then until the
/// measurement starts; returns the deadline.
struct Gate {
    ready: Arc<Barrier>,
    start: Arc<Barrier>,
    deadline: Arc<Mutex<Option<Instant>>>,
}

impl Gate {
    fn open(&self) -> Instant {
        self.ready.wait();
        self.start.wait();
        self.deadline
            .lock()
            .expect("deadline")
            .expect("set before start")
    }
}

/// Runs `writer(index, gate, end, histogram) -> appends` on `threads` threads. Each writer sets
/// itself up, then calls `gate.open()`; the run is timed (and allocations counted) from when
/// all writers are set up until they have all reached `end`.
fn measure<F>(config: &BenchConfig, threads: usize, writer: F) -> Measured
where
    F: Fn(usize, &Gate, &Barrier, &mut Histogram<u64>) -> u64 + Send + Sync + 'static,
{
    let writer = Arc::new(writer);
    let ready = Arc::new(Barrier::new(threads + 1));
    let start = Arc::new(Barrier::new(threads + 1));
    let end = Arc::new(Barrier::new(threads + 1));
    let deadline = Arc::new(Mutex::new(None::<Instant>));
    let handles: Vec<_> = (0..threads)
        .map(|index| {
            let writer = Arc::clone(&writer);
            let gate = Gate {
                ready: Arc::clone(&ready),
                start: Arc::clone(&start),
                deadline: Arc::clone(&deadline),
            };
            let end = Arc::clone(&end);
            std::thread::spawn(move || {
                let mut histogram = new_histogram();
                let appends = writer(index, &gate, &end, &mut histogram);
                (appends, histogram)
            })
        })
        .collect();
    ready.wait();
    let allocs_before = config.allocs.map(|count| count());
    let began = Instant::now();
    *deadline.lock().expect("deadline") = Some(began + config.runtime);
    start.wait();
    end.wait();
    let elapsed = began.elapsed();
    let allocs = config
        .allocs
        .map(|count| count() - allocs_before.unwrap_or(0));
    let mut histogram = new_histogram();
    let mut appends = 0;
    for handle in handles {
        let (count, h) = handle.join().expect("bench writer");
        appends += count;
        histogram.add(&h).expect("same bounds");
    }
    Measured {
        appends,
        histogram,
        elapsed,
        allocs,
    }
}

fn result(
    config: &BenchConfig,
    journal: BenchJournal,
    measured: &Measured,
    batches: u64,
) -> BenchResult {
    let seconds = measured.elapsed.as_secs_f64();
    let h = &measured.histogram;
    BenchResult {
        journal,
        writers: config.writers,
        record_bytes: config.record_bytes,
        appends: measured.appends,
        appends_per_s: measured.appends as f64 / seconds,
        bytes_per_s: (measured.appends * config.record_bytes as u64) as f64 / seconds,
        commit_us_p50: h.value_at_quantile(0.50) as f64,
        commit_us_p99: h.value_at_quantile(0.99) as f64,
        commit_us_p999: h.value_at_quantile(0.999) as f64,
        batches,
        records_per_batch_mean: if batches == 0 {
            0.0
        } else {
            measured.appends as f64 / batches as f64
        },
        commit_latency_cdf: latency_cdf(h),
        allocs_per_append: measured.allocs.map(|a| {
            if measured.appends == 0 {
                0.0
            } else {
                a as f64 / measured.appends as f64
            }
        }),
    }
}

/// The histogram as a CDF of at most 1,001 points (one per 0.1 % of appends), ascending.
fn latency_cdf(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<(f64, f64)> = Vec::with_capacity(1001);
    for step in 0..=1000 {
        let fraction = step as f64 / 1000.0;
        let micros = h.value_at_quantile(fraction) as f64;
        match points.last_mut() {
            Some(last) if last.0 == micros => last.1 = fraction,
            _ => points.push((micros, fraction)),
        }
    }
    points
}

/// A fresh directory under `dir`, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(parent: &Path, name: &str) -> io::Result<ScratchDir> {
        let path = parent.join(format!(
            "directfile-journal-bench-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Measures this crate's journal, and with `compare` the two `std::fs` baselines, in the same
/// run and directory.
///
/// # Errors
/// If a journal cannot be opened or an append fails.
pub fn bench(config: &BenchConfig) -> crate::Result<Vec<BenchResult>> {
    let mut results = vec![bench_directfile(config)?];
    if config.compare {
        results.push(bench_naive(config)?);
        results.push(bench_buffered_group_commit(config)?);
    }
    Ok(results)
}

fn bench_directfile(config: &BenchConfig) -> crate::Result<BenchResult> {
    let scratch = ScratchDir::new(&config.dir, "directfile")?;
    if config.std_storage {
        return bench_journal(
            config,
            StdStorage::new(&scratch.0)?,
            BenchJournal::StdODirect,
        );
    }
    let storage = match &config.driver {
        Some(driver) => DirectFileStorage::with_driver(&scratch.0, driver.clone())?,
        None => DirectFileStorage::new(&scratch.0)?,
    };
    bench_journal(config, storage, BenchJournal::Directfile)
}

fn bench_journal<S: Storage>(
    config: &BenchConfig,
    storage: S,
    kind: BenchJournal,
) -> crate::Result<BenchResult> {
    let (journal, _) =
        futures::executor::block_on(Journal::open_with_storage(storage, config.options.clone()))?;
    // Let the spare segment be zero-filled before measuring: it is off the commit path, but
    // on the same device.
    let ready_by = Instant::now() + Duration::from_secs(30);
    while !journal.is_spare_ready() && Instant::now() < ready_by {
        std::thread::sleep(Duration::from_millis(5));
    }
    let journal = Arc::new(journal);
    let before = journal.stats();
    let failure: Arc<Mutex<Option<crate::Error>>> = Arc::default();
    let threads = config.writers.clamp(
        1,
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    );
    let writers = config.writers.max(1);
    let record = vec![0x5Au8; config.record_bytes];
    let shared_journal = Arc::clone(&journal);
    let shared_failure = Arc::clone(&failure);
    let measured = measure(config, threads, move |thread, gate, end, histogram| {
        // This thread's writers run as tasks on one local executor; each records its commit
        // latency into the thread's histogram.
        let mine = (thread..writers).step_by(threads).count();
        // The writer futures go into a FuturesUnordered now (its per-future allocation happens
        // here, in the setup), and run on this thread's block_on after the gate opens.
        let mut tasks = futures::stream::FuturesUnordered::new();
        let histogram_cell = std::rc::Rc::new(std::cell::RefCell::new(std::mem::replace(
            histogram,
            new_histogram(),
        )));
        let appends = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let deadline_cell = std::rc::Rc::new(std::cell::Cell::new(None::<Instant>));
        for _ in 0..mine {
            let deadline_cell = std::rc::Rc::clone(&deadline_cell);
            let journal = Arc::clone(&shared_journal);
            let failure = Arc::clone(&shared_failure);
            let histogram = std::rc::Rc::clone(&histogram_cell);
            let appends = std::rc::Rc::clone(&appends);
            let record = record.clone();
            tasks.push(async move {
                let deadline = deadline_cell.get().expect("set before the pool runs");
                loop {
                    let began = Instant::now();
                    if began >= deadline {
                        return;
                    }
                    match journal.append(&record).await {
                        Ok(_) => {
                            let micros = began.elapsed().as_micros() as u64;
                            let _ = histogram.borrow_mut().record(micros.max(1));
                            appends.set(appends.get() + 1);
                        }
                        Err(error) => {
                            *failure.lock().expect("failure") = Some(error);
                            return;
                        }
                    }
                }
            })
        }
        // block_on sets up its thread-local waker on first use: before the gate.
        futures::executor::block_on(async {});
        deadline_cell.set(Some(gate.open()));
        futures::executor::block_on(async {
            use futures::StreamExt;
            while tasks.next().await.is_some() {}
        });
        end.wait();
        // Every task is done, so this is the last reference: no clone (no allocation).
        *histogram = std::rc::Rc::try_unwrap(histogram_cell)
            .map(std::cell::RefCell::into_inner)
            .unwrap_or_else(|shared| shared.borrow().clone());
        appends.get()
    });
    if let Some(error) = failure.lock().expect("failure").take() {
        return Err(error);
    }
    let after = journal.stats();
    drop(journal);
    Ok(result(
        config,
        kind,
        &measured,
        after.batches_written - before.batches_written,
    ))
}

fn bench_naive(config: &BenchConfig) -> crate::Result<BenchResult> {
    let scratch = ScratchDir::new(&config.dir, "naive")?;
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(scratch.0.join("journal.log"))?;
    let file = Arc::new(Mutex::new(file));
    let failure = Arc::new(AtomicBool::new(false));
    let record = vec![0x5Au8; config.record_bytes + RECORD_HEADER_BYTES];
    let syncs = Arc::new(AtomicU64::new(0));
    let (shared_failure, shared_syncs) = (Arc::clone(&failure), Arc::clone(&syncs));
    let measured = measure(
        config,
        config.writers.max(1),
        move |_, gate, end, histogram| {
            let deadline = gate.open();
            let mut appends = 0;
            loop {
                let began = Instant::now();
                if began >= deadline {
                    break;
                }
                let ok = {
                    let mut file = file.lock().expect("naive journal");
                    file.write_all(&record)
                        .and_then(|()| file.sync_data())
                        .is_ok()
                };
                if !ok {
                    shared_failure.store(true, Ordering::Relaxed);
                    break;
                }
                shared_syncs.fetch_add(1, Ordering::Relaxed);
                let _ = histogram.record((began.elapsed().as_micros() as u64).max(1));
                appends += 1;
            }
            end.wait();
            appends
        },
    );
    if failure.load(Ordering::Relaxed) {
        return Err(crate::Error::Io(io::Error::other(
            "naive baseline: a write or fdatasync failed",
        )));
    }
    Ok(result(
        config,
        BenchJournal::Naive,
        &measured,
        syncs.load(Ordering::Relaxed),
    ))
}

/// State of the buffered group-commit baseline.
struct GroupState {
    pending: Vec<u8>,
    next_seq: u64,
    durable_seq: u64,
    flushing: bool,
    failed: bool,
    syncs: u64,
}

fn bench_buffered_group_commit(config: &BenchConfig) -> crate::Result<BenchResult> {
    let scratch = ScratchDir::new(&config.dir, "buffered")?;
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(scratch.0.join("journal.log"))?;
    let state = Arc::new((
        Mutex::new(GroupState {
            pending: Vec::with_capacity(1 << 20),
            next_seq: 0,
            durable_seq: 0,
            flushing: false,
            failed: false,
            syncs: 0,
        }),
        Condvar::new(),
    ));
    let record = vec![0x5Au8; config.record_bytes + RECORD_HEADER_BYTES];
    // Only the leader (the `flushing` flag) touches the file, so this lock is uncontended.
    let file = Arc::new(Mutex::new(file));
    let shared_state = Arc::clone(&state);
    let measured = measure(
        config,
        config.writers.max(1),
        move |_, gate, end, histogram| {
            let (lock, wake) = &*shared_state;
            let mut spare: Vec<u8> = Vec::with_capacity(1 << 20);
            let deadline = gate.open();
            let mut appends = 0;
            loop {
                let began = Instant::now();
                if began >= deadline {
                    break;
                }
                let mut state = lock.lock().expect("group state");
                if state.failed {
                    break;
                }
                state.pending.extend_from_slice(&record);
                state.next_seq += 1;
                let mine = state.next_seq;
                loop {
                    if state.durable_seq >= mine || state.failed {
                        break;
                    }
                    if !state.flushing {
                        // Become the leader: write and sync everything accumulated so far.
                        state.flushing = true;
                        std::mem::swap(&mut state.pending, &mut spare);
                        let upto = state.next_seq;
                        drop(state);
                        let ok = {
                            let mut file = file.lock().expect("file");
                            file.write_all(&spare)
                                .and_then(|()| file.sync_data())
                                .is_ok()
                        };
                        spare.clear();
                        state = lock.lock().expect("group state");
                        state.flushing = false;
                        state.syncs += 1;
                        if ok {
                            state.durable_seq = upto;
                        } else {
                            state.failed = true;
                        }
                        wake.notify_all();
                    } else {
                        state = wake.wait(state).expect("group state");
                    }
                }
                if state.failed {
                    break;
                }
                drop(state);
                let _ = histogram.record((began.elapsed().as_micros() as u64).max(1));
                appends += 1;
            }
            end.wait();
            appends
        },
    );
    let state = state.0.lock().expect("group state");
    if state.failed {
        return Err(crate::Error::Io(io::Error::other(
            "buffered group commit baseline: a write or fdatasync failed",
        )));
    }
    Ok(result(
        config,
        BenchJournal::BufferedGroupCommit,
        &measured,
        state.syncs,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_documented_fields() {
        let result = BenchResult {
            journal: BenchJournal::Naive,
            writers: 2,
            record_bytes: 256,
            appends: 10,
            appends_per_s: 5.0,
            bytes_per_s: 1280.0,
            commit_us_p50: 1.0,
            commit_us_p99: 2.0,
            commit_us_p999: 3.0,
            batches: 10,
            records_per_batch_mean: 1.0,
            allocs_per_append: None,
            commit_latency_cdf: vec![(100.0, 0.5), (200.0, 1.0)],
        };
        let json = result.to_json();
        for field in [
            "journal",
            "writers",
            "record_bytes",
            "appends",
            "appends_per_s",
            "bytes_per_s",
            "commit_us_p50",
            "commit_us_p99",
            "commit_us_p999",
            "batches",
            "records_per_batch_mean",
            "allocs_per_append",
        ] {
            assert!(
                json.contains(&format!("\"{field}\":")),
                "{field} missing in {json}"
            );
        }
        assert!(json.contains("\"journal\":\"naive\""));
        assert!(json.contains("\"allocs_per_append\":null"));
    }
}
