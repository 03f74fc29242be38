//! Building API clients. Every component reaches the API server through a kubeconfig file,
//! whether it runs inside `skiff server` (which writes one per component) or on its own.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::Error;

/// A client configured by the kubeconfig at `path` (its current context).
pub async fn from_kubeconfig(path: &Path) -> Result<Client, Error> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
        path: path.to_owned(),
        source,
    })?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            path: path.to_owned(),
            source,
        })?;
    // Watches are long-lived; the default read timeout would cut them off.
    config.read_timeout = None;
    Client::try_from(config).map_err(Error::Client)
}
