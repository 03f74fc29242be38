//! The scheduling loop (upstream `scheduleOne`): pop a pod, find the nodes that fit
//! (PreFilter, Filter over a sample of nodes starting where the last cycle stopped), rank them
//! (PreScore, Score, weights), assume the pod onto the best node in the cache, Reserve and
//! Permit — then bind in the background (PreBind, Bind) while the next pod is scheduled. A pod
//! that fits nowhere goes through PostFilter (preemption) and is reported with a
//! `FailedScheduling` event and a `PodScheduled=False` condition carrying upstream's message.
//!
//! [`find_nodes_that_fit`] and [`prioritize`] do no IO: they are tested directly.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use skiff_runtime::events::{EventType, Recorder, reference};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::cache::{Cache, Snapshot};
use crate::diagnosis::{Diagnosis, FitError};
use crate::framework::{Code, CycleState, Framework, Listers, Status};
use crate::metrics::{AttemptResult, Metrics};
use crate::nodeinfo::{NodeInfo, PodInfo, pod_name};
use crate::queue::{QueuedPodInfo, SchedulingQueue};

/// Below this many nodes every node is evaluated.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never goes below this.
pub const MIN_FEASIBLE_NODES_PERCENTAGE: i64 = 5;
/// Pods bound concurrently at most (the scheduling loop waits beyond that).
pub const MAX_BINDS_IN_FLIGHT: usize = 256;

/// How many feasible nodes to look for before scoring (upstream `numFeasibleNodesToFind`):
/// all below 100 nodes; else the percentage (adaptive `50 − nodes/125`, at least 5%, when 0),
/// at least 100.
pub fn num_feasible_nodes_to_find(percentage: i32, nodes: usize) -> usize {
    if nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return nodes;
    }
    let mut pct = i64::from(percentage);
    if pct <= 0 {
        pct = (50 - nodes as i64 / 125).max(MIN_FEASIBLE_NODES_PERCENTAGE);
    }
    let n = (nodes as i64 * pct.min(100) / 100) as usize;
    n.max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Why a cycle did not produce a node.
#[derive(Debug, Clone)]
pub enum Failure {
    /// No node fits.
    Fit(Box<FitError>),
    /// Something else (an internal error, or a plugin rejection after Filter).
    Status(Status),
}

impl Failure {
    /// The message users see.
    pub fn message(&self) -> String {
        match self {
            Failure::Fit(f) => f.message(),
            Failure::Status(s) => s.message(),
        }
    }

    fn is_error(&self) -> bool {
        matches!(self, Failure::Status(s) if s.is_error())
    }
}

/// The outcome of Filter.
pub struct Feasible {
    /// Nodes that fit.
    pub nodes: Vec<Arc<NodeInfo>>,
    /// Why the others did not.
    pub diagnosis: Diagnosis,
    /// How many nodes were evaluated.
    pub evaluated: usize,
}

/// PreFilter and Filter over the snapshot, starting at `*next_start` (advanced past the nodes
/// evaluated), stopping once enough feasible nodes are found.
pub fn find_nodes_that_fit(
    fwk: &Framework,
    state: &mut CycleState,
    pod: &PodInfo,
    snapshot: &Snapshot,
    percentage: i32,
    next_start: &mut usize,
) -> Result<Feasible, Failure> {
    let mut diagnosis = Diagnosis::default();
    let (status, narrowed, narrowed_by) = fwk.run_pre_filter_narrowing(state, pod, snapshot);
    if !status.is_success() {
        if !status.is_rejected() {
            return Err(Failure::Status(status));
        }
        for n in snapshot.nodes() {
            diagnosis
                .node_to_status
                .insert(n.name.clone(), status.clone());
        }
        diagnosis.pre_filter_msg = status.message();
        diagnosis.unschedulable_plugins.insert(status.plugin());
        return Err(Failure::Fit(Box::new(FitError {
            num_all_nodes: snapshot.len(),
            diagnosis,
        })));
    }
    // Without a PreFilter node set the snapshot's own list is walked (not copied: 5000
    // reference-count updates per cycle).
    let candidates: Cow<'_, [Arc<NodeInfo>]> = match &narrowed {
        Some(names) => {
            let mut v: Vec<Arc<NodeInfo>> = names
                .iter()
                .filter_map(|n| snapshot.get(n).cloned())
                .collect();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            let mut plugins = narrowed_by.clone();
            plugins.sort_unstable();
            diagnosis.absent = Some(Status::unresolvable(format!(
                "node(s) didn't satisfy plugin(s) [{}]",
                plugins.join(" ")
            )));
            diagnosis.unschedulable_plugins.extend(narrowed_by);
            Cow::Owned(v)
        }
        None => Cow::Borrowed(snapshot.nodes()),
    };
    let nominator = &fwk.handle.nominator;
    let check_nominated = !nominator.is_empty();
    let filters = fwk.filters(state);
    let filter = |node: &NodeInfo| {
        if check_nominated {
            let nominated = nominator.pods_for_node(&node.name);
            if nominated
                .iter()
                .any(|n| n.key != pod.key && n.priority >= pod.priority)
            {
                return fwk.run_filter_with_nominated(state, pod, node, &nominated);
            }
        }
        filters.run(state, pod, node)
    };

    // The nominated node (from an earlier preemption) is tried first.
    let nominated = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .unwrap_or("");
    if !nominated.is_empty()
        && let Some(node) = candidates.iter().find(|n| n.name == nominated)
    {
        let s = filter(node);
        if s.is_success() {
            return Ok(Feasible {
                nodes: vec![node.clone()],
                diagnosis,
                evaluated: 1,
            });
        }
        if s.is_error() {
            return Err(Failure::Status(s));
        }
    }

    let total = candidates.len();
    let wanted = num_feasible_nodes_to_find(percentage, total);
    let start = if narrowed.is_none() && total > 0 {
        *next_start % total
    } else {
        0
    };
    let mut feasible = Vec::new();
    let mut evaluated = 0;
    for i in 0..total {
        let node = &candidates[(start + i) % total];
        evaluated += 1;
        let s = filter(node);
        if s.is_success() {
            feasible.push(node.clone());
            if feasible.len() >= wanted {
                break;
            }
        } else if s.is_rejected() {
            diagnosis.unschedulable_plugins.insert(s.plugin());
            diagnosis.node_to_status.insert(node.name.clone(), s);
        } else {
            return Err(Failure::Status(s));
        }
    }
    if narrowed.is_none() && total > 0 {
        *next_start = (start + evaluated) % total;
    }
    if feasible.is_empty() {
        return Err(Failure::Fit(Box::new(FitError {
            num_all_nodes: snapshot.len(),
            diagnosis,
        })));
    }
    Ok(Feasible {
        nodes: feasible,
        diagnosis,
        evaluated,
    })
}

/// PreScore and Score; the index of the best node (ties broken at random, as upstream).
pub fn prioritize(
    fwk: &Framework,
    state: &mut CycleState,
    pod: &PodInfo,
    nodes: &[Arc<NodeInfo>],
    snapshot: &Snapshot,
) -> Result<usize, Status> {
    if nodes.len() == 1 {
        return Ok(0);
    }
    let s = fwk.run_pre_score(state, pod, nodes, snapshot);
    if !s.is_success() {
        return Err(s);
    }
    let totals = fwk.run_score(state, pod, nodes)?;
    let mut best = 0;
    let mut ties = 0u32;
    for (i, score) in totals.iter().enumerate() {
        if *score > totals[best] {
            best = i;
            ties = 1;
        } else if *score == totals[best] {
            ties += 1;
            if rand::random_range(0..ties) == 0 {
                best = i;
            }
        }
    }
    Ok(best)
}

/// What scheduling shares with its binding tasks and event handlers.
pub struct Shared {
    /// Nodes and pods.
    pub cache: Arc<Cache>,
    /// The queue.
    pub queue: Arc<SchedulingQueue>,
    /// Profiles by scheduler name.
    pub profiles: HashMap<String, Arc<Framework>>,
    /// Cached listers.
    pub listers: Arc<Listers>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// API client (`None` in tests).
    pub client: Option<kube::Client>,
    /// Event recorders by profile.
    pub recorders: HashMap<String, Recorder>,
    /// The global `percentageOfNodesToScore`.
    pub percentage_of_nodes_to_score: i32,
    binds: Arc<Semaphore>,
}

impl Shared {
    /// Shared state for these parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cache: Arc<Cache>,
        queue: Arc<SchedulingQueue>,
        profiles: HashMap<String, Arc<Framework>>,
        listers: Arc<Listers>,
        metrics: Arc<Metrics>,
        client: Option<kube::Client>,
        recorders: HashMap<String, Recorder>,
        percentage_of_nodes_to_score: i32,
    ) -> Shared {
        Shared {
            cache,
            queue,
            profiles,
            listers,
            metrics,
            client,
            recorders,
            percentage_of_nodes_to_score,
            binds: Arc::new(Semaphore::new(MAX_BINDS_IN_FLIGHT)),
        }
    }

    /// Whether a pod names a profile this scheduler runs.
    pub fn responsible_for(&self, pod: &Pod) -> bool {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or(crate::config::DEFAULT_SCHEDULER_NAME);
        self.profiles.contains_key(name)
    }

    fn profile_of(&self, pod: &Pod) -> Option<&Arc<Framework>> {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or(crate::config::DEFAULT_SCHEDULER_NAME);
        self.profiles.get(name)
    }

    fn event(&self, fwk: &Framework, pod: &Pod, kind: EventType, reason: &str, message: &str) {
        if let Some(r) = self.recorders.get(&fwk.scheduler_name) {
            r.publish(&reference(pod), kind, reason, message);
        }
    }

    /// Record a failed attempt: event, pod condition and nomination, requeue.
    fn fail(
        self: &Arc<Self>,
        fwk: &Framework,
        mut qpi: QueuedPodInfo,
        cycle: u64,
        failure: Failure,
        nominated: Option<String>,
        started: Instant,
    ) {
        let error = failure.is_error();
        let message = failure.message();
        let reason = if error {
            "SchedulerError"
        } else {
            "Unschedulable"
        };
        if let Failure::Fit(f) = &failure {
            qpi.unschedulable_plugins = f.diagnosis.unschedulable_plugins.clone();
            qpi.unschedulable_plugins.remove("");
        } else {
            qpi.unschedulable_plugins.clear();
        }
        self.metrics.attempt(
            if error {
                AttemptResult::Error
            } else {
                AttemptResult::Unschedulable
            },
            &fwk.scheduler_name,
            started.elapsed(),
        );
        let pod = qpi.pod.clone();
        // A pod deleted or bound meanwhile is not requeued.
        let current = self.listers.pods.get_named(
            pod.namespace(),
            pod.pod.metadata.name.as_deref().unwrap_or(""),
        );
        let current = match current {
            Some(p) if p.metadata.uid == pod.pod.metadata.uid => p,
            _ => {
                self.queue.done(&pod.key);
                return;
            }
        };
        if current
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
        {
            self.queue.done(&pod.key);
            return;
        }
        match nominated.as_deref() {
            Some("") => self.queue.nominator.delete(&pod.key),
            Some(node) => self.queue.nominator.add(pod.clone(), node),
            None => {}
        }
        self.queue
            .add_unschedulable_if_not_present(qpi, cycle, error);
        if error {
            tracing::warn!(pod = %pod_name(&pod.pod), error = %message, "scheduling failed");
        } else {
            tracing::debug!(pod = %pod_name(&pod.pod), %message, "pod is unschedulable");
        }
        self.event(
            fwk,
            &current,
            EventType::Warning,
            "FailedScheduling",
            &message,
        );
        self.update_condition(&current, reason, &message, nominated);
    }

    /// Patch `PodScheduled=False` (and the nomination) unless the pod already says so.
    fn update_condition(
        self: &Arc<Self>,
        pod: &Pod,
        reason: &str,
        message: &str,
        nominated: Option<String>,
    ) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let status = pod.status.as_ref();
        let existing = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
        let current_nomination = status
            .and_then(|s| s.nominated_node_name.clone())
            .unwrap_or_default();
        let same_condition = existing.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message)
        });
        let nomination_changes = nominated.as_ref().is_some_and(|n| *n != current_nomination);
        if same_condition && !nomination_changes {
            return;
        }
        let transition = if existing.is_some_and(|c| c.status == "False") {
            existing
                .and_then(|c| c.last_transition_time.clone())
                .map(|t| json!(t))
        } else {
            None
        }
        .unwrap_or_else(|| {
            json!(
                jiff::Timestamp::now()
                    .round(jiff::Unit::Second)
                    .unwrap_or_else(|_| jiff::Timestamp::now())
            )
        });
        let mut status_patch = json!({ "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": reason, "message": message,
            "lastProbeTime": null, "lastTransitionTime": transition,
        }]});
        if let Some(n) = nominated {
            status_patch["nominatedNodeName"] = if n.is_empty() { json!(null) } else { json!(n) };
        }
        // The version we decided on: if the pod changed meanwhile (bound by someone else,
        // updated), the API server refuses the patch instead of overwriting newer state.
        let patch = json!({
            "metadata": { "resourceVersion": pod.metadata.resource_version },
            "status": status_patch,
        });
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        tokio::spawn(async move {
            let api: Api<Pod> = Api::namespaced(client, &ns);
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                tracing::debug!(pod = %format!("{ns}/{name}"), error = %e, "updating the PodScheduled condition failed");
            }
        });
    }
}

/// The scheduling loop's own state.
pub struct Scheduler {
    /// What it shares.
    pub shared: Arc<Shared>,
    snapshot: Snapshot,
    next_start: usize,
}

impl Scheduler {
    /// A loop over `shared`.
    pub fn new(shared: Arc<Shared>) -> Scheduler {
        Scheduler {
            shared,
            snapshot: Snapshot::default(),
            next_start: 0,
        }
    }

    /// Schedule until the queue closes or `stop` is cancelled.
    pub async fn run(mut self, stop: skiff_runtime::CancellationToken) {
        let mut cycles = 0u64;
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => break,
                next = self.shared.queue.pop() => next,
            };
            let Some(qpi) = next else { break };
            self.schedule_one(qpi).await;
            cycles += 1;
            // Keep other tasks on this worker (watches, the API server in-process) moving.
            if cycles.is_multiple_of(8) {
                tokio::task::yield_now().await;
            }
        }
        self.shared.queue.close();
    }

    /// One scheduling cycle.
    pub async fn schedule_one(&mut self, qpi: QueuedPodInfo) {
        let started = Instant::now();
        let shared = self.shared.clone();
        let pod = qpi.pod.clone();
        let cycle = shared.queue.scheduling_cycle();
        let Some(fwk) = shared.profile_of(&pod.pod).cloned() else {
            shared.queue.done(&pod.key);
            return;
        };
        if pod.pod.metadata.deletion_timestamp.is_some() || shared.cache.is_assumed(&pod.key) {
            shared.queue.done(&pod.key);
            return;
        }
        shared.cache.update_snapshot(&mut self.snapshot);
        let mut state = CycleState::new();
        if self.snapshot.is_empty() {
            let failure =
                Failure::Status(Status::unresolvable("no nodes available to schedule pods"));
            shared.fail(&fwk, qpi, cycle, failure, None, started);
            return;
        }
        let percentage = fwk
            .percentage_of_nodes_to_score
            .unwrap_or(shared.percentage_of_nodes_to_score);
        let feasible = find_nodes_that_fit(
            &fwk,
            &mut state,
            &pod,
            &self.snapshot,
            percentage,
            &mut self.next_start,
        );
        let host = match feasible {
            Ok(f) => match prioritize(&fwk, &mut state, &pod, &f.nodes, &self.snapshot) {
                Ok(i) => f.nodes[i].name.clone(),
                Err(s) => return shared.fail(&fwk, qpi, cycle, Failure::Status(s), None, started),
            },
            Err(Failure::Fit(mut fit)) => {
                let mut nominated = None;
                if fwk.has_post_filter() {
                    shared
                        .metrics
                        .preemption_attempts
                        .fetch_add(1, Ordering::Relaxed);
                    let (status, result) = fwk
                        .run_post_filter(
                            &state,
                            &pod,
                            &self.snapshot,
                            &fit.diagnosis.node_to_status,
                        )
                        .await;
                    if status.is_error() {
                        tracing::warn!(pod = %pod_name(&pod.pod), error = %status.message(), "preemption failed");
                    }
                    if !status.is_success() {
                        fit.diagnosis.post_filter_msg = status.message();
                    }
                    nominated = result.and_then(|r| r.nominated_node_name);
                }
                return shared.fail(&fwk, qpi, cycle, Failure::Fit(fit), nominated, started);
            }
            Err(failure) => return shared.fail(&fwk, qpi, cycle, failure, None, started),
        };

        // Assume, Reserve, Permit.
        if let Err(e) = shared.cache.assume_pod(pod.clone(), &host) {
            return shared.fail(
                &fwk,
                qpi,
                cycle,
                Failure::Status(Status::error(e.to_string())),
                None,
                started,
            );
        }
        shared.queue.nominator.delete(&pod.key);
        let s = fwk.run_reserve(&mut state, &pod, &host);
        if !s.is_success() {
            fwk.run_unreserve(&mut state, &pod, &host);
            shared.cache.forget_pod(&pod.key);
            return shared.fail(&fwk, qpi, cycle, Failure::Status(s), None, started);
        }
        let (permit, wait) = fwk.run_permit(&mut state, &pod, &host);
        if !permit.is_success() && permit.code() != Code::Wait {
            fwk.run_unreserve(&mut state, &pod, &host);
            shared.cache.forget_pod(&pod.key);
            return shared.fail(&fwk, qpi, cycle, Failure::Status(permit), None, started);
        }
        shared.queue.done(&pod.key);
        shared.metrics.attempt(
            AttemptResult::Scheduled,
            &fwk.scheduler_name,
            started.elapsed(),
        );

        let Ok(permit_slot) = shared.binds.clone().acquire_owned().await else {
            return;
        };
        let waiting = (permit.code() == Code::Wait).then_some(wait);
        state.end_scheduling_cycle();
        tokio::spawn(async move {
            let _slot = permit_slot;
            bind(shared, fwk, state, qpi, host, waiting, cycle).await;
        });
    }
}

/// The binding cycle.
async fn bind(
    shared: Arc<Shared>,
    fwk: Arc<Framework>,
    mut state: CycleState,
    qpi: QueuedPodInfo,
    host: String,
    wait: Option<std::time::Duration>,
    cycle: u64,
) {
    let pod = qpi.pod.clone();
    let mut status = match wait {
        Some(timeout) => fwk.handle.waiting.wait(&pod.key, timeout).await,
        None => Status::success(),
    };
    if status.is_success() {
        status = fwk.run_pre_bind(&state, &pod, &host).await;
    }
    if status.is_success() {
        status = fwk.run_bind(&state, &pod, &host).await;
    }
    if status.is_success() {
        shared.metrics.bound.fetch_add(1, Ordering::Relaxed);
        shared.metrics.e2e.observe(qpi.first_enqueued.elapsed());
        shared.event(
            &fwk,
            &pod.pod,
            EventType::Normal,
            "Scheduled",
            &format!("Successfully assigned {} to {host}", pod_name(&pod.pod)),
        );
        return;
    }
    fwk.run_unreserve(&mut state, &pod, &host);
    shared.cache.forget_pod(&pod.key);
    // The node's room is free again for anything that waited for it.
    shared.queue.move_all();
    let status = if status.is_rejected() {
        status
    } else {
        Status::error(status.message())
    };
    shared.fail(
        &fwk,
        qpi,
        cycle,
        Failure::Status(status),
        None,
        Instant::now(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{default_framework, node, pod, snapshot};

    #[test]
    fn feasible_node_counts_follow_upstream() {
        assert_eq!(num_feasible_nodes_to_find(0, 50), 50);
        assert_eq!(num_feasible_nodes_to_find(0, 100), 100);
        // 5000 nodes: 50 - 40 = 10% → 500.
        assert_eq!(num_feasible_nodes_to_find(0, 5000), 500);
        // 6000 nodes: 50 - 48 = 2% → clamped to 5% → 300.
        assert_eq!(num_feasible_nodes_to_find(0, 6000), 300);
        assert_eq!(num_feasible_nodes_to_find(100, 5000), 5000);
        assert_eq!(num_feasible_nodes_to_find(1, 1000), 100);
    }

    #[test]
    fn the_whole_filter_phase_explains_rejections() {
        let f = default_framework();
        let snap = snapshot(vec![
            node("small").alloc(&[("cpu", "1"), ("pods", "10")]).info(),
            node("cp1")
                .taint("node-role.kubernetes.io/control-plane", "", "NoSchedule")
                .info(),
            node("cp2")
                .taint("node-role.kubernetes.io/control-plane", "", "NoSchedule")
                .info(),
        ]);
        let p = pod("big").req(&[("cpu", "2")]).info();
        let mut state = CycleState::new();
        let mut next = 0;
        let Err(Failure::Fit(fit)) = find_nodes_that_fit(&f, &mut state, &p, &snap, 0, &mut next)
        else {
            panic!("should not fit");
        };
        assert_eq!(
            fit.message(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }."
        );
        assert!(
            fit.diagnosis
                .unschedulable_plugins
                .contains("TaintToleration")
        );
        assert!(
            fit.diagnosis
                .unschedulable_plugins
                .contains("NodeResourcesFit")
        );
    }

    #[test]
    fn scoring_spreads_pods_to_the_least_allocated_node() {
        let f = default_framework();
        let nodes = vec![
            node("busy").with(vec![pod("a").req(&[("cpu", "3"), ("memory", "16Gi")])]),
            node("idle").info(),
        ];
        let snap = snapshot(nodes);
        let p = pod("p").req(&[("cpu", "500m"), ("memory", "1Gi")]).info();
        let mut state = CycleState::new();
        let mut next = 0;
        let feasible = find_nodes_that_fit(&f, &mut state, &p, &snap, 0, &mut next)
            .ok()
            .unwrap();
        assert_eq!(feasible.nodes.len(), 2);
        let best = prioritize(&f, &mut state, &p, &feasible.nodes, &snap).unwrap();
        assert_eq!(feasible.nodes[best].name, "idle");
    }

    #[test]
    fn sampling_stops_early_and_rotates_the_start() {
        let f = default_framework();
        let nodes: Vec<_> = (0..1000)
            .map(|i| node(&format!("n{i:04}")).info())
            .collect();
        let snap = snapshot(nodes);
        let p = pod("p").info();
        let mut next = 0;
        let r = find_nodes_that_fit(&f, &mut CycleState::new(), &p, &snap, 0, &mut next)
            .ok()
            .unwrap();
        // 1000 nodes: 50 - 8 = 42% → 420.
        assert_eq!(r.nodes.len(), 420);
        assert_eq!(next, 420);
        let r = find_nodes_that_fit(&f, &mut CycleState::new(), &p, &snap, 0, &mut next)
            .ok()
            .unwrap();
        assert_eq!(r.nodes[0].name, "n0420");
    }

    #[test]
    fn a_prefilter_node_set_limits_the_nodes_and_explains_the_rest() {
        let f = default_framework();
        let snap = snapshot(vec![node("a").info(), node("b").info(), node("c").info()]);
        let mut p = pod("p");
        p.0.spec.as_mut().unwrap().affinity = Some(k8s_openapi::api::core::v1::Affinity {
            node_affinity: Some(k8s_openapi::api::core::v1::NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(
                    k8s_openapi::api::core::v1::NodeSelector {
                        node_selector_terms: vec![k8s_openapi::api::core::v1::NodeSelectorTerm {
                            match_fields: Some(vec![
                                k8s_openapi::api::core::v1::NodeSelectorRequirement {
                                    key: "metadata.name".into(),
                                    operator: "In".into(),
                                    values: Some(vec!["b".into()]),
                                },
                            ]),
                            match_expressions: None,
                        }],
                    },
                ),
                ..Default::default()
            }),
            ..Default::default()
        });
        let p = p.req(&[("cpu", "100")]).info();
        let Err(Failure::Fit(fit)) =
            find_nodes_that_fit(&f, &mut CycleState::new(), &p, &snap, 0, &mut 0)
        else {
            panic!("should not fit");
        };
        assert_eq!(
            fit.message(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't satisfy plugin(s) [NodeAffinity]."
        );
    }
}
