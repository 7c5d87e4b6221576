//! `Driver::block_on`: the thread that runs it waits in the ring and reaps for the whole
//! driver. Wake-ups from other threads, other threads' I/O, a second `block_on`, a panic, and
//! cancellation inside it.

mod common;

use common::{drivers, scratch_file, wait_idle};
use futures::channel::oneshot;
use std::time::Duration;

/// A wake-up from another thread ends the wait in the ring (a no-op completion).
#[test]
fn woken_from_another_thread_while_waiting_in_the_ring() {
    for driver in drivers() {
        let (tx, rx) = oneshot::channel::<u32>();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            tx.send(7).unwrap();
        });
        assert_eq!(driver.block_on(rx).unwrap(), 7);
        sender.join().unwrap();
    }
}

/// Another thread's operations complete while this thread holds the ring: it reaps them too.
#[test]
fn other_threads_io_completes_while_one_thread_holds_the_ring() {
    for driver in drivers() {
        let file = scratch_file(&driver, "block-on-other");
        let unit = file.alignment().offset;
        let (tx, rx) = oneshot::channel::<()>();
        let other = {
            let file = file.clone();
            std::thread::spawn(move || {
                // Let the main thread enter the ring first.
                std::thread::sleep(Duration::from_millis(20));
                futures::executor::block_on(async {
                    let mut buf = file.alloc_buf(unit);
                    for i in 0..64u64 {
                        buf.set_len(unit);
                        buf.fill(i as u8);
                        let (n, b) = file.write_at(buf, i * unit as u64).await;
                        assert_eq!(n.unwrap(), unit);
                        buf = b;
                    }
                });
                tx.send(()).unwrap();
            })
        };
        // This thread only waits: every completion of the other thread passes through here.
        driver.block_on(rx).unwrap();
        other.join().unwrap();
        let back = driver.block_on(async {
            let mut buf = file.alloc_buf(64 * unit);
            buf.set_len(64 * unit);
            let (n, b) = file.read_at(buf, 0).await;
            assert_eq!(n.unwrap(), 64 * unit);
            b
        });
        for (i, chunk) in back.chunks(unit).enumerate() {
            assert!(chunk.iter().all(|&b| b == i as u8), "block {i}");
        }
    }
}

/// Two threads in `block_on` at once: one holds the ring, the other parks; both finish.
#[test]
fn two_threads_in_block_on_at_once() {
    for driver in drivers() {
        let file = scratch_file(&driver, "block-on-two");
        let unit = file.alignment().offset;
        let threads: Vec<_> = (0..2u64)
            .map(|t| {
                let (driver, file) = (driver.clone(), file.clone());
                std::thread::spawn(move || {
                    driver.block_on(async {
                        let mut buf = file.alloc_buf(unit);
                        for i in 0..200u64 {
                            buf.set_len(unit);
                            buf.fill((t * 200 + i) as u8);
                            let off = (t * 200 + i) * unit as u64;
                            let (n, b) = file.write_at(buf, off).await;
                            assert_eq!(n.unwrap(), unit);
                            buf = b;
                        }
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        wait_idle(&driver);
    }
}

/// A panic inside `block_on` gives the ring back: the next `block_on` and other executors work.
#[test]
fn panic_inside_block_on_gives_the_ring_back() {
    for driver in drivers() {
        let file = scratch_file(&driver, "block-on-panic");
        let unit = file.alignment().offset;
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            driver.block_on(async {
                let mut buf = file.alloc_buf(unit);
                buf.set_len(unit);
                let (n, _) = file.write_at(buf, 0).await;
                n.unwrap();
                panic!("user code panicked");
            })
        }));
        assert!(caught.is_err());
        for run in 0..2 {
            let job = async {
                let mut buf = file.alloc_buf(unit);
                buf.set_len(unit);
                let (n, _) = file.write_at(buf, unit as u64).await;
                assert_eq!(n.unwrap(), unit);
            };
            if run == 0 {
                driver.block_on(job);
            } else {
                futures::executor::block_on(job);
            }
        }
        wait_idle(&driver);
    }
}

/// Futures dropped inside `block_on` while their writes are in flight: cancelled, and their
/// completions (reaped by this thread or after it leaves) free the slots.
#[test]
fn cancellation_inside_block_on() {
    for driver in drivers() {
        let file = scratch_file(&driver, "block-on-cancel");
        let unit = file.alignment().offset;
        driver.block_on(async {
            for i in 0..100u64 {
                let mut buf = file.alloc_buf(unit);
                buf.set_len(unit);
                let write = file.write_at(buf, i * unit as u64);
                // Poll once (submits), then drop it in flight.
                let mut write = Box::pin(write);
                let _ = futures::poll!(write.as_mut());
                drop(write);
            }
            let mut buf = file.alloc_buf(unit);
            buf.set_len(unit);
            let (n, _) = file.write_at(buf, 0).await;
            assert_eq!(n.unwrap(), unit);
        });
        wait_idle(&driver);
    }
}

/// `Driver::block_on` inside `Driver::block_on` on the same thread: the inner call waits in
/// the ring too.
#[test]
fn nested_block_on_on_the_same_thread() {
    for driver in drivers() {
        let file = scratch_file(&driver, "block-on-nested");
        let unit = file.alignment().offset;
        let n = driver.block_on(async {
            let inner = driver.block_on(async {
                let mut buf = file.alloc_buf(unit);
                buf.set_len(unit);
                file.write_at(buf, 0).await.0.unwrap()
            });
            let mut buf = file.alloc_buf(unit);
            buf.set_len(unit);
            inner + file.write_at(buf, unit as u64).await.0.unwrap()
        });
        assert_eq!(n, 2 * unit);
        wait_idle(&driver);
    }
}

/// Another executor blocking inside `Driver::block_on` (the thread that owns the ring is stuck
/// in it): the reaper thread's watchdog reaps for it, so it completes. (Queue depth 1 runs
/// inline on this thread by default, which needs no watchdog: off here.)
#[test]
fn another_executor_blocking_inside_block_on() {
    for driver in common::drivers_with(|b| b.inline_at_qd1(false)) {
        let file = scratch_file(&driver, "block-on-blocking");
        let unit = file.alignment().offset;
        driver.block_on(async {
            for i in 0..20u64 {
                let mut buf = file.alloc_buf(unit);
                buf.set_len(unit);
                let (n, _) = futures::executor::block_on(file.write_at(buf, i * unit as u64));
                assert_eq!(n.unwrap(), unit);
            }
        });
        if driver.backend() == directfile::Backend::Uring {
            assert!(driver.watchdog_rescues() > 0, "the watchdog reaped");
        } else {
            assert_eq!(driver.watchdog_rescues(), 0);
        }
        wait_idle(&driver);
    }
}

/// The watchdog stays out of the way of an owner that runs its lone operations inline: the
/// ring stays empty, so no rescue is due. (It used to draw one about every millisecond: ring
/// entries and the completion lock taken against the owner; 29 in this test.) A rescue may
/// still slip into the instant an operation is in flight but not yet, or no longer, marked
/// as running inline, hence the small allowance.
#[test]
fn the_watchdog_leaves_an_owner_running_inline_alone() {
    for driver in drivers() {
        let file = scratch_file(&driver, "block-on-watchdog");
        let unit = file.alignment().offset;
        driver.block_on(async {
            let mut buf = file.alloc_buf(unit);
            for i in 0..1000u64 {
                buf.set_len(unit);
                let (n, b) = file.write_at(buf, (i % 64) * unit as u64).await;
                assert_eq!(n.unwrap(), unit);
                buf = b;
            }
        });
        if driver.backend() == directfile::Backend::Uring {
            assert!(driver.inline_ops() > 0, "the writes ran inline");
        }
        let rescues = driver.watchdog_rescues();
        assert!(
            rescues <= 3,
            "{rescues} rescues of 1,000 writes at queue depth 1"
        );
        wait_idle(&driver);
    }
}

/// The watchdog looks only while operations are in the ring: an owner that waits on something
/// else draws no look at all. (With a timed watch it drew about 19 in this test's 300 ms, one
/// every 16 ms for as long as the driver was owned.)
#[test]
fn the_watchdog_does_not_look_at_an_owner_with_nothing_in_the_ring() {
    for driver in drivers() {
        let (tx, rx) = futures::channel::oneshot::channel();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            tx.send(()).unwrap();
        });
        driver.block_on(async { rx.await.unwrap() });
        sender.join().unwrap();
        assert_eq!(driver.watchdog_looks(), 0, "{:?}", driver.backend());
        wait_idle(&driver);
    }
}

/// A future that keeps waking itself while its write is in flight still gets the write done.
#[test]
fn a_future_that_yields_in_a_loop_gets_its_io_done() {
    for driver in drivers() {
        let file = scratch_file(&driver, "block-on-yield");
        let unit = file.alignment().offset;
        driver.block_on(async {
            let mut buf = file.alloc_buf(unit);
            buf.set_len(unit);
            let mut write = Box::pin(file.write_at(buf, 0));
            let mut spins = 0u64;
            let (n, _) = loop {
                if let std::task::Poll::Ready(r) = futures::poll!(write.as_mut()) {
                    break r;
                }
                spins += 1;
                assert!(spins < 50_000_000, "the write never completed");
                // Yield: wake ourselves and return Pending once.
                let mut yielded = false;
                std::future::poll_fn(|cx| {
                    if yielded {
                        std::task::Poll::Ready(())
                    } else {
                        yielded = true;
                        cx.waker().wake_by_ref();
                        std::task::Poll::Pending
                    }
                })
                .await;
            };
            assert_eq!(n.unwrap(), unit);
        });
        wait_idle(&driver);
    }
}

/// Blocking inside `block_on` on something another thread does with the same driver.
#[test]
fn blocking_inside_block_on_on_another_threads_io() {
    for driver in drivers() {
        let file = scratch_file(&driver, "block-on-cross");
        let unit = file.alignment().offset;
        let (tx, rx) = std::sync::mpsc::channel::<usize>();
        driver.block_on(async {
            let other = {
                let file = file.clone();
                std::thread::spawn(move || {
                    let mut total = 0;
                    futures::executor::block_on(async {
                        for i in 0..32u64 {
                            let mut buf = file.alloc_buf(unit);
                            buf.set_len(unit);
                            total += file.write_at(buf, i * unit as u64).await.0.unwrap();
                        }
                    });
                    tx.send(total).unwrap();
                })
            };
            // A blocking receive, on the thread that owns the ring.
            assert_eq!(rx.recv().unwrap(), 32 * unit);
            other.join().unwrap();
        });
        wait_idle(&driver);
    }
}

/// `block_on` of one driver inside `block_on` of another, with several writes in flight (each
/// driver has its own owner: the inner call owns the inner ring).
#[test]
fn nested_block_on_of_two_drivers() {
    let outer_drivers = drivers();
    let inner_drivers = drivers();
    for (outer, inner) in outer_drivers.iter().zip(inner_drivers.iter()) {
        let file = scratch_file(inner, "block-on-two-drivers");
        let unit = file.alignment().offset;
        let write = |i: u64| {
            let file = file.clone();
            async move {
                let mut buf = file.alloc_buf(unit);
                buf.set_len(unit);
                buf.fill(i as u8 + 1);
                file.write_at(buf, i * unit as u64).await.0.unwrap()
            }
        };
        let total = outer.block_on(async {
            let (a, b, c) = inner.block_on(futures::future::join3(write(0), write(1), write(2)));
            a + b + c
        });
        assert_eq!(total, 3 * unit);
        // And the other way round, with the outer driver's ring owned by another thread.
        let other = {
            let outer = outer.clone();
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let (owns_tx, owns_rx) = std::sync::mpsc::channel::<()>();
            let t = std::thread::spawn(move || {
                outer.block_on(async {
                    // Polled, so this thread owns the outer ring from here on.
                    owns_tx.send(()).unwrap();
                    rx.recv().unwrap();
                })
            });
            owns_rx.recv().unwrap();
            (t, tx)
        };
        let total = outer.block_on(async {
            let (a, b, c) = inner.block_on(futures::future::join3(write(3), write(4), write(5)));
            a + b + c
        });
        assert_eq!(total, 3 * unit);
        other.1.send(()).unwrap();
        other.0.join().unwrap();
        wait_idle(inner);
        wait_idle(outer);
    }
}

/// At queue depth 1 under `Driver::block_on` on io_uring, reads and writes run both through
/// the ring and as a blocking call on this thread (`DriverBuilder::inline_at_qd1`), with the
/// same results; with it off, on the thread pool, or on another executor, never inline.
#[test]
fn queue_depth_one_runs_inline_and_through_the_ring_alike() {
    const OPS: u64 = 200;
    for inline in [true, false] {
        for driver in common::drivers_with(|b| b.inline_at_qd1(inline)) {
            let file = scratch_file(&driver, "block-on-inline");
            let unit = file.alignment().offset;
            driver.block_on(async {
                let mut buf = file.alloc_buf(unit);
                for i in 0..OPS {
                    buf.set_len(unit);
                    buf.fill(i as u8);
                    let (n, b) = file.write_at(buf, i * unit as u64).await;
                    assert_eq!(n.unwrap(), unit);
                    buf = b;
                }
                let mut halves = vec![file.alloc_buf(unit), file.alloc_buf(unit)];
                for (k, half) in halves.iter_mut().enumerate() {
                    half.set_len(unit);
                    half.fill(0xa0 + k as u8);
                }
                let (n, _) = file.write_vectored_at(halves, OPS * unit as u64).await;
                assert_eq!(n.unwrap(), 2 * unit);
                for i in 0..OPS + 2 {
                    buf.set_len(unit);
                    let (n, b) = file.read_at(buf, i * unit as u64).await;
                    assert_eq!(n.unwrap(), unit);
                    let expected = if i < OPS {
                        i as u8
                    } else {
                        0xa0 + (i - OPS) as u8
                    };
                    assert!(b.iter().all(|&x| x == expected), "block {i}");
                    buf = b;
                }
            });
            let ran = driver.inline_ops();
            let total = 2 * OPS + 3;
            if inline && driver.backend() == directfile::Backend::Uring {
                // The ring goes first and is tried again every few dozen operations.
                assert!(ran >= 1 && ran < total, "{ran} of {total} inline");
            } else {
                assert_eq!(ran, 0, "{}", driver.backend());
            }
            futures::executor::block_on(async {
                let mut buf = file.alloc_buf(unit);
                for i in 0..8u64 {
                    buf.set_len(unit);
                    let (n, b) = file.read_at(buf, i * unit as u64).await;
                    assert_eq!(n.unwrap(), unit);
                    buf = b;
                }
            });
            assert_eq!(
                driver.inline_ops(),
                ran,
                "another executor never runs inline"
            );
        }
    }
}
