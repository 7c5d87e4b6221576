//! Three openraft nodes in one process on directfile-raft, talking through an in-process
//! router: elect a leader, write keys, stop every node, restart them from their directories
//! and read the keys back.
//!
//! `cargo run --release -p directfile-raft --example kv -- [DIR] [WRITES]`
//! (DIR defaults to `./kv-example`, on a disk file system: tmpfs has no O_DIRECT; it is removed
//! at the end.)

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use directfile_journal::JournalOptions;
use directfile_raft::cluster::{initialize, local_config, wait_for_leader, KvNode, Router};
use directfile_raft::kv::{KvConfig, KvRequest};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn start_all(dir: &std::path::Path, router: &Router<KvConfig>) -> Result<Vec<KvNode>> {
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let node_dir = dir.join(format!("node-{id}"));
        nodes.push(
            KvNode::start(
                id,
                &node_dir,
                router,
                local_config(),
                JournalOptions::default(),
            )
            .await?,
        );
    }
    Ok(nodes)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "kv-example".into()));
    let writes: u64 = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|e| format!("WRITES must be a number: {e}"))?,
        None => 10_000,
    };
    let router = Router::<KvConfig>::new();
    let nodes = start_all(&dir, &router).await?;
    initialize(&nodes[0], &BTreeSet::from([1, 2, 3])).await?;
    let refs: Vec<&KvNode> = nodes.iter().collect();
    let leader_id = wait_for_leader(&refs, Duration::from_secs(10)).await?;
    println!("leader: node {leader_id}");
    let leader = Arc::new(
        nodes
            .iter()
            .find(|n| n.id == leader_id)
            .expect("leader")
            .raft
            .clone(),
    );

    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..64u64 {
        let leader = Arc::clone(&leader);
        tasks.push(tokio::spawn(async move {
            let mut i = writer;
            while i < writes {
                let request = KvRequest::Set {
                    key: format!("key-{i}"),
                    value: format!("value-{i}"),
                };
                leader
                    .client_write(request)
                    .await
                    .map_err(|e| e.to_string())?;
                i += 64;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    println!(
        "{writes} writes committed by 64 writers in {:.2} s ({:.0} writes/s)",
        elapsed.as_secs_f64(),
        writes as f64 / elapsed.as_secs_f64()
    );
    drop(leader);
    for node in nodes {
        node.stop(&router).await?;
    }

    println!("all nodes stopped; restarting from {}", dir.display());
    let nodes = start_all(&dir, &router).await?;
    let refs: Vec<&KvNode> = nodes.iter().collect();
    let leader_id = wait_for_leader(&refs, Duration::from_secs(20)).await?;
    let leader = &nodes
        .iter()
        .find(|n| n.id == leader_id)
        .expect("leader")
        .raft;
    // A write in the new term commits every entry before it.
    leader
        .client_write(KvRequest::Set {
            key: "restarted".into(),
            value: "yes".into(),
        })
        .await?;
    let last = leader.metrics().borrow().last_log_index;
    for node in &nodes {
        node.raft
            .wait(Some(Duration::from_secs(30)))
            .applied_index_at_least(last, "catch up")
            .await?;
        let missing = (0..writes)
            .filter(|i| node.state_machine.get(&format!("key-{i}")) != Some(format!("value-{i}")))
            .count();
        println!(
            "node {}: {} keys, {missing} of the {writes} writes missing",
            node.id,
            node.state_machine.len()
        );
        if missing > 0 {
            return Err(format!("node {} lost {missing} committed writes", node.id).into());
        }
    }
    for node in nodes {
        node.stop(&router).await?;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
