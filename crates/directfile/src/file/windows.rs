//! The Windows side of [`OpenOptions`] and [`File`]: `CreateFileW` with
//! `FILE_FLAG_OVERLAPPED | FILE_FLAG_NO_BUFFERING` (+ `FILE_FLAG_WRITE_THROUGH`), the handle
//! bound to the driver's completion port when the driver is one.

use super::{File, FileInner, OpenOptions, Unwanted};
use crate::align::{Alignment, AlignmentSource};
use crate::driver::Driver;
use crate::{sys, Error, Result, SyncStrategy};
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, RawHandle};
use std::path::Path;
use std::sync::Arc;
use windows_sys::Win32::Foundation::{
    ERROR_INVALID_PARAMETER, ERROR_LOCK_VIOLATION, ERROR_SHARING_VIOLATION, GENERIC_READ,
    GENERIC_WRITE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CREATE_NEW, FILE_ATTRIBUTE_NORMAL, FILE_FLAG_NO_BUFFERING, FILE_FLAG_OVERLAPPED,
    FILE_FLAG_WRITE_THROUGH, FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_ALWAYS,
    OPEN_EXISTING,
};

impl OpenOptions {
    /// Opens the file with `CreateFileW` (blocking, like every file system's metadata
    /// operation): always `FILE_FLAG_OVERLAPPED`, `FILE_FLAG_NO_BUFFERING` with `direct(true)`
    /// (the default), `FILE_FLAG_WRITE_THROUGH` with `write_through(true)`. `lock(true)` opens
    /// with no sharing at all (share mode 0), so any second open fails while this one lives;
    /// otherwise the file is shared for reading, writing and deletion. On a completion-port
    /// driver the handle is bound to the port with `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS |
    /// FILE_SKIP_SET_EVENT_ON_HANDLE`. `mode` (Unix permission bits) is ignored.
    ///
    /// As on Linux, a file this call created is removed again if the open fails after it (the
    /// handle cannot be bound to the port, the preallocation fails), and `truncate(true)`
    /// empties the file only once it is accepted (`SetFileInformationByHandle(
    /// FileEndOfFileInfo)`, not `TRUNCATE_EXISTING`). The sync strategy of a write-through file comes from the volume's
    /// file system ([`SyncStrategy::for_file_system_name`]) unless one is forced.
    ///
    /// # Errors
    /// The OS error of `CreateFileW`, of binding the handle to the port, of truncating or of
    /// preallocating, naming the path ([`Error::Io`]); [`Error::DirectIoUnsupported`] when the
    /// file system refuses unbuffered I/O; [`Error::Locked`] when another handle holds the file
    /// without sharing (or this open asks for none while another handle is open);
    /// [`Error::Io`] of kind `InvalidInput` when `create`, `create_new` or `truncate` is asked
    /// without `write`.
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
        let mut access = 0;
        if self.read || !self.write {
            access |= GENERIC_READ;
        }
        if self.write {
            access |= GENERIC_WRITE;
        }
        let share = if self.lock {
            0
        } else {
            FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
        };
        // Never CREATE_ALWAYS or TRUNCATE_EXISTING: the file is emptied once it is accepted.
        let disposition = if self.create_new {
            CREATE_NEW
        } else if self.create {
            OPEN_ALWAYS
        } else {
            OPEN_EXISTING
        };
        let mut flags = FILE_ATTRIBUTE_NORMAL | FILE_FLAG_OVERLAPPED;
        if self.direct {
            flags |= FILE_FLAG_NO_BUFFERING;
        }
        if self.write_through {
            flags |= FILE_FLAG_WRITE_THROUGH;
        }
        // Asked only when it matters: on Windows a metadata query opens the file, and of a
        // named pipe it would take the instance this open is for.
        let absent_before =
            self.direct && (self.create || self.create_new) && path.symlink_metadata().is_err();
        // Declared before the handle, so dropped after it: with `lock(true)` the handle shares
        // nothing, not even deletion, so a file this call created can go only once it is closed.
        let mut unwanted = Unwanted { path: None };
        let (handle, created) =
            sys::create_file(path, access, share, disposition, flags).map_err(|e| {
                match e.raw_os_error().map(|c| c as u32) {
                    Some(ERROR_SHARING_VIOLATION | ERROR_LOCK_VIOLATION) => Error::Locked {
                        path: path.to_path_buf(),
                    },
                    Some(ERROR_INVALID_PARAMETER) if self.direct => {
                        // Whether the file system made the file before it refused the flag is its
                        // own business: what this call may have made goes.
                        if absent_before {
                            let _ = std::fs::remove_file(path);
                        }
                        Error::DirectIoUnsupported {
                            path: path.to_path_buf(),
                            reason: format!("CreateFileW(FILE_FLAG_NO_BUFFERING) failed: {e}"),
                        }
                    }
                    _ => with_path(e),
                }
            })?;
        unwanted.path = created.then_some(path);
        let raw = sys::raw(&handle);
        let (alignment, alignment_source) = if self.direct {
            sys::discover_alignment(raw, path)
        } else {
            (Alignment::uniform(1), AlignmentSource::Default)
        };
        driver.bind(raw).map_err(with_path)?;
        if self.truncate && !created {
            sys::ftruncate(raw, 0).map_err(with_path)?;
        }
        if self.preallocate > 0 {
            sys::allocate(raw, 0, self.preallocate).map_err(with_path)?;
        }
        unwanted.path = None;
        let sync_strategy = self.write_through.then(|| {
            self.sync_strategy.unwrap_or_else(|| {
                // A volume that does not say what it is gets the explicit sync.
                let name = sys::fs_name_of(handle.as_handle()).unwrap_or_default();
                SyncStrategy::for_file_system_name(&name).0
            })
        });
        Ok(File {
            inner: Arc::new(FileInner {
                fd: Arc::new(handle),
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

impl AsHandle for File {
    /// The file's handle, borrowed (for inspection: `directfile::sys::fs_name_of`, ...).
    fn as_handle(&self) -> BorrowedHandle<'_> {
        self.inner.fd.as_handle()
    }
}

impl File {
    /// The raw `HANDLE` (for inspection; do not close it).
    pub fn as_raw_handle(&self) -> RawHandle {
        self.inner.fd.as_raw_handle()
    }

    /// The file's length in bytes (`GetFileSizeEx`).
    ///
    /// # Errors
    /// The OS error of `GetFileSizeEx`.
    pub fn len(&self) -> Result<u64> {
        Ok(sys::file_size(sys::raw(&self.inner.fd))?)
    }
}
