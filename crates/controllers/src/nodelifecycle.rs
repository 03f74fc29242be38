//! The node lifecycle controller (upstream pkg/controller/nodelifecycle). Every
//! `--node-monitor-period` it checks each node's heartbeat — its Lease in `kube-node-lease`
//! or its Ready condition's heartbeat, as observed locally so clocks need not agree. A node
//! silent for `--node-monitor-grace-period` (`--node-startup-grace-period` before it first
//! reported) gets its conditions set to Unknown and its pods marked not ready.
//!
//! Taints follow the conditions: NoSchedule taints for not-ready, unreachable, the pressure
//! conditions, network-unavailable and unschedulable are kept in line at once; the NoExecute
//! `not-ready`/`unreachable` taints that make the taint-eviction controller evict pods are
//! added at a rate limited per zone (`--node-eviction-rate`, `--secondary-node-eviction-rate`
//! for partially disrupted large zones, none for small ones), and when every zone is fully
//! disrupted — the control plane is probably the one cut off — no node is tainted for
//! eviction at all, as upstream.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, ObjectReference, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use skiff_runtime::Informer;
use skiff_runtime::events::{EventType, Recorder, reference};
use tokio::time::Instant;

use crate::context::{Context, synced};
use crate::{Config, Error, Result, pods};

#[cfg(test)]
use std::time::Duration;

/// The NoExecute/NoSchedule taint of a node whose Ready condition is False.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The NoExecute/NoSchedule taint of a node whose Ready condition is Unknown.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Index of pods by node name.
pub const POD_NODE_INDEX: &str = "pod-node";

/// The pod informer with the by-node index.
pub fn pods_by_node(ctx: &Context) -> Informer<Pod> {
    let pods = ctx.informer::<Pod>();
    if !pods.has_index(POD_NODE_INDEX) {
        pods.add_index(POD_NODE_INDEX, |p: &Pod| {
            let n = pods::node_name(p);
            if n.is_empty() {
                Vec::new()
            } else {
                vec![n.to_owned()]
            }
        });
    }
    pods
}

/// What the controller remembers of a node's heartbeats.
#[derive(Debug, Clone)]
struct Health {
    /// When a heartbeat was last seen to change (local clock).
    probe: Instant,
    heartbeat: Option<Timestamp>,
    lease_renew: Option<Timestamp>,
    /// The node's uid, for the event when it goes away.
    uid: Option<String>,
}

/// A zone's health (upstream `ZoneState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    /// Evict at the normal rate.
    Normal,
    /// Many nodes down: slow down or stop.
    PartialDisruption,
    /// Every node down.
    FullDisruption,
}

/// Upstream `ComputeZoneState` from the Ready statuses of a zone's nodes.
pub fn zone_state(ready: usize, not_ready: usize, threshold: f64) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / (ready + not_ready) as f64 >= threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// A token bucket with burst 1 (upstream's eviction rate limiter).
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Bucket {
        Bucket {
            rate,
            tokens: 1.0,
            at: Instant::now(),
        }
    }

    fn set_rate(&mut self, rate: f64) {
        self.refill();
        self.rate = rate;
    }

    fn refill(&mut self) {
        let earned = self.at.elapsed().as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(1.0);
        self.at = Instant::now();
    }

    fn take(&mut self) -> bool {
        self.refill();
        if self.rate > 0.0 && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Start the controller.
pub async fn start(ctx: Context) {
    let nodes = ctx.informer::<Node>();
    let leases: Informer<Lease> = ctx
        .informers
        .get_filtered(watcher::Config::default().fields("metadata.namespace=kube-node-lease"));
    let pods = pods_by_node(&ctx);
    if !ctx
        .wait_synced(vec![synced(&nodes), synced(&leases), synced(&pods)])
        .await
    {
        return;
    }
    let lifecycle = NodeLifecycle {
        client: ctx.client.clone(),
        config: ctx.config.clone(),
        nodes,
        leases,
        pods,
        health: Mutex::new(HashMap::new()),
        buckets: Mutex::new(HashMap::new()),
        recorder: ctx.recorder("node-controller"),
    };
    loop {
        if let Err(e) = lifecycle.monitor().await {
            tracing::debug!(error = %skiff_runtime::controller::ErrorChain(&e), "node lifecycle pass failed");
        }
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep(ctx.config.node_monitor_period) => {}
        }
    }
}

struct NodeLifecycle {
    client: Client,
    config: Arc<Config>,
    nodes: Informer<Node>,
    leases: Informer<Lease>,
    pods: Informer<Pod>,
    health: Mutex<HashMap<String, Health>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    recorder: Recorder,
}

fn condition<'n>(node: &'n Node, type_: &str) -> Option<&'n NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn zone_of(node: &Node) -> String {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    format!(
        "{}:\u{0}:{}",
        labels.get(REGION_LABEL).cloned().unwrap_or_default(),
        labels.get(ZONE_LABEL).cloned().unwrap_or_default()
    )
}

/// The NoSchedule taints a node's conditions call for (upstream TaintNodesByCondition).
pub fn condition_taints(node: &Node) -> Vec<&'static str> {
    let mut out = Vec::new();
    match condition(node, "Ready").map(|c| c.status.as_str()) {
        Some("False") => out.push(NOT_READY),
        Some("Unknown") => out.push(UNREACHABLE),
        _ => {}
    }
    for (type_, key) in [
        ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
        ("DiskPressure", "node.kubernetes.io/disk-pressure"),
        ("PIDPressure", "node.kubernetes.io/pid-pressure"),
        (
            "NetworkUnavailable",
            "node.kubernetes.io/network-unavailable",
        ),
    ] {
        if condition(node, type_).is_some_and(|c| c.status == "True") {
            out.push(key);
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        out.push("node.kubernetes.io/unschedulable");
    }
    out
}

const CONDITION_TAINT_KEYS: [&str; 7] = [
    NOT_READY,
    UNREACHABLE,
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/network-unavailable",
    "node.kubernetes.io/unschedulable",
];

impl NodeLifecycle {
    async fn monitor(&self) -> Result<()> {
        let nodes = self.nodes.list();
        let now = Timestamp::now();
        // 1. Heartbeats → conditions.
        let mut updated: Vec<Node> = Vec::new();
        // Nodes coming and going, told as upstream's node controller tells them.
        let (registered, removed) = {
            let mut health = self.health.lock();
            let mut removed = Vec::new();
            health.retain(|name, h| {
                let keep = nodes.iter().any(|n| n.name_any() == *name);
                if !keep {
                    removed.push((name.clone(), h.uid.clone()));
                }
                keep
            });
            let registered: Vec<&Arc<Node>> = nodes
                .iter()
                .filter(|n| !health.contains_key(&n.name_any()))
                .collect();
            (registered, removed)
        };
        for node in registered {
            let name = node.name_any();
            self.recorder.publish(
                &reference(&**node),
                EventType::Normal,
                "RegisteredNode",
                &format!("Node {name} event: Registered Node {name} in Controller"),
            );
        }
        for (name, uid) in removed {
            let node = ObjectReference {
                kind: Some("Node".into()),
                api_version: Some("v1".into()),
                name: Some(name.clone()),
                uid,
                ..ObjectReference::default()
            };
            self.recorder.publish(
                &node,
                EventType::Normal,
                "RemovingNode",
                &format!("Node {name} event: Removing Node {name} from Controller"),
            );
        }
        for node in &nodes {
            let name = node.name_any();
            let heartbeat = condition(node, "Ready")
                .and_then(|c| c.last_heartbeat_time.as_ref())
                .map(|t| t.0);
            let lease_renew = self
                .leases
                .get_named("kube-node-lease", &name)
                .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
            let probe = {
                let mut health = self.health.lock();
                let h = health.entry(name.clone()).or_insert(Health {
                    probe: Instant::now(),
                    heartbeat,
                    lease_renew,
                    uid: node.metadata.uid.clone(),
                });
                if h.heartbeat != heartbeat || h.lease_renew != lease_renew {
                    h.probe = Instant::now();
                    h.heartbeat = heartbeat;
                    h.lease_renew = lease_renew;
                }
                h.probe
            };
            let ready = condition(node, "Ready");
            let grace = if ready.is_none() {
                self.config.node_startup_grace_period
            } else {
                self.config.node_monitor_grace_period
            };
            if probe.elapsed() <= grace || ready.is_some_and(|c| c.status == "Unknown") {
                updated.push((**node).clone());
                continue;
            }
            match self.mark_unknown(node, now).await {
                Ok(n) => updated.push(n),
                Err(e) => {
                    tracing::debug!(node = %name, error = %skiff_runtime::controller::ErrorChain(&e), "marking node unknown failed");
                    updated.push((**node).clone());
                }
            }
        }
        // 2. Zones.
        let mut zones: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for node in &updated {
            let e = zones.entry(zone_of(node)).or_default();
            if condition(node, "Ready").is_some_and(|c| c.status == "True") {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        let states: BTreeMap<String, ZoneState> = zones
            .iter()
            .map(|(z, (r, n))| {
                (
                    z.clone(),
                    zone_state(*r, *n, self.config.unhealthy_zone_threshold),
                )
            })
            .collect();
        let all_disrupted =
            !states.is_empty() && states.values().all(|s| *s == ZoneState::FullDisruption);
        {
            let mut buckets = self.buckets.lock();
            for (zone, state) in &states {
                let size = zones.get(zone).map_or(0, |(r, n)| r + n);
                let rate = match state {
                    ZoneState::Normal | ZoneState::FullDisruption => self.config.node_eviction_rate,
                    ZoneState::PartialDisruption
                        if size > self.config.large_cluster_size_threshold =>
                    {
                        self.config.secondary_node_eviction_rate
                    }
                    ZoneState::PartialDisruption => 0.0,
                };
                buckets
                    .entry(zone.clone())
                    .or_insert_with(|| Bucket::new(rate))
                    .set_rate(rate);
            }
            buckets.retain(|z, _| states.contains_key(z));
        }
        if all_disrupted {
            tracing::debug!("every zone is fully disrupted: no node is tainted for eviction");
        }
        // 3. Taints.
        for node in &updated {
            if let Err(e) = self.sync_taints(node, all_disrupted).await {
                tracing::debug!(node = %node.name_any(), error = %skiff_runtime::controller::ErrorChain(&e), "updating node taints failed");
            }
        }
        Ok(())
    }

    /// Set the node's conditions Unknown and its pods not ready.
    async fn mark_unknown(&self, node: &Node, now: Timestamp) -> Result<Node> {
        let name = node.name_any();
        let mut n = node.clone();
        let status = n.status.get_or_insert_with(Default::default);
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        for type_ in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
            match conditions.iter_mut().find(|c| c.type_ == type_) {
                Some(c) => {
                    if c.status != "Unknown" {
                        c.last_transition_time = Some(Time(now));
                    }
                    c.status = "Unknown".into();
                    c.reason = Some("NodeStatusUnknown".into());
                    c.message = Some("Kubelet stopped posting node status.".into());
                }
                None => conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                }),
            }
        }
        let api: Api<Node> = Api::all(self.client.clone());
        let stored = api
            .replace_status(&name, &PostParams::default(), &n)
            .await
            .map_err(|e| Error::Api {
                action: format!("marking node {name} unknown"),
                source: e,
            })?;
        tracing::info!(node = %name, "node stopped reporting: conditions set to Unknown");
        self.recorder.publish(
            &reference(node),
            EventType::Normal,
            "NodeNotReady",
            &format!("Node {name} status is now: NodeNotReady"),
        );
        self.mark_pods_not_ready(&name).await;
        Ok(stored)
    }

    /// Upstream `MarkPodsNotReady`.
    async fn mark_pods_not_ready(&self, node: &str) {
        for pod in self.pods.by_index(POD_NODE_INDEX, node) {
            if !pods::is_ready(&pod) || pods::is_terminal(&pod) {
                continue;
            }
            let conditions: Vec<serde_json::Value> = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|mut c| {
                    if c.type_ == "Ready" {
                        c.status = "False".into();
                        c.last_transition_time = Some(Time(Timestamp::now()));
                    }
                    serde_json::to_value(c).unwrap_or_default()
                })
                .collect();
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            let patch = json!({ "status": { "conditions": conditions } });
            if let Err(e) = api
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                tracing::debug!(pod = %pod.name_any(), error = %e, "marking pod not ready failed");
            }
        }
    }

    /// Keep the node's condition taints (NoSchedule now, NoExecute rate-limited).
    async fn sync_taints(&self, node: &Node, all_disrupted: bool) -> Result<()> {
        let current: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let wanted_no_schedule = condition_taints(node);
        let ready = condition(node, "Ready").map(|c| c.status.clone());
        let wanted_no_execute: Option<&str> = if all_disrupted {
            None
        } else {
            match ready.as_deref() {
                Some("False") => Some(NOT_READY),
                Some("Unknown") => Some(UNREACHABLE),
                _ => None,
            }
        };
        let mut next: Vec<Taint> = current
            .iter()
            .filter(|t| {
                !CONDITION_TAINT_KEYS.contains(&t.key.as_str())
                    || (t.effect == "NoSchedule" && wanted_no_schedule.contains(&t.key.as_str()))
                    || (t.effect == "NoExecute" && Some(t.key.as_str()) == wanted_no_execute)
            })
            .cloned()
            .collect();
        for key in &wanted_no_schedule {
            if !next
                .iter()
                .any(|t| t.key == *key && t.effect == "NoSchedule")
            {
                next.push(Taint {
                    key: (*key).into(),
                    effect: "NoSchedule".into(),
                    value: None,
                    time_added: None,
                });
            }
        }
        if let Some(key) = wanted_no_execute
            && !next.iter().any(|t| t.key == key && t.effect == "NoExecute")
        {
            // Swapping not-ready for unreachable is not a new eviction; only a fresh one
            // takes a token.
            let swap = current
                .iter()
                .any(|t| t.effect == "NoExecute" && (t.key == NOT_READY || t.key == UNREACHABLE));
            let allowed = swap
                || self
                    .buckets
                    .lock()
                    .get_mut(&zone_of(node))
                    .is_some_and(Bucket::take);
            if allowed {
                next.push(Taint {
                    key: key.into(),
                    effect: "NoExecute".into(),
                    value: None,
                    time_added: Some(Time(Timestamp::now())),
                });
                tracing::info!(node = %node.name_any(), taint = key, "tainting node for eviction");
            }
        }
        if next == current {
            return Ok(());
        }
        let name = node.name_any();
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = json!({ "metadata": { "resourceVersion": node.metadata.resource_version }, "spec": { "taints": next } });
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::Api {
                action: format!("updating taints of node {name}"),
                source: e,
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};

    #[test]
    fn zone_states_follow_upstream_thresholds() {
        assert_eq!(zone_state(0, 1, 0.55), ZoneState::FullDisruption);
        assert_eq!(zone_state(1, 1, 0.55), ZoneState::Normal);
        assert_eq!(
            zone_state(2, 2, 0.55),
            ZoneState::Normal,
            "at most two down is always normal"
        );
        assert_eq!(zone_state(2, 3, 0.55), ZoneState::PartialDisruption);
        assert_eq!(zone_state(10, 3, 0.55), ZoneState::Normal);
    }

    #[tokio::test(start_paused = true)]
    async fn the_eviction_bucket_releases_one_node_per_interval() {
        let mut b = Bucket::new(0.1);
        assert!(b.take());
        assert!(!b.take());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.take());
        b.set_rate(0.0);
        tokio::time::advance(Duration::from_secs(100)).await;
        assert!(!b.take(), "a zero rate stops evictions");
    }

    #[test]
    fn conditions_map_to_no_schedule_taints() {
        let cond = |t: &str, s: &str| NodeCondition {
            type_: t.into(),
            status: s.into(),
            ..Default::default()
        };
        let node = Node {
            spec: Some(NodeSpec {
                unschedulable: Some(true),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![
                    cond("Ready", "Unknown"),
                    cond("DiskPressure", "True"),
                    cond("MemoryPressure", "False"),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            condition_taints(&node),
            [
                UNREACHABLE,
                "node.kubernetes.io/disk-pressure",
                "node.kubernetes.io/unschedulable"
            ]
        );
    }
}
