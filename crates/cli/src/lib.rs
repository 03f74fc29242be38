//! Skiff's command tree. `main.rs` parses [`Cli`] and calls [`run`]; each subcommand lives in
//! its own module and wires library components into one tokio runtime.

pub mod agent;
pub mod components;
pub mod controller_manager;
pub mod hollow;
pub mod images;
pub mod scheduler;
pub mod server;
pub mod snapshot;

use clap::{Parser, Subcommand};

/// Skiff: a small, fast Kubernetes-compatible orchestrator.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (API server on the embedded store or on etcd).
    Server(Box<server::ServerArgs>),
    /// Join a cluster as a worker node: run a kubelet (and its containerd) here.
    Agent(agent::AgentArgs),
    /// Run the controller manager (the control loops) against an API server.
    ControllerManager(controller_manager::ControllerManagerArgs),
    /// Run the scheduler against an API server.
    Scheduler(scheduler::SchedulerArgs),
    /// Simulate nodes: register them, keep their Leases alive and report their pods Running
    /// without running containers (for scale tests and scheduling rehearsals).
    HollowNodes(hollow::HollowArgs),
    /// Manage images on this node without a registry.
    Images(images::ImagesArgs),
    /// Save a running server's store to a file, or restore one into a data directory.
    Snapshot(snapshot::SnapshotArgs),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The arguments do not make a valid configuration.
    #[error("invalid configuration:\n{}", .0.join("\n"))]
    Config(Vec<String>),
    /// Preparing the data directory failed.
    #[error("preparing data directory {path} failed")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Setting up certificates and credentials failed.
    #[error("setting up cluster credentials failed")]
    Pki(#[source] skiff_pki::Error),
    /// Opening the store failed.
    #[error("opening the store failed")]
    Store(#[source] skiff_store::Error),
    /// The API server failed to start.
    #[error("starting the API server failed")]
    ApiServer(#[source] skiff_apiserver::Error),
    /// Building an API client failed.
    #[error("connecting to the API server failed")]
    Client(#[source] skiff_runtime::Error),
    /// An image operation failed.
    #[error("{0}")]
    Images(String),
    /// Joining the cluster failed.
    #[error("joining the cluster failed: {0}")]
    Join(String),
    /// The kubelet stopped with an error.
    #[error("the kubelet failed")]
    Kubelet(#[source] skiff_kubelet::Error),
    /// Hollow nodes stopped with an error.
    #[error("hollow nodes failed")]
    Hollow(#[source] skiff_hollow::Error),
    /// The controller manager failed.
    #[error("the controller manager failed")]
    Controllers(#[source] skiff_controllers::Error),
    /// Saving or restoring a snapshot failed.
    #[error("snapshot failed: {0}")]
    Snapshot(String),
    /// The scheduler failed.
    #[error("the scheduler failed")]
    Scheduler(#[source] skiff_scheduler::Error),
}

impl Error {
    /// The process exit code: 2 for usage/configuration errors, 1 for runtime failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Scheduler(skiff_scheduler::Error::Config { .. }) => 2,
            _ => 1,
        }
    }
}

/// Run a parsed command to completion.
pub async fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Server(args) => server::run(*args).await,
        Command::ControllerManager(args) => controller_manager::run(args).await,
        Command::Scheduler(args) => scheduler::run(args).await,
        Command::HollowNodes(args) => hollow::run(args).await,
        Command::Agent(args) => agent::run(args).await,
        Command::Images(args) => images::run(args).await,
        Command::Snapshot(args) => match args.command {
            snapshot::SnapshotCommand::Save(args) => {
                let saved = snapshot::save(args).await?;
                println!("snapshot saved to {saved}");
                Ok(())
            }
            snapshot::SnapshotCommand::Restore(args) => {
                let dir = args.data_dir.clone();
                let restored = snapshot::restore(args)?;
                println!(
                    "restored {} keys into {} at revision {}; start it with `skiff server --data-dir {}`",
                    restored.keys,
                    dir.join("db").display(),
                    restored.revision,
                    dir.display()
                );
                Ok(())
            }
        },
    }
}

/// An error with its sources: `a: b: c`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}
