//! directfile-journal as [openraft](https://docs.rs/openraft/0.9)'s log store: durable group
//! commit under Raft, without blocking the Raft task on the device.
//!
//! ```
//! use std::collections::BTreeSet;
//! use std::time::Duration;
//!
//! use directfile_raft::cluster::{local_config, Router};
//! use directfile_raft::kv::{KvConfig, KvRequest, KvStateMachine};
//! use directfile_raft::{inspect, LogStore};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from)
//! #     .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
//! #     .join("directfile-raft-doc-example");
//! # let _ = std::fs::remove_dir_all(&dir);
//! // Node 1's log, in `dir` on a disk file system (tmpfs has no O_DIRECT).
//! let (log_store, report) = LogStore::<KvConfig>::open(&dir, Default::default()).await?;
//! assert_eq!(report.last_log_id, None); // a new log
//! let network = Router::new(); // in-process; a real node brings its own RaftNetworkFactory
//! let state_machine = KvStateMachine::new();
//! let raft =
//!     openraft::Raft::new(1, local_config(), network.clone(), log_store, state_machine.clone())
//!         .await?;
//! network.add(1, raft.clone());
//! raft.initialize(BTreeSet::from([1])).await?; // a cluster of one
//! raft.wait(Some(Duration::from_secs(10))).current_leader(1, "elected").await?;
//!
//! // Committed (durable in the journal) and applied when it returns.
//! raft.client_write(KvRequest::Set { key: "k".into(), value: "v".into() }).await?;
//! assert_eq!(state_machine.get("k").as_deref(), Some("v"));
//!
//! // The directory holds the entries: membership (index 0), the leader's blank (1), the write.
//! let on_disk = inspect::inspect(&dir)?.expect("a raft log");
//! assert_eq!(on_disk.live().last().map(|entry| entry.index), Some(2));
//! raft.shutdown().await?;
//! # drop((raft, network));
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok(())
//! # }
//! ```
//!
//! # How an append becomes durable
//!
//! `RaftLogStorage::append(entries, callback)` encodes the entries (see [`codec`]), keeps them
//! in memory (they are readable when `append` returns, as openraft requires), hands them to the
//! store's flusher thread and returns: the Raft task never waits for the device. The flusher
//! puts each append into the journal's filling batch in order (the next append starts only
//! after the previous one is in a batch), so appends from consecutive calls share one
//! write-through write (group commit across calls), several batches are in flight at once, and
//! the flusher fires each callback only when the journal acknowledged every record of it, in
//! order. A failed write poisons the journal: that callback and every later one get the error,
//! and the store refuses further appends.
//!
//! openraft 0.9's own core awaits that callback before it runs its next command
//! (`RaftCore::append_to_log` in openraft 0.9.25 sends the entries, then waits for the
//! flush), and it runs its commands after each API message: on the leader every
//! `client_write` is one append and one durable write, whatever the store. So under 0.9 the
//! store decides the cost of that one write (the journal's lone-writer path: one
//! write-through write, no fsync of a growing file, no hand-off to a lane), and group commit
//! across calls helps where appends overlap (followers, a core that pipelines its log I/O).
//!
//! # Raft index and journal LSN
//!
//! One entry is one journal record. openraft's indexes start at 0 and the journal's LSNs at 1;
//! purging a log past its end (a follower that installs a snapshot) makes the next entry's
//! index jump while LSNs never do. So the mapping is an offset kept in the meta blob
//! ([`codec::IndexMap`]): index `i >= index_base` is LSN `lsn_base + (i - index_base)`. A new
//! log has `index_base = 0, lsn_base = 1`. Truncating at index `i` truncates the journal at
//! `lsn(i)` (`Journal::truncate_from`, which makes the next append get that LSN again), so the
//! mapping holds. Only a purge past the last entry changes it: the next index `p + 1` gets the
//! journal's next LSN.
//!
//! # Vote, committed log id, purge
//!
//! They live in the journal's meta blob (`Journal::set_meta`, written atomically and durably
//! in two alternating checksummed slots: a crash shows the old blob or the new one, never a
//! torn one or an older one as newer), with the mapping and a format version ([`codec`]).
//!
//! - `save_vote` returns once the blob with the vote is durable, after every earlier append is
//!   durable (openraft asks for all log I/O in order, the vote included).
//! - `save_committed` keeps the id in memory; the flusher writes it in the background once
//!   every entry up to it is durable here, at most once per 10 ms (openraft 0.9 commits
//!   entry by entry, and each write is a durable write of the HEAD), and on close. After a crash the committed id read back is never
//!   newer than the log (openraft re-applies up to it at start), at worst older (openraft then
//!   learns it again from the leader).
//! - `purge(log_id)` hides the entries at once; the flusher writes the last purged id (and a
//!   new mapping when the purge passes the end of the log) to the meta, then removes the whole
//!   journal segments below it (`Journal::truncate_before`). Records of a partly purged segment
//!   stay on disk until the segment goes, hidden by the purged id.
//! - `truncate(log_id)` waits for earlier appends, then `Journal::truncate_from(lsn)`: a crash
//!   leaves the old log or the truncated one.
//!
//! # Reads
//!
//! Entries not yet durable and the most recent durable ones (up to 16,384) are served from
//! memory; older ones from the journal, by LSN.
//!
//! # Layout
//!
//! - [`codec`]: the entry record and the meta blob (versioned byte layouts).
//! - [`LogStore`]: `RaftLogStorage` + `RaftLogReader`.
//! - [`inspect`]: the Raft view of a directory for `directfile journal dump|verify`.
//! - [`kv`]: a small in-memory key-value state machine and its type configuration.
//! - [`cluster`]: an in-process network (a router between `Raft` handles) and node helpers,
//!   for the `kv` example, the tests and the peers benchmark.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cluster;
pub mod codec;
pub mod inspect;
pub mod kv;
mod log_store;

pub use log_store::{Durable, Error, LogStore, OpenReport};
