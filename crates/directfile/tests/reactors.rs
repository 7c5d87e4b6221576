//! Completions reaped by the runtime's reactor (features `tokio` and `async-io`,
//! `docs/reactors.md`): who reaps when, and the hand-over to the driver's reaper thread when a
//! future waits outside the runtime, in a second runtime, or when the runtime shuts down.
//!
//! `cargo test -p directfile --release --features tokio,async-io --test reactors`
//!
//! Linux only: the reactors wait on io_uring's eventfd. On Windows the features turn nothing
//! on; `tests/windows.rs` shows the futures on tokio and smol woken by the driver's threads.
#![cfg(target_os = "linux")]

mod common;

use common::{drivers_with, held_pipe, scratch_file, tokio_runtime, Executor, AT_POSITION};
use directfile::{Driver, File, Reactor};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

/// The io_uring drivers of the suite (the thread pool has no reactor), without the spin at
/// queue depth 1, so that futures wait.
fn uring_drivers(executor: Executor) -> Vec<Driver> {
    executor
        .drivers_with(|b| b.spin(Duration::ZERO))
        .into_iter()
        .filter(|d| d.backend() == directfile::Backend::Uring)
        .collect()
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// `tasks` tasks of `writes` 4 KiB writes each, every one checked.
fn writers(file: &File, tasks: usize, writes: usize) -> Vec<Task> {
    (0..tasks)
        .map(|t| {
            let file = file.clone();
            Box::pin(async move {
                let unit = 4096.max(file.alignment().offset);
                let mut buf = file.alloc_buf(unit);
                for w in 0..writes {
                    buf.set_len(unit);
                    buf.fill((t + w) as u8);
                    let (n, b) = file.write_at(buf, ((t * writes + w) * unit) as u64).await;
                    assert_eq!(n.unwrap(), unit);
                    buf = b;
                }
            }) as Task
        })
        .collect()
}

/// Runs `f` on another thread and fails the test if it does not finish in 20 s (a stalled
/// completion would otherwise hang the suite).
fn within_20s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what}: stalled"))
}

#[cfg(feature = "tokio")]
#[test]
fn on_tokio_the_reactor_reaps_and_the_reaper_thread_sleeps() {
    for executor in [Executor::TokioMultiThread, Executor::TokioCurrentThread] {
        for driver in uring_drivers(executor) {
            let file = scratch_file(&driver, "tokio-reaps");
            let waits_before = driver.reaper_thread_waits();
            let mut tasks = writers(&file, 16, 100);
            let d = driver.clone();
            tasks.push(Box::pin(async move {
                // Registered by the first future that waited (the other tasks ran first).
                tokio::task::yield_now().await;
                assert_eq!(d.completion_reactor(), Some("tokio"));
            }));
            executor.run(&driver, tasks);
            assert!(driver.reactor_wakes() > 0, "{executor:?}");
            assert_eq!(driver.completion_reactor(), None, "left with its runtime");
            assert_eq!(
                driver.reaper_thread_waits(),
                waits_before,
                "{executor:?}: the reaper thread waited for completions"
            );
        }
    }
}

#[cfg(feature = "async-io")]
#[test]
fn on_smol_async_io_reaps_and_the_reaper_thread_sleeps() {
    for driver in uring_drivers(Executor::Smol) {
        let file = scratch_file(&driver, "smol-reaps");
        let waits_before = driver.reaper_thread_waits();
        Executor::Smol.run(&driver, writers(&file, 16, 100));
        assert_eq!(driver.completion_reactor(), Some("async-io"));
        assert!(driver.reactor_wakes() > 0);
        assert_eq!(driver.reaper_thread_waits(), waits_before);
    }
}

/// The driver's default without the features: futures on smol are woken by the reaper thread.
#[test]
fn without_a_reactor_the_reaper_thread_reaps() {
    for driver in drivers_with(|b| b.spin(Duration::ZERO).reactor(Reactor::Thread))
        .into_iter()
        .filter(|d| d.backend() == directfile::Backend::Uring)
    {
        let file = scratch_file(&driver, "thread-reaps");
        let waits_before = driver.reaper_thread_waits();
        Executor::Smol.run(&driver, writers(&file, 16, 100));
        let rt = tokio_runtime(true);
        rt.block_on(async {
            for h in writers(&file, 16, 100).into_iter().map(tokio::spawn) {
                h.await.unwrap();
            }
        });
        assert_eq!(driver.completion_reactor(), None);
        assert!(driver.reaper_thread_waits() > waits_before);
    }
}

struct Count(AtomicUsize);
impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

type ReadFuture =
    Pin<Box<dyn Future<Output = (directfile::Result<usize>, directfile::AlignedBuf)> + Send>>;

fn held_read(file: &File) -> ReadFuture {
    let mut buf = file.alloc_buf(1);
    buf.set_len(1);
    Box::pin(file.read_at(buf, AT_POSITION))
}

/// Registers the driver with the current-thread runtime `rt`: a read waits inside it (and is
/// then completed), so `rt`'s reactor serves the driver.
#[cfg(feature = "tokio")]
fn register_with(rt: &tokio::runtime::Runtime, driver: &Driver) {
    let mut pipe = held_pipe(driver, "register");
    let file = pipe.file.clone();
    rt.block_on(async {
        let mut read = held_read(&file);
        assert!(futures::poll!(read.as_mut()).is_pending());
        pipe.release();
        let (n, _) = read.await;
        assert_eq!(n.unwrap(), 1);
    });
    assert_eq!(driver.completion_reactor(), Some("tokio"));
}

/// A current-thread runtime that nobody drives (its `block_on` returned) serves no future:
/// one polled in its context (`Runtime::enter`) on another executor takes the reaper thread's
/// path instead of waiting for a reactor turn that never comes (the stall of the first
/// attempt, README "Tried and left out").
#[cfg(feature = "tokio")]
#[test]
fn a_future_in_a_runtime_nobody_drives_is_reaped_by_the_reaper_thread() {
    for driver in uring_drivers(Executor::TokioCurrentThread) {
        let rt = Arc::new(tokio_runtime(false));
        register_with(&rt, &driver);
        let file = scratch_file(&driver, "undriven");
        let waits_before = driver.reaper_thread_waits();
        let (rt2, driver2) = (rt.clone(), driver.clone());
        within_20s("futures in an undriven runtime's context", move || {
            let _entered = rt2.enter();
            futures::executor::block_on(futures::future::join_all(writers(&file, 8, 50)));
            drop(driver2);
        });
        assert!(driver.reaper_thread_waits() > waits_before);
        assert_eq!(
            driver.completion_reactor(),
            Some("tokio"),
            "still registered"
        );
    }
}

/// A second runtime's futures are not served by the first one's reactor.
#[cfg(feature = "tokio")]
#[test]
fn a_second_runtime_is_served_by_the_reaper_thread() {
    for driver in uring_drivers(Executor::TokioCurrentThread) {
        let first = tokio_runtime(false);
        register_with(&first, &driver);
        let file = scratch_file(&driver, "second-runtime");
        let waits_before = driver.reaper_thread_waits();
        let driver2 = driver.clone();
        within_20s("a second runtime's futures", move || {
            Executor::TokioCurrentThread.run(&driver2, writers(&file, 8, 50));
        });
        assert!(driver.reaper_thread_waits() > waits_before);
        drop(first);
    }
}

/// A future waiting as served when its runtime shuts down goes to the reaper thread: its
/// completion arrives after the runtime is gone and still wakes it.
#[cfg(feature = "tokio")]
#[test]
// The held read is handed out of the runtime on purpose, pending, not awaited.
#[allow(clippy::async_yields_async)]
fn a_runtime_that_shuts_down_hands_its_waiters_to_the_reaper_thread() {
    for multi_thread in [false, true] {
        for driver in uring_drivers(Executor::TokioCurrentThread) {
            let mut pipe = held_pipe(&driver, "shutdown");
            let file = pipe.file.clone();
            let rt = tokio_runtime(multi_thread);
            let count = Arc::new(Count(AtomicUsize::new(0)));
            let waker = Waker::from(count.clone());
            // Polled on the runtime's thread (a worker for the multi-thread one), so served.
            let read = {
                let waker = waker.clone();
                let file = file.clone();
                rt.block_on(async move {
                    tokio::spawn(async move {
                        let mut read = held_read(&file);
                        let first = read.as_mut().poll(&mut Context::from_waker(&waker));
                        assert!(first.is_pending());
                        read
                    })
                    .await
                    .unwrap()
                })
            };
            assert_eq!(driver.completion_reactor(), Some("tokio"));
            drop(rt);
            assert_eq!(driver.completion_reactor(), None, "left with its runtime");
            pipe.release();
            let deadline = Instant::now() + Duration::from_secs(10);
            while count.0.load(Ordering::SeqCst) == 0 {
                assert!(
                    Instant::now() < deadline,
                    "the handed-over waiter was not woken"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            let (n, _) = futures::executor::block_on(read);
            match n {
                Ok(n) => assert_eq!(n, 1),
                // io_uring cancels a request that waits for readiness (a FIFO read) when the
                // thread that submitted it exits: the multi-thread runtime's worker did.
                Err(directfile::Error::Canceled) if multi_thread => {}
                Err(e) => panic!("the held read failed: {e}"),
            }
            // A later runtime may register again.
            let rt = tokio_runtime(false);
            register_with(&rt, &driver);
        }
    }
}

/// A future polled in one runtime, then moved to another executor, is re-classified: its new
/// waiter is the reaper thread's.
#[cfg(feature = "tokio")]
#[test]
// The held read is handed out of the runtime on purpose, pending, not awaited.
#[allow(clippy::async_yields_async)]
fn a_future_moved_out_of_its_runtime_is_reaped_by_the_reaper_thread() {
    for driver in uring_drivers(Executor::TokioCurrentThread) {
        let mut pipe = held_pipe(&driver, "moved");
        let file = pipe.file.clone();
        let rt = tokio_runtime(false);
        let mut read = rt.block_on(async {
            let mut read = held_read(&file);
            assert!(futures::poll!(read.as_mut()).is_pending());
            read
        });
        // The runtime is alive but nobody drives it.
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        assert!(read
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        pipe.release();
        let deadline = Instant::now() + Duration::from_secs(10);
        while count.0.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the moved future was not woken");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(futures::executor::block_on(read).0.unwrap(), 1);
        drop(rt);
    }
}

/// A runtime without its I/O driver cannot serve: the driver notices (once) and its futures
/// take the reaper thread's path.
#[cfg(feature = "tokio")]
#[test]
fn a_runtime_without_an_io_driver_is_not_registered() {
    for driver in uring_drivers(Executor::TokioMultiThread) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let file = scratch_file(&driver, "no-io");
        rt.block_on(async {
            for h in writers(&file, 8, 50).into_iter().map(tokio::spawn) {
                h.await.unwrap();
            }
        });
        assert_eq!(driver.completion_reactor(), None);
        assert!(driver.reaper_thread_waits() > 0);
    }
}

/// Futures dropped in flight on tokio and smol (with their reactors serving), then the file
/// and the driver dropped with writes in flight: every buffer returns to its pool once the
/// kernel let go, the kept writes land, and nothing is left in flight.
#[test]
fn dropped_in_flight_on_tokio_and_smol() {
    for executor in [
        Executor::TokioMultiThread,
        Executor::TokioCurrentThread,
        Executor::Smol,
    ] {
        for driver in executor.drivers_with(|b| b.spin(Duration::ZERO)) {
            let file = scratch_file(&driver, "drop-in-flight");
            let path = file.path().to_path_buf();
            let pool = driver.buf_pool(64, 64 << 10, 4096);
            let tasks: Vec<Pin<Box<dyn Future<Output = Option<u64>> + Send>>> = (0..64u64)
                .map(|i| {
                    let (file, pool) = (file.clone(), pool.clone());
                    Box::pin(async move {
                        let mut buf = pool.get().await;
                        buf.set_len(64 << 10);
                        buf.fill(i as u8 + 1);
                        let mut write = Box::pin(file.write_at(buf, i * (64 << 10)));
                        if i % 2 == 0 {
                            // Kept: awaited to the end.
                            let (n, _) = write.await;
                            assert_eq!(n.unwrap(), 64 << 10);
                            Some(i)
                        } else {
                            // Cancelled: polled once, then dropped in flight.
                            let _ = futures::poll!(write.as_mut());
                            drop(write);
                            None
                        }
                    }) as _
                })
                .collect();
            let kept: Vec<u64> = executor.run(&driver, tasks).into_iter().flatten().collect();
            assert_eq!(kept.len(), 32);
            // The file and the driver go while cancelled writes may still be in flight.
            let weak_pool = pool.clone();
            drop(file);
            drop(driver);
            let deadline = Instant::now() + Duration::from_secs(10);
            while weak_pool.available() < 64 {
                assert!(
                    Instant::now() < deadline,
                    "{executor:?}: buffers not returned: {}",
                    weak_pool.available()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            let data = std::fs::read(&path).unwrap();
            for i in kept {
                let start = (i as usize) * (64 << 10);
                assert!(
                    data[start..start + (64 << 10)]
                        .iter()
                        .all(|&b| b == i as u8 + 1),
                    "{executor:?}: kept write {i} did not land"
                );
            }
        }
    }
}
