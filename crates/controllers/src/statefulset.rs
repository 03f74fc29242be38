//! The StatefulSet controller (upstream pkg/controller/statefulset): pods with stable names
//! `<set>-<ordinal>` (from `spec.ordinals.start`), stable hostnames under `serviceName`, and
//! one PersistentVolumeClaim per `volumeClaimTemplates` entry and pod
//! (`<template>-<set>-<ordinal>`), created before the pod and kept — or deleted with the set
//! or on scale-down, per `persistentVolumeClaimRetentionPolicy`, through owner references the
//! garbage collector acts on.
//!
//! With `OrderedReady`, pods are created one at a time in ordinal order, each waiting for the
//! previous to be Running and Ready, and removed from the highest ordinal down; `Parallel`
//! does both at once. Templates are recorded as ControllerRevisions; `RollingUpdate` replaces
//! pods from the highest ordinal down to `partition`, one healthy pod at a time; `OnDelete`
//! only gives pods deleted by someone else the new template.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::events::{EventType, Recorder, reference};
use skiff_runtime::owner;
use skiff_runtime::{Informer, ObjectKey, WorkQueue};

use crate::context::{Context, synced};
use crate::history::{self, REVISION_LABEL};
use crate::replicaset::{api_message, pod_informer};
use crate::{During, Error, Result, pods};

/// The label with a pod's name (for per-pod Services).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with a pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
const COMPONENT: &str = "statefulset-controller";

/// Start the controller.
pub async fn start(ctx: Context) {
    let sets = ctx.informer::<StatefulSet>();
    let pods = pod_informer(&ctx);
    let revisions = history::informer(&ctx);
    let claims = ctx.informer::<PersistentVolumeClaim>();
    let queue: WorkQueue<ObjectKey> = WorkQueue::default();
    controller::feed(&sets, &queue, &ctx.stop, |c| {
        vec![ObjectKey::of(c.object().as_ref())]
    });
    controller::feed(&pods, &queue, &ctx.stop, |c| {
        let mut keys = Vec::new();
        for pod in std::iter::once(c.object()).chain(c.previous()) {
            if let Some(r) = owner::controller_of(&pod.metadata).filter(|r| r.kind == "StatefulSet")
            {
                keys.push(ObjectKey::new(
                    pod.namespace().unwrap_or_default(),
                    r.name.clone(),
                ));
            }
        }
        keys.dedup();
        keys
    });
    if !ctx
        .wait_synced(vec![
            synced(&sets),
            synced(&pods),
            synced(&revisions),
            synced(&claims),
        ])
        .await
    {
        return;
    }
    let reconciler = Arc::new(SetController {
        client: ctx.client.clone(),
        sets,
        pods,
        revisions,
        claims,
        recorder: ctx.recorder(COMPONENT),
    });
    controller::run(reconciler, queue, ctx.config.workers(5), ctx.stop.clone()).await;
}

struct SetController {
    client: Client,
    sets: Informer<StatefulSet>,
    pods: Informer<Pod>,
    revisions: Informer<ControllerRevision>,
    claims: Informer<PersistentVolumeClaim>,
    recorder: Recorder,
}

/// A pod's ordinal from its name (`web-3` → 3).
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

/// The claim name of a template for a pod.
pub fn claim_name(template: &str, pod: &str) -> String {
    format!("{template}-{pod}")
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

/// Running, Ready (and available for minReadySeconds), not terminating.
fn healthy(pod: &Pod, min_ready: i32, now: Timestamp) -> bool {
    pods::phase(pod) == "Running"
        && pod.metadata.deletion_timestamp.is_none()
        && pods::is_available(pod, min_ready, now)
}

impl Reconciler for SetController {
    type Key = ObjectKey;
    type Error = Error;

    fn name(&self) -> &'static str {
        COMPONENT
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(cached) = self.sets.get(key) else {
            return Ok(Action::Done);
        };
        let set = (*cached).clone();
        let spec = set.spec.clone().unwrap_or_default();
        let selector = pods::selector(Some(&spec.selector), &key.to_string())?;
        let owned = crate::claim::claim_pods(&self.client, &self.pods, &set, &selector, |p| {
            ordinal_of(&key.name, &p.name_any()).is_some()
        })
        .await?;
        if set.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let existing = history::owned(&self.revisions, &uid);
        let status = set.status.clone().unwrap_or_default();
        let revs = history::ensure_update_revision(
            &self.client,
            &set,
            &spec.template,
            &existing,
            status.collision_count,
        )
        .await?;
        let update = revs.update.clone();
        let current = status
            .current_revision
            .as_ref()
            .and_then(|name| revs.all.iter().find(|r| &r.name_any() == name))
            .cloned()
            .unwrap_or_else(|| update.clone());
        let mut run = SetSync {
            c: self,
            set,
            pods: owned,
            current,
            update,
            collision_count: revs.collision_count.or(status.collision_count),
            now: Timestamp::now(),
        };
        let requeue = run.sync().await?;
        let live: Vec<String> = run
            .pods
            .iter()
            .filter_map(|p| revision_of(p).map(str::to_owned))
            .chain([run.current.name_any(), run.update.name_any()])
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

struct SetSync<'a> {
    c: &'a SetController,
    set: StatefulSet,
    pods: Vec<Arc<Pod>>,
    current: ControllerRevision,
    update: ControllerRevision,
    collision_count: Option<i32>,
    now: Timestamp,
}

impl<'a> SetSync<'a> {
    fn name(&self) -> String {
        self.set.name_any()
    }

    fn ns(&self) -> String {
        self.set.namespace().unwrap_or_default()
    }

    fn spec(&self) -> k8s_openapi::api::apps::v1::StatefulSetSpec {
        self.set.spec.clone().unwrap_or_default()
    }

    fn event(&self, kind: EventType, reason: &str, message: String) {
        self.c
            .recorder
            .publish(&reference(&self.set), kind, reason, &message);
    }

    fn rolling(&self) -> bool {
        self.spec()
            .update_strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            .is_none_or(|t| t == "RollingUpdate")
    }

    fn partition(&self) -> i32 {
        self.spec()
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0)
    }

    fn parallel(&self) -> bool {
        self.spec().pod_management_policy.as_deref() == Some("Parallel")
    }

    fn start_ordinal(&self) -> i32 {
        self.spec().ordinals.and_then(|o| o.start).unwrap_or(0)
    }

    fn min_ready(&self) -> i32 {
        self.spec().min_ready_seconds.unwrap_or(0)
    }

    fn pod(&self, ordinal: i32) -> Option<&Arc<Pod>> {
        let name = format!("{}-{ordinal}", self.name());
        self.pods.iter().find(|p| p.name_any() == name)
    }

    /// The revision a newly created pod at `ordinal` gets (upstream
    /// `newVersionedStatefulSetPod`): below the partition, the current revision.
    fn revision_for(&self, ordinal: i32) -> &ControllerRevision {
        if self.rolling() && ordinal < self.start_ordinal() + self.partition() {
            &self.current
        } else {
            &self.update
        }
    }

    async fn sync(&mut self) -> Result<Action> {
        let replicas = self.spec().replicas.unwrap_or(1).max(0);
        let start = self.start_ordinal();
        let range = start..start + replicas;
        let mut requeue = Action::Done;
        let mut blocked = false;
        // Replicas, in ordinal order.
        for ordinal in range.clone() {
            let pod = self.pod(ordinal).cloned();
            match pod {
                Some(pod)
                    if pods::is_terminal(&pod) && pod.metadata.deletion_timestamp.is_none() =>
                {
                    // A finished pod is replaced (upstream deletes failed pods and recreates them).
                    self.delete_pod(&pod, "recreate").await?;
                    if !self.parallel() {
                        blocked = true;
                        break;
                    }
                }
                Some(pod) => {
                    self.ensure_claims(ordinal, Some(&pod)).await?;
                    if !self.parallel() && !healthy(&pod, self.min_ready(), self.now) {
                        if let Some(left) = pods::available_in(&pod, self.min_ready(), self.now) {
                            requeue = requeue
                                .min(Action::RequeueAfter(left + Duration::from_millis(100)));
                        }
                        blocked = true;
                        break;
                    }
                }
                None => {
                    self.ensure_claims(ordinal, None).await?;
                    self.create_pod(ordinal).await?;
                    if !self.parallel() {
                        blocked = true;
                        break;
                    }
                }
            }
        }
        // Condemned pods, highest ordinal first.
        let mut condemned: Vec<Arc<Pod>> = self
            .pods
            .iter()
            .filter(|p| {
                ordinal_of(&self.name(), &p.name_any()).is_some_and(|o| !range.contains(&o))
            })
            .cloned()
            .collect();
        condemned.sort_by_key(|p| std::cmp::Reverse(ordinal_of(&self.name(), &p.name_any())));
        let all_healthy = range.clone().all(|o| {
            self.pod(o)
                .is_some_and(|p| healthy(p, self.min_ready(), self.now))
        });
        for pod in &condemned {
            let ordinal = ordinal_of(&self.name(), &pod.name_any()).unwrap_or(0);
            self.ensure_claims(ordinal, Some(pod)).await?;
            if pod.metadata.deletion_timestamp.is_some() {
                if !self.parallel() {
                    break;
                }
                continue;
            }
            if !self.parallel() && (!all_healthy || blocked) {
                break;
            }
            self.delete_pod(pod, "scale down").await?;
            if !self.parallel() {
                blocked = true;
                break;
            }
        }
        // Rolling update, highest ordinal first, down to the partition.
        if self.rolling() && !blocked && condemned.is_empty() && all_healthy {
            let floor = start + self.partition();
            for ordinal in range.clone().rev() {
                if ordinal < floor {
                    break;
                }
                let Some(pod) = self.pod(ordinal).cloned() else {
                    break;
                };
                if revision_of(&pod) != Some(self.update.name_any().as_str()) {
                    if pod.metadata.deletion_timestamp.is_none() {
                        self.event(
                            EventType::Normal,
                            "SuccessfulDelete",
                            format!(
                                "delete Pod {} in StatefulSet {} successful",
                                pod.name_any(),
                                self.name()
                            ),
                        );
                        self.delete_pod_quiet(&pod).await?;
                    }
                    break;
                }
                if !healthy(&pod, self.min_ready(), self.now) {
                    break;
                }
            }
        }
        self.write_status(replicas).await?;
        Ok(requeue)
    }

    /// Create the claims of a pod that are missing, and keep their owner references in line
    /// with the retention policy.
    async fn ensure_claims(&self, ordinal: i32, pod: Option<&Arc<Pod>>) -> Result<()> {
        let spec = self.spec();
        let templates = spec.volume_claim_templates.clone().unwrap_or_default();
        if templates.is_empty() {
            return Ok(());
        }
        let pod_name = format!("{}-{ordinal}", self.name());
        let policy = spec
            .persistent_volume_claim_retention_policy
            .clone()
            .unwrap_or_default();
        let delete_with_set = policy.when_deleted.as_deref() == Some("Delete");
        let delete_on_scale = policy.when_scaled.as_deref() == Some("Delete");
        let replicas = spec.replicas.unwrap_or(1);
        let condemned =
            ordinal >= self.start_ordinal() + replicas || ordinal < self.start_ordinal();
        let mut wanted: Vec<OwnerReference> = Vec::new();
        if delete_with_set {
            let mut r = owner::controller_reference(&self.set);
            r.controller = Some(false);
            wanted.push(r);
        }
        if delete_on_scale
            && condemned
            && let Some(p) = pod
        {
            let mut r = owner::controller_reference(p.as_ref());
            r.controller = Some(false);
            wanted.push(r);
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.c.client.clone(), &self.ns());
        let match_labels = spec.selector.match_labels.clone().unwrap_or_default();
        for t in &templates {
            let tname = t.metadata.name.clone().unwrap_or_default();
            let name = claim_name(&tname, &pod_name);
            match self.c.claims.get_named(&self.ns(), &name) {
                None => {
                    if condemned {
                        continue;
                    }
                    let mut labels: BTreeMap<String, String> =
                        t.metadata.labels.clone().unwrap_or_default();
                    labels.extend(match_labels.clone());
                    let claim = PersistentVolumeClaim {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some(self.ns()),
                            labels: Some(labels),
                            annotations: t.metadata.annotations.clone(),
                            owner_references: Some(wanted.clone()).filter(|w| !w.is_empty()),
                            ..Default::default()
                        },
                        spec: t.spec.clone(),
                        status: None,
                    };
                    match api.create(&PostParams::default(), &claim).await {
                        Ok(_) => self.event(
                            EventType::Normal,
                            "SuccessfulCreate",
                            format!(
                                "create Claim {name} Pod {pod_name} in StatefulSet {} success",
                                self.name()
                            ),
                        ),
                        Err(e) if crate::is_conflict(&e) => {}
                        Err(e) => {
                            self.event(EventType::Warning, "FailedCreate", format!("create Claim {name} for Pod {pod_name} in StatefulSet {} failed error: {}", self.name(), api_message(&e)));
                            return Err(Error::Api {
                                action: format!("creating claim {}/{name}", self.ns()),
                                source: e,
                            });
                        }
                    }
                }
                Some(claim) => {
                    // Owner references for retention: ours are the set's and the pod's uids.
                    let ours = [
                        self.set.metadata.uid.clone(),
                        pod.and_then(|p| p.metadata.uid.clone()),
                    ];
                    let mut refs: Vec<OwnerReference> = claim
                        .metadata
                        .owner_references
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|r| {
                            !(ours.iter().flatten().any(|u| *u == r.uid)
                                || (r.kind == "Pod" && r.name == pod_name))
                        })
                        .collect();
                    refs.extend(wanted.clone());
                    if claim.metadata.owner_references.clone().unwrap_or_default() != refs {
                        let patch = json!({ "metadata": { "ownerReferences": refs, "uid": claim.metadata.uid, "resourceVersion": claim.metadata.resource_version } });
                        match api
                            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                        {
                            Ok(_) => {}
                            Err(e) if crate::is_not_found(&e) || crate::is_conflict(&e) => {}
                            Err(e) => {
                                return Err(Error::Api {
                                    action: format!(
                                        "updating owners of claim {}/{name}",
                                        self.ns()
                                    ),
                                    source: e,
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A pod for `ordinal` from the revision it should run.
    fn new_pod(&self, ordinal: i32) -> Pod {
        let rev = self.revision_for(ordinal);
        let template: PodTemplateSpec =
            history::template_of(rev).unwrap_or_else(|| self.spec().template.clone());
        let name = format!("{}-{ordinal}", self.name());
        let mut pod = pods::from_template(
            &template,
            &self.ns(),
            owner::controller_reference(&self.set),
            Some(name.clone()),
            None,
        );
        let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(POD_NAME_LABEL.into(), name.clone());
        labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
        labels.insert(REVISION_LABEL.into(), rev.name_any());
        let spec = self.spec();
        if let Some(ps) = pod.spec.as_mut() {
            ps.hostname = Some(name.clone());
            ps.subdomain = spec.service_name.clone().filter(|s| !s.is_empty());
            let volumes = ps.volumes.get_or_insert_with(Vec::new);
            for t in spec.volume_claim_templates.iter().flatten() {
                let tname = t.metadata.name.clone().unwrap_or_default();
                volumes.retain(|v| v.name != tname);
                volumes.push(Volume {
                    name: tname.clone(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim_name(&tname, &name),
                        read_only: None,
                    }),
                    ..Default::default()
                });
            }
        }
        pod
    }

    async fn create_pod(&self, ordinal: i32) -> Result<()> {
        let pod = self.new_pod(ordinal);
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(self.c.client.clone(), &self.ns());
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                self.event(
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!(
                        "create Pod {name} in StatefulSet {} successful",
                        self.name()
                    ),
                );
                Ok(())
            }
            // The cache has not seen our pod yet, or it is still being deleted.
            Err(e) if crate::is_conflict(&e) || pods::is_namespace_terminating(&e) => Ok(()),
            Err(e) => {
                self.event(
                    EventType::Warning,
                    "FailedCreate",
                    format!(
                        "create Pod {name} in StatefulSet {} failed error: {}",
                        self.name(),
                        api_message(&e)
                    ),
                );
                Err(Error::Api {
                    action: format!("creating pod {}/{name}", self.ns()),
                    source: e,
                })
            }
        }
    }

    async fn delete_pod(&self, pod: &Pod, _why: &str) -> Result<()> {
        self.event(
            EventType::Normal,
            "SuccessfulDelete",
            format!(
                "delete Pod {} in StatefulSet {} successful",
                pod.name_any(),
                self.name()
            ),
        );
        self.delete_pod_quiet(pod).await
    }

    async fn delete_pod_quiet(&self, pod: &Pod) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.c.client.clone(), &self.ns());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&pod.name_any(), &params).await {
            Ok(_) => Ok(()),
            Err(e) if crate::is_not_found(&e) || crate::is_conflict(&e) => Ok(()),
            Err(e) => Err(Error::Api {
                action: format!("deleting pod {}/{}", self.ns(), pod.name_any()),
                source: e,
            }),
        }
    }

    async fn write_status(&mut self, replicas: i32) -> Result<()> {
        let update_name = self.update.name_any();
        let mut current_name = self.current.name_any();
        let live: Vec<&Arc<Pod>> = self.pods.iter().filter(|p| !pods::is_terminal(p)).collect();
        let count = |rev: &str| live.iter().filter(|p| revision_of(p) == Some(rev)).count() as i32;
        let ready = live
            .iter()
            .filter(|p| pods::is_ready(p) && p.metadata.deletion_timestamp.is_none())
            .count() as i32;
        let available = live
            .iter()
            .filter(|p| healthy(p, self.min_ready(), self.now))
            .count() as i32;
        let mut status = StatefulSetStatus {
            observed_generation: self.set.metadata.generation,
            replicas: live.len() as i32,
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            current_replicas: Some(count(&current_name)),
            updated_replicas: Some(count(&update_name)),
            current_revision: Some(current_name.clone()),
            update_revision: Some(update_name.clone()),
            collision_count: self.collision_count,
            conditions: self.set.status.as_ref().and_then(|s| s.conditions.clone()),
        };
        // Upstream `completeRollingUpdate`: once every pod runs the update revision, it is current.
        let updated = status.updated_replicas.unwrap_or(0);
        if self.rolling() && updated == replicas && ready == replicas && status.replicas == replicas
        {
            current_name = update_name.clone();
            status.current_revision = Some(current_name);
            status.current_replicas = Some(updated);
        }
        if self.set.status.as_ref() == Some(&status) {
            return Ok(());
        }
        self.set.status = Some(status);
        let api: Api<StatefulSet> = Api::namespaced(self.c.client.clone(), &self.ns());
        api.replace_status(&self.name(), &PostParams::default(), &self.set)
            .await
            .during(|| {
                format!(
                    "updating status of statefulset {}/{}",
                    self.ns(),
                    self.name()
                )
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_come_from_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "web-app-1"), None);
        assert_eq!(claim_name("data", "web-1"), "data-web-1");
    }
}
