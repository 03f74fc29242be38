//! The vocabulary the cloud controllers and the kubelet share without depending on each other:
//! upstream's cloud-provider taints and annotations, the annotations through which Skiff's
//! kubelet publishes what it knows about its machine (the built-in `local` provider's instance
//! metadata, like k3s' `k3s.io/internal-ip`), the route table the `local` provider keeps in a
//! ConfigMap for the nodes to apply, and the agent defaults a server publishes for joining
//! nodes. No IO happens here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The taint a kubelet registers with when an external cloud provider is to initialize the
/// node (upstream `cloudproviderapi.TaintExternalCloudProvider`); the cloud node controller
/// removes it once it has set the provider ID, addresses and topology labels.
pub const TAINT_UNINITIALIZED: &str = "node.cloudprovider.kubernetes.io/uninitialized";

/// The taint the cloud node lifecycle controller puts on a NotReady node whose instance the
/// provider reports shut down (upstream `cloudproviderapi.TaintNodeShutdown`).
pub const TAINT_SHUTDOWN: &str = "node.cloudprovider.kubernetes.io/shutdown";

/// The address a kubelet with `--cloud-provider=external` was told to use (upstream
/// `alpha.kubernetes.io/provided-node-ip`): the cloud node controller puts it first among the
/// addresses of its type, and refuses to initialize the node if the provider does not know it.
pub const ANNOTATION_PROVIDED_NODE_IP: &str = "alpha.kubernetes.io/provided-node-ip";

/// The machine's internal address, as its kubelet sees it.
pub const ANNOTATION_INTERNAL_IP: &str = "skiff.io/internal-ip";
/// The machine's external address (`--node-external-ip`), if it has one.
pub const ANNOTATION_EXTERNAL_IP: &str = "skiff.io/external-ip";
/// The machine's host name.
pub const ANNOTATION_HOSTNAME: &str = "skiff.io/hostname";
/// The zone the machine is in (`--node-zone`).
pub const ANNOTATION_ZONE: &str = "skiff.io/zone";
/// The region the machine is in (`--node-region`).
pub const ANNOTATION_REGION: &str = "skiff.io/region";
/// Set by a kubelet that stops cleanly (the machine is being shut down or its agent stopped
/// on purpose) and removed when it starts again: the `local` provider's "instance shut down".
pub const ANNOTATION_SHUTDOWN: &str = "skiff.io/shutdown";

/// The label that keeps a node out of cloud load balancers (upstream
/// `node.kubernetes.io/exclude-from-external-load-balancers`).
pub const LABEL_EXCLUDE_FROM_LOAD_BALANCERS: &str =
    "node.kubernetes.io/exclude-from-external-load-balancers";

/// Namespace of the ConfigMaps below.
pub const SYSTEM_NAMESPACE: &str = "kube-system";

/// The `local` provider's route table: one entry per route, keyed by route name, each a JSON
/// [`RouteEntry`]. The route controller writes it through the provider; every kubelet reads it
/// and programs kernel routes to the other nodes' pod CIDRs (host-gw).
pub const ROUTES_CONFIGMAP: &str = "skiff-routes";

/// The defaults a server publishes for the agents that join it (k3s serves the same to its
/// agents): keys [`AGENT_CLOUD_PROVIDER`] and [`AGENT_CLUSTER_CIDR`].
pub const AGENT_CONFIG_CONFIGMAP: &str = "skiff-agent-config";
/// `external` when the cluster runs a cloud node controller (kubelets then register with
/// [`TAINT_UNINITIALIZED`]), empty otherwise.
pub const AGENT_CLOUD_PROVIDER: &str = "cloud-provider";
/// The cluster's pod network: traffic from pods to it is not masqueraded.
pub const AGENT_CLUSTER_CIDR: &str = "cluster-cidr";

/// One route of the `local` provider's table: packets for `destinationCIDR` go to `gateway`,
/// the address of `targetNode`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteEntry {
    /// The node the pod CIDR belongs to.
    pub target_node: String,
    /// The pod CIDR (`10.42.1.0/24`).
    #[serde(rename = "destinationCIDR")]
    pub destination_cidr: String,
    /// The next hop: the target node's address.
    pub gateway: String,
}

impl RouteEntry {
    /// The entry as stored in the ConfigMap.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a route entry serializes")
    }
}

/// The well-formed entries of a route table ConfigMap's data, by route name; malformed ones
/// are left out (and reported in the second list) so one bad entry never blocks the rest.
pub fn parse_route_table(
    data: &BTreeMap<String, String>,
) -> (BTreeMap<String, RouteEntry>, Vec<String>) {
    let mut good = BTreeMap::new();
    let mut bad = Vec::new();
    for (name, value) in data {
        match serde_json::from_str::<RouteEntry>(value) {
            Ok(entry) => {
                good.insert(name.clone(), entry);
            }
            Err(_) => bad.push(name.clone()),
        }
    }
    (good, bad)
}

/// A ConfigMap key for a route to `cidr` on `node` (keys allow `[-._a-zA-Z0-9]`).
pub fn route_name(node: &str, cidr: &str) -> String {
    format!("{node}.{}", cidr.replace(['/', ':'], "-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_entries_round_trip_and_bad_ones_are_set_aside() {
        let entry = RouteEntry {
            target_node: "worker-1".into(),
            destination_cidr: "10.42.1.0/24".into(),
            gateway: "172.31.255.2".into(),
        };
        let encoded = entry.encode();
        assert!(
            encoded.contains(r#""destinationCIDR":"10.42.1.0/24""#),
            "{encoded}"
        );
        let name = route_name("worker-1", "10.42.1.0/24");
        assert_eq!(name, "worker-1.10.42.1.0-24");
        let data = BTreeMap::from([(name.clone(), encoded), ("junk".into(), "{".into())]);
        let (good, bad) = parse_route_table(&data);
        assert_eq!(good.get(&name), Some(&entry));
        assert_eq!(bad, ["junk"]);
    }
}
