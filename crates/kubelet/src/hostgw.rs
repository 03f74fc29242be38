//! Pod traffic between nodes, host-gw style (flannel's host-gw backend): the `local` cloud
//! provider's route table (ConfigMap `kube-system/skiff-routes`, written by the route
//! controller) says which node holds which pod CIDR; this module makes the kernel route every
//! other node's pod CIDR via that node's address, and keeps pod traffic inside the cluster
//! un-NATed so the receiving pod sees the sender's pod IP.
//!
//! - **Routes** are tagged with their own routing protocol number ([`ROUTE_PROTOCOL`]); only
//!   routes with that tag are ever replaced or deleted, so routes the machine's owner made are
//!   never touched. A route is programmed only when its next hop is on a directly connected
//!   network (host-gw needs the nodes on one L2 segment); entries of nodes elsewhere (or hollow
//!   nodes' unrouted addresses) are skipped. The table is re-applied on every change and every
//!   [`RESYNC`], which also repairs routes someone removed.
//! - **Masquerade.** The bridge CNI plugin would masquerade everything leaving the node's pod
//!   CIDR, including traffic to other nodes' pods; instead the kubelet keeps a
//!   `SKIFF-POSTROUTING` chain in the nat table (loaded atomically with `iptables-restore`):
//!   traffic from this node's pods to the cluster CIDR (or multicast) keeps its source, the
//!   rest is masqueraded.
//!
//! Which routes and rules to have is computed purely ([`desired_routes`], [`diff`],
//! [`masquerade_rules`]); the kernel is reached through the [`HostNetwork`] trait, implemented
//! with the `ip` and `iptables-restore` commands by [`Commands`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::Api;
use kube::runtime::watcher;
use skiff_api::cloud::{self as vocab, RouteEntry};
use skiff_runtime::{CancellationToken, Informer};

/// The routing protocol number that marks the kernel routes this module owns (unassigned in
/// iproute2's `rt_protos`).
pub const ROUTE_PROTOCOL: &str = "77";
/// The nat chain holding the masquerade rules.
pub const CHAIN: &str = "SKIFF-POSTROUTING";
/// How often the routes are re-applied without a change to the table.
pub const RESYNC: Duration = Duration::from_secs(30);

/// The kubelet's pod network settings.
#[derive(Debug, Clone, Default)]
pub struct NetworkOptions {
    /// The cluster's pod network: traffic from pods to it is not masqueraded. Without it only
    /// this node's pod CIDR is exempt (the bridge plugin's behaviour).
    pub cluster_cidr: Option<String>,
}

/// A kernel route this module manages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelRoute {
    /// The destination CIDR.
    pub destination: String,
    /// The next hop.
    pub gateway: Ipv4Addr,
}

/// A change to the kernel's routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOp {
    /// Add the route, or change its next hop.
    Replace(KernelRoute),
    /// Remove the route.
    Delete(KernelRoute),
}

/// An IPv4 network: address and prefix length.
type Net = (Ipv4Addr, u8);

fn parse_net(s: &str) -> Option<Net> {
    let (addr, prefix) = s.split_once('/')?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    Some((addr.parse().ok()?, prefix))
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn contains((net, prefix): Net, ip: Ipv4Addr) -> bool {
    u32::from(ip) & mask(prefix) == u32::from(net) & mask(prefix)
}

fn overlaps(a: Net, b: Net) -> bool {
    contains(a, b.0) || contains(b, a.0)
}

/// Why an entry of the table gets no kernel route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// Its next hop is on no network this machine is attached to.
    Unreachable(String),
    /// It is malformed.
    Malformed(String),
}

/// The kernel routes this node should have for `table`: every other node's pod CIDR via its
/// gateway, when that gateway is on a network of `addresses` (this machine's addresses with
/// their prefixes) and is not this machine. Also returns what was left out and why.
pub fn desired_routes(
    table: &BTreeMap<String, RouteEntry>,
    node: &str,
    own_pod_cidr: &str,
    addresses: &[Net],
) -> (Vec<KernelRoute>, Vec<Skipped>) {
    let own = parse_net(own_pod_cidr);
    let mut routes = BTreeSet::new();
    let mut skipped = Vec::new();
    for (name, entry) in table {
        if entry.target_node == node {
            continue;
        }
        let (Some(destination), Ok(gateway)) = (
            parse_net(&entry.destination_cidr),
            entry.gateway.parse::<Ipv4Addr>(),
        ) else {
            skipped.push(Skipped::Malformed(name.clone()));
            continue;
        };
        if addresses.iter().any(|(a, _)| *a == gateway)
            || own.is_some_and(|own| overlaps(own, destination))
        {
            continue;
        }
        if !addresses.iter().any(|net| contains(*net, gateway)) {
            skipped.push(Skipped::Unreachable(name.clone()));
            continue;
        }
        let (addr, prefix) = destination;
        routes.insert(KernelRoute {
            destination: format!(
                "{}/{prefix}",
                Ipv4Addr::from(u32::from(addr) & mask(prefix))
            ),
            gateway,
        });
    }
    (routes.into_iter().collect(), skipped)
}

/// The changes that turn `current` (routes with our protocol) into `desired`.
pub fn diff(desired: &[KernelRoute], current: &[KernelRoute]) -> Vec<RouteOp> {
    let mut ops: Vec<RouteOp> = current
        .iter()
        .filter(|c| !desired.iter().any(|d| d.destination == c.destination))
        .cloned()
        .map(RouteOp::Delete)
        .collect();
    ops.extend(
        desired
            .iter()
            .filter(|d| !current.contains(d))
            .cloned()
            .map(RouteOp::Replace),
    );
    ops
}

/// The `SKIFF-POSTROUTING` rules for this node's pods: the words of each rule's
/// `iptables-restore` line after `-A SKIFF-POSTROUTING` (the comment quoted as the script needs).
pub fn masquerade_rules(pod_cidr: &str, cluster_cidr: Option<&str>) -> Vec<Vec<String>> {
    let exempt = cluster_cidr.unwrap_or(pod_cidr);
    let args = |s: &[&str]| s.iter().map(|a| (*a).to_owned()).collect::<Vec<String>>();
    vec![
        args(&[
            "-s",
            pod_cidr,
            "-d",
            exempt,
            "-m",
            "comment",
            "--comment",
            "\"skiff: pod traffic inside the cluster keeps its source\"",
            "-j",
            "RETURN",
        ]),
        args(&["-s", pod_cidr, "-d", "224.0.0.0/4", "-j", "RETURN"]),
        args(&["-s", pod_cidr, "-j", "MASQUERADE"]),
    ]
}

/// The machine's network as far as this module needs it.
pub trait HostNetwork: Send + Sync {
    /// The machine's IPv4 addresses with their prefix lengths (loopback excluded).
    fn addresses(&self) -> std::io::Result<Vec<Net>>;
    /// The routes tagged with [`ROUTE_PROTOCOL`].
    fn routes(&self) -> std::io::Result<Vec<KernelRoute>>;
    /// Add or change a route (tagged).
    fn replace_route(&self, route: &KernelRoute) -> std::io::Result<()>;
    /// Remove a route (tagged).
    fn delete_route(&self, route: &KernelRoute) -> std::io::Result<()>;
    /// Load the masquerade chain with exactly `rules` and make POSTROUTING jump to it.
    fn ensure_masquerade(&self, rules: &[Vec<String>]) -> std::io::Result<()>;
}

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The changes made.
    pub ops: Vec<RouteOp>,
    /// Entries without a kernel route, and why.
    pub skipped: Vec<Skipped>,
    /// Changes that failed, with the error.
    pub failed: Vec<(RouteOp, String)>,
}

/// Make the kernel's tagged routes match `table`.
pub fn apply(
    host: &dyn HostNetwork,
    table: &BTreeMap<String, RouteEntry>,
    node: &str,
    own_pod_cidr: &str,
) -> std::io::Result<Applied> {
    let addresses = host.addresses()?;
    let (desired, skipped) = desired_routes(table, node, own_pod_cidr, &addresses);
    let current = host.routes()?;
    let mut applied = Applied {
        skipped,
        ..Default::default()
    };
    for op in diff(&desired, &current) {
        let result = match &op {
            RouteOp::Replace(r) => host.replace_route(r),
            RouteOp::Delete(r) => host.delete_route(r),
        };
        match result {
            Ok(()) => applied.ops.push(op),
            Err(e) => applied.failed.push((op, e.to_string())),
        }
    }
    Ok(applied)
}

/// The real machine, through `ip` and `iptables-restore` (iproute2 and iptables, which the
/// CNI plugins need anyway).
pub struct Commands;

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> std::io::Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Commands {
    /// Whether `iptables-restore` can be run (else the CNI plugin keeps masquerading).
    pub fn can_masquerade() -> bool {
        run("iptables-restore", &["--version"], None).is_ok()
    }
}

impl HostNetwork for Commands {
    fn addresses(&self) -> std::io::Result<Vec<Net>> {
        let out = run("ip", &["-j", "-4", "addr", "show"], None)?;
        let links: Vec<serde_json::Value> =
            serde_json::from_str(&out).map_err(std::io::Error::other)?;
        Ok(links
            .iter()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["scope"] != "host")
            .filter_map(|a| {
                Some((
                    a["local"].as_str()?.parse().ok()?,
                    u8::try_from(a["prefixlen"].as_u64()?).ok()?,
                ))
            })
            .collect())
    }

    fn routes(&self) -> std::io::Result<Vec<KernelRoute>> {
        let out = run(
            "ip",
            &["-j", "-4", "route", "show", "proto", ROUTE_PROTOCOL],
            None,
        )?;
        let routes: Vec<serde_json::Value> =
            serde_json::from_str(&out).map_err(std::io::Error::other)?;
        Ok(routes
            .iter()
            .filter_map(|r| {
                Some(KernelRoute {
                    destination: r["dst"].as_str()?.to_owned(),
                    gateway: r["gateway"].as_str()?.parse().ok()?,
                })
            })
            .collect())
    }

    fn replace_route(&self, route: &KernelRoute) -> std::io::Result<()> {
        route_command("replace", route)
    }

    fn delete_route(&self, route: &KernelRoute) -> std::io::Result<()> {
        route_command("del", route)
    }

    fn ensure_masquerade(&self, rules: &[Vec<String>]) -> std::io::Result<()> {
        // Declaring the chain in a --noflush restore empties it first: the rules are
        // replaced in one transaction, with no moment without masquerading.
        let mut script = format!("*nat\n:{CHAIN} - [0:0]\n");
        for rule in rules {
            script.push_str(&format!("-A {CHAIN} {}\n", rule.join(" ")));
        }
        script.push_str("COMMIT\n");
        run("iptables-restore", &["-w", "--noflush"], Some(&script))?;
        let jump = ["-w", "-t", "nat", "-C", "POSTROUTING", "-j", CHAIN];
        if run("iptables", &jump, None).is_err() {
            run(
                "iptables",
                &["-w", "-t", "nat", "-A", "POSTROUTING", "-j", CHAIN],
                None,
            )?;
        }
        Ok(())
    }
}

/// Keep this node's routes and masquerade rules until `shutdown`.
pub async fn run_routes(
    client: Client,
    node: String,
    pod_cidr: String,
    options: NetworkOptions,
    host: Arc<dyn HostNetwork>,
    shutdown: CancellationToken,
) {
    let rules = masquerade_rules(&pod_cidr, options.cluster_cidr.as_deref());
    {
        let host = host.clone();
        match tokio::task::spawn_blocking(move || host.ensure_masquerade(&rules)).await {
            Ok(Ok(())) => {
                tracing::info!(pod_cidr = %pod_cidr, cluster_cidr = ?options.cluster_cidr, "pod masquerade rules in place")
            }
            Ok(Err(e)) => tracing::error!(error = %e, "setting up pod masquerade rules failed"),
            Err(e) => tracing::error!(error = %e, "setting up pod masquerade rules panicked"),
        }
    }
    let api: Api<ConfigMap> = Api::namespaced(client, vocab::SYSTEM_NAMESPACE);
    let table: Informer<ConfigMap> = Informer::spawn(
        api,
        watcher::Config::default().fields(&format!("metadata.name={}", vocab::ROUTES_CONFIGMAP)),
        shutdown.clone(),
    );
    let mut changes = table.subscribe();
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = table.wait_synced() => {}
    }
    let mut reported: BTreeSet<String> = BTreeSet::new();
    loop {
        let entries = table
            .get_named(vocab::SYSTEM_NAMESPACE, vocab::ROUTES_CONFIGMAP)
            .and_then(|cm| cm.data.clone())
            .map(|data| vocab::parse_route_table(&data).0)
            .unwrap_or_default();
        let (host_for_pass, node_for_pass, cidr_for_pass) =
            (host.clone(), node.clone(), pod_cidr.clone());
        let pass = tokio::task::spawn_blocking(move || {
            apply(
                host_for_pass.as_ref(),
                &entries,
                &node_for_pass,
                &cidr_for_pass,
            )
        })
        .await;
        match pass {
            Ok(Ok(applied)) => {
                for op in &applied.ops {
                    tracing::info!(?op, "pod route changed");
                }
                for (op, e) in &applied.failed {
                    tracing::warn!(?op, error = %e, "changing a pod route failed");
                }
                for s in &applied.skipped {
                    let name = match s {
                        Skipped::Unreachable(n) | Skipped::Malformed(n) => n,
                    };
                    // Said once: hollow nodes and remote networks stay skipped on every pass.
                    if reported.insert(name.clone()) {
                        tracing::info!(skipped = ?s, "no kernel route for a route table entry");
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "reading the machine's routes failed"),
            Err(e) => tracing::error!(error = %e, "applying pod routes panicked"),
        }
        // Wait for a change of the table or the resync period.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESYNC) => {}
            n = changes.recv() => if n.is_none() {
                return;
            },
        }
    }
}

/// `ip route <verb> DEST via GATEWAY proto <ours>`.
fn route_command(verb: &str, route: &KernelRoute) -> std::io::Result<()> {
    let gateway = route.gateway.to_string();
    let args = [
        "route",
        verb,
        &route.destination,
        "via",
        &gateway,
        "proto",
        ROUTE_PROTOCOL,
    ];
    run("ip", &args, None).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    fn entry(node: &str, cidr: &str, gw: &str) -> RouteEntry {
        RouteEntry {
            target_node: node.into(),
            destination_cidr: cidr.into(),
            gateway: gw.into(),
        }
    }

    fn table() -> BTreeMap<String, RouteEntry> {
        BTreeMap::from([
            ("me".into(), entry("me", "10.42.0.0/24", "172.31.255.1")),
            ("peer".into(), entry("peer", "10.42.1.0/24", "172.31.255.2")),
            (
                "hollow".into(),
                entry("hollow-0", "10.42.2.0/24", "198.18.0.1"),
            ),
            (
                "clash".into(),
                entry("odd", "10.42.0.128/25", "172.31.255.3"),
            ),
            ("bad".into(), entry("x", "not-a-cidr", "172.31.255.4")),
        ])
    }

    const ADDRESSES: [Net; 1] = [(Ipv4Addr::new(172, 31, 255, 1), 24)];

    fn route(dst: &str, gw: [u8; 4]) -> KernelRoute {
        KernelRoute {
            destination: dst.into(),
            gateway: gw.into(),
        }
    }

    #[test]
    fn only_other_nodes_on_a_connected_network_get_routes() {
        let (routes, skipped) = desired_routes(&table(), "me", "10.42.0.0/24", &ADDRESSES);
        assert_eq!(routes, [route("10.42.1.0/24", [172, 31, 255, 2])]);
        assert_eq!(
            skipped,
            [
                Skipped::Malformed("bad".into()),
                Skipped::Unreachable("hollow".into())
            ],
            "an entry overlapping our own pod CIDR is silently ours"
        );
    }

    #[test]
    fn diffs_replace_changed_next_hops_and_delete_what_the_table_dropped() {
        let desired = [
            route("10.42.1.0/24", [172, 31, 255, 2]),
            route("10.42.3.0/24", [172, 31, 255, 9]),
        ];
        let current = [
            route("10.42.1.0/24", [172, 31, 255, 2]),
            route("10.42.3.0/24", [172, 31, 255, 3]),
            route("10.42.4.0/24", [172, 31, 255, 4]),
        ];
        assert_eq!(
            diff(&desired, &current),
            [
                RouteOp::Delete(route("10.42.4.0/24", [172, 31, 255, 4])),
                RouteOp::Replace(route("10.42.3.0/24", [172, 31, 255, 9])),
            ]
        );
        assert!(diff(&desired, &desired).is_empty());
    }

    #[test]
    fn cluster_traffic_keeps_its_source_and_the_rest_is_masqueraded() {
        let rules = masquerade_rules("10.42.0.0/24", Some("10.42.0.0/16"));
        let text: Vec<String> = rules.iter().map(|r| r.join(" ")).collect();
        assert_eq!(
            text,
            [
                "-s 10.42.0.0/24 -d 10.42.0.0/16 -m comment --comment \"skiff: pod traffic inside the cluster keeps its source\" -j RETURN",
                "-s 10.42.0.0/24 -d 224.0.0.0/4 -j RETURN",
                "-s 10.42.0.0/24 -j MASQUERADE",
            ]
        );
        assert_eq!(masquerade_rules("10.42.0.0/24", None)[0][3], "10.42.0.0/24");
    }

    /// A machine in memory that records every change.
    #[derive(Default)]
    struct Recording {
        routes: Mutex<Vec<KernelRoute>>,
        log: Mutex<Vec<String>>,
        refuse: Option<KernelRoute>,
    }

    impl HostNetwork for Recording {
        fn addresses(&self) -> std::io::Result<Vec<Net>> {
            Ok(ADDRESSES.to_vec())
        }
        fn routes(&self) -> std::io::Result<Vec<KernelRoute>> {
            Ok(self.routes.lock().clone())
        }
        fn replace_route(&self, r: &KernelRoute) -> std::io::Result<()> {
            if self.refuse.as_ref() == Some(r) {
                return Err(std::io::Error::other("Nexthop has invalid gateway"));
            }
            self.log
                .lock()
                .push(format!("replace {} via {}", r.destination, r.gateway));
            let mut routes = self.routes.lock();
            routes.retain(|c| c.destination != r.destination);
            routes.push(r.clone());
            Ok(())
        }
        fn delete_route(&self, r: &KernelRoute) -> std::io::Result<()> {
            self.log
                .lock()
                .push(format!("delete {} via {}", r.destination, r.gateway));
            self.routes.lock().retain(|c| c != r);
            Ok(())
        }
        fn ensure_masquerade(&self, rules: &[Vec<String>]) -> std::io::Result<()> {
            self.log
                .lock()
                .push(format!("masquerade {} rules", rules.len()));
            Ok(())
        }
    }

    #[test]
    fn applying_twice_changes_nothing_the_second_time_and_failures_are_reported() {
        let host = Recording::default();
        host.routes
            .lock()
            .push(route("10.42.9.0/24", [172, 31, 255, 9]));
        let first = apply(&host, &table(), "me", "10.42.0.0/24").unwrap();
        assert!(first.failed.is_empty());
        assert_eq!(
            *host.log.lock(),
            [
                "delete 10.42.9.0/24 via 172.31.255.9",
                "replace 10.42.1.0/24 via 172.31.255.2"
            ]
        );
        let second = apply(&host, &table(), "me", "10.42.0.0/24").unwrap();
        assert!(second.ops.is_empty(), "{second:?}");

        let refusing = Recording {
            refuse: Some(route("10.42.1.0/24", [172, 31, 255, 2])),
            ..Default::default()
        };
        let failed = apply(&refusing, &table(), "me", "10.42.0.0/24").unwrap();
        assert_eq!(failed.failed.len(), 1);
        assert!(failed.failed[0].1.contains("invalid gateway"));
    }
}
