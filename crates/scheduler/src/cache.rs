//! The scheduler's cache of nodes and the pods on them, including pods it has *assumed* onto a
//! node before the API server confirmed the binding — so the next decision already counts
//! them and never waits for the watch (upstream `internal/cache`). The scheduling loop reads an
//! immutable [`Snapshot`] that is brought up to date at the start of each cycle by copying only
//! the nodes that changed (copy-on-write `Arc<NodeInfo>`s).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::{Node, Pod};
use parking_lot::Mutex;

use crate::nodeinfo::{NodeInfo, PodInfo, pod_key};

/// Why a cache operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The pod is already in the cache.
    #[error("pod {0} is already in the cache")]
    AlreadyPresent(String),
}

#[derive(Debug, Clone)]
struct PodState {
    info: Arc<PodInfo>,
    node: String,
    assumed: bool,
}

#[derive(Default)]
struct State {
    nodes: HashMap<String, Arc<NodeInfo>>,
    pods: HashMap<String, PodState>,
    generation: u64,
    /// Nodes changed since the last snapshot update.
    dirty: HashSet<String>,
    /// Nodes were added or removed since the last snapshot update.
    membership_changed: bool,
}

impl State {
    fn node_mut(&mut self, name: &str) -> &mut NodeInfo {
        self.generation += 1;
        let generation = self.generation;
        self.dirty.insert(name.to_owned());
        let entry = self
            .nodes
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(NodeInfo::placeholder(name)));
        let info = Arc::make_mut(entry);
        info.generation = generation;
        info
    }

    fn add_to_node(&mut self, info: Arc<PodInfo>, node: &str) {
        self.node_mut(node).add_pod(info);
    }

    fn remove_from_node(&mut self, key: &str, node: &str) {
        if !self.nodes.contains_key(node) {
            return;
        }
        let info = self.node_mut(node);
        info.remove_pod(key);
        if !info.has_node && info.pods.is_empty() {
            self.nodes.remove(node);
        }
    }
}

/// Nodes and pods as the scheduler sees them.
#[derive(Default)]
pub struct Cache {
    state: Mutex<State>,
}

fn node_name_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Cache {
        Cache::default()
    }

    /// A node was added or changed.
    pub fn add_node(&self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let mut state = self.state.lock();
        let was_real = state.nodes.get(&name).is_some_and(|n| n.has_node);
        state.node_mut(&name).set_node(node);
        if !was_real {
            state.membership_changed = true;
        }
    }

    /// A node was deleted; its pods (if any are still known) stay accounted for.
    pub fn remove_node(&self, name: &str) {
        let mut state = self.state.lock();
        let Some(existing) = state.nodes.get(name) else {
            return;
        };
        if existing.pods.is_empty() {
            state.nodes.remove(name);
        } else {
            let info = state.node_mut(name);
            info.node = Arc::new(Node::default());
            info.has_node = false;
            info.unschedulable = false;
            info.has_taints = false;
        }
        state.dirty.insert(name.to_owned());
        state.membership_changed = true;
    }

    /// An assigned pod was seen (or changed). Confirms an assumed pod.
    pub fn add_pod(&self, pod: Arc<Pod>) {
        let node = node_name_of(&pod).to_owned();
        if node.is_empty() {
            return;
        }
        let info = Arc::new(PodInfo::new(pod));
        let mut state = self.state.lock();
        if let Some(existing) = state.pods.get(&info.key).cloned() {
            // Same version already accounted for (a re-list): nothing to do.
            if !existing.assumed
                && existing.node == node
                && existing.info.pod.metadata.resource_version == info.pod.metadata.resource_version
            {
                return;
            }
            state.remove_from_node(&info.key, &existing.node);
        }
        state.add_to_node(info.clone(), &node);
        state.pods.insert(
            info.key.clone(),
            PodState {
                info,
                node,
                assumed: false,
            },
        );
    }

    /// An assigned pod was deleted (or finished).
    pub fn remove_pod(&self, pod: &Pod) {
        let key = pod_key(pod);
        let mut state = self.state.lock();
        if let Some(existing) = state.pods.remove(&key) {
            state.remove_from_node(&key, &existing.node);
        }
    }

    /// Count `pod` on `node` before the binding is confirmed.
    pub fn assume_pod(&self, pod: Arc<PodInfo>, node: &str) -> Result<(), CacheError> {
        let mut state = self.state.lock();
        if state.pods.contains_key(&pod.key) {
            return Err(CacheError::AlreadyPresent(crate::nodeinfo::pod_name(
                &pod.pod,
            )));
        }
        state.add_to_node(pod.clone(), node);
        state.pods.insert(
            pod.key.clone(),
            PodState {
                info: pod,
                node: node.to_owned(),
                assumed: true,
            },
        );
        Ok(())
    }

    /// Drop an assumed pod whose binding failed (confirmed pods stay).
    pub fn forget_pod(&self, key: &str) {
        let mut state = self.state.lock();
        if let Some(existing) = state.pods.get(key)
            && existing.assumed
        {
            let node = existing.node.clone();
            state.pods.remove(key);
            state.remove_from_node(key, &node);
        }
    }

    /// Whether the pod is assumed (bound by us, not yet confirmed by the watch).
    pub fn is_assumed(&self, key: &str) -> bool {
        self.state.lock().pods.get(key).is_some_and(|p| p.assumed)
    }

    /// The node a cached pod is on.
    pub fn pod_node(&self, key: &str) -> Option<String> {
        self.state.lock().pods.get(key).map(|p| p.node.clone())
    }

    /// Keys of every cached pod (assumed ones included) with whether each is assumed.
    pub fn pod_keys(&self) -> Vec<(String, bool)> {
        self.state
            .lock()
            .pods
            .iter()
            .map(|(k, p)| (k.clone(), p.assumed))
            .collect()
    }

    /// Remove a cached pod by key (re-list reconciliation).
    pub fn remove_pod_key(&self, key: &str) {
        let mut state = self.state.lock();
        if let Some(existing) = state.pods.remove(key) {
            state.remove_from_node(key, &existing.node);
        }
    }

    /// Names of every node with a Node object.
    pub fn node_names(&self) -> Vec<String> {
        self.state
            .lock()
            .nodes
            .values()
            .filter(|n| n.has_node)
            .map(|n| n.name.clone())
            .collect()
    }

    /// How many nodes (with Node objects) the cache holds.
    pub fn node_count(&self) -> usize {
        self.state
            .lock()
            .nodes
            .values()
            .filter(|n| n.has_node)
            .count()
    }

    /// Bring `snapshot` up to date, copying only changed nodes; the snapshot records which
    /// nodes changed (see [`Snapshot::changes_since`]).
    pub fn update_snapshot(&self, snapshot: &mut Snapshot) {
        let mut state = self.state.lock();
        if state.membership_changed || snapshot.nodes.is_empty() && !state.nodes.is_empty() {
            let all: Vec<Arc<NodeInfo>> = state
                .nodes
                .values()
                .filter(|n| n.has_node)
                .cloned()
                .collect();
            *snapshot = Snapshot::from_nodes(all);
            state.membership_changed = false;
            state.dirty.clear();
            return;
        }
        if state.dirty.is_empty() {
            return;
        }
        let dirty: Vec<String> = state.dirty.drain().collect();
        let mut changed = Vec::with_capacity(dirty.len());
        for name in dirty {
            let (Some(&index), Some(info)) = (snapshot.index.get(&name), state.nodes.get(&name))
            else {
                continue;
            };
            let old = std::mem::replace(&mut snapshot.nodes[index], info.clone());
            snapshot.update_lists(index, &old);
            if !Arc::ptr_eq(&old.images, &info.images) {
                snapshot.count_images(&old, -1);
                snapshot.count_images(info, 1);
            }
            snapshot.count_pvcs(&old, -1);
            snapshot.count_pvcs(info, 1);
            changed.push(index);
        }
        snapshot.record(changed);
    }
}

/// Snapshot epochs and generations are unique across all snapshots of the process, so state
/// derived from one snapshot is never mistaken for state of another.
static SNAPSHOT_IDS: AtomicU64 = AtomicU64::new(1);

fn next_snapshot_id() -> u64 {
    SNAPSHOT_IDS.fetch_add(1, Ordering::Relaxed)
}

/// How many updates a snapshot remembers for [`Snapshot::changes_since`].
const CHANGE_LOG_UPDATES: usize = 256;

/// An immutable view of the cluster for one scheduling cycle (upstream `cache.Snapshot`).
///
/// Besides the nodes it remembers which nodes the last updates replaced, so plugins can keep
/// per-node results across cycles and recompute only what changed ([`crate::memo`]): an
/// *epoch* names one node order (a new one whenever nodes are added or removed), a
/// *generation* one state of the nodes within it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every node, in zone-interleaved order (so sampling a prefix spreads over zones).
    nodes: Vec<Arc<NodeInfo>>,
    index: HashMap<String, usize>,
    /// Indices of nodes with pods that have pod (anti-)affinity, ascending.
    pub with_affinity: Vec<usize>,
    /// Indices of nodes with pods that have required anti-affinity, ascending.
    pub with_required_anti_affinity: Vec<usize>,
    image_nodes: HashMap<String, usize>,
    pvc_users: HashMap<String, usize>,
    epoch: u64,
    generation: u64,
    /// The last updates: the generation each produced and the indices of the nodes it replaced.
    log: VecDeque<(u64, Vec<usize>)>,
}

/// Add or remove `index` in the ascending list `list` when membership changed.
fn set_member(list: &mut Vec<usize>, index: usize, was: bool, is: bool) {
    if was == is {
        return;
    }
    match (list.binary_search(&index), is) {
        (Err(at), true) => list.insert(at, index),
        (Ok(at), false) => {
            list.remove(at);
        }
        _ => {}
    }
}

/// The zone of a node (region and zone labels, current or beta).
pub fn zone_key(node: &Node) -> String {
    let labels = crate::helpers::node_labels(node);
    let get = |a: &str, b: &str| {
        labels
            .get(a)
            .or_else(|| labels.get(b))
            .cloned()
            .unwrap_or_default()
    };
    let region = get(
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/region",
    );
    let zone = get(
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/zone",
    );
    if region.is_empty() && zone.is_empty() {
        String::new()
    } else {
        format!("{region}:\x00:{zone}")
    }
}

impl Snapshot {
    /// A snapshot of exactly these nodes (tests build them directly).
    pub fn from_nodes(nodes: Vec<Arc<NodeInfo>>) -> Snapshot {
        let mut zones: BTreeMap<String, Vec<Arc<NodeInfo>>> = BTreeMap::new();
        for n in nodes {
            zones.entry(zone_key(&n.node)).or_default().push(n);
        }
        for list in zones.values_mut() {
            list.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let mut ordered = Vec::new();
        let mut iters: Vec<_> = zones.into_values().map(Vec::into_iter).collect();
        loop {
            let mut any = false;
            for it in iters.iter_mut() {
                if let Some(n) = it.next() {
                    ordered.push(n);
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
        let generation = next_snapshot_id();
        let mut snapshot = Snapshot {
            index: ordered
                .iter()
                .enumerate()
                .map(|(i, n)| (n.name.clone(), i))
                .collect(),
            nodes: ordered,
            epoch: next_snapshot_id(),
            generation,
            log: VecDeque::from([(generation, Vec::new())]),
            ..Default::default()
        };
        for i in 0..snapshot.nodes.len() {
            let n = snapshot.nodes[i].clone();
            snapshot.count_images(&n, 1);
            snapshot.count_pvcs(&n, 1);
        }
        snapshot.with_affinity = (0..snapshot.nodes.len())
            .filter(|&i| !snapshot.nodes[i].pods_with_affinity.is_empty())
            .collect();
        snapshot.with_required_anti_affinity = (0..snapshot.nodes.len())
            .filter(|&i| {
                !snapshot.nodes[i]
                    .pods_with_required_anti_affinity
                    .is_empty()
            })
            .collect();
        snapshot
    }

    /// Keep the affinity index lists right after node `index` replaced `old`.
    fn update_lists(&mut self, index: usize, old: &NodeInfo) {
        let new = &self.nodes[index];
        let (was, is) = (
            !old.pods_with_affinity.is_empty(),
            !new.pods_with_affinity.is_empty(),
        );
        set_member(&mut self.with_affinity, index, was, is);
        let (was, is) = (
            !old.pods_with_required_anti_affinity.is_empty(),
            !new.pods_with_required_anti_affinity.is_empty(),
        );
        set_member(&mut self.with_required_anti_affinity, index, was, is);
    }

    /// Start a new generation in which the nodes at `changed` were replaced.
    fn record(&mut self, changed: Vec<usize>) {
        if changed.is_empty() {
            return;
        }
        self.generation = next_snapshot_id();
        self.log.push_back((self.generation, changed));
        while self.log.len() > CHANGE_LOG_UPDATES {
            self.log.pop_front();
        }
    }

    /// The indices of the nodes replaced since `generation` of `epoch` (possibly with repeats),
    /// or `None` when that state is not one this snapshot went through recently (another
    /// epoch, a forgotten or unknown generation): then everything must be recomputed.
    pub fn changes_since(&self, epoch: u64, generation: u64) -> Option<Vec<usize>> {
        if epoch != self.epoch || epoch == 0 {
            return None;
        }
        let position = self.log.iter().rposition(|(g, _)| *g == generation)?;
        Some(
            self.log
                .iter()
                .skip(position + 1)
                .flat_map(|(_, changed)| changed.iter().copied())
                .collect(),
        )
    }

    /// The node order this snapshot belongs to (0: none, as in [`Snapshot::default`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The state of the nodes within the epoch.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every node, in the snapshot's order.
    pub fn nodes(&self) -> &[Arc<NodeInfo>] {
        &self.nodes
    }

    fn count_images(&mut self, node: &NodeInfo, delta: isize) {
        for name in node.images.keys() {
            let e = self.image_nodes.entry(name.clone()).or_insert(0);
            *e = e.saturating_add_signed(delta);
        }
    }

    fn count_pvcs(&mut self, node: &NodeInfo, delta: isize) {
        for (claim, n) in &node.pvc_refs {
            let e = self.pvc_users.entry(claim.clone()).or_insert(0);
            *e = e.saturating_add_signed(delta * *n as isize);
            if *e == 0 {
                self.pvc_users.remove(claim);
            }
        }
    }

    /// The node named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// On how many nodes an image (normalized name) is present.
    pub fn image_node_count(&self, image: &str) -> usize {
        self.image_nodes.get(image).copied().unwrap_or(0)
    }

    /// How many scheduled pods use the claim `namespace/name`.
    pub fn pvc_user_count(&self, claim: &str) -> usize {
        self.pvc_users.get(claim).copied().unwrap_or(0)
    }

    /// Nodes with pods that have pod (anti-)affinity.
    pub fn nodes_with_affinity(&self) -> impl Iterator<Item = &Arc<NodeInfo>> {
        self.with_affinity.iter().map(|&i| &self.nodes[i])
    }

    /// Nodes with pods that have required anti-affinity.
    pub fn nodes_with_required_anti_affinity(&self) -> impl Iterator<Item = &Arc<NodeInfo>> {
        self.with_required_anti_affinity
            .iter()
            .map(|&i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, zone: &str) -> Arc<Node> {
        let mut labels = BTreeMap::new();
        if !zone.is_empty() {
            labels.insert("topology.kubernetes.io/zone".to_owned(), zone.to_owned());
        }
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn pod(name: &str, node: &str, rv: &str) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn assumed_pods_count_until_forgotten_or_confirmed() {
        let cache = Cache::new();
        cache.add_node(node("n1", ""));
        let mut snap = Snapshot::default();
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.get("n1").unwrap().pods.len(), 0);

        let p = Arc::new(PodInfo::new(pod("a", "", "1")));
        cache.assume_pod(p.clone(), "n1").unwrap();
        assert!(cache.assume_pod(p.clone(), "n1").is_err());
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.get("n1").unwrap().pods.len(), 1);
        assert!(cache.is_assumed(&p.key));

        cache.forget_pod(&p.key);
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.get("n1").unwrap().pods.len(), 0);

        cache.assume_pod(p.clone(), "n1").unwrap();
        cache.add_pod(pod("a", "n1", "2"));
        assert!(!cache.is_assumed(&p.key));
        cache.forget_pod(&p.key);
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.get("n1").unwrap().pods.len(), 1, "confirmed pods stay");
    }

    #[test]
    fn snapshots_share_unchanged_nodes_and_see_changes() {
        let cache = Cache::new();
        cache.add_node(node("n1", ""));
        cache.add_node(node("n2", ""));
        let mut snap = Snapshot::default();
        cache.update_snapshot(&mut snap);
        let before = snap.clone();
        cache.add_pod(pod("a", "n1", "1"));
        cache.update_snapshot(&mut snap);
        assert_eq!(
            before.get("n1").unwrap().pods.len(),
            0,
            "old snapshot unchanged"
        );
        assert_eq!(snap.get("n1").unwrap().pods.len(), 1);
        assert!(Arc::ptr_eq(
            before.get("n2").unwrap(),
            snap.get("n2").unwrap()
        ));
    }

    #[test]
    fn pods_on_unknown_nodes_wait_for_the_node() {
        let cache = Cache::new();
        cache.add_pod(pod("a", "late", "1"));
        let mut snap = Snapshot::default();
        cache.update_snapshot(&mut snap);
        assert!(snap.get("late").is_none());
        cache.add_node(node("late", ""));
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.get("late").unwrap().pods.len(), 1);
        cache.remove_node("late");
        cache.update_snapshot(&mut snap);
        assert!(snap.is_empty());
        cache.remove_pod(&pod("a", "late", "1"));
        assert_eq!(cache.pod_keys().len(), 0);
    }

    #[test]
    fn node_order_interleaves_zones() {
        let nodes = [
            ("a1", "a"),
            ("a2", "a"),
            ("a3", "a"),
            ("b1", "b"),
            ("c1", "c"),
        ]
        .iter()
        .map(|(n, z)| Arc::new(NodeInfo::new(node(n, z))))
        .collect();
        let snap = Snapshot::from_nodes(nodes);
        let names: Vec<_> = snap.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a1", "b1", "c1", "a2", "a3"]);
    }
}
