//! Test helpers shared by integration and end-to-end tests.
//!
//! [`TestCluster`] starts the real `skiff` binary as a child process on a free loopback port
//! with a temporary data directory, waits until `/readyz` answers, and kills it on drop
//! (upstream's `StartTestServer`). [`TestCluster::kubectl`] runs the stock kubectl binary
//! against it. [`etcd::EtcdCluster`] runs real etcd members for the etcd backend's tests.

pub mod etcd;

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

/// Run the `skiff` binary under test with `args` (not a server: e.g. `snapshot save`).
pub fn skiff(args: &[&str]) -> Result<Output> {
    Command::new(skiff_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", skiff_binary().display()))
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

/// Which store a [`TestCluster`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded engine in the data directory.
    Embedded,
    /// A single-member etcd that the test cluster starts (and stops) itself.
    Etcd,
}

impl Backend {
    /// The backend tests use unless they ask for one: `$SKIFF_TEST_STORE` (`embedded` or
    /// `etcd`), default embedded. CI runs the end-to-end suite once with each.
    pub fn from_env() -> Backend {
        match std::env::var("SKIFF_TEST_STORE").as_deref() {
            Ok("etcd") => Backend::Etcd,
            _ => Backend::Embedded,
        }
    }
}

/// Prepares a data directory before the server first starts on it.
pub type Prepare = Box<dyn FnOnce(&Path) -> Result<()>>;

/// How to start a [`TestCluster`] beyond the defaults.
#[derive(Default)]
pub struct ServerOptions {
    /// Runs on the fresh data directory before the server starts (e.g. a snapshot restore).
    pub before_start: Option<Prepare>,
    /// Loopback address to bind and advertise (default 127.0.0.1). Several servers of one
    /// HA cluster use distinct loopback addresses and the same port.
    pub host: Option<std::net::Ipv4Addr>,
    /// HTTPS port (default: a free one).
    pub port: Option<u16>,
    /// Extra flags.
    pub flags: Vec<String>,
    /// An etcd to keep alive as long as the server.
    pub etcd: Option<etcd::EtcdCluster>,
    /// Copy this `tls` directory (CA, service-account key, admin credentials) into the new
    /// data directory first, so the server joins an existing cluster's trust domain.
    pub copy_tls_from: Option<PathBuf>,
}

/// A running `skiff server` process.
pub struct TestCluster {
    child: Option<Child>,
    data_dir: tempfile::TempDir,
    host: String,
    /// Flags given at start, reused by restarts.
    flags: Vec<String>,
    /// The etcd this cluster started for itself, if it runs on etcd.
    etcd: Option<etcd::EtcdCluster>,
    /// HTTPS port.
    pub port: u16,
}

impl TestCluster {
    /// Start a server on the default backend ([`Backend::from_env`]) and wait until it is
    /// ready.
    pub fn start() -> Result<TestCluster> {
        Self::start_with(&[])
    }

    /// Start a server on the default backend with extra flags.
    pub fn start_with(extra: &[&str]) -> Result<TestCluster> {
        Self::start_on(Backend::from_env(), extra)
    }

    /// Start a server on the given backend with extra flags.
    pub fn start_on(backend: Backend, extra: &[&str]) -> Result<TestCluster> {
        let etcd = match backend {
            Backend::Embedded => None,
            Backend::Etcd => Some(etcd::EtcdCluster::start()?),
        };
        let mut flags: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        if let Some(etcd) = &etcd {
            flags.extend(["--store".to_owned(), etcd.store_url()]);
        }
        Self::start_flags(flags, etcd)
    }

    /// Start a server with exactly these extra flags (e.g. `--store` for an etcd the caller
    /// runs), keeping `etcd` alive as long as the cluster.
    pub fn start_flags(flags: Vec<String>, etcd: Option<etcd::EtcdCluster>) -> Result<TestCluster> {
        Self::start_server(ServerOptions {
            flags,
            etcd,
            ..ServerOptions::default()
        })
    }

    /// Start a server as `options` say.
    pub fn start_server(options: ServerOptions) -> Result<TestCluster> {
        let data_dir = tempfile::Builder::new().prefix("skiff-test-").tempdir()?;
        if let Some(from) = &options.copy_tls_from {
            let to = data_dir.path().join("tls");
            std::fs::create_dir_all(&to)?;
            for entry in std::fs::read_dir(from)? {
                let entry = entry?;
                std::fs::copy(entry.path(), to.join(entry.file_name()))?;
            }
        }
        if let Some(prepare) = options.before_start {
            prepare(data_dir.path())?;
        }
        let mut cluster = TestCluster {
            child: None,
            data_dir,
            host: options
                .host
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST)
                .to_string(),
            flags: options.flags,
            etcd: options.etcd,
            port: options.port.unwrap_or_else(free_port),
        };
        cluster.spawn()?;
        Ok(cluster)
    }

    /// The etcd this cluster runs on, when it started one.
    pub fn etcd(&self) -> Option<&etcd::EtcdCluster> {
        self.etcd.as_ref()
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
            .args(["--bind-address", &self.host])
            .args(["--advertise-address", &self.host])
            .args(["--https-port", &self.port.to_string()])
            .args(&self.flags)
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
        format!("https://{}:{}", self.host, self.port)
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

    /// Start the server again on the same data directory, store, flags and port.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.terminate()?;
        }
        self.spawn()
    }

    /// Start the server again with different extra flags (the store flags stay).
    pub fn restart_with(&mut self, extra: &[&str]) -> Result<()> {
        if self.child.is_some() {
            self.terminate()?;
        }
        let store: Vec<String> = match &self.etcd {
            Some(etcd) => vec!["--store".to_owned(), etcd.store_url()],
            None => Vec::new(),
        };
        self.flags = extra.iter().map(|s| (*s).to_owned()).chain(store).collect();
        self.spawn()
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
