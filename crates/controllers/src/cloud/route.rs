//! The route controller (upstream `cloud-provider/controllers/route`): for every node with a
//! pod CIDR, a route "pod CIDR via that node" in the provider's route table; routes inside the
//! cluster CIDR that no node justifies any more are removed, and a route whose next hop is no
//! longer one of its node's addresses is replaced. Each node that has (or had) routes then
//! gets its `NetworkUnavailable` condition: False (`RouteCreated`) once all its routes exist,
//! True (`NoRouteCreated`) otherwise — which the node lifecycle controller turns into the
//! `node.kubernetes.io/network-unavailable` NoSchedule taint. Nodes without a pod CIDR and
//! without routes are left alone, as upstream; so are nodes without a provider ID (hollow
//! nodes, nodes registered without the cloud provider), which upstream assumes away: they are
//! not the provider's instances and no route could reach them.
//!
//! The table is reconciled every `--route-reconciliation-period` and, unlike upstream (whose
//! TODO asks for it), also as soon as a node's pod CIDR or addresses change. It runs only with
//! `--allocate-node-cidrs` and `--configure-cloud-routes`, on a provider with a route table.
//! The decision is the pure [`plan`]; [`execute`] carries it out through the provider.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, NodeAddress};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_runtime::controller::{self, Action, ErrorChain, Reconciler};
use skiff_runtime::events::{EventType, Recorder, reference};
use skiff_runtime::{Change, Informer, WorkQueue};

use super::{CloudProvider, Route, Routes};
use crate::config::{Ipv4Net, mask};
use crate::context::{Context, synced};
use crate::{During, Error, Result};

/// The loop's name (and its events' source).
pub const NAME: &str = "node-route-controller";

/// Route calls in flight at once (upstream `maxConcurrentRouteOperations` is 200 for clouds
/// with slow APIs; a handful is plenty here).
const CONCURRENT_OPERATIONS: usize = 16;

/// The single key of the work queue: every reconcile looks at the whole table.
const KEY: &str = "routes";

/// A node's routes in a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRoutes {
    /// The node's pod CIDRs (empty: it has routes but no pod CIDR any more).
    pub cidrs: Vec<String>,
    /// Those that need a route created.
    pub missing: Vec<String>,
}

/// What the route table needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoutePlan {
    /// Routes to delete (stale, blackholed, or with a next hop the node no longer has).
    pub delete: Vec<Route>,
    /// Routes to create, with the name hint (the node's UID).
    pub create: Vec<(String, Route)>,
    /// The nodes whose `NetworkUnavailable` condition this pass decides.
    pub nodes: BTreeMap<String, NodeRoutes>,
}

fn pod_cidrs(node: &Node) -> Vec<String> {
    let spec = node.spec.as_ref();
    let mut cidrs: Vec<String> = spec
        .and_then(|s| s.pod_cidrs.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !c.is_empty())
        .collect();
    if cidrs.is_empty()
        && let Some(c) = spec
            .and_then(|s| s.pod_cidr.clone())
            .filter(|c| !c.is_empty())
    {
        cidrs.push(c);
    }
    cidrs
}

fn addresses(node: &Node) -> Vec<NodeAddress> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default()
}

/// Whether a route's destination overlaps the cluster CIDR (upstream `isResponsibleForRoute`:
/// routes elsewhere belong to someone else).
pub fn responsible_for(cluster: Ipv4Net, destination: &str) -> bool {
    let Ok(net) = destination.parse::<Ipv4Net>() else {
        tracing::warn!(route = %destination, "ignoring a route with an unparsable destination");
        return false;
    };
    let first = u32::from(net.addr);
    let last = first | !mask(net.prefix);
    let inside = |ip: u32| ip & mask(cluster.prefix) == u32::from(cluster.addr);
    inside(first) || inside(last)
}

/// Whether the node is an instance of the provider: it has a provider ID (the service
/// controller's `nodeHasProviderIDPredicate`). Upstream routes every node, assuming all are
/// instances; hollow nodes and nodes registered without the cloud provider are not, and a route
/// to them could not exist — they would only be tainted `network-unavailable`.
fn is_instance(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .is_some_and(|p| !p.is_empty())
}

/// Upstream `reconcile`'s decisions, for the nodes that are instances of the provider.
pub fn plan(nodes: &[Arc<Node>], routes: &[Route], cluster: Ipv4Net) -> RoutePlan {
    let nodes: Vec<&Arc<Node>> = nodes.iter().filter(|n| is_instance(n)).collect();
    let mut by_node: BTreeMap<&str, Vec<&Route>> = BTreeMap::new();
    for r in routes.iter().filter(|r| !r.target_node.is_empty()) {
        by_node.entry(&r.target_node).or_default().push(r);
    }
    let mut out = RoutePlan::default();
    // Per node and CIDR: whether an existing route serves it.
    let mut served: BTreeMap<(String, String), bool> = BTreeMap::new();
    for node in &nodes {
        let cidrs = pod_cidrs(node);
        if cidrs.is_empty() {
            continue;
        }
        let name = node.name_any();
        let addrs = addresses(node);
        let mut state = NodeRoutes {
            cidrs: cidrs.clone(),
            missing: Vec::new(),
        };
        for cidr in cidrs {
            let existing = by_node
                .get(name.as_str())
                .and_then(|rs| rs.iter().find(|r| r.destination_cidr == cidr));
            // A route whose next hop the node no longer has must be replaced.
            let keep = existing.is_some_and(|r| match &r.gateway {
                Some(gw) => addrs.iter().any(|a| &a.address == gw),
                None => true,
            });
            served.insert((name.clone(), cidr.clone()), keep);
            if !keep {
                state.missing.push(cidr.clone());
                out.create.push((
                    node.metadata.uid.clone().unwrap_or_else(|| name.clone()),
                    Route {
                        target_node: name.clone(),
                        target_addresses: addrs.clone(),
                        destination_cidr: cidr,
                        ..Default::default()
                    },
                ));
            }
        }
        out.nodes.insert(name, state);
    }
    // Nodes with routes but no pod CIDR: their condition turns True (upstream's "no actions").
    for name in by_node.keys() {
        if nodes.iter().any(|n| n.name_any() == *name) {
            out.nodes.entry((*name).to_owned()).or_default();
        }
    }
    for r in routes {
        if !responsible_for(cluster, &r.destination_cidr) {
            continue;
        }
        let keep = served
            .get(&(r.target_node.clone(), r.destination_cidr.clone()))
            .copied()
            .unwrap_or(false);
        if r.blackhole || !keep {
            out.delete.push(r.clone());
        }
    }
    out
}

/// A failed route creation.
#[derive(Debug)]
pub struct Failure {
    /// The route.
    pub route: Route,
    /// The name hint it was created with.
    pub hint: String,
    /// How long the attempt took.
    pub after: std::time::Duration,
    /// Why.
    pub error: super::CloudError,
}

/// Carry out `plan`: deletions first (a replaced route is deleted before it is recreated),
/// then creations; returns the creations that failed.
pub async fn execute(routes: &dyn Routes, plan: &RoutePlan) -> Vec<Failure> {
    // Boxed and collected first: a lazy `map` held across the await trips rustc's `Send`
    // inference for the caller's future.
    let deletions: Vec<BoxFuture<'_, ()>> = plan
        .delete
        .iter()
        .map(|route| delete_one(routes, route).boxed())
        .collect();
    futures::stream::iter(deletions)
        .buffer_unordered(CONCURRENT_OPERATIONS)
        .collect::<Vec<()>>()
        .await;
    let creations: Vec<BoxFuture<'_, Option<Failure>>> = plan
        .create
        .iter()
        .map(|(hint, route)| create_one(routes, hint, route).boxed())
        .collect();
    futures::stream::iter(creations)
        .buffer_unordered(CONCURRENT_OPERATIONS)
        .filter_map(futures::future::ready)
        .collect()
        .await
}

async fn delete_one(routes: &dyn Routes, route: &Route) {
    match routes.delete_route(route).await {
        Ok(()) => {
            tracing::info!(route = %route.name, cidr = %route.destination_cidr, "deleted route")
        }
        Err(e) => {
            tracing::warn!(route = %route.name, cidr = %route.destination_cidr, error = %ErrorChain(&e), "could not delete route")
        }
    }
}

async fn create_one(routes: &dyn Routes, hint: &str, route: &Route) -> Option<Failure> {
    let started = Instant::now();
    match routes.create_route(hint, route).await {
        Ok(()) => {
            tracing::info!(node = %route.target_node, cidr = %route.destination_cidr, "created route");
            None
        }
        Err(error) => Some(Failure {
            route: route.clone(),
            hint: hint.to_owned(),
            after: started.elapsed(),
            error,
        }),
    }
}

/// `NetworkUnavailable` as the route controller sets it: (status, reason, message).
pub fn network_condition(routes_created: bool) -> (&'static str, &'static str, &'static str) {
    if routes_created {
        ("False", "RouteCreated", "RouteController created a route")
    } else {
        (
            "True",
            "NoRouteCreated",
            "RouteController failed to create a route",
        )
    }
}

/// Start the controller (idle unless routes are to be configured).
pub async fn start(ctx: Context) {
    let cloud = ctx.cloud.clone().filter(|c| c.routes().is_some());
    let (Some(cloud), Some(cluster), true) = (
        cloud,
        ctx.config.cluster_cidr,
        ctx.config.cloud.configure_routes,
    ) else {
        tracing::info!(
            controller = NAME,
            allocate_node_cidrs = ctx.config.cluster_cidr.is_some(),
            configure_cloud_routes = ctx.config.cloud.configure_routes,
            "will not configure cloud provider routes"
        );
        return ctx.stop.cancelled().await;
    };
    let nodes = ctx.informer::<Node>();
    let queue: WorkQueue<String> = WorkQueue::default();
    controller::feed(&nodes, &queue, &ctx.stop, |c| {
        let relevant = match c {
            Change::Applied {
                old: Some(old),
                new,
            } => pod_cidrs(old) != pod_cidrs(new) || addresses(old) != addresses(new),
            Change::Applied { old: None, .. } | Change::Deleted(_) => true,
        };
        if relevant {
            vec![KEY.to_owned()]
        } else {
            Vec::new()
        }
    });
    if !ctx.wait_synced(vec![synced(&nodes)]).await {
        return;
    }
    controller::resync_every(
        &queue,
        ctx.config.cloud.route_reconciliation_period,
        &ctx.stop,
        || vec![KEY.to_owned()],
    );
    let reconciler = Arc::new(RouteController {
        client: ctx.client.clone(),
        cloud,
        cluster,
        nodes,
        recorder: ctx.recorder("route_controller"),
    });
    controller::run(reconciler, queue, 1, ctx.stop.clone()).await;
}

struct RouteController {
    client: Client,
    cloud: Arc<dyn CloudProvider>,
    cluster: Ipv4Net,
    nodes: Informer<Node>,
    recorder: Recorder,
}

impl RouteController {
    /// Upstream `updateNetworkingCondition`: write only a change.
    async fn set_condition(&self, node: &Node, routes_created: bool) -> Result<()> {
        let (status, reason, message) = network_condition(routes_created);
        let current = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "NetworkUnavailable"));
        if current.is_some_and(|c| c.status == status) {
            return Ok(());
        }
        let name = node.name_any();
        tracing::info!(node = %name, routes_created, "updating the node's NetworkUnavailable condition");
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        // Strategic merge (merge key `type`) leaves the kubelet's conditions alone.
        let patch = json!({ "status": { "conditions": [{
            "type": "NetworkUnavailable", "status": status, "reason": reason, "message": message,
            "lastTransitionTime": now, "lastHeartbeatTime": now,
        }] } });
        let api: Api<Node> = Api::all(self.client.clone());
        api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .done_if_gone(|| format!("updating the NetworkUnavailable condition of node {name}"))
    }
}

impl Reconciler for RouteController {
    type Key = String;
    type Error = Error;

    fn name(&self) -> &'static str {
        NAME
    }

    async fn reconcile(&self, _key: &String) -> Result<Action> {
        let Some(routes) = self.cloud.routes() else {
            return Ok(Action::Done);
        };
        let existing = routes.list_routes().await.map_err(|source| Error::Cloud {
            action: "listing routes".into(),
            source,
        })?;
        let nodes = self.nodes.list();
        let plan = plan(&nodes, &existing, self.cluster);
        let failures = execute(routes, &plan).await;
        for f in &failures {
            let message = format!(
                "Could not create route {} {} for node {} after {:?}: {}",
                f.hint,
                f.route.destination_cidr,
                f.route.target_node,
                f.after,
                ErrorChain(&f.error)
            );
            tracing::warn!("{message}");
            if let Some(node) = nodes.iter().find(|n| n.name_any() == f.route.target_node) {
                self.recorder.publish(
                    &reference(node.as_ref()),
                    EventType::Warning,
                    "FailedToCreateRoute",
                    &message,
                );
            }
        }
        let mut first_error = None;
        for (name, state) in &plan.nodes {
            let Some(node) = nodes.iter().find(|n| n.name_any() == *name) else {
                continue;
            };
            let created =
                !state.cidrs.is_empty() && !failures.iter().any(|f| f.route.target_node == *name);
            if let Err(e) = self.set_condition(node, created).await {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(Action::Done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::fake::FakeCloud;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use kube::api::ObjectMeta;

    fn node(name: &str, cidr: Option<&str>, ip: &str) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: (!name.starts_with("hollow")).then(|| format!("skiff://{name}")),
                pod_cidr: cidr.map(str::to_owned),
                pod_cidrs: cidr.map(|c| vec![c.to_owned()]),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                }]),
                ..Default::default()
            }),
        })
    }

    fn route(name: &str, node: &str, cidr: &str, gateway: &str) -> Route {
        Route {
            name: name.into(),
            target_node: node.into(),
            destination_cidr: cidr.into(),
            gateway: Some(gateway.into()),
            ..Default::default()
        }
    }

    fn cluster() -> Ipv4Net {
        "10.42.0.0/16".parse().unwrap()
    }

    #[test]
    fn missing_routes_are_created_and_stale_or_moved_ones_removed() {
        let nodes = vec![
            node("keep", Some("10.42.0.0/24"), "10.0.0.1"),
            node("new", Some("10.42.1.0/24"), "10.0.0.2"),
            node("moved", Some("10.42.2.0/24"), "10.0.0.30"),
            node("no-cidr", None, "10.0.0.4"),
            node("had-routes", None, "10.0.0.5"),
            node("hollow-0", Some("10.42.7.0/24"), "198.18.0.1"),
        ];
        let routes = vec![
            route("r-keep", "keep", "10.42.0.0/24", "10.0.0.1"),
            route("r-moved", "moved", "10.42.2.0/24", "10.0.0.3"),
            route("r-gone", "deleted-node", "10.42.9.0/24", "10.0.0.9"),
            route("r-had", "had-routes", "10.42.5.0/24", "10.0.0.5"),
            route("r-foreign", "elsewhere", "192.168.0.0/24", "10.0.0.8"),
            route("r-hollow", "hollow-0", "10.42.7.0/24", "198.18.0.1"),
        ];
        let p = plan(&nodes, &routes, cluster());
        let deleted: Vec<&str> = p.delete.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            deleted,
            ["r-moved", "r-gone", "r-had", "r-hollow"],
            "routes outside the cluster CIDR are not ours; a node without provider ID is no instance"
        );
        let created: Vec<(&str, &str, &str)> = p
            .create
            .iter()
            .map(|(hint, r)| {
                (
                    hint.as_str(),
                    r.target_node.as_str(),
                    r.destination_cidr.as_str(),
                )
            })
            .collect();
        assert_eq!(
            created,
            [
                ("uid-new", "new", "10.42.1.0/24"),
                ("uid-moved", "moved", "10.42.2.0/24")
            ]
        );
        let reported: Vec<&str> = p.nodes.keys().map(String::as_str).collect();
        assert_eq!(
            reported,
            ["had-routes", "keep", "moved", "new"],
            "a node without pod CIDR or routes, or without provider ID, is left alone"
        );
        assert!(p.nodes["had-routes"].cidrs.is_empty());
        assert_eq!(p.nodes["new"].missing, ["10.42.1.0/24"]);
    }

    #[test]
    fn responsibility_is_overlap_with_the_cluster_cidr() {
        assert!(responsible_for(cluster(), "10.42.3.0/24"));
        assert!(responsible_for(cluster(), "10.42.255.252/30"));
        assert!(!responsible_for(cluster(), "10.43.0.0/24"));
        assert!(!responsible_for(cluster(), "garbage"));
    }

    #[tokio::test]
    async fn execution_deletes_before_creating_and_reports_failures() {
        let cloud = FakeCloud::default();
        {
            let mut s = cloud.state.lock();
            s.routes
                .push(route("r-moved", "moved", "10.42.2.0/24", "10.0.0.3"));
            s.failing_routes.insert("broken".into());
        }
        let nodes = vec![
            node("moved", Some("10.42.2.0/24"), "10.0.0.30"),
            node("broken", Some("10.42.3.0/24"), "10.0.0.31"),
        ];
        let existing = cloud.list_routes().await.unwrap();
        let p = plan(&nodes, &existing, cluster());
        let failures = execute(&cloud, &p).await;
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].route.target_node, "broken");
        let calls = cloud.calls();
        assert_eq!(calls[0], "delete-route moved 10.42.2.0/24");
        assert!(calls.contains(&"create-route moved 10.42.2.0/24 (uid-moved)".to_owned()));
        let after = cloud.list_routes().await.unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].gateway.as_deref(), Some("10.0.0.30"));
        // The next pass is quiet for the node that is served now.
        let again = plan(&nodes, &after, cluster());
        assert!(again.delete.is_empty());
        assert_eq!(again.create.len(), 1, "only the failing node is retried");
        assert_eq!(network_condition(true).1, "RouteCreated");
        assert_eq!(network_condition(false).0, "True");
    }
}
