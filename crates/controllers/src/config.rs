//! The controller manager's settings (upstream kube-controller-manager flags and their
//! defaults). The CLI builds one from flags after validation; the loops only read it.

use std::net::Ipv4Addr;
use std::time::Duration;

/// An IPv4 network (`10.42.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    /// Network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl std::str::FromStr for Ipv4Net {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (expected a.b.c.d/n)"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{prefix:?} is not a prefix length between 0 and 32"))?;
        let mask = mask(prefix);
        if u32::from(addr) & !mask != 0 {
            return Err(format!(
                "{s} has host bits set (did you mean {}/{prefix}?)",
                Ipv4Addr::from(u32::from(addr) & mask)
            ));
        }
        Ok(Ipv4Net { addr, prefix })
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The netmask of a prefix length.
pub fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// Controller manager settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--controllers`: `*`, `name`, `-name`.
    pub controllers: Vec<String>,
    /// Whether to campaign for the Lease before running loops.
    pub leader_elect: bool,
    /// Lease timings.
    pub lease_duration: Duration,
    /// How long the leader retries renewing before stepping down.
    pub renew_deadline: Duration,
    /// How often to try acquiring or renewing.
    pub retry_period: Duration,
    /// `--cluster-cidr` and `--allocate-node-cidrs`: where node pod CIDRs come from.
    pub cluster_cidr: Option<Ipv4Net>,
    /// `--node-cidr-mask-size`.
    pub node_cidr_mask_size: u8,
    /// The cluster CA certificate (PEM) published as `kube-root-ca.crt`.
    pub root_ca_pem: Option<String>,
    /// `--node-monitor-period`: how often node health is checked.
    pub node_monitor_period: Duration,
    /// `--node-monitor-grace-period`: heartbeat age after which a node is unknown.
    pub node_monitor_grace_period: Duration,
    /// `--node-startup-grace-period`: the same for a node that never reported.
    pub node_startup_grace_period: Duration,
    /// `--node-eviction-rate`: nodes per second that get NoExecute taints in a healthy zone.
    pub node_eviction_rate: f64,
    /// `--secondary-node-eviction-rate`: the rate in a partially disrupted large zone.
    pub secondary_node_eviction_rate: f64,
    /// `--large-cluster-size-threshold`.
    pub large_cluster_size_threshold: usize,
    /// `--unhealthy-zone-threshold`.
    pub unhealthy_zone_threshold: f64,
    /// `--terminated-pod-gc-threshold`.
    pub terminated_pod_gc_threshold: usize,
    /// How often the pod garbage collector runs (4 × `node_monitor_period`).
    pub pod_gc_period: Duration,
    /// `--horizontal-pod-autoscaler-sync-period`.
    pub hpa_sync_period: Duration,
    /// `--horizontal-pod-autoscaler-downscale-stabilization`.
    pub hpa_downscale_stabilization: Duration,
    /// `--horizontal-pod-autoscaler-tolerance`.
    pub hpa_tolerance: f64,
    /// `--resource-quota-sync-period`: full recalculation period.
    pub resource_quota_sync_period: Duration,
    /// How often the garbage collector refreshes discovery (new CRDs).
    pub discovery_period: Duration,
    /// Per-loop worker counts are upstream's `--concurrent-*-syncs`; this scales them all
    /// (1 = upstream defaults).
    pub workers_scale: usize,
    /// The cloud-controller loops' settings.
    pub cloud: CloudConfig,
}

/// Settings of the cloud-controller loops (upstream cloud-controller-manager flags).
#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// The provider: `--cloud-provider`, `--cloud-config`, `--cluster-name`.
    pub provider: crate::cloud::ProviderSettings,
    /// `--configure-cloud-routes`: whether the route controller programs routes.
    pub configure_routes: bool,
    /// `--route-reconciliation-period`.
    pub route_reconciliation_period: Duration,
    /// `--node-status-update-frequency`: how often node addresses are refreshed.
    pub node_status_update_frequency: Duration,
    /// `--concurrent-service-syncs`.
    pub service_workers: usize,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            provider: crate::cloud::ProviderSettings {
                name: crate::cloud::local::NAME.into(),
                cluster_name: "kubernetes".into(),
                config: None,
            },
            configure_routes: true,
            route_reconciliation_period: Duration::from_secs(10),
            node_status_update_frequency: Duration::from_secs(300),
            service_workers: 1,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            controllers: vec!["*".into()],
            leader_elect: true,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            cluster_cidr: Some(Ipv4Net {
                addr: Ipv4Addr::new(10, 42, 0, 0),
                prefix: 16,
            }),
            node_cidr_mask_size: 24,
            root_ca_pem: None,
            node_monitor_period: Duration::from_secs(5),
            node_monitor_grace_period: Duration::from_secs(40),
            node_startup_grace_period: Duration::from_secs(60),
            node_eviction_rate: 0.1,
            secondary_node_eviction_rate: 0.01,
            large_cluster_size_threshold: 50,
            unhealthy_zone_threshold: 0.55,
            terminated_pod_gc_threshold: 12500,
            pod_gc_period: Duration::from_secs(20),
            hpa_sync_period: Duration::from_secs(15),
            hpa_downscale_stabilization: Duration::from_secs(300),
            hpa_tolerance: 0.1,
            resource_quota_sync_period: Duration::from_secs(300),
            discovery_period: Duration::from_secs(30),
            workers_scale: 1,
            cloud: CloudConfig::default(),
        }
    }
}

impl Config {
    /// Workers for a loop whose upstream default is `n`.
    pub fn workers(&self, n: usize) -> usize {
        (n * self.workers_scale.max(1)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_reject_host_bits() {
        let n: Ipv4Net = "10.42.0.0/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.42.0.0/16");
        assert!(
            "10.42.0.1/16"
                .parse::<Ipv4Net>()
                .unwrap_err()
                .contains("10.42.0.0/16")
        );
        assert!("10.42.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("nope".parse::<Ipv4Net>().is_err());
        assert_eq!(mask(24), 0xffff_ff00);
        assert_eq!(mask(0), 0);
    }
}
