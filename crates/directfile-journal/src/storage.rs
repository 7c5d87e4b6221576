//! Where the journal's bytes live: a [`Storage`] trait and its implementations.
//!
//! The journal is generic over its storage so that tests can run it in memory, inject faults
//! and (later) crash a simulated disk at any point. A storage holds numbered segment files, does
//! aligned positional writes that are durable when they complete (write-through), and makes
//! file creation and removal durable by syncing the directory.
//!
//! - [`MemStorage`]: in memory, with fault injection, per-write completion delays (to reorder
//!   completions) and a log of every write.
//! - [`StdStorage`]: real files through `std::fs` with `O_DIRECT | O_DSYNC` (on Windows
//!   `FILE_FLAG_NO_BUFFERING | FILE_FLAG_WRITE_THROUGH`); each write is a blocking `pwrite(2)`
//!   (a positional `WriteFile`) done inside the future's first poll.
//! - `DirectFileStorage` (in `directfile_storage.rs`): real files through `directfile`.

use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::io;
#[cfg(unix)]
use std::os::unix::fs::{FileExt, OpenOptionsExt};
#[cfg(windows)]
use std::os::windows::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::Error;

/// A byte buffer the journal fills and hands to [`Storage::write_at`]; fixed capacity, a
/// length (the bytes a write writes or a read filled), aligned as the storage requires.
pub trait IoBuffer: Send + 'static {
    /// Bytes the buffer can hold.
    fn capacity(&self) -> usize;
    /// Bytes in use.
    fn len(&self) -> usize;
    /// Whether no bytes are in use.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sets the bytes in use.
    ///
    /// # Panics
    /// If `len > capacity`.
    fn set_len(&mut self, len: usize);
    /// The bytes in use, `[..len]`.
    fn as_slice(&self) -> &[u8];
    /// The whole capacity, `[..capacity]`.
    fn as_full_mut(&mut self) -> &mut [u8];
}

/// Storage for the journal's segment files. Every method that touches file contents is async;
/// metadata operations (open, list, remove) are blocking, like the file system calls they are.
pub trait Storage: Send + Sync + 'static {
    /// A handle to one open segment.
    type Segment: Clone + Send + Sync + 'static;
    /// The buffer type writes and reads use.
    type Buf: IoBuffer;
    /// Held for as long as the journal is open; dropping it releases the directory.
    type Lock: Send + Sync + 'static;

    /// The alignment that buffers, offsets and lengths must have.
    fn block_bytes(&self) -> usize;
    /// Locks the journal directory against a second opener.
    ///
    /// # Errors
    /// [`Error::Locked`] if another opener holds it.
    fn lock(&self) -> Result<Self::Lock, Error>;
    /// A zeroed buffer of at least `capacity` bytes, aligned to [`Storage::block_bytes`].
    fn alloc_buf(&self, capacity: usize) -> Self::Buf;
    /// Numbers of the segments that exist, in ascending order.
    fn list_segments(&self) -> io::Result<Vec<u64>>;
    /// Creates segment `number` (it must not exist), preallocates `bytes` of zeros, and makes the
    /// file and its directory entry durable.
    fn create_segment(
        &self,
        number: u64,
        bytes: u64,
    ) -> impl Future<Output = io::Result<Self::Segment>> + Send;
    /// Opens an existing segment.
    fn open_segment(&self, number: u64) -> io::Result<Self::Segment>;
    /// Removes a segment and makes the removal durable (directory sync).
    fn remove_segment(&self, number: u64) -> io::Result<()>;
    /// Current length of a segment in bytes.
    fn segment_len(&self, segment: &Self::Segment) -> io::Result<u64>;
    /// Writes `buf.as_slice()` at `offset`; the data is durable when the future completes.
    fn write_at(
        &self,
        segment: &Self::Segment,
        buf: Self::Buf,
        offset: u64,
    ) -> impl Future<Output = (io::Result<()>, Self::Buf)> + Send;
    /// Like [`Storage::write_at`], for the write of a lone writer that nothing else is waiting
    /// behind: the storage may wait for it more eagerly (spin on a completion queue).
    fn write_at_alone(
        &self,
        segment: &Self::Segment,
        buf: Self::Buf,
        offset: u64,
    ) -> impl Future<Output = (io::Result<()>, Self::Buf)> + Send {
        self.write_at(segment, buf, offset)
    }
    /// Reads up to `buf.capacity()` bytes at `offset`; sets `buf`'s length to the bytes read
    /// (fewer at end of file).
    fn read_at(
        &self,
        segment: &Self::Segment,
        buf: Self::Buf,
        offset: u64,
    ) -> impl Future<Output = (io::Result<usize>, Self::Buf)> + Send;
    /// Cuts the segment to `len` bytes and makes that durable.
    fn truncate_segment(
        &self,
        segment: &Self::Segment,
        len: u64,
    ) -> impl Future<Output = io::Result<()>> + Send;
    /// Opens the journal's `HEAD` file (the high-water mark and the user's metadata, see
    /// [`format`](crate::format)), which the journal reads and writes like a segment.
    /// `Ok(None)` when it does not exist and `create` is false; with `create` a missing file
    /// is made (empty) and its directory entry made durable.
    fn open_head(&self, create: bool) -> io::Result<Option<Self::Segment>>;
}

/// File name of the HEAD file.
pub const HEAD_FILE_NAME: &str = "HEAD";

/// The number under which [`MemStorage`] keeps the HEAD file in [`MemStorage::files`] (segment
/// numbers start at 1).
pub const HEAD_NUMBER: u64 = 0;

/// File name of segment `number`.
pub fn segment_file_name(number: u64) -> String {
    format!("{number:020}.seg")
}

/// Parses a segment file name back into its number.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A heap buffer aligned to a power of two, without `unsafe`: it over-allocates by the alignment
/// and starts at the first aligned address inside the allocation.
pub struct HeapBuf {
    bytes: Vec<u8>,
    start: usize,
    capacity: usize,
    len: usize,
}

impl HeapBuf {
    /// A zeroed buffer of `capacity` bytes whose first byte is aligned to `align`.
    pub fn new(capacity: usize, align: usize) -> HeapBuf {
        assert!(
            align.is_power_of_two(),
            "alignment {align} is not a power of two"
        );
        let bytes = vec![0u8; capacity + align];
        // The heap block never moves while `bytes` lives, so the aligned start stays aligned.
        let start = (align - bytes.as_ptr() as usize % align) % align;
        HeapBuf {
            bytes,
            start,
            capacity,
            len: 0,
        }
    }
}

impl IoBuffer for HeapBuf {
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.len
    }
    fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity,
            "length {len} exceeds capacity {}",
            self.capacity
        );
        self.len = len;
    }
    fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }
    fn as_full_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.capacity]
    }
}

// ---------------------------------------------------------------------------------------------
// In memory

/// One write as the [`MemStorage`] log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    /// The segment written: its number, or [`HEAD_NUMBER`] for the HEAD file.
    pub segment_number: u64,
    /// Byte offset of the write in the file.
    pub offset: u64,
    /// Length of the write in bytes (a multiple of the block size).
    pub bytes: usize,
}

type DelayFn = dyn Fn(u64) -> Duration + Send + Sync;

#[derive(Default)]
struct MemDisk {
    files: BTreeMap<u64, Vec<u8>>,
    locked: bool,
    writes_started: u64,
    /// Writes with an index >= this fail with an I/O error.
    fail_writes_from: Option<u64>,
    log: Vec<WriteRecord>,
    /// Writes submitted and not yet completed: write index -> (segment, offset, data).
    in_flight: BTreeMap<u64, (u64, u64, Vec<u8>)>,
    in_flight_max: usize,
    creates_started: u64,
    /// Segment creations with an index >= this fail.
    fail_creates_from: Option<u64>,
    /// Bytes returned by reads, to check what a read costs.
    bytes_read: u64,
}

/// What a crash does to one sector of an in-flight write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectorFate {
    /// The new data landed.
    Kept,
    /// The old data stayed.
    Lost,
    /// A prefix of the new data landed over the old data.
    Torn,
}

/// A small deterministic generator (xorshift64*) so crash tests replay from a seed.
#[derive(Debug, Clone)]
pub struct CrashRng(u64);

impl CrashRng {
    /// A generator that replays the same numbers for the same `seed` (any value, 0 included).
    pub fn new(seed: u64) -> CrashRng {
        CrashRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next pseudo-random number of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// Segment files in memory. Clones share the same disk.
#[derive(Clone)]
pub struct MemStorage {
    disk: Arc<Mutex<MemDisk>>,
    block_bytes: usize,
    delay: Option<Arc<DelayFn>>,
}

/// Handle to a segment of a [`MemStorage`].
#[derive(Clone, Debug)]
pub struct MemSegment(u64);

/// Releases the [`MemStorage`] lock on drop.
pub struct MemLock(Arc<Mutex<MemDisk>>);

impl Drop for MemLock {
    fn drop(&mut self) {
        self.0.lock().expect("mem disk").locked = false;
    }
}

impl MemStorage {
    /// An empty in-memory disk with 512-byte blocks.
    pub fn new() -> MemStorage {
        MemStorage {
            disk: Arc::default(),
            block_bytes: 512,
            delay: None,
        }
    }

    /// Bytes read so far (segments and HEAD), to check what a reader costs.
    pub fn bytes_read(&self) -> u64 {
        self.disk.lock().expect("mem disk").bytes_read
    }

    /// Makes write number `index` (counting from 0) and every later write fail.
    pub fn fail_writes_from(&self, index: u64) {
        self.disk.lock().expect("mem disk").fail_writes_from = Some(index);
    }

    /// Makes segment creation number `index` (counting from 0) and every later one fail.
    pub fn fail_creates_from(&self, index: u64) {
        self.disk.lock().expect("mem disk").fail_creates_from = Some(index);
    }

    /// Delays the completion of write number `index` by `delay(index)`, on a helper thread, so
    /// completions can arrive out of submission order.
    pub fn with_write_delay(
        mut self,
        delay: impl Fn(u64) -> Duration + Send + Sync + 'static,
    ) -> MemStorage {
        self.delay = Some(Arc::new(delay));
        self
    }

    /// The most writes that were in flight at the same time.
    pub fn writes_in_flight_max(&self) -> usize {
        self.disk.lock().expect("mem disk").in_flight_max
    }

    /// Every write so far, in submission order.
    pub fn write_log(&self) -> Vec<WriteRecord> {
        self.disk.lock().expect("mem disk").log.clone()
    }

    /// A copy of the files, as a crashed machine would find them if every completed write had
    /// landed and nothing else had.
    pub fn files(&self) -> BTreeMap<u64, Vec<u8>> {
        self.disk.lock().expect("mem disk").files.clone()
    }

    /// The files as a machine that lost power right now would find them: every completed write
    /// is there, and each sector (`sector_bytes`) of every in-flight write is independently
    /// kept, lost or torn, as `rng` decides. Returns the image and how many sectors met each
    /// fate.
    pub fn crash_image(
        &self,
        rng: &mut CrashRng,
        sector_bytes: usize,
    ) -> (BTreeMap<u64, Vec<u8>>, [usize; 3]) {
        let disk = self.disk.lock().expect("mem disk");
        let mut files = disk.files.clone();
        let mut fates = [0usize; 3];
        for (segment, offset, data) in disk.in_flight.values() {
            let Some(file) = files.get_mut(segment) else {
                continue;
            };
            for (index, sector) in data.chunks(sector_bytes).enumerate() {
                let at = *offset as usize + index * sector_bytes;
                if file.len() < at + sector.len() {
                    file.resize(at + sector.len(), 0);
                }
                let fate = match rng.below(3) {
                    0 => SectorFate::Kept,
                    1 => SectorFate::Lost,
                    _ => SectorFate::Torn,
                };
                let landed = match fate {
                    SectorFate::Kept => sector.len(),
                    SectorFate::Lost => 0,
                    SectorFate::Torn => 1 + rng.below(sector.len() as u64 - 1) as usize,
                };
                file[at..at + landed].copy_from_slice(&sector[..landed]);
                fates[fate as usize] += 1;
            }
        }
        (files, fates)
    }

    /// A new storage holding the given files (for example a damaged copy of [`Self::files`]).
    pub fn from_files(files: BTreeMap<u64, Vec<u8>>) -> MemStorage {
        let storage = MemStorage::new();
        storage.disk.lock().expect("mem disk").files = files;
        storage
    }
}

impl Default for MemStorage {
    fn default() -> Self {
        MemStorage::new()
    }
}

/// Whether the delay has passed, and who to wake when it has.
type SleepState = (bool, Option<Waker>);

/// Completes after a delay measured on a helper thread (tests only; allocates per write).
struct Sleep {
    delay: Duration,
    state: Option<Arc<Mutex<SleepState>>>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.delay.is_zero() {
            return Poll::Ready(());
        }
        let delay = self.delay;
        let state = self.state.get_or_insert_with(|| {
            let state = Arc::new(Mutex::new((false, None::<Waker>)));
            let thread_state = Arc::clone(&state);
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let mut guard = thread_state.lock().expect("sleep state");
                guard.0 = true;
                if let Some(waker) = guard.1.take() {
                    waker.wake();
                }
            });
            state
        });
        let mut guard = state.lock().expect("sleep state");
        if guard.0 {
            Poll::Ready(())
        } else {
            guard.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

impl Storage for MemStorage {
    type Segment = MemSegment;
    type Buf = HeapBuf;
    type Lock = MemLock;

    fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    fn lock(&self) -> Result<MemLock, Error> {
        let mut disk = self.disk.lock().expect("mem disk");
        if disk.locked {
            return Err(Error::Locked("in-memory journal".into()));
        }
        disk.locked = true;
        Ok(MemLock(Arc::clone(&self.disk)))
    }

    fn alloc_buf(&self, capacity: usize) -> HeapBuf {
        HeapBuf::new(
            crate::format::round_up(capacity, self.block_bytes),
            self.block_bytes,
        )
    }

    fn list_segments(&self) -> io::Result<Vec<u64>> {
        Ok(self
            .disk
            .lock()
            .expect("mem disk")
            .files
            .keys()
            .copied()
            .filter(|&number| number != HEAD_NUMBER)
            .collect())
    }

    async fn create_segment(&self, number: u64, bytes: u64) -> io::Result<MemSegment> {
        let mut disk = self.disk.lock().expect("mem disk");
        let index = disk.creates_started;
        disk.creates_started += 1;
        if disk.fail_creates_from.is_some_and(|from| index >= from) {
            return Err(io::Error::other(format!(
                "injected failure of segment creation {index}"
            )));
        }
        if disk.files.contains_key(&number) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "segment exists",
            ));
        }
        disk.files.insert(number, vec![0; bytes as usize]);
        Ok(MemSegment(number))
    }

    fn open_segment(&self, number: u64) -> io::Result<MemSegment> {
        if self
            .disk
            .lock()
            .expect("mem disk")
            .files
            .contains_key(&number)
        {
            Ok(MemSegment(number))
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("segment {number}"),
            ))
        }
    }

    fn remove_segment(&self, number: u64) -> io::Result<()> {
        self.disk.lock().expect("mem disk").files.remove(&number);
        Ok(())
    }

    fn segment_len(&self, segment: &MemSegment) -> io::Result<u64> {
        let disk = self.disk.lock().expect("mem disk");
        disk.files
            .get(&segment.0)
            .map(|f| f.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "segment removed"))
    }

    async fn write_at(
        &self,
        segment: &MemSegment,
        buf: HeapBuf,
        offset: u64,
    ) -> (io::Result<()>, HeapBuf) {
        assert_eq!(
            offset % self.block_bytes as u64,
            0,
            "misaligned offset {offset}"
        );
        assert_eq!(
            buf.len() % self.block_bytes,
            0,
            "misaligned length {}",
            buf.len()
        );
        let index = {
            let mut disk = self.disk.lock().expect("mem disk");
            let index = disk.writes_started;
            disk.writes_started += 1;
            disk.log.push(WriteRecord {
                segment_number: segment.0,
                offset,
                bytes: buf.len(),
            });
            disk.in_flight
                .insert(index, (segment.0, offset, buf.as_slice().to_vec()));
            disk.in_flight_max = disk.in_flight_max.max(disk.in_flight.len());
            index
        };
        let delay = self
            .delay
            .as_ref()
            .map_or(Duration::ZERO, |delay| delay(index));
        Sleep { delay, state: None }.await;
        let mut disk = self.disk.lock().expect("mem disk");
        disk.in_flight.remove(&index);
        if disk.fail_writes_from.is_some_and(|from| index >= from) {
            return (
                Err(io::Error::other(format!(
                    "injected failure of write {index}"
                ))),
                buf,
            );
        }
        let Some(file) = disk.files.get_mut(&segment.0) else {
            return (
                Err(io::Error::new(io::ErrorKind::NotFound, "segment removed")),
                buf,
            );
        };
        let end = offset as usize + buf.len();
        if file.len() < end {
            file.resize(end, 0);
        }
        file[offset as usize..end].copy_from_slice(buf.as_slice());
        (Ok(()), buf)
    }

    async fn read_at(
        &self,
        segment: &MemSegment,
        mut buf: HeapBuf,
        offset: u64,
    ) -> (io::Result<usize>, HeapBuf) {
        let mut disk = self.disk.lock().expect("mem disk");
        let Some(file) = disk.files.get(&segment.0) else {
            return (
                Err(io::Error::new(io::ErrorKind::NotFound, "segment removed")),
                buf,
            );
        };
        let start = (offset as usize).min(file.len());
        let count = (file.len() - start).min(buf.capacity());
        buf.as_full_mut()[..count].copy_from_slice(&file[start..start + count]);
        buf.set_len(count);
        disk.bytes_read += count as u64;
        (Ok(count), buf)
    }

    async fn truncate_segment(&self, segment: &MemSegment, len: u64) -> io::Result<()> {
        let mut disk = self.disk.lock().expect("mem disk");
        if let Some(file) = disk.files.get_mut(&segment.0) {
            file.resize(len as usize, 0);
        }
        Ok(())
    }

    fn open_head(&self, create: bool) -> io::Result<Option<MemSegment>> {
        let mut disk = self.disk.lock().expect("mem disk");
        match disk.files.entry(HEAD_NUMBER) {
            std::collections::btree_map::Entry::Occupied(_) => {}
            std::collections::btree_map::Entry::Vacant(_) if !create => return Ok(None),
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(Vec::new());
            }
        }
        Ok(Some(MemSegment(HEAD_NUMBER)))
    }
}

// ---------------------------------------------------------------------------------------------
// std::fs with O_DIRECT | O_DSYNC

/// Segment files in a directory through `std::fs`, opened `O_DIRECT | O_DSYNC`, with 4096-byte
/// alignment. Writes and reads are blocking `pwrite(2)`/`pread(2)` calls made when the future is
/// first polled, so several "in-flight" writes run one after another.
#[derive(Clone, Debug)]
pub struct StdStorage {
    dir: PathBuf,
}

/// Handle to a segment of a [`StdStorage`].
#[derive(Clone, Debug)]
pub struct StdSegment(Arc<fs::File>);

/// Holds `flock(LOCK_EX)` on the directory's `LOCK` file (on Windows: the file open without
/// sharing).
pub struct FileLock {
    _file: fs::File,
}

impl StdStorage {
    /// Storage in `dir` (created if missing).
    ///
    /// # Errors
    /// If the directory cannot be created.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<StdStorage> {
        create_dir_durably(dir.as_ref())?;
        Ok(StdStorage {
            dir: dir.as_ref().to_path_buf(),
        })
    }

    fn path(&self, number: u64) -> PathBuf {
        self.dir.join(segment_file_name(number))
    }
}

/// Creates `dir` and its missing ancestors, each made durable by a sync of the directory that
/// holds it: a journal in a new directory must not vanish at a power cut with its records.
///
/// # Errors
/// If a directory cannot be created or synced.
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durably(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    sync_dir(parent)
}

/// `fsync(2)` on a directory, which makes file creations and removals in it durable.
#[cfg(unix)]
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// `FlushFileBuffers` on a directory handle (opened for writing, with
/// `FILE_FLAG_BACKUP_SEMANTICS`, which a directory needs): NTFS then writes the directory's
/// entries, which makes file creations and removals in it durable.
#[cfg(windows)]
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    use windows_sys::Win32::Storage::FileSystem::FILE_FLAG_BACKUP_SEMANTICS;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(dir)?
        .sync_all()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("flushing directory {}: {e}", dir.display()),
            )
        })
}

/// Takes `flock(LOCK_EX | LOCK_NB)` on `dir/LOCK`.
///
/// # Errors
/// [`Error::Locked`] when another process or handle holds it, [`Error::Io`] otherwise.
#[cfg(unix)]
pub fn lock_dir(dir: &Path) -> Result<FileLock, Error> {
    let path = dir.join("LOCK");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(FileLock { _file: file }),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::Locked(path.display().to_string())),
        Err(errno) => Err(Error::Io(errno.into())),
    }
}

/// Opens `dir/LOCK` with no sharing (share mode 0): while it is open, any other open of it
/// fails with `ERROR_SHARING_VIOLATION`.
///
/// # Errors
/// [`Error::Locked`] when another process or handle holds it, [`Error::Io`] otherwise.
#[cfg(windows)]
pub fn lock_dir(dir: &Path) -> Result<FileLock, Error> {
    use windows_sys::Win32::Foundation::{ERROR_LOCK_VIOLATION, ERROR_SHARING_VIOLATION};
    let path = dir.join("LOCK");
    match fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .share_mode(0)
        .open(&path)
    {
        Ok(file) => Ok(FileLock { _file: file }),
        Err(e)
            if matches!(
                e.raw_os_error().map(|c| c as u32),
                Some(ERROR_SHARING_VIOLATION | ERROR_LOCK_VIOLATION)
            ) =>
        {
            Err(Error::Locked(path.display().to_string()))
        }
        Err(e) => Err(Error::Io(e)),
    }
}

/// Writes all of `buf` at `offset` (`pwrite(2)`).
#[cfg(unix)]
fn write_all_at(file: &fs::File, buf: &[u8], offset: u64) -> io::Result<()> {
    file.write_all_at(buf, offset)
}

/// Writes all of `buf` at `offset` (`WriteFile` at an offset; nothing here uses the handle's
/// position).
#[cfg(windows)]
fn write_all_at(file: &fs::File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.seek_write(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads into `buf` at `offset` (`pread(2)`; a positional `ReadFile` on Windows).
fn read_at(file: &fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    #[cfg(unix)]
    return file.read_at(buf, offset);
    #[cfg(windows)]
    return file.seek_read(buf, offset);
}

/// Lists segment numbers in `dir`, ascending.
pub fn list_segment_files(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir)? {
        if let Some(number) = entry?
            .file_name()
            .to_str()
            .and_then(parse_segment_file_name)
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Unbuffered, write-through: `O_DIRECT | O_DSYNC`, or on Windows `FILE_FLAG_NO_BUFFERING |
/// FILE_FLAG_WRITE_THROUGH`.
#[cfg(unix)]
const DIRECT_FLAGS: (u32, i32) = ((libc::O_DIRECT | libc::O_DSYNC) as u32, libc::EINVAL);
#[cfg(windows)]
const DIRECT_FLAGS: (u32, i32) = (
    windows_sys::Win32::Storage::FileSystem::FILE_FLAG_NO_BUFFERING
        | windows_sys::Win32::Storage::FileSystem::FILE_FLAG_WRITE_THROUGH,
    windows_sys::Win32::Foundation::ERROR_INVALID_PARAMETER as i32,
);

fn open_direct(path: &Path, create: bool) -> io::Result<fs::File> {
    let (flags, refused) = DIRECT_FLAGS;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create)
        .custom_flags(flags as _)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(refused) {
                io::Error::new(
                    e.kind(),
                    format!(
                        "{}: the file system refuses O_DIRECT (tmpfs?); put the journal on a disk file system: {e}",
                        path.display()
                    ),
                )
            } else {
                e
            }
        })
}

const STD_BLOCK_BYTES: usize = 4096;

impl Storage for StdStorage {
    type Segment = StdSegment;
    type Buf = HeapBuf;
    type Lock = FileLock;

    fn block_bytes(&self) -> usize {
        STD_BLOCK_BYTES
    }

    fn lock(&self) -> Result<FileLock, Error> {
        lock_dir(&self.dir)
    }

    fn alloc_buf(&self, capacity: usize) -> HeapBuf {
        HeapBuf::new(
            crate::format::round_up(capacity, STD_BLOCK_BYTES),
            STD_BLOCK_BYTES,
        )
    }

    fn list_segments(&self) -> io::Result<Vec<u64>> {
        list_segment_files(&self.dir)
    }

    async fn create_segment(&self, number: u64, bytes: u64) -> io::Result<StdSegment> {
        let file = open_direct(&self.path(number), true)?;
        // Write real zeros rather than fallocate: overwriting written blocks with O_DSYNC needs
        // no metadata update per write, unlike converting unwritten extents.
        let mut zeros = HeapBuf::new(1 << 20, STD_BLOCK_BYTES);
        let mut offset = 0;
        while offset < bytes {
            let chunk = (bytes - offset).min(1 << 20) as usize;
            zeros.set_len(chunk);
            write_all_at(&file, zeros.as_slice(), offset)?;
            offset += chunk as u64;
        }
        file.sync_all()?;
        sync_dir(&self.dir)?;
        Ok(StdSegment(Arc::new(file)))
    }

    fn open_segment(&self, number: u64) -> io::Result<StdSegment> {
        Ok(StdSegment(Arc::new(open_direct(
            &self.path(number),
            false,
        )?)))
    }

    fn remove_segment(&self, number: u64) -> io::Result<()> {
        fs::remove_file(self.path(number))?;
        sync_dir(&self.dir)
    }

    fn segment_len(&self, segment: &StdSegment) -> io::Result<u64> {
        Ok(segment.0.metadata()?.len())
    }

    async fn write_at(
        &self,
        segment: &StdSegment,
        buf: HeapBuf,
        offset: u64,
    ) -> (io::Result<()>, HeapBuf) {
        let result = write_all_at(&segment.0, buf.as_slice(), offset);
        (result, buf)
    }

    async fn read_at(
        &self,
        segment: &StdSegment,
        mut buf: HeapBuf,
        offset: u64,
    ) -> (io::Result<usize>, HeapBuf) {
        let mut done = 0;
        let capacity = buf.capacity();
        let result = loop {
            if done == capacity {
                break Ok(done);
            }
            match read_at(
                &segment.0,
                &mut buf.as_full_mut()[done..],
                offset + done as u64,
            ) {
                Ok(0) => break Ok(done),
                Ok(count) => done += count,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        buf.set_len(done);
        (result, buf)
    }

    async fn truncate_segment(&self, segment: &StdSegment, len: u64) -> io::Result<()> {
        segment.0.set_len(len)?;
        segment.0.sync_all()
    }

    fn open_head(&self, create: bool) -> io::Result<Option<StdSegment>> {
        let path = self.dir.join(HEAD_FILE_NAME);
        match open_direct(&path, false) {
            Ok(file) => Ok(Some(StdSegment(Arc::new(file)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                let file = open_direct(&path, true)?;
                file.sync_all()?;
                sync_dir(&self.dir)?;
                Ok(Some(StdSegment(Arc::new(file))))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(42), "00000000000000000042.seg");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.seg"),
            Some(42)
        );
        assert_eq!(parse_segment_file_name("42.seg"), None);
        assert_eq!(parse_segment_file_name("LOCK"), None);
    }

    #[test]
    fn heap_buf_is_aligned() {
        for align in [512, 4096] {
            let mut buf = HeapBuf::new(8192, align);
            assert_eq!(buf.as_full_mut().as_ptr() as usize % align, 0);
            assert_eq!(buf.as_full_mut().len(), 8192);
        }
    }

    #[test]
    fn mem_storage_lock_is_exclusive() {
        let storage = MemStorage::new();
        let lock = storage.lock().unwrap();
        assert!(matches!(storage.lock(), Err(Error::Locked(_))));
        drop(lock);
        storage.lock().unwrap();
    }
}
