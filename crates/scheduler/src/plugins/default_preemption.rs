//! DefaultPreemption (PostFilter): when no node fits, find a node where evicting
//! lower-priority pods makes room, evict them, and nominate the node for the pod
//! (`status.nominatedNodeName`), as upstream.
//!
//! Only nodes rejected as `Unschedulable` (not `UnschedulableAndUnresolvable`) are tried, from a
//! random offset, until enough candidates are found (`minCandidateNodesPercentage` of them, at
//! least `minCandidateNodesAbsolute`). On each, every lower-priority pod is removed; if the pod
//! fits, the removed pods are re-added from the most important down (those whose
//! PodDisruptionBudget would be violated first), keeping each that still lets the pod fit; the
//! rest are the victims. The chosen node has the fewest PDB violations, then the lowest
//! highest victim priority, the lowest priority sum, the fewest victims, the latest start.
//! Victims get a `DisruptionTarget` condition and are deleted; lower-priority pods nominated to
//! the node lose their nomination.
//!
//! Eviction is asynchronous, as upstream's (KEP-4832): while the victims are being evicted the
//! plugin's PreEnqueue holds the preemptor back ("waiting for the preemption for this pod to be
//! finished") instead of letting it retry — and fail — against a node still full. Upstream lets
//! the pod go before its last victim is deleted, so that deletion's event re-queues it; but any
//! other pod's deletion in between re-queues it as well, and under load it was then retried
//! while its victims were still running in the scheduler's view, found no room, and preempted
//! again (on PreemptionBasic every second preemptor evicted two sets of victims). Skiff holds
//! the pod until the victims it deleted are gone or terminating in the scheduler's informer —
//! the state in which its retry can succeed — and re-checks on pod deletions and on pods
//! starting to terminate.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde::Deserialize;
use serde_json::{Value, json};
use skiff_api::selector::LabelSelector;
use skiff_runtime::events::{EventType, reference};

use crate::diagnosis::{Diagnosis, FitError};
use crate::extension_points;
use crate::framework::events::Resource;
use crate::framework::{
    ActionType, ClusterEvent, Code, CycleState, EventObject, Framework, Handle, NodeToStatus,
    Plugin, PostFilterContext, PostFilterPlugin, PostFilterResult, PreEnqueuePlugin, Status,
};
use crate::helpers::pod_labels;
use crate::nodeinfo::{NodeInfo, PodInfo, pod_name};
use crate::registry::decode_args;

/// The plugin name.
pub const NAME: &str = "DefaultPreemption";
/// Upstream's reason for nodes preemption cannot help.
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Upstream's reason for nodes without lower-priority pods.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// Upstream's PreEnqueue message while a pod's victims are being evicted.
pub const PREEMPTING: &str = "waiting for the preemption for this pod to be finished";

/// `DefaultPreemptionArgs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Args {
    /// Share of nodes to find candidates on (default 10).
    #[serde(default = "ten")]
    pub min_candidate_nodes_percentage: i64,
    /// At least this many candidate nodes (default 100).
    #[serde(default = "hundred")]
    pub min_candidate_nodes_absolute: i64,
}

fn ten() -> i64 {
    10
}
fn hundred() -> i64 {
    100
}

impl Default for Args {
    fn default() -> Self {
        Args {
            min_candidate_nodes_percentage: 10,
            min_candidate_nodes_absolute: 100,
        }
    }
}

/// A preemption in flight.
#[derive(Debug, Default)]
struct Preemption {
    /// Victims are still being evicted (upstream's `IsPodRunningPreemption`).
    evicting: bool,
    /// Victims deleted (or being deleted) whose deletion the informer may not show yet.
    victims: Vec<Arc<PodInfo>>,
}

/// Preemptions in flight, by preemptor key.
type Preempting = Arc<parking_lot::Mutex<std::collections::HashMap<String, Preemption>>>;

/// The plugin.
pub struct DefaultPreemption {
    args: Args,
    handle: Handle,
    /// Preemptors whose victims are being evicted in the background.
    preempting: Preempting,
}

/// Factory.
pub fn new(args: Option<&Value>, handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    let args: Args = decode_args(args)?;
    if !(0..=100).contains(&args.min_candidate_nodes_percentage) {
        return Err(format!(
            "minCandidateNodesPercentage: Invalid value: {}: not in valid range [0, 100]",
            args.min_candidate_nodes_percentage
        ));
    }
    if args.min_candidate_nodes_absolute < 0 {
        return Err(format!(
            "minCandidateNodesAbsolute: Invalid value: {}: not in valid range [0, inf)",
            args.min_candidate_nodes_absolute
        ));
    }
    if args.min_candidate_nodes_percentage == 0 && args.min_candidate_nodes_absolute == 0 {
        return Err(
            "minCandidateNodesPercentage, minCandidateNodesAbsolute: both cannot be zero".into(),
        );
    }
    Ok(Arc::new(DefaultPreemption {
        args,
        handle: handle.clone(),
        preempting: Default::default(),
    }))
}

/// A node where evicting `victims` lets the pod fit.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The node.
    pub node: String,
    /// Pods to evict, most important first.
    pub victims: Vec<Arc<PodInfo>>,
    /// How many of them violate a PodDisruptionBudget.
    pub pdb_violations: usize,
}

fn start_nanos(p: &Pod) -> i128 {
    p.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map_or_else(
            || jiff::Timestamp::now().as_nanosecond(),
            |t| t.0.as_nanosecond(),
        )
}

/// Upstream `MoreImportantPod`: higher priority, then longer running.
fn more_important(a: &PodInfo, b: &PodInfo) -> bool {
    if a.priority != b.priority {
        return a.priority > b.priority;
    }
    start_nanos(&a.pod) < start_nanos(&b.pod)
}

/// Split pods (keeping order) into those whose eviction would violate a budget and the rest.
fn split_by_pdb(
    pods: &[Arc<PodInfo>],
    pdbs: &[Arc<PodDisruptionBudget>],
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i64> = pdbs
        .iter()
        .map(|p| i64::from(p.status.as_ref().map_or(0, |s| s.disruptions_allowed)))
        .collect();
    let selectors: Vec<Option<LabelSelector>> = pdbs
        .iter()
        .map(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .and_then(|s| LabelSelector::from_k8s(s).ok())
                .filter(|s| !s.is_empty())
        })
        .collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for p in pods {
        let labels = pod_labels(&p.pod);
        let mut violated = false;
        if !labels.is_empty() {
            for (i, pdb) in pdbs.iter().enumerate() {
                if pdb.metadata.namespace.as_deref() != p.pod.metadata.namespace.as_deref() {
                    continue;
                }
                let Some(sel) = &selectors[i] else { continue };
                if !sel.matches(labels) {
                    continue;
                }
                let disrupted = pdb
                    .status
                    .as_ref()
                    .and_then(|s| s.disrupted_pods.as_ref())
                    .is_some_and(|d| d.contains_key(p.pod.metadata.name.as_deref().unwrap_or("")));
                if disrupted {
                    continue;
                }
                allowed[i] -= 1;
                if allowed[i] < 0 {
                    violated = true;
                }
            }
        }
        if violated {
            violating.push(p.clone());
        } else {
            fine.push(p.clone());
        }
    }
    (violating, fine)
}

/// Find the fewest victims on `node` (a copy) that let `pod` fit (upstream `SelectVictimsOnNode`).
pub fn select_victims(
    framework: &Framework,
    state: &mut CycleState,
    pod: &PodInfo,
    node: &mut NodeInfo,
    pdbs: &[Arc<PodDisruptionBudget>],
) -> Result<Candidate, Status> {
    let mut potential: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(Status::unresolvable(NO_VICTIMS));
    }
    for p in &potential {
        node.remove_pod(&p.key);
        let s = framework.run_pre_filter_remove_pod(state, pod, p, node);
        if !s.is_success() {
            return Err(Status::error(s.message()));
        }
    }
    let nominated = framework.handle.nominator.pods_for_node(&node.name);
    let s = framework.run_filter_with_nominated(state, pod, node, &nominated);
    if !s.is_success() {
        return Err(s);
    }
    potential.sort_by(|a, b| {
        if more_important(a, b) {
            std::cmp::Ordering::Less
        } else if more_important(b, a) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
    let (violating, fine) = split_by_pdb(&potential, pdbs);
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    let mut reprieve =
        |p: &Arc<PodInfo>, state: &mut CycleState, node: &mut NodeInfo| -> Result<bool, Status> {
            node.add_pod(p.clone());
            framework.run_pre_filter_add_pod(state, pod, p, node);
            let fits = framework
                .run_filter_with_nominated(state, pod, node, &nominated)
                .is_success();
            if !fits {
                node.remove_pod(&p.key);
                framework.run_pre_filter_remove_pod(state, pod, p, node);
                victims.push(p.clone());
            }
            Ok(fits)
        };
    for p in &violating {
        if !reprieve(p, state, node)? {
            pdb_violations += 1;
        }
    }
    for p in &fine {
        reprieve(p, state, node)?;
    }
    if !violating.is_empty() && !fine.is_empty() {
        victims.sort_by(|a, b| {
            if more_important(a, b) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        });
    }
    if victims.is_empty() {
        return Err(Status::error(format!(
            "expected at least one victim pod on node {:?}",
            node.name
        )));
    }
    Ok(Candidate {
        node: node.name.clone(),
        victims,
        pdb_violations,
    })
}

/// Pick the best candidate (upstream `pickOneNodeForPreemption`).
pub fn pick_candidate(candidates: &[Candidate]) -> Option<&Candidate> {
    let mut pool: Vec<&Candidate> = candidates.iter().collect();
    let criteria: [&dyn Fn(&Candidate) -> i128; 5] = [
        &|c| -(c.pdb_violations as i128),
        &|c| -i128::from(c.victims[0].priority),
        &|c| {
            -c.victims
                .iter()
                .map(|v| i128::from(v.priority) + i128::from(i32::MAX) + 1)
                .sum::<i128>()
        },
        &|c| -(c.victims.len() as i128),
        &|c| {
            let top = c.victims[0].priority;
            c.victims
                .iter()
                .filter(|v| v.priority == top)
                .map(|v| start_nanos(&v.pod))
                .min()
                .unwrap_or(i128::MIN)
        },
    ];
    for f in criteria {
        if pool.len() <= 1 {
            break;
        }
        let best = pool.iter().map(|c| f(c)).max()?;
        pool.retain(|c| f(c) == best);
    }
    pool.first().copied()
}

impl DefaultPreemption {
    fn num_candidates(&self, nodes: usize) -> usize {
        let n = nodes as i64 * self.args.min_candidate_nodes_percentage / 100;
        n.max(self.args.min_candidate_nodes_absolute)
            .min(nodes as i64)
            .max(0) as usize
    }

    /// Whether the pod may preempt (upstream `PodEligibleToPreemptOthers`).
    fn eligible(&self, pod: &Pod, ctx: &PostFilterContext<'_>) -> Result<(), String> {
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
            return Err("not eligible due to preemptionPolicy=Never.".into());
        }
        if self
            .preempting
            .lock()
            .get(&crate::nodeinfo::pod_key(pod))
            .is_some_and(|p| p.evicting)
        {
            return Err(PREEMPTING.into());
        }
        let nominated = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .unwrap_or("");
        if !nominated.is_empty() {
            if ctx
                .statuses
                .get(nominated)
                .is_some_and(|s| s.code() == Code::UnschedulableAndUnresolvable)
            {
                return Ok(());
            }
            let priority = spec.and_then(|s| s.priority).unwrap_or(0);
            if let Some(node) = ctx.snapshot.get(nominated) {
                let terminating = node.pods.iter().any(|p| {
                    p.priority < priority
                        && p.pod.metadata.deletion_timestamp.is_some()
                        && p.pod
                            .status
                            .iter()
                            .flat_map(|s| s.conditions.iter().flatten())
                            .any(|c| {
                                c.type_ == "DisruptionTarget"
                                    && c.status == "True"
                                    && c.reason.as_deref() == Some("PreemptionByScheduler")
                            })
                });
                if terminating {
                    return Err(
                        "not eligible due to a terminating pod on the nominated node.".into(),
                    );
                }
            }
        }
        Ok(())
    }

    /// Candidates and the statuses of nodes that are not (upstream `findCandidates`).
    pub fn find_candidates(
        &self,
        ctx: &PostFilterContext<'_>,
        pod: &PodInfo,
    ) -> (Vec<Candidate>, NodeToStatus) {
        let potential: Vec<&Arc<NodeInfo>> = ctx
            .snapshot
            .nodes()
            .iter()
            .filter(|n| {
                ctx.statuses
                    .get(&n.name)
                    .is_some_and(|s| s.code() == Code::Unschedulable)
            })
            .collect();
        let mut statuses = NodeToStatus::new();
        if potential.is_empty() {
            return (Vec::new(), statuses);
        }
        let pdbs = self.handle.listers.pdbs.list();
        let offset = rand::random_range(0..potential.len());
        let wanted = self.num_candidates(potential.len());
        let (mut fine, mut violating) = (Vec::new(), Vec::new());
        for i in 0..potential.len() {
            let node = potential[(offset + i) % potential.len()];
            let mut copy = (**node).clone();
            let mut state = ctx.state.clone();
            match select_victims(ctx.framework, &mut state, pod, &mut copy, &pdbs) {
                Ok(c) => {
                    if c.pdb_violations == 0 {
                        fine.push(c);
                    } else {
                        violating.push(c);
                    }
                    if !fine.is_empty() && fine.len() + violating.len() >= wanted {
                        break;
                    }
                }
                Err(s) => {
                    statuses.insert(node.name.clone(), s);
                }
            }
        }
        fine.extend(violating);
        (fine, statuses)
    }
}

/// What the background eviction needs.
struct Eviction {
    client: kube::Client,
    recorder: Option<skiff_runtime::events::Recorder>,
    node: String,
    victims: Vec<Arc<PodInfo>>,
    /// Lower-priority pods nominated to the node, whose nominations are cleared.
    displaced: Vec<Arc<PodInfo>>,
    preemptor_uid: String,
    scheduler: String,
}

/// Mark one victim `DisruptionTarget` and delete it (a victim already gone is fine).
async fn evict_one(
    e: &Eviction,
    condition: &serde_json::Value,
    victim: &PodInfo,
) -> Result<(), String> {
    let api: Api<Pod> = Api::namespaced(e.client.clone(), victim.namespace());
    let name = victim.pod.metadata.name.as_deref().unwrap_or("");
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(condition))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(err) => {
            return Err(format!(
                "marking victim {} failed: {err}",
                pod_name(&victim.pod)
            ));
        }
    }
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(err) => {
            return Err(format!(
                "preempting victim {} failed: {err}",
                pod_name(&victim.pod)
            ));
        }
    }
    if let Some(recorder) = &e.recorder {
        recorder.publish(
            &reference(&*victim.pod),
            EventType::Normal,
            "Preempted",
            &format!("Preempted by pod {} on node {}", e.preemptor_uid, e.node),
        );
    }
    Ok(())
}

/// Upstream's async preemption (`prepareCandidateAsync`): clear the nominations of
/// lower-priority pods on the node, evict every victim but the last at once, mark the
/// preemption no longer `evicting`, then evict the last victim. Victims whose eviction failed
/// are not waited for.
async fn evict(e: Eviction, preempting: &Preempting, key: &str) -> Result<(), String> {
    for nominated in &e.displaced {
        let api: Api<Pod> = Api::namespaced(e.client.clone(), nominated.namespace());
        let patch = json!({ "status": { "nominatedNodeName": null } });
        let name = nominated.pod.metadata.name.as_deref().unwrap_or("");
        if let Err(err) = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(pod = %pod_name(&nominated.pod), error = %err, "clearing a nomination failed");
        }
    }
    let settle = |results: &[(&Arc<PodInfo>, Result<(), String>)], done: bool| {
        let mut map = preempting.lock();
        if let Some(p) = map.get_mut(key) {
            for (victim, result) in results {
                if result.is_err() {
                    p.victims.retain(|v| v.key != victim.key);
                }
            }
            if done {
                p.evicting = false;
            }
        }
    };
    let condition = json!({ "status": { "conditions": [{
        "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
        "message": format!("{}: preempting to accommodate a higher priority pod", e.scheduler),
        "lastTransitionTime": jiff::Timestamp::now().round(jiff::Unit::Second).map_err(|x| x.to_string())?,
    }]}});
    let victims: Vec<&Arc<PodInfo>> = e
        .victims
        .iter()
        .filter(|v| v.pod.metadata.deletion_timestamp.is_none())
        .collect();
    let Some((last, first)) = victims.split_last() else {
        settle(&[], true);
        return Ok(());
    };
    let results: Vec<(&Arc<PodInfo>, Result<(), String>)> = first
        .iter()
        .copied()
        .zip(futures::future::join_all(first.iter().map(|v| evict_one(&e, &condition, v))).await)
        .collect();
    settle(&results, true);
    let last = (*last, evict_one(&e, &condition, last).await);
    settle(std::slice::from_ref(&last), false);
    results.into_iter().chain([last]).try_for_each(|(_, r)| r)
}

impl Plugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        NAME
    }
    /// A held-back preemptor is looked at again when a pod is deleted or starts terminating
    /// (upstream registers deletions, with a hint that never queues by itself: the other
    /// plugins' hints decide once the pod is let through).
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![ClusterEvent::new(
            Resource::Pod,
            ActionType::DELETE | ActionType::UPDATE_POD_TERMINATING,
            "AssignedPodDeleteOrTerminating",
        )]
    }
    fn queueing_hint(
        &self,
        _event: &ClusterEvent,
        _pod: &PodInfo,
        _old: &EventObject<'_>,
        _new: &EventObject<'_>,
    ) -> bool {
        false
    }
    extension_points!(as_pre_enqueue => PreEnqueuePlugin, as_post_filter => PostFilterPlugin);
}

impl DefaultPreemption {
    /// Whether a victim is still running in the scheduler's view (not deleted, not terminating).
    fn still_running(&self, victim: &PodInfo) -> bool {
        self.handle
            .listers
            .pods
            .get_named(
                victim.namespace(),
                victim.pod.metadata.name.as_deref().unwrap_or(""),
            )
            .is_some_and(|p| {
                p.metadata.uid == victim.pod.metadata.uid && p.metadata.deletion_timestamp.is_none()
            })
    }
}

impl PreEnqueuePlugin for DefaultPreemption {
    fn pre_enqueue(&self, pod: &PodInfo) -> Status {
        let mut preempting = self.preempting.lock();
        let Some(p) = preempting.get_mut(&pod.key) else {
            return Status::success();
        };
        if !p.evicting {
            p.victims.retain(|v| self.still_running(v));
            if p.victims.is_empty() {
                preempting.remove(&pod.key);
                return Status::success();
            }
        }
        Status::unresolvable(PREEMPTING)
    }
}

#[async_trait]
impl PostFilterPlugin for DefaultPreemption {
    async fn post_filter(&self, ctx: PostFilterContext<'_>) -> (Status, Option<PostFilterResult>) {
        let latest = self.handle.listers.pods.get_named(
            ctx.pod.namespace(),
            ctx.pod.pod.metadata.name.as_deref().unwrap_or(""),
        );
        let pod = latest.unwrap_or_else(|| ctx.pod.pod.clone());
        if let Err(msg) = self.eligible(&pod, &ctx) {
            return (Status::unschedulable(format!("preemption: {msg}")), None);
        }
        let info = ctx.pod.clone();
        let (candidates, statuses) = self.find_candidates(&ctx, &info);
        let Some(best) = pick_candidate(&candidates) else {
            let fit = FitError {
                num_all_nodes: ctx.snapshot.len(),
                diagnosis: Diagnosis {
                    node_to_status: statuses,
                    absent: Some(Status::unresolvable(NOT_HELPFUL)),
                    ..Default::default()
                },
            };
            return (
                Status::unschedulable(format!("preemption: {}", fit.message())),
                Some(PostFilterResult {
                    nominated_node_name: Some(String::new()),
                }),
            );
        };
        let Some(client) = self.handle.client.clone() else {
            return (Status::error("no API client to preempt with"), None);
        };
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        let eviction = Eviction {
            client,
            recorder: self.handle.recorder.clone(),
            node: best.node.clone(),
            victims: best.victims.clone(),
            displaced: self
                .handle
                .nominator
                .pods_for_node(&best.node)
                .into_iter()
                .filter(|n| n.priority < priority)
                .collect(),
            preemptor_uid: pod.metadata.uid.clone().unwrap_or_default(),
            scheduler: pod
                .spec
                .as_ref()
                .and_then(|s| s.scheduler_name.clone())
                .unwrap_or_else(|| crate::config::DEFAULT_SCHEDULER_NAME.into()),
        };
        // Evict in the background (upstream's async preemption): the scheduling loop goes on,
        // and this pod is held back (PreEnqueue) until the evictions were sent.
        let key = ctx.pod.key.clone();
        self.preempting.lock().insert(
            key.clone(),
            Preemption {
                evicting: true,
                victims: best.victims.clone(),
            },
        );
        let preempting = self.preempting.clone();
        let activator = self.handle.activator.clone();
        let pods = self.handle.listers.pods.clone();
        let (namespace, name) = (
            ctx.pod.namespace().to_owned(),
            ctx.pod.pod.metadata.name.clone().unwrap_or_default(),
        );
        tokio::spawn(async move {
            if let Err(e) = evict(eviction, &preempting, &key).await {
                tracing::warn!(error = %e, "preemption failed");
            }
            // Events re-check a held pod; if they all passed before it was held (or the
            // evictions failed), none will come: ask once more (upstream activates the pod on
            // failure).
            activator.release(&key);
            if pods.get_named(&namespace, &name).is_none() {
                preempting.lock().remove(&key);
            }
        });
        (
            Status::success(),
            Some(PostFilterResult {
                nominated_node_name: Some(best.node.clone()),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{default_framework, node, pod, snapshot};
    use k8s_openapi::api::policy::v1::{PodDisruptionBudgetSpec, PodDisruptionBudgetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector as K8sSelector, ObjectMeta,
    };

    fn statuses(
        f: &Framework,
        p: &PodInfo,
        snap: &crate::cache::Snapshot,
    ) -> (CycleState, NodeToStatus) {
        let mut state = CycleState::new();
        let (s, _) = f.run_pre_filter(&mut state, p, snap);
        assert!(s.is_success());
        let m = snap
            .nodes()
            .iter()
            .map(|n| (n.name.clone(), f.run_filter(&state, p, n)))
            .collect();
        (state, m)
    }

    #[test]
    fn a_pod_whose_victims_are_being_evicted_is_held_back() {
        let plugin = DefaultPreemption {
            args: Args::default(),
            handle: Handle::for_tests(),
            preempting: Default::default(),
        };
        let p = pod("preemptor").priority(10).info();
        assert!(plugin.pre_enqueue(&p).is_success());
        let victim = pod("victim").node("n1");
        plugin
            .handle
            .listers
            .pods
            .handle(kube::runtime::watcher::Event::Apply(victim.0.clone()));
        plugin.preempting.lock().insert(
            p.key.clone(),
            Preemption {
                evicting: true,
                victims: vec![victim.clone().info()],
            },
        );
        let held = plugin.pre_enqueue(&p);
        assert_eq!(held.code(), Code::UnschedulableAndUnresolvable);
        assert_eq!(held.message(), PREEMPTING);
        // Evicted, but the informer still shows the victim running: a retry could not fit.
        plugin.preempting.lock().get_mut(&p.key).unwrap().evicting = false;
        assert!(!plugin.pre_enqueue(&p).is_success());
        // Terminating is enough (upstream then does not preempt again for it).
        plugin
            .handle
            .listers
            .pods
            .handle(kube::runtime::watcher::Event::Apply(victim.terminating().0));
        assert!(plugin.pre_enqueue(&p).is_success());
        assert!(
            plugin.preempting.lock().is_empty(),
            "forgotten once let through"
        );
        assert!(
            plugin
                .events_to_register()
                .iter()
                .any(|e| e.matches(&crate::framework::events::ASSIGNED_POD_DELETE))
        );
    }

    #[test]
    fn a_high_priority_pod_evicts_the_fewest_lowest_priority_pods() {
        // Docs: a pending high-priority pod preempts lower-priority pods on a node where
        // removing them makes room.
        let f = default_framework();
        let plugin = DefaultPreemption {
            args: Args::default(),
            handle: f.handle.clone(),
            preempting: Default::default(),
        };
        let nodes = vec![
            node("n1").alloc(&[("cpu", "2"), ("pods", "10")]).with(vec![
                pod("low-a").priority(1).req(&[("cpu", "1")]),
                pod("low-b").priority(1).req(&[("cpu", "1")]),
            ]),
            node("n2").alloc(&[("cpu", "2"), ("pods", "10")]).with(vec![
                pod("mid").priority(5).req(&[("cpu", "1")]),
                pod("lowest").priority(0).req(&[("cpu", "1")]),
            ]),
        ];
        let snap = snapshot(nodes);
        let high = pod("high").priority(10).req(&[("cpu", "1")]).info();
        let (state, m) = statuses(&f, &high, &snap);
        assert!(m.values().all(|s| s.code() == Code::Unschedulable));
        let ctx = PostFilterContext {
            state: &state,
            pod: &high,
            snapshot: &snap,
            statuses: &m,
            framework: &f,
        };
        let (candidates, failed) = plugin.find_candidates(&ctx, &high);
        assert!(failed.is_empty());
        assert_eq!(candidates.len(), 2);
        assert!(candidates.iter().all(|c| c.victims.len() == 1));
        // n2's victim has priority 0 < n1's 1: n2 wins.
        let best = pick_candidate(&candidates).unwrap();
        assert_eq!(best.node, "n2");
        assert_eq!(best.victims[0].pod.metadata.name.as_deref(), Some("lowest"));
    }

    #[test]
    fn equal_or_higher_priority_pods_are_never_victims() {
        let f = default_framework();
        let plugin = DefaultPreemption {
            args: Args::default(),
            handle: f.handle.clone(),
            preempting: Default::default(),
        };
        let snap = snapshot(vec![
            node("n1")
                .alloc(&[("cpu", "1"), ("pods", "10")])
                .with(vec![pod("same").priority(10).req(&[("cpu", "1")])]),
        ]);
        let p = pod("p").priority(10).req(&[("cpu", "1")]).info();
        let (state, m) = statuses(&f, &p, &snap);
        let ctx = PostFilterContext {
            state: &state,
            pod: &p,
            snapshot: &snap,
            statuses: &m,
            framework: &f,
        };
        let (candidates, failed) = plugin.find_candidates(&ctx, &p);
        assert!(candidates.is_empty());
        assert_eq!(failed["n1"].message(), NO_VICTIMS);
    }

    #[test]
    fn victims_whose_budget_would_break_are_spared_when_possible() {
        let f = default_framework();
        let pdb = Arc::new(PodDisruptionBudget {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some("db".into()),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                selector: Some(K8sSelector {
                    match_labels: Some([("app".to_owned(), "db".to_owned())].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(PodDisruptionBudgetStatus {
                disruptions_allowed: 0,
                ..Default::default()
            }),
        });
        let mut n = (*node("n1").alloc(&[("cpu", "2"), ("pods", "10")]).with(vec![
            pod("db")
                .label("app", "db")
                .priority(1)
                .req(&[("cpu", "1")]),
            pod("web").priority(1).req(&[("cpu", "1")]),
        ]))
        .clone();
        let p = pod("p").priority(10).req(&[("cpu", "1")]).info();
        let snap = snapshot(vec![Arc::new(n.clone())]);
        let (mut state, _) = statuses(&f, &p, &snap);
        let c = select_victims(&f, &mut state, &p, &mut n, &[pdb]).unwrap();
        assert_eq!(c.victims.len(), 1);
        assert_eq!(c.victims[0].pod.metadata.name.as_deref(), Some("web"));
        assert_eq!(c.pdb_violations, 0);
    }

    #[test]
    fn pods_with_preemption_policy_never_do_not_preempt() {
        let f = default_framework();
        let plugin = DefaultPreemption {
            args: Args::default(),
            handle: f.handle.clone(),
            preempting: Default::default(),
        };
        let mut p = pod("p").priority(10);
        p.0.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        let info = p.info();
        let snap = snapshot(vec![]);
        let state = CycleState::new();
        let m = NodeToStatus::new();
        let ctx = PostFilterContext {
            state: &state,
            pod: &info,
            snapshot: &snap,
            statuses: &m,
            framework: &f,
        };
        assert_eq!(
            plugin.eligible(&info.pod, &ctx).unwrap_err(),
            "not eligible due to preemptionPolicy=Never."
        );
    }

    #[test]
    fn candidate_counts_follow_the_arguments() {
        let plugin = DefaultPreemption {
            args: Args::default(),
            handle: Handle::for_tests(),
            preempting: Default::default(),
        };
        assert_eq!(plugin.num_candidates(50), 50);
        assert_eq!(plugin.num_candidates(5000), 500);
        assert_eq!(plugin.num_candidates(500), 100);
    }
}
