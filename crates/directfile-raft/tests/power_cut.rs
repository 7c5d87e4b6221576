//! Power cuts at random points under a Raft log workload, on the journal's simulated storage
//! (`MemStorage`: writes in flight at the cut are kept, lost or torn sector by sector).
//!
//! The workload appends entry batches without waiting (callbacks record what was reported
//! durable), saves higher votes, truncates the tail and purges the head. At a random point the
//! disk image is taken, the log reopened from it, and checked:
//! - every entry whose callback reported it durable, and that was not truncated or purged
//!   since, is there with its log id and payload;
//! - the entries form one run of consecutive indexes, each at the LSN the mapping gives;
//! - the vote is at least the last one `save_vote` returned for, and never below the vote of
//!   the previous recovery;
//! - the committed log id read back is not past the last entry.
//!
//! Then the workload goes on from the recovered log, and the next cut comes. CI runs 150 cuts;
//! `RAFT_POWER_CUTS=5000 cargo test -p directfile-raft --release --test power_cut -- --nocapture`
//! runs more (`RAFT_POWER_CUT_SEED` picks another sequence).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use directfile_journal::storage::CrashRng;
use directfile_journal::{JournalOptions, MemStorage};
use directfile_raft::kv::{KvConfig, KvRequest};
use directfile_raft::LogStore;
use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};

type Store = LogStore<KvConfig, MemStorage>;

fn options() -> JournalOptions {
    JournalOptions {
        segment_bytes: 64 << 10,
        batch_bytes_max: 8 << 10,
        batches_in_flight_max: 3,
        overlap_records_min: 4,
        ..JournalOptions::default()
    }
}

/// The payload of entry `index` of `term` in append number `salt`: the salt, then bytes only
/// that triple gives.
fn payload(index: u64, term: u64, salt: u64) -> Vec<u8> {
    let mut rng = CrashRng::new(index * 7919 + term * 104_729 + salt * 15_485_863);
    let len = 1 + rng.below(300) as usize;
    let mut bytes = salt.to_le_bytes().to_vec();
    bytes.extend((0..len).map(|_| rng.next_u64() as u8));
    bytes
}

fn salt_of(value: &[u8]) -> u64 {
    u64::from_le_bytes(value[..8].try_into().expect("a salt prefix"))
}

fn entry(index: u64, term: u64, salt: u64) -> Entry<KvConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(KvRequest::SetBytes {
            key: index,
            value: payload(index, term, salt),
        }),
    }
}

/// Writes complete after 0-400 us, out of order, so that several are in flight at a cut.
fn delayed(storage: MemStorage) -> MemStorage {
    storage.with_write_delay(|i| Duration::from_micros((i * 7_919) % 401))
}

/// What the test knows must survive a cut.
#[derive(Default)]
struct Model {
    /// Entries reported durable and neither truncated nor purged since: index -> (term, salt).
    durable: BTreeMap<u64, (u64, u64)>,
    /// Entries appended and not truncated: index -> (term, salt), durable or not.
    appended: BTreeMap<u64, (u64, u64)>,
    /// Bumped by every truncation: a callback of an older epoch reports entries that may since
    /// have been replaced.
    epoch: u64,
    vote_saved: Option<Vote<u64>>,
}

async fn read_all(store: &mut Store) -> Vec<Entry<KvConfig>> {
    store.try_get_log_entries(..).await.expect("read the log")
}

/// Opens the image and checks it against what was promised; returns the recovered store.
async fn recover(
    files: BTreeMap<u64, Vec<u8>>,
    model: &Model,
    previous_vote: Option<Vote<u64>>,
    cut: u64,
) -> (Store, MemStorage) {
    let storage = delayed(MemStorage::from_files(files));
    let (mut store, report) = Store::open_with_storage(storage.clone(), options())
        .await
        .unwrap_or_else(|e| panic!("cut {cut}: reopen: {e}"));
    let entries = read_all(&mut store).await;
    let state = store.get_log_state().await.expect("log state");
    let mut expected_index = state.last_purged_log_id.map_or(0, |p| p.index + 1);
    if let Some(first) = entries.first() {
        // An empty log may have started at any index (the suite's rule); otherwise the run
        // starts right after the purged entries.
        if state.last_purged_log_id.is_some() {
            assert_eq!(first.log_id.index, expected_index, "cut {cut}: first entry");
        }
        expected_index = first.log_id.index;
    }
    for e in &entries {
        assert_eq!(
            e.log_id.index, expected_index,
            "cut {cut}: a hole before {}",
            e.log_id
        );
        expected_index += 1;
    }
    assert_eq!(
        state.last_log_id,
        entries
            .last()
            .map(|e| e.log_id)
            .or(state.last_purged_log_id),
        "cut {cut}: log state"
    );
    let by_index: BTreeMap<u64, &Entry<KvConfig>> =
        entries.iter().map(|e| (e.log_id.index, e)).collect();
    let purged = state.last_purged_log_id.map(|p| p.index);
    for (&index, &(term, salt)) in &model.durable {
        if purged.is_some_and(|p| index <= p) {
            continue;
        }
        let found = by_index
            .get(&index)
            .unwrap_or_else(|| panic!("cut {cut}: durable entry {index} (term {term}) is gone; recovered {:?}..{:?}, report {:?}", entries.first().map(|e| e.log_id), entries.last().map(|e| e.log_id), report.journal));
        assert_eq!(
            found.log_id.leader_id.term, term,
            "cut {cut}: entry {index}"
        );
        match &found.payload {
            EntryPayload::Normal(KvRequest::SetBytes { key, value }) => {
                assert_eq!(*key, index, "cut {cut}");
                assert_eq!(
                    *value,
                    payload(index, term, salt),
                    "cut {cut}: payload of {index}"
                );
            }
            other => panic!("cut {cut}: entry {index} has payload {other:?}"),
        }
    }
    let vote = store.read_vote().await.expect("vote");
    assert!(
        vote >= model.vote_saved,
        "cut {cut}: vote went back from saved {:?} to {vote:?}",
        model.vote_saved
    );
    assert!(
        vote >= previous_vote,
        "cut {cut}: vote went back from recovered {previous_vote:?} to {vote:?}"
    );
    if let Some(committed) = store.read_committed().await.expect("committed") {
        assert!(
            state
                .last_log_id
                .is_some_and(|l| l.index >= committed.index),
            "cut {cut}: committed {committed} is past the log's end {:?}",
            state.last_log_id
        );
    }
    (store, storage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_durable_entry_and_the_vote_survive_power_cuts() {
    let cuts: u64 = std::env::var("RAFT_POWER_CUTS")
        .ok()
        .map(|v| v.parse().expect("RAFT_POWER_CUTS is a number"))
        .unwrap_or(150);
    let seed: u64 = std::env::var("RAFT_POWER_CUT_SEED")
        .ok()
        .map(|v| v.parse().expect("RAFT_POWER_CUT_SEED is a number"))
        .unwrap_or(13);
    let mut rng = CrashRng::new(seed);
    let mut storage = delayed(MemStorage::new());
    let (mut store, _) = Store::open_with_storage(storage.clone(), options())
        .await
        .expect("open");
    let mut model = Model::default();
    let mut previous_vote = None;
    let mut term = 1;
    let mut salt = 0;
    let (mut durable_checked, mut truncations, mut purges, mut votes) = (0usize, 0, 0, 0);
    // Sectors of writes in flight at the cuts: kept, lost, torn.
    let mut sectors = [0usize; 3];
    for cut in 0..cuts {
        let model_shared = Arc::new(Mutex::new(std::mem::take(&mut model)));
        let operations = rng.below(120);
        for _ in 0..operations {
            let state = store.get_log_state().await.expect("log state");
            let next = state.last_log_id.map_or(0, |l| l.index + 1);
            match rng.below(100) {
                0..=79 => {
                    let count = 1 + rng.below(12);
                    salt += 1;
                    let batch: Vec<_> =
                        (next..next + count).map(|i| entry(i, term, salt)).collect();
                    let epoch = {
                        let mut m = model_shared.lock().unwrap();
                        for i in next..next + count {
                            m.appended.insert(i, (term, salt));
                        }
                        m.epoch
                    };
                    let shared = Arc::clone(&model_shared);
                    let (first, t, s) = (next, term, salt);
                    store
                        .append_with(
                            batch,
                            Box::new(move |result| {
                                if result.is_ok() {
                                    let mut m = shared.lock().unwrap();
                                    if m.epoch == epoch {
                                        for i in first..first + count {
                                            m.durable.insert(i, (t, s));
                                        }
                                    }
                                }
                            }),
                        )
                        .expect("append");
                }
                80..=87 => {
                    term += 1;
                    let vote = Vote::new(term, 1 + rng.below(3));
                    store.save_vote(&vote).await.expect("save vote");
                    model_shared.lock().unwrap().vote_saved = Some(vote);
                    votes += 1;
                }
                88..=93 if next > 0 => {
                    // As in Raft, committed entries are never truncated.
                    let committed = store.read_committed().await.expect("committed");
                    let first = state
                        .last_purged_log_id
                        .map_or(0, |p| p.index + 1)
                        .max(committed.map_or(0, |c| c.index + 1));
                    let span = next.saturating_sub(first);
                    if span > 0 {
                        let at = next - 1 - rng.below(span.min(20));
                        let term_at = model_shared.lock().unwrap().appended.get(&at).map(|a| a.0);
                        let log_id =
                            LogId::new(CommittedLeaderId::new(term_at.unwrap_or(term), 1), at);
                        store.truncate(log_id).await.expect("truncate");
                        let mut m = model_shared.lock().unwrap();
                        m.epoch += 1;
                        m.durable.retain(|&i, _| i < at);
                        m.appended.retain(|&i, _| i < at);
                        truncations += 1;
                    }
                }
                94..=96 if next > 0 => {
                    let first = state.last_purged_log_id.map_or(0, |p| p.index + 1);
                    if next > first + 2 {
                        let upto = first + rng.below(next - first - 1);
                        let term_at = model_shared
                            .lock()
                            .unwrap()
                            .appended
                            .get(&upto)
                            .map_or(term, |a| a.0);
                        store
                            .purge(LogId::new(CommittedLeaderId::new(term_at, 1), upto))
                            .await
                            .expect("purge");
                        let mut m = model_shared.lock().unwrap();
                        m.durable.retain(|&i, _| i > upto);
                        purges += 1;
                    }
                }
                _ => {
                    let durable = store.durable_index();
                    if let Some(d) = durable {
                        let term_at = model_shared
                            .lock()
                            .unwrap()
                            .appended
                            .get(&d)
                            .map_or(term, |a| a.0);
                        store
                            .save_committed(Some(LogId::new(CommittedLeaderId::new(term_at, 1), d)))
                            .await
                            .expect("save committed");
                    }
                }
            }
            if rng.below(8) == 0 {
                tokio::time::sleep(Duration::from_micros(rng.below(300))).await;
            }
        }
        // The cut: what was promised is taken first, then the disk as it is at that moment.
        let promised = {
            let m = model_shared.lock().unwrap();
            Model {
                durable: m.durable.clone(),
                appended: m.appended.clone(),
                epoch: m.epoch,
                vote_saved: m.vote_saved,
            }
        };
        let (files, fates) = storage.crash_image(&mut rng, 512);
        for (total, fate) in sectors.iter_mut().zip(fates) {
            *total += fate;
        }
        drop(store);
        durable_checked += promised.durable.len();
        let (recovered, recovered_storage) = recover(files, &promised, previous_vote, cut).await;
        store = recovered;
        storage = recovered_storage;
        // Carry on from what the log now holds.
        previous_vote = store.read_vote().await.expect("vote");
        if let Some(v) = previous_vote {
            term = term.max(v.leader_id().term);
        }
        let entries = read_all(&mut store).await;
        model = Model {
            durable: entries
                .iter()
                .map(|e| match &e.payload {
                    EntryPayload::Normal(KvRequest::SetBytes { value, .. }) => {
                        (e.log_id.index, (e.log_id.leader_id.term, salt_of(value)))
                    }
                    other => panic!("unexpected payload {other:?}"),
                })
                .collect(),
            appended: BTreeMap::new(),
            epoch: 0,
            vote_saved: previous_vote,
        };
        model.appended = model.durable.clone();
    }
    println!(
        "{cuts} power cuts: {durable_checked} durable entries checked, {votes} votes, {truncations} truncations, {purges} purges; sectors in flight at the cuts: {} kept, {} lost, {} torn",
        sectors[0], sectors[1], sectors[2]
    );
    assert!(durable_checked > 0 && votes > 0 && truncations > 0 && purges > 0);
    assert!(sectors[2] > 0, "no cut hit a write in flight");
}
