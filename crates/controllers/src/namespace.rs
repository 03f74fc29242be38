//! The namespace controller (upstream pkg/controller/namespace): when a namespace is being
//! deleted, delete every namespaced object of every served kind in it (custom resources
//! included, found through discovery), report progress in the namespace's conditions
//! (`NamespaceDeletionDiscoveryFailure`, `NamespaceDeletionContentFailure`,
//! `NamespaceContentRemaining`, `NamespaceFinalizersRemaining`), and once nothing is left
//! remove the `kubernetes` finalizer through the `finalize` subresource, which lets the API
//! server delete the namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, NamespaceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams, PropagationPolicy};
use kube::core::PartialObjectMeta;
use kube::{Client, ResourceExt};
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::discovery::Resource;
use skiff_runtime::{Informer, ObjectKey, WorkQueue};

use crate::context::{Context, synced};
use crate::{During, Error, Result};

/// The finalizer this controller owns.
pub const FINALIZER: &str = "kubernetes";

/// Start the controller.
pub async fn start(ctx: Context) {
    let namespaces = ctx.informer::<Namespace>();
    let queue: WorkQueue<ObjectKey> = WorkQueue::default();
    controller::feed(&namespaces, &queue, &ctx.stop, |c| {
        vec![ObjectKey::of(c.object().as_ref())]
    });
    if !ctx.wait_synced(vec![synced(&namespaces)]).await {
        return;
    }
    let reconciler = Arc::new(NamespaceController {
        client: ctx.client.clone(),
        ctx: ctx.clone(),
        namespaces,
    });
    controller::run(reconciler, queue, ctx.config.workers(10), ctx.stop.clone()).await;
}

struct NamespaceController {
    client: Client,
    ctx: Context,
    namespaces: Informer<Namespace>,
}

/// What one deletion pass found.
#[derive(Debug, Default)]
struct Pass {
    /// Remaining objects per group-resource.
    remaining: BTreeMap<String, usize>,
    /// Remaining finalizers and how many objects carry each.
    finalizers: BTreeMap<String, usize>,
    /// Failures deleting content.
    failures: Vec<String>,
    /// Shortest remaining pod grace period, for when to look again.
    estimate: Option<Duration>,
}

impl Reconciler for NamespaceController {
    type Key = ObjectKey;
    type Error = Error;

    fn name(&self) -> &'static str {
        "namespace-controller"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(ns) = self.namespaces.get(key) else {
            return Ok(Action::Done);
        };
        if ns.metadata.deletion_timestamp.is_none() {
            return Ok(Action::Done);
        }
        let finalizers = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.clone())
            .unwrap_or_default();
        if !finalizers.iter().any(|f| f == FINALIZER) {
            return Ok(Action::Done);
        }
        let name = ns.name_any();
        let mut conditions = Vec::new();
        let resources = match self.ctx.resources().await {
            Ok(r) => {
                conditions.push(condition(
                    "NamespaceDeletionDiscoveryFailure",
                    "False",
                    "ResourcesDiscovered",
                    "All resources successfully discovered".into(),
                ));
                r
            }
            Err(e) => {
                conditions.push(condition(
                    "NamespaceDeletionDiscoveryFailure",
                    "True",
                    "DiscoveryFailed",
                    format!("Discovery failed: {e}"),
                ));
                self.set_conditions(&ns, conditions).await?;
                return Err(e);
            }
        };
        conditions.push(condition(
            "NamespaceDeletionGroupVersionParsingFailure",
            "False",
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
        ));
        let deletable: Vec<Resource> = resources
            .preferred_supporting(&["list", "delete"])
            .filter(|r| r.namespaced)
            .cloned()
            .collect();
        let pass = self.delete_content(&name, &deletable).await;
        conditions.push(if pass.failures.is_empty() {
            condition(
                "NamespaceDeletionContentFailure",
                "False",
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".into(),
            )
        } else {
            condition(
                "NamespaceDeletionContentFailure",
                "True",
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    pass.failures.len(),
                    pass.failures.join(", ")
                ),
            )
        });
        conditions.push(if pass.remaining.is_empty() {
            condition(
                "NamespaceContentRemaining",
                "False",
                "ContentRemoved",
                "All content successfully removed".into(),
            )
        } else {
            let list: Vec<String> = pass
                .remaining
                .iter()
                .map(|(r, n)| format!("{r} has {n} resource instances"))
                .collect();
            condition(
                "NamespaceContentRemaining",
                "True",
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", list.join(", ")),
            )
        });
        conditions.push(if pass.finalizers.is_empty() {
            condition(
                "NamespaceFinalizersRemaining",
                "False",
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".into(),
            )
        } else {
            let list: Vec<String> = pass
                .finalizers
                .iter()
                .map(|(f, n)| format!("{f} in {n} resource instances"))
                .collect();
            condition(
                "NamespaceFinalizersRemaining",
                "True",
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    list.join(", ")
                ),
            )
        });
        let ns = self.set_conditions(&ns, conditions).await?;
        if !pass.failures.is_empty() || !pass.remaining.is_empty() {
            let wait = pass
                .estimate
                .unwrap_or(Duration::from_secs(2))
                .clamp(Duration::from_millis(500), Duration::from_secs(15));
            return Ok(Action::RequeueAfter(wait));
        }
        self.finalize(&ns).await?;
        Ok(Action::Done)
    }
}

fn condition(type_: &str, status: &str, reason: &str, message: String) -> NamespaceCondition {
    NamespaceCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(Time(Timestamp::now())),
    }
}

impl NamespaceController {
    /// Delete everything in the namespace, then count what is left.
    async fn delete_content(&self, ns: &str, resources: &[Resource]) -> Pass {
        let mut pass = Pass::default();
        for r in resources {
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &r.api);
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            };
            if r.supports(&["deletecollection"]) {
                if let Err(e) = api.delete_collection(&params, &ListParams::default()).await
                    && !crate::is_not_found(&e)
                {
                    pass.failures.push(format!(
                        "{}: {}",
                        r.group_resource(),
                        crate::replicaset::api_message(&e)
                    ));
                    continue;
                }
            } else {
                let listed = match api.list_metadata(&ListParams::default()).await {
                    Ok(l) => l,
                    Err(e) => {
                        pass.failures.push(format!(
                            "{}: {}",
                            r.group_resource(),
                            crate::replicaset::api_message(&e)
                        ));
                        continue;
                    }
                };
                for item in listed
                    .items
                    .iter()
                    .filter(|i| i.metadata.deletion_timestamp.is_none())
                {
                    if let Err(e) = api.delete(&item.name_any(), &params).await
                        && !crate::is_not_found(&e)
                    {
                        pass.failures.push(format!(
                            "{}: {}",
                            r.group_resource(),
                            crate::replicaset::api_message(&e)
                        ));
                        break;
                    }
                }
            }
            // What is left (pods terminating gracefully, objects held by finalizers).
            let left: Vec<PartialObjectMeta<DynamicObject>> =
                match api.list_metadata(&ListParams::default()).await {
                    Ok(l) => l.items,
                    Err(e) => {
                        pass.failures.push(format!(
                            "{}: {}",
                            r.group_resource(),
                            crate::replicaset::api_message(&e)
                        ));
                        continue;
                    }
                };
            if left.is_empty() {
                continue;
            }
            pass.remaining.insert(r.group_resource(), left.len());
            for item in &left {
                for f in item.metadata.finalizers.iter().flatten() {
                    *pass.finalizers.entry(f.clone()).or_default() += 1;
                }
                if let Some(at) = &item.metadata.deletion_timestamp {
                    let left = Duration::try_from(at.0.duration_since(Timestamp::now()))
                        .unwrap_or_default();
                    pass.estimate = Some(pass.estimate.map_or(left, |e| e.min(left)));
                }
            }
        }
        pass
    }

    /// Record the deletion conditions (status writes are skipped when nothing changed).
    async fn set_conditions(
        &self,
        ns: &Namespace,
        conditions: Vec<NamespaceCondition>,
    ) -> Result<Namespace> {
        let mut updated = ns.clone();
        let status = updated.status.get_or_insert_with(Default::default);
        let old = status.conditions.clone().unwrap_or_default();
        let merged: Vec<NamespaceCondition> = conditions
            .into_iter()
            .map(|mut c| {
                if let Some(prev) = old.iter().find(|o| o.type_ == c.type_) {
                    if prev.status == c.status
                        && prev.reason == c.reason
                        && prev.message == c.message
                    {
                        return prev.clone();
                    }
                    if prev.status == c.status {
                        c.last_transition_time = prev.last_transition_time.clone();
                    }
                }
                c
            })
            .collect();
        if merged == old {
            return Ok(ns.clone());
        }
        status.conditions = Some(merged);
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api
            .replace_status(&ns.name_any(), &PostParams::default(), &updated)
            .await
        {
            Ok(n) => Ok(n),
            Err(e) if crate::is_not_found(&e) => Ok(ns.clone()),
            Err(e) => Err(Error::Api {
                action: format!("updating status of namespace {}", ns.name_any()),
                source: e,
            }),
        }
    }

    /// Remove our finalizer through `namespaces/<name>/finalize`.
    async fn finalize(&self, ns: &Namespace) -> Result<()> {
        let mut updated = ns.clone();
        let remaining: Vec<String> = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f != FINALIZER)
            .collect();
        updated.spec = Some(NamespaceSpec {
            finalizers: Some(remaining),
        });
        let body = serde_json::to_vec(&updated).map_err(|source| Error::Encode {
            what: format!("namespace {}", ns.name_any()),
            source,
        })?;
        let request = kube::core::Request::new("/api/v1/namespaces")
            .replace_subresource("finalize", &ns.name_any(), &PostParams::default(), body)
            .map_err(|e| Error::Api {
                action: format!(
                    "building the finalize request of namespace {}",
                    ns.name_any()
                ),
                source: kube::Error::BuildRequest(e),
            })?;
        match self.client.request::<Namespace>(request).await {
            Ok(_) => Ok(()),
            Err(e) if crate::is_not_found(&e) => Ok(()),
            Err(e) => Err(e).during(|| format!("finalizing namespace {}", ns.name_any())),
        }
    }
}
