//! The kubelet: Skiff's node agent.
//!
//! It registers the Node and keeps its status and Lease current ([`node`]), runs a container
//! runtime ([`containerd`], or uses an existing CRI runtime), and runs the pods bound to the
//! node ([`pod`]): each pod gets a worker that compares the pod spec with what the runtime
//! holds, plans the difference ([`pod::plan`]), carries it out through the CRI, and reports the
//! pod status ([`pod::status`]). New pods are admitted against the node first
//! ([`pod::admission`]). Resource usage is measured by [`stats`] (served as
//! `/stats/summary` and `/metrics/resource`), and pods over their local storage limits are
//! evicted ([`eviction`]). The kubelet is a client of the API server like any other
//! component; the API server reaches it for logs, exec, attach, port-forward and stats
//! through its HTTPS API ([`server`]). It tells the cloud controllers about its machine
//! ([`cloud`]) and routes pod traffic to the other nodes ([`hostgw`]).

pub mod cloud;
pub mod cni;
pub mod config;
pub mod containerd;
pub mod eviction;
pub mod hostgw;
pub mod images;
pub mod logs;
pub mod node;
pub mod pod;
pub mod pressure;
pub mod provisioner;
pub mod server;
pub mod stats;
pub mod sysinfo;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::Client;
use kube::runtime::watcher;
use skiff_api::quantity::Quantity;
use skiff_cri::Cri;
use skiff_runtime::{CancellationToken, Informers};

use crate::config::{KubeletConfig, RuntimeEndpoint};
use crate::pod::manager::PodManager;
use crate::pod::probe::ProbeManager;
use crate::pod::spec::NodeContext;
use crate::pod::volumes::VolumeManager;
use crate::pod::worker::Env;

/// Run the kubelet until `shutdown`. Containers keep running after it returns (a restarted
/// kubelet adopts them).
pub async fn run(
    config: KubeletConfig,
    client: Client,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    for dir in [
        config.root_dir.clone(),
        config.pods_dir(),
        config.logs_dir(),
        config.manifests_dir(),
        config.images_dir(),
    ] {
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            action: "creating the kubelet directories",
            path: dir.clone(),
            source,
        })?;
    }
    // The API's port is taken first: a node whose kubelet cannot serve logs and exec must
    // not come up half-way.
    let api = server::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            address: config.listen,
            source,
        })?;
    let (endpoint, socket) = match &config.runtime {
        RuntimeEndpoint::Managed => {
            let layout = containerd::Layout {
                dir: config.containerd_dir(),
                cni_conf_dir: config.cni_conf_dir(),
                cni_bin_dir: config.cni_bin_dir.clone(),
                sandbox_image: images::SANDBOX_IMAGE.to_owned(),
            };
            let supervisor = containerd::Supervisor::start(layout, shutdown.clone()).await?;
            (supervisor.endpoint(), Some(supervisor.socket()))
        }
        RuntimeEndpoint::External(endpoint) => (endpoint.clone(), None),
    };
    let cri = Cri::connect(&endpoint).await.map_err(Error::Cri)?;
    let socket = socket.unwrap_or_else(|| skiff_cri::socket_path(&endpoint));
    if let Err(err) =
        images::ensure_sandbox_image(&cri, &socket, &config.root_dir.join("builtin-images")).await
    {
        // An external runtime may bring its own sandbox image.
        if matches!(config.runtime, RuntimeEndpoint::Managed) {
            return Err(err);
        }
        tracing::warn!(error = %err, "importing the built-in sandbox image failed");
    }
    // Archives dropped into the images directory are imported in the background so the node
    // becomes Ready without waiting for them.
    {
        let (dir, socket) = (config.images_dir(), socket.clone());
        tokio::spawn(async move {
            for (path, result) in images::import_directory(&socket, &dir).await {
                match result {
                    Ok(names) => {
                        tracing::info!(archive = %path.display(), images = ?names, "imported image archive")
                    }
                    Err(err) => {
                        tracing::warn!(archive = %path.display(), error = %err, "importing an image archive failed")
                    }
                }
            }
        });
    }

    let agent = Arc::new(node::NodeAgent::new(
        client.clone(),
        config.clone(),
        cri.clone(),
    ));
    let registered = agent.register().await?;
    // The pod network needs the node's pod CIDR: the configured one, or the one the control
    // plane allocates into spec.podCIDR.
    tokio::spawn(configure_network(
        client.clone(),
        config.clone(),
        agent.clone(),
        shutdown.clone(),
    ));
    {
        let (status_agent, stop) = (agent.clone(), shutdown.clone());
        tokio::spawn(async move { status_agent.status_loop(stop).await });
        let (lease_agent, stop) = (agent.clone(), shutdown.clone());
        tokio::spawn(async move { lease_agent.lease_loop(stop).await });
    }

    let machine = sysinfo::machine();
    let (_, allocatable) = node::resources(
        &config,
        &node::Observed {
            machine: machine.clone(),
            fs: sysinfo::filesystem(&config.root_dir),
            ..Default::default()
        },
    );
    let allocatable: BTreeMap<String, Quantity> = allocatable
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), Quantity::parse(v.as_str()?).ok()?)))
        .collect();
    let informers = Informers::new(client.clone(), shutdown.clone());
    let services = informers.get::<Service>();
    let pods = informers.get_filtered::<Pod>(
        watcher::Config::default().fields(&format!("spec.nodeName={}", config.node_name)),
    );
    let (probe_tx, mut probe_rx) = tokio::sync::mpsc::unbounded_channel();
    let recorder =
        skiff_runtime::events::Recorder::new(client.clone(), "kubelet", Some(&config.node_name));
    let env = Arc::new(Env {
        cri: cri.clone(),
        client: client.clone(),
        node: NodeContext {
            node_name: config.node_name.clone(),
            cluster_dns: config.cluster_dns.iter().map(ToString::to_string).collect(),
            cluster_domain: config.cluster_domain.clone(),
            host_resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            host_hosts: std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
            host_name: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
            logs_dir: config.logs_dir(),
            memory_capacity: machine.memory_bytes,
        },
        host_ip: config.node_ip.to_string(),
        volumes: VolumeManager::new(
            client.clone(),
            config.pods_dir(),
            allocatable
                .get("memory")
                .map_or(machine.memory_bytes, |q| q.value().max(0) as u64),
        ),
        probes: ProbeManager::new(cri.clone(), probe_tx),
        recorder: recorder.clone(),
        services,
        allocatable,
        pods_dir: config.pods_dir(),
        node_uid: parking_lot::RwLock::new(registered.metadata.uid.clone()),
    });
    let nodes = informers.get_filtered::<Node>(
        watcher::Config::default().fields(&format!("metadata.name={}", config.node_name)),
    );
    let manager = PodManager::new(
        env.clone(),
        nodes,
        config.max_pods as usize,
        shutdown.clone(),
    );
    let stats = Arc::new(stats::Provider::new(
        cri.clone(),
        config.node_name.clone(),
        stats::Paths {
            root_dir: config.root_dir.clone(),
            pods_dir: config.pods_dir(),
            logs_dir: config.logs_dir(),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        },
        machine.memory_bytes,
        manager.clone(),
    ));
    tokio::spawn(server::serve(
        server::Context {
            cri: cri.clone(),
            pods: pods.clone(),
            logs_dir: config.logs_dir(),
            stats: stats.clone(),
        },
        api,
        config.tls.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(eviction::run(
        stats,
        eviction::Limits {
            hard: config.eviction_hard.clone(),
            soft: config.eviction_soft.clone(),
            max_pod_grace: config.eviction_max_pod_grace_period,
        },
        manager.clone(),
        recorder.clone(),
        shutdown.clone(),
    ));
    // Probe failures become Unhealthy events on the pod.
    {
        let pods = pods.clone();
        let recorder = recorder.clone();
        tokio::spawn(async move {
            while let Some(event) = probe_rx.recv().await {
                if let Some(pod) = pods
                    .list()
                    .into_iter()
                    .find(|p| p.metadata.uid.as_deref() == Some(event.pod_uid.as_str()))
                {
                    let mut reference = skiff_runtime::events::reference(pod.as_ref());
                    reference.field_path = Some(format!("spec.containers{{{}}}", event.container));
                    recorder.publish(
                        &reference,
                        skiff_runtime::events::EventType::Warning,
                        "Unhealthy",
                        &event.message,
                    );
                }
            }
        });
    }
    tokio::spawn(provisioner::run(
        client.clone(),
        config.node_name.clone(),
        config.local_storage_dir(),
        shutdown.clone(),
    ));
    tracing::info!(node = %config.node_name, "kubelet running");
    manager
        .run(pods, config.manifests_dir(), config.manifest_check_interval)
        .await;
    // A clean stop: the local cloud provider reports the machine shut down until it is back.
    cloud::mark_shutdown(&client, &config.node_name).await;
    Ok(())
}

/// Write the CNI configuration once the pod CIDR is known, start keeping the routes to the
/// other nodes' pods, and report status right away so the node turns Ready without waiting
/// for the next status period.
async fn configure_network(
    client: Client,
    config: KubeletConfig,
    agent: Arc<node::NodeAgent>,
    shutdown: CancellationToken,
) {
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    // Without iptables-restore the bridge plugin keeps masquerading (and pod traffic between
    // nodes is NATed).
    let kubelet_masquerades = tokio::task::spawn_blocking(hostgw::Commands::can_masquerade)
        .await
        .unwrap_or(false);
    loop {
        let cidr = match &config.pod_cidr {
            Some(c) => Some(c.clone()),
            None => nodes
                .get_opt(&config.node_name)
                .await
                .ok()
                .flatten()
                .and_then(|n| n.spec.and_then(|s| s.pod_cidr)),
        };
        if let Some(cidr) = cidr {
            match cni::write(
                &config.cni_conf_dir(),
                &cidr,
                &config.root_dir.join("cni/ipam"),
                !kubelet_masquerades,
            ) {
                Ok(changed) => {
                    if changed {
                        tracing::info!(pod_cidr = %cidr, "configured the pod network");
                    }
                    if kubelet_masquerades {
                        tokio::spawn(hostgw::run_routes(
                            client.clone(),
                            config.node_name.clone(),
                            cidr.clone(),
                            config.network.clone(),
                            Arc::new(hostgw::Commands),
                            shutdown.clone(),
                        ));
                    }
                    // The runtime notices the configuration within a moment.
                    for _ in 0..50 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if agent.report_status(false).await.is_ok() && agent.is_ready() {
                            break;
                        }
                    }
                    return;
                }
                Err(err) => tracing::error!(error = %err, "writing the CNI configuration failed"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Why the kubelet failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{action} failed ({path})")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kubelet API's address could not be bound.
    #[error("binding the kubelet API on {address} failed")]
    Bind {
        /// The address.
        address: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The container runtime did not come up.
    #[error("the container runtime at {endpoint} did not answer within {waited:?}")]
    RuntimeNotReady {
        /// The endpoint.
        endpoint: String,
        /// How long we waited.
        waited: Duration,
    },
    /// A CRI call failed.
    #[error(transparent)]
    Cri(skiff_cri::Error),
    /// An API call failed.
    #[error("{action} failed")]
    Api {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// An image archive could not be read.
    #[error("reading image archive {path} failed")]
    ImageArchive {
        /// The archive.
        path: PathBuf,
        /// The cause.
        #[source]
        source: skiff_oci::Error,
    },
    /// Importing an image archive failed.
    #[error("importing image archive {path} failed: {message}")]
    Import {
        /// The archive.
        path: PathBuf,
        /// What ctr said.
        message: String,
    },
    /// Something the kubelet built was not valid (a bug, or bad configuration).
    #[error("invalid {0}")]
    Invalid(String),
}

#[cfg(test)]
pub(crate) mod tests {
    use super::config::{KubeletConfig, RuntimeEndpoint};

    /// A configuration for unit tests.
    pub(crate) fn config() -> KubeletConfig {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(std::sync::Arc::new(
                rustls::server::ResolvesServerCertUsingSni::new(),
            ));
        KubeletConfig {
            node_name: "node-1".into(),
            root_dir: "/tmp/skiff-unit/agent".into(),
            runtime: RuntimeEndpoint::Managed,
            node_ip: "192.0.2.10".parse().unwrap(),
            pod_cidr: Some("10.42.0.0/24".into()),
            cluster_dns: vec!["10.43.0.10".parse().unwrap()],
            cluster_domain: "cluster.local".into(),
            node_labels: Default::default(),
            node_taints: Vec::new(),
            listen: "0.0.0.0:10250".parse().unwrap(),
            tls: std::sync::Arc::new(tls),
            max_pods: 110,
            cni_bin_dir: "/usr/lib/cni".into(),
            lease_interval: std::time::Duration::from_secs(10),
            status_report_interval: std::time::Duration::from_secs(60),
            version: "v1.35.0-skiff".into(),
            manifest_check_interval: std::time::Duration::from_secs(20),
            cloud: Default::default(),
            network: Default::default(),
            eviction_hard: Default::default(),
            eviction_pressure_transition_period: std::time::Duration::from_secs(300),
            eviction_soft: crate::pressure::Thresholds::none(),
            eviction_max_pod_grace_period: std::time::Duration::ZERO,
        }
    }
}
