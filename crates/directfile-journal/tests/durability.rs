//! The journal's acknowledged records survive a power cut on a file system that keeps only what
//! was synced (`directfile-testfs`, FUSE), on directfile's default driver (io_uring where it
//! works): with the sync strategy directfile picks for FUSE (an explicit data sync after each
//! write) none is lost; with `O_DSYNC` alone forced (right on ext4/xfs/btrfs) the cut loses
//! acknowledged records, which recovery reports or which are missing.
//!
//! Linux only: FUSE and `directfile-testfs` are Linux's.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use directfile::SyncStrategy;
use directfile_journal::{DirectFileStorage, Journal, JournalOptions, Lsn, RecoveryMode};
use directfile_testfs::{unavailable_reason, Mount};

fn options() -> JournalOptions {
    JournalOptions {
        segment_bytes: 256 << 10,
        batch_bytes_max: 32 << 10,
        batches_in_flight_max: 3,
        overlap_records_min: 4,
        recovery_mode: RecoveryMode::TolerateTornTail,
        block_bytes: 0,
    }
}

fn payload(writer: u64, index: u64) -> Vec<u8> {
    let len = 50 + ((writer * 7919 + index * 104_729) % 400) as usize;
    (0..len)
        .map(|i| (writer as u8) ^ (index as u8).wrapping_add(i as u8))
        .collect()
}

fn mount_point() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "journal-fuse-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Records by LSN, and what recovery returned (its records in order, or its error).
type Outcome = (BTreeMap<u64, Vec<u8>>, Result<Vec<(u64, Vec<u8>)>, String>);

/// Appends from 8 writers until at least 12 segments were started, cuts the power with the
/// journal open, recovers from what was durable. Returns the acknowledged records (LSN ->
/// payload) and what recovery said: the records it returns, or its error.
fn run(forced: Option<SyncStrategy>) -> Outcome {
    let dir = mount_point();
    let mount = Mount::new(&dir).unwrap();
    let journal_dir = mount.path().join("journal");
    let mut storage = DirectFileStorage::new(&journal_dir).unwrap();
    if let Some(strategy) = forced {
        storage = storage.with_sync_strategy(strategy);
    }
    let (journal, _) =
        futures::executor::block_on(Journal::open_with_storage(storage, options())).unwrap();
    let journal = Arc::new(journal);
    let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
    let writers: Vec<_> = (0..8u64)
        .map(|writer| {
            let (journal, acknowledged) = (Arc::clone(&journal), Arc::clone(&acknowledged));
            std::thread::spawn(move || {
                let mut index = 0;
                while journal.stats().segments_created < 12 {
                    let record = payload(writer, index);
                    let lsn = futures::executor::block_on(journal.append(&record)).unwrap();
                    acknowledged.lock().unwrap().insert(lsn.0, record);
                    index += 1;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let image = mount.power_cut();
    // The journal still runs on the dead mount; closing it fails quietly.
    drop(journal);
    let mount = image.mount(&dir).unwrap();
    let recovered = futures::executor::block_on(async {
        let storage =
            DirectFileStorage::new(mount.path().join("journal")).map_err(|e| e.to_string())?;
        let (journal, _) = Journal::open_with_storage(storage, options())
            .await
            .map_err(|e| e.to_string())?;
        let mut reader = journal.reader(Lsn(1));
        let mut records = Vec::new();
        while let Some(record) = reader.next().await.map_err(|e| e.to_string())? {
            records.push((record.lsn.0, record.payload.to_vec()));
        }
        Ok(records)
    });
    drop(mount);
    let _ = std::fs::remove_dir(&dir);
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    (acknowledged, recovered)
}

#[test]
fn acknowledged_records_survive_a_power_cut_on_fuse() {
    if let Some(reason) = unavailable_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let (acknowledged, recovered) = run(None);
    let records = recovered.unwrap_or_else(|e| panic!("recovery after the cut: {e}"));
    eprintln!(
        "strategy chosen for FUSE: {} acknowledged, {} recovered",
        acknowledged.len(),
        records.len()
    );
    let by_lsn: BTreeMap<u64, Vec<u8>> = records.into_iter().collect();
    for (lsn, payload) in &acknowledged {
        assert_eq!(
            by_lsn.get(lsn),
            Some(payload),
            "acknowledged LSN {lsn} lost or damaged"
        );
    }
    // Recovery returns a prefix: nothing beyond it, nothing it did not write.
    for (index, (lsn, _)) in by_lsn.iter().enumerate() {
        assert_eq!(*lsn, index as u64 + 1);
    }
}

#[test]
fn o_dsync_alone_loses_acknowledged_records_on_io_uring_only() {
    if let Some(reason) = unavailable_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let (acknowledged, recovered) = run(Some(SyncStrategy::Dsync));
    // On the thread pool (DIRECTFILE_BACKEND=threads) the synchronous writes are synced by the
    // kernel and nothing may be lost; on io_uring the flag alone skips FUSE's sync.
    let on_uring = directfile::Driver::global()
        .map(|d| d.backend() == directfile::Backend::Uring)
        .unwrap_or(false);
    let missing = match &recovered {
        // Recovery sees that the newest segments were lost (the HEAD says more existed).
        Err(error) => {
            eprintln!(
                "O_DSYNC alone: {} acknowledged; recovery refused: {error}",
                acknowledged.len()
            );
            acknowledged.len()
        }
        Ok(records) => {
            let missing = acknowledged
                .iter()
                .filter(|(lsn, payload)| {
                    records.get(**lsn as usize - 1).map(|r| &r.1) != Some(*payload)
                })
                .count();
            eprintln!(
                "O_DSYNC alone: {} acknowledged, {} recovered, {missing} lost",
                acknowledged.len(),
                records.len()
            );
            missing
        }
    };
    if on_uring {
        assert!(missing > 0, "the flag alone lost nothing on io_uring");
    } else {
        assert_eq!(missing, 0, "{recovered:?}");
    }
}
