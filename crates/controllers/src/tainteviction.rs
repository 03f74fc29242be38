//! The taint eviction controller (upstream pkg/controller/tainteviction): a pod on a node
//! with a NoExecute taint it does not tolerate is evicted at once; one that tolerates all of
//! them for a limited time (`tolerationSeconds`, 300 s for not-ready/unreachable by
//! admission default) is evicted when the shortest of those runs out, counted from when the
//! taint was added. Evicted pods get the `DisruptionTarget` condition first, as upstream.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::events::{EventType, Recorder, reference};
use skiff_runtime::{Change, Informer, ObjectKey, WorkQueue};

use crate::context::{Context, synced};
use crate::nodelifecycle::{POD_NODE_INDEX, pods_by_node};
use crate::{Error, Result, pods};
use skiff_api::scheduling;

/// Start the controller.
pub async fn start(ctx: Context) {
    let nodes = ctx.informer::<Node>();
    let pods = pods_by_node(&ctx);
    let queue: WorkQueue<ObjectKey> = WorkQueue::default();
    controller::feed(&pods, &queue, &ctx.stop, |c| match c {
        Change::Applied { new, .. } if !pods::node_name(new).is_empty() => {
            vec![ObjectKey::of(new.as_ref())]
        }
        _ => Vec::new(),
    });
    {
        let pods = pods.clone();
        controller::feed(&nodes, &queue, &ctx.stop, move |c| {
            let node = c.object();
            let taints_changed = match c {
                Change::Applied {
                    old: Some(old),
                    new,
                } => {
                    old.spec.as_ref().and_then(|s| s.taints.clone())
                        != new.spec.as_ref().and_then(|s| s.taints.clone())
                }
                _ => true,
            };
            if !taints_changed {
                return Vec::new();
            }
            pods.by_index(POD_NODE_INDEX, &node.name_any())
                .iter()
                .map(|p| ObjectKey::of(p.as_ref()))
                .collect()
        });
    }
    if !ctx.wait_synced(vec![synced(&nodes), synced(&pods)]).await {
        return;
    }
    let reconciler = Arc::new(TaintEviction {
        client: ctx.client.clone(),
        nodes,
        pods,
        recorder: ctx.recorder("taint-eviction-controller"),
    });
    controller::run(reconciler, queue, ctx.config.workers(8), ctx.stop.clone()).await;
}

struct TaintEviction {
    client: Client,
    nodes: Informer<Node>,
    pods: Informer<Pod>,
    recorder: Recorder,
}

/// When a pod must leave a node with these NoExecute taints: `Some(None)` now, `Some(t)` at
/// `t`, `None` never (upstream `getMinTolerationTime` over the matching tolerations). Time
/// counts from when the taint was added, or from `arrived` for a pod that came later.
pub fn eviction_time(
    taints: &[Taint],
    tolerations: &[Toleration],
    arrived: Option<Timestamp>,
    now: Timestamp,
) -> Option<Option<Timestamp>> {
    if taints.is_empty() {
        return None;
    }
    let mut deadline: Option<Timestamp> = None;
    for taint in taints {
        let matching: Vec<&Toleration> = tolerations
            .iter()
            .filter(|t| scheduling::tolerates(t, taint))
            .collect();
        if matching.is_empty() {
            return Some(None);
        }
        // A toleration without seconds tolerates forever; the longest wins for this taint.
        if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            continue;
        }
        let seconds = matching
            .iter()
            .filter_map(|t| t.toleration_seconds)
            .max()
            .unwrap_or(0);
        if seconds <= 0 {
            return Some(None);
        }
        let added = taint.time_added.as_ref().map_or(now, |t| t.0);
        let since = arrived.map_or(added, |a| a.max(added));
        let at = since + Duration::from_secs(seconds as u64);
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
    }
    deadline.map(Some)
}

impl Reconciler for TaintEviction {
    type Key = ObjectKey;
    type Error = Error;

    fn name(&self) -> &'static str {
        "taint-eviction-controller"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(pod) = self.pods.get(key) else {
            return Ok(Action::Done);
        };
        if pod.metadata.deletion_timestamp.is_some() || pods::is_terminal(&pod) {
            return Ok(Action::Done);
        }
        let Some(node) = self.nodes.get_named("", pods::node_name(&pod)) else {
            return Ok(Action::Done);
        };
        let taints: Vec<Taint> = scheduling::taints(&node, "NoExecute").cloned().collect();
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        let now = Timestamp::now();
        let arrived = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
        match eviction_time(&taints, &tolerations, arrived, now) {
            None => Ok(Action::Done),
            Some(Some(at)) if at > now => {
                let left = Duration::try_from(at.duration_since(now)).unwrap_or_default();
                Ok(Action::RequeueAfter(left + Duration::from_millis(50)))
            }
            Some(_) => {
                self.evict(&pod).await?;
                Ok(Action::Done)
            }
        }
    }
}

impl TaintEviction {
    async fn evict(&self, pod: &Pod) -> Result<()> {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        self.recorder.publish(
            &reference(pod),
            EventType::Normal,
            "TaintManagerEviction",
            &format!("Marking for deletion Pod {ns}/{name}"),
        );
        let mut conditions: Vec<serde_json::Value> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ != "DisruptionTarget")
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
        conditions.push(json!({ "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager", "message": "Taint manager: deleting due to NoExecute taint", "lastTransitionTime": Timestamp::now().to_string() }));
        let patch = json!({ "metadata": { "uid": pod.metadata.uid }, "status": { "conditions": conditions } });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if crate::is_not_found(&e) || crate::is_conflict(&e) => return Ok(()),
            Err(e) => {
                return Err(Error::Api {
                    action: format!("marking pod {ns}/{name} for eviction"),
                    source: e,
                });
            }
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{ns}/{name}"), node = pods::node_name(pod), "evicted pod from a NoExecute-tainted node");
                Ok(())
            }
            Err(e) if crate::is_not_found(&e) || crate::is_conflict(&e) => Ok(()),
            Err(e) => Err(Error::Api {
                action: format!("evicting pod {ns}/{name}"),
                source: e,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn taint(key: &str, added: Timestamp) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            value: None,
            time_added: Some(Time(added)),
        }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            value: None,
            toleration_seconds: seconds,
        }
    }

    #[test]
    fn eviction_waits_for_the_shortest_toleration() {
        let now: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
        let added: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let t = [taint("node.kubernetes.io/unreachable", added)];
        assert_eq!(
            eviction_time(&t, &[], None, now),
            Some(None),
            "untolerated: now"
        );
        assert_eq!(
            eviction_time(
                &t,
                &[toleration("node.kubernetes.io/unreachable", None)],
                None,
                now
            ),
            None,
            "forever"
        );
        let at = eviction_time(
            &t,
            &[toleration("node.kubernetes.io/unreachable", Some(300))],
            None,
            now,
        )
        .unwrap()
        .unwrap();
        assert_eq!(at.to_string(), "2024-01-01T00:05:00Z");
        let late: Timestamp = "2024-01-01T00:02:00Z".parse().unwrap();
        let at = eviction_time(
            &t,
            &[toleration("node.kubernetes.io/unreachable", Some(300))],
            Some(late),
            now,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            at.to_string(),
            "2024-01-01T00:07:00Z",
            "a pod arriving later gets its full toleration"
        );
        assert_eq!(
            eviction_time(
                &t,
                &[toleration("node.kubernetes.io/unreachable", Some(0))],
                None,
                now
            ),
            Some(None)
        );
        assert_eq!(eviction_time(&[], &[], None, now), None);
    }
}
