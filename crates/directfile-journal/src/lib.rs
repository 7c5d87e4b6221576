//! A durable group-commit journal on `directfile`.
//!
//! [`Journal::append`] returns only when its record and every earlier one are durable. Appenders
//! from any number of tasks fill the current aligned batch; background lanes write each batch
//! with one write-through write while the next batch fills; acknowledgements go out strictly in
//! LSN order. The first failed write poisons the journal. See [`format`](mod@format) for the on-disk layout
//! and [`recovery`] for how a torn tail is told from corruption.
//!
//! The journal is generic over its [`Storage`]: [`MemStorage`] (tests, fault injection),
//! [`StdStorage`] (`std::fs`, `O_DIRECT | O_DSYNC`) and [`DirectFileStorage`] (`directfile`).
//!
//! ```
//! use directfile_journal::{Journal, JournalOptions, Lsn, MemStorage};
//!
//! futures::executor::block_on(async {
//!     let storage = MemStorage::new();
//!     let (journal, report) =
//!         Journal::open_with_storage(storage.clone(), JournalOptions::default()).await?;
//!     assert_eq!(report.next_lsn, 1);
//!     assert_eq!(journal.append(b"first").await?, Lsn(1));
//!     assert_eq!(journal.append_batch(&[b"second", b"third"]).await?, Lsn(3));
//!     let mut reader = journal.reader(Lsn(2));
//!     assert_eq!(reader.next().await?.unwrap().payload, b"second");
//!     drop(reader);
//!     drop(journal);
//!     // Reopening recovers every acknowledged record.
//!     let (_journal, report) = Journal::open_with_storage(storage, JournalOptions::default()).await?;
//!     assert_eq!(report.last_lsn, Some(3));
//!     Ok::<(), directfile_journal::Error>(())
//! })?;
//! # Ok::<(), directfile_journal::Error>(())
//! ```
//!
//! On real files, `Journal::open(dir, JournalOptions::default())` uses [`DirectFileStorage`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::io;
use std::sync::Arc;

mod batch_index;
mod directfile_storage;
pub mod format;
mod journal;
pub mod recovery;
pub mod storage;
pub mod tools;

pub use directfile_storage::{DirectFileLock, DirectFileSegment, DirectFileStorage};
pub use journal::{Journal, JournalOptions, JournalStats, Reader, Record};
pub use recovery::{Corruption, RecoveryMode, RecoveryReport, TornTail};
pub use storage::{IoBuffer, MemStorage, StdStorage, Storage};

/// Log sequence number: the position of a record in the journal, starting at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Errors of the journal.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error outside the commit path (open, recovery, reading, truncation).
    Io(io::Error),
    /// A write or sync failed earlier; this record and every later one are not durable and the
    /// journal refuses appends. Reopen the journal to recover what is on the device.
    Poisoned(Arc<io::Error>),
    /// Another opener holds the journal directory.
    Locked(String),
    /// A record (or `append_batch` group) does not fit in one batch.
    RecordTooLarge {
        /// Bytes the record (or group) needs in a batch: its payloads, its record headers and
        /// the batch header.
        bytes: usize,
        /// The largest batch, [`JournalOptions::batch_bytes_max`].
        max_bytes: usize,
    },
    /// Recovery found damage a crash cannot explain.
    Corruption(Corruption),
    /// Recovery in [`RecoveryMode::Strict`] found a torn tail.
    TornTail(TornTail),
    /// The journal is shutting down.
    Closed,
    /// Options that cannot work together.
    InvalidOptions(String),
    /// An LSN outside the records the journal holds (`truncate_from`).
    LsnOutOfRange {
        /// The LSN asked for.
        lsn: u64,
        /// The first record kept.
        first: u64,
        /// The LSN the next append gets.
        next: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "journal I/O error: {e}"),
            Error::Poisoned(e) => write!(
                f,
                "journal is poisoned by an earlier failed write ({e}); the record is not durable, reopen the journal to recover"
            ),
            Error::Locked(what) => {
                write!(f, "journal {what} is locked by another opener (one opener at a time)")
            }
            Error::RecordTooLarge { bytes, max_bytes } => write!(
                f,
                "record of {bytes} bytes (with headers) exceeds the batch limit of {max_bytes} bytes; raise batch_bytes_max"
            ),
            Error::Corruption(c) => write!(f, "journal is corrupt: {c}"),
            Error::TornTail(t) => write!(f, "strict recovery refused a {t}"),
            Error::Closed => write!(f, "journal is closed"),
            Error::InvalidOptions(why) => write!(f, "invalid journal options: {why}"),
            Error::LsnOutOfRange { lsn, first, next } => write!(
                f,
                "LSN {lsn} is outside the journal's records: it holds LSNs {first}..{next} (the next append gets {next})"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Poisoned(e) => Some(&**e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            Error::Locked(_) => io::Error::new(io::ErrorKind::WouldBlock, e),
            Error::RecordTooLarge { .. }
            | Error::InvalidOptions(_)
            | Error::LsnOutOfRange { .. } => io::Error::new(io::ErrorKind::InvalidInput, e),
            Error::Corruption(_) | Error::TornTail(_) => {
                io::Error::new(io::ErrorKind::InvalidData, e)
            }
            other => io::Error::other(other),
        }
    }
}

/// Result type of the journal.
pub type Result<T, E = Error> = std::result::Result<T, E>;
