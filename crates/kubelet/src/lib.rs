//! The kubelet: Skiff's node agent.
//!
//! It registers the Node and keeps its status and Lease current ([`node`]), runs a container
//! runtime ([`containerd`], or uses an existing CRI runtime), and runs the pods bound to the
//! node ([`pod`]): each pod gets a worker that compares the pod spec with what the runtime
//! holds, plans the difference ([`pod::plan`]), carries it out through the CRI, and reports the
//! pod status ([`pod::status`]). The kubelet is a client of the API server like any other
//! component; the API server reaches it for logs, exec, attach and port-forward through its
//! HTTPS API ([`server`]).

pub mod config;
pub mod containerd;
pub mod images;
pub mod node;
pub mod pod;
pub mod sysinfo;

use std::path::PathBuf;
use std::time::Duration;

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
        }
    }
}
