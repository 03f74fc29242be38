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
use std::sync::Arc;

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
use crate::helpers::{TopologyCounts, pod_labels};
use crate::nodeinfo::{AffinityTerm, NodeInfo, PodInfo};
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
    existing_anti_affinity: TopologyCounts,
    affinity: TopologyCounts,
    anti_affinity: TopologyCounts,
    /// The incoming pod's namespace labels.
    ns_labels: BTreeMap<String, String>,
    /// Whether the incoming pod matches all its own affinity terms.
    self_match: bool,
}

fn bump(map: &mut TopologyCounts, node: &NodeInfo, key: &str, delta: i64) {
    map.add_node(node.labels(), key, delta);
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
        for t in &other.required_anti_affinity {
            if t.matches(&pod.pod, Some(&state.ns_labels)) {
                bump(
                    &mut state.existing_anti_affinity,
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
                bump(&mut state.affinity, node, &t.topology_key, delta);
            }
        }
        for t in &pod.required_anti_affinity {
            if ns.matches(t, &other.pod) {
                bump(&mut state.anti_affinity, node, &t.topology_key, delta);
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
        let mut s = FilterState {
            ns_labels: ns.get(pod.namespace()).unwrap_or_default(),
            ..Default::default()
        };
        for node in snapshot.nodes_with_required_anti_affinity() {
            for other in &node.pods_with_required_anti_affinity {
                for t in &other.required_anti_affinity {
                    if t.matches(&pod.pod, Some(&s.ns_labels)) {
                        bump(&mut s.existing_anti_affinity, node, &t.topology_key, 1);
                    }
                }
            }
        }
        if own_terms {
            for node in &snapshot.nodes {
                for other in &node.pods {
                    if !pod.required_affinity.is_empty()
                        && pod
                            .required_affinity
                            .iter()
                            .all(|t| ns.matches(t, &other.pod))
                    {
                        for t in &pod.required_affinity {
                            bump(&mut s.affinity, node, &t.topology_key, 1);
                        }
                    }
                    for t in &pod.required_anti_affinity {
                        if ns.matches(t, &other.pod) {
                            bump(&mut s.anti_affinity, node, &t.topology_key, 1);
                        }
                    }
                }
            }
            s.self_match = pod
                .required_affinity
                .iter()
                .all(|t| ns.matches(t, &pod.pod));
        }
        state.write(NAME, s);
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
        let Some(mut s) = state.read::<FilterState>(NAME).cloned() else {
            return Status::success();
        };
        let mut ns = self.ns_labels();
        self.account(&mut s, &mut ns, pod, added, node, 1);
        state.write(NAME, s);
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        let Some(mut s) = state.read::<FilterState>(NAME).cloned() else {
            return Status::success();
        };
        let mut ns = self.ns_labels();
        self.account(&mut s, &mut ns, pod, removed, node, -1);
        state.write(NAME, s);
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
                        if s.affinity.get(&t.topology_key, v) <= 0 {
                            all_exist = false;
                        }
                    }
                }
            }
            if !(all_exist || s.affinity.is_empty() && s.self_match) {
                return Status::unresolvable(REASON_AFFINITY);
            }
        }
        for t in &pod.required_anti_affinity {
            if s.anti_affinity.of_node(labels, &t.topology_key) > 0 {
                return Status::new(Code::Unschedulable, vec![REASON_ANTI_AFFINITY.into()]);
            }
        }
        if s.existing_anti_affinity.any_on(labels) {
            return Status::unschedulable(REASON_EXISTING_ANTI_AFFINITY);
        }
        Status::success()
    }
}

#[derive(Clone, Default)]
struct ScoreState {
    /// topology key → value → score.
    scores: HashMap<String, HashMap<String, i64>>,
}

impl ScoreState {
    fn add(&mut self, node: &NodeInfo, key: &str, weight: i64) {
        if weight == 0 {
            return;
        }
        if let Some(v) = node.labels().get(key) {
            *self
                .scores
                .entry(key.to_owned())
                .or_default()
                .entry(v.clone())
                .or_insert(0) += weight;
        }
    }
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
        let mut s = ScoreState::default();
        let visit =
            |node: &NodeInfo, other: &PodInfo, s: &mut ScoreState, ns: &mut NsLabels<'_>| {
                for w in &pod.preferred_affinity {
                    if ns.matches(&w.term, &other.pod) {
                        s.add(node, &w.term.topology_key, i64::from(w.weight));
                    }
                }
                for w in &pod.preferred_anti_affinity {
                    if ns.matches(&w.term, &other.pod) {
                        s.add(node, &w.term.topology_key, -i64::from(w.weight));
                    }
                }
                if self.args.hard_pod_affinity_weight > 0 {
                    for t in &other.required_affinity {
                        if t.matches(&pod.pod, Some(&own_labels)) {
                            s.add(node, &t.topology_key, self.args.hard_pod_affinity_weight);
                        }
                    }
                }
                if !self.args.ignore_preferred_terms_of_existing_pods {
                    for w in &other.preferred_affinity {
                        if w.term.matches(&pod.pod, Some(&own_labels)) {
                            s.add(node, &w.term.topology_key, i64::from(w.weight));
                        }
                    }
                    for w in &other.preferred_anti_affinity {
                        if w.term.matches(&pod.pod, Some(&own_labels)) {
                            s.add(node, &w.term.topology_key, -i64::from(w.weight));
                        }
                    }
                }
            };
        if has_preferred {
            for node in &snapshot.nodes {
                for other in &node.pods {
                    visit(node, other, &mut s, &mut ns);
                }
            }
        } else {
            for node in snapshot.nodes_with_affinity() {
                for other in &node.pods_with_affinity {
                    visit(node, other, &mut s, &mut ns);
                }
            }
        }
        state.write(PRE_SCORE_KEY, s);
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<ScoreState>(PRE_SCORE_KEY) else {
            return Ok(0);
        };
        let labels = node.labels();
        Ok(s.scores
            .iter()
            .filter_map(|(key, values)| labels.get(key).and_then(|v| values.get(v)))
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
            .is_none_or(|s| s.scores.is_empty())
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
}
