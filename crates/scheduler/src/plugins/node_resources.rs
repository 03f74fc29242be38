//! NodeResourcesFit (PreFilter, Filter, PreScore, Score) and NodeResourcesBalancedAllocation
//! (PreScore, Score).
//!
//! Fit: the node must have room for the pod's requests (cpu, memory, ephemeral-storage,
//! extended resources, and one more pod); a request larger than the node's whole allocatable
//! can never fit there, so preemption is not attempted for it. Scoring strategies:
//! `LeastAllocated` (default: spread), `MostAllocated` (bin-pack) and
//! `RequestedToCapacityRatio` (a piecewise-linear utilization → score shape), each a weighted
//! average over the configured resources; cpu and memory count missing container requests as
//! 100m/200Mi when scoring. BalancedAllocation prefers nodes whose utilization fractions of the
//! configured resources stay close to each other (1 − standard deviation).

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::cache::Snapshot;
use crate::extension_points;
use crate::framework::events::Resource as EventResource;
use crate::framework::{
    ActionType, ClusterEvent, CycleState, EventObject, FilterPlugin, Handle, MAX_NODE_SCORE,
    Plugin, PreFilterPlugin, PreFilterResult, PreScorePlugin, ScorePlugin, Status,
};
use crate::nodeinfo::{NodeInfo, PodInfo};
use crate::registry::decode_args;
use crate::resources::{self, Resource, is_extended, is_scalar};

/// Fit's name.
pub const FIT: &str = "NodeResourcesFit";
/// BalancedAllocation's name.
pub const BALANCED: &str = "NodeResourcesBalancedAllocation";

/// A resource and its weight in scoring.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceSpec {
    /// Resource name.
    pub name: String,
    /// Weight (1-100; 1 when omitted).
    #[serde(default)]
    pub weight: Option<i64>,
}

/// One point of the RequestedToCapacityRatio shape.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShapePoint {
    /// Utilization, 0-100.
    pub utilization: i64,
    /// Score, 0-10.
    pub score: i64,
}

/// Upstream's default shape (RequestedToCapacityRatio, StorageCapacityScoring): an empty node
/// scores 10, a full one 0.
pub fn empty_scores_highest() -> Vec<ShapePoint> {
    vec![
        ShapePoint {
            utilization: 0,
            score: 10,
        },
        ShapePoint {
            utilization: 100,
            score: 0,
        },
    ]
}

/// `requestedToCapacityRatio`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestedToCapacityRatio {
    /// The shape.
    #[serde(default)]
    pub shape: Vec<ShapePoint>,
}

/// `scoringStrategy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScoringStrategy {
    /// `LeastAllocated`, `MostAllocated` or `RequestedToCapacityRatio`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Resources and weights (cpu and memory, weight 1, by default).
    #[serde(default)]
    pub resources: Option<Vec<ResourceSpec>>,
    /// The shape for `RequestedToCapacityRatio`.
    #[serde(default)]
    pub requested_to_capacity_ratio: Option<RequestedToCapacityRatio>,
}

/// `NodeResourcesFitArgs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FitArgs {
    /// Extended resources Filter ignores.
    #[serde(default)]
    pub ignored_resources: Vec<String>,
    /// Extended resource groups (the part before `/`) Filter ignores.
    #[serde(default)]
    pub ignored_resource_groups: Vec<String>,
    /// How to score.
    #[serde(default)]
    pub scoring_strategy: Option<ScoringStrategy>,
}

/// `NodeResourcesBalancedAllocationArgs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BalancedArgs {
    /// Resources (cpu and memory by default).
    #[serde(default)]
    pub resources: Option<Vec<ResourceSpec>>,
}

#[derive(Debug, Clone)]
enum Strategy {
    LeastAllocated,
    MostAllocated,
    /// Shape scaled to 0-100 scores.
    Ratio(Vec<ShapePoint>),
    Balanced,
}

/// Scores a node from per-resource (requested, allocatable) pairs.
#[derive(Debug, Clone)]
struct Scorer {
    resources: Vec<(String, i64)>,
    strategy: Strategy,
    /// Use real requests (Balanced) rather than non-zero ones (Fit).
    use_requested: bool,
}

fn default_resources() -> Vec<(String, i64)> {
    vec![(resources::CPU.into(), 1), (resources::MEMORY.into(), 1)]
}

fn resource_specs(specs: Option<Vec<ResourceSpec>>) -> Result<Vec<(String, i64)>, String> {
    let Some(specs) = specs else {
        return Ok(default_resources());
    };
    let mut out = Vec::new();
    for s in specs {
        let w = s.weight.unwrap_or(1);
        if !(1..=100).contains(&w) {
            return Err(format!(
                "resources[{}].weight: Invalid value: {w}: resource weight of {} should be in range [1, 100]",
                s.name, s.name
            ));
        }
        out.push((s.name, w));
    }
    Ok(out)
}

/// A piecewise-linear function through the shape (upstream `BuildBrokenLinearFunction`).
pub(crate) fn broken_linear(shape: &[ShapePoint], p: i64) -> i64 {
    for i in 0..shape.len() {
        if p <= shape[i].utilization {
            if i == 0 {
                return shape[0].score;
            }
            let (a, b) = (shape[i - 1], shape[i]);
            return a.score
                + (b.score - a.score) * (p - a.utilization) / (b.utilization - a.utilization);
        }
    }
    shape.last().map_or(0, |s| s.score)
}

impl Scorer {
    /// The (allocatable, requested) of one resource on a node with the pod added; (0, 0)
    /// skips the resource (the node lacks it, or the pod does not ask for a scalar one).
    fn alloc_request(&self, node: &NodeInfo, name: &str, pod_request: i64) -> (i64, i64) {
        if pod_request == 0 && is_scalar(name) {
            return (0, 0);
        }
        let requested = if self.use_requested {
            &node.requested
        } else {
            &node.non_zero_requested
        };
        match name {
            resources::CPU => (
                node.allocatable.milli_cpu,
                requested.milli_cpu + pod_request,
            ),
            resources::MEMORY => (node.allocatable.memory, requested.memory + pod_request),
            resources::EPHEMERAL_STORAGE => (
                node.allocatable.ephemeral_storage,
                node.requested.ephemeral_storage + pod_request,
            ),
            other => match node.allocatable.scalar.get(other) {
                Some(a) => (*a, node.requested.get(other) + pod_request),
                None => (0, 0),
            },
        }
    }

    fn pod_request(&self, pod: &PodInfo, name: &str) -> i64 {
        if !self.use_requested && (name == resources::CPU || name == resources::MEMORY) {
            pod.non_zero_requests.get(name)
        } else {
            pod.requests.get(name)
        }
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        // (requested, allocatable, weight) per resource, computed as iterated: scoring runs for
        // every feasible node of every cycle, and a collected list would be an allocation each.
        let pairs = self.resources.iter().map(|(name, weight)| {
            let (alloc, req) = self.alloc_request(node, name, self.pod_request(pod, name));
            (req, alloc, *weight)
        });
        match &self.strategy {
            Strategy::LeastAllocated | Strategy::MostAllocated => {
                let most = matches!(self.strategy, Strategy::MostAllocated);
                let (mut total, mut weights) = (0i64, 0i64);
                for (req, alloc, w) in pairs {
                    if alloc == 0 {
                        continue;
                    }
                    let s = if most {
                        req.min(alloc) * MAX_NODE_SCORE / alloc
                    } else if req > alloc {
                        0
                    } else {
                        (alloc - req) * MAX_NODE_SCORE / alloc
                    };
                    total += s * w;
                    weights += w;
                }
                if weights == 0 { 0 } else { total / weights }
            }
            Strategy::Ratio(shape) => {
                let (mut total, mut weights) = (0i64, 0i64);
                for (req, alloc, w) in pairs {
                    if alloc == 0 {
                        continue;
                    }
                    let utilization = if req > alloc { 100 } else { req * 100 / alloc };
                    let s = broken_linear(shape, utilization);
                    if s > 0 {
                        total += s * w;
                        weights += w;
                    }
                }
                if weights == 0 {
                    0
                } else {
                    (total as f64 / weights as f64).round() as i64
                }
            }
            Strategy::Balanced => {
                let fractions = pairs
                    .filter(|(_, alloc, _)| *alloc != 0)
                    .map(|(req, alloc, _)| (req as f64 / alloc as f64).min(1.0));
                let (mut n, mut first, mut sum) = (0usize, [0.0f64; 2], 0.0f64);
                for f in fractions.clone() {
                    if n < 2 {
                        first[n] = f;
                    }
                    n += 1;
                    sum += f;
                }
                let std = match n {
                    2 => ((first[0] - first[1]) / 2.0).abs(),
                    n if n > 2 => {
                        let mean = sum / n as f64;
                        (fractions.map(|f| (f - mean).powi(2)).sum::<f64>() / n as f64).sqrt()
                    }
                    _ => 0.0,
                };
                ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
            }
        }
    }
}

/// NodeResourcesFit.
pub struct Fit {
    ignored: HashSet<String>,
    ignored_groups: HashSet<String>,
    scorer: Scorer,
}

/// Fit's factory.
pub fn new_fit(args: Option<&Value>, _handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    let args: FitArgs = decode_args(args)?;
    let strategy = args.scoring_strategy.unwrap_or_default();
    let resources = resource_specs(strategy.resources)?;
    let strategy = match strategy.kind.as_deref().unwrap_or("LeastAllocated") {
        "LeastAllocated" => Strategy::LeastAllocated,
        "MostAllocated" => Strategy::MostAllocated,
        "RequestedToCapacityRatio" => {
            let shape = strategy
                .requested_to_capacity_ratio
                .map(|r| r.shape)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(empty_scores_highest);
            for (i, p) in shape.iter().enumerate() {
                if !(0..=100).contains(&p.utilization) {
                    return Err(format!(
                        "scoringStrategy.shape[{i}].utilization: Invalid value: {}: not in valid range [0, 100]",
                        p.utilization
                    ));
                }
                if !(0..=10).contains(&p.score) {
                    return Err(format!(
                        "scoringStrategy.shape[{i}].score: Invalid value: {}: not in valid range [0, 10]",
                        p.score
                    ));
                }
                if i > 0 && p.utilization <= shape[i - 1].utilization {
                    return Err(format!(
                        "scoringStrategy.shape[{i}].utilization: Invalid value: {}: utilization values must be sorted in increasing order",
                        p.utilization
                    ));
                }
            }
            Strategy::Ratio(
                shape
                    .into_iter()
                    .map(|p| ShapePoint {
                        utilization: p.utilization,
                        score: p.score * (MAX_NODE_SCORE / 10),
                    })
                    .collect(),
            )
        }
        other => {
            return Err(format!(
                "scoringStrategy.type: Unsupported value: {other:?}: supported values: \"LeastAllocated\", \"MostAllocated\", \"RequestedToCapacityRatio\""
            ));
        }
    };
    Ok(Arc::new(Fit {
        ignored: args.ignored_resources.into_iter().collect(),
        ignored_groups: args.ignored_resource_groups.into_iter().collect(),
        scorer: Scorer {
            resources,
            strategy,
            use_requested: false,
        },
    }))
}

/// Resources freed or added that may let a rejected pod fit.
fn fit_events() -> Vec<ClusterEvent> {
    vec![
        ClusterEvent::new(
            EventResource::Pod,
            ActionType::DELETE | ActionType::UPDATE_POD_SCALE_DOWN,
            "AssignedPodDeleteOrScaleDown",
        ),
        ClusterEvent::new(
            EventResource::Node,
            ActionType::ADD
                | ActionType::UPDATE_NODE_ALLOCATABLE
                | ActionType::UPDATE_NODE_TAINT
                | ActionType::UPDATE_NODE_LABEL,
            "NodeAddOrAllocatableChange",
        ),
    ]
}

impl Plugin for Fit {
    fn name(&self) -> &'static str {
        FIT
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        fit_events()
    }
    fn queueing_hint(
        &self,
        event: &ClusterEvent,
        pod: &PodInfo,
        _old: &EventObject<'_>,
        new: &EventObject<'_>,
    ) -> bool {
        // A new or grown node helps only if the pod would fit on it when empty.
        if event.resource == EventResource::Node
            && let EventObject::Node(n) = new
        {
            let info = NodeInfo::new(Arc::new((*n).clone()));
            return self.insufficient(pod, &info).is_empty();
        }
        true
    }
    extension_points!(
        as_pre_filter => PreFilterPlugin,
        as_filter => FilterPlugin,
        as_pre_score => PreScorePlugin,
        as_score => ScorePlugin,
    );
}

impl Fit {
    /// (reason, unresolvable) for every resource the node lacks.
    fn insufficient(&self, pod: &PodInfo, node: &NodeInfo) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let alloc = &node.allocatable;
        if node.pods.len() as i64 + 1 > alloc.allowed_pod_number {
            out.push(("Too many pods".to_owned(), false));
        }
        let req: &Resource = &pod.requests;
        if req.is_zero() {
            return out;
        }
        let used = &node.requested;
        for (name, want, have, taken) in [
            (
                resources::CPU,
                req.milli_cpu,
                alloc.milli_cpu,
                used.milli_cpu,
            ),
            (resources::MEMORY, req.memory, alloc.memory, used.memory),
            (
                resources::EPHEMERAL_STORAGE,
                req.ephemeral_storage,
                alloc.ephemeral_storage,
                used.ephemeral_storage,
            ),
        ] {
            if want > 0 && want > have - taken {
                out.push((format!("Insufficient {name}"), want > have));
            }
        }
        for (name, want) in &req.scalar {
            if *want == 0 {
                continue;
            }
            if is_extended(name) {
                let group = name.split('/').next().unwrap_or("");
                if self.ignored.contains(name) || self.ignored_groups.contains(group) {
                    continue;
                }
            }
            let have = alloc.scalar.get(name).copied().unwrap_or(0);
            if *want > have - used.get(name) {
                out.push((format!("Insufficient {name}"), *want > have));
            }
        }
        out
    }
}

impl PreFilterPlugin for Fit {
    fn pre_filter(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (Status, PreFilterResult) {
        // Requests are computed once per pod in PodInfo.
        (Status::success(), None)
    }
}

impl FilterPlugin for Fit {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let missing = self.insufficient(pod, node);
        if missing.is_empty() {
            return Status::success();
        }
        let code = if missing.iter().any(|(_, u)| *u) {
            crate::framework::Code::UnschedulableAndUnresolvable
        } else {
            crate::framework::Code::Unschedulable
        };
        Status::new(code, missing.into_iter().map(|(r, _)| r).collect())
    }
}

impl PreScorePlugin for Fit {
    fn pre_score(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        _snapshot: &Snapshot,
    ) -> Status {
        Status::success()
    }
}

impl ScorePlugin for Fit {
    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        Ok(self.scorer.score(pod, node))
    }
}

/// NodeResourcesBalancedAllocation.
pub struct Balanced {
    scorer: Scorer,
}

/// BalancedAllocation's factory.
pub fn new_balanced(args: Option<&Value>, _handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    let args: BalancedArgs = decode_args(args)?;
    Ok(Arc::new(Balanced {
        scorer: Scorer {
            resources: resource_specs(args.resources)?,
            strategy: Strategy::Balanced,
            use_requested: true,
        },
    }))
}

impl Plugin for Balanced {
    fn name(&self) -> &'static str {
        BALANCED
    }
    extension_points!(as_pre_score => PreScorePlugin, as_score => ScorePlugin);
}

impl PreScorePlugin for Balanced {
    fn pre_score(
        &self,
        _state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        _snapshot: &Snapshot,
    ) -> Status {
        // Best-effort pods change no fraction.
        if self
            .scorer
            .resources
            .iter()
            .all(|(name, _)| pod.requests.get(name) == 0)
        {
            Status::skip()
        } else {
            Status::success()
        }
    }
}

impl ScorePlugin for Balanced {
    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        Ok(self.scorer.score(pod, node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    fn fit(args: Value) -> Arc<dyn Plugin> {
        new_fit(Some(&args), &Handle::for_tests()).unwrap()
    }

    fn filter(p: &Arc<dyn Plugin>, pod: &PodInfo, node: &NodeInfo) -> Status {
        p.as_filter().unwrap().filter(&CycleState::new(), pod, node)
    }

    fn score(p: &Arc<dyn Plugin>, pod: &PodInfo, node: &NodeInfo) -> i64 {
        p.as_score()
            .unwrap()
            .score(&CycleState::new(), pod, node)
            .unwrap()
    }

    #[test]
    fn requests_must_fit_in_what_is_left() {
        let f = fit(json!({}));
        let n = node("n")
            .alloc(&[
                ("cpu", "1"),
                ("memory", "1Gi"),
                ("pods", "2"),
                ("example.com/foo", "1"),
            ])
            .with(vec![pod("a").req(&[("cpu", "600m"), ("memory", "512Mi")])]);
        assert!(filter(&f, &pod("p").req(&[("cpu", "400m")]).info(), &n).is_success());
        let s = filter(
            &f,
            &pod("p").req(&[("cpu", "500m"), ("memory", "600Mi")]).info(),
            &n,
        );
        assert_eq!(s.code(), Code::Unschedulable);
        assert_eq!(s.reasons(), ["Insufficient cpu", "Insufficient memory"]);
        // Larger than the whole node: preemption cannot help.
        let s = filter(&f, &pod("p").req(&[("cpu", "2")]).info(), &n);
        assert_eq!(s.code(), Code::UnschedulableAndUnresolvable);
        // Extended resources.
        assert!(filter(&f, &pod("p").req(&[("example.com/foo", "1")]).info(), &n).is_success());
        assert_eq!(
            filter(&f, &pod("p").req(&[("example.com/bar", "1")]).info(), &n).message(),
            "Insufficient example.com/bar"
        );
        let ignoring = fit(json!({"ignoredResourceGroups": ["example.com"]}));
        assert!(
            filter(
                &ignoring,
                &pod("p").req(&[("example.com/bar", "1")]).info(),
                &n
            )
            .is_success()
        );
        // The pod count.
        let full = node("full")
            .alloc(&[("cpu", "4"), ("pods", "1")])
            .with(vec![pod("a")]);
        assert_eq!(
            filter(&f, &pod("p").info(), &full).message(),
            "Too many pods"
        );
    }

    #[test]
    fn init_containers_and_overhead_count() {
        let f = fit(json!({}));
        let n = node("n")
            .alloc(&[("cpu", "1"), ("memory", "1Gi"), ("pods", "10")])
            .info();
        let mut p = pod("p").req(&[("cpu", "100m")]);
        p.0.spec.as_mut().unwrap().init_containers =
            Some(vec![k8s_openapi::api::core::v1::Container {
                name: "init".into(),
                resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                    requests: Some(crate::plugins::testing::list(&[("cpu", "2")])),
                    ..Default::default()
                }),
                ..Default::default()
            }]);
        assert_eq!(filter(&f, &p.info(), &n).message(), "Insufficient cpu");
        let mut p = pod("p").req(&[("cpu", "900m")]);
        p.0.spec.as_mut().unwrap().overhead =
            Some(crate::plugins::testing::list(&[("cpu", "200m")]));
        assert_eq!(filter(&f, &p.info(), &n).message(), "Insufficient cpu");
    }

    #[test]
    fn least_and_most_allocated_follow_upstreams_formulas() {
        // Upstream docs example: node cpu 4000m mem 10000; pod 3000m/5000 on a node already
        // requesting 0: least = ((4000-3000)*100/4000 + (10000-5000)*100/10000)/2 = (25+50)/2.
        let n = node("n")
            .alloc(&[("cpu", "4"), ("memory", "10000"), ("pods", "10")])
            .info();
        let p = pod("p").req(&[("cpu", "3"), ("memory", "5000")]).info();
        assert_eq!(score(&fit(json!({})), &p, &n), 37);
        let most = fit(json!({"scoringStrategy": {"type": "MostAllocated"}}));
        assert_eq!(score(&most, &p, &n), (75 + 50) / 2);
        let weighted = fit(
            json!({"scoringStrategy": {"type": "MostAllocated", "resources": [{"name": "cpu", "weight": 3}, {"name": "memory", "weight": 1}]}}),
        );
        assert_eq!(score(&weighted, &p, &n), (75 * 3 + 50) / 4);
        assert!(
            new_fit(
                Some(&json!({"scoringStrategy": {"type": "Bogus"}})),
                &Handle::for_tests()
            )
            .is_err()
        );
    }

    #[test]
    fn requested_to_capacity_ratio_uses_the_shape() {
        // Bin packing shape from the docs: utilization 0 → score 0, 100 → score 10.
        let f = fit(json!({"scoringStrategy": {
            "type": "RequestedToCapacityRatio",
            "resources": [{"name": "cpu", "weight": 1}],
            "requestedToCapacityRatio": {"shape": [{"utilization": 0, "score": 0}, {"utilization": 100, "score": 10}]}
        }}));
        let n = node("n")
            .alloc(&[("cpu", "4"), ("memory", "8Gi"), ("pods", "10")])
            .info();
        assert_eq!(score(&f, &pod("p").req(&[("cpu", "1")]).info(), &n), 25);
        assert_eq!(score(&f, &pod("p").req(&[("cpu", "3")]).info(), &n), 75);
        assert_eq!(
            broken_linear(
                &[ShapePoint {
                    utilization: 50,
                    score: 20
                }],
                10
            ),
            20
        );
    }

    #[test]
    fn best_effort_pods_score_with_default_requests() {
        let n = node("n")
            .alloc(&[("cpu", "1"), ("memory", "2000Mi"), ("pods", "10")])
            .info();
        // 100m of 1000m and 200Mi of 2000Mi: (90 + 90) / 2.
        assert_eq!(score(&fit(json!({})), &pod("p").info(), &n), 90);
    }

    #[test]
    fn balanced_allocation_prefers_even_fractions() {
        let b = new_balanced(None, &Handle::for_tests()).unwrap();
        let n = node("n")
            .alloc(&[("cpu", "4"), ("memory", "4Gi"), ("pods", "10")])
            .info();
        // cpu 1/4 and memory 1/4: perfectly balanced.
        assert_eq!(
            score(
                &b,
                &pod("p").req(&[("cpu", "1"), ("memory", "1Gi")]).info(),
                &n
            ),
            100
        );
        // cpu 3/4, memory 1/4: std = 0.25 → 75.
        assert_eq!(
            score(
                &b,
                &pod("p").req(&[("cpu", "3"), ("memory", "1Gi")]).info(),
                &n
            ),
            75
        );
        let mut state = CycleState::new();
        let s = b.as_pre_score().unwrap().pre_score(
            &mut state,
            &pod("p").info(),
            &[],
            &Snapshot::default(),
        );
        assert!(s.is_skip());
    }
}
