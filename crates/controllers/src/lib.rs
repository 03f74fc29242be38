//! Skiff's controller manager: the control loops that make the cluster's actual state match
//! the state users asked for, each a client of the API server like any other.
//!
//! Every loop is one module with its own tests and registers a [`Descriptor`] in
//! [`registry`]; [`manager::run`] resolves `--controllers`, campaigns for the
//! `kube-system/kube-controller-manager` Lease and, while it leads, runs the selected loops
//! on shared informers. The cloud-controller roles (node initialization, node lifecycle,
//! routes, load balancers) are loops of the same registry, written against the
//! [`cloud::CloudProvider`] trait. All loops are built on `skiff-runtime` (informers, work queues,
//! expectations, the reconcile runner, the event recorder).

pub mod claim;
pub mod cloud;
pub mod config;
pub mod context;
pub mod cron;
pub mod hash;
pub mod history;
pub mod manager;
pub mod pods;

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod garbagecollector;
pub mod hpa;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod persistentvolume;
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
pub mod rootcacert;
pub mod serviceaccount;
pub mod statefulset;
pub mod tainteviction;
pub mod ttlafterfinished;

pub use config::Config;
pub use context::Context;

use skiff_runtime::registry::{Descriptor, Registry, RegistryError};

/// Why a control loop's step failed. Reconcilers return it and are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{action} failed")]
    Api {
        /// What was being done (`updating status of ReplicaSet default/web`).
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The shared runtime failed (discovery, client construction).
    #[error("controller runtime failed")]
    Runtime(#[source] skiff_runtime::Error),
    /// The cloud provider could not be built.
    #[error("starting the cloud provider failed")]
    CloudProvider(#[source] cloud::CloudError),
    /// The controller registry or `--controllers` is inconsistent.
    #[error("selecting controllers failed")]
    Registry(#[source] RegistryError),
    /// An object cannot be acted on as it is (an invalid selector, say); retried when it
    /// changes.
    #[error("{object}: {message}")]
    Invalid {
        /// The object.
        object: String,
        /// What is wrong.
        message: String,
    },
    /// A cloud provider call failed.
    #[error("{action} failed")]
    Cloud {
        /// What was being done (`ensuring load balancer of service default/web`).
        action: String,
        /// The cause.
        #[source]
        source: cloud::CloudError,
    },
    /// Encoding an object failed.
    #[error("encoding {what} failed")]
    Encode {
        /// What was encoded.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaching what was being done to a failed API call.
pub(crate) trait During<T> {
    fn during(self, action: impl FnOnce() -> String) -> Result<T>;

    /// Like [`During::during`], but an object already gone counts as done (a finalizer or
    /// status write racing the object's deletion).
    fn done_if_gone(self, action: impl FnOnce() -> String) -> Result<()>;
}

impl<T> During<T> for Result<T, kube::Error> {
    fn during(self, action: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Api {
            action: action(),
            source,
        })
    }

    fn done_if_gone(self, action: impl FnOnce() -> String) -> Result<()> {
        match self {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e).during(action),
        }
    }
}

/// Whether an API error is a 404.
pub(crate) fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

/// Whether an API error is a 409 (conflict or already exists).
pub(crate) fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409)
}

/// Every control loop, under upstream's names (and short aliases).
pub fn registry() -> Result<Registry<Context>> {
    let mut r = Registry::new();
    let all = [
        Descriptor::new(
            "replicaset-controller",
            &["replicaset"],
            replicaset::start_replicasets,
        ),
        Descriptor::new(
            "replicationcontroller-controller",
            &["replicationcontroller"],
            replicaset::start_replication_controllers,
        ),
        Descriptor::new("deployment-controller", &["deployment"], deployment::start),
        Descriptor::new(
            "statefulset-controller",
            &["statefulset"],
            statefulset::start,
        ),
        Descriptor::new("daemonset-controller", &["daemonset"], daemonset::start),
        Descriptor::new("job-controller", &["job"], job::start),
        Descriptor::new("cronjob-controller", &["cronjob"], cronjob::start),
        Descriptor::new(
            "garbage-collector-controller",
            &["garbagecollector"],
            garbagecollector::start,
        ),
        Descriptor::new("namespace-controller", &["namespace"], namespace::start),
        Descriptor::new(
            "serviceaccount-controller",
            &["serviceaccount"],
            serviceaccount::start,
        ),
        Descriptor::new(
            "root-ca-certificate-publisher-controller",
            &["root-ca-cert-publisher"],
            rootcacert::start,
        ),
        Descriptor::new("endpoints-controller", &["endpoint"], endpoints::start),
        Descriptor::new(
            "endpointslice-controller",
            &["endpointslice"],
            endpointslice::start,
        ),
        Descriptor::new(
            "node-lifecycle-controller",
            &["nodelifecycle"],
            nodelifecycle::start,
        ),
        Descriptor::new(
            "taint-eviction-controller",
            &["taint-eviction"],
            tainteviction::start,
        ),
        Descriptor::new("node-ipam-controller", &["nodeipam"], nodeipam::start),
        Descriptor::new("pod-garbage-collector-controller", &["podgc"], podgc::start),
        Descriptor::new(
            "ttl-after-finished-controller",
            &["ttl-after-finished"],
            ttlafterfinished::start,
        ),
        Descriptor::new(
            "resourcequota-controller",
            &["resourcequota"],
            resourcequota::start,
        ),
        Descriptor::new("disruption-controller", &["disruption"], disruption::start),
        Descriptor::new(
            "persistentvolume-binder-controller",
            &["persistentvolume-binder"],
            persistentvolume::start,
        ),
        Descriptor::new(
            "horizontal-pod-autoscaler-controller",
            &["horizontalpodautoscaling"],
            hpa::start,
        ),
        // The cloud-controller roles, under the names and aliases upstream's
        // cloud-controller-manager gives them.
        Descriptor::new(cloud::node::NAME, &["cloud-node"], cloud::node::start),
        Descriptor::new(
            cloud::nodelifecycle::NAME,
            &["cloud-node-lifecycle"],
            cloud::nodelifecycle::start,
        ),
        Descriptor::new(cloud::route::NAME, &["route"], cloud::route::start),
        Descriptor::new(cloud::service::NAME, &["service"], cloud::service::start),
    ];
    for d in all {
        r.register(d).map_err(Error::Registry)?;
    }
    Ok(r)
}
