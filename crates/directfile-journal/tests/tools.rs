//! dump, verify and bench on real files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use directfile_journal::recovery::scan_segment;
use directfile_journal::storage::segment_file_name;
use directfile_journal::tools::{bench, dump, verify, BenchConfig, BenchJournal};
use directfile_journal::{Journal, JournalOptions, StdStorage};

fn test_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("journal-tools-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A journal with 60 records in 64 KiB segments; returns its directory and segment numbers.
fn written_journal(name: &str) -> (PathBuf, Vec<u64>) {
    let dir = test_dir(name);
    let options = JournalOptions {
        segment_bytes: 64 << 10,
        batch_bytes_max: 16 << 10,
        ..JournalOptions::default()
    };
    futures::executor::block_on(async {
        let (journal, _) = Journal::open_with_storage(StdStorage::new(&dir).unwrap(), options)
            .await
            .unwrap();
        for index in 0..60u32 {
            journal
                .append(&vec![index as u8; 500 + index as usize])
                .await
                .unwrap();
        }
        let segments = journal.segment_numbers();
        (dir, segments)
    })
}

fn flip_byte(dir: &Path, segment: u64, offset: u64) {
    let path = dir.join(segment_file_name(segment));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offset as usize] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn verify_tells_healthy_torn_and_corrupt_apart() {
    let (dir, segments) = written_journal("verify");
    let report = verify(&dir).unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(report.to_string().contains("healthy"));

    let dump = dump(&dir).unwrap().to_string();
    assert!(dump.contains("batch at offset 4096"), "{dump}");
    assert!(dump.contains("record LSN 60: 559 B"), "{dump}");

    // Damage the newest batch: a torn tail.
    let last = *segments.last().unwrap();
    let bytes = std::fs::read(dir.join(segment_file_name(last))).unwrap();
    let tail = scan_segment(last, &bytes).batches.last().unwrap().offset;
    flip_byte(&dir, last, tail + 60);
    let report = verify(&dir).unwrap();
    assert_eq!(report.exit_code(), 1, "{report}");
    assert!(
        report.to_string().contains(&format!("offset {tail}")),
        "{report}"
    );
    flip_byte(&dir, last, tail + 60);

    // Damage an old batch: corruption.
    let first = segments[0];
    flip_byte(&dir, first, 4096 + 60);
    let report = verify(&dir).unwrap();
    assert_eq!(report.exit_code(), 2, "{report}");
    assert!(report.to_string().contains("CORRUPT"), "{report}");
    assert!(report.to_string().contains("offset 4096"), "{report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_runs_all_three_journals() {
    let dir = test_dir("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = BenchConfig::new(&dir);
    config.writers = 4;
    config.runtime = Duration::from_millis(300);
    config.compare = true;
    config.options.segment_bytes = 8 << 20;
    let results = bench(&config).unwrap();
    let kinds: Vec<BenchJournal> = results.iter().map(|r| r.journal).collect();
    assert_eq!(
        kinds,
        vec![
            BenchJournal::Directfile,
            BenchJournal::Naive,
            BenchJournal::BufferedGroupCommit
        ]
    );
    for result in &results {
        assert!(result.appends > 0, "{result}");
        assert!(result.commit_us_p50 > 0.0 && result.commit_us_p50 <= result.commit_us_p999);
        assert!(
            result.batches > 0 && result.records_per_batch_mean >= 1.0,
            "{result}"
        );
        assert!(result.to_json().starts_with("{\"journal\":"));
    }
    // The bench cleans up after itself.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}
