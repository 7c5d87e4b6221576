//! `directfile journal dump|verify` on a raft log directory (directfile-raft): the vote, the
//! committed and last purged log ids, the index mapping and every entry are shown; an entry
//! that is not where its index maps makes verify exit 2.

use std::process::Output;

use directfile_journal::{Journal, JournalOptions, Lsn};
use directfile_raft::kv::{KvConfig, KvRequest};
use directfile_raft::LogStore;
use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

mod common;
use common::run_in;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn entry(term: u64, index: u64) -> Entry<KvConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 2), index),
        payload: EntryPayload::Normal(KvRequest::Set {
            key: format!("k{index}"),
            value: "v".repeat(10),
        }),
    }
}

#[test]
fn dump_and_verify_show_the_raft_side() {
    let root = common::scratch("raft-dump");
    let dir = root.join("log");
    let options = JournalOptions {
        segment_bytes: 1 << 20,
        batch_bytes_max: 64 << 10,
        ..JournalOptions::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (mut store, _) = LogStore::<KvConfig>::open(&dir, options.clone())
            .await
            .unwrap();
        store.save_vote(&Vote::new_committed(3, 2)).await.unwrap();
        let (done, flushed) = std::sync::mpsc::channel();
        store
            .append_with(
                (0..20).map(|i| entry(3, i)),
                Box::new(move |result| done.send(result.is_ok()).unwrap()),
            )
            .unwrap();
        assert!(flushed.recv().unwrap());
        store
            .purge(LogId::new(CommittedLeaderId::new(3, 2), 4))
            .await
            .unwrap();
        store
            .save_committed(Some(LogId::new(CommittedLeaderId::new(3, 2), 15)))
            .await
            .unwrap();
        // Purge and committed are written in the background: closing the store waits for them.
        drop(store);
    });
    let path = dir.to_str().unwrap();
    let output = run_in(&root, &["journal", "dump", path]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = stdout(&output);
    for needle in [
        "raft log (meta format 1): 15 entries, index 5..=19 (terms 3..=3)",
        "vote: T3-N2:committed",
        "committed: T3-N2-15",
        "last purged: T3-N2-4",
        "index i >= 0 is LSN 1 + (i - 0)",
        "(purged)",
        "normal",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in {text}");
    }
    let output = run_in(&root, &["journal", "verify", path]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("15 entries, index 5..=19"), "{text}");

    // A record that is not the entry its LSN maps to: an entry of index 7 appended where the
    // mapping puts index 20 (written with the journal directly, as a bug would).
    runtime.block_on(async {
        let (journal, _) = Journal::open(&dir, options).await.unwrap();
        let mut bytes = Vec::new();
        directfile_raft::codec::encode_entry(&entry(3, 7), &mut bytes).unwrap();
        assert_eq!(journal.append(&bytes).await.unwrap(), Lsn(21));
    });
    let output = run_in(&root, &["journal", "verify", path]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains("LSN 21 holds index 7 where the mapping puts index 20"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
