//! Bit-flip, zeroed-sector and swapped-sector sweep over a journal of 1,000 records.
//!
//! Each damage is applied to a copy of the segment files and judged by the journal's recovery
//! (`scan_segment` + `plan`, which `Journal::open` and `tools::verify` both run), by
//! `Journal::open_with_storage` + the reader for every 10th damage, and by `tools::verify` on
//! real files for a sample. A damage is *detected* when recovery reports corruption, or reports
//! a torn tail whose cut lies at or before the damaged byte in the same segment (the damaged
//! bytes are discarded and reported). The only bytes whose damage goes undetected are the
//! padding of each segment's header block (bytes 64..block_bytes): no reader looks at them and
//! no record can be there (batches start at `block_bytes`); for those the test checks that
//! recovery returns exactly the original 1,000 records. In every case, whatever records
//! recovery returns are a prefix of the originals, byte for byte.
//!
//! `BITFLIP_SAMPLES=100000 cargo test -p directfile-journal --release --test reliability_bitflip -- --nocapture`
//! runs a larger sample (default 12,000 random bits, plus every bit of the first segment
//! header, batch header and record header).

use std::collections::BTreeMap;
#[cfg(unix)]
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use directfile_journal::format::{self, HeadState};
use directfile_journal::recovery::{plan, scan_image, scan_segment, HeaderState};
use directfile_journal::storage::{segment_file_name, CrashRng, HEAD_FILE_NAME, HEAD_NUMBER};
use directfile_journal::{Journal, JournalOptions, Lsn, MemStorage, RecoveryMode};

type Files = BTreeMap<u64, Vec<u8>>;

const RECORDS: u64 = 1000;

fn options() -> JournalOptions {
    JournalOptions {
        segment_bytes: 64 << 10,
        batch_bytes_max: 16 << 10,
        batches_in_flight_max: 3,
        overlap_records_min: 1,
        recovery_mode: RecoveryMode::TolerateTornTail,
        block_bytes: 4096,
    }
}

fn payload(index: u64) -> Vec<u8> {
    let mut rng = CrashRng::new(index + 1);
    let len = rng.below(300) as usize;
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Writes 1,000 records in batches of 1 to 16 records and closes the journal.
fn build() -> (Files, Vec<Vec<u8>>) {
    futures::executor::block_on(async {
        let storage = MemStorage::new();
        let (journal, _) = Journal::open_with_storage(storage.clone(), options())
            .await
            .unwrap();
        let records: Vec<Vec<u8>> = (0..RECORDS).map(payload).collect();
        let mut rng = CrashRng::new(99);
        let mut next = 0usize;
        while next < records.len() {
            let count = (1 + rng.below(16) as usize).min(records.len() - next);
            let refs: Vec<&[u8]> = records[next..next + count]
                .iter()
                .map(|r| r.as_slice())
                .collect();
            let last = journal.append_batch(&refs).await.unwrap();
            next += count;
            assert_eq!(last.0, next as u64);
        }
        drop(journal);
        (storage.files(), records)
    })
}

#[derive(Debug, PartialEq, Eq, Clone, Copy, PartialOrd, Ord)]
enum Region {
    SegmentHeader,
    /// Bytes 64..block_bytes of a segment's first block: never read.
    HeaderPadding,
    BatchHeader,
    RecordHeader,
    Payload,
    BatchPadding,
    /// Zeros after the last batch of a used segment.
    UnusedTail,
    /// A preallocated spare segment (all zeros).
    Spare,
    /// The HEAD's current slot: its header and metadata.
    Head,
    /// The rest of the current HEAD slot (never read), or the other slot, which the current
    /// one supersedes: damage there changes nothing.
    HeadUnread,
}

/// The region of every byte, from the undamaged journal's layout.
fn layout(files: &Files) -> BTreeMap<u64, Vec<Region>> {
    let mut regions = BTreeMap::new();
    for (&number, bytes) in files {
        if number == HEAD_NUMBER {
            let HeadState::Valid { head, slot_bytes } = format::decode_head(Some(bytes)) else {
                panic!("the undamaged journal has no valid HEAD");
            };
            let mut map = vec![Region::HeadUnread; bytes.len()];
            let at = (head.sequence % 2) as usize * slot_bytes;
            map[at..at + format::HEAD_SLOT_HEADER_BYTES + head.meta.len()].fill(Region::Head);
            regions.insert(number, map);
            continue;
        }
        let scan = scan_segment(number, bytes);
        let mut map = vec![Region::UnusedTail; bytes.len()];
        match &scan.header {
            HeaderState::Valid(header) => {
                let block = header.block_bytes as usize;
                map[..format::SEGMENT_HEADER_BYTES].fill(Region::SegmentHeader);
                map[format::SEGMENT_HEADER_BYTES..block].fill(Region::HeaderPadding);
                for batch in &scan.batches {
                    let at = batch.offset as usize;
                    let end = at + batch.padded_bytes as usize;
                    map[at..end].fill(Region::BatchPadding);
                    map[at..at + format::BATCH_HEADER_BYTES].fill(Region::BatchHeader);
                    let decoded =
                        format::decode_batch(&bytes[at..], header, batch.first_lsn).unwrap();
                    let mut record_at = at + format::BATCH_HEADER_BYTES;
                    for record in decoded.records() {
                        map[record_at..record_at + format::RECORD_HEADER_BYTES]
                            .fill(Region::RecordHeader);
                        record_at += format::RECORD_HEADER_BYTES;
                        map[record_at..record_at + record.payload.len()].fill(Region::Payload);
                        record_at += record.payload.len();
                    }
                }
            }
            HeaderState::Unused => map.fill(Region::Spare),
            HeaderState::Invalid { .. } => panic!("the undamaged journal has an invalid header"),
        }
        regions.insert(number, map);
    }
    regions
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Corruption,
    /// A torn tail was reported; `covers` tells whether its cut is at or before the damage.
    TornTail {
        covers: bool,
        records: usize,
    },
    /// Recovery found nothing wrong.
    Clean {
        records: usize,
    },
}

/// Recovery's verdict on `files` damaged at (`segment`, `byte`); panics if a returned record
/// differs from the original or the records are not a prefix.
fn judge(files: &Files, originals: &[Vec<u8>], segment: u64, byte: usize) -> Verdict {
    let (head, scans) = scan_image(files);
    let plan = match plan(&head, &scans) {
        Ok(plan) => plan,
        Err(_) => return Verdict::Corruption,
    };
    let mut count = 0usize;
    for scan in &scans {
        if !plan.kept_segments.contains(&scan.segment_number) {
            continue;
        }
        let HeaderState::Valid(header) = &scan.header else {
            panic!("kept segment {} has no valid header", scan.segment_number);
        };
        let bytes = &files[&scan.segment_number];
        for batch in &scan.batches {
            let decoded =
                format::decode_batch(&bytes[batch.offset as usize..], header, batch.first_lsn)
                    .expect("kept batches decode");
            for record in decoded.records() {
                assert_eq!(record.lsn, count as u64 + 1, "records are not a prefix");
                assert_eq!(
                    record.payload, originals[count],
                    "damaged record {} returned (damage at segment {segment} byte {byte})",
                    record.lsn
                );
                count += 1;
            }
        }
    }
    match &plan.torn_tail {
        Some(torn) => Verdict::TornTail {
            covers: torn.segment_number == segment && torn.offset as usize <= byte,
            records: count,
        },
        None => Verdict::Clean { records: count },
    }
}

fn read_back(files: Files) -> Result<Vec<(u64, Vec<u8>)>, String> {
    futures::executor::block_on(async {
        let (journal, _) = Journal::open_with_storage(MemStorage::from_files(files), options())
            .await
            .map_err(|e| e.to_string())?;
        let mut reader = journal.reader(Lsn(1));
        let mut records = Vec::new();
        while let Some(record) = reader.next().await.map_err(|e| e.to_string())? {
            records.push((record.lsn.0, record.payload.to_vec()));
        }
        Ok(records)
    })
}

#[derive(Default, Debug)]
struct Tally {
    /// (region, outcome) -> count
    outcomes: BTreeMap<(String, &'static str), u64>,
    journal_opens: u64,
}

impl Tally {
    fn add(&mut self, what: &str, region: Region, verdict: &Verdict) {
        let outcome = match verdict {
            Verdict::Corruption => "corruption reported",
            Verdict::TornTail { covers: true, .. } => "torn tail reported, cut covers it",
            Verdict::TornTail { covers: false, .. } => "torn tail NOT covering it",
            Verdict::Clean { .. } => "not detected (all records intact)",
        };
        *self
            .outcomes
            .entry((format!("{what} in {region:?}"), outcome))
            .or_default() += 1;
    }
}

/// Damage detection rules: anything but header padding and unread HEAD bytes must be detected.
fn assert_detected(what: &str, region: Region, verdict: &Verdict, where_: (u64, usize)) {
    match (region, verdict) {
        (Region::HeaderPadding | Region::HeadUnread, Verdict::Clean { records }) => {
            assert_eq!(
                *records, RECORDS as usize,
                "{what} at {where_:?} lost records"
            )
        }
        (_, Verdict::Corruption) | (_, Verdict::TornTail { covers: true, .. }) => {}
        _ => panic!("{what} at {where_:?} in {region:?} was not detected: {verdict:?}"),
    }
}

#[test]
fn every_bit_flip_zeroed_and_swapped_sector_is_detected() {
    let (files, originals) = build();
    let regions = layout(&files);
    let baseline = judge(&files, &originals, 0, 0);
    assert_eq!(
        baseline,
        Verdict::Clean {
            records: RECORDS as usize
        }
    );
    let positions: Vec<(u64, usize)> = files
        .iter()
        .flat_map(|(&n, b)| (0..b.len()).map(move |i| (n, i)))
        .collect();
    let samples = std::env::var("BITFLIP_SAMPLES")
        .map(|v| v.parse().expect("BITFLIP_SAMPLES is a number"))
        .unwrap_or(12_000u64);
    let mut rng = CrashRng::new(2024);
    let mut bits: Vec<(u64, usize, u8)> = (0..samples)
        .map(|_| {
            let (segment, byte) = positions[rng.below(positions.len() as u64) as usize];
            (segment, byte, rng.below(8) as u8)
        })
        .collect();
    // Every bit of the first segment header, the first batch header and its first record header.
    let first = *files.keys().find(|&&n| n != HEAD_NUMBER).unwrap();
    // And every bit of the HEAD's current slot.
    let head_slot: Vec<usize> = (0..files[&HEAD_NUMBER].len())
        .filter(|&i| regions[&HEAD_NUMBER][i] == Region::Head)
        .collect();
    for &byte in &head_slot {
        for bit in 0..8 {
            bits.push((HEAD_NUMBER, byte, bit));
        }
    }
    for byte in (0..64).chain(4096..4096 + 40 + 16) {
        for bit in 0..8 {
            bits.push((first, byte, bit));
        }
    }
    let mut tally = Tally::default();
    let mut damaged = files.clone();
    for (index, &(segment, byte, bit)) in bits.iter().enumerate() {
        let region = regions[&segment][byte];
        damaged.get_mut(&segment).unwrap()[byte] ^= 1 << bit;
        let verdict = judge(&damaged, &originals, segment, byte);
        assert_detected("bit flip", region, &verdict, (segment, byte));
        tally.add("bit flip", region, &verdict);
        if index % 10 == 0 {
            // The journal itself: opens (or refuses) the same way, and reads the same records.
            let opened = read_back(damaged.clone());
            match (&verdict, opened) {
                (Verdict::Corruption, Err(_)) => {}
                (Verdict::Clean { records } | Verdict::TornTail { records, .. }, Ok(read)) => {
                    assert_eq!(read.len(), *records, "flip at {segment}:{byte}");
                    for (lsn, payload) in &read {
                        assert_eq!(payload, &originals[*lsn as usize - 1]);
                    }
                }
                (verdict, opened) => {
                    panic!("flip at {segment}:{byte}: recovery {verdict:?}, journal {opened:?}")
                }
            }
            tally.journal_opens += 1;
        }
        damaged.get_mut(&segment).unwrap()[byte] ^= 1 << bit;
    }
    // Zeroed and swapped 512-byte sectors.
    let sectors: Vec<(u64, usize)> = files
        .iter()
        .flat_map(|(&n, b)| (0..b.len() / 512).map(move |s| (n, s * 512)))
        .collect();
    let mut noop = 0u64;
    for _ in 0..2000 {
        let (segment, at) = sectors[rng.below(sectors.len() as u64) as usize];
        let original = damaged[&segment][at..at + 512].to_vec();
        if original.iter().all(|&b| b == 0) {
            noop += 1;
            continue;
        }
        damaged.get_mut(&segment).unwrap()[at..at + 512].fill(0);
        let first_nonzero = at + original.iter().position(|&b| b != 0).unwrap();
        let region = regions[&segment][first_nonzero];
        let verdict = judge(&damaged, &originals, segment, first_nonzero);
        // Erasing every non-zero byte of the newest batch leaves exactly what a write that
        // never happened leaves: no format without an external durable pointer can tell. The
        // records before it are returned intact; this case is counted on its own.
        let last_used = *regions
            .iter()
            .rev()
            .find(|(_, map)| map[0] == Region::SegmentHeader)
            .unwrap()
            .0;
        let erased_tail = segment == last_used
            && matches!(verdict, Verdict::Clean { records } if records < RECORDS as usize)
            && damaged[&segment][at..].iter().all(|&b| b == 0);
        if erased_tail {
            *tally
                .outcomes
                .entry((
                    "zeroed sector erasing the newest batch".into(),
                    "not detectable (looks never written); earlier records intact",
                ))
                .or_default() += 1;
            damaged.get_mut(&segment).unwrap()[at..at + 512].copy_from_slice(&original);
            continue;
        }
        assert_detected("zeroed sector", region, &verdict, (segment, at));
        tally.add("zeroed sector", region, &verdict);
        damaged.get_mut(&segment).unwrap()[at..at + 512].copy_from_slice(&original);
    }
    for _ in 0..2000 {
        let a = sectors[rng.below(sectors.len() as u64) as usize];
        // Half the swaps are with a neighbouring sector (a misordered write), half anywhere.
        let b = if rng.below(2) == 0 && sectors.contains(&(a.0, a.1 + 512)) {
            (a.0, a.1 + 512)
        } else {
            sectors[rng.below(sectors.len() as u64) as usize]
        };
        let sector_a = damaged[&a.0][a.1..a.1 + 512].to_vec();
        let sector_b = damaged[&b.0][b.1..b.1 + 512].to_vec();
        if sector_a == sector_b {
            noop += 1;
            continue;
        }
        damaged.get_mut(&a.0).unwrap()[a.1..a.1 + 512].copy_from_slice(&sector_b);
        damaged.get_mut(&b.0).unwrap()[b.1..b.1 + 512].copy_from_slice(&sector_a);
        // The earliest changed byte decides what must be detected.
        let first_changed = |x: &[u8], y: &[u8]| x.iter().zip(y).position(|(p, q)| p != q);
        let mut changed: Vec<(u64, usize)> = Vec::new();
        if let Some(i) = first_changed(&sector_a, &sector_b) {
            changed.push((a.0, a.1 + i));
            changed.push((b.0, b.1 + i));
        }
        changed.sort();
        let (segment, byte) = changed[0];
        let region = changed
            .iter()
            .map(|&(s, i)| regions[&s][i])
            .find(|&r| r != Region::HeaderPadding && r != Region::HeadUnread)
            .unwrap_or(regions[&segment][byte]);
        let verdict = judge(&damaged, &originals, segment, byte);
        assert_detected("swapped sectors", region, &verdict, (segment, byte));
        tally.add("swapped sectors", region, &verdict);
        damaged.get_mut(&a.0).unwrap()[a.1..a.1 + 512].copy_from_slice(&sector_a);
        damaged.get_mut(&b.0).unwrap()[b.1..b.1 + 512].copy_from_slice(&sector_b);
    }
    assert_eq!(damaged, files);
    let verified = verify_on_disk(&files, &originals, &bits);
    let total: u64 = tally.outcomes.values().sum();
    println!(
        "{} bits flipped, {total} damages judged ({} through Journal::open, {verified} through tools::verify on disk, {noop} sector zeroings/swaps skipped as no-ops):",
        bits.len(),
        tally.journal_opens
    );
    for ((what, outcome), count) in &tally.outcomes {
        println!("  {what:36} {outcome:38} {count}");
    }
}

/// `tools::verify` on real files agrees with the in-memory verdict, for a sample of the flips.
fn verify_on_disk(files: &Files, originals: &[Vec<u8>], bits: &[(u64, usize, u8)]) -> usize {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bitflip-verify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let name = |number: u64| match number {
        HEAD_NUMBER => HEAD_FILE_NAME.to_string(),
        number => segment_file_name(number),
    };
    for (number, bytes) in files {
        std::fs::write(dir.join(name(*number)), bytes).unwrap();
    }
    let mut damaged = files.clone();
    let mut checked = 0;
    for &(segment, byte, bit) in bits.iter().step_by(40) {
        let path = dir.join(name(segment));
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        damaged.get_mut(&segment).unwrap()[byte] ^= 1 << bit;
        put_byte(&file, byte as u64, damaged[&segment][byte]);
        let expected = match judge(&damaged, originals, segment, byte) {
            Verdict::Clean { .. } => 0,
            Verdict::TornTail { .. } => 1,
            Verdict::Corruption => 2,
        };
        let report = directfile_journal::tools::verify(&dir).unwrap();
        assert_eq!(
            report.exit_code(),
            expected,
            "verify at {segment}:{byte}\n{report}"
        );
        damaged.get_mut(&segment).unwrap()[byte] ^= 1 << bit;
        put_byte(&file, byte as u64, damaged[&segment][byte]);
        checked += 1;
    }
    let _ = std::fs::remove_dir_all(&dir);
    checked
}

/// Writes one byte at `offset` (`pwrite(2)`; a positional `WriteFile` on Windows).
fn put_byte(file: &std::fs::File, offset: u64, value: u8) {
    #[cfg(unix)]
    file.write_all_at(&[value], offset).unwrap();
    #[cfg(windows)]
    assert_eq!(
        std::os::windows::fs::FileExt::seek_write(file, &[value], offset).unwrap(),
        1
    );
}
