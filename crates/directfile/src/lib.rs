//! Async, unbuffered (`O_DIRECT`), write-through (`O_DSYNC`) file I/O for Linux, on io_uring,
//! with a thread-pool backend where io_uring is missing or forbidden.
//!
//! This is the Linux form of a Windows file opened with `FILE_FLAG_NO_BUFFERING |
//! FILE_FLAG_WRITE_THROUGH | FILE_FLAG_OVERLAPPED` and bound to a completion port: every
//! positional operation is a future, completed by the kernel, that runs on any executor.
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
