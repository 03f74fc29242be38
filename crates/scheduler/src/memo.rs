//! Per-node results kept across scheduling cycles.
//!
//! PodTopologySpread and InterPodAffinity sum something over every node of the cluster for
//! each pod (matching pods per topology domain, existing pods' terms matching the pod). Upstream
//! recomputes those sums in every cycle; at 5000 nodes that walk over every node and pod — most
//! of it cache misses — was most of Skiff's scheduling time for those workloads. Between two
//! cycles only the nodes the cache changed (the pod just assumed, bindings confirmed, a few
//! deletions) differ, and [`Snapshot::changes_since`] names them. A [`NodeMemo`] keeps each
//! node's contribution and the sum of them, so a cycle recomputes only the changed nodes; the
//! result is the same as summing from scratch, which the tests check.
//!
//! The contribution of a node must depend only on that node (its labels, its pods) and on the
//! memo's key: plugins key their memos ([`MemoCache`]) by everything else their computation
//! reads — the pod's namespace, labels and terms, the constraints — and do not memoize when it
//! reads anything outside the snapshot (namespace labels of other namespaces).
//!
//! [`DomainCounts`] is the usual sum: a count per topology domain (label key and value), with the
//! domains numbered so that copying the counts into a cycle's state copies a `Vec` of integers.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::cache::Snapshot;
use crate::nodeinfo::NodeInfo;

/// Each node's contribution `T` and their sum `A`, as of one snapshot state. The sum is shared
/// (`Arc`) with the cycle states that read it, and copied only when a sync finds a state still
/// holding it.
#[derive(Debug)]
pub struct NodeMemo<T, A> {
    epoch: u64,
    generation: u64,
    per_node: Vec<T>,
    totals: Arc<A>,
}

impl<T, A: Default> Default for NodeMemo<T, A> {
    fn default() -> Self {
        NodeMemo {
            epoch: 0,
            generation: 0,
            per_node: Vec::new(),
            totals: Arc::new(A::default()),
        }
    }
}

impl<T, A: Default + Clone> NodeMemo<T, A> {
    /// The sum over every node, as of the last sync.
    pub fn totals(&self) -> &Arc<A> {
        &self.totals
    }

    /// Bring the memo to `snapshot`'s state: recompute the contributions of the nodes changed
    /// since the last sync (all of them when the snapshot cannot say which), taking the old
    /// contribution out of the totals (`apply` with -1) and adding the new one (+1). `compute`
    /// may extend the totals (new domains) but must not count into them. Returns whether
    /// everything was recomputed.
    pub fn sync(
        &mut self,
        snapshot: &Snapshot,
        mut compute: impl FnMut(&NodeInfo, &mut A) -> T,
        apply: impl Fn(&mut A, &T, i64),
    ) -> bool {
        let nodes = snapshot.nodes();
        let changed = snapshot
            .changes_since(self.epoch, self.generation)
            .filter(|c| c.len() < nodes.len() && self.per_node.len() == nodes.len());
        let rebuilt = match changed {
            Some(changed) => {
                if !changed.is_empty() {
                    let totals = Arc::make_mut(&mut self.totals);
                    for i in changed {
                        let new = compute(&nodes[i], totals);
                        apply(totals, &self.per_node[i], -1);
                        apply(totals, &new, 1);
                        self.per_node[i] = new;
                    }
                }
                false
            }
            None => {
                let mut totals = A::default();
                let mut per_node = Vec::with_capacity(nodes.len());
                for node in nodes {
                    per_node.push(compute(node, &mut totals));
                }
                for t in &per_node {
                    apply(&mut totals, t, 1);
                }
                self.per_node = per_node;
                self.totals = Arc::new(totals);
                true
            }
        };
        self.epoch = snapshot.epoch();
        self.generation = snapshot.generation();
        rebuilt
    }
}

impl<T, A: Default + Clone> MemoCache<NodeMemo<T, A>> {
    /// Bring the memo kept under `key` to `snapshot`'s state (see [`NodeMemo::sync`]) and
    /// return its totals. Without a key (counts that depend on more than the snapshot tracks)
    /// the totals are computed afresh and nothing is kept.
    pub fn synced_totals(
        &mut self,
        key: Option<&str>,
        snapshot: &Snapshot,
        compute: impl FnMut(&NodeInfo, &mut A) -> T,
        apply: impl Fn(&mut A, &T, i64),
    ) -> Arc<A> {
        let mut fresh = NodeMemo::default();
        let memo = match key {
            Some(key) => self.get(key),
            None => &mut fresh,
        };
        memo.sync(snapshot, compute, apply);
        memo.totals().clone()
    }
}

/// A few memos by key, the most recently used first; the least recently used is dropped when
/// a new key needs room.
#[derive(Debug)]
pub struct MemoCache<M> {
    entries: Vec<(String, M)>,
    capacity: usize,
}

impl<M: Default> MemoCache<M> {
    /// A cache of at most `capacity` memos.
    pub fn new(capacity: usize) -> MemoCache<M> {
        MemoCache {
            entries: Vec::new(),
            capacity: capacity.max(1),
        }
    }

    /// The memo for `key` (a new, empty one if there is none).
    pub fn get(&mut self, key: &str) -> &mut M {
        match self.entries.iter().position(|(k, _)| k == key) {
            Some(i) => self.entries[..=i].rotate_right(1),
            None => {
                if self.entries.len() == self.capacity {
                    self.entries.pop();
                }
                self.entries.insert(0, (key.to_owned(), M::default()));
            }
        }
        &mut self.entries[0].1
    }

    /// How many memos are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no memo is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Which number each topology domain (label key and value) has.
#[derive(Debug, Clone, Default)]
struct DomainIndex {
    keys: Vec<String>,
    /// Per key: value → domain number.
    ids: Vec<FxHashMap<String, u32>>,
    /// Per domain: its key's position in `keys`.
    key_of: Vec<u32>,
    /// Per domain: its value.
    value_of: Vec<String>,
}

/// A count per topology domain, plus how many nodes contribute to it (a domain "exists" while
/// an eligible node has it, even with a count of 0). Domain numbers only grow, so a copy in a
/// cycle's state shares the numbering and owns only the counts.
#[derive(Debug, Clone, Default)]
pub struct DomainCounts {
    index: Arc<DomainIndex>,
    counts: Vec<i64>,
    nodes: Vec<i64>,
    /// Domains with a count other than 0.
    nonzero: usize,
}

impl DomainCounts {
    /// The position of `key` among the keys in use.
    pub fn key_index(&self, key: &str) -> Option<usize> {
        self.index.keys.iter().position(|k| k == key)
    }

    /// The number of (key, value), if known.
    pub fn id(&self, key: &str, value: &str) -> Option<u32> {
        let k = self.key_index(key)?;
        self.index.ids[k].get(value).copied()
    }

    /// The number of the node's domain for the key at `key_index`, if the node has the label
    /// and the domain is known.
    pub fn id_at(&self, key_index: usize, labels: &BTreeMap<String, String>) -> Option<u32> {
        let value = labels.get(&self.index.keys[key_index])?;
        self.index.ids[key_index].get(value).copied()
    }

    /// The number of (key, value), numbering it if new.
    pub fn intern(&mut self, key: &str, value: &str) -> u32 {
        if let Some(id) = self.id(key, value) {
            return id;
        }
        let index = Arc::make_mut(&mut self.index);
        let k = match index.keys.iter().position(|x| x == key) {
            Some(k) => k,
            None => {
                index.keys.push(key.to_owned());
                index.ids.push(FxHashMap::default());
                index.keys.len() - 1
            }
        };
        let id = index.key_of.len() as u32;
        index.ids[k].insert(value.to_owned(), id);
        index.key_of.push(k as u32);
        index.value_of.push(value.to_owned());
        self.counts.push(0);
        self.nodes.push(0);
        id
    }

    /// Number every value `key` has on `nodes` at once, the first time `key` is used: later
    /// cycles then find their domains numbered instead of copying a shared numbering to add
    /// one (values that appear later — relabelled nodes — are numbered one by one).
    pub fn intern_all(&mut self, key: &str, nodes: &[Arc<NodeInfo>]) {
        if self.key_index(key).is_some() {
            return;
        }
        for n in nodes {
            if let Some(v) = n.labels().get(key) {
                self.intern(key, v);
            }
        }
    }

    /// The number of the node's domain for `key`, numbering it if new (`None` without the
    /// label).
    pub fn intern_node(&mut self, key: &str, node: &NodeInfo) -> Option<u32> {
        let value = node.labels().get(key)?;
        Some(self.intern(key, value))
    }

    /// Add to a domain's count and node count.
    pub fn add(&mut self, id: u32, count: i64, nodes: i64) {
        let i = id as usize;
        let before = self.counts[i] != 0;
        self.counts[i] += count;
        self.nodes[i] += nodes;
        match (before, self.counts[i] != 0) {
            (false, true) => self.nonzero += 1,
            (true, false) => self.nonzero -= 1,
            _ => {}
        }
    }

    /// The count of a domain.
    pub fn count(&self, id: u32) -> i64 {
        self.counts[id as usize]
    }

    /// The count of (key, value) (0 if unknown).
    pub fn get(&self, key: &str, value: &str) -> i64 {
        self.id(key, value).map_or(0, |id| self.count(id))
    }

    /// The count of the node's domain for `key` (0 without the label).
    pub fn of_node(&self, labels: &BTreeMap<String, String>, key: &str) -> i64 {
        labels.get(key).map_or(0, |v| self.get(key, v))
    }

    /// Whether any domain the node belongs to has a positive count.
    pub fn any_on(&self, labels: &BTreeMap<String, String>) -> bool {
        (0..self.index.keys.len())
            .any(|k| self.id_at(k, labels).is_some_and(|id| self.count(id) > 0))
    }

    /// Whether every count is 0.
    pub fn all_zero(&self) -> bool {
        self.nonzero == 0
    }

    /// The domains of `key` some node contributes to, with their counts.
    pub fn existing(&self, key: &str) -> impl Iterator<Item = (&str, i64)> {
        let k = self.key_index(key).map(|k| k as u32);
        (0..self.counts.len())
            .filter(move |&i| Some(self.index.key_of[i]) == k && self.nodes[i] > 0)
            .map(|i| (self.index.value_of[i].as_str(), self.counts[i]))
    }

    /// The keys in use.
    pub fn keys(&self) -> &[String] {
        &self.index.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::plugins::testing::{node, pod};

    /// A memo counting pods per node name, synced against a cache's snapshots.
    fn count_pods(memo: &mut NodeMemo<(u32, i64), DomainCounts>, snap: &Snapshot) -> bool {
        memo.sync(
            snap,
            |n, totals| (totals.intern("host", &n.name), n.pods.len() as i64),
            |totals, (id, count), sign| totals.add(*id, sign * count, sign),
        )
    }

    #[test]
    fn a_memo_recomputes_only_changed_nodes_and_matches_a_fresh_sum() {
        let cache = Cache::new();
        for n in ["a", "b", "c"] {
            cache.add_node(Arc::new(node(n).0));
        }
        let mut snap = Snapshot::default();
        cache.update_snapshot(&mut snap);
        let mut memo = NodeMemo::default();
        assert!(count_pods(&mut memo, &snap), "first sync builds");
        cache.add_pod(Arc::new(pod("p1").node("a").0));
        cache.add_pod(Arc::new(pod("p2").node("a").0));
        cache.update_snapshot(&mut snap);
        assert!(!count_pods(&mut memo, &snap), "then only changes");
        assert_eq!(memo.totals().get("host", "a"), 2);
        cache.remove_pod(&pod("p1").node("a").0);
        cache.add_pod(Arc::new(pod("p3").node("c").0));
        cache.update_snapshot(&mut snap);
        assert!(!count_pods(&mut memo, &snap));
        let mut fresh = NodeMemo::default();
        count_pods(&mut fresh, &snap);
        for n in ["a", "b", "c"] {
            assert_eq!(
                memo.totals().get("host", n),
                fresh.totals().get("host", n),
                "{n}"
            );
        }
        // A new node is a new epoch: everything is recomputed.
        cache.add_node(Arc::new(node("d").0));
        cache.update_snapshot(&mut snap);
        assert!(count_pods(&mut memo, &snap));
        assert_eq!(memo.totals().existing("host").count(), 4);
    }

    #[test]
    fn a_memo_from_another_snapshot_is_rebuilt() {
        let cache = Cache::new();
        cache.add_node(Arc::new(node("a").0));
        cache.add_node(Arc::new(node("b").0));
        let mut snap = Snapshot::default();
        cache.update_snapshot(&mut snap);
        let mut memo = NodeMemo::default();
        count_pods(&mut memo, &snap);
        // A clone that diverges: the memo is at the original's generation, not the clone's.
        let mut other = snap.clone();
        cache.add_pod(Arc::new(pod("p").node("a").0));
        cache.update_snapshot(&mut other);
        assert!(!count_pods(&mut memo, &other));
        assert_eq!(memo.totals().get("host", "a"), 1);
        assert!(
            count_pods(&mut memo, &snap),
            "older state of a clone: rebuilt"
        );
        assert_eq!(memo.totals().get("host", "a"), 0);
    }

    #[test]
    fn copies_share_the_numbering_and_own_their_counts() {
        let mut a = DomainCounts::default();
        let x = a.intern("zone", "x");
        a.add(x, 2, 1);
        let mut b = a.clone();
        b.add(x, 1, 0);
        assert_eq!((a.get("zone", "x"), b.get("zone", "x")), (2, 3));
        assert!(Arc::ptr_eq(&a.index, &b.index));
        let y = b.intern("zone", "y");
        assert_eq!(a.id("zone", "y"), None, "numbering a new domain copies it");
        assert_eq!(b.count(y), 0);
        assert!(!a.all_zero());
        a.add(x, -2, -1);
        assert!(a.all_zero());
        assert_eq!(a.existing("zone").count(), 0);
        assert_eq!(b.existing("zone").collect::<Vec<_>>(), [("x", 3)]);
    }

    #[test]
    fn the_least_recently_used_memo_makes_room() {
        let mut cache: MemoCache<u32> = MemoCache::new(2);
        *cache.get("a") = 1;
        *cache.get("b") = 2;
        assert_eq!(*cache.get("a"), 1);
        *cache.get("c") = 3;
        assert_eq!(cache.len(), 2);
        assert_eq!(*cache.get("b"), 0, "b was dropped");
    }
}
