//! Thin, checked wrappers over the Linux syscalls the library makes outside the drivers.
//!
//! Every function here returns `io::Result` with the errno of the failing call; callers turn
//! errors into the crate's [`Error`](crate::Error) where they know more (the path, the remedy).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `open(2)` with `O_CLOEXEC` added.
pub(crate) fn open(path: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    loop {
        // SAFETY: `cpath` is a valid NUL-terminated string that outlives the call.
        let fd = unsafe { libc::open(cpath.as_ptr(), flags | libc::O_CLOEXEC, mode) };
        if fd >= 0 {
            // SAFETY: `fd` was just returned by open(2), so we own it and nobody else closes it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// `open(2)` with `O_CREAT`, telling whether this call created the file: first with
/// `O_EXCL`, then, if the file exists, without `O_CREAT` (again if it vanished in between).
/// A dangling symbolic link fails `O_EXCL` (the link exists) and the plain open (its target
/// does not): it is opened with `O_CREAT` alone, which creates the target, reported as not
/// created by this call (nothing proves it was). So is a path that keeps vanishing and
/// reappearing, after a few tries.
pub(crate) fn open_or_create(path: &Path, flags: i32, mode: u32) -> io::Result<(OwnedFd, bool)> {
    for _ in 0..8 {
        match open(path, flags | libc::O_CREAT | libc::O_EXCL, mode) {
            Ok(fd) => return Ok((fd, true)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        match open(path, flags, mode) {
            Ok(fd) => return Ok((fd, false)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        if path
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            break;
        }
    }
    open(path, flags | libc::O_CREAT, mode).map(|fd| (fd, false))
}

/// `statfs(2)` on `path`, or on its directory when it does not exist: the magic number of the
/// file system a file there is (or would be) on.
pub(crate) fn path_fs_magic(path: &Path) -> io::Result<i64> {
    let target = if path.symlink_metadata().is_ok() {
        path
    } else {
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        }
    };
    let cpath = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `cpath` is a valid NUL-terminated string and `st` a writable `statfs`, both
    // outliving the call.
    check(unsafe { libc::statfs(cpath.as_ptr(), &mut st) })?;
    Ok(st.f_type as i64)
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `flock(fd, LOCK_EX | LOCK_NB)`.
pub(crate) fn flock_exclusive(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: flock only reads the descriptor number, which `fd` keeps open.
    check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }).map(|_| ())
}

/// `fallocate(fd, mode, offset, len)`, retried on EINTR.
pub(crate) fn fallocate(fd: RawFd, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    loop {
        // SAFETY: plain syscall on a descriptor number; no memory is passed.
        let ret = unsafe { libc::fallocate(fd, mode, offset as i64, len as i64) };
        match check(ret) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other.map(|_| ()),
        }
    }
}

/// `ftruncate(2)`, retried on EINTR.
pub(crate) fn ftruncate(fd: RawFd, len: u64) -> io::Result<()> {
    loop {
        // SAFETY: plain syscall on a descriptor number; no memory is passed.
        match check(unsafe { libc::ftruncate(fd, len as i64) }) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other.map(|_| ()),
        }
    }
}

/// `fstat(2)`.
pub(crate) fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `stat` for the kernel to fill.
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// `fstatfs(2)`: the file system's magic number.
pub(crate) fn fs_magic(fd: RawFd) -> io::Result<i64> {
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `statfs` for the kernel to fill.
    check(unsafe { libc::fstatfs(fd, &mut st) })?;
    Ok(st.f_type as i64)
}

/// The `STATX_DIOALIGN` mask bit (Linux 6.1).
pub(crate) const STATX_DIOALIGN: u32 = 0x0000_2000;

/// What `statx(STATX_DIOALIGN)` says: `Some((memory, offset))` when the file system reports
/// direct-I/O alignment (`(0, 0)` means it does not support direct I/O on this file), `None`
/// when the kernel or file system does not report it.
pub(crate) fn statx_dioalign(fd: RawFd) -> io::Result<Option<(u32, u32)>> {
    // SAFETY: an all-zero `statx` is a valid value of this plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a valid empty C string, `stx` is writable; AT_EMPTY_PATH makes the
    // call describe `fd` itself.
    let ret = unsafe {
        libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            STATX_DIOALIGN,
            &mut stx,
        )
    };
    check(ret)?;
    if stx.stx_mask & STATX_DIOALIGN == 0 {
        return Ok(None);
    }
    Ok(Some((stx.stx_dio_mem_align, stx.stx_dio_offset_align)))
}

/// The logical block size of the block device holding the file, from sysfs
/// (`/sys/dev/block/MAJ:MIN/queue/logical_block_size`, or the parent's for a partition).
pub(crate) fn device_logical_block_size(st: &libc::stat) -> Option<u32> {
    let (major, minor) = (libc::major(st.st_dev), libc::minor(st.st_dev));
    device_queue_attr(major, minor, "logical_block_size").and_then(|s| s.trim().parse().ok())
}

/// Reads `queue/<attr>` of the block device `major:minor`, following a partition to its disk.
pub(crate) fn device_queue_attr(major: u32, minor: u32, attr: &str) -> Option<String> {
    let base = format!("/sys/dev/block/{major}:{minor}");
    std::fs::read_to_string(format!("{base}/queue/{attr}"))
        .or_else(|_| std::fs::read_to_string(format!("{base}/../queue/{attr}")))
        .ok()
}

/// The open flags of `fd` as the kernel reports them in `/proc/self/fdinfo` (octal).
pub fn fdinfo_flags(fd: RawFd) -> io::Result<i32> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| i32::from_str_radix(v.trim(), 8).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no flags line in fdinfo"))
}

/// File systems that accept O_DIRECT opens but serve them from the page cache: we refuse them,
/// because a "direct" file there would silently be buffered.
pub(crate) fn buffered_only_fs_name(magic: i64) -> Option<&'static str> {
    match magic {
        0x0102_1994 => Some("tmpfs"),
        0x8584_58f6 => Some("ramfs"),
        0x6265_6572 => Some("sysfs"),
        0x9fa0 => Some("procfs"),
        _ => None,
    }
}

/// The running kernel's version, `(major, minor)` from `uname(2)`'s release ("6.18.44-..."),
/// read once.
pub fn kernel_version() -> Option<(u32, u32)> {
    static VERSION: std::sync::OnceLock<Option<(u32, u32)>> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        // SAFETY: an all-zero `utsname` is a valid value of this plain C struct.
        let mut name: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: `name` is a valid, writable `utsname` for the kernel to fill.
        if unsafe { libc::uname(&mut name) } != 0 {
            return None;
        }
        // SAFETY: uname NUL-terminates `release` inside the array.
        let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) };
        parse_kernel_version(release.to_str().ok()?)
    })
}

/// `(major, minor)` of a kernel release string such as "6.18.44-fc-v1098".
fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The file system `fd` is on: its name (as [`fs_name`]) and magic number (`fstatfs(2)`).
///
/// # Errors
/// The OS error of `fstatfs`.
pub fn fs_name_of(fd: RawFd) -> io::Result<(&'static str, i64)> {
    let magic = fs_magic(fd)?;
    Ok((fs_name(magic), magic))
}

/// A human name for common file system magic numbers (for messages and `probe`).
pub fn fs_name(magic: i64) -> &'static str {
    match magic {
        0xef53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x2fc1_2fc1 => "zfs",
        0x6969 => "nfs",
        0x794c_7630 => "overlayfs",
        0x6573_5546 => "fuse",
        0xf2f5_2010 => "f2fs",
        0x0102_1994 => "tmpfs",
        0x8584_58f6 => "ramfs",
        _ => "unknown",
    }
}

/// `eventfd(2)`, non-blocking, close-on-exec, counter 0: the signal io_uring raises on each
/// batch of completions once it is registered with the ring (`IORING_REGISTER_EVENTFD`).
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by eventfd(2), so we own it and nobody else closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// The names the portable code uses; `sys_windows.rs` provides the same list for Windows.

/// An open file as the drivers hold it: a descriptor.
pub(crate) type OwnedHandle = OwnedFd;
/// What a submission carries: the descriptor's number.
pub(crate) type RawHandle = RawFd;
/// The "no file" value of a free slot.
pub(crate) const NO_HANDLE: RawHandle = -1;
/// One buffer of a vectored write, as `pwritev2(2)` and `IORING_OP_WRITEV` take it.
pub(crate) type IoVec = libc::iovec;
/// The OS error code of an operation cancelled before it completed (`ECANCELED`).
pub(crate) const CANCELED: i32 = libc::ECANCELED;

/// The raw descriptor of `handle`.
pub(crate) fn raw(handle: &OwnedHandle) -> RawHandle {
    handle.as_raw_fd()
}

/// The iovec of `len` bytes at `ptr`.
pub(crate) fn io_vec(ptr: *mut u8, len: usize) -> IoVec {
    libc::iovec {
        iov_base: ptr.cast(),
        iov_len: len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v1098"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_kernel_version("junk"), None);
        assert!(kernel_version().is_some());
    }
}
