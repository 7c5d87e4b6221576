//! Regressions found in review: a dropped leading append inside another executor, and a reader
//! that skipped the records of a segment written with bigger batches.
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use directfile_journal::{Journal, JournalOptions, Lsn, MemStorage, RecoveryMode, Storage};

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

/// Bug: an append future that leads its own batch and is dropped mid-write inside
/// `futures::executor::block_on` (or LocalPool) panics in LeaderWrite's drop (nested
/// block_on), the batch is never completed, and the journal is wedged.
#[test]
fn dropping_a_leading_append_inside_futures_block_on() {
    // write 0 = segment header at open, write 1 = the HEAD naming it, write 2 = the led
    // batch: make it slow.
    let storage = MemStorage::new().with_write_delay(|i| {
        if i == 2 {
            Duration::from_millis(300)
        } else {
            Duration::ZERO
        }
    });
    let (journal, _) =
        futures::executor::block_on(Journal::open_with_storage(storage, small_options())).unwrap();
    let journal = Arc::new(journal);
    let dropped = std::panic::catch_unwind(AssertUnwindSafe(|| {
        futures::executor::block_on(async {
            let mut f = Box::pin(journal.append(b"x"));
            assert!(futures::poll!(f.as_mut()).is_pending());
            drop(f); // user-level cancellation (select!/timeout)
        })
    }));
    let panicked = dropped.is_err();
    // Does the journal still work?
    let (tx, rx) = std::sync::mpsc::channel();
    let j = Arc::clone(&journal);
    std::thread::spawn(move || {
        let r = futures::executor::block_on(j.append(b"y"));
        let _ = tx.send(r.map(|l| l.0));
    });
    let next = rx.recv_timeout(Duration::from_secs(3));
    assert!(
        !panicked,
        "dropping the append future panicked; later append: {next:?}"
    );
    assert!(next.is_ok(), "later append hangs");
    std::mem::forget(journal); // avoid hanging the test binary in Drop if wedged
}

/// Bug: the reader treats any undecodable batch as "end of segment" and does not check LSN
/// continuity, so records are silently skipped. Here: a segment written with a larger
/// batch_bytes_max than the current reader chunk can hold.
#[test]
fn reader_silently_skips_records_of_a_segment_with_bigger_batches() {
    let storage = MemStorage::new();
    let big = vec![7u8; 2 << 20];
    {
        let options = JournalOptions {
            segment_bytes: 16 << 20,
            batch_bytes_max: 4 << 20,
            batches_in_flight_max: 1,
            block_bytes: 4096,
            ..JournalOptions::default()
        };
        let (journal, _) =
            futures::executor::block_on(Journal::open_with_storage(storage.clone(), options))
                .unwrap();
        assert_eq!(
            futures::executor::block_on(journal.append(&big)).unwrap(),
            Lsn(1)
        );
    }
    let options = JournalOptions {
        segment_bytes: 1 << 20,
        batch_bytes_max: 64 << 10,
        batches_in_flight_max: 1,
        block_bytes: 4096,
        ..JournalOptions::default()
    };
    let (journal, report) =
        futures::executor::block_on(Journal::open_with_storage(storage.clone(), options)).unwrap();
    assert_eq!(report.record_count, 1);
    assert_eq!(
        futures::executor::block_on(journal.append(b"b")).unwrap(),
        Lsn(2)
    );
    let lsns: Vec<u64> = futures::executor::block_on(async {
        let mut reader = journal.reader(Lsn(1));
        let mut out = Vec::new();
        loop {
            match reader.next().await {
                Ok(Some(r)) => out.push(r.lsn.0),
                Ok(None) => break,
                Err(e) => panic!("reader error: {e}"),
            }
        }
        out
    });
    assert_eq!(
        lsns,
        vec![1, 2],
        "reader returned an LSN gap without an error"
    );
    let _ = storage.block_bytes();
}
