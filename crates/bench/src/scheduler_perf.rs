//! Upstream scheduler_perf's workloads as data (test/integration/scheduler_perf
//! `performance-config.yaml` and its `templates/`): the nodes, the initial pods and the measured
//! pods of SchedulingBasic, SchedulingNodeAffinity, TopologySpreading, SchedulingPodAntiAffinity,
//! SchedulingPodAffinity and PreemptionBasic at upstream's largest `performance` size, with the
//! pod templates upstream uses. Both scheduler benches read them: `skiff-scheduler-bench`
//! (through the API server, with hollow nodes) and `skiff-scheduler-cycles` (the scheduling
//! cycle alone, in-process).

use serde_json::{Value, json};

/// Pods of one template in one namespace.
pub struct PodSet {
    /// The namespace (`sched-0` for initial pods, `sched-1` for measured ones).
    pub namespace: &'static str,
    /// How many.
    pub count: usize,
    /// The pod manifest for a name.
    pub template: fn(&str) -> Value,
}

/// A group of identical nodes.
pub struct NodeGroup {
    /// Name prefix (`<prefix>-<index>`).
    pub prefix: &'static str,
    /// How many.
    pub count: usize,
    /// An extra `key=value` label (upstream's `labelNodePrepareStrategy`).
    pub label: Option<&'static str>,
}

/// One scheduler_perf workload.
pub struct Workload {
    /// Upstream's name.
    pub name: &'static str,
    /// Upstream's threshold (pods/s) as stated in issue 5, and upstream's current one (0: none).
    pub threshold: (f64, f64),
    /// The nodes.
    pub nodes: Vec<NodeGroup>,
    /// Pods created (and bound) before measuring.
    pub init: Vec<PodSet>,
    /// The measured pods.
    pub measure: PodSet,
    /// Whether the `bench-high` PriorityClass (value 10) must exist.
    pub priority_classes: bool,
}

impl Workload {
    /// Every node.
    pub fn node_count(&self) -> usize {
        self.nodes.iter().map(|g| g.count).sum()
    }
}

/// Upstream's node template: 4 cpu, 32Gi, 110 pods.
pub const NODE_CPU: &str = "4";
/// Upstream's node memory.
pub const NODE_MEMORY: &str = "32Gi";
/// Upstream's node pod capacity.
pub const NODE_PODS: &str = "110";

fn container(cpu: &str) -> Value {
    json!([{ "name": "pause", "image": "registry.k8s.io/pause:3.10.1", "ports": [{ "containerPort": 80 }],
             "resources": { "limits": { "cpu": cpu, "memory": "500Mi" }, "requests": { "cpu": cpu, "memory": "500Mi" } } }])
}

/// `pod-default.yaml`.
pub fn pod_default(name: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name },
            "spec": { "containers": container("100m") } })
}

/// `pod-with-node-affinity.yaml`.
pub fn pod_node_affinity(name: &str) -> Value {
    let mut p = pod_default(name);
    p["spec"]["affinity"] = json!({ "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{ "matchExpressions": [{ "key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone1", "zone2"] }] }] } } });
    p
}

/// `pod-with-topology-spreading.yaml`.
pub fn pod_spreading(name: &str) -> Value {
    let mut p = pod_default(name);
    p["metadata"]["labels"] = json!({ "color": "blue" });
    p["spec"]["topologySpreadConstraints"] = json!([{ "maxSkew": 5, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": { "matchLabels": { "color": "blue" } } }]);
    p
}

/// `pod-with-pod-anti-affinity.yaml`.
pub fn pod_anti_affinity(name: &str) -> Value {
    let mut p = pod_default(name);
    p["metadata"]["labels"] = json!({ "color": "green" });
    p["spec"]["affinity"] = json!({ "podAntiAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": { "matchLabels": { "color": "green" } }, "topologyKey": "kubernetes.io/hostname",
        "namespaces": ["sched-1", "sched-0"] }] } });
    p
}

/// `pod-with-pod-affinity.yaml`.
pub fn pod_affinity(name: &str) -> Value {
    let mut p = pod_default(name);
    p["metadata"]["labels"] = json!({ "color": "blue" });
    p["spec"]["affinity"] = json!({ "podAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": { "matchLabels": { "color": "blue" } }, "topologyKey": "topology.kubernetes.io/zone",
        "namespaces": ["sched-1", "sched-0"] }] } });
    p
}

/// `pod-low-priority.yaml` (priority 0, 900m).
pub fn pod_low_priority(name: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name },
            "spec": { "terminationGracePeriodSeconds": 0, "containers": container("900m") } })
}

/// `pod-high-priority.yaml` (priority 10 through `bench-high`, 3000m).
pub fn pod_high_priority(name: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name },
            "spec": { "priorityClassName": "bench-high", "containers": container("3000m") } })
}

/// The workloads named in `names`, or those `by_default` keeps when none are named; an error
/// listing the choices when nothing is left.
pub fn select<'a>(
    all: &'a [Workload],
    names: &[String],
    by_default: impl Fn(&Workload) -> bool,
) -> anyhow::Result<Vec<&'a Workload>> {
    let selected: Vec<&Workload> = all
        .iter()
        .filter(|w| {
            if names.is_empty() {
                by_default(w)
            } else {
                names.iter().any(|n| n == w.name)
            }
        })
        .collect();
    if selected.is_empty() {
        anyhow::bail!(
            "no such workload; choose from {}",
            all.iter().map(|w| w.name).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(selected)
}

/// The workloads with node and pod counts multiplied by `scale` (1.0: upstream's sizes).
pub fn workloads(scale: f64) -> Vec<Workload> {
    let s = |n: usize| ((n as f64 * scale).round() as usize).max(1);
    let group = |prefix, count, label| NodeGroup {
        prefix,
        count,
        label,
    };
    let set = |namespace, count, template| PodSet {
        namespace,
        count,
        template,
    };
    vec![
        Workload {
            name: "SchedulingBasic",
            threshold: (270.0, 680.0),
            nodes: vec![group("node", s(5000), None)],
            init: vec![set("sched-0", s(1000), pod_default)],
            measure: set("sched-1", s(10000), pod_default),
            priority_classes: false,
        },
        Workload {
            name: "SchedulingNodeAffinity",
            threshold: (220.0, 220.0),
            nodes: vec![group(
                "node",
                s(5000),
                Some("topology.kubernetes.io/zone=zone1"),
            )],
            init: vec![set("sched-0", s(5000), pod_node_affinity)],
            measure: set("sched-1", s(10000), pod_node_affinity),
            priority_classes: false,
        },
        Workload {
            name: "TopologySpreading",
            threshold: (85.0, 460.0),
            nodes: vec![
                group(
                    "moon1",
                    s(5000) / 3 + s(5000) % 3,
                    Some("topology.kubernetes.io/zone=moon-1"),
                ),
                group(
                    "moon2",
                    s(5000) / 3,
                    Some("topology.kubernetes.io/zone=moon-2"),
                ),
                group(
                    "moon3",
                    s(5000) / 3,
                    Some("topology.kubernetes.io/zone=moon-3"),
                ),
            ],
            init: vec![set("sched-0", s(5000), pod_default)],
            measure: set("sched-1", s(5000), pod_spreading),
            priority_classes: false,
        },
        Workload {
            name: "SchedulingPodAntiAffinity",
            threshold: (60.0, 60.0),
            nodes: vec![group("node", s(5000), None)],
            init: vec![set("sched-0", s(1000), pod_anti_affinity)],
            measure: set("sched-1", s(2000), pod_anti_affinity),
            priority_classes: false,
        },
        Workload {
            name: "SchedulingPodAffinity",
            threshold: (35.0, 35.0),
            nodes: vec![group(
                "node",
                s(5000),
                Some("topology.kubernetes.io/zone=zone1"),
            )],
            init: vec![set("sched-0", s(5000), pod_affinity)],
            measure: set("sched-1", s(5000), pod_affinity),
            priority_classes: false,
        },
        // Upstream's largest enabled size (`1000Nodes`, label `performance`); its 5000-node
        // variant is commented out upstream (kubernetes#108308) and has no threshold.
        Workload {
            name: "PreemptionBasic",
            threshold: (0.0, 0.0),
            nodes: vec![group("node", s(1000), None)],
            init: vec![set("sched-0", s(4000), pod_low_priority)],
            measure: set("sched-1", s(1000), pod_high_priority),
            priority_classes: true,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn every_template_is_a_valid_pod() {
        for w in workloads(1.0) {
            for set in w.init.iter().chain([&w.measure]) {
                let pod: Pod = serde_json::from_value((set.template)("p")).unwrap();
                assert_eq!(pod.metadata.name.as_deref(), Some("p"), "{}", w.name);
            }
        }
    }

    #[test]
    fn full_scale_has_upstreams_sizes() {
        let all = workloads(1.0);
        let spread = all.iter().find(|w| w.name == "TopologySpreading").unwrap();
        assert_eq!(spread.node_count(), 5000);
        let preemption = all.iter().find(|w| w.name == "PreemptionBasic").unwrap();
        assert_eq!(
            (
                preemption.node_count(),
                preemption.init[0].count,
                preemption.measure.count
            ),
            (1000, 4000, 1000)
        );
    }
}
