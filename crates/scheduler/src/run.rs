//! Running the scheduler: validate the profiles, serve metrics, then — as leader of the
//! `kube-system/kube-scheduler` Lease, unless leader election is off — build informers, cache,
//! queue and profiles and schedule until leadership or the process ends. Losing the lease stops
//! the loop and its informers; winning it again starts from fresh caches.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use k8s_openapi::api::core::v1::Node;
use skiff_runtime::events::Recorder;
use skiff_runtime::leader::LeaderElection;
use skiff_runtime::{CancellationToken, Informer, Informers};

use crate::Error;
use crate::cache::Cache;
use crate::config::SchedulerConfiguration;
use crate::framework::events::Resource;
use crate::framework::{Activator, Framework, Handle, Listers, WaitingPods};
use crate::handlers;
use crate::metrics::{self, Metrics};
use crate::queue::{Nominator, SchedulingQueue};
use crate::registry::Registry;
use crate::scheduler::{Scheduler, Shared};

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The configuration (defaults when not given a file).
    pub config: SchedulerConfiguration,
    /// Where the configuration came from, for messages.
    pub config_path: Option<String>,
    /// Where to serve `/metrics` (`None`: not at all).
    pub metrics_address: Option<SocketAddr>,
    /// Override `leaderElection.leaderElect`.
    pub leader_elect: Option<bool>,
    /// The leader election identity (default `<hostname>_<uuid>`).
    pub identity: Option<String>,
}

/// Resolve every profile once against a test handle, so configuration errors stop startup.
fn check_profiles(options: &Options, registry: &Registry) -> Result<(), Error> {
    let mut problems = Vec::new();
    for p in options.config.profiles() {
        if let Err(e) = Framework::new(&p, registry, Handle::for_tests()) {
            problems.extend(e);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Config {
            path: options
                .config_path
                .clone()
                .unwrap_or_else(|| "(defaults)".into()),
            problems,
        })
    }
}

/// Run the scheduler until `shutdown`. Returns once validation fails, or after shutdown.
/// `ready` (if given) receives the metrics address once it is serving.
pub async fn run(
    client: kube::Client,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let registry = Registry::in_tree();
    check_profiles(&options, &registry)?;
    let metrics = Arc::new(Metrics::default());
    if let Some(address) = options.metrics_address {
        let bound = metrics::serve(address, metrics.clone(), shutdown.clone())
            .await
            .map_err(|source| Error::Metrics { address, source })?;
        tracing::info!(address = %bound, "serving scheduler metrics");
    }
    let le = options.config.leader_election();
    let elect = options.leader_elect.unwrap_or(le.leader_elect);
    if !elect {
        metrics.leader.store(true, Ordering::Relaxed);
        lead(client, &options.config, &registry, metrics, shutdown).await;
        return Ok(());
    }
    let identity = options
        .identity
        .clone()
        .unwrap_or_else(LeaderElection::default_identity);
    let mut election = LeaderElection::new(
        client.clone(),
        le.resource_namespace.as_deref().unwrap_or("kube-system"),
        le.resource_name.as_deref().unwrap_or("kube-scheduler"),
        identity,
    );
    if let Some(d) = le
        .lease_duration
        .as_deref()
        .and_then(|d| skiff_api::duration::parse_go(d).ok())
    {
        election.lease_duration = d;
    }
    if let Some(d) = le
        .renew_deadline
        .as_deref()
        .and_then(|d| skiff_api::duration::parse_go(d).ok())
    {
        election.renew_deadline = d;
    }
    if let Some(d) = le
        .retry_period
        .as_deref()
        .and_then(|d| skiff_api::duration::parse_go(d).ok())
    {
        election.retry_period = d;
    }
    let config = options.config.clone();
    election
        .run(shutdown, move |term| {
            let (client, config, registry, metrics) = (
                client.clone(),
                config.clone(),
                registry.clone(),
                metrics.clone(),
            );
            async move {
                metrics.leader.store(true, Ordering::Relaxed);
                lead(client, &config, &registry, metrics.clone(), term).await;
                metrics.leader.store(false, Ordering::Relaxed);
            }
        })
        .await;
    Ok(())
}

/// Schedule as leader until `stop`.
async fn lead(
    client: kube::Client,
    config: &SchedulerConfiguration,
    registry: &Registry,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let informers = Informers::new(client.clone(), stop.clone());
    let listers = Arc::new(Listers::from_informers(&informers));
    let nodes: Informer<Node> = informers.get();
    let nominator = Arc::new(Nominator::default());
    let waiting = Arc::new(WaitingPods::default());
    let activator = Arc::new(Activator::default());
    let mut profiles = HashMap::new();
    let mut recorders = HashMap::new();
    for p in config.profiles() {
        let name = p.name().to_owned();
        let recorder = Recorder::new(client.clone(), &name, None);
        let handle = Handle {
            listers: listers.clone(),
            client: Some(client.clone()),
            nominator: nominator.clone(),
            recorder: Some(recorder.clone()),
            scheduler_name: name.clone(),
            waiting: waiting.clone(),
            activator: activator.clone(),
        };
        match Framework::new(&p, registry, handle) {
            Ok(f) => {
                profiles.insert(name.clone(), Arc::new(f));
                recorders.insert(name, recorder);
            }
            // Already validated at startup; a failure here is a bug in a plugin factory.
            Err(problems) => {
                tracing::error!(profile = %name, ?problems, "building the profile failed");
                return;
            }
        }
    }
    let queue = Arc::new(SchedulingQueue::new(
        profiles.clone(),
        nominator,
        config.initial_backoff(),
        config.max_backoff(),
    ));
    activator.attach(&queue);
    metrics.set_queue(&queue);
    let shared = Arc::new(Shared::new(
        Arc::new(Cache::new()),
        queue,
        profiles,
        listers.clone(),
        metrics,
        Some(client),
        recorders,
        config.percentage_of_nodes_to_score.unwrap_or(0),
    ));
    let pods_primed = handlers::follow(
        &listers.pods,
        shared.clone(),
        stop.clone(),
        handlers::on_pod,
        handlers::resync_pods,
    );
    let nodes_primed = handlers::follow(
        &nodes,
        shared.clone(),
        stop.clone(),
        handlers::on_node,
        handlers::resync_nodes,
    );
    handlers::follow_events(
        &listers.pvcs,
        shared.clone(),
        stop.clone(),
        Resource::PersistentVolumeClaim,
    );
    handlers::follow_events(
        &listers.pvs,
        shared.clone(),
        stop.clone(),
        Resource::PersistentVolume,
    );
    handlers::follow_events(
        &listers.storage_classes,
        shared.clone(),
        stop.clone(),
        Resource::StorageClass,
    );
    handlers::follow_events(
        &listers.csi_drivers,
        shared.clone(),
        stop.clone(),
        Resource::CsiDriver,
    );
    handlers::follow_events(
        &listers.csi_storage_capacities,
        shared.clone(),
        stop.clone(),
        Resource::CsiStorageCapacity,
    );
    handlers::follow_events(
        &listers.namespaces,
        shared.clone(),
        stop.clone(),
        Resource::Namespace,
    );
    handlers::follow_events(
        &listers.services,
        shared.clone(),
        stop.clone(),
        Resource::Service,
    );
    // Plugins read the other listers during a cycle: all of them must have listed too.
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = async {
            listers.wait_synced().await;
            let _ = nodes_primed.await;
            let _ = pods_primed.await;
        } => {}
    }
    tracing::info!(
        nodes = shared.cache.node_count(),
        "scheduler caches synced; scheduling"
    );
    Scheduler::new(shared).run(stop).await;
}
