//! The bytes directfile-raft keeps in the journal: one record per Raft entry, and the meta blob.
//!
//! # Entry record, format version 1
//!
//! ```text
//! offset  size     field
//! 0       1        format version (1)
//! 1       1        kind: 0 blank, 1 normal (application data), 2 membership
//! 2       varint   term of the leader that proposed the entry
//!         varint   Raft log index
//!         varint   n = length of the leader id
//!         n        the leader id (`CommittedLeaderId`, postcard)
//!         rest     payload, postcard: nothing (blank), `C::D` (normal), `Membership` (membership)
//! ```
//!
//! Varints are LEB128 (7 bits a byte, low first). A blank entry of term 3 at index 1,000 from
//! node 1 takes 7 bytes; the journal adds its 16-byte record header. The term and index are
//! written out of the leader id so that tools read them without knowing the node id type.
//!
//! # Meta blob, format version 1
//!
//! Stored with `Journal::set_meta`, which writes it atomically and durably:
//!
//! ```text
//! 6       "DFRAFT" (magic: tells a raft log directory from another journal)
//! 1       format version (1)
//! varint  lsn_base    \  the index <-> LSN mapping: Raft index i >= index_base
//! varint  index_base  /  is the journal record lsn_base + (i - index_base)
//! 1       flags: 1 vote, 2 committed, 4 last purged
//! varint n, n bytes   postcard(Vote)            if flag 1
//! varint n, n bytes   postcard(LogId) committed if flag 2
//! varint n, n bytes   postcard(LogId) purged    if flag 4
//! ```
//!
//! Payloads go through serde with postcard, a compact format that does not describe itself:
//! `C::D` must not rely on `#[serde(flatten)]`, `#[serde(untagged)]` or `deserialize_any`.

use std::fmt;

use openraft::{LogId, Membership, RaftTypeConfig, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Version of the entry record layout.
pub const ENTRY_FORMAT_VERSION: u8 = 1;
/// Version of the meta blob layout.
pub const META_FORMAT_VERSION: u8 = 1;
/// First bytes of the meta blob of a raft log directory.
pub const META_MAGIC: &[u8; 6] = b"DFRAFT";

const KIND_BLANK: u8 = 0;
const KIND_NORMAL: u8 = 1;
const KIND_MEMBERSHIP: u8 = 2;

const FLAG_VOTE: u8 = 1;
const FLAG_COMMITTED: u8 = 2;
const FLAG_PURGED: u8 = 4;

/// A record or meta blob that does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

fn error<T>(what: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError(what.into()))
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads bytes front to back; every read names what it wanted when the bytes run out.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, at: 0 }
    }

    fn byte(&mut self, what: &str) -> Result<u8, CodecError> {
        match self.bytes.get(self.at) {
            Some(&b) => {
                self.at += 1;
                Ok(b)
            }
            None => error(format!("{what}: the record ends at byte {}", self.at)),
        }
    }

    fn varint(&mut self, what: &str) -> Result<u64, CodecError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(what)?;
            if shift == 63 && b > 1 {
                break;
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        error(format!(
            "{what}: varint longer than 64 bits at byte {}",
            self.at
        ))
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], CodecError> {
        let rest = self.bytes.len() - self.at;
        if n > rest as u64 {
            return error(format!(
                "{what}: {n} bytes announced, {rest} left at byte {}",
                self.at
            ));
        }
        let slice = &self.bytes[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(slice)
    }

    fn rest(&mut self) -> &'a [u8] {
        let slice = &self.bytes[self.at..];
        self.at = self.bytes.len();
        slice
    }
}

fn put_postcard<T: Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), CodecError> {
    let bytes = postcard::to_allocvec(value).map_err(|e| CodecError(format!("encode: {e}")))?;
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(&bytes);
    Ok(())
}

fn postcard_from<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, CodecError> {
    postcard::from_bytes(bytes).map_err(|e| CodecError(format!("{what}: {e}")))
}

/// Encodes `entry` into `out` (cleared first).
///
/// # Errors
/// If serde refuses the payload (a `C::D` that postcard cannot write).
pub fn encode_entry<C>(entry: &openraft::Entry<C>, out: &mut Vec<u8>) -> Result<(), CodecError>
where
    C: RaftTypeConfig,
{
    out.clear();
    out.push(ENTRY_FORMAT_VERSION);
    let kind = match &entry.payload {
        openraft::EntryPayload::Blank => KIND_BLANK,
        openraft::EntryPayload::Normal(_) => KIND_NORMAL,
        openraft::EntryPayload::Membership(_) => KIND_MEMBERSHIP,
    };
    out.push(kind);
    put_varint(out, entry.log_id.leader_id.term);
    put_varint(out, entry.log_id.index);
    put_postcard(out, &entry.log_id.leader_id)?;
    let payload = match &entry.payload {
        openraft::EntryPayload::Blank => Ok(()),
        openraft::EntryPayload::Normal(data) => postcard::to_io(data, &mut *out).map(|_| ()),
        openraft::EntryPayload::Membership(membership) => {
            postcard::to_io(membership, &mut *out).map(|_| ())
        }
    };
    payload.map_err(|e| CodecError(format!("encode the payload of entry {}: {e}", entry.log_id)))
}

/// What every entry record says, read without knowing the type configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader<'a> {
    /// The record's format version ([`ENTRY_FORMAT_VERSION`]).
    pub version: u8,
    /// Blank, normal or membership.
    pub kind: EntryKind,
    /// Term of the leader that proposed the entry.
    pub term: u64,
    /// The entry's Raft log index.
    pub index: u64,
    /// The leader id, postcard-encoded (for `u64` node ids: varint term, varint node id).
    pub leader: &'a [u8],
    /// The rest of the record, postcard-encoded: empty (blank), `C::D` (normal) or the
    /// `Membership` (membership).
    pub payload: &'a [u8],
}

/// The three kinds of Raft entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// No payload: the entry a new leader appends at the start of its term (kind byte 0).
    Blank,
    /// Application data, a `C::D` (kind byte 1).
    Normal,
    /// A membership configuration (kind byte 2).
    Membership,
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryKind::Blank => "blank",
            EntryKind::Normal => "normal",
            EntryKind::Membership => "membership",
        })
    }
}

/// Reads the header of an entry record.
///
/// # Errors
/// An unknown version or kind, or bytes that end early.
pub fn decode_entry_header(bytes: &[u8]) -> Result<EntryHeader<'_>, CodecError> {
    let mut cursor = Cursor::new(bytes);
    let version = cursor.byte("entry version")?;
    if version != ENTRY_FORMAT_VERSION {
        return error(format!(
            "entry format version {version} is not the supported {ENTRY_FORMAT_VERSION}"
        ));
    }
    let kind = match cursor.byte("entry kind")? {
        KIND_BLANK => EntryKind::Blank,
        KIND_NORMAL => EntryKind::Normal,
        KIND_MEMBERSHIP => EntryKind::Membership,
        other => return error(format!("entry kind {other} is not 0, 1 or 2")),
    };
    let term = cursor.varint("entry term")?;
    let index = cursor.varint("entry index")?;
    let leader_bytes = cursor.varint("leader id length")?;
    let leader = cursor.take(leader_bytes, "leader id")?;
    let payload = cursor.rest();
    if kind == EntryKind::Blank && !payload.is_empty() {
        return error(format!(
            "blank entry {index} carries {} payload bytes",
            payload.len()
        ));
    }
    Ok(EntryHeader {
        version,
        kind,
        term,
        index,
        leader,
        payload,
    })
}

/// Decodes an entry record.
///
/// # Errors
/// As [`decode_entry_header`], or a leader id or payload that serde refuses.
pub fn decode_entry<C>(bytes: &[u8]) -> Result<openraft::Entry<C>, CodecError>
where
    C: RaftTypeConfig,
{
    let header = decode_entry_header(bytes)?;
    let leader_id: openraft::CommittedLeaderId<C::NodeId> =
        postcard_from(header.leader, "entry leader id")?;
    if leader_id.term != header.term {
        return error(format!(
            "entry {} says term {} but its leader id says {}",
            header.index, header.term, leader_id.term
        ));
    }
    let log_id = LogId::new(leader_id, header.index);
    let payload = match header.kind {
        EntryKind::Blank => openraft::EntryPayload::Blank,
        EntryKind::Normal => {
            openraft::EntryPayload::Normal(postcard_from(header.payload, "entry data")?)
        }
        EntryKind::Membership => {
            let membership: Membership<C::NodeId, C::Node> =
                postcard_from(header.payload, "entry membership")?;
            openraft::EntryPayload::Membership(membership)
        }
    };
    Ok(openraft::Entry { log_id, payload })
}

/// The mapping between Raft log indexes and journal LSNs: index `i >= index_base` is the record
/// at LSN `lsn_base + (i - index_base)`. Records below `lsn_base` are purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexMap {
    /// The LSN of the record that holds Raft index `index_base` (at least 1).
    pub lsn_base: u64,
    /// The lowest Raft index the mapping covers.
    pub index_base: u64,
}

impl IndexMap {
    /// A new log: Raft index 0 is the journal's first record, LSN 1.
    pub const FRESH: IndexMap = IndexMap {
        lsn_base: 1,
        index_base: 0,
    };

    /// LSN of Raft index `index` (`None` below `index_base`: purged).
    pub fn lsn(&self, index: u64) -> Option<u64> {
        index
            .checked_sub(self.index_base)
            .map(|offset| self.lsn_base + offset)
    }

    /// Raft index of the record at `lsn` (`None` below `lsn_base`: purged).
    pub fn index(&self, lsn: u64) -> Option<u64> {
        lsn.checked_sub(self.lsn_base)
            .map(|offset| self.index_base + offset)
    }
}

/// What the meta blob holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta<C: RaftTypeConfig> {
    /// The mapping between Raft indexes and journal LSNs.
    pub map: IndexMap,
    /// The vote last saved (`save_vote`), `None` before the first.
    pub vote: Option<Vote<C::NodeId>>,
    /// The committed log id last written (`save_committed`, written lazily: it may lag behind
    /// the one openraft gave, never run ahead of the durable log).
    pub committed: Option<LogId<C::NodeId>>,
    /// The last purged log id: entries up to it are gone from the log.
    pub last_purged: Option<LogId<C::NodeId>>,
}

impl<C: RaftTypeConfig> Default for Meta<C> {
    fn default() -> Self {
        Meta {
            map: IndexMap::FRESH,
            vote: None,
            committed: None,
            last_purged: None,
        }
    }
}

/// Encodes the meta blob.
///
/// # Errors
/// If serde refuses a node id.
pub fn encode_meta<C: RaftTypeConfig>(meta: &Meta<C>) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(META_MAGIC);
    out.push(META_FORMAT_VERSION);
    put_varint(&mut out, meta.map.lsn_base);
    put_varint(&mut out, meta.map.index_base);
    let flags = (u8::from(meta.vote.is_some()) * FLAG_VOTE)
        | (u8::from(meta.committed.is_some()) * FLAG_COMMITTED)
        | (u8::from(meta.last_purged.is_some()) * FLAG_PURGED);
    out.push(flags);
    if let Some(vote) = &meta.vote {
        put_postcard(&mut out, vote)?;
    }
    if let Some(committed) = &meta.committed {
        put_postcard(&mut out, committed)?;
    }
    if let Some(purged) = &meta.last_purged {
        put_postcard(&mut out, purged)?;
    }
    Ok(out)
}

/// The raw parts of a meta blob, read without knowing the type configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMeta<'a> {
    /// The blob's format version ([`META_FORMAT_VERSION`]).
    pub version: u8,
    /// The mapping between Raft indexes and journal LSNs.
    pub map: IndexMap,
    /// The vote, postcard-encoded (without its length prefix; see [`describe_vote`]).
    pub vote: Option<&'a [u8]>,
    /// The committed log id, postcard-encoded (see [`describe_log_id`]).
    pub committed: Option<&'a [u8]>,
    /// The last purged log id, postcard-encoded (see [`describe_log_id`]).
    pub last_purged: Option<&'a [u8]>,
}

/// Whether `blob` is the meta of a raft log directory (starts with the magic).
pub fn is_raft_meta(blob: &[u8]) -> bool {
    blob.starts_with(META_MAGIC)
}

/// Splits a meta blob into its parts.
///
/// # Errors
/// A missing magic, an unknown version, or bytes that end early.
pub fn decode_meta_raw(blob: &[u8]) -> Result<RawMeta<'_>, CodecError> {
    if !is_raft_meta(blob) {
        return error("the journal's meta does not start with \"DFRAFT\": not a raft log");
    }
    let mut cursor = Cursor::new(&blob[META_MAGIC.len()..]);
    let version = cursor.byte("meta version")?;
    if version != META_FORMAT_VERSION {
        return error(format!(
            "meta format version {version} is not the supported {META_FORMAT_VERSION}"
        ));
    }
    let map = IndexMap {
        lsn_base: cursor.varint("meta lsn_base")?,
        index_base: cursor.varint("meta index_base")?,
    };
    if map.lsn_base == 0 {
        return error("meta lsn_base is 0 (LSNs start at 1)");
    }
    let flags = cursor.byte("meta flags")?;
    if flags & !(FLAG_VOTE | FLAG_COMMITTED | FLAG_PURGED) != 0 {
        return error(format!("meta flags {flags:#x} has unknown bits"));
    }
    let mut part = |flag: u8, what: &str| -> Result<Option<&[u8]>, CodecError> {
        if flags & flag == 0 {
            return Ok(None);
        }
        let n = cursor.varint(what)?;
        cursor.take(n, what).map(Some)
    };
    let vote = part(FLAG_VOTE, "meta vote")?;
    let committed = part(FLAG_COMMITTED, "meta committed")?;
    let last_purged = part(FLAG_PURGED, "meta last purged")?;
    Ok(RawMeta {
        version,
        map,
        vote,
        committed,
        last_purged,
    })
}

/// Decodes a meta blob; an empty blob is a new log ([`Meta::default`]).
///
/// # Errors
/// As [`decode_meta_raw`], or parts that serde refuses.
pub fn decode_meta<C: RaftTypeConfig>(blob: &[u8]) -> Result<Meta<C>, CodecError> {
    if blob.is_empty() {
        return Ok(Meta::default());
    }
    let raw = decode_meta_raw(blob)?;
    Ok(Meta {
        map: raw.map,
        vote: raw
            .vote
            .map(|b| postcard_from(b, "meta vote"))
            .transpose()?,
        committed: raw
            .committed
            .map(|b| postcard_from(b, "meta committed"))
            .transpose()?,
        last_purged: raw
            .last_purged
            .map(|b| postcard_from(b, "meta last purged"))
            .transpose()?,
    })
}

/// Shows a vote, committed or purged part of a meta blob for people: decoded with `u64` node
/// ids (openraft's default, and this crate's `KvConfig`), else as hex.
pub fn describe_vote(bytes: &[u8]) -> String {
    match postcard::from_bytes::<Vote<u64>>(bytes) {
        Ok(vote) => vote.to_string(),
        Err(_) => format!("0x{}", hex(bytes)),
    }
}

/// As [`describe_vote`], for a log id.
pub fn describe_log_id(bytes: &[u8]) -> String {
    match postcard::from_bytes::<LogId<u64>>(bytes) {
        Ok(log_id) => log_id.to_string(),
        Err(_) => format!("0x{}", hex(bytes)),
    }
}

/// As [`describe_vote`], for the leader id of an entry.
pub fn describe_leader(bytes: &[u8]) -> String {
    match postcard::from_bytes::<openraft::CommittedLeaderId<u64>>(bytes) {
        Ok(leader) => leader.to_string(),
        Err(_) => format!("0x{}", hex(bytes)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KvConfig, KvRequest};
    use openraft::{CommittedLeaderId, Entry, EntryPayload};
    use std::collections::{BTreeMap, BTreeSet};

    fn log_id(term: u64, node: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    fn round_trip(entry: Entry<KvConfig>) {
        let mut bytes = Vec::new();
        encode_entry(&entry, &mut bytes).unwrap();
        let back: Entry<KvConfig> = decode_entry(&bytes).unwrap();
        assert_eq!(back.log_id, entry.log_id);
        assert_eq!(
            format!("{:?}", back.payload),
            format!("{:?}", entry.payload)
        );
        let header = decode_entry_header(&bytes).unwrap();
        assert_eq!(
            (header.term, header.index),
            (entry.log_id.leader_id.term, entry.log_id.index)
        );
        // Every strict prefix is refused or decodes to something else, never panics.
        for cut in 0..bytes.len() {
            if let Ok(short) = decode_entry::<KvConfig>(&bytes[..cut]) {
                assert_ne!(format!("{short:?}"), format!("{entry:?}"));
            }
        }
    }

    #[test]
    fn entries_round_trip_compactly() {
        let blank = Entry::<KvConfig> {
            log_id: log_id(3, 1, 1000),
            payload: EntryPayload::Blank,
        };
        let mut bytes = Vec::new();
        encode_entry(&blank, &mut bytes).unwrap();
        // version, kind, term, index (2 bytes), leader length, leader (term, node).
        assert_eq!(bytes.len(), 8, "{bytes:?}");
        round_trip(blank);
        round_trip(Entry {
            log_id: log_id(u64::MAX, u64::MAX, u64::MAX),
            payload: EntryPayload::Normal(KvRequest::Set {
                key: "k".into(),
                value: "v".repeat(300),
            }),
        });
        let mut nodes = BTreeMap::new();
        nodes.insert(1, openraft::BasicNode::new("a"));
        nodes.insert(2, openraft::BasicNode::new("b"));
        round_trip(Entry {
            log_id: log_id(7, 2, 0),
            payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2])], nodes)),
        });
    }

    #[test]
    fn bad_entries_are_named() {
        assert!(decode_entry_header(&[2, 0, 0, 0, 0])
            .unwrap_err()
            .0
            .contains("version 2"));
        assert!(decode_entry_header(&[1, 9, 0, 0, 0])
            .unwrap_err()
            .0
            .contains("kind 9"));
        assert!(decode_entry_header(&[1, 0, 1, 2, 200])
            .unwrap_err()
            .0
            .contains("leader id"));
        assert!(decode_entry_header(&[
            1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
        ])
        .unwrap_err()
        .0
        .contains("64 bits"));
    }

    #[test]
    fn meta_round_trips_and_is_told_apart() {
        let meta = Meta::<KvConfig> {
            map: IndexMap {
                lsn_base: 17,
                index_base: 1001,
            },
            vote: Some(Vote::new_committed(4, 2)),
            committed: Some(log_id(4, 2, 1500)),
            last_purged: Some(log_id(3, 1, 1000)),
        };
        let blob = encode_meta(&meta).unwrap();
        assert!(is_raft_meta(&blob));
        assert_eq!(decode_meta::<KvConfig>(&blob).unwrap(), meta);
        let raw = decode_meta_raw(&blob).unwrap();
        assert_eq!(
            describe_vote(raw.vote.unwrap()),
            meta.vote.unwrap().to_string()
        );
        assert_eq!(describe_log_id(raw.committed.unwrap()), "T4-N2-1500");
        assert_eq!(decode_meta::<KvConfig>(&[]).unwrap(), Meta::default());
        assert!(decode_meta::<KvConfig>(b"other")
            .unwrap_err()
            .0
            .contains("not a raft log"));
        for cut in META_MAGIC.len()..blob.len() {
            assert!(
                decode_meta::<KvConfig>(&blob[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let empty = Meta::<KvConfig>::default();
        assert_eq!(
            decode_meta::<KvConfig>(&encode_meta(&empty).unwrap()).unwrap(),
            empty
        );
    }

    #[test]
    fn index_map_is_an_offset() {
        let map = IndexMap {
            lsn_base: 10,
            index_base: 100,
        };
        assert_eq!(map.lsn(100), Some(10));
        assert_eq!(map.lsn(105), Some(15));
        assert_eq!(map.lsn(99), None);
        assert_eq!(map.index(15), Some(105));
        assert_eq!(map.index(9), None);
        assert_eq!(IndexMap::FRESH.lsn(0), Some(1));
    }
}
