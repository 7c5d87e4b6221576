//! Bad input gets an error that names the problem (the path, the value, the mode) and leaves
//! nothing behind; `write_all_at` / `read_exact_at` for callers that must not see short
//! transfers. Every driver.

mod common;

use common::{drivers, scratch_dir, scratch_file};
use directfile::{Error, OpenOptions};
use futures::executor::block_on;
use std::io::ErrorKind;

#[test]
fn operations_the_file_was_not_opened_for_are_refused_naming_path_and_mode() {
    for driver in drivers() {
        let path = scratch_file(&driver, "modes").path().to_path_buf();
        let read_only = OpenOptions::new()
            .read(true)
            .driver(&driver)
            .open(&path)
            .unwrap();
        let expect = |err: Error, operation: &str, mode: &str| {
            assert_eq!(
                err.to_string(),
                format!(
                    "{}: cannot {operation}: the file was opened {mode}",
                    path.display()
                )
            );
            assert_eq!(err.kind(), ErrorKind::PermissionDenied);
            assert!(matches!(err, Error::NotOpenedFor { .. }));
        };
        let ro = "read-only (OpenOptions::write(false))";
        let mut buf = read_only.alloc_buf(4096);
        buf.set_len(4096);
        let (r, buf) = block_on(read_only.write_all_at(buf, 0));
        expect(r.unwrap_err(), "write", ro);
        let (r, bufs) = block_on(read_only.write_vectored_at(vec![buf], 0));
        expect(r.unwrap_err(), "write", ro);
        assert_eq!(bufs.len(), 1, "the buffers come back");
        expect(
            block_on(read_only.allocate(0, 4096)).unwrap_err(),
            "allocate",
            ro,
        );
        expect(
            block_on(read_only.set_len(0)).unwrap_err(),
            "set the length of",
            ro,
        );
        let write_only = OpenOptions::new()
            .write(true)
            .driver(&driver)
            .open(&path)
            .unwrap();
        let mut buf = write_only.alloc_buf(4096);
        buf.set_len(4096);
        let (r, buf) = block_on(write_only.read_at(buf, 0));
        expect(
            r.unwrap_err(),
            "read",
            "write-only (OpenOptions::read(false))",
        );
        let (r, _) = block_on(write_only.read_exact_at(buf, 0));
        expect(
            r.unwrap_err(),
            "read",
            "write-only (OpenOptions::read(false))",
        );
        assert_eq!(driver.in_flight(), 0, "nothing was submitted");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            0,
            "nothing written"
        );
    }
}

#[test]
fn creating_or_truncating_without_write_access_is_refused() {
    let dir = scratch_dir("create-ro");
    let path = dir.join("f");
    let err = OpenOptions::new()
        .read(true)
        .create(true)
        .open(&path)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        format!(
            "{}: creating or truncating a file needs write access (OpenOptions::write(true))",
            path.display()
        )
    );
    assert!(!path.exists());
}

#[cfg(target_os = "linux")]
#[test]
fn a_refused_tmpfs_open_creates_and_truncates_nothing() {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("skipping: no /dev/shm (tmpfs) on this machine");
        return;
    }
    let path = shm.join(format!("directfile-bad-input-{}", std::process::id()));
    for create_new in [false, true] {
        let err = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .create_new(create_new)
            .open(&path)
            .unwrap_err();
        assert!(matches!(err, Error::DirectIoUnsupported { .. }), "{err}");
        assert!(err.to_string().contains("tmpfs"), "{err}");
        assert!(!path.exists(), "the refused open left {}", path.display());
    }
    // An existing file there keeps its contents.
    std::fs::write(&path, b"keep me").unwrap();
    let err = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap_err();
    assert!(matches!(err, Error::DirectIoUnsupported { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_range_past_the_largest_file_offset_is_refused_naming_the_offset() {
    for driver in drivers() {
        let file = scratch_file(&driver, "overflow");
        let a = file.alignment().offset as u64;
        let mut buf = file.alloc_buf(4096);
        buf.set_len(4096);
        for offset in [u64::MAX - (u64::MAX % a) - a, (i64::MAX as u64) & !(a - 1)] {
            let (r, back) = block_on(file.write_at(buf, offset));
            buf = back;
            let err = r.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert_eq!(
                err.to_string(),
                format!(
                    "offset {offset} + length 4096 ends past the largest file offset {}",
                    i64::MAX
                )
            );
            let (r, back) = block_on(file.read_at(buf, offset));
            buf = back;
            assert!(r.unwrap_err().to_string().contains(&offset.to_string()));
        }
        let err = block_on(file.allocate(u64::MAX - 4095, 4096)).unwrap_err();
        assert!(
            err.to_string()
                .contains("ends past the largest file offset"),
            "{err}"
        );
        assert_eq!(driver.in_flight(), 0);
        assert_eq!(file.len().unwrap(), 0);
    }
}

#[test]
fn write_all_and_read_exact_move_everything_or_say_why() {
    for driver in drivers() {
        let file = scratch_file(&driver, "exact");
        let mut buf = file.alloc_buf(64 << 10);
        for i in 0..(64 << 10) {
            buf.extend_from_slice(&[(i % 253) as u8]);
        }
        let expected = buf.to_vec();
        block_on(async {
            let (r, buf) = file.write_all_at(buf, 8192).await;
            r.unwrap();
            assert_eq!(buf.len(), 64 << 10);
            let mut back = file.alloc_buf(64 << 10);
            back.set_len(64 << 10);
            let (r, back) = file.read_exact_at(back, 8192).await;
            r.unwrap();
            assert_eq!(&back[..], &expected[..]);
            // Past the end: an error naming where the file ends, with what was read.
            let mut tail = file.alloc_buf(16 << 10);
            tail.set_len(16 << 10);
            let end = 8192 + (64 << 10) as u64;
            let (r, tail) = file.read_exact_at(tail, end - 4096).await;
            let err = r.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
            assert_eq!(
                err.to_string(),
                format!(
                    "{}: the file ends at offset {end}, 4096 of the 16384 bytes asked at offset {}",
                    file.path().display(),
                    end - 4096
                )
            );
            assert_eq!(tail.len(), 4096, "the bytes that were read");
            assert_eq!(&tail[..], &expected[expected.len() - 4096..]);
        });
        assert_eq!(driver.in_flight(), 0);
    }
}

/// The OS errors of file I/O and the kinds they must have.
#[cfg(unix)]
const OS_ERROR_KINDS: [(i32, ErrorKind); 11] = [
    (libc::ENOSPC, ErrorKind::StorageFull),
    (libc::EDQUOT, ErrorKind::QuotaExceeded),
    (libc::EROFS, ErrorKind::ReadOnlyFilesystem),
    (libc::EFBIG, ErrorKind::FileTooLarge),
    (libc::EINVAL, ErrorKind::InvalidInput),
    (libc::ENOENT, ErrorKind::NotFound),
    (libc::EACCES, ErrorKind::PermissionDenied),
    (libc::EIO, ErrorKind::Other),
    (libc::EBADF, ErrorKind::PermissionDenied),
    (libc::EOPNOTSUPP, ErrorKind::Unsupported),
    (libc::EOVERFLOW, ErrorKind::InvalidInput),
];
/// The Win32 errors of file I/O and the kinds they must have.
#[cfg(windows)]
const OS_ERROR_KINDS: [(i32, ErrorKind); 14] = {
    use windows_sys::Win32::Foundation as w;
    [
        (w::ERROR_DISK_FULL as i32, ErrorKind::StorageFull),
        (w::ERROR_HANDLE_DISK_FULL as i32, ErrorKind::StorageFull),
        (
            w::ERROR_DISK_QUOTA_EXCEEDED as i32,
            ErrorKind::QuotaExceeded,
        ),
        (w::ERROR_WRITE_PROTECT as i32, ErrorKind::ReadOnlyFilesystem),
        (w::ERROR_FILE_TOO_LARGE as i32, ErrorKind::FileTooLarge),
        (w::ERROR_INVALID_PARAMETER as i32, ErrorKind::InvalidInput),
        (w::ERROR_FILE_NOT_FOUND as i32, ErrorKind::NotFound),
        (w::ERROR_ACCESS_DENIED as i32, ErrorKind::PermissionDenied),
        (w::ERROR_CRC as i32, ErrorKind::Other),
        (w::ERROR_IO_DEVICE as i32, ErrorKind::Other),
        (w::ERROR_NOT_SUPPORTED as i32, ErrorKind::Unsupported),
        (w::ERROR_INVALID_FUNCTION as i32, ErrorKind::Unsupported),
        (w::ERROR_HANDLE_EOF as i32, ErrorKind::UnexpectedEof),
        (w::ERROR_NEGATIVE_SEEK as i32, ErrorKind::InvalidInput),
    ]
};

#[test]
fn os_errors_map_to_kinds_a_caller_can_match() {
    for (errno, kind) in OS_ERROR_KINDS {
        let err = Error::Io(std::io::Error::from_raw_os_error(errno));
        assert_eq!(err.kind(), kind, "errno {errno}");
        assert_eq!(err.raw_os_error(), Some(errno), "the errno stays readable");
    }
    assert_eq!(
        Error::Canceled.kind(),
        ErrorKind::Other,
        "not retried as Interrupted"
    );
}

/// Unix only: creating a symbolic link on Windows needs a privilege tests do not have.
#[cfg(unix)]
#[test]
fn create_through_a_dangling_symlink_creates_the_target() {
    let dir = scratch_dir("symlink");
    let target = dir.join("target.dat");
    let link = dir.join("link.dat");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .open(&link)
        .unwrap();
    assert!(target.exists(), "the link's target was created");
    drop(file);
}

#[test]
fn a_failed_preallocation_leaves_no_file_it_created() {
    let dir = scratch_dir("prealloc");
    let path = dir.join("huge");
    let err = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .preallocate(1 << 60)
        .open(&path)
        .unwrap_err();
    // Wine reports an end of file its ftruncate(2) cannot set (EFBIG) as
    // ERROR_NOT_ENOUGH_MEMORY; Windows says ERROR_DISK_FULL.
    let wine_says_out_of_memory = under_wine() && err.kind() == ErrorKind::OutOfMemory;
    assert!(
        matches!(err.kind(), ErrorKind::StorageFull | ErrorKind::FileTooLarge)
            || wine_says_out_of_memory,
        "{err}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(!path.exists(), "the refused open left {}", path.display());
}

/// Whether this test runs under Wine (only ever on Windows).
fn under_wine() -> bool {
    #[cfg(windows)]
    return directfile::sys::is_wine();
    #[cfg(not(windows))]
    false
}

/// `u64::MAX` is the current position: `read_exact_at` on a FIFO goes on reading there after a
/// short read (it must not compute an offset), and `write_all_at` likewise. (Windows: a named
/// pipe, in `tests/windows.rs`.)
#[cfg(unix)]
#[test]
fn exact_transfers_at_the_current_position_continue_there() {
    for driver in drivers() {
        let path = scratch_dir("fifo-exact").join("fifo");
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let fifo = OpenOptions::new()
            .read(true)
            .write(true)
            .direct(false)
            .driver(&driver)
            .open(&path)
            .unwrap();
        let writer = std::thread::spawn({
            let path = path.clone();
            move || {
                use std::io::Write;
                let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                w.write_all(b"abc").unwrap();
                std::thread::sleep(std::time::Duration::from_millis(50));
                w.write_all(b"defgh").unwrap();
            }
        });
        let mut buf = fifo.alloc_buf(8);
        buf.set_len(8);
        let (r, buf) = block_on(fifo.read_exact_at(buf, u64::MAX));
        r.unwrap();
        assert_eq!(&buf[..], b"abcdefgh", "{}", driver.backend());
        writer.join().unwrap();
        let mut out = fifo.alloc_buf(5);
        out.extend_from_slice(b"12345");
        let (r, _) = block_on(fifo.write_all_at(out, u64::MAX));
        r.unwrap();
        let mut back = fifo.alloc_buf(5);
        back.set_len(5);
        let (r, back) = block_on(fifo.read_exact_at(back, u64::MAX));
        r.unwrap();
        assert_eq!(&back[..], b"12345");
    }
}
