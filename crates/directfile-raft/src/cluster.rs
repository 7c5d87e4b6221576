//! An in-process network for openraft nodes (a router between `Raft` handles, no sockets) and
//! helpers to run key-value nodes on directfile-raft: the `kv` example, the cluster tests and
//! the peers benchmark use them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use directfile_journal::JournalOptions;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, Raft, RaftTypeConfig};

use crate::kv::{KvConfig, KvStateMachine};
use crate::LogStore;

/// Routes RPCs between the nodes of one process. Clones share the routing table.
pub struct Router<C: RaftTypeConfig> {
    nodes: Arc<Mutex<BTreeMap<C::NodeId, Raft<C>>>>,
}

impl<C: RaftTypeConfig> Clone for Router<C> {
    fn clone(&self) -> Self {
        Router {
            nodes: Arc::clone(&self.nodes),
        }
    }
}

impl<C: RaftTypeConfig> Default for Router<C> {
    fn default() -> Self {
        Router {
            nodes: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }
}

impl<C: RaftTypeConfig> Router<C> {
    /// An empty router.
    pub fn new() -> Router<C> {
        Router::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<C::NodeId, Raft<C>>> {
        self.nodes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes node `id` reachable through `raft`.
    pub fn add(&self, id: C::NodeId, raft: Raft<C>) {
        self.lock().insert(id, raft);
    }

    /// Makes node `id` unreachable (its RPCs fail as a dead peer's would).
    pub fn remove(&self, id: C::NodeId) -> Option<Raft<C>> {
        self.lock().remove(&id)
    }

    fn target(&self, id: C::NodeId) -> Result<Raft<C>, Unreachable> {
        self.lock().get(&id).cloned().ok_or_else(|| {
            Unreachable::new(&io::Error::new(
                io::ErrorKind::NotConnected,
                format!("node {id} is not in the router"),
            ))
        })
    }
}

/// A connection from one node to `target`.
pub struct Connection<C: RaftTypeConfig> {
    router: Router<C>,
    target: C::NodeId,
}

impl<C: RaftTypeConfig> RaftNetworkFactory<C> for Router<C> {
    type Network = Connection<C>;

    async fn new_client(&mut self, target: C::NodeId, _node: &C::Node) -> Connection<C> {
        Connection {
            router: self.clone(),
            target,
        }
    }
}

impl<C: RaftTypeConfig> RaftNetwork<C> for Connection<C> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C::NodeId>, RPCError<C::NodeId, C::Node, RaftError<C::NodeId>>>
    {
        let raft = self.router.target(self.target.clone())?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target.clone(), e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<C::NodeId>,
        RPCError<C::NodeId, C::Node, RaftError<C::NodeId, InstallSnapshotError>>,
    > {
        let raft = self.router.target(self.target.clone())?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target.clone(), e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C::NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<C::NodeId>, RPCError<C::NodeId, C::Node, RaftError<C::NodeId>>> {
        let raft = self.router.target(self.target.clone())?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target.clone(), e)))
    }
}

/// Errors of the cluster helpers.
#[derive(Debug)]
pub struct ClusterError(pub String);

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClusterError {}

fn cluster_error(what: impl fmt::Display) -> ClusterError {
    ClusterError(what.to_string())
}

impl From<NetworkError> for ClusterError {
    fn from(e: NetworkError) -> Self {
        cluster_error(e)
    }
}

/// Raft timing for nodes in one process: elections within a few hundred milliseconds.
pub fn local_config() -> Arc<Config> {
    let config = Config {
        cluster_name: "directfile-raft".into(),
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        // Snapshots are not what these nodes exercise: keep every entry in the log.
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: u64::MAX,
        ..Config::default()
    };
    Arc::new(config.validate().expect("a valid openraft config"))
}

/// A key-value node on directfile-raft.
pub struct KvNode {
    /// The node's Raft id (its key in the [`Router`]).
    pub id: u64,
    /// The node's Raft handle: `client_write`, metrics, membership changes, shutdown.
    pub raft: Raft<KvConfig>,
    /// The node's map (a clone of the one Raft applies to: reads see what was applied).
    pub state_machine: KvStateMachine,
    /// The directory of the node's raft log.
    pub dir: PathBuf,
}

impl KvNode {
    /// Opens (or reopens) the node's log in `dir`, starts Raft on it and adds it to `router`.
    /// Waits up to 10 s for the directory's lock (a node that was just shut down may still
    /// be letting it go).
    ///
    /// # Errors
    /// If the log does not open or Raft does not start.
    pub async fn start(
        id: u64,
        dir: &Path,
        router: &Router<KvConfig>,
        config: Arc<Config>,
        options: JournalOptions,
    ) -> Result<KvNode, ClusterError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let log_store = loop {
            match LogStore::<KvConfig>::open(dir, options.clone()).await {
                Ok((store, _report)) => break store,
                Err(crate::Error::Journal(directfile_journal::Error::Locked(_)))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(cluster_error(format!("node {id}: {e}"))),
            }
        };
        let state_machine = KvStateMachine::new();
        let raft = Raft::new(id, config, router.clone(), log_store, state_machine.clone())
            .await
            .map_err(|e| cluster_error(format!("node {id}: raft did not start: {e}")))?;
        router.add(id, raft.clone());
        Ok(KvNode {
            id,
            raft,
            state_machine,
            dir: dir.to_path_buf(),
        })
    }

    /// Takes the node off the router and shuts Raft down (its log store closes with it).
    ///
    /// # Errors
    /// If Raft's task ended with an error.
    pub async fn stop(self, router: &Router<KvConfig>) -> Result<(), ClusterError> {
        router.remove(self.id);
        self.raft
            .shutdown()
            .await
            .map_err(|e| cluster_error(format!("node {}: shutdown: {e}", self.id)))
    }
}

/// Makes `members` a cluster through `first` (which must be one of them).
///
/// # Errors
/// If openraft refuses the initialization.
pub async fn initialize(first: &KvNode, members: &BTreeSet<u64>) -> Result<(), ClusterError> {
    let nodes: BTreeMap<u64, BasicNode> = members
        .iter()
        .map(|&id| (id, BasicNode::new(format!("in-process node {id}"))))
        .collect();
    first
        .raft
        .initialize(nodes)
        .await
        .map_err(|e| cluster_error(format!("initialize: {e}")))
}

/// Waits until the nodes agree on a leader and returns its id.
///
/// # Errors
/// If none is elected within `timeout`.
pub async fn wait_for_leader(nodes: &[&KvNode], timeout: Duration) -> Result<u64, ClusterError> {
    let deadline = Instant::now() + timeout;
    loop {
        let leaders: BTreeSet<Option<u64>> = nodes
            .iter()
            .map(|n| n.raft.metrics().borrow().current_leader)
            .collect();
        if let Some(&Some(leader)) = leaders.iter().next() {
            if leaders.len() == 1 && nodes.iter().any(|n| n.id == leader) {
                return Ok(leader);
            }
        }
        if Instant::now() >= deadline {
            return Err(cluster_error(format!(
                "no leader agreed on within {timeout:?}: nodes see {leaders:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
