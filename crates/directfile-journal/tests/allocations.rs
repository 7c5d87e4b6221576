//! "No allocation per append in steady state", counted by a global allocator over the whole
//! process (every thread: appenders, the journal's I/O lane thread, the directfile driver).

use std::alloc::System;
use std::path::PathBuf;

use directfile::{BackendChoice, Driver};
use directfile_journal::{DirectFileStorage, Journal, JournalOptions, StdStorage, Storage};
use futures::task::LocalSpawnExt;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const WRITERS: usize = 8;
const APPENDS_PER_WRITER: usize = 250;

/// Runs `WRITERS` tasks appending `APPENDS_PER_WRITER` records each on one local executor.
fn run_appends<S: Storage>(journal: &std::sync::Arc<Journal<S>>, name: &str, writers: usize) {
    let mut pool = futures::executor::LocalPool::new();
    for writer in 0..writers {
        let journal = std::sync::Arc::clone(journal);
        pool.spawner()
            .spawn_local(async move {
                let record = [writer as u8; 256];
                for _ in 0..APPENDS_PER_WRITER {
                    journal.append(&record).await.expect("append");
                }
            })
            .expect("spawn");
    }
    // Spawning allocated the tasks and the first poll moves them into the executor's set (an
    // allocation each); count from there on.
    pool.run_until_stalled();
    let region = Region::new(GLOBAL);
    pool.run();
    let allocations = region.change().allocations;
    assert_eq!(
        allocations,
        0,
        "{name}, {writers} writers: {allocations} allocations for {} appends",
        writers * APPENDS_PER_WRITER
    );
}

fn check<S: Storage>(storage: S, name: &str) {
    // Large enough that no rotation falls in the measured window (a rotation allocates a
    // little: once per segment, not per append): at most 2400 batches of 4 KiB.
    let options = JournalOptions {
        segment_bytes: 16 << 20,
        ..JournalOptions::default()
    };
    let (journal, _) =
        futures::executor::block_on(Journal::open_with_storage(storage, options)).expect("open");
    let journal = std::sync::Arc::new(journal);
    while !journal.is_spare_ready() {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // Warm up: waiter lists and wake lists reach their working capacity.
    let mut pool = futures::executor::LocalPool::new();
    for _ in 0..WRITERS {
        let journal = std::sync::Arc::clone(&journal);
        pool.spawner()
            .spawn_local(async move {
                for _ in 0..50 {
                    journal.append(&[1u8; 256]).await.expect("append");
                }
            })
            .expect("spawn");
    }
    pool.run();
    // Many writers (lanes and leading appenders) and a lone writer (its own write, eagerly
    // waited for).
    run_appends(&journal, name, WRITERS);
    run_appends(&journal, name, 1);
}

fn dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("journal-allocs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn steady_state_appends_do_not_allocate() {
    check(StdStorage::new(dir("std")).unwrap(), "std");
    for choice in [BackendChoice::Threads, BackendChoice::Uring] {
        match Driver::builder().backend(choice).build() {
            Ok(driver) => check(
                DirectFileStorage::with_driver(dir(&format!("{choice:?}")), driver).unwrap(),
                &format!("directfile {choice:?}"),
            ),
            Err(error) => eprintln!("SKIP {choice:?}: cannot build the driver here: {error}"),
        }
    }
}
