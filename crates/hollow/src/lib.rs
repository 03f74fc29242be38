//! Hollow nodes: simulated nodes for scale benchmarks and for rehearsing a cluster's
//! scheduling on a laptop (upstream's kubemark). Each hollow node is a real Node object with a
//! Lease kept alive and a Ready status, and every pod bound to it is reported Running and Ready
//! without any container being run. Pods leave through the usual graceful deletion: when one
//! is marked for deletion, the hollow node does the kubelet's final delete.
//!
//! Two pod annotations let workloads that must finish (Jobs) run on hollow nodes:
//! `hollow.skiff.io/succeed-after-seconds` and `hollow.skiff.io/fail-after-seconds` end the pod
//! that long after it started, with exit code 0 or 1.
//!
//! Everything goes through the API like a kubelet's writes, so the load on the API server is
//! realistic. Addresses are fake and never routed: nodes get 198.18.0.0/16 and pods
//! 198.19.0.0/16 (the benchmarking range of RFC 2544).

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::{CancellationToken, Informer, Informers, ObjectKey, WorkQueue};

/// Marks a pod to succeed this many seconds after it started.
pub const SUCCEED_AFTER: &str = "hollow.skiff.io/succeed-after-seconds";
/// Marks a pod to fail this many seconds after it started.
pub const FAIL_AFTER: &str = "hollow.skiff.io/fail-after-seconds";
/// The label every hollow node carries.
pub const HOLLOW_LABEL: &str = "skiff.io/hollow-node";

const FIELD_MANAGER: &str = "skiff-hollow-node";

/// Why hollow nodes stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Registering a node failed.
    #[error("registering node {node} failed")]
    Register {
        /// The node.
        node: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// A `--taint` or `--label` value is malformed.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// Which option.
        what: &'static str,
        /// The value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// What the simulated nodes look like.
#[derive(Debug, Clone)]
pub struct Config {
    /// How many nodes.
    pub count: usize,
    /// Node names are `<prefix>-<index>`.
    pub name_prefix: String,
    /// Capacity (and allocatable): cpu, memory, pods, ephemeral-storage, and any extended
    /// resources.
    pub capacity: BTreeMap<String, String>,
    /// Labels added to every node.
    pub labels: BTreeMap<String, String>,
    /// Taints of every node, as `key[=value]:Effect`.
    pub taints: Vec<String>,
    /// How often Leases are renewed (the kubelet's 10 s).
    pub lease_interval: Duration,
    /// How often node status is reported (the kubelet's one minute).
    pub status_interval: Duration,
    /// Concurrent pod status writers.
    pub workers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            count: 1,
            name_prefix: "hollow-node".into(),
            capacity: default_capacity(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            lease_interval: Duration::from_secs(10),
            status_interval: Duration::from_secs(60),
            workers: 16,
        }
    }
}

/// The default capacity of a hollow node: 32 cpu, 256Gi memory, 110 pods.
pub fn default_capacity() -> BTreeMap<String, String> {
    [
        ("cpu", "32"),
        ("memory", "256Gi"),
        ("pods", "110"),
        ("ephemeral-storage", "1Ti"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Parse `key[=value]:Effect` into a taint.
pub fn parse_taint(spec: &str) -> Result<Value, Error> {
    let invalid = |reason| Error::Invalid {
        what: "taint",
        value: spec.to_owned(),
        reason,
    };
    let (kv, effect) = spec
        .rsplit_once(':')
        .ok_or_else(|| invalid("expected key[=value]:Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(invalid(
            "effect must be NoSchedule, PreferNoSchedule or NoExecute",
        ));
    }
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    if key.is_empty() {
        return Err(invalid("the key is empty"));
    }
    let mut taint = json!({ "key": key, "effect": effect });
    if !value.is_empty() {
        taint["value"] = json!(value);
    }
    Ok(taint)
}

/// Parse `key=value`.
pub fn parse_label(spec: &str) -> Result<(String, String), Error> {
    spec.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| Error::Invalid {
            what: "label",
            value: spec.to_owned(),
            reason: "expected key=value",
        })
}

/// The name of hollow node `index`.
pub fn node_name(config: &Config, index: usize) -> String {
    format!("{}-{index}", config.name_prefix)
}

fn node_ip(index: usize) -> Ipv4Addr {
    let n = (index % 65_534) as u32 + 1;
    Ipv4Addr::new(198, 18, (n >> 8) as u8, (n & 0xff) as u8)
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// Register the nodes, keep them alive and run their pods until `shutdown`.
pub async fn run(client: Client, config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let taints: Vec<Value> = config
        .taints
        .iter()
        .map(|t| parse_taint(t))
        .collect::<Result<_, _>>()?;
    let names: Vec<String> = (0..config.count).map(|i| node_name(&config, i)).collect();
    let nodes: Api<Node> = Api::all(client.clone());
    let registered = stream::iter(names.iter().enumerate())
        .map(|(index, name)| register(&nodes, &config, &taints, index, name))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for result in registered {
        result?;
    }
    tracing::info!(count = config.count, "hollow nodes registered");

    let own: Arc<HashSet<String>> = Arc::new(names.iter().cloned().collect());
    let indexes: Arc<BTreeMap<String, usize>> = Arc::new(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect(),
    );
    tokio::spawn(heartbeat_leases(
        client.clone(),
        names.clone(),
        config.lease_interval,
        shutdown.clone(),
    ));
    tokio::spawn(report_status(
        nodes.clone(),
        names.clone(),
        config.status_interval,
        shutdown.clone(),
    ));

    let informers = Informers::new(client.clone(), shutdown.clone());
    let pods: Informer<Pod> =
        informers.get_filtered(watcher::Config::default().fields("spec.nodeName!="));
    let queue = WorkQueue::default();
    {
        let own = own.clone();
        controller::feed(&pods, &queue, &shutdown, move |change| {
            let pod = change.object();
            match pod.spec.as_ref().and_then(|s| s.node_name.as_ref()) {
                Some(node) if own.contains(node) => vec![ObjectKey::of(pod.as_ref())],
                _ => Vec::new(),
            }
        });
    }
    let runner = Arc::new(PodRunner {
        client,
        pods,
        own,
        indexes,
        next_ip: AtomicU32::new(0),
    });
    controller::run(runner, queue, config.workers, shutdown).await;
    Ok(())
}

async fn register(
    nodes: &Api<Node>,
    config: &Config,
    taints: &[Value],
    index: usize,
    name: &str,
) -> Result<(), Error> {
    let mut labels = config.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), name.to_owned());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), "amd64".into());
    labels.insert(HOLLOW_LABEL.into(), "true".into());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name, "labels": labels },
        "spec": { "taints": taints },
    }))
    .expect("a well-formed Node");
    let wrap = |source| Error::Register {
        node: name.to_owned(),
        source,
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = json!({ "metadata": { "labels": labels }, "spec": { "taints": taints } });
            nodes
                .patch(name, &params(), &Patch::Merge(&patch))
                .await
                .map_err(wrap)?;
        }
        Err(e) => return Err(wrap(e)),
    }
    let status = json!({ "status": node_status(config, index, name) });
    nodes
        .patch_status(name, &params(), &Patch::Merge(&status))
        .await
        .map_err(wrap)?;
    Ok(())
}

fn node_status(config: &Config, index: usize, name: &str) -> Value {
    let t = now();
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": t, "lastTransitionTime": t,
        })
    };
    json!({
        "capacity": config.capacity,
        "allocatable": config.capacity,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "hollow kubelet is posting ready status"),
        ],
        "addresses": [
            { "type": "InternalIP", "address": node_ip(index).to_string() },
            { "type": "Hostname", "address": name },
        ],
        "daemonEndpoints": { "kubeletEndpoint": { "Port": 10250 } },
        "nodeInfo": {
            "machineID": format!("hollow-{index}"),
            "systemUUID": format!("hollow-{index}"),
            "bootID": format!("hollow-{index}"),
            "kernelVersion": "hollow",
            "osImage": "Skiff hollow node",
            "containerRuntimeVersion": "hollow://1.0.0",
            "kubeletVersion": "v1.35.0-skiff",
            "kubeProxyVersion": "v1.35.0-skiff",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    })
}

async fn heartbeat_leases(
    client: Client,
    names: Vec<String>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    loop {
        stream::iter(names.iter())
            .for_each_concurrent(16, |name| {
                let leases = leases.clone();
                async move {
                    if let Err(err) = renew_lease(&leases, name, interval).await {
                        tracing::debug!(node = %name, error = %err, "renewing lease failed");
                    }
                }
            })
            .await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn renew_lease(
    leases: &Api<Lease>,
    name: &str,
    interval: Duration,
) -> Result<(), kube::Error> {
    let spec = LeaseSpec {
        holder_identity: Some(name.to_owned()),
        // The kubelet's lease lasts four renew intervals (40 s for 10 s).
        lease_duration_seconds: Some((interval.as_secs() * 4).max(1) as i32),
        renew_time: Some(MicroTime(jiff::Timestamp::now())),
        ..Default::default()
    };
    let patch = json!({ "spec": spec });
    match leases.patch(name, &params(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some("kube-node-lease".into()),
                    owner_references: None,
                    ..Default::default()
                },
                spec: Some(spec),
            };
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}

async fn report_status(
    nodes: Api<Node>,
    names: Vec<String>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        stream::iter(names.iter())
            .for_each_concurrent(16, |name| {
                let nodes = nodes.clone();
                async move {
                    let t = now();
                    let patch = json!({ "status": { "conditions": [
                        { "type": "Ready", "status": "True", "reason": "KubeletReady",
                          "message": "hollow kubelet is posting ready status", "lastHeartbeatTime": t },
                    ] } });
                    // Strategic merge keeps the other conditions (merge key `type`).
                    if let Err(err) = nodes
                        .patch_status(name, &params(), &Patch::Strategic(&patch))
                        .await
                    {
                        tracing::debug!(node = %name, error = %err, "reporting status failed");
                    }
                }
            })
            .await;
    }
}

/// Reports pods bound to hollow nodes as running, ends those asked to end, and completes
/// deletions.
struct PodRunner {
    client: Client,
    pods: Informer<Pod>,
    own: Arc<HashSet<String>>,
    indexes: Arc<BTreeMap<String, usize>>,
    next_ip: AtomicU32,
}

impl PodRunner {
    fn pod_ip(&self) -> Ipv4Addr {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed) % 65_534 + 1;
        Ipv4Addr::new(198, 19, (n >> 8) as u8, (n & 0xff) as u8)
    }
}

fn annotation_seconds(pod: &Pod, key: &str) -> Option<u64> {
    pod.annotations().get(key).and_then(|v| v.parse().ok())
}

impl Reconciler for PodRunner {
    type Key = ObjectKey;
    type Error = kube::Error;

    fn name(&self) -> &'static str {
        "hollow-pods"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, kube::Error> {
        let Some(pod) = self.pods.get(key) else {
            return Ok(Action::Done);
        };
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            return Ok(Action::Done);
        };
        if !self.own.contains(&node) {
            return Ok(Action::Done);
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        if pod.metadata.deletion_timestamp.is_some() {
            // The kubelet's final delete once the containers are gone (here: at once).
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: pod.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            return match api.delete(&key.name, &params).await {
                Ok(_) => Ok(Action::Done),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::Done),
                Err(e) => Err(e),
            };
        }
        let status = pod.status.clone().unwrap_or_default();
        let phase = status.phase.as_deref().unwrap_or("Pending");
        if phase == "Succeeded" || phase == "Failed" {
            return Ok(Action::Done);
        }
        let ending = annotation_seconds(&pod, SUCCEED_AFTER)
            .map(|s| (s, 0))
            .or_else(|| annotation_seconds(&pod, FAIL_AFTER).map(|s| (s, 1)));
        if phase == "Running" {
            let Some((after, exit_code)) = ending else {
                return Ok(Action::Done);
            };
            let started = status
                .start_time
                .as_ref()
                .map_or(jiff::Timestamp::now(), |t| t.0);
            let elapsed = jiff::Timestamp::now().duration_since(started);
            let remaining = after as f64 - elapsed.as_secs_f64();
            if remaining > 0.0 {
                return Ok(Action::RequeueAfter(Duration::from_secs_f64(remaining)));
            }
            let patch = json!({ "status": terminated_status(&pod, exit_code) });
            api.patch_status(&key.name, &params(), &Patch::Merge(&patch))
                .await?;
            return Ok(Action::Done);
        }
        let index = self.indexes.get(&node).copied().unwrap_or(0);
        let patch = json!({ "status": running_status(&pod, node_ip(index), self.pod_ip()) });
        api.patch_status(&key.name, &params(), &Patch::Merge(&patch))
            .await?;
        Ok(match ending {
            Some((after, _)) => Action::RequeueAfter(Duration::from_secs(after)),
            None => Action::Done,
        })
    }
}

fn container_names(pod: &Pod) -> Vec<(String, String)> {
    pod.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// Conditions of the pod with the given ones replaced (PodScheduled and others kept).
fn conditions(pod: &Pod, set: &[(&str, &str, Option<&str>)]) -> Vec<Value> {
    let t = now();
    let mut out: Vec<Value> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .filter(|c| !set.iter().any(|(kind, _, _)| *kind == c.type_))
                .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
                .collect()
        })
        .unwrap_or_default();
    for (kind, status, reason) in set {
        let mut c = json!({ "type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": t });
        if let Some(reason) = reason {
            c["reason"] = json!(reason);
        }
        out.push(c);
    }
    out
}

fn running_status(pod: &Pod, host_ip: Ipv4Addr, pod_ip: Ipv4Addr) -> Value {
    let t = now();
    let statuses: Vec<Value> = container_names(pod)
        .into_iter()
        .map(|(name, image)| {
            json!({
                "name": name, "image": image, "imageID": format!("hollow://{image}"),
                "containerID": format!("hollow://{}-{name}", pod.uid().unwrap_or_default()),
                "ready": true, "started": true, "restartCount": 0,
                "state": { "running": { "startedAt": t } },
            })
        })
        .collect();
    json!({
        "phase": "Running",
        "hostIP": host_ip.to_string(),
        "hostIPs": [{ "ip": host_ip.to_string() }],
        "podIP": pod_ip.to_string(),
        "podIPs": [{ "ip": pod_ip.to_string() }],
        "startTime": t,
        "conditions": conditions(pod, &[
            ("PodReadyToStartContainers", "True", None),
            ("Initialized", "True", None),
            ("Ready", "True", None),
            ("ContainersReady", "True", None),
        ]),
        "containerStatuses": statuses,
    })
}

fn terminated_status(pod: &Pod, exit_code: i32) -> Value {
    let t = now();
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or_else(now);
    let reason = if exit_code == 0 { "Completed" } else { "Error" };
    let statuses: Vec<Value> = container_names(pod)
        .into_iter()
        .map(|(name, image)| {
            json!({
                "name": name, "image": image, "imageID": format!("hollow://{image}"),
                "containerID": format!("hollow://{}-{name}", pod.uid().unwrap_or_default()),
                "ready": false, "started": false, "restartCount": 0,
                "state": { "terminated": {
                    "exitCode": exit_code, "reason": reason, "startedAt": started, "finishedAt": t,
                    "containerID": format!("hollow://{}-{name}", pod.uid().unwrap_or_default()),
                } },
            })
        })
        .collect();
    json!({
        "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
        "conditions": conditions(pod, &[
            ("Ready", "False", Some("PodCompleted")),
            ("ContainersReady", "False", Some("PodCompleted")),
        ]),
        "containerStatuses": statuses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_parse_like_kubectl_taint() {
        assert_eq!(
            parse_taint("dedicated=gpu:NoSchedule").unwrap(),
            json!({ "key": "dedicated", "value": "gpu", "effect": "NoSchedule" })
        );
        assert_eq!(
            parse_taint("spot:PreferNoSchedule").unwrap(),
            json!({ "key": "spot", "effect": "PreferNoSchedule" })
        );
        assert!(parse_taint("x:Sometimes").is_err());
        assert!(parse_taint("novalue").is_err());
        assert!(parse_taint("=v:NoSchedule").is_err());
    }

    #[test]
    fn labels_need_a_key() {
        assert_eq!(
            parse_label("zone=a").unwrap(),
            ("zone".to_owned(), "a".to_owned())
        );
        assert!(parse_label("zone").is_err());
        assert!(parse_label("=a").is_err());
    }

    #[test]
    fn addresses_stay_in_the_benchmarking_range() {
        assert_eq!(node_ip(0), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(node_ip(300), Ipv4Addr::new(198, 18, 1, 45));
        assert!(node_ip(70_000).octets()[..2] == [198, 18]);
    }
}
