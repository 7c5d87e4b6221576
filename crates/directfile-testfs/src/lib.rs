//! A FUSE file system for tests that loses what was not synced: a device with a volatile
//! write cache, in memory.
//!
//! Every file has durable contents and size, and volatile ones on top. `write(2)`, `ftruncate(2)`
//! and `fallocate(2)` change only the volatile state; `fsync(2)` or `fdatasync(2)` of the file
//! (`FUSE_FSYNC`) makes its contents and size durable; `close(2)` makes nothing durable.
//! Directory entries (create, mknod, mkdir, unlink, rmdir, rename) are volatile until the
//! directory is synced (`FUSE_FSYNCDIR`). That is all POSIX promises, and all this file system
//! keeps: [`Mount::power_cut`] freezes the durable state, aborts the connection and unmounts,
//! and [`Image::mount`] mounts what survived.
//!
//! It is an ordinary FUSE file system from the kernel's side: files open without
//! `FOPEN_DIRECT_IO`, so an `O_DIRECT` open takes the kernel's direct-I/O path, and it asks
//! for asynchronous direct I/O (`FUSE_ASYNC_DIO`) as libfuse does by default. On that path an
//! `O_DSYNC` direct write submitted asynchronously (io_uring, libaio) that does not extend the
//! file is queued, and the kernel sends no `FUSE_FSYNC` for it: only the `O_DSYNC` bit rides in
//! `FUSE_WRITE`'s flags, which this file system, like many servers, ignores
//! ([`Options::durable_dsync_writes`] honours it instead). A synchronous `pwrite(2)` with
//! `O_DSYNC`, or a write that extends the file, is followed by a `FUSE_FSYNC`.
//!
//! ```
//! use directfile_testfs::{unavailable_reason, Mount};
//! use std::io::Write;
//!
//! # fn main() -> std::io::Result<()> {
//! if let Some(reason) = unavailable_reason() {
//!     eprintln!("skipped: {reason}"); // never pass silently
//!     return Ok(());
//! }
//! # let target = std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from)
//! #     .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
//! let dir = target.join(format!("testfs-doc-{}", std::process::id())); // the mount point
//! let mount = Mount::new(&dir)?;
//! let mut file = std::fs::File::create(mount.path().join("a"))?;
//! file.write_all(b"synced")?;
//! file.sync_all()?;                                     // FUSE_FSYNC: contents durable
//! std::fs::File::open(mount.path())?.sync_all()?;       // FUSE_FSYNCDIR: the entry durable
//! file.write_all(b", then lost")?;                      // volatile
//! assert_eq!(mount.fsync_count(), 1);
//! drop(file);
//! let image = mount.power_cut();
//! let mount = image.mount(&dir)?;                       // recovery
//! assert_eq!(std::fs::read(mount.path().join("a"))?, b"synced");
//! # drop(mount);
//! # std::fs::remove_dir(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! What it does not model: torn or reordered writes within a sync interval (a write is kept
//! whole or lost whole, per file, at its file's next sync), allocation and `ENOSPC`, attributes
//! other than size (mode, owner and times apply at once and survive), hard links, symlinks,
//! special files, extended attributes, and permission checks. Locks (`flock(2)`, POSIX locks)
//! are the kernel's: it does not claim them. Inodes unlinked while the file system is mounted
//! stay in memory until the next power cut.
//!
//! Linux only; mounting needs root (or `CAP_SYS_ADMIN`) and `/dev/fuse`, without `fusermount`.
#![cfg(target_os = "linux")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod fs;
mod model;
mod mount;

pub use mount::{unavailable_reason, Image, Mount, FS_TYPE, REQUIRE_ENV};

/// How a [`Mount`] behaves towards the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Ask the kernel for asynchronous direct I/O (`FUSE_ASYNC_DIO`), as libfuse does by
    /// default (`true`). With it, an io_uring `O_DSYNC` overwrite gets no `FUSE_FSYNC`; without
    /// it (the `fuser` crate's default), the kernel waits for every direct write and syncs
    /// each `O_DSYNC` one.
    pub async_direct_io: bool,
    /// Make a `FUSE_WRITE` durable at once when its flags carry `O_DSYNC` (`false`): a server
    /// that honours the bit, as some do.
    pub durable_dsync_writes: bool,
    /// Open files with `FOPEN_DIRECT_IO` (`false`), as libfuse's `direct_io` option does: the
    /// kernel then takes `fuse_direct_write_iter` for every write, whose synchronous path
    /// sends no `FUSE_FSYNC` for an `O_DSYNC` write either.
    pub direct_io_open: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            async_direct_io: true,
            durable_dsync_writes: false,
            direct_io_open: false,
        }
    }
}

/// Requests a [`Mount`] has served (requests failed after the power cut are not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// `FUSE_FSYNC` (each made its file's contents and size durable).
    pub fsync_count: u64,
    /// Of those, the ones with the datasync flag (`fdatasync(2)`, `O_DSYNC`).
    pub fdatasync_count: u64,
    /// `FUSE_FSYNCDIR` (each made its directory's entries durable).
    pub fsyncdir_count: u64,
    /// `FUSE_WRITE`.
    pub write_count: u64,
    /// Of those, the ones whose flags carry `O_DSYNC`.
    pub write_dsync_count: u64,
    /// Bytes written by `FUSE_WRITE`.
    pub write_bytes: u64,
    /// `FUSE_FLUSH` (each `close(2)` of a descriptor); they make nothing durable.
    pub flush_count: u64,
    /// `FUSE_FALLOCATE`.
    pub fallocate_count: u64,
    /// `FUSE_SETATTR` with a size (truncate).
    pub truncate_count: u64,
}
