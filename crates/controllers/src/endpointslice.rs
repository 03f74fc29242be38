//! The EndpointSlice controller (upstream pkg/controller/endpointslice): for every Service
//! with a selector, `discovery.k8s.io/v1` EndpointSlices of at most 100 endpoints, one set per
//! distinct resolved port set, owned by the Service. Each endpoint carries the pod's address,
//! `ready`/`serving`/`terminating` conditions (terminating pods stay listed while they
//! drain), hostname, node, zone, and — when the Service asks for topology-aware routing
//! (`trafficDistribution: PreferClose`/`PreferSameZone` or the `topology-mode: Auto`
//! annotation) — same-zone hints.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForZone,
};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::owner;
use skiff_runtime::{Informer, ObjectKey, WorkQueue};

use crate::context::{Context, synced};
use crate::endpoints::{
    self, find_port, hostname_for, pod_ip, pod_reference, selected_pods, service_selector,
};
use crate::{Error, Result, pods};

/// The label naming a slice's Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming the slice's manager.
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Most endpoints per slice (upstream `--max-endpoints-per-slice` default).
pub const MAX_ENDPOINTS: usize = 100;
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const TOPOLOGY_MODE: &str = "service.kubernetes.io/topology-mode";

/// Start the controller.
pub async fn start(ctx: Context) {
    let services = ctx.informer::<Service>();
    let pods = ctx.informer::<Pod>();
    let nodes = ctx.informer::<Node>();
    let slices: Informer<EndpointSlice> = ctx.informers.get_filtered(
        watcher::Config::default().labels(&format!("{MANAGED_BY}={CONTROLLER_NAME}")),
    );
    let queue: WorkQueue<ObjectKey> = WorkQueue::default();
    controller::feed(&services, &queue, &ctx.stop, |c| {
        vec![ObjectKey::of(c.object().as_ref())]
    });
    {
        let services = services.clone();
        controller::feed(&pods, &queue, &ctx.stop, move |c| {
            endpoints::services_for_pod(&services, c)
        });
    }
    controller::feed(&slices, &queue, &ctx.stop, |c| {
        let slice = c.object();
        slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME))
            .map(|svc| {
                vec![ObjectKey::new(
                    slice.namespace().unwrap_or_default(),
                    svc.clone(),
                )]
            })
            .unwrap_or_default()
    });
    if !ctx
        .wait_synced(vec![
            synced(&services),
            synced(&pods),
            synced(&slices),
            synced(&nodes),
        ])
        .await
    {
        return;
    }
    let reconciler = Arc::new(SliceController {
        client: ctx.client.clone(),
        services,
        pods,
        nodes,
        slices,
    });
    controller::run(reconciler, queue, ctx.config.workers(5), ctx.stop.clone()).await;
}

struct SliceController {
    client: Client,
    services: Informer<Service>,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    slices: Informer<EndpointSlice>,
}

type PortSet = Vec<(Option<String>, i32, String, Option<String>)>;

/// Endpoints grouped by port set.
pub fn desired_endpoints(
    svc: &Service,
    selected: &[Arc<Pod>],
    zone_of: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<PortSet, Vec<Endpoint>> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let ports = spec.ports.clone().unwrap_or_default();
    let hints = spec
        .traffic_distribution
        .as_deref()
        .is_some_and(|t| t == "PreferClose" || t == "PreferSameZone")
        || svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TOPOLOGY_MODE))
            .is_some_and(|m| m == "Auto");
    let mut groups: BTreeMap<PortSet, Vec<Endpoint>> = BTreeMap::new();
    for pod in selected {
        if pods::is_terminal(pod) {
            continue;
        }
        let Some(ip) = pod_ip(pod) else {
            continue;
        };
        let mut set: PortSet = ports
            .iter()
            .filter_map(|p| {
                find_port(pod, p).map(|n| {
                    (
                        p.name.clone().filter(|n| !n.is_empty()),
                        n,
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        p.app_protocol.clone(),
                    )
                })
            })
            .collect();
        if !ports.is_empty() && set.is_empty() {
            continue;
        }
        set.sort();
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let serving = pods::is_ready(pod);
        let node = pods::node_name(pod).to_owned();
        let zone = if node.is_empty() {
            None
        } else {
            zone_of(&node)
        };
        groups.entry(set).or_default().push(Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(publish_not_ready || (serving && !terminating)),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: hostname_for(pod, svc),
            node_name: Some(node).filter(|n| !n.is_empty()),
            target_ref: Some(pod_reference(pod)),
            hints: if hints {
                zone.clone().map(|z| EndpointHints {
                    for_zones: Some(vec![ForZone { name: z }]),
                    for_nodes: None,
                })
            } else {
                None
            },
            zone,
            deprecated_topology: None,
        });
    }
    for eps in groups.values_mut() {
        eps.sort_by(|a, b| a.addresses.cmp(&b.addresses));
    }
    groups
}

fn slice_ports(set: &PortSet) -> Vec<EndpointPort> {
    set.iter()
        .map(|(name, port, protocol, app_protocol)| EndpointPort {
            name: name.clone().or_else(|| Some(String::new())),
            port: Some(*port),
            protocol: Some(protocol.clone()),
            app_protocol: app_protocol.clone(),
        })
        .collect()
}

impl Reconciler for SliceController {
    type Key = ObjectKey;
    type Error = Error;

    fn name(&self) -> &'static str {
        "endpointslice-controller"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &key.namespace);
        let existing: Vec<Arc<EndpointSlice>> = self
            .slices
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|s| {
                s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME)) == Some(&key.name)
            })
            .collect();
        let svc = self
            .services
            .get(key)
            .filter(|s| service_selector(s).is_some() && s.metadata.deletion_timestamp.is_none());
        let Some(svc) = svc else {
            // No Service (or no selector): our slices go. Owner references would remove them
            // too, but a Service that lost its selector keeps existing.
            for slice in existing {
                self.delete(&api, &slice).await?;
            }
            return Ok(Action::Done);
        };
        let nodes = self.nodes.clone();
        let zone_of = move |node: &str| -> Option<String> {
            nodes
                .get_named("", node)?
                .metadata
                .labels
                .as_ref()?
                .get(ZONE_LABEL)
                .cloned()
        };
        let groups = desired_endpoints(&svc, &selected_pods(&self.pods, &svc), &zone_of);
        let mut labels = svc.metadata.labels.clone().unwrap_or_default();
        labels.insert(SERVICE_NAME.into(), key.name.clone());
        labels.insert(MANAGED_BY.into(), CONTROLLER_NAME.into());
        if endpoints::is_headless(&svc) {
            labels.insert(endpoints::HEADLESS.into(), String::new());
        }
        // Desired slices: chunks of each port set. A Service without ready pods still gets
        // one empty slice for its ports, as upstream publishes.
        let mut desired: Vec<(Vec<EndpointPort>, Vec<Endpoint>)> = Vec::new();
        for (set, eps) in &groups {
            for chunk in eps.chunks(MAX_ENDPOINTS) {
                desired.push((slice_ports(set), chunk.to_vec()));
            }
        }
        if desired.is_empty() {
            // Upstream's placeholder slice: no ports, no endpoints.
            desired.push((Vec::new(), Vec::new()));
        }
        // Reuse slices with the same ports first, then any, to keep churn low.
        let mut available: Vec<Arc<EndpointSlice>> = existing;
        let owner_ref = owner::controller_reference(svc.as_ref());
        for (ports, eps) in desired {
            let pos = available
                .iter()
                .position(|s| s.ports.clone().unwrap_or_default() == ports)
                .or(if available.is_empty() { None } else { Some(0) });
            let want_ports = Some(ports).filter(|p| !p.is_empty());
            match pos.map(|i| available.remove(i)) {
                Some(slice) => {
                    let same = slice.endpoints == eps
                        && slice.ports == want_ports
                        && slice.metadata.labels.as_ref() == Some(&labels)
                        && slice.address_type == "IPv4";
                    if same {
                        continue;
                    }
                    let mut updated = (*slice).clone();
                    updated.endpoints = eps;
                    updated.ports = want_ports;
                    updated.metadata.labels = Some(labels.clone());
                    updated.metadata.owner_references = Some(vec![owner_ref.clone()]);
                    api.replace(&slice.name_any(), &PostParams::default(), &updated)
                        .await
                        .map_err(|e| Error::Api {
                            action: format!(
                                "updating endpoint slice {}/{}",
                                key.namespace,
                                slice.name_any()
                            ),
                            source: e,
                        })?;
                }
                None => {
                    let slice = EndpointSlice {
                        metadata: ObjectMeta {
                            generate_name: Some(pods::generate_name_prefix(&key.name)),
                            namespace: Some(key.namespace.clone()),
                            labels: Some(labels.clone()),
                            owner_references: Some(vec![owner_ref.clone()]),
                            ..Default::default()
                        },
                        address_type: "IPv4".into(),
                        endpoints: eps,
                        ports: want_ports,
                    };
                    match api.create(&PostParams::default(), &slice).await {
                        Ok(_) => {}
                        Err(e) if pods::is_namespace_terminating(&e) => return Ok(Action::Done),
                        Err(e) => {
                            return Err(Error::Api {
                                action: format!("creating an endpoint slice for {key}"),
                                source: e,
                            });
                        }
                    }
                }
            }
        }
        for slice in available {
            self.delete(&api, &slice).await?;
        }
        Ok(Action::Done)
    }
}

impl SliceController {
    async fn delete(&self, api: &Api<EndpointSlice>, slice: &EndpointSlice) -> Result<()> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: slice.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&slice.name_any(), &params).await {
            Ok(_) => Ok(()),
            Err(e) if crate::is_not_found(&e) || crate::is_conflict(&e) => Ok(()),
            Err(e) => Err(Error::Api {
                action: format!("deleting endpoint slice {}", slice.name_any()),
                source: e,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::tests::{pod, service};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn slices_carry_conditions_zones_and_hints() {
        let mut terminating = (*pod("t", Some("10.0.0.9"), true, "http", 8080)).clone();
        terminating.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        let pods = vec![
            pod("a", Some("10.0.0.1"), true, "http", 8080),
            pod("b", Some("10.0.0.2"), false, "http", 8080),
            Arc::new(terminating),
        ];
        let mut svc = service(IntOrString::String("http".into()), false);
        svc.spec.as_mut().unwrap().traffic_distribution = Some("PreferClose".into());
        let zone = |_: &str| Some("zone-a".to_owned());
        let groups = desired_endpoints(&svc, &pods, &zone);
        assert_eq!(groups.len(), 1);
        let eps = groups.values().next().unwrap();
        let cond = |i: usize| eps[i].conditions.clone().unwrap();
        assert_eq!(
            (cond(0).ready, cond(0).serving, cond(0).terminating),
            (Some(true), Some(true), Some(false))
        );
        assert_eq!((cond(1).ready, cond(1).serving), (Some(false), Some(false)));
        assert_eq!(
            (cond(2).ready, cond(2).serving, cond(2).terminating),
            (Some(false), Some(true), Some(true))
        );
        assert_eq!(eps[0].zone.as_deref(), Some("zone-a"));
        assert_eq!(
            eps[0].hints.as_ref().unwrap().for_zones.as_ref().unwrap()[0].name,
            "zone-a"
        );
    }
}
