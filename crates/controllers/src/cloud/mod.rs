//! The cloud-controller roles (upstream `k8s.io/cloud-provider`): the loops that connect the
//! cluster to the infrastructure it runs on, written against a small [`CloudProvider`] trait
//! so a real cloud can plug in beside the built-in [`local`] provider.
//!
//! - [`node`]: the cloud node controller — initializes nodes that registered with the
//!   `node.cloudprovider.kubernetes.io/uninitialized` taint (provider ID, addresses,
//!   instance-type and topology labels), then removes the taint; refreshes addresses.
//! - [`nodelifecycle`]: deletes NotReady nodes whose instance is gone and taints shut-down
//!   ones with `node.cloudprovider.kubernetes.io/shutdown`.
//! - [`route`]: a route "pod CIDR via the node" for every node with a pod CIDR, stale routes
//!   removed, and the nodes' `NetworkUnavailable` condition.
//! - [`service`]: load balancers for Services of `type: LoadBalancer`.
//!
//! The traits follow upstream's interfaces (`InstancesV2`, `Zones`, `Routes`,
//! `LoadBalancer`) with Rust's shapes: a capability the provider lacks is `None` rather than a
//! `NotImplemented` error, and the cluster name is the provider's own setting instead of an
//! argument to every call.

pub mod local;
pub mod node;
pub mod nodelifecycle;
pub mod route;
pub mod service;

#[cfg(test)]
pub(crate) mod fake;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{LoadBalancerStatus, Node, NodeAddress, Service};
use kube::Client;

/// Why a provider call failed.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The node has not published what the provider needs about its machine yet.
    #[error("node {node} has not published its {what} yet")]
    MetadataMissing {
        /// The node.
        node: String,
        /// What is missing (`internal address`).
        what: &'static str,
    },
    /// A route's target node has no address to route through.
    #[error("node {node} has no address to route {cidr} through")]
    NoRouteAddress {
        /// The node.
        node: String,
        /// The route's destination.
        cidr: String,
    },
    /// Every address of the load balancer pool is taken.
    #[error("no free address left in the load balancer address pool")]
    PoolExhausted,
    /// The Service asks for an address the pool cannot give it.
    #[error("load balancer address {address} {why}")]
    AddressUnavailable {
        /// The address asked for (`spec.loadBalancerIP`).
        address: String,
        /// Why (`is not in the address pool`, `is used by default/web`).
        why: String,
    },
    /// An API call of a provider that keeps its state in the cluster failed.
    #[error("{action} failed")]
    Api {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// A compare-and-swap update kept losing to other writers.
    #[error("{what}: too many concurrent updates")]
    Contended {
        /// What was being updated.
        what: String,
    },
    /// The provider's configuration is not valid.
    #[error("invalid configuration of cloud provider {provider}: {message}")]
    Config {
        /// The provider.
        provider: String,
        /// What is wrong.
        message: String,
    },
    /// `--cloud-provider` names no known provider.
    #[error("unknown cloud provider {0:?} (known: {known})", known = PROVIDERS.join(", "))]
    UnknownProvider(String),
    /// A provider's own API failed (for providers that call out to an infrastructure API).
    #[error("cloud provider call {operation} failed")]
    Provider {
        /// The call.
        operation: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Result alias of provider calls.
pub type CloudResult<T> = std::result::Result<T, CloudError>;

/// What the provider knows about a node's instance (upstream `InstanceMetadata`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceMetadata {
    /// `spec.providerID` (`skiff://node-1`).
    pub provider_id: String,
    /// The instance type (label `node.kubernetes.io/instance-type`); empty when unknown.
    pub instance_type: String,
    /// The node's addresses.
    pub addresses: Vec<NodeAddress>,
    /// The zone (label `topology.kubernetes.io/zone`); empty when unknown.
    pub zone: String,
    /// The region (label `topology.kubernetes.io/region`); empty when unknown.
    pub region: String,
    /// Provider-specific labels (never in the `kubernetes.io`/`k8s.io` namespaces).
    pub additional_labels: BTreeMap<String, String>,
}

/// A failure domain (upstream `cloudprovider.Zone`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zone {
    /// The zone.
    pub failure_domain: String,
    /// The region.
    pub region: String,
}

/// A route in the provider's route table (upstream `cloudprovider.Route`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Route {
    /// The provider's name for it (empty for a route not created yet).
    pub name: String,
    /// The node whose pods the route reaches.
    pub target_node: String,
    /// The target node's addresses when the route was made (the provider picks the next hop).
    pub target_addresses: Vec<NodeAddress>,
    /// The pod CIDR.
    pub destination_cidr: String,
    /// The next hop the provider chose, if it reports one: the route stays valid while the
    /// node still has that address.
    pub gateway: Option<String>,
    /// The route leads nowhere (its instance is gone); it is always removed.
    pub blackhole: bool,
}

/// Instances (upstream `InstancesV2`): what the provider knows of the machine behind a node.
#[async_trait]
pub trait Instances: Send + Sync {
    /// Whether the node's instance still exists.
    async fn instance_exists(&self, node: &Node) -> CloudResult<bool>;
    /// Whether the node's instance is shut down.
    async fn instance_shutdown(&self, node: &Node) -> CloudResult<bool>;
    /// The instance's provider ID, type, addresses and topology.
    async fn instance_metadata(&self, node: &Node) -> CloudResult<InstanceMetadata>;
}

/// Zones (upstream `Zones`): consulted when the instance metadata carries no topology.
#[async_trait]
pub trait Zones: Send + Sync {
    /// The node's zone and region.
    async fn zone_of(&self, node: &Node) -> CloudResult<Zone>;
}

/// Routes (upstream `Routes`): the route table that carries pod traffic between nodes.
#[async_trait]
pub trait Routes: Send + Sync {
    /// Every route of this cluster.
    async fn list_routes(&self) -> CloudResult<Vec<Route>>;
    /// Create a route; `name_hint` (the node's UID) may help the provider name it.
    async fn create_route(&self, name_hint: &str, route: &Route) -> CloudResult<()>;
    /// Delete a route (by its name and destination).
    async fn delete_route(&self, route: &Route) -> CloudResult<()>;
}

/// Load balancers (upstream `LoadBalancer`) for Services of `type: LoadBalancer`.
#[async_trait]
pub trait LoadBalancer: Send + Sync {
    /// The provider's name for the Service's load balancer.
    fn load_balancer_name(&self, service: &Service) -> String {
        default_load_balancer_name(service)
    }
    /// The load balancer's status, or `None` if it does not exist.
    async fn get_load_balancer(&self, service: &Service)
    -> CloudResult<Option<LoadBalancerStatus>>;
    /// Create or update the load balancer to send traffic to `nodes`; returns its status.
    async fn ensure_load_balancer(
        &self,
        service: &Service,
        nodes: &[Arc<Node>],
    ) -> CloudResult<LoadBalancerStatus>;
    /// Point an existing load balancer at a new set of nodes.
    async fn update_load_balancer(&self, service: &Service, nodes: &[Arc<Node>])
    -> CloudResult<()>;
    /// Delete the load balancer; succeeds when it does not exist.
    async fn ensure_load_balancer_deleted(&self, service: &Service) -> CloudResult<()>;
}

/// A cloud provider: the capabilities it offers.
pub trait CloudProvider: Send + Sync {
    /// The provider's name (`local`).
    fn name(&self) -> &'static str;
    /// Instance metadata and lifecycle.
    fn instances(&self) -> Option<&dyn Instances>;
    /// Zones, for providers whose instance metadata has no topology.
    fn zones(&self) -> Option<&dyn Zones>;
    /// The route table.
    fn routes(&self) -> Option<&dyn Routes>;
    /// Load balancers.
    fn load_balancer(&self) -> Option<&dyn LoadBalancer>;
}

/// Upstream's default load balancer name: `a` and the Service's UID without dashes, at most
/// 32 characters (a length every cloud accepts).
pub fn default_load_balancer_name(service: &Service) -> String {
    let uid: String = service
        .metadata
        .uid
        .as_deref()
        .unwrap_or_default()
        .chars()
        .filter(|c| *c != '-')
        .collect();
    let mut name = format!("a{uid}");
    name.truncate(32);
    name
}

/// The providers Skiff knows (`--cloud-provider`).
pub const PROVIDERS: &[&str] = &[local::NAME];

/// How the provider was asked to run.
#[derive(Debug, Clone, Default)]
pub struct ProviderSettings {
    /// `--cloud-provider`.
    pub name: String,
    /// `--cluster-name`: providers that name cloud resources after the cluster use it.
    pub cluster_name: String,
    /// The parsed `--cloud-config` file, if any.
    pub config: Option<serde_json::Value>,
}

/// Check a provider's name and configuration without building it (for start-up validation).
pub fn validate(settings: &ProviderSettings) -> CloudResult<()> {
    match settings.name.as_str() {
        local::NAME => local::LocalConfig::parse(settings.config.as_ref()).map(|_| ()),
        other => Err(CloudError::UnknownProvider(other.to_owned())),
    }
}

/// Build the provider `settings` name, with the controller manager's client for providers
/// that keep their state in the cluster.
pub fn build(settings: &ProviderSettings, client: Client) -> CloudResult<Arc<dyn CloudProvider>> {
    match settings.name.as_str() {
        local::NAME => {
            let config = local::LocalConfig::parse(settings.config.as_ref())?;
            Ok(Arc::new(local::LocalProvider::new(client, config)))
        }
        other => Err(CloudError::UnknownProvider(other.to_owned())),
    }
}

/// The node's address of a type.
pub fn node_address<'n>(node: &'n Node, type_: &str) -> Option<&'n str> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == type_)
        .map(|a| a.address.as_str())
}

/// Whether the node carries a taint with `key`.
pub fn has_taint(node: &Node, key: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == key))
}

/// Whether the node's Ready condition is True.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    #[test]
    fn load_balancer_names_follow_upstream() {
        let svc = Service {
            metadata: ObjectMeta {
                uid: Some("6f1d4c0e-9b7a-4c55-8d2e-0a1b2c3d4e5f".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            default_load_balancer_name(&svc),
            "a6f1d4c0e9b7a4c558d2e0a1b2c3d4e5"
        );
    }

    #[test]
    fn unknown_providers_are_refused_with_the_known_ones() {
        let err = validate(&ProviderSettings {
            name: "gce".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown cloud provider \"gce\" (known: local)"
        );
    }
}
