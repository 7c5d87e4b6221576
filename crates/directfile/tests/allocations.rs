//! Zero heap allocations per operation in steady state, counted by a global allocator, over
//! 100,000 operations on each driver. (Its own test binary, without libtest's harness: nothing
//! else allocates meanwhile, not even the harness's report of a test running for over 60 s.)

mod common;

use common::{scratch_file, Executor};
use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const OPS: usize = 100_000;
const DEPTH: usize = 32;

/// Polls every lane until all are done; allocates only when made (futures' join_all collects
/// outputs into a heap as lanes finish, which would be counted against us).
fn join_without_allocating<F: Future<Output = ()>>(lanes: Vec<F>) -> impl Future<Output = ()> {
    // Boxed here, when the join is made, not when it is first polled.
    let mut lanes: Vec<Option<Pin<Box<F>>>> =
        lanes.into_iter().map(|f| Some(Box::pin(f))).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for lane in lanes.iter_mut() {
            if let Some(f) = lane {
                if f.as_mut().poll(cx).is_ready() {
                    *lane = None;
                } else {
                    pending = true;
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
}

/// On `futures::executor`, `Driver::block_on`, tokio (multi-thread and current-thread) and
/// smol, for each driver (with the features `tokio` and `async-io`, the tokio and smol runs
/// are reaped by the runtime's reactor); then write-through writes followed by an explicit
/// data sync (`SyncStrategy::ExplicitSync`: on io_uring a linked write + fsync pair per
/// write), fewer of them since each one syncs.
fn main() {
    no_allocation_per_operation();
    println!("no_allocation_per_operation: ok");
}

fn no_allocation_per_operation() {
    let executors = [
        Executor::Futures,
        Executor::DriverBlockOn,
        Executor::TokioMultiThread,
        Executor::TokioCurrentThread,
        Executor::Smol,
    ];
    for executor in executors {
        for driver in executor.drivers_with(|b| b) {
            for explicit_sync in [false, true] {
                count(executor, &driver, explicit_sync);
            }
        }
    }
}

fn count(executor: Executor, driver: &directfile::Driver, explicit_sync: bool) {
    {
        let ops = if explicit_sync { OPS / 10 } else { OPS };
        let file = if explicit_sync {
            directfile::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .write_through(true)
                .sync_strategy(directfile::SyncStrategy::ExplicitSync)
                .driver(driver)
                .open(common::scratch_dir("allocs-sync").join("f"))
                .unwrap()
        } else {
            scratch_file(driver, "allocs")
        };
        let unit = file.alignment().offset;
        let pool = driver.buf_pool(DEPTH, 4096.max(unit), 4096);
        // With the feature, tokio's and async-io's reactors reap io_uring's completions.
        let expects_reactor = driver.backend() == directfile::Backend::Uring
            && match executor {
                Executor::TokioMultiThread | Executor::TokioCurrentThread => {
                    cfg!(feature = "tokio")
                }
                Executor::Smol => cfg!(feature = "async-io"),
                Executor::Futures | Executor::DriverBlockOn => false,
            };
        let reactor_of = driver.clone();
        let work = async move {
            // DEPTH concurrent loops inside one future; each op writes, odd ones read back.
            let run = |ops: usize| {
                let loops: Vec<_> = (0..DEPTH)
                    .map(|lane| {
                        let (file, pool) = (file.clone(), pool.clone());
                        async move {
                            let mut buf = pool.get().await;
                            for i in 0..ops / DEPTH {
                                buf.set_len(buf.capacity());
                                let off = ((lane * 64 + i % 64) * buf.capacity()) as u64;
                                let (n, b) = if i % 2 == 0 {
                                    file.write_at(buf, off).await
                                } else {
                                    file.read_at(buf, off).await
                                };
                                n.unwrap();
                                buf = b;
                            }
                        }
                    })
                    .collect();
                join_without_allocating(loops)
            };
            let before = ALLOCS.load(Ordering::Relaxed);
            run(DEPTH * 64).await;
            // A runtime's reactor registers (a few allocations, once) when a future first
            // waits in that runtime; that usually falls in the first warm-up, but not always
            // (the driver also serves from the reaper thread meanwhile). Measure once it
            // serves, so that one-time cost is not counted as steady state.
            let mut warm_ups = 1;
            while expects_reactor && reactor_of.completion_reactor().is_none() {
                assert!(
                    warm_ups < 20,
                    "no runtime reactor registered after {warm_ups} warm-ups"
                );
                run(DEPTH * 64).await;
                warm_ups += 1;
            }
            let after_warm = ALLOCS.load(Ordering::Relaxed);
            let measured = run(ops);
            let start = ALLOCS.load(Ordering::Relaxed);
            measured.await;
            let end = ALLOCS.load(Ordering::Relaxed);
            (after_warm - before, end - start, warm_ups)
        };
        let wakes_before = driver.reactor_wakes();
        let (warm, steady, warm_ups) = executor.block_on(driver, work);
        // Counts the warm-up's turns too: an upper bound for the measured run.
        let reactor_turns = driver.reactor_wakes() - wakes_before;
        let per_op = steady as f64 / ops as f64;
        println!(
            "{} on {executor:?}{}{}: {steady} allocations in {ops} operations ({per_op:.5}/op; \
             warm-up {warm} in {warm_ups}; reactor turns {reactor_turns})",
            driver.backend(),
            driver
                .completion_reactor()
                .map(|r| format!(" (reaped by {r})"))
                .unwrap_or_default(),
            if explicit_sync {
                ", write-through with explicit sync"
            } else {
                ""
            }
        );
        if executor == Executor::Smol {
            // smol's block_on drives async-io's reactor, which allocates a Vec for the wakers
            // of each turn that wakes any (async-io 2.6, `ReactorLock::react`), and now and
            // then elsewhere (2 in 100,000 operations on the thread pool here, where no
            // reactor of ours is registered; 13 more than the turns in 100,000 once): at most
            // one per turn, plus one per 1,000 operations. An allocation of ours per operation
            // would be 100,000 (10,000 with the explicit sync). directfile's own count is the
            // other executors' 0.
            assert!(
                steady <= reactor_turns as u64 + ops as u64 / 1_000,
                "{} on {executor:?}: {steady} allocations in steady state, more than \
                 async-io's {reactor_turns} reactor turns",
                driver.backend()
            );
        } else {
            assert_eq!(
                steady,
                0,
                "{} on {executor:?}: allocations in steady state",
                driver.backend()
            );
        }
    }
}
