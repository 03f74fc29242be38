//! Skiff's own containerd: written configuration (root, state, socket and CNI directories under
//! the kubelet's root, cgroupfs, Skiff's sandbox image), started as a child process and
//! restarted with backoff whenever it exits, until shutdown. Containers survive a containerd
//! restart (their shims are separate processes) and the kubelet re-adopts them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use skiff_cri::Cri;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::Error;

/// The managed containerd's files.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Directory holding config, root, state and log.
    pub dir: PathBuf,
    /// CNI configuration directory.
    pub cni_conf_dir: PathBuf,
    /// CNI plugin binaries.
    pub cni_bin_dir: PathBuf,
    /// The sandbox image reference.
    pub sandbox_image: String,
}

impl Layout {
    /// The gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    fn pid_path(&self) -> PathBuf {
        self.dir.join("containerd.pid")
    }

    /// The configuration file contents.
    pub fn config(&self) -> String {
        let d = self.dir.display();
        format!(
            r#"# Written by skiff; changes are overwritten at start.
version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/state/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
"#,
            sandbox = self.sandbox_image,
            bin = self.cni_bin_dir.display(),
            conf = self.cni_conf_dir.display(),
        )
    }
}

/// A supervised containerd process.
pub struct Supervisor {
    layout: Layout,
}

impl Supervisor {
    /// Write the configuration and start containerd; returns once its CRI answers.
    pub async fn start(layout: Layout, shutdown: CancellationToken) -> Result<Supervisor, Error> {
        for dir in [&layout.dir, &layout.cni_conf_dir] {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                action: "creating the containerd directories",
                path: dir.clone(),
                source,
            })?;
        }
        let config = layout.config_path();
        std::fs::write(&config, layout.config()).map_err(|source| Error::Io {
            action: "writing the containerd configuration",
            path: config.clone(),
            source,
        })?;
        stop_leftover(&layout).await;
        let child = spawn(&layout)?;
        wait_until_serving(&layout.socket(), Duration::from_secs(30)).await?;
        tracing::info!(socket = %layout.socket().display(), "containerd is running");
        tokio::spawn(supervise(layout.clone(), child, shutdown));
        Ok(Supervisor { layout })
    }

    /// The CRI endpoint of this containerd.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.layout.socket().display())
    }

    /// The socket path.
    pub fn socket(&self) -> PathBuf {
        self.layout.socket()
    }
}

fn spawn(layout: &Layout) -> Result<Child, Error> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.log_path())
        .map_err(|source| Error::Io {
            action: "opening the containerd log",
            path: layout.log_path(),
            source,
        })?;
    let log_err = log.try_clone().map_err(|source| Error::Io {
        action: "opening the containerd log",
        path: layout.log_path(),
        source,
    })?;
    let child = Command::new("containerd")
        .arg("--config")
        .arg(layout.config_path())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own process group: a Ctrl-C in skiff's terminal must not kill containerd
        // before skiff has shut down in order.
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| Error::Io {
            action: "starting containerd (is it installed? apt-get install containerd runc)",
            path: PathBuf::from("containerd"),
            source,
        })?;
    if let Some(pid) = child.id() {
        let _ = std::fs::write(layout.pid_path(), pid.to_string());
    }
    Ok(child)
}

/// A containerd left running by a skiff that was killed (its pid file names a live process
/// started with our configuration) is stopped, so the new one can own the socket. Its
/// containers keep running and are re-adopted.
async fn stop_leftover(layout: &Layout) {
    let Ok(text) = std::fs::read_to_string(layout.pid_path()) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = String::from_utf8_lossy(&cmdline).contains(&*layout.config_path().to_string_lossy());
    if !ours {
        return;
    }
    tracing::info!(pid, "stopping the containerd a previous run left behind");
    let target = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
    for _ in 0..100 {
        if nix::sys::signal::kill(target, None).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
}

async fn wait_until_serving(socket: &Path, timeout: Duration) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let endpoint = socket.display().to_string();
    loop {
        if socket.exists()
            && let Ok(cri) = Cri::connect(&endpoint).await
            && cri
                .status(skiff_cri::api::StatusRequest::default())
                .await
                .is_ok()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::RuntimeNotReady {
                endpoint,
                waited: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn supervise(layout: Layout, mut child: Child, shutdown: CancellationToken) {
    let mut backoff = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                stop(&mut child).await;
                return;
            }
            status = child.wait() => {
                tracing::warn!(status = ?status.ok(), "containerd exited; restarting");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        match spawn(&layout) {
            Ok(c) => {
                child = c;
                if wait_until_serving(&layout.socket(), Duration::from_secs(30))
                    .await
                    .is_ok()
                {
                    tracing::info!("containerd restarted");
                    backoff = Duration::from_secs(1);
                } else {
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "restarting containerd failed");
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_keeps_everything_under_the_directory() {
        let layout = Layout {
            dir: PathBuf::from("/data/agent/containerd"),
            cni_conf_dir: PathBuf::from("/data/agent/cni/net.d"),
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            sandbox_image: "skiff.local/pause:1.0".into(),
        };
        let config = layout.config();
        assert!(config.contains(r#"root = "/data/agent/containerd/root""#));
        assert!(config.contains(r#"address = "/data/agent/containerd/containerd.sock""#));
        assert!(config.contains(r#"sandbox_image = "skiff.local/pause:1.0""#));
        assert!(config.contains(r#"conf_dir = "/data/agent/cni/net.d""#));
        assert!(config.contains("SystemdCgroup = false"));
        assert_eq!(
            layout.socket(),
            PathBuf::from("/data/agent/containerd/containerd.sock")
        );
    }
}
