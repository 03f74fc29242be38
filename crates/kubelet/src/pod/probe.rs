//! Container probes: one worker per (container instance, probe kind) running the probe every
//! `periodSeconds` after `initialDelaySeconds`, with `timeoutSeconds`, and flipping its result
//! only after `successThreshold` successes or `failureThreshold` failures in a row. Startup
//! probes hold liveness and readiness back until they succeed. Results wake the pod's worker,
//! which restarts containers whose liveness or startup probe failed and reports readiness.
//!
//! Handlers follow upstream: exec (through the CRI, success = exit code 0), httpGet (2xx/3xx,
//! redirects not followed, HTTPS without verification, `User-Agent: kube-probe/1.35`),
//! tcpSocket (connect), and grpc (the standard health service).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parking_lot::Mutex;
use skiff_cri::{Cri, api};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Probe kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeKind {
    /// Restart when failing.
    Liveness,
    /// Gate readiness.
    Readiness,
    /// Gate the others; restart when failing.
    Startup,
}

impl ProbeKind {
    fn name(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }
}

/// The outcome of one probe run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed.
    Success,
    /// Failed, with why.
    Failure(String),
}

/// Current verdicts of one container instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Verdicts {
    ready: bool,
    started: bool,
    liveness_failed: bool,
    startup_failed: bool,
}

/// Where a probe reaches the container.
#[derive(Debug, Clone)]
pub struct Target {
    /// Runtime id of the container.
    pub container_id: String,
    /// The pod's IP (probes without a host use it).
    pub pod_ip: String,
}

/// Runs probes and keeps their verdicts.
pub struct ProbeManager {
    cri: Cri,
    verdicts: Arc<Mutex<BTreeMap<String, Verdicts>>>,
    workers: Mutex<BTreeMap<String, CancellationToken>>,
    events: tokio::sync::mpsc::UnboundedSender<ProbeEvent>,
}

/// A probe result that changed, for the pod's events.
#[derive(Debug, Clone)]
pub struct ProbeEvent {
    /// The pod's uid.
    pub pod_uid: String,
    /// The container name.
    pub container: String,
    /// The probe kind.
    pub kind: ProbeKind,
    /// The failure message (`Liveness probe failed: …`).
    pub message: String,
}

fn int_or_string_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// Run one probe once.
pub async fn run_probe(
    cri: &Cri,
    probe: &Probe,
    container: &Container,
    target: &Target,
) -> Outcome {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return match cri
            .exec_sync(api::ExecSyncRequest {
                container_id: target.container_id.clone(),
                cmd,
                timeout: timeout.as_secs() as i64,
            })
            .await
        {
            Ok(r) if r.exit_code == 0 => Outcome::Success,
            Ok(r) => {
                let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
                out.push_str(&String::from_utf8_lossy(&r.stderr));
                Outcome::Failure(out.trim_end().to_owned())
            }
            Err(e) if e.code() == skiff_cri::Code::DeadlineExceeded => {
                Outcome::Failure(format!("command timed out after {}s", timeout.as_secs()))
            }
            Err(e) => Outcome::Failure(e.message()),
        };
    }
    if let Some(http) = &probe.http_get {
        let Some(port) = int_or_string_port(&http.port, container) else {
            return Outcome::Failure(format!("invalid port {:?}", http.port));
        };
        let host = http
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| target.pod_ip.clone());
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let https = http.scheme.as_deref() == Some("HTTPS");
        let headers: Vec<(String, String)> = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        return match tokio::time::timeout(
            timeout,
            crate::pod::hooks::http_get(&host, port, &path, https, &headers),
        )
        .await
        {
            Ok(Ok(status)) if (200..400).contains(&status) => Outcome::Success,
            Ok(Ok(status)) => {
                Outcome::Failure(format!("HTTP probe failed with statuscode: {status}"))
            }
            Ok(Err(e)) => Outcome::Failure(format!(
                "Get \"{}://{host}:{port}{path}\": {e}",
                if https { "https" } else { "http" }
            )),
            Err(_) => Outcome::Failure(format!(
                "Get \"{}://{host}:{port}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                if https { "https" } else { "http" }
            )),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = int_or_string_port(&tcp.port, container) else {
            return Outcome::Failure(format!("invalid port {:?}", tcp.port));
        };
        let host = tcp
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| target.pod_ip.clone());
        return match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => Outcome::Success,
            Ok(Err(e)) => Outcome::Failure(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Outcome::Failure(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    if let Some(grpc) = &probe.grpc {
        let addr = format!("http://{}:{}", target.pod_ip, grpc.port);
        let service = grpc.service.clone().unwrap_or_default();
        let check = async {
            let channel = tonic::transport::Endpoint::from_shared(addr.clone())
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
            let response = client
                .check(tonic_health::pb::HealthCheckRequest { service })
                .await
                .map_err(|s| s.message().to_owned())?;
            Ok::<i32, String>(response.into_inner().status)
        };
        return match tokio::time::timeout(timeout, check).await {
            Ok(Ok(status))
                if status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 =>
            {
                Outcome::Success
            }
            Ok(Ok(status)) => Outcome::Failure(format!(
                "service unhealthy (responded with {:?})",
                tonic_health::pb::health_check_response::ServingStatus::try_from(status)
                    .map(|s| s.as_str_name())
                    .unwrap_or("UNKNOWN")
            )),
            Ok(Err(e)) => Outcome::Failure(format!(
                "failed to connect service {addr:?} within {}s: {e}",
                timeout.as_secs()
            )),
            Err(_) => Outcome::Failure(format!(
                "timeout: health rpc did not complete within {}s",
                timeout.as_secs()
            )),
        };
    }
    Outcome::Failure("probe has no handler".into())
}

impl ProbeManager {
    /// A manager; changed failures are sent on `events`.
    pub fn new(cri: Cri, events: tokio::sync::mpsc::UnboundedSender<ProbeEvent>) -> ProbeManager {
        ProbeManager {
            cri,
            verdicts: Arc::new(Mutex::new(BTreeMap::new())),
            workers: Mutex::new(BTreeMap::new()),
            events,
        }
    }

    /// Start workers for a newly running container instance (idempotent). `wake` is notified
    /// when a verdict changes.
    pub fn watch(&self, pod: &Pod, container: &Container, target: Target, wake: Arc<Notify>) {
        let id = target.container_id.clone();
        let mut workers = self.workers.lock();
        if workers.contains_key(&id) {
            return;
        }
        let token = CancellationToken::new();
        workers.insert(id.clone(), token.clone());
        let initial = Verdicts {
            ready: container.readiness_probe.is_none(),
            started: container.startup_probe.is_none(),
            ..Default::default()
        };
        self.verdicts.lock().insert(id.clone(), initial);
        let kinds = [
            (ProbeKind::Startup, container.startup_probe.clone()),
            (ProbeKind::Liveness, container.liveness_probe.clone()),
            (ProbeKind::Readiness, container.readiness_probe.clone()),
        ];
        for (kind, probe) in kinds {
            let Some(probe) = probe else { continue };
            let worker = Worker {
                cri: self.cri.clone(),
                verdicts: self.verdicts.clone(),
                events: self.events.clone(),
                pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
                container: container.clone(),
                target: target.clone(),
                kind,
                probe,
                wake: wake.clone(),
            };
            tokio::spawn(worker.run(token.clone()));
        }
    }

    /// Stop the workers of instances not in `live` (exited or removed).
    pub fn retain(&self, live: &BTreeSet<String>, owned: impl Fn(&str) -> bool) {
        let mut workers = self.workers.lock();
        workers.retain(|id, token| {
            let keep = live.contains(id) || !owned(id);
            if !keep {
                token.cancel();
            }
            keep
        });
        self.verdicts
            .lock()
            .retain(|id, _| workers.contains_key(id));
    }

    /// Stop workers for these container ids.
    pub fn forget(&self, ids: &[String]) {
        let mut workers = self.workers.lock();
        for id in ids {
            if let Some(t) = workers.remove(id) {
                t.cancel();
            }
            self.verdicts.lock().remove(id);
        }
    }

    /// The verdicts for these container ids: (ready, started, liveness failed, startup
    /// failed) sets.
    pub fn verdicts(
        &self,
        ids: &[String],
    ) -> (
        BTreeSet<String>,
        BTreeSet<String>,
        BTreeSet<String>,
        BTreeSet<String>,
    ) {
        let v = self.verdicts.lock();
        let mut out = (
            BTreeSet::new(),
            BTreeSet::new(),
            BTreeSet::new(),
            BTreeSet::new(),
        );
        for id in ids {
            let Some(x) = v.get(id) else { continue };
            if x.ready && x.started {
                out.0.insert(id.clone());
            }
            if x.started {
                out.1.insert(id.clone());
            }
            if x.liveness_failed {
                out.2.insert(id.clone());
            }
            if x.startup_failed {
                out.3.insert(id.clone());
            }
        }
        out
    }
}

struct Worker {
    cri: Cri,
    verdicts: Arc<Mutex<BTreeMap<String, Verdicts>>>,
    events: tokio::sync::mpsc::UnboundedSender<ProbeEvent>,
    pod_uid: String,
    container: Container,
    target: Target,
    kind: ProbeKind,
    probe: Probe,
    wake: Arc<Notify>,
}

impl Worker {
    async fn run(self, stop: CancellationToken) {
        let period = Duration::from_secs(self.probe.period_seconds.unwrap_or(10).max(1) as u64);
        let initial =
            Duration::from_secs(self.probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        let success_threshold = self.probe.success_threshold.unwrap_or(1).max(1) as u32;
        let failure_threshold = self.probe.failure_threshold.unwrap_or(3).max(1) as u32;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(initial) => {}
        }
        let (mut successes, mut failures) = (0u32, 0u32);
        let id = self.target.container_id.clone();
        loop {
            // Liveness and readiness wait for the startup probe.
            let gated = self.kind != ProbeKind::Startup
                && !self.verdicts.lock().get(&id).is_some_and(|v| v.started);
            let startup_done = self.kind == ProbeKind::Startup
                && self.verdicts.lock().get(&id).is_some_and(|v| v.started);
            if !gated && !startup_done {
                let outcome =
                    run_probe(&self.cri, &self.probe, &self.container, &self.target).await;
                match &outcome {
                    Outcome::Success => {
                        successes += 1;
                        failures = 0;
                    }
                    Outcome::Failure(_) => {
                        failures += 1;
                        successes = 0;
                    }
                }
                if let Outcome::Failure(msg) = &outcome {
                    let _ = self.events.send(ProbeEvent {
                        pod_uid: self.pod_uid.clone(),
                        container: self.container.name.clone(),
                        kind: self.kind,
                        message: format!("{} probe failed: {msg}", self.kind.name()),
                    });
                }
                let changed = {
                    let mut all = self.verdicts.lock();
                    let Some(v) = all.get_mut(&id) else { return };
                    let before = v.clone();
                    match self.kind {
                        ProbeKind::Readiness => {
                            if successes >= success_threshold {
                                v.ready = true;
                            } else if failures >= failure_threshold {
                                v.ready = false;
                            }
                        }
                        ProbeKind::Liveness => {
                            if failures >= failure_threshold {
                                v.liveness_failed = true;
                            }
                        }
                        ProbeKind::Startup => {
                            if successes >= 1 {
                                v.started = true;
                            } else if failures >= failure_threshold {
                                v.startup_failed = true;
                            }
                        }
                    }
                    *v != before
                };
                if changed {
                    self.wake.notify_one();
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }
}
