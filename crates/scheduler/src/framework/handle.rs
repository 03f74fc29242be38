//! What plugins may use besides the snapshot: cached listers of the other kinds they read
//! (namespaces, workloads, volumes, disruption budgets), the API client for the plugins that
//! write (preemption, binding, volume binding), the nominator and the event recorder.

use std::sync::{Arc, OnceLock, Weak};

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolume, PersistentVolumeClaim, Pod, ReplicationController, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::{CSIDriver, CSIStorageCapacity, StorageClass};
use skiff_runtime::events::Recorder;
use skiff_runtime::{Informer, Informers};

use super::WaitingPods;
use crate::queue::{Nominator, SchedulingQueue};

/// Lets plugins hand back pods they held at PreEnqueue (upstream `Handle.Activate`). The queue
/// is built after the profiles, so it is attached once it exists.
#[derive(Default)]
pub struct Activator(OnceLock<Weak<SchedulingQueue>>);

impl Activator {
    /// Attach the queue.
    pub fn attach(&self, queue: &Arc<SchedulingQueue>) {
        let _ = self.0.set(Arc::downgrade(queue));
    }

    /// Ask the PreEnqueue plugins about a held pod again, and queue it if they let it through.
    pub fn release(&self, key: &str) {
        if let Some(queue) = self.0.get().and_then(Weak::upgrade) {
            queue.release_if_held(key);
        }
    }
}

/// Cached views of the kinds plugins read.
#[derive(Clone)]
pub struct Listers {
    /// Every pod (assigned or not).
    pub pods: Informer<Pod>,
    /// Namespaces (their labels, for namespace selectors).
    pub namespaces: Informer<Namespace>,
    /// Services (default topology spread selectors).
    pub services: Informer<Service>,
    /// ReplicaSets (default topology spread selectors).
    pub replica_sets: Informer<ReplicaSet>,
    /// StatefulSets (default topology spread selectors).
    pub stateful_sets: Informer<StatefulSet>,
    /// ReplicationControllers (default topology spread selectors).
    pub replication_controllers: Informer<ReplicationController>,
    /// Claims.
    pub pvcs: Informer<PersistentVolumeClaim>,
    /// Volumes.
    pub pvs: Informer<PersistentVolume>,
    /// Storage classes.
    pub storage_classes: Informer<StorageClass>,
    /// CSI drivers (whether a provisioner publishes storage capacity).
    pub csi_drivers: Informer<CSIDriver>,
    /// Storage capacity CSI drivers report per topology segment.
    pub csi_storage_capacities: Informer<CSIStorageCapacity>,
    /// Disruption budgets (preemption tries not to violate them).
    pub pdbs: Informer<PodDisruptionBudget>,
}

impl Listers {
    /// Listers no watch feeds (tests fill them through `Informer::handle`).
    pub fn detached() -> Listers {
        Listers {
            pods: Informer::detached(),
            namespaces: Informer::detached(),
            services: Informer::detached(),
            replica_sets: Informer::detached(),
            stateful_sets: Informer::detached(),
            replication_controllers: Informer::detached(),
            pvcs: Informer::detached(),
            pvs: Informer::detached(),
            storage_classes: Informer::detached(),
            csi_drivers: Informer::detached(),
            csi_storage_capacities: Informer::detached(),
            pdbs: Informer::detached(),
        }
    }

    /// Listers backed by shared informers.
    pub fn from_informers(informers: &Informers) -> Listers {
        Listers {
            pods: informers.get(),
            namespaces: informers.get(),
            services: informers.get(),
            replica_sets: informers.get(),
            stateful_sets: informers.get(),
            replication_controllers: informers.get(),
            pvcs: informers.get(),
            pvs: informers.get(),
            storage_classes: informers.get(),
            csi_drivers: informers.get(),
            csi_storage_capacities: informers.get(),
            pdbs: informers.get(),
        }
    }

    /// Wait until every lister has its first complete list.
    pub async fn wait_synced(&self) {
        self.pods.wait_synced().await;
        self.namespaces.wait_synced().await;
        self.services.wait_synced().await;
        self.replica_sets.wait_synced().await;
        self.stateful_sets.wait_synced().await;
        self.replication_controllers.wait_synced().await;
        self.pvcs.wait_synced().await;
        self.pvs.wait_synced().await;
        self.storage_classes.wait_synced().await;
        self.csi_drivers.wait_synced().await;
        self.csi_storage_capacities.wait_synced().await;
        self.pdbs.wait_synced().await;
    }
}

/// What a plugin factory receives.
#[derive(Clone)]
pub struct Handle {
    /// Cached listers.
    pub listers: Arc<Listers>,
    /// The API client (`None` in unit tests).
    pub client: Option<kube::Client>,
    /// Pods nominated to nodes by preemption.
    pub nominator: Arc<Nominator>,
    /// Event recorder (`None` in unit tests).
    pub recorder: Option<Recorder>,
    /// The profile's scheduler name.
    pub scheduler_name: String,
    /// Pods waiting at Permit.
    pub waiting: Arc<WaitingPods>,
    /// Gives held pods back to the queue.
    pub activator: Arc<Activator>,
}

impl Handle {
    /// A handle for unit tests: detached listers, no client.
    pub fn for_tests() -> Handle {
        Handle {
            listers: Arc::new(Listers::detached()),
            client: None,
            nominator: Arc::new(Nominator::default()),
            recorder: None,
            scheduler_name: "default-scheduler".into(),
            waiting: Arc::new(WaitingPods::default()),
            activator: Arc::new(Activator::default()),
        }
    }
}
