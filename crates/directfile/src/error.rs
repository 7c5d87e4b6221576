//! One error type for every operation, with a variant per thing a caller may want to branch on.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// How the platform names unbuffered I/O, its disk file systems, and an exclusive open.
#[cfg(unix)]
const DIRECT: &str = "O_DIRECT";
#[cfg(unix)]
const DISK_FILE_SYSTEMS: &str = "ext4, xfs, btrfs";
#[cfg(unix)]
const LOCK: &str = "exclusive flock";
#[cfg(windows)]
const DIRECT: &str = "FILE_FLAG_NO_BUFFERING";
#[cfg(windows)]
const DISK_FILE_SYSTEMS: &str = "NTFS, ReFS";
#[cfg(windows)]
const LOCK: &str = "opened without sharing";

/// The result of a directfile operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The result of an operation that owned buffers: the buffers come back on success and on error.
pub type BufResult<T, B> = (Result<T>, B);

/// Everything that can go wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The operating system refused or failed the operation (EIO, ENOSPC, EBADF, ...).
    Io(io::Error),
    /// A buffer address, file offset or length does not meet the file's direct-I/O alignment.
    /// Nothing was submitted.
    Misaligned {
        /// `"offset"`, `"length"` or `"buffer address"`.
        what: &'static str,
        /// The value that was refused.
        value: u64,
        /// The alignment it must be a multiple of.
        required: u64,
    },
    /// The operation was cancelled before it completed (its future was dropped, or the
    /// driver withdrew it). Its buffer, if any, is safe: the kernel no longer owns it.
    Canceled,
    /// The driver was closed: no new operation is accepted.
    Closed,
    /// The file system under `path` does not do direct (unbuffered) I/O.
    DirectIoUnsupported {
        /// The file that was opened.
        path: PathBuf,
        /// Why we know (the OS error, or the file system we found).
        reason: String,
    },
    /// Another handle holds the exclusive lock on `path`.
    Locked {
        /// The locked file.
        path: PathBuf,
    },
    /// The file was not opened for this operation (a write on a file opened read-only, a read
    /// on one opened write-only). Nothing was submitted.
    NotOpenedFor {
        /// The file.
        path: PathBuf,
        /// What was refused: `"write"`, `"read"`, `"allocate"`, ...
        operation: &'static str,
        /// How the file was opened.
        mode: &'static str,
    },
    /// The requested backend or feature cannot work here; the text says why.
    Unsupported(String),
}

impl Error {
    /// The OS error code behind this error, if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io(e) => e.raw_os_error(),
            Error::Canceled => Some(crate::sys::CANCELED),
            _ => None,
        }
    }

    /// Builds the error for the OS error code of a failed call or completion (an errno, or a
    /// Win32 error code on Windows, where `ERROR_OPERATION_ABORTED` is the cancelled one).
    pub(crate) fn from_errno(errno: i32) -> Error {
        if errno == crate::sys::CANCELED {
            Error::Canceled
        } else {
            Error::Io(io::Error::from_raw_os_error(errno))
        }
    }

    /// The io::ErrorKind closest to this error. OS errors get std's kinds (ENOSPC is
    /// `StorageFull`, EROFS `ReadOnlyFilesystem`, EDQUOT `QuotaExceeded`, EFBIG `FileTooLarge`,
    /// ...), and those std leaves uncategorised get one a caller can match (see
    /// [`errno_kind`](Error::errno_kind)).
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Io(e) => match e.raw_os_error() {
                Some(errno) => Error::errno_kind(errno),
                None => e.kind(),
            },
            Error::Misaligned { .. } => io::ErrorKind::InvalidInput,
            // Not `Interrupted`: generic retry loops retry that, and a cancelled operation is
            // one its caller gave up on.
            Error::Canceled => io::ErrorKind::Other,
            Error::Closed => io::ErrorKind::BrokenPipe,
            Error::DirectIoUnsupported { .. } | Error::Unsupported(_) => io::ErrorKind::Unsupported,
            Error::Locked { .. } => io::ErrorKind::WouldBlock,
            Error::NotOpenedFor { .. } => io::ErrorKind::PermissionDenied,
        }
    }

    /// The `io::ErrorKind` of an OS error: std's, except for the errors of file I/O that std
    /// leaves uncategorised (a kind no caller can name): EIO and ENXIO are `Other` (the
    /// device failed), EBADF `PermissionDenied` (the descriptor does not allow the
    /// operation), EOPNOTSUPP and ENODEV `Unsupported`, EOVERFLOW `InvalidInput`.
    #[cfg(unix)]
    pub fn errno_kind(errno: i32) -> io::ErrorKind {
        match errno {
            libc::EIO | libc::ENXIO => io::ErrorKind::Other,
            libc::EBADF => io::ErrorKind::PermissionDenied,
            libc::EOPNOTSUPP | libc::ENODEV => io::ErrorKind::Unsupported,
            libc::EOVERFLOW => io::ErrorKind::InvalidInput,
            other => io::Error::from_raw_os_error(other).kind(),
        }
    }

    /// The `io::ErrorKind` of a Win32 error code: std's, except for the errors of file I/O
    /// that std leaves uncategorised (a kind no caller can name): `ERROR_CRC`,
    /// `ERROR_IO_DEVICE` and `ERROR_DEVICE_NOT_CONNECTED` are `Other` (the device failed, as
    /// EIO), `ERROR_NOT_SUPPORTED` and `ERROR_INVALID_FUNCTION` `Unsupported` (the file
    /// system has no such operation), `ERROR_HANDLE_EOF` `UnexpectedEof`,
    /// `ERROR_NEGATIVE_SEEK` and `ERROR_ARITHMETIC_OVERFLOW` `InvalidInput` (an offset out of
    /// range, as EOVERFLOW).
    #[cfg(windows)]
    pub fn errno_kind(errno: i32) -> io::ErrorKind {
        use windows_sys::Win32::Foundation::{
            ERROR_ARITHMETIC_OVERFLOW, ERROR_CRC, ERROR_DEVICE_NOT_CONNECTED, ERROR_HANDLE_EOF,
            ERROR_INVALID_FUNCTION, ERROR_IO_DEVICE, ERROR_NEGATIVE_SEEK, ERROR_NOT_SUPPORTED,
        };
        match errno as u32 {
            ERROR_CRC | ERROR_IO_DEVICE | ERROR_DEVICE_NOT_CONNECTED => io::ErrorKind::Other,
            ERROR_NOT_SUPPORTED | ERROR_INVALID_FUNCTION => io::ErrorKind::Unsupported,
            ERROR_HANDLE_EOF => io::ErrorKind::UnexpectedEof,
            ERROR_NEGATIVE_SEEK | ERROR_ARITHMETIC_OVERFLOW => io::ErrorKind::InvalidInput,
            _ => io::Error::from_raw_os_error(errno).kind(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Misaligned {
                what,
                value,
                required,
            } => write!(
                f,
                "{what} {value} is not a multiple of the file's direct-I/O alignment {required}"
            ),
            Error::Canceled => write!(f, "operation cancelled before it completed"),
            Error::Closed => write!(f, "the directfile driver is closed"),
            Error::DirectIoUnsupported { path, reason } => write!(
                f,
                "{}: this file system does not support direct I/O ({DIRECT}): {reason}; \
                 put the file on a disk file system ({DISK_FILE_SYSTEMS}), \
                 or open it with direct(false) to accept buffered I/O",
                path.display()
            ),
            Error::Locked { path } => {
                write!(f, "{}: locked by another handle ({LOCK})", path.display())
            }
            Error::Unsupported(why) => write!(f, "unsupported: {why}"),
            Error::NotOpenedFor {
                path,
                operation,
                mode,
            } => write!(
                f,
                "{}: cannot {operation}: the file was opened {mode}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            Error::Canceled => io::Error::from_raw_os_error(crate::sys::CANCELED),
            other => io::Error::new(other.kind(), other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misaligned_message_names_value_and_requirement() {
        let e = Error::Misaligned {
            what: "offset",
            value: 4097,
            required: 512,
        };
        assert_eq!(
            e.to_string(),
            "offset 4097 is not a multiple of the file's direct-I/O alignment 512"
        );
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[cfg(unix)]
    #[test]
    fn canceled_round_trips_through_errno() {
        assert!(matches!(
            Error::from_errno(libc::ECANCELED),
            Error::Canceled
        ));
        let io: io::Error = Error::Canceled.into();
        assert_eq!(io.raw_os_error(), Some(libc::ECANCELED));
        assert_eq!(Error::from_errno(libc::EIO).raw_os_error(), Some(libc::EIO));
    }
}
