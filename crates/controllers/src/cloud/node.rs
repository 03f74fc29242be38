//! The cloud node controller (upstream `cloud-provider/controllers/node`). A kubelet started
//! with `--cloud-provider=external` registers its Node with the
//! `node.cloudprovider.kubernetes.io/uninitialized` NoSchedule taint; this loop asks the
//! provider for the instance's metadata, sets `spec.providerID` (only ever once: it is
//! immutable in spirit), the instance-type and zone/region labels (beta and GA keys, as
//! upstream), the addresses, and removes the taint so pods can land. A node whose metadata
//! cannot be had yet keeps its taint and is retried with backoff.
//!
//! Initialized nodes only get their beta/GA label pairs reconciled, and every
//! `--node-status-update-frequency` their addresses refreshed from the provider. An address
//! given to the kubelet (`alpha.kubernetes.io/provided-node-ip`) must be one the provider knows
//! and comes first among the addresses of its type.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, NodeAddress, Taint};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_api::cloud::{ANNOTATION_PROVIDED_NODE_IP, TAINT_UNINITIALIZED};
use skiff_runtime::controller::{self, Action, ErrorChain, Reconciler};
use skiff_runtime::events::{EventType, Recorder, reference};
use skiff_runtime::{Change, Informer, WorkQueue};

use super::{CloudProvider, CloudResult, InstanceMetadata, has_taint};
use crate::context::{Context, synced};
use crate::{During, Error, Result};

/// The loop's name (and its events' source).
pub const NAME: &str = "cloud-node-controller";

/// Label pairs kept in step: the beta key is the source of truth, the GA key follows
/// (upstream `labelReconcileInfo`).
const LABEL_PAIRS: [(&str, &str); 3] = [
    (
        "failure-domain.beta.kubernetes.io/zone",
        "topology.kubernetes.io/zone",
    ),
    (
        "failure-domain.beta.kubernetes.io/region",
        "topology.kubernetes.io/region",
    ),
    (
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
    ),
];

/// How often a write that lost a race with another writer of the node is redone.
const UPDATE_ATTEMPTS: usize = 5;

/// Start the controller (idle without a provider that knows instances).
pub async fn start(ctx: Context) {
    let Some(cloud) = ctx.cloud.clone().filter(|c| c.instances().is_some()) else {
        tracing::info!(
            controller = NAME,
            "no cloud provider with instances: not initializing nodes"
        );
        return ctx.stop.cancelled().await;
    };
    let nodes = ctx.informer::<Node>();
    let queue: WorkQueue<String> = WorkQueue::default();
    controller::feed(&nodes, &queue, &ctx.stop, |c| match c {
        Change::Applied { new, .. } => vec![new.name_any()],
        Change::Deleted(_) => Vec::new(),
    });
    if !ctx.wait_synced(vec![synced(&nodes)]).await {
        return;
    }
    let reconciler = Arc::new(CloudNode {
        client: ctx.client.clone(),
        cloud,
        nodes,
        recorder: ctx.recorder(NAME),
    });
    {
        let (reconciler, stop) = (reconciler.clone(), ctx.stop.clone());
        let period = ctx.config.cloud.node_status_update_frequency;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(period) => {}
                }
                reconciler.refresh_addresses().await;
            }
        });
    }
    // Upstream's --concurrent-node-syncs default.
    controller::run(reconciler, queue, ctx.config.workers(1), ctx.stop.clone()).await;
}

/// The instance metadata of `node`, topology filled from `Zones` when the instance metadata
/// has none, and the provider ID taken from the node when the provider reports none.
pub async fn metadata_for(cloud: &dyn CloudProvider, node: &Node) -> Result<InstanceMetadata> {
    let name = node.name_any();
    let cloud_err = |source| Error::Cloud {
        action: format!("getting instance metadata of node {name}"),
        source,
    };
    let instances = cloud.instances().ok_or_else(|| Error::Invalid {
        object: format!("node {name}"),
        message: "the cloud provider does not support instances".into(),
    })?;
    let mut metadata = instances.instance_metadata(node).await.map_err(cloud_err)?;
    if metadata.provider_id.is_empty() {
        metadata.provider_id = provider_id(node).to_owned();
        if metadata.provider_id.is_empty() {
            return Err(Error::Invalid {
                object: format!("node {name}"),
                message: "the cloud provider does not set the node's provider ID".into(),
            });
        }
    }
    if (metadata.zone.is_empty() || metadata.region.is_empty())
        && let Some(zones) = cloud.zones()
    {
        let zone: CloudResult<_> = zones.zone_of(node).await;
        let zone = zone.map_err(|source| Error::Cloud {
            action: format!("getting the zone of node {name}"),
            source,
        })?;
        if metadata.zone.is_empty() {
            metadata.zone = zone.failure_domain;
        }
        if metadata.region.is_empty() {
            metadata.region = zone.region;
        }
    }
    Ok(metadata)
}

fn provider_id(node: &Node) -> &str {
    node.spec
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .unwrap_or("")
}

fn addresses(node: &Node) -> Vec<NodeAddress> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default()
}

/// The addresses a node should have given the provider's: the provider's, the kubelet's
/// Hostname when the provider has none, and the kubelet's provided IP first among the
/// addresses of its type (upstream `GetNodeAddressesFromNodeIP`: that address replaces the
/// other addresses of its type). `None`: the provider reported no addresses, leave them.
pub fn desired_addresses(
    node: &Node,
    cloud: &[NodeAddress],
) -> std::result::Result<Option<Vec<NodeAddress>>, String> {
    if cloud.is_empty() {
        return Ok(None);
    }
    let mut all = cloud.to_vec();
    if !all.iter().any(|a| a.type_ == "Hostname") {
        all.extend(
            addresses(node)
                .into_iter()
                .filter(|a| a.type_ == "Hostname"),
        );
    }
    let provided = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_PROVIDED_NODE_IP))
        .filter(|ip| !ip.is_empty());
    let Some(provided) = provided else {
        return Ok(Some(all));
    };
    let mut enforced: Vec<NodeAddress> = Vec::new();
    let mut types: Vec<String> = Vec::new();
    for ip in provided.split(',').map(str::trim) {
        let ip: std::net::IpAddr = ip
            .parse()
            .map_err(|_| format!("provided node ip {ip:?} is not an IP address"))?;
        let matching: Vec<&NodeAddress> = all
            .iter()
            .filter(|a| a.address.parse::<std::net::IpAddr>().ok() == Some(ip))
            .collect();
        if matching.is_empty() {
            return Err(format!(
                "failed to get node address from cloud provider that matches ip: {ip}"
            ));
        }
        for a in matching {
            enforced.push(a.clone());
            types.push(a.type_.clone());
        }
    }
    enforced.extend(all.into_iter().filter(|a| !types.contains(&a.type_)));
    Ok(Some(enforced))
}

/// Upstream `nodeAddressesChangeDetected`: a different count, or an address of a type that
/// differs.
pub fn addresses_changed(current: &[NodeAddress], desired: &[NodeAddress]) -> bool {
    if current.len() != desired.len() {
        return true;
    }
    let by_type: BTreeMap<&str, &str> = current
        .iter()
        .map(|a| (a.type_.as_str(), a.address.as_str()))
        .collect();
    desired
        .iter()
        .any(|a| by_type.get(a.type_.as_str()) != Some(&a.address.as_str()))
}

/// What initializing a node changes.
#[derive(Debug, Clone, PartialEq)]
pub struct InitPlan {
    /// `spec.providerID`, when the node has none yet.
    pub provider_id: Option<String>,
    /// Labels to set.
    pub labels: BTreeMap<String, String>,
    /// The addresses to report (`None`: leave them).
    pub addresses: Option<Vec<NodeAddress>>,
}

/// Whether a label key is in a namespace providers must not write (upstream's
/// `(^|\.)(kubernetes|k8s)\.io/`).
fn kubernetes_namespace(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return false;
    };
    ["kubernetes.io", "k8s.io"]
        .iter()
        .any(|ns| prefix == *ns || prefix.ends_with(&format!(".{ns}")))
}

/// The changes that initialize `node` from `metadata` (upstream
/// `getNodeModifiersFromCloudProvider`); an error when the kubelet's provided IP is unknown to
/// the provider.
pub fn plan_init(
    node: &Node,
    metadata: &InstanceMetadata,
) -> std::result::Result<InitPlan, String> {
    let addresses = desired_addresses(node, &metadata.addresses).map_err(|e| {
        format!(
            "provided node ip for node {} is not valid: {e}",
            node.name_any()
        )
    })?;
    let mut labels = BTreeMap::new();
    for (value, keys) in [
        (
            &metadata.instance_type,
            [
                "beta.kubernetes.io/instance-type",
                "node.kubernetes.io/instance-type",
            ],
        ),
        (
            &metadata.zone,
            [
                "failure-domain.beta.kubernetes.io/zone",
                "topology.kubernetes.io/zone",
            ],
        ),
        (
            &metadata.region,
            [
                "failure-domain.beta.kubernetes.io/region",
                "topology.kubernetes.io/region",
            ],
        ),
    ] {
        if !value.is_empty() {
            for key in keys {
                labels.insert(key.to_owned(), value.clone());
            }
        }
    }
    let existing = node.metadata.labels.clone().unwrap_or_default();
    for (k, v) in &metadata.additional_labels {
        if kubernetes_namespace(k) {
            tracing::warn!(label = %k, "discarding a provider label in a kubernetes namespace");
        } else if !existing.contains_key(k) {
            labels.insert(k.clone(), v.clone());
        }
    }
    Ok(InitPlan {
        provider_id: provider_id(node)
            .is_empty()
            .then(|| metadata.provider_id.clone()),
        labels,
        addresses,
    })
}

/// Labels to add so each GA key matches its beta key (upstream `reconcileNodeLabels`).
pub fn label_fixes(node: &Node) -> BTreeMap<String, String> {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    LABEL_PAIRS
        .iter()
        .filter_map(|(primary, secondary)| {
            let value = labels.get(*primary)?;
            (labels.get(*secondary) != Some(value))
                .then(|| ((*secondary).to_owned(), value.clone()))
        })
        .collect()
}

struct CloudNode {
    client: Client,
    cloud: Arc<dyn CloudProvider>,
    nodes: Informer<Node>,
    recorder: Recorder,
}

impl CloudNode {
    fn api(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    async fn initialize(&self, node: &Node) -> Result<()> {
        let name = node.name_any();
        tracing::info!(node = %name, "initializing node with cloud provider");
        let metadata = metadata_for(self.cloud.as_ref(), node).await?;
        let plan = plan_init(node, &metadata).map_err(|message| Error::Invalid {
            object: format!("node {name}"),
            message,
        })?;
        // Addresses first: whoever sees the node untainted sees the provider's addresses too
        // (upstream writes them just after, leaving a moment without).
        if let Some(desired) = &plan.addresses {
            self.patch_addresses(node, desired).await?;
        }
        let api = self.api();
        let mut current = node.clone();
        let mut attempt = 0;
        loop {
            let taints: Vec<Taint> = current
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t.key != TAINT_UNINITIALIZED)
                .collect();
            let mut spec = json!({ "taints": taints });
            if let Some(id) = &plan.provider_id
                && provider_id(&current).is_empty()
            {
                spec["providerID"] = json!(id);
            }
            let patch = json!({
                "metadata": {
                    "resourceVersion": current.metadata.resource_version,
                    "labels": plan.labels,
                },
                "spec": spec,
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => break,
                Err(e) if crate::is_conflict(&e) && attempt + 1 < UPDATE_ATTEMPTS => {
                    attempt += 1;
                    current = match api.get_opt(&name).await {
                        Ok(Some(n)) => n,
                        Ok(None) => return Ok(()),
                        Err(source) => {
                            return Err(Error::Api {
                                action: format!("reading node {name}"),
                                source,
                            });
                        }
                    };
                    if !has_taint(&current, TAINT_UNINITIALIZED) {
                        return Ok(());
                    }
                }
                Err(e) if crate::is_not_found(&e) => return Ok(()),
                Err(source) => {
                    return Err(Error::Api {
                        action: format!("initializing node {name}"),
                        source,
                    });
                }
            }
        }
        tracing::info!(node = %name, provider_id = %metadata.provider_id, "initialized node with cloud provider");
        self.recorder.publish(
            &reference(node),
            EventType::Normal,
            "Synced",
            "Node synced successfully",
        );
        Ok(())
    }

    async fn patch_addresses(&self, node: &Node, desired: &[NodeAddress]) -> Result<()> {
        if !addresses_changed(&addresses(node), desired) {
            return Ok(());
        }
        let name = node.name_any();
        // A merge patch replaces the list: addresses the provider no longer reports go.
        let patch = json!({ "status": { "addresses": desired } });
        self.api()
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .done_if_gone(|| format!("updating addresses of node {name}"))
    }

    /// Upstream `UpdateNodeStatus`: the addresses of every initialized node, from the provider.
    async fn refresh_addresses(&self) {
        let Some(instances) = self.cloud.instances() else {
            return;
        };
        for node in self.nodes.list() {
            if has_taint(&node, TAINT_UNINITIALIZED) {
                continue;
            }
            let metadata = match instances.instance_metadata(&node).await {
                Ok(m) => m,
                Err(e) => {
                    // Nodes the provider does not manage (hollow nodes) end up here every time.
                    tracing::debug!(node = %node.name_any(), error = %ErrorChain(&e), "no instance metadata for node addresses");
                    continue;
                }
            };
            match desired_addresses(&node, &metadata.addresses) {
                Ok(Some(desired)) => {
                    if let Err(e) = self.patch_addresses(&node, &desired).await {
                        tracing::warn!(node = %node.name_any(), error = %ErrorChain(&e), "refreshing node addresses failed");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(node = %node.name_any(), error = %e, "refreshing node addresses failed")
                }
            }
        }
    }
}

impl Reconciler for CloudNode {
    type Key = String;
    type Error = Error;

    fn name(&self) -> &'static str {
        NAME
    }

    async fn reconcile(&self, name: &String) -> Result<Action> {
        let Some(node) = self.nodes.get_named("", name) else {
            return Ok(Action::Done);
        };
        if has_taint(&node, TAINT_UNINITIALIZED) {
            self.initialize(&node).await?;
            return Ok(Action::Done);
        }
        let fixes = label_fixes(&node);
        if !fixes.is_empty() {
            let patch = json!({ "metadata": { "labels": fixes } });
            match self
                .api()
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if crate::is_not_found(&e) => {}
                Err(source) => {
                    return Err(Error::Api {
                        action: format!("reconciling labels of node {name}"),
                        source,
                    });
                }
            }
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::Zone;
    use crate::cloud::fake::FakeCloud;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use kube::api::ObjectMeta;

    fn addr(t: &str, a: &str) -> NodeAddress {
        NodeAddress {
            type_: t.into(),
            address: a.into(),
        }
    }

    fn node(annotations: &[(&str, &str)], labels: &[(&str, &str)], provider: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).into(), (*v).into()))
                        .collect(),
                ),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).into(), (*v).into()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: (!provider.is_empty()).then(|| provider.into()),
                taints: Some(vec![Taint {
                    key: TAINT_UNINITIALIZED.into(),
                    value: Some("true".into()),
                    effect: "NoSchedule".into(),
                    time_added: None,
                }]),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![addr("InternalIP", "10.0.0.9"), addr("Hostname", "n1")]),
                ..Default::default()
            }),
        }
    }

    fn metadata() -> InstanceMetadata {
        InstanceMetadata {
            provider_id: "skiff://n1".into(),
            instance_type: "skiff".into(),
            addresses: vec![
                addr("InternalIP", "10.0.0.1"),
                addr("InternalIP", "10.0.0.9"),
                addr("ExternalIP", "203.0.113.1"),
            ],
            zone: "z1".into(),
            region: String::new(),
            additional_labels: BTreeMap::from([
                ("example.com/rack".into(), "r7".into()),
                ("node.kubernetes.io/sneaky".into(), "x".into()),
            ]),
        }
    }

    #[test]
    fn init_sets_provider_id_labels_and_addresses_with_the_provided_ip_first() {
        let n = node(&[(ANNOTATION_PROVIDED_NODE_IP, "10.0.0.9")], &[], "");
        let plan = plan_init(&n, &metadata()).unwrap();
        assert_eq!(plan.provider_id.as_deref(), Some("skiff://n1"));
        assert_eq!(
            plan.labels,
            BTreeMap::from([
                ("beta.kubernetes.io/instance-type".into(), "skiff".into()),
                ("node.kubernetes.io/instance-type".into(), "skiff".into()),
                ("failure-domain.beta.kubernetes.io/zone".into(), "z1".into()),
                ("topology.kubernetes.io/zone".into(), "z1".into()),
                ("example.com/rack".into(), "r7".into()),
            ]),
            "no empty region, no provider label in a kubernetes namespace"
        );
        // The provided IP replaces the other InternalIP; the kubelet's Hostname is kept.
        assert_eq!(
            plan.addresses.unwrap(),
            [
                addr("InternalIP", "10.0.0.9"),
                addr("ExternalIP", "203.0.113.1"),
                addr("Hostname", "n1"),
            ]
        );
        let set = node(&[], &[], "skiff://already");
        assert_eq!(plan_init(&set, &metadata()).unwrap().provider_id, None);
    }

    #[test]
    fn an_unknown_provided_ip_refuses_initialization() {
        let n = node(&[(ANNOTATION_PROVIDED_NODE_IP, "192.168.9.9")], &[], "");
        let err = plan_init(&n, &metadata()).unwrap_err();
        assert_eq!(
            err,
            "provided node ip for node n1 is not valid: failed to get node address from cloud provider that matches ip: 192.168.9.9"
        );
    }

    #[test]
    fn address_changes_are_detected_by_type_and_count() {
        let a = [addr("InternalIP", "10.0.0.1"), addr("Hostname", "n1")];
        assert!(!addresses_changed(&a, &a));
        assert!(addresses_changed(&a, &a[..1]));
        assert!(addresses_changed(
            &a,
            &[addr("InternalIP", "10.0.0.2"), addr("Hostname", "n1")]
        ));
    }

    #[test]
    fn ga_labels_follow_beta_labels() {
        let n = node(
            &[],
            &[
                ("failure-domain.beta.kubernetes.io/zone", "z1"),
                ("topology.kubernetes.io/zone", "old"),
                ("beta.kubernetes.io/instance-type", "big"),
            ],
            "",
        );
        assert_eq!(
            label_fixes(&n),
            BTreeMap::from([
                ("topology.kubernetes.io/zone".into(), "z1".into()),
                ("node.kubernetes.io/instance-type".into(), "big".into()),
            ])
        );
    }

    #[tokio::test]
    async fn metadata_takes_topology_from_zones_and_the_id_from_the_node() {
        let cloud = FakeCloud::default();
        {
            let mut s = cloud.state.lock();
            s.metadata.insert(
                "n1".into(),
                InstanceMetadata {
                    zone: "z1".into(),
                    ..Default::default()
                },
            );
            s.zones.insert(
                "n1".into(),
                Zone {
                    failure_domain: "ignored".into(),
                    region: "r1".into(),
                },
            );
        }
        let m = metadata_for(&cloud, &node(&[], &[], "skiff://kubelet-set"))
            .await
            .unwrap();
        assert_eq!(m.provider_id, "skiff://kubelet-set");
        assert_eq!((m.zone.as_str(), m.region.as_str()), ("z1", "r1"));
        assert_eq!(cloud.calls(), ["metadata n1", "zone n1"]);
        let err = metadata_for(&cloud, &node(&[], &[], "")).await.unwrap_err();
        assert!(err.to_string().contains("provider ID"), "{err}");
        cloud.state.lock().metadata.clear();
        let err = metadata_for(&cloud, &node(&[], &[], "")).await.unwrap_err();
        assert_eq!(
            ErrorChain(&err).to_string(),
            "getting instance metadata of node n1 failed: cloud provider call instance metadata failed: injected failure"
        );
    }
}
