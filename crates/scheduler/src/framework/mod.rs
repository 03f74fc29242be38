//! The scheduling framework: extension-point traits ([`interface`]), outcomes ([`status`]),
//! per-cycle state ([`cycle_state`]), cluster events ([`events`]), what plugins can reach
//! ([`handle`]), and [`Framework`] — one profile's plugins, resolved from its configuration and
//! run in order at each extension point.
//!
//! Resolution follows upstream: a profile's `multiPoint` set is merged with the default plugins
//! (defaults first, a re-enabled default keeps its place, `*` disables every default), then
//! each extension point runs the plugins enabled for it explicitly followed by the `multiPoint`
//! plugins implementing it that it does not disable. Unknown names, plugins enabled at a point
//! they do not implement, bad arguments and a missing QueueSort or Bind plugin are startup
//! errors.

pub mod cycle_state;
pub mod events;
pub mod handle;
pub mod interface;
pub mod status;
pub mod waiting;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

pub use cycle_state::CycleState;
pub use events::{ActionType, ClusterEvent};
pub use handle::{Activator, Handle, Listers};
pub use interface::*;
pub use status::{Code, Status};
pub use waiting::WaitingPods;

use crate::cache::Snapshot;
use crate::config::{PluginRef, PluginSet, Profile};
use crate::nodeinfo::{NodeInfo, PodInfo};
use crate::registry::{DEFAULT_PLUGINS, Registry};

/// The highest score a plugin gives after normalization.
pub const MAX_NODE_SCORE: i64 = 100;

/// The extension points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    /// PreEnqueue.
    PreEnqueue,
    /// QueueSort.
    QueueSort,
    /// PreFilter.
    PreFilter,
    /// Filter.
    Filter,
    /// PostFilter.
    PostFilter,
    /// PreScore.
    PreScore,
    /// Score.
    Score,
    /// Reserve.
    Reserve,
    /// Permit.
    Permit,
    /// PreBind.
    PreBind,
    /// Bind.
    Bind,
}

impl Point {
    const ALL: [Point; 11] = [
        Point::PreEnqueue,
        Point::QueueSort,
        Point::PreFilter,
        Point::Filter,
        Point::PostFilter,
        Point::PreScore,
        Point::Score,
        Point::Reserve,
        Point::Permit,
        Point::PreBind,
        Point::Bind,
    ];

    fn field(self) -> &'static str {
        match self {
            Point::PreEnqueue => "preEnqueue",
            Point::QueueSort => "queueSort",
            Point::PreFilter => "preFilter",
            Point::Filter => "filter",
            Point::PostFilter => "postFilter",
            Point::PreScore => "preScore",
            Point::Score => "score",
            Point::Reserve => "reserve",
            Point::Permit => "permit",
            Point::PreBind => "preBind",
            Point::Bind => "bind",
        }
    }

    fn implemented_by(self, p: &dyn Plugin) -> bool {
        match self {
            Point::PreEnqueue => p.as_pre_enqueue().is_some(),
            Point::QueueSort => p.as_queue_sort().is_some(),
            Point::PreFilter => p.as_pre_filter().is_some(),
            Point::Filter => p.as_filter().is_some(),
            Point::PostFilter => p.as_post_filter().is_some(),
            Point::PreScore => p.as_pre_score().is_some(),
            Point::Score => p.as_score().is_some(),
            Point::Reserve => p.as_reserve().is_some(),
            Point::Permit => p.as_permit().is_some(),
            Point::PreBind => p.as_pre_bind().is_some(),
            Point::Bind => p.as_bind().is_some(),
        }
    }

    fn set(self, plugins: &crate::config::Plugins) -> &PluginSet {
        match self {
            Point::PreEnqueue => &plugins.pre_enqueue,
            Point::QueueSort => &plugins.queue_sort,
            Point::PreFilter => &plugins.pre_filter,
            Point::Filter => &plugins.filter,
            Point::PostFilter => &plugins.post_filter,
            Point::PreScore => &plugins.pre_score,
            Point::Score => &plugins.score,
            Point::Reserve => &plugins.reserve,
            Point::Permit => &plugins.permit,
            Point::PreBind => &plugins.pre_bind,
            Point::Bind => &plugins.bind,
        }
    }
}

/// Upstream `mergePluginSet`: defaults not disabled (a re-enabled default replaced in place by
/// the custom entry), then the other custom plugins.
pub fn merge_plugin_set(defaults: &[PluginRef], custom: &PluginSet) -> Vec<PluginRef> {
    let disabled: HashSet<&str> = custom.disabled.iter().map(|p| p.name.as_str()).collect();
    let all_disabled = disabled.contains("*");
    let mut used = HashSet::new();
    let mut out = Vec::new();
    for d in defaults {
        if all_disabled || disabled.contains(d.name.as_str()) {
            continue;
        }
        match custom.enabled.iter().position(|e| e.name == d.name) {
            Some(i) => {
                used.insert(i);
                out.push(custom.enabled[i].clone());
            }
            None => out.push(d.clone()),
        }
    }
    for (i, e) in custom.enabled.iter().enumerate() {
        if !used.contains(&i) {
            out.push(e.clone());
        }
    }
    out
}

/// One profile's plugins, in the order they run at each extension point.
pub struct Framework {
    /// The profile's scheduler name.
    pub scheduler_name: String,
    /// The profile's `percentageOfNodesToScore` override.
    pub percentage_of_nodes_to_score: Option<i32>,
    /// What plugins can reach.
    pub handle: Handle,
    plugins: HashMap<&'static str, Arc<dyn Plugin>>,
    points: HashMap<Point, Vec<Arc<dyn Plugin>>>,
    weights: HashMap<&'static str, i64>,
}

/// A cycle's Filter plugins in order ([`Framework::filters`]).
pub struct Filters<'a>(Vec<(&'static str, &'a dyn FilterPlugin)>);

impl Filters<'_> {
    /// Filter on one node: the first plugin that does not return Success decides.
    pub fn run(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for (name, f) in &self.0 {
            let s = f.filter(state, pod, node);
            if !s.is_success() {
                return s.with_plugin(name);
            }
        }
        Status::success()
    }
}

impl std::fmt::Debug for Framework {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framework")
            .field("scheduler_name", &self.scheduler_name)
            .field("plugins", &self.plugin_names())
            .finish()
    }
}

impl Framework {
    /// Resolve a profile against the registry; every problem is reported.
    pub fn new(
        profile: &Profile,
        registry: &Registry,
        handle: Handle,
    ) -> Result<Framework, Vec<String>> {
        let field = format!("profiles[{}]", profile.name());
        let mut problems = Vec::new();
        let plugins_cfg = profile.plugins.clone().unwrap_or_default();
        let defaults: Vec<PluginRef> = DEFAULT_PLUGINS
            .iter()
            .map(|(name, weight)| PluginRef {
                name: (*name).to_owned(),
                weight: (*weight > 0).then_some(*weight),
            })
            .collect();
        let multi = merge_plugin_set(&defaults, &plugins_cfg.multi_point);

        // Instantiate every named plugin once.
        let mut wanted: Vec<&str> = multi.iter().map(|p| p.name.as_str()).collect();
        for point in Point::ALL {
            wanted.extend(
                point
                    .set(&plugins_cfg)
                    .enabled
                    .iter()
                    .map(|p| p.name.as_str()),
            );
        }
        let mut plugins: HashMap<&'static str, Arc<dyn Plugin>> = HashMap::new();
        let mut by_config_name: HashMap<String, Arc<dyn Plugin>> = HashMap::new();
        for name in wanted {
            if by_config_name.contains_key(name) {
                continue;
            }
            let Some(factory) = registry.get(name) else {
                problems.push(format!("{field}: plugin {name:?} is not registered"));
                continue;
            };
            match factory(profile.args(name), &handle) {
                Ok(p) => {
                    plugins.insert(p.name(), p.clone());
                    by_config_name.insert(name.to_owned(), p);
                }
                Err(e) => problems.push(format!("{field}.pluginConfig[{name}]: {e}")),
            }
        }
        for c in &profile.plugin_config {
            if registry.get(&c.name).is_none() {
                problems.push(format!(
                    "{field}.pluginConfig: plugin {:?} is not registered",
                    c.name
                ));
            }
        }

        let mut points: HashMap<Point, Vec<Arc<dyn Plugin>>> = HashMap::new();
        for point in Point::ALL {
            let set = point.set(&plugins_cfg);
            let disabled: HashSet<&str> = set.disabled.iter().map(|p| p.name.as_str()).collect();
            let mut list: Vec<Arc<dyn Plugin>> = Vec::new();
            let mut seen = HashSet::new();
            for e in &set.enabled {
                let Some(p) = by_config_name.get(&e.name) else {
                    continue;
                };
                if !point.implemented_by(p.as_ref()) {
                    problems.push(format!(
                        "{field}.plugins.{}: plugin {:?} does not extend {}",
                        point.field(),
                        e.name,
                        point.field()
                    ));
                    continue;
                }
                if seen.insert(e.name.clone()) {
                    list.push(p.clone());
                }
            }
            for m in &multi {
                let Some(p) = by_config_name.get(&m.name) else {
                    continue;
                };
                if disabled.contains("*") || disabled.contains(m.name.as_str()) {
                    continue;
                }
                if point.implemented_by(p.as_ref()) && seen.insert(m.name.clone()) {
                    list.push(p.clone());
                }
            }
            points.insert(point, list);
        }

        let mut weights = HashMap::new();
        for p in points.get(&Point::Score).into_iter().flatten() {
            let name = p.name();
            let explicit = plugins_cfg
                .score
                .enabled
                .iter()
                .find(|e| e.name == name)
                .and_then(|e| e.weight);
            let multi_weight = multi.iter().find(|e| e.name == name).and_then(|e| e.weight);
            let default = DEFAULT_PLUGINS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, w)| *w)
                .filter(|w| *w > 0);
            let weight = explicit
                .filter(|w| *w != 0)
                .or(multi_weight.filter(|w| *w != 0))
                .or(default)
                .unwrap_or(1);
            if weight < 0 {
                problems.push(format!(
                    "{field}.plugins.score: plugin {name:?} weight {weight} must not be negative"
                ));
            }
            weights.insert(name, i64::from(weight));
        }
        let queue_sorts = points.get(&Point::QueueSort).map_or(0, Vec::len);
        if queue_sorts != 1 {
            problems.push(format!(
                "{field}.plugins.queueSort: exactly one queue sort plugin must be enabled, found {queue_sorts}"
            ));
        }
        if points.get(&Point::Bind).is_none_or(Vec::is_empty) {
            problems.push(format!(
                "{field}.plugins.bind: at least one bind plugin must be enabled"
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Framework {
            scheduler_name: profile.name().to_owned(),
            percentage_of_nodes_to_score: profile.percentage_of_nodes_to_score,
            handle,
            plugins,
            points,
            weights,
        })
    }

    fn at(&self, point: Point) -> &[Arc<dyn Plugin>] {
        self.points.get(&point).map_or(&[], Vec::as_slice)
    }

    /// The names of the plugins at an extension point, in order.
    pub fn names_at(&self, point: Point) -> Vec<&'static str> {
        self.at(point).iter().map(|p| p.name()).collect()
    }

    /// Every plugin's name.
    pub fn plugin_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.plugins.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// A plugin by name.
    pub fn plugin(&self, name: &str) -> Option<Arc<dyn Plugin>> {
        self.plugins.get(name).cloned()
    }

    /// A score plugin's weight.
    pub fn weight(&self, plugin: &str) -> Option<i64> {
        self.weights.get(plugin).copied()
    }

    /// The profile's queue sort plugin.
    pub fn queue_sort(&self) -> Arc<dyn Plugin> {
        self.at(Point::QueueSort)[0].clone()
    }

    /// The cluster events each plugin registered, by plugin name.
    pub fn events_to_register(&self) -> Vec<(&'static str, ClusterEvent)> {
        let mut out = Vec::new();
        for p in self.plugins.values() {
            for e in p.events_to_register() {
                out.push((p.name(), e));
            }
        }
        out
    }

    /// PreEnqueue: the first plugin that does not return Success.
    pub fn run_pre_enqueue(&self, pod: &PodInfo) -> Status {
        for p in self.at(Point::PreEnqueue) {
            if let Some(pe) = p.as_pre_enqueue() {
                let s = pe.pre_enqueue(pod);
                if !s.is_success() {
                    return s.with_plugin(p.name());
                }
            }
        }
        Status::success()
    }

    /// PreFilter: stops at the first rejection; intersects the plugins' node sets; plugins
    /// returning Skip are recorded so their Filter is not run.
    pub fn run_pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (Status, PreFilterResult) {
        let (s, r, _) = self.run_pre_filter_narrowing(state, pod, snapshot);
        (s, r)
    }

    /// [`Framework::run_pre_filter`], also naming the plugins that narrowed the node set.
    pub fn run_pre_filter_narrowing(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (Status, PreFilterResult, Vec<&'static str>) {
        let mut result: PreFilterResult = None;
        let mut narrowed_by = Vec::new();
        for p in self.at(Point::PreFilter) {
            let Some(pf) = p.as_pre_filter() else {
                continue;
            };
            let (status, nodes) = pf.pre_filter(state, pod, snapshot);
            if status.is_skip() {
                state.skip_filter.insert(p.name());
                continue;
            }
            if !status.is_success() {
                return (status.with_plugin(p.name()), None, narrowed_by);
            }
            if let Some(nodes) = nodes {
                narrowed_by.push(p.name());
                result = Some(match result {
                    None => nodes,
                    Some(prev) => prev.intersection(&nodes).cloned().collect(),
                });
                if result.as_ref().is_some_and(HashSet::is_empty) {
                    let message = if narrowed_by.len() > 1 {
                        format!(
                            "node(s) didn't satisfy plugin(s) [{}] simultaneously",
                            narrowed_by.join(" ")
                        )
                    } else {
                        format!("node(s) didn't satisfy plugin {}", p.name())
                    };
                    return (
                        Status::unresolvable(message).with_plugin(p.name()),
                        result,
                        narrowed_by,
                    );
                }
            }
        }
        (Status::success(), result, narrowed_by)
    }

    /// PreFilter extensions: account for `added` on `node` in every plugin's state.
    pub fn run_pre_filter_add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        added: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        for p in self.at(Point::PreFilter) {
            if state.skip_filter.contains(p.name()) {
                continue;
            }
            if let Some(pf) = p.as_pre_filter().filter(|pf| pf.has_extensions()) {
                let s = pf.add_pod(state, pod, added, node);
                if !s.is_success() {
                    return s.with_plugin(p.name());
                }
            }
        }
        Status::success()
    }

    /// PreFilter extensions: forget `removed` on `node` in every plugin's state.
    pub fn run_pre_filter_remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        for p in self.at(Point::PreFilter) {
            if state.skip_filter.contains(p.name()) {
                continue;
            }
            if let Some(pf) = p.as_pre_filter().filter(|pf| pf.has_extensions()) {
                let s = pf.remove_pod(state, pod, removed, node);
                if !s.is_success() {
                    return s.with_plugin(p.name());
                }
            }
        }
        Status::success()
    }

    /// Filter on one node: the first plugin that does not return Success decides. (A cycle
    /// filtering many nodes resolves the plugins once with [`Framework::filters`].)
    pub fn run_filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for p in self.at(Point::Filter) {
            if state.skip_filter.contains(p.name()) {
                continue;
            }
            let Some(f) = p.as_filter() else { continue };
            let s = f.filter(state, pod, node);
            if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// The Filter plugins to run this cycle (those whose PreFilter did not Skip), resolved
    /// once for all the nodes the cycle filters.
    pub fn filters(&self, state: &CycleState) -> Filters<'_> {
        Filters(
            self.at(Point::Filter)
                .iter()
                .filter(|p| !state.skip_filter.contains(p.name()))
                .filter_map(|p| p.as_filter().map(|f| (p.name(), f)))
                .collect(),
        )
    }

    /// Filter with the pods nominated to the node (of equal or higher priority) counted as if
    /// running there: the pod must fit both with and without them (upstream
    /// `RunFilterPluginsWithNominatedPods`).
    pub fn run_filter_with_nominated(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        nominated: &[Arc<PodInfo>],
    ) -> Status {
        let relevant: Vec<&Arc<PodInfo>> = nominated
            .iter()
            .filter(|n| n.key != pod.key && n.priority >= pod.priority)
            .collect();
        if relevant.is_empty() {
            return self.run_filter(state, pod, node);
        }
        let mut with_state = state.clone();
        let mut with_node = node.clone();
        for n in &relevant {
            with_node.add_pod((*n).clone());
            let s = self.run_pre_filter_add_pod(&mut with_state, pod, n, &with_node);
            if !s.is_success() {
                return s;
            }
        }
        let s = self.run_filter(&with_state, pod, &with_node);
        if !s.is_success() {
            return s;
        }
        self.run_filter(state, pod, node)
    }

    /// Whether any PostFilter plugin is configured.
    pub fn has_post_filter(&self) -> bool {
        !self.at(Point::PostFilter).is_empty()
    }

    /// PostFilter: plugins run until one makes the pod schedulable (or errors).
    pub async fn run_post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        statuses: &NodeToStatus,
    ) -> (Status, Option<PostFilterResult>) {
        let mut last: Option<(Status, Option<PostFilterResult>)> = None;
        let mut reasons = Vec::new();
        for p in self.at(Point::PostFilter) {
            let Some(pf) = p.as_post_filter() else {
                continue;
            };
            let ctx = PostFilterContext {
                state,
                pod,
                snapshot,
                statuses,
                framework: self,
            };
            let (status, result) = pf.post_filter(ctx).await;
            if status.is_success() || status.is_error() {
                return (status.with_plugin(p.name()), result);
            }
            reasons.extend(status.reasons().iter().cloned());
            last = Some((status.with_plugin(p.name()), result));
        }
        match last {
            Some((s, r)) => (Status::new(s.code(), reasons).with_plugin(s.plugin()), r),
            None => (Status::unschedulable("no PostFilter plugins"), None),
        }
    }

    /// PreScore over the feasible nodes.
    pub fn run_pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        for p in self.at(Point::PreScore) {
            let Some(ps) = p.as_pre_score() else { continue };
            let s = ps.pre_score(state, pod, nodes, snapshot);
            if s.is_skip() {
                state.skip_score.insert(p.name());
                continue;
            }
            if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// Score and normalize each plugin's scores, weight them, and sum per node.
    pub fn run_score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
    ) -> Result<Vec<i64>, Status> {
        let mut totals = vec![0i64; nodes.len()];
        let mut scores = vec![0i64; nodes.len()];
        for p in self.at(Point::Score) {
            if state.skip_score.contains(p.name()) {
                continue;
            }
            let Some(sp) = p.as_score() else { continue };
            for (i, node) in nodes.iter().enumerate() {
                scores[i] = sp
                    .score(state, pod, node)
                    .map_err(|s| s.with_plugin(p.name()))?;
            }
            let s = sp.normalize(state, pod, nodes, &mut scores);
            if !s.is_success() {
                return Err(s.with_plugin(p.name()));
            }
            let weight = self.weights.get(p.name()).copied().unwrap_or(1);
            for (i, score) in scores.iter().enumerate() {
                if !(0..=MAX_NODE_SCORE).contains(score) {
                    return Err(Status::error(format!(
                        "plugin {:?} returns an invalid score {score}, it should in the range of [0, {MAX_NODE_SCORE}] after normalizing",
                        p.name()
                    ))
                    .with_plugin(p.name()));
                }
                totals[i] += score * weight;
            }
        }
        Ok(totals)
    }

    /// Reserve, unreserving everything on failure.
    pub fn run_reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status {
        for p in self.at(Point::Reserve) {
            let Some(r) = p.as_reserve() else { continue };
            let s = r.reserve(state, pod, node);
            if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// Unreserve in reverse order.
    pub fn run_unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) {
        for p in self.at(Point::Reserve).iter().rev() {
            if let Some(r) = p.as_reserve() {
                r.unreserve(state, pod, node);
            }
        }
    }

    /// Permit: a rejection ends it; Wait answers return the longest timeout.
    pub fn run_permit(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        node: &str,
    ) -> (Status, Duration) {
        let mut wait = None;
        for p in self.at(Point::Permit) {
            let Some(pm) = p.as_permit() else { continue };
            let (s, timeout) = pm.permit(state, pod, node);
            match s.code() {
                Code::Success => {}
                Code::Wait => {
                    wait = Some(wait.map_or(timeout, |w: Duration| w.max(timeout)));
                }
                _ => return (s.with_plugin(p.name()), Duration::ZERO),
            }
        }
        match wait {
            Some(t) => (Status::wait(), t),
            None => (Status::success(), Duration::ZERO),
        }
    }

    /// PreBind.
    pub async fn run_pre_bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status {
        for p in self.at(Point::PreBind) {
            let Some(pb) = p.as_pre_bind() else { continue };
            let s = pb.pre_bind(state, pod, node).await;
            if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// Bind: the first plugin that does not Skip binds.
    pub async fn run_bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status {
        for p in self.at(Point::Bind) {
            let Some(b) = p.as_bind() else { continue };
            let s = b.bind(state, pod, node).await;
            if s.is_skip() {
                continue;
            }
            return s.with_plugin(p.name());
        }
        Status::error("no bind plugin bound the pod")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SchedulerConfiguration;

    fn framework(yaml: &str) -> Result<Framework, Vec<String>> {
        let config = SchedulerConfiguration::parse(yaml).unwrap();
        Framework::new(
            &config.profiles()[0],
            &Registry::in_tree(),
            Handle::for_tests(),
        )
    }

    #[test]
    fn the_default_profile_has_upstreams_plugins_and_weights() {
        let f = framework("{}").unwrap();
        assert_eq!(
            f.names_at(Point::Filter),
            [
                "NodeUnschedulable",
                "NodeName",
                "TaintToleration",
                "NodeAffinity",
                "NodePorts",
                "NodeResourcesFit",
                "VolumeRestrictions",
                "VolumeBinding",
                "VolumeZone",
                "PodTopologySpread",
                "InterPodAffinity",
            ]
        );
        assert_eq!(
            f.names_at(Point::Score),
            [
                "TaintToleration",
                "NodeAffinity",
                "NodeResourcesFit",
                "VolumeBinding",
                "PodTopologySpread",
                "InterPodAffinity",
                "NodeResourcesBalancedAllocation",
                "ImageLocality",
            ]
        );
        assert_eq!(f.weight("TaintToleration"), Some(3));
        assert_eq!(f.weight("NodeAffinity"), Some(2));
        assert_eq!(f.weight("PodTopologySpread"), Some(2));
        assert_eq!(f.weight("InterPodAffinity"), Some(2));
        assert_eq!(f.weight("NodeResourcesFit"), Some(1));
        assert_eq!(f.weight("VolumeBinding"), Some(1));
        assert_eq!(f.names_at(Point::QueueSort), ["PrioritySort"]);
        assert_eq!(
            f.names_at(Point::PreEnqueue),
            ["SchedulingGates", "DefaultPreemption"]
        );
        assert_eq!(f.names_at(Point::PostFilter), ["DefaultPreemption"]);
        assert_eq!(f.names_at(Point::Bind), ["DefaultBinder"]);
    }

    #[test]
    fn specific_points_disable_and_reweight_multi_point_plugins() {
        let f = framework(
            r#"
profiles:
- plugins:
    score:
      disabled: [{name: ImageLocality}]
      enabled: [{name: NodeResourcesBalancedAllocation, weight: 7}]
    filter:
      disabled: [{name: "*"}]
      enabled: [{name: NodeResourcesFit}]
"#,
        )
        .unwrap();
        assert_eq!(f.names_at(Point::Filter), ["NodeResourcesFit"]);
        let score = f.names_at(Point::Score);
        assert_eq!(score[0], "NodeResourcesBalancedAllocation");
        assert!(!score.contains(&"ImageLocality"));
        assert_eq!(f.weight("NodeResourcesBalancedAllocation"), Some(7));
    }

    #[test]
    fn multi_point_star_disables_every_default() {
        let err = framework(
            r#"
profiles:
- plugins:
    multiPoint:
      disabled: [{name: "*"}]
      enabled: [{name: NodeResourcesFit}]
"#,
        )
        .unwrap_err();
        assert!(err.iter().any(|e| e.contains("queueSort")), "{err:?}");
        assert!(err.iter().any(|e| e.contains("bind")), "{err:?}");
    }

    #[test]
    fn unknown_plugins_and_wrong_points_are_startup_errors() {
        let err = framework(
            r#"
profiles:
- plugins:
    filter:
      enabled: [{name: NoSuchPlugin}, {name: ImageLocality}]
  pluginConfig:
  - name: AlsoMissing
    args: {}
"#,
        )
        .unwrap_err();
        assert_eq!(err.len(), 3, "{err:?}");
        assert!(err[0].contains("NoSuchPlugin"));
        assert!(
            err.iter()
                .any(|e| e.contains("ImageLocality") && e.contains("does not extend filter"))
        );
    }

    #[test]
    fn merging_keeps_the_defaults_position() {
        let defaults = vec![
            PluginRef {
                name: "A".into(),
                weight: Some(1),
            },
            PluginRef {
                name: "B".into(),
                weight: Some(2),
            },
        ];
        let custom = PluginSet {
            enabled: vec![
                PluginRef {
                    name: "C".into(),
                    weight: None,
                },
                PluginRef {
                    name: "A".into(),
                    weight: Some(9),
                },
            ],
            disabled: vec![PluginRef {
                name: "B".into(),
                weight: None,
            }],
        };
        let merged = merge_plugin_set(&defaults, &custom);
        let names: Vec<_> = merged.iter().map(|p| (p.name.as_str(), p.weight)).collect();
        assert_eq!(names, [("A", Some(9)), ("C", None)]);
    }
}
