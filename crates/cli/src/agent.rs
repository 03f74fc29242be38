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
    /// Hard eviction thresholds, `signal<amount` comma separated (signals memory.available,
    /// nodefs.available, imagefs.available, pid.available; amounts as quantities or
    /// percentages of capacity). Below one the node reports pressure, refuses new pods as
    /// upstream does and evicts pods one at a time; "" sets none.
    #[arg(
        long,
        default_value = skiff_kubelet::pressure::DEFAULT,
        value_parser = skiff_kubelet::pressure::Thresholds::parse
    )]
    pub eviction_hard: skiff_kubelet::pressure::Thresholds,
    /// Soft eviction thresholds, as --eviction-hard writes them: pods are evicted only once
    /// one has held for its grace period (--eviction-soft-grace-period); "" sets none.
    #[arg(long, default_value = "")]
    pub eviction_soft: String,
    /// Grace periods of the soft thresholds, `signal=duration` comma separated
    /// (e.g. memory.available=1m30s).
    #[arg(long, default_value = "")]
    pub eviction_soft_grace_period: String,
    /// Longest grace period, in seconds, of a pod evicted for a soft threshold.
    #[arg(long, default_value_t = 0)]
    pub eviction_max_pod_grace_period: u64,
    /// How long a pressure condition stays after its signal recovers (Go duration).
    #[arg(long, default_value = "5m0s", value_parser = skiff_api::duration::parse_go)]
    pub eviction_pressure_transition_period: Duration,
    /// Directory of the CNI plugin binaries.
    #[arg(long, default_value = "/usr/lib/cni")]
    pub cni_bin_dir: PathBuf,
    /// Seconds between reads of the static pod manifests directory.
    #[arg(long, default_value_t = 20)]
    pub file_check_frequency: u64,
    /// `external`: register with the `node.cloudprovider.kubernetes.io/uninitialized` taint
    /// and let the cloud node controller initialize the node; empty: no cloud provider
    /// [default: external when the server runs the cloud controller]
    #[arg(long)]
    pub cloud_provider: Option<String>,
    /// This machine's external address, published for the cloud provider (ExternalIP).
    #[arg(long)]
    pub node_external_ip: Option<IpAddr>,
    /// The zone this machine is in, published for the cloud provider
    /// (topology.kubernetes.io/zone).
    #[arg(long)]
    pub node_zone: Option<String>,
    /// The region this machine is in, published for the cloud provider
    /// (topology.kubernetes.io/region).
    #[arg(long)]
    pub node_region: Option<String>,
}

/// What a cluster's kubelets default to, decided by the server's flags and published to
/// joining agents in the ConfigMap `kube-system/skiff-agent-config` (k3s serves its agents
/// the same from the server).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterDefaults {
    /// Kubelets register for a cloud node controller (`--cloud-provider=external`).
    pub external_cloud_provider: bool,
    /// The cluster's pod network.
    pub cluster_cidr: Option<String>,
}

/// Publish `defaults` for the agents that join (create or update the ConfigMap).
pub async fn publish_defaults(
    client: &kube::Client,
    defaults: &ClusterDefaults,
) -> Result<(), kube::Error> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};
    use skiff_api::cloud as vocab;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), vocab::SYSTEM_NAMESPACE);
    let data = BTreeMap::from([
        (
            vocab::AGENT_CLOUD_PROVIDER.to_owned(),
            if defaults.external_cloud_provider {
                "external".to_owned()
            } else {
                String::new()
            },
        ),
        (
            vocab::AGENT_CLUSTER_CIDR.to_owned(),
            defaults.cluster_cidr.clone().unwrap_or_default(),
        ),
    ]);
    match api.get_opt(vocab::AGENT_CONFIG_CONFIGMAP).await? {
        Some(mut cm) if cm.data.as_ref() != Some(&data) => {
            cm.data = Some(data);
            api.replace(vocab::AGENT_CONFIG_CONFIGMAP, &PostParams::default(), &cm)
                .await
                .map(|_| ())
        }
        Some(_) => Ok(()),
        None => {
            let cm = ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some(vocab::AGENT_CONFIG_CONFIGMAP.to_owned()),
                    namespace: Some(vocab::SYSTEM_NAMESPACE.to_owned()),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            api.create(&PostParams::default(), &cm).await.map(|_| ())
        }
    }
}

/// The defaults a server published; none (no cloud provider, no cluster CIDR) when it
/// published nothing or cannot be asked, so a node never waits for a controller that is not
/// there.
pub async fn read_defaults(client: &kube::Client) -> ClusterDefaults {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::Api;
    use skiff_api::cloud as vocab;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), vocab::SYSTEM_NAMESPACE);
    match api.get_opt(vocab::AGENT_CONFIG_CONFIGMAP).await {
        Ok(Some(cm)) => {
            let data = cm.data.unwrap_or_default();
            ClusterDefaults {
                external_cloud_provider: data
                    .get(vocab::AGENT_CLOUD_PROVIDER)
                    .is_some_and(|v| v == "external"),
                cluster_cidr: data
                    .get(vocab::AGENT_CLUSTER_CIDR)
                    .filter(|c| !c.is_empty())
                    .cloned(),
            }
        }
        Ok(None) => ClusterDefaults::default(),
        Err(e) => {
            tracing::warn!(error = %e, "reading the server's agent defaults failed; using none");
            ClusterDefaults::default()
        }
    }
}

/// Whether a label value is valid (at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends).
fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && v.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && v.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
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
        if let Err(e) = self.soft_thresholds() {
            problems.push(e);
        }
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
        if let Some(p) = &self.cloud_provider
            && !matches!(p.as_str(), "" | "external")
        {
            problems.push(format!(
                "--cloud-provider {p:?}: the kubelet supports only \"external\" or \"\" (none)"
            ));
        }
        for (flag, value) in [
            ("--node-zone", &self.node_zone),
            ("--node-region", &self.node_region),
        ] {
            if let Some(v) = value
                && !is_label_value(v)
            {
                problems.push(format!("{flag} {v:?}: not a valid label value"));
            }
        }
    }

    fn soft_thresholds(&self) -> Result<skiff_kubelet::pressure::Thresholds, String> {
        skiff_kubelet::pressure::Thresholds::soft(
            &self.eviction_soft,
            &self.eviction_soft_grace_period,
        )
        .map_err(|e| format!("--eviction-soft: {e}"))
    }

    /// The node name.
    pub fn node_name(&self) -> String {
        self.node_name
            .clone()
            .unwrap_or_else(hostname)
            .to_lowercase()
    }

    /// Build the kubelet configuration; `defaults` fill what the flags leave open.
    pub fn config(
        &self,
        data_dir: &Path,
        node_ip: IpAddr,
        extra_labels: &[(&str, &str)],
        tls: Arc<rustls::ServerConfig>,
        defaults: &ClusterDefaults,
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
            manifest_check_interval: Duration::from_secs(self.file_check_frequency.max(1)),
            cloud: skiff_kubelet::cloud::CloudOptions {
                external: match &self.cloud_provider {
                    Some(p) => p == "external",
                    None => defaults.external_cloud_provider,
                },
                external_ip: self.node_external_ip,
                zone: self.node_zone.clone(),
                region: self.node_region.clone(),
            },
            network: skiff_kubelet::hostgw::NetworkOptions {
                cluster_cidr: defaults.cluster_cidr.clone(),
            },
            eviction_hard: self.eviction_hard.clone(),
            eviction_pressure_transition_period: self.eviction_pressure_transition_period,
            // Checked by `validate`.
            eviction_soft: self
                .soft_thresholds()
                .unwrap_or_else(|_| skiff_kubelet::pressure::Thresholds::none()),
            eviction_max_pod_grace_period: Duration::from_secs(self.eviction_max_pod_grace_period),
        }
    }
}

/// Issues node credentials from the cluster PKI (the server side of `skiff agent`).
pub struct PkiEnrollment(pub Arc<skiff_pki::Pki>);

impl skiff_apiserver::enroll::NodeEnrollment for PkiEnrollment {
    fn ca_pem(&self) -> String {
        self.0.ca_pem().to_owned()
    }

    fn enroll(
        &self,
        request: &skiff_apiserver::enroll::EnrollRequest,
    ) -> Result<skiff_apiserver::enroll::NodeCredentials, String> {
        let name = &request.node_name;
        let client = self
            .0
            .issue_client(&format!("system:node:{name}"), &["system:nodes"])
            .map_err(|e| e.to_string())?;
        let serving = self
            .0
            .issue_kubelet_serving(name, &request.addresses)
            .map_err(|e| e.to_string())?;
        tracing::info!(node = %name, "issued node credentials");
        Ok(skiff_apiserver::enroll::NodeCredentials {
            ca: self.0.ca_pem().to_owned(),
            client_cert: client.cert_pem,
            client_key: client.key_pem,
            serving_cert: serving.cert_pem,
            serving_key: serving.key_pem,
        })
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

/// Flags of `skiff agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The server(s) to join, e.g. https://10.0.0.1:6443; repeat or separate by commas to
    /// name several servers of a highly available control plane (the agent fails over, and
    /// learns further servers from the `kubernetes` endpoints).
    #[arg(long, env = "SKIFF_URL", value_delimiter = ',', required = true)]
    pub server: Vec<String>,
    /// Port on 127.0.0.1 of the agent's load balancer in front of the servers.
    #[arg(long, default_value_t = 6444)]
    pub lb_server_port: u16,
    /// The server's join token (printed by the server, in `<server data dir>/token`).
    #[arg(long, env = "SKIFF_TOKEN")]
    pub token: Option<String>,
    /// A file holding the join token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Directory for the node's credentials, containerd and pods
    /// [default: /var/lib/skiff as root, else ~/.local/share/skiff]
    #[arg(long, env = "SKIFF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The cluster's pod network, whose traffic is not masqueraded
    /// [default: what the server publishes]
    #[arg(long)]
    pub cluster_cidr: Option<String>,
    /// The kubelet.
    #[command(flatten)]
    pub kubelet: KubeletArgs,
}

/// The CA hash a `K10<sha256>::…` token pins.
pub fn token_ca_hash(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("K10")?;
    let (hash, _) = rest.split_once("::")?;
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hash)
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Files of a joined node's credentials.
struct NodeFiles {
    dir: PathBuf,
}

impl NodeFiles {
    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubelet.kubeconfig")
    }
    fn credentials(&self) -> PathBuf {
        self.dir.join("node-credentials.json")
    }
}

/// Why enrolling through one server failed.
enum EnrollError {
    /// The server did not answer: another server may.
    Unreachable(String),
    /// The server answered and refused, or answered wrongly: every server would.
    Refused(String),
}

async fn enroll(
    server: &str,
    token: &str,
    request: &skiff_apiserver::enroll::EnrollRequest,
) -> Result<skiff_apiserver::enroll::NodeCredentials, EnrollError> {
    let join = |message: String| EnrollError::Refused(message);
    let unreachable = |message: String| EnrollError::Unreachable(message);
    let server = server.trim_end_matches('/');
    let expected = token_ca_hash(token).ok_or_else(|| {
        join("the token is not a join token (expected K10<ca-sha256>::…, from the server's data dir)".into())
    })?;
    // The CA is fetched without verification, then trusted only if it matches the hash the
    // token carries.
    let insecure = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .map_err(|e| join(e.to_string()))?;
    let ca = insecure
        .get(format!("{server}/cacerts"))
        .send()
        .await
        .map_err(|e| unreachable(format!("fetching the cluster CA from {server} failed: {e}")))?
        .error_for_status()
        .map_err(|e| join(format!("fetching the cluster CA from {server} failed: {e}")))?
        .text()
        .await
        .map_err(|e| join(e.to_string()))?;
    if sha256_hex(ca.as_bytes()) != expected {
        return Err(join(format!(
            "the CA served by {server} does not match the join token"
        )));
    }
    let cert = reqwest::Certificate::from_pem(ca.as_bytes()).map_err(|e| join(e.to_string()))?;
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert)
        .build()
        .map_err(|e| join(e.to_string()))?;
    let response = client
        .post(format!("{server}/v1-skiff/node-credentials"))
        .bearer_auth(token)
        .json(request)
        .send()
        .await
        .map_err(|e| unreachable(format!("requesting node credentials failed: {e}")))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or(body);
        return Err(join(format!(
            "the server refused to enroll this node ({status}): {message}"
        )));
    }
    response
        .json()
        .await
        .map_err(|e| join(format!("reading node credentials failed: {e}")))
}

/// Enroll through the first server that answers; a server that refuses (a wrong token) ends
/// the attempt, as every server of the cluster would refuse alike.
async fn enroll_any(
    servers: &[String],
    token: &str,
    request: &skiff_apiserver::enroll::EnrollRequest,
) -> Result<skiff_apiserver::enroll::NodeCredentials, Error> {
    let mut last = String::from("no server given");
    for server in servers {
        match enroll(server, token, request).await {
            Ok(credentials) => {
                tracing::info!(%server, node = %request.node_name, "joined the cluster");
                return Ok(credentials);
            }
            Err(EnrollError::Unreachable(message)) => {
                tracing::warn!(%server, %message, "server unreachable; trying the next");
                last = message;
            }
            Err(EnrollError::Refused(message)) => return Err(Error::Join(message)),
        }
    }
    Err(Error::Join(last))
}

/// The API servers (`host:port`) in the `kubernetes` Endpoints: what the balancer learns.
fn endpoint_addresses(endpoints: &k8s_openapi::api::core::v1::Endpoints) -> Vec<String> {
    let mut addresses = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        let port = subset
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("https"))
            .or_else(|| subset.ports.iter().flatten().next())
            .map(|p| p.port);
        let Some(port) = port else { continue };
        for address in subset.addresses.iter().flatten() {
            let address = match address.ip.parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, port as u16).to_string(),
                Err(_) => continue,
            };
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
    }
    addresses
}

/// Keep the balancer's server list equal to the `kubernetes` Endpoints (k3s does the same), so
/// servers added to the control plane later are failed over to as well.
async fn follow_api_servers(
    client: kube::Client,
    balancer: skiff_runtime::balancer::Balancer,
    shutdown: skiff_runtime::CancellationToken,
) {
    use futures::StreamExt;
    use kube::runtime::watcher;
    let api: kube::Api<k8s_openapi::api::core::v1::Endpoints> =
        kube::Api::namespaced(client, "default");
    let config = watcher::Config::default().fields("metadata.name=kubernetes");
    let mut events = std::pin::pin!(kube::runtime::WatchStreamExt::default_backoff(watcher(
        api, config
    )));
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            Some(Ok(watcher::Event::Apply(endpoints) | watcher::Event::InitApply(endpoints))) => {
                let addresses = endpoint_addresses(&endpoints);
                if !addresses.is_empty() {
                    balancer.set_servers(addresses);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => tracing::debug!(%error, "watching the kubernetes endpoints"),
            None => return,
        }
    }
}

/// Run a worker node until SIGTERM/SIGINT.
pub async fn run(args: AgentArgs) -> Result<(), Error> {
    let mut problems = Vec::new();
    args.kubelet.validate(&mut problems);
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.trim().to_owned()),
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(t) => Some(t.trim().to_owned()),
            Err(e) => {
                problems.push(format!("--token-file {}: {e}", f.display()));
                None
            }
        },
        (None, None) => {
            problems.push("--token or --token-file is required".into());
            None
        }
    };
    if let Some(cidr) = &args.cluster_cidr
        && cidr.parse::<skiff_apiserver::allocator::Cidr>().is_err()
    {
        problems.push(format!("--cluster-cidr {cidr:?}: not an IPv4 CIDR"));
    }
    let mut server_addresses = Vec::new();
    for server in &args.server {
        match skiff_runtime::balancer::url_address(server) {
            Some(address) => server_addresses.push(address),
            None => problems.push(format!("--server {server:?}: expected https://HOST:PORT")),
        }
    }
    let (Some(token), true) = (token, problems.is_empty()) else {
        return Err(Error::Config(problems));
    };
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(crate::server::default_data_dir);
    let files = NodeFiles {
        dir: data_dir.join("agent"),
    };
    std::fs::create_dir_all(&files.dir).map_err(|source| Error::DataDir {
        path: files.dir.clone(),
        source,
    })?;
    let node_name = args.kubelet.node_name();
    let node_ip = args.kubelet.node_ip.unwrap_or_else(|| {
        skiff_pki::host_addresses()
            .into_iter()
            .find(|ip| ip.is_ipv4() && !ip.is_loopback())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]))
    });

    let stored: Option<skiff_apiserver::enroll::NodeCredentials> =
        std::fs::read(files.credentials())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|c: &skiff_apiserver::enroll::NodeCredentials| {
                token_ca_hash(&token) == Some(sha256_hex(c.ca.as_bytes()).as_str())
            });
    let credentials = match stored {
        Some(c) => c,
        None => {
            let request = skiff_apiserver::enroll::EnrollRequest {
                node_name: node_name.clone(),
                addresses: vec![node_ip],
            };
            let c = enroll_any(&args.server, &token, &request).await?;
            let json = serde_json::to_vec_pretty(&c).map_err(|e| Error::Join(e.to_string()))?;
            write_private(&files.credentials(), &json).map_err(|source| Error::DataDir {
                path: files.credentials(),
                source,
            })?;
            c
        }
    };
    let client_key = skiff_pki::CertifiedKey {
        cert_pem: credentials.client_cert.clone(),
        key_pem: credentials.client_key.clone(),
    };
    let shutdown = skiff_runtime::CancellationToken::new();
    // Every component of the node reaches the servers through the balancer (the servers'
    // certificates cover 127.0.0.1).
    let balancer = skiff_runtime::balancer::Balancer::start(
        SocketAddr::new(IpAddr::from([127, 0, 0, 1]), args.lb_server_port),
        server_addresses,
        skiff_runtime::balancer::BalancerConfig::default(),
        shutdown.clone(),
    )
    .await
    .map_err(|e| {
        Error::Join(format!(
            "starting the API server load balancer on 127.0.0.1:{} failed: {e}",
            args.lb_server_port
        ))
    })?;
    let kubeconfig = skiff_pki::Kubeconfig::new(&balancer.url(), &credentials.ca, &client_key);
    write_private(&files.kubeconfig(), kubeconfig.to_yaml().as_bytes()).map_err(|source| {
        Error::DataDir {
            path: files.kubeconfig(),
            source,
        }
    })?;
    let serving = skiff_pki::CertifiedKey {
        cert_pem: credentials.serving_cert.clone(),
        key_pem: credentials.serving_key.clone(),
    };
    let tls = kubelet_tls(&credentials.ca, &serving)?;
    let client = skiff_runtime::client::from_kubeconfig(&files.kubeconfig())
        .await
        .map_err(Error::Client)?;
    tokio::spawn(follow_api_servers(
        client.clone(),
        balancer,
        shutdown.clone(),
    ));
    // Asked on every start, so a node follows the server's current flags.
    let mut defaults = read_defaults(&client).await;
    if args.cluster_cidr.is_some() {
        defaults.cluster_cidr = args.cluster_cidr.clone();
    }
    let config = args.kubelet.config(&data_dir, node_ip, &[], tls, &defaults);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        crate::server::shutdown_signal().await;
        stop.cancel();
    });
    skiff_kubelet::run(config, client, shutdown)
        .await
        .map_err(Error::Kubelet)
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_servers_come_from_the_https_port_of_the_kubernetes_endpoints() {
        let endpoints: k8s_openapi::api::core::v1::Endpoints =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "kubernetes", "namespace": "default"},
                "subsets": [{
                    "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}],
                    "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]
                }]
            }))
            .unwrap();
        assert_eq!(
            endpoint_addresses(&endpoints),
            ["10.0.0.1:6443", "10.0.0.2:6443", "[fd00::3]:6443"]
        );
        let empty = k8s_openapi::api::core::v1::Endpoints::default();
        assert!(endpoint_addresses(&empty).is_empty());
    }

    /// What `validate` finds wrong with these kubelet flags.
    fn kubelet_flag_problems(args: &[&str]) -> Vec<String> {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            kubelet: KubeletArgs,
        }
        let w = <Wrapper as clap::Parser>::try_parse_from(
            std::iter::once("kubelet").chain(args.iter().copied()),
        )
        .unwrap();
        let mut problems = Vec::new();
        w.kubelet.validate(&mut problems);
        problems
    }

    #[test]
    fn soft_eviction_flags_are_checked() {
        let problems = kubelet_flag_problems;
        assert!(problems(&[]).is_empty());
        assert!(
            problems(&[
                "--eviction-soft",
                "memory.available<1Gi",
                "--eviction-soft-grace-period",
                "memory.available=1m30s"
            ])
            .is_empty()
        );
        let p = problems(&["--eviction-soft", "memory.available<1Gi"]);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with(
                "--eviction-soft: soft eviction threshold memory.available needs a grace period"
            ),
            "{p:?}"
        );
    }

    #[test]
    fn cloud_flags_are_checked() {
        let parse = kubelet_flag_problems;
        assert!(parse(&["--cloud-provider", "external", "--node-zone", "rack-a"]).is_empty());
        assert!(parse(&["--cloud-provider="]).is_empty());
        assert_eq!(
            parse(&["--cloud-provider", "aws", "--node-region=-bad"]).len(),
            2
        );
    }

    #[test]
    fn join_tokens_pin_the_ca() {
        let hash = "ab".repeat(32);
        assert_eq!(
            token_ca_hash(&format!("K10{hash}::server:secret")),
            Some(hash.as_str())
        );
        assert_eq!(token_ca_hash("plain-token"), None);
        assert_eq!(token_ca_hash("K10abc::server:x"), None);
    }
}
