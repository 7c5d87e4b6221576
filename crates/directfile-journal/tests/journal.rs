//! Journal behaviour, run against memory and against real files (O_DIRECT | O_DSYNC).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use directfile::{BackendChoice, Driver};
use directfile_journal::recovery::{plan, scan_image, scan_segment};
use directfile_journal::storage::CrashRng;
use directfile_journal::{
    DirectFileStorage, Error, Journal, JournalOptions, Lsn, MemStorage, RecoveryMode, StdStorage,
    Storage,
};

/// A directfile driver on the given backend, or `None` (with the reason printed) when this
/// machine cannot make one (io_uring forbidden by seccomp or sysctl).
fn driver(choice: BackendChoice) -> Option<Driver> {
    match Driver::builder().backend(choice).build() {
        Ok(driver) => Some(driver),
        Err(error) => {
            eprintln!("SKIP: cannot build a {choice:?} driver here: {error}");
            None
        }
    }
}

fn directfile_storage(name: &str, choice: BackendChoice) -> Option<DirectFileStorage> {
    let driver = driver(choice)?;
    Some(DirectFileStorage::with_driver(test_dir(name), driver).unwrap())
}

fn small_options() -> JournalOptions {
    JournalOptions {
        segment_bytes: 64 << 10,
        batch_bytes_max: 16 << 10,
        batches_in_flight_max: 3,
        overlap_records_min: 2,
        recovery_mode: RecoveryMode::TolerateTornTail,
        block_bytes: 4096,
    }
}

fn test_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "journal-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn payload(lsn: u64) -> Vec<u8> {
    let len = (lsn * 37 % 300) as usize;
    (0..len).map(|i| (lsn as usize * 31 + i) as u8).collect()
}

async fn read_all<S: Storage>(journal: &Journal<S>, from: Lsn) -> Vec<(u64, Vec<u8>)> {
    let mut reader = journal.reader(from);
    let mut records = Vec::new();
    while let Some(record) = reader.next().await.expect("read") {
        records.push((record.lsn.0, record.payload.to_vec()));
    }
    records
}

/// Appends from several tasks, reads back, reopens, rotates, truncates.
async fn append_reopen_read<S: Storage + Clone>(storage: S) {
    let count_per_task = 150u64;
    let tasks = 8u64;
    {
        let (journal, report) = Journal::open_with_storage(storage.clone(), small_options())
            .await
            .unwrap();
        assert_eq!(report.next_lsn, 1);
        assert_eq!(report.record_count, 0);
        let journal = Arc::new(journal);
        let mut handles = Vec::new();
        for task in 0..tasks {
            let journal = Arc::clone(&journal);
            handles.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for index in 0..count_per_task {
                    let body = format!("task {task} record {index}").into_bytes();
                    let lsn = journal.append(&body).await.unwrap();
                    assert!(journal.durable_lsn() >= lsn);
                    acked.push((lsn.0, body));
                }
                acked
            }));
        }
        let mut acked = Vec::new();
        for handle in handles {
            acked.extend(handle.await.unwrap());
        }
        acked.sort();
        let lsns: Vec<u64> = acked.iter().map(|a| a.0).collect();
        assert_eq!(lsns, (1..=tasks * count_per_task).collect::<Vec<_>>());
        assert_eq!(read_all(&journal, Lsn(1)).await, acked);
        assert_eq!(read_all(&journal, Lsn(500)).await, acked[499..].to_vec());
        let stats = journal.stats();
        assert!(
            stats.segments_created > 1,
            "small segments rotate: {stats:?}"
        );
        assert_eq!(stats.records_written, tasks * count_per_task);
    }
    let (journal, report) = Journal::open_with_storage(storage.clone(), small_options())
        .await
        .unwrap();
    assert_eq!(report.record_count, tasks * count_per_task);
    assert_eq!(report.next_lsn, tasks * count_per_task + 1);
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.generation, 2);
    let all = read_all(&journal, Lsn(1)).await;
    assert_eq!(all.len() as u64, tasks * count_per_task);
    let lsn = journal.append(b"after reopen").await.unwrap();
    assert_eq!(lsn.0, tasks * count_per_task + 1);
    let segments_before = journal.segment_numbers();
    let removed = journal.truncate_before(Lsn(600)).unwrap();
    assert!(removed >= 1);
    assert_eq!(
        journal.segment_numbers().len(),
        segments_before.len() - removed
    );
    let rest = read_all(&journal, Lsn(1)).await;
    assert!(rest.first().unwrap().0 <= 600);
    assert_eq!(rest.last().unwrap(), &(lsn.0, b"after reopen".to_vec()));
    drop(journal);
    let (journal, report) = Journal::open_with_storage(storage, small_options())
        .await
        .unwrap();
    assert_eq!(report.next_lsn, lsn.0 + 1);
    assert_eq!(report.last_lsn, Some(lsn.0));
    assert!(report.first_lsn.unwrap() <= 600 && report.first_lsn.unwrap() > 1);
    assert_eq!(read_all(&journal, Lsn(1)).await, rest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn append_reopen_read_in_memory() {
    append_reopen_read(MemStorage::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn append_reopen_read_on_disk() {
    append_reopen_read(StdStorage::new(test_dir("basic")).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn append_reopen_read_on_directfile_uring() {
    if let Some(storage) = directfile_storage("uring", BackendChoice::Uring) {
        append_reopen_read(storage).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn append_reopen_read_on_directfile_threads() {
    let storage = directfile_storage("threads", BackendChoice::Threads).expect("threads backend");
    append_reopen_read(storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directfile_journal_opens_by_path_and_locks() {
    let dir = test_dir("open");
    let (journal, report) = Journal::open(&dir, JournalOptions::default())
        .await
        .unwrap();
    assert_eq!(report.next_lsn, 1);
    assert_eq!(journal.append(b"hello").await.unwrap(), Lsn(1));
    assert!(matches!(
        Journal::open(&dir, JournalOptions::default()).await,
        Err(Error::Locked(_))
    ));
    drop(journal);
    let (journal, report) = Journal::open(&dir, JournalOptions::default())
        .await
        .unwrap();
    assert_eq!(report.last_lsn, Some(1));
    assert_eq!(
        read_all(&journal, Lsn(1)).await,
        vec![(1, b"hello".to_vec())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_means_durable_with_out_of_order_completions() {
    // Earlier writes take longer than later ones, so completions arrive out of order.
    let storage =
        MemStorage::new().with_write_delay(|index| Duration::from_micros(300 * (3 - index % 4)));
    let (journal, _) = Journal::open_with_storage(storage.clone(), small_options())
        .await
        .unwrap();
    let journal = Arc::new(journal);
    let mut handles = Vec::new();
    for task in 0..16u64 {
        let journal = Arc::clone(&journal);
        let storage = storage.clone();
        handles.push(tokio::spawn(async move {
            for index in 0..40u64 {
                let lsn = journal.append(&payload(task * 1000 + index)).await.unwrap();
                if index % 8 == 0 {
                    // Everything up to `lsn` must already be on the "device".
                    let (head, scans) = scan_image(&storage.files());
                    let plan = plan(&head, &scans).unwrap();
                    assert!(
                        plan.next_lsn > lsn.0,
                        "acked {lsn} but only {} durable",
                        plan.next_lsn - 1
                    );
                }
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    let stats = journal.stats();
    assert!(
        stats.batches_written < stats.records_written,
        "group commit batches: {stats:?}"
    );
    assert!(
        storage.writes_in_flight_max() >= 2,
        "several batches were in flight at once: {}",
        storage.writes_in_flight_max()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_failed_write_poisons_the_journal() {
    let storage =
        MemStorage::new().with_write_delay(|index| Duration::from_micros(200 * (index % 3)));
    let (journal, _) = Journal::open_with_storage(storage.clone(), small_options())
        .await
        .unwrap();
    for index in 0..5 {
        journal.append(&payload(index)).await.unwrap();
    }
    let writes_so_far = storage.write_log().len() as u64;
    storage.fail_writes_from(writes_so_far + 3);
    let journal = Arc::new(journal);
    let mut handles = Vec::new();
    for task in 0..12u64 {
        let journal = Arc::clone(&journal);
        handles.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for index in 0..30u64 {
                let result = journal.append(&payload(task * 100 + index)).await;
                let failed = result.is_err();
                results.push(result.map(|l| l.0).map_err(|e| e.to_string()));
                if failed {
                    break;
                }
            }
            results
        }));
    }
    let mut ok = Vec::new();
    let mut failed = 0;
    for handle in handles {
        let results = tokio::time::timeout(Duration::from_secs(20), handle)
            .await
            .expect("no waiter hangs")
            .unwrap();
        for result in results {
            match result {
                Ok(lsn) => ok.push(lsn),
                Err(message) => {
                    assert!(message.contains("poisoned"), "{message}");
                    failed += 1;
                }
            }
        }
    }
    assert!(failed >= 1);
    assert!(journal.is_poisoned());
    // Successes are exactly a prefix: nothing after the first failure was acknowledged.
    ok.sort_unstable();
    let durable = journal.durable_lsn().0;
    assert!(ok.iter().all(|&lsn| lsn <= durable));
    assert_eq!(
        ok.len() as u64 + 5,
        durable,
        "every LSN up to the durable one was acknowledged"
    );
    match journal.append(b"later").await {
        Err(Error::Poisoned(_)) => {}
        other => panic!("expected Poisoned, got {other:?}"),
    }
    drop(journal);
    // What was acknowledged survives a reopen.
    let reopened = MemStorage::from_files(storage.files());
    let (journal, report) = Journal::open_with_storage(reopened, small_options())
        .await
        .unwrap();
    assert!(report.next_lsn > durable);
    let records = read_all(&journal, Lsn(1)).await;
    assert!(records.len() as u64 >= durable);
}

/// The first appender writes its batch itself; the ones that arrive meanwhile must still be
/// written when no further append comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_behind_a_leading_appender_do_not_hang() {
    let storage = MemStorage::new().with_write_delay(|_| Duration::from_millis(3));
    let options = JournalOptions {
        overlap_records_min: 16,
        ..small_options()
    };
    let (journal, _) = Journal::open_with_storage(storage, options).await.unwrap();
    let journal = Arc::new(journal);
    for round in 0..5u64 {
        let mut handles = Vec::new();
        for task in 0..5u64 {
            let journal = Arc::clone(&journal);
            handles.push(tokio::spawn(async move {
                journal.append(&payload(round * 10 + task)).await.unwrap()
            }));
        }
        for handle in handles {
            tokio::time::timeout(Duration::from_secs(10), handle)
                .await
                .expect("every append completes")
                .unwrap();
        }
    }
    assert_eq!(journal.durable_lsn(), Lsn(25));
}

/// Dropping an append whose task is writing its batch waits for that write, so the journal
/// carries on with a known state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_leading_append_mid_write_keeps_the_journal_consistent() {
    let storage = MemStorage::new().with_write_delay(|_| Duration::from_millis(20));
    let (journal, _) = Journal::open_with_storage(storage.clone(), small_options())
        .await
        .unwrap();
    let cancelled =
        tokio::time::timeout(Duration::from_millis(2), journal.append(b"cancelled")).await;
    assert!(
        cancelled.is_err(),
        "the write takes longer than the timeout"
    );
    assert_eq!(
        journal.durable_lsn(),
        Lsn(1),
        "the dropped append's write completed"
    );
    assert_eq!(journal.append(b"next").await.unwrap(), Lsn(2));
    let records = read_all(&journal, Lsn(1)).await;
    assert_eq!(
        records,
        vec![(1, b"cancelled".to_vec()), (2, b"next".to_vec())]
    );
    assert!(!journal.is_poisoned());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_segment_preallocation_poisons_at_rotation() {
    let storage = MemStorage::new();
    // Creation 0 is the segment `open` starts; creation 1, the first spare, fails.
    storage.fail_creates_from(1);
    let (journal, _) = Journal::open_with_storage(storage, small_options())
        .await
        .unwrap();
    let record = vec![7u8; 3000];
    let mut acknowledged = 0;
    let error = loop {
        match journal.append(&record).await {
            Ok(lsn) => acknowledged = lsn.0,
            Err(error) => break error,
        }
    };
    assert!(matches!(error, Error::Poisoned(_)), "{error}");
    assert!(
        error
            .to_string()
            .contains("creating the next segment failed"),
        "{error}"
    );
    // A 64 KiB segment holds 15 batches of one 3016-byte record after its header block.
    assert_eq!(acknowledged, 15);
    assert!(matches!(
        journal.append(b"x").await,
        Err(Error::Poisoned(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_opener_is_refused() {
    let dir = test_dir("lock");
    let (journal, _) = Journal::open_with_storage(StdStorage::new(&dir).unwrap(), small_options())
        .await
        .unwrap();
    match Journal::open_with_storage(StdStorage::new(&dir).unwrap(), small_options()).await {
        Err(Error::Locked(what)) => assert!(what.contains("LOCK")),
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("expected Locked, got a second journal"),
    }
    drop(journal);
    Journal::open_with_storage(StdStorage::new(&dir).unwrap(), small_options())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_record_and_batch_are_refused() {
    let (journal, _) = Journal::open_with_storage(MemStorage::new(), small_options())
        .await
        .unwrap();
    let big = vec![0u8; 16 << 10];
    assert!(matches!(
        journal.append(&big).await,
        Err(Error::RecordTooLarge { .. })
    ));
    let parts: Vec<&[u8]> = vec![b"a", b"bb", b"ccc"];
    let last = journal.append_batch(&parts).await.unwrap();
    assert_eq!(last, Lsn(3));
    let records = read_all(&journal, Lsn(2)).await;
    assert_eq!(records, vec![(2, b"bb".to_vec()), (3, b"ccc".to_vec())]);
    // The journal still works after a refused record.
    assert_eq!(journal.append(b"x").await.unwrap(), Lsn(4));
}

/// Writes records, then damages the files as a crash or bit rot would, and reopens.
async fn written_files(records: u64) -> (MemStorage, Vec<u64>) {
    let storage = MemStorage::new();
    let (journal, _) = Journal::open_with_storage(storage.clone(), small_options())
        .await
        .unwrap();
    for lsn in 1..=records {
        journal.append(&payload(lsn)).await.unwrap();
    }
    let segments = journal.segment_numbers();
    drop(journal);
    (storage, segments)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_is_truncated_and_reported_and_strict_refuses_it() {
    let (storage, segments) = written_files(20).await;
    let mut files = storage.files();
    let last = *segments.last().unwrap();
    let bytes = files.get_mut(&last).unwrap();
    let scan = scan_segment(last, bytes);
    let tail = scan.batches.last().unwrap().offset as usize;
    bytes[tail + 100] ^= 0x40;

    let strict = JournalOptions {
        recovery_mode: RecoveryMode::Strict,
        ..small_options()
    };
    match Journal::open_with_storage(MemStorage::from_files(files.clone()), strict).await {
        Err(Error::TornTail(torn)) => {
            assert_eq!((torn.segment_number, torn.offset), (last, tail as u64))
        }
        Err(other) => panic!("expected TornTail, got {other}"),
        Ok(_) => panic!("expected TornTail"),
    }
    let damaged = MemStorage::from_files(files);
    let (journal, report) = Journal::open_with_storage(damaged.clone(), small_options())
        .await
        .unwrap();
    let torn = report.torn_tail.clone().expect("torn tail reported");
    assert_eq!((torn.segment_number, torn.offset), (last, tail as u64));
    assert!(report.truncated_bytes > 0);
    assert_eq!(report.next_lsn, 20, "the last batch held record 20 alone");
    let records = read_all(&journal, Lsn(1)).await;
    assert_eq!(
        records,
        (1..20).map(|lsn| (lsn, payload(lsn))).collect::<Vec<_>>()
    );
    assert_eq!(journal.append(b"next").await.unwrap(), Lsn(20));
    drop(journal);
    let (_, report) = Journal::open_with_storage(damaged, small_options())
        .await
        .unwrap();
    assert_eq!(
        report.torn_tail, None,
        "the tail was cut, so a second recovery is clean"
    );
    assert_eq!(report.next_lsn, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_before_the_tail_is_an_error_in_both_modes() {
    let (storage, segments) = written_files(40).await;
    let mut files = storage.files();
    let first = segments[0];
    let bytes = files.get_mut(&first).unwrap();
    let scan = scan_segment(first, bytes);
    let victim = scan.batches[1].offset as usize;
    bytes[victim + 50] ^= 1;
    for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
        let options = JournalOptions {
            recovery_mode: mode,
            ..small_options()
        };
        match Journal::open_with_storage(MemStorage::from_files(files.clone()), options).await {
            Err(Error::Corruption(c)) => {
                assert_eq!((c.segment_number, c.offset), (first, victim as u64))
            }
            Err(other) => panic!("expected Corruption, got {other}"),
            Ok(_) => panic!("expected Corruption"),
        }
    }
}

/// Issue 12's reproduction: a journal runs, its six newest segment files are zeroed (or the
/// newest deleted), and it is reopened. Before the HEAD file it opened cleanly at a lower LSN
/// and reused LSNs; now both recovery modes refuse it, naming the segments, and `verify` says
/// corrupt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_tail_of_whole_segments_is_corruption_in_both_modes() {
    let dir = test_dir("zeroed-tail");
    let options = small_options();
    let acknowledged = {
        let (journal, _) = Journal::open(&dir, options.clone()).await.unwrap();
        let journal = Arc::new(journal);
        let started = std::time::Instant::now();
        let mut tasks = Vec::new();
        for task in 0..8u64 {
            let journal = Arc::clone(&journal);
            tasks.push(tokio::spawn(async move {
                let mut index = 0;
                while started.elapsed() < Duration::from_secs(1)
                    || journal.segment_numbers().len() < 10
                {
                    journal
                        .append(&payload(task * 1_000_000 + index))
                        .await
                        .unwrap();
                    index += 1;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let durable = journal.durable_lsn();
        assert!(journal.segment_numbers().len() >= 10);
        durable
    };
    let mut numbers: Vec<u64> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            directfile_journal::storage::parse_segment_file_name(e.unwrap().file_name().to_str()?)
        })
        .collect();
    numbers.sort_unstable();
    let pristine = dir.with_extension("pristine");
    let _ = std::fs::remove_dir_all(&pristine);
    std::fs::create_dir_all(&pristine).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), pristine.join(entry.file_name())).unwrap();
    }
    let segment_path = |dir: &PathBuf, number: u64| {
        dir.join(directfile_journal::storage::segment_file_name(number))
    };
    let high_water = match directfile_journal::tools::verify(&dir).unwrap().head {
        directfile_journal::format::HeadState::Valid { head, .. } => head.segment_number,
        other => panic!("no HEAD after a clean close: {other:?}"),
    };
    let zeroed = &numbers[numbers.len() - 6..];
    let started: Vec<u64> = zeroed
        .iter()
        .copied()
        .filter(|&n| n <= high_water)
        .collect();
    assert!(started.len() >= 5, "{zeroed:?} {high_water}");
    for &number in zeroed {
        let path = segment_path(&dir, number);
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::write(&path, vec![0u8; len as usize]).unwrap();
    }
    for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
        let options = JournalOptions {
            recovery_mode: mode,
            ..options.clone()
        };
        match Journal::open(&dir, options).await {
            Err(Error::Corruption(c)) => {
                let message = c.to_string();
                for number in &started {
                    assert!(message.contains(&number.to_string()), "{message}");
                }
                assert!(message.contains("all zeros"), "{message}");
            }
            Err(other) => panic!("{mode:?}: expected Corruption, got {other}"),
            Ok((_, report)) => panic!(
                "{mode:?}: opened a journal that lost its tail at LSN {} (acknowledged up to {acknowledged})",
                report.next_lsn
            ),
        }
    }
    let verdict = directfile_journal::tools::verify(&dir).unwrap();
    assert_eq!(verdict.exit_code(), 2, "{verdict}");
    // The newest segment deleted instead: the same verdict.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::rename(&pristine, &dir).unwrap();
    let newest_started = high_water;
    std::fs::remove_file(segment_path(&dir, newest_started)).unwrap();
    match Journal::open(&dir, options.clone()).await {
        Err(Error::Corruption(c)) => assert!(
            c.to_string()
                .contains(&format!("segment {newest_started} is missing")),
            "{c}"
        ),
        Err(other) => panic!("expected Corruption, got {other}"),
        Ok(_) => panic!("opened a journal whose newest segment was deleted"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `set_meta` is durable and atomic: a reopen reports the last value stored; a crash while it
/// is written leaves the old value or the new one, whole, never anything else; records are
/// untouched; too long a value is refused.
#[test]
fn metadata_survives_reopen_and_a_crash_mid_write_leaves_old_or_new() {
    futures::executor::block_on(async {
        let storage = MemStorage::new();
        let (journal, report) = Journal::open_with_storage(storage.clone(), small_options())
            .await
            .unwrap();
        assert!(report.meta.is_empty());
        journal.set_meta(b"term 1, voted for 2").await.unwrap();
        journal.append(b"record").await.unwrap();
        assert_eq!(journal.meta(), b"term 1, voted for 2");
        let too_long = vec![7u8; journal.meta_bytes_max() + 1];
        assert!(matches!(
            journal.set_meta(&too_long).await,
            Err(Error::InvalidOptions(_))
        ));
        drop(journal);
        let (journal, report) = Journal::open_with_storage(storage.clone(), small_options())
            .await
            .unwrap();
        assert_eq!(report.meta, b"term 1, voted for 2");
        assert_eq!(journal.meta(), b"term 1, voted for 2");
        assert_eq!(report.last_lsn, Some(1));
    });
    // Crash while the HEAD write of a set_meta is in flight, with every sector fate.
    let slow_write = Arc::new(AtomicU64::new(u64::MAX));
    let slow = Arc::clone(&slow_write);
    let storage = MemStorage::new().with_write_delay(move |index| {
        if index == slow.load(Ordering::SeqCst) {
            Duration::from_millis(300)
        } else {
            Duration::ZERO
        }
    });
    let (journal, _) =
        futures::executor::block_on(Journal::open_with_storage(storage.clone(), small_options()))
            .unwrap();
    futures::executor::block_on(async {
        journal.set_meta(b"old value").await.unwrap();
        for index in 0..20 {
            journal.append(&payload(index)).await.unwrap();
        }
    });
    slow_write.store(storage.write_log().len() as u64, Ordering::SeqCst);
    let journal = Arc::new(journal);
    let writer = {
        let journal = Arc::clone(&journal);
        std::thread::spawn(move || {
            futures::executor::block_on(journal.set_meta(b"a newer, longer value"))
        })
    };
    while storage.write_log().len() as u64 <= slow_write.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut outcomes = [0u32; 2];
    for seed in 0..64 {
        let (files, _) = storage.crash_image(&mut CrashRng::new(seed), 512);
        let (reopened, report) = futures::executor::block_on(Journal::open_with_storage(
            MemStorage::from_files(files),
            small_options(),
        ))
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(report.last_lsn, Some(20), "seed {seed}");
        match reopened.meta().as_slice() {
            b"old value" => outcomes[0] += 1,
            b"a newer, longer value" => outcomes[1] += 1,
            other => panic!("seed {seed}: metadata {other:?}"),
        }
    }
    writer.join().unwrap().unwrap();
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}

/// A `set_meta` dropped while its HEAD write is in flight poisons the journal (the HEAD's
/// state is unknown until a reopen) instead of leaving it to write that slot again: later
/// appends are refused, dropping the journal does not hang, and a reopen finds the old or the
/// new value and every record.
#[test]
fn a_set_meta_dropped_mid_write_poisons_the_journal() {
    let slow = Arc::new(AtomicU64::new(u64::MAX));
    let slow_index = Arc::clone(&slow);
    let storage = MemStorage::new().with_write_delay(move |index| {
        if index == slow_index.load(Ordering::SeqCst) {
            Duration::from_millis(200)
        } else {
            Duration::ZERO
        }
    });
    let (journal, _) =
        futures::executor::block_on(Journal::open_with_storage(storage.clone(), small_options()))
            .unwrap();
    futures::executor::block_on(async {
        for index in 0..10 {
            journal.append(&payload(index)).await.unwrap();
        }
        journal.set_meta(b"old").await.unwrap();
    });
    slow.store(storage.write_log().len() as u64, Ordering::SeqCst);
    futures::executor::block_on(async {
        let mut set = Box::pin(journal.set_meta(b"new"));
        assert!(futures::poll!(set.as_mut()).is_pending());
        drop(set);
    });
    assert!(journal.is_poisoned());
    assert!(matches!(
        futures::executor::block_on(journal.append(b"after")),
        Err(Error::Poisoned(_))
    ));
    drop(journal);
    std::thread::sleep(Duration::from_millis(250));
    let (reopened, report) =
        futures::executor::block_on(Journal::open_with_storage(storage, small_options())).unwrap();
    assert_eq!(report.last_lsn, Some(10));
    assert!(matches!(reopened.meta().as_slice(), b"old" | b"new"));
}

/// The simulated-disk property: crash at random moments while several batches are in flight;
/// each sector of each in-flight write is independently kept, lost or torn. Recovery must give
/// back exactly a prefix of what was appended, byte for byte, holding every acknowledged
/// record, and must never call a crash "corruption".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simulated_crashes_recover_exactly_an_acknowledged_prefix() {
    let mut fates_seen = [0usize; 3];
    let mut torn_tails = 0;
    for round in 0..8u64 {
        let storage = MemStorage::new().with_write_delay(move |index| {
            Duration::from_micros((index * 7919 + round * 104_729) % 700)
        });
        let (journal, _) = Journal::open_with_storage(storage.clone(), small_options())
            .await
            .unwrap();
        let journal = Arc::new(journal);
        let acked = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for task in 0..6u64 {
            let journal = Arc::clone(&journal);
            let acked = Arc::clone(&acked);
            handles.push(tokio::spawn(async move {
                let mut appended = Vec::new();
                for index in 0..150u64 {
                    let body = payload(task * 10_000 + index);
                    let lsn = journal.append(&body).await.unwrap();
                    acked.fetch_max(lsn.0, Ordering::SeqCst);
                    appended.push((lsn.0, body));
                }
                appended
            }));
        }
        let mut rng = directfile_journal::storage::CrashRng::new(round);
        let mut crashes = Vec::new();
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_micros(500 + rng.below(4000))).await;
            // Read the acknowledged watermark first: everything acknowledged by now completed
            // its write before the image is taken.
            let acked_before = acked.load(Ordering::SeqCst);
            let (image, fates) = storage.crash_image(&mut rng, 512);
            for (seen, count) in fates_seen.iter_mut().zip(fates) {
                *seen += count;
            }
            crashes.push((acked_before, image));
        }
        let mut appended = std::collections::HashMap::new();
        for handle in handles {
            appended.extend(handle.await.unwrap());
        }
        drop(journal);
        for (crash, (acked_before, image)) in crashes.into_iter().enumerate() {
            let (recovered, report) =
                match Journal::open_with_storage(MemStorage::from_files(image), small_options())
                    .await
                {
                    Ok(opened) => opened,
                    Err(error) => panic!("round {round} crash {crash}: recovery failed: {error}"),
                };
            torn_tails += usize::from(report.torn_tail.is_some());
            let records = read_all(&recovered, Lsn(1)).await;
            assert_eq!(report.record_count, records.len() as u64);
            for (index, (lsn, body)) in records.iter().enumerate() {
                assert_eq!(
                    *lsn,
                    index as u64 + 1,
                    "round {round} crash {crash}: not a prefix"
                );
                assert_eq!(
                    Some(body),
                    appended.get(lsn),
                    "round {round} crash {crash}: bytes differ"
                );
            }
            assert!(
                records.len() as u64 >= acked_before,
                "round {round} crash {crash}: lost acknowledged records ({} < {acked_before})",
                records.len()
            );
        }
    }
    eprintln!("sector fates kept/lost/torn: {fates_seen:?}, torn tails recovered: {torn_tails}");
    assert!(
        fates_seen.iter().all(|&count| count > 0),
        "every fate was exercised: {fates_seen:?}"
    );
}
