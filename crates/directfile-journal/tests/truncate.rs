//! `Journal::truncate_from`: the records at and above an LSN are gone, durably, and the LSN is
//! used again; a crash at any point leaves the old log or the truncated one, never a mix.
//!
//! A model (a `Vec` of payloads, index = LSN - 1) runs beside the journal through random
//! appends, truncations, purges and reopens, on the in-memory disk and on real files; crash
//! images taken while a truncation's writes are in flight must recover to the model before or
//! after it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use directfile_journal::storage::CrashRng;
use directfile_journal::{Error, Journal, JournalOptions, Lsn, MemStorage, RecoveryMode, Storage};

fn options() -> JournalOptions {
    JournalOptions {
        segment_bytes: 32 << 10,
        batch_bytes_max: 8 << 10,
        batches_in_flight_max: 2,
        overlap_records_min: 2,
        recovery_mode: RecoveryMode::Strict,
        block_bytes: 4096,
    }
}

fn payload(seed: u64) -> Vec<u8> {
    let mut rng = CrashRng::new(seed + 7);
    let len = 1 + rng.below(700) as usize;
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

async fn read_all<S: Storage>(journal: &Journal<S>) -> Vec<(u64, Vec<u8>)> {
    let mut reader = journal.reader(Lsn(1));
    let mut records = Vec::new();
    while let Some(record) = reader.next().await.expect("read") {
        records.push((record.lsn.0, record.payload.to_vec()));
    }
    records
}

/// The journal's records against the model (`first` is the LSN of `model[0]`).
fn assert_matches(records: &[(u64, Vec<u8>)], model: &[Vec<u8>], first: u64, what: &str) {
    let expected: Vec<(u64, Vec<u8>)> = model
        .iter()
        .enumerate()
        .map(|(i, p)| (first + i as u64, p.clone()))
        .collect();
    assert_eq!(records.len(), expected.len(), "{what}: record count");
    for (got, want) in records.iter().zip(&expected) {
        assert_eq!(got.0, want.0, "{what}: LSN order");
        assert!(got.1 == want.1, "{what}: LSN {} differs", got.0);
    }
}

fn test_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "truncate-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Random appends (single and batched, from two tasks), truncations (mid-batch, at a batch or
/// segment start, everything, nothing), purges and reopens; after every step the journal reads
/// back exactly the model, and `next_lsn` is where the model ends.
async fn random_history<S: Storage + Clone>(storage: S, seed: u64, steps: usize) {
    let mut rng = CrashRng::new(seed);
    let mut model: Vec<Vec<u8>> = Vec::new();
    // LSN of model[0]: records below it were purged.
    let mut first = 1u64;
    let (mut journal, _) = Journal::open_with_storage(storage.clone(), options())
        .await
        .unwrap();
    let mut counter = seed * 1_000_000;
    for step in 0..steps {
        let what = format!("seed {seed} step {step}");
        match rng.below(10) {
            0 | 1 => {
                // One batch of several records: later truncations cut it in the middle.
                let count = 1 + rng.below(12) as usize;
                let payloads: Vec<Vec<u8>> = (0..count)
                    .map(|_| {
                        counter += 1;
                        payload(counter)
                    })
                    .collect();
                let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
                let last = journal.append_batch(&refs).await.unwrap();
                assert_eq!(last.0, first + (model.len() + count) as u64 - 1, "{what}");
                model.extend(payloads);
            }
            2..=4 => {
                let count = 1 + rng.below(40) as usize;
                let payloads: Vec<Vec<u8>> = (0..count)
                    .map(|_| {
                        counter += 1;
                        payload(counter)
                    })
                    .collect();
                let half = payloads.len() / 2;
                let (a, b) = payloads.split_at(half);
                let journal_ref = &journal;
                let append_all = |records: &[Vec<u8>]| {
                    let records = records.to_vec();
                    async move {
                        let mut lsns = Vec::new();
                        for record in &records {
                            lsns.push(journal_ref.append(record).await.unwrap().0);
                        }
                        lsns
                    }
                };
                // Two concurrent appenders: their LSNs interleave, so the model takes the
                // payloads in LSN order.
                let (la, lb) = futures::join!(append_all(a), append_all(b));
                let mut by_lsn: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
                for (lsn, p) in la.into_iter().zip(a).chain(lb.into_iter().zip(b)) {
                    by_lsn.insert(lsn, p.clone());
                }
                let expected_first = first + model.len() as u64;
                assert_eq!(by_lsn.keys().next(), Some(&expected_first), "{what}");
                model.extend(by_lsn.into_values());
            }
            5 | 6 => {
                let next = first + model.len() as u64;
                let lsn = match rng.below(6) {
                    0 => first,
                    1 => next,
                    _ => first + rng.below(model.len() as u64 + 1),
                };
                journal.truncate_from(Lsn(lsn)).await.unwrap();
                model.truncate((lsn - first) as usize);
                assert_eq!(journal.next_lsn(), Lsn(lsn), "{what}");
                assert_eq!(journal.durable_lsn(), Lsn(lsn - 1), "{what}");
            }
            7 => {
                let next = first + model.len() as u64;
                let lsn = first + rng.below(model.len() as u64 + 1);
                journal.truncate_before(Lsn(lsn)).unwrap();
                // Whole segments only: find where the journal now starts.
                let kept_from = read_all(&journal).await.first().map_or(next, |r| r.0);
                assert!(kept_from <= lsn.max(first), "{what}: purged past {lsn}");
                model.drain(..(kept_from - first) as usize);
                first = kept_from;
            }
            _ => {
                drop(journal);
                let (reopened, report) = Journal::open_with_storage(storage.clone(), options())
                    .await
                    .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
                assert_eq!(
                    report.next_lsn,
                    first + model.len() as u64,
                    "{what}: {report}"
                );
                assert_eq!(report.record_count, model.len() as u64, "{what}: {report}");
                journal = reopened;
            }
        }
        assert_eq!(journal.next_lsn().0, first + model.len() as u64, "{what}");
        let records = read_all(&journal).await;
        assert_matches(&records, &model, first, &what);
    }
    drop(journal);
    let (journal, _) = Journal::open_with_storage(storage, options())
        .await
        .unwrap();
    assert_matches(&read_all(&journal).await, &model, first, "final reopen");
}

#[test]
fn random_histories_match_the_model_in_memory() {
    for seed in 0..12 {
        futures::executor::block_on(random_history(MemStorage::new(), seed, 60));
    }
}

#[test]
fn random_histories_match_the_model_on_real_files() {
    for seed in 100..103 {
        let dir = test_dir("history");
        let storage = directfile_journal::DirectFileStorage::new(&dir).unwrap();
        futures::executor::block_on(random_history(storage, seed, 40));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn out_of_range_and_no_op_truncations() {
    futures::executor::block_on(async {
        let storage = MemStorage::new();
        let (journal, _) = Journal::open_with_storage(storage.clone(), options())
            .await
            .unwrap();
        for index in 0..100 {
            journal.append(&payload(index)).await.unwrap();
        }
        match journal.truncate_from(Lsn(102)).await {
            Err(Error::LsnOutOfRange { lsn, first, next }) => {
                assert_eq!((lsn, first, next), (102, 1, 101))
            }
            other => panic!("expected LsnOutOfRange, got {other:?}"),
        }
        let error = journal.truncate_from(Lsn(0)).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "LSN 0 is outside the journal's records: it holds LSNs 1..101 (the next append gets 101)"
        );
        let segments = journal.segment_numbers();
        journal.truncate_from(Lsn(101)).await.unwrap();
        assert_eq!(journal.segment_numbers(), segments, "nothing to truncate");
        assert_eq!(journal.append(b"after").await.unwrap(), Lsn(101));
    });
}

/// Appends that arrive while a truncation runs take LSNs after it.
#[test]
fn appends_during_a_truncation_continue_from_it() {
    let slow = Arc::new(AtomicU64::new(u64::MAX));
    let slow_index = Arc::clone(&slow);
    let storage = MemStorage::new().with_write_delay(move |index| {
        if index == slow_index.load(Ordering::SeqCst) {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        }
    });
    let (journal, _) =
        futures::executor::block_on(Journal::open_with_storage(storage.clone(), options()))
            .unwrap();
    futures::executor::block_on(async {
        for index in 0..50 {
            journal.append(&payload(index)).await.unwrap();
        }
    });
    // The truncating segment's header write is slow: appends queue up behind it.
    slow.store(storage.write_log().len() as u64, Ordering::SeqCst);
    let journal = Arc::new(journal);
    let truncation = {
        let journal = Arc::clone(&journal);
        std::thread::spawn(move || futures::executor::block_on(journal.truncate_from(Lsn(20))))
    };
    while (storage.write_log().len() as u64) <= slow.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let appenders: Vec<_> = (0..4)
        .map(|task| {
            let journal = Arc::clone(&journal);
            std::thread::spawn(move || {
                futures::executor::block_on(journal.append(&payload(1000 + task)))
                    .unwrap()
                    .0
            })
        })
        .collect();
    truncation.join().unwrap().unwrap();
    let mut lsns: Vec<u64> = appenders.into_iter().map(|a| a.join().unwrap()).collect();
    lsns.sort_unstable();
    assert_eq!(lsns, vec![20, 21, 22, 23]);
    let records = futures::executor::block_on(read_all(&journal));
    assert_eq!(records.len(), 23);
    assert_eq!(records[18].1, payload(18));
}

/// Crash while a truncation's writes (the truncating segment's header, then the HEAD) are in
/// flight: every sector of them kept, lost or torn. The reopened journal holds the whole old
/// log or exactly the truncated one; never a mix, never an error.
#[test]
fn a_crash_during_a_truncation_leaves_the_old_log_or_the_new_one() {
    let mut outcomes = [0u32; 2];
    for (round, truncate_at) in [(0u64, 1u64), (1, 37), (2, 61), (3, 100)] {
        // Make the truncation's two writes slow, one round each.
        for slow_offset in 0..2u64 {
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
                futures::executor::block_on(Journal::open_with_storage(storage.clone(), options()))
                    .unwrap();
            let originals: Vec<Vec<u8>> = (0..120).map(|i| payload(round * 1000 + i)).collect();
            futures::executor::block_on(async {
                for chunk in originals.chunks(7) {
                    let refs: Vec<&[u8]> = chunk.iter().map(|p| p.as_slice()).collect();
                    journal.append_batch(&refs).await.unwrap();
                }
            });
            slow.store(
                storage.write_log().len() as u64 + slow_offset,
                Ordering::SeqCst,
            );
            let journal = Arc::new(journal);
            let truncation = {
                let journal = Arc::clone(&journal);
                std::thread::spawn(move || {
                    futures::executor::block_on(journal.truncate_from(Lsn(truncate_at)))
                })
            };
            while (storage.write_log().len() as u64) <= slow.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            for seed in 0..24 {
                let (files, _) = storage.crash_image(&mut CrashRng::new(seed), 512);
                let what = format!(
                    "truncate_from({truncate_at}), write +{slow_offset} in flight, seed {seed}"
                );
                let storage = MemStorage::from_files(files);
                let lenient = JournalOptions {
                    recovery_mode: RecoveryMode::TolerateTornTail,
                    ..options()
                };
                let (reopened, report) = futures::executor::block_on(Journal::open_with_storage(
                    storage.clone(),
                    lenient.clone(),
                ))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
                let records = futures::executor::block_on(read_all(&reopened));
                let kept = records.len();
                if kept == originals.len() {
                    outcomes[0] += 1;
                } else {
                    assert_eq!(kept as u64, truncate_at - 1, "{what}: a mix ({report})");
                    outcomes[1] += 1;
                }
                assert_matches(&records, &originals[..kept], 1, &what);
                // The next append continues where the recovered log ends, and a second open
                // agrees.
                let next = futures::executor::block_on(reopened.append(b"after")).unwrap();
                assert_eq!(next.0, kept as u64 + 1, "{what}");
                drop(reopened);
                let (again, report) =
                    futures::executor::block_on(Journal::open_with_storage(storage, lenient))
                        .unwrap_or_else(|e| panic!("{what}: second open: {e}"));
                assert_eq!(report.next_lsn, kept as u64 + 2, "{what}: {report}");
                drop(again);
            }
            truncation.join().unwrap().unwrap();
        }
    }
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}
