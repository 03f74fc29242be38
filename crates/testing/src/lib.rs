//! Test helpers shared by integration and end-to-end tests.
//!
//! [`TestCluster`] starts the real `skiff` binary as a child process on a free loopback port
//! with a temporary data directory, waits until `/readyz` answers, and kills it on drop
//! (upstream's `StartTestServer`). [`TestCluster::kubectl`] runs the stock kubectl binary
//! against it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The `skiff` binary under test: `$SKIFF_BIN`, else `<target>/debug/skiff` of this workspace.
pub fn skiff_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SKIFF_BIN") {
        return PathBuf::from(bin);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from);
    target.join("debug/skiff")
}

/// The kubectl binary: `$KUBECTL`, else `kubectl` on the PATH.
pub fn kubectl_binary() -> PathBuf {
    std::env::var_os("KUBECTL").map_or_else(|| PathBuf::from("kubectl"), PathBuf::from)
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A running `skiff server` process.
pub struct TestCluster {
    child: Option<Child>,
    data_dir: tempfile::TempDir,
    /// Flags beyond the defaults, reused on restart.
    extra: Vec<String>,
    /// HTTPS port.
    pub port: u16,
}

impl TestCluster {
    /// Start a control plane (no kubelet on this machine) and wait until it is ready.
    pub fn start() -> Result<TestCluster> {
        Self::start_with(&["--disable-agent"])
    }

    /// Start a server with extra flags.
    pub fn start_with(extra: &[&str]) -> Result<TestCluster> {
        let data_dir = tempfile::Builder::new().prefix("skiff-test-").tempdir()?;
        let port = free_port();
        let mut cluster = TestCluster {
            child: None,
            data_dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            port,
        };
        cluster.spawn()?;
        Ok(cluster)
    }

    fn spawn(&mut self) -> Result<()> {
        let bin = skiff_binary();
        if !bin.exists() {
            bail!(
                "{} does not exist: build it first (cargo build -p skiff)",
                bin.display()
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(&bin);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .args([
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
            ])
            .args(["--https-port", &self.port.to_string()])
            .args(&self.extra)
            // Parallel test servers must not fight over the scheduler's default metrics port.
            .args(
                (!self
                    .extra
                    .iter()
                    .any(|a| a.starts_with("--scheduler-metrics-address")))
                .then_some(["--scheduler-metrics-address", "127.0.0.1:0"])
                .into_iter()
                .flatten(),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("starting {}", bin.display()))?,
        );
        self.wait_ready(Duration::from_secs(30))
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server log file.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.path().join("server.log")
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.path().join("kubeconfig.yaml")
    }

    /// The API server URL.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("skiff server exited early with {status}:\n{}", self.log());
            }
            if self.kubeconfig().exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"])?;
                if out.status.success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("skiff server not ready after {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run kubectl with this cluster's kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output> {
        self.kubectl_stdin(args, None)
    }

    /// Run kubectl, feeding `stdin`.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        self.kubectl_with(args, stdin, &[])
    }

    /// Run kubectl with extra environment variables (e.g. `KUBE_EDITOR`), feeding `stdin`.
    pub fn kubectl_with(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<Output> {
        use std::io::Write;
        let mut cmd = Command::new(kubectl_binary());
        cmd.envs(env.iter().copied())
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.data_dir.path())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .context("starting kubectl (is it installed? see scripts/setup.sh)")?;
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .context("kubectl stdin")?
                .write_all(input.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// Run kubectl and require success; returns stdout.
    pub fn k(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl(args)?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed ({}):\nstdout: {}\nstderr: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Run kubectl with stdin and require success; returns stdout.
    pub fn k_stdin(&self, args: &[&str], stdin: &str) -> Result<String> {
        let out = self.kubectl_stdin(args, Some(stdin))?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed ({}):\nstdout: {}\nstderr: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Run kubectl expecting failure; returns stderr.
    pub fn k_fail(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl(args)?;
        if out.status.success() {
            bail!(
                "kubectl {} unexpectedly succeeded: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8(out.stderr)?)
    }

    /// kubectl `-o json` output parsed.
    pub fn k_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.k(&all)?)?)
    }

    /// Kill the server with SIGKILL (no clean shutdown).
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Stop with SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("server not running")?;
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                child.kill()?;
                bail!("server did not stop within 15s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start the server again on the same data directory and port.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.terminate()?;
        }
        self.spawn()
    }
}

/// A child process killed when dropped (hollow nodes, a second component instance, …).
pub struct ChildGuard {
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kill the process now (SIGKILL).
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestCluster {
    /// Run `skiff <args…> --kubeconfig <admin kubeconfig>` beside the server, logging to
    /// `<data-dir>/<log_name>.log`; killed when the guard drops.
    pub fn spawn_skiff(&self, log_name: &str, args: &[&str]) -> Result<ChildGuard> {
        let log = self.data_dir.path().join(format!("{log_name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(skiff_binary())
            .args(args)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting skiff")?;
        Ok(ChildGuard { child, log })
    }

    /// Start `count` hollow nodes (`hollow-node-0` …) with extra flags and wait until they
    /// are all registered and Ready.
    pub fn hollow_nodes(&self, count: usize, extra: &[&str]) -> Result<ChildGuard> {
        let count_arg = count.to_string();
        let mut args = vec!["hollow-nodes", "--count", &count_arg];
        args.extend_from_slice(extra);
        let guard = self.spawn_skiff("hollow-nodes", &args)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self
                .k(&[
                    "get",
                    "nodes",
                    "-l",
                    "skiff.io/hollow-node=true",
                    "-o",
                    "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
                ])
                .unwrap_or_default();
            if ready.lines().filter(|l| *l == "True").count() >= count {
                return Ok(guard);
            }
            if Instant::now() > deadline {
                bail!("hollow nodes not ready after 60s:\n{}", guard.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
