//! The pod garbage collector (upstream pkg/controller/podgc), every `pod_gc_period`:
//! finished pods beyond `--terminated-pod-gc-threshold` are deleted oldest first; pods bound
//! to nodes that no longer exist (confirmed by a fresh read after a quarantine) are marked
//! Failed with a `DisruptionTarget` condition and force-deleted; terminating pods that were
//! never scheduled, and terminating pods on out-of-service nodes, are force-deleted.
//!
//! Upstream fixes the period at 20 s and the quarantine at 40 s; here they follow
//! `--node-monitor-period` (×4) and `--node-monitor-grace-period`, which gives exactly those
//! values at the defaults and lets a test cluster with short node timeouts collect quickly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use skiff_runtime::Informer;
use tokio::time::Instant;

use crate::context::{Context, synced};
use crate::{During, Error, Result, pods};
use skiff_api::scheduling;

const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// Start the collector.
pub async fn start(ctx: Context) {
    let pods = ctx.informer::<Pod>();
    let nodes = ctx.informer::<Node>();
    if !ctx.wait_synced(vec![synced(&pods), synced(&nodes)]).await {
        return;
    }
    let gc = PodGc {
        client: ctx.client.clone(),
        pods,
        nodes,
        missing_since: Mutex::new(HashMap::new()),
        threshold: ctx.config.terminated_pod_gc_threshold,
        quarantine: ctx.config.node_monitor_grace_period,
    };
    loop {
        if let Err(e) = gc.pass().await {
            tracing::warn!(error = %skiff_runtime::controller::ErrorChain(&e), "pod garbage collection failed");
        }
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep(ctx.config.pod_gc_period) => {}
        }
    }
}

struct PodGc {
    client: Client,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    missing_since: Mutex<HashMap<String, Instant>>,
    threshold: usize,
    /// How long a node must be missing before its pods are orphans (upstream `quarantineTime`).
    quarantine: Duration,
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

impl PodGc {
    async fn pass(&self) -> Result<()> {
        let all = self.pods.list();
        // 1. Too many finished pods: the oldest go.
        if self.threshold > 0 {
            let mut finished: Vec<&Arc<Pod>> = all
                .iter()
                .filter(|p| pods::is_terminal(p) && p.metadata.deletion_timestamp.is_none())
                .collect();
            if finished.len() > self.threshold {
                finished.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
                let excess = finished.len() - self.threshold;
                for pod in finished.into_iter().take(excess) {
                    self.force_delete(pod).await?;
                }
            }
        }
        // 2. Terminating pods on out-of-service nodes that are not ready.
        for pod in all.iter().filter(|p| pods::is_terminating(p)) {
            let node = pods::node_name(pod);
            if node.is_empty() {
                continue;
            }
            if let Some(n) = self.nodes.get_named("", node)
                && !node_ready(&n)
                && scheduling::taints(&n, "NoExecute")
                    .chain(scheduling::taints(&n, "NoSchedule"))
                    .any(|t| t.key == OUT_OF_SERVICE)
            {
                self.mark_failed(pod, "PodGC: node is out of service")
                    .await?;
                self.force_delete(pod).await?;
            }
        }
        // 3. Pods on nodes that do not exist.
        let mut missing = self.missing_since.lock().clone();
        let mut seen = std::collections::HashSet::new();
        for pod in all.iter() {
            let node = pods::node_name(pod);
            if node.is_empty() || self.nodes.get_named("", node).is_some() {
                continue;
            }
            seen.insert(node.to_owned());
            let since = *missing.entry(node.to_owned()).or_insert_with(Instant::now);
            if since.elapsed() < self.quarantine {
                continue;
            }
            // Confirm with the API server before deleting anything.
            let api: Api<Node> = Api::all(self.client.clone());
            let exists = api
                .get_opt(node)
                .await
                .map_err(|e| Error::Api {
                    action: format!("reading node {node}"),
                    source: e,
                })?
                .is_some();
            if exists {
                continue;
            }
            tracing::info!(pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()), node, "deleting pod of a node that no longer exists");
            if !pods::is_terminal(pod) {
                self.mark_failed(pod, "PodGC: node no longer exists")
                    .await?;
            }
            self.force_delete(pod).await?;
        }
        missing.retain(|n, _| seen.contains(n));
        *self.missing_since.lock() = missing;
        // 4. Terminating pods that were never scheduled.
        for pod in all
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some() && pods::node_name(p).is_empty())
        {
            self.force_delete(pod).await?;
        }
        Ok(())
    }

    /// Upstream sets phase Failed and a DisruptionTarget condition before deleting.
    async fn mark_failed(&self, pod: &Pod, message: &str) -> Result<()> {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let now = Timestamp::now().to_string();
        let mut conditions: Vec<serde_json::Value> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ != "DisruptionTarget")
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
        conditions.push(json!({ "type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC", "message": message, "lastTransitionTime": now }));
        let patch = json!({ "status": { "phase": if pods::is_terminal(pod) { pods::phase(pod) } else { "Failed" }, "conditions": conditions } });
        api.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .done_if_gone(|| {
            format!(
                "marking pod {}/{} failed",
                pod.namespace().unwrap_or_default(),
                pod.name_any()
            )
        })
    }

    async fn force_delete(&self, pod: &Pod) -> Result<()> {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
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
                action: format!(
                    "deleting pod {}/{}",
                    pod.namespace().unwrap_or_default(),
                    pod.name_any()
                ),
                source: e,
            }),
        }
    }
}
