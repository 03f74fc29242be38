//! Running the controller manager: resolve `--controllers` against the registry (so a bad
//! name fails at start-up), then — when leader election is on — campaign for the
//! `kube-system/kube-controller-manager` Lease and run the selected loops only while leading.
//! Each leadership term gets fresh informers; losing the lease cancels the term, every loop
//! winds down, and the process campaigns again.

use std::sync::Arc;

use kube::Client;
use skiff_runtime::CancellationToken;
use skiff_runtime::leader::LeaderElection;
use skiff_runtime::registry::Descriptor;

use crate::cloud::CloudProvider;
use crate::{Config, Context, Error, Result};

/// The Lease upstream's kube-controller-manager elects with.
pub const LEASE_NAMESPACE: &str = "kube-system";
/// Its name.
pub const LEASE_NAME: &str = "kube-controller-manager";

/// The loops that need the cloud provider.
pub const CLOUD_LOOPS: [&str; 4] = [
    crate::cloud::node::NAME,
    crate::cloud::nodelifecycle::NAME,
    crate::cloud::route::NAME,
    crate::cloud::service::NAME,
];

/// Run until `stop`.
pub async fn run(client: Client, config: Config, stop: CancellationToken) -> Result<()> {
    let selected = crate::registry()?
        .select(&config.controllers)
        .map_err(Error::Registry)?;
    let names: Vec<&str> = selected.iter().map(|d| d.name).collect();
    tracing::info!(controllers = ?names, "controller manager starting");
    // One provider for the process: it may hold connections or caches worth keeping across
    // leadership terms. Built only when a cloud loop runs.
    let cloud = if names.iter().any(|n| CLOUD_LOOPS.contains(n)) {
        let provider = crate::cloud::build(&config.cloud.provider, client.clone())
            .map_err(Error::CloudProvider)?;
        tracing::info!(provider = provider.name(), "cloud provider ready");
        Some(provider)
    } else {
        None
    };
    let config = Arc::new(config);
    if !config.leader_elect {
        run_term(client, config, cloud, selected, stop).await;
        return Ok(());
    }
    let mut election = LeaderElection::new(
        client.clone(),
        LEASE_NAMESPACE,
        LEASE_NAME,
        LeaderElection::default_identity(),
    );
    election.lease_duration = config.lease_duration;
    election.renew_deadline = config.renew_deadline;
    election.retry_period = config.retry_period;
    election
        .run(stop, move |term| {
            run_term(
                client.clone(),
                config.clone(),
                cloud.clone(),
                selected.clone(),
                term,
            )
        })
        .await;
    Ok(())
}

/// Run every selected loop until `term` is cancelled.
async fn run_term(
    client: Client,
    config: Arc<Config>,
    cloud: Option<Arc<dyn CloudProvider>>,
    selected: Vec<Descriptor<Context>>,
    term: CancellationToken,
) {
    let ctx = Context::new(client, config, term.clone()).with_cloud(cloud);
    let mut tasks = tokio::task::JoinSet::new();
    for d in selected {
        let fut = (d.start)(ctx.clone());
        let name = d.name;
        tasks.spawn(async move {
            fut.await;
            name
        });
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(name) if !term.is_cancelled() => {
                tracing::warn!(controller = name, "controller stopped unexpectedly")
            }
            Ok(name) => tracing::debug!(controller = name, "controller stopped"),
            Err(err) => tracing::error!(error = %err, "controller panicked"),
        }
    }
    term.cancel();
    tracing::info!("controllers stopped");
}
