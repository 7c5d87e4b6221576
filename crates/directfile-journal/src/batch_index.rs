//! Where each batch of each segment starts, by LSN: readers seek to the batch that holds the
//! LSN they start at, and read only the bytes of the range they were asked for, instead of
//! scanning the segment from its start.
//!
//! Filled at open from the recovery scan (every valid batch of every kept segment) and as
//! batches are written (when a lane or a leading appender takes one, its offset is fixed).
//! One entry of 16 bytes per batch: a 64 MiB segment of 4 KiB batches costs 256 KiB.

use std::collections::BTreeMap;

use crate::recovery::SegmentScan;

/// Where a reader starts in a segment, and where the range it was asked for ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seek {
    /// Offset of the batch holding the first LSN wanted.
    pub offset: u64,
    /// First LSN of that batch.
    pub first_lsn: u64,
    /// Offset of the first batch after the range (its first LSN is past the last one wanted),
    /// when the segment has one: the range's bytes end there.
    pub end_offset: Option<u64>,
    /// Offset of the segment's last known batch: without `end_offset`, the range ends within
    /// a batch's size of it.
    pub last_offset: u64,
}

/// Per segment, its batches as `(first_lsn, offset)`, in offset (and LSN) order.
#[derive(Debug, Default)]
pub(crate) struct BatchIndex {
    segments: BTreeMap<u64, Vec<(u64, u64)>>,
}

impl BatchIndex {
    /// The batches of the kept segments, as recovery found them; a segment cut by a truncation
    /// keeps only its batches below the cut (`cuts`: segment number, end LSN).
    pub fn from_scans<'a>(
        scans: impl IntoIterator<Item = &'a SegmentScan>,
        cuts: &[(u64, u64)],
    ) -> BatchIndex {
        let mut index = BatchIndex::default();
        for scan in scans {
            let end = cuts
                .iter()
                .find(|cut| cut.0 == scan.segment_number)
                .map_or(u64::MAX, |cut| cut.1);
            let batches = scan
                .batches
                .iter()
                .filter(|batch| batch.first_lsn < end)
                .map(|batch| (batch.first_lsn, batch.offset))
                .collect();
            index.segments.insert(scan.segment_number, batches);
        }
        index
    }

    /// Notes that the batch of `first_lsn` goes at `offset` in `segment`.
    pub fn record(&mut self, segment: u64, first_lsn: u64, offset: u64) {
        let batches = self.segments.entry(segment).or_default();
        // A truncation starts a new segment, so LSNs only grow within one; a batch recorded
        // again (never, today) replaces nothing out of order.
        debug_assert!(batches.last().is_none_or(|last| last.1 < offset));
        batches.push((first_lsn, offset));
    }

    /// Forgets a removed segment.
    pub fn remove(&mut self, segment: u64) {
        self.segments.remove(&segment);
    }

    /// Where to read LSNs `from..=until` of `segment`; `None` if the segment has no batch at or
    /// before `from` (the caller reads from the segment's start).
    pub fn seek(&self, segment: u64, from: u64, until: u64) -> Option<Seek> {
        let batches = self.segments.get(&segment)?;
        let holding = batches.partition_point(|&(first, _)| first <= from);
        let (first_lsn, offset) = *batches.get(holding.checked_sub(1)?)?;
        let after = batches.partition_point(|&(first, _)| first <= until);
        Some(Seek {
            offset,
            first_lsn,
            end_offset: batches.get(after).map(|&(_, offset)| offset),
            last_offset: batches.last().map_or(offset, |&(_, offset)| offset),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeks_to_the_batch_holding_the_lsn_and_ends_after_the_range() {
        let mut index = BatchIndex::default();
        for (first, offset) in [(1, 4096), (5, 8192), (9, 16384), (20, 20480)] {
            index.record(7, first, offset);
        }
        let seek = |from, until| index.seek(7, from, until);
        assert_eq!(
            seek(6, 6),
            Some(Seek {
                offset: 8192,
                first_lsn: 5,
                end_offset: Some(16384),
                last_offset: 20480
            })
        );
        assert_eq!(
            seek(1, 9),
            Some(Seek {
                offset: 4096,
                first_lsn: 1,
                end_offset: Some(20480),
                last_offset: 20480
            })
        );
        assert_eq!(
            seek(25, u64::MAX),
            Some(Seek {
                offset: 20480,
                first_lsn: 20,
                end_offset: None,
                last_offset: 20480
            })
        );
        assert_eq!(index.seek(8, 1, 1), None);
        index.remove(7);
        assert_eq!(index.seek(7, 6, 6), None);
    }
}
