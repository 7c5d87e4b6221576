//! The public face: [`OpenOptions`] and [`File`].

#[cfg(target_os = "linux")]
use crate::align;
use crate::align::{Alignment, AlignmentSource};
use crate::buf::AlignedBuf;
use crate::driver::{Backend, Driver};
use crate::op::slot::{OpBufs, OpDesc};
use crate::op::Op;
use crate::{sys, BufResult, Error, Result, SyncStrategy};
use std::future::Future;
#[cfg(target_os = "linux")]
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(windows)]
mod windows;

/// Options for opening a [`File`], like `std::fs::OpenOptions` plus the direct-I/O ones.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    create: bool,
    create_new: bool,
    truncate: bool,
    direct: bool,
    write_through: bool,
    lock: bool,
    preallocate: u64,
    mode: u32,
    driver: Option<Driver>,
    sync_strategy: Option<SyncStrategy>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// All options off except `direct`.
    pub fn new() -> OpenOptions {
        OpenOptions {
            read: false,
            write: false,
            create: false,
            create_new: false,
            truncate: false,
            direct: true,
            write_through: false,
            lock: false,
            preallocate: 0,
            mode: 0o644,
            driver: None,
            sync_strategy: None,
        }
    }

    /// Open for reading.
    pub fn read(&mut self, yes: bool) -> &mut Self {
        self.read = yes;
        self
    }

    /// Open for writing.
    pub fn write(&mut self, yes: bool) -> &mut Self {
        self.write = yes;
        self
    }

    /// Create the file if it does not exist.
    pub fn create(&mut self, yes: bool) -> &mut Self {
        self.create = yes;
        self
    }

    /// Create the file, failing if it exists.
    pub fn create_new(&mut self, yes: bool) -> &mut Self {
        self.create_new = yes;
        self
    }

    /// Truncate the file to 0 bytes on open.
    pub fn truncate(&mut self, yes: bool) -> &mut Self {
        self.truncate = yes;
        self
    }

    /// Unbuffered I/O (`O_DIRECT`): data moves between your buffers and the device, not through
    /// the page cache. On by default. A file system that cannot do it is an error, never a
    /// silent fallback.
    pub fn direct(&mut self, yes: bool) -> &mut Self {
        self.direct = yes;
        self
    }

    /// Write-through (`O_DSYNC`): a write completes only once its data (and the metadata needed
    /// to read it back) is on stable storage, like `FILE_FLAG_WRITE_THROUGH`.
    pub fn write_through(&mut self, yes: bool) -> &mut Self {
        self.write_through = yes;
        self
    }

    /// Take an exclusive lock (`flock(LOCK_EX | LOCK_NB)`) for the life of the file: a second
    /// opener with `lock(true)` gets [`Error::Locked`].
    pub fn lock(&mut self, yes: bool) -> &mut Self {
        self.lock = yes;
        self
    }

    /// Reserve `bytes` on the device at open (`fallocate(2)`, mode 0): the file is at least
    /// that long afterwards and later writes inside it cannot fail for lack of space.
    pub fn preallocate(&mut self, bytes: u64) -> &mut Self {
        self.preallocate = bytes;
        self
    }

    /// Permission bits for a created file (default 0o644).
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }

    /// The driver that carries this file's operations (default: [`Driver::global`]).
    pub fn driver(&mut self, driver: &Driver) -> &mut Self {
        self.driver = Some(driver.clone());
        self
    }

    /// How write-through writes are made durable: by default chosen from the file system
    /// ([`SyncStrategy::for_file_system`]: `O_DSYNC` alone on ext4, xfs and btrfs, an explicit
    /// data sync after each write elsewhere); this forces one. Only matters with
    /// [`write_through(true)`](OpenOptions::write_through).
    pub fn sync_strategy(&mut self, strategy: SyncStrategy) -> &mut Self {
        self.sync_strategy = Some(strategy);
        self
    }

    /// Opens the file (a blocking `open(2)`, like every file system's metadata operation).
    /// (Windows: `file/windows.rs`, `CreateFileW`.)
    ///
    /// A file system that cannot do direct I/O is refused before anything is created or
    /// truncated; a file this call created is removed again if the open is refused after it
    /// (the alignment cannot be found). `truncate(true)` empties the file only once it is
    /// accepted (and locked, with `lock(true)`).
    ///
    /// # Errors
    /// The OS error of `open(2)`, `flock(2)`, `ftruncate(2)` or `fallocate(2)`, naming the path
    /// ([`Error::Io`]); [`Error::DirectIoUnsupported`] on a file system without direct I/O
    /// (tmpfs); [`Error::Locked`] when `lock(true)` and another handle holds the lock;
    /// [`Error::Io`] of kind `InvalidInput` when `create`, `create_new` or `truncate` is asked
    /// without `write`.
    #[cfg(target_os = "linux")]
    pub fn open(&self, path: impl AsRef<Path>) -> Result<File> {
        let path = path.as_ref();
        let with_path = |e: std::io::Error| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            ))
        };
        self.check_create_access(path)?;
        let driver = match &self.driver {
            Some(d) => d.clone(),
            None => Driver::global()?,
        };
        // A file system that serves O_DIRECT from memory is refused before the file is created
        // or truncated: nothing is left behind.
        if self.direct {
            if let Some(name) = sys::path_fs_magic(path)
                .ok()
                .and_then(sys::buffered_only_fs_name)
            {
                return Err(Error::DirectIoUnsupported {
                    path: path.to_path_buf(),
                    reason: format!("it is on {name}, which serves O_DIRECT from memory"),
                });
            }
        }
        let mut flags = match (self.read, self.write) {
            (true, true) => libc::O_RDWR,
            (false, true) => libc::O_WRONLY,
            _ => libc::O_RDONLY,
        };
        if self.direct {
            flags |= libc::O_DIRECT;
        }
        if self.write_through {
            // The real O_DSYNC bit (0o10000), not O_SYNC (0o4010000, which also flushes
            // metadata such as timestamps on every write).
            flags |= libc::O_DSYNC;
        }
        let existed = path.symlink_metadata().is_ok();
        let opened = if self.create_new {
            sys::open(path, flags | libc::O_CREAT | libc::O_EXCL, self.mode).map(|fd| (fd, true))
        } else if self.create {
            sys::open_or_create(path, flags, self.mode)
        } else {
            sys::open(path, flags, self.mode).map(|fd| (fd, false))
        };
        let (fd, created) = opened.map_err(|e| {
            if e.raw_os_error() == Some(libc::EINVAL) && self.direct {
                // The kernel creates the file before it checks O_DIRECT.
                if !existed && (self.create || self.create_new) {
                    let _ = std::fs::remove_file(path);
                }
                Error::DirectIoUnsupported {
                    path: path.to_path_buf(),
                    reason: format!("open(O_DIRECT) failed: {e}"),
                }
            } else {
                with_path(e)
            }
        })?;
        // Until the file is accepted, a file this call created is removed on the way out.
        let mut unwanted = Unwanted {
            path: created.then_some(path),
        };
        let magic = sys::fs_magic(fd.as_raw_fd()).map_err(with_path)?;
        let (alignment, alignment_source) = if self.direct {
            if let Some(name) = sys::buffered_only_fs_name(magic) {
                return Err(Error::DirectIoUnsupported {
                    path: path.to_path_buf(),
                    reason: format!("it is on {name}, which serves O_DIRECT from memory"),
                });
            }
            match align::discover(fd.as_raw_fd()).map_err(with_path)? {
                Some(found) => found,
                None => {
                    return Err(Error::DirectIoUnsupported {
                        path: path.to_path_buf(),
                        reason: "statx reports no direct-I/O alignment for this file".into(),
                    })
                }
            }
        } else {
            (Alignment::uniform(1), AlignmentSource::Default)
        };
        if self.lock {
            sys::flock_exclusive(&fd).map_err(|e| {
                // Someone else holds the file now: it is theirs, whoever created it.
                unwanted.path = None;
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    Error::Locked {
                        path: path.to_path_buf(),
                    }
                } else {
                    with_path(e)
                }
            })?;
        }
        if self.truncate && !created {
            sys::ftruncate(fd.as_raw_fd(), 0).map_err(with_path)?;
        }
        if self.preallocate > 0 {
            sys::fallocate(fd.as_raw_fd(), 0, 0, self.preallocate).map_err(with_path)?;
        }
        unwanted.path = None;
        let sync_strategy = self.write_through.then(|| {
            self.sync_strategy
                .unwrap_or_else(|| SyncStrategy::for_file_system(magic).0)
        });
        Ok(File {
            inner: Arc::new(FileInner {
                fd: Arc::new(fd),
                driver,
                alignment,
                alignment_source,
                path: path.to_path_buf(),
                readable: self.read || !self.write,
                writable: self.write,
                sync_strategy,
            }),
        })
    }
}

impl OpenOptions {
    /// Refuses `create`, `create_new` or `truncate` without `write`, before anything is opened.
    fn check_create_access(&self, path: &Path) -> Result<()> {
        if !self.write && (self.create || self.create_new || self.truncate) {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{}: creating or truncating a file needs write access (OpenOptions::write(true))",
                    path.display()
                ),
            )));
        }
        Ok(())
    }
}

/// The offset that means "at the current position" (-1 as `loff_t`), for pipes and FIFOs.
const CURRENT_POSITION: u64 = u64::MAX;

/// Removes the file at `path` when dropped, if set: a file `open` created and then refused.
struct Unwanted<'a> {
    path: Option<&'a Path>,
}

impl Drop for Unwanted<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

struct FileInner {
    fd: Arc<sys::OwnedHandle>,
    driver: Driver,
    alignment: Alignment,
    alignment_source: AlignmentSource,
    path: PathBuf,
    readable: bool,
    writable: bool,
    /// Set for a write-through file.
    sync_strategy: Option<SyncStrategy>,
}

/// An open file whose positional operations are futures completed by the driver.
///
/// Cheap to clone (the clones share the descriptor). Operations take owned buffers and give
/// them back in their result. Dropping a future before it completes cancels the operation; the
/// driver keeps the buffer until the kernel lets go of it. A cancelled write that the device
/// (or a worker thread) had already started still completes, possibly after later writes to
/// the same range: like `CancelIoEx`, cancellation is a request, not a barrier. Wait for a
/// write's result before relying on the order of overlapping writes. Dropping the `File` with operations
/// in flight is safe: they hold the descriptor open until they finish.
#[derive(Clone)]
pub struct File {
    inner: Arc<FileInner>,
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File")
            .field("path", &self.inner.path)
            .field("alignment", &self.inner.alignment)
            .field("backend", &self.inner.driver.backend())
            .finish()
    }
}

impl File {
    /// Opens an existing file for reading, with direct I/O, on the global driver.
    ///
    /// # Errors
    /// See [`OpenOptions::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<File> {
        OpenOptions::new().read(true).open(path)
    }

    /// Creates (or truncates) a file for reading and writing, with direct I/O, on the global
    /// driver.
    ///
    /// # Errors
    /// See [`OpenOptions::open`].
    pub fn create(path: impl AsRef<Path>) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    }

    /// The direct-I/O alignment of this file.
    pub fn alignment(&self) -> Alignment {
        self.inner.alignment
    }

    /// Where [`alignment`](File::alignment) came from.
    pub fn alignment_source(&self) -> AlignmentSource {
        self.inner.alignment_source
    }

    /// The path the file was opened with.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The driver that carries this file's operations.
    pub fn driver(&self) -> &Driver {
        &self.inner.driver
    }

    /// The raw descriptor (for inspection; do not close it).
    #[cfg(unix)]
    pub fn as_raw_fd(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }

    /// The file's length in bytes (`fstat(2)`).
    ///
    /// # Errors
    /// The OS error of `fstat`.
    #[cfg(target_os = "linux")]
    pub fn len(&self) -> Result<u64> {
        Ok(sys::fstat(self.as_raw_fd())?.st_size as u64)
    }

    /// Whether the file is empty.
    ///
    /// # Errors
    /// The OS error of `fstat` (`GetFileSizeEx` on Windows).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A zeroed buffer suitable for this file: aligned, with capacity rounded up to a multiple
    /// of the offset alignment. Its length is 0.
    pub fn alloc_buf(&self, capacity: usize) -> AlignedBuf {
        let a = self.inner.alignment;
        AlignedBuf::new(a.round_up(capacity.max(1)), a.buffer_align())
    }

    /// How this file's writes are made durable: `None` unless it was opened with
    /// [`write_through(true)`](OpenOptions::write_through).
    pub fn sync_strategy(&self) -> Option<SyncStrategy> {
        self.inner.sync_strategy
    }

    fn op(&self, desc: OpDesc, bufs: OpBufs) -> Op {
        Op::new(
            self.inner.driver.clone(),
            Arc::clone(&self.inner.fd),
            desc,
            bufs,
        )
    }

    fn check_len(len: usize) -> Result<u32> {
        u32::try_from(len).map_err(|_| {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "a single operation moves at most {} bytes, not {len}",
                    u32::MAX
                ),
            ))
        })
    }

    /// Refuses an operation the file was not opened for, before anything is submitted.
    fn check_access(&self, operation: &'static str, needs_write: bool) -> Result<()> {
        let (allowed, mode) = if needs_write {
            (self.inner.writable, "read-only (OpenOptions::write(false))")
        } else {
            (self.inner.readable, "write-only (OpenOptions::read(false))")
        };
        if allowed {
            Ok(())
        } else {
            Err(Error::NotOpenedFor {
                path: self.inner.path.clone(),
                operation,
                mode,
            })
        }
    }

    /// Where the rest of a transfer that moved `done` bytes from `offset` goes: on, or at the
    /// current position again for a file without offsets.
    fn continued(offset: u64, done: usize) -> u64 {
        if offset == CURRENT_POSITION {
            offset
        } else {
            offset + done as u64
        }
    }

    /// Refuses a range that ends past the largest file offset (`i64::MAX`, `loff_t`). The one
    /// exception is `u64::MAX`, -1 as a file offset: the current position, which io_uring and
    /// `preadv2` take for files without offsets (pipes, FIFOs; opened with `direct(false)`).
    fn check_range(offset: u64, len: u64) -> Result<()> {
        if offset == CURRENT_POSITION {
            return Ok(());
        }
        match offset.checked_add(len) {
            Some(end) if end <= i64::MAX as u64 => Ok(()),
            _ => Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "offset {offset} + length {len} ends past the largest file offset {}",
                    i64::MAX
                ),
            ))),
        }
    }

    /// The write of `buf[start..]` at `offset`, checked; `Err` gives the buffer back.
    fn prepare_write(
        &self,
        mut buf: AlignedBuf,
        start: usize,
        offset: u64,
    ) -> std::result::Result<Op, (Error, AlignedBuf)> {
        let checked = self
            .check_access("write", true)
            .and_then(|()| self.check_part(&mut buf, start, offset));
        match checked {
            Err(e) => Err((e, buf)),
            Ok((ptr, len)) => {
                let dsync = self.inner.sync_strategy.is_some();
                let desc = OpDesc::Write {
                    offset,
                    ptr,
                    len,
                    fixed: buf.fixed_index(self.inner.driver.shared().id),
                    dsync,
                    sync: self.inner.sync_strategy == Some(SyncStrategy::ExplicitSync),
                };
                Ok(self.op(desc, OpBufs::One(buf)))
            }
        }
    }

    /// The read of `buf[start..buf.len()]` at `offset`, checked; `Err` gives the buffer back.
    fn prepare_read(
        &self,
        mut buf: AlignedBuf,
        start: usize,
        offset: u64,
    ) -> std::result::Result<Op, (Error, AlignedBuf)> {
        let checked = self
            .check_access("read", false)
            .and_then(|()| self.check_part(&mut buf, start, offset));
        match checked {
            Err(e) => Err((e, buf)),
            Ok((ptr, len)) => {
                let desc = OpDesc::Read {
                    offset,
                    ptr: ptr.cast_mut(),
                    len,
                    fixed: buf.fixed_index(self.inner.driver.shared().id),
                };
                Ok(self.op(desc, OpBufs::One(buf)))
            }
        }
    }

    /// Writes `buf[..buf.len()]` at `offset` (`IORING_OP_WRITE`, `IORING_OP_WRITE_FIXED` for a
    /// registered pool's buffer, or `pwritev2(2)` on the thread pool). Resolves to the number
    /// of bytes written and the buffer. On a write-through file whose strategy is
    /// [`SyncStrategy::ExplicitSync`] it resolves once a data sync after the write completed.
    ///
    /// # Errors
    /// [`Error::NotOpenedFor`] on a file opened without write access and [`Error::Misaligned`]
    /// when the buffer address, its length or the offset is not aligned (nothing submitted);
    /// [`Error::Io`] of kind `InvalidInput` when the range ends past the largest file offset;
    /// the OS error of the write or of its sync ([`Error::Io`]: ENOSPC, EIO...);
    /// [`Error::Canceled`]; [`Error::Closed`]. The buffer comes back in every case.
    pub fn write_at(
        &self,
        buf: AlignedBuf,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, AlignedBuf>> + Send + 'static {
        let prepared = self.prepare_write(buf, 0, offset);
        async move {
            match prepared {
                Err((e, buf)) => (Err(e), buf),
                Ok(op) => {
                    let (res, bufs) = op.await;
                    (res.map(|n| n as usize), bufs.into_one())
                }
            }
        }
    }

    /// Writes all of `buf[..buf.len()]` at `offset`, like [`std::os::unix::fs::FileExt::
    /// write_all_at`]: a short write is continued with the rest, for callers that must not see
    /// one. Resolves to the buffer.
    ///
    /// # Errors
    /// As [`write_at`](File::write_at); [`Error::Io`] of kind `WriteZero` when a write writes
    /// nothing; [`Error::Misaligned`] when a short write ends where direct I/O cannot go on
    /// (not a multiple of the alignment). Bytes before the failing write were written. The
    /// buffer comes back in every case.
    pub fn write_all_at(
        &self,
        buf: AlignedBuf,
        offset: u64,
    ) -> impl Future<Output = BufResult<(), AlignedBuf>> + Send + 'static {
        let file = self.clone();
        async move {
            let total = buf.len();
            let mut done = 0;
            let mut buf = buf;
            while done < total {
                let at = File::continued(offset, done);
                let (res, back) = match file.prepare_write(buf, done, at) {
                    Err((e, buf)) => return (Err(e), buf),
                    Ok(op) => {
                        let (res, bufs) = op.await;
                        (res, bufs.into_one())
                    }
                };
                buf = back;
                match res {
                    Ok(0) => {
                        return (
                            Err(Error::Io(std::io::Error::new(
                                std::io::ErrorKind::WriteZero,
                                format!(
                                    "{}: write at offset {at} wrote nothing ({} of {total} bytes written)",
                                    file.inner.path.display(),
                                    done
                                ),
                            ))),
                            buf,
                        )
                    }
                    Ok(n) => done += n as usize,
                    Err(e) => return (Err(e), buf),
                }
            }
            (Ok(()), buf)
        }
    }

    /// Reads `buf.len()` bytes at `offset` into `buf` (`IORING_OP_READ`, `READ_FIXED`, or
    /// `preadv2(2)`). Resolves to the number of bytes read, which is less than asked at the end
    /// of the file (0 at or past it); `buf.len()` is set to that number. An offset of
    /// `u64::MAX` reads at the current position, for a pipe or FIFO opened with
    /// `direct(false)`.
    ///
    /// # Errors
    /// As [`write_at`](File::write_at) ([`Error::NotOpenedFor`] on a file opened write-only).
    /// The buffer comes back in every case.
    pub fn read_at(
        &self,
        buf: AlignedBuf,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, AlignedBuf>> + Send + 'static {
        let prepared = self.prepare_read(buf, 0, offset);
        async move {
            match prepared {
                Err((e, buf)) => (Err(e), buf),
                Ok(op) => {
                    let (res, bufs) = op.await;
                    let mut buf = bufs.into_one();
                    if let Ok(n) = res {
                        buf.set_len(n as usize);
                    }
                    (res.map(|n| n as usize), buf)
                }
            }
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`, like [`std::os::unix::fs::FileExt::
    /// read_exact_at`]: a short read is continued, and the end of the file before `buf.len()`
    /// bytes is an error. Resolves to the buffer, full.
    ///
    /// # Errors
    /// As [`read_at`](File::read_at); [`Error::Io`] of kind `UnexpectedEof` naming the offset
    /// and how much was read when the file ends first (`buf.len()` is then the bytes read);
    /// [`Error::Misaligned`] when a short read ends where direct I/O cannot go on. The buffer
    /// comes back in every case.
    pub fn read_exact_at(
        &self,
        buf: AlignedBuf,
        offset: u64,
    ) -> impl Future<Output = BufResult<(), AlignedBuf>> + Send + 'static {
        let file = self.clone();
        async move {
            let total = buf.len();
            let mut done = 0;
            let mut buf = buf;
            while done < total {
                let at = File::continued(offset, done);
                let (res, mut back) = match file.prepare_read(buf, done, at) {
                    Err((e, mut buf)) => {
                        buf.set_len(done);
                        return (Err(e), buf);
                    }
                    Ok(op) => {
                        let (res, bufs) = op.await;
                        (res, bufs.into_one())
                    }
                };
                back.set_len(total);
                buf = back;
                match res {
                    Ok(0) => {
                        buf.set_len(done);
                        return (
                            Err(Error::Io(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                format!(
                                    "{}: the file ends at offset {at}, {done} of the {total} bytes asked at offset {offset}",
                                    file.inner.path.display()
                                ),
                            ))),
                            buf,
                        );
                    }
                    Ok(n) => done += n as usize,
                    Err(e) => {
                        buf.set_len(done);
                        return (Err(e), buf);
                    }
                }
            }
            (Ok(()), buf)
        }
    }

    /// Writes several buffers, one after the other, at `offset` in one operation
    /// (`IORING_OP_WRITEV`, or `pwritev2(2)`). Each buffer must be aligned and hold a multiple
    /// of the alignment. Resolves to the total bytes written and the buffers.
    ///
    /// # Errors
    /// As [`write_at`](File::write_at); more buffers than the driver's `max_iovecs` is an
    /// [`Error::Io`] of kind `InvalidInput`. The buffers come back in every case.
    pub fn write_vectored_at(
        &self,
        mut bufs: Vec<AlignedBuf>,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, Vec<AlignedBuf>>> + Send + 'static {
        let max = self.inner.driver.shared().slots.max_iovecs();
        let mut check = || -> Result<()> {
            self.check_access("write", true)?;
            if bufs.is_empty() || bufs.len() > max {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "a vectored write takes 1 to {max} buffers, not {}",
                        bufs.len()
                    ),
                )));
            }
            let mut total = 0usize;
            for b in bufs.iter_mut() {
                total += self.check_part(b, 0, offset)?.1 as usize;
            }
            File::check_range(offset, total as u64)?;
            File::check_len(total).map(drop)
        };
        let prepared = match check() {
            Err(e) => Err((e, bufs)),
            Ok(()) => {
                let desc = OpDesc::Writev {
                    offset,
                    dsync: self.inner.sync_strategy.is_some(),
                    sync: self.inner.sync_strategy == Some(SyncStrategy::ExplicitSync),
                };
                Ok(self.op(desc, OpBufs::Many(bufs)))
            }
        };
        async move {
            match prepared {
                Err((e, bufs)) => (Err(e), bufs),
                Ok(op) => {
                    let (res, bufs) = op.await;
                    (res.map(|n| n as usize), bufs.into_many())
                }
            }
        }
    }

    /// Flushes the file's data (and the metadata needed to read it) to the device
    /// (`IORING_OP_FSYNC` with `DATASYNC`, or `fdatasync(2)`).
    ///
    /// # Errors
    /// The OS error (EIO...). After a failed sync the state of the written data is unknown:
    /// do not retry and assume success.
    pub fn sync_data(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        self.unit_op(OpDesc::Fsync { datasync: true })
    }

    /// Flushes the file's data and all its metadata (`IORING_OP_FSYNC`, or `fsync(2)`).
    ///
    /// # Errors
    /// As [`sync_data`](File::sync_data).
    pub fn sync_all(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        self.unit_op(OpDesc::Fsync { datasync: false })
    }

    /// Reserves space for `len` bytes at `offset` (`IORING_OP_FALLOCATE`, mode 0: the file
    /// grows if the range ends past it).
    ///
    /// # Errors
    /// [`Error::NotOpenedFor`] on a file opened without write access; [`Error::Io`] of kind
    /// `InvalidInput` when the range ends past the largest file offset; the OS error (ENOSPC,
    /// EOPNOTSUPP...).
    pub fn allocate(&self, offset: u64, len: u64) -> impl Future<Output = Result<()>> + Send {
        let checked = self
            .check_access("allocate", true)
            .and_then(|()| File::check_range(offset, len));
        let op = checked.map(|()| {
            self.unit_op(OpDesc::Fallocate {
                mode: 0,
                offset,
                len,
            })
        });
        async move { op?.await }
    }

    /// Truncates or extends the file to `len` bytes (`IORING_OP_FTRUNCATE` on Linux 6.9+,
    /// else `ftruncate(2)` on the calling thread, or on the thread pool).
    ///
    /// # Errors
    /// [`Error::NotOpenedFor`] on a file opened without write access; [`Error::Io`] of kind
    /// `InvalidInput` when `len` is past the largest file offset; the OS error.
    pub fn set_len(&self, len: u64) -> impl Future<Output = Result<()>> + Send + 'static {
        let checked = self
            .check_access("set the length of", true)
            .and_then(|()| File::check_range(0, len));
        let inline =
            self.inner.driver.backend() == Backend::Uring && !self.inner.driver.has_ftruncate_op();
        let fd = Arc::clone(&self.inner.fd);
        let op = checked.map(|()| (!inline).then(|| self.unit_op(OpDesc::Ftruncate { len })));
        async move {
            match op? {
                Some(op) => op.await,
                None => sys::ftruncate(sys::raw(&fd), len).map_err(Error::Io),
            }
        }
    }

    fn unit_op(&self, desc: OpDesc) -> impl Future<Output = Result<()>> + Send + 'static {
        let op = self.op(desc, OpBufs::None);
        async move { op.await.0.map(drop) }
    }

    /// Checks `buf[start..buf.len()]` at `offset` against the file's alignment and the file
    /// offset range; returns the part's address and length.
    fn check_part(
        &self,
        buf: &mut AlignedBuf,
        start: usize,
        offset: u64,
    ) -> Result<(*const u8, u32)> {
        debug_assert!(start <= buf.len());
        let len = buf.len() - start;
        // Address arithmetic only (in bounds: start <= len <= capacity).
        let ptr = buf.as_mut_ptr().wrapping_add(start);
        self.inner
            .alignment
            .check_request(ptr as usize, len, offset)?;
        File::check_range(offset, len as u64)?;
        Ok((ptr.cast_const(), File::check_len(len)?))
    }
}
