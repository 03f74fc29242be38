//! The ReplicaSet and ReplicationController controllers (upstream pkg/controller/replicaset):
//! one implementation over both kinds. It keeps exactly `spec.replicas` active pods that match
//! the selector: adopting matching orphans, releasing owned pods that stopped matching,
//! creating missing pods in slow-start batches and deleting surplus ones in upstream's
//! preference order, with expectations so a lagging cache never causes a second batch. Status
//! reports `replicas`, `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas`
//! (minReadySeconds), `terminatingReplicas` and the ReplicaFailure condition.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{
    Pod, PodTemplateSpec, ReplicationController, ReplicationControllerCondition,
    ReplicationControllerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use skiff_api::selector::LabelSelector;
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::events::{EventType, Recorder, reference};
use skiff_runtime::expectations::Expectations;
use skiff_runtime::owner;
use skiff_runtime::{Change, Informer, ObjectKey, WorkQueue};

use crate::context::{Context, synced};
use crate::{During, Error, Result, pods};

/// Upstream `BurstReplicas`: the most pods created or deleted in one sync.
pub const BURST_REPLICAS: usize = 500;

/// Index of pods by controller uid; orphans are indexed as `orphan/<namespace>`.
pub const POD_OWNER_INDEX: &str = "replica-owner";

/// The status fields both kinds share.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaStatus {
    /// Active pods.
    pub replicas: i32,
    /// Active pods carrying every template label.
    pub fully_labeled: i32,
    /// Ready pods.
    pub ready: i32,
    /// Pods ready for minReadySeconds.
    pub available: i32,
    /// Owned pods being deleted.
    pub terminating: Option<i32>,
    /// The generation this status describes.
    pub observed_generation: Option<i64>,
    /// The ReplicaFailure condition: (status, reason, message, lastTransitionTime).
    pub failure: Option<(String, String, String, Option<Time>)>,
}

/// What the controller needs of a replicated kind.
pub trait ReplicaKind:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// Event source and log name.
    const COMPONENT: &'static str;
    /// The pod selector.
    fn pod_selector(&self) -> Result<LabelSelector>;
    /// Desired replicas.
    fn desired(&self) -> i32;
    /// minReadySeconds.
    fn min_ready_seconds(&self) -> i32;
    /// The pod template.
    fn pod_template(&self) -> Option<&PodTemplateSpec>;
    /// The current status.
    fn replica_status(&self) -> ReplicaStatus;
    /// Replace the status.
    fn set_replica_status(&mut self, status: ReplicaStatus);
}

impl ReplicaKind for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";

    fn pod_selector(&self) -> Result<LabelSelector> {
        let key = ObjectKey::of(self).to_string();
        pods::selector(self.spec.as_ref().map(|s| &s.selector), &key)
    }
    fn desired(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn replica_status(&self) -> ReplicaStatus {
        let s = self.status.clone().unwrap_or_default();
        ReplicaStatus {
            replicas: s.replicas,
            fully_labeled: s.fully_labeled_replicas.unwrap_or(0),
            ready: s.ready_replicas.unwrap_or(0),
            available: s.available_replicas.unwrap_or(0),
            terminating: s.terminating_replicas,
            observed_generation: s.observed_generation,
            failure: s
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "ReplicaFailure")
                .map(|c| {
                    (
                        c.status.clone(),
                        c.reason.clone().unwrap_or_default(),
                        c.message.clone().unwrap_or_default(),
                        c.last_transition_time.clone(),
                    )
                }),
        }
    }
    fn set_replica_status(&mut self, s: ReplicaStatus) {
        self.status = Some(ReplicaSetStatus {
            replicas: s.replicas,
            fully_labeled_replicas: Some(s.fully_labeled),
            ready_replicas: Some(s.ready),
            available_replicas: Some(s.available),
            terminating_replicas: s.terminating,
            observed_generation: s.observed_generation,
            conditions: s.failure.map(|(status, reason, message, at)| {
                vec![ReplicaSetCondition {
                    type_: "ReplicaFailure".into(),
                    status,
                    reason: Some(reason),
                    message: Some(message),
                    last_transition_time: at,
                }]
            }),
        });
    }
}

impl ReplicaKind for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";

    fn pod_selector(&self) -> Result<LabelSelector> {
        // A ReplicationController's selector is a plain map; an empty one selects nothing.
        match self.spec.as_ref().and_then(|s| s.selector.as_ref()) {
            Some(m) if !m.is_empty() => Ok(LabelSelector::from_map(m)),
            _ => Ok(LabelSelector::nothing()),
        }
    }
    fn desired(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn replica_status(&self) -> ReplicaStatus {
        let s = self.status.clone().unwrap_or_default();
        ReplicaStatus {
            replicas: s.replicas,
            fully_labeled: s.fully_labeled_replicas.unwrap_or(0),
            ready: s.ready_replicas.unwrap_or(0),
            available: s.available_replicas.unwrap_or(0),
            terminating: None,
            observed_generation: s.observed_generation,
            failure: s
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "ReplicaFailure")
                .map(|c| {
                    (
                        c.status.clone(),
                        c.reason.clone().unwrap_or_default(),
                        c.message.clone().unwrap_or_default(),
                        c.last_transition_time.clone(),
                    )
                }),
        }
    }
    fn set_replica_status(&mut self, s: ReplicaStatus) {
        self.status = Some(ReplicationControllerStatus {
            replicas: s.replicas,
            fully_labeled_replicas: Some(s.fully_labeled),
            ready_replicas: Some(s.ready),
            available_replicas: Some(s.available),
            observed_generation: s.observed_generation,
            conditions: s.failure.map(|(status, reason, message, at)| {
                vec![ReplicationControllerCondition {
                    type_: "ReplicaFailure".into(),
                    status,
                    reason: Some(reason),
                    message: Some(message),
                    last_transition_time: at,
                }]
            }),
        });
    }
}

/// Index values of a pod for [`POD_OWNER_INDEX`].
pub fn pod_owner_index(pod: &Pod) -> Vec<String> {
    match owner::controller_of(&pod.metadata) {
        Some(r) => vec![r.uid.clone()],
        None => vec![format!("orphan/{}", pod.namespace().unwrap_or_default())],
    }
}

/// The shared pod informer with the owner index.
pub fn pod_informer(ctx: &Context) -> Informer<Pod> {
    let pods = ctx.informer::<Pod>();
    if !pods.has_index(POD_OWNER_INDEX) {
        pods.add_index(POD_OWNER_INDEX, pod_owner_index);
    }
    pods
}

/// Pods a controller with `uid` in `namespace` may claim: its own and the orphans.
pub fn claim_candidates(pods: &Informer<Pod>, uid: &str, namespace: &str) -> Vec<Arc<Pod>> {
    let mut out = pods.by_index(POD_OWNER_INDEX, uid);
    out.extend(pods.by_index(POD_OWNER_INDEX, &format!("orphan/{namespace}")));
    out
}

/// One controller instance for kind `K`.
pub struct ReplicaController<K: ReplicaKind> {
    client: Client,
    owners: Informer<K>,
    pods: Informer<Pod>,
    expectations: Arc<Expectations<ObjectKey>>,
    recorder: Recorder,
}

/// Whether `r` references an object of kind `K`.
fn refers_to<K: Resource<DynamicType = ()>>(
    r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> bool {
    r.kind == K::kind(&()) && r.api_version.split('/').rev().nth(1).unwrap_or("") == K::group(&())
}

/// Start the ReplicaSet controller.
pub async fn start_replicasets(ctx: Context) {
    run::<ReplicaSet>(ctx).await
}

/// Start the ReplicationController controller.
pub async fn start_replication_controllers(ctx: Context) {
    run::<ReplicationController>(ctx).await
}

async fn run<K: ReplicaKind>(ctx: Context) {
    let owners = ctx.informer::<K>();
    let pods = pod_informer(&ctx);
    let queue: WorkQueue<ObjectKey> = WorkQueue::default();
    let expectations = Arc::new(Expectations::default());
    controller::feed(&owners, &queue, &ctx.stop, |change| {
        vec![ObjectKey::of(change.object().as_ref())]
    });
    {
        let owners = owners.clone();
        let expectations = expectations.clone();
        controller::feed(&pods, &queue, &ctx.stop, move |change| {
            pod_change_keys::<K>(&owners, &expectations, change)
        });
    }
    if !ctx.wait_synced(vec![synced(&owners), synced(&pods)]).await {
        return;
    }
    let reconciler = Arc::new(ReplicaController {
        client: ctx.client.clone(),
        owners,
        pods,
        expectations,
        recorder: ctx.recorder(K::COMPONENT),
    });
    controller::run(reconciler, queue, ctx.config.workers(5), ctx.stop.clone()).await;
}

/// Which owners a pod change concerns, ticking off expectations on the way (upstream
/// addPod/updatePod/deletePod handlers).
fn pod_change_keys<K: ReplicaKind>(
    owners: &Informer<K>,
    expectations: &Expectations<ObjectKey>,
    change: &Change<Pod>,
) -> Vec<ObjectKey> {
    let pod = change.object();
    let ns = pod.namespace().unwrap_or_default();
    let owner_key = |p: &Pod| -> Option<ObjectKey> {
        let r = owner::controller_of(&p.metadata)?;
        if !refers_to::<K>(r) {
            return None;
        }
        let key = ObjectKey::new(ns.clone(), r.name.clone());
        let owner = owners.get(&key)?;
        (owner.meta().uid.as_deref() == Some(r.uid.as_str())).then_some(key)
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut keys = Vec::new();
    match change {
        Change::Applied { old: None, new } => {
            if let Some(key) = owner_key(new) {
                if new.metadata.deletion_timestamp.is_some() {
                    expectations.deletion_observed(&key, &uid);
                } else {
                    expectations.creation_observed(&key);
                }
                keys.push(key);
            } else if owner::controller_of(&new.metadata).is_none() {
                keys.extend(matching_owners(owners, new));
            }
        }
        Change::Applied {
            old: Some(old),
            new,
        } => {
            let became_deleting = new.metadata.deletion_timestamp.is_some()
                && old.metadata.deletion_timestamp.is_none();
            let new_key = owner_key(new);
            if became_deleting && let Some(key) = &new_key {
                expectations.deletion_observed(key, &uid);
            }
            if let Some(old_key) = owner_key(old)
                && Some(&old_key) != new_key.as_ref()
            {
                keys.push(old_key);
            }
            match new_key {
                Some(key) => keys.push(key),
                None => {
                    let labels_changed = old.metadata.labels != new.metadata.labels;
                    let released = owner::controller_of(&old.metadata).is_some();
                    if owner::controller_of(&new.metadata).is_none() && (labels_changed || released)
                    {
                        keys.extend(matching_owners(owners, new));
                    }
                }
            }
        }
        Change::Deleted(gone) => {
            if let Some(key) = owner_key(gone) {
                expectations.deletion_observed(&key, &uid);
                keys.push(key);
            }
        }
    }
    keys
}

/// Owners in the pod's namespace whose selector matches it (orphan adoption).
fn matching_owners<K: ReplicaKind>(owners: &Informer<K>, pod: &Pod) -> Vec<ObjectKey> {
    let ns = pod.namespace().unwrap_or_default();
    let labels = pods::labels(&pod.metadata);
    owners
        .list_namespace(&ns)
        .iter()
        .filter(|o| {
            o.pod_selector()
                .is_ok_and(|s| !s.is_empty() && s.matches(&labels))
        })
        .map(|o| ObjectKey::of(o.as_ref()))
        .collect()
}

impl<K: ReplicaKind> Reconciler for ReplicaController<K> {
    type Key = ObjectKey;
    type Error = Error;

    fn name(&self) -> &'static str {
        K::COMPONENT
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(owner) = self.owners.get(key) else {
            self.expectations.forget(key);
            return Ok(Action::Done);
        };
        let selector = match owner.pod_selector() {
            Ok(s) => s,
            Err(e) => {
                self.recorder.publish(
                    &reference(owner.as_ref()),
                    EventType::Warning,
                    "InvalidSelector",
                    &e.to_string(),
                );
                return Ok(Action::Done);
            }
        };
        let needs_sync = self.expectations.satisfied(key);
        let deleting = owner.meta().deletion_timestamp.is_some();
        let owned = crate::claim::claim_pods(
            &self.client,
            &self.pods,
            owner.as_ref(),
            &selector,
            pods::is_active,
        )
        .await?;
        let terminating = owned.iter().filter(|p| pods::is_terminating(p)).count() as i32;
        let claimed: Vec<Arc<Pod>> = owned.into_iter().filter(|p| pods::is_active(p)).collect();
        let mut failure = None;
        if needs_sync && !deleting {
            failure = self.manage(&owner, key, &claimed).await;
        }
        self.update_status(&owner, key, &claimed, terminating, failure)
            .await
    }
}

impl<K: ReplicaKind> ReplicaController<K> {
    /// Create or delete pods; returns the ReplicaFailure condition to report, if any.
    async fn manage(
        &self,
        owner: &K,
        key: &ObjectKey,
        active: &[Arc<Pod>],
    ) -> Option<(String, String)> {
        let diff = active.len() as i64 - i64::from(owner.desired().max(0));
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let target = reference(owner);
        if diff < 0 {
            let count = ((-diff) as usize).min(BURST_REPLICAS);
            let template = owner.pod_template()?;
            self.expectations.expect_creations(key, count);
            let pod = pods::from_template(
                template,
                &key.namespace,
                owner::controller_reference(owner),
                None,
                Some(pods::generate_name_prefix(&key.name)),
            );
            let (done, err) = pods::slow_start_batch(count, 1, |_| {
                let (api, pod, target) = (api.clone(), pod.clone(), target.clone());
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
                            // This creation will never be observed.
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
                                action: "creating pod".into(),
                                source: e,
                            })
                        }
                    }
                }
            })
            .await;
            // Creations never attempted will never be observed either.
            let attempted_failures = if err.is_some() { 1 } else { 0 };
            let skipped = count - done - attempted_failures;
            if skipped > 0 {
                self.expectations.lower_creations(key, skipped);
            }
            if let Some(Error::Api { source, .. }) = err {
                return Some(("FailedCreate".into(), api_message(&source)));
            }
        } else if diff > 0 {
            let count = (diff as usize).min(BURST_REPLICAS);
            let related = self.related_pods(owner, key);
            let victims = pods::pods_to_delete(active, &related, count);
            let uids: Vec<String> = victims
                .iter()
                .filter_map(|p| p.metadata.uid.clone())
                .collect();
            self.expectations.expect_deletions(key, uids);
            let results = futures::future::join_all(victims.iter().map(|pod| {
                let api = api.clone();
                let target = target.clone();
                async move {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    let params = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: Some(uid.clone()),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    match api.delete(&pod.name_any(), &params).await {
                        Ok(_) => {
                            self.recorder.publish(
                                &target,
                                EventType::Normal,
                                "SuccessfulDelete",
                                &format!("Deleted pod: {}", pod.name_any()),
                            );
                            None
                        }
                        Err(e) => {
                            self.expectations.deletion_observed(key, &uid);
                            if crate::is_not_found(&e) {
                                return None;
                            }
                            self.recorder.publish(
                                &target,
                                EventType::Warning,
                                "FailedDelete",
                                &format!("Error deleting: {}", api_message(&e)),
                            );
                            Some(api_message(&e))
                        }
                    }
                }
            }))
            .await;
            if let Some(message) = results.into_iter().flatten().next() {
                return Some(("FailedDelete".into(), message));
            }
        }
        None
    }

    /// Pods whose placement counts when ranking: every pod controlled by a sibling owned by
    /// the same controller (the ReplicaSets of one Deployment), else our own.
    fn related_pods(&self, owner: &K, key: &ObjectKey) -> Vec<Arc<Pod>> {
        let uid = owner.meta().uid.clone().unwrap_or_default();
        let Some(parent) = owner::controller_of(owner.meta()) else {
            return self.pods.by_index(POD_OWNER_INDEX, &uid);
        };
        self.owners
            .list_namespace(&key.namespace)
            .iter()
            .filter(|o| owner::is_controlled_by(o.meta(), &parent.uid))
            .flat_map(|o| {
                self.pods
                    .by_index(POD_OWNER_INDEX, o.meta().uid.as_deref().unwrap_or(""))
            })
            .collect()
    }

    async fn update_status(
        &self,
        owner: &K,
        key: &ObjectKey,
        active: &[Arc<Pod>],
        terminating: i32,
        failure: Option<(String, String)>,
    ) -> Result<Action> {
        let now = Timestamp::now();
        let min_ready = owner.min_ready_seconds();
        let template_labels: BTreeMap<String, String> = owner
            .pod_template()
            .and_then(|t| t.metadata.as_ref())
            .map(pods::labels)
            .unwrap_or_default();
        let old = owner.replica_status();
        let mut status = ReplicaStatus {
            replicas: active.len() as i32,
            fully_labeled: active
                .iter()
                .filter(|p| {
                    let labels = pods::labels(&p.metadata);
                    template_labels
                        .iter()
                        .all(|(k, v)| labels.get(k) == Some(v))
                })
                .count() as i32,
            ready: active.iter().filter(|p| pods::is_ready(p)).count() as i32,
            available: active
                .iter()
                .filter(|p| pods::is_available(p, min_ready, now))
                .count() as i32,
            terminating: Some(terminating),
            observed_generation: owner.meta().generation,
            failure: old.failure.clone(),
        };
        status.failure = match failure {
            Some((reason, message)) => {
                let at = match &old.failure {
                    Some((s, _, _, at)) if s == "True" => at.clone(),
                    _ => Some(Time(now)),
                };
                Some(("True".into(), reason, message, at))
            }
            // Upstream removes the condition once a sync succeeds.
            None => None,
        };
        if status != old {
            let mut updated = owner.clone();
            updated.set_replica_status(status.clone());
            let api: Api<K> = Api::namespaced(self.client.clone(), &key.namespace);
            api.replace_status(&key.name, &PostParams::default(), &updated)
                .await
                .during(|| format!("updating status of {} {key}", K::kind(&())))?;
        }
        // Look again when a ready pod becomes available.
        let next = active
            .iter()
            .filter_map(|p| pods::available_in(p, min_ready, now))
            .min();
        Ok(match next {
            Some(d) => Action::RequeueAfter(d + Duration::from_millis(100)),
            None => Action::Done,
        })
    }
}

/// The message of an API error (its Status message when it has one).
pub fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}
