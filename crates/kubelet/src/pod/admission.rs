//! Node-level admission: whether a pod bound to this node may run here, judged against the
//! Node and the pods already admitted, as upstream's predicate admit handler does
//! (`pkg/kubelet/lifecycle/predicate.go`). A pod placed with `spec.nodeName` bypasses the
//! scheduler, so the kubelet is the last line: without this check an over-committed node
//! would start the pod and let the OOM killer or the disk sort it out.
//!
//! The checks run in upstream's order and the first failure is the answer:
//!
//! 0. node pressure (upstream's eviction admit handler): while the Node reports
//!    MemoryPressure alone, BestEffort pods are refused unless they tolerate the
//!    `node.kubernetes.io/memory-pressure` taint; under DiskPressure or PIDPressure every
//!    pod is — `Evicted`, `The node had condition: [MemoryPressure]. `. Critical pods
//!    (static, mirror, system priority) are always admitted;
//! 1. the pod's `kubernetes.io/os` label must match the node's OS
//!    (`PodOSSelectorNodeLabelDoesNotMatch`), and `spec.os.name` must be `linux`
//!    (`PodOSNotSupported`); `supplementalGroupsPolicy: Strict` needs a node that reports
//!    support for it (`SupplementalGroupsPolicyNotSupported`);
//! 2. resources (`scheduler.AdmissionCheck` → `noderesources.Fits`): one more pod than the
//!    `pods` allocatable allows, then cpu, memory, ephemeral-storage and every scalar
//!    resource (extended resources the node does not have are ignored, as upstream's
//!    `removeMissingExtendedResources` does), each `requested > allocatable − used` →
//!    `OutOf<resource>`, `Node didn't have enough resource: …`;
//! 3. `nodeSelector` and required node affinity (`NodeAffinity`);
//! 4. host ports already taken by an admitted pod (`NodePorts`);
//! 5. an untolerated `NoExecute` taint (`TaintToleration`), not for static pods.
//!
//! Pure: the caller passes the node and the admitted pods; a rejected pod is never added
//! to those, so it consumes nothing.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use skiff_api::scheduling::{self, Resources, add, allocatable, pod_requests, tolerates};

/// Why a pod was refused: the status `reason`, and the message (without upstream's
/// `Pod was rejected: ` prefix, which only the pod status carries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `OutOfcpu`, `NodeAffinity`, …
    pub reason: String,
    /// The event message.
    pub message: String,
}

impl Rejection {
    /// The pod status message.
    pub fn status_message(&self) -> String {
        format!("Pod was rejected: {}", self.message)
    }

    fn predicate(name: &str, reason: &str) -> Rejection {
        Rejection {
            reason: name.to_owned(),
            message: format!("Predicate {name} failed: {reason}"),
        }
    }
}

/// The node's operating system (the kubelet runs only on Linux).
pub const NODE_OS: &str = "linux";
/// Upstream's NodeAffinity failure reason.
pub const NODE_AFFINITY_REASON: &str = "node(s) didn't match Pod's node affinity/selector";
/// Upstream's NodePorts failure reason.
pub const NODE_PORTS_REASON: &str = "node(s) didn't have free ports for the requested pod ports";
/// Upstream's TaintToleration failure reason.
pub const TAINT_REASON: &str = "node(s) had taints that the pod didn't tolerate";

/// Whether a resource name is an extended resource (domain-qualified, outside
/// `kubernetes.io/`), which a node may simply not have.
fn is_extended(name: &str) -> bool {
    name.contains('/')
        && !name.starts_with("kubernetes.io/")
        && !name.contains(".kubernetes.io/")
        && !name.starts_with("requests.")
}

fn insufficient(name: &str, requested: i64, used: i64, capacity: i64) -> Rejection {
    let reason = match name {
        "cpu" => "OutOfcpu".to_owned(),
        "memory" => "OutOfmemory".to_owned(),
        "ephemeral-storage" => "OutOfephemeral-storage".to_owned(),
        "pods" => "OutOfpods".to_owned(),
        other => format!("OutOf{other}"),
    };
    Rejection {
        reason,
        message: format!(
            "Node didn't have enough resource: {name}, requested: {requested}, used: {used}, capacity: {capacity}"
        ),
    }
}

/// Upstream `noderesources.Fits`, first failure only.
fn fits_resources(pod: &Pod, node: &Node, admitted: &[Arc<Pod>]) -> Option<Rejection> {
    let allocatable = allocatable(node);
    let pods_allowed = allocatable.get("pods").copied().unwrap_or(0);
    if admitted.len() as i64 + 1 > pods_allowed {
        return Some(insufficient("pods", 1, admitted.len() as i64, pods_allowed));
    }
    let mut requested = pod_requests(pod);
    requested.retain(|name, _| !is_extended(name) || allocatable.contains_key(name));
    if requested.is_empty() {
        return None;
    }
    let mut used = Resources::new();
    for p in admitted {
        add(&mut used, &pod_requests(p));
    }
    // cpu, memory and ephemeral-storage first, then the scalar resources by name.
    let mut order: Vec<&String> = requested.keys().collect();
    let rank = |n: &str| match n {
        "cpu" => 0,
        "memory" => 1,
        "ephemeral-storage" => 2,
        _ => 3,
    };
    order.sort_by_key(|n| (rank(n), (*n).clone()));
    for name in order {
        if name == "pods" {
            continue;
        }
        let want = requested[name];
        let cap = allocatable.get(name).copied().unwrap_or(0);
        let in_use = used.get(name).copied().unwrap_or(0);
        if want > 0 && want > cap - in_use {
            return Some(insufficient(name, want, in_use, cap));
        }
    }
    None
}

/// The pod's `nodeSelector` and required node affinity allow the node.
pub fn node_affinity_matches(pod: &Pod, node: &Node) -> bool {
    pod.spec
        .as_ref()
        .is_none_or(|spec| scheduling::node_matches(spec, node))
}

/// A host port a pod asks for: (protocol, host IP, port).
type HostPort = (String, String, i32);

fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c: &Container| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| {
            (
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                p.host_port.unwrap_or(0),
            )
        })
        .collect()
}

fn ports_conflict(a: &HostPort, b: &HostPort) -> bool {
    a.0 == b.0 && a.2 == b.2 && (a.1 == b.1 || a.1 == "0.0.0.0" || b.1 == "0.0.0.0")
}

/// Upstream's eviction admit handler (see the module documentation).
fn node_pressure(pod: &Pod, node: &Node) -> Option<Rejection> {
    let pressures: Vec<&str> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| {
            c.status == "True"
                && matches!(
                    c.type_.as_str(),
                    "MemoryPressure" | "DiskPressure" | "PIDPressure"
                )
        })
        .map(|c| c.type_.as_str())
        .collect();
    if pressures.is_empty() || crate::eviction::is_critical(pod) {
        return None;
    }
    if pressures == ["MemoryPressure"] {
        let memory_pressure_taint = k8s_openapi::api::core::v1::Taint {
            key: "node.kubernetes.io/memory-pressure".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerated = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .into_iter()
            .flatten()
            .any(|t| tolerates(t, &memory_pressure_taint));
        if crate::pod::status::qos_class(pod) != "BestEffort" || tolerated {
            return None;
        }
    }
    Some(Rejection {
        reason: crate::eviction::REASON.to_owned(),
        message: format!("The node had condition: [{}]. ", pressures.join(" ")),
    })
}

/// Judge `pod` for `node`, given the pods already admitted there. `is_static` pods skip the
/// taint check, as upstream's do.
pub fn admit(
    pod: &Pod,
    node: &Node,
    admitted: &[Arc<Pod>],
    is_static: bool,
) -> Result<(), Rejection> {
    if let Some(rejection) = node_pressure(pod, node) {
        return Err(rejection);
    }
    let node_os = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/os"))
        .map_or(NODE_OS, String::as_str);
    if let Some(os) = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/os"))
        && os != node_os
    {
        return Err(Rejection {
            reason: "PodOSSelectorNodeLabelDoesNotMatch".into(),
            message: "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label"
                .into(),
        });
    }
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.os.as_ref().is_some_and(|os| os.name != NODE_OS) {
        return Err(Rejection {
            reason: "PodOSNotSupported".into(),
            message: "Failed to admit pod as the OS field doesn't match node OS".into(),
        });
    }
    let strict = spec
        .security_context
        .as_ref()
        .and_then(|s| s.supplemental_groups_policy.as_deref())
        == Some("Strict");
    let node_supports = node
        .status
        .as_ref()
        .and_then(|s| s.features.as_ref())
        .and_then(|f| f.supplemental_groups_policy)
        .unwrap_or(false);
    if strict && !node_supports {
        return Err(Rejection {
            reason: "SupplementalGroupsPolicyNotSupported".into(),
            message: "SupplementalGroupsPolicy=Strict is not supported in this node".into(),
        });
    }
    if let Some(rejection) = fits_resources(pod, node, admitted) {
        return Err(rejection);
    }
    if !node_affinity_matches(pod, node) {
        return Err(Rejection::predicate("NodeAffinity", NODE_AFFINITY_REASON));
    }
    let wanted = host_ports(pod);
    if !wanted.is_empty() {
        let taken: Vec<HostPort> = admitted.iter().flat_map(|p| host_ports(p)).collect();
        if wanted
            .iter()
            .any(|w| taken.iter().any(|t| ports_conflict(w, t)))
        {
            return Err(Rejection::predicate("NodePorts", NODE_PORTS_REASON));
        }
    }
    if !is_static {
        let tolerations = spec.tolerations.unwrap_or_default();
        let untolerated = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter(|t| t.effect == "NoExecute")
            .any(|taint| !tolerations.iter().any(|t| tolerates(t, taint)));
        if untolerated {
            return Err(Rejection::predicate("TaintToleration", TAINT_REASON));
        }
    }
    Ok(())
}

/// The order pods are admitted in when several arrive together (a kubelet start, a relist):
/// oldest first, as upstream's `HandlePodAdditions` sorts them, with namespace/name breaking
/// ties of the second-precision timestamps so the order is the same on every run.
pub fn admission_order(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    let key = |p: &Pod| {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.metadata.namespace.clone(),
            p.metadata.name.clone(),
        )
    };
    key(a).cmp(&key(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn node(extra: Value) -> Node {
        let mut n = json!({
            "metadata": { "name": "node-1", "labels": { "kubernetes.io/os": "linux", "disk": "ssd", "rack": "7" } },
            "status": { "allocatable": { "cpu": "2", "memory": "4Gi", "pods": "3", "ephemeral-storage": "10Gi", "example.com/gpu": "2" } },
        });
        merge(&mut n, extra);
        serde_json::from_value(n).unwrap()
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn pod(name: &str, spec: Value) -> Arc<Pod> {
        let mut p = json!({
            "metadata": { "name": name, "namespace": "default" },
            "spec": { "containers": [{ "name": "main", "image": "busybox" }] },
        });
        merge(&mut p, json!({ "spec": spec }));
        Arc::new(serde_json::from_value(p).unwrap())
    }

    fn requesting(name: &str, requests: Value) -> Arc<Pod> {
        pod(
            name,
            json!({ "containers": [{ "name": "main", "image": "busybox", "resources": { "requests": requests } }] }),
        )
    }

    fn reject(p: &Pod, n: &Node, admitted: &[Arc<Pod>]) -> Rejection {
        admit(p, n, admitted, false).expect_err("should be rejected")
    }

    fn under(conditions: &[&str]) -> Node {
        let conditions: Vec<Value> = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
            .iter()
            .map(|t| {
                let on = conditions.contains(t) || *t == "Ready";
                json!({ "type": t, "status": if on { "True" } else { "False" } })
            })
            .collect();
        node(json!({ "status": { "conditions": conditions } }))
    }

    #[test]
    fn node_pressure_refuses_pods_as_upstreams_eviction_admit_handler() {
        let best_effort = pod("be", json!({}));
        let burstable = requesting("burst", json!({ "cpu": "100m" }));
        let tolerant = pod(
            "tolerant",
            json!({ "tolerations": [{ "key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule" }] }),
        );
        let mut critical = pod("critical", json!({}));
        Arc::make_mut(&mut critical).metadata.annotations =
            Some([("kubernetes.io/config.source".to_owned(), "file".to_owned())].into());

        let healthy = under(&[]);
        assert!(admit(&best_effort, &healthy, &[], false).is_ok());

        let memory = under(&["MemoryPressure"]);
        let r = reject(&best_effort, &memory, &[]);
        assert_eq!(r.reason, "Evicted");
        assert_eq!(r.message, "The node had condition: [MemoryPressure]. ");
        assert_eq!(
            r.status_message(),
            "Pod was rejected: The node had condition: [MemoryPressure]. "
        );
        assert!(
            admit(&burstable, &memory, &[], false).is_ok(),
            "not BestEffort"
        );
        assert!(
            admit(&tolerant, &memory, &[], false).is_ok(),
            "tolerates the taint"
        );
        assert!(admit(&critical, &memory, &[], true).is_ok());

        let disk_and_memory = under(&["MemoryPressure", "DiskPressure"]);
        let r = reject(&burstable, &disk_and_memory, &[]);
        assert_eq!(
            r.message,
            "The node had condition: [MemoryPressure DiskPressure]. "
        );
        assert!(admit(&critical, &disk_and_memory, &[], true).is_ok());
        assert_eq!(
            reject(&tolerant, &under(&["PIDPressure"]), &[]).message,
            "The node had condition: [PIDPressure]. "
        );
    }

    #[test]
    fn requests_beyond_allocatable_minus_admitted_are_refused() {
        let n = node(json!({}));
        let running = vec![requesting("a", json!({ "cpu": "1500m", "memory": "1Gi" }))];
        let r = reject(&requesting("b", json!({ "cpu": "600m" })), &n, &running);
        assert_eq!(r.reason, "OutOfcpu");
        assert_eq!(
            r.message,
            "Node didn't have enough resource: cpu, requested: 600, used: 1500, capacity: 2000"
        );
        assert_eq!(
            r.status_message(),
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 600, used: 1500, capacity: 2000"
        );
        assert!(
            admit(
                &requesting("b", json!({ "cpu": "500m" })),
                &n,
                &running,
                false
            )
            .is_ok()
        );
        let r = reject(
            &requesting("m", json!({ "memory": "3100Mi" })),
            &n,
            &running,
        );
        assert_eq!(r.reason, "OutOfmemory");
        assert_eq!(
            r.message,
            format!(
                "Node didn't have enough resource: memory, requested: {}, used: {}, capacity: {}",
                3100u64 << 20,
                1u64 << 30,
                4u64 << 30
            )
        );
        let r = reject(
            &requesting("e", json!({ "ephemeral-storage": "11Gi" })),
            &n,
            &[],
        );
        assert_eq!(r.reason, "OutOfephemeral-storage");
        // cpu is reported before memory when both are short.
        let r = reject(
            &requesting("both", json!({ "cpu": "3", "memory": "5Gi" })),
            &n,
            &[],
        );
        assert_eq!(r.reason, "OutOfcpu");
    }

    #[test]
    fn the_pod_count_is_checked_first() {
        let n = node(json!({}));
        let three: Vec<Arc<Pod>> = ["a", "b", "c"]
            .iter()
            .map(|name| pod(name, json!({})))
            .collect();
        let r = reject(&requesting("d", json!({ "cpu": "5" })), &n, &three);
        assert_eq!(r.reason, "OutOfpods");
        assert_eq!(
            r.message,
            "Node didn't have enough resource: pods, requested: 1, used: 3, capacity: 3"
        );
        assert!(admit(&pod("d", json!({})), &n, &three[..2], false).is_ok());
    }

    #[test]
    fn extended_resources_count_only_where_the_node_has_them() {
        let n = node(json!({}));
        let holder = vec![requesting("a", json!({ "example.com/gpu": "1" }))];
        let r = reject(
            &requesting("b", json!({ "example.com/gpu": "2" })),
            &n,
            &holder,
        );
        assert_eq!(r.reason, "OutOfexample.com/gpu");
        assert_eq!(
            r.message,
            "Node didn't have enough resource: example.com/gpu, requested: 2, used: 1, capacity: 2"
        );
        // Unknown to the node: cluster-level resources are not the kubelet's to judge.
        assert!(
            admit(
                &requesting("c", json!({ "other.io/fpga": "9" })),
                &n,
                &[],
                false
            )
            .is_ok()
        );
        // Hugepages are not extended resources: missing means zero.
        let r = reject(&requesting("h", json!({ "hugepages-2Mi": "2Mi" })), &n, &[]);
        assert_eq!(r.reason, "OutOfhugepages-2Mi");
    }

    #[test]
    fn init_containers_sidecars_overhead_and_limits_count() {
        let p = pod(
            "p",
            json!({
                "containers": [{ "name": "a", "image": "i", "resources": { "limits": { "cpu": "500m" } } }],
                "initContainers": [
                    { "name": "big", "image": "i", "resources": { "requests": { "cpu": "1" } } },
                    { "name": "side", "image": "i", "restartPolicy": "Always", "resources": { "requests": { "cpu": "200m" } } },
                    { "name": "after", "image": "i", "resources": { "requests": { "cpu": "700m" } } },
                ],
                "overhead": { "cpu": "100m" },
            }),
        );
        // max(500 + 200, 1000, 700 + 200) + 100.
        assert_eq!(pod_requests(&p).get("cpu"), Some(&1100));
    }

    #[test]
    fn node_selector_and_required_affinity_must_match() {
        let n = node(json!({}));
        assert!(
            admit(
                &pod("s", json!({ "nodeSelector": { "disk": "ssd" } })),
                &n,
                &[],
                false
            )
            .is_ok()
        );
        let r = reject(
            &pod("s", json!({ "nodeSelector": { "disk": "hdd" } })),
            &n,
            &[],
        );
        assert_eq!(r.reason, "NodeAffinity");
        assert_eq!(
            r.message,
            "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
        );
        let affinity = |op: &str, values: Value| {
            pod(
                "a",
                json!({ "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{ "matchExpressions": [{ "key": "rack", "operator": op, "values": values }] }] } } } }),
            )
        };
        assert!(admit(&affinity("In", json!(["6", "7"])), &n, &[], false).is_ok());
        assert!(admit(&affinity("Gt", json!(["6"])), &n, &[], false).is_ok());
        assert_eq!(
            reject(&affinity("Lt", json!(["6"])), &n, &[]).reason,
            "NodeAffinity"
        );
        assert_eq!(
            reject(&affinity("NotIn", json!(["7"])), &n, &[]).reason,
            "NodeAffinity"
        );
        let by_name = |name: &str| {
            pod(
                "f",
                json!({ "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{ "matchFields": [{ "key": "metadata.name", "operator": "In", "values": [name] }] }] } } } }),
            )
        };
        assert!(admit(&by_name("node-1"), &n, &[], false).is_ok());
        assert!(admit(&by_name("node-2"), &n, &[], false).is_err());
    }

    #[test]
    fn host_ports_conflict_by_protocol_ip_and_port() {
        let n = node(json!({}));
        let with_port = |name: &str, port: Value| {
            pod(
                name,
                json!({ "containers": [{ "name": "c", "image": "i", "ports": [port] }] }),
            )
        };
        let web = vec![with_port(
            "web",
            json!({ "containerPort": 80, "hostPort": 8080 }),
        )];
        let r = reject(
            &with_port(
                "again",
                json!({ "containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.1" }),
            ),
            &n,
            &web,
        );
        assert_eq!(r.reason, "NodePorts");
        assert_eq!(
            r.message,
            "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"
        );
        assert!(
            admit(
                &with_port(
                    "udp",
                    json!({ "containerPort": 80, "hostPort": 8080, "protocol": "UDP" })
                ),
                &n,
                &web,
                false
            )
            .is_ok()
        );
        assert!(
            admit(
                &with_port("other", json!({ "containerPort": 80, "hostPort": 8081 })),
                &n,
                &web,
                false
            )
            .is_ok()
        );
    }

    #[test]
    fn untolerated_no_execute_taints_refuse_all_but_static_pods() {
        let n = node(json!({ "spec": { "taints": [
            { "key": "dedicated", "value": "db", "effect": "NoExecute" },
            { "key": "soft", "effect": "NoSchedule" },
        ] } }));
        let plain = pod("p", json!({}));
        let r = reject(&plain, &n, &[]);
        assert_eq!(r.reason, "TaintToleration");
        assert_eq!(
            r.message,
            "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate"
        );
        assert!(
            admit(&plain, &n, &[], true).is_ok(),
            "static pods skip taints"
        );
        let tolerant = pod(
            "t",
            json!({ "tolerations": [{ "key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoExecute" }] }),
        );
        assert!(
            admit(&tolerant, &n, &[], false).is_ok(),
            "NoSchedule is the scheduler's"
        );
        let wrong_value = pod(
            "w",
            json!({ "tolerations": [{ "key": "dedicated", "value": "web" }] }),
        );
        assert!(admit(&wrong_value, &n, &[], false).is_err());
        let everything = pod("e", json!({ "tolerations": [{ "operator": "Exists" }] }));
        assert!(admit(&everything, &n, &[], false).is_ok());
    }

    #[test]
    fn os_checks_come_first() {
        let n = node(json!({}));
        let mut windows = (*requesting("w", json!({ "cpu": "100" }))).clone();
        windows.metadata.labels =
            Some([("kubernetes.io/os".to_owned(), "windows".to_owned())].into());
        let r = reject(&windows, &n, &[]);
        assert_eq!(r.reason, "PodOSSelectorNodeLabelDoesNotMatch");
        assert_eq!(
            r.message,
            "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label"
        );
        let r = reject(&pod("o", json!({ "os": { "name": "windows" } })), &n, &[]);
        assert_eq!(r.reason, "PodOSNotSupported");
        assert!(
            admit(
                &pod("l", json!({ "os": { "name": "linux" } })),
                &n,
                &[],
                false
            )
            .is_ok()
        );
        let r = reject(
            &pod(
                "g",
                json!({ "securityContext": { "supplementalGroupsPolicy": "Strict" } }),
            ),
            &n,
            &[],
        );
        assert_eq!(r.reason, "SupplementalGroupsPolicyNotSupported");
    }

    #[test]
    fn admission_order_is_by_creation_then_name() {
        let at = |name: &str, t: &str| {
            let mut p = (*pod(name, json!({}))).clone();
            p.metadata.creation_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t.parse().unwrap()),
            );
            p
        };
        let mut pods = [
            at("c", "2024-01-01T00:00:02Z"),
            at("b", "2024-01-01T00:00:01Z"),
            at("a", "2024-01-01T00:00:01Z"),
        ];
        pods.sort_by(admission_order);
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
