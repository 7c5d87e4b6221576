//! Async, unbuffered (`O_DIRECT`), write-through (`O_DSYNC`) file I/O, on io_uring on Linux
//! and on an I/O completion port on Windows, with a thread-pool backend on both where the
//! native one is missing or forbidden.
//!
//! It is the form of a Windows file opened with `FILE_FLAG_NO_BUFFERING |
//! FILE_FLAG_WRITE_THROUGH | FILE_FLAG_OVERLAPPED` and bound to a completion port, on either
//! system: every positional operation is a future, completed by the kernel, that runs on any
//! executor. On Windows it is that design itself ([`Backend::Iocp`]). The original's terms,
//! and ours:
//!
//! | Windows, completion port | directfile |
//! | --- | --- |
//! | `WriteAsync` / `ReadAsync` (overlapped `WriteFile` / `ReadFile` at an offset) | [`File::write_at`] / [`File::read_at`], futures that own their [`AlignedBuf`] |
//! | the completion source (the `OVERLAPPED` plus the task waiting on it) | the driver's slot: a fixed table entry holding the `OVERLAPPED`, the buffer and the waker; the packet's `OVERLAPPED` pointer leads back to slot and generation |
//! | the call returns TRUE / FALSE / `ERROR_IO_PENDING` | completed at once (ready at the first poll), failed at once (error and buffer back), pending (the packet wakes the task) |
//! | `CancelIoEx`, then the packet with `ERROR_OPERATION_ABORTED` | dropping the future; a cancelled operation's result is [`Error::Canceled`] |
//! | `GetQueuedCompletionStatusEx` on a thread of one's own | the driver's reaper thread, or [`Driver::block_on`] waiting in the port itself |
//! | `FILE_FLAG_WRITE_THROUGH` / `FILE_FLAG_NO_BUFFERING` | [`OpenOptions::write_through`] (`O_DSYNC` on Linux) / [`OpenOptions::direct`] (`O_DIRECT`) |
//! | share mode 0 | [`OpenOptions::lock`] (`flock(LOCK_EX)` on Linux) |
//! | `FlushFileBuffers` | [`File::sync_data`], [`File::sync_all`] (on a worker thread) |
//! | `FILE_FLAG_WRITE_THROUGH`, or it and `FlushFileBuffers` after each write, per file system | [`SyncStrategy::Dsync`] / [`SyncStrategy::ExplicitSync`] ([`File::sync_strategy`]) |
//! | a write refused for the handle's access (`ERROR_ACCESS_DENIED`) | [`Error::NotOpenedFor`], before anything is submitted |
//!
//! What each platform and backend guarantees, and what was verified under Wine only:
//! `crates/directfile/PLATFORMS.md`.
//!
//! - Buffers are owned ([`AlignedBuf`], [`BufPool`]) and handed back in every result, so
//!   dropping a future can never let the kernel write into freed memory.
//! - A misaligned buffer, offset or length is refused before submission
//!   ([`Error::Misaligned`]); the alignment comes from the file system ([`Alignment`]).
//! - No heap allocation per operation: operations live in a fixed slot table.
//!
//! ```
//! # fn main() -> directfile::Result<()> {
//! use directfile::{Driver, OpenOptions};
//! # let dir = std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from)
//! #     .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let path = dir.join("doc-example.dat");
//! let file = OpenOptions::new().read(true).write(true).create(true).write_through(true)
//!     .open(&path)?;
//! let mut buf = file.alloc_buf(4096);
//! buf.extend_from_slice(&[7u8; 4096]);
//! futures::executor::block_on(async {
//!     let (written, buf) = file.write_at(buf, 0).await;
//!     assert_eq!(written?, 4096);
//!     let (read, buf) = file.read_at(buf, 0).await;
//!     assert_eq!(read?, 4096);
//!     assert!(buf.iter().all(|&b| b == 7));
//!     Ok::<(), directfile::Error>(())
//! })?;
//! # std::fs::remove_file(&path).unwrap();
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod align;
mod buf;
mod driver;
mod durability;
mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod file;
mod op;
mod sync;
#[cfg(target_os = "linux")]
pub mod sys;
#[cfg(windows)]
#[path = "sys_windows.rs"]
pub mod sys;
mod wait;

pub use align::{Alignment, AlignmentSource};
pub use buf::{AlignedBuf, BufPool, GetBuf};
pub use driver::{
    io_uring_status, Backend, BackendChoice, Driver, DriverBuilder, Reactor, MAX_QUEUE_DEPTH,
};
pub use durability::SyncStrategy;
pub use error::{BufResult, Error, Result};
pub use file::{File, OpenOptions};

/// The crate README's example compiles and runs as a doc test (the workspace README carries
/// the same example: `tests/readme.rs` checks they match).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
