//! The kubelet's configuration, resolved and validated by the CLI before the kubelet starts.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Which container runtime to use.
#[derive(Debug, Clone)]
pub enum RuntimeEndpoint {
    /// Start and supervise Skiff's own containerd (the `containerd` binary on the PATH, its
    /// config, root, state and socket under the kubelet's root directory).
    Managed,
    /// Use an existing CRI runtime at this socket (`unix:///run/containerd/containerd.sock`).
    External(String),
}

/// Everything the kubelet needs.
#[derive(Clone)]
pub struct KubeletConfig {
    /// The Node's name.
    pub node_name: String,
    /// Where pods' volumes, logs, the managed containerd and image archives live
    /// (`<data-dir>/agent`).
    pub root_dir: PathBuf,
    /// The container runtime.
    pub runtime: RuntimeEndpoint,
    /// The node's InternalIP.
    pub node_ip: IpAddr,
    /// The pod CIDR to use instead of waiting for `spec.podCIDR`.
    pub pod_cidr: Option<String>,
    /// Cluster DNS servers written into pods' resolv.conf.
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// Labels the node registers with (besides the well-known ones).
    pub node_labels: BTreeMap<String, String>,
    /// Taints the node registers with, as `key[=value]:Effect`.
    pub node_taints: Vec<String>,
    /// Where the kubelet API listens.
    pub listen: SocketAddr,
    /// TLS of the kubelet API: its serving certificate, and the cluster CA to verify the API
    /// server's client certificate.
    pub tls: Arc<rustls::ServerConfig>,
    /// Most pods this node runs.
    pub max_pods: u32,
    /// CNI plugin binaries.
    pub cni_bin_dir: PathBuf,
    /// How often the node Lease is renewed.
    pub lease_interval: Duration,
    /// Longest time between node status reports when nothing changes.
    pub status_report_interval: Duration,
    /// The version reported in `nodeInfo.kubeletVersion`.
    pub version: String,
    /// How often static pod manifests are read (upstream's `--file-check-frequency`).
    pub manifest_check_interval: Duration,
    /// What the node tells the cloud controllers (`--cloud-provider`, zone, addresses).
    pub cloud: crate::cloud::CloudOptions,
    /// The pod network between nodes (cluster CIDR for masquerading).
    pub network: crate::hostgw::NetworkOptions,
    /// Hard eviction thresholds (`--eviction-hard`).
    pub eviction_hard: crate::pressure::Thresholds,
    /// How long a pressure condition stays after its signal recovers.
    pub eviction_pressure_transition_period: Duration,
    /// Soft eviction thresholds (`--eviction-soft`, with `--eviction-soft-grace-period`).
    pub eviction_soft: crate::pressure::Thresholds,
    /// The longest grace period a pod evicted for a soft threshold gets.
    pub eviction_max_pod_grace_period: Duration,
}

impl KubeletConfig {
    /// Every eviction threshold, hard and soft: what the pressure conditions follow.
    pub fn eviction_thresholds(&self) -> crate::pressure::Thresholds {
        self.eviction_hard.and(&self.eviction_soft)
    }
}

impl KubeletConfig {
    /// Static pod manifests.
    pub fn manifests_dir(&self) -> PathBuf {
        self.root_dir.join("pod-manifests")
    }

    /// Image archives imported at start.
    pub fn images_dir(&self) -> PathBuf {
        self.root_dir.join("images")
    }

    /// Per-pod directories (volumes, etc-hosts, termination messages).
    pub fn pods_dir(&self) -> PathBuf {
        self.root_dir.join("pods")
    }

    /// Container log files, `<ns>_<name>_<uid>/<container>/<restart>.log`.
    pub fn logs_dir(&self) -> PathBuf {
        self.root_dir.join("logs")
    }

    /// Directory of the managed containerd.
    pub fn containerd_dir(&self) -> PathBuf {
        self.root_dir.join("containerd")
    }

    /// CNI network configuration the runtime reads.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.root_dir.join("cni/net.d")
    }

    /// Volumes provisioned by the built-in local-path provisioner.
    pub fn local_storage_dir(&self) -> PathBuf {
        self.root_dir.join("storage")
    }
}
