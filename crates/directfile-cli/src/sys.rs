//! The few libc calls the CLI makes: statfs(2), statx(2) with STATX_DIOALIGN, getrusage(2), and
//! signal handling that removes the bench's temporary file or directory on Ctrl-C. All of the CLI's `unsafe`
//! for system calls is here. (Windows: `sys_windows.rs`, with the names the portable code uses.)
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

// The names the portable code uses; `sys_windows.rs` provides the same list for Windows:
// `OpenFlags`, `DIRECT`, `WRITE_THROUGH`, `DIRECT_REFUSED`, `DISK_FILE_SYSTEMS`, `write_at`,
// `read_at`, `write_all_at`, `cpu_times`, `remove_on_signal`, `forget_on_signal`,
// `handle_signals_on_thread`, `exit_now`.

/// `open(2)` flags, as `OpenOptionsExt::custom_flags` takes them.
pub type OpenFlags = i32;
/// Unbuffered I/O: `O_DIRECT`.
pub const DIRECT: OpenFlags = libc::O_DIRECT;
/// Write-through: `O_DSYNC`.
pub const WRITE_THROUGH: OpenFlags = libc::O_DSYNC;
/// The error of an open a file system refuses for [`DIRECT`] (`EINVAL`).
pub const DIRECT_REFUSED: i32 = libc::EINVAL;
/// The file systems to suggest when one refuses direct I/O.
pub const DISK_FILE_SYSTEMS: &str = "ext4, xfs or btrfs";

/// `pwrite(2)`: writes `buf` at `offset`; returns the bytes written.
#[inline]
pub fn write_at(file: &fs::File, buf: &[u8], offset: u64) -> io::Result<usize> {
    file.write_at(buf, offset)
}

/// `pread(2)`: reads into `buf` at `offset`; returns the bytes read.
#[inline]
pub fn read_at(file: &fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    file.read_at(buf, offset)
}

/// Writes all of `buf` at `offset` (`pwrite(2)` until done).
pub fn write_all_at(file: &fs::File, buf: &[u8], offset: u64) -> io::Result<()> {
    file.write_all_at(buf, offset)
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {} contains a NUL byte", path.display()),
        )
    })
}

/// `statfs(2)`: the file system's magic number (`f_type`), e.g. `TMPFS_MAGIC`.
pub fn file_system_magic(path: &Path) -> io::Result<u64> {
    let c_path = c_path(path)?;
    let mut buf = MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string and `buf` points to writable memory the
    // size of `struct statfs`, which is all statfs(2) writes.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs returned 0, so it filled the whole struct (and it was zeroed before).
    let stat = unsafe { buf.assume_init() };
    // f_type is a signed word on some targets; the magic numbers are all positive 32-bit.
    Ok(stat.f_type as u64 & 0xffff_ffff)
}

/// Direct-I/O alignment reported by `statx(2)` with `STATX_DIOALIGN` (Linux 6.1+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DioAlign {
    /// `stx_dio_mem_align`: required alignment of the user buffer, in bytes.
    pub memory: u32,
    /// `stx_dio_offset_align`: required alignment of file offsets and lengths, in bytes.
    pub offset: u32,
}

/// `statx(2)` with `STATX_DIOALIGN`: `Ok(None)` when the kernel or file system does not report
/// it, or reports 0 (direct I/O unsupported on this file).
pub fn statx_dio_align(path: &Path) -> io::Result<Option<DioAlign>> {
    let c_path = c_path(path)?;
    let mut buf = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `c_path` is NUL-terminated, AT_FDCWD makes it relative to the working directory,
    // and `buf` is writable memory the size of `struct statx`.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            0,
            libc::STATX_DIOALIGN,
            buf.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statx returned 0 and the struct was zeroed before the call, so every field holds
    // either what the kernel wrote or zero.
    let stat = unsafe { buf.assume_init() };
    if stat.stx_mask & libc::STATX_DIOALIGN == 0 || stat.stx_dio_offset_align == 0 {
        return Ok(None);
    }
    Ok(Some(DioAlign {
        memory: stat.stx_dio_mem_align,
        offset: stat.stx_dio_offset_align,
    }))
}

/// User and system CPU time of the whole process (all threads) so far, from `getrusage(2)`.
pub fn cpu_times() -> (Duration, Duration) {
    let mut usage = MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is writable memory the size of `struct rusage`; RUSAGE_SELF is valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    // SAFETY: getrusage returned 0, so it filled the struct (zeroed before the call).
    let usage = unsafe { usage.assume_init() };
    let to_duration = |time: libc::timeval| {
        Duration::from_secs(time.tv_sec as u64) + Duration::from_micros(time.tv_usec as u64)
    };
    (to_duration(usage.ru_utime), to_duration(usage.ru_stime))
}

/// The path the signal handler unlinks: a leaked `CString`, or null.
static CLEANUP_PATH: AtomicPtr<libc::c_char> = AtomicPtr::new(ptr::null_mut());

extern "C" fn remove_file_and_exit(signal: libc::c_int) {
    let path = CLEANUP_PATH.swap(ptr::null_mut(), Ordering::SeqCst);
    if !path.is_null() {
        // SAFETY: `path` came from `CString::into_raw` in `remove_on_signal` and is never freed,
        // so it is a valid NUL-terminated string; unlink(2) is async-signal-safe.
        unsafe { libc::unlink(path) };
    }
    // SAFETY: _exit(2) is async-signal-safe and never returns; 128 + signal is the shell's
    // convention for "killed by signal".
    unsafe { libc::_exit(128 + signal) }
}

/// Makes SIGINT, SIGTERM and SIGHUP remove `path` and exit, until [`forget_on_signal`] is called.
pub fn remove_on_signal(path: &Path) -> io::Result<()> {
    let raw = c_path(path)?.into_raw();
    // The previous path (if any) is leaked on purpose: the handler may be reading it right now.
    CLEANUP_PATH.store(raw, Ordering::SeqCst);
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let mut action = MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: a zeroed sigaction is a valid starting value (empty mask, no flags); we set the
        // handler to an `extern "C" fn(c_int)` that only makes async-signal-safe calls.
        let rc = unsafe {
            let action_ptr = action.as_mut_ptr();
            (*action_ptr).sa_sigaction = remove_file_and_exit as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut (*action_ptr).sa_mask);
            libc::sigaction(signal, action_ptr, ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Stops removing the path registered by [`remove_on_signal`] (the caller removes it itself).
pub fn forget_on_signal() {
    // Leaked rather than freed: a handler running on another thread may hold the pointer.
    CLEANUP_PATH.store(ptr::null_mut(), Ordering::SeqCst);
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread, and so in every thread it starts
/// afterwards, and runs `handler(signal)` on a thread of its own when one of them arrives; the
/// handler may do anything (allocate, remove a directory tree) since it is not a signal handler.
/// Call it before the process starts other threads: a thread started earlier keeps the default
/// action (the process dies without running `handler`).
pub fn handle_signals_on_thread(
    handler: impl FnOnce(libc::c_int) + Send + 'static,
) -> io::Result<()> {
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: `set` is writable memory the size of a `sigset_t`; sigemptyset initialises it and
    // sigaddset only adds valid signal numbers to it.
    let set = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(set.as_mut_ptr(), signal);
        }
        set.assume_init()
    };
    // SAFETY: `set` is an initialised signal set; the old mask is not wanted (null).
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    std::thread::Builder::new()
        .name("signal-cleanup".to_string())
        .spawn(move || {
            let mut signal: libc::c_int = 0;
            // SAFETY: `set` is an initialised signal set whose signals are blocked in every
            // thread of the process, as sigwait(3) requires; `signal` is writable.
            let rc = unsafe { libc::sigwait(&set, &mut signal) };
            if rc == 0 {
                handler(signal);
            }
        })?;
    Ok(())
}

/// Ends the process at once with `status` (no destructors, no atexit handlers): for a signal
/// handler thread while other threads still run.
pub fn exit_now(status: libc::c_int) -> ! {
    // SAFETY: _exit(2) takes any status and never returns.
    unsafe { libc::_exit(status) }
}

/// Splits a `dev_t` into (major, minor) as glibc's `gnu_dev_major`/`gnu_dev_minor` do.
pub fn dev_major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// The name of a file system from its statfs magic number, for the ones people run on.
pub fn file_system_name(magic: u64) -> Option<&'static str> {
    Some(match magic {
        0xef53 => "ext2/ext3/ext4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x0102_1994 => "tmpfs",
        0x8584_58f6 => "ramfs",
        0x794c_7630 => "overlayfs",
        0x2fc1_2fc1 => "zfs",
        0xf2f5_2010 => "f2fs",
        0x6969 => "nfs",
        0xff53_4d42 => "cifs",
        0x6573_5546 => "fuse",
        0x4d44 => "vfat",
        0x5346_544e => "ntfs",
        0x2011_bab0 => "exfat",
        0xca45_1a4e => "bcachefs",
        0x0102_1997 => "9p",
        _ => return None,
    })
}

pub const TMPFS_MAGIC: u64 = 0x0102_1994;
pub const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// Whether `magic` is a memory file system, where O_DIRECT means nothing.
pub fn is_memory_file_system(magic: u64) -> bool {
    magic == TMPFS_MAGIC || magic == RAMFS_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_minor_split() {
        // 8:1 (sda1) encoded the classic way, and 259:3 (nvme) which uses the high bits.
        assert_eq!(dev_major_minor(0x0801), (8, 1));
        assert_eq!(dev_major_minor((259 << 8) | 3), (259, 3));
        assert_eq!(dev_major_minor((1 << 20) | 0x0800), (8, 256));
    }

    #[test]
    fn cpu_times_advance() {
        let (user_before, _) = cpu_times();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let (user_after, _) = cpu_times();
        assert!(
            user_after > user_before,
            "{user_before:?} -> {user_after:?}"
        );
    }

    #[test]
    fn statfs_of_current_directory() {
        let magic = file_system_magic(Path::new(".")).unwrap();
        assert_ne!(magic, 0);
        assert!(file_system_magic(Path::new("/no/such/dir")).is_err());
    }
}
