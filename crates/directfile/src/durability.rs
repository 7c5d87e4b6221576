//! How a write-through write becomes durable, per file system.
//!
//! `O_DSYNC` asks the kernel to complete a write only once its data is on stable storage. For a
//! direct write the file system keeps that promise in its own write path, and the asynchronous
//! path (io_uring, libaio) is a different one from `pwrite`'s:
//!
//! - **ext4, xfs, btrfs** go through iomap's direct I/O, which syncs an `O_DSYNC` write in its
//!   completion (`IOMAP_DIO_NEED_SYNC`, or a FUA write), asynchronous or not. Checked here, not
//!   only read: `scripts/dsync-probe.sh` counts the cache flushes a loop device receives for
//!   4 KiB io_uring `O_DSYNC` overwrites: one per write on ext4 and xfs, two on btrfs, none
//!   without `O_DSYNC` (docs/ARCHITECTURE.md has the table). btrfs only since Linux 6.1: from
//!   5.16 it synced a direct write only on its synchronous return, and io_uring's first,
//!   non-blocking attempt returns asynchronously (fixed by "btrfs: fix lost file sync on direct
//!   IO write with nowait and dsync iocb", 6.1, backported to some stable series, which a
//!   version number cannot tell); before 6.1 btrfs gets the explicit sync.
//! - **FUSE** sends `FUSE_FSYNC` after an `O_DSYNC` direct write only on its synchronous path;
//!   an asynchronous overwrite completes with `-EIOCBQUEUED` and no sync is ever sent (the
//!   `O_DSYNC` bit only rides in `FUSE_WRITE`'s flags, which a server may ignore). A power cut
//!   then loses acknowledged writes: `tests/durability.rs` shows it on a FUSE file system that
//!   keeps only what was synced.
//! - Network, stacked and other file systems were not checked, so they get the explicit sync.

/// How a write-through file's writes are made durable (see [`OpenOptions::sync_strategy`]
/// and [`File::sync_strategy`]).
///
/// [`OpenOptions::sync_strategy`]: crate::OpenOptions::sync_strategy
/// [`File::sync_strategy`]: crate::File::sync_strategy
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncStrategy {
    /// `O_DSYNC` alone: the file system makes each write durable before it completes it, on
    /// every path (ext4, xfs, btrfs). One operation per write.
    Dsync,
    /// `O_DSYNC` and, after each write, an explicit data sync; the write completes when the
    /// sync does. On io_uring a linked `WRITE` -> `FSYNC(DATASYNC)` pair (`IOSQE_IO_HARDLINK`,
    /// no allocation); on the thread pool `fdatasync(2)` after the `pwritev2(2)` (FUSE with
    /// `FOPEN_DIRECT_IO` sends no sync even for a synchronous `O_DSYNC` write). For file
    /// systems that may skip the sync (FUSE) or were not checked.
    ExplicitSync,
}

impl SyncStrategy {
    /// The strategy for a file on the file system with magic number `magic` (`statfs(2)`'s
    /// `f_type`), and why.
    ///
    /// ```
    /// use directfile::SyncStrategy;
    /// assert_eq!(SyncStrategy::for_file_system(0xef53).0, SyncStrategy::Dsync); // ext4
    /// assert_eq!(SyncStrategy::for_file_system(0x6573_5546).0, SyncStrategy::ExplicitSync); // FUSE
    /// ```
    pub fn for_file_system(magic: i64) -> (SyncStrategy, &'static str) {
        let btrfs_fixed = crate::sys::kernel_version().is_some_and(|v| v >= (6, 1));
        match crate::sys::fs_name(magic) {
            "btrfs" if !btrfs_fixed => (
                SyncStrategy::ExplicitSync,
                "btrfs before Linux 6.1 may skip the sync of an asynchronous O_DSYNC direct write",
            ),
            "ext4" | "xfs" | "btrfs" => (
                SyncStrategy::Dsync,
                "its direct I/O (iomap) syncs an O_DSYNC write before completing it, on the \
                 asynchronous path too (scripts/dsync-probe.sh)",
            ),
            "fuse" => (
                SyncStrategy::ExplicitSync,
                "FUSE sends no sync for an asynchronous O_DSYNC direct overwrite",
            ),
            _ => (
                SyncStrategy::ExplicitSync,
                "this file system's asynchronous O_DSYNC path was not checked",
            ),
        }
    }
}

impl std::fmt::Display for SyncStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncStrategy::Dsync => "O_DSYNC",
            SyncStrategy::ExplicitSync => "O_DSYNC + explicit data sync per write",
        })
    }
}
