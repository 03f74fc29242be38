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

/// The test image every pod test runs: the OS's static busybox with a symlink per applet
/// (sh, sleep, httpd, nc, …), built locally because no registry is reachable.
pub const BUSYBOX_IMAGE: &str = "skiff.local/busybox:1.35";

/// Write the busybox test image as an OCI archive at `path` (from `/bin/busybox`, which
/// Debian's busybox-static provides; scripts/setup.sh installs it).
pub fn write_busybox_image(path: &Path) -> Result<()> {
    let binary = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .context("busybox is not installed (apt-get install busybox-static)")?;
    let data = std::fs::read(binary)?;
    let list = Command::new(binary).arg("--list").output()?;
    let mut files = std::collections::BTreeMap::new();
    files.insert(
        "/bin/busybox".to_owned(),
        skiff_oci::Entry::File { mode: 0o755, data },
    );
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if !applet.is_empty() && applet != "busybox" {
            files.insert(
                format!("/bin/{applet}"),
                skiff_oci::Entry::Symlink("busybox".into()),
            );
        }
    }
    files.insert("/tmp".into(), skiff_oci::Entry::Dir { mode: 0o1777 });
    for dir in [
        "/www", "/etc", "/root", "/var", "/usr/bin", "/proc", "/sys", "/dev",
    ] {
        files.insert(dir.to_owned(), skiff_oci::Entry::Dir { mode: 0o755 });
    }
    files.insert(
        "/etc/passwd".into(),
        skiff_oci::Entry::File {
            mode: 0o644,
            data: b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
                .to_vec(),
        },
    );
    files.insert(
        "/etc/group".into(),
        skiff_oci::Entry::File {
            mode: 0o644,
            data: b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        },
    );
    files.insert(
        "/www/index.html".into(),
        skiff_oci::Entry::File {
            mode: 0o644,
            data: b"hello from skiff\n".to_vec(),
        },
    );
    let image = skiff_oci::Image {
        name: BUSYBOX_IMAGE.to_owned(),
        files,
        cmd: vec!["sh".into()],
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        ..Default::default()
    };
    let file = std::fs::File::create(path)?;
    skiff_oci::write_archive(&image, std::io::BufWriter::new(file))?;
    Ok(())
}

/// Poll `probe` every 200 ms until it returns `Some`, for at most `timeout`; the error names
/// `what` and the last error seen.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match probe() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last error: {last}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`wait_for`] a yes/no check.
pub fn eventually(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    wait_for(timeout, what, || Ok(check()?.then_some(())))
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
    /// Run the server (and kubectl against it) in this network namespace, e.g. a host of a
    /// [`TestLan`]; `host` is then its address there.
    pub netns: Option<NetNs>,
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
    /// The network namespace the server (and its node) runs in, if any.
    netns: Option<NetNs>,
    /// HTTPS port.
    pub port: u16,
}

impl TestCluster {
    /// Start a control plane (no kubelet on this machine) on the default backend
    /// ([`Backend::from_env`]) and wait until it is ready.
    pub fn start() -> Result<TestCluster> {
        Self::start_with(&["--disable-agent"])
    }

    /// Start a server on the default backend with extra flags. Outside a network namespace
    /// the server never runs a kubelet (`--disable-agent` is implied).
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

    /// Start a server as `options` say. Outside a network namespace it runs no node
    /// (`--disable-agent` is added): a node's pod network must never live in the machine's
    /// own namespace.
    pub fn start_server(options: ServerOptions) -> Result<TestCluster> {
        let data_dir = tempfile::Builder::new().prefix("skiff-test-").tempdir()?;
        if let Some(from) = &options.copy_tls_from {
            let to = data_dir.path().join("tls");
            std::fs::create_dir_all(&to)?;
            for entry in std::fs::read_dir(from)? {
                let entry = entry?;
                match std::fs::copy(entry.path(), to.join(entry.file_name())) {
                    // A running server replaces files by renaming temporary ones: one listed
                    // a moment ago may be gone, and its final name is listed too.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    other => {
                        other?;
                    }
                }
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
            netns: options.netns,
            port: options.port.unwrap_or_else(free_port),
        };
        cluster.spawn()?;
        Ok(cluster)
    }

    /// Start a server with its own node (kubelet + containerd) inside a fresh network
    /// namespace with no route out of the machine, with the busybox test image
    /// ([`BUSYBOX_IMAGE`]) imported, and wait until the node is Ready.
    pub fn with_node() -> Result<TestCluster> {
        Self::with_node_flags(&[])
    }

    /// [`TestCluster::with_node`] with extra server flags.
    pub fn with_node_flags(extra: &[&str]) -> Result<TestCluster> {
        let data_dir = tempfile::Builder::new().prefix("skiff-node-").tempdir()?;
        let netns = NetNs::create(NODE_IP)?;
        let images = data_dir.path().join("agent/images");
        std::fs::create_dir_all(&images)?;
        write_busybox_image(&images.join("busybox.tar"))?;
        let mut args: Vec<String> = [
            "--advertise-address",
            NODE_IP,
            "--node-ip",
            NODE_IP,
            "--node-name",
            NODE_NAME,
            "--pod-cidr",
            "10.42.0.0/24",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cluster = TestCluster {
            child: None,
            data_dir,
            host: "0.0.0.0".into(),
            flags: args,
            etcd: None,
            netns: Some(netns),
            port: free_port(),
        };
        cluster.spawn()?;
        cluster.wait_node_ready(Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// Wait until the node is Ready, initialized by the cloud node controller (if the server
    /// runs one) and the test image is on it.
    pub fn wait_node_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let node = self.k_json(&["get", "node", NODE_NAME]).ok();
            let ready = node.as_ref().is_some_and(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            let has_image = node
                .as_ref()
                .is_some_and(|n| n["status"]["images"].to_string().contains(BUSYBOX_IMAGE));
            if ready && has_image && node.as_ref().is_some_and(initialized) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "node not ready with the test image after {timeout:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The etcd this cluster runs on, when it started one.
    pub fn etcd(&self) -> Option<&etcd::EtcdCluster> {
        self.etcd.as_ref()
    }

    /// The etcd cluster behind this server, to stop and restart its members.
    pub fn etcd_mut(&mut self) -> Option<&mut etcd::EtcdCluster> {
        self.etcd.as_mut()
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
        let mut cmd = self.command(&bin);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(self.data_dir.path())
            // Inside its own network namespace the server listens on every address (agents in
            // neighbouring namespaces join it; nothing outside can reach it) and advertises
            // the node address its flags name.
            .args(["--bind-address", &self.host])
            .args(
                (!self.flags.iter().any(|f| f == "--advertise-address"))
                    .then_some(["--advertise-address", self.host.as_str()])
                    .into_iter()
                    .flatten(),
            )
            .args(["--https-port", &self.port.to_string()])
            .args(&self.flags)
            // A kubelet outside a test's own network namespace would start containerd, program
            // routes and masquerade rules on the machine itself: only `with_node` clusters
            // (which have a namespace) run one.
            .args(
                (self.netns.is_none() && !self.flags.iter().any(|f| f == "--disable-agent"))
                    .then_some("--disable-agent"),
            )
            // Parallel test servers must not fight over the scheduler's default metrics port.
            .args(
                (!self
                    .flags
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

    /// A command for `program` that runs in the cluster's network namespace, if it has one.
    pub fn command(&self, program: &Path) -> Command {
        match &self.netns {
            Some(ns) => ns.command(program),
            None => Command::new(program),
        }
    }

    /// The network namespace of a cluster started [`TestCluster::with_node`].
    pub fn netns(&self) -> Option<&NetNs> {
        self.netns.as_ref()
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

    /// The last `lines` lines of the server log, to explain a failed check.
    pub fn log_tail(&self, lines: usize) -> String {
        last_lines(&self.log(), lines)
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
        let mut cmd = self.command(&kubectl_binary());
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
        let child = self
            .command(&skiff_binary())
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

    /// Poll `kubectl get pod NAME -o json` until `check` holds (60 s at most); on timeout the
    /// error carries the last status and the pod's events.
    pub fn wait_pod(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = serde_json::Value::Null;
        loop {
            if let Ok(p) = self.k_json(&["get", "pod", name]) {
                if check(&p) {
                    return Ok(p);
                }
                last = p;
            }
            if Instant::now() > deadline {
                let events = self
                    .k(&[
                        "get",
                        "events",
                        "--field-selector",
                        &format!("involvedObject.name={name}"),
                    ])
                    .unwrap_or_default();
                bail!(
                    "pod {name}: timed out waiting for {what}; last status: {}\nevents:\n{events}",
                    last["status"]
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
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
        // The kubelet goes first: alive, it restarts the containers being killed (a
        // liveness-probed pod, a restartPolicy Always one), and those would outlive the test.
        // Its containerd survives it, so the containers are still reachable.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.netns.is_some() {
            self.stop_containers();
            stop_runtime(self.data_dir.path());
        }
        if let Some(ns) = self.netns.take() {
            drop(ns);
            unmount_under(self.data_dir.path());
        }
    }
}

impl TestCluster {
    fn stop_containers(&self) {
        stop_containers(self.data_dir.path());
    }

    /// Join a second node with `skiff agent` from a network namespace of its own, linked to
    /// the server's by a veth pair (the server's namespace must come from
    /// [`TestCluster::with_node`]); waits until the node is Ready and initialized with the
    /// test image.
    pub fn join_agent(&self, node_name: &str, extra: &[&str]) -> Result<TestAgent> {
        let server_ns = self
            .netns
            .as_ref()
            .context("join_agent needs a cluster started with_node")?;
        let netns = server_ns.split_peer(AGENT_IP)?;
        let servers = [format!("https://{NODE_IP}:{}", self.port)];
        let mut flags = vec!["--pod-cidr", "10.42.1.0/24"];
        flags.extend_from_slice(extra);
        self.join_agent_in(netns, AGENT_IP, &servers, node_name, &flags)
    }

    /// Join a node with `skiff agent` running in `netns` (where its address is `node_ip`),
    /// naming `servers` (URLs reachable from there) and this cluster's join token; waits
    /// until the node is Ready with the test image.
    pub fn join_agent_in(
        &self,
        netns: NetNs,
        node_ip: &str,
        servers: &[String],
        node_name: &str,
        extra: &[&str],
    ) -> Result<TestAgent> {
        let data_dir = tempfile::Builder::new().prefix("skiff-agent-").tempdir()?;
        let images = data_dir.path().join("agent/images");
        std::fs::create_dir_all(&images)?;
        write_busybox_image(&images.join("busybox.tar"))?;
        let token = std::fs::read_to_string(self.data_dir.path().join("token"))?;
        let log = data_dir.path().join("agent.log");
        let file = std::fs::File::create(&log)?;
        let child = netns
            .command(&skiff_binary())
            .arg("agent")
            .args(["--server", &servers.join(",")])
            .args(["--token", token.trim()])
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--node-name", node_name, "--node-ip", node_ip])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting skiff agent")?;
        let agent = TestAgent {
            child: Some(ChildGuard { child, log }),
            netns: Some(netns),
            data_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let node = self.k_json(&["get", "node", node_name]).ok();
            let ready = node.as_ref().is_some_and(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    && n["status"]["images"].to_string().contains(BUSYBOX_IMAGE)
                    && initialized(n)
            });
            if ready {
                return Ok(agent);
            }
            if Instant::now() > deadline {
                bail!("agent {node_name} not ready after 60s:\n{}", agent.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Whether a node (as JSON) no longer waits for the cloud node controller: it does not carry
/// the `node.cloudprovider.kubernetes.io/uninitialized` taint.
pub fn initialized(node: &serde_json::Value) -> bool {
    !node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["key"] == "node.cloudprovider.kubernetes.io/uninitialized")
}

/// The address of a joined test agent (on the other end of the server namespace's veth).
pub const AGENT_IP: &str = "172.31.255.2";

/// A `skiff agent` joined to a test cluster, in its own network namespace.
pub struct TestAgent {
    child: Option<ChildGuard>,
    netns: Option<NetNs>,
    data_dir: tempfile::TempDir,
}

impl TestAgent {
    /// What the agent logged.
    pub fn log(&self) -> String {
        self.child.as_ref().map(ChildGuard::log).unwrap_or_default()
    }

    /// The last `lines` lines of the agent log, to explain a failed check.
    pub fn log_tail(&self, lines: usize) -> String {
        last_lines(&self.log(), lines)
    }

    /// The agent's data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The agent's network namespace.
    pub fn netns(&self) -> Option<&NetNs> {
        self.netns.as_ref()
    }

    /// The agent process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        // The kubelet first, as for a TestCluster.
        drop(self.child.take());
        stop_containers(self.data_dir.path());
        stop_runtime(self.data_dir.path());
        drop(self.netns.take());
        unmount_under(self.data_dir.path());
    }
}

/// Kill every container a test node's containerd runs (they outlive containerd otherwise).
fn stop_containers(data_dir: &Path) {
    let socket = data_dir.join("agent/containerd/containerd.sock");
    if !socket.exists() {
        return;
    }
    let ctr = |args: &[&str]| {
        Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["--namespace", "k8s.io"])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
    };
    let Ok(out) = ctr(&["tasks", "ls", "-q"]) else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    for id in &ids {
        let _ = ctr(&["tasks", "kill", "--signal", "SIGKILL", id]);
    }
    std::thread::sleep(Duration::from_millis(300));
    for id in &ids {
        let _ = ctr(&["tasks", "delete", "--force", id]);
    }
}

/// Kill the containerd a test node's kubelet started (it outlives the killed kubelet, which
/// would restart it if still alive: call this after the kubelet is gone).
fn stop_runtime(data_dir: &Path) {
    let pidfile = data_dir.join("agent/containerd/containerd.pid");
    if let Ok(pid) = std::fs::read_to_string(pidfile) {
        let _ = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .stderr(Stdio::null())
            .status();
    }
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

/// Lazily unmount every mount point under `dir` (container rootfs, shm, netns mounts).
fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount")
            .args(["-l", &p])
            .stderr(Stdio::null())
            .status();
    }
}

/// A test LAN: a bridge in a network namespace of its own (the hub, which has address
/// `<subnet>.254`) and hosts, each a namespace attached to the bridge by a veth pair. Nothing
/// in it has a route out of the machine. For clusters of several machines: servers, agents
/// and an etcd each on their own host.
pub struct TestLan {
    hub: NetNs,
    hosts: std::sync::atomic::AtomicU32,
}

impl TestLan {
    /// The LAN's /24 (the first three octets).
    pub const SUBNET: &str = "172.31.250";

    /// Create the hub and its bridge.
    pub fn create() -> Result<TestLan> {
        let hub = NetNs::create_empty()?;
        let n = hub.name.as_str();
        run_ip(&["-n", n, "link", "add", "br0", "type", "bridge"])?;
        run_ip(&["-n", n, "link", "set", "br0", "up"])?;
        run_ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{}.254/24", Self::SUBNET),
            "dev",
            "br0",
        ])?;
        Ok(TestLan {
            hub,
            hosts: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// The address of host `n` (1..=253).
    pub fn address(n: u8) -> String {
        format!("{}.{n}", Self::SUBNET)
    }

    /// The hub's own namespace (address [`TestLan::hub_address`]), e.g. for an etcd.
    pub fn hub(&self) -> &NetNs {
        &self.hub
    }

    /// The hub's address on the LAN.
    pub fn hub_address() -> String {
        Self::address(254)
    }

    /// A new host on the LAN with address [`TestLan::address`]`(n)` on its `eth0`.
    pub fn host(&self, n: u8) -> Result<NetNs> {
        let host = NetNs::create_empty()?;
        let i = self
            .hosts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = format!("p{i}");
        let hub = self.hub.name.as_str();
        run_ip(&[
            "-n", hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &host.name,
        ])?;
        run_ip(&["-n", hub, "link", "set", &port, "master", "br0"])?;
        run_ip(&["-n", hub, "link", "set", &port, "up"])?;
        run_ip(&[
            "-n",
            &host.name,
            "addr",
            "add",
            &format!("{}/24", Self::address(n)),
            "dev",
            "eth0",
        ])?;
        run_ip(&["-n", &host.name, "link", "set", "eth0", "up"])?;
        Ok(host)
    }
}

fn run_ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The address of a test node inside its network namespace.
pub const NODE_IP: &str = "172.31.255.1";
/// The name of a test node.
pub const NODE_NAME: &str = "skiff-node";

/// A network namespace created for one test: loopback plus a veth pair whose both ends stay
/// inside it, so the node has an address but no route leaves the machine. Processes started
/// in it with [`NetNs::command`] share the host's mounts (unlike `ip netns exec`, which would
/// hide the cgroup filesystems containers need). Dropping it kills what runs in it and
/// deletes it.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Create a namespace with `address`/24 on its `eth0`.
    pub fn create(address: &str) -> Result<NetNs> {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("skt-{}-{n}", std::process::id());
        run_ip(&["netns", "add", &name])?;
        let ns = NetNs { name };
        let n = ns.name.as_str();
        run_ip(&["-n", n, "link", "set", "lo", "up"])?;
        run_ip(&[
            "-n", n, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ])?;
        run_ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ])?;
        run_ip(&["-n", n, "link", "set", "eth0", "up"])?;
        run_ip(&["-n", n, "link", "set", "eth1", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns` shows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Move the far end of this namespace's veth into a new namespace with `address`/24, so
    /// the two are linked (and still closed to everything else).
    pub fn split_peer(&self, address: &str) -> Result<NetNs> {
        let peer = NetNs::create_empty()?;
        run_ip(&["-n", &self.name, "link", "set", "eth1", "netns", &peer.name])?;
        run_ip(&[
            "-n",
            &peer.name,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth1",
        ])?;
        run_ip(&["-n", &peer.name, "link", "set", "eth1", "up"])?;
        Ok(peer)
    }

    fn create_empty() -> Result<NetNs> {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("skp-{}-{n}", std::process::id());
        let out = Command::new("ip").args(["netns", "add", &name]).output()?;
        if !out.status.success() {
            bail!(
                "ip netns add failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let ns = NetNs { name };
        let _ = Command::new("ip")
            .args(["-n", &ns.name, "link", "set", "lo", "up"])
            .status();
        Ok(ns)
    }

    /// A command running `program` inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", self.name))
            .arg(program);
        cmd
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
