//! A raft log directory for people: what `directfile journal dump` and `verify` print about
//! the Raft side of a journal (its meta: vote, committed, last purged, index mapping; and each
//! entry: index, term, leader, kind, payload size), and the checks `verify` adds (every
//! entry decodes, sits at the LSN the mapping gives, and the indexes follow each other).
//! Read without opening the journal; node ids are shown as `u64` when they decode as one.

use std::fmt;
use std::io;
use std::path::Path;

use crate::codec::{self, EntryKind, IndexMap};

/// One entry as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryLine {
    /// The journal record that holds the entry.
    pub lsn: u64,
    /// The entry's Raft log index.
    pub index: u64,
    /// Term of the leader that proposed it.
    pub term: u64,
    /// That leader's id, for people (see [`codec::describe_leader`]).
    pub leader: String,
    /// Blank, normal or membership.
    pub kind: EntryKind,
    /// Bytes of its encoded payload (after the entry header).
    pub payload_bytes: usize,
    /// Hidden: at or below the last purged index (the record waits for its segment to go).
    pub purged: bool,
}

/// The Raft view of a journal directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftReport {
    /// Format version of the meta blob.
    pub meta_version: u8,
    /// The mapping between Raft indexes and journal LSNs the meta holds.
    pub map: IndexMap,
    /// The saved vote, for people (see [`codec::describe_vote`]); `None` if none was saved.
    pub vote: Option<String>,
    /// The committed log id the meta holds, for people; `None` if none was written.
    pub committed: Option<String>,
    /// The last purged log id, for people; `None` if nothing was purged.
    pub last_purged: Option<String>,
    /// The index of the last purged log id, when it decodes with `u64` node ids.
    pub last_purged_index: Option<u64>,
    /// The entries an open would keep, in LSN order, purged ones included and marked (records
    /// below the mapping are skipped; records that do not decode are in `problems`).
    pub entries: Vec<EntryLine>,
    /// What does not hold together (empty when healthy).
    pub problems: Vec<String>,
}

/// Reads the raft log in `dir`: `Ok(None)` if the journal's meta is not a raft log's.
///
/// # Errors
/// The directory cannot be read, or the journal is corrupt (recovery would refuse it).
pub fn inspect(dir: impl AsRef<Path>) -> io::Result<Option<RaftReport>> {
    let mut records = Vec::new();
    let meta = directfile_journal::tools::kept_records(dir, |lsn, payload| {
        records.push((lsn, payload.to_vec()));
    })?;
    if !codec::is_raft_meta(&meta) {
        return Ok(None);
    }
    let raw = codec::decode_meta_raw(&meta)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let last_purged_index = raw
        .last_purged
        .and_then(|b| postcard::from_bytes::<openraft::LogId<u64>>(b).ok())
        .map(|l| l.index);
    let mut report = RaftReport {
        meta_version: raw.version,
        map: raw.map,
        vote: raw.vote.map(codec::describe_vote),
        committed: raw.committed.map(codec::describe_log_id),
        last_purged: raw.last_purged.map(codec::describe_log_id),
        last_purged_index,
        entries: Vec::new(),
        problems: Vec::new(),
    };
    let mut previous: Option<u64> = None;
    for (lsn, payload) in records {
        let Some(expected) = raw.map.index(lsn) else {
            // Below the mapping's base: records of a log purged past its end.
            continue;
        };
        match codec::decode_entry_header(&payload) {
            Ok(header) => {
                if header.index != expected {
                    report.problems.push(format!(
                        "LSN {lsn} holds index {} where the mapping puts index {expected}",
                        header.index
                    ));
                }
                if let Some(p) = previous {
                    if header.index != p + 1 {
                        report
                            .problems
                            .push(format!("index {} follows index {p}", header.index));
                    }
                }
                previous = Some(header.index);
                report.entries.push(EntryLine {
                    lsn,
                    index: header.index,
                    term: header.term,
                    leader: codec::describe_leader(header.leader),
                    kind: header.kind,
                    payload_bytes: header.payload.len(),
                    purged: last_purged_index.is_some_and(|p| header.index <= p),
                });
            }
            Err(e) => report
                .problems
                .push(format!("LSN {lsn} is not a raft entry: {e}")),
        }
    }
    Ok(Some(report))
}

impl RaftReport {
    /// Entries not hidden by the purge.
    pub fn live(&self) -> impl Iterator<Item = &EntryLine> {
        self.entries.iter().filter(|e| !e.purged)
    }

    /// A summary: meta and the range of live entries (what `verify` prints).
    pub fn summary(&self) -> String {
        let none = || "none".to_string();
        let live: Vec<&EntryLine> = self.live().collect();
        let range = match (live.first(), live.last()) {
            (Some(first), Some(last)) => format!(
                "{} entries, index {}..={} (terms {}..={})",
                live.len(),
                first.index,
                last.index,
                first.term,
                last.term
            ),
            _ => "no entries".to_string(),
        };
        format!(
            "raft log (meta format {}): {range}; {} purged but still on disk\n  vote: {}; committed: {}; last purged: {}\n  index i >= {} is LSN {} + (i - {})\n",
            self.meta_version,
            self.entries.len() - live.len(),
            self.vote.clone().unwrap_or_else(none),
            self.committed.clone().unwrap_or_else(none),
            self.last_purged.clone().unwrap_or_else(none),
            self.map.index_base,
            self.map.lsn_base,
            self.map.index_base,
        )
    }
}

impl fmt::Display for RaftReport {
    /// The summary, every entry, and the problems.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())?;
        writeln!(
            f,
            "  {:>10} {:>10} {:>6} {:<12} {:<10} {:>8}",
            "LSN", "index", "term", "leader", "kind", "bytes"
        )?;
        for e in &self.entries {
            writeln!(
                f,
                "  {:>10} {:>10} {:>6} {:<12} {:<10} {:>8}{}",
                e.lsn,
                e.index,
                e.term,
                e.leader,
                e.kind,
                e.payload_bytes,
                if e.purged { "  (purged)" } else { "" }
            )?;
        }
        for problem in &self.problems {
            writeln!(f, "  PROBLEM: {problem}")?;
        }
        Ok(())
    }
}
