//! [`Storage`] on real files through `directfile`: `O_DIRECT`, write-through (`O_DSYNC`) writes
//! submitted to io_uring (or the thread-pool backend), aligned buffers.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use directfile::{AlignedBuf, Driver, File, OpenOptions, SyncStrategy};

use crate::storage::{
    list_segment_files, segment_file_name, sync_dir, IoBuffer, Storage, HEAD_FILE_NAME,
};
use crate::Error;

impl IoBuffer for AlignedBuf {
    fn capacity(&self) -> usize {
        AlignedBuf::capacity(self)
    }
    fn len(&self) -> usize {
        AlignedBuf::len(self)
    }
    fn set_len(&mut self, len: usize) {
        AlignedBuf::set_len(self, len);
    }
    fn as_slice(&self) -> &[u8] {
        self
    }
    fn as_full_mut(&mut self) -> &mut [u8] {
        AlignedBuf::as_full_mut(self)
    }
}

/// Bytes of zeros written per call when a new segment is zero-filled.
const ZERO_FILL_CHUNK_BYTES: usize = 4 << 20;

/// Segment files in a directory, opened with `directfile` (`O_DIRECT`, write-through).
#[derive(Clone)]
pub struct DirectFileStorage {
    dir: PathBuf,
    driver: Driver,
    /// A driver that spins on its completion queue, for writes of a lone writer.
    alone_driver: Option<Driver>,
    block_bytes: usize,
    /// One zeroed buffer, kept for zero-filling new segments without allocating each time.
    zeros: Arc<Mutex<Option<AlignedBuf>>>,
    /// Forces how write-through writes become durable (default: chosen per file system).
    sync_strategy: Option<SyncStrategy>,
}

/// A segment of a [`DirectFileStorage`]: the file on the storage's driver, and a second
/// handle on the spinning driver for a lone writer's writes.
#[derive(Clone)]
pub struct DirectFileSegment {
    file: File,
    alone: Option<File>,
}

/// Holds `flock(LOCK_EX)` on the directory's `LOCK` file.
pub struct DirectFileLock {
    _file: File,
}

fn to_io(error: directfile::Error) -> io::Error {
    io::Error::from(error)
}

impl DirectFileStorage {
    /// Storage in `dir` (created if missing) on two drivers of its own (backend chosen as
    /// `Driver::new` does, `DIRECTFILE_BACKEND` respected): one that never spins, for lanes
    /// and everything else, and one that spins up to 250 us on its completion queue, for the
    /// write of a lone writer ([`Storage::write_at_alone`]).
    ///
    /// Why two: measured on a 2-core VM, spinning saves the completion wake-up of a lone
    /// writer (commit p50 about 105-130 us instead of 120-165 us, fio's O_DSYNC QD1 write
    /// being 95-160 us), but spinning under load takes a core from the appenders and cut the
    /// 64-writer throughput by 70%. Queue depth 64 is plenty for a journal (a few batches in
    /// flight, plus reads and segment zero-filling); the thread-pool backend gets 8 workers.
    ///
    /// # Errors
    /// If the directory cannot be created, the driver cannot start, or the file system refuses
    /// direct I/O (tmpfs): the error names the path.
    pub fn new(dir: impl AsRef<Path>) -> Result<DirectFileStorage, Error> {
        let driver = Driver::builder()
            .spin(std::time::Duration::ZERO)
            .queue_depth(64)
            .threads(8)
            .build()
            .map_err(to_io)?;
        let alone_driver = Driver::builder()
            .spin(std::time::Duration::from_micros(250))
            .queue_depth(8)
            .threads(2)
            .build()
            .map_err(to_io)?;
        let mut storage = DirectFileStorage::with_driver(dir, driver)?;
        storage.alone_driver = Some(alone_driver);
        Ok(storage)
    }

    /// Storage in `dir` whose files use `driver`.
    ///
    /// # Errors
    /// As [`DirectFileStorage::new`].
    pub fn with_driver(dir: impl AsRef<Path>, driver: Driver) -> Result<DirectFileStorage, Error> {
        let dir = dir.as_ref().to_path_buf();
        crate::storage::create_dir_durably(&dir)?;
        // The LOCK file tells the direct-I/O alignment of this file system. (On Windows the
        // lock is the file opened without sharing, so a locked journal refuses this open.)
        let probe = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .driver(&driver)
            .open(dir.join("LOCK"))
            .map_err(|e| match e {
                directfile::Error::Locked { path } => Error::Locked(path.display().to_string()),
                other => Error::Io(to_io(other)),
            })?;
        let alignment = probe.alignment();
        let block_bytes = alignment
            .offset
            .max(alignment.memory)
            .max(512)
            .next_power_of_two();
        Ok(DirectFileStorage {
            dir,
            driver,
            alone_driver: None,
            block_bytes,
            zeros: Arc::default(),
            sync_strategy: None,
        })
    }

    /// Forces how the journal's writes become durable (`directfile::OpenOptions::
    /// sync_strategy`); by default directfile chooses per file system (`O_DSYNC` alone on
    /// ext4, xfs and btrfs, an explicit data sync after each write elsewhere).
    pub fn with_sync_strategy(mut self, strategy: SyncStrategy) -> DirectFileStorage {
        self.sync_strategy = Some(strategy);
        self
    }

    /// The driver the files use.
    pub fn driver(&self) -> &Driver {
        &self.driver
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open_options(&self) -> OpenOptions {
        let mut options = OpenOptions::new();
        options
            .read(true)
            .write(true)
            .write_through(true)
            .driver(&self.driver);
        if let Some(strategy) = self.sync_strategy {
            options.sync_strategy(strategy);
        }
        options
    }

    /// Adds the lone-writer handle (on the spinning driver) to an open segment file.
    fn segment(&self, file: File, number: u64) -> io::Result<DirectFileSegment> {
        let alone = match &self.alone_driver {
            Some(driver) => Some(
                self.open_options()
                    .driver(driver)
                    .open(self.dir.join(segment_file_name(number)))
                    .map_err(to_io)?,
            ),
            None => None,
        };
        Ok(DirectFileSegment { file, alone })
    }
}

/// One write-through write of the whole buffer; a short write is an error.
async fn write_whole(file: &File, buf: AlignedBuf, offset: u64) -> (io::Result<()>, AlignedBuf) {
    let expected = buf.len();
    let (result, buf) = file.write_at(buf, offset).await;
    let result = match result {
        Ok(count) if count == expected => Ok(()),
        Ok(count) => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {count} of {expected} bytes at offset {offset}"),
        )),
        Err(e) => Err(to_io(e)),
    };
    (result, buf)
}

impl Storage for DirectFileStorage {
    type Segment = DirectFileSegment;
    type Buf = AlignedBuf;
    type Lock = DirectFileLock;

    fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    fn lock(&self) -> Result<DirectFileLock, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .direct(false)
            .lock(true)
            .driver(&self.driver)
            .open(self.dir.join("LOCK"));
        match file {
            Ok(file) => Ok(DirectFileLock { _file: file }),
            Err(directfile::Error::Locked { path }) => {
                Err(Error::Locked(path.display().to_string()))
            }
            Err(other) => Err(Error::Io(to_io(other))),
        }
    }

    fn alloc_buf(&self, capacity: usize) -> AlignedBuf {
        AlignedBuf::new(
            crate::format::round_up(capacity.max(1), self.block_bytes),
            self.block_bytes,
        )
    }

    fn list_segments(&self) -> io::Result<Vec<u64>> {
        list_segment_files(&self.dir)
    }

    async fn create_segment(&self, number: u64, bytes: u64) -> io::Result<DirectFileSegment> {
        let file = self
            .open_options()
            .create_new(true)
            .open(self.dir.join(segment_file_name(number)))
            .map_err(to_io)?;
        // Real zeros rather than fallocate alone: an O_DSYNC overwrite of written blocks needs
        // no metadata update, while writing into unwritten extents costs a journal commit each.
        let mut zeros = self
            .zeros
            .lock()
            .expect("zero buffer")
            .take()
            .unwrap_or_else(|| AlignedBuf::new(ZERO_FILL_CHUNK_BYTES, self.block_bytes));
        let mut offset = 0;
        let mut result = Ok(());
        while offset < bytes {
            let chunk = (bytes - offset).min(ZERO_FILL_CHUNK_BYTES as u64) as usize;
            zeros.set_len(chunk);
            let (written, buf) = file.write_at(zeros, offset).await;
            zeros = buf;
            match written {
                Ok(count) if count == chunk => offset += chunk as u64,
                Ok(count) => {
                    result = Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write while zero-filling: {count} of {chunk} bytes"),
                    ));
                    break;
                }
                Err(e) => {
                    result = Err(to_io(e));
                    break;
                }
            }
        }
        *self.zeros.lock().expect("zero buffer") = Some(zeros);
        result?;
        file.sync_all().await.map_err(to_io)?;
        sync_dir(&self.dir)?;
        self.segment(file, number)
    }

    fn open_segment(&self, number: u64) -> io::Result<DirectFileSegment> {
        let file = self
            .open_options()
            .open(self.dir.join(segment_file_name(number)))
            .map_err(to_io)?;
        self.segment(file, number)
    }

    fn remove_segment(&self, number: u64) -> io::Result<()> {
        std::fs::remove_file(self.dir.join(segment_file_name(number)))?;
        sync_dir(&self.dir)
    }

    fn segment_len(&self, segment: &DirectFileSegment) -> io::Result<u64> {
        segment.file.len().map_err(to_io)
    }

    async fn write_at(
        &self,
        segment: &DirectFileSegment,
        buf: AlignedBuf,
        offset: u64,
    ) -> (io::Result<()>, AlignedBuf) {
        write_whole(&segment.file, buf, offset).await
    }

    async fn write_at_alone(
        &self,
        segment: &DirectFileSegment,
        buf: AlignedBuf,
        offset: u64,
    ) -> (io::Result<()>, AlignedBuf) {
        write_whole(segment.alone.as_ref().unwrap_or(&segment.file), buf, offset).await
    }

    async fn read_at(
        &self,
        segment: &DirectFileSegment,
        mut buf: AlignedBuf,
        offset: u64,
    ) -> (io::Result<usize>, AlignedBuf) {
        let capacity = buf.capacity();
        buf.set_len(capacity);
        let (result, mut buf) = segment.file.read_at(buf, offset).await;
        match result {
            Ok(count) => (Ok(count), buf),
            Err(e) => {
                buf.set_len(0);
                (Err(to_io(e)), buf)
            }
        }
    }

    async fn truncate_segment(&self, segment: &DirectFileSegment, len: u64) -> io::Result<()> {
        segment.file.set_len(len).await.map_err(to_io)?;
        segment.file.sync_all().await.map_err(to_io)
    }

    fn open_head(&self, create: bool) -> io::Result<Option<DirectFileSegment>> {
        let path = self.dir.join(HEAD_FILE_NAME);
        if !create && !path.try_exists()? {
            return Ok(None);
        }
        let existed = path.try_exists()?;
        let file = self
            .open_options()
            .create(create)
            .open(&path)
            .map_err(to_io)?;
        if !existed {
            sync_dir(&self.dir)?;
        }
        Ok(Some(DirectFileSegment { file, alone: None }))
    }
}
