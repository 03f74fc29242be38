//! What the scheduler knows about one pod ([`PodInfo`]: the pod with its requests, affinity
//! terms and host ports computed once) and one node ([`NodeInfo`]: the node, the pods on it,
//! what they request, the ports they hold), as upstream's `framework.PodInfo`/`NodeInfo`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm};
use kube::ResourceExt;
use skiff_api::selector::{LabelSelector, Operator, Requirement};

use crate::helpers::pod_labels;
use crate::resources::{self, Resource};

/// A pod affinity term, compiled (upstream `framework.AffinityTerm`).
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    /// Namespaces the term names (the pod's own when neither names nor a selector is given).
    pub namespaces: HashSet<String>,
    /// Which pods the term is about.
    pub selector: LabelSelector,
    /// The topology domain label.
    pub topology_key: String,
    /// Which namespaces by label ([`LabelSelector::nothing`] when absent).
    pub namespace_selector: LabelSelector,
}

impl AffinityTerm {
    fn new(pod: &Pod, term: &PodAffinityTerm) -> AffinityTerm {
        let mut selector = term
            .label_selector
            .as_ref()
            .map_or(Ok(LabelSelector::nothing()), LabelSelector::from_k8s)
            .unwrap_or_else(|_| LabelSelector::nothing());
        // matchLabelKeys / mismatchLabelKeys take values from the pod's own labels.
        let labels = pod_labels(pod);
        if !selector.is_nothing() {
            let mut extra = Vec::new();
            for (keys, op) in [
                (&term.match_label_keys, Operator::In),
                (&term.mismatch_label_keys, Operator::NotIn),
            ] {
                for key in keys.iter().flatten() {
                    if let Some(value) = labels.get(key)
                        && let Ok(r) = Requirement::new(key, op, vec![value.clone()])
                    {
                        extra.push(r);
                    }
                }
            }
            if !extra.is_empty() {
                let mut all = selector.requirements().to_vec();
                all.extend(extra);
                selector = LabelSelector::from_requirements(all);
            }
        }
        let mut namespaces: HashSet<String> = term.namespaces.iter().flatten().cloned().collect();
        let namespace_selector = match term.namespace_selector.as_ref() {
            None => {
                if namespaces.is_empty() {
                    namespaces.insert(pod.namespace().unwrap_or_default());
                }
                LabelSelector::nothing()
            }
            Some(s) => LabelSelector::from_k8s(s).unwrap_or_else(|_| LabelSelector::nothing()),
        };
        AffinityTerm {
            namespaces,
            selector,
            topology_key: term.topology_key.clone(),
            namespace_selector,
        }
    }

    /// Whether `pod` (in a namespace labelled `ns_labels`) is one of the pods this term is
    /// about (upstream `AffinityTerm.Matches`).
    pub fn matches(&self, pod: &Pod, ns_labels: Option<&BTreeMap<String, String>>) -> bool {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let ns_ok = self.namespaces.contains(ns)
            || ns_labels.is_some_and(|l| self.namespace_selector.matches(l));
        ns_ok && self.selector.matches(pod_labels(pod))
    }
}

/// A preferred affinity term and its weight.
#[derive(Debug, Clone)]
pub struct WeightedAffinityTerm {
    /// The term.
    pub term: AffinityTerm,
    /// Its weight (1-100).
    pub weight: i32,
}

/// A host port a pod wants (`hostIP` defaults to 0.0.0.0, `protocol` to TCP).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Host IP.
    pub ip: String,
    /// Protocol.
    pub protocol: String,
    /// Port.
    pub port: i32,
}

impl HostPort {
    /// Whether two host ports cannot both be used on one node.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// A pod with what scheduling needs computed once.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// The pod.
    pub pod: Arc<Pod>,
    /// The cache key: the UID, or `namespace/name` for objects without one.
    pub key: String,
    /// Requests (upstream `PodRequests`).
    pub requests: Resource,
    /// Requests for scoring (missing cpu/memory defaulted).
    pub non_zero_requests: Resource,
    /// Required pod affinity terms.
    pub required_affinity: Vec<AffinityTerm>,
    /// Required pod anti-affinity terms.
    pub required_anti_affinity: Vec<AffinityTerm>,
    /// Preferred pod affinity terms.
    pub preferred_affinity: Vec<WeightedAffinityTerm>,
    /// Preferred pod anti-affinity terms.
    pub preferred_anti_affinity: Vec<WeightedAffinityTerm>,
    /// Host ports of its containers (and sidecars).
    pub host_ports: Vec<HostPort>,
    /// `spec.priority` (0 when unset).
    pub priority: i32,
}

/// The cache key of a pod.
pub fn pod_key(pod: &Pod) -> String {
    match pod.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.to_owned(),
        _ => format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or("")
        ),
    }
}

/// `namespace/name` of a pod, for messages.
pub fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

impl PodInfo {
    /// Compute the scheduling view of a pod.
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let spec = pod.spec.as_ref();
        let affinity = spec.and_then(|s| s.affinity.as_ref());
        let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
        let paa = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let required = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .map(|t| AffinityTerm::new(&pod, t))
                .collect()
        };
        let preferred =
            |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
                terms
                    .into_iter()
                    .flatten()
                    .map(|w| WeightedAffinityTerm {
                        term: AffinityTerm::new(&pod, &w.pod_affinity_term),
                        weight: w.weight,
                    })
                    .collect::<Vec<_>>()
            };
        let mut host_ports = Vec::new();
        if let Some(spec) = spec {
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            for c in spec.containers.iter().chain(sidecars) {
                for p in c.ports.iter().flatten() {
                    if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                        host_ports.push(HostPort {
                            ip: p
                                .host_ip
                                .clone()
                                .filter(|ip| !ip.is_empty())
                                .unwrap_or_else(|| "0.0.0.0".to_owned()),
                            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                            port: hp,
                        });
                    }
                }
            }
        }
        PodInfo {
            key: pod_key(&pod),
            requests: resources::pod_requests(&pod),
            non_zero_requests: resources::pod_requests_non_zero(&pod),
            required_affinity: required(pa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti_affinity: required(paa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: preferred(pa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: preferred(paa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            host_ports,
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            pod,
        }
    }

    /// Whether the pod has any pod affinity or anti-affinity term.
    pub fn has_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }

    /// The pod's namespace.
    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("")
    }

    /// The PersistentVolumeClaims the pod mounts.
    pub fn pvc_names(&self) -> impl Iterator<Item = &str> {
        self.pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.as_str())
    }
}

/// One node with the pods on it (upstream `framework.NodeInfo`).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node (an empty placeholder while only pods referencing it are known).
    pub node: Arc<Node>,
    /// Whether `node` is a real Node object.
    pub has_node: bool,
    /// `spec.unschedulable` (kept here so Filter does not read the Node object for it).
    pub unschedulable: bool,
    /// Whether the node has any taint.
    pub has_taints: bool,
    /// The node name.
    pub name: String,
    /// Pods on the node, assumed ones included.
    pub pods: Vec<Arc<PodInfo>>,
    /// Pods with any pod (anti-)affinity term.
    pub pods_with_affinity: Vec<Arc<PodInfo>>,
    /// Pods with required anti-affinity terms.
    pub pods_with_required_anti_affinity: Vec<Arc<PodInfo>>,
    /// Host ports in use.
    pub used_ports: Vec<HostPort>,
    /// Sum of the pods' requests.
    pub requested: Resource,
    /// Sum of the pods' non-zero requests (scoring).
    pub non_zero_requested: Resource,
    /// What the node offers.
    pub allocatable: Resource,
    /// Images on the node: normalized name → size in bytes.
    pub images: Arc<HashMap<String, i64>>,
    /// How many pods on the node use each PVC (`namespace/claim`).
    pub pvc_refs: HashMap<String, usize>,
    /// Bumped on every change (the snapshot copies changed nodes only).
    pub generation: u64,
}

/// An image reference with `:latest` added when it has neither tag nor digest (upstream
/// `normalizedImageName`).
pub fn normalized_image_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.contains('@') || last.contains(':') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

impl NodeInfo {
    /// An empty node entry named `name`.
    pub fn placeholder(name: &str) -> NodeInfo {
        NodeInfo {
            node: Arc::new(Node::default()),
            has_node: false,
            unschedulable: false,
            has_taints: false,
            name: name.to_owned(),
            pods: Vec::new(),
            pods_with_affinity: Vec::new(),
            pods_with_required_anti_affinity: Vec::new(),
            used_ports: Vec::new(),
            requested: Resource::default(),
            non_zero_requested: Resource::default(),
            allocatable: Resource::default(),
            images: Arc::new(HashMap::new()),
            pvc_refs: HashMap::new(),
            generation: 0,
        }
    }

    /// A node entry for `node` without pods.
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let mut info = NodeInfo::placeholder(node.metadata.name.as_deref().unwrap_or(""));
        info.set_node(node);
        info
    }

    /// Replace the node object.
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.allocatable = resources::node_allocatable(&node);
        let mut images = HashMap::new();
        for image in node
            .status
            .as_ref()
            .and_then(|s| s.images.as_ref())
            .into_iter()
            .flatten()
        {
            for name in image.names.iter().flatten() {
                images.insert(normalized_image_name(name), image.size_bytes.unwrap_or(0));
            }
        }
        self.images = Arc::new(images);
        let spec = node.spec.as_ref();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        self.has_taints = spec
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| !t.is_empty());
        self.node = node;
        self.has_node = true;
    }

    /// The node's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        crate::helpers::node_labels(&self.node)
    }

    /// Account for a pod on this node.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.non_zero_requested.add(&pod.non_zero_requests);
        self.used_ports.extend(pod.host_ports.iter().cloned());
        for claim in pod.pvc_names() {
            let key = format!("{}/{claim}", pod.namespace());
            *self.pvc_refs.entry(key).or_insert(0) += 1;
        }
        if pod.has_affinity() {
            self.pods_with_affinity.push(pod.clone());
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity.push(pod.clone());
        }
        self.pods.push(pod);
    }

    /// Stop accounting for the pod with `key`; returns whether it was here.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(index) = self.pods.iter().position(|p| p.key == key) else {
            return false;
        };
        let pod = self.pods.swap_remove(index);
        self.requested.sub(&pod.requests);
        self.non_zero_requested.sub(&pod.non_zero_requests);
        for hp in &pod.host_ports {
            if let Some(i) = self.used_ports.iter().position(|p| p == hp) {
                self.used_ports.swap_remove(i);
            }
        }
        for claim in pod.pvc_names() {
            let k = format!("{}/{claim}", pod.namespace());
            if let Some(n) = self.pvc_refs.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.pvc_refs.remove(&k);
                }
            }
        }
        // Preemption removes and re-adds pods on node copies many times per cycle: the lists
        // hold the pod only if it has such terms.
        if pod.has_affinity() {
            self.pods_with_affinity.retain(|p| p.key != key);
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity
                .retain(|p| p.key != key);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Affinity, PodAntiAffinity, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector as K8sSelector, ObjectMeta,
    };

    fn pod_with_anti_affinity(ns: &str, term: PodAffinityTerm) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some("p".into()),
                labels: Some([("app".to_owned(), "web".to_owned())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                affinity: Some(Affinity {
                    pod_anti_affinity: Some(PodAntiAffinity {
                        required_during_scheduling_ignored_during_execution: Some(vec![term]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn other(ns: &str, app: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                labels: Some([("app".to_owned(), app.to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn selector(app: &str) -> Option<K8sSelector> {
        Some(K8sSelector {
            match_labels: Some([("app".to_owned(), app.to_owned())].into()),
            ..Default::default()
        })
    }

    #[test]
    fn terms_default_to_the_pods_namespace() {
        let term = PodAffinityTerm {
            label_selector: selector("web"),
            topology_key: "kubernetes.io/hostname".into(),
            ..Default::default()
        };
        let info = PodInfo::new(Arc::new(pod_with_anti_affinity("a", term)));
        let t = &info.required_anti_affinity[0];
        assert!(t.matches(&other("a", "web"), None));
        assert!(!t.matches(&other("b", "web"), None));
        assert!(!t.matches(&other("a", "db"), None));
    }

    #[test]
    fn an_empty_namespace_selector_means_every_namespace() {
        let term = PodAffinityTerm {
            label_selector: selector("web"),
            topology_key: "zone".into(),
            namespace_selector: Some(K8sSelector::default()),
            ..Default::default()
        };
        let info = PodInfo::new(Arc::new(pod_with_anti_affinity("a", term)));
        let t = &info.required_anti_affinity[0];
        let labels = BTreeMap::new();
        assert!(t.matches(&other("zzz", "web"), Some(&labels)));
    }

    #[test]
    fn a_nil_label_selector_matches_no_pods_and_match_label_keys_narrow() {
        let term = PodAffinityTerm {
            label_selector: None,
            topology_key: "zone".into(),
            ..Default::default()
        };
        let info = PodInfo::new(Arc::new(pod_with_anti_affinity("a", term)));
        assert!(!info.required_anti_affinity[0].matches(&other("a", "web"), None));
        let term = PodAffinityTerm {
            label_selector: Some(K8sSelector::default()),
            match_label_keys: Some(vec!["app".into()]),
            topology_key: "zone".into(),
            ..Default::default()
        };
        let info = PodInfo::new(Arc::new(pod_with_anti_affinity("a", term)));
        let t = &info.required_anti_affinity[0];
        assert!(t.matches(&other("a", "web"), None));
        assert!(!t.matches(&other("a", "db"), None));
    }

    #[test]
    fn host_ports_conflict_on_wildcard_or_equal_ips() {
        let hp = |ip: &str, port| HostPort {
            ip: ip.into(),
            protocol: "TCP".into(),
            port,
        };
        assert!(hp("0.0.0.0", 80).conflicts(&hp("127.0.0.1", 80)));
        assert!(hp("10.0.0.1", 80).conflicts(&hp("10.0.0.1", 80)));
        assert!(!hp("10.0.0.1", 80).conflicts(&hp("10.0.0.2", 80)));
        assert!(!hp("0.0.0.0", 80).conflicts(&hp("0.0.0.0", 81)));
    }

    #[test]
    fn images_are_normalized() {
        assert_eq!(normalized_image_name("nginx"), "nginx:latest");
        assert_eq!(normalized_image_name("nginx:1.27"), "nginx:1.27");
        assert_eq!(
            normalized_image_name("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(normalized_image_name("app@sha256:abc"), "app@sha256:abc");
    }
}
