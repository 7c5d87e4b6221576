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
//!
//! On Windows the write-through bit is `FILE_FLAG_WRITE_THROUGH`. With `FILE_FLAG_NO_BUFFERING`
//! too, Microsoft documents (`CreateFileW`, "Caching behavior") that the data goes to the disk
//! without the system cache and that the system asks the disk to write through its own cache
//! to persistent media: a promise of the API, for overlapped writes as for synchronous ones.
//! It is taken as `SyncStrategy::Dsync` on NTFS and ReFS; every other file system (FAT,
//! exFAT, network redirectors, third-party drivers) gets the explicit sync (`FlushFileBuffers`
//! after each write), as on Linux for what was not checked. Nothing here observed a Windows
//! disk's flushes; only real Windows can (`PLATFORMS.md`).

/// How a write-through file's writes are made durable (see [`OpenOptions::sync_strategy`]
/// and [`File::sync_strategy`]).
///
/// [`OpenOptions::sync_strategy`]: crate::OpenOptions::sync_strategy
/// [`File::sync_strategy`]: crate::File::sync_strategy
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncStrategy {
    /// `O_DSYNC` alone: the file system makes each write durable before it completes it, on
    /// every path (ext4, xfs, btrfs). One operation per write. On Windows:
    /// `FILE_FLAG_WRITE_THROUGH` alone (NTFS, ReFS).
    Dsync,
    /// `O_DSYNC` and, after each write, an explicit data sync; the write completes when the
    /// sync does. On io_uring a linked `WRITE` -> `FSYNC(DATASYNC)` pair (`IOSQE_IO_HARDLINK`,
    /// no allocation); on the thread pool `fdatasync(2)` after the `pwritev2(2)` (FUSE with
    /// `FOPEN_DIRECT_IO` sends no sync even for a synchronous `O_DSYNC` write). For file
    /// systems that may skip the sync (FUSE) or were not checked. On Windows:
    /// `FILE_FLAG_WRITE_THROUGH` and `FlushFileBuffers` after each write, on a worker thread
    /// (both drivers), the write completing when the flush does.
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
    #[cfg(target_os = "linux")]
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

    /// The strategy for a file on the Windows file system named `name` (as
    /// `GetVolumeInformationByHandleW` names it: `NTFS`, `ReFS`, `FAT32`...), and why.
    ///
    /// ```
    /// use directfile::SyncStrategy;
    /// assert_eq!(SyncStrategy::for_file_system_name("NTFS").0, SyncStrategy::Dsync);
    /// assert_eq!(SyncStrategy::for_file_system_name("exFAT").0, SyncStrategy::ExplicitSync);
    /// ```
    #[cfg(windows)]
    pub fn for_file_system_name(name: &str) -> (SyncStrategy, &'static str) {
        if name.eq_ignore_ascii_case("NTFS") || name.eq_ignore_ascii_case("ReFS") {
            (
                SyncStrategy::Dsync,
                "Microsoft documents that a FILE_FLAG_WRITE_THROUGH write without the system \
                 cache (FILE_FLAG_NO_BUFFERING) asks the disk to write through its own cache",
            )
        } else {
            (
                SyncStrategy::ExplicitSync,
                "this file system's write-through path was not checked",
            )
        }
    }
}

impl std::fmt::Display for SyncStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[cfg(unix)]
        let (dsync, explicit) = ("O_DSYNC", "O_DSYNC + explicit data sync per write");
        #[cfg(windows)]
        let (dsync, explicit) = (
            "FILE_FLAG_WRITE_THROUGH",
            "FILE_FLAG_WRITE_THROUGH + FlushFileBuffers per write",
        );
        f.write_str(match self {
            SyncStrategy::Dsync => dsync,
            SyncStrategy::ExplicitSync => explicit,
        })
    }
}
