//! The Deployment controller (upstream pkg/controller/deployment): a Deployment owns one
//! ReplicaSet per pod template, named `<deployment>-<pod-template-hash>`. It rolls from the
//! old ReplicaSets to the new one with the RollingUpdate strategy (never more than
//! `replicas + maxSurge` pods, never fewer than `replicas - maxUnavailable` available) or
//! Recreate (all old pods gone first), scales proportionally when replicas change mid-rollout,
//! numbers revisions (`deployment.kubernetes.io/revision`, reused templates keep a
//! `revision-history`), keeps `revisionHistoryLimit` old ReplicaSets, honours `paused`, and
//! reports the Available and Progressing conditions with `progressDeadlineSeconds`. Rollback
//! (`kubectl rollout undo`) and restart (`kubectl rollout restart`) are template changes made by
//! kubectl, so they are ordinary rollouts here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::events::{EventType, Recorder, reference};
use skiff_runtime::owner::{self, Claim};
use skiff_runtime::{Change, Informer, ObjectKey, WorkQueue};

use crate::context::{Context, synced};
use crate::replicaset::{POD_OWNER_INDEX, pod_informer};
use crate::{During, Error, Result, pods};

/// Revision of a ReplicaSet (and the Deployment's current one).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a reused ReplicaSet had.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// replicas + maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The label distinguishing the ReplicaSets (and pods) of different templates.
pub const HASH_LABEL: &str = "pod-template-hash";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// Upstream caps the revision-history annotation at this many characters.
const REVISION_HISTORY_LIMIT_CHARS: usize = 2000;

const COMPONENT: &str = "deployment-controller";

/// Start the controller.
pub async fn start(ctx: Context) {
    let deployments = ctx.informer::<Deployment>();
    let rsets = ctx.informer::<ReplicaSet>();
    let pods = pod_informer(&ctx);
    let queue: WorkQueue<ObjectKey> = WorkQueue::default();
    controller::feed(&deployments, &queue, &ctx.stop, |c| {
        vec![ObjectKey::of(c.object().as_ref())]
    });
    {
        let deployments = deployments.clone();
        controller::feed(&rsets, &queue, &ctx.stop, move |c| {
            rs_change_keys(&deployments, c)
        });
    }
    {
        let rsets = rsets.clone();
        controller::feed(&pods, &queue, &ctx.stop, move |c| {
            // Recreate waits for old pods to be gone; their deletion is the cue.
            let Change::Deleted(pod) = c else {
                return Vec::new();
            };
            let ns = pod.namespace().unwrap_or_default();
            let Some(r) = owner::controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet")
            else {
                return Vec::new();
            };
            rsets
                .get_named(&ns, &r.name)
                .and_then(|rs| owner::controller_of(&rs.metadata).cloned())
                .filter(|d| d.kind == "Deployment")
                .map(|d| vec![ObjectKey::new(ns, d.name)])
                .unwrap_or_default()
        });
    }
    if !ctx
        .wait_synced(vec![synced(&deployments), synced(&rsets), synced(&pods)])
        .await
    {
        return;
    }
    let reconciler = Arc::new(DeploymentController {
        client: ctx.client.clone(),
        deployments,
        rsets,
        pods,
        recorder: ctx.recorder(COMPONENT),
    });
    controller::run(reconciler, queue, ctx.config.workers(5), ctx.stop.clone()).await;
}

fn rs_change_keys(
    deployments: &Informer<Deployment>,
    change: &Change<ReplicaSet>,
) -> Vec<ObjectKey> {
    let rs = change.object();
    let ns = rs.namespace().unwrap_or_default();
    let mut keys = Vec::new();
    let mut owner_of = |rs: &ReplicaSet| {
        if let Some(r) = owner::controller_of(&rs.metadata) {
            if r.kind == "Deployment" {
                keys.push(ObjectKey::new(ns.clone(), r.name.clone()));
            }
            true
        } else {
            false
        }
    };
    let owned = owner_of(rs);
    if let Some(old) = change.previous() {
        owner_of(old);
    }
    if !owned && !matches!(change, Change::Deleted(_)) {
        let labels = pods::labels(&rs.metadata);
        for d in deployments.list_namespace(&ns) {
            if pods::selector(
                Some(
                    &d.spec
                        .as_ref()
                        .map(|s| s.selector.clone())
                        .unwrap_or_default(),
                ),
                "",
            )
            .is_ok_and(|s| !s.is_empty() && s.matches(&labels))
            {
                keys.push(ObjectKey::of(d.as_ref()));
            }
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

struct DeploymentController {
    client: Client,
    deployments: Informer<Deployment>,
    rsets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    recorder: Recorder,
}

impl Reconciler for DeploymentController {
    type Key = ObjectKey;
    type Error = Error;

    fn name(&self) -> &'static str {
        COMPONENT
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(cached) = self.deployments.get(key) else {
            return Ok(Action::Done);
        };
        let mut d = (*cached).clone();
        let spec = d.spec.clone().unwrap_or_default();
        let selector = pods::selector(Some(&spec.selector), &key.to_string())?;
        if selector.is_empty() {
            self.recorder.publish(
                &reference(&d),
                EventType::Warning,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            );
            let status = d.status.get_or_insert_with(Default::default);
            if status.observed_generation < d.metadata.generation {
                status.observed_generation = d.metadata.generation;
                self.write_status(&d).await?;
            }
            return Ok(Action::Done);
        }
        let rs_list = self.claim_replica_sets(&d, &selector).await?;
        if d.metadata.deletion_timestamp.is_some() {
            let mut run = Sync::new(self, d, rs_list);
            run.split(false).await?;
            return run.sync_deployment_status().await;
        }
        check_paused_conditions(&mut d);
        let paused = spec.paused.unwrap_or(false);
        let mut run = Sync::new(self, d, rs_list);
        if paused || run.is_scaling_event().await? {
            return run.sync(paused).await;
        }
        match spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) {
            Some("Recreate") => run.rollout_recreate().await,
            _ => run.rollout_rolling().await,
        }
    }
}

impl DeploymentController {
    /// The ReplicaSets this Deployment controls, after adopting matching orphans and
    /// releasing owned ones that stopped matching.
    async fn claim_replica_sets(
        &self,
        d: &Deployment,
        selector: &skiff_api::selector::LabelSelector,
    ) -> Result<Vec<ReplicaSet>> {
        let ns = d.namespace().unwrap_or_default();
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let deleting = d.metadata.deletion_timestamp.is_some();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
        let mut out = Vec::new();
        for rs in self.rsets.list_namespace(&ns) {
            let matches = selector.matches(&pods::labels(&rs.metadata));
            match owner::classify(&rs.metadata, &uid, deleting, matches) {
                Claim::Owned => out.push((*rs).clone()),
                Claim::Adopt => {
                    let fresh = Api::<Deployment>::namespaced(self.client.clone(), &ns)
                        .get_opt(&d.name_any())
                        .await
                        .during(|| format!("re-reading deployment {ns}/{}", d.name_any()))?;
                    if fresh.is_some_and(|f| {
                        f.metadata.uid == d.metadata.uid && f.metadata.deletion_timestamp.is_none()
                    }) {
                        match owner::adopt(
                            &api,
                            &rs.name_any(),
                            rs.metadata.uid.as_deref().unwrap_or(""),
                            &owner::controller_reference(d),
                        )
                        .await
                        {
                            Ok(adopted) => out.push(adopted),
                            Err(e) if crate::is_not_found(&e) || crate::is_conflict(&e) => {}
                            Err(e) => {
                                return Err(Error::Api {
                                    action: format!("adopting replica set {ns}/{}", rs.name_any()),
                                    source: e,
                                });
                            }
                        }
                    }
                }
                Claim::Release => {
                    owner::release(
                        &api,
                        &rs.name_any(),
                        rs.metadata.uid.as_deref().unwrap_or(""),
                        &uid,
                    )
                    .await
                    .during(|| format!("releasing replica set {ns}/{}", rs.name_any()))?;
                }
                Claim::Ignore => {}
            }
        }
        Ok(out)
    }

    async fn write_status(&self, d: &Deployment) -> Result<Deployment> {
        let ns = d.namespace().unwrap_or_default();
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        api.replace_status(&d.name_any(), &PostParams::default(), d)
            .await
            .during(|| format!("updating status of deployment {ns}/{}", d.name_any()))
    }
}

/// One sync of one Deployment: the Deployment (with status changes accumulating), its
/// ReplicaSets as this sync last wrote them, and which one is new.
struct Sync<'a> {
    c: &'a DeploymentController,
    d: Deployment,
    all: Vec<ReplicaSet>,
    /// Index of the new ReplicaSet in `all`.
    new: Option<usize>,
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
        s.terminating_replicas.unwrap_or(0),
    )
}

fn annotation(meta: &ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref()?.get(key).cloned()
}

/// A ReplicaSet's revision (0 when unset or unparsable).
pub fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The template without the `pod-template-hash` label, for comparing a Deployment's
/// template with its ReplicaSets' (upstream `EqualIgnoreHash`).
fn without_hash(t: &PodTemplateSpec) -> serde_json::Value {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    let mut v = serde_json::to_value(&t).unwrap_or_default();
    // An empty label map and no map are the same template.
    if v.pointer("/metadata/labels")
        .is_some_and(|l| l.as_object().is_some_and(|m| m.is_empty()))
    {
        v["metadata"].as_object_mut().map(|m| m.remove("labels"));
    }
    v
}

fn replicas_of(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// An intstr scaled against `total` (percentages round up or down).
fn scaled(v: Option<&IntOrString>, total: i32, round_up: bool, default: &str) -> i32 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => percent(s, total, round_up),
        None => percent(default, total, round_up),
    }
}

fn percent(s: &str, total: i32, round_up: bool) -> i32 {
    let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
        return s.parse().unwrap_or(0);
    };
    let v = p * i64::from(total);
    (if round_up { (v + 99) / 100 } else { v / 100 }) as i32
}

/// Upstream `ResolveFenceposts`: (maxSurge, maxUnavailable) in pods.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    if !is_rolling(d) {
        return (0, 0);
    }
    let replicas = replicas_of(d);
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let surge = scaled(rolling.max_surge.as_ref(), replicas, true, "25%").max(0);
    let mut unavailable = scaled(rolling.max_unavailable.as_ref(), replicas, false, "25%").max(0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas))
}

fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

fn condition<'d>(status: &'d DeploymentStatus, type_: &str) -> Option<&'d DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn new_condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let now = Time(Timestamp::now());
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Upstream `SetDeploymentCondition`: an unchanged status and reason is left alone; the same
/// status keeps its transition time.
fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(current) = conditions.iter().find(|c| c.type_ == cond.type_) {
        if current.status == cond.status && current.reason == cond.reason {
            return;
        }
        if current.status == cond.status {
            cond.last_transition_time = current.last_transition_time.clone();
        }
    }
    conditions.retain(|c| c.type_ != cond.type_);
    conditions.push(cond);
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|c| c.type_ != type_);
    }
}

/// Upstream `checkPausedConditions`.
fn check_paused_conditions(d: &mut Deployment) {
    if progress_deadline(d).is_none() {
        return;
    }
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let status = d.status.get_or_insert_with(Default::default);
    let reason = condition(status, "Progressing").and_then(|c| c.reason.clone());
    let paused_reason = reason.as_deref() == Some("DeploymentPaused");
    if paused && !paused_reason {
        set_condition(
            status,
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
            ),
        );
    } else if !paused && paused_reason {
        set_condition(
            status,
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
            ),
        );
    }
}

/// Upstream `DeploymentComplete`.
fn is_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let replicas = replicas_of(d);
    s.updated_replicas.unwrap_or(0) == replicas
        && s.replicas.unwrap_or(0) == replicas
        && s.available_replicas.unwrap_or(0) == replicas
        && s.observed_generation >= d.metadata.generation
}

/// Upstream `DeploymentProgressing`.
fn is_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || new_old < old_old
        || new.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || new.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

/// Upstream `DeploymentTimedOut`; also how long until it would time out.
fn timed_out(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> (bool, Option<Duration>) {
    let Some(deadline) = progress_deadline(d) else {
        return (false, None);
    };
    let Some(cond) = condition(s, "Progressing") else {
        return (false, None);
    };
    match cond.reason.as_deref() {
        Some("NewReplicaSetAvailable") => return (false, None),
        Some("ProgressDeadlineExceeded") => return (true, None),
        _ => {}
    }
    let Some(from) = cond.last_update_time.as_ref().map(|t| t.0) else {
        return (false, None);
    };
    let due = from + Duration::from_secs(deadline.max(0) as u64);
    if due < now {
        (true, None)
    } else {
        let left = Duration::try_from(due.duration_since(now)).unwrap_or_default();
        (false, Some(left))
    }
}

impl<'a> Sync<'a> {
    fn new(c: &'a DeploymentController, d: Deployment, all: Vec<ReplicaSet>) -> Self {
        Sync {
            c,
            d,
            all,
            new: None,
        }
    }

    fn ns(&self) -> String {
        self.d.namespace().unwrap_or_default()
    }

    fn rs_api(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.c.client.clone(), &self.ns())
    }

    fn new_rs(&self) -> Option<&ReplicaSet> {
        self.new.map(|i| &self.all[i])
    }

    fn old_indexes(&self) -> Vec<usize> {
        (0..self.all.len())
            .filter(|i| Some(*i) != self.new)
            .collect()
    }

    /// Find the new ReplicaSet (upstream `FindNewReplicaSet`: the oldest one whose template
    /// equals the Deployment's), optionally creating it, and sync revision annotations
    /// (upstream `getAllReplicaSetsAndSyncRevision`).
    async fn split(&mut self, create: bool) -> Result<()> {
        let template = without_hash(&self.d.spec.clone().unwrap_or_default().template);
        let mut candidates: Vec<usize> = (0..self.all.len())
            .filter(|&i| {
                self.all[i]
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| without_hash(t) == template)
            })
            .collect();
        candidates.sort_by_key(|&i| {
            (
                self.all[i]
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0),
                self.all[i].name_any(),
            )
        });
        self.new = candidates.first().copied();
        let max_old = self
            .old_indexes()
            .iter()
            .map(|&i| revision(&self.all[i]))
            .max()
            .unwrap_or(0);
        let new_revision = (max_old + 1).to_string();
        if let Some(i) = self.new {
            let mut rs = self.all[i].clone();
            let annotations_changed = self.set_new_rs_annotations(&mut rs, &new_revision, true);
            let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let spec = rs.spec.get_or_insert_with(Default::default);
            let min_ready_changed = spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0);
            if annotations_changed || min_ready_changed {
                spec.min_ready_seconds = min_ready;
                rs = self
                    .rs_api()
                    .replace(&rs.name_any(), &PostParams::default(), &rs)
                    .await
                    .during(|| format!("updating replica set {}/{}", self.ns(), rs.name_any()))?;
                self.all[i] = rs;
            }
            let rev = annotation(&self.all[i].metadata, REVISION).unwrap_or_default();
            self.set_deployment_revision(&rev).await?;
            if progress_deadline(&self.d).is_some() {
                let name = self.all[i].name_any();
                let status = self.d.status.get_or_insert_with(Default::default);
                if condition(status, "Progressing").is_none() {
                    set_condition(
                        status,
                        new_condition(
                            "Progressing",
                            "True",
                            "FoundNewReplicaSet",
                            format!("Found new replica set {name:?}"),
                        ),
                    );
                }
            }
            return Ok(());
        }
        if !create {
            return Ok(());
        }
        self.create_new_rs(&new_revision).await
    }

    async fn create_new_rs(&mut self, new_revision: &str) -> Result<()> {
        let spec = self.d.spec.clone().unwrap_or_default();
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = crate::hash::object_hash(&spec.template, collision);
        let mut template = spec.template.clone();
        let meta = template.metadata.get_or_insert_with(Default::default);
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector: LabelSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{hash}", self.d.name_any());
        let replicas = self.new_rs_new_replicas(None);
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.ns()),
                labels: meta.labels.clone(),
                owner_references: Some(vec![owner::controller_reference(&self.d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        self.set_new_rs_annotations(&mut rs, new_revision, false);
        let (surge, _) = fenceposts(&self.d);
        set_replicas_annotations(&mut rs, replicas_of(&self.d), replicas_of(&self.d) + surge);
        rs.spec.as_mut().expect("set above").replicas = Some(replicas);
        let created = match self.rs_api().create(&PostParams::default(), &rs).await {
            Ok(created) => created,
            Err(e) if crate::is_conflict(&e) => {
                // Either our own earlier create the cache has not seen, or a hash collision.
                let existing = self
                    .rs_api()
                    .get_opt(&name)
                    .await
                    .during(|| format!("reading replica set {}/{name}", self.ns()))?;
                let ours = existing.filter(|e| {
                    owner::is_controlled_by(
                        &e.metadata,
                        self.d.metadata.uid.as_deref().unwrap_or(""),
                    ) && e
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.as_ref())
                        .is_some_and(|t| without_hash(t) == without_hash(&spec.template))
                });
                match ours {
                    Some(existing) => {
                        self.all.push(existing);
                        self.new = Some(self.all.len() - 1);
                        return Ok(());
                    }
                    None => {
                        let status = self.d.status.get_or_insert_with(Default::default);
                        status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                        self.c.write_status(&self.d).await?;
                        return Err(Error::Invalid {
                            object: format!("deployment {}/{}", self.ns(), self.d.name_any()),
                            message: format!(
                                "hash collision for replica set {name}; retrying with a new collision count"
                            ),
                        });
                    }
                }
            }
            Err(e) => {
                let message = crate::replicaset::api_message(&e);
                if progress_deadline(&self.d).is_some() {
                    let status = self.d.status.get_or_insert_with(Default::default);
                    set_condition(
                        status,
                        new_condition(
                            "Progressing",
                            "False",
                            "ReplicaSetCreateError",
                            message.clone(),
                        ),
                    );
                    let _ = self.c.write_status(&self.d).await;
                }
                self.c.recorder.publish(
                    &reference(&self.d),
                    EventType::Warning,
                    "FailedCreate",
                    &format!("Failed to create new replica set {name:?}: {message}"),
                );
                return Err(Error::Api {
                    action: format!("creating replica set {}/{name}", self.ns()),
                    source: e,
                });
            }
        };
        if replicas > 0 {
            self.c.recorder.publish(
                &reference(&self.d),
                EventType::Normal,
                "ScalingReplicaSet",
                &format!("Scaled up replica set {name} from 0 to {replicas}"),
            );
        }
        self.set_deployment_revision(new_revision).await?;
        if progress_deadline(&self.d).is_some() {
            let status = self.d.status.get_or_insert_with(Default::default);
            set_condition(
                status,
                new_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set {name:?}"),
                ),
            );
        }
        self.all.push(created);
        self.new = Some(self.all.len() - 1);
        Ok(())
    }

    /// Copy the Deployment's annotations to the new ReplicaSet and advance its revision
    /// (upstream `SetNewReplicaSetAnnotations`); returns whether anything changed.
    fn set_new_rs_annotations(
        &self,
        rs: &mut ReplicaSet,
        new_revision: &str,
        exists: bool,
    ) -> bool {
        let mut changed = false;
        let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
        for (k, v) in self.d.metadata.annotations.iter().flatten() {
            if [
                LAST_APPLIED,
                REVISION,
                REVISION_HISTORY,
                DESIRED_REPLICAS,
                MAX_REPLICAS,
                ROLLBACK_TO,
            ]
            .contains(&k.as_str())
            {
                continue;
            }
            if annotations.get(k) != Some(v) {
                annotations.insert(k.clone(), v.clone());
                changed = true;
            }
        }
        let old = annotations.get(REVISION).cloned().unwrap_or_default();
        let old_n: i64 = old.parse().unwrap_or(0);
        let new_n: i64 = new_revision.parse().unwrap_or(0);
        if old_n < new_n {
            annotations.insert(REVISION.into(), new_revision.into());
            changed = true;
            if !old.is_empty() {
                let history = match annotations.get(REVISION_HISTORY) {
                    Some(h) if !h.is_empty() => {
                        let mut parts: Vec<&str> = h.split(',').collect();
                        parts.push(&old);
                        while parts.join(",").len() > REVISION_HISTORY_LIMIT_CHARS
                            && parts.len() > 1
                        {
                            parts.remove(0);
                        }
                        parts.join(",")
                    }
                    _ => old.clone(),
                };
                annotations.insert(REVISION_HISTORY.into(), history);
            }
        }
        if !exists {
            changed = true;
        }
        changed
    }

    /// Record the current revision on the Deployment (a metadata patch: status writes do
    /// not carry annotations).
    async fn set_deployment_revision(&mut self, rev: &str) -> Result<()> {
        if rev.is_empty() || annotation(&self.d.metadata, REVISION).as_deref() == Some(rev) {
            return Ok(());
        }
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
            self.c.client.clone(),
            &self.ns(),
            &kube::api::ApiResource::erase::<Deployment>(&()),
        );
        let patch =
            json!({ "metadata": { "annotations": { REVISION: rev }, "uid": self.d.metadata.uid } });
        let patched = api
            .patch(
                &self.d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .during(|| {
                format!(
                    "recording the revision of deployment {}/{}",
                    self.ns(),
                    self.d.name_any()
                )
            })?;
        self.d.metadata.annotations = patched.metadata.annotations;
        self.d.metadata.resource_version = patched.metadata.resource_version;
        Ok(())
    }

    /// Upstream `isScalingEvent`: an active ReplicaSet was scaled for a different replica
    /// count than the Deployment has now.
    async fn is_scaling_event(&mut self) -> Result<bool> {
        self.split(false).await?;
        let replicas = replicas_of(&self.d).to_string();
        Ok(self
            .all
            .iter()
            .filter(|rs| spec_replicas(rs) > 0)
            .any(|rs| {
                annotation(&rs.metadata, DESIRED_REPLICAS)
                    .is_some_and(|desired| desired != replicas)
            }))
    }

    /// Scale only (paused, or a scaling event): upstream `sync`.
    async fn sync(&mut self, paused: bool) -> Result<Action> {
        self.split(false).await?;
        self.scale().await?;
        if paused {
            self.cleanup().await?;
        }
        self.sync_deployment_status().await
    }

    /// Upstream `scale`: proportional scaling of every active ReplicaSet.
    async fn scale(&mut self) -> Result<()> {
        let replicas = replicas_of(&self.d);
        let active: Vec<usize> = (0..self.all.len())
            .filter(|&i| spec_replicas(&self.all[i]) > 0)
            .collect();
        // One active (or none): it (or the newest) takes all replicas.
        if active.len() <= 1 {
            let target = active.first().copied().or(self.new).or_else(|| {
                (0..self.all.len()).max_by_key(|&i| {
                    self.all[i]
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0)
                })
            });
            if let Some(i) = target
                && spec_replicas(&self.all[i]) != replicas
            {
                self.scale_rs(i, replicas).await?;
            }
            return Ok(());
        }
        // The new ReplicaSet is saturated: the old ones go to zero.
        if let Some(n) = self.new {
            let rs = &self.all[n];
            let saturated = spec_replicas(rs) == replicas
                && annotation(&rs.metadata, DESIRED_REPLICAS)
                    .is_some_and(|v| v == replicas.to_string())
                && status_of(rs).2 == replicas;
            if saturated {
                for i in self.old_indexes() {
                    if spec_replicas(&self.all[i]) > 0 {
                        self.scale_rs(i, 0).await?;
                    }
                }
                return Ok(());
            }
        }
        if !is_rolling(&self.d) {
            return Ok(());
        }
        let (surge, _) = fenceposts(&self.d);
        let allowed = replicas + surge;
        let current: i32 = self.all.iter().map(spec_replicas).sum();
        let to_add = allowed - current;
        if to_add == 0 {
            return Ok(());
        }
        let mut order: Vec<usize> = active.clone();
        // Scale up the largest (newest first) first; scale down the largest (oldest first).
        order.sort_by(|&a, &b| {
            let (ra, rb) = (&self.all[a], &self.all[b]);
            let ta = ra.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let tb = rb.metadata.creation_timestamp.as_ref().map(|t| t.0);
            spec_replicas(rb)
                .cmp(&spec_replicas(ra))
                .then_with(|| if to_add > 0 { tb.cmp(&ta) } else { ta.cmp(&tb) })
        });
        let mut added = 0;
        let mut sizes: Vec<(usize, i32)> = Vec::new();
        for &i in &order {
            let rs = &self.all[i];
            let proportion = self.proportion(rs, to_add, added, allowed);
            sizes.push((i, spec_replicas(rs) + proportion));
            added += proportion;
        }
        let leftover = to_add - added;
        if let Some(first) = sizes.first_mut() {
            first.1 = (first.1 + leftover).max(0);
        }
        for (i, size) in sizes {
            self.scale_rs(i, size).await?;
        }
        Ok(())
    }

    /// Upstream `GetProportion`.
    fn proportion(&self, rs: &ReplicaSet, to_add: i32, added: i32, allowed: i32) -> i32 {
        if spec_replicas(rs) == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = {
            let replicas = replicas_of(&self.d);
            if replicas == 0 {
                -spec_replicas(rs)
            } else {
                let annotated = annotation(&rs.metadata, MAX_REPLICAS)
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or_else(|| {
                        self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0)
                    });
                if annotated == 0 {
                    0
                } else {
                    let size = (f64::from(spec_replicas(rs)) * f64::from(allowed)
                        / f64::from(annotated))
                    .round() as i32;
                    size - spec_replicas(rs)
                }
            }
        };
        let left = to_add - added;
        if to_add > 0 {
            fraction.min(left)
        } else {
            fraction.max(left)
        }
    }

    /// Set a ReplicaSet's replicas and scaling annotations; returns whether its size changed.
    async fn scale_rs(&mut self, i: usize, size: i32) -> Result<bool> {
        let (surge, _) = fenceposts(&self.d);
        let replicas = replicas_of(&self.d);
        let mut rs = self.all[i].clone();
        let old = spec_replicas(&rs);
        let size_changed = old != size;
        let annotations_changed = set_replicas_annotations(&mut rs, replicas, replicas + surge);
        if !size_changed && !annotations_changed {
            return Ok(false);
        }
        rs.spec.get_or_insert_with(Default::default).replicas = Some(size);
        let name = rs.name_any();
        let updated = self
            .rs_api()
            .replace(&name, &PostParams::default(), &rs)
            .await
            .during(|| format!("scaling replica set {}/{name}", self.ns()))?;
        self.all[i] = updated;
        if size_changed {
            let direction = if size > old { "up" } else { "down" };
            self.c.recorder.publish(
                &reference(&self.d),
                EventType::Normal,
                "ScalingReplicaSet",
                &format!("Scaled {direction} replica set {name} from {old} to {size}"),
            );
        }
        Ok(size_changed)
    }

    /// Upstream `NewRSNewReplicas` for the new ReplicaSet (`current` its replicas now).
    fn new_rs_new_replicas(&self, current: Option<i32>) -> i32 {
        let replicas = replicas_of(&self.d);
        if !is_rolling(&self.d) {
            return replicas;
        }
        let current = current.unwrap_or(0);
        let (surge, _) = fenceposts(&self.d);
        let total: i32 = self.all.iter().map(spec_replicas).sum();
        let max_total = replicas + surge;
        if total >= max_total {
            return current;
        }
        let up = (max_total - total).min(replicas - current).max(0);
        current + up
    }

    /// Upstream `rolloutRolling`.
    async fn rollout_rolling(&mut self) -> Result<Action> {
        self.split(true).await?;
        // Scale up the new ReplicaSet.
        if let Some(n) = self.new {
            let replicas = replicas_of(&self.d);
            let current = spec_replicas(&self.all[n]);
            let target = if current > replicas {
                Some(replicas)
            } else if current < replicas {
                Some(self.new_rs_new_replicas(Some(current)))
            } else {
                None
            };
            if let Some(target) = target
                && target != current
                && self.scale_rs(n, target).await?
            {
                return self.sync_rollout_status().await;
            }
        }
        if self.reconcile_old_replica_sets().await? {
            return self.sync_rollout_status().await;
        }
        let status = self.calculate_status();
        if is_complete(&self.d, &status) {
            self.cleanup().await?;
        }
        self.sync_rollout_status().await
    }

    /// Upstream `reconcileOldReplicaSets`: scale old ReplicaSets down as far as availability
    /// allows, unhealthy replicas first.
    async fn reconcile_old_replica_sets(&mut self) -> Result<bool> {
        let mut old = self.old_indexes();
        let old_pods: i32 = old.iter().map(|&i| spec_replicas(&self.all[i])).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let all_pods: i32 = self.all.iter().map(spec_replicas).sum();
        let (_, max_unavailable) = fenceposts(&self.d);
        let min_available = replicas_of(&self.d) - max_unavailable;
        let new_unavailable = self
            .new_rs()
            .map_or(0, |rs| spec_replicas(rs) - status_of(rs).2);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        old.sort_by_key(|&i| {
            (
                self.all[i]
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0),
                self.all[i].name_any(),
            )
        });
        // Clean up unhealthy replicas first.
        let mut cleaned = 0;
        for &i in &old {
            if cleaned >= max_scaled_down {
                break;
            }
            let rs = &self.all[i];
            let replicas = spec_replicas(rs);
            if replicas == 0 {
                continue;
            }
            let unhealthy = replicas - status_of(rs).2;
            if unhealthy <= 0 {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(unhealthy);
            self.scale_rs(i, replicas - down).await?;
            cleaned += down;
        }
        // Then scale down available ones while staying above minAvailable.
        let available: i32 = self.all.iter().map(|rs| status_of(rs).2).sum();
        let mut scaled_down = 0;
        if available > min_available {
            let total = available - min_available;
            for &i in &old {
                if scaled_down >= total {
                    break;
                }
                let replicas = spec_replicas(&self.all[i]);
                if replicas == 0 {
                    continue;
                }
                let down = replicas.min(total - scaled_down);
                self.scale_rs(i, replicas - down).await?;
                scaled_down += down;
            }
        }
        Ok(cleaned + scaled_down > 0)
    }

    /// Upstream `rolloutRecreate`.
    async fn rollout_recreate(&mut self) -> Result<Action> {
        self.split(false).await?;
        let mut scaled = false;
        for i in self.old_indexes() {
            if spec_replicas(&self.all[i]) > 0 {
                scaled |= self.scale_rs(i, 0).await?;
            }
        }
        if scaled || self.old_pods_running() {
            return self.sync_rollout_status().await;
        }
        if self.new.is_none() {
            self.split(true).await?;
        }
        if let Some(n) = self.new {
            let replicas = replicas_of(&self.d);
            if spec_replicas(&self.all[n]) != replicas {
                self.scale_rs(n, replicas).await?;
            }
        }
        let status = self.calculate_status();
        if is_complete(&self.d, &status) {
            self.cleanup().await?;
        }
        self.sync_rollout_status().await
    }

    /// Upstream `oldPodsRunning`: any pod of an old ReplicaSet that is not finished.
    fn old_pods_running(&self) -> bool {
        let old = self.old_indexes();
        if old.iter().any(|&i| status_of(&self.all[i]).0 > 0) {
            return true;
        }
        old.iter().any(|&i| {
            let uid = self.all[i].metadata.uid.clone().unwrap_or_default();
            self.c
                .pods
                .by_index(POD_OWNER_INDEX, &uid)
                .iter()
                .any(|p| !pods::is_terminal(p))
        })
    }

    /// Upstream `cleanupDeployment`: delete the oldest scaled-down ReplicaSets beyond
    /// `revisionHistoryLimit`.
    async fn cleanup(&mut self) -> Result<()> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut alive: Vec<usize> = self
            .old_indexes()
            .into_iter()
            .filter(|&i| self.all[i].metadata.deletion_timestamp.is_none())
            .collect();
        let diff = alive.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        alive.sort_by_key(|&i| {
            (
                revision(&self.all[i]),
                self.all[i]
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0),
            )
        });
        for &i in alive.iter().take(diff as usize) {
            let rs = &self.all[i];
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if status_of(rs).0 != 0
                || spec_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: rs.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match self.rs_api().delete(&rs.name_any(), &params).await {
                Ok(_) => {}
                Err(e) if crate::is_not_found(&e) || crate::is_conflict(&e) => {}
                Err(e) => {
                    return Err(Error::Api {
                        action: format!("deleting old replica set {}/{}", self.ns(), rs.name_any()),
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }

    /// Upstream `calculateStatus`.
    fn calculate_status(&self) -> DeploymentStatus {
        let replicas = replicas_of(&self.d);
        let (mut total, mut ready, mut available, mut terminating) = (0, 0, 0, 0);
        for rs in &self.all {
            let (t, r, a, term) = status_of(rs);
            total += t;
            ready += r;
            available += a;
            terminating += term;
        }
        let updated = self.new_rs().map_or(0, |rs| status_of(rs).0);
        let old = self.d.status.clone().unwrap_or_default();
        let mut status = DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: Some(total),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            unavailable_replicas: Some((replicas - available).max(0)),
            terminating_replicas: Some(terminating),
            collision_count: old.collision_count,
            conditions: old.conditions.clone(),
        };
        let (_, max_unavailable) = fenceposts(&self.d);
        if available >= replicas - max_unavailable {
            set_condition(
                &mut status,
                new_condition(
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.".into(),
                ),
            );
        } else {
            set_condition(
                &mut status,
                new_condition(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.".into(),
                ),
            );
        }
        status
    }

    /// Upstream `syncDeploymentStatus`.
    async fn sync_deployment_status(&mut self) -> Result<Action> {
        let status = self.calculate_status();
        if Some(&status) != self.d.status.as_ref() {
            self.d.status = Some(status);
            self.c.write_status(&self.d).await?;
        }
        Ok(Action::Done)
    }

    /// Upstream `syncRolloutStatus`: the Progressing condition against the deadline.
    async fn sync_rollout_status(&mut self) -> Result<Action> {
        let mut status = self.calculate_status();
        let now = Timestamp::now();
        if progress_deadline(&self.d).is_none() {
            remove_condition(&mut status, "Progressing");
        }
        let current_reason = condition(&status, "Progressing").and_then(|c| c.reason.clone());
        let complete = is_complete(&self.d, &status);
        let new_name = self.new_rs().map(|rs| rs.name_any()).unwrap_or_default();
        if progress_deadline(&self.d).is_some()
            && current_reason.as_deref() != Some("ProgressDeadlineExceeded")
        {
            if complete {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        format!("ReplicaSet {new_name:?} has successfully progressed."),
                    ),
                );
            } else if is_progressing(&self.d, &status) {
                let mut cond = new_condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet {new_name:?} is progressing."),
                );
                if let Some(current) = condition(&status, "Progressing")
                    && current.status == "True"
                {
                    cond.last_transition_time = current.last_transition_time.clone();
                }
                remove_condition(&mut status, "Progressing");
                set_condition(&mut status, cond);
            } else if timed_out(&self.d, &status, now).0 {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        format!("ReplicaSet {new_name:?} has timed out progressing."),
                    ),
                );
                self.c.recorder.publish(
                    &reference(&self.d),
                    EventType::Warning,
                    "ProgressDeadlineExceeded",
                    &format!(
                        "Deployment {:?} has timed out progressing.",
                        self.d.name_any()
                    ),
                );
            }
        }
        // Surface a ReplicaSet's failure to create or delete pods.
        let failure = self.all.iter().find_map(|rs| {
            rs.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
                .cloned()
        });
        match failure {
            Some(f) => set_condition(
                &mut status,
                new_condition(
                    "ReplicaFailure",
                    &f.status,
                    f.reason.as_deref().unwrap_or(""),
                    f.message.unwrap_or_default(),
                ),
            ),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        if Some(&status) != self.d.status.as_ref() {
            self.d.status = Some(status.clone());
            self.c.write_status(&self.d).await?;
        }
        // Come back when the deadline would pass (upstream `requeueStuckDeployment`).
        if !complete
            && let (false, Some(left)) = timed_out(&self.d, &status, now)
            && condition(&status, "Progressing").is_some_and(|c| c.status == "True")
        {
            return Ok(Action::RequeueAfter(left + Duration::from_secs(1)));
        }
        Ok(Action::Done)
    }
}

/// Set the desired/max replica annotations; returns whether they changed.
fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if annotations.get(k) != Some(&v) {
            annotations.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailability_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(fenceposts(&deployment(10, pct("25%"), pct("25%"))), (3, 2));
        assert_eq!(fenceposts(&deployment(1, pct("25%"), pct("25%"))), (1, 0));
        // Both zero would never progress: one pod may be unavailable.
        assert_eq!(
            fenceposts(&deployment(3, IntOrString::Int(0), IntOrString::Int(0))),
            (0, 1)
        );
        assert_eq!(
            fenceposts(&deployment(2, IntOrString::Int(0), IntOrString::Int(5))),
            (0, 2)
        );
        let mut recreate = deployment(3, IntOrString::Int(1), IntOrString::Int(1));
        recreate.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        });
        assert_eq!(fenceposts(&recreate), (0, 0));
    }

    #[test]
    fn the_hash_label_does_not_make_templates_differ() {
        let a = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_owned(), "web".to_owned())].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut b = a.clone();
        b.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), "abc".into());
        assert_eq!(without_hash(&a), without_hash(&b));
        b.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert("x".into(), "y".into());
        assert_ne!(without_hash(&a), without_hash(&b));
    }

    #[test]
    fn conditions_keep_transition_times_while_status_holds() {
        let mut s = DeploymentStatus::default();
        let mut first = new_condition("Progressing", "True", "ReplicaSetUpdated", "a".into());
        first.last_transition_time = Some(Time(Timestamp::UNIX_EPOCH));
        set_condition(&mut s, first);
        set_condition(
            &mut s,
            new_condition("Progressing", "True", "NewReplicaSetAvailable", "b".into()),
        );
        let c = condition(&s, "Progressing").unwrap();
        assert_eq!(c.reason.as_deref(), Some("NewReplicaSetAvailable"));
        assert_eq!(
            c.last_transition_time.as_ref().unwrap().0,
            Timestamp::UNIX_EPOCH
        );
        set_condition(
            &mut s,
            new_condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                "c".into(),
            ),
        );
        assert_ne!(
            condition(&s, "Progressing")
                .unwrap()
                .last_transition_time
                .as_ref()
                .unwrap()
                .0,
            Timestamp::UNIX_EPOCH
        );
    }

    #[test]
    fn a_deployment_times_out_only_after_its_deadline() {
        let mut d = deployment(1, IntOrString::Int(1), IntOrString::Int(0));
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(60);
        let mut s = DeploymentStatus::default();
        let mut cond = new_condition("Progressing", "True", "ReplicaSetUpdated", "x".into());
        let now = Timestamp::now();
        cond.last_update_time = Some(Time(now - Duration::from_secs(30)));
        set_condition(&mut s, cond.clone());
        let (out, left) = timed_out(&d, &s, now);
        assert!(!out);
        assert!(left.unwrap() <= Duration::from_secs(30));
        cond.last_update_time = Some(Time(now - Duration::from_secs(61)));
        s.conditions = Some(vec![cond]);
        assert!(timed_out(&d, &s, now).0);
    }
}
