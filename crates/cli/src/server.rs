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
    /// The in-process scheduler's options (`None`: disabled).
    pub scheduler: Option<skiff_scheduler::Options>,
}

fn default_data_dir() -> PathBuf {
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
        if self.https_port == 0 {
            problems.push("--https-port: must be between 1 and 65535".to_owned());
        }
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
        let (Some(service_cidr), true) = (service_cidr, problems.is_empty()) else {
            return Err(Error::Config(problems));
        };
        let data_dir = self.data_dir.unwrap_or_else(default_data_dir);
        let kubeconfig = self
            .write_kubeconfig
            .unwrap_or_else(|| data_dir.join("kubeconfig.yaml"));
        Ok(ServerConfig {
            data_dir,
            bind: SocketAddr::new(self.bind_address, self.https_port),
            advertise_address,
            service_cidr,
            tls_san: self.tls_san,
            kubeconfig,
            scheduler,
        })
    }
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
    let pki = skiff_pki::Pki::load_or_create(&config.data_dir, &options).map_err(Error::Pki)?;

    let store = skiff_store::embedded::EmbeddedStore::open(
        &config.data_dir.join("db"),
        skiff_store::embedded::EmbeddedOptions::default(),
    )
    .map_err(Error::Store)?;

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

    // Each in-process component reaches the API through its own kubeconfig and client
    // certificate, as it would running alone.
    let mut components = crate::components::Components::new(&config.data_dir);
    if let Some(options) = config.scheduler.clone() {
        let path = components.kubeconfig_path("kube-scheduler");
        let cred_dir = path.parent().unwrap_or(&config.data_dir).to_owned();
        std::fs::create_dir_all(&cred_dir).map_err(|source| Error::DataDir {
            path: cred_dir,
            source,
        })?;
        pki.write_client_kubeconfig(&path, &url, "kube-scheduler", "system:kube-scheduler", &[])
            .map_err(Error::Pki)?;
        let stop = components.shutdown_token();
        components.spawn("scheduler", async move {
            crate::scheduler::run_with(path, options, stop)
                .await
                .map_err(|e| crate::error_chain(&e))
        });
    }

    shutdown_signal().await;
    components.stop().await;
    let _ = stop_tx.send(());
    server.stopped().await;
    tracing::info!("stopped");
    Ok(())
}
