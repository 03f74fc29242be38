//! The disruption controller (upstream pkg/controller/disruption): keeps each
//! PodDisruptionBudget's status — how many selected pods are expected (the pods themselves for
//! an integer `minAvailable`, else their controllers' scale), how many must stay healthy, how
//! many are, and how many voluntary disruptions (evictions) are allowed now — which the
//! API server's eviction subresource consumes. Evictions it recorded in `disruptedPods` count
//! as gone until the pod is deleted or two minutes pass.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DynamicObject, PostParams};
use kube::{Client, ResourceExt};
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::owner;
use skiff_runtime::{Informer, ObjectKey, WorkQueue};

use crate::context::{Context, synced};
use crate::{Error, Result, pods};

/// How long an eviction recorded in `disruptedPods` is trusted (upstream `DeletionTimeout`).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// Start the controller.
pub async fn start(ctx: Context) {
    let pdbs = ctx.informer::<PodDisruptionBudget>();
    let pods = ctx.informer::<Pod>();
    let rsets = ctx.informer::<ReplicaSet>();
    let queue: WorkQueue<ObjectKey> = WorkQueue::default();
    controller::feed(&pdbs, &queue, &ctx.stop, |c| {
        vec![ObjectKey::of(c.object().as_ref())]
    });
    {
        let pdbs = pdbs.clone();
        controller::feed(&pods, &queue, &ctx.stop, move |c| {
            let pod = c.object();
            let ns = pod.namespace().unwrap_or_default();
            let mut label_sets = vec![pods::labels(&pod.metadata)];
            if let Some(old) = c.previous() {
                label_sets.push(pods::labels(&old.metadata));
            }
            pdbs.list_namespace(&ns)
                .iter()
                .filter(|p| {
                    pods::selector(p.spec.as_ref().and_then(|s| s.selector.as_ref()), "")
                        .is_ok_and(|s| !s.is_empty() && label_sets.iter().any(|l| s.matches(l)))
                })
                .map(|p| ObjectKey::of(p.as_ref()))
                .collect()
        });
    }
    if !ctx
        .wait_synced(vec![synced(&pdbs), synced(&pods), synced(&rsets)])
        .await
    {
        return;
    }
    let reconciler = Arc::new(DisruptionController {
        client: ctx.client.clone(),
        ctx: ctx.clone(),
        pdbs,
        pods,
        rsets,
    });
    controller::run(reconciler, queue, ctx.config.workers(2), ctx.stop.clone()).await;
}

struct DisruptionController {
    client: Client,
    ctx: Context,
    pdbs: Informer<PodDisruptionBudget>,
    pods: Informer<Pod>,
    rsets: Informer<ReplicaSet>,
}

fn scaled(v: &IntOrString, total: i32, round_up: bool) -> i32 {
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => {
            let p: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let v = p * i64::from(total);
            (if round_up { (v + 99) / 100 } else { v / 100 }) as i32
        }
    }
}

impl DisruptionController {
    /// The summed scale of the pods' controllers (a ReplicaSet of a Deployment counts as the
    /// Deployment), upstream `getExpectedScale`.
    async fn expected_scale(&self, ns: &str, selected: &[Arc<Pod>]) -> Result<Option<i32>> {
        let mut controllers: BTreeSet<(String, String, String)> = BTreeSet::new();
        for pod in selected {
            let Some(r) = owner::controller_of(&pod.metadata) else {
                // A pod without a controller cannot be counted by scale.
                return Ok(None);
            };
            let mut target = (r.api_version.clone(), r.kind.clone(), r.name.clone());
            if r.kind == "ReplicaSet"
                && let Some(rs) = self.rsets.get_named(ns, &r.name)
                && let Some(d) =
                    owner::controller_of(&rs.metadata).filter(|d| d.kind == "Deployment")
            {
                target = (d.api_version.clone(), d.kind.clone(), d.name.clone());
            }
            controllers.insert(target);
        }
        let resources = self.ctx.cached_resources().await?;
        let mut total = 0;
        for (api_version, kind, name) in controllers {
            let Some(r) = resources
                .for_kind(&api_version, &kind)
                .filter(|r| r.subresources.iter().any(|s| s == "scale"))
            else {
                return Ok(None);
            };
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &r.api);
            match api.get_scale(&name).await {
                Ok(scale) => total += scale.spec.and_then(|s| s.replicas).unwrap_or(0),
                Err(e) if crate::is_not_found(&e) => {}
                Err(e) => {
                    return Err(Error::Api {
                        action: format!("reading the scale of {kind} {ns}/{name}"),
                        source: e,
                    });
                }
            }
        }
        Ok(Some(total))
    }
}

impl Reconciler for DisruptionController {
    type Key = ObjectKey;
    type Error = Error;

    fn name(&self) -> &'static str {
        "disruption-controller"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(pdb) = self.pdbs.get(key) else {
            return Ok(Action::Done);
        };
        let spec = pdb.spec.clone().unwrap_or_default();
        let selector = pods::selector(spec.selector.as_ref(), &key.to_string())?;
        let selected: Vec<Arc<Pod>> = if selector.is_empty() {
            Vec::new()
        } else {
            self.pods
                .list_namespace(&key.namespace)
                .into_iter()
                .filter(|p| selector.matches(&pods::labels(&p.metadata)))
                .collect()
        };
        let now = Timestamp::now();
        let old = pdb.status.clone().unwrap_or_default();
        // Evictions still in flight.
        let mut disrupted: BTreeMap<String, Time> = BTreeMap::new();
        let mut next_expiry: Option<Duration> = None;
        for (name, at) in old.disrupted_pods.clone().unwrap_or_default() {
            let live = selected.iter().find(|p| p.name_any() == name);
            let expires = at.0 + DELETION_TIMEOUT;
            if live.is_some_and(|p| p.metadata.deletion_timestamp.is_none()) && expires > now {
                let left = Duration::try_from(expires.duration_since(now)).unwrap_or_default();
                next_expiry = Some(next_expiry.map_or(left, |n| n.min(left)));
                disrupted.insert(name, at);
            }
        }
        let healthy = selected
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && pods::is_ready(p)
                    && !disrupted.contains_key(&p.name_any())
            })
            .count() as i32;
        let (expected, desired, failure) = match (&spec.min_available, &spec.max_unavailable) {
            (Some(IntOrString::Int(min)), _) => (selected.len() as i32, *min, None),
            (min, max) => match self.expected_scale(&key.namespace, &selected).await? {
                None => (
                    0,
                    0,
                    Some("found no controllers for the selected pods".to_owned()),
                ),
                Some(expected) => {
                    let desired = match (min, max) {
                        (Some(m), _) => scaled(m, expected, true),
                        (None, Some(u)) => (expected - scaled(u, expected, true)).max(0),
                        (None, None) => expected,
                    };
                    (expected, desired, None)
                }
            },
        };
        let allowed = if failure.is_some() {
            0
        } else {
            (healthy - desired).max(0)
        };
        let (status_value, reason, message) = match &failure {
            Some(m) => ("False", "SyncFailed", m.clone()),
            None if allowed > 0 => ("True", "SufficientPods", String::new()),
            None => ("False", "InsufficientPods", String::new()),
        };
        let previous = old.conditions.clone().unwrap_or_default();
        let transition = previous
            .iter()
            .find(|c| c.type_ == "DisruptionAllowed" && c.status == status_value)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        let status = PodDisruptionBudgetStatus {
            current_healthy: healthy,
            desired_healthy: desired,
            disruptions_allowed: allowed,
            expected_pods: expected,
            observed_generation: pdb.metadata.generation,
            disrupted_pods: Some(disrupted).filter(|d| !d.is_empty()),
            conditions: Some(vec![Condition {
                type_: "DisruptionAllowed".into(),
                status: status_value.into(),
                reason: reason.into(),
                message,
                last_transition_time: transition,
                observed_generation: pdb.metadata.generation,
            }]),
        };
        if pdb.status.as_ref() != Some(&status) {
            let mut updated = (*pdb).clone();
            updated.status = Some(status);
            let api: Api<PodDisruptionBudget> =
                Api::namespaced(self.client.clone(), &key.namespace);
            match api
                .replace_status(&key.name, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {}
                Err(e) if crate::is_not_found(&e) => return Ok(Action::Done),
                Err(e) => {
                    return Err(Error::Api {
                        action: format!("updating status of pod disruption budget {key}"),
                        source: e,
                    });
                }
            }
        }
        Ok(match next_expiry {
            Some(d) => Action::RequeueAfter(d + Duration::from_millis(100)),
            None => Action::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_scale_against_the_expected_count() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3, true), 2);
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3, false), 1);
        assert_eq!(scaled(&IntOrString::Int(2), 10, true), 2);
    }
}
