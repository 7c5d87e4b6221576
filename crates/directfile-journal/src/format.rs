//! The on-disk format of the journal: this doc comment is the specification.
//!
//! A journal is a directory of segment files named `{segment_number:020}.seg`, a `HEAD` file
//! (the durable high-water mark and the user's metadata) and a `LOCK` file. All integers are
//! little-endian. `block` is the segment's `block_bytes` (a multiple of the device's direct-I/O
//! alignment, 4096 by default); every batch starts and ends on a block boundary, so one batch
//! is one aligned write-through write.
//!
//! ```text
//! segment file
//! +-----------------------------+ offset 0
//! | segment header (64 bytes)   |
//! | zero padding to `block`     |
//! +-----------------------------+ offset block
//! | batch 0                     |   each batch: header + records + zero padding,
//! +-----------------------------+   total a multiple of `block`
//! | batch 1                     |
//! +-----------------------------+
//! | ...                         |
//! +-----------------------------+
//! | zeros (preallocated space)  |   a batch header of all zeros ends the segment
//! +-----------------------------+ segment_bytes (or a shorter file after torn-tail truncation)
//!
//! segment header (SEGMENT_HEADER_BYTES = 64)
//!  0        8       12      16               24            32            40      44      48      52        60      64
//!  +--------+-------+-------+----------------+-------------+-------------+-------+-------+-------+---------+-------+
//!  | magic  |version| block | segment_number | generation  | first_lsn   | batch | in    | flags | reserved| crc32c|
//!  | 8 B    | u32   | u32   | u64            | u64         | u64         | max   | flight| u32   | 8 B zero| u32   |
//!  |"DFJSEG\r\n"    | bytes |                |             |             | u32   | max   |       |         |       |
//!  +--------+-------+-------+----------------+-------------+-------------+-------+-------+-------+---------+-------+
//!  crc32c covers bytes 0..60. flags: bit 0 = TRUNCATES (see below); other bits must be 0.
//!
//! batch header (BATCH_HEADER_BYTES = 40)
//!  0        4              8                16            24           32           36       40
//!  +--------+--------------+----------------+-------------+------------+------------+--------+
//!  | magic  | record_count | segment_number | generation  | first_lsn  | body_bytes | crc32c |
//!  | u32    | u32          | u64            | u64         | u64        | u32        | u32    |
//!  +--------+--------------+----------------+-------------+------------+------------+--------+
//!  crc32c covers bytes 0..36. body_bytes = the bytes of the records that follow (unpadded).
//!
//! record (RECORD_HEADER_BYTES = 16 + payload), packed back to back after the batch header
//!  0              4        8        16
//!  +--------------+--------+--------+----------------------+
//!  | payload_bytes| crc32c | lsn    | payload              |
//!  | u32          | u32    | u64    | payload_bytes bytes  |
//!  +--------------+--------+--------+----------------------+
//!  crc32c = CRC32C(generation as u64 LE ++ bytes 0..4 ++ bytes 8..16 ++ payload)
//!
//! HEAD file: two slots of `slot_bytes` each (a power of two >= 512 and a multiple of the
//! storage's alignment; the file is 2 x slot_bytes long). Write number `sequence` goes to slot
//! `sequence % 2`, so a torn write can only damage the slot being replaced: the other one
//! still holds the previous value. The valid slot with the larger sequence is the head.
//!  0        8       12         16         24               32          40           48      52        60      64
//!  +--------+-------+----------+----------+----------------+-----------+------------+-------+---------+-------+----------+
//!  | magic  |version| slot     | sequence | segment_number | first_lsn | generation | meta  | reserved| crc32c| meta     |
//!  | 8 B    | u32   | bytes u32| u64      | u64            | u64       | u64        | bytes | 8 B zero| u32   | bytes    |
//!  |"DFJHEAD\n"     |          |          |                |           |            | u32   |         |       |          |
//!  +--------+-------+----------+----------+----------------+-----------+------------+-------+---------+-------+----------+
//!  crc32c = CRC32C(bytes 0..60 ++ meta). segment_number, first_lsn and generation are those of
//!  the newest started segment (the high-water mark); meta is the user's metadata.
//! ```
//!
//! Rules a reader enforces (and why stale bytes can never be read as a record):
//!
//! - A batch is accepted only if its header checksum holds, its `segment_number` and `generation`
//!   equal the segment header's, its `first_lsn` continues the previous batch (or equals the
//!   segment header's `first_lsn` for the first batch), every record checksum holds, record LSNs
//!   are consecutive, the records fill exactly `body_bytes`, and the padding is all zeros.
//! - The journal writes each segment in one generation only (a new segment is started at every
//!   open), and the generation is mixed into every record checksum and stored in every batch
//!   header. Bytes left over from an earlier use of a file (a recycled segment, a previous
//!   generation) fail the segment/generation check or the continuity check; fallocated space
//!   reads as zeros, and a zero batch header has magic 0, which is not `BATCH_MAGIC`.
//! - A batch is atomic: if any part of it fails a check, none of its records is returned.
//!
//! Rules that make a lost tail visible (the high-water mark):
//!
//! - A segment is *started* when its header is written. The journal writes a batch into a
//!   segment only after the HEAD names it (the header write, then the HEAD write, each durable
//!   before the next), and it asks for a new spare segment only after that. So after a crash on a
//!   device that keeps what was synced, at most **one** segment file lies above the segment the
//!   HEAD names, and it holds no batch: either the segment being started (header written, torn
//!   or not yet written) or the spare being made (all zeros).
//! - Recovery therefore requires the HEAD's segment to exist with a valid header whose
//!   `first_lsn` and `generation` match the HEAD, and accepts above it only one segment without
//!   batches. Anything else (the HEAD's segment missing or zeroed, two or more segments above it,
//!   a batch above it, a HEAD missing or unreadable while segments hold records) is corruption:
//!   the newest segments were lost, and recovery says so instead of restarting at a lower LSN.
//!   Only a journal whose segments hold no batch may lack a readable HEAD (a crash while the
//!   journal was first created).
//!
//! Explicit truncation (`Journal::truncate_from`):
//!
//! - A segment whose header has the TRUNCATES flag may start at a `first_lsn` lower than the end
//!   of the segments before it: every record with an LSN at or above its `first_lsn` in earlier
//!   segments is void (earlier segments that start at or above it are void as a whole). Without
//!   the flag, a segment must start exactly where the previous one ends. The flag never lowers
//!   the LSN below the first record kept.

use std::fmt;

/// Magic at offset 0 of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"DFJSEG\r\n";
/// Format version written by this crate (2: the HEAD file and segment flags).
pub const FORMAT_VERSION: u32 = 2;
/// Segment header flag: this segment truncates the records at and above its `first_lsn`.
pub const SEGMENT_FLAG_TRUNCATES: u32 = 1;
/// Magic at offset 0 of each slot of the HEAD file.
pub const HEAD_MAGIC: [u8; 8] = *b"DFJHEAD\n";
/// Encoded size of a HEAD slot's header (the user metadata follows it).
pub const HEAD_SLOT_HEADER_BYTES: usize = 64;
/// The smallest HEAD slot; the journal uses `max(4096, storage alignment)`.
pub const HEAD_SLOT_BYTES_MIN: usize = 512;
/// Encoded size of the segment header (it occupies the whole first block).
pub const SEGMENT_HEADER_BYTES: usize = 64;
/// The largest `block_bytes` (64 KiB): no device needs more, and it bounds what a torn header
/// write can touch.
pub const BLOCK_BYTES_MAX: usize = 64 << 10;
/// Magic at offset 0 of every batch header: "DFJB".
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"DFJB");
/// Encoded size of a batch header.
pub const BATCH_HEADER_BYTES: usize = 40;
/// Encoded size of a record header (the payload follows it).
pub const RECORD_HEADER_BYTES: usize = 16;

const _: () = assert!(
    SEGMENT_HEADER_BYTES <= 512,
    "the segment header must fit in one sector"
);
const _: () = assert!(BATCH_HEADER_BYTES + RECORD_HEADER_BYTES <= 512);

/// Why a header, batch or record was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The buffer ends before the structure does.
    Truncated {
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes there were.
        available: usize,
    },
    /// The bytes are all zero: never-written (preallocated) space.
    Zeroed,
    /// Wrong magic number.
    BadMagic,
    /// A format version this crate does not read.
    UnsupportedVersion(u32),
    /// A checksum does not match.
    BadChecksum {
        /// Which structure's checksum.
        what: &'static str,
    },
    /// A field is outside its allowed range.
    BadField {
        /// Which field.
        what: &'static str,
        /// The value found.
        value: u64,
    },
    /// A batch header belongs to another segment or generation (stale bytes).
    Foreign {
        /// The segment number in the batch header.
        segment_number: u64,
        /// The generation in the batch header.
        generation: u64,
    },
    /// The batch does not continue the LSN sequence.
    LsnGap {
        /// The LSN that would continue it.
        expected: u64,
        /// The LSN found.
        found: u64,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Truncated { needed, available } => {
                write!(f, "truncated: need {needed} bytes, have {available}")
            }
            FormatError::Zeroed => write!(f, "zeroed (never written)"),
            FormatError::BadMagic => write!(f, "bad magic"),
            FormatError::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            FormatError::BadChecksum { what } => write!(f, "{what} checksum mismatch"),
            FormatError::BadField { what, value } => write!(f, "{what} has invalid value {value}"),
            FormatError::Foreign {
                segment_number,
                generation,
            } => write!(
                f,
                "batch belongs to segment {segment_number} generation {generation} (stale bytes)"
            ),
            FormatError::LsnGap { expected, found } => {
                write!(f, "LSN gap: expected {expected}, found {found}")
            }
        }
    }
}

impl std::error::Error for FormatError {}

/// Header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Unit of alignment for batches; a power of two >= 512.
    pub block_bytes: u32,
    /// Position of this segment in the journal (file name).
    pub segment_number: u64,
    /// Journal generation (incremented at every open) that wrote this segment.
    pub generation: u64,
    /// LSN of the first record this segment holds (or would hold).
    pub first_lsn: u64,
    /// Largest batch (padded) the writer produces.
    pub batch_bytes_max: u32,
    /// How many lanes the writer has; with `batch_bytes_max` this bounds how far a torn tail can
    /// reach (see [`SegmentHeader::torn_window_bytes`]).
    pub batches_in_flight_max: u32,
    /// Records at and above `first_lsn` in earlier segments are void (the TRUNCATES flag).
    pub truncates: bool,
}

impl SegmentHeader {
    /// Bytes of a segment that may be damaged by a crash: every batch not yet acknowledged.
    ///
    /// That is `batches_in_flight_max + 1` batches, not `batches_in_flight_max`: the writer's
    /// ring has that many slots, and they can all be in flight at once (an appender writes its
    /// own batch when nothing else is in flight, then the lanes take the next ones), or the
    /// first and the last of them can be in flight with the ones between landed. A window of
    /// `batches_in_flight_max` batches made such a crash look like corruption (found by
    /// `tests/crash_exhaustive.rs`).
    pub fn torn_window_bytes(&self) -> u64 {
        u64::from(self.batch_bytes_max) * (u64::from(self.batches_in_flight_max) + 1)
    }
}

/// Header of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Records in the batch (at least 1).
    pub record_count: u32,
    /// The segment it was written into (stale bytes of another segment fail this).
    pub segment_number: u64,
    /// The generation that wrote it (the segment header's).
    pub generation: u64,
    /// LSN of its first record.
    pub first_lsn: u64,
    /// Bytes of the records that follow the header, unpadded.
    pub body_bytes: u32,
}

impl BatchHeader {
    /// Bytes this batch occupies on disk: header plus body rounded up to `block_bytes`.
    pub fn padded_bytes(&self, block_bytes: u32) -> usize {
        padded_batch_bytes(self.body_bytes as usize, block_bytes as usize)
    }

    /// LSN of the last record, or `first_lsn - 1` for an empty batch.
    pub fn last_lsn(&self) -> u64 {
        self.first_lsn + u64::from(self.record_count) - 1
    }
}

/// One record as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The record's LSN.
    pub lsn: u64,
    /// Its payload, as appended.
    pub payload: &'a [u8],
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Rounds `value` up to a multiple of `align` (a power of two).
pub fn round_up(value: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    (value + align - 1) & !(align - 1)
}

/// On-disk bytes of a batch whose records take `body_bytes`: `round_up(40 + body, block)`.
pub fn padded_batch_bytes(body_bytes: usize, block_bytes: usize) -> usize {
    round_up(BATCH_HEADER_BYTES + body_bytes, block_bytes)
}

/// Encoded size of a record with `payload_bytes` of payload.
pub fn record_bytes(payload_bytes: usize) -> usize {
    RECORD_HEADER_BYTES + payload_bytes
}

/// Writes the segment header into `out[..SEGMENT_HEADER_BYTES]`.
///
/// # Panics
/// If `out` is shorter than [`SEGMENT_HEADER_BYTES`].
pub fn encode_segment_header(header: &SegmentHeader, out: &mut [u8]) {
    let out = &mut out[..SEGMENT_HEADER_BYTES];
    out.fill(0);
    out[0..8].copy_from_slice(&SEGMENT_MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&header.block_bytes.to_le_bytes());
    out[16..24].copy_from_slice(&header.segment_number.to_le_bytes());
    out[24..32].copy_from_slice(&header.generation.to_le_bytes());
    out[32..40].copy_from_slice(&header.first_lsn.to_le_bytes());
    out[40..44].copy_from_slice(&header.batch_bytes_max.to_le_bytes());
    out[44..48].copy_from_slice(&header.batches_in_flight_max.to_le_bytes());
    let flags = if header.truncates {
        SEGMENT_FLAG_TRUNCATES
    } else {
        0
    };
    out[48..52].copy_from_slice(&flags.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..60]);
    out[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Reads and verifies a segment header from the start of `bytes`.
///
/// # Errors
/// [`FormatError::Zeroed`] for a never-written header, otherwise the first failed check.
pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, FormatError> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err(FormatError::Truncated {
            needed: SEGMENT_HEADER_BYTES,
            available: bytes.len(),
        });
    }
    let bytes = &bytes[..SEGMENT_HEADER_BYTES];
    if bytes.iter().all(|&b| b == 0) {
        return Err(FormatError::Zeroed);
    }
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err(FormatError::BadMagic);
    }
    if crc32c::crc32c(&bytes[0..60]) != le_u32(bytes, 60) {
        return Err(FormatError::BadChecksum {
            what: "segment header",
        });
    }
    let version = le_u32(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let header = SegmentHeader {
        block_bytes: le_u32(bytes, 12),
        segment_number: le_u64(bytes, 16),
        generation: le_u64(bytes, 24),
        first_lsn: le_u64(bytes, 32),
        batch_bytes_max: le_u32(bytes, 40),
        batches_in_flight_max: le_u32(bytes, 44),
        truncates: le_u32(bytes, 48) & SEGMENT_FLAG_TRUNCATES != 0,
    };
    let flags = le_u32(bytes, 48);
    if flags & !SEGMENT_FLAG_TRUNCATES != 0 {
        return Err(FormatError::BadField {
            what: "segment flags",
            value: flags.into(),
        });
    }
    if header.block_bytes < 512
        || !header.block_bytes.is_power_of_two()
        || header.block_bytes as usize > BLOCK_BYTES_MAX
    {
        return Err(FormatError::BadField {
            what: "block_bytes",
            value: header.block_bytes.into(),
        });
    }
    if header.batch_bytes_max < header.block_bytes
        || header.batch_bytes_max % header.block_bytes != 0
    {
        return Err(FormatError::BadField {
            what: "batch_bytes_max",
            value: header.batch_bytes_max.into(),
        });
    }
    if header.first_lsn == 0 {
        return Err(FormatError::BadField {
            what: "first_lsn",
            value: 0,
        });
    }
    Ok(header)
}

/// One value of the HEAD file: the high-water mark and the user's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Head {
    /// Which write this is; of two valid slots the larger wins.
    pub sequence: u64,
    /// The newest started segment (its header was durable before this was written).
    pub segment_number: u64,
    /// That segment's `first_lsn`, as in its header.
    pub first_lsn: u64,
    /// That segment's `generation`, as in its header.
    pub generation: u64,
    /// The user's metadata (`Journal::set_meta`).
    pub meta: Vec<u8>,
}

/// The most metadata a HEAD slot of `slot_bytes` holds.
pub fn head_meta_bytes_max(slot_bytes: usize) -> usize {
    slot_bytes - HEAD_SLOT_HEADER_BYTES
}

/// Encodes `head` as one slot into `out[..slot_bytes]` (the rest of the slot is zeroed).
///
/// # Panics
/// If `out` is shorter than `slot_bytes` or the metadata does not fit.
pub fn encode_head_slot(head: &Head, slot_bytes: usize, out: &mut [u8]) {
    assert!(
        head.meta.len() <= head_meta_bytes_max(slot_bytes),
        "metadata of {} bytes does not fit a HEAD slot of {slot_bytes}",
        head.meta.len()
    );
    let out = &mut out[..slot_bytes];
    out.fill(0);
    out[0..8].copy_from_slice(&HEAD_MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&(slot_bytes as u32).to_le_bytes());
    out[16..24].copy_from_slice(&head.sequence.to_le_bytes());
    out[24..32].copy_from_slice(&head.segment_number.to_le_bytes());
    out[32..40].copy_from_slice(&head.first_lsn.to_le_bytes());
    out[40..48].copy_from_slice(&head.generation.to_le_bytes());
    out[48..52].copy_from_slice(&(head.meta.len() as u32).to_le_bytes());
    let meta_end = HEAD_SLOT_HEADER_BYTES + head.meta.len();
    out[HEAD_SLOT_HEADER_BYTES..meta_end].copy_from_slice(&head.meta);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[0..60]), &out[64..meta_end]);
    out[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Reads and verifies one HEAD slot at the start of `bytes`; returns the head and the slot size
/// it was written with.
///
/// # Errors
/// [`FormatError::Zeroed`] for a never-written slot, otherwise the first failed check.
pub fn decode_head_slot(bytes: &[u8]) -> Result<(Head, usize), FormatError> {
    if bytes.len() < HEAD_SLOT_HEADER_BYTES {
        return Err(FormatError::Truncated {
            needed: HEAD_SLOT_HEADER_BYTES,
            available: bytes.len(),
        });
    }
    if bytes[..HEAD_SLOT_HEADER_BYTES].iter().all(|&b| b == 0) {
        return Err(FormatError::Zeroed);
    }
    if bytes[0..8] != HEAD_MAGIC {
        return Err(FormatError::BadMagic);
    }
    let slot_bytes = le_u32(bytes, 12) as usize;
    if slot_bytes < HEAD_SLOT_BYTES_MIN || !slot_bytes.is_power_of_two() {
        return Err(FormatError::BadField {
            what: "HEAD slot_bytes",
            value: slot_bytes as u64,
        });
    }
    let meta_bytes = le_u32(bytes, 48) as usize;
    if meta_bytes > head_meta_bytes_max(slot_bytes) {
        return Err(FormatError::BadField {
            what: "HEAD meta_bytes",
            value: meta_bytes as u64,
        });
    }
    let meta_end = HEAD_SLOT_HEADER_BYTES + meta_bytes;
    if bytes.len() < meta_end {
        return Err(FormatError::Truncated {
            needed: meta_end,
            available: bytes.len(),
        });
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..60]), &bytes[64..meta_end]);
    if crc != le_u32(bytes, 60) {
        return Err(FormatError::BadChecksum { what: "HEAD slot" });
    }
    let version = le_u32(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let head = Head {
        sequence: le_u64(bytes, 16),
        segment_number: le_u64(bytes, 24),
        first_lsn: le_u64(bytes, 32),
        generation: le_u64(bytes, 40),
        meta: bytes[HEAD_SLOT_HEADER_BYTES..meta_end].to_vec(),
    };
    if head.first_lsn == 0 {
        return Err(FormatError::BadField {
            what: "HEAD first_lsn",
            value: 0,
        });
    }
    Ok((head, slot_bytes))
}

/// What a HEAD file's bytes hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadState {
    /// There is no HEAD file.
    Absent,
    /// The file exists but no slot verifies.
    Unreadable {
        /// Why, slot by slot.
        slot_errors: Vec<FormatError>,
    },
    /// The newest valid slot.
    Valid {
        /// Its value.
        head: Head,
        /// The slot size the file uses.
        slot_bytes: usize,
    },
}

/// Reads a HEAD file: `None` when it does not exist. Slot 0 is at offset 0 and slot 1 at
/// `slot_bytes` (learnt from a valid slot 0, else half the file); a slot must sit where its
/// sequence puts it (`sequence % 2`), so a misplaced copy is not mistaken for the other slot.
pub fn decode_head(bytes: Option<&[u8]>) -> HeadState {
    let Some(bytes) = bytes else {
        return HeadState::Absent;
    };
    let first = decode_head_slot(bytes);
    let stride = match &first {
        Ok((_, slot_bytes)) => *slot_bytes,
        Err(_) => bytes.len() / 2,
    };
    let second = if stride >= HEAD_SLOT_BYTES_MIN && stride.is_power_of_two() {
        decode_head_slot(&bytes[stride.min(bytes.len())..])
    } else {
        Err(FormatError::Truncated {
            needed: 2 * HEAD_SLOT_BYTES_MIN,
            available: bytes.len(),
        })
    };
    let mut best: Option<(Head, usize)> = None;
    let mut slot_errors = Vec::new();
    for (index, slot) in [first, second].into_iter().enumerate() {
        match slot {
            Ok((head, _)) if head.sequence % 2 != index as u64 => {
                slot_errors.push(FormatError::BadField {
                    what: "HEAD sequence (in the other slot's place)",
                    value: head.sequence,
                });
            }
            Ok((_, slot_bytes)) if slot_bytes != stride => {
                slot_errors.push(FormatError::BadField {
                    what: "HEAD slot_bytes (differs from the file's)",
                    value: slot_bytes as u64,
                });
            }
            Ok((head, slot_bytes)) => {
                if best
                    .as_ref()
                    .is_none_or(|(b, _)| head.sequence > b.sequence)
                {
                    best = Some((head, slot_bytes));
                }
            }
            Err(error) => slot_errors.push(error),
        }
    }
    match best {
        Some((head, slot_bytes)) => HeadState::Valid { head, slot_bytes },
        None => HeadState::Unreadable { slot_errors },
    }
}

/// CRC32C of a record: generation, then the header without its checksum field, then payload.
fn record_crc(generation: u64, header: &[u8], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&generation.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &header[0..4]);
    let crc = crc32c::crc32c_append(crc, &header[8..16]);
    crc32c::crc32c_append(crc, payload)
}

/// Encodes one record at the start of `out` and returns its size
/// (`RECORD_HEADER_BYTES + payload.len()`).
///
/// # Panics
/// If `out` is too short or the payload is longer than `u32::MAX`.
pub fn encode_record(out: &mut [u8], generation: u64, lsn: u64, payload: &[u8]) -> usize {
    let total = record_bytes(payload.len());
    let payload_bytes = u32::try_from(payload.len()).expect("payload fits in u32");
    let out = &mut out[..total];
    out[0..4].copy_from_slice(&payload_bytes.to_le_bytes());
    out[8..16].copy_from_slice(&lsn.to_le_bytes());
    out[RECORD_HEADER_BYTES..].copy_from_slice(payload);
    let crc = record_crc(generation, &out[..RECORD_HEADER_BYTES], payload);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    total
}

/// Writes a batch header into `out[..BATCH_HEADER_BYTES]`.
pub fn encode_batch_header(header: &BatchHeader, out: &mut [u8]) {
    let out = &mut out[..BATCH_HEADER_BYTES];
    out[0..4].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&header.record_count.to_le_bytes());
    out[8..16].copy_from_slice(&header.segment_number.to_le_bytes());
    out[16..24].copy_from_slice(&header.generation.to_le_bytes());
    out[24..32].copy_from_slice(&header.first_lsn.to_le_bytes());
    out[32..36].copy_from_slice(&header.body_bytes.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..36]);
    out[36..40].copy_from_slice(&crc.to_le_bytes());
}

/// Reads and checks a batch header (magic, checksum, segment, generation, sizes).
///
/// # Errors
/// [`FormatError::Zeroed`] for an all-zero header (end of the written part of a segment),
/// otherwise the first failed check.
pub fn decode_batch_header(
    bytes: &[u8],
    segment: &SegmentHeader,
) -> Result<BatchHeader, FormatError> {
    if bytes.len() < BATCH_HEADER_BYTES {
        return Err(FormatError::Truncated {
            needed: BATCH_HEADER_BYTES,
            available: bytes.len(),
        });
    }
    let bytes = &bytes[..BATCH_HEADER_BYTES];
    if bytes.iter().all(|&b| b == 0) {
        return Err(FormatError::Zeroed);
    }
    if le_u32(bytes, 0) != BATCH_MAGIC {
        return Err(FormatError::BadMagic);
    }
    if crc32c::crc32c(&bytes[0..36]) != le_u32(bytes, 36) {
        return Err(FormatError::BadChecksum {
            what: "batch header",
        });
    }
    let header = BatchHeader {
        record_count: le_u32(bytes, 4),
        segment_number: le_u64(bytes, 8),
        generation: le_u64(bytes, 16),
        first_lsn: le_u64(bytes, 24),
        body_bytes: le_u32(bytes, 32),
    };
    if header.segment_number != segment.segment_number || header.generation != segment.generation {
        return Err(FormatError::Foreign {
            segment_number: header.segment_number,
            generation: header.generation,
        });
    }
    if header.record_count == 0 {
        return Err(FormatError::BadField {
            what: "record_count",
            value: 0,
        });
    }
    let padded = header.padded_bytes(segment.block_bytes);
    if padded > segment.batch_bytes_max as usize {
        return Err(FormatError::BadField {
            what: "body_bytes",
            value: header.body_bytes.into(),
        });
    }
    if (header.body_bytes as usize) < header.record_count as usize * RECORD_HEADER_BYTES {
        return Err(FormatError::BadField {
            what: "body_bytes",
            value: header.body_bytes.into(),
        });
    }
    Ok(header)
}

/// A fully verified batch.
#[derive(Debug, Clone, Copy)]
pub struct DecodedBatch<'a> {
    /// Its verified header.
    pub header: BatchHeader,
    /// Bytes the batch occupies on disk, padding included.
    pub padded_bytes: usize,
    body: &'a [u8],
}

impl<'a> DecodedBatch<'a> {
    /// The batch's records, in LSN order.
    pub fn records(&self) -> RecordIter<'a> {
        RecordIter {
            body: self.body,
            lsn: self.header.first_lsn,
        }
    }
}

/// Iterator over the records of a verified batch.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    body: &'a [u8],
    lsn: u64,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = RecordRef<'a>;

    fn next(&mut self) -> Option<RecordRef<'a>> {
        if self.body.is_empty() {
            return None;
        }
        // The batch was verified by `decode_batch`, so every length here is in bounds.
        let payload_bytes = le_u32(self.body, 0) as usize;
        let payload = &self.body[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload_bytes];
        let record = RecordRef {
            lsn: self.lsn,
            payload,
        };
        self.body = &self.body[RECORD_HEADER_BYTES + payload_bytes..];
        self.lsn += 1;
        Some(record)
    }
}

/// Verifies the batch at the start of `bytes` completely: header, continuity with
/// `expected_first_lsn`, every record checksum and LSN, and zero padding.
///
/// # Errors
/// The first failed check; [`FormatError::Zeroed`] when the header is all zeros.
pub fn decode_batch<'a>(
    bytes: &'a [u8],
    segment: &SegmentHeader,
    expected_first_lsn: u64,
) -> Result<DecodedBatch<'a>, FormatError> {
    let header = decode_batch_header(bytes, segment)?;
    if header.first_lsn != expected_first_lsn {
        return Err(FormatError::LsnGap {
            expected: expected_first_lsn,
            found: header.first_lsn,
        });
    }
    let padded = header.padded_bytes(segment.block_bytes);
    if bytes.len() < padded {
        return Err(FormatError::Truncated {
            needed: padded,
            available: bytes.len(),
        });
    }
    let body_end = BATCH_HEADER_BYTES + header.body_bytes as usize;
    let body = &bytes[BATCH_HEADER_BYTES..body_end];
    let mut at = 0;
    for lsn in header.first_lsn..header.first_lsn + u64::from(header.record_count) {
        if body.len() - at < RECORD_HEADER_BYTES {
            return Err(FormatError::BadField {
                what: "record length",
                value: at as u64,
            });
        }
        let record = &body[at..];
        let payload_bytes = le_u32(record, 0) as usize;
        if record.len() - RECORD_HEADER_BYTES < payload_bytes {
            return Err(FormatError::BadField {
                what: "record payload_bytes",
                value: payload_bytes as u64,
            });
        }
        let payload = &record[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload_bytes];
        if record_crc(header.generation, record, payload) != le_u32(record, 4) {
            return Err(FormatError::BadChecksum { what: "record" });
        }
        let found = le_u64(record, 8);
        if found != lsn {
            return Err(FormatError::LsnGap {
                expected: lsn,
                found,
            });
        }
        at += RECORD_HEADER_BYTES + payload_bytes;
    }
    if at != body.len() {
        return Err(FormatError::BadField {
            what: "body_bytes",
            value: header.body_bytes.into(),
        });
    }
    if bytes[body_end..padded].iter().any(|&b| b != 0) {
        return Err(FormatError::BadField {
            what: "padding",
            value: body_end as u64,
        });
    }
    Ok(DecodedBatch {
        header,
        padded_bytes: padded,
        body,
    })
}

/// Encodes a whole batch (header, records, zero padding) at the start of `out` and returns its
/// padded size. The journal builds batches incrementally instead; this is for tools and tests.
///
/// # Panics
/// If `out` is shorter than the padded batch or `payloads` is empty.
pub fn encode_batch(
    out: &mut [u8],
    segment: &SegmentHeader,
    first_lsn: u64,
    payloads: &[&[u8]],
) -> usize {
    assert!(!payloads.is_empty(), "a batch holds at least one record");
    let mut at = BATCH_HEADER_BYTES;
    for (index, payload) in payloads.iter().enumerate() {
        at += encode_record(
            &mut out[at..],
            segment.generation,
            first_lsn + index as u64,
            payload,
        );
    }
    let body_bytes = at - BATCH_HEADER_BYTES;
    let padded = padded_batch_bytes(body_bytes, segment.block_bytes as usize);
    out[at..padded].fill(0);
    let header = BatchHeader {
        record_count: payloads.len() as u32,
        segment_number: segment.segment_number,
        generation: segment.generation,
        first_lsn,
        body_bytes: body_bytes as u32,
    };
    encode_batch_header(&header, out);
    padded
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn segment() -> SegmentHeader {
        SegmentHeader {
            block_bytes: 512,
            segment_number: 7,
            generation: 3,
            first_lsn: 100,
            batch_bytes_max: 8192,
            batches_in_flight_max: 4,
            truncates: false,
        }
    }

    #[test]
    fn head_slots_round_trip_and_the_newer_valid_one_wins() {
        let head = |sequence: u64| Head {
            sequence,
            segment_number: 9,
            first_lsn: 1000 + sequence,
            generation: 4,
            meta: vec![sequence as u8; 100],
        };
        let mut file = vec![0u8; 2 * 4096];
        encode_head_slot(&head(1), 4096, &mut file[4096..]);
        assert!(matches!(
            decode_head(Some(&file)),
            HeadState::Valid { head: h, slot_bytes: 4096 } if h == head(1)
        ));
        encode_head_slot(&head(2), 4096, &mut file[..4096]);
        assert!(matches!(
            decode_head(Some(&file)),
            HeadState::Valid { head: h, .. } if h == head(2)
        ));
        // A torn write of write 3 (slot 1) leaves write 2.
        let mut torn = file.clone();
        encode_head_slot(&head(3), 4096, &mut torn[4096..]);
        torn[4096 + 70] ^= 0x40;
        assert!(matches!(
            decode_head(Some(&torn)),
            HeadState::Valid { head: h, .. } if h == head(2)
        ));
        // A slot copied to the other slot's place does not count.
        let mut misplaced = vec![0u8; 2 * 4096];
        encode_head_slot(&head(2), 4096, &mut misplaced[4096..]);
        assert!(matches!(
            decode_head(Some(&misplaced)),
            HeadState::Unreadable { .. }
        ));
        assert_eq!(decode_head(None), HeadState::Absent);
        assert!(matches!(
            decode_head(Some(&[])),
            HeadState::Unreadable { .. }
        ));
    }

    #[test]
    fn truncates_flag_round_trips_and_unknown_flags_are_refused() {
        let header = SegmentHeader {
            truncates: true,
            ..segment()
        };
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
        encode_segment_header(&header, &mut bytes);
        assert_eq!(decode_segment_header(&bytes), Ok(header));
        bytes[49] = 0x10;
        let crc = crc32c::crc32c(&bytes[0..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode_segment_header(&bytes),
            Err(FormatError::BadField {
                what: "segment flags",
                ..
            })
        ));
    }

    #[test]
    fn segment_header_round_trip() {
        let header = segment();
        let mut block = [0u8; 512];
        encode_segment_header(&header, &mut block);
        assert_eq!(decode_segment_header(&block), Ok(header));
        assert_eq!(decode_segment_header(&[0u8; 512]), Err(FormatError::Zeroed));
    }

    #[test]
    fn batch_layout_matches_the_drawing() {
        let segment = segment();
        let mut out = vec![0u8; 1024];
        let padded = encode_batch(&mut out, &segment, 100, &[b"abc", b""]);
        // 40 header + (16 + 3) + (16 + 0) = 75 bytes, padded to one 512-byte block.
        assert_eq!(padded, 512);
        assert_eq!(&out[0..4], b"DFJB");
        assert_eq!(le_u32(&out, 4), 2);
        assert_eq!(le_u64(&out, 8), 7);
        assert_eq!(le_u64(&out, 16), 3);
        assert_eq!(le_u64(&out, 24), 100);
        assert_eq!(le_u32(&out, 32), 35);
        assert_eq!(le_u32(&out, 40), 3);
        assert_eq!(le_u64(&out, 48), 100);
        assert_eq!(&out[56..59], b"abc");
        assert_eq!(le_u64(&out, 59 + 8), 101);
        let batch = decode_batch(&out, &segment, 100).unwrap();
        let records: Vec<_> = batch.records().collect();
        assert_eq!(
            records,
            vec![
                RecordRef {
                    lsn: 100,
                    payload: b"abc"
                },
                RecordRef {
                    lsn: 101,
                    payload: b""
                }
            ]
        );
    }

    #[test]
    fn stale_batches_are_rejected() {
        let old = segment();
        let mut out = vec![0u8; 512];
        encode_batch(&mut out, &old, 100, &[b"old"]);
        let newer_generation = SegmentHeader {
            generation: 4,
            ..old
        };
        assert!(matches!(
            decode_batch(&out, &newer_generation, 100),
            Err(FormatError::Foreign { generation: 3, .. })
        ));
        let other_segment = SegmentHeader {
            segment_number: 8,
            ..old
        };
        assert!(matches!(
            decode_batch(&out, &other_segment, 100),
            Err(FormatError::Foreign {
                segment_number: 7,
                ..
            })
        ));
        assert_eq!(
            decode_batch(&out, &old, 101).unwrap_err(),
            FormatError::LsnGap {
                expected: 101,
                found: 100
            }
        );
        assert_eq!(
            decode_batch(&[0u8; 512], &old, 100).unwrap_err(),
            FormatError::Zeroed
        );
    }

    #[test]
    fn oversized_batch_header_is_rejected() {
        let segment = segment();
        let header = BatchHeader {
            record_count: 1,
            segment_number: 7,
            generation: 3,
            first_lsn: 100,
            body_bytes: 9000,
        };
        let mut out = [0u8; 64];
        encode_batch_header(&header, &mut out);
        assert!(matches!(
            decode_batch_header(&out, &segment),
            Err(FormatError::BadField {
                what: "body_bytes",
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn batches_round_trip(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..12),
            first_lsn in 1u64..u64::MAX / 2,
        ) {
            let segment = segment();
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
            let mut out = vec![0xAAu8; 8192];
            let padded = encode_batch(&mut out, &segment, first_lsn, &refs);
            prop_assert_eq!(padded % 512, 0);
            let batch = decode_batch(&out[..padded], &segment, first_lsn).unwrap();
            prop_assert_eq!(batch.padded_bytes, padded);
            let decoded: Vec<_> = batch.records().collect();
            prop_assert_eq!(decoded.len(), payloads.len());
            for (index, record) in decoded.iter().enumerate() {
                prop_assert_eq!(record.lsn, first_lsn + index as u64);
                prop_assert_eq!(record.payload, payloads[index].as_slice());
            }
        }

        #[test]
        fn any_single_bit_flip_is_rejected(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 1..5),
            bit in any::<proptest::sample::Index>(),
        ) {
            let segment = segment();
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
            let mut out = vec![0u8; 8192];
            let padded = encode_batch(&mut out, &segment, 100, &refs);
            let bit = bit.index(padded * 8);
            out[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_batch(&out[..padded], &segment, 100).is_err());
        }

        #[test]
        fn any_single_bit_flip_in_segment_header_is_rejected(bit in 0usize..SEGMENT_HEADER_BYTES * 8) {
            let mut block = [0u8; 512];
            encode_segment_header(&segment(), &mut block);
            block[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_segment_header(&block).is_err());
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode_segment_header(&bytes);
            let _ = decode_batch(&bytes, &segment(), 100);
        }
    }
}
