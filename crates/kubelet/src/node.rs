//! The Node object: registration with capacity, addresses, labels and taints; status reports
//! (conditions, images, nodeInfo) when something changes or at least every report interval;
//! and the heartbeat Lease in `kube-node-lease` renewed every lease interval.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use skiff_cri::{Cri, api};
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::config::KubeletConfig;
use crate::pressure::{Condition, Observation, Observations, Signal};
use crate::sysinfo::{self, Machine};

const FIELD_MANAGER: &str = "kubelet";

pub(crate) fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    }
}

/// What the status report is computed from.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Machine facts.
    pub machine: Machine,
    /// Node filesystem total and available bytes.
    pub fs: (u64, u64),
    /// Memory available, bytes.
    pub memory_available: u64,
    /// PIDs used and max.
    pub pids: (u64, u64),
    /// The runtime's `name://version`.
    pub runtime_version: String,
    /// Why the node is not ready, if it is not.
    pub not_ready: Option<String>,
    /// Images: (names, size in bytes).
    pub images: Vec<(Vec<String>, u64)>,
    /// Pressure seen within the transition period, reported even if the signal recovered
    /// since (upstream's `--eviction-pressure-transition-period`, against oscillation).
    pub held_pressure: Vec<Condition>,
}

impl Observed {
    /// The eviction signals these facts measure. The image filesystem is taken to be the
    /// node filesystem here; the eviction loop, which reads the runtime's stats, tells them
    /// apart.
    pub fn pressure_observations(&self) -> Observations {
        let fs = (self.fs.0 > 0).then_some(Observation {
            available: self.fs.1,
            capacity: self.fs.0,
        });
        Observations {
            memory: (self.machine.memory_bytes > 0).then_some(Observation {
                available: self.memory_available,
                capacity: self.machine.memory_bytes,
            }),
            nodefs: fs,
            imagefs: fs,
            pid: (self.pids.1 > 0).then_some(Observation {
                available: self.pids.1.saturating_sub(self.pids.0),
                capacity: self.pids.1,
            }),
        }
    }
}

/// Record the conditions `observed` at `now` in `seen` and return those seen within
/// `period`, which the node keeps reporting.
fn hold_pressure(
    seen: &mut BTreeMap<Condition, tokio::time::Instant>,
    observed: &[Condition],
    now: tokio::time::Instant,
    period: Duration,
) -> Vec<Condition> {
    for condition in observed {
        seen.insert(*condition, now);
    }
    seen.retain(|_, at| now.duration_since(*at) < period);
    seen.keys().copied().collect()
}

fn quantity_ki(bytes: u64) -> String {
    // Zero has no unit in Go's canonical form.
    if bytes < 1024 {
        return "0".to_owned();
    }
    format!("{}Ki", bytes / 1024)
}

/// Capacity and allocatable of the node.
pub fn resources(config: &KubeletConfig, observed: &Observed) -> (Value, Value) {
    let m = &observed.machine;
    let mut capacity = json!({
        "cpu": m.cpus.to_string(),
        "memory": quantity_ki(m.memory_bytes),
        "pods": config.max_pods.to_string(),
        "ephemeral-storage": quantity_ki(observed.fs.0),
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
    });
    let mut hugepage_bytes = 0;
    for (size_kib, total) in &m.hugepages {
        let name = if *size_kib >= 1 << 20 {
            format!("hugepages-{}Gi", size_kib >> 20)
        } else {
            format!("hugepages-{}Mi", size_kib >> 10)
        };
        hugepage_bytes += size_kib * 1024 * total;
        capacity[name] = json!(quantity_ki(size_kib * 1024 * total));
    }
    let mut allocatable = capacity.clone();
    // Upstream subtracts the hard eviction thresholds and hugepages from allocatable.
    let threshold = |signal: Signal, capacity: u64| {
        config
            .eviction_hard
            .get(signal)
            .map_or(0, |t| t.quantity(capacity).max(0) as u64)
    };
    allocatable["memory"] = json!(quantity_ki(
        m.memory_bytes
            .saturating_sub(threshold(Signal::MemoryAvailable, m.memory_bytes))
            .saturating_sub(hugepage_bytes)
    ));
    let storage = observed
        .fs
        .0
        .saturating_sub(threshold(Signal::NodeFsAvailable, observed.fs.0));
    allocatable["ephemeral-storage"] = json!((storage / 1024 * 1024).to_string());
    (capacity, allocatable)
}

fn condition(kind: &str, ok_status: bool, inverted: bool, reason: &str, message: &str) -> Value {
    // Pressure conditions are "False" when healthy; Ready is "True".
    let status = if ok_status != inverted {
        "True"
    } else {
        "False"
    };
    json!({ "type": kind, "status": status, "reason": reason, "message": message })
}

/// The node status (without heartbeat/transition times, which [`stamp`] adds).
pub fn status(config: &KubeletConfig, observed: &Observed) -> Value {
    let (capacity, allocatable) = resources(config, observed);
    let mut pressure = config
        .eviction_thresholds()
        .conditions(&observed.pressure_observations());
    pressure.extend(&observed.held_pressure);
    let memory_pressure = pressure.contains(&Condition::MemoryPressure);
    let disk_pressure = pressure.contains(&Condition::DiskPressure);
    let pid_pressure = pressure.contains(&Condition::PidPressure);
    let mut conditions = vec![
        if memory_pressure {
            condition(
                "MemoryPressure",
                true,
                false,
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            )
        } else {
            condition(
                "MemoryPressure",
                true,
                true,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            )
        },
        if disk_pressure {
            condition(
                "DiskPressure",
                true,
                false,
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
            )
        } else {
            condition(
                "DiskPressure",
                true,
                true,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            )
        },
        if pid_pressure {
            condition(
                "PIDPressure",
                true,
                false,
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            )
        } else {
            condition(
                "PIDPressure",
                true,
                true,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            )
        },
    ];
    conditions.push(match &observed.not_ready {
        None => condition(
            "Ready",
            true,
            false,
            "KubeletReady",
            "kubelet is posting ready status",
        ),
        Some(why) => condition("Ready", false, false, "KubeletNotReady", why),
    });
    let mut images: Vec<Value> = observed
        .images
        .iter()
        .filter(|(names, _)| !names.is_empty())
        .map(|(names, size)| json!({ "names": names, "sizeBytes": size }))
        .collect();
    // Upstream reports the 50 largest images.
    images.sort_by_key(|i| std::cmp::Reverse(i["sizeBytes"].as_u64().unwrap_or(0)));
    images.truncate(50);
    let m = &observed.machine;
    json!({
        "capacity": capacity,
        "allocatable": allocatable,
        "conditions": conditions,
        "addresses": [
            { "type": "InternalIP", "address": config.node_ip.to_string() },
            { "type": "Hostname", "address": config.node_name },
        ],
        "daemonEndpoints": { "kubeletEndpoint": { "Port": config.listen.port() } },
        "nodeInfo": {
            "machineID": m.machine_id,
            "systemUUID": m.system_uuid,
            "bootID": m.boot_id,
            "kernelVersion": m.kernel_version,
            "osImage": m.os_image,
            "containerRuntimeVersion": observed.runtime_version,
            "kubeletVersion": config.version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": m.architecture,
        },
        "images": images,
    })
}

/// Add heartbeat and transition times to `status`'s conditions, keeping the previous
/// transition time of conditions whose status did not change.
pub fn stamp(status: &mut Value, previous: Option<&Value>, now: &str) {
    let before: BTreeMap<String, (String, String)> = previous
        .and_then(|p| p["conditions"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some((
                c["type"].as_str()?.to_owned(),
                (
                    c["status"].as_str()?.to_owned(),
                    c["lastTransitionTime"].as_str().unwrap_or(now).to_owned(),
                ),
            ))
        })
        .collect();
    for c in status["conditions"].as_array_mut().into_iter().flatten() {
        let kind = c["type"].as_str().unwrap_or("").to_owned();
        let transition = match before.get(&kind) {
            Some((s, t)) if Some(s.as_str()) == c["status"].as_str() => t.clone(),
            _ => now.to_owned(),
        };
        c["lastHeartbeatTime"] = json!(now);
        c["lastTransitionTime"] = json!(transition);
    }
}

/// The node's labels: well-known ones plus the configured ones.
pub fn labels(config: &KubeletConfig, machine: &Machine) -> BTreeMap<String, String> {
    let mut labels = config.node_labels.clone();
    labels.insert("kubernetes.io/hostname".into(), config.node_name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), machine.architecture.clone());
    labels.insert("beta.kubernetes.io/os".into(), "linux".into());
    labels.insert(
        "beta.kubernetes.io/arch".into(),
        machine.architecture.clone(),
    );
    labels
}

/// Parse `key[=value]:Effect`.
pub fn parse_taint(spec: &str) -> Option<Value> {
    let (kv, effect) = spec.rsplit_once(':')?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return None;
    }
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    if key.is_empty() {
        return None;
    }
    let mut t = json!({ "key": key, "effect": effect });
    if !value.is_empty() {
        t["value"] = json!(value);
    }
    Some(t)
}

/// Registers the node and keeps its status and Lease current.
pub struct NodeAgent {
    client: Client,
    config: KubeletConfig,
    cri: Cri,
    last: Mutex<Option<(Value, tokio::time::Instant)>>,
    uid: Mutex<Option<String>>,
    /// When each pressure condition was last observed.
    pressure_seen: Mutex<BTreeMap<Condition, tokio::time::Instant>>,
}

impl NodeAgent {
    /// An agent for the configured node.
    pub fn new(client: Client, config: KubeletConfig, cri: Cri) -> NodeAgent {
        NodeAgent {
            client,
            config,
            cri,
            last: Mutex::new(None),
            uid: Mutex::new(None),
            pressure_seen: Mutex::new(BTreeMap::new()),
        }
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Create the Node (or adopt an existing one, adding our labels).
    pub async fn register(&self) -> Result<Node, Error> {
        let machine = sysinfo::machine();
        let labels = labels(&self.config, &machine);
        let mut taints: Vec<Value> = self
            .config
            .node_taints
            .iter()
            .filter_map(|t| parse_taint(t))
            .collect();
        taints.extend(crate::cloud::registration_taints(&self.config));
        let mut spec = json!({});
        if !taints.is_empty() {
            spec["taints"] = json!(taints);
        }
        if let Some(cidr) = &self.config.pod_cidr {
            spec["podCIDR"] = json!(cidr);
            spec["podCIDRs"] = json!([cidr]);
        }
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": self.config.node_name,
                "labels": labels,
                "annotations": crate::cloud::annotations(&self.config),
            },
            "spec": spec,
        }))
        .map_err(|e| Error::Invalid(format!("node object: {e}")))?;
        let api = self.nodes();
        let wrap = |source| Error::Api {
            action: format!("registering node {}", self.config.node_name),
            source,
        };
        let registered = match api.create(&PostParams::default(), &node).await {
            Ok(n) => {
                tracing::info!(node = %self.config.node_name, "registered node");
                n
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let patch = json!({ "metadata": {
                    "labels": labels,
                    "annotations": crate::cloud::annotations_patch(&self.config),
                } });
                api.patch(
                    &self.config.node_name,
                    &patch_params(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(wrap)?
            }
            Err(e) => return Err(wrap(e)),
        };
        *self.uid.lock() = registered.uid();
        self.report_status(true).await?;
        Ok(registered)
    }

    async fn observe(&self, pod_cidr_known: bool) -> Observed {
        let machine = sysinfo::machine();
        let fs = sysinfo::filesystem(&self.config.root_dir);
        let mut not_ready = None;
        let mut runtime_version = String::new();
        match self.cri.version(api::VersionRequest::default()).await {
            Ok(v) => runtime_version = format!("{}://{}", v.runtime_name, v.runtime_version),
            Err(e) => not_ready = Some(format!("container runtime is down: {}", e.message())),
        }
        if not_ready.is_none() {
            match self.cri.status(api::StatusRequest::default()).await {
                Ok(status) => {
                    for c in status.status.map(|s| s.conditions).unwrap_or_default() {
                        if !c.status {
                            not_ready = Some(format!(
                                "container runtime network not ready: {}={} reason:{} message:{}",
                                c.r#type, c.status, c.reason, c.message
                            ));
                            break;
                        }
                    }
                }
                Err(e) => {
                    not_ready = Some(format!(
                        "container runtime status check failed: {}",
                        e.message()
                    ))
                }
            }
        }
        if not_ready.is_none() && !pod_cidr_known {
            not_ready = Some("network not ready: waiting for the node's pod CIDR".into());
        }
        let images = match self
            .cri
            .list_images(api::ListImagesRequest::default())
            .await
        {
            Ok(list) => list
                .images
                .into_iter()
                .map(|i| {
                    let mut names = i.repo_tags;
                    names.extend(i.repo_digests);
                    (names, i.size)
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        Observed {
            machine,
            fs,
            memory_available: sysinfo::memory_available(),
            pids: sysinfo::pids(),
            runtime_version,
            not_ready,
            images,
            held_pressure: Vec::new(),
        }
    }

    /// The pressure conditions observed now or within the transition period.
    fn held_pressure(&self, observed: &Observed) -> Vec<Condition> {
        hold_pressure(
            &mut self.pressure_seen.lock(),
            &self
                .config
                .eviction_thresholds()
                .conditions(&observed.pressure_observations()),
            tokio::time::Instant::now(),
            self.config.eviction_pressure_transition_period,
        )
    }

    /// Whether the last reported status was Ready.
    pub fn is_ready(&self) -> bool {
        self.last.lock().as_ref().is_some_and(|(status, _)| {
            status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    }

    /// Report status if it changed or the report interval passed (or `force`).
    pub async fn report_status(&self, force: bool) -> Result<(), Error> {
        let node = self
            .nodes()
            .get_opt(&self.config.node_name)
            .await
            .map_err(|source| Error::Api {
                action: "reading the node".into(),
                source,
            })?;
        let Some(node) = node else {
            // Deleted: register again (upstream kubelet does the same).
            *self.last.lock() = None;
            return Box::pin(self.register()).await.map(|_| ());
        };
        let pod_cidr_known = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_ref())
            .is_some()
            || self.config.pod_cidr.is_some();
        let mut observed = self.observe(pod_cidr_known).await;
        observed.held_pressure = self.held_pressure(&observed);
        let computed = status(&self.config, &observed);
        let due = {
            let last = self.last.lock();
            match &*last {
                Some((previous, at)) => {
                    force
                        || previous != &computed
                        || at.elapsed() >= self.config.status_report_interval
                }
                None => true,
            }
        };
        if !due {
            return Ok(());
        }
        let previous = node
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok());
        let mut stamped = computed.clone();
        stamp(
            &mut stamped,
            previous.as_ref(),
            &jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
        );
        let patch = json!({ "status": stamped });
        self.nodes()
            .patch_status(
                &self.config.node_name,
                &patch_params(),
                &Patch::Strategic(&patch),
            )
            .await
            .map_err(|source| Error::Api {
                action: "reporting node status".into(),
                source,
            })?;
        *self.last.lock() = Some((computed, tokio::time::Instant::now()));
        Ok(())
    }

    /// Check status every 10 s (upstream's nodeStatusUpdateFrequency) until `shutdown`.
    pub async fn status_loop(&self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            }
            if let Err(err) = self.report_status(false).await {
                tracing::warn!(error = %err, "node status report failed");
            }
        }
    }

    /// Renew the node Lease every lease interval until `shutdown`.
    pub async fn lease_loop(&self, shutdown: CancellationToken) {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        loop {
            if let Err(err) = self.renew_lease(&leases).await {
                tracing::warn!(error = %err, "renewing the node lease failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.lease_interval) => {}
            }
        }
    }

    async fn renew_lease(&self, leases: &Api<Lease>) -> Result<(), kube::Error> {
        let name = &self.config.node_name;
        let spec = LeaseSpec {
            holder_identity: Some(name.clone()),
            lease_duration_seconds: Some((self.config.lease_interval.as_secs() * 4).max(1) as i32),
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            ..Default::default()
        };
        let patch = json!({ "spec": spec });
        match leases
            .patch(name, &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                let owner = self.uid.lock().clone().map(|uid| OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: name.clone(),
                    uid,
                    ..Default::default()
                });
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some("kube-node-lease".into()),
                        owner_references: owner.map(|o| vec![o]),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KubeletConfig {
        crate::tests::config()
    }

    fn observed() -> Observed {
        Observed {
            machine: Machine {
                cpus: 2,
                memory_bytes: 8 << 30,
                architecture: "amd64".into(),
                ..Default::default()
            },
            fs: (100 << 30, 50 << 30),
            memory_available: 4 << 30,
            pids: (100, 32768),
            runtime_version: "containerd://1.6.20".into(),
            not_ready: None,
            images: vec![(vec!["skiff.local/pause:1.0".into()], 700_000)],
            held_pressure: Vec::new(),
        }
    }

    #[test]
    fn capacity_and_allocatable_follow_upstream_reservations() {
        let (capacity, allocatable) = resources(&config(), &observed());
        assert_eq!(capacity["cpu"], "2");
        assert_eq!(capacity["memory"], "8388608Ki");
        assert_eq!(capacity["pods"], "110");
        assert_eq!(allocatable["memory"], "8286208Ki", "capacity minus 100Mi");
        assert_eq!(capacity["hugepages-2Mi"], "0");
    }

    #[test]
    fn a_healthy_node_is_ready_without_pressure() {
        let s = status(&config(), &observed());
        let conditions: Vec<(String, String)> = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["type"].as_str().unwrap().into(),
                    c["status"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            conditions,
            [
                ("MemoryPressure".to_owned(), "False".to_owned()),
                ("DiskPressure".into(), "False".into()),
                ("PIDPressure".into(), "False".into()),
                ("Ready".into(), "True".into()),
            ]
        );
        assert_eq!(
            s["nodeInfo"]["containerRuntimeVersion"],
            "containerd://1.6.20"
        );
        assert_eq!(s["addresses"][0]["type"], "InternalIP");
    }

    #[test]
    fn pressure_and_runtime_problems_show_in_conditions() {
        let mut o = observed();
        o.memory_available = 10 << 20;
        o.fs = (100 << 30, 1 << 30);
        o.not_ready = Some("container runtime is down".into());
        let s = status(&config(), &o);
        let c = s["conditions"].as_array().unwrap();
        assert_eq!(c[0]["status"], "True");
        assert_eq!(c[0]["reason"], "KubeletHasInsufficientMemory");
        assert_eq!(c[1]["status"], "True");
        assert_eq!(c[3]["status"], "False");
        assert_eq!(c[3]["reason"], "KubeletNotReady");
    }

    #[test]
    fn eviction_thresholds_set_pressure_and_allocatable() {
        let mut config = config();
        config.eviction_hard =
            crate::pressure::Thresholds::parse("memory.available<5Gi,nodefs.available<60%")
                .unwrap();
        let o = observed();
        let (_, allocatable) = resources(&config, &o);
        assert_eq!(allocatable["memory"], "3145728Ki", "8Gi minus 5Gi");
        assert_eq!(
            allocatable["ephemeral-storage"],
            (40u64 << 30).to_string(),
            "100Gi minus 60%"
        );
        let s = status(&config, &o);
        let c = s["conditions"].as_array().unwrap();
        assert_eq!(c[0]["status"], "True", "4Gi available < 5Gi");
        assert_eq!(c[1]["status"], "True", "50% free < 60%");
        assert_eq!(c[2]["status"], "False");
        // No thresholds: no pressure, nothing reserved.
        config.eviction_hard = crate::pressure::Thresholds::parse("").unwrap();
        let mut starved = observed();
        starved.memory_available = 0;
        let s = status(&config, &starved);
        assert_eq!(s["conditions"][0]["status"], "False");
        assert_eq!(resources(&config, &starved).1["memory"], "8388608Ki");
    }

    #[test]
    fn pressure_is_held_for_the_transition_period() {
        let t0 = tokio::time::Instant::now();
        let period = Duration::from_secs(300);
        let mut seen = BTreeMap::new();
        let memory = [Condition::MemoryPressure];
        assert_eq!(hold_pressure(&mut seen, &memory, t0, period), memory);
        let later = t0 + Duration::from_secs(299);
        assert_eq!(
            hold_pressure(&mut seen, &[], later, period),
            memory,
            "recovered, held"
        );
        let after = t0 + Duration::from_secs(300);
        assert!(hold_pressure(&mut seen, &[], after, period).is_empty());

        let mut o = observed();
        o.held_pressure = vec![Condition::DiskPressure];
        let s = status(&config(), &o);
        assert_eq!(s["conditions"][1]["type"], "DiskPressure");
        assert_eq!(
            s["conditions"][1]["status"], "True",
            "held although the disk is fine"
        );
    }

    #[test]
    fn transition_times_move_only_when_status_changes() {
        let mut s = status(&config(), &observed());
        stamp(&mut s, None, "t1");
        let mut again = status(&config(), &observed());
        stamp(&mut again, Some(&s), "t2");
        assert_eq!(again["conditions"][3]["lastTransitionTime"], "t1");
        assert_eq!(again["conditions"][3]["lastHeartbeatTime"], "t2");
        let mut o = observed();
        o.not_ready = Some("down".into());
        let mut changed = status(&config(), &o);
        stamp(&mut changed, Some(&again), "t3");
        assert_eq!(changed["conditions"][3]["lastTransitionTime"], "t3");
    }

    #[test]
    fn taints_parse() {
        assert_eq!(
            parse_taint("node-role.kubernetes.io/control-plane:NoSchedule"),
            Some(json!({ "key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule" }))
        );
        assert_eq!(parse_taint("a=b:Never"), None);
    }
}
