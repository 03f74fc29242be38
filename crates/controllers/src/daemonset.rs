//! The DaemonSet controller (upstream pkg/controller/daemon): one pod per node the pod
//! template may run on — judged like the scheduler would (nodeSelector, required node
//! affinity, taints against the template's tolerations plus the ones every daemon pod gets).
//! Pods are pinned to their node with required node affinity on `metadata.name` and bound by
//! the scheduler, as upstream. Failed pods are replaced, duplicates and pods on nodes that
//! no longer qualify (or exist) are removed. Templates are ControllerRevisions; RollingUpdate
//! replaces pods node by node within `maxUnavailable`, or surges a new pod next to the old one
//! with `maxSurge`; OnDelete waits for pods to be deleted by hand.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::events::{EventType, Recorder, reference};
use skiff_runtime::expectations::Expectations;
use skiff_runtime::owner;
use skiff_runtime::{Change, Informer, ObjectKey, WorkQueue};

use crate::context::{Context, synced};
use crate::history::{self, REVISION_LABEL};
use crate::replicaset::{api_message, pod_informer};
use crate::{During, Error, Result, pods};
use skiff_api::scheduling;

/// The deprecated label with the DaemonSet generation a pod was made from.
pub const TEMPLATE_GENERATION: &str = "pod-template-generation";
const COMPONENT: &str = "daemonset-controller";

/// Start the controller.
pub async fn start(ctx: Context) {
    let sets = ctx.informer::<DaemonSet>();
    let pods = pod_informer(&ctx);
    let nodes = ctx.informer::<Node>();
    let revisions = history::informer(&ctx);
    let queue: WorkQueue<ObjectKey> = WorkQueue::default();
    let expectations: Arc<Expectations<ObjectKey>> = Arc::new(Expectations::default());
    controller::feed(&sets, &queue, &ctx.stop, |c| {
        vec![ObjectKey::of(c.object().as_ref())]
    });
    {
        let expectations = expectations.clone();
        controller::feed(&pods, &queue, &ctx.stop, move |c| {
            let pod = c.object();
            let Some(r) = owner::controller_of(&pod.metadata).filter(|r| r.kind == "DaemonSet")
            else {
                return Vec::new();
            };
            let key = ObjectKey::new(pod.namespace().unwrap_or_default(), r.name.clone());
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            match c {
                Change::Applied { old: None, .. } => expectations.creation_observed(&key),
                Change::Applied {
                    old: Some(old),
                    new,
                } if new.metadata.deletion_timestamp.is_some()
                    && old.metadata.deletion_timestamp.is_none() =>
                {
                    expectations.deletion_observed(&key, &uid)
                }
                Change::Deleted(_) => expectations.deletion_observed(&key, &uid),
                _ => {}
            }
            vec![key]
        });
    }
    {
        let sets = sets.clone();
        controller::feed(&nodes, &queue, &ctx.stop, move |c| {
            let relevant = match c {
                Change::Applied {
                    old: Some(old),
                    new,
                } => {
                    old.metadata.labels != new.metadata.labels
                        || old.spec != new.spec
                        || ready(old) != ready(new)
                }
                _ => true,
            };
            if relevant {
                sets.list()
                    .iter()
                    .map(|d| ObjectKey::of(d.as_ref()))
                    .collect()
            } else {
                Vec::new()
            }
        });
    }
    if !ctx
        .wait_synced(vec![
            synced(&sets),
            synced(&pods),
            synced(&nodes),
            synced(&revisions),
        ])
        .await
    {
        return;
    }
    let reconciler = Arc::new(DaemonController {
        client: ctx.client.clone(),
        sets,
        pods,
        nodes,
        revisions,
        expectations,
        recorder: ctx.recorder(COMPONENT),
    });
    controller::run(reconciler, queue, ctx.config.workers(2), ctx.stop.clone()).await;
}

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

struct DaemonController {
    client: Client,
    sets: Informer<DaemonSet>,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    revisions: Informer<ControllerRevision>,
    expectations: Arc<Expectations<ObjectKey>>,
    recorder: Recorder,
}

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        value: None,
        toleration_seconds: None,
    }
}

/// Upstream `AddOrUpdateDaemonPodTolerations`: daemon pods survive node trouble.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(toleration(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for w in wanted {
        // An existing toleration of the key and effect is replaced (upstream drops its
        // tolerationSeconds so daemon pods are never evicted for it).
        tolerations.retain(|t| !(t.key == w.key && t.effect == w.effect));
        tolerations.push(w);
    }
}

/// Upstream `NodeShouldRunDaemonPod`: (should run, should keep running).
pub fn should_run(template: &PodSpec, node: &Node) -> (bool, bool) {
    let mut spec = template.clone();
    add_daemon_tolerations(&mut spec);
    spec.node_name = None;
    if let Some(name) = template.node_name.as_deref().filter(|n| !n.is_empty())
        && Some(name) != node.metadata.name.as_deref()
    {
        return (false, false);
    }
    if !scheduling::node_matches(&spec, node) {
        return (false, false);
    }
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    let untolerated = |effect: &str| -> bool {
        let extra: Vec<Taint> = if effect == "NoSchedule"
            && node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
        {
            vec![Taint {
                key: "node.kubernetes.io/unschedulable".into(),
                effect: "NoSchedule".into(),
                value: None,
                time_added: None,
            }]
        } else {
            Vec::new()
        };
        scheduling::taints(node, effect)
            .chain(extra.iter())
            .any(|t| !scheduling::tolerated(&tolerations, t))
    };
    if untolerated("NoExecute") {
        return (false, false);
    }
    (!untolerated("NoSchedule"), true)
}

/// Pin a pod to a node with required node affinity (upstream
/// `ReplaceDaemonSetPodNodeNameNodeAffinity`).
pub fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.to_owned()]),
        }]),
        match_expressions: None,
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
}

type NodePods = (Vec<Arc<Pod>>, Vec<Arc<Pod>>);

fn hash_of(rev: &ControllerRevision) -> String {
    rev.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL).cloned())
        .unwrap_or_default()
}

fn pod_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

fn scaled(v: Option<&IntOrString>, total: i32, round_up: bool, default: i32) -> i32 {
    match v {
        None => default,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let p: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let v = p * i64::from(total);
            (if round_up { (v + 99) / 100 } else { v / 100 }) as i32
        }
    }
}

impl Reconciler for DaemonController {
    type Key = ObjectKey;
    type Error = Error;

    fn name(&self) -> &'static str {
        COMPONENT
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(cached) = self.sets.get(key) else {
            self.expectations.forget(key);
            return Ok(Action::Done);
        };
        let mut ds = (*cached).clone();
        let spec = ds.spec.clone().unwrap_or_default();
        let selector = pods::selector(Some(&spec.selector), &key.to_string())?;
        let owned =
            crate::claim::claim_pods(&self.client, &self.pods, &ds, &selector, |_| true).await?;
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let existing = history::owned(&self.revisions, &uid);
        let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
        let revs = history::ensure_update_revision(
            &self.client,
            &ds,
            &spec.template,
            &existing,
            collisions,
        )
        .await?;
        let hash = hash_of(&revs.update);
        let collision_count = revs.collision_count.or(collisions);
        let template_spec = spec.template.spec.clone().unwrap_or_default();
        let nodes = self.nodes.list();
        let now = Timestamp::now();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        // Pods by the node they are bound or pinned to.
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for pod in &owned {
            if let Some(node) = pod.spec.as_ref().and_then(scheduling::target_node) {
                by_node.entry(node).or_default().push(pod.clone());
            }
        }
        let mut to_create: Vec<String> = Vec::new();
        let mut to_delete: Vec<Arc<Pod>> = Vec::new();
        let mut status = DaemonSetStatus {
            collision_count,
            observed_generation: ds.metadata.generation,
            ..Default::default()
        };
        let mut desired_nodes = Vec::new();
        let mut requeue = Action::Done;
        for node in &nodes {
            let name = node.name_any();
            let (run, keep) = should_run(&template_spec, node);
            let node_pods: Vec<Arc<Pod>> = by_node.remove(&name).unwrap_or_default();
            let live: Vec<Arc<Pod>> = node_pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .cloned()
                .collect();
            if run {
                status.desired_number_scheduled += 1;
                desired_nodes.push(name.clone());
            }
            if !live.is_empty() {
                if run {
                    status.current_number_scheduled += 1;
                } else {
                    status.number_misscheduled += 1;
                }
            }
            if run {
                let (failed, running): (Vec<Arc<Pod>>, Vec<Arc<Pod>>) = live
                    .iter()
                    .cloned()
                    .partition(|p| pods::phase(p) == "Failed");
                to_delete.extend(failed.iter().cloned());
                if running.is_empty() {
                    if !failed.is_empty() {
                        // Replace failed pods after a short backoff (upstream: 1 s doubling).
                        requeue = requeue.min(Action::RequeueAfter(Duration::from_secs(1)));
                    } else if node_pods
                        .iter()
                        .all(|p| p.metadata.deletion_timestamp.is_none())
                    {
                        to_create.push(name.clone());
                    }
                } else if running.len() > 1 && !self.surging(&ds) {
                    // Keep the oldest; upstream deletes duplicates.
                    let mut sorted = running.clone();
                    sorted.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
                    to_delete.extend(sorted.into_iter().skip(1));
                }
                let newest = running
                    .iter()
                    .find(|p| pod_hash(p) == Some(hash.as_str()))
                    .or(running.first());
                if let Some(p) = newest {
                    if pods::is_ready(p) {
                        status.number_ready += 1;
                    }
                    if pods::is_available(p, min_ready, now) {
                        status.number_available = Some(status.number_available.unwrap_or(0) + 1);
                    } else if let Some(left) = pods::available_in(p, min_ready, now) {
                        requeue =
                            requeue.min(Action::RequeueAfter(left + Duration::from_millis(100)));
                    }
                }
                if running.iter().any(|p| pod_hash(p) == Some(hash.as_str())) {
                    status.updated_number_scheduled =
                        Some(status.updated_number_scheduled.unwrap_or(0) + 1);
                }
            } else if !keep {
                to_delete.extend(live.iter().cloned());
            }
        }
        // Pods pinned to nodes that are gone.
        for pods_left in by_node.into_values() {
            to_delete.extend(
                pods_left
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none()),
            );
        }
        let desired = status.desired_number_scheduled;
        status.number_unavailable =
            Some((desired - status.number_available.unwrap_or(0)).max(0)).filter(|n| *n > 0);
        if self.expectations.satisfied(key) {
            let rolling = spec
                .update_strategy
                .as_ref()
                .and_then(|s| s.type_.as_deref())
                .is_none_or(|t| t == "RollingUpdate");
            if rolling {
                let (create, delete) =
                    self.rolling_update(&ds, &owned, &desired_nodes, &hash, min_ready, now);
                to_create.extend(create);
                to_delete.extend(delete);
            }
            to_create.sort();
            to_create.dedup();
            self.apply(&ds, key, &to_create, &to_delete, &hash).await?;
        }
        if ds.status.as_ref() != Some(&status) {
            ds.status = Some(status);
            let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &key.namespace);
            api.replace_status(&key.name, &PostParams::default(), &ds)
                .await
                .during(|| format!("updating status of daemonset {key}"))?;
        }
        let live: Vec<String> = owned
            .iter()
            .filter_map(|p| pod_hash(p).map(|h| format!("{}-{h}", key.name)))
            .chain([revs.update.name_any()])
            .collect();
        history::truncate(
            &self.client,
            &key.namespace,
            &revs.all,
            &live,
            spec.revision_history_limit.unwrap_or(10),
        )
        .await?;
        Ok(requeue)
    }
}

impl DaemonController {
    fn surging(&self, ds: &DaemonSet) -> bool {
        let spec = ds.spec.clone().unwrap_or_default();
        let rolling = spec
            .update_strategy
            .and_then(|s| s.rolling_update)
            .unwrap_or_default();
        scaled(rolling.max_surge.as_ref(), 1, true, 0) > 0
    }

    /// Upstream `rollingUpdate`: which nodes get a new pod and which old pods go.
    fn rolling_update(
        &self,
        ds: &DaemonSet,
        owned: &[Arc<Pod>],
        nodes: &[String],
        hash: &str,
        min_ready: i32,
        now: Timestamp,
    ) -> (Vec<String>, Vec<Arc<Pod>>) {
        let spec = ds.spec.clone().unwrap_or_default();
        let rolling = spec
            .update_strategy
            .and_then(|s| s.rolling_update)
            .unwrap_or_default();
        let desired = nodes.len() as i32;
        let max_surge = scaled(rolling.max_surge.as_ref(), desired, true, 0);
        let mut max_unavailable = scaled(rolling.max_unavailable.as_ref(), desired, true, 1);
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        // Per node: (pods of the current revision, older ones).
        let mut per_node: BTreeMap<&str, NodePods> = BTreeMap::new();
        for pod in owned
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && pods::phase(p) != "Failed")
        {
            let Some(node) = pod.spec.as_ref().and_then(scheduling::target_node) else {
                continue;
            };
            let Some(n) = nodes.iter().find(|n| **n == node) else {
                continue;
            };
            let entry = per_node.entry(n.as_str()).or_default();
            if pod_hash(pod) == Some(hash) {
                entry.0.push(pod.clone());
            } else {
                entry.1.push(pod.clone());
            }
        }
        let mut create = Vec::new();
        let mut delete = Vec::new();
        if max_surge == 0 {
            let mut unavailable = nodes
                .iter()
                .filter(|n| {
                    per_node.get(n.as_str()).is_none_or(|(new, old)| {
                        !new.iter()
                            .chain(old)
                            .any(|p| pods::is_available(p, min_ready, now))
                    })
                })
                .count() as i32;
            for (_, (new, old)) in per_node.iter() {
                if !new.is_empty() || old.is_empty() {
                    continue;
                }
                let available = old.iter().any(|p| pods::is_available(p, min_ready, now));
                if !available {
                    // Already unavailable: replacing it costs nothing.
                    delete.extend(old.iter().cloned());
                } else if unavailable < max_unavailable {
                    delete.extend(old.iter().cloned());
                    unavailable += 1;
                }
            }
        } else {
            let mut surged = per_node
                .values()
                .filter(|(new, old)| !new.is_empty() && !old.is_empty())
                .count() as i32;
            for (node, (new, old)) in per_node.iter() {
                if old.is_empty() {
                    continue;
                }
                if new.is_empty() {
                    if surged < max_surge {
                        create.push((*node).to_owned());
                        surged += 1;
                    }
                } else if new.iter().any(|p| pods::is_available(p, min_ready, now)) {
                    delete.extend(old.iter().cloned());
                }
            }
        }
        (create, delete)
    }

    async fn apply(
        &self,
        ds: &DaemonSet,
        key: &ObjectKey,
        create: &[String],
        delete: &[Arc<Pod>],
        hash: &str,
    ) -> Result<()> {
        let target = reference(ds);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        if !create.is_empty() {
            self.expectations.expect_creations(key, create.len());
            let template = ds.spec.clone().unwrap_or_default().template;
            let (done, err) = pods::slow_start_batch(create.len(), 1, |i| {
                let node = create[i].clone();
                let mut pod = pods::from_template(
                    &template,
                    &key.namespace,
                    owner::controller_reference(ds),
                    None,
                    Some(pods::generate_name_prefix(&key.name)),
                );
                let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
                labels.insert(REVISION_LABEL.into(), hash.to_owned());
                labels.insert(
                    TEMPLATE_GENERATION.into(),
                    ds.metadata.generation.unwrap_or(0).to_string(),
                );
                if let Some(spec) = pod.spec.as_mut() {
                    add_daemon_tolerations(spec);
                    pin_to_node(spec, &node);
                }
                let (api, target) = (api.clone(), target.clone());
                async move {
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(created) => {
                            self.recorder.publish(
                                &target,
                                EventType::Normal,
                                "SuccessfulCreate",
                                &format!("Created pod: {}", created.name_any()),
                            );
                            Ok(())
                        }
                        Err(e) => {
                            self.expectations.creation_observed(key);
                            if pods::is_namespace_terminating(&e) {
                                return Ok(());
                            }
                            self.recorder.publish(
                                &target,
                                EventType::Warning,
                                "FailedCreate",
                                &format!("Error creating: {}", api_message(&e)),
                            );
                            Err(Error::Api {
                                action: format!("creating a daemon pod for node {node}"),
                                source: e,
                            })
                        }
                    }
                }
            })
            .await;
            let skipped = create.len() - done - usize::from(err.is_some());
            if skipped > 0 {
                self.expectations.lower_creations(key, skipped);
            }
            if let Some(e) = err {
                return Err(e);
            }
        }
        let mut seen = std::collections::HashSet::new();
        let victims: Vec<&Arc<Pod>> = delete
            .iter()
            .filter(|p| seen.insert(p.metadata.uid.clone()))
            .collect();
        self.expectations
            .expect_deletions(key, victims.iter().filter_map(|p| p.metadata.uid.clone()));
        for pod in victims {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&pod.name_any(), &params).await {
                Ok(_) => self.recorder.publish(
                    &target,
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {}", pod.name_any()),
                ),
                Err(e) if crate::is_not_found(&e) || crate::is_conflict(&e) => {
                    self.expectations.deletion_observed(key, &uid)
                }
                Err(e) => {
                    self.expectations.deletion_observed(key, &uid);
                    return Err(Error::Api {
                        action: format!("deleting pod {}/{}", key.namespace, pod.name_any()),
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use kube::api::ObjectMeta;

    fn node(name: &str, taints: Vec<Taint>, unschedulable: bool) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("role".to_owned(), "worker".to_owned())].into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                unschedulable: Some(unschedulable),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn daemon_pods_tolerate_node_trouble_but_not_foreign_taints() {
        let spec = PodSpec::default();
        assert_eq!(should_run(&spec, &node("a", vec![], false)), (true, true));
        assert_eq!(
            should_run(&spec, &node("a", vec![], true)),
            (true, true),
            "unschedulable nodes still run daemons"
        );
        let unreachable = Taint {
            key: "node.kubernetes.io/unreachable".into(),
            effect: "NoExecute".into(),
            value: None,
            time_added: None,
        };
        assert_eq!(
            should_run(&spec, &node("a", vec![unreachable], false)),
            (true, true)
        );
        let gpu = Taint {
            key: "gpu".into(),
            effect: "NoSchedule".into(),
            value: Some("yes".into()),
            time_added: None,
        };
        assert_eq!(
            should_run(&spec, &node("a", vec![gpu.clone()], false)),
            (false, true),
            "existing pods may stay on a NoSchedule taint"
        );
        let evict = Taint {
            effect: "NoExecute".into(),
            ..gpu
        };
        assert_eq!(
            should_run(&spec, &node("a", vec![evict], false)),
            (false, false)
        );
        let picky = PodSpec {
            node_selector: Some([("role".to_owned(), "db".to_owned())].into()),
            ..Default::default()
        };
        assert_eq!(
            should_run(&picky, &node("a", vec![], false)),
            (false, false)
        );
    }

    #[test]
    fn pinning_replaces_required_affinity_with_the_node_name() {
        let mut spec = PodSpec::default();
        pin_to_node(&mut spec, "n1");
        assert_eq!(scheduling::target_node(&spec).as_deref(), Some("n1"));
        pin_to_node(&mut spec, "n2");
        assert_eq!(scheduling::target_node(&spec).as_deref(), Some("n2"));
        add_daemon_tolerations(&mut spec);
        add_daemon_tolerations(&mut spec);
        assert_eq!(spec.tolerations.as_ref().unwrap().len(), 6);
    }
}
