//! The file API, on every driver, against real files on a real disk.

mod common;

use common::{drivers, scratch_dir, scratch_file};
use directfile::{Backend, BackendChoice, Driver, Error, OpenOptions};
use futures::executor::block_on;

#[test]
fn write_then_read_back() {
    for driver in drivers() {
        let file = scratch_file(&driver, "rw");
        let a = file.alignment().offset;
        let mut buf = file.alloc_buf(4 * a);
        for i in 0..4 * a {
            buf.extend_from_slice(&[(i % 251) as u8]);
        }
        block_on(async {
            let (n, buf) = file.write_at(buf, a as u64).await;
            assert_eq!(n.unwrap(), 4 * a, "{}", driver.backend());
            let mut back = file.alloc_buf(4 * a);
            back.set_len(4 * a);
            let (n, back) = file.read_at(back, a as u64).await;
            assert_eq!(n.unwrap(), 4 * a);
            assert_eq!(&back[..], &buf[..]);
        });
        assert_eq!(file.len().unwrap(), 5 * a as u64);
        assert_eq!(driver.in_flight(), 0);
    }
}

#[test]
fn read_at_end_of_file_is_short_not_an_error() {
    for driver in drivers() {
        let file = scratch_file(&driver, "eof");
        let a = file.alignment().offset;
        let mut buf = file.alloc_buf(a);
        buf.set_len(a);
        block_on(async {
            let (n, buf) = file.write_at(buf, 0).await;
            n.unwrap();
            let mut big = file.alloc_buf(4 * a);
            big.set_len(4 * a);
            let (n, big) = file.read_at(big, 0).await;
            assert_eq!(n.unwrap(), a, "short read at EOF on {}", driver.backend());
            assert_eq!(big.len(), a);
            let (n, past) = file.read_at(buf, 8 * a as u64).await;
            assert_eq!(n.unwrap(), 0);
            assert_eq!(past.len(), 0);
        });
    }
}

#[test]
fn vectored_write_is_one_operation_over_several_buffers() {
    for driver in drivers() {
        let file = scratch_file(&driver, "writev");
        let a = file.alignment().offset;
        let bufs: Vec<_> = (0..3u8)
            .map(|i| {
                let mut b = file.alloc_buf(a);
                b.extend_from_slice(&vec![i + 1; a]);
                b
            })
            .collect();
        block_on(async {
            let (n, bufs) = file.write_vectored_at(bufs, 0).await;
            assert_eq!(n.unwrap(), 3 * a);
            assert_eq!(bufs.len(), 3);
            let mut back = file.alloc_buf(3 * a);
            back.set_len(3 * a);
            let (_, back) = file.read_at(back, 0).await;
            for i in 0..3 {
                assert!(back[i * a..(i + 1) * a].iter().all(|&b| b == i as u8 + 1));
            }
        });
    }
}

#[test]
fn sync_allocate_and_set_len() {
    for driver in drivers() {
        let file = scratch_file(&driver, "meta");
        block_on(async {
            file.allocate(0, 1 << 20).await.unwrap();
            assert_eq!(file.len().unwrap(), 1 << 20);
            file.set_len(8192).await.unwrap();
            assert_eq!(file.len().unwrap(), 8192);
            file.sync_data().await.unwrap();
            file.sync_all().await.unwrap();
        });
    }
}

#[test]
fn misaligned_requests_are_refused_before_submission() {
    for driver in drivers() {
        let file = scratch_file(&driver, "misaligned");
        let a = file.alignment().offset;
        block_on(async {
            let mut buf = file.alloc_buf(a);
            buf.set_len(a);
            let (r, buf) = file.write_at(buf, 1).await;
            match r {
                Err(Error::Misaligned {
                    what: "offset",
                    value: 1,
                    required,
                }) => {
                    assert_eq!(required, a as u64)
                }
                other => panic!("expected misaligned offset, got {other:?}"),
            }
            let mut buf = buf;
            buf.set_len(a - 1);
            let (r, _buf) = file.write_at(buf, 0).await;
            let e = r.unwrap_err();
            assert!(matches!(e, Error::Misaligned { what: "length", .. }), "{e}");
            assert!(e
                .to_string()
                .contains("not a multiple of the file's direct-I/O alignment"));
            // An unaligned buffer address: AlignedBuf always honours its own alignment, so ask
            // for 1-byte alignment and keep allocating until the allocator hands out an
            // address that is not a multiple of the file's memory alignment.
            let required = file.alignment().memory;
            if required > 1 {
                let mut kept = Vec::new();
                let mut small = loop {
                    let mut b = directfile::AlignedBuf::new(a + 1, 1);
                    b.set_len(a);
                    if b.as_ptr() as usize % required != 0 {
                        break b;
                    }
                    kept.push(b);
                    assert!(
                        kept.len() < 1000,
                        "the allocator only returns aligned addresses"
                    );
                };
                small.set_len(a);
                let address = small.as_ptr() as u64;
                let (r, _) = file.write_at(small, 0).await;
                match r {
                    Err(Error::Misaligned {
                        what: "buffer address",
                        value,
                        required: req,
                    }) => {
                        assert_eq!((value, req), (address, required as u64))
                    }
                    other => panic!("expected a misaligned buffer address, got {other:?}"),
                }
            }
        });
        assert_eq!(driver.in_flight(), 0);
        assert_eq!(file.len().unwrap(), 0, "nothing reached the file");
    }
}

#[test]
fn write_to_read_only_file_is_refused_before_submission_and_returns_the_buffer() {
    for driver in drivers() {
        let path = scratch_file(&driver, "ro").path().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .driver(&driver)
            .open(&path)
            .unwrap();
        let mut buf = file.alloc_buf(4096);
        buf.extend_from_slice(&[1; 4096]);
        let (r, buf) = block_on(file.write_at(buf, 0));
        let err = r.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: cannot write: the file was opened read-only (OpenOptions::write(false))",
                path.display()
            )
        );
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        assert_eq!(buf.len(), 4096);
        assert_eq!(driver.in_flight(), 0, "nothing was submitted");
    }
}

/// `create` opens an existing file as it is, `truncate` empties it, `create_new` refuses it;
/// each makes a missing file (on Windows: `OPEN_ALWAYS`, then the end of file set to 0, and
/// `CREATE_NEW`).
#[test]
fn create_truncate_and_create_new_do_what_they_say() {
    for driver in drivers() {
        let dir = scratch_dir("dispositions");
        let path = dir.join("f");
        std::fs::write(&path, [3u8; 8192]).unwrap();
        let open = |configure: &dyn Fn(&mut OpenOptions) -> &mut OpenOptions| {
            let mut opts = OpenOptions::new();
            opts.read(true).write(true).driver(&driver);
            configure(&mut opts).open(&path)
        };
        let kept = open(&|o| o.create(true)).unwrap();
        assert_eq!(kept.len().unwrap(), 8192, "create keeps an existing file");
        drop(kept);
        let err = open(&|o| o.create_new(true)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        let emptied = open(&|o| o.truncate(true)).unwrap();
        assert_eq!(emptied.len().unwrap(), 0, "truncate empties it");
        drop(emptied);
        std::fs::remove_file(&path).unwrap();
        assert!(open(&|o| o.truncate(true)).is_err(), "no create: no file");
        assert!(!path.exists());
        open(&|o| o.create(true).truncate(true)).unwrap();
        std::fs::remove_file(&path).unwrap();
        let new = open(&|o| o.create_new(true)).unwrap();
        assert_eq!(new.len().unwrap(), 0);
    }
}

#[test]
fn second_locked_open_is_refused() {
    for driver in drivers() {
        let dir = scratch_dir("lock");
        let path = dir.join("f");
        let mut opts = OpenOptions::new();
        opts.read(true)
            .write(true)
            .create(true)
            .lock(true)
            .driver(&driver);
        let first = opts.open(&path).unwrap();
        let err = opts.open(&path).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(
            err.to_string().contains("locked by another handle"),
            "{err}"
        );
        drop(first);
        opts.open(&path).unwrap();
    }
}

#[cfg(target_os = "linux")]
#[test]
fn write_through_sets_o_dsync_not_o_sync() {
    let dir = scratch_dir("dsync");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .write_through(true)
        .open(dir.join("f"))
        .unwrap();
    let flags = directfile::sys::fdinfo_flags(file.as_raw_fd()).unwrap();
    assert_ne!(flags & libc::O_DSYNC, 0, "O_DSYNC set: {flags:o}");
    assert_eq!(
        flags & libc::O_SYNC,
        libc::O_DSYNC,
        "O_SYNC's extra bit is not set: {flags:o}"
    );
    assert_ne!(flags & libc::O_DIRECT, 0, "O_DIRECT set: {flags:o}");
}

#[cfg(target_os = "linux")]
#[test]
fn tmpfs_is_refused_with_the_path_and_the_remedy() {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("skipping: no /dev/shm (tmpfs) on this machine");
        return;
    }
    let path = shm.join(format!("directfile-test-{}", std::process::id()));
    let err = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .open(&path)
        .unwrap_err();
    assert!(
        !path.exists(),
        "the refused open left {} behind",
        path.display()
    );
    assert!(matches!(err, Error::DirectIoUnsupported { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("ext4") && msg.contains("direct(false)"),
        "{msg}"
    );
}

#[test]
fn closed_driver_refuses_new_operations() {
    for driver in drivers() {
        let file = scratch_file(&driver, "closed");
        driver.close();
        let mut buf = file.alloc_buf(4096);
        buf.set_len(4096);
        let (r, buf) = block_on(file.write_at(buf, 0));
        assert!(matches!(r, Err(Error::Closed)));
        assert_eq!(buf.len(), 4096);
        assert!(matches!(block_on(file.sync_data()), Err(Error::Closed)));
    }
}

#[test]
fn buffer_pool_is_registered_on_uring_and_used_on_both() {
    for driver in drivers() {
        let file = scratch_file(&driver, "pool");
        let pool = driver.buf_pool(4, 8192, 4096);
        assert_eq!(pool.is_registered(), driver.backend() == Backend::Uring);
        block_on(async {
            let mut buf = pool.get().await;
            buf.extend_from_slice(&[9; 8192]);
            let (n, buf) = file.write_at(buf, 0).await;
            assert_eq!(n.unwrap(), 8192);
            drop(buf);
            let mut back = pool.get().await;
            back.set_len(8192);
            let (n, back) = file.read_at(back, 0).await;
            assert_eq!(n.unwrap(), 8192);
            assert!(back.iter().all(|&b| b == 9));
        });
        assert_eq!(pool.available(), 4);
    }
}

#[test]
fn backend_reports_itself() {
    for driver in drivers() {
        assert!(!driver.backend_reason().is_empty());
        let name = driver.backend().to_string();
        assert!(
            ["uring", "threads", "iocp"].contains(&name.as_str()),
            "{name}"
        );
    }
}

/// Cooperative completions are on only where asked for and where the kernel has them; a
/// refusal is said in the backend's reason, and the thread pool ignores the option.
#[test]
fn cooperative_completions_are_reported() {
    let plain = Driver::builder()
        .backend(BackendChoice::Threads)
        .cooperative_completions(true)
        .build()
        .unwrap();
    assert!(!plain.cooperative_completions());
    let Ok(uring) = Driver::builder()
        .backend(BackendChoice::Uring)
        .cooperative_completions(true)
        .build()
    else {
        eprintln!("no io_uring here: only the thread pool checked");
        return;
    };
    let refused = uring
        .backend_reason()
        .contains("cooperative completions refused");
    assert_eq!(
        uring.cooperative_completions(),
        !refused,
        "{}",
        uring.backend_reason()
    );
    let default = Driver::builder()
        .backend(BackendChoice::Uring)
        .build()
        .unwrap();
    assert!(!default.cooperative_completions());
    assert!(!default.backend_reason().contains("cooperative"));
    // Files on the cooperative driver work (the suite's other tests run on it in full).
    let file = scratch_file(&uring, "coop-report");
    let unit = file.alignment().offset;
    let mut buf = file.alloc_buf(unit);
    buf.set_len(unit);
    buf.fill(7);
    let (n, _) = uring.block_on(file.write_at(buf, 0));
    assert_eq!(n.unwrap(), unit);
}

#[test]
fn sync_strategy_is_chosen_from_the_file_system_and_can_be_forced() {
    use directfile::SyncStrategy;
    for driver in drivers() {
        let dir = scratch_dir("strategy");
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).driver(&driver);
        let buffered_through = opts.open(dir.join("plain")).unwrap();
        assert_eq!(buffered_through.sync_strategy(), None, "not write-through");
        opts.write_through(true);
        let chosen = opts.open(dir.join("chosen")).unwrap();
        let (expected, file_system) = strategy_for_the_file_system_of(&chosen);
        assert_eq!(chosen.sync_strategy(), Some(expected), "on {file_system}");
        // Forced: an explicit data sync after every write (a linked write + fsync on io_uring),
        // for plain and vectored writes; the counts and the data are as without it.
        let file = opts
            .sync_strategy(SyncStrategy::ExplicitSync)
            .open(dir.join("explicit"))
            .unwrap();
        assert_eq!(file.sync_strategy(), Some(SyncStrategy::ExplicitSync));
        let a = file.alignment().offset;
        block_on(async {
            for round in 0..50u8 {
                let mut buf = file.alloc_buf(2 * a);
                buf.extend_from_slice(&vec![round; 2 * a]);
                let (n, _) = file
                    .write_at(buf, (round as usize % 8 * 2 * a) as u64)
                    .await;
                assert_eq!(n.unwrap(), 2 * a, "{}", driver.backend());
            }
            let bufs: Vec<_> = (0..3u8)
                .map(|i| {
                    let mut b = file.alloc_buf(a);
                    b.extend_from_slice(&vec![100 + i; a]);
                    b
                })
                .collect();
            let (n, _) = file.write_vectored_at(bufs, 0).await;
            assert_eq!(n.unwrap(), 3 * a);
            let mut back = file.alloc_buf(16 * a);
            back.set_len(16 * a);
            let (n, back) = file.read_at(back, 0).await;
            assert_eq!(n.unwrap(), 16 * a);
            assert!(back[..a].iter().all(|&b| b == 100));
            assert!(back[2 * a..3 * a].iter().all(|&b| b == 102));
            assert!(
                back[3 * a..4 * a].iter().all(|&b| b == 49),
                "round 49 at slot 1"
            );
        });
        assert_eq!(driver.in_flight(), 0);
    }
}

/// The strategy the file system of `file` calls for, and the file system's name.
#[cfg(target_os = "linux")]
fn strategy_for_the_file_system_of(file: &directfile::File) -> (directfile::SyncStrategy, String) {
    let (name, magic) = directfile::sys::fs_name_of(file.as_raw_fd()).unwrap();
    (
        directfile::SyncStrategy::for_file_system(magic).0,
        name.to_string(),
    )
}

/// The strategy the file system of `file` calls for, and the file system's name.
#[cfg(windows)]
fn strategy_for_the_file_system_of(file: &directfile::File) -> (directfile::SyncStrategy, String) {
    use std::os::windows::io::AsHandle;
    let name = directfile::sys::fs_name_of(file.as_handle()).unwrap();
    (
        directfile::SyncStrategy::for_file_system_name(&name).0,
        name,
    )
}

/// Dropping write-through writes with an explicit sync while they are in flight (on io_uring,
/// a linked pair: both halves are cancelled) frees every slot and returns every buffer.
#[test]
fn cancelled_explicit_sync_writes_release_their_slots_and_buffers() {
    for driver in drivers() {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .write_through(true)
            .sync_strategy(directfile::SyncStrategy::ExplicitSync)
            .driver(&driver)
            .open(scratch_dir("cancel-sync").join("f"))
            .unwrap();
        let pool = driver.buf_pool(16, 4096, 4096);
        block_on(async {
            for round in 0..20u64 {
                let mut futures = Vec::new();
                for i in 0..16u64 {
                    let mut buf = pool.get().await;
                    buf.set_len(4096);
                    let mut write = Box::pin(file.write_at(buf, (round * 16 + i) * 4096));
                    let _ = futures::poll!(write.as_mut());
                    futures.push(write);
                }
                drop(futures);
            }
        });
        common::wait_idle(&driver);
        assert_eq!(pool.available(), 16, "{}", driver.backend());
    }
}
