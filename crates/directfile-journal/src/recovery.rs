//! Recovery: scan segments, verify every batch, and tell a torn tail from corruption.
//!
//! Everything here is a pure function of the segments' bytes, so it is tested (and fuzzable)
//! without any storage. The journal applies the resulting [`Plan`]: it truncates a torn tail,
//! removes unused or half-created trailing segments, and continues at [`Plan::next_lsn`].
//!
//! Why a torn tail is recognisable: the writer keeps at most `batches_in_flight_max + 1` batches
//! of at most `batch_bytes_max` bytes unacknowledged (its ring of slots: `batches_in_flight_max`
//! lanes plus an appender that writes its own batch when nothing else is in flight), all in the
//! newest segment (rotation waits until every batch of the old segment is durable). When the
//! machine stops, only those batches can be partly written, and they lie within
//! `(batches_in_flight_max + 1) * batch_bytes_max` bytes of the first damaged batch. So in the last segment, damage whose non-zero bytes all end within that
//! window of the first bad batch is a torn tail; damage anywhere else, or written bytes beyond
//! the window, or a break in LSN continuity between segments, is corruption.

use std::fmt;

use crate::format::{self, FormatError, SegmentHeader};

/// What recovery does with damage it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Truncate a torn tail (the last in-flight batches) and report it; corruption before the
    /// tail is still an error.
    #[default]
    TolerateTornTail,
    /// Any damage, a torn tail included, is an error.
    Strict,
}

/// One verified batch found by a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    /// Byte offset of the batch in its segment.
    pub offset: u64,
    /// On-disk size of the batch, padding included.
    pub padded_bytes: u64,
    pub first_lsn: u64,
    pub record_count: u32,
}

/// How the bytes of a segment end after its last valid batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Only zeros (never-written, preallocated space) or end of file.
    Clean,
    /// Bytes at `offset` are not a valid batch and non-zero bytes reach up to `damaged_end`.
    Damaged {
        offset: u64,
        reason: FormatError,
        damaged_end: u64,
        within_torn_window: bool,
    },
}

/// The state of a segment's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderState {
    Valid(SegmentHeader),
    /// The whole file is zeros: a preallocated segment that was never used.
    Unused,
    /// The header is invalid; `rest_is_zero` tells whether anything was written after it, and
    /// `nonzero_end` is the offset just past the last non-zero byte of the file.
    Invalid {
        reason: FormatError,
        rest_is_zero: bool,
        nonzero_end: u64,
    },
}

/// The result of scanning one segment's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    pub segment_number: u64,
    pub file_bytes: u64,
    pub header: HeaderState,
    /// Every valid batch, in order (the valid prefix).
    pub batches: Vec<BatchSummary>,
    /// Offset just past the last valid batch (past the header block if there is none).
    pub valid_end: u64,
    pub end: SegmentEnd,
}

impl SegmentScan {
    /// Records in the valid prefix.
    pub fn record_count(&self) -> u64 {
        self.batches.iter().map(|b| u64::from(b.record_count)).sum()
    }

    /// LSN the next record after this segment's valid prefix gets (None without a valid header).
    pub fn next_lsn(&self) -> Option<u64> {
        let HeaderState::Valid(header) = &self.header else {
            return None;
        };
        Some(match self.batches.last() {
            Some(batch) => batch.first_lsn + u64::from(batch.record_count),
            None => header.first_lsn,
        })
    }
}

/// End of the last block at or after `from` holding a non-zero byte, or `from` if there is none.
fn nonzero_end(bytes: &[u8], from: usize, block_bytes: usize) -> usize {
    match bytes[from.min(bytes.len())..].iter().rposition(|&b| b != 0) {
        Some(last) => format::round_up(from + last + 1, block_bytes)
            .min(bytes.len())
            .max(from),
        None => from,
    }
}

/// Scans a segment's bytes: header, then batches while they verify, then classifies what follows.
pub fn scan_segment(segment_number: u64, bytes: &[u8]) -> SegmentScan {
    let file_bytes = bytes.len() as u64;
    let header = match format::decode_segment_header(bytes) {
        Ok(header) if header.segment_number == segment_number => header,
        result => {
            let reason = match result {
                Ok(header) => FormatError::BadField {
                    what: "segment_number (differs from the file name)",
                    value: header.segment_number,
                },
                Err(error) => error,
            };
            let header_zero = bytes
                .iter()
                .take(format::SEGMENT_HEADER_BYTES)
                .all(|&b| b == 0);
            let rest_is_zero = bytes
                .iter()
                .skip(format::SEGMENT_HEADER_BYTES)
                .all(|&b| b == 0);
            let header = if header_zero && rest_is_zero {
                HeaderState::Unused
            } else {
                HeaderState::Invalid {
                    reason,
                    rest_is_zero,
                    nonzero_end: bytes.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1) as u64,
                }
            };
            return SegmentScan {
                segment_number,
                file_bytes,
                header,
                batches: Vec::new(),
                valid_end: 0,
                end: SegmentEnd::Clean,
            };
        }
    };
    let block = header.block_bytes as usize;
    let mut batches = Vec::new();
    let mut offset = block;
    let mut expected_lsn = header.first_lsn;
    let end = loop {
        if offset >= bytes.len() {
            break SegmentEnd::Clean;
        }
        match format::decode_batch(&bytes[offset..], &header, expected_lsn) {
            Ok(batch) => {
                batches.push(BatchSummary {
                    offset: offset as u64,
                    padded_bytes: batch.padded_bytes as u64,
                    first_lsn: batch.header.first_lsn,
                    record_count: batch.header.record_count,
                });
                offset += batch.padded_bytes;
                expected_lsn += u64::from(batch.header.record_count);
            }
            Err(reason) => {
                let damaged_end = nonzero_end(bytes, offset, block);
                if damaged_end == offset {
                    break SegmentEnd::Clean;
                }
                let within_torn_window =
                    (damaged_end - offset) as u64 <= header.torn_window_bytes();
                break SegmentEnd::Damaged {
                    offset: offset as u64,
                    reason,
                    damaged_end: damaged_end as u64,
                    within_torn_window,
                };
            }
        }
    };
    SegmentScan {
        segment_number,
        file_bytes,
        header: HeaderState::Valid(header),
        batches,
        valid_end: offset.min(bytes.len()) as u64,
        end,
    }
}

/// Damage recovery may repair: only the newest writes, torn by a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub segment_number: u64,
    /// Where the damage starts (the segment is cut here).
    pub offset: u64,
    /// Bytes from `offset` up to the end of the last non-zero block.
    pub damaged_bytes: u64,
    pub reason: String,
}

impl fmt::Display for TornTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "torn tail in segment {} at offset {} ({} bytes): {}",
            self.segment_number, self.offset, self.damaged_bytes, self.reason
        )
    }
}

/// Damage that a crash cannot explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    pub segment_number: u64,
    pub offset: u64,
    pub reason: String,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corruption in segment {} at offset {}: {}",
            self.segment_number, self.offset, self.reason
        )
    }
}

/// What recovery found and what it will do, computed from the scans alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Segments that hold the journal (valid headers, continuous LSNs), oldest first.
    pub kept_segments: Vec<u64>,
    /// Trailing segments that hold nothing: never used (all zeros) or with a torn header.
    pub removed_segments: Vec<u64>,
    /// The torn tail, if any: a cut inside the last kept segment or a torn segment header.
    pub torn_tail: Option<TornTail>,
    /// Where to cut the last kept segment (its `valid_end`) if it has a torn tail.
    pub truncate: Option<(u64, u64)>,
    pub first_lsn: Option<u64>,
    pub next_lsn: u64,
    pub record_count: u64,
    /// Highest generation found in a valid segment header (0 if none).
    pub max_generation: u64,
}

/// Decides, from the scans of every segment file (in ascending segment number), which records
/// the journal holds, whether there is a torn tail, and whether anything is corrupt.
///
/// # Errors
/// [`Corruption`] naming the first segment and offset that a crash cannot explain.
pub fn plan(scans: &[SegmentScan]) -> Result<Plan, Corruption> {
    let mut kept = scans.len();
    let mut removed_segments = Vec::new();
    let mut torn_tail = None;
    // Trailing segments without a valid header and without data: spares (all zeros) or a torn
    // header write at rotation (then nothing was written after the header block: the batch
    // that follows is written only once the header write completed). A torn write may leave
    // garbage anywhere in the header block, not only in the header's 64 bytes; the block size
    // is the previous segment's (the same writer wrote both), or the smallest block, 512,
    // when there is no previous segment.
    while kept > 0 {
        let scan = &scans[kept - 1];
        let header_block_bytes = scans[..kept - 1]
            .iter()
            .rev()
            .find_map(|s| match &s.header {
                HeaderState::Valid(header) => Some(u64::from(header.block_bytes)),
                _ => None,
            })
            .unwrap_or(512);
        match &scan.header {
            HeaderState::Unused => {}
            HeaderState::Invalid {
                reason,
                nonzero_end,
                ..
            } if torn_tail.is_none() && *nonzero_end <= header_block_bytes => {
                torn_tail = Some(TornTail {
                    segment_number: scan.segment_number,
                    offset: 0,
                    damaged_bytes: format::SEGMENT_HEADER_BYTES as u64,
                    reason: format!("segment header: {reason}"),
                });
            }
            _ => break,
        }
        removed_segments.push(scan.segment_number);
        kept -= 1;
    }
    removed_segments.reverse();
    let scans = &scans[..kept];
    let mut next_lsn: Option<u64> = None;
    let mut first_lsn = None;
    let mut record_count = 0;
    let mut max_generation = 0;
    let mut truncate = None;
    for (index, scan) in scans.iter().enumerate() {
        let header = match &scan.header {
            HeaderState::Valid(header) => header,
            HeaderState::Unused => {
                return Err(Corruption {
                    segment_number: scan.segment_number,
                    offset: 0,
                    reason: "segment is all zeros but later segments exist".into(),
                })
            }
            HeaderState::Invalid { reason, .. } => {
                return Err(Corruption {
                    segment_number: scan.segment_number,
                    offset: 0,
                    reason: format!("segment header: {reason}"),
                })
            }
        };
        if let Some(expected) = next_lsn {
            if header.first_lsn != expected {
                return Err(Corruption {
                    segment_number: scan.segment_number,
                    offset: 0,
                    reason: format!(
                        "segment starts at LSN {} but the previous segment ends before LSN {expected}",
                        header.first_lsn
                    ),
                });
            }
        }
        max_generation = max_generation.max(header.generation);
        if first_lsn.is_none() && !scan.batches.is_empty() {
            first_lsn = Some(header.first_lsn);
        }
        record_count += scan.record_count();
        next_lsn = scan.next_lsn();
        if let SegmentEnd::Damaged {
            offset,
            reason,
            damaged_end,
            within_torn_window,
        } = &scan.end
        {
            let last = index + 1 == scans.len();
            if !last || !within_torn_window || torn_tail.is_some() {
                let why = if !last {
                    "damage before the last segment"
                } else if !within_torn_window {
                    "written bytes extend beyond the in-flight window"
                } else {
                    "damage in two places"
                };
                return Err(Corruption {
                    segment_number: scan.segment_number,
                    offset: *offset,
                    reason: format!("{reason} ({why}; non-zero bytes up to offset {damaged_end})"),
                });
            }
            torn_tail = Some(TornTail {
                segment_number: scan.segment_number,
                offset: *offset,
                damaged_bytes: damaged_end - offset,
                reason: reason.to_string(),
            });
            truncate = Some((scan.segment_number, scan.valid_end));
        }
    }
    Ok(Plan {
        kept_segments: scans.iter().map(|s| s.segment_number).collect(),
        removed_segments,
        torn_tail,
        truncate,
        first_lsn,
        next_lsn: next_lsn.unwrap_or(1),
        record_count,
        max_generation,
    })
}

/// Per-segment line of a [`RecoveryReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    pub segment_number: u64,
    pub generation: u64,
    pub first_lsn: u64,
    pub batch_count: u64,
    pub record_count: u64,
    pub valid_bytes: u64,
    pub file_bytes: u64,
}

/// What `Journal::open` found and did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    pub mode: RecoveryMode,
    pub segments: Vec<SegmentReport>,
    pub record_count: u64,
    pub first_lsn: Option<u64>,
    /// LSN of the last record kept (None for an empty journal).
    pub last_lsn: Option<u64>,
    /// LSN the next append gets.
    pub next_lsn: u64,
    /// Generation of this open (written into the segments it creates).
    pub generation: u64,
    pub torn_tail: Option<TornTail>,
    /// Bytes cut off the last segment (the torn tail).
    pub truncated_bytes: u64,
    /// Segments removed: unused spares, half-created segments, and segments without records
    /// (the new segment's header carries their LSN position).
    pub removed_segments: Vec<u64>,
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "recovery ({:?}): {} segments, {} records, LSNs {}..{}, next LSN {}, generation {}",
            self.mode,
            self.segments.len(),
            self.record_count,
            self.first_lsn.map_or("-".to_string(), |l| l.to_string()),
            self.last_lsn.map_or("-".to_string(), |l| l.to_string()),
            self.next_lsn,
            self.generation
        )?;
        match &self.torn_tail {
            Some(torn) => writeln!(f, "{torn}; truncated {} bytes", self.truncated_bytes)?,
            None => writeln!(f, "no torn tail")?,
        }
        if !self.removed_segments.is_empty() {
            writeln!(
                f,
                "removed empty trailing segments {:?}",
                self.removed_segments
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{encode_batch, encode_segment_header, SegmentHeader};
    use proptest::prelude::*;

    const BLOCK: usize = 512;
    const SEGMENT_BYTES: usize = 64 * BLOCK;

    fn header(number: u64, first_lsn: u64) -> SegmentHeader {
        SegmentHeader {
            block_bytes: BLOCK as u32,
            segment_number: number,
            generation: 1,
            first_lsn,
            batch_bytes_max: 4 * BLOCK as u32,
            batches_in_flight_max: 2,
        }
    }

    /// A segment holding `batches` batches of `per_batch` records each; returns the bytes and
    /// the offsets of the batches.
    fn segment(
        number: u64,
        first_lsn: u64,
        batches: usize,
        per_batch: usize,
    ) -> (Vec<u8>, Vec<usize>) {
        let header = header(number, first_lsn);
        let mut bytes = vec![0u8; SEGMENT_BYTES];
        encode_segment_header(&header, &mut bytes);
        let mut offset = BLOCK;
        let mut lsn = first_lsn;
        let mut offsets = Vec::new();
        for _ in 0..batches {
            let payloads: Vec<Vec<u8>> = (0..per_batch)
                .map(|i| vec![(lsn as u8).wrapping_add(i as u8); 100])
                .collect();
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
            offsets.push(offset);
            offset += encode_batch(&mut bytes[offset..], &header, lsn, &refs);
            lsn += per_batch as u64;
        }
        (bytes, offsets)
    }

    #[test]
    fn clean_segment_scans_completely() {
        let (bytes, offsets) = segment(1, 1, 5, 3);
        let scan = scan_segment(1, &bytes);
        assert_eq!(scan.batches.len(), 5);
        assert_eq!(scan.end, SegmentEnd::Clean);
        assert_eq!(scan.record_count(), 15);
        assert_eq!(scan.next_lsn(), Some(16));
        let plan = plan(&[scan]).unwrap();
        assert_eq!(plan.next_lsn, 16);
        assert_eq!(plan.torn_tail, None);
        assert_eq!(offsets[0], BLOCK);
    }

    #[test]
    fn damaged_last_batch_is_a_torn_tail() {
        let (mut bytes, offsets) = segment(1, 1, 5, 3);
        bytes[offsets[4] + 100] ^= 0xFF;
        let scan = scan_segment(1, &bytes);
        assert_eq!(scan.batches.len(), 4);
        assert!(matches!(
            scan.end,
            SegmentEnd::Damaged {
                within_torn_window: true,
                ..
            }
        ));
        let plan = plan(&[scan]).unwrap();
        let torn = plan.torn_tail.unwrap();
        assert_eq!((torn.segment_number, torn.offset), (1, offsets[4] as u64));
        assert_eq!(plan.truncate, Some((1, offsets[4] as u64)));
        assert_eq!(plan.next_lsn, 13);
    }

    #[test]
    fn lost_batch_followed_by_landed_batch_is_torn_within_window() {
        // Two batches in flight: the first lost (zeros), the second landed.
        let (mut bytes, offsets) = segment(1, 1, 5, 1);
        bytes[offsets[3]..offsets[4]].fill(0);
        let scan = scan_segment(1, &bytes);
        assert_eq!(scan.batches.len(), 3);
        let plan = plan(&[scan]).unwrap();
        assert_eq!(plan.torn_tail.unwrap().offset, offsets[3] as u64);
        assert_eq!(plan.next_lsn, 4);
    }

    #[test]
    fn damage_before_the_window_is_corruption() {
        let (mut bytes, offsets) = segment(1, 1, 16, 1);
        bytes[offsets[1] + 60] ^= 1;
        let scan = scan_segment(1, &bytes);
        assert!(matches!(
            scan.end,
            SegmentEnd::Damaged {
                within_torn_window: false,
                ..
            }
        ));
        let error = plan(&[scan]).unwrap_err();
        assert_eq!((error.segment_number, error.offset), (1, offsets[1] as u64));
    }

    #[test]
    fn damage_in_an_older_segment_is_corruption() {
        let (mut first, offsets) = segment(1, 1, 3, 2);
        let (second, _) = segment(2, 7, 2, 2);
        first[offsets[2] + 50] ^= 4;
        let error = plan(&[scan_segment(1, &first), scan_segment(2, &second)]).unwrap_err();
        assert_eq!(error.segment_number, 1);
    }

    #[test]
    fn gap_between_segments_is_corruption() {
        let (first, _) = segment(1, 1, 3, 2);
        let (third, _) = segment(3, 9, 2, 2);
        let error = plan(&[scan_segment(1, &first), scan_segment(3, &third)]).unwrap_err();
        assert_eq!((error.segment_number, error.offset), (3, 0));
    }

    #[test]
    fn unused_and_half_created_trailing_segments_are_removed() {
        let (first, _) = segment(1, 1, 3, 2);
        let mut torn_header = vec![0u8; SEGMENT_BYTES];
        torn_header[..20].fill(0x5A);
        let unused = vec![0u8; SEGMENT_BYTES];
        let scans = [
            scan_segment(1, &first),
            scan_segment(2, &torn_header),
            scan_segment(3, &unused),
        ];
        let plan = plan(&scans).unwrap();
        assert_eq!(plan.kept_segments, vec![1]);
        assert_eq!(plan.removed_segments, vec![2, 3]);
        assert_eq!(plan.torn_tail.unwrap().segment_number, 2);
        assert_eq!(plan.next_lsn, 7);
    }

    #[test]
    fn empty_segment_keeps_its_first_lsn() {
        let (first, _) = segment(1, 1, 1, 1);
        let (second, _) = segment(2, 2, 0, 0);
        let plan = plan(&[scan_segment(1, &first), scan_segment(2, &second)]).unwrap();
        assert_eq!(plan.next_lsn, 2);
        let (alone, _) = segment(5, 1000, 0, 0);
        assert_eq!(
            super::plan(&[scan_segment(5, &alone)]).unwrap().next_lsn,
            1000
        );
    }

    #[test]
    fn stale_batches_from_another_generation_end_the_segment() {
        // A batch of generation 1 written into a segment of generation 2 (a reused file).
        let (old, offsets) = segment(1, 1, 3, 1);
        let mut bytes = old.clone();
        let newer = SegmentHeader {
            generation: 2,
            ..header(1, 1)
        };
        encode_segment_header(&newer, &mut bytes);
        let scan = scan_segment(1, &bytes);
        assert!(scan.batches.is_empty());
        assert!(matches!(
            scan.end,
            SegmentEnd::Damaged {
                reason: FormatError::Foreign { generation: 1, .. },
                ..
            }
        ));
        assert_eq!(scan.valid_end, offsets[0] as u64);
    }

    #[test]
    fn torn_window_holds_one_batch_more_than_the_lanes() {
        // The ring holds batches_in_flight_max + 1 = 3 unacknowledged batches of up to 2048
        // bytes: the first lost and the last landed spans the whole 6144-byte window.
        let (mut bytes, offsets) = segment(1, 1, 16, 1);
        bytes[offsets[4]..offsets[5]].fill(0);
        let scan = scan_segment(1, &bytes[..offsets[4] + 6144]);
        assert_eq!(plan(&[scan]).unwrap().next_lsn, 5);
        // One written block further is beyond any crash.
        bytes[offsets[4] + 6144] = 1;
        assert!(plan(&[scan_segment(1, &bytes)]).is_err());
    }

    #[test]
    fn torn_header_block_with_garbage_is_a_torn_tail() {
        let (first, _) = segment(1, 1, 3, 2);
        let mut torn = vec![0u8; SEGMENT_BYTES];
        torn[..BLOCK].fill(0xA5);
        let plan_of = |second: &[u8]| plan(&[scan_segment(1, &first), scan_segment(2, second)]);
        let torn_plan = plan_of(&torn).unwrap();
        assert_eq!(torn_plan.removed_segments, vec![2]);
        assert_eq!(torn_plan.torn_tail.unwrap().segment_number, 2);
        // Non-zero bytes past the header block: something was written after the header.
        torn[BLOCK] = 1;
        assert!(plan_of(&torn).is_err());
    }

    proptest! {
        /// Garbage, or a valid segment with random bytes overwritten, never panics the scan or
        /// the planner, and whatever the planner keeps is a verified prefix.
        #[test]
        fn scan_and_plan_survive_arbitrary_damage(
            writes in proptest::collection::vec((0usize..SEGMENT_BYTES, proptest::collection::vec(any::<u8>(), 1..600)), 0..6),
            garbage_segment in proptest::collection::vec(any::<u8>(), 0..4096),
        ) {
            let (mut bytes, _) = segment(1, 1, 12, 2);
            for (at, data) in &writes {
                let end = (*at + data.len()).min(bytes.len());
                bytes[*at..end].copy_from_slice(&data[..end - at]);
            }
            let scans = [scan_segment(1, &bytes), scan_segment(2, &garbage_segment)];
            if let Ok(plan) = plan(&scans) {
                prop_assert!(plan.next_lsn >= 1);
                prop_assert!(plan.record_count <= 24);
                for batch in &scans[0].batches {
                    prop_assert!(batch.first_lsn + u64::from(batch.record_count) <= plan.next_lsn);
                }
            }
        }

        /// Truncating a segment anywhere or zeroing/garbling any suffix never yields a record
        /// that was not written, and always keeps every batch before the damage.
        #[test]
        fn any_damaged_suffix_keeps_exactly_the_prefix(cut in BLOCK..SEGMENT_BYTES, garbage in any::<u8>()) {
            let (mut bytes, offsets) = segment(1, 1, 10, 2);
            let end = offsets[9] + 4 * BLOCK;
            let cut = cut.min(end);
            for byte in &mut bytes[cut..end] {
                *byte = garbage;
            }
            let scan = scan_segment(1, &bytes);
            let intact = offsets.iter().filter(|&&o| o + 512 <= cut).count();
            prop_assert!(scan.batches.len() >= intact);
            for (index, batch) in scan.batches.iter().enumerate() {
                prop_assert_eq!(batch.offset as usize, offsets[index]);
                prop_assert_eq!(batch.first_lsn, 1 + 2 * index as u64);
            }
        }
    }
}
