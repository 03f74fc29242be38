//! Client-side machinery shared by every Skiff component that is a client of the API server:
//! the scheduler, the controllers, the kubelet, the proxy and DNS.
//!
//! The pieces follow client-go and kube-rs:
//! - [`informer`]: list + watch one kind into a local cache and fan changes out to subscribers
//!   ([`informer::Informers`] shares one cache per kind and selector inside a process);
//! - [`queue`]: a de-duplicating work queue with delayed and rate-limited (exponential backoff)
//!   re-adds, where one key is never processed by two workers at once;
//! - [`controller`]: the loop that drives a [`controller::Reconciler`] from a queue;
//! - [`leader`]: leader election through a `coordination.k8s.io` Lease;
//! - [`events`]: an Event recorder with upstream's de-duplication (count/series);
//! - [`client`]: building a client from a kubeconfig file;
//! - [`balancer`]: a loopback TCP balancer over several API servers, for agents;
//! - [`registry`]: name-keyed descriptors of control loops and `--controllers` selection;
//! - [`expectations`]: creations and deletions a controller waits to observe;
//! - [`owner`]: controller references, adoption and release;
//! - [`discovery`]: every served resource, and kind → resource mapping.
//!
//! Nothing here knows about a particular component; components depend on this crate and never
//! on each other.

pub mod balancer;
pub mod client;
pub mod controller;
pub mod discovery;
pub mod events;
pub mod expectations;
pub mod informer;
pub mod key;
pub mod leader;
pub mod owner;
pub mod queue;
pub mod registry;

pub use controller::{Action, Reconciler};
pub use informer::{Change, Informer, Informers};
pub use key::ObjectKey;
pub use queue::WorkQueue;
pub use tokio_util::sync::CancellationToken;

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or parsing a kubeconfig file failed.
    #[error("loading kubeconfig {path} failed")]
    Kubeconfig {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Building a client from a configuration failed.
    #[error("building an API client failed")]
    Client(#[source] kube::Error),
    /// An API call failed.
    #[error("{action} failed")]
    Api {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
