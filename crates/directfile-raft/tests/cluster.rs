//! Three openraft nodes in one process on directfile-raft (in-process router, real files): a
//! leader is elected, 10,000 writes commit, a follower and then the leader are dropped, both
//! restart from their directories, and every committed write is found on every node.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::TestDir;
use directfile_journal::JournalOptions;
use directfile_raft::cluster::{initialize, local_config, wait_for_leader, KvNode, Router};
use directfile_raft::kv::{KvConfig, KvRequest};
use openraft::Raft;

const WRITES: u64 = 10_000;
const WRITERS: u64 = 64;

fn options() -> JournalOptions {
    JournalOptions {
        segment_bytes: 4 << 20,
        ..JournalOptions::default()
    }
}

fn value(i: u64) -> String {
    format!("value-{i}-{}", "x".repeat((i % 50) as usize))
}

/// Writes keys `from..to` through `raft` from `WRITERS` tasks; returns how many committed.
async fn write_range(raft: &Raft<KvConfig>, from: u64, to: u64) -> u64 {
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let raft = raft.clone();
        tasks.push(tokio::spawn(async move {
            let mut committed = 0;
            let mut i = from + writer;
            while i < to {
                let request = KvRequest::Set {
                    key: format!("k{i}"),
                    value: value(i),
                };
                raft.client_write(request)
                    .await
                    .unwrap_or_else(|e| panic!("write of k{i}: {e}"));
                committed += 1;
                i += WRITERS;
            }
            committed
        }));
    }
    let mut committed = 0;
    for task in tasks {
        committed += task.await.expect("writer task");
    }
    committed
}

async fn wait_applied(node: &KvNode, index: u64) {
    node.raft
        .wait(Some(Duration::from_secs(30)))
        .applied_index_at_least(Some(index), "catch up")
        .await
        .unwrap_or_else(|e| panic!("node {} did not apply up to {index}: {e}", node.id));
}

fn check_all(node: &KvNode, writes: u64) {
    for i in 0..writes {
        assert_eq!(
            node.state_machine.get(&format!("k{i}")),
            Some(value(i)),
            "node {} lost committed write k{i}",
            node.id
        );
    }
}

fn leader_of(nodes: &[KvNode], id: u64) -> &KvNode {
    nodes
        .iter()
        .find(|n| n.id == id)
        .expect("leader among the nodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_keep_every_committed_write_across_restarts() {
    let dirs: Vec<TestDir> = (1..=3).map(|_| TestDir::new("cluster")).collect();
    let router = Router::<KvConfig>::new();
    let config = local_config();
    let members: BTreeSet<u64> = [1, 2, 3].into();
    let mut nodes = Vec::new();
    for (id, dir) in (1..=3).zip(&dirs) {
        nodes.push(
            KvNode::start(id, dir.path(), &router, Arc::clone(&config), options())
                .await
                .expect("start"),
        );
    }
    initialize(&nodes[0], &members).await.expect("initialize");
    let refs: Vec<&KvNode> = nodes.iter().collect();
    let leader = wait_for_leader(&refs, Duration::from_secs(10))
        .await
        .expect("a leader");

    let committed = write_range(&leader_of(&nodes, leader).raft, 0, WRITES).await;
    assert_eq!(committed, WRITES);
    let last = leader_of(&nodes, leader)
        .raft
        .metrics()
        .borrow()
        .last_log_index
        .expect("log");
    for node in &nodes {
        wait_applied(node, last).await;
        check_all(node, WRITES);
    }

    // Drop a follower, write more with two nodes, then drop the leader too.
    let follower_index = nodes
        .iter()
        .position(|n| n.id != leader)
        .expect("a follower");
    let follower = nodes.remove(follower_index);
    let follower_id = follower.id;
    follower.stop(&router).await.expect("stop the follower");
    let more = WRITES + 1_000;
    let committed = write_range(&leader_of(&nodes, leader).raft, WRITES, more).await;
    assert_eq!(committed, 1_000);
    let leader_index = nodes
        .iter()
        .position(|n| n.id == leader)
        .expect("the leader");
    let old_leader = nodes.remove(leader_index);
    old_leader.stop(&router).await.expect("stop the leader");

    // Restart both from their directories: the survivor and the follower elect a leader.
    let dir_of = |id: u64| dirs[(id - 1) as usize].path().to_path_buf();
    nodes.push(
        KvNode::start(
            follower_id,
            &dir_of(follower_id),
            &router,
            Arc::clone(&config),
            options(),
        )
        .await
        .expect("restart the follower"),
    );
    nodes.push(
        KvNode::start(
            leader,
            &dir_of(leader),
            &router,
            Arc::clone(&config),
            options(),
        )
        .await
        .expect("restart the leader"),
    );
    let refs: Vec<&KvNode> = nodes.iter().collect();
    let new_leader = wait_for_leader(&refs, Duration::from_secs(20))
        .await
        .expect("a new leader");
    // One more write commits in the new term and so commits everything before it.
    let committed = write_range(&leader_of(&nodes, new_leader).raft, more, more + WRITERS).await;
    assert_eq!(committed, WRITERS);
    let last = leader_of(&nodes, new_leader)
        .raft
        .metrics()
        .borrow()
        .last_log_index
        .expect("log");
    for node in &nodes {
        wait_applied(node, last).await;
        check_all(node, more + WRITERS);
        assert_eq!(
            node.state_machine.len() as u64,
            more + WRITERS,
            "node {}",
            node.id
        );
    }
    for node in nodes {
        node.stop(&router).await.expect("stop");
    }
}
