//! The thread pool's blocking operations on Windows: positional `WriteFile`/`ReadFile` (the
//! offset in an `OVERLAPPED`, waited for on this worker's event), `FlushFileBuffers` (which
//! the worker also runs after each write of a file whose strategy is
//! `SyncStrategy::ExplicitSync`), and `SetFileInformationByHandle` for allocation and length.
//!
//! Files are always opened with `FILE_FLAG_OVERLAPPED` (one open path for both Windows
//! drivers); a worker waits for its own call with `GetOverlappedResult` on its own event, so
//! calls on one handle run in parallel (a handle opened for synchronous I/O would have the I/O
//! manager run them one at a time).

use crate::op::slot::OpDesc;
use crate::sys::{self, IoVec, Owned, RawHandle};
use windows_sys::Win32::Foundation::{ERROR_HANDLE_EOF, ERROR_IO_PENDING};
use windows_sys::Win32::Storage::FileSystem::{ReadFile, WriteFile};
use windows_sys::Win32::System::Threading::CreateEventW;
use windows_sys::Win32::System::IO::{GetOverlappedResult, OVERLAPPED};

thread_local! {
    /// This worker's event for its overlapped calls (manual reset, made once per thread).
    static EVENT: Owned = {
        // SAFETY: no security attributes, no name: a plain unnamed event.
        let event = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        assert!(!event.is_null(), "CreateEventW failed: {}", std::io::Error::last_os_error());
        Owned(event)
    };
}

/// Runs one positional read or write and waits for it. Returns the bytes moved or the error.
///
/// # Safety
/// `ptr` must be valid (and writable for a read) for `len` bytes for the whole call, and
/// `handle` must be open.
unsafe fn positional(
    handle: RawHandle,
    write: bool,
    offset: u64,
    ptr: *mut u8,
    len: u32,
) -> Result<u32, u32> {
    EVENT.with(|event| {
        // SAFETY: an all-zero OVERLAPPED is valid; the offset and event are set below.
        let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
        ov.Anonymous.Anonymous.Offset = offset as u32;
        ov.Anonymous.Anonymous.OffsetHigh = (offset >> 32) as u32;
        ov.hEvent = event.0;
        // SAFETY: the caller guarantees the buffer; `ov` lives on this frame until the call
        // is over (GetOverlappedResult with wait = TRUE returns only then).
        let ok = unsafe {
            if write {
                WriteFile(handle, ptr, len, std::ptr::null_mut(), &mut ov)
            } else {
                ReadFile(handle, ptr, len, std::ptr::null_mut(), &mut ov)
            }
        };
        if ok == 0 {
            let err = sys::last_error();
            if err != ERROR_IO_PENDING {
                return Err(err);
            }
        }
        let mut moved = 0u32;
        // SAFETY: `ov` is the OVERLAPPED of the call above; wait = TRUE waits on its event.
        if unsafe { GetOverlappedResult(handle, &ov, &mut moved, 1) } == 0 {
            return Err(sys::last_error());
        }
        Ok(moved)
    })
}

/// Runs one operation with blocking calls. Returns the byte count or a negative Win32 error.
///
/// # Safety
/// The pointers in `desc` (and `iov`, `iov_len` for a vectored write) must be valid for the
/// length they describe for the whole call, and `handle` must be open.
pub(super) unsafe fn run(
    handle: RawHandle,
    desc: OpDesc,
    iov: *const IoVec,
    iov_len: usize,
) -> i32 {
    let result: Result<u32, u32> = match desc {
        OpDesc::Nop => Ok(0),
        // `sync` (FlushFileBuffers after the write) is the worker's, after `run`.
        OpDesc::Write {
            offset, ptr, len, ..
        } => {
            // SAFETY: the caller guarantees the buffer.
            unsafe { positional(handle, true, offset, ptr.cast_mut(), len) }
        }
        OpDesc::Read {
            offset, ptr, len, ..
        } => {
            // SAFETY: the caller guarantees the buffer, writable.
            match unsafe { positional(handle, false, offset, ptr, len) } {
                Err(ERROR_HANDLE_EOF) => Ok(0),
                other => other,
            }
        }
        OpDesc::Writev { offset, .. } => {
            // SAFETY: the caller guarantees `iov_len` iovecs at `iov`.
            let bufs = unsafe { std::slice::from_raw_parts(iov, iov_len) };
            let mut written = 0u32;
            let mut failed = None;
            for b in bufs {
                // SAFETY: the caller guarantees each buffer.
                match unsafe {
                    positional(
                        handle,
                        true,
                        offset + u64::from(written),
                        b.ptr,
                        b.len as u32,
                    )
                } {
                    Ok(n) => {
                        written += n;
                        if n as usize != b.len {
                            break; // short: report what was written, like pwritev
                        }
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                Some(e) if written == 0 => Err(e),
                _ => Ok(written),
            }
        }
        OpDesc::Fsync { .. } => sys::flush(handle).map(|()| 0).map_err(os_code),
        OpDesc::Fallocate { offset, len, .. } => sys::allocate(handle, offset, len)
            .map(|()| 0)
            .map_err(os_code),
        OpDesc::Ftruncate { len } => sys::ftruncate(handle, len).map(|()| 0).map_err(os_code),
    };
    match result {
        Ok(n) => n as i32,
        Err(e) => -(e as i32),
    }
}

/// The Win32 error code of an `io::Error` from `sys` (always an OS error there).
pub(crate) fn os_code(e: std::io::Error) -> u32 {
    e.raw_os_error()
        .map_or(windows_sys::Win32::Foundation::ERROR_GEN_FAILURE, |c| {
            c as u32
        })
}
