//! The service controller (upstream `cloud-provider/controllers/service`): a load balancer for
//! every Service of `type: LoadBalancer` without a `spec.loadBalancerClass` (a class means
//! another implementation handles it).
//!
//! A sync follows upstream's order and events: `EnsuringLoadBalancer`, the
//! `service.kubernetes.io/load-balancer-cleanup` finalizer (added *before* the load balancer
//! exists, so the Service cannot disappear without its cleanup), the provider call,
//! `EnsuredLoadBalancer`, then `status.loadBalancer`. A Service that is deleted or no longer
//! wants a load balancer gets `DeletingLoadBalancer`, the provider's deletion,
//! `DeletedLoadBalancer` and its finalizer and status removed. Failures are
//! `SyncLoadBalancerFailed` warnings and are retried with backoff (5 s .. 5 min).
//!
//! Load balancers send traffic to the nodes upstream's `StableLoadBalancerNodeSet` picks (not
//! being deleted, not labelled `node.kubernetes.io/exclude-from-external-load-balancers`, with
//! a provider ID, not tainted `ToBeDeletedByClusterAutoscaler`); when that set (or an eligible
//! node's addresses) changes every load balancer is updated (`UpdatedLoadBalancer`), and —
//! beyond upstream, for providers like `local` whose addresses follow the nodes — its status is
//! refreshed from the provider.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{LoadBalancerStatus, Node, NodeAddress, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use skiff_api::cloud::LABEL_EXCLUDE_FROM_LOAD_BALANCERS;
use skiff_runtime::controller::{self, Action, ErrorChain, Reconciler};
use skiff_runtime::events::{EventType, Recorder, reference};
use skiff_runtime::queue::Backoff;
use skiff_runtime::{Change, Informer, ObjectKey, WorkQueue};

use super::{CloudProvider, LoadBalancer};
use crate::context::{Context, synced};
use crate::{During, Error, Result};

/// The loop's name.
pub const NAME: &str = "service-lb-controller";
/// The finalizer that holds a Service until its load balancer is gone.
pub const FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";
/// The Cluster Autoscaler's taint for nodes it is about to remove.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";
/// How often load balancer hosts are compared with the nodes even without node events
/// (upstream `nodeSyncPeriod`).
const NODE_SYNC_PERIOD: Duration = Duration::from_secs(100);

/// Whether the Service wants a load balancer from the cloud provider.
pub fn wants_load_balancer(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none()
    })
}

fn has_finalizer(svc: &Service) -> bool {
    svc.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

/// Upstream `needsCleanup`: it holds the finalizer and is being deleted or no longer a
/// LoadBalancer.
pub fn needs_cleanup(svc: &Service) -> bool {
    has_finalizer(svc)
        && (svc.metadata.deletion_timestamp.is_some()
            || svc.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("LoadBalancer"))
}

/// Upstream `needsUpdate`: `None` when the change does not concern the load balancer, else
/// the events upstream records about it (reason, message).
pub fn update_reasons(old: &Service, new: &Service) -> Option<Vec<(&'static str, String)>> {
    let (wo, wn) = (wants_load_balancer(old), wants_load_balancer(new));
    if !wo && !wn {
        return None;
    }
    let (os, ns) = (
        old.spec.clone().unwrap_or_default(),
        new.spec.clone().unwrap_or_default(),
    );
    let t = |s: &Option<String>| s.clone().unwrap_or_default();
    if wo != wn {
        return Some(vec![(
            "Type",
            format!("{} -> {}", t(&os.type_), t(&ns.type_)),
        )]);
    }
    if os.load_balancer_source_ranges != ns.load_balancer_source_ranges {
        return Some(vec![(
            "LoadBalancerSourceRanges",
            format!(
                "{:?} -> {:?}",
                os.load_balancer_source_ranges.unwrap_or_default(),
                ns.load_balancer_source_ranges.unwrap_or_default()
            ),
        )]);
    }
    let ports = |s: &k8s_openapi::api::core::v1::ServiceSpec| -> Vec<serde_json::Value> {
        s.ports
            .iter()
            .flatten()
            .map(|p| {
                json!([
                    p.name,
                    p.protocol,
                    p.port,
                    p.node_port,
                    p.target_port,
                    p.app_protocol
                ])
            })
            .collect()
    };
    if ports(&os) != ports(&ns)
        || os.session_affinity != ns.session_affinity
        || os.session_affinity_config != ns.session_affinity_config
    {
        return Some(Vec::new());
    }
    if os.load_balancer_ip != ns.load_balancer_ip {
        return Some(vec![(
            "LoadbalancerIP",
            format!("{} -> {}", t(&os.load_balancer_ip), t(&ns.load_balancer_ip)),
        )]);
    }
    let (oe, ne) = (
        os.external_ips.unwrap_or_default(),
        ns.external_ips.unwrap_or_default(),
    );
    if oe.len() != ne.len() {
        return Some(vec![(
            "ExternalIP",
            format!("Count: {} -> {}", oe.len(), ne.len()),
        )]);
    }
    if let Some(added) = oe.iter().zip(&ne).find(|(a, b)| a != b).map(|(_, b)| b) {
        return Some(vec![("ExternalIP", format!("Added: {added}"))]);
    }
    if old.metadata.annotations != new.metadata.annotations {
        return Some(Vec::new());
    }
    if old.metadata.uid != new.metadata.uid {
        return Some(vec![(
            "UID",
            format!(
                "{} -> {}",
                old.metadata.uid.clone().unwrap_or_default(),
                new.metadata.uid.clone().unwrap_or_default()
            ),
        )]);
    }
    if os.external_traffic_policy != ns.external_traffic_policy {
        return Some(vec![(
            "ExternalTrafficPolicy",
            format!(
                "{} -> {}",
                t(&os.external_traffic_policy),
                t(&ns.external_traffic_policy)
            ),
        )]);
    }
    if os.health_check_node_port != ns.health_check_node_port {
        return Some(vec![(
            "HealthCheckNodePort",
            format!(
                "{} -> {}",
                os.health_check_node_port.unwrap_or(0),
                ns.health_check_node_port.unwrap_or(0)
            ),
        )]);
    }
    let (of, nf) = (
        os.ip_families.unwrap_or_default().len(),
        ns.ip_families.unwrap_or_default().len(),
    );
    if of != nf {
        return Some(vec![("IPFamilies", format!("Count: {of} -> {nf}"))]);
    }
    None
}

/// Whether load balancers send traffic to the node (upstream's stable node set predicates).
pub fn node_eligible(node: &Node) -> bool {
    node.metadata.deletion_timestamp.is_none()
        && !node
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(LABEL_EXCLUDE_FROM_LOAD_BALANCERS))
        && node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .is_some_and(|p| !p.is_empty())
        && !super::has_taint(node, TO_BE_DELETED_TAINT)
}

/// The Service writes a sync makes, behind a trait so the sync is tested with a recording
/// double.
#[async_trait]
pub trait ServiceWriter: Send + Sync {
    /// Add the cleanup finalizer (no-op when present).
    async fn add_finalizer(&self, svc: &Service) -> Result<()>;
    /// Remove the cleanup finalizer (no-op when absent).
    async fn remove_finalizer(&self, svc: &Service) -> Result<()>;
    /// Write `status.loadBalancer`.
    async fn write_status(&self, svc: &Service, status: &LoadBalancerStatus) -> Result<()>;
    /// Record an event on the Service.
    fn event(&self, svc: &Service, kind: EventType, reason: &str, message: &str);
}

/// What a sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// The load balancer was created or updated.
    Ensure,
    /// The load balancer was deleted.
    Delete,
}

fn status_of(svc: &Service) -> LoadBalancerStatus {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.clone())
        .unwrap_or_default()
}

/// Ingress lists compare as sets of (ip, hostname), as upstream's `LoadBalancerStatusEqual`
/// compares them in order — a reordering is not worth a write either way.
fn same_status(a: &LoadBalancerStatus, b: &LoadBalancerStatus) -> bool {
    let key = |s: &LoadBalancerStatus| -> Vec<(Option<String>, Option<String>)> {
        s.ingress
            .iter()
            .flatten()
            .map(|i| (i.ip.clone(), i.hostname.clone()))
            .collect()
    };
    key(a) == key(b)
}

/// Upstream `syncLoadBalancerIfNeeded` plus its failure event: make the provider's load
/// balancer match the Service.
pub async fn sync_load_balancer(
    writer: &dyn ServiceWriter,
    balancer: &dyn LoadBalancer,
    svc: &Service,
    nodes: &[Arc<Node>],
) -> Result<Operation> {
    let result = sync_inner(writer, balancer, svc, nodes).await;
    if let Err((_, message)) = &result {
        writer.event(
            svc,
            EventType::Warning,
            "SyncLoadBalancerFailed",
            &format!("Error syncing load balancer: {message}"),
        );
    }
    result.map_err(|(e, _)| e)
}

type Failed = (Error, String);

async fn sync_inner(
    writer: &dyn ServiceWriter,
    balancer: &dyn LoadBalancer,
    svc: &Service,
    nodes: &[Arc<Node>],
) -> std::result::Result<Operation, Failed> {
    let key = format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any());
    let cloud = |what: &str, source: super::CloudError| -> Failed {
        let message = format!("failed to {what}: {}", ErrorChain(&source));
        (
            Error::Cloud {
                action: format!("{what} of service {key}"),
                source,
            },
            message,
        )
    };
    let api = |what: &str, e: Error| -> Failed {
        let message = format!("failed to {what}: {}", ErrorChain(&e));
        (e, message)
    };
    let previous = status_of(svc);
    let (op, next) = if !wants_load_balancer(svc) || needs_cleanup(svc) {
        let exists = balancer
            .get_load_balancer(svc)
            .await
            .map_err(|e| cloud("check if load balancer exists before cleanup", e))?;
        if exists.is_some() {
            tracing::info!(service = %key, "deleting load balancer");
            writer.event(
                svc,
                EventType::Normal,
                "DeletingLoadBalancer",
                "Deleting load balancer",
            );
            balancer
                .ensure_load_balancer_deleted(svc)
                .await
                .map_err(|e| cloud("delete load balancer", e))?;
        }
        writer
            .remove_finalizer(svc)
            .await
            .map_err(|e| api("remove load balancer cleanup finalizer", e))?;
        writer.event(
            svc,
            EventType::Normal,
            "DeletedLoadBalancer",
            "Deleted load balancer",
        );
        (Operation::Delete, LoadBalancerStatus::default())
    } else {
        tracing::info!(service = %key, "ensuring load balancer");
        writer.event(
            svc,
            EventType::Normal,
            "EnsuringLoadBalancer",
            "Ensuring load balancer",
        );
        writer
            .add_finalizer(svc)
            .await
            .map_err(|e| api("add load balancer cleanup finalizer", e))?;
        if nodes.is_empty() {
            writer.event(
                svc,
                EventType::Warning,
                "UnAvailableLoadBalancer",
                "There are no available nodes for LoadBalancer",
            );
        }
        let status = balancer
            .ensure_load_balancer(svc, nodes)
            .await
            .map_err(|e| cloud("ensure load balancer", e))?;
        writer.event(
            svc,
            EventType::Normal,
            "EnsuredLoadBalancer",
            "Ensured load balancer",
        );
        (Operation::Ensure, status)
    };
    if !same_status(&previous, &next) {
        writer
            .write_status(svc, &next)
            .await
            .map_err(|e| api("update load balancer status", e))?;
    }
    Ok(op)
}

/// Start the controller (idle without a provider with load balancers).
pub async fn start(ctx: Context) {
    let Some(cloud) = ctx.cloud.clone().filter(|c| c.load_balancer().is_some()) else {
        tracing::info!(
            controller = NAME,
            "the cloud provider does not support load balancers"
        );
        return ctx.stop.cancelled().await;
    };
    let services = ctx.informer::<Service>();
    let nodes = ctx.informer::<Node>();
    let recorder = ctx.recorder("service-controller");
    // Upstream's retry delays for services: 5 s doubling to 5 min.
    let queue: WorkQueue<ObjectKey> = WorkQueue::new(Backoff {
        base: Duration::from_secs(5),
        max: Duration::from_secs(300),
    });
    {
        let recorder = recorder.clone();
        controller::feed(&services, &queue, &ctx.stop, move |c| match c {
            Change::Applied { old: None, new } => {
                if wants_load_balancer(new) || needs_cleanup(new) {
                    vec![ObjectKey::of(new.as_ref())]
                } else {
                    Vec::new()
                }
            }
            Change::Applied {
                old: Some(old),
                new,
            } => {
                let reasons = update_reasons(old, new);
                for (reason, message) in reasons.iter().flatten() {
                    recorder.publish(&reference(new.as_ref()), EventType::Normal, reason, message);
                }
                if reasons.is_some() || needs_cleanup(new) {
                    vec![ObjectKey::of(new.as_ref())]
                } else {
                    Vec::new()
                }
            }
            Change::Deleted(old) => vec![ObjectKey::of(old.as_ref())],
        });
    }
    let node_queue: WorkQueue<String> = WorkQueue::default();
    controller::feed(&nodes, &node_queue, &ctx.stop, |c| {
        let changed = match c {
            Change::Applied {
                old: Some(old),
                new,
            } => {
                node_eligible(old) != node_eligible(new)
                    || (node_eligible(new) && node_addresses(old) != node_addresses(new))
            }
            Change::Applied { old: None, .. } | Change::Deleted(_) => true,
        };
        if changed {
            vec![String::new()]
        } else {
            Vec::new()
        }
    });
    if !ctx
        .wait_synced(vec![synced(&services), synced(&nodes)])
        .await
    {
        return;
    }
    let shared = Arc::new(Shared {
        client: ctx.client.clone(),
        cloud,
        services,
        nodes,
        recorder,
        cache: Mutex::new(HashMap::new()),
        queue: queue.clone(),
    });
    let node_sync = Arc::new(NodeSync {
        last: Mutex::new(Some(hosts(&shared.eligible_nodes()))),
        shared: shared.clone(),
    });
    controller::resync_every(&node_queue, NODE_SYNC_PERIOD, &ctx.stop, || {
        vec![String::new()]
    });
    let nodes_run = controller::run(node_sync, node_queue, 1, ctx.stop.clone());
    let services_run = controller::run(
        Arc::new(ServiceSync(shared)),
        queue,
        ctx.config.cloud.service_workers.max(1),
        ctx.stop.clone(),
    );
    futures::future::join(nodes_run, services_run).await;
}

fn node_addresses(node: &Node) -> Vec<NodeAddress> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default()
}

/// What load balancers are pointed at: eligible nodes and their addresses.
type Hosts = BTreeMap<String, Vec<(String, String)>>;

fn hosts(nodes: &[Arc<Node>]) -> Hosts {
    nodes
        .iter()
        .map(|n| {
            (
                n.name_any(),
                node_addresses(n)
                    .into_iter()
                    .map(|a| (a.type_, a.address))
                    .collect(),
            )
        })
        .collect()
}

struct Shared {
    client: Client,
    cloud: Arc<dyn CloudProvider>,
    services: Informer<Service>,
    nodes: Informer<Node>,
    recorder: Recorder,
    /// The last state of every Service that wanted a load balancer, so a Service deleted
    /// without the finalizer still gets its load balancer removed (upstream's cache).
    cache: Mutex<HashMap<ObjectKey, Arc<Service>>>,
    queue: WorkQueue<ObjectKey>,
}

impl Shared {
    fn balancer(&self) -> Option<&dyn LoadBalancer> {
        self.cloud.load_balancer()
    }

    fn eligible_nodes(&self) -> Vec<Arc<Node>> {
        let mut nodes: Vec<Arc<Node>> = self
            .nodes
            .list()
            .into_iter()
            .filter(|n| node_eligible(n))
            .collect();
        nodes.sort_by_key(|n| n.name_any());
        nodes
    }

    fn namespaced(&self, svc: &Service) -> Api<Service> {
        Api::namespaced(self.client.clone(), &svc.namespace().unwrap_or_default())
    }
}

#[async_trait]
impl ServiceWriter for Shared {
    async fn add_finalizer(&self, svc: &Service) -> Result<()> {
        if has_finalizer(svc) {
            return Ok(());
        }
        let mut finalizers = svc.metadata.finalizers.clone().unwrap_or_default();
        finalizers.push(FINALIZER.to_owned());
        let patch = json!({ "metadata": {
            "resourceVersion": svc.metadata.resource_version, "finalizers": finalizers,
        } });
        self.namespaced(svc)
            .patch(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map(|_| ())
            .map_err(|source| Error::Api {
                action: format!("adding the finalizer of service {}", svc.name_any()),
                source,
            })
    }

    async fn remove_finalizer(&self, svc: &Service) -> Result<()> {
        if !has_finalizer(svc) {
            return Ok(());
        }
        let finalizers: Vec<String> = svc
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        let patch = json!({ "metadata": {
            "resourceVersion": svc.metadata.resource_version, "finalizers": finalizers,
        } });
        self.namespaced(svc)
            .patch(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .done_if_gone(|| format!("removing the finalizer of service {}", svc.name_any()))
    }

    async fn write_status(&self, svc: &Service, status: &LoadBalancerStatus) -> Result<()> {
        // A merge patch: an absent list has to be removed explicitly.
        let ingress = match &status.ingress {
            Some(list) if !list.is_empty() => json!(list),
            _ => serde_json::Value::Null,
        };
        let patch = json!({ "status": { "loadBalancer": { "ingress": ingress } } });
        // The service may be gone right after its finalizer was removed.
        self.namespaced(svc)
            .patch_status(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .done_if_gone(|| {
                format!(
                    "updating the load balancer status of service {}",
                    svc.name_any()
                )
            })
    }

    fn event(&self, svc: &Service, kind: EventType, reason: &str, message: &str) {
        self.recorder
            .publish(&reference(svc), kind, reason, message);
    }
}

struct ServiceSync(Arc<Shared>);

impl Reconciler for ServiceSync {
    type Key = ObjectKey;
    type Error = Error;

    fn name(&self) -> &'static str {
        NAME
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let s = &self.0;
        let Some(balancer) = s.balancer() else {
            return Ok(Action::Done);
        };
        let Some(svc) = s.services.get(key) else {
            // Deleted without the finalizer: clean up from the last state seen.
            let cached = s.cache.lock().remove(key);
            if let Some(old) = cached
                && wants_load_balancer(&old)
            {
                s.event(
                    &old,
                    EventType::Normal,
                    "DeletingLoadBalancer",
                    "Deleting load balancer",
                );
                if let Err(e) = balancer.ensure_load_balancer_deleted(&old).await {
                    s.event(
                        &old,
                        EventType::Warning,
                        "DeleteLoadBalancerFailed",
                        &format!("Error deleting load balancer: {}", ErrorChain(&e)),
                    );
                    s.cache.lock().insert(key.clone(), old);
                    return Err(Error::Cloud {
                        action: format!("deleting the load balancer of service {key}"),
                        source: e,
                    });
                }
                s.event(
                    &old,
                    EventType::Normal,
                    "DeletedLoadBalancer",
                    "Deleted load balancer",
                );
            }
            return Ok(Action::Done);
        };
        // Deleted and recreated under the same name: the old load balancer goes first.
        let replaced = s
            .cache
            .lock()
            .get(key)
            .filter(|old| old.metadata.uid != svc.metadata.uid)
            .cloned();
        if let Some(old) = replaced
            && wants_load_balancer(&old)
        {
            balancer
                .ensure_load_balancer_deleted(&old)
                .await
                .map_err(|source| Error::Cloud {
                    action: format!("deleting the replaced load balancer of service {key}"),
                    source,
                })?;
        }
        s.cache.lock().insert(key.clone(), svc.clone());
        let nodes = s.eligible_nodes();
        let op = sync_load_balancer(s.as_ref(), balancer, &svc, &nodes).await?;
        if op == Operation::Delete {
            s.cache.lock().remove(key);
        }
        Ok(Action::Done)
    }
}

/// Keeps load balancers pointed at the eligible nodes.
struct NodeSync {
    shared: Arc<Shared>,
    /// The hosts of the last successful pass.
    last: Mutex<Option<Hosts>>,
}

impl Reconciler for NodeSync {
    type Key = String;
    type Error = Error;

    fn name(&self) -> &'static str {
        "service-lb-controller-nodes"
    }

    async fn reconcile(&self, _key: &String) -> Result<Action> {
        let s = &self.shared;
        let Some(balancer) = s.balancer() else {
            return Ok(Action::Done);
        };
        let nodes = s.eligible_nodes();
        let current = hosts(&nodes);
        if self.last.lock().as_ref() == Some(&current) {
            return Ok(Action::Done);
        }
        let names: Vec<String> = nodes.iter().map(|n| n.name_any()).collect();
        let services: Vec<Arc<Service>> = s.cache.lock().values().cloned().collect();
        for cached in services {
            let key = ObjectKey::of(cached.as_ref());
            // The freshest copy, for its status.
            let Some(svc) = s.services.get(&key) else {
                continue;
            };
            if !wants_load_balancer(&svc) || svc.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match balancer.update_load_balancer(&svc, &nodes).await {
                Ok(()) => {
                    if nodes.is_empty() {
                        s.event(
                            &svc,
                            EventType::Warning,
                            "UnAvailableLoadBalancer",
                            "There are no available nodes for LoadBalancer",
                        );
                    } else {
                        s.event(
                            &svc,
                            EventType::Normal,
                            "UpdatedLoadBalancer",
                            "Updated load balancer with new hosts",
                        );
                    }
                    match balancer.get_load_balancer(&svc).await {
                        Ok(Some(status)) if !same_status(&status_of(&svc), &status) => {
                            if let Err(e) = s.write_status(&svc, &status).await {
                                tracing::warn!(service = %key, error = %ErrorChain(&e), "refreshing load balancer status failed");
                                s.queue.add(key);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(service = %key, error = %ErrorChain(&e), "reading load balancer status failed");
                            s.queue.add(key);
                        }
                    }
                }
                Err(e) => {
                    // Only a real error if the load balancer still exists.
                    if let Ok(None) = balancer.get_load_balancer(&svc).await {
                        continue;
                    }
                    s.event(
                        &svc,
                        EventType::Warning,
                        "UpdateLoadBalancerFailed",
                        &format!(
                            "Error updating load balancer with new hosts {names:?}: {}",
                            ErrorChain(&e)
                        ),
                    );
                    s.queue.add(key);
                }
            }
        }
        // Services that failed are queued for a full sync, which uses the nodes of its time.
        *self.last.lock() = Some(current);
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::fake::FakeCloud;
    use k8s_openapi::api::core::v1::{NodeSpec, ServiceSpec, ServiceStatus};
    use kube::api::ObjectMeta;

    /// Records writes and events in order.
    #[derive(Default)]
    struct Recording {
        log: Mutex<Vec<String>>,
        fail_finalizer: bool,
    }

    #[async_trait]
    impl ServiceWriter for Recording {
        async fn add_finalizer(&self, svc: &Service) -> Result<()> {
            if self.fail_finalizer {
                return Err(Error::Invalid {
                    object: svc.name_any(),
                    message: "refused".into(),
                });
            }
            if !has_finalizer(svc) {
                self.log.lock().push("add-finalizer".into());
            }
            Ok(())
        }
        async fn remove_finalizer(&self, svc: &Service) -> Result<()> {
            if has_finalizer(svc) {
                self.log.lock().push("remove-finalizer".into());
            }
            Ok(())
        }
        async fn write_status(&self, _svc: &Service, status: &LoadBalancerStatus) -> Result<()> {
            let ips: Vec<String> = status
                .ingress
                .iter()
                .flatten()
                .filter_map(|i| i.ip.clone())
                .collect();
            self.log.lock().push(format!("status [{}]", ips.join(",")));
            Ok(())
        }
        fn event(&self, _svc: &Service, kind: EventType, reason: &str, message: &str) {
            self.log
                .lock()
                .push(format!("{kind:?} {reason}: {message}"));
        }
    }

    fn svc(type_: &str, finalizer: bool, deleting: bool) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                finalizers: finalizer.then(|| vec![FINALIZER.to_owned()]),
                deletion_timestamp: deleting.then(|| {
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now())
                }),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                ..Default::default()
            }),
            status: Some(ServiceStatus::default()),
        }
    }

    fn node(name: &str, provider: bool) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: provider.then(|| format!("skiff://{name}")),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn ensuring_adds_the_finalizer_first_then_writes_the_status() {
        let (w, cloud) = (Recording::default(), FakeCloud::default());
        let op = sync_load_balancer(
            &w,
            &cloud,
            &svc("LoadBalancer", false, false),
            &[node("a", true)],
        )
        .await
        .unwrap();
        assert_eq!(op, Operation::Ensure);
        assert_eq!(
            *w.log.lock(),
            [
                "Normal EnsuringLoadBalancer: Ensuring load balancer",
                "add-finalizer",
                "Normal EnsuredLoadBalancer: Ensured load balancer",
                "status [192.0.2.1]",
            ]
        );
        assert_eq!(cloud.calls(), ["ensure default/web [a]"]);
    }

    #[tokio::test]
    async fn cleanup_deletes_an_existing_balancer_then_releases_the_service() {
        let (w, cloud) = (Recording::default(), FakeCloud::default());
        let mut s = svc("ClusterIP", true, false);
        sync_load_balancer(&w, &cloud, &svc("LoadBalancer", true, false), &[])
            .await
            .unwrap();
        w.log.lock().clear();
        s.status = Some(ServiceStatus {
            load_balancer: Some(cloud.state.lock().balancers["default/web"].clone()),
            ..Default::default()
        });
        let op = sync_load_balancer(&w, &cloud, &s, &[]).await.unwrap();
        assert_eq!(op, Operation::Delete);
        assert_eq!(
            *w.log.lock(),
            [
                "Normal DeletingLoadBalancer: Deleting load balancer",
                "remove-finalizer",
                "Normal DeletedLoadBalancer: Deleted load balancer",
                "status []",
            ]
        );
        assert!(cloud.state.lock().balancers.is_empty());
    }

    #[tokio::test]
    async fn failures_are_reported_as_sync_events_and_no_nodes_warned_about() {
        let cloud = FakeCloud::default();
        cloud.state.lock().failing_balancers = true;
        let w = Recording::default();
        let err = sync_load_balancer(&w, &cloud, &svc("LoadBalancer", true, false), &[])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Cloud { .. }));
        assert_eq!(
            *w.log.lock(),
            [
                "Normal EnsuringLoadBalancer: Ensuring load balancer",
                "Warning UnAvailableLoadBalancer: There are no available nodes for LoadBalancer",
                "Warning SyncLoadBalancerFailed: Error syncing load balancer: failed to ensure load balancer: cloud provider call ensure load balancer failed: injected failure",
            ]
        );
        let refusing = Recording {
            fail_finalizer: true,
            ..Default::default()
        };
        cloud.state.lock().failing_balancers = false;
        sync_load_balancer(&refusing, &cloud, &svc("LoadBalancer", false, false), &[])
            .await
            .unwrap_err();
        assert_eq!(
            cloud.calls(),
            ["ensure default/web []"],
            "only the first sync reached the provider: no load balancer without the finalizer"
        );
    }

    #[test]
    fn which_services_and_changes_concern_load_balancers() {
        let lb = svc("LoadBalancer", false, false);
        assert!(wants_load_balancer(&lb));
        let mut classed = lb.clone();
        classed.spec.as_mut().unwrap().load_balancer_class = Some("example.com/lb".into());
        assert!(!wants_load_balancer(&classed));
        assert!(needs_cleanup(&svc("ClusterIP", true, false)));
        assert!(needs_cleanup(&svc("LoadBalancer", true, true)));
        assert!(!needs_cleanup(&svc("LoadBalancer", true, false)));
        assert!(!needs_cleanup(&svc("ClusterIP", false, false)));

        let cluster_ip = svc("ClusterIP", false, false);
        assert_eq!(update_reasons(&cluster_ip, &cluster_ip), None);
        assert_eq!(
            update_reasons(&cluster_ip, &lb),
            Some(vec![("Type", "ClusterIP -> LoadBalancer".to_owned())])
        );
        assert_eq!(
            update_reasons(&lb, &lb),
            None,
            "status-only changes are ignored"
        );
        let mut with_ip = lb.clone();
        with_ip.spec.as_mut().unwrap().load_balancer_ip = Some("192.0.2.9".into());
        assert_eq!(
            update_reasons(&lb, &with_ip),
            Some(vec![("LoadbalancerIP", " -> 192.0.2.9".to_owned())])
        );
    }

    #[test]
    fn load_balancers_use_the_stable_node_set() {
        assert!(node_eligible(&node("a", true)));
        assert!(!node_eligible(&node("b", false)), "no provider ID");
        let mut excluded = (*node("c", true)).clone();
        excluded.metadata.labels =
            Some([(LABEL_EXCLUDE_FROM_LOAD_BALANCERS.to_owned(), String::new())].into());
        assert!(!node_eligible(&excluded));
    }
}
