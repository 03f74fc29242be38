//! `skiff controller-manager`: the control loops as their own process, reaching the API server
//! through a kubeconfig like any client. `skiff server` runs the same thing in-process
//! (unless `--disable-controller-manager`), passing `--kube-controller-manager-arg` flags
//! through to the same options.
//!
//! Flags follow upstream kube-controller-manager's names and defaults; durations use Go's
//! syntax (`40s`, `1m30s`, `500ms`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Args, Parser};
use skiff_api::duration::parse_go;
use skiff_controllers::Config;
use skiff_controllers::config::Ipv4Net;
use skiff_runtime::CancellationToken;

use crate::Error;

/// Flags of `skiff controller-manager`.
#[derive(Debug, Args)]
pub struct ControllerManagerArgs {
    /// Kubeconfig with the API server address and credentials.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Controller options.
    #[command(flatten)]
    pub options: ControllerOptions,
}

/// The control loops' options (upstream kube-controller-manager flags).
#[derive(Debug, Clone, Args)]
pub struct ControllerOptions {
    /// Controllers to run: `*` for those on by default, `name` to add one, `-name` to leave
    /// one out (e.g. `*,-garbage-collector-controller`).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// Campaign for the kube-system/kube-controller-manager Lease and run loops only while
    /// holding it.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub leader_elect: bool,
    /// How long a lease is valid without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_go)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader retries renewing before it steps down.
    #[arg(long, default_value = "10s", value_parser = parse_go)]
    pub leader_elect_renew_deadline: Duration,
    /// How often candidates try to acquire or renew.
    #[arg(long, default_value = "2s", value_parser = parse_go)]
    pub leader_elect_retry_period: Duration,
    /// CIDR that node pod CIDRs are allocated from.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Allocate spec.podCIDR for nodes from --cluster-cidr.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub allocate_node_cidrs: bool,
    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// The cluster CA certificate published as the kube-root-ca.crt ConfigMap
    /// [default: the kubeconfig's certificate authority].
    #[arg(long)]
    pub root_ca_file: Option<PathBuf>,
    /// How often node health is checked.
    #[arg(long, default_value = "5s", value_parser = parse_go)]
    pub node_monitor_period: Duration,
    /// How long a node may go without renewing its Lease before it is marked unknown.
    #[arg(long, default_value = "40s", value_parser = parse_go)]
    pub node_monitor_grace_period: Duration,
    /// How long a new node may take to report for the first time.
    #[arg(long, default_value = "1m", value_parser = parse_go)]
    pub node_startup_grace_period: Duration,
    /// Nodes per second that get NoExecute taints while their zone is healthy.
    #[arg(long, default_value_t = 0.1)]
    pub node_eviction_rate: f64,
    /// Nodes per second in a partially disrupted zone larger than the threshold below.
    #[arg(long, default_value_t = 0.01)]
    pub secondary_node_eviction_rate: f64,
    /// Zones at most this large stop evicting when partially disrupted.
    #[arg(long, default_value_t = 50)]
    pub large_cluster_size_threshold: usize,
    /// Fraction of not-ready nodes (at least 3) that makes a zone partially disrupted.
    #[arg(long, default_value_t = 0.55)]
    pub unhealthy_zone_threshold: f64,
    /// Finished pods kept before the oldest are deleted (0 disables).
    #[arg(long, default_value_t = 12500)]
    pub terminated_pod_gc_threshold: usize,
    /// How often horizontal pod autoscalers are evaluated.
    #[arg(long, default_value = "15s", value_parser = parse_go)]
    pub horizontal_pod_autoscaler_sync_period: Duration,
    /// How long a scale-down recommendation must hold before it is acted on.
    #[arg(long, default_value = "5m", value_parser = parse_go)]
    pub horizontal_pod_autoscaler_downscale_stabilization: Duration,
    /// Relative change in the metric ratio below which no scaling happens.
    #[arg(long, default_value_t = 0.1)]
    pub horizontal_pod_autoscaler_tolerance: f64,
    /// How often every quota's usage is recalculated in full.
    #[arg(long, default_value = "5m", value_parser = parse_go)]
    pub resource_quota_sync_period: Duration,
    /// Do not run the cloud-controller loops (node initialization, cloud node lifecycle,
    /// routes, load balancers), e.g. because another cloud controller manager runs them.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub disable_cloud_controller: bool,
    /// The cloud provider the cloud-controller loops talk to.
    #[arg(long, default_value = skiff_controllers::cloud::local::NAME)]
    pub cloud_provider: String,
    /// The cloud provider's configuration file (YAML or JSON).
    #[arg(long)]
    pub cloud_config: Option<PathBuf>,
    /// The cluster's name, for providers that name cloud resources after it.
    #[arg(long, default_value = "kubernetes")]
    pub cluster_name: String,
    /// Program routes to node pod CIDRs in the cloud provider (with --allocate-node-cidrs).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub configure_cloud_routes: bool,
    /// How often the cloud provider's route table is reconciled.
    #[arg(long, default_value = "10s", value_parser = parse_go)]
    pub route_reconciliation_period: Duration,
    /// How often initialized nodes' addresses are refreshed from the cloud provider.
    #[arg(long, default_value = "5m", value_parser = parse_go)]
    pub node_status_update_frequency: Duration,
    /// Services whose load balancers are synced at once.
    #[arg(long, default_value_t = 1)]
    pub concurrent_service_syncs: usize,
}

/// Parse the options from `--kube-controller-manager-arg` values (`key=value`, with or
/// without leading dashes).
pub fn options_from_args(args: &[String]) -> Result<ControllerOptions, Error> {
    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        options: ControllerOptions,
    }
    let argv = std::iter::once("kube-controller-manager-arg".to_owned()).chain(
        args.iter()
            .map(|a| format!("--{}", a.trim_start_matches('-'))),
    );
    Wrapper::try_parse_from(argv)
        .map(|w| w.options)
        .map_err(|e| Error::Config(vec![format!("--kube-controller-manager-arg: {e}")]))
}

impl ControllerOptions {
    /// `--controllers`, less the cloud loops under `--disable-cloud-controller`.
    fn selection(&self) -> Vec<String> {
        let mut selection = self.controllers.clone();
        if self.disable_cloud_controller {
            selection.extend(
                skiff_controllers::manager::CLOUD_LOOPS
                    .iter()
                    .map(|name| format!("-{name}")),
            );
        }
        selection
    }

    /// Whether these options run the cloud node controller, which initializes nodes that
    /// register with the `uninitialized` taint (so kubelets should register that way).
    pub fn runs_cloud_node_controller(&self) -> bool {
        skiff_controllers::registry()
            .and_then(|r| {
                r.select(&self.selection())
                    .map_err(skiff_controllers::Error::Registry)
            })
            .is_ok_and(|selected| {
                selected
                    .iter()
                    .any(|d| d.name == skiff_controllers::cloud::node::NAME)
            })
    }

    /// The cloud provider's settings, reading `--cloud-config`.
    fn provider_settings(&self) -> Result<skiff_controllers::cloud::ProviderSettings, String> {
        let config = match &self.cloud_config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--cloud-config {}: {e}", path.display()))?;
                let value: serde_json::Value = serde_yaml::from_str(&text)
                    .map_err(|e| format!("--cloud-config {}: {e}", path.display()))?;
                Some(value)
            }
            None => None,
        };
        let settings = skiff_controllers::cloud::ProviderSettings {
            name: self.cloud_provider.clone(),
            cluster_name: self.cluster_name.clone(),
            config,
        };
        skiff_controllers::cloud::validate(&settings)
            .map_err(|e| format!("--cloud-provider: {e}"))?;
        Ok(settings)
    }

    /// Check the options and build the controllers' configuration.
    pub fn validate(&self, root_ca_pem: Option<String>) -> Result<Config, Error> {
        let mut problems = Vec::new();
        let cluster_cidr = match self.cluster_cidr.parse::<Ipv4Net>() {
            Ok(c) => Some(c),
            Err(e) => {
                problems.push(format!("--cluster-cidr: {e}"));
                None
            }
        };
        if let Some(c) = cluster_cidr
            && (self.node_cidr_mask_size < c.prefix || self.node_cidr_mask_size > 30)
        {
            problems.push(format!(
                "--node-cidr-mask-size: {} must be between the cluster CIDR's prefix ({}) and 30",
                self.node_cidr_mask_size, c.prefix
            ));
        }
        if self.leader_elect_renew_deadline >= self.leader_elect_lease_duration {
            problems.push(
                "--leader-elect-renew-deadline must be shorter than --leader-elect-lease-duration"
                    .into(),
            );
        }
        match skiff_controllers::registry() {
            Ok(registry) => {
                if let Err(e) = registry.select(&self.selection()) {
                    problems.push(format!("--controllers: {e}"));
                }
            }
            Err(e) => problems.push(format!("--controllers: {e}")),
        }
        if self.leader_elect_retry_period.is_zero() {
            problems.push("--leader-elect-retry-period must be positive".into());
        }
        if self.node_monitor_period.is_zero() {
            problems.push("--node-monitor-period must be positive".into());
        }
        for (flag, v) in [
            ("--node-eviction-rate", self.node_eviction_rate),
            (
                "--secondary-node-eviction-rate",
                self.secondary_node_eviction_rate,
            ),
            (
                "--horizontal-pod-autoscaler-tolerance",
                self.horizontal_pod_autoscaler_tolerance,
            ),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                problems.push(format!("{flag}: must be a non-negative number"));
            }
        }
        if !(0.0..=1.0).contains(&self.unhealthy_zone_threshold) {
            problems.push("--unhealthy-zone-threshold: must be between 0 and 1".into());
        }
        if self.route_reconciliation_period.is_zero() {
            problems.push("--route-reconciliation-period must be positive".into());
        }
        if self.node_status_update_frequency.is_zero() {
            problems.push("--node-status-update-frequency must be positive".into());
        }
        let provider = if self.disable_cloud_controller {
            None
        } else {
            match self.provider_settings() {
                Ok(p) => Some(p),
                Err(e) => {
                    problems.push(e);
                    None
                }
            }
        };
        let root_ca_pem = match &self.root_ca_file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    problems.push(format!("--root-ca-file {}: {e}", path.display()));
                    None
                }
            },
            None => root_ca_pem,
        };
        if !problems.is_empty() {
            return Err(Error::Config(problems));
        }
        let defaults = skiff_controllers::config::CloudConfig::default();
        Ok(Config {
            controllers: self.selection(),
            leader_elect: self.leader_elect,
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
            cluster_cidr: cluster_cidr.filter(|_| self.allocate_node_cidrs),
            node_cidr_mask_size: self.node_cidr_mask_size,
            root_ca_pem,
            node_monitor_period: self.node_monitor_period,
            pod_gc_period: self.node_monitor_period * 4,
            node_monitor_grace_period: self.node_monitor_grace_period,
            node_startup_grace_period: self.node_startup_grace_period,
            node_eviction_rate: self.node_eviction_rate,
            secondary_node_eviction_rate: self.secondary_node_eviction_rate,
            large_cluster_size_threshold: self.large_cluster_size_threshold,
            unhealthy_zone_threshold: self.unhealthy_zone_threshold,
            terminated_pod_gc_threshold: self.terminated_pod_gc_threshold,
            hpa_sync_period: self.horizontal_pod_autoscaler_sync_period,
            hpa_downscale_stabilization: self.horizontal_pod_autoscaler_downscale_stabilization,
            hpa_tolerance: self.horizontal_pod_autoscaler_tolerance,
            resource_quota_sync_period: self.resource_quota_sync_period,
            cloud: skiff_controllers::config::CloudConfig {
                provider: provider.unwrap_or(defaults.provider),
                configure_routes: self.configure_cloud_routes,
                route_reconciliation_period: self.route_reconciliation_period,
                node_status_update_frequency: self.node_status_update_frequency,
                service_workers: self.concurrent_service_syncs.max(1),
            },
            ..Config::default()
        })
    }
}

/// The certificate authority a kubeconfig trusts (PEM), for `kube-root-ca.crt`.
pub fn kubeconfig_ca(path: &Path) -> Option<String> {
    use base64::Engine;
    let kubeconfig = kube::config::Kubeconfig::read_from(path).ok()?;
    let context_name = kubeconfig.current_context.clone()?;
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)?
        .context
        .clone()?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)?
        .cluster
        .clone()?;
    if let Some(data) = cluster.certificate_authority_data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .ok()?;
        return String::from_utf8(bytes).ok();
    }
    let file = cluster.certificate_authority?;
    std::fs::read_to_string(file).ok()
}

/// Run the controllers with the client of `kubeconfig` until `stop`.
pub async fn run_with(
    kubeconfig: &Path,
    config: Config,
    stop: CancellationToken,
) -> Result<(), Error> {
    let client = skiff_runtime::client::from_kubeconfig(kubeconfig)
        .await
        .map_err(Error::Client)?;
    skiff_controllers::manager::run(client, config, stop)
        .await
        .map_err(Error::Controllers)
}

/// `skiff controller-manager`: run until SIGTERM/SIGINT.
pub async fn run(args: ControllerManagerArgs) -> Result<(), Error> {
    let config = args.options.validate(kubeconfig_ca(&args.kubeconfig))?;
    let stop = CancellationToken::new();
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        crate::server::shutdown_signal().await;
        signal_stop.cancel();
    });
    run_with(&args.kubeconfig, config, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_args_parse_and_bad_values_are_reported_together() {
        let o = options_from_args(&[
            "node-monitor-grace-period=5s".into(),
            "--controllers=*,-deployment".into(),
        ])
        .unwrap();
        assert_eq!(o.node_monitor_grace_period, Duration::from_secs(5));
        assert_eq!(o.controllers, ["*", "-deployment"]);
        assert!(options_from_args(&["no-such-flag=1".into()]).is_err());
        let mut bad = options_from_args(&[]).unwrap();
        bad.cluster_cidr = "10.42.0.1/16".into();
        bad.unhealthy_zone_threshold = 2.0;
        let Err(Error::Config(problems)) = bad.validate(None) else {
            panic!("expected a configuration error");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn the_cloud_controller_can_be_disabled_and_its_provider_is_checked() {
        let o = options_from_args(&[]).unwrap();
        assert!(o.runs_cloud_node_controller());
        let off = options_from_args(&["disable-cloud-controller".into()]).unwrap();
        assert!(!off.runs_cloud_node_controller());
        let config = off.validate(None).unwrap();
        assert!(
            config
                .controllers
                .contains(&"-service-lb-controller".to_owned())
        );
        let no_init = options_from_args(&["controllers=*,-cloud-node".into()]).unwrap();
        assert!(!no_init.runs_cloud_node_controller());
        let mut bad = options_from_args(&["cloud-provider=gce".into()]).unwrap();
        let Err(Error::Config(problems)) = bad.validate(None) else {
            panic!("expected a configuration error");
        };
        assert_eq!(
            problems,
            ["--cloud-provider: unknown cloud provider \"gce\" (known: local)"]
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cloud.yaml");
        std::fs::write(
            &file,
            "loadBalancer:\n  addressPool: [192.0.2.10-192.0.2.20]\n",
        )
        .unwrap();
        bad.cloud_provider = "local".into();
        bad.cloud_config = Some(file);
        let config = bad.validate(None).unwrap();
        assert_eq!(
            config.cloud.provider.config.unwrap()["loadBalancer"]["addressPool"][0],
            "192.0.2.10-192.0.2.20"
        );
    }
}
