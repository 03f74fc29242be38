//! `skiff server`: the control plane in one process.
//!
//! Config pipeline: flags → defaults → [`ServerArgs::validate`] (collects every problem) →
//! [`ServerConfig`] → start. On first start it creates the data directory, the cluster CA,
//! serving and admin certificates and the admin kubeconfig; restarts reuse them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use skiff_apiserver::allocator::Cidr;
use skiff_apiserver::server::Identity;

use crate::Error;

/// Flags of `skiff server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Directory for the store, certificates and credentials
    /// [default: /var/lib/skiff as root, else ~/.local/share/skiff]
    #[arg(long, env = "SKIFF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// HTTPS port of the API server.
    #[arg(long, default_value_t = 6443)]
    pub https_port: u16,
    /// Address advertised to clients and in the `kubernetes` Service endpoints
    /// [default: the bind address, or the first host address when binding all]
    #[arg(long)]
    pub advertise_address: Option<Ipv4Addr>,
    /// CIDR that Service ClusterIPs are allocated from.
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// Extra subject alternative names (DNS names or IPs) for the serving certificate.
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
    /// Where to write the admin kubeconfig [default: <data-dir>/kubeconfig.yaml].
    #[arg(long)]
    pub write_kubeconfig: Option<PathBuf>,
    /// Run the control plane only: no kubelet on this machine.
    #[arg(long)]
    pub disable_agent: bool,
    /// Do not run the scheduler (pods wait for another scheduler).
    #[arg(long)]
    pub disable_scheduler: bool,
    /// KubeSchedulerConfiguration file for the in-process scheduler.
    #[arg(long)]
    pub scheduler_config: Option<PathBuf>,
    /// Address of the scheduler's plain-HTTP `/metrics` ("" to disable).
    #[arg(long, default_value = "127.0.0.1:10259")]
    pub scheduler_metrics_address: String,
    /// Do not run the controller manager in this process.
    #[arg(long)]
    pub disable_controller_manager: bool,
    /// Do not run the cloud-controller loops (node initialization, routes, load balancers)
    /// in the in-process controller manager; kubelets then register without the
    /// `uninitialized` taint.
    #[arg(long)]
    pub disable_cloud_controller: bool,
    /// CIDR that node pod CIDRs are allocated from.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// A flag for the in-process controller manager, `key=value` (repeatable), e.g.
    /// `--kube-controller-manager-arg node-monitor-grace-period=20s`.
    #[arg(long = "kube-controller-manager-arg")]
    pub kube_controller_manager_arg: Vec<String>,
    /// The kubelet on this machine.
    #[command(flatten)]
    pub kubelet: crate::agent::KubeletArgs,
    /// Where cluster state lives: `embedded` (the built-in engine in <data-dir>/db) or an etcd
    /// cluster, `etcd://host1:2379,host2:2379` (several API servers may share one etcd).
    #[arg(long, default_value = "embedded", env = "SKIFF_STORE")]
    pub store: String,
    /// CA bundle that signed etcd's serving certificate (makes the etcd endpoints https).
    #[arg(long)]
    pub store_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long)]
    pub store_certfile: Option<PathBuf>,
    /// Private key of the etcd client certificate.
    #[arg(long)]
    pub store_keyfile: Option<PathBuf>,
    /// Prefix of every key in etcd, so several clusters can share one etcd.
    #[arg(long, default_value = "")]
    pub store_prefix: String,
    /// Seconds an API server's endpoint lease lasts: a server that dies leaves the
    /// `kubernetes` endpoints this long after its last renewal.
    #[arg(long, default_value_t = 15, hide = true)]
    pub endpoint_lease_seconds: u64,
    /// Take store snapshots on this schedule: cron (five fields, UTC, e.g. `0 */6 * * *`) or
    /// `@hourly`, `@daily`, `@every 30m`.
    #[arg(long)]
    pub snapshot_schedule: Option<String>,
    /// How many scheduled snapshots to keep.
    #[arg(long, default_value_t = 5)]
    pub snapshot_retention: usize,
    /// Where scheduled snapshots go [default: <data-dir>/snapshots].
    #[arg(long)]
    pub snapshot_dir: Option<PathBuf>,
    /// An EncryptionConfiguration file: which resources are encrypted at rest, and how.
    #[arg(long)]
    pub encryption_provider_config: Option<PathBuf>,
}

/// Which store backs the cluster.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// The embedded engine in `<data-dir>/db`.
    Embedded,
    /// An etcd cluster.
    Etcd(skiff_store::etcd::EtcdOptions),
}

/// Validated `skiff server` configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Listen address.
    pub bind: SocketAddr,
    /// Advertised address.
    pub advertise_address: Ipv4Addr,
    /// Service CIDR.
    pub service_cidr: Cidr,
    /// Extra SANs.
    pub tls_san: Vec<String>,
    /// Kubeconfig path.
    pub kubeconfig: PathBuf,
    /// The in-process controller manager's options (`None`: disabled).
    pub controllers: Option<crate::controller_manager::ControllerOptions>,
    /// The kubelet to run here, if any.
    pub kubelet: Option<crate::agent::KubeletArgs>,
    /// The store.
    pub store: StoreConfig,
    /// Endpoint lease duration.
    pub endpoint_lease_duration: std::time::Duration,
    /// Scheduled snapshots, if any.
    pub snapshots: Option<crate::snapshot::Scheduled>,
    /// Encryption at rest, if configured.
    pub encryption: Option<skiff_apiserver::encryption::EncryptionConfig>,
    /// The in-process scheduler's options (`None`: disabled).
    pub scheduler: Option<skiff_scheduler::Options>,
    /// What kubelets of this cluster default to (published for joining agents).
    pub agent_defaults: crate::agent::ClusterDefaults,
}

/// The default data directory: `/var/lib/skiff` as root, else `~/.local/share/skiff`.
pub fn default_data_dir() -> PathBuf {
    if is_root() {
        PathBuf::from("/var/lib/skiff")
    } else {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
        home.join(".local/share/skiff")
    }
}

fn is_root() -> bool {
    // The effective uid is the owner of /proc/self.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

impl ServerArgs {
    /// Check the flags and resolve defaults, reporting every problem at once.
    pub fn validate(self) -> Result<ServerConfig, Error> {
        let mut problems = Vec::new();
        let service_cidr = match self.service_cidr.parse::<Cidr>() {
            Ok(c) => Some(c),
            Err(e) => {
                problems.push(format!("--service-cidr: {e}"));
                None
            }
        };
        let controllers = if self.disable_controller_manager {
            None
        } else {
            let mut args = vec![format!("cluster-cidr={}", self.cluster_cidr)];
            if self.disable_cloud_controller {
                args.push("disable-cloud-controller=true".into());
            }
            args.extend(self.kube_controller_manager_arg.iter().cloned());
            match crate::controller_manager::options_from_args(&args) {
                Ok(o) => {
                    if let Err(Error::Config(p)) = o.validate(None) {
                        problems.extend(p);
                    }
                    Some(o)
                }
                Err(Error::Config(p)) => {
                    problems.extend(p);
                    None
                }
                Err(_) => None,
            }
        };
        if !self.disable_agent {
            self.kubelet.validate(&mut problems);
        }
        if self.https_port == 0 {
            problems.push("--https-port: must be between 1 and 65535".to_owned());
        }
        let tls = skiff_store::etcd::EtcdTls {
            ca_file: self.store_cafile.clone(),
            cert_file: self.store_certfile.clone(),
            key_file: self.store_keyfile.clone(),
        };
        let store = match self.store.as_str() {
            "embedded" | "" => {
                if tls.is_set() {
                    problems.push(
                        "--store-cafile/--store-certfile/--store-keyfile: only apply to --store etcd://..."
                            .to_owned(),
                    );
                }
                Some(StoreConfig::Embedded)
            }
            url => {
                if tls.cert_file.is_some() != tls.key_file.is_some() {
                    problems.push(
                        "--store-certfile and --store-keyfile must be given together".to_owned(),
                    );
                }
                for (flag, path) in [
                    ("--store-cafile", &tls.ca_file),
                    ("--store-certfile", &tls.cert_file),
                    ("--store-keyfile", &tls.key_file),
                ] {
                    if let Some(path) = path
                        && !path.is_file()
                    {
                        problems.push(format!("{flag}: {} is not a readable file", path.display()));
                    }
                }
                match skiff_store::etcd::EtcdOptions::from_url(url, tls) {
                    Ok(mut options) => {
                        options.prefix = self.store_prefix.clone();
                        Some(StoreConfig::Etcd(options))
                    }
                    Err(e) => {
                        problems.push(format!("--store: {e} (or `embedded`)"));
                        None
                    }
                }
            }
        };
        let advertise_address = self
            .advertise_address
            .unwrap_or_else(|| match self.bind_address {
                IpAddr::V4(v4) if !v4.is_unspecified() => v4,
                _ => skiff_pki::host_addresses()
                    .into_iter()
                    .find_map(|ip| match ip {
                        IpAddr::V4(v4) if !v4.is_loopback() => Some(v4),
                        _ => None,
                    })
                    .unwrap_or(Ipv4Addr::LOCALHOST),
            });
        let scheduler = if self.disable_scheduler {
            None
        } else {
            match crate::scheduler::options(
                self.scheduler_config.as_deref(),
                &self.scheduler_metrics_address,
            ) {
                Ok(o) => Some(o),
                Err(Error::Config(p)) => {
                    problems
                        .extend(p.into_iter().map(|p| {
                            p.replace("--metrics-address", "--scheduler-metrics-address")
                        }));
                    None
                }
                Err(e) => {
                    problems.push(format!("--scheduler-config: {}", crate::error_chain(&e)));
                    None
                }
            }
        };
        let schedule = match &self.snapshot_schedule {
            Some(text) => match text.parse::<crate::snapshot::Schedule>() {
                Ok(schedule) => Some(schedule),
                Err(e) => {
                    problems.push(format!("--snapshot-schedule: {e}"));
                    None
                }
            },
            None => None,
        };
        let encryption = match &self.encryption_provider_config {
            Some(path) => match skiff_apiserver::encryption::EncryptionConfig::load(path) {
                Ok(config) => Some(config),
                Err(e) => {
                    problems.push(format!(
                        "--encryption-provider-config {}: {e}",
                        path.display()
                    ));
                    None
                }
            },
            None => None,
        };
        if self.snapshot_retention == 0 {
            problems.push("--snapshot-retention: must be at least 1".to_owned());
        }
        let (Some(service_cidr), Some(store), true) = (service_cidr, store, problems.is_empty())
        else {
            return Err(Error::Config(problems));
        };
        // Like k3s: kubelets wait for the cloud node controller when this server runs one.
        let agent_defaults = crate::agent::ClusterDefaults {
            external_cloud_provider: controllers
                .as_ref()
                .is_some_and(|o| o.runs_cloud_node_controller()),
            cluster_cidr: Some(self.cluster_cidr.clone()),
        };
        let data_dir = self.data_dir.unwrap_or_else(default_data_dir);
        let kubeconfig = self
            .write_kubeconfig
            .unwrap_or_else(|| data_dir.join("kubeconfig.yaml"));
        let snapshots = schedule.map(|schedule| crate::snapshot::Scheduled {
            schedule,
            retention: self.snapshot_retention,
            dir: self
                .snapshot_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("snapshots")),
        });
        Ok(ServerConfig {
            data_dir,
            bind: SocketAddr::new(self.bind_address, self.https_port),
            advertise_address,
            service_cidr,
            tls_san: self.tls_san,
            kubeconfig,
            controllers,
            kubelet: (!self.disable_agent).then_some(self.kubelet),
            store,
            endpoint_lease_duration: std::time::Duration::from_secs(
                self.endpoint_lease_seconds.max(1),
            ),
            snapshots,
            encryption,
            scheduler,
            agent_defaults,
        })
    }
}

/// Open the configured store.
pub async fn open_store(config: &ServerConfig) -> Result<Arc<dyn skiff_store::Store>, Error> {
    let store: Arc<dyn skiff_store::Store> = match &config.store {
        StoreConfig::Embedded => skiff_store::embedded::EmbeddedStore::open(
            &config.data_dir.join("db"),
            skiff_store::embedded::EmbeddedOptions::default(),
        )
        .map_err(Error::Store)?,
        StoreConfig::Etcd(options) => skiff_store::etcd::EtcdStore::connect(options.clone())
            .await
            .map_err(Error::Store)?,
    };
    Ok(match &config.encryption {
        Some(encryption) => encryption.clone().wrap(store),
        None => store,
    })
}

/// Resolve when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
}

/// Run the control plane until SIGTERM/SIGINT.
pub async fn run(args: ServerArgs) -> Result<(), Error> {
    let config = args.validate()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;

    let mut ips: Vec<IpAddr> = skiff_pki::host_addresses();
    ips.push(IpAddr::V4(config.advertise_address));
    ips.push(IpAddr::V4(config.service_cidr.first()));
    let options = skiff_pki::PkiOptions {
        extra_sans: config.tls_san.clone(),
        ip_sans: ips,
    };
    let pki =
        Arc::new(skiff_pki::Pki::load_or_create(&config.data_dir, &options).map_err(Error::Pki)?);

    let store = open_store(&config).await?;
    let snapshots = config.snapshots.clone().map(|scheduled| {
        tracing::info!(dir = %scheduled.dir.display(), retention = scheduled.retention, "scheduled snapshots enabled");
        tokio::spawn(crate::snapshot::run_schedule(store.clone(), scheduled))
    });

    let tls = Arc::new(skiff_pki::server_config(&pki).map_err(Error::Pki)?);
    let admin = Identity::User {
        name: "system:admin".into(),
        groups: vec!["system:masters".into()],
    };
    let api_config = skiff_apiserver::Config {
        bind: config.bind,
        advertise_address: config.advertise_address,
        service_cidr: config.service_cidr,
        tls,
        tokens: vec![(pki.admin_token().to_owned(), admin)],
        service_accounts: Some(pki.service_accounts()),
        enrollment: Some(skiff_apiserver::enroll::Enrollment {
            token: pki.join_token().to_owned(),
            issuer: Arc::new(crate::agent::PkiEnrollment(pki.clone())),
        }),
        endpoint_lease_duration: config.endpoint_lease_duration,
        kubelet_client: Some(Arc::new(
            skiff_pki::client_config(pki.ca_pem(), &pki.kubelet_client().map_err(Error::Pki)?)
                .map_err(Error::Pki)?,
        )),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = skiff_apiserver::ApiServer::start(api_config, store, async move {
        let _ = stop_rx.await;
    })
    .await
    .map_err(Error::ApiServer)?;

    let host = match config.bind.ip() {
        IpAddr::V4(v4) if !v4.is_unspecified() => v4.to_string(),
        _ => "127.0.0.1".to_owned(),
    };
    let url = format!("https://{host}:{}", server.local_addr.port());
    pki.write_admin_kubeconfig(&config.kubeconfig, &url)
        .map_err(Error::Pki)?;
    tracing::info!(path = %config.kubeconfig.display(), "wrote admin kubeconfig");
    tracing::info!(
        token_file = %config.data_dir.join("token").display(),
        "nodes join with: skiff agent --server {url} --token-file <copy of the token file>"
    );

    // Joining agents read the defaults this server's flags imply.
    match skiff_runtime::client::from_kubeconfig(&config.kubeconfig).await {
        Ok(admin) => {
            if let Err(e) = crate::agent::publish_defaults(&admin, &config.agent_defaults).await {
                tracing::warn!(error = %crate::error_chain(&e), "publishing the agent defaults failed");
            }
        }
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "publishing the agent defaults failed")
        }
    }

    // Each in-process component reaches the API through its own kubeconfig and client
    // certificate, as it would running alone.
    let mut components =
        crate::components::Components::new(&config.data_dir).map_err(|source| Error::DataDir {
            path: config.data_dir.join("cred"),
            source,
        })?;
    // In-process components dial the address the server listens on (loopback when it listens
    // on every address), never an address it may not serve.
    let local_url = url.clone();
    if let Some(kubelet) = &config.kubelet {
        let node_name = kubelet.node_name();
        let node_ip = kubelet
            .node_ip
            .unwrap_or(IpAddr::V4(config.advertise_address));
        let path = components.kubeconfig_path("kubelet");
        pki.write_client_kubeconfig(
            &path,
            &local_url,
            "kubelet",
            &format!("system:node:{node_name}"),
            &["system:nodes"],
        )
        .map_err(Error::Pki)?;
        let serving = pki
            .issue_kubelet_serving(&node_name, &[node_ip])
            .map_err(Error::Pki)?;
        let tls = crate::agent::kubelet_tls(pki.ca_pem(), &serving)?;
        let kubelet_config = kubelet.config(
            &config.data_dir,
            node_ip,
            &[("node-role.kubernetes.io/control-plane", "true")],
            tls,
            &config.agent_defaults,
        );
        let client = skiff_runtime::client::from_kubeconfig(&path)
            .await
            .map_err(Error::Client)?;
        let stop = components.shutdown_token();
        components.spawn("kubelet", skiff_kubelet::run(kubelet_config, client, stop));
    }
    if let Some(options) = &config.controllers {
        let path = components.kubeconfig_path("kube-controller-manager");
        pki.write_client_kubeconfig(
            &path,
            &local_url,
            "kube-controller-manager",
            "system:kube-controller-manager",
            &[],
        )
        .map_err(Error::Pki)?;
        let controllers = options.validate(Some(pki.ca_pem().to_owned()))?;
        let stop = components.shutdown_token();
        components.spawn("controller-manager", async move {
            crate::controller_manager::run_with(&path, controllers, stop).await
        });
    }
    if let Some(options) = config.scheduler.clone() {
        let path = components.kubeconfig_path("kube-scheduler");
        let cred_dir = path.parent().unwrap_or(&config.data_dir).to_owned();
        std::fs::create_dir_all(&cred_dir).map_err(|source| Error::DataDir {
            path: cred_dir,
            source,
        })?;
        pki.write_client_kubeconfig(
            &path,
            &local_url,
            "kube-scheduler",
            "system:kube-scheduler",
            &[],
        )
        .map_err(Error::Pki)?;
        let stop = components.shutdown_token();
        components.spawn("scheduler", async move {
            crate::scheduler::run_with(path, options, stop).await
        });
    }

    shutdown_signal().await;
    components.stop().await;
    if let Some(task) = snapshots {
        task.abort();
    }
    let _ = stop_tx.send(());
    server.stopped().await;
    tracing::info!("stopped");
    Ok(())
}
