//! The built-in `local` provider, for machines on one network (what k3s embeds): its "cloud
//! API" is the cluster itself.
//!
//! - **Instances.** Provider IDs are `skiff://<node>`, the instance type is `skiff`; addresses,
//!   zone and region are what the node's kubelet published about its machine in the
//!   `skiff.io/*` annotations (`skiff.io/internal-ip`, `external-ip`, `hostname`, `zone`,
//!   `region`). A machine that stopped its kubelet cleanly (`skiff.io/shutdown`) is shut down.
//!   A local machine can never be proven gone, so every instance exists: deleting the Node of a
//!   decommissioned machine is left to the administrator, as in k3s.
//! - **Routes.** The route table is the ConfigMap `kube-system/skiff-routes` (one
//!   [`RouteEntry`] per route, next hop the node's InternalIP); every kubelet programs the
//!   other nodes' entries as kernel routes (host-gw), so the table plays the VPC router.
//! - **Load balancers.** Like k3s' ServiceLB, a load balancer publishes the addresses of the
//!   nodes it is given (ExternalIP, else InternalIP) — or, with an address pool configured
//!   (`--cloud-config` `{"loadBalancer": {"addressPool": ["192.0.2.10-192.0.2.20",
//!   "198.51.100.0/28"]}}`), one address of the pool per Service (`spec.loadBalancerIP` is
//!   honoured when it is in the pool). The inventory is the ConfigMap
//!   `kube-system/skiff-load-balancers` (Service, addresses, ports and nodes of each load
//!   balancer). Forwarding the traffic is the job of the node proxy, which is yet to come.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{
    ConfigMap, LoadBalancerIngress, LoadBalancerStatus, Node, NodeAddress, Service,
};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use skiff_api::cloud::{self as vocab, RouteEntry};

use super::{
    CloudError, CloudProvider, CloudResult, InstanceMetadata, Instances, LoadBalancer, Route,
    Routes, Zone, Zones,
};

/// The provider's name (`--cloud-provider local`).
pub const NAME: &str = "local";
/// Prefix of the provider IDs it hands out.
pub const PROVIDER_ID_PREFIX: &str = "skiff://";
/// The instance type of every node.
pub const INSTANCE_TYPE: &str = "skiff";
/// The ConfigMap holding the load balancer inventory.
pub const LOAD_BALANCERS_CONFIGMAP: &str = "skiff-load-balancers";

/// How often a compare-and-swap write of a table is retried after losing a race.
const CAS_ATTEMPTS: usize = 10;

/// An inclusive range of IPv4 addresses.
pub type AddressRange = (Ipv4Addr, Ipv4Addr);

/// The `local` provider's `--cloud-config`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalConfig {
    /// Addresses handed to load balancers; empty: load balancers publish node addresses.
    pub address_pool: Vec<AddressRange>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    load_balancer: Option<LoadBalancerSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LoadBalancerSection {
    #[serde(default)]
    address_pool: Vec<String>,
}

impl LocalConfig {
    /// Read the configuration (`None`: defaults).
    pub fn parse(value: Option<&serde_json::Value>) -> CloudResult<LocalConfig> {
        let bad = |message: String| CloudError::Config {
            provider: NAME.into(),
            message,
        };
        let Some(value) = value else {
            return Ok(LocalConfig::default());
        };
        let file: ConfigFile =
            serde_json::from_value(value.clone()).map_err(|e| bad(e.to_string()))?;
        let mut address_pool = Vec::new();
        for item in file
            .load_balancer
            .map(|l| l.address_pool)
            .unwrap_or_default()
        {
            address_pool.push(parse_range(&item).ok_or_else(|| {
                bad(format!(
                    "address pool entry {item:?} is neither a.b.c.d-e.f.g.h nor a CIDR"
                ))
            })?);
        }
        Ok(LocalConfig { address_pool })
    }

    fn pool_contains(&self, ip: Ipv4Addr) -> bool {
        self.address_pool
            .iter()
            .any(|(first, last)| (*first..=*last).contains(&ip))
    }

    /// The first pool address not in `used`.
    fn first_free(&self, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        self.address_pool.iter().find_map(|(first, last)| {
            (u32::from(*first)..=u32::from(*last))
                .map(Ipv4Addr::from)
                .find(|ip| !used.contains(ip))
        })
    }
}

/// `a.b.c.d-e.f.g.h`, `a.b.c.d/n` or a single address.
fn parse_range(s: &str) -> Option<AddressRange> {
    let s = s.trim();
    if let Some((a, b)) = s.split_once('-') {
        let (a, b): (Ipv4Addr, Ipv4Addr) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        return (a <= b).then_some((a, b));
    }
    if let Some((addr, prefix)) = s.split_once('/') {
        let addr: Ipv4Addr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        let mask = crate::config::mask(prefix);
        let first = u32::from(addr) & mask;
        return Some((Ipv4Addr::from(first), Ipv4Addr::from(first | !mask)));
    }
    let ip: Ipv4Addr = s.parse().ok()?;
    Some((ip, ip))
}

/// One load balancer of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerEntry {
    /// `namespace/name` of the Service.
    pub service: String,
    /// The published addresses.
    pub ingress: Vec<String>,
    /// `protocol/port->nodePort` of each Service port (what a proxy would forward).
    pub ports: Vec<String>,
    /// The nodes traffic goes to.
    pub nodes: Vec<String>,
}

/// The `local` provider.
pub struct LocalProvider {
    client: Client,
    config: LocalConfig,
    /// Writes of this process to the ConfigMap tables go one at a time (the CAS still guards
    /// against other writers).
    writes: tokio::sync::Mutex<()>,
}

impl LocalProvider {
    /// A provider keeping its tables through `client`.
    pub fn new(client: Client, config: LocalConfig) -> LocalProvider {
        LocalProvider {
            client,
            config,
            writes: tokio::sync::Mutex::new(()),
        }
    }

    fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), vocab::SYSTEM_NAMESPACE)
    }

    async fn read_table(&self, name: &str) -> CloudResult<BTreeMap<String, String>> {
        let cm = self
            .configmaps()
            .get_opt(name)
            .await
            .map_err(|source| CloudError::Api {
                action: format!("reading ConfigMap {}/{name}", vocab::SYSTEM_NAMESPACE),
                source,
            })?;
        Ok(cm.and_then(|c| c.data).unwrap_or_default())
    }

    /// Change the table `name` with `edit`, compare-and-swap, retrying lost races.
    async fn update_table<F>(&self, name: &str, mut edit: F) -> CloudResult<()>
    where
        F: FnMut(&mut BTreeMap<String, String>) -> CloudResult<()> + Send,
    {
        let _one_at_a_time = self.writes.lock().await;
        let api = self.configmaps();
        let wrap = |source| CloudError::Api {
            action: format!("writing ConfigMap {}/{name}", vocab::SYSTEM_NAMESPACE),
            source,
        };
        for _ in 0..CAS_ATTEMPTS {
            let current = api.get_opt(name).await.map_err(wrap)?;
            let before = current
                .as_ref()
                .and_then(|c| c.data.clone())
                .unwrap_or_default();
            let mut data = before.clone();
            edit(&mut data)?;
            if data == before {
                return Ok(());
            }
            let result = match current {
                Some(mut cm) => {
                    cm.data = Some(data);
                    api.replace(name, &PostParams::default(), &cm)
                        .await
                        .map(|_| ())
                }
                None => {
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(name.to_owned()),
                            namespace: Some(vocab::SYSTEM_NAMESPACE.to_owned()),
                            ..Default::default()
                        },
                        data: Some(data),
                        ..Default::default()
                    };
                    api.create(&PostParams::default(), &cm).await.map(|_| ())
                }
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if crate::is_conflict(&e) => continue,
                Err(e) => return Err(wrap(e)),
            }
        }
        Err(CloudError::Contended {
            what: format!("ConfigMap {}/{name}", vocab::SYSTEM_NAMESPACE),
        })
    }

    fn lb_entries(data: &BTreeMap<String, String>) -> BTreeMap<String, LoadBalancerEntry> {
        data.iter()
            .filter_map(|(k, v)| Some((k.clone(), serde_json::from_str(v).ok()?)))
            .collect()
    }

    /// The addresses a load balancer publishes, given the inventory as it is.
    fn ingress_for(
        &self,
        name: &str,
        service: &Service,
        nodes: &[Arc<Node>],
        entries: &BTreeMap<String, LoadBalancerEntry>,
    ) -> CloudResult<Vec<String>> {
        if self.config.address_pool.is_empty() {
            return Ok(node_ingress(nodes));
        }
        let wanted: Option<Ipv4Addr> = service
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_ip.as_deref())
            .filter(|ip| !ip.is_empty())
            .map(|ip| {
                ip.parse().map_err(|_| CloudError::AddressUnavailable {
                    address: ip.to_owned(),
                    why: "is not an IPv4 address".into(),
                })
            })
            .transpose()?;
        let mut used: BTreeSet<Ipv4Addr> = BTreeSet::new();
        let mut users: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
        for (key, entry) in entries {
            if key == name {
                continue;
            }
            for ip in entry.ingress.iter().filter_map(|i| i.parse().ok()) {
                used.insert(ip);
                users.insert(ip, entry.service.clone());
            }
        }
        let current: Option<Ipv4Addr> = entries
            .get(name)
            .and_then(|e| e.ingress.first())
            .and_then(|ip| ip.parse().ok())
            .filter(|ip| self.config.pool_contains(*ip) && !used.contains(ip));
        let chosen = match (wanted, current) {
            (Some(w), _) if !self.config.pool_contains(w) => {
                return Err(CloudError::AddressUnavailable {
                    address: w.to_string(),
                    why: "is not in the address pool".into(),
                });
            }
            (Some(w), _) => {
                if let Some(user) = users.get(&w) {
                    return Err(CloudError::AddressUnavailable {
                        address: w.to_string(),
                        why: format!("is used by {user}"),
                    });
                }
                w
            }
            (None, Some(c)) => c,
            (None, None) => self
                .config
                .first_free(&used)
                .ok_or(CloudError::PoolExhausted)?,
        };
        Ok(vec![chosen.to_string()])
    }

    async fn record(
        &self,
        service: &Service,
        nodes: &[Arc<Node>],
        only_if_present: bool,
    ) -> CloudResult<Vec<String>> {
        let name = self.load_balancer_name(service);
        let mut published = Vec::new();
        self.update_table(LOAD_BALANCERS_CONFIGMAP, |data| {
            let entries = Self::lb_entries(data);
            if only_if_present && !entries.contains_key(&name) {
                return Ok(());
            }
            let ingress = self.ingress_for(&name, service, nodes, &entries)?;
            let entry = LoadBalancerEntry {
                service: format!(
                    "{}/{}",
                    service.namespace().unwrap_or_default(),
                    service.name_any()
                ),
                ingress: ingress.clone(),
                ports: ports(service),
                nodes: nodes.iter().map(|n| n.name_any()).collect(),
            };
            data.insert(
                name.clone(),
                serde_json::to_string(&entry).expect("an inventory entry serializes"),
            );
            published = ingress;
            Ok(())
        })
        .await?;
        Ok(published)
    }
}

/// The addresses of `nodes` a node-address load balancer publishes: each node's ExternalIP,
/// else its InternalIP, in node-name order, without repeats.
pub fn node_ingress(nodes: &[Arc<Node>]) -> Vec<String> {
    let mut sorted: Vec<&Arc<Node>> = nodes.iter().collect();
    sorted.sort_by_key(|n| n.name_any());
    let mut out: Vec<String> = Vec::new();
    for node in sorted {
        let ip = super::node_address(node, "ExternalIP")
            .or_else(|| super::node_address(node, "InternalIP"));
        if let Some(ip) = ip
            && !out.iter().any(|o| o == ip)
        {
            out.push(ip.to_owned());
        }
    }
    out
}

fn ports(service: &Service) -> Vec<String> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{}/{}->{}",
                p.protocol.as_deref().unwrap_or("TCP"),
                p.port,
                p.node_port.unwrap_or(0)
            )
        })
        .collect()
}

fn status(ingress: &[String]) -> LoadBalancerStatus {
    LoadBalancerStatus {
        ingress: (!ingress.is_empty()).then(|| {
            ingress
                .iter()
                .map(|ip| LoadBalancerIngress {
                    ip: Some(ip.clone()),
                    ..Default::default()
                })
                .collect()
        }),
    }
}

fn annotation<'n>(node: &'n Node, key: &str) -> Option<&'n str> {
    node.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// What the kubelet published about its machine, as instance metadata.
pub fn metadata_of(node: &Node) -> CloudResult<InstanceMetadata> {
    let name = node.name_any();
    let internal =
        annotation(node, vocab::ANNOTATION_INTERNAL_IP).ok_or(CloudError::MetadataMissing {
            node: name.clone(),
            what: "internal address (skiff.io/internal-ip)",
        })?;
    let mut addresses = Vec::new();
    let mut push = |type_: &str, list: &str| {
        for a in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            addresses.push(NodeAddress {
                type_: type_.into(),
                address: a.into(),
            });
        }
    };
    push("InternalIP", internal);
    if let Some(external) = annotation(node, vocab::ANNOTATION_EXTERNAL_IP) {
        push("ExternalIP", external);
    }
    if let Some(hostname) = annotation(node, vocab::ANNOTATION_HOSTNAME) {
        push("Hostname", hostname);
    }
    Ok(InstanceMetadata {
        provider_id: format!("{PROVIDER_ID_PREFIX}{name}"),
        instance_type: INSTANCE_TYPE.into(),
        addresses,
        zone: annotation(node, vocab::ANNOTATION_ZONE)
            .unwrap_or_default()
            .to_owned(),
        region: annotation(node, vocab::ANNOTATION_REGION)
            .unwrap_or_default()
            .to_owned(),
        additional_labels: BTreeMap::new(),
    })
}

#[async_trait]
impl Instances for LocalProvider {
    async fn instance_exists(&self, _node: &Node) -> CloudResult<bool> {
        // Nothing can tell a machine that is gone from one that is unreachable.
        Ok(true)
    }

    async fn instance_shutdown(&self, node: &Node) -> CloudResult<bool> {
        Ok(annotation(node, vocab::ANNOTATION_SHUTDOWN).is_some())
    }

    async fn instance_metadata(&self, node: &Node) -> CloudResult<InstanceMetadata> {
        metadata_of(node)
    }
}

#[async_trait]
impl Zones for LocalProvider {
    async fn zone_of(&self, node: &Node) -> CloudResult<Zone> {
        Ok(Zone {
            failure_domain: annotation(node, vocab::ANNOTATION_ZONE)
                .unwrap_or_default()
                .to_owned(),
            region: annotation(node, vocab::ANNOTATION_REGION)
                .unwrap_or_default()
                .to_owned(),
        })
    }
}

#[async_trait]
impl Routes for LocalProvider {
    async fn list_routes(&self) -> CloudResult<Vec<Route>> {
        let data = self.read_table(vocab::ROUTES_CONFIGMAP).await?;
        let (entries, bad) = vocab::parse_route_table(&data);
        for name in bad {
            tracing::warn!(route = %name, "ignoring a malformed entry of the route table");
        }
        Ok(entries
            .into_iter()
            .map(|(name, e)| Route {
                name,
                target_node: e.target_node,
                target_addresses: Vec::new(),
                destination_cidr: e.destination_cidr,
                gateway: Some(e.gateway),
                blackhole: false,
            })
            .collect())
    }

    async fn create_route(&self, _name_hint: &str, route: &Route) -> CloudResult<()> {
        let gateway = ["InternalIP", "ExternalIP"]
            .iter()
            .find_map(|t| route.target_addresses.iter().find(|a| a.type_ == *t))
            .map(|a| a.address.clone())
            .ok_or_else(|| CloudError::NoRouteAddress {
                node: route.target_node.clone(),
                cidr: route.destination_cidr.clone(),
            })?;
        let entry = RouteEntry {
            target_node: route.target_node.clone(),
            destination_cidr: route.destination_cidr.clone(),
            gateway,
        };
        let name = vocab::route_name(&route.target_node, &route.destination_cidr);
        self.update_table(vocab::ROUTES_CONFIGMAP, |data| {
            data.insert(name.clone(), entry.encode());
            Ok(())
        })
        .await
    }

    async fn delete_route(&self, route: &Route) -> CloudResult<()> {
        self.update_table(vocab::ROUTES_CONFIGMAP, |data| {
            data.remove(&route.name);
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl LoadBalancer for LocalProvider {
    async fn get_load_balancer(
        &self,
        service: &Service,
    ) -> CloudResult<Option<LoadBalancerStatus>> {
        let data = self.read_table(LOAD_BALANCERS_CONFIGMAP).await?;
        let name = self.load_balancer_name(service);
        Ok(Self::lb_entries(&data)
            .get(&name)
            .map(|e| status(&e.ingress)))
    }

    async fn ensure_load_balancer(
        &self,
        service: &Service,
        nodes: &[Arc<Node>],
    ) -> CloudResult<LoadBalancerStatus> {
        let ingress = self.record(service, nodes, false).await?;
        Ok(status(&ingress))
    }

    async fn update_load_balancer(
        &self,
        service: &Service,
        nodes: &[Arc<Node>],
    ) -> CloudResult<()> {
        self.record(service, nodes, true).await.map(|_| ())
    }

    async fn ensure_load_balancer_deleted(&self, service: &Service) -> CloudResult<()> {
        let name = self.load_balancer_name(service);
        self.update_table(LOAD_BALANCERS_CONFIGMAP, |data| {
            data.remove(&name);
            Ok(())
        })
        .await
    }
}

impl CloudProvider for LocalProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn instances(&self) -> Option<&dyn Instances> {
        Some(self)
    }

    fn zones(&self) -> Option<&dyn Zones> {
        Some(self)
    }

    fn routes(&self) -> Option<&dyn Routes> {
        Some(self)
    }

    fn load_balancer(&self) -> Option<&dyn LoadBalancer> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeStatus, ServiceSpec};
    use serde_json::json;

    fn node(name: &str, annotations: &[(&str, &str)], addresses: &[(&str, &str)]) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).into(), (*v).into()))
                        .collect(),
                ),
                ..Default::default()
            },
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(t, a)| NodeAddress {
                            type_: (*t).into(),
                            address: (*a).into(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn metadata_comes_from_what_the_kubelet_published() {
        let n = node(
            "worker-1",
            &[
                (vocab::ANNOTATION_INTERNAL_IP, "10.0.0.2"),
                (vocab::ANNOTATION_EXTERNAL_IP, "203.0.113.7"),
                (vocab::ANNOTATION_HOSTNAME, "worker-1"),
                (vocab::ANNOTATION_ZONE, "rack-a"),
                (vocab::ANNOTATION_REGION, "room-1"),
            ],
            &[],
        );
        let m = metadata_of(&n).unwrap();
        assert_eq!(m.provider_id, "skiff://worker-1");
        assert_eq!(m.instance_type, "skiff");
        assert_eq!((m.zone.as_str(), m.region.as_str()), ("rack-a", "room-1"));
        let addresses: Vec<(&str, &str)> = m
            .addresses
            .iter()
            .map(|a| (a.type_.as_str(), a.address.as_str()))
            .collect();
        assert_eq!(
            addresses,
            [
                ("InternalIP", "10.0.0.2"),
                ("ExternalIP", "203.0.113.7"),
                ("Hostname", "worker-1")
            ]
        );
        let bare = node("hollow-0", &[], &[("InternalIP", "198.18.0.1")]);
        assert!(matches!(
            metadata_of(&bare),
            Err(CloudError::MetadataMissing { .. })
        ));
    }

    #[test]
    fn node_load_balancers_publish_external_else_internal_addresses_once() {
        let nodes = vec![
            node(
                "b",
                &[],
                &[("InternalIP", "10.0.0.2"), ("ExternalIP", "203.0.113.2")],
            ),
            node("a", &[], &[("InternalIP", "10.0.0.1")]),
            node("c", &[], &[("InternalIP", "10.0.0.1")]),
            node("d", &[], &[]),
        ];
        assert_eq!(node_ingress(&nodes), ["10.0.0.1", "203.0.113.2"]);
    }

    #[test]
    fn pool_configuration_parses_ranges_cidrs_and_single_addresses() {
        let c = LocalConfig::parse(Some(&json!({ "loadBalancer": { "addressPool": [
            "192.0.2.10-192.0.2.11", "198.51.100.0/30", "203.0.113.9"
        ] } })))
        .unwrap();
        assert_eq!(
            c.address_pool,
            [
                (Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 11)),
                (
                    Ipv4Addr::new(198, 51, 100, 0),
                    Ipv4Addr::new(198, 51, 100, 3)
                ),
                (Ipv4Addr::new(203, 0, 113, 9), Ipv4Addr::new(203, 0, 113, 9)),
            ]
        );
        let used = BTreeSet::from([Ipv4Addr::new(192, 0, 2, 10)]);
        assert_eq!(c.first_free(&used), Some(Ipv4Addr::new(192, 0, 2, 11)));
        assert!(
            LocalConfig::parse(Some(&json!({ "loadBalancer": { "addressPool": ["x"] } }))).is_err()
        );
        assert!(
            LocalConfig::parse(Some(&json!({ "loadbalancer": {} }))).is_err(),
            "unknown fields are typos"
        );
        assert_eq!(LocalConfig::parse(None).unwrap(), LocalConfig::default());
    }

    fn service(name: &str, lb_ip: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                load_balancer_ip: lb_ip.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn entry(service: &str, ip: &str) -> LoadBalancerEntry {
        LoadBalancerEntry {
            service: service.into(),
            ingress: vec![ip.into()],
            ports: vec![],
            nodes: vec![],
        }
    }

    #[tokio::test]
    async fn pool_addresses_are_handed_out_once_kept_and_requested_ones_checked() {
        // The client is never called by ingress_for.
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
        let provider = LocalProvider::new(
            client,
            LocalConfig {
                address_pool: vec![(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2))],
            },
        );
        let mut entries =
            BTreeMap::from([("other".to_owned(), entry("default/other", "192.0.2.1"))]);
        let web = service("web", None);
        assert_eq!(
            provider.ingress_for("web", &web, &[], &entries).unwrap(),
            ["192.0.2.2"]
        );
        entries.insert("web".into(), entry("default/web", "192.0.2.2"));
        assert_eq!(
            provider.ingress_for("web", &web, &[], &entries).unwrap(),
            ["192.0.2.2"],
            "an address stays with its load balancer"
        );
        assert!(matches!(
            provider.ingress_for("third", &service("third", None), &[], &entries),
            Err(CloudError::PoolExhausted)
        ));
        let taken = provider
            .ingress_for("x", &service("x", Some("192.0.2.1")), &[], &entries)
            .unwrap_err();
        assert_eq!(
            taken.to_string(),
            "load balancer address 192.0.2.1 is used by default/other"
        );
        let outside = provider
            .ingress_for("x", &service("x", Some("10.9.9.9")), &[], &entries)
            .unwrap_err();
        assert!(outside.to_string().contains("is not in the address pool"));
    }
}
