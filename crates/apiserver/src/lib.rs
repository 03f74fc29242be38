//! Skiff's API server: the Kubernetes REST API over Skiff's store.
//!
//! - [`server`]: TLS, authentication and routing; [`discovery`] and [`openapi`] documents.
//! - [`handlers`]: one generic implementation of every verb, driven by the [`registry`] of
//!   kinds (built-ins from `skiff-kinds`, custom resources from [`crd`]).
//! - [`objects`]: key layout and `resourceVersion` = store revision.
//! - [`state`]: per-resource hooks that need storage (namespaces, Service allocation, CRDs).
//!
//! The API server is the only component that talks to the store; every other component is a
//! client of this API.

pub mod admission;
pub mod allocator;
pub mod apply;
pub mod bootstrap;
pub mod crd;
pub mod discovery;
pub mod encryption;
pub mod endpoints;
pub mod enroll;
pub mod error;
pub mod fieldvalidation;
pub mod handlers;
pub mod health;
pub mod jsonpath;
pub mod managed;
pub mod nodeproxy;
pub mod objects;
pub mod openapi;
pub mod openapi_proto;
pub mod output;
pub mod patch;
pub mod priority;
pub mod registry;
pub mod request;
pub mod schema;
pub mod server;
pub mod serviceaccount;
pub mod snapshot;
pub mod state;
pub mod time;
pub mod tokenrequest;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use skiff_store::Store;

use crate::allocator::{Allocator, Cidr};
use crate::objects::Objects;
use crate::registry::Registry;
use crate::server::{Front, Identity};
use crate::state::{Settings, State};

/// The version Skiff reports: the Kubernetes API level it serves.
pub const GIT_VERSION: &str = "v1.35.0-skiff";

/// Why the API server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding the listen address failed.
    #[error("binding {address} failed")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Creating the default objects failed.
    #[error("bootstrapping default objects failed: {0}")]
    Bootstrap(error::ApiError),
}

/// API server configuration.
pub struct Config {
    /// Listen address.
    pub bind: SocketAddr,
    /// Address advertised to clients and in the `kubernetes` endpoints.
    pub advertise_address: Ipv4Addr,
    /// Service CIDR for ClusterIPs.
    pub service_cidr: Cidr,
    /// TLS settings (serving certificate, client CA).
    pub tls: Arc<rustls::ServerConfig>,
    /// Bearer tokens and who they authenticate.
    pub tokens: Vec<(String, Identity)>,
    /// Signs and verifies service-account tokens.
    pub service_accounts: Option<Arc<skiff_pki::TokenSigner>>,
    /// Lets nodes join with the join token (`skiff agent`).
    pub enrollment: Option<enroll::Enrollment>,
    /// How long this server's endpoint lease lasts without renewal (see [`endpoints`]).
    pub endpoint_lease_duration: std::time::Duration,
    /// TLS to kubelets (the kubelet-client certificate and the cluster CA) for the
    /// node-proxied subresources; `None` answers them 503.
    pub kubelet_client: Option<Arc<rustls::ClientConfig>>,
}

/// A started API server.
pub struct ApiServer {
    /// The shared state (for in-process components and tests).
    pub state: Arc<State>,
    /// The bound address.
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    reconciler: Arc<endpoints::LeaseReconciler>,
    reconciling: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Bind, bootstrap and start serving until `shutdown` resolves.
    pub async fn start(
        config: Config,
        store: Arc<dyn Store>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<ApiServer, Error> {
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| Error::Bind {
                address: config.bind,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            address: config.bind,
            source,
        })?;
        let registry = Registry::new(skiff_kinds::builtin());
        let allocator = Allocator::new(store.clone(), config.service_cidr);
        let settings = Settings {
            advertise_address: config.advertise_address,
            port: local_addr.port(),
            service_accounts: config.service_accounts.clone(),
            kubelet_client: config.kubelet_client.clone(),
        };
        let state = Arc::new(State::new(registry, Objects { store }, allocator, settings));
        let mut front = Front::new(state.clone(), config.tokens, GIT_VERSION.to_owned());
        front.enrollment = config.enrollment;
        let front = Arc::new(front);
        let task = tokio::spawn(server::serve(front.clone(), listener, config.tls, shutdown));
        bootstrap::follow_crds(state.clone())
            .await
            .map_err(Error::Bootstrap)?;
        bootstrap::run(&state).await.map_err(Error::Bootstrap)?;
        let reconciler = Arc::new(endpoints::LeaseReconciler::new(
            state.clone(),
            config.endpoint_lease_duration,
        ));
        if let Err(e) = reconciler.round().await {
            tracing::warn!(error = %e.message, "reconciling the kubernetes endpoints failed");
        }
        let reconciling = tokio::spawn(reconciler.clone().run());
        front.ready.store(true, Ordering::Release);
        tracing::info!(address = %local_addr, "API server ready");
        Ok(ApiServer {
            state,
            local_addr,
            task,
            reconciler,
            reconciling,
        })
    }

    /// Wait until the server has stopped (after shutdown), then withdraw this server from the
    /// `kubernetes` endpoints.
    pub async fn stopped(self) {
        let _ = self.task.await;
        self.reconciling.abort();
        let leave = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.reconciler.remove_self(),
        );
        match leave.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e.message, "leaving the kubernetes endpoints"),
            Err(_) => tracing::warn!("leaving the kubernetes endpoints timed out"),
        }
    }
}
