//! The node agent's flags and wiring: shared by `skiff server` (which runs a kubelet on its own
//! machine unless `--disable-agent`) and `skiff agent` (a worker joining a server).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use skiff_kubelet::config::{KubeletConfig, RuntimeEndpoint};

use crate::Error;

/// Kubelet flags.
#[derive(Debug, Clone, Args)]
pub struct KubeletArgs {
    /// The node's name [default: the hostname].
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's InternalIP [default: the advertised/first host address].
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Use this CRI runtime instead of starting Skiff's own containerd
    /// (e.g. unix:///run/containerd/containerd.sock).
    #[arg(long)]
    pub container_runtime_endpoint: Option<String>,
    /// Pod CIDR of this node, instead of the one the control plane allocates.
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// Cluster DNS server address written into pods' resolv.conf.
    #[arg(long, default_value = "10.43.0.10")]
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Port of the kubelet API.
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Extra node labels, `key=value`; repeatable.
    #[arg(long = "node-label")]
    pub node_labels: Vec<String>,
    /// Node taints, `key[=value]:Effect`; repeatable.
    #[arg(long = "node-taint")]
    pub node_taints: Vec<String>,
    /// Most pods this node runs.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Directory of the CNI plugin binaries.
    #[arg(long, default_value = "/usr/lib/cni")]
    pub cni_bin_dir: PathBuf,
}

/// The host's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

impl KubeletArgs {
    /// Check the flags, collecting problems; `default_ip` is used without `--node-ip`.
    pub fn validate(&self, problems: &mut Vec<String>) {
        for l in &self.node_labels {
            if l.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
                problems.push(format!("--node-label {l:?}: expected key=value"));
            }
        }
        for t in &self.node_taints {
            if skiff_kubelet::node::parse_taint(t).is_none() {
                problems.push(format!(
                    "--node-taint {t:?}: expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute"
                ));
            }
        }
        if let Some(cidr) = &self.pod_cidr
            && cidr.parse::<skiff_apiserver::allocator::Cidr>().is_err()
        {
            problems.push(format!("--pod-cidr {cidr:?}: not an IPv4 CIDR"));
        }
        if self.kubelet_port == 0 {
            problems.push("--kubelet-port: must be between 1 and 65535".into());
        }
    }

    /// The node name.
    pub fn node_name(&self) -> String {
        self.node_name
            .clone()
            .unwrap_or_else(hostname)
            .to_lowercase()
    }

    /// Build the kubelet configuration.
    pub fn config(
        &self,
        data_dir: &Path,
        node_ip: IpAddr,
        extra_labels: &[(&str, &str)],
        tls: Arc<rustls::ServerConfig>,
    ) -> KubeletConfig {
        let mut labels: BTreeMap<String, String> = self
            .node_labels
            .iter()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for (k, v) in extra_labels {
            labels.insert((*k).to_owned(), (*v).to_owned());
        }
        KubeletConfig {
            node_name: self.node_name(),
            root_dir: data_dir.join("agent"),
            runtime: match &self.container_runtime_endpoint {
                Some(e) => RuntimeEndpoint::External(e.clone()),
                None => RuntimeEndpoint::Managed,
            },
            node_ip,
            pod_cidr: self.pod_cidr.clone(),
            cluster_dns: self.cluster_dns.clone(),
            cluster_domain: self.cluster_domain.clone(),
            node_labels: labels,
            node_taints: self.node_taints.clone(),
            listen: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), self.kubelet_port),
            tls,
            max_pods: self.max_pods,
            cni_bin_dir: self.cni_bin_dir.clone(),
            lease_interval: Duration::from_secs(10),
            status_report_interval: Duration::from_secs(60),
            version: skiff_apiserver::GIT_VERSION.to_owned(),
        }
    }
}

/// Build the kubelet's TLS from the cluster CA and its serving certificate.
pub fn kubelet_tls(
    ca_pem: &str,
    serving: &skiff_pki::CertifiedKey,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    skiff_pki::mutual_server_config(ca_pem, serving)
        .map(Arc::new)
        .map_err(Error::Pki)
}
