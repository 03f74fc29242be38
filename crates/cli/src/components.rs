//! In-process components of `skiff server` (scheduler, controller manager, kubelet): each runs
//! as its own task with its own client credentials, exactly as it would as a separate process
//! (`skiff scheduler --kubeconfig …`), and they stop together on shutdown.

use std::future::Future;
use std::path::{Path, PathBuf};

use skiff_runtime::CancellationToken;
use tokio::task::JoinSet;

/// How long components get to stop on shutdown.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The running components and the token that stops them.
pub struct Components {
    shutdown: CancellationToken,
    tasks: JoinSet<(&'static str, Result<(), String>)>,
    cred_dir: PathBuf,
}

impl Components {
    /// Components whose kubeconfigs live under `<data-dir>/cred` (created, owner-only).
    pub fn new(data_dir: &Path) -> std::io::Result<Components> {
        use std::os::unix::fs::PermissionsExt;
        let cred_dir = data_dir.join("cred");
        std::fs::create_dir_all(&cred_dir)?;
        std::fs::set_permissions(&cred_dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Components {
            shutdown: CancellationToken::new(),
            tasks: JoinSet::new(),
            cred_dir,
        })
    }

    /// Where component `name`'s kubeconfig goes.
    pub fn kubeconfig_path(&self, name: &str) -> PathBuf {
        self.cred_dir.join(format!("{name}.kubeconfig"))
    }

    /// The token every component watches for shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Run a component; its error (with its causes) is logged when it stops.
    pub fn spawn<E: std::error::Error + 'static>(
        &mut self,
        name: &'static str,
        run: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        tracing::info!(component = name, "starting");
        self.tasks.spawn(async move {
            let result = run.await.map_err(|e| {
                let message = skiff_runtime::controller::ErrorChain(&e).to_string();
                tracing::error!(component = name, error = %message, "component failed");
                message
            });
            (name, result)
        });
    }

    /// Stop every component and wait for them, at most [`STOP_GRACE`]: a component stuck in
    /// a call that ignores cancellation must not keep the process from exiting (what it had
    /// acknowledged is already in the store; the rest it redoes on the next start).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(None) => return,
                Ok(Some(Ok((name, Ok(()))))) => tracing::info!(component = name, "stopped"),
                Ok(Some(Ok((name, Err(err))))) => {
                    tracing::error!(component = name, error = %err, "failed")
                }
                Ok(Some(Err(err))) => tracing::error!(error = %err, "component task panicked"),
                Err(_) => {
                    tracing::warn!(
                        remaining = self.tasks.len(),
                        "components did not stop within {STOP_GRACE:?}; aborting them"
                    );
                    self.tasks.abort_all();
                    return;
                }
            }
        }
    }
}
