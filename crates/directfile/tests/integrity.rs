//! 64 concurrent tasks, 20,000 random aligned writes of random sizes with random early drops
//! (cancellations), then everything read back and compared with a model of what may be there.

mod common;

use common::{drivers, scratch_dir, Executor, Rng};
use directfile::{File, OpenOptions};
use std::collections::HashSet;
use std::sync::Arc;

const TASKS: usize = 64;
const WRITES: usize = 20_000;
const UNITS_PER_TASK: usize = 64;
const MAX_UNITS_PER_WRITE: usize = 8;

/// The content of one alignment unit written by write `id`: every 8 bytes hold
/// `(id << 24) | unit index`, so any unit read back names the write it came from.
fn fill(buf: &mut [u8], id: u64, first_unit: usize, unit: usize) {
    for (u, chunk) in buf.chunks_mut(unit).enumerate() {
        let tag = (id << 24) | (first_unit + u) as u64;
        for word in chunk.chunks_mut(8) {
            word.copy_from_slice(&tag.to_le_bytes());
        }
    }
}

/// One task: owns units `[base, base + UNITS_PER_TASK)`; returns, per unit, the set of write
/// ids that may be there (0: never written, i.e. zeroes).
async fn task(file: File, task_index: usize, writes: usize, seed: u64) -> Vec<HashSet<u64>> {
    let unit = file.alignment().offset;
    let base = task_index * UNITS_PER_TASK;
    let mut rng = Rng(seed);
    let mut possible: Vec<HashSet<u64>> = vec![HashSet::from([0]); UNITS_PER_TASK];
    // Cancelled writes that may still be running: one that a worker or the device had already
    // started completes after its future is gone, possibly after a later write to the same
    // units. It lands whole per unit or not at all.
    let mut late: Vec<HashSet<u64>> = vec![HashSet::new(); UNITS_PER_TASK];
    let mut buf = Some(file.alloc_buf(MAX_UNITS_PER_WRITE * unit));
    for w in 0..writes {
        let id = ((task_index as u64) << 20) | (w as u64 + 1);
        let units = 1 + rng.below(MAX_UNITS_PER_WRITE as u64) as usize;
        let first = rng.below((UNITS_PER_TASK - units + 1) as u64) as usize;
        let mut b = buf
            .take()
            .unwrap_or_else(|| file.alloc_buf(MAX_UNITS_PER_WRITE * unit));
        b.set_len(units * unit);
        fill(&mut b, id, base + first, unit);
        let fut = file.write_at(b, ((base + first) * unit) as u64);
        if rng.below(10) == 0 {
            // Cancel: poll once (submitted) or not at all, then drop. The write may or may not
            // reach the file, unit by unit; the buffer is gone with the future (the driver
            // frees it once the kernel is done with it).
            let mut fut = Box::pin(fut);
            if rng.below(2) == 0 {
                let _ = futures::poll!(fut.as_mut());
            }
            drop(fut);
            for k in first..first + units {
                possible[k].insert(id);
                late[k].insert(id);
            }
        } else {
            let (n, b) = fut.await;
            assert_eq!(n.expect("write"), units * unit);
            buf = Some(b);
            for k in first..first + units {
                possible[k] = late[k].iter().copied().chain([id]).collect();
            }
        }
    }
    possible
}

/// The tasks run on tokio (multi-thread and current-thread), on smol, or all on one thread in
/// `Driver::block_on` (`common::Executor`).
#[test]
fn random_writes_with_cancellations_match_the_model() {
    for executor in Executor::ALL {
        for driver in executor.drivers_with(|b| b) {
            check_random_writes(executor, driver);
        }
    }
}

fn check_random_writes(executor: Executor, driver: directfile::Driver) {
    {
        let dir = scratch_dir("integrity");
        let path = dir.join("data");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .driver(&driver)
            .open(&path)
            .unwrap();
        let unit = file.alignment().offset;
        let total_units = TASKS * UNITS_PER_TASK;
        let tasks = (0..TASKS)
            .map(|t| {
                Box::pin(task(
                    file.clone(),
                    t,
                    WRITES / TASKS,
                    0x9e37_79b9 + t as u64,
                )) as _
            })
            .collect();
        let models: Vec<Vec<HashSet<u64>>> = executor.run(&driver, tasks);
        // Every cancelled write has completed or been withdrawn once the futures are gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while driver.in_flight() > 0 {
            assert!(std::time::Instant::now() < deadline, "slots still busy");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut back = file.alloc_buf(total_units * unit);
        back.set_len(total_units * unit);
        let (n, back) = futures::executor::block_on(file.read_at(back, 0));
        let n = n.unwrap();
        let models = Arc::new(models);
        for u in 0..total_units {
            let (t, k) = (u / UNITS_PER_TASK, u % UNITS_PER_TASK);
            let bytes = if u * unit < n {
                &back[u * unit..(u + 1) * unit]
            } else {
                &[][..]
            };
            let id = if bytes.is_empty() || bytes.iter().all(|&b| b == 0) {
                0
            } else {
                let tag = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                assert!(
                    bytes.chunks(8).all(|w| w == tag.to_le_bytes()),
                    "unit {u} is torn or garbage on {} ({executor:?})",
                    driver.backend()
                );
                assert_eq!(
                    tag & 0xff_ffff,
                    u as u64,
                    "unit {u} holds another unit's data"
                );
                tag >> 24
            };
            assert!(
                models[t][k].contains(&id),
                "unit {u}: found write {id:#x}, expected one of {:?} ({}, {executor:?})",
                models[t][k],
                driver.backend()
            );
        }
    }
}

/// Several threads at queue depth 1 on one driver, on three kinds of executor: each spins for
/// its own completion (entering the ring when io_uring says completions wait for it) while the
/// others push. Every write is read back at once. A submission queue touched outside its lock
/// once made the kernel run stale entries again: data from freed buffers, or a hang.
#[test]
fn threads_at_depth_one_on_one_driver_read_back_their_writes() {
    const THREADS: u64 = 6;
    const ROUNDS: u64 = 2_000;
    const UNITS: u64 = 16;
    for driver in drivers() {
        let dir = scratch_dir("integrity-qd1");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .driver(&driver)
            .open(dir.join("data"))
            .unwrap();
        let unit = file.alignment().offset;
        // This thread only waits in the ring (the driver's reaper, `Driver::block_on`): with
        // one operation in flight it spins on the completion queue while the workers push.
        let (done_tx, mut done_rx) = futures::channel::mpsc::unbounded::<Option<u64>>();
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (driver, file, done_tx) = (driver.clone(), file.clone(), done_tx.clone());
                std::thread::spawn(move || {
                    let work = async {
                        let mut buf = file.alloc_buf(unit);
                        let mut back = file.alloc_buf(unit);
                        for r in 0..ROUNDS {
                            let u = t * UNITS + r % UNITS;
                            buf.set_len(unit);
                            fill(&mut buf, t * ROUNDS + r + 1, u as usize, unit);
                            let (n, b) = file.write_at(buf, u * unit as u64).await;
                            assert_eq!(n.unwrap(), unit);
                            buf = b;
                            back.set_len(unit);
                            let (n, b) = file.read_at(back, u * unit as u64).await;
                            assert_eq!(n.unwrap(), unit);
                            back = b;
                            assert!(back[..] == buf[..], "thread {t} round {r}: read other data");
                        }
                    };
                    let finished =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match t % 3 {
                            0 => futures::executor::block_on(work),
                            1 => driver.block_on(work),
                            _ => tokio::runtime::Builder::new_current_thread()
                                .build()
                                .unwrap()
                                .block_on(work),
                        }));
                    done_tx.unbounded_send(Some(t)).unwrap();
                    if let Err(panic) = finished {
                        std::panic::resume_unwind(panic);
                    }
                })
            })
            .collect();
        // A hang fails the test instead of stalling the suite.
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(60));
            let _ = done_tx.unbounded_send(None);
        });
        driver.block_on(async {
            use futures::StreamExt;
            for _ in 0..THREADS {
                let done = done_rx.next().await.flatten();
                assert!(
                    done.is_some(),
                    "threads at depth 1 hang on {}",
                    driver.backend()
                );
            }
        });
        for t in threads {
            t.join().unwrap();
        }
    }
}
