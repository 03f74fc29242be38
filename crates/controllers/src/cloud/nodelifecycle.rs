//! The cloud node lifecycle controller (upstream `cloud-provider/controllers/nodelifecycle`).
//! Every `--node-monitor-period` each node not labelled
//! `node.kubernetes.io/exclude-from-lifecycle-management` is looked at: a Ready one loses the
//! `node.cloudprovider.kubernetes.io/shutdown` taint; for a NotReady one the provider is asked
//! whether its instance still exists — if not, the Node is deleted (its pods are then
//! garbage-collected) — and whether it is shut down, which earns it the shutdown NoSchedule
//! taint. These calls are few by design: only NotReady nodes cost a provider call.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_api::cloud::TAINT_SHUTDOWN;
use skiff_runtime::Informer;
use skiff_runtime::controller::ErrorChain;
use skiff_runtime::events::{EventType, Recorder, reference};

use super::{CloudProvider, CloudResult, Instances, has_taint, is_ready};
use crate::Error;
use crate::context::{Context, synced};

/// The loop's name (and its events' source).
pub const NAME: &str = "cloud-node-lifecycle-controller";

/// Nodes with this label are left alone (upstream `LabelNodeLifecycleExclude`).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-lifecycle-management";

/// What to do with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Keep,
    /// Ready again: the shutdown taint goes.
    Untaint,
    /// Shut down: add the shutdown taint.
    TaintShutdown,
    /// Its instance is gone: delete the Node.
    Delete,
}

/// Upstream `MonitorNodes` for one node.
pub async fn verdict(instances: &dyn Instances, node: &Node) -> CloudResult<Verdict> {
    if node
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(EXCLUDE_LABEL))
    {
        return Ok(Verdict::Keep);
    }
    if is_ready(node) {
        return Ok(if has_taint(node, TAINT_SHUTDOWN) {
            Verdict::Untaint
        } else {
            Verdict::Keep
        });
    }
    if !instances.instance_exists(node).await? {
        return Ok(Verdict::Delete);
    }
    Ok(
        if instances.instance_shutdown(node).await? && !has_taint(node, TAINT_SHUTDOWN) {
            Verdict::TaintShutdown
        } else {
            Verdict::Keep
        },
    )
}

/// Start the controller (idle without a provider that knows instances).
pub async fn start(ctx: Context) {
    let Some(cloud) = ctx.cloud.clone().filter(|c| c.instances().is_some()) else {
        tracing::info!(
            controller = NAME,
            "no cloud provider with instances: not watching node instances"
        );
        return ctx.stop.cancelled().await;
    };
    let nodes = ctx.informer::<Node>();
    if !ctx.wait_synced(vec![synced(&nodes)]).await {
        return;
    }
    let lifecycle = Lifecycle {
        client: ctx.client.clone(),
        cloud,
        nodes,
        recorder: ctx.recorder(NAME),
    };
    loop {
        lifecycle.monitor().await;
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep(ctx.config.node_monitor_period) => {}
        }
    }
}

struct Lifecycle {
    client: Client,
    cloud: Arc<dyn CloudProvider>,
    nodes: Informer<Node>,
    recorder: Recorder,
}

impl Lifecycle {
    async fn monitor(&self) {
        let Some(instances) = self.cloud.instances() else {
            return;
        };
        for node in self.nodes.list() {
            let name = node.name_any();
            let verdict = match verdict(instances, &node).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(node = %name, error = %ErrorChain(&e), "checking the node's instance failed");
                    continue;
                }
            };
            if let Err(e) = self.act(&node, verdict).await {
                tracing::warn!(node = %name, error = %ErrorChain(&e), "acting on the node's instance state failed");
            }
        }
    }

    async fn act(&self, node: &Node, verdict: Verdict) -> crate::Result<()> {
        let name = node.name_any();
        let api: Api<Node> = Api::all(self.client.clone());
        let taints = |keep_shutdown: bool| -> Vec<Taint> {
            let mut t: Vec<Taint> = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t.key != TAINT_SHUTDOWN)
                .collect();
            if keep_shutdown {
                t.push(Taint {
                    key: TAINT_SHUTDOWN.into(),
                    effect: "NoSchedule".into(),
                    value: None,
                    time_added: None,
                });
            }
            t
        };
        let patch_taints = |taints: Vec<Taint>| {
            let api = api.clone();
            let name = name.clone();
            let rv = node.metadata.resource_version.clone();
            async move {
                let patch =
                    json!({ "metadata": { "resourceVersion": rv }, "spec": { "taints": taints } });
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
        };
        let wrap = |action: &str, source| Error::Api {
            action: format!("{action} node {name}"),
            source,
        };
        match verdict {
            Verdict::Keep => Ok(()),
            Verdict::Untaint => patch_taints(taints(false))
                .await
                .map_err(|e| wrap("removing the shutdown taint of", e)),
            Verdict::TaintShutdown => {
                tracing::info!(node = %name, "node's instance is shut down: tainting it");
                patch_taints(taints(true))
                    .await
                    .map_err(|e| wrap("adding the shutdown taint to", e))
            }
            Verdict::Delete => {
                tracing::info!(node = %name, "deleting node since it is no longer present in the cloud provider");
                self.recorder.publish(
                    &reference(node),
                    EventType::Normal,
                    "DeletingNode",
                    &format!(
                        "Deleting node {name} because it does not exist in the cloud provider"
                    ),
                );
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(e) if crate::is_not_found(&e) => Ok(()),
                    Err(e) => {
                        self.recorder.publish(
                            &reference(node),
                            EventType::Warning,
                            "DeletingNodeFailed",
                            &format!("Failed deleting node {name}: {e}"),
                        );
                        Err(wrap("deleting", e))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::fake::FakeCloud;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
    use kube::api::ObjectMeta;

    fn node(name: &str, ready: &str, shutdown_taint: bool, excluded: bool) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: excluded.then(|| [(EXCLUDE_LABEL.to_owned(), String::new())].into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: shutdown_taint.then(|| {
                    vec![Taint {
                        key: TAINT_SHUTDOWN.into(),
                        effect: "NoSchedule".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[tokio::test]
    async fn only_not_ready_nodes_are_checked_and_judged_like_upstream() {
        let cloud = FakeCloud::default();
        {
            let mut s = cloud.state.lock();
            s.gone.insert("gone".into());
            s.shut_down.insert("off".into());
            s.shut_down.insert("off-tainted".into());
        }
        let cases = [
            (node("ready", "True", false, false), Verdict::Keep),
            (node("back", "True", true, false), Verdict::Untaint),
            (node("gone", "Unknown", false, false), Verdict::Delete),
            (node("off", "False", false, false), Verdict::TaintShutdown),
            (node("off-tainted", "False", true, false), Verdict::Keep),
            (node("down", "Unknown", false, false), Verdict::Keep),
            (node("gone", "Unknown", false, true), Verdict::Keep),
        ];
        for (n, want) in cases {
            assert_eq!(verdict(&cloud, &n).await.unwrap(), want, "{}", n.name_any());
        }
        assert_eq!(
            cloud.calls(),
            [
                "exists gone",
                "exists off",
                "shutdown off",
                "exists off-tainted",
                "shutdown off-tainted",
                "exists down",
                "shutdown down",
            ],
            "Ready and excluded nodes cost no provider call; a gone one is not asked about shutdown"
        );
    }
}
