//! Soak: many operations at queue depth 256 with random cancellations. Resident memory stays
//! flat after warm-up (within 1 MiB), the slot table ends empty, no descriptor leaks.
//!
//! CI runs 200,000 operations per driver; the full soak is
//! `SOAK_OPS=10000000 cargo test -p directfile --release --test soak -- --nocapture`.

mod common;

use common::{drivers, scratch_file, Rng};
use std::time::{Duration, Instant};

const DEPTH: usize = 256;
const REGION_BLOCKS: u64 = 16 * 1024; // 64 MiB of 4 KiB blocks

#[cfg(target_os = "linux")]
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[cfg(target_os = "linux")]
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The working set (`GetProcessMemoryInfo`).
#[cfg(windows)]
fn rss_bytes() -> u64 {
    use windows_sys::Win32::System::ProcessStatus::{
        GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS,
    };
    let mut counters = PROCESS_MEMORY_COUNTERS::default();
    // SAFETY: `counters` is writable and of the size passed; the pseudo-handle of this process.
    let ok = unsafe {
        GetProcessMemoryInfo(
            windows_sys::Win32::System::Threading::GetCurrentProcess(),
            &mut counters,
            size_of::<PROCESS_MEMORY_COUNTERS>() as u32,
        )
    };
    assert!(ok != 0, "{}", std::io::Error::last_os_error());
    counters.WorkingSetSize as u64
}

/// The handles this process holds (`GetProcessHandleCount`).
#[cfg(windows)]
fn open_fds() -> usize {
    let mut count = 0u32;
    // SAFETY: `count` is writable; the pseudo-handle of this process.
    let ok = unsafe {
        windows_sys::Win32::System::Threading::GetProcessHandleCount(
            windows_sys::Win32::System::Threading::GetCurrentProcess(),
            &mut count,
        )
    };
    assert!(ok != 0, "{}", std::io::Error::last_os_error());
    count as usize
}

#[test]
fn soak_at_depth_256_with_cancellations() {
    let ops: u64 = std::env::var("SOAK_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    // Each driver on a generic executor, then on `Driver::block_on`. All live to the end: a
    // dropped driver closes its ring on its own thread, which the descriptor count would see.
    let all = drivers();
    for (driver, own_executor) in all
        .iter()
        .flat_map(|d| [(d.clone(), false), (d.clone(), true)])
    {
        let file = scratch_file(&driver, "soak");
        let pool = driver.buf_pool(DEPTH, 4096, 4096);
        let fds_before = open_fds();
        let per_lane = ops / DEPTH as u64;
        let warm_up = (per_lane / 10).max(1);
        let rss_after_warm_up = std::sync::Mutex::new(Vec::new());
        let done = std::sync::atomic::AtomicU64::new(0);
        let cancelled = std::sync::atomic::AtomicU64::new(0);
        let start = Instant::now();
        let lanes = futures::future::join_all((0..DEPTH).map(|lane| {
            let (file, pool, rss, done, cancelled) =
                (&file, &pool, &rss_after_warm_up, &done, &cancelled);
            async move {
                let mut rng = Rng(0x5eed_0000 + lane as u64);
                for i in 0..per_lane {
                    if i == warm_up {
                        rss.lock().unwrap().push(rss_bytes());
                    }
                    let mut buf = pool.get().await;
                    buf.set_len(4096);
                    let off = rng.below(REGION_BLOCKS) * 4096;
                    let mut fut = Box::pin(file.write_at(buf, off));
                    if rng.below(16) == 0 {
                        let _ = futures::poll!(fut.as_mut());
                        drop(fut); // cancelled; the buffer returns to the pool when released
                        cancelled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        let (n, _buf) = fut.await;
                        assert_eq!(n.unwrap(), 4096);
                    }
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
        if own_executor {
            driver.block_on(lanes);
        } else {
            futures::executor::block_on(lanes);
        }
        let elapsed = start.elapsed();
        let deadline = Instant::now() + Duration::from_secs(30);
        while driver.in_flight() > 0 || pool.available() < DEPTH {
            assert!(Instant::now() < deadline, "slots or buffers not released");
            std::thread::sleep(Duration::from_millis(1));
        }
        let rss_end = rss_bytes();
        let rss_warm = *rss_after_warm_up.lock().unwrap().iter().max().unwrap();
        let done = done.into_inner();
        println!(
            "{}{}{}: {done} operations ({} cancelled) in {elapsed:.1?}; RSS after warm-up {} KiB, at end {} KiB",
            driver.backend(),
            if driver.cooperative_completions() { " cooperative" } else { "" },
            if own_executor { " (Driver::block_on)" } else { "" },
            cancelled.into_inner(),
            rss_warm / 1024,
            rss_end / 1024
        );
        assert_eq!(done, per_lane * DEPTH as u64);
        assert!(
            rss_end <= rss_warm + (1 << 20),
            "resident memory grew by {} KiB after warm-up",
            (rss_end - rss_warm) / 1024
        );
        assert_eq!(driver.in_flight(), 0, "slot table empty");
        assert_eq!(open_fds(), fds_before, "no descriptor leaked");
    }
}
