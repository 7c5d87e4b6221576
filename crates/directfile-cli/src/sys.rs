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
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};
use std::time::Duration;

// The names the portable code uses; `sys_windows.rs` provides the same list for Windows:
// `OpenFlags`, `DIRECT`, `WRITE_THROUGH`, `DIRECT_REFUSED`, `DISK_FILE_SYSTEMS`, `write_at`,
// `read_at`, `write_all_at`, `cpu_times`, `remove_on_signal`, `forget_on_signal`,
// `handle_signals_on_thread`, `exit_now`, `run_in_own_session`.

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

/// The signals the CLI handles: Ctrl-C, `kill`, and the terminal going away.
const HANDLED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// A signal set holding [`HANDLED`].
fn handled_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: `set` is writable memory the size of a `sigset_t`; sigemptyset initialises it and
    // sigaddset only adds valid signal numbers to it.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for signal in HANDLED {
            libc::sigaddset(set.as_mut_ptr(), signal);
        }
        set.assume_init()
    }
}

/// Makes `handler` the action of every signal in [`HANDLED`]. The handler must make only
/// async-signal-safe calls.
fn install_handler(handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    for signal in HANDLED {
        let mut action = MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: a zeroed sigaction is a valid starting value (empty mask, no flags); its
        // handler is an `extern "C" fn(c_int)`, which the caller promises makes only
        // async-signal-safe calls.
        let rc = unsafe {
            let action_ptr = action.as_mut_ptr();
            (*action_ptr).sa_sigaction = handler as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut (*action_ptr).sa_mask);
            libc::sigaction(signal, action_ptr, ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
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
    // `remove_file_and_exit` only calls unlink(2) and _exit(2).
    install_handler(remove_file_and_exit)
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
    let set = handled_set();
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

/// The child [`run_in_own_session`] waits for, which its signal handler passes signals on to.
static SESSION_CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn pass_on(signal: libc::c_int) {
    let child = SESSION_CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill(2) is async-signal-safe. `child` names our own child: the parent has one
        // thread, so this handler runs between two steps of `run_in_own_session`, and that
        // clears `SESSION_CHILD` before it reaps the child (until then its pid stays ours, a
        // zombie at worst, so it names no other process).
        unsafe { libc::kill(child, signal) };
    }
}

/// Forks the rest of the command into a child that leads a session of its own, as fio does
/// for each of its jobs: with the kernel's autogroups on, the scheduler then gives the
/// measured process a group of its own rather than a share of the shell's, which on a busy
/// 2-vCPU machine is worth up to half of a QD1 write's latency (docs/BENCHMARKS.md,
/// "Sessions"), so a comparison with fio would otherwise measure the placement, not the I/O.
/// Returns `Ok(None)` in the child, which goes on with the command, and `Ok(Some(status))` in
/// the parent once the child has ended (its exit status, or 128 + the signal that ended it).
/// The parent passes SIGINT, SIGTERM and SIGHUP on to the child (which no longer has the
/// terminal), and the child dies with the parent (`PR_SET_PDEATHSIG`).
///
/// Refused (an error, nothing forked) unless the process has one thread: `fork` copies only
/// the calling one.
pub fn run_in_own_session() -> io::Result<Option<u8>> {
    // `fork` copies only the calling thread: with others running, the child's copy could hold a
    // lock one of them held (the allocator's, stdout's) forever. Refused rather than assumed.
    let threads = fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::other(format!(
            "the process has {threads} threads, and fork copies one"
        )));
    }
    let set = handled_set();
    let mut old = MaybeUninit::<libc::sigset_t>::zeroed();
    // Blocked across the fork, so a Ctrl-C before the parent's handler is in place waits for
    // it rather than killing the parent alone (the child starts with no pending signals).
    // SAFETY: `set` is initialised and `old` is writable memory for the previous mask.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, old.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: pthread_sigmask succeeded, so it wrote the previous mask.
    let old = unsafe { old.assume_init() };
    let restore = || {
        // SAFETY: `old` is the initialised mask pthread_sigmask returned.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut()) };
    };
    // SAFETY: getpid(2) has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the process has one thread (checked above; nothing here starts one), so the
    // child's copy holds no lock another thread held (the allocator's, stdout's) and may go on
    // running ordinary Rust code.
    let child = unsafe { libc::fork() };
    if child < 0 {
        let err = io::Error::last_os_error();
        restore();
        return Err(err);
    }
    if child == 0 {
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number; getppid and setsid have no
        // preconditions (setsid cannot fail in a fresh child: it leads no process group).
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                // The parent died before the line above: nobody would see our output.
                libc::_exit(128 + libc::SIGKILL);
            }
            libc::setsid();
        }
        restore();
        return Ok(None);
    }
    SESSION_CHILD.store(child, Ordering::SeqCst);
    // `pass_on` only calls kill(2). Should this fail, a signal still reaches the parent with
    // its default action, and the child dies with it (PR_SET_PDEATHSIG): nothing is lost but
    // the child's own clean-up, so the wait goes on regardless.
    if let Err(err) = install_handler(pass_on) {
        eprintln!("directfile: cannot pass signals on to the bench: {err}");
    }
    restore();
    // Wait for the child to end without reaping it, so that its pid cannot be reused while the
    // handler may still pass a signal on to it; then forget it, then reap it.
    loop {
        let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
        // SAFETY: `child` is our child, not yet reaped; `info` is writable memory the size of
        // a `siginfo_t`.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                child as libc::id_t,
                info.as_mut_ptr(),
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    SESSION_CHILD.store(0, Ordering::SeqCst);
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `child` is our child, ended and not yet reaped; `status` is writable.
        let rc = unsafe { libc::waitpid(child, &mut status, 0) };
        if rc == child {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok(Some(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as u8
    } else {
        (128 + libc::WTERMSIG(status)) as u8
    }))
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
