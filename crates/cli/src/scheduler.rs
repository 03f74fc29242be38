//! `skiff scheduler`: the scheduler as its own process against any API server, and the flags
//! `skiff server` uses to run the same scheduler in-process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use skiff_runtime::CancellationToken;
use skiff_scheduler::{Options, SchedulerConfiguration};

use crate::Error;

/// Flags of `skiff scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Kubeconfig of the API server to schedule for.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// A KubeSchedulerConfiguration file (profiles, plugins, weights).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address of the plain-HTTP `/metrics` endpoint ("" to disable).
    #[arg(long, default_value = "127.0.0.1:10259")]
    pub metrics_address: String,
    /// Elect a leader through the `kube-system/kube-scheduler` Lease (overrides the file).
    #[arg(long)]
    pub leader_elect: Option<bool>,
}

/// Load the configuration file (defaults without one) and parse the metrics address.
pub fn options(config: Option<&Path>, metrics_address: &str) -> Result<Options, Error> {
    let (config, config_path) = match config {
        Some(path) => (
            SchedulerConfiguration::load(path).map_err(Error::Scheduler)?,
            Some(path.display().to_string()),
        ),
        None => (SchedulerConfiguration::default(), None),
    };
    let metrics_address = if metrics_address.is_empty() {
        None
    } else {
        Some(metrics_address.parse::<SocketAddr>().map_err(|e| {
            Error::Config(vec![format!(
                "--metrics-address: {metrics_address:?} is not an address (e.g. 127.0.0.1:10259): {e}"
            )])
        })?)
    };
    Ok(Options {
        config,
        config_path,
        metrics_address,
        leader_elect: None,
        identity: None,
    })
}

/// Connect with `kubeconfig` and schedule until `shutdown`.
pub async fn run_with(
    kubeconfig: PathBuf,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let client = skiff_runtime::client::from_kubeconfig(&kubeconfig)
        .await
        .map_err(Error::Client)?;
    skiff_scheduler::run(client, options, shutdown)
        .await
        .map_err(Error::Scheduler)
}

/// Run `skiff scheduler` until SIGTERM/SIGINT.
pub async fn run(args: SchedulerArgs) -> Result<(), Error> {
    let mut options = options(args.config.as_deref(), &args.metrics_address)?;
    options.leader_elect = args.leader_elect;
    let shutdown = CancellationToken::new();
    let stopper = shutdown.clone();
    tokio::spawn(async move {
        crate::server::shutdown_signal().await;
        stopper.cancel();
    });
    run_with(args.kubeconfig, options, shutdown).await
}
