//! Injected faults (EIO, ENOSPC, EINTR, short transfers, late and reordered completions) reach
//! exactly the future they belong to, once, with its buffer; nothing leaks. Both drivers.
//!
//! `cargo test -p directfile --features fault-injection --test faults`

mod common;

use common::{drivers_with, scratch_file, wait_idle};
use directfile::fault::{Fault, FaultPlan};
use directfile::Error;
use std::time::Duration;

/// Three OS errors to inject: EIO, ENOSPC, EINTR (on Windows ERROR_IO_DEVICE, ERROR_DISK_FULL,
/// ERROR_SEM_TIMEOUT).
#[cfg(unix)]
const ERRORS: [i32; 3] = [libc::EIO, libc::ENOSPC, libc::EINTR];
#[cfg(windows)]
const ERRORS: [i32; 3] = [
    windows_sys::Win32::Foundation::ERROR_IO_DEVICE as i32,
    windows_sys::Win32::Foundation::ERROR_DISK_FULL as i32,
    windows_sys::Win32::Foundation::ERROR_SEM_TIMEOUT as i32,
];

#[test]
fn each_injected_fault_reaches_its_own_future_once() {
    let plan = || {
        FaultPlan::new()
            .at(3, Fault::Errno(ERRORS[0]))
            .at(5, Fault::Errno(ERRORS[1]))
            .at(7, Fault::Errno(ERRORS[2]))
            .at(9, Fault::Short)
    };
    for driver in drivers_with(|b| b.fault_plan(plan())) {
        let file = scratch_file(&driver, "faults");
        let pool = driver.buf_pool(2, 8192, 4096);
        futures::executor::block_on(async {
            for i in 0..12u64 {
                let mut buf = pool.get().await;
                buf.set_len(8192);
                let (r, buf) = file.write_at(buf, i * 8192).await;
                assert_eq!(buf.len(), 8192, "op {i}: buffer back");
                match (i, r) {
                    (3, Err(e)) => assert_eq!(e.raw_os_error(), Some(ERRORS[0]), "op 3: {e}"),
                    (5, Err(e)) => assert_eq!(e.raw_os_error(), Some(ERRORS[1]), "op 5: {e}"),
                    (7, Err(e)) => assert_eq!(e.raw_os_error(), Some(ERRORS[2]), "op 7: {e}"),
                    (9, Ok(n)) => assert_eq!(n, 4096, "op 9: short write"),
                    (_, Ok(n)) => assert_eq!(n, 8192, "op {i}"),
                    (i, Err(e)) => panic!("op {i}: unexpected {e} on {}", driver.backend()),
                }
            }
            // The sync is completion 12, which the plan leaves alone.
            file.sync_data().await.unwrap();
        });
        assert_eq!(driver.faults_injected(), 4);
        wait_idle(&driver);
        assert_eq!(pool.available(), 2);
    }
}

#[test]
fn late_reordered_completions_go_to_the_right_futures() {
    for driver in
        drivers_with(|b| b.fault_plan(FaultPlan::new().reorder(8).every(13, Fault::Short)))
    {
        let file = scratch_file(&driver, "faults");
        let unit = file.alignment().offset.max(512);
        // 64 concurrent writes of different lengths: a completion delivered to the wrong future
        // would show as a wrong byte count.
        let results =
            futures::executor::block_on(futures::future::join_all((0..64usize).map(|i| {
                let file = file.clone();
                async move {
                    let len = (1 + i % 8) * unit;
                    let mut buf = file.alloc_buf(len);
                    buf.set_len(len);
                    let (r, buf) = file.write_at(buf, (i * 8 * unit) as u64).await;
                    (len, r, buf.len())
                }
            })));
        let mut shorts = 0;
        for (len, r, back) in results {
            let n = r.unwrap();
            assert_eq!(back, len, "the buffer came back whole");
            if n != len {
                shorts += 1;
                assert_eq!(
                    n,
                    (len / 2) & !511,
                    "a short write reports half, not another op's count"
                );
            }
        }
        assert_eq!(shorts as u64, driver.faults_injected());
        wait_idle(&driver);
    }
}

#[test]
fn cancelled_operations_with_held_completions_free_their_slots() {
    for driver in drivers_with(|b| {
        b.spin(Duration::ZERO)
            .fault_plan(FaultPlan::new().reorder(4))
    }) {
        let file = scratch_file(&driver, "faults");
        let pool = driver.buf_pool(16, 4096, 4096);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        for i in 0..16u64 {
            let mut buf = pool.try_get().unwrap();
            buf.set_len(4096);
            let mut fut = Box::pin(file.write_at(buf, i * 4096));
            let _ = std::future::Future::poll(fut.as_mut(), &mut cx);
            drop(fut);
        }
        wait_idle(&driver);
        assert_eq!(pool.available(), 16);
        let err = futures::executor::block_on(async {
            driver.close();
            file.sync_data().await
        });
        assert!(matches!(err, Err(Error::Closed)));
    }
}

/// `write_all_at` goes on after short writes until everything is written; `read_exact_at`
/// after short reads.
#[test]
fn write_all_and_read_exact_continue_after_short_transfers() {
    // Completions 0 and 1 (the first two writes) and 3 (the first read) come back short.
    let plan = || {
        FaultPlan::new()
            .at(0, Fault::Short)
            .at(1, Fault::Short)
            .at(3, Fault::Short)
    };
    for driver in drivers_with(|b| b.fault_plan(plan())) {
        let file = scratch_file(&driver, "short");
        let mut buf = file.alloc_buf(64 << 10);
        for i in 0..(64 << 10) {
            buf.extend_from_slice(&[(i % 241) as u8]);
        }
        let expected = buf.to_vec();
        futures::executor::block_on(async {
            let (r, buf) = file.write_all_at(buf, 0).await;
            r.unwrap();
            assert_eq!(buf.len(), 64 << 10);
            let mut back = file.alloc_buf(64 << 10);
            back.set_len(64 << 10);
            let (r, back) = file.read_exact_at(back, 0).await;
            r.unwrap();
            assert_eq!(&back[..], &expected[..]);
        });
        assert_eq!(driver.faults_injected(), 3, "short transfers were injected");
        wait_idle(&driver);
    }
}

/// On a write-through file with the explicit sync (on io_uring a linked write + fsync pair),
/// faults reach the write's result: an error fails the operation, a short write is reported
/// short (and `write_all_at` goes on); the data ends up whole.
#[test]
fn faults_reach_the_write_of_an_explicitly_synced_write() {
    // Completion 0 (the first write, or its write half) fails with EIO; 2 comes back short.
    let plan = || {
        FaultPlan::new()
            .at(0, Fault::Errno(ERRORS[0]))
            .at(2, Fault::Short)
    };
    for driver in drivers_with(|b| b.fault_plan(plan())) {
        let file = directfile::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .write_through(true)
            .sync_strategy(directfile::SyncStrategy::ExplicitSync)
            .driver(&driver)
            .open(common::scratch_dir("faults-sync").join("f"))
            .unwrap();
        let mut buf = file.alloc_buf(16 << 10);
        buf.extend_from_slice(&[9u8; 16 << 10]);
        futures::executor::block_on(async {
            let (r, buf) = file.write_at(buf, 0).await;
            assert_eq!(
                r.unwrap_err().raw_os_error(),
                Some(ERRORS[0]),
                "{}",
                driver.backend()
            );
            let (r, buf) = file.write_all_at(buf, 0).await;
            r.unwrap();
            let mut back = file.alloc_buf(16 << 10);
            back.set_len(16 << 10);
            let (r, back) = file.read_exact_at(back, 0).await;
            r.unwrap();
            assert!(back.iter().all(|&b| b == 9));
            drop(buf);
        });
        assert!(driver.faults_injected() >= 2, "{}", driver.backend());
        wait_idle(&driver);
    }
}
