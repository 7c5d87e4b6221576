//! The bodies of the fuzz targets, shared by the libFuzzer binaries (`fuzz_targets/`) and the
//! deterministic harness `crates/directfile-journal/tests/reliability_fuzz_harness.rs`, which
//! runs them on stable Rust.
//!
//! Each body panics on a broken property; a panic is what both harnesses report.

use directfile_journal::format::{self, Head, SegmentHeader};
use directfile_journal::recovery::{plan, scan_segment, HeaderState};

fn segment_from(seed: &[u8]) -> SegmentHeader {
    let byte = |i: usize| seed.get(i).copied().unwrap_or(0);
    SegmentHeader {
        block_bytes: 512 << (byte(0) % 4),
        segment_number: u64::from(byte(1) % 4),
        generation: u64::from(byte(2) % 4),
        first_lsn: 1 + u64::from(byte(3) % 8),
        batch_bytes_max: (512 << (byte(0) % 4)) * (1 + u32::from(byte(4) % 8)),
        batches_in_flight_max: 1 + u32::from(byte(5) % 4),
        truncates: byte(5) & 0x80 != 0,
    }
}

/// The decoder never panics; whatever it accepts re-encodes to exactly the bytes it read.
pub fn decode_batch(data: &[u8]) {
    let _ = format::decode_segment_header(data);
    if data.len() < 8 {
        return;
    }
    let (seed, bytes) = data.split_at(8);
    let segment = segment_from(seed);
    let expected_lsn = segment.first_lsn + u64::from(seed[6] % 4);
    let _ = format::decode_batch_header(bytes, &segment);
    let Ok(batch) = format::decode_batch(bytes, &segment, expected_lsn) else {
        return;
    };
    assert!(batch.padded_bytes <= bytes.len());
    assert_eq!(batch.padded_bytes % segment.block_bytes as usize, 0);
    assert!(batch.padded_bytes <= segment.batch_bytes_max as usize);
    let records: Vec<_> = batch.records().collect();
    assert_eq!(records.len(), batch.header.record_count as usize);
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record.lsn, expected_lsn + index as u64);
    }
    let payloads: Vec<&[u8]> = records.iter().map(|r| r.payload).collect();
    let mut out = vec![0u8; batch.padded_bytes];
    let padded = format::encode_batch(&mut out, &segment, expected_lsn, &payloads);
    assert_eq!(padded, batch.padded_bytes);
    assert_eq!(
        out,
        &bytes[..padded],
        "accepted bytes that do not re-encode identically"
    );
}

/// A valid journal (block 512) that `recovery_scan` mutates: the HEAD file (index 0), then two
/// segments; the second one truncates the first at LSN 5 when `truncating`.
fn base_image(truncating: bool) -> Vec<Vec<u8>> {
    let mut files = vec![Vec::new()];
    let mut lsn = 1;
    let mut last = None;
    for number in 1..=2u64 {
        if number == 2 && truncating {
            lsn = 5;
        }
        let header = SegmentHeader {
            block_bytes: 512,
            segment_number: number,
            generation: number,
            first_lsn: lsn,
            batch_bytes_max: 2048,
            batches_in_flight_max: 2,
            truncates: number == 2 && truncating,
        };
        let mut bytes = vec![0u8; 8 * 512];
        format::encode_segment_header(&header, &mut bytes);
        let mut offset = 512;
        for batch in 0..3u8 {
            let payloads: Vec<Vec<u8>> = (0..=batch).map(|i| vec![i ^ lsn as u8; 90]).collect();
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
            offset += format::encode_batch(&mut bytes[offset..], &header, lsn, &refs);
            lsn += refs.len() as u64;
        }
        files.push(bytes);
        last = Some(header);
    }
    let last = last.expect("two segments");
    let mut head_bytes = vec![0u8; 1024];
    let head = Head {
        sequence: 3,
        segment_number: last.segment_number,
        first_lsn: last.first_lsn,
        generation: last.generation,
        meta: b"vote".to_vec(),
    };
    format::encode_head_slot(&head, 512, &mut head_bytes[512..]);
    files[0] = head_bytes;
    files
}

/// Scan and plan never panic; a plan only keeps verified batches, LSN-continuous once the cuts
/// of explicit truncations are applied. Mode 0: the input is a raw HEAD file and raw segment
/// files; mode 1: the input patches a valid journal (mode 3: one with a truncation).
pub fn recovery_scan(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let files: Vec<Vec<u8>> = if mode % 2 == 0 {
        // Raw: a HEAD and up to 3 segments, lengths from the next bytes.
        let mut files = Vec::new();
        let mut rest = rest;
        for _ in 0..4 {
            let Some((&len, tail)) = rest.split_first() else {
                break;
            };
            let len = (usize::from(len) * 32).min(tail.len());
            files.push(tail[..len].to_vec());
            rest = &tail[len..];
        }
        files
    } else {
        // Patches: (file, offset hi, offset lo, length, bytes...) over a valid journal.
        let mut files = base_image(mode % 4 == 3);
        let mut rest = rest;
        while rest.len() >= 4 {
            let file = usize::from(rest[0]) % files.len();
            let offset = (usize::from(rest[1]) << 8 | usize::from(rest[2])) % files[file].len();
            let len = usize::from(rest[3] % 64).min(rest.len() - 4);
            let end = (offset + len).min(files[file].len());
            files[file][offset..end].copy_from_slice(&rest[4..4 + end - offset]);
            rest = &rest[4 + len..];
        }
        files
    };
    let Some((head_bytes, segments)) = files.split_first() else {
        return;
    };
    let head = format::decode_head((!head_bytes.is_empty()).then_some(head_bytes.as_slice()));
    let scans: Vec<_> = segments
        .iter()
        .enumerate()
        .map(|(index, bytes)| scan_segment(index as u64 + 1, bytes))
        .collect();
    let plan = match plan(&head, &scans) {
        Ok(plan) => plan,
        // An unpatched base image is a healthy journal.
        Err(corruption) if mode % 2 == 1 && rest.len() < 4 => {
            panic!("the base image does not recover: {corruption}")
        }
        Err(_) => return,
    };
    if mode % 2 == 1 && rest.len() < 4 {
        let expected = if mode % 4 == 3 { 4 + 6 } else { 12 };
        assert_eq!(plan.record_count, expected, "the base image's records");
    }
    let kept: Vec<_> = scans
        .iter()
        .filter(|s| plan.kept_segments.contains(&s.segment_number))
        .collect();
    let mut next_lsn = None;
    let mut count = 0;
    for (index, scan) in kept.iter().enumerate() {
        let HeaderState::Valid(header) = &scan.header else {
            panic!("kept a segment without a valid header");
        };
        if let Some(expected) = next_lsn {
            assert_eq!(header.first_lsn, expected, "kept segments are continuous");
        }
        // Where this segment's records stop counting: the next kept segment's start.
        let end = kept.get(index + 1).map(|next| match &next.header {
            HeaderState::Valid(next) => next.first_lsn,
            _ => panic!("kept a segment without a valid header"),
        });
        let bytes = &segments[scan.segment_number as usize - 1];
        let mut lsn = header.first_lsn;
        for batch in &scan.batches {
            assert_eq!(batch.first_lsn, lsn, "batches of a segment are continuous");
            let decoded =
                format::decode_batch(&bytes[batch.offset as usize..], header, batch.first_lsn)
                    .expect("kept batches decode");
            count += decoded
                .records()
                .filter(|r| end.is_none_or(|end| r.lsn < end))
                .count() as u64;
            lsn = batch.first_lsn + u64::from(batch.record_count);
        }
        if let Some(end) = end {
            assert!(end <= lsn, "a segment ends at or before its last record");
        }
        next_lsn = Some(end.unwrap_or(lsn));
    }
    assert_eq!(count, plan.record_count);
    if let Some(next) = next_lsn {
        assert_eq!(next, plan.next_lsn);
    }
}
