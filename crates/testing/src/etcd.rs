//! Real etcd for tests: [`EtcdCluster`] starts Debian's `etcd` (3.4) as one or more child
//! processes on free loopback ports with temporary data directories, waits until the cluster
//! has a leader, and kills every member on drop. Members can be killed (`SIGKILL`) and
//! restarted on their data directory to test failover.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::free_port;

/// The etcd binary: `$ETCD_BIN`, else `etcd` on the PATH (Debian's `etcd-server`).
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("ETCD_BIN").map_or_else(|| PathBuf::from("etcd"), PathBuf::from)
}

/// TLS material of an etcd that requires client certificates: a CA (made with skiff-pki),
/// a serving certificate for 127.0.0.1 and a client certificate.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// CA that signed the server and client certificates.
    pub ca_file: PathBuf,
    /// Server certificate (valid for 127.0.0.1).
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA.
    pub client_cert: PathBuf,
    /// The client certificate's key.
    pub client_key: PathBuf,
}

impl EtcdTls {
    fn create(dir: &Path) -> Result<EtcdTls> {
        let options = skiff_pki::PkiOptions {
            extra_sans: Vec::new(),
            ip_sans: vec![std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
        };
        skiff_pki::Pki::load_or_create(dir, &options)?;
        let tls = dir.join("tls");
        Ok(EtcdTls {
            ca_file: tls.join("ca.crt"),
            server_cert: tls.join("serving.crt"),
            server_key: tls.join("serving.key"),
            client_cert: tls.join("admin.crt"),
            client_key: tls.join("admin.key"),
        })
    }
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster of one or more members on loopback (or on a network namespace's
/// address, see [`EtcdCluster::start_in`]).
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    tls: Option<Box<EtcdTls>>,
    dir: tempfile::TempDir,
    /// The address every member listens on.
    host: String,
    /// The network namespace the members run in (its name under /var/run/netns), if any.
    netns: Option<String>,
}

impl EtcdCluster {
    /// Start a single-member etcd and wait until it serves.
    pub fn start() -> Result<EtcdCluster> {
        Self::start_members(1, false)
    }

    /// Start an etcd cluster of `members` members and wait until it has a leader. With
    /// `tls`, clients must use HTTPS and present a certificate (see [`EtcdCluster::tls`]).
    pub fn start_members(members: usize, tls: bool) -> Result<EtcdCluster> {
        Self::start_at(members, tls, "127.0.0.1", None)
    }

    /// Start a single-member etcd inside `netns`, listening on `host` (an address of that
    /// namespace, e.g. a [`crate::TestLan`]'s hub), for servers in neighbouring namespaces.
    pub fn start_in(netns: &crate::NetNs, host: &str) -> Result<EtcdCluster> {
        Self::start_at(1, false, host, Some(netns.name().to_owned()))
    }

    fn start_at(
        members: usize,
        tls: bool,
        host: &str,
        netns: Option<String>,
    ) -> Result<EtcdCluster> {
        let dir = tempfile::Builder::new().prefix("skiff-etcd-").tempdir()?;
        let tls = if tls {
            Some(Box::new(EtcdTls::create(&dir.path().join("pki"))?))
        } else {
            None
        };
        let members: Vec<Member> = (0..members)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: dir.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{host}:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            tls,
            dir,
            host: host.to_owned(),
            netns,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i)?;
        }
        cluster.wait_healthy(Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let scheme = self.scheme();
        let tls = self.tls.clone();
        let log_path = self.log_path(i);
        let member = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let client_url = format!("{scheme}://{}:{}", self.host, member.client_port);
        let peer_url = format!("http://{}:{}", self.host, member.peer_port);
        let mut cmd = match &self.netns {
            Some(netns) => {
                let mut cmd = Command::new("nsenter");
                cmd.arg(format!("--net=/var/run/netns/{netns}"))
                    .arg(etcd_binary());
                cmd
            }
            None => Command::new(etcd_binary()),
        };
        cmd.arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "skiff-test"])
            // Fast elections keep failover tests short.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(tls) = &tls {
            cmd.arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca_file)
                .arg("--client-cert-auth");
        }
        member.child = Some(cmd.spawn().with_context(|| {
            format!(
                "starting {} (apt-get install etcd-server)",
                etcd_binary().display()
            )
        })?);
        Ok(())
    }

    /// The TLS files, for a cluster started with TLS.
    pub fn tls(&self) -> Option<&EtcdTls> {
        self.tls.as_deref()
    }

    /// The member's log file.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}.log"))
    }

    /// Every member's log so far, for failure messages.
    pub fn logs(&self) -> String {
        (0..self.members.len())
            .map(|i| {
                let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                format!("--- etcd member {i} ---\n{log}")
            })
            .collect()
    }

    /// Client URLs of every member (`http://127.0.0.1:PORT`).
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://{}:{}", self.scheme(), self.host, m.client_port))
            .collect()
    }

    /// The `--store` value for `skiff server`: `etcd://127.0.0.1:P1,127.0.0.1:P2,...`.
    pub fn store_url(&self) -> String {
        let hosts: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}:{}", self.host, m.client_port))
            .collect();
        format!("etcd://{}", hosts.join(","))
    }

    /// The directory holding the members' data directories and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Kill member `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.members[i].child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Start member `i` again on its data directory (it rejoins the cluster).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i)?;
        self.spawn(i)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.member_healthy(i) {
            if Instant::now() > deadline {
                bail!(
                    "etcd member {i} not healthy after restart:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Whether member `i` answers `/health` with a leader. TLS members are only checked for
    /// an open port (the probe speaks plain HTTP).
    pub fn member_healthy(&self, i: usize) -> bool {
        let port = self.members[i].client_port;
        if let Some(netns) = &self.netns {
            // The probe must run where the member listens.
            return Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{netns}"))
                .args(["curl", "-sf", "--max-time", "2"])
                .arg(format!("http://{}:{port}/health", self.host))
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|out| {
                    String::from_utf8_lossy(&out.stdout).contains("\"health\":\"true\"")
                });
        }
        if self.tls.is_some() {
            return TcpStream::connect(("127.0.0.1", port)).is_ok();
        }
        http_get(port, "/health").is_some_and(|body| body.contains("\"health\":\"true\""))
    }

    fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            for (i, m) in self.members.iter_mut().enumerate() {
                if let Some(child) = m.child.as_mut()
                    && let Some(status) = child.try_wait()?
                {
                    let log = std::fs::read_to_string(self.dir.path().join(format!("m{i}.log")))
                        .unwrap_or_default();
                    bail!("etcd member {i} exited early with {status}:\n{log}");
                }
            }
            if (0..self.members.len()).all(|i| self.member_healthy(i)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("etcd not healthy after {timeout:?}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A plain HTTP/1.0 GET on loopback; the body, or `None` on any failure.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_owned())
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
