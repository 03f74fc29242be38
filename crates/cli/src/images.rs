//! `skiff images import FILE…`: put image archives (OCI layout or `docker save`) into a
//! node's container runtime, for machines without a registry. Archives dropped into
//! `<data-dir>/agent/images/` are imported by the kubelet at start instead.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::Error;

/// `skiff images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ImagesCommand,
}

/// Image subcommands.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Import image archives into this node's runtime.
    Import(ImportArgs),
}

/// Flags of `skiff images import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Archives to import (OCI image layout or `docker save` tarballs).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The node's data directory (its containerd socket is under `agent/containerd/`)
    /// [default: /var/lib/skiff as root, else ~/.local/share/skiff]
    #[arg(long, env = "SKIFF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The runtime's socket instead of the node's own containerd
    /// (e.g. unix:///run/containerd/containerd.sock).
    #[arg(long)]
    pub container_runtime_endpoint: Option<String>,
}

/// Import the archives; prints each image name imported.
pub async fn run(args: ImagesArgs) -> Result<(), Error> {
    let ImagesCommand::Import(args) = args.command;
    let socket = match &args.container_runtime_endpoint {
        Some(e) => skiff_cri::socket_path(e),
        None => args
            .data_dir
            .clone()
            .unwrap_or_else(crate::server::default_data_dir)
            .join("agent/containerd/containerd.sock"),
    };
    if !socket.exists() {
        return Err(Error::Images(format!(
            "no container runtime socket at {} (is the node running? use --data-dir or --container-runtime-endpoint)",
            socket.display()
        )));
    }
    for file in &args.files {
        let names = skiff_kubelet::images::import_archive(&socket, file)
            .await
            .map_err(|e| Error::Images(skiff_runtime::controller::ErrorChain(&e).to_string()))?;
        for name in names {
            println!("imported {name}");
        }
    }
    Ok(())
}
