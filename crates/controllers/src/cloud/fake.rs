//! A recording fake cloud for the loops' unit tests (upstream `fakecloud`): answers from
//! tables the test fills, fails where the test says, and records every call in order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Node, Service};
use kube::ResourceExt;
use parking_lot::Mutex;

use super::{
    CloudError, CloudProvider, CloudResult, InstanceMetadata, Instances, LoadBalancer, Route,
    Routes, Zone, Zones,
};

#[derive(Debug, thiserror::Error)]
#[error("injected failure")]
pub(crate) struct Injected;

fn injected(operation: &'static str) -> CloudError {
    CloudError::Provider {
        operation,
        source: Box::new(Injected),
    }
}

/// The fake's tables.
#[derive(Default)]
pub(crate) struct State {
    /// Instance metadata by node name (missing: an error).
    pub metadata: BTreeMap<String, InstanceMetadata>,
    /// Zones by node name (used when the metadata has none).
    pub zones: BTreeMap<String, Zone>,
    /// Instances that no longer exist.
    pub gone: BTreeSet<String>,
    /// Instances that are shut down.
    pub shut_down: BTreeSet<String>,
    /// The route table.
    pub routes: Vec<Route>,
    /// Nodes whose routes cannot be created.
    pub failing_routes: BTreeSet<String>,
    /// Load balancers by Service name.
    pub balancers: BTreeMap<String, LoadBalancerStatus>,
    /// Make load balancer calls fail.
    pub failing_balancers: bool,
    /// What was called, in order (`ensure default/web [n1,n2]`).
    pub calls: Vec<String>,
}

/// The fake provider; clones share state.
#[derive(Clone, Default)]
pub(crate) struct FakeCloud {
    pub state: Arc<Mutex<State>>,
    /// Offer no route table (a provider without `Routes`).
    pub without_routes: bool,
}

impl FakeCloud {
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().calls.clone()
    }

    fn record(&self, call: String) {
        self.state.lock().calls.push(call);
    }
}

fn key(service: &Service) -> String {
    format!(
        "{}/{}",
        service.namespace().unwrap_or_default(),
        service.name_any()
    )
}

fn names(nodes: &[Arc<Node>]) -> String {
    let mut n: Vec<String> = nodes.iter().map(|n| n.name_any()).collect();
    n.sort();
    n.join(",")
}

#[async_trait]
impl Instances for FakeCloud {
    async fn instance_exists(&self, node: &Node) -> CloudResult<bool> {
        self.record(format!("exists {}", node.name_any()));
        Ok(!self.state.lock().gone.contains(&node.name_any()))
    }

    async fn instance_shutdown(&self, node: &Node) -> CloudResult<bool> {
        self.record(format!("shutdown {}", node.name_any()));
        Ok(self.state.lock().shut_down.contains(&node.name_any()))
    }

    async fn instance_metadata(&self, node: &Node) -> CloudResult<InstanceMetadata> {
        self.record(format!("metadata {}", node.name_any()));
        self.state
            .lock()
            .metadata
            .get(&node.name_any())
            .cloned()
            .ok_or_else(|| injected("instance metadata"))
    }
}

#[async_trait]
impl Zones for FakeCloud {
    async fn zone_of(&self, node: &Node) -> CloudResult<Zone> {
        self.record(format!("zone {}", node.name_any()));
        Ok(self
            .state
            .lock()
            .zones
            .get(&node.name_any())
            .cloned()
            .unwrap_or_default())
    }
}

#[async_trait]
impl Routes for FakeCloud {
    async fn list_routes(&self) -> CloudResult<Vec<Route>> {
        Ok(self.state.lock().routes.clone())
    }

    async fn create_route(&self, name_hint: &str, route: &Route) -> CloudResult<()> {
        self.record(format!(
            "create-route {} {} ({name_hint})",
            route.target_node, route.destination_cidr
        ));
        let mut state = self.state.lock();
        if state.failing_routes.contains(&route.target_node) {
            return Err(injected("create route"));
        }
        let gateway = route
            .target_addresses
            .iter()
            .find(|a| a.type_ == "InternalIP")
            .map(|a| a.address.clone());
        state.routes.push(Route {
            name: format!("r-{}", route.target_node),
            gateway,
            ..route.clone()
        });
        Ok(())
    }

    async fn delete_route(&self, route: &Route) -> CloudResult<()> {
        self.record(format!(
            "delete-route {} {}",
            route.target_node, route.destination_cidr
        ));
        self.state
            .lock()
            .routes
            .retain(|r| !(r.name == route.name && r.destination_cidr == route.destination_cidr));
        Ok(())
    }
}

#[async_trait]
impl LoadBalancer for FakeCloud {
    async fn get_load_balancer(
        &self,
        service: &Service,
    ) -> CloudResult<Option<LoadBalancerStatus>> {
        self.record(format!("get {}", key(service)));
        Ok(self.state.lock().balancers.get(&key(service)).cloned())
    }

    async fn ensure_load_balancer(
        &self,
        service: &Service,
        nodes: &[Arc<Node>],
    ) -> CloudResult<LoadBalancerStatus> {
        self.record(format!("ensure {} [{}]", key(service), names(nodes)));
        let mut state = self.state.lock();
        if state.failing_balancers {
            return Err(injected("ensure load balancer"));
        }
        let status = LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some(format!("192.0.2.{}", nodes.len())),
                ..Default::default()
            }]),
        };
        state.balancers.insert(key(service), status.clone());
        Ok(status)
    }

    async fn update_load_balancer(
        &self,
        service: &Service,
        nodes: &[Arc<Node>],
    ) -> CloudResult<()> {
        self.record(format!("update {} [{}]", key(service), names(nodes)));
        let mut state = self.state.lock();
        if state.failing_balancers {
            return Err(injected("update load balancer"));
        }
        if let Some(status) = state.balancers.get_mut(&key(service)) {
            status.ingress = Some(vec![LoadBalancerIngress {
                ip: Some(format!("192.0.2.{}", nodes.len())),
                ..Default::default()
            }]);
        }
        Ok(())
    }

    async fn ensure_load_balancer_deleted(&self, service: &Service) -> CloudResult<()> {
        self.record(format!("delete {}", key(service)));
        let mut state = self.state.lock();
        if state.failing_balancers {
            return Err(injected("delete load balancer"));
        }
        state.balancers.remove(&key(service));
        Ok(())
    }
}

impl CloudProvider for FakeCloud {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn instances(&self) -> Option<&dyn Instances> {
        Some(self)
    }

    fn zones(&self) -> Option<&dyn Zones> {
        Some(self)
    }

    fn routes(&self) -> Option<&dyn Routes> {
        (!self.without_routes).then_some(self as &dyn Routes)
    }

    fn load_balancer(&self) -> Option<&dyn LoadBalancer> {
        Some(self)
    }
}
