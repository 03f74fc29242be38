//! The endpoints controller (upstream pkg/controller/endpoint): for every Service with a
//! selector, an Endpoints object of the same name listing the selected pods' IPs —
//! ready pods under `addresses`, the others under `notReadyAddresses` (all under `addresses`
//! with `publishNotReadyAddresses`) — with target ports resolved against each pod (named
//! ports by container port name), grouped into subsets by port set. Services without a
//! selector (the `kubernetes` Service, hand-managed endpoints) are left alone.
//!
//! Pod selection and port resolution are shared with the EndpointSlice controller.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use skiff_api::selector::LabelSelector;
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::{Change, Informer, ObjectKey, WorkQueue};

use crate::context::{Context, synced};
use crate::{Error, Result, pods};

/// When the pods or Service last changed (upstream annotation).
pub const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Set when the addresses were cut to the limit.
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// Most addresses an Endpoints object holds (upstream `maxCapacity`).
pub const MAX_CAPACITY: usize = 1000;
/// The label upstream puts on endpoints of headless Services.
pub const HEADLESS: &str = "service.kubernetes.io/headless";

/// The selector of a Service with one (an empty or missing selector selects nothing here).
pub fn service_selector(svc: &Service) -> Option<LabelSelector> {
    let sel = svc.spec.as_ref()?.selector.as_ref()?;
    (!sel.is_empty()).then(|| LabelSelector::from_map(sel))
}

/// Pods of `namespace` the Service selects.
pub fn selected_pods(pods: &Informer<Pod>, svc: &Service) -> Vec<Arc<Pod>> {
    let Some(selector) = service_selector(svc) else {
        return Vec::new();
    };
    pods.list_namespace(&svc.namespace().unwrap_or_default())
        .into_iter()
        .filter(|p| selector.matches(&pods::labels(&p.metadata)))
        .collect()
}

/// The pod's IPv4 address, if it has one.
pub fn pod_ip(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .chain(status.pod_ip.clone())
        .find(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
}

/// Upstream `FindPort`: a service port's target port on a pod (a named target port is
/// looked up among the containers' ports with the same protocol).
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match port.target_port.as_ref() {
        None => Some(port.port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find_map(|cp| {
                    (cp.name.as_deref() == Some(name)
                        && cp.protocol.as_deref().unwrap_or("TCP") == protocol)
                        .then_some(cp.container_port)
                })
        }
    }
}

/// The pod's hostname for a Service: set when the pod asks for one and names the Service as
/// its subdomain (upstream, for headless-service DNS records).
pub fn hostname_for(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.clone().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == Some(svc.name_any().as_str())).then_some(hostname)
}

/// A reference to a pod.
pub fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.namespace(),
        name: Some(pod.name_any()),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// Whether a Service is headless.
pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// Services of a namespace selecting a pod (with its current or previous labels).
pub fn services_for_pod(services: &Informer<Service>, change: &Change<Pod>) -> Vec<ObjectKey> {
    let pod = change.object();
    let ns = pod.namespace().unwrap_or_default();
    let mut label_sets = vec![pods::labels(&pod.metadata)];
    if let Some(old) = change.previous() {
        label_sets.push(pods::labels(&old.metadata));
    }
    services
        .list_namespace(&ns)
        .iter()
        .filter(|svc| {
            service_selector(svc).is_some_and(|sel| label_sets.iter().any(|l| sel.matches(l)))
        })
        .map(|svc| ObjectKey::of(svc.as_ref()))
        .collect()
}

/// Start the controller.
pub async fn start(ctx: Context) {
    let services = ctx.informer::<Service>();
    let pods = ctx.informer::<Pod>();
    let endpoints = ctx.informer::<Endpoints>();
    let queue: WorkQueue<ObjectKey> = WorkQueue::default();
    controller::feed(&services, &queue, &ctx.stop, |c| {
        vec![ObjectKey::of(c.object().as_ref())]
    });
    {
        let services = services.clone();
        controller::feed(&pods, &queue, &ctx.stop, move |c| {
            services_for_pod(&services, c)
        });
    }
    {
        let services = services.clone();
        controller::feed(&endpoints, &queue, &ctx.stop, move |c| {
            // Our objects changed behind our back: look again (if a Service owns the name).
            let key = ObjectKey::of(c.object().as_ref());
            if services.get(&key).is_some() {
                vec![key]
            } else {
                Vec::new()
            }
        });
    }
    if !ctx
        .wait_synced(vec![synced(&services), synced(&pods), synced(&endpoints)])
        .await
    {
        return;
    }
    let reconciler = Arc::new(EndpointsController {
        client: ctx.client.clone(),
        services,
        pods,
        endpoints,
    });
    controller::run(reconciler, queue, ctx.config.workers(5), ctx.stop.clone()).await;
}

struct EndpointsController {
    client: Client,
    services: Informer<Service>,
    pods: Informer<Pod>,
    endpoints: Informer<Endpoints>,
}

/// Resolved ports: (name, number, protocol, appProtocol).
type PortSet = Vec<(String, i32, String, Option<String>)>;

/// The subsets for a Service (upstream `syncService` + `RepackSubsets`).
pub fn desired_subsets(svc: &Service, selected: &[Arc<Pod>]) -> (Vec<EndpointSubset>, bool) {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let ports = spec.ports.clone().unwrap_or_default();
    // (ready?, address, ports) triples grouped by the port set.
    let mut groups: BTreeMap<PortSet, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    let mut total = 0;
    for pod in selected {
        if pods::is_terminal(pod) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(ip) = pod_ip(pod) else {
            continue;
        };
        let address = EndpointAddress {
            ip,
            hostname: hostname_for(pod, svc),
            node_name: Some(pods::node_name(pod).to_owned()).filter(|n| !n.is_empty()),
            target_ref: Some(pod_reference(pod)),
        };
        let mut resolved = Vec::new();
        for p in &ports {
            if let Some(num) = find_port(pod, p) {
                resolved.push((
                    p.name.clone().unwrap_or_default(),
                    num,
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    p.app_protocol.clone(),
                ));
            }
        }
        if !ports.is_empty() && resolved.is_empty() {
            continue;
        }
        resolved.sort();
        let entry = groups.entry(resolved).or_default();
        if publish_not_ready || pods::is_ready(pod) {
            entry.0.push(address);
        } else {
            entry.1.push(address);
        }
        total += 1;
    }
    let mut subsets = Vec::new();
    let mut over = false;
    let mut budget = MAX_CAPACITY;
    for (ports, (mut ready, mut not_ready)) in groups {
        let sort = |a: &mut Vec<EndpointAddress>| a.sort_by(|x, y| x.ip.cmp(&y.ip));
        sort(&mut ready);
        sort(&mut not_ready);
        if ready.len() + not_ready.len() > budget {
            over = true;
            ready.truncate(budget);
            not_ready.truncate(budget.saturating_sub(ready.len()));
        }
        budget -= ready.len() + not_ready.len();
        subsets.push(EndpointSubset {
            addresses: Some(ready).filter(|a| !a.is_empty()),
            not_ready_addresses: Some(not_ready).filter(|a| !a.is_empty()),
            ports: Some(
                ports
                    .into_iter()
                    .map(|(name, port, protocol, app_protocol)| EndpointPort {
                        name: Some(name).filter(|n| !n.is_empty()),
                        port,
                        protocol: Some(protocol),
                        app_protocol,
                    })
                    .collect(),
            )
            .filter(|p: &Vec<EndpointPort>| !p.is_empty()),
        });
    }
    (subsets, over || total > MAX_CAPACITY)
}

impl Reconciler for EndpointsController {
    type Key = ObjectKey;
    type Error = Error;

    fn name(&self) -> &'static str {
        "endpoints-controller"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &key.namespace);
        let Some(svc) = self.services.get(key) else {
            // The Service is gone: so are its endpoints (if we made them).
            if let Some(ep) = self.endpoints.get(key)
                && ep
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("endpointslice.kubernetes.io/skip-mirror"))
                    .is_none()
            {
                match api.delete(&key.name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if crate::is_not_found(&e) => {}
                    Err(e) => {
                        return Err(Error::Api {
                            action: format!("deleting endpoints {key}"),
                            source: e,
                        });
                    }
                }
            }
            return Ok(Action::Done);
        };
        if service_selector(&svc).is_none() || svc.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let selected = selected_pods(&self.pods, &svc);
        let (subsets, over) = desired_subsets(&svc, &selected);
        let mut labels = svc.metadata.labels.clone().unwrap_or_default();
        if is_headless(&svc) {
            labels.insert(HEADLESS.into(), String::new());
        } else {
            labels.remove(HEADLESS);
        }
        let current = self.endpoints.get(key);
        let current_subsets = current
            .as_ref()
            .and_then(|e| e.subsets.clone())
            .unwrap_or_default();
        let current_labels = current
            .as_ref()
            .and_then(|e| e.metadata.labels.clone())
            .unwrap_or_default();
        let current_over = current
            .as_ref()
            .and_then(|e| e.metadata.annotations.as_ref())
            .is_some_and(|a| a.contains_key(OVER_CAPACITY));
        if current.is_some()
            && current_subsets == subsets
            && current_labels == labels
            && current_over == over
        {
            return Ok(Action::Done);
        }
        let mut annotations = current
            .as_ref()
            .and_then(|e| e.metadata.annotations.clone())
            .unwrap_or_default();
        annotations.insert(
            TRIGGER_TIME.into(),
            Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or(Timestamp::now())
                .to_string(),
        );
        if over {
            annotations.insert(OVER_CAPACITY.into(), "truncated".into());
        } else {
            annotations.remove(OVER_CAPACITY);
        }
        let mut ep = current.as_deref().cloned().unwrap_or_else(|| Endpoints {
            metadata: ObjectMeta {
                name: Some(key.name.clone()),
                namespace: Some(key.namespace.clone()),
                ..Default::default()
            },
            ..Default::default()
        });
        ep.metadata.labels = Some(labels);
        ep.metadata.annotations = Some(annotations);
        ep.subsets = Some(subsets).filter(|s| !s.is_empty());
        let result = if current.is_some() {
            api.replace(&key.name, &PostParams::default(), &ep)
                .await
                .map(|_| ())
        } else {
            api.create(&PostParams::default(), &ep).await.map(|_| ())
        };
        match result {
            Ok(()) => Ok(Action::Done),
            Err(e) if pods::is_namespace_terminating(&e) => Ok(Action::Done),
            Err(e) => Err(Error::Api {
                action: format!("writing endpoints {key}"),
                source: e,
            }),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServiceSpec,
    };

    pub(crate) fn pod(
        name: &str,
        ip: Option<&str>,
        ready: bool,
        port_name: &str,
        port: i32,
    ) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some(port_name.into()),
                        container_port: port,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                node_name: Some("node-1".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: ip.map(str::to_owned),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    pub(crate) fn service(target: IntOrString, publish_not_ready: bool) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_owned(), "web".to_owned())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(target),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                publish_not_ready_addresses: Some(publish_not_ready),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn ready_and_not_ready_pods_split_and_named_ports_resolve_per_pod() {
        let pods = vec![
            pod("a", Some("10.0.0.1"), true, "http", 8080),
            pod("b", Some("10.0.0.2"), false, "http", 8080),
            pod("c", Some("10.0.0.3"), true, "http", 9090),
            pod("no-ip", None, true, "http", 8080),
            pod("no-port", Some("10.0.0.4"), true, "other", 8080),
        ];
        let (subsets, over) =
            desired_subsets(&service(IntOrString::String("http".into()), false), &pods);
        assert!(!over);
        assert_eq!(subsets.len(), 2, "{subsets:?}");
        let s8080 = subsets
            .iter()
            .find(|s| s.ports.as_ref().unwrap()[0].port == 8080)
            .unwrap();
        assert_eq!(s8080.addresses.as_ref().unwrap()[0].ip, "10.0.0.1");
        assert_eq!(
            s8080.not_ready_addresses.as_ref().unwrap()[0].ip,
            "10.0.0.2"
        );
        let (subsets, _) = desired_subsets(&service(IntOrString::Int(8080), true), &pods);
        let all: usize = subsets
            .iter()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum();
        assert_eq!(
            all, 4,
            "publishNotReadyAddresses lists every pod with an IP as ready"
        );
        assert!(subsets.iter().all(|s| s.not_ready_addresses.is_none()));
    }
}
