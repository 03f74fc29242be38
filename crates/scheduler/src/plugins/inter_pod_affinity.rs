//! InterPodAffinity (PreFilter, Filter, PreScore, Score).
//!
//! Filter, per topology domain (the value of a term's `topologyKey` on the node):
//! - required affinity: every term must have a matching pod in the node's domain — except for
//!   the first pod of a group whose terms match itself, when no pod anywhere matches yet;
//! - required anti-affinity: no term may have a matching pod in the node's domain;
//! - existing pods' required anti-affinity: no pod in the node's domain may reject this pod.
//!
//! PreFilter counts matching pods per (key, value) once per cycle; Filter only looks the node's
//! labels up. Score adds preferred term weights (and `hardPodAffinityWeight` for existing pods'
//! required affinity to this pod) per domain, normalized between the lowest and the highest.
//! Namespaces: a term covers its `namespaces`, namespaces matching its `namespaceSelector` (an
//! empty selector means all), or the pod's own namespace when it gives neither.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use parking_lot::Mutex;

use serde::Deserialize;
use serde_json::Value;
use skiff_runtime::Informer;

use k8s_openapi::api::core::v1::{Namespace, Pod};

use crate::cache::Snapshot;
use crate::extension_points;
use crate::framework::events::Resource;
use crate::framework::{
    ActionType, ClusterEvent, Code, CycleState, EventObject, FilterPlugin, Handle, MAX_NODE_SCORE,
    Plugin, PreFilterPlugin, PreFilterResult, PreScorePlugin, ScorePlugin, Status,
};
use crate::helpers::pod_labels;
use crate::memo::{DomainCounts, MemoCache, NodeMemo};
use crate::nodeinfo::{AffinityTerm, NodeInfo, PodInfo, WeightedAffinityTerm};
use crate::registry::decode_args;

/// The plugin name.
pub const NAME: &str = "InterPodAffinity";
/// Upstream's reasons.
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// Anti-affinity of the incoming pod.
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
/// Anti-affinity of pods already running.
pub const REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

const PRE_SCORE_KEY: &str = "InterPodAffinity/score";

/// `InterPodAffinityArgs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Args {
    /// Score weight of existing pods' required affinity to the incoming pod (0-100).
    #[serde(default = "one")]
    pub hard_pod_affinity_weight: i64,
    /// Ignore existing pods' preferred terms when scoring.
    #[serde(default)]
    pub ignore_preferred_terms_of_existing_pods: bool,
}

fn one() -> i64 {
    1
}

impl Default for Args {
    fn default() -> Self {
        Args {
            hard_pod_affinity_weight: 1,
            ignore_preferred_terms_of_existing_pods: false,
        }
    }
}

/// The plugin.
pub struct InterPodAffinity {
    args: Args,
    namespaces: Informer<Namespace>,
    filter_memos: Mutex<MemoCache<FilterMemo>>,
    score_memos: Mutex<MemoCache<ScoreMemo>>,
}

/// How many kinds of pods (namespace, labels, terms) the plugin keeps counts for, for
/// PreFilter and for PreScore each.
const MEMOS: usize = 8;

/// Which of the PreFilter counts a contribution goes to.
const EXISTING: u8 = 0;
const AFFINITY: u8 = 1;
const ANTI_AFFINITY: u8 = 2;

/// The PreFilter counts over every node.
#[derive(Clone, Default)]
struct FilterTotals {
    existing_anti_affinity: DomainCounts,
    affinity: DomainCounts,
    anti_affinity: DomainCounts,
}

impl FilterTotals {
    fn counts(&mut self, which: u8) -> &mut DomainCounts {
        match which {
            EXISTING => &mut self.existing_anti_affinity,
            AFFINITY => &mut self.affinity,
            _ => &mut self.anti_affinity,
        }
    }
}

/// Per node: (which count, domain, how many).
type FilterMemo = NodeMemo<Box<[(u8, u32, i64)]>, FilterTotals>;

/// The PreScore sums over every node, and how many term matches went into them.
#[derive(Clone, Default)]
struct ScoreTotals {
    scores: DomainCounts,
    matches: i64,
}

/// Per node: (domain, weight) for each matching term.
type ScoreMemo = NodeMemo<Box<[(u32, i64)]>, ScoreTotals>;

/// A term as a memo key part: namespaces sorted, selectors in their canonical form.
fn term_key(out: &mut String, t: &AffinityTerm) {
    let mut namespaces: Vec<&String> = t.namespaces.iter().collect();
    namespaces.sort_unstable();
    let _ = write!(
        out,
        "{namespaces:?}|{}|{}|{}|{}|{};",
        t.selector,
        t.selector.is_nothing(),
        t.namespace_selector,
        t.namespace_selector.is_nothing(),
        t.topology_key
    );
}

/// What existing pods' terms are matched against: the pod's namespace, labels and namespace
/// labels.
fn pod_key(pod: &PodInfo, ns_labels: &BTreeMap<String, String>) -> String {
    format!(
        "{}\0{:?}\0{ns_labels:?}\0",
        pod.namespace(),
        pod_labels(&pod.pod)
    )
}

/// The number of the node's domain for `key` in `counts` (numbering the key's domains on all
/// nodes the first time it is used), or `None` without the label.
fn domain(
    counts: &mut DomainCounts,
    key: &str,
    node: &NodeInfo,
    snapshot: &Snapshot,
) -> Option<u32> {
    counts.intern_all(key, snapshot.nodes());
    counts.intern_node(key, node)
}

/// Factory.
pub fn new(args: Option<&Value>, handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    let args: Args = decode_args(args)?;
    if !(0..=100).contains(&args.hard_pod_affinity_weight) {
        return Err(format!(
            "hardPodAffinityWeight: Invalid value: {}: not in valid range [0-100]",
            args.hard_pod_affinity_weight
        ));
    }
    Ok(Arc::new(InterPodAffinity {
        args,
        namespaces: handle.listers.namespaces.clone(),
        filter_memos: Mutex::new(MemoCache::new(MEMOS)),
        score_memos: Mutex::new(MemoCache::new(MEMOS)),
    }))
}

/// Namespace labels, looked up once per namespace per cycle.
struct NsLabels<'a> {
    informer: &'a Informer<Namespace>,
    cache: HashMap<String, Option<Arc<Namespace>>>,
}

impl NsLabels<'_> {
    fn get(&mut self, ns: &str) -> Option<BTreeMap<String, String>> {
        let informer = self.informer;
        self.cache
            .entry(ns.to_owned())
            .or_insert_with(|| informer.get_named("", ns))
            .as_ref()
            .map(|n| n.metadata.labels.clone().unwrap_or_default())
            .or_else(|| Some(BTreeMap::new()))
    }

    /// Whether `term` covers `pod`, looking up the pod's namespace labels only when the term
    /// has a namespace selector.
    fn matches(&mut self, term: &AffinityTerm, pod: &Pod) -> bool {
        if term.namespace_selector.is_nothing() {
            return term.matches(pod, None);
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let labels = self.get(ns);
        term.matches(pod, labels.as_ref())
    }
}

#[derive(Clone, Default)]
struct FilterState {
    /// The counts, shared with the memo; copied only when preemption or nominated pods change
    /// them.
    counts: Arc<FilterTotals>,
    /// The incoming pod's namespace labels.
    ns_labels: BTreeMap<String, String>,
    /// Whether the incoming pod matches all its own affinity terms.
    self_match: bool,
}

fn bump(map: &mut DomainCounts, node: &NodeInfo, key: &str, delta: i64) {
    if let Some(id) = map.intern_node(key, node) {
        map.add(id, delta, 0);
    }
}

impl InterPodAffinity {
    fn ns_labels(&self) -> NsLabels<'_> {
        NsLabels {
            informer: &self.namespaces,
            cache: HashMap::new(),
        }
    }

    /// Count `other` (on `node`) into the state, `delta` = +1 or -1.
    fn account(
        &self,
        state: &mut FilterState,
        ns: &mut NsLabels<'_>,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        delta: i64,
    ) {
        let ns_labels = &state.ns_labels;
        let counts = Arc::make_mut(&mut state.counts);
        for t in &other.required_anti_affinity {
            if t.matches(&pod.pod, Some(ns_labels)) {
                bump(
                    &mut counts.existing_anti_affinity,
                    node,
                    &t.topology_key,
                    delta,
                );
            }
        }
        if !pod.required_affinity.is_empty()
            && pod
                .required_affinity
                .iter()
                .all(|t| ns.matches(t, &other.pod))
        {
            for t in &pod.required_affinity {
                bump(&mut counts.affinity, node, &t.topology_key, delta);
            }
        }
        for t in &pod.required_anti_affinity {
            if ns.matches(t, &other.pod) {
                bump(&mut counts.anti_affinity, node, &t.topology_key, delta);
            }
        }
    }
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            ClusterEvent::new(
                Resource::Pod,
                ActionType::ADD | ActionType::UPDATE_POD_LABEL | ActionType::DELETE,
                "AssignedPodChange",
            ),
            ClusterEvent::new(
                Resource::Node,
                ActionType::ADD | ActionType::UPDATE_NODE_LABEL,
                "NodeLabelChange",
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
        // Namespace selectors are over-approximated: when in doubt, retry.
        let may_match = |t: &AffinityTerm, p: &Pod| {
            let ns = p.metadata.namespace.as_deref().unwrap_or("");
            (t.namespaces.contains(ns) || !t.namespace_selector.is_nothing())
                && t.selector.matches(pod_labels(p))
        };
        if let EventObject::Pod(n) = new
            && pod.required_affinity.iter().any(|t| may_match(t, n))
        {
            return true;
        }
        if let EventObject::Pod(o) = old {
            if pod.required_anti_affinity.iter().any(|t| may_match(t, o)) {
                return true;
            }
            let other = PodInfo::new(Arc::new((*o).clone()));
            if other
                .required_anti_affinity
                .iter()
                .any(|t| may_match(t, &pod.pod))
            {
                return true;
            }
        }
        false
    }
    extension_points!(
        as_pre_filter => PreFilterPlugin,
        as_filter => FilterPlugin,
        as_pre_score => PreScorePlugin,
        as_score => ScorePlugin,
    );
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (Status, PreFilterResult) {
        let own_terms = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        if !own_terms && snapshot.with_required_anti_affinity.is_empty() {
            return (Status::skip(), None);
        }
        let mut ns = self.ns_labels();
        let own_labels = ns.get(pod.namespace()).unwrap_or_default();
        // Terms with a namespace selector read other namespaces' labels, which the snapshot
        // does not track: such pods are counted from scratch.
        let cacheable = pod
            .required_affinity
            .iter()
            .chain(&pod.required_anti_affinity)
            .all(|t| t.namespace_selector.is_nothing());
        let mut key = pod_key(pod, &own_labels);
        for t in &pod.required_affinity {
            term_key(&mut key, t);
        }
        key.push('\0');
        for t in &pod.required_anti_affinity {
            term_key(&mut key, t);
        }
        let counts = self.filter_memos.lock().synced_totals(
            cacheable.then_some(key.as_str()),
            snapshot,
            |node, totals| {
                let mut out = Vec::new();
                for other in &node.pods_with_required_anti_affinity {
                    for t in &other.required_anti_affinity {
                        if t.matches(&pod.pod, Some(&own_labels))
                            && let Some(id) =
                                domain(totals.counts(EXISTING), &t.topology_key, node, snapshot)
                        {
                            out.push((EXISTING, id, 1));
                        }
                    }
                }
                if own_terms {
                    for other in &node.pods {
                        if !pod.required_affinity.is_empty()
                            && pod
                                .required_affinity
                                .iter()
                                .all(|t| ns.matches(t, &other.pod))
                        {
                            for t in &pod.required_affinity {
                                if let Some(id) =
                                    domain(totals.counts(AFFINITY), &t.topology_key, node, snapshot)
                                {
                                    out.push((AFFINITY, id, 1));
                                }
                            }
                        }
                        for t in &pod.required_anti_affinity {
                            if ns.matches(t, &other.pod)
                                && let Some(id) = domain(
                                    totals.counts(ANTI_AFFINITY),
                                    &t.topology_key,
                                    node,
                                    snapshot,
                                )
                            {
                                out.push((ANTI_AFFINITY, id, 1));
                            }
                        }
                    }
                }
                out.into_boxed_slice()
            },
            |totals, contribution, sign| {
                for (which, id, n) in contribution {
                    totals.counts(*which).add(*id, sign * n, 0);
                }
            },
        );
        let s = FilterState {
            counts,
            self_match: own_terms
                && pod
                    .required_affinity
                    .iter()
                    .all(|t| ns.matches(t, &pod.pod)),
            ns_labels: own_labels,
        };
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
        let Some(s) = state.read_mut::<FilterState>(NAME) else {
            return Status::success();
        };
        let mut ns = self.ns_labels();
        self.account(s, &mut ns, pod, added, node, 1);
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        let Some(s) = state.read_mut::<FilterState>(NAME) else {
            return Status::success();
        };
        let mut ns = self.ns_labels();
        self.account(s, &mut ns, pod, removed, node, -1);
        Status::success()
    }
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<FilterState>(NAME) else {
            return Status::error("InterPodAffinity: PreFilter state missing");
        };
        let labels = node.labels();
        // Affinity first: it is unresolvable by preemption.
        if !pod.required_affinity.is_empty() {
            let mut all_exist = true;
            for t in &pod.required_affinity {
                match labels.get(&t.topology_key) {
                    None => return Status::unresolvable(REASON_AFFINITY),
                    Some(v) => {
                        if s.counts.affinity.get(&t.topology_key, v) <= 0 {
                            all_exist = false;
                        }
                    }
                }
            }
            if !(all_exist || s.counts.affinity.all_zero() && s.self_match) {
                return Status::unresolvable(REASON_AFFINITY);
            }
        }
        for t in &pod.required_anti_affinity {
            if s.counts.anti_affinity.of_node(labels, &t.topology_key) > 0 {
                return Status::new(Code::Unschedulable, vec![REASON_ANTI_AFFINITY.into()]);
            }
        }
        if s.counts.existing_anti_affinity.any_on(labels) {
            return Status::unschedulable(REASON_EXISTING_ANTI_AFFINITY);
        }
        Status::success()
    }
}

#[derive(Clone, Default)]
struct ScoreState {
    /// Summed weights per topology domain, shared with the memo.
    scores: Arc<ScoreTotals>,
    /// Whether any term matched at all (otherwise scores are not normalized).
    any: bool,
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        let has_preferred =
            !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
        if !has_preferred && snapshot.with_affinity.is_empty() {
            return Status::skip();
        }
        let mut ns = self.ns_labels();
        let own_labels = ns.get(pod.namespace()).unwrap_or_default();
        let preferred = || {
            pod.preferred_affinity
                .iter()
                .chain(&pod.preferred_anti_affinity)
        };
        let cacheable = preferred().all(|w| w.term.namespace_selector.is_nothing());
        let mut key = pod_key(pod, &own_labels);
        let _ = write!(key, "{has_preferred}\0");
        for (sign, terms) in [
            ('+', &pod.preferred_affinity),
            ('-', &pod.preferred_anti_affinity),
        ] {
            for w in terms {
                let _ = write!(key, "{sign}{}:", w.weight);
                term_key(&mut key, &w.term);
            }
        }
        let hard_weight = self.args.hard_pod_affinity_weight;
        let existing_preferred = !self.args.ignore_preferred_terms_of_existing_pods;
        let scores = self.score_memos.lock().synced_totals(
            cacheable.then_some(key.as_str()),
            snapshot,
            |node, totals| {
                let mut out = Vec::new();
                let mut add = |key: &str, weight: i64, totals: &mut ScoreTotals| {
                    if weight != 0
                        && let Some(id) = domain(&mut totals.scores, key, node, snapshot)
                    {
                        out.push((id, weight));
                    }
                };
                let weighted = |w: &WeightedAffinityTerm, sign: i64| i64::from(w.weight) * sign;
                let others = if has_preferred {
                    &node.pods
                } else {
                    &node.pods_with_affinity
                };
                for other in others {
                    for w in &pod.preferred_affinity {
                        if ns.matches(&w.term, &other.pod) {
                            add(&w.term.topology_key, weighted(w, 1), totals);
                        }
                    }
                    for w in &pod.preferred_anti_affinity {
                        if ns.matches(&w.term, &other.pod) {
                            add(&w.term.topology_key, weighted(w, -1), totals);
                        }
                    }
                    if hard_weight > 0 {
                        for t in &other.required_affinity {
                            if t.matches(&pod.pod, Some(&own_labels)) {
                                add(&t.topology_key, hard_weight, totals);
                            }
                        }
                    }
                    if existing_preferred {
                        for w in &other.preferred_affinity {
                            if w.term.matches(&pod.pod, Some(&own_labels)) {
                                add(&w.term.topology_key, weighted(w, 1), totals);
                            }
                        }
                        for w in &other.preferred_anti_affinity {
                            if w.term.matches(&pod.pod, Some(&own_labels)) {
                                add(&w.term.topology_key, weighted(w, -1), totals);
                            }
                        }
                    }
                }
                out.into_boxed_slice()
            },
            |totals, contribution, sign| {
                for (id, weight) in contribution {
                    totals.scores.add(*id, sign * weight, 0);
                }
                totals.matches += sign * contribution.len() as i64;
            },
        );
        let s = ScoreState {
            any: scores.matches > 0,
            scores,
        };
        state.write_for_cycle(PRE_SCORE_KEY, s);
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<ScoreState>(PRE_SCORE_KEY) else {
            return Ok(0);
        };
        let labels = node.labels();
        let scores = &s.scores.scores;
        Ok((0..scores.keys().len())
            .filter_map(|k| scores.id_at(k, labels))
            .map(|id| scores.count(id))
            .sum())
    }

    fn normalize(
        &self,
        state: &CycleState,
        _pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        scores: &mut [i64],
    ) -> Status {
        if state
            .read::<ScoreState>(PRE_SCORE_KEY)
            .is_none_or(|s| !s.any)
        {
            return Status::success();
        }
        let (min, max) = scores
            .iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
        let diff = max - min;
        for s in scores.iter_mut() {
            *s = if diff > 0 {
                (MAX_NODE_SCORE as f64 * ((*s - min) as f64 / diff as f64)) as i64
            } else {
                0
            };
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{N, P, node, pod, snapshot};
    use k8s_openapi::api::core::v1::{
        Affinity, PodAffinity, PodAffinityTerm, PodAntiAffinity, WeightedPodAffinityTerm,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    const ZONE: &str = "topology.kubernetes.io/zone";
    const HOST: &str = "kubernetes.io/hostname";

    fn term(key: &str, values: &[&str], topology: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: key.into(),
                    operator: "In".into(),
                    values: Some(values.iter().map(|v| (*v).into()).collect()),
                }]),
                ..Default::default()
            }),
            topology_key: topology.into(),
            ..Default::default()
        }
    }

    fn plugin() -> InterPodAffinity {
        InterPodAffinity {
            args: Args::default(),
            namespaces: Informer::detached(),
            filter_memos: Mutex::new(MemoCache::new(MEMOS)),
            score_memos: Mutex::new(MemoCache::new(MEMOS)),
        }
    }

    fn run(p: &PodInfo, nodes: Vec<Arc<NodeInfo>>) -> Vec<Status> {
        let snap = snapshot(nodes.clone());
        let mut state = CycleState::new();
        let (s, _) = plugin().pre_filter(&mut state, p, &snap);
        if s.is_skip() {
            return nodes.iter().map(|_| Status::success()).collect();
        }
        nodes
            .iter()
            .map(|n| plugin().filter(&state, p, n))
            .collect()
    }

    fn zone_node(name: &str, zone: &str) -> N {
        node(name).label(ZONE, zone)
    }

    /// The upstream documentation's example pod: affinity to `security=S1` pods in the same
    /// zone, anti-affinity (preferred) to `security=S2` pods on the same host.
    fn docs_pod() -> P {
        pod("with-pod-affinity").affinity(Affinity {
            pod_affinity: Some(PodAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![term(
                    "security",
                    &["S1"],
                    ZONE,
                )]),
                ..Default::default()
            }),
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: term("security", &["S2"], HOST),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn required_affinity_needs_a_matching_pod_in_the_zone() {
        let nodes = vec![
            zone_node("a1", "a").with(vec![pod("s1").label("security", "S1")]),
            zone_node("a2", "a").info(),
            zone_node("b1", "b").info(),
            node("nozone").info(),
        ];
        let s = run(&docs_pod().info(), nodes);
        assert!(s[0].is_success());
        assert!(s[1].is_success(), "same zone as the S1 pod");
        assert_eq!(s[2].message(), REASON_AFFINITY);
        assert_eq!(s[2].code(), Code::UnschedulableAndUnresolvable);
        assert_eq!(
            s[3].message(),
            REASON_AFFINITY,
            "the node lacks the topology key"
        );
    }

    #[test]
    fn the_first_pod_of_a_self_affine_group_may_go_anywhere() {
        let p = pod("web").label("app", "web").affinity(Affinity {
            pod_affinity: Some(PodAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![term(
                    "app",
                    &["web"],
                    ZONE,
                )]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let s = run(
            &p.clone().info(),
            vec![zone_node("a1", "a").info(), zone_node("b1", "b").info()],
        );
        assert!(s.iter().all(Status::is_success));
        // A pod that does not match its own terms cannot start the group.
        let other = pod("other").affinity(p.0.spec.clone().unwrap().affinity.unwrap());
        let s = run(&other.info(), vec![zone_node("a1", "a").info()]);
        assert_eq!(s[0].message(), REASON_AFFINITY);
    }

    #[test]
    fn anti_affinity_one_per_host_like_the_docs_redis_example() {
        // Upstream docs: a Deployment of 3 redis-cache replicas with anti-affinity to
        // app=store on kubernetes.io/hostname runs one replica per node.
        let cache_pod = |name: &str| {
            pod(name).label("app", "store").affinity(Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![term(
                        "app",
                        &["store"],
                        HOST,
                    )]),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let nodes = vec![
            node("n1").with(vec![cache_pod("r1")]),
            node("n2").with(vec![cache_pod("r2")]),
            node("n3").info(),
        ];
        let s = run(&cache_pod("r3").info(), nodes.clone());
        assert_eq!(s[0].message(), REASON_ANTI_AFFINITY);
        assert_eq!(s[1].message(), REASON_ANTI_AFFINITY);
        assert!(s[2].is_success());
        // A plain app=store pod is kept off n1/n2 by the existing pods' anti-affinity.
        let s = run(&pod("plain").label("app", "store").info(), nodes);
        assert_eq!(s[0].message(), REASON_EXISTING_ANTI_AFFINITY);
        assert_eq!(s[0].code(), Code::Unschedulable);
        assert!(s[2].is_success());
    }

    #[test]
    fn terms_only_cover_their_namespaces() {
        let anti = Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![term(
                    "app",
                    &["db"],
                    HOST,
                )]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let nodes = vec![node("n1").with(vec![pod("db").ns("other").label("app", "db")])];
        let s = run(&pod("p").affinity(anti.clone()).info(), nodes.clone());
        assert!(s[0].is_success(), "the db pod is in another namespace");
        let mut all = anti.clone();
        all.pod_anti_affinity
            .as_mut()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_mut()
            .unwrap()[0]
            .namespace_selector = Some(LabelSelector::default());
        let s = run(&pod("p").affinity(all).info(), nodes);
        assert_eq!(
            s[0].message(),
            REASON_ANTI_AFFINITY,
            "an empty namespaceSelector covers every namespace"
        );
    }

    #[test]
    fn preemption_extensions_update_the_counts() {
        let p = pod("p")
            .affinity(Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![term(
                        "app",
                        &["db"],
                        HOST,
                    )]),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .info();
        let n = node("n1").with(vec![pod("db").label("app", "db")]);
        let snap = snapshot(vec![n.clone()]);
        let mut state = CycleState::new();
        plugin().pre_filter(&mut state, &p, &snap);
        assert!(!plugin().filter(&state, &p, &n).is_success());
        let victim = n.pods[0].clone();
        let mut without = (*n).clone();
        without.remove_pod(&victim.key);
        plugin().remove_pod(&mut state, &p, &victim, &without);
        assert!(plugin().filter(&state, &p, &without).is_success());
    }

    #[test]
    fn preferred_terms_score_per_domain() {
        let p = docs_pod().info();
        let nodes = vec![
            zone_node("a1", "a").with(vec![pod("s1").label("security", "S1")]),
            zone_node("a2", "a").with(vec![pod("s2").label("security", "S2")]),
            zone_node("b1", "b").info(),
        ];
        let snap = snapshot(nodes.clone());
        let mut state = CycleState::new();
        plugin().pre_score(&mut state, &p, &nodes, &snap);
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| plugin().score(&state, &p, n).unwrap())
            .collect();
        // a2 hosts an S2 pod: -100 on that host.
        assert_eq!(scores, [0, -100, 0]);
        plugin().normalize(&state, &p, &nodes, &mut scores);
        assert_eq!(scores, [100, 0, 100]);
    }

    /// Filter and Score of `p` on every node of `snap` with `pl`'s memos.
    fn outcomes(pl: &InterPodAffinity, p: &PodInfo, snap: &Snapshot) -> Vec<(Code, i64)> {
        let mut state = CycleState::new();
        let (s, _) = pl.pre_filter(&mut state, p, snap);
        let nodes = snap.nodes().to_vec();
        let scored = pl.pre_score(&mut state, p, &nodes, snap).is_success();
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| {
                if scored {
                    pl.score(&state, p, n).unwrap()
                } else {
                    0
                }
            })
            .collect();
        if scored {
            pl.normalize(&state, p, &nodes, &mut scores);
        }
        nodes
            .iter()
            .zip(scores)
            .map(|(n, score)| {
                let code = if s.is_skip() {
                    Code::Success
                } else {
                    pl.filter(&state, p, n).code()
                };
                (code, score)
            })
            .collect()
    }

    /// The memos are an optimization only: after any change to pods or nodes, a plugin that
    /// kept its counts from earlier cycles decides and scores exactly like one counting from
    /// scratch — for the pod's own terms and for existing pods' terms about the pod.
    #[test]
    fn counts_kept_across_cycles_match_counting_from_scratch() {
        use crate::cache::Cache;
        let cache = Cache::new();
        for (i, zone) in ["a", "a", "b", "b", "c"].iter().enumerate() {
            cache.add_node(Arc::new(zone_node(&format!("n{i}"), zone).0));
        }
        let anti_web = || Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![term(
                    "app",
                    &["web"],
                    HOST,
                )]),
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 10,
                        pod_affinity_term: term("app", &["cache"], ZONE),
                    },
                ]),
            }),
            pod_affinity: Some(PodAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 5,
                        pod_affinity_term: term("app", &["db"], ZONE),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let web = |name: &str| pod(name).label("app", "web").affinity(anti_web());
        let with_db = pod("with-db")
            .label("app", "web")
            .affinity(Affinity {
                pod_affinity: Some(PodAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![term(
                        "app",
                        &["db"],
                        ZONE,
                    )]),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .info();
        let incoming = [
            web("incoming").info(),
            with_db,
            pod("plain").label("app", "web").info(),
        ];
        let warm = plugin();
        let mut snap = Snapshot::default();
        type Step<'a> = Box<dyn Fn(&Cache) + 'a>;
        let steps: Vec<Step> = vec![
            Box::new(|_| {}),
            Box::new(|c| c.add_pod(Arc::new(pod("db1").label("app", "db").node("n0").0))),
            Box::new(|c| {
                c.add_pod(Arc::new(web("w1").node("n1").0));
                c.add_pod(Arc::new(pod("cache1").label("app", "cache").node("n2").0));
            }),
            Box::new(|c| c.add_pod(Arc::new(web("w2").node("n3").0))),
            Box::new(|c| c.remove_pod(&pod("db1").label("app", "db").node("n0").0)),
            Box::new(|c| c.add_pod(Arc::new(pod("db2").label("app", "db").node("n4").0))),
            // n4 moves to zone a.
            Box::new(|c| c.add_node(Arc::new(zone_node("n4", "a").0))),
            Box::new(|c| c.remove_pod(&web("w1").node("n1").0)),
            Box::new(|c| c.add_node(Arc::new(zone_node("n5", "b").0))),
        ];
        for (i, step) in steps.iter().enumerate() {
            step(&cache);
            cache.update_snapshot(&mut snap);
            for p in &incoming {
                let name = p.pod.metadata.name.clone().unwrap();
                assert_eq!(
                    outcomes(&warm, p, &snap),
                    outcomes(&plugin(), p, &snap),
                    "step {i}, pod {name}"
                );
            }
        }
    }
}
