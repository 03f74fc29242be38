//! PodTopologySpread (PreFilter, Filter, PreScore, Score): spread matching pods evenly over
//! topology domains.
//!
//! For a `DoNotSchedule` constraint the node is rejected when placing the pod there would make
//! `matching pods in the node's domain + 1 − fewest matching pods in any eligible domain`
//! exceed `maxSkew` (the minimum counts as 0 while fewer than `minDomains` domains exist).
//! Eligible domains are those of nodes having every constraint's key that pass the
//! `nodeAffinityPolicy` (Honor by default: the pod's node selector/affinity) and
//! `nodeTaintsPolicy` (Ignore by default). `ScheduleAnyway` constraints score instead: fewer
//! matching pods in the node's domain score higher. Pods without constraints of their own get
//! the cluster default constraints, whose selector comes from the Services, ReplicaSets,
//! StatefulSets and ReplicationControllers selecting the pod.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use parking_lot::Mutex;

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController, Service, TopologySpreadConstraint};
use serde::Deserialize;
use serde_json::Value;
use skiff_api::selector::{LabelSelector, Operator, Requirement};
use skiff_runtime::Informer;

use crate::cache::Snapshot;
use crate::extension_points;
use crate::framework::events::Resource;
use crate::framework::{
    ActionType, ClusterEvent, CycleState, EventObject, FilterPlugin, Handle, MAX_NODE_SCORE,
    Plugin, PreFilterPlugin, PreFilterResult, PreScorePlugin, ScorePlugin, Status,
};
use crate::helpers::{
    RequiredNodeAffinity, first_untolerated, node_taints, pod_labels, pod_tolerations,
};
use crate::memo::{DomainCounts, MemoCache, NodeMemo};
use crate::nodeinfo::{NodeInfo, PodInfo};
use crate::registry::decode_args;

/// The plugin name.
pub const NAME: &str = "PodTopologySpread";
/// Upstream's reason when the skew would be too large.
pub const REASON_CONSTRAINTS: &str = "node(s) didn't match pod topology spread constraints";
/// Upstream's reason when the node lacks a constraint's key.
pub const REASON_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

const HOSTNAME: &str = "kubernetes.io/hostname";
const SCORE_KEY: &str = "PodTopologySpread/score";

/// `PodTopologySpreadArgs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Args {
    /// Constraints for pods without their own (`defaultingType: List`).
    #[serde(default)]
    pub default_constraints: Vec<TopologySpreadConstraint>,
    /// `System` (upstream's built-in defaults) or `List`.
    #[serde(default)]
    pub defaulting_type: Option<String>,
}

#[derive(Debug, Clone)]
struct Constraint {
    max_skew: i64,
    topology_key: String,
    selector: LabelSelector,
    min_domains: i64,
    honor_affinity: bool,
    honor_taints: bool,
    hard: bool,
}

impl Constraint {
    fn from_k8s(
        c: &TopologySpreadConstraint,
        pod: &Pod,
        selector: Option<LabelSelector>,
    ) -> Constraint {
        let selector = selector.unwrap_or_else(|| {
            let mut s = c
                .label_selector
                .as_ref()
                .map_or(Ok(LabelSelector::nothing()), LabelSelector::from_k8s)
                .unwrap_or_else(|_| LabelSelector::nothing());
            let labels = pod_labels(pod);
            let extra: Vec<Requirement> = c
                .match_label_keys
                .iter()
                .flatten()
                .filter_map(|k| {
                    labels
                        .get(k)
                        .and_then(|v| Requirement::new(k, Operator::In, vec![v.clone()]).ok())
                })
                .collect();
            if !extra.is_empty() && !s.is_nothing() {
                let mut all = s.requirements().to_vec();
                all.extend(extra);
                s = LabelSelector::from_requirements(all);
            }
            s
        });
        Constraint {
            max_skew: i64::from(c.max_skew),
            topology_key: c.topology_key.clone(),
            selector,
            min_domains: i64::from(c.min_domains.unwrap_or(1).max(1)),
            honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            hard: c.when_unsatisfiable == "DoNotSchedule",
        }
    }

    fn includes(&self, pod: &PodInfo, node: &NodeInfo, affinity: &RequiredNodeAffinity) -> bool {
        if self.honor_affinity && !affinity.matches(&node.node) {
            return false;
        }
        if self.honor_taints
            && first_untolerated(
                node_taints(&node.node),
                pod_tolerations(&pod.pod),
                &["NoSchedule", "NoExecute"],
            )
            .is_some()
        {
            return false;
        }
        true
    }
}

fn count_matching(pods: &[Arc<PodInfo>], selector: &LabelSelector, ns: &str) -> i64 {
    pods.iter()
        .filter(|p| {
            p.pod.metadata.deletion_timestamp.is_none()
                && p.namespace() == ns
                && selector.matches(pod_labels(&p.pod))
        })
        .count() as i64
}

fn has_all_keys(node: &NodeInfo, constraints: &[Constraint]) -> bool {
    let labels = node.labels();
    constraints
        .iter()
        .all(|c| labels.contains_key(&c.topology_key))
}

/// What one node adds to the matching-pod counts: for each constraint that includes it, its
/// domain and how many matching pods it runs.
type Contribution = Box<[(u32, i64)]>;

/// Matching pods per domain over every node, kept across cycles (see [`crate::memo`]).
type CountsMemo = NodeMemo<Contribution, DomainCounts>;

/// How many constraint sets the plugin keeps counts for, for PreFilter and for PreScore each.
const MEMOS: usize = 8;

/// The plugin.
pub struct PodTopologySpread {
    defaults: Vec<TopologySpreadConstraint>,
    system_defaulted: bool,
    services: Informer<Service>,
    replica_sets: Informer<ReplicaSet>,
    stateful_sets: Informer<StatefulSet>,
    replication_controllers: Informer<ReplicationController>,
    filter_memos: Mutex<MemoCache<CountsMemo>>,
    score_memos: Mutex<MemoCache<CountsMemo>>,
}

/// Everything the counts depend on besides the nodes: the namespace, the constraints, and the
/// pod's node affinity and tolerations when a policy honours them.
fn memo_key(
    pod: &PodInfo,
    constraints: &[Constraint],
    affinity: &RequiredNodeAffinity,
    require_all: bool,
) -> String {
    let mut key = format!("{}\0{require_all}\0{constraints:?}", pod.namespace());
    if constraints.iter().any(|c| c.honor_affinity) {
        let _ = write!(key, "\0{affinity:?}");
    }
    if constraints.iter().any(|c| c.honor_taints) {
        let _ = write!(key, "\0{:?}", pod_tolerations(&pod.pod));
    }
    key
}

/// Count matching pods per domain into `memo` for `snapshot`: each node that has every
/// constraint's key (when `require_all`) adds, per constraint including it, its matching pods
/// to its domain (`skip_hostname`: except hostname constraints, which Score counts per node).
fn sync_counts(
    memo: &mut CountsMemo,
    snapshot: &Snapshot,
    pod: &PodInfo,
    constraints: &[Constraint],
    affinity: &RequiredNodeAffinity,
    require_all: bool,
    skip_hostname: bool,
) {
    let ns = pod.namespace();
    memo.sync(
        snapshot,
        |node, totals| {
            if require_all && !has_all_keys(node, constraints) {
                return Box::default();
            }
            let mut out = Vec::new();
            for c in constraints {
                if skip_hostname && c.topology_key == HOSTNAME {
                    continue;
                }
                if !node.labels().contains_key(&c.topology_key) || !c.includes(pod, node, affinity)
                {
                    continue;
                }
                totals.intern_all(&c.topology_key, snapshot.nodes());
                if let Some(id) = totals.intern_node(&c.topology_key, node) {
                    out.push((id, count_matching(&node.pods, &c.selector, ns)));
                }
            }
            out.into_boxed_slice()
        },
        |totals, contribution, sign| {
            for (id, count) in contribution {
                totals.add(*id, sign * count, sign);
            }
        },
    );
}

fn system_defaults() -> Vec<TopologySpreadConstraint> {
    [(3, HOSTNAME), (5, "topology.kubernetes.io/zone")]
        .into_iter()
        .map(|(skew, key)| TopologySpreadConstraint {
            max_skew: skew,
            topology_key: key.into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            ..Default::default()
        })
        .collect()
}

/// Factory.
pub fn new(args: Option<&Value>, handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    let args: Args = decode_args(args)?;
    let (defaults, system) = match args.defaulting_type.as_deref().unwrap_or("System") {
        "System" => {
            if !args.default_constraints.is_empty() {
                return Err("defaultConstraints: Invalid value: when .defaultingType is \"System\", .defaultConstraints must be empty".into());
            }
            (system_defaults(), true)
        }
        "List" => {
            for (i, c) in args.default_constraints.iter().enumerate() {
                if c.label_selector.is_some() {
                    return Err(format!(
                        "defaultConstraints[{i}].labelSelector: Forbidden: constraint must not define a selector, as they deduced for each pod"
                    ));
                }
                if c.max_skew <= 0 {
                    return Err(format!(
                        "defaultConstraints[{i}].maxSkew: Invalid value: {}: must be greater than zero",
                        c.max_skew
                    ));
                }
                if !matches!(
                    c.when_unsatisfiable.as_str(),
                    "DoNotSchedule" | "ScheduleAnyway"
                ) {
                    return Err(format!(
                        "defaultConstraints[{i}].whenUnsatisfiable: Unsupported value: {:?}",
                        c.when_unsatisfiable
                    ));
                }
            }
            (args.default_constraints, false)
        }
        other => {
            return Err(format!(
                "defaultingType: Unsupported value: {other:?}: supported values: \"List\", \"System\""
            ));
        }
    };
    Ok(Arc::new(PodTopologySpread {
        defaults,
        system_defaulted: system,
        services: handle.listers.services.clone(),
        replica_sets: handle.listers.replica_sets.clone(),
        stateful_sets: handle.listers.stateful_sets.clone(),
        replication_controllers: handle.listers.replication_controllers.clone(),
        filter_memos: Mutex::new(MemoCache::new(MEMOS)),
        score_memos: Mutex::new(MemoCache::new(MEMOS)),
    }))
}

impl PodTopologySpread {
    /// The selector of the workloads a pod belongs to (upstream `DefaultSelector`).
    fn default_selector(&self, pod: &Pod) -> LabelSelector {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let labels = pod_labels(pod);
        let mut set: BTreeMap<String, String> = BTreeMap::new();
        for svc in self.services.list_namespace(ns) {
            if let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref())
                && !sel.is_empty()
                && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
            {
                set.extend(sel.clone());
            }
        }
        let mut requirements = LabelSelector::from_map(&set).requirements().to_vec();
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        if let Some(owner) = owner {
            let group = owner.api_version.split('/').next().unwrap_or("");
            let extra: Option<LabelSelector> = match (group, owner.kind.as_str()) {
                ("v1", "ReplicationController") => self
                    .replication_controllers
                    .get_named(ns, &owner.name)
                    .and_then(|rc| rc.spec.as_ref().and_then(|s| s.selector.clone()))
                    .map(|m| {
                        set.extend(m);
                        LabelSelector::from_map(&set)
                    }),
                ("apps", "ReplicaSet") => {
                    self.replica_sets.get_named(ns, &owner.name).and_then(|rs| {
                        rs.spec
                            .as_ref()
                            .and_then(|s| LabelSelector::from_k8s(&s.selector).ok())
                    })
                }
                ("apps", "StatefulSet") => {
                    self.stateful_sets
                        .get_named(ns, &owner.name)
                        .and_then(|ss| {
                            ss.spec
                                .as_ref()
                                .and_then(|s| LabelSelector::from_k8s(&s.selector).ok())
                        })
                }
                _ => None,
            };
            if let Some(extra) = extra {
                if owner.kind == "ReplicationController" {
                    requirements = extra.requirements().to_vec();
                } else {
                    requirements.extend(extra.requirements().iter().cloned());
                }
            }
        }
        LabelSelector::from_requirements(requirements)
    }

    /// The pod's constraints of one kind (hard or soft), its own or the defaults.
    fn constraints(&self, pod: &Pod, hard: bool) -> Vec<Constraint> {
        let own = pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_deref())
            .unwrap_or_default();
        if !own.is_empty() {
            return own
                .iter()
                .map(|c| Constraint::from_k8s(c, pod, None))
                .filter(|c| c.hard == hard)
                .collect();
        }
        let wanted: Vec<&TopologySpreadConstraint> = self
            .defaults
            .iter()
            .filter(|c| (c.when_unsatisfiable == "DoNotSchedule") == hard)
            .collect();
        if wanted.is_empty() {
            return Vec::new();
        }
        let selector = self.default_selector(pod);
        if selector.is_empty() {
            return Vec::new();
        }
        wanted
            .into_iter()
            .map(|c| Constraint::from_k8s(c, pod, Some(selector.clone())))
            .collect()
    }
}

/// The two domains with the fewest matching pods for one key (upstream `criticalPaths`).
#[derive(Debug, Clone)]
struct CriticalPaths([(String, i64); 2]);

impl Default for CriticalPaths {
    fn default() -> Self {
        CriticalPaths([(String::new(), i64::MAX), (String::new(), i64::MAX)])
    }
}

impl CriticalPaths {
    fn update(&mut self, value: &str, num: i64) {
        let p = &mut self.0;
        let existing = if p[0].0 == value {
            Some(0)
        } else if p[1].0 == value {
            Some(1)
        } else {
            None
        };
        match existing {
            Some(i) => {
                p[i].1 = num;
                if p[0].1 > p[1].1 {
                    p.swap(0, 1);
                }
            }
            None => {
                if num < p[0].1 {
                    p[1] = p[0].clone();
                    p[0] = (value.to_owned(), num);
                } else if num < p[1].1 {
                    p[1] = (value.to_owned(), num);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct FilterState {
    constraints: Vec<Constraint>,
    /// Shared with the memo; copied only when preemption or nominated pods change it.
    pair_counts: Arc<DomainCounts>,
    critical: Vec<CriticalPaths>,
    domains: Vec<i64>,
    affinity: Option<RequiredNodeAffinity>,
}

impl FilterState {
    fn min_match(&self, i: usize) -> i64 {
        if self.domains[i] < self.constraints[i].min_domains {
            return 0;
        }
        self.critical[i].0[0].1
    }

    fn update(&mut self, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, delta: i64) {
        if other.namespace() != pod.namespace() || !has_all_keys(node, &self.constraints) {
            return;
        }
        let Some(affinity) = self.affinity.clone() else {
            return;
        };
        for i in 0..self.constraints.len() {
            let c = &self.constraints[i];
            if !c.includes(pod, node, &affinity) || !c.selector.matches(pod_labels(&other.pod)) {
                continue;
            }
            let value = &node.labels()[&c.topology_key];
            let counts = Arc::make_mut(&mut self.pair_counts);
            let id = counts.intern(&c.topology_key, value);
            counts.add(id, delta, 0);
            let n = counts.count(id);
            self.critical[i].update(value, n);
        }
    }
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            ClusterEvent::new(Resource::Pod, ActionType::ALL, "AssignedPodChange"),
            ClusterEvent::new(
                Resource::Node,
                ActionType::ADD
                    | ActionType::DELETE
                    | ActionType::UPDATE_NODE_LABEL
                    | ActionType::UPDATE_NODE_TAINT,
                "NodeChange",
            ),
        ]
    }
    fn queueing_hint(
        &self,
        event: &ClusterEvent,
        pod: &PodInfo,
        old: &EventObject<'_>,
        new: &EventObject<'_>,
    ) -> bool {
        if event.resource != Resource::Pod {
            return true;
        }
        let constraints = self.constraints(&pod.pod, true);
        let relevant = |p: &Pod| {
            p.metadata.namespace.as_deref().unwrap_or("") == pod.namespace()
                && constraints
                    .iter()
                    .any(|c| c.selector.matches(pod_labels(p)))
        };
        [old, new]
            .iter()
            .any(|o| matches!(o, EventObject::Pod(p) if relevant(p)))
    }
    extension_points!(
        as_pre_filter => PreFilterPlugin,
        as_filter => FilterPlugin,
        as_pre_score => PreScorePlugin,
        as_score => ScorePlugin,
    );
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (Status, PreFilterResult) {
        let constraints = self.constraints(&pod.pod, true);
        if constraints.is_empty() {
            return (Status::skip(), None);
        }
        let affinity = RequiredNodeAffinity::of(&pod.pod);
        let key = memo_key(pod, &constraints, &affinity, true);
        let mut memos = self.filter_memos.lock();
        let memo = memos.get(&key);
        sync_counts(memo, snapshot, pod, &constraints, &affinity, true, false);
        let mut s = FilterState {
            critical: vec![CriticalPaths::default(); constraints.len()],
            domains: vec![0; constraints.len()],
            pair_counts: memo.totals().clone(),
            ..Default::default()
        };
        drop(memos);
        for (i, c) in constraints.iter().enumerate() {
            for (value, count) in s.pair_counts.existing(&c.topology_key) {
                s.domains[i] += 1;
                s.critical[i].update(value, count);
            }
        }
        s.constraints = constraints;
        s.affinity = Some(affinity);
        state.write_for_cycle(NAME, s);
        (Status::success(), None)
    }

    fn has_extensions(&self) -> bool {
        true
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        added: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        if let Some(s) = state.read_mut::<FilterState>(NAME) {
            s.update(pod, added, node, 1);
        }
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        if let Some(s) = state.read_mut::<FilterState>(NAME) {
            s.update(pod, removed, node, -1);
        }
        Status::success()
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<FilterState>(NAME) else {
            return Status::error("PodTopologySpread: PreFilter state missing");
        };
        let labels = node.labels();
        let own = pod_labels(&pod.pod);
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = labels.get(&c.topology_key) else {
                return Status::unresolvable(REASON_LABEL);
            };
            let self_match = i64::from(c.selector.matches(own));
            let matched = s.pair_counts.get(&c.topology_key, value);
            let skew = matched + self_match - s.min_match(i);
            if skew > c.max_skew {
                return Status::unschedulable(REASON_CONSTRAINTS);
            }
        }
        Status::success()
    }
}

#[derive(Debug, Clone, Default)]
struct ScoreState {
    constraints: Vec<Constraint>,
    ignored: HashSet<String>,
    /// Matching pods per domain over every node (hostname constraints excepted: Score counts
    /// those on the node itself); shared with the memo.
    pair_counts: Arc<DomainCounts>,
    weights: Vec<f64>,
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        if nodes.is_empty() || snapshot.is_empty() {
            return Status::skip();
        }
        let constraints = self.constraints(&pod.pod, false);
        if constraints.is_empty() {
            return Status::skip();
        }
        let own = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .is_some_and(|c| !c.is_empty());
        let require_all = own || !self.system_defaulted;
        let mut s = ScoreState::default();
        let mut sizes = vec![0usize; constraints.len()];
        let mut seen: Vec<HashSet<&str>> = vec![HashSet::new(); constraints.len()];
        for node in nodes {
            if require_all && !has_all_keys(node, &constraints) {
                s.ignored.insert(node.name.clone());
                continue;
            }
            for (i, c) in constraints.iter().enumerate() {
                if c.topology_key == HOSTNAME {
                    continue;
                }
                let value = node
                    .labels()
                    .get(&c.topology_key)
                    .map_or("", String::as_str);
                // Constraints sharing a key share their domains (as upstream's topology pairs).
                let first = constraints[..i]
                    .iter()
                    .position(|o| o.topology_key == c.topology_key)
                    .unwrap_or(i);
                if seen[first].insert(value) {
                    sizes[i] += 1;
                }
            }
        }
        s.weights = constraints
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let size = if c.topology_key == HOSTNAME {
                    nodes.len() - s.ignored.len()
                } else {
                    sizes[i]
                };
                ((size + 2) as f64).ln()
            })
            .collect();
        let affinity = RequiredNodeAffinity::of(&pod.pod);
        let key = memo_key(pod, &constraints, &affinity, require_all);
        let mut memos = self.score_memos.lock();
        let memo = memos.get(&key);
        sync_counts(
            memo,
            snapshot,
            pod,
            &constraints,
            &affinity,
            require_all,
            true,
        );
        s.pair_counts = memo.totals().clone();
        drop(memos);
        s.constraints = constraints;
        state.write_for_cycle(SCORE_KEY, s);
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<ScoreState>(SCORE_KEY) else {
            return Ok(0);
        };
        if s.ignored.contains(&node.name) {
            return Ok(0);
        }
        let labels = node.labels();
        let mut score = 0f64;
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = labels.get(&c.topology_key) else {
                continue;
            };
            let count = if c.topology_key == HOSTNAME {
                count_matching(&node.pods, &c.selector, pod.namespace())
            } else {
                s.pair_counts.get(&c.topology_key, value)
            };
            score += count as f64 * s.weights[i] + (c.max_skew - 1) as f64;
        }
        Ok(score.round() as i64)
    }

    fn normalize(
        &self,
        state: &CycleState,
        _pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        scores: &mut [i64],
    ) -> Status {
        let Some(s) = state.read::<ScoreState>(SCORE_KEY) else {
            return Status::success();
        };
        let (mut min, mut max) = (i64::MAX, 0i64);
        for (node, score) in nodes.iter().zip(scores.iter()) {
            if s.ignored.contains(&node.name) {
                continue;
            }
            min = min.min(*score);
            max = max.max(*score);
        }
        for (node, score) in nodes.iter().zip(scores.iter_mut()) {
            *score = if s.ignored.contains(&node.name) {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *score) / max
            };
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::plugins::testing::{N, P, node, pod, snapshot};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sSelector;

    const ZONE: &str = "zone";

    fn plugin() -> PodTopologySpread {
        PodTopologySpread {
            defaults: system_defaults(),
            system_defaulted: true,
            services: Informer::detached(),
            replica_sets: Informer::detached(),
            stateful_sets: Informer::detached(),
            replication_controllers: Informer::detached(),
            filter_memos: Mutex::new(MemoCache::new(MEMOS)),
            score_memos: Mutex::new(MemoCache::new(MEMOS)),
        }
    }

    fn constraint(skew: i32, key: &str, when: &str) -> TopologySpreadConstraint {
        TopologySpreadConstraint {
            max_skew: skew,
            topology_key: key.into(),
            when_unsatisfiable: when.into(),
            label_selector: Some(K8sSelector {
                match_labels: Some([("foo".to_owned(), "bar".to_owned())].into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn foo(name: &str) -> P {
        pod(name).label("foo", "bar")
    }

    fn zn(name: &str, zone: &str) -> N {
        node(name).label(ZONE, zone)
    }

    fn filter(p: &PodInfo, nodes: &[Arc<NodeInfo>]) -> Vec<Status> {
        let snap = snapshot(nodes.to_vec());
        let mut state = CycleState::new();
        let (s, _) = plugin().pre_filter(&mut state, p, &snap);
        assert!(s.is_success(), "{s}");
        nodes
            .iter()
            .map(|n| plugin().filter(&state, p, n))
            .collect()
    }

    /// The upstream documentation's example: 4 nodes in 2 zones, three `foo=bar` pods
    /// (two in zoneA on node1/node2, one in zoneB on node3); an incoming pod with maxSkew 1
    /// over zones must go to zoneB.
    fn docs_cluster() -> Vec<Arc<NodeInfo>> {
        vec![
            zn("node1", "zoneA").with(vec![foo("p1")]),
            zn("node2", "zoneA").with(vec![foo("p2")]),
            zn("node3", "zoneB").with(vec![foo("p3")]),
            zn("node4", "zoneB").info(),
        ]
    }

    #[test]
    fn the_docs_two_zone_example() {
        let p = foo("mypod")
            .spread(constraint(1, ZONE, "DoNotSchedule"))
            .info();
        let s = filter(&p, &docs_cluster());
        assert_eq!(s[0].message(), REASON_CONSTRAINTS);
        assert_eq!(s[1].code(), Code::Unschedulable);
        assert!(s[2].is_success() && s[3].is_success());
    }

    #[test]
    fn two_constraints_zone_and_node() {
        // Docs: with an extra maxSkew-1 constraint over nodes, only node4 fits.
        let p = foo("mypod")
            .spread(constraint(1, ZONE, "DoNotSchedule"))
            .spread(constraint(1, "kubernetes.io/hostname", "DoNotSchedule"))
            .info();
        let s = filter(&p, &docs_cluster());
        let ok: Vec<bool> = s.iter().map(Status::is_success).collect();
        assert_eq!(ok, [false, false, false, true]);
    }

    #[test]
    fn nodes_missing_the_key_are_rejected_as_unresolvable() {
        let p = foo("mypod")
            .spread(constraint(1, ZONE, "DoNotSchedule"))
            .info();
        let mut nodes = docs_cluster();
        nodes.push(node("nozone").info());
        let s = filter(&p, &nodes);
        assert_eq!(s[4].message(), REASON_LABEL);
        assert_eq!(s[4].code(), Code::UnschedulableAndUnresolvable);
    }

    #[test]
    fn terminating_and_other_namespace_pods_do_not_count() {
        let p = foo("mypod")
            .spread(constraint(1, ZONE, "DoNotSchedule"))
            .info();
        let nodes = vec![
            zn("a", "zoneA").with(vec![foo("x").terminating(), foo("y").ns("other")]),
            zn("b", "zoneB").info(),
        ];
        let s = filter(&p, &nodes);
        assert!(s.iter().all(Status::is_success));
    }

    #[test]
    fn min_domains_treats_missing_domains_as_empty() {
        // Two zones exist but minDomains is 3: the global minimum is 0, so with maxSkew 1 a
        // zone already holding one matching pod is full.
        let mut c = constraint(1, ZONE, "DoNotSchedule");
        c.min_domains = Some(3);
        let p = foo("p").spread(c).info();
        let nodes = vec![
            zn("a", "zoneA").with(vec![foo("x")]),
            zn("b", "zoneB").with(vec![foo("y")]),
        ];
        let s = filter(&p, &nodes);
        assert!(s.iter().all(|s| s.message() == REASON_CONSTRAINTS));
    }

    #[test]
    fn node_affinity_policy_decides_which_domains_count() {
        // Docs: with nodeAffinityPolicy Honor (default) only nodes matching the pod's node
        // selector count; zoneC (not selected) holds no pods but must not drag the minimum.
        let mut nodes = docs_cluster();
        nodes.push(zn("node5", "zoneC").info());
        let mut p = foo("p").spread(constraint(1, ZONE, "DoNotSchedule"));
        p = p.affinity(k8s_openapi::api::core::v1::Affinity {
            node_affinity: Some(k8s_openapi::api::core::v1::NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(
                    k8s_openapi::api::core::v1::NodeSelector {
                        node_selector_terms: vec![k8s_openapi::api::core::v1::NodeSelectorTerm {
                            match_expressions: Some(vec![
                                k8s_openapi::api::core::v1::NodeSelectorRequirement {
                                    key: ZONE.into(),
                                    operator: "NotIn".into(),
                                    values: Some(vec!["zoneC".into()]),
                                },
                            ]),
                            match_fields: None,
                        }],
                    },
                ),
                ..Default::default()
            }),
            ..Default::default()
        });
        let s = filter(&p.clone().info(), &nodes);
        assert!(s[2].is_success(), "zoneB has 1, min over A/B is 1: skew 1");
        // With Ignore, zoneC (0 pods) counts and zoneB would make skew 2.
        let mut ignore = p.clone();
        ignore
            .0
            .spec
            .as_mut()
            .unwrap()
            .topology_spread_constraints
            .as_mut()
            .unwrap()[0]
            .node_affinity_policy = Some("Ignore".into());
        let s = filter(&ignore.info(), &nodes);
        assert_eq!(s[2].message(), REASON_CONSTRAINTS);
    }

    #[test]
    fn node_taints_policy_honor_skips_tainted_domains() {
        let nodes = vec![
            zn("a", "zoneA").with(vec![foo("x")]),
            zn("b", "zoneB").taint("t", "v", "NoSchedule").info(),
        ];
        let mut c = constraint(1, ZONE, "DoNotSchedule");
        let s = filter(&foo("p").spread(c.clone()).info(), &nodes);
        assert_eq!(
            s[0].message(),
            REASON_CONSTRAINTS,
            "tainted zoneB counts under Ignore"
        );
        c.node_taints_policy = Some("Honor".into());
        let s = filter(&foo("p").spread(c).info(), &nodes);
        assert!(
            s[0].is_success(),
            "tainted zoneB does not count under Honor"
        );
    }

    #[test]
    fn schedule_anyway_prefers_emptier_domains() {
        let nodes = docs_cluster();
        let p = foo("p")
            .spread(constraint(1, ZONE, "ScheduleAnyway"))
            .info();
        let snap = snapshot(nodes.clone());
        let mut state = CycleState::new();
        let pl = plugin();
        assert!(pl.pre_score(&mut state, &p, &nodes, &snap).is_success());
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| pl.score(&state, &p, n).unwrap())
            .collect();
        // zoneA: 2 pods × ln(4) ≈ 2.77 → 3; zoneB: 1 × ln(4) → 1.
        assert_eq!(scores, [3, 3, 1, 1]);
        pl.normalize(&state, &p, &nodes, &mut scores);
        assert_eq!(scores, [33, 33, 100, 100]);
    }

    #[test]
    fn system_defaults_apply_to_pods_selected_by_a_service() {
        let pl = plugin();
        let p = foo("p").info();
        assert!(
            pl.constraints(&p.pod, false).is_empty(),
            "no service, no defaults"
        );
        pl.services
            .handle(kube::runtime::watcher::Event::Apply(Service {
                metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    name: Some("svc".into()),
                    namespace: Some("default".into()),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
                    selector: Some([("foo".to_owned(), "bar".to_owned())].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }));
        let c = pl.constraints(&p.pod, false);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].max_skew, 3);
        assert_eq!(c[1].topology_key, "topology.kubernetes.io/zone");
        assert!(c[0].selector.matches(pod_labels(&p.pod)));
        assert!(pl.constraints(&p.pod, true).is_empty());
    }

    /// Filter and Score of `p` on every node of the cache's current snapshot, with `pl`'s
    /// memos (warm from earlier cycles or not).
    fn outcomes(pl: &PodTopologySpread, p: &PodInfo, snap: &Snapshot) -> Vec<(Code, i64)> {
        let mut state = CycleState::new();
        let (s, _) = pl.pre_filter(&mut state, p, snap);
        let nodes = snap.nodes().to_vec();
        let scored = pl.pre_score(&mut state, p, &nodes, snap).is_success();
        nodes
            .iter()
            .map(|n| {
                let code = if s.is_skip() {
                    Code::Success
                } else {
                    pl.filter(&state, p, n).code()
                };
                let score = if scored {
                    pl.score(&state, p, n).unwrap()
                } else {
                    0
                };
                (code, score)
            })
            .collect()
    }

    /// The memos are an optimization only: after any change to pods or nodes, a plugin that
    /// kept its counts from earlier cycles decides exactly like one counting from scratch.
    #[test]
    fn counts_kept_across_cycles_match_counting_from_scratch() {
        use crate::cache::Cache;
        let cache = Cache::new();
        for (i, zone) in ["a", "a", "b", "b", "c", "c"].iter().enumerate() {
            cache.add_node(Arc::new(zn(&format!("n{i}"), zone).0));
        }
        let hard = foo("hard")
            .spread(constraint(1, ZONE, "DoNotSchedule"))
            .spread(constraint(2, HOSTNAME, "DoNotSchedule"))
            .info();
        let soft = foo("soft")
            .spread(constraint(1, ZONE, "ScheduleAnyway"))
            .spread(constraint(1, HOSTNAME, "ScheduleAnyway"))
            .info();
        let warm = plugin();
        let mut snap = Snapshot::default();
        type Step<'a> = Box<dyn Fn(&Cache) + 'a>;
        let steps: Vec<Step> = vec![
            Box::new(|_| {}),
            Box::new(|c| c.add_pod(Arc::new(foo("x1").node("n0").0))),
            Box::new(|c| {
                c.add_pod(Arc::new(foo("x2").node("n0").0));
                c.add_pod(Arc::new(foo("x3").node("n2").0));
                c.add_pod(Arc::new(foo("other-ns").ns("other").node("n4").0));
            }),
            Box::new(|c| c.add_pod(Arc::new(foo("x2").node("n0").terminating().0))),
            Box::new(|c| c.remove_pod(&foo("x1").node("n0").0)),
            // n5 moves from zone c to zone a: its pods now count there.
            Box::new(|c| {
                c.add_pod(Arc::new(foo("x4").node("n5").0));
                c.add_node(Arc::new(zn("n5", "a").0));
            }),
            // A node without the zone label: its domain is gone, then a new node.
            Box::new(|c| c.add_node(Arc::new(node("n3").0))),
            Box::new(|c| c.add_node(Arc::new(zn("n6", "d").0))),
        ];
        for (i, step) in steps.iter().enumerate() {
            step(&cache);
            cache.update_snapshot(&mut snap);
            for p in [&hard, &soft] {
                let name = p.pod.metadata.name.clone().unwrap();
                assert_eq!(
                    outcomes(&warm, p, &snap),
                    outcomes(&plugin(), p, &snap),
                    "step {i}, pod {name}"
                );
            }
        }
        assert_eq!(warm.filter_memos.lock().len(), 1);
    }
}
