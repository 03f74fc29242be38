//! The resource quota controller (upstream pkg/controller/resourcequota): keeps every
//! ResourceQuota's `status.hard` equal to its spec and `status.used` equal to what exists in
//! its namespace — recalculated when the quota changes, when counted objects come and go
//! (replenishment: a pod finishing or a Service deleted frees quota at once), and in full every
//! `--resource-quota-sync-period`. Admission charges creates as they happen; this loop
//! corrects the figures from the objects themselves (the evaluation rules are shared with
//! admission, in `skiff_kinds::quota`).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ResourceQuota, ResourceQuotaStatus, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::Value;
use skiff_api::quantity::Quantity;
use skiff_kinds::quota;
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::{Change, Informer, ObjectKey, WorkQueue};

use crate::context::{Context, synced};
use crate::{Error, Result};

/// Start the controller.
pub async fn start(ctx: Context) {
    let quotas = ctx.informer::<ResourceQuota>();
    let pods = ctx.informer::<Pod>();
    let services = ctx.informer::<Service>();
    let claims = ctx.informer::<PersistentVolumeClaim>();
    let maps = ctx.informer::<ConfigMap>();
    let secrets = ctx.informer::<Secret>();
    let queue: WorkQueue<ObjectKey> = WorkQueue::default();
    // As upstream, a quota is recalculated when it is new or its spec changed, not when only
    // its status did: admission's charges are status writes, and recalculating on them from
    // an informer cache that has not seen the charged objects yet would undo the charges.
    controller::feed(&quotas, &queue, &ctx.stop, |c| match c {
        Change::Applied {
            old: Some(old),
            new,
        } if old.spec == new.spec
            && old.status.as_ref().and_then(|s| s.hard.as_ref()).is_some() =>
        {
            Vec::new()
        }
        _ => vec![ObjectKey::of(c.object().as_ref())],
    });
    // Replenishment (upstream): usage is recalculated when counted objects go away or pods
    // finish. Creations are charged by admission; recalculating on them would race the
    // cache and could undo a charge the cache has not caught up with.
    fn in_namespace<K: ResourceExt>(quotas: &Informer<ResourceQuota>, obj: &K) -> Vec<ObjectKey> {
        quotas
            .list_namespace(&obj.namespace().unwrap_or_default())
            .iter()
            .map(|q| ObjectKey::of(q.as_ref()))
            .collect()
    }
    fn pod_phase(p: &Pod) -> &str {
        p.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("")
    }
    {
        let quotas = quotas.clone();
        controller::feed(&pods, &queue, &ctx.stop, move |c| match c {
            Change::Applied {
                old: Some(old),
                new,
            } if pod_phase(old) != pod_phase(new)
                && matches!(pod_phase(new), "Succeeded" | "Failed") =>
            {
                in_namespace(&quotas, new.as_ref())
            }
            Change::Deleted(gone) => in_namespace(&quotas, gone.as_ref()),
            _ => Vec::new(),
        });
    }
    macro_rules! replenish {
        ($informer:expr) => {{
            let quotas = quotas.clone();
            controller::feed(&$informer, &queue, &ctx.stop, move |c| match c {
                Change::Deleted(gone) => in_namespace(&quotas, gone.as_ref()),
                _ => Vec::new(),
            });
        }};
    }
    replenish!(services);
    replenish!(claims);
    replenish!(maps);
    replenish!(secrets);
    {
        let quotas = quotas.clone();
        controller::resync_every(
            &queue,
            ctx.config.resource_quota_sync_period,
            &ctx.stop,
            move || quotas.keys(),
        );
    }
    if !ctx
        .wait_synced(vec![
            synced(&quotas),
            synced(&pods),
            synced(&services),
            synced(&claims),
            synced(&maps),
            synced(&secrets),
        ])
        .await
    {
        return;
    }
    let reconciler = Arc::new(QuotaController {
        client: ctx.client.clone(),
        ctx: ctx.clone(),
        quotas,
        pods,
        services,
        claims,
        maps,
        secrets,
    });
    controller::run(reconciler, queue, ctx.config.workers(5), ctx.stop.clone()).await;
}

struct QuotaController {
    client: Client,
    ctx: Context,
    quotas: Informer<ResourceQuota>,
    pods: Informer<Pod>,
    services: Informer<Service>,
    claims: Informer<PersistentVolumeClaim>,
    maps: Informer<ConfigMap>,
    secrets: Informer<Secret>,
}

/// Which (group, plural) a quota resource name counts.
pub fn counted_resource(name: &str) -> Option<(String, String)> {
    if let Some(gr) = name.strip_prefix("count/") {
        return Some(match gr.split_once('.') {
            Some((plural, group)) => (group.to_owned(), plural.to_owned()),
            None => (String::new(), gr.to_owned()),
        });
    }
    let core = |p: &str| Some((String::new(), p.to_owned()));
    match name {
        "pods" | "cpu" | "memory" | "ephemeral-storage" => core("pods"),
        n if n.starts_with("requests.") && n != "requests.storage" => core("pods"),
        n if n.starts_with("limits.") => core("pods"),
        "services" | "services.loadbalancers" | "services.nodeports" => core("services"),
        "persistentvolumeclaims" | "requests.storage" => core("persistentvolumeclaims"),
        n if n.contains(".storageclass.storage.k8s.io/") => core("persistentvolumeclaims"),
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => core(name),
        _ => None,
    }
}

fn values<K: serde::Serialize>(items: Vec<Arc<K>>) -> Vec<Value> {
    items
        .iter()
        .filter_map(|o| serde_json::to_value(o.as_ref()).ok())
        .collect()
}

impl QuotaController {
    /// The objects of a resource in a namespace, as JSON (from caches for the common kinds).
    async fn objects(&self, group: &str, plural: &str, ns: &str) -> Result<Vec<Value>> {
        if group.is_empty() {
            match plural {
                "pods" => return Ok(values(self.pods.list_namespace(ns))),
                "services" => return Ok(values(self.services.list_namespace(ns))),
                "persistentvolumeclaims" => return Ok(values(self.claims.list_namespace(ns))),
                "configmaps" => return Ok(values(self.maps.list_namespace(ns))),
                "secrets" => return Ok(values(self.secrets.list_namespace(ns))),
                "resourcequotas" => return Ok(values(self.quotas.list_namespace(ns))),
                _ => {}
            }
        }
        let resources = self.ctx.cached_resources().await?;
        let Some(r) = resources.for_resource(group, plural) else {
            return Ok(Vec::new());
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &r.api);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::Api {
                action: format!("listing {} in {ns}", r.group_resource()),
                source: e,
            })?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|o| serde_json::to_value(o).ok())
            .collect())
    }
}

impl Reconciler for QuotaController {
    type Key = ObjectKey;
    type Error = Error;

    fn name(&self) -> &'static str {
        "resourcequota-controller"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(rq) = self.quotas.get(key) else {
            return Ok(Action::Done);
        };
        let spec_hard: BTreeMap<String, K8sQuantity> = rq
            .spec
            .as_ref()
            .and_then(|s| s.hard.clone())
            .unwrap_or_default();
        let spec_json =
            serde_json::to_value(rq.spec.clone().unwrap_or_default()).unwrap_or_default();
        let mut used: BTreeMap<String, Quantity> = spec_hard
            .keys()
            .map(|k| (k.clone(), Quantity::ZERO))
            .collect();
        let mut by_resource: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for name in spec_hard.keys() {
            if let Some(gr) = counted_resource(name) {
                by_resource.entry(gr).or_default().push(name.clone());
            }
        }
        for ((group, plural), names) in &by_resource {
            for obj in self.objects(group, plural, &key.namespace).await? {
                if obj.pointer("/metadata/deletionTimestamp").is_some() && plural != "pods" {
                    continue;
                }
                if !quota::in_scope(&spec_json, group, plural, &obj) {
                    continue;
                }
                let u = quota::usage(group, plural, &obj);
                for name in names {
                    if let Some(v) = u.get(name) {
                        *used.entry(name.clone()).or_default() += *v;
                    }
                }
            }
        }
        let status = ResourceQuotaStatus {
            hard: Some(spec_hard.clone()),
            used: Some(
                used.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            K8sQuantity(quota::format(*v, spec_hard.get(k).map(|q| q.0.as_str()))),
                        )
                    })
                    .collect(),
            ),
        };
        let same = rq.status.as_ref().is_some_and(|s| {
            s.hard == status.hard
                && s.used.as_ref().map(|u| {
                    u.iter()
                        .map(|(k, v)| (k.clone(), Quantity::parse(&v.0).unwrap_or_default()))
                        .collect::<BTreeMap<_, _>>()
                }) == Some(used.clone())
        });
        if same {
            return Ok(Action::Done);
        }
        let mut updated = (*rq).clone();
        updated.status = Some(status);
        let api: Api<ResourceQuota> = Api::namespaced(self.client.clone(), &key.namespace);
        match api
            .replace_status(&key.name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(Action::Done),
            Err(e) if crate::is_not_found(&e) => Ok(Action::Done),
            Err(e) => Err(Error::Api {
                action: format!("updating status of resource quota {key}"),
                source: e,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_names_map_to_the_resources_they_count() {
        let gr = |g: &str, p: &str| Some((g.to_owned(), p.to_owned()));
        assert_eq!(
            counted_resource("count/deployments.apps"),
            gr("apps", "deployments")
        );
        assert_eq!(counted_resource("count/pods"), gr("", "pods"));
        assert_eq!(counted_resource("requests.cpu"), gr("", "pods"));
        assert_eq!(
            counted_resource("requests.storage"),
            gr("", "persistentvolumeclaims")
        );
        assert_eq!(
            counted_resource("gold.storageclass.storage.k8s.io/requests.storage"),
            gr("", "persistentvolumeclaims")
        );
        assert_eq!(counted_resource("services.nodeports"), gr("", "services"));
        assert_eq!(counted_resource("nonsense"), None);
    }
}
