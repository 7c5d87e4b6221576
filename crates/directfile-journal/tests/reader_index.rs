//! Reads by LSN through the in-memory batch index: a range costs what the range costs (the
//! bytes read are the header block and the range's batches, not the segment from its start),
//! and the index stays right across reopen (filled from the recovery scan), explicit
//! truncation and removal of old segments.

use directfile_journal::format::{BATCH_HEADER_BYTES, RECORD_HEADER_BYTES};
use directfile_journal::storage::CrashRng;
use directfile_journal::{Journal, JournalOptions, Lsn, MemStorage};

fn options() -> JournalOptions {
    JournalOptions {
        segment_bytes: 256 << 10,
        batch_bytes_max: 16 << 10,
        block_bytes: 4096,
        ..JournalOptions::default()
    }
}

fn payload(lsn: u64, salt: u64) -> Vec<u8> {
    let mut rng = CrashRng::new(lsn * 31 + salt);
    let len = 16 + rng.below(600) as usize;
    let mut bytes = lsn.to_le_bytes().to_vec();
    bytes.extend((0..len).map(|_| rng.next_u64() as u8));
    bytes
}

/// Appends `count` records in batches of 1 to 6 (one `append_batch` at a time, so each is one
/// batch on disk); returns each batch as (first LSN, records, bytes on disk with padding).
async fn append_many(
    journal: &Journal<MemStorage>,
    count: u64,
    salt: u64,
    rng: &mut CrashRng,
) -> Vec<(u64, u64, u64)> {
    let mut batches = Vec::new();
    let mut written = 0;
    while written < count {
        let n = (1 + rng.below(6)).min(count - written);
        let first = journal.next_lsn().0;
        let records: Vec<Vec<u8>> = (first..first + n).map(|l| payload(l, salt)).collect();
        let refs: Vec<&[u8]> = records.iter().map(|r| r.as_slice()).collect();
        journal.append_batch(&refs).await.expect("append");
        let body: usize = records.iter().map(|r| RECORD_HEADER_BYTES + r.len()).sum();
        let padded = (BATCH_HEADER_BYTES + body).div_ceil(4096) * 4096;
        batches.push((first, n, padded as u64));
        written += n;
    }
    batches
}

/// What reading `from..to` must cost: the batches that hold those records, and a header
/// block for each of the (at most `segments`) segments it crosses.
fn range_bytes(batches: &[(u64, u64, u64)], from: u64, to: u64, segments: u64) -> u64 {
    let batch_bytes: u64 = batches
        .iter()
        .filter(|&&(first, n, _)| first < to && first + n > from)
        .map(|b| b.2)
        .sum();
    batch_bytes + segments * 4096
}

/// Reads `from..to`, checks every record, returns the bytes read.
async fn check_range(
    journal: &Journal<MemStorage>,
    storage: &MemStorage,
    from: u64,
    to: u64,
    salt_of: impl Fn(u64) -> u64,
) -> u64 {
    let before = storage.bytes_read();
    let mut reader = journal.reader_range(Lsn(from), Lsn(to));
    let mut lsn = from;
    while let Some(record) = reader.next().await.expect("read") {
        assert_eq!(record.lsn, Lsn(lsn));
        assert_eq!(record.payload, payload(lsn, salt_of(lsn)), "record {lsn}");
        lsn += 1;
    }
    assert_eq!(lsn, to, "range {from}..{to} ended early");
    storage.bytes_read() - before
}

#[test]
fn a_range_costs_what_the_range_costs() {
    futures::executor::block_on(async {
        let storage = MemStorage::new();
        let (journal, _) = Journal::open_with_storage(storage.clone(), options())
            .await
            .expect("open");
        let mut rng = CrashRng::new(7);
        let batches = append_many(&journal, 4_000, 0, &mut rng).await;
        let last = journal.next_lsn().0 - 1;
        assert!(
            journal.segment_numbers().len() >= 5,
            "{:?}",
            journal.segment_numbers()
        );
        // One record deep in a segment: the header block and its batch, exactly.
        let bound_one = 4096 + 16 * 1024;
        for _ in 0..200 {
            let lsn = 1 + rng.below(last);
            let read = check_range(&journal, &storage, lsn, lsn + 1, |_| 0).await;
            // (A record in a segment's last batch may read up to a batch's size past it.)
            let bound = range_bytes(&batches, lsn, lsn + 1, 1) + 16 * 1024;
            assert!(
                read <= bound,
                "reading LSN {lsn} read {read} bytes (bound {bound})"
            );
        }
        // Ranges: their batches and a header block per segment crossed (a 256 KiB segment
        // holds a few hundred records: at most 3 segments for 300).
        for _ in 0..200 {
            let from = 1 + rng.below(last);
            let to = (from + 1 + rng.below(300)).min(last + 1);
            let read = check_range(&journal, &storage, from, to, |_| 0).await;
            let bound = range_bytes(&batches, from, to, 3) + 16 * 1024;
            assert!(
                read <= bound,
                "reading {from}..{to} read {read} bytes (bound {bound})"
            );
        }
        // The whole journal, as `reader` does.
        check_range(&journal, &storage, 1, last + 1, |_| 0).await;

        // Reopen: the index comes from the recovery scan.
        drop(journal);
        let storage = MemStorage::from_files(storage.files());
        let (journal, _) = Journal::open_with_storage(storage.clone(), options())
            .await
            .expect("reopen");
        for _ in 0..100 {
            let lsn = 1 + rng.below(last);
            let read = check_range(&journal, &storage, lsn, lsn + 1, |_| 0).await;
            assert!(
                read <= bound_one,
                "after reopen, LSN {lsn} read {read} bytes"
            );
        }

        // Truncate in the middle, write other records over the same LSNs, read across.
        let cut = last / 2;
        journal.truncate_from(Lsn(cut)).await.expect("truncate");
        append_many(&journal, 1_500, 1, &mut rng).await;
        let new_last = journal.next_lsn().0 - 1;
        let salt = move |lsn: u64| u64::from(lsn >= cut);
        for _ in 0..200 {
            let from = 1 + rng.below(new_last);
            let to = (from + 1 + rng.below(200)).min(new_last + 1);
            check_range(&journal, &storage, from, to, salt).await;
        }
        drop(journal);
        let storage = MemStorage::from_files(storage.files());
        let (journal, _) = Journal::open_with_storage(storage.clone(), options())
            .await
            .expect("reopen after truncation");
        check_range(&journal, &storage, 1, new_last + 1, salt).await;
        for _ in 0..100 {
            let lsn = 1 + rng.below(new_last);
            let read = check_range(&journal, &storage, lsn, lsn + 1, salt).await;
            assert!(
                read <= bound_one,
                "after truncation, LSN {lsn} read {read} bytes"
            );
        }

        // Old segments go: reads from what is left still seek.
        let removed = journal.truncate_before(Lsn(cut)).expect("truncate_before");
        assert!(removed > 0);
        let first_kept = {
            let mut reader = journal.reader(Lsn(1));
            reader.next().await.expect("read").expect("a record").lsn.0
        };
        for _ in 0..100 {
            let lsn = first_kept + rng.below(new_last - first_kept + 1);
            let read = check_range(&journal, &storage, lsn, lsn + 1, salt).await;
            assert!(
                read <= bound_one,
                "after truncate_before, LSN {lsn} read {read} bytes"
            );
        }
    });
}
