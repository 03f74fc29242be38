//! Skiff's scheduler: upstream kube-scheduler's design as a client of the API server.
//!
//! - [`framework`]: the extension-point traits, [`framework::Status`], cycle state, cluster
//!   events, and [`framework::Framework`] (one profile's resolved plugins);
//! - [`registry`] and [`config`]: plugins by name, and `KubeSchedulerConfiguration` profiles;
//! - [`plugins`]: upstream's default plugins under upstream's names;
//! - [`cache`] and [`nodeinfo`]: nodes, pods and assumed pods; per-cycle snapshots;
//! - [`memo`]: per-node results kept across cycles, recomputed for changed nodes only;
//! - [`queue`]: the active/backoff/unschedulable scheduling queue and the nominator;
//! - [`scheduler`]: the scheduling and binding cycles; [`diagnosis`]: failure messages;
//! - [`handlers`]: informer changes into cache, queue and cluster events;
//! - [`metrics`]: Prometheus metrics on `/metrics`;
//! - [`run`]: everything wired together behind Lease leader election.
//!
//! The scheduler talks to the cluster only through the API (skiff-runtime informers, the
//! `pods/binding` subresource, status patches and Events).

pub mod cache;
pub mod config;
pub mod diagnosis;
pub mod framework;
pub mod handlers;
pub mod helpers;
pub mod memo;
pub mod metrics;
pub mod nodeinfo;
pub mod plugins;
pub mod queue;
pub mod registry;
pub mod resources;
pub mod scheduler;

mod run;

pub use config::SchedulerConfiguration;
pub use run::{Options, run};

/// Why the scheduler could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("reading scheduler configuration {path} failed")]
    ReadConfig {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid scheduler configuration {path}:\n{}", .problems.join("\n"))]
    Config {
        /// Where it came from.
        path: String,
        /// Every problem found.
        problems: Vec<String>,
    },
    /// The metrics endpoint could not listen.
    #[error("serving scheduler metrics on {address} failed")]
    Metrics {
        /// The address.
        address: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
