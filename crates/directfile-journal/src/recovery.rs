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

pub use crate::format::HeadState;
use crate::format::{self, FormatError, Head, SegmentHeader};

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
    /// LSN of its first record.
    pub first_lsn: u64,
    /// Records in it.
    pub record_count: u32,
}

/// How the bytes of a segment end after its last valid batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Only zeros (never-written, preallocated space) or end of file.
    Clean,
    /// Bytes at `offset` are not a valid batch and non-zero bytes reach up to `damaged_end`.
    Damaged {
        /// Where the first invalid batch starts.
        offset: u64,
        /// Why it is invalid.
        reason: FormatError,
        /// Just past the last block with a non-zero byte.
        damaged_end: u64,
        /// Whether the damage fits in the window of batches a crash can leave unfinished.
        within_torn_window: bool,
    },
}

/// The state of a segment's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderState {
    /// A valid header.
    Valid(SegmentHeader),
    /// The whole file is zeros: a preallocated segment that was never used.
    Unused,
    /// The header is invalid; `rest_is_zero` tells whether anything was written after it, and
    /// `nonzero_end` is the offset just past the last non-zero byte of the file.
    Invalid {
        /// Why the header is invalid.
        reason: FormatError,
        /// Whether every byte after the header is zero.
        rest_is_zero: bool,
        /// Just past the last non-zero byte of the file.
        nonzero_end: u64,
    },
}

/// The result of scanning one segment's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// The segment's number (its file name).
    pub segment_number: u64,
    /// The file's length.
    pub file_bytes: u64,
    /// Its header.
    pub header: HeaderState,
    /// Every valid batch, in order (the valid prefix).
    pub batches: Vec<BatchSummary>,
    /// Offset just past the last valid batch (past the header block if there is none).
    pub valid_end: u64,
    /// What follows the valid prefix.
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
    /// The segment it is in.
    pub segment_number: u64,
    /// Where the damage starts (the segment is cut here).
    pub offset: u64,
    /// Bytes from `offset` up to the end of the last non-zero block.
    pub damaged_bytes: u64,
    /// What the first damaged batch failed.
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
    /// The first segment a crash cannot explain.
    pub segment_number: u64,
    /// Where in it.
    pub offset: u64,
    /// What is wrong, naming the segments concerned.
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

/// What recovery found and what it will do, computed from the HEAD and the scans alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Segments that hold the journal (valid headers, continuous LSNs), oldest first.
    pub kept_segments: Vec<u64>,
    /// Segments above the high-water mark: they hold nothing (the segment being started, or
    /// the spare being made, when the machine stopped).
    pub removed_segments: Vec<u64>,
    /// Segments whose records an explicit truncation voided as a whole.
    pub void_segments: Vec<u64>,
    /// Kept segments cut by an explicit truncation: `(segment, end_lsn)`, their records at
    /// and above `end_lsn` are void (the next kept segment starts there, with the TRUNCATES flag).
    pub cuts: Vec<(u64, u64)>,
    /// Kept segments without records that can go once a newer segment is started: the next
    /// segment's header carries their LSN position, and no truncation depends on them.
    pub empty_segments: Vec<u64>,
    /// The torn tail, if any: a cut inside the last kept segment or a torn segment header.
    pub torn_tail: Option<TornTail>,
    /// Where to cut the last kept segment (its `valid_end`) if it has a torn tail.
    pub truncate: Option<(u64, u64)>,
    /// LSN of the first record kept (None when no record is).
    pub first_lsn: Option<u64>,
    /// LSN the next record gets.
    pub next_lsn: u64,
    /// Records kept.
    pub record_count: u64,
    /// Highest generation found in a valid segment header or the HEAD (0 if none).
    pub max_generation: u64,
    /// The HEAD's value, when it has a valid slot.
    pub head: Option<Head>,
}

/// One kept segment while the chain is built.
struct Link {
    number: u64,
    first_lsn: u64,
    /// LSN after its last record on disk.
    next_lsn: u64,
    /// LSN after its last record that counts (lower than `next_lsn` when a truncation cut it).
    end_lsn: u64,
    has_records: bool,
}

/// A list of segment numbers for messages: "4, 5 and 6".
fn numbers_text(numbers: &[u64]) -> String {
    match numbers {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!(
            "{} and {last}",
            rest.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Decides, from the HEAD and the scans of every segment file (in ascending segment number),
/// which records the journal holds, whether there is a torn tail, and whether anything is
/// corrupt. The rules are in [`format`](mod@crate::format) ("Rules that make a lost tail
/// visible", "Explicit truncation").
///
/// # Errors
/// [`Corruption`] naming the first segment and offset (and, for a lost tail, every segment)
/// that a crash cannot explain.
pub fn plan(head: &HeadState, scans: &[SegmentScan]) -> Result<Plan, Corruption> {
    // A segment of another format version is not damage: it is a journal this build does not
    // read (no migration), never to be cut or removed as a torn header.
    for scan in scans {
        if let HeaderState::Invalid {
            reason: FormatError::UnsupportedVersion(version),
            ..
        } = &scan.header
        {
            return Err(Corruption {
                segment_number: scan.segment_number,
                offset: 0,
                reason: format!(
                    "segment {} is in journal format version {version}; this build reads version {}",
                    scan.segment_number,
                    format::FORMAT_VERSION
                ),
            });
        }
    }
    let mark = match head {
        HeadState::Valid { head, .. } => Some(head),
        HeadState::Absent | HeadState::Unreadable { .. } => None,
    };
    let mark_number = mark.map_or(0, |h| h.segment_number);
    let (below, above) = scans.split_at(scans.partition_point(|s| s.segment_number <= mark_number));
    // Whether a segment holds anything but a header: records, or bytes that are not zeros.
    let holds_records = |scan: &SegmentScan| match scan.header {
        HeaderState::Unused => false,
        HeaderState::Valid(_) => !scan.batches.is_empty() || scan.end != SegmentEnd::Clean,
        HeaderState::Invalid { .. } => true,
    };
    let Some(mark) = mark else {
        // No readable HEAD: only a journal that never held a record (a crash while it was first
        // created) may lack one.
        let why = match head {
            HeadState::Unreadable { slot_errors } => format!(
                "the HEAD file is unreadable ({})",
                slot_errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            _ => "the HEAD file is missing".to_string(),
        };
        if let Some(scan) = scans.iter().find(|s| holds_records(s)) {
            // A header write leaves non-zero bytes only in its block; 4096 is the journal's
            // default block (batches start after it), and the largest a crash of the first
            // open leaves without a custom `block_bytes`.
            let torn_header_only = matches!(
                &scan.header,
                HeaderState::Invalid { nonzero_end, .. } if *nonzero_end <= 4096
            );
            if !(torn_header_only && scans.len() == 1) {
                return Err(Corruption {
                    segment_number: scan.segment_number,
                    offset: 0,
                    reason: format!(
                        "{why}, but segment {} holds data: the HEAD names the newest segment, \
                         without it a lost tail cannot be told apart",
                        scan.segment_number
                    ),
                });
            }
        }
        if scans.len() > 1 {
            let numbers: Vec<u64> = scans.iter().map(|s| s.segment_number).collect();
            return Err(Corruption {
                segment_number: scans[0].segment_number,
                offset: 0,
                reason: format!(
                    "{why} and there are {} segments ({}); a journal that crashed while it was \
                     created has at most one",
                    scans.len(),
                    numbers_text(&numbers)
                ),
            });
        }
        let torn_tail = scans.first().and_then(|scan| match &scan.header {
            HeaderState::Invalid { reason, .. } => Some(TornTail {
                segment_number: scan.segment_number,
                offset: 0,
                damaged_bytes: format::SEGMENT_HEADER_BYTES as u64,
                reason: format!("segment header: {reason}"),
            }),
            _ => None,
        });
        let max_generation = scans
            .iter()
            .filter_map(|s| match &s.header {
                HeaderState::Valid(header) => Some(header.generation),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        return Ok(Plan {
            kept_segments: Vec::new(),
            removed_segments: scans.iter().map(|s| s.segment_number).collect(),
            void_segments: Vec::new(),
            cuts: Vec::new(),
            empty_segments: Vec::new(),
            torn_tail,
            truncate: None,
            first_lsn: None,
            next_lsn: 1,
            record_count: 0,
            max_generation,
            head: None,
        });
    };

    // Above the high-water mark: at most one segment, holding nothing.
    if above.len() > 1 {
        let numbers: Vec<u64> = above.iter().map(|s| s.segment_number).collect();
        return Err(Corruption {
            segment_number: above[0].segment_number,
            offset: 0,
            reason: format!(
                "segments {} lie above the high-water mark (segment {mark_number}, in HEAD); a \
                 crash leaves at most one, holding no records",
                numbers_text(&numbers)
            ),
        });
    }
    let header_block_bytes = below
        .iter()
        .rev()
        .find_map(|s| match &s.header {
            HeaderState::Valid(header) => Some(u64::from(header.block_bytes)),
            _ => None,
        })
        .unwrap_or(512);
    let mut torn_tail = None;
    if let Some(scan) = above.first() {
        match &scan.header {
            HeaderState::Unused => {}
            HeaderState::Valid(_) if scan.batches.is_empty() && scan.end == SegmentEnd::Clean => {}
            HeaderState::Invalid {
                reason,
                nonzero_end,
                ..
            } if *nonzero_end <= header_block_bytes => {
                torn_tail = Some(TornTail {
                    segment_number: scan.segment_number,
                    offset: 0,
                    damaged_bytes: format::SEGMENT_HEADER_BYTES as u64,
                    reason: format!("segment header: {reason}"),
                });
            }
            _ => {
                return Err(Corruption {
                    segment_number: scan.segment_number,
                    offset: 0,
                    reason: format!(
                        "segment {} lies above the high-water mark (segment {mark_number}, in \
                         HEAD) but holds data: no batch is written into a segment before the \
                         HEAD names it",
                        scan.segment_number
                    ),
                })
            }
        }
    }

    // The segment the HEAD names must be there, as the HEAD describes it.
    let zeroed_tail: Vec<u64> = below
        .iter()
        .rev()
        .take_while(|s| matches!(s.header, HeaderState::Unused))
        .map(|s| s.segment_number)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let lost = |what: String| Corruption {
        segment_number: mark_number,
        offset: 0,
        reason: format!(
            "{what}; the HEAD names it as the newest started segment (first LSN {}, generation \
             {}), so acknowledged records may have been lost",
            mark.first_lsn, mark.generation
        ),
    };
    match below.last() {
        Some(scan) if scan.segment_number == mark_number => match &scan.header {
            HeaderState::Valid(header)
                if header.first_lsn == mark.first_lsn && header.generation == mark.generation => {}
            HeaderState::Valid(header) => {
                return Err(lost(format!(
                    "segment {mark_number} starts at LSN {} in generation {}",
                    header.first_lsn, header.generation
                )))
            }
            HeaderState::Unused => {
                return Err(lost(if zeroed_tail.len() > 1 {
                    format!("segments {} are all zeros", numbers_text(&zeroed_tail))
                } else {
                    format!("segment {mark_number} is all zeros")
                }))
            }
            HeaderState::Invalid { reason, .. } => {
                return Err(lost(format!(
                    "segment {mark_number} has an invalid header ({reason})"
                )))
            }
        },
        _ => {
            let mut what = format!("segment {mark_number} is missing");
            if !zeroed_tail.is_empty() {
                what.push_str(&format!(
                    " and segments {} are all zeros",
                    numbers_text(&zeroed_tail)
                ));
            }
            return Err(lost(what));
        }
    }

    // The chain of segments up to the mark: valid headers, continuous LSNs (or an explicit
    // truncation), damage only at the tail of the last one.
    let mut chain: Vec<Link> = Vec::new();
    let mut void_segments = Vec::new();
    let mut max_generation = mark.generation;
    let mut truncate = None;
    for (index, scan) in below.iter().enumerate() {
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
        if let Some(previous) = chain.last() {
            let expected = previous.end_lsn;
            if header.first_lsn != expected {
                if !(header.truncates && header.first_lsn < expected) {
                    return Err(Corruption {
                        segment_number: scan.segment_number,
                        offset: 0,
                        reason: format!(
                            "segment starts at LSN {} but the previous segment ends before LSN {expected}",
                            header.first_lsn
                        ),
                    });
                }
                // An explicit truncation: earlier records at and above first_lsn are void.
                while chain
                    .last()
                    .is_some_and(|link| link.first_lsn >= header.first_lsn)
                {
                    void_segments.push(chain.pop().expect("a link").number);
                }
                if let Some(cut) = chain.last_mut() {
                    cut.end_lsn = header.first_lsn;
                }
            }
        }
        max_generation = max_generation.max(header.generation);
        let next_lsn = scan.next_lsn().expect("a valid header");
        if let SegmentEnd::Damaged {
            offset,
            reason,
            damaged_end,
            within_torn_window,
        } = &scan.end
        {
            let last = index + 1 == below.len();
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
        chain.push(Link {
            number: scan.segment_number,
            first_lsn: header.first_lsn,
            next_lsn,
            end_lsn: next_lsn,
            has_records: !scan.batches.is_empty(),
        });
    }
    void_segments.sort_unstable();
    // An empty segment may go unless a truncation depends on it: its TRUNCATES flag cuts the
    // segment before it (which holds records beyond its first LSN), and without it the next
    // segment would start below where that one ends.
    let mut empty_segments = Vec::new();
    for (index, link) in chain.iter().enumerate() {
        let cuts_previous = index > 0 && chain[index - 1].next_lsn != link.first_lsn;
        if !link.has_records && !cuts_previous {
            empty_segments.push(link.number);
        }
    }
    let counted = |link: &Link| link.end_lsn - link.first_lsn;
    Ok(Plan {
        kept_segments: chain.iter().map(|link| link.number).collect(),
        removed_segments: above.iter().map(|s| s.segment_number).collect(),
        void_segments,
        cuts: chain
            .iter()
            .filter(|link| link.end_lsn < link.next_lsn)
            .map(|link| (link.number, link.end_lsn))
            .collect(),
        empty_segments,
        torn_tail,
        truncate,
        first_lsn: chain
            .iter()
            .find(|link| counted(link) > 0)
            .map(|link| link.first_lsn),
        next_lsn: chain.last().expect("the mark's segment").end_lsn,
        record_count: chain.iter().map(counted).sum(),
        max_generation,
        head: Some(mark.clone()),
    })
}

/// The HEAD and the segment scans of a disk image keyed by segment number, the HEAD file under
/// [`HEAD_NUMBER`](crate::storage::HEAD_NUMBER) (as [`MemStorage::files`](crate::MemStorage::files)
/// and its crash images hold them): what [`plan`] takes.
pub fn scan_image(
    files: &std::collections::BTreeMap<u64, Vec<u8>>,
) -> (HeadState, Vec<SegmentScan>) {
    let head = format::decode_head(files.get(&crate::storage::HEAD_NUMBER).map(Vec::as_slice));
    let scans = files
        .iter()
        .filter(|(&number, _)| number != crate::storage::HEAD_NUMBER)
        .map(|(&number, bytes)| scan_segment(number, bytes))
        .collect();
    (head, scans)
}

/// Per-segment line of a [`RecoveryReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// The segment's number.
    pub segment_number: u64,
    /// The generation that wrote it.
    pub generation: u64,
    /// LSN of its first record.
    pub first_lsn: u64,
    /// Valid batches in it.
    pub batch_count: u64,
    /// Records kept from it (fewer than its batches hold when a truncation cut it).
    pub record_count: u64,
    /// Bytes up to the end of its last valid batch.
    pub valid_bytes: u64,
    /// The file's length when it was scanned.
    pub file_bytes: u64,
}

/// What `Journal::open` found and did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// The mode recovery ran in.
    pub mode: RecoveryMode,
    /// The segments kept, oldest first.
    pub segments: Vec<SegmentReport>,
    /// Records kept.
    pub record_count: u64,
    /// LSN of the first record kept (None for an empty journal).
    pub first_lsn: Option<u64>,
    /// LSN of the last record kept (None for an empty journal).
    pub last_lsn: Option<u64>,
    /// LSN the next append gets.
    pub next_lsn: u64,
    /// Generation of this open (written into the segments it creates).
    pub generation: u64,
    /// The torn tail cut off, if there was one.
    pub torn_tail: Option<TornTail>,
    /// Bytes cut off the last segment (the torn tail).
    pub truncated_bytes: u64,
    /// Segments removed: unused spares, half-created segments, and segments without records
    /// (the new segment's header carries their LSN position).
    pub removed_segments: Vec<u64>,
    /// The journal's metadata (`Journal::set_meta`), from the HEAD.
    pub meta: Vec<u8>,
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
            truncates: false,
        }
    }

    /// A HEAD naming segment `number` (generation 1, as `header` makes them).
    fn head_at(number: u64, first_lsn: u64) -> HeadState {
        HeadState::Valid {
            head: Head {
                sequence: 1,
                segment_number: number,
                first_lsn,
                generation: 1,
                meta: Vec::new(),
            },
            slot_bytes: 512,
        }
    }

    /// The plan with a HEAD naming the newest segment that has a valid header, as the journal
    /// leaves it.
    fn plan_all(scans: &[SegmentScan]) -> Result<Plan, Corruption> {
        let head = scans
            .iter()
            .rev()
            .find_map(|s| match &s.header {
                HeaderState::Valid(h) => Some(head_at(h.segment_number, h.first_lsn)),
                _ => None,
            })
            .unwrap_or(HeadState::Absent);
        plan(&head, scans)
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
        let plan = plan_all(&[scan]).unwrap();
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
        let plan = plan_all(&[scan]).unwrap();
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
        let plan = plan_all(&[scan]).unwrap();
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
        let error = plan_all(&[scan]).unwrap_err();
        assert_eq!((error.segment_number, error.offset), (1, offsets[1] as u64));
    }

    #[test]
    fn damage_in_an_older_segment_is_corruption() {
        let (mut first, offsets) = segment(1, 1, 3, 2);
        let (second, _) = segment(2, 7, 2, 2);
        first[offsets[2] + 50] ^= 4;
        let error = plan_all(&[scan_segment(1, &first), scan_segment(2, &second)]).unwrap_err();
        assert_eq!(error.segment_number, 1);
    }

    #[test]
    fn gap_between_segments_is_corruption() {
        let (first, _) = segment(1, 1, 3, 2);
        let (third, _) = segment(3, 9, 2, 2);
        let error = plan_all(&[scan_segment(1, &first), scan_segment(3, &third)]).unwrap_err();
        assert_eq!((error.segment_number, error.offset), (3, 0));
    }

    #[test]
    fn one_unused_or_half_created_segment_above_the_mark_is_removed() {
        let (first, _) = segment(1, 1, 3, 2);
        let mut torn_header = vec![0u8; SEGMENT_BYTES];
        torn_header[..20].fill(0x5A);
        let unused = vec![0u8; SEGMENT_BYTES];
        let (started, _) = segment(2, 7, 0, 0);
        for (above, torn) in [(&torn_header, true), (&unused, false), (&started, false)] {
            let plan = plan(
                &head_at(1, 1),
                &[scan_segment(1, &first), scan_segment(2, above)],
            )
            .unwrap();
            assert_eq!(plan.kept_segments, vec![1]);
            assert_eq!(plan.removed_segments, vec![2]);
            assert_eq!(plan.torn_tail.is_some(), torn);
            assert_eq!(plan.next_lsn, 7);
        }
        // Two above the mark: more than any crash leaves.
        let error = plan(
            &head_at(1, 1),
            &[
                scan_segment(1, &first),
                scan_segment(2, &torn_header),
                scan_segment(3, &unused),
            ],
        )
        .unwrap_err();
        assert_eq!(error.segment_number, 2);
        assert!(
            error.reason.contains("segments 2 and 3 lie above"),
            "{error}"
        );
        // A batch above the mark: it was written before the HEAD named its segment.
        let (ahead, _) = segment(2, 7, 1, 1);
        let error = plan(
            &head_at(1, 1),
            &[scan_segment(1, &first), scan_segment(2, &ahead)],
        )
        .unwrap_err();
        assert!(error.reason.contains("holds data"), "{error}");
    }

    #[test]
    fn a_zeroed_tail_is_corruption_naming_the_segments() {
        // Eight segments of records, the HEAD naming the eighth; then the six newest files
        // (the spare 9 included) are zeroed.
        let mut files: Vec<Vec<u8>> = (0..8)
            .map(|i| segment(i as u64 + 1, 1 + 2 * i as u64, 1, 2).0)
            .collect();
        files.push(vec![0u8; SEGMENT_BYTES]);
        for file in &mut files[3..] {
            file.fill(0);
        }
        let scans: Vec<SegmentScan> = files
            .iter()
            .enumerate()
            .map(|(i, bytes)| scan_segment(i as u64 + 1, bytes))
            .collect();
        let error = plan(&head_at(8, 15), &scans).unwrap_err();
        assert_eq!(error.segment_number, 8);
        assert!(
            error
                .reason
                .contains("segments 4, 5, 6, 7 and 8 are all zeros"),
            "{error}"
        );
        assert!(error
            .reason
            .contains("acknowledged records may have been lost"));
        // The newest alone, and the newest removed.
        let error = plan(&head_at(8, 15), &scans[..8]).unwrap_err();
        assert_eq!(error.segment_number, 8);
        let mut intact: Vec<SegmentScan> = (0..7)
            .map(|i| {
                scan_segment(
                    i as u64 + 1,
                    &segment(i as u64 + 1, 1 + 2 * i as u64, 1, 2).0,
                )
            })
            .collect();
        let error = plan(&head_at(8, 15), &intact).unwrap_err();
        assert!(error.reason.contains("segment 8 is missing"), "{error}");
        // A segment that is not the one the HEAD describes (another generation or start).
        intact.push(scan_segment(8, &segment(8, 99, 1, 2).0));
        let error = plan(&head_at(8, 15), &intact).unwrap_err();
        assert!(error.reason.contains("starts at LSN 99"), "{error}");
    }

    #[test]
    fn another_format_version_is_named_never_cut() {
        let (mut old, _) = segment(1, 1, 2, 2);
        old[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&old[0..60]);
        old[60..64].copy_from_slice(&crc.to_le_bytes());
        for head in [HeadState::Absent, head_at(1, 1)] {
            let error = plan(&head, &[scan_segment(1, &old)]).unwrap_err();
            assert_eq!(
                error.reason,
                format!(
                    "segment 1 is in journal format version 1; this build reads version {}",
                    format::FORMAT_VERSION
                )
            );
        }
    }

    #[test]
    fn without_a_head_only_a_journal_without_records_opens() {
        let (empty, _) = segment(1, 1, 0, 0);
        let fresh = plan(&HeadState::Absent, &[scan_segment(1, &empty)]).unwrap();
        assert_eq!((fresh.next_lsn, fresh.record_count), (1, 0));
        assert_eq!(fresh.removed_segments, vec![1]);
        assert_eq!(plan(&HeadState::Absent, &[]).unwrap().next_lsn, 1);
        let (full, _) = segment(1, 1, 2, 2);
        let error = plan(&HeadState::Absent, &[scan_segment(1, &full)]).unwrap_err();
        assert!(error.reason.contains("the HEAD file is missing"), "{error}");
        let unreadable = format::decode_head(Some(&[0x11u8; 1024]));
        assert!(matches!(unreadable, HeadState::Unreadable { .. }));
        let error = plan(&unreadable, &[scan_segment(1, &full)]).unwrap_err();
        assert!(
            error.reason.contains("the HEAD file is unreadable"),
            "{error}"
        );
        let (empty_too, _) = segment(2, 1, 0, 0);
        let error = plan(
            &HeadState::Absent,
            &[scan_segment(1, &empty), scan_segment(2, &empty_too)],
        )
        .unwrap_err();
        assert!(error.reason.contains("at most one"), "{error}");
    }

    #[test]
    fn a_truncating_segment_cuts_the_records_before_it() {
        // Segment 1: LSNs 1..=12; segment 2 truncates at 5 and holds 5..=8.
        let (first, _) = segment(1, 1, 4, 3);
        let truncating = SegmentHeader {
            truncates: true,
            ..header(2, 5)
        };
        let mut second = vec![0u8; SEGMENT_BYTES];
        encode_segment_header(&truncating, &mut second);
        let payloads = [[1u8; 10]; 4];
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        encode_batch(&mut second[BLOCK..], &truncating, 5, &refs);
        let scans = [scan_segment(1, &first), scan_segment(2, &second)];
        let plan = plan(&head_at(2, 5), &scans).unwrap();
        assert_eq!(plan.kept_segments, vec![1, 2]);
        assert_eq!(plan.cuts, vec![(1, 5)]);
        assert_eq!((plan.record_count, plan.next_lsn), (4 + 4, 9));
        assert!(plan.empty_segments.is_empty());
        // The same start without the flag is a break in the LSN sequence.
        let mut unflagged = second.clone();
        encode_segment_header(&header(2, 5), &mut unflagged);
        let error = super::plan(
            &head_at(2, 5),
            &[scan_segment(1, &first), scan_segment(2, &unflagged)],
        )
        .unwrap_err();
        assert!(error.reason.contains("starts at LSN 5"), "{error}");
        // An empty truncating segment is kept: without it segment 1's records would count.
        let mut empty = vec![0u8; SEGMENT_BYTES];
        encode_segment_header(&truncating, &mut empty);
        let (after, _) = segment(3, 5, 1, 1);
        let plan = super::plan(
            &head_at(3, 5),
            &[
                scan_segment(1, &first),
                scan_segment(2, &empty),
                scan_segment(3, &after),
            ],
        )
        .unwrap();
        assert_eq!(plan.cuts, vec![(1, 5)]);
        assert!(plan.empty_segments.is_empty());
        assert_eq!((plan.record_count, plan.next_lsn), (5, 6));
    }

    #[test]
    fn a_truncation_below_a_segment_voids_it_whole() {
        let (first, _) = segment(1, 1, 2, 3);
        let (second, _) = segment(2, 7, 2, 3);
        let truncating = SegmentHeader {
            truncates: true,
            ..header(3, 4)
        };
        let mut third = vec![0u8; SEGMENT_BYTES];
        encode_segment_header(&truncating, &mut third);
        let scans = [
            scan_segment(1, &first),
            scan_segment(2, &second),
            scan_segment(3, &third),
        ];
        let plan = plan(&head_at(3, 4), &scans).unwrap();
        assert_eq!(plan.kept_segments, vec![1, 3]);
        assert_eq!(plan.void_segments, vec![2]);
        assert_eq!(plan.cuts, vec![(1, 4)]);
        assert_eq!((plan.record_count, plan.next_lsn), (3, 4));
        // Truncating everything: the first record kept stays where the truncation says.
        let everything = SegmentHeader {
            truncates: true,
            ..header(3, 1)
        };
        encode_segment_header(&everything, &mut third);
        let plan = super::plan(
            &head_at(3, 1),
            &[
                scan_segment(1, &first),
                scan_segment(2, &second),
                scan_segment(3, &third),
            ],
        )
        .unwrap();
        assert_eq!(plan.kept_segments, vec![3]);
        assert_eq!(plan.void_segments, vec![1, 2]);
        assert_eq!(
            (plan.record_count, plan.next_lsn, plan.first_lsn),
            (0, 1, None)
        );
    }

    #[test]
    fn empty_segment_keeps_its_first_lsn() {
        let (first, _) = segment(1, 1, 1, 1);
        let (second, _) = segment(2, 2, 0, 0);
        let plan = plan_all(&[scan_segment(1, &first), scan_segment(2, &second)]).unwrap();
        assert_eq!(plan.next_lsn, 2);
        let (alone, _) = segment(5, 1000, 0, 0);
        assert_eq!(plan_all(&[scan_segment(5, &alone)]).unwrap().next_lsn, 1000);
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
        assert_eq!(plan_all(&[scan]).unwrap().next_lsn, 5);
        // One written block further is beyond any crash.
        bytes[offsets[4] + 6144] = 1;
        assert!(plan_all(&[scan_segment(1, &bytes)]).is_err());
    }

    #[test]
    fn torn_header_block_with_garbage_is_a_torn_tail() {
        let (first, _) = segment(1, 1, 3, 2);
        let mut torn = vec![0u8; SEGMENT_BYTES];
        torn[..BLOCK].fill(0xA5);
        let plan_of = |second: &[u8]| plan_all(&[scan_segment(1, &first), scan_segment(2, second)]);
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
            if let Ok(plan) = plan_all(&scans) {
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
