//! Resource arithmetic: what a pod requests and what a node offers, as upstream's
//! `framework.Resource` and `resourcehelper.PodRequests` compute them.
//!
//! A pod's request is the larger of (a) its containers plus its restartable (sidecar) init
//! containers and (b) the peak of its init containers run one by one, each on top of the
//! sidecars started before it; pod-level `spec.resources.requests` replace the container sum
//! for the resources they name; `spec.overhead` is added last. Scoring uses the "non-zero"
//! variant, where a container that does not request cpu or memory counts as 100m / 200Mi so
//! that best-effort pods still spread.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_api::quantity::Quantity as Parsed;

/// Resource names with dedicated fields.
pub const CPU: &str = "cpu";
/// Memory.
pub const MEMORY: &str = "memory";
/// Local ephemeral storage.
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
/// The pod count.
pub const PODS: &str = "pods";

/// cpu a container that requests none counts as when scoring (upstream `DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory a container that requests none counts as when scoring (upstream `DefaultMemoryRequest`).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of every resource: cpu in millicores, the rest in whole units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    /// cpu, millicores.
    pub milli_cpu: i64,
    /// Memory, bytes.
    pub memory: i64,
    /// Ephemeral storage, bytes.
    pub ephemeral_storage: i64,
    /// How many pods (only meaningful for node allocatable).
    pub allowed_pod_number: i64,
    /// Extended resources, hugepages and anything else, by name.
    pub scalar: BTreeMap<String, i64>,
}

/// A quantity in thousandths, rounded up; unparseable quantities (which the API server does
/// not accept) count as zero.
pub fn milli(quantity: &str) -> i64 {
    Parsed::parse(quantity).map_or(0, Parsed::milli_value)
}

/// A quantity in whole units, rounded up; unparseable quantities count as zero.
pub fn units(quantity: &str) -> i64 {
    Parsed::parse(quantity).map_or(0, Parsed::value)
}

/// Whether a resource is counted in [`Resource::scalar`] (upstream `IsScalarResourceName`:
/// extended resources, `hugepages-*`, `attachable-volumes-*`, and prefixed native resources).
pub fn is_scalar(name: &str) -> bool {
    !matches!(name, CPU | MEMORY | EPHEMERAL_STORAGE | PODS | "storage")
}

/// Whether a resource is an extended resource (a domain-qualified name outside
/// `kubernetes.io/`, not `requests.*`).
pub fn is_extended(name: &str) -> bool {
    name.contains('/')
        && !name.starts_with("kubernetes.io/")
        && !name.contains(".kubernetes.io/")
        && !name.starts_with("requests.")
}

impl Resource {
    /// Read a resource list (`requests`, `allocatable`).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resource {
        let mut r = Resource::default();
        r.add_list(list);
        r
    }

    /// Add every quantity of a list.
    pub fn add_list(&mut self, list: &BTreeMap<String, Quantity>) {
        for (name, q) in list {
            self.add_named(name, &q.0, 1);
        }
    }

    fn add_named(&mut self, name: &str, quantity: &str, sign: i64) {
        match name {
            CPU => self.milli_cpu += sign * milli(quantity),
            MEMORY => self.memory += sign * units(quantity),
            EPHEMERAL_STORAGE => self.ephemeral_storage += sign * units(quantity),
            PODS => self.allowed_pod_number += sign * units(quantity),
            other if is_scalar(other) => {
                *self.scalar.entry(other.to_owned()).or_insert(0) += sign * units(quantity)
            }
            _ => {}
        }
    }

    /// The amount of one resource by name.
    pub fn get(&self, name: &str) -> i64 {
        match name {
            CPU => self.milli_cpu,
            MEMORY => self.memory,
            EPHEMERAL_STORAGE => self.ephemeral_storage,
            PODS => self.allowed_pod_number,
            other => self.scalar.get(other).copied().unwrap_or(0),
        }
    }

    /// Set one resource by name.
    pub fn set(&mut self, name: &str, value: i64) {
        match name {
            CPU => self.milli_cpu = value,
            MEMORY => self.memory = value,
            EPHEMERAL_STORAGE => self.ephemeral_storage = value,
            PODS => self.allowed_pod_number = value,
            other => {
                self.scalar.insert(other.to_owned(), value);
            }
        }
    }

    /// `self += other`.
    pub fn add(&mut self, other: &Resource) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.allowed_pod_number += other.allowed_pod_number;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// `self -= other`.
    pub fn sub(&mut self, other: &Resource) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.allowed_pod_number -= other.allowed_pod_number;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) -= v;
        }
    }

    /// Per-resource maximum, in place.
    pub fn max_with(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.allowed_pod_number = self.allowed_pod_number.max(other.allowed_pod_number);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }

    /// Whether nothing is requested (pods-only checks suffice).
    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// A container's requests, with limits standing in for unset requests (API defaulting does
/// the same, so this only matters for objects that bypassed it).
fn container_requests(c: &Container) -> Resource {
    let mut r = Resource::default();
    let Some(resources) = c.resources.as_ref() else {
        return r;
    };
    if let Some(requests) = resources.requests.as_ref() {
        r.add_list(requests);
    }
    if let Some(limits) = resources.limits.as_ref() {
        for (name, q) in limits {
            if resources
                .requests
                .as_ref()
                .is_none_or(|req| !req.contains_key(name))
            {
                r.add_named(name, &q.0, 1);
            }
        }
    }
    r
}

/// A container's requests for scoring: unset cpu/memory requests count as the defaults.
fn container_requests_non_zero(c: &Container) -> Resource {
    let mut r = container_requests(c);
    let has = |name: &str| {
        c.resources.as_ref().is_some_and(|res| {
            res.requests.as_ref().is_some_and(|m| m.contains_key(name))
                || res.limits.as_ref().is_some_and(|m| m.contains_key(name))
        })
    };
    if !has(CPU) {
        r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
    }
    if !has(MEMORY) {
        r.memory = DEFAULT_MEMORY_REQUEST;
    }
    r
}

fn is_restartable(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn aggregate(pod: &Pod, per_container: fn(&Container) -> Resource) -> Resource {
    let Some(spec) = pod.spec.as_ref() else {
        return Resource::default();
    };
    let mut reqs = Resource::default();
    for c in &spec.containers {
        reqs.add(&per_container(c));
    }
    let mut sidecars = Resource::default();
    let mut init_peak = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let r = per_container(c);
        if is_restartable(c) {
            reqs.add(&r);
            sidecars.add(&r);
            init_peak.max_with(&sidecars);
        } else {
            let mut running = r;
            running.add(&sidecars);
            init_peak.max_with(&running);
        }
    }
    reqs.max_with(&init_peak);
    // Pod-level resources (cpu, memory, hugepages) replace the container aggregate.
    if let Some(pod_requests) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        for (name, q) in pod_requests {
            if name == CPU || name == MEMORY || name.starts_with("hugepages-") {
                let mut single = Resource::default();
                single.add_named(name, &q.0, 1);
                reqs.set(name, single.get(name));
            }
        }
    }
    if let Some(overhead) = spec.overhead.as_ref() {
        reqs.add_list(overhead);
    }
    reqs
}

/// What the pod requests (upstream `PodRequests`).
pub fn pod_requests(pod: &Pod) -> Resource {
    aggregate(pod, container_requests)
}

/// What the pod requests for scoring, with cpu/memory defaults for containers that request
/// none (upstream `PodRequests` with `NonMissingContainerRequests`); only cpu and memory are
/// meaningful.
pub fn pod_requests_non_zero(pod: &Pod) -> Resource {
    let mut r = aggregate(pod, container_requests_non_zero);
    r.scalar.clear();
    r.ephemeral_storage = 0;
    r
}

/// A node's allocatable resources (capacity when allocatable is not reported).
pub fn node_allocatable(node: &Node) -> Resource {
    let status = node.status.as_ref();
    match status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref())) {
        Some(list) => Resource::from_list(list),
        None => Resource::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    pub(crate) fn list(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
            .collect()
    }

    fn container(name: &str, requests: &[(&str, &str)], restart: Option<&str>) -> Container {
        Container {
            name: name.into(),
            resources: Some(ResourceRequirements {
                requests: Some(list(requests)),
                ..Default::default()
            }),
            restart_policy: restart.map(str::to_owned),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>, init: Vec<Container>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers,
                init_containers: Some(init),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn init_containers_count_at_their_peak() {
        // Upstream docs: the effective init request is the highest of any init container; the
        // pod's request is the higher of that and the sum of app containers.
        let p = pod(
            vec![
                container("a", &[("cpu", "100m"), ("memory", "1Gi")], None),
                container("b", &[("cpu", "200m")], None),
            ],
            vec![
                container("i1", &[("cpu", "500m")], None),
                container("i2", &[("memory", "2Gi")], None),
            ],
        );
        let r = pod_requests(&p);
        assert_eq!(r.milli_cpu, 500);
        assert_eq!(r.memory, 2 << 30);
    }

    #[test]
    fn sidecars_add_to_the_app_containers_and_to_later_init_containers() {
        // A sidecar (restartPolicy Always) keeps running: 100m + app 300m = 400m; the init
        // container after it peaks at 100m + 500m = 600m, which wins.
        let p = pod(
            vec![container("app", &[("cpu", "300m")], None)],
            vec![
                container("sidecar", &[("cpu", "100m")], Some("Always")),
                container("init", &[("cpu", "500m")], None),
            ],
        );
        assert_eq!(pod_requests(&p).milli_cpu, 600);
        let p = pod(
            vec![container("app", &[("cpu", "300m")], None)],
            vec![
                container("init", &[("cpu", "350m")], None),
                container("sidecar", &[("cpu", "100m")], Some("Always")),
            ],
        );
        assert_eq!(pod_requests(&p).milli_cpu, 400);
    }

    #[test]
    fn overhead_is_added_and_pod_level_requests_replace_containers() {
        let mut p = pod(vec![container("a", &[("cpu", "100m")], None)], vec![]);
        let spec = p.spec.as_mut().unwrap();
        spec.overhead = Some(list(&[("cpu", "250m"), ("memory", "120Mi")]));
        assert_eq!(pod_requests(&p).milli_cpu, 350);
        assert_eq!(pod_requests(&p).memory, 120 << 20);
        p.spec.as_mut().unwrap().resources = Some(ResourceRequirements {
            requests: Some(list(&[("cpu", "1")])),
            ..Default::default()
        });
        assert_eq!(pod_requests(&p).milli_cpu, 1250);
    }

    #[test]
    fn non_zero_requests_default_missing_cpu_and_memory() {
        let p = pod(
            vec![
                container("a", &[], None),
                container("b", &[("cpu", "1")], None),
            ],
            vec![],
        );
        let r = pod_requests_non_zero(&p);
        assert_eq!(r.milli_cpu, 1100);
        assert_eq!(r.memory, 2 * DEFAULT_MEMORY_REQUEST);
        assert!(pod_requests(&p).memory == 0);
    }

    #[test]
    fn extended_resources_are_scalars() {
        let p = pod(
            vec![container(
                "a",
                &[("example.com/foo", "2"), ("hugepages-2Mi", "4Mi")],
                None,
            )],
            vec![],
        );
        let r = pod_requests(&p);
        assert_eq!(r.get("example.com/foo"), 2);
        assert_eq!(r.get("hugepages-2Mi"), 4 << 20);
        assert!(is_extended("example.com/foo"));
        assert!(!is_extended("hugepages-2Mi"));
    }
}
