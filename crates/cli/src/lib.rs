//! Skiff's command tree. `main.rs` parses [`Cli`] and calls [`run`]; each subcommand lives in
//! its own module and wires library components into one tokio runtime.

pub mod components;
pub mod hollow;
pub mod scheduler;
pub mod server;

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
    /// Run the control plane (API server on the embedded store).
    Server(server::ServerArgs),
    /// Run the scheduler against an API server.
    Scheduler(scheduler::SchedulerArgs),
    /// Simulate nodes: register them, keep their Leases alive and report their pods Running
    /// without running containers (for scale tests and scheduling rehearsals).
    HollowNodes(hollow::HollowArgs),
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
    /// Hollow nodes stopped with an error.
    #[error("hollow nodes failed")]
    Hollow(#[source] skiff_hollow::Error),
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
        Command::Server(args) => server::run(args).await,
        Command::Scheduler(args) => scheduler::run(args).await,
        Command::HollowNodes(args) => hollow::run(args).await,
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
