//! One worker per pod: it reads what the runtime holds for the pod, plans
//! ([`super::plan`]), carries the plan out through the CRI — volumes, sandbox, image pulls,
//! container configuration, lifecycle hooks, kills with grace periods — reports the pod status
//! ([`super::status`]) when it changed, and records the upstream events (`Pulling`, `Pulled`,
//! `Created`, `Started`, `Killing`, `BackOff`, `Failed`, `FailedMount`, `Unhealthy`, …).
//!
//! A worker wakes when the pod changes in the API, when the runtime state of its containers
//! changes (the PLEG), when a probe verdict changes, when a back-off expires, and every
//! [`RESYNC`] to refresh volumes. A pod marked for deletion is stopped within its grace period,
//! given a terminal phase, and deleted for good; a pod that vanished from the API is stopped
//! at once. Either way its containers, sandbox and volumes are removed. A pod the kubelet
//! terminates itself ([`Termination`], an eviction) is killed within the given grace period,
//! its emptyDirs are released, and it is reported Failed with the termination's reason and
//! message; it never runs again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container as ContainerSpec, ObjectReference, Pod, Secret, Service,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use skiff_api::quantity::Quantity;
use skiff_cri::{Cri, api};
use skiff_runtime::Informer;
use skiff_runtime::events::{EventType, Recorder};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::env::{self, Sources};
use super::observed::{self, Container, ContainerState, PodRuntime, SandboxState};
use super::plan::{self, Backoffs, Kind, ProbeVerdicts, Step};
use super::probe::{ProbeManager, Target};
use super::spec::{self, ContainerInputs, NodeContext};
use super::status::{self, Extra, Waiting};
use super::volumes::{HostVolume, VolumeManager};

/// How often a steady pod is looked at again (volume refresh, drift).
pub const RESYNC: Duration = Duration::from_secs(10);
/// The shortest grace period a container gets (upstream `minimumGracePeriodInSeconds`).
const MIN_GRACE: Duration = Duration::from_secs(2);
const FIELD_MANAGER: &str = "kubelet";

/// What every pod worker shares.
pub struct Env {
    /// The runtime.
    pub cri: Cri,
    /// The API client (the node's credentials).
    pub client: Client,
    /// Node settings for translating pods.
    pub node: NodeContext,
    /// The node's IP.
    pub host_ip: String,
    /// Volumes.
    pub volumes: VolumeManager,
    /// Probes.
    pub probes: ProbeManager,
    /// Events.
    pub recorder: Recorder,
    /// Services, for the environment of containers.
    pub services: Informer<Service>,
    /// The node's allocatable resources (for resourceFieldRef defaults).
    pub allocatable: BTreeMap<String, Quantity>,
    /// Per-pod directories.
    pub pods_dir: PathBuf,
    /// The Node object's uid once registered (mirror pods are owned by the Node).
    pub node_uid: parking_lot::RwLock<Option<String>>,
}

/// The kubelet's own decision to end a pod (upstream `TerminatePodAbnormallyAndWait`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// The status reason (`Evicted`).
    pub reason: String,
    /// The status message.
    pub message: String,
    /// The grace period containers get.
    pub grace: Duration,
}

/// The latest desired state of a pod, as the manager sends it.
#[derive(Debug, Clone)]
pub enum Desired {
    /// Run (or keep running) this pod. `mirror` is set for static pods, whose status goes to
    /// their mirror pod.
    Run {
        /// The pod.
        pod: Arc<Pod>,
        /// Whether it is a static pod.
        is_static: bool,
    },
    /// The pod is gone from its source: stop and clean up now.
    Gone,
}

fn now_nanos() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    }
}

/// A pod worker.
pub struct Worker {
    env: Arc<Env>,
    uid: String,
    desired: watch::Receiver<Desired>,
    wake: Arc<Notify>,
    cache: BTreeMap<String, Container>,
    backoffs: Backoffs,
    /// Start failures by container name: what the status shows, and when to retry.
    failures: BTreeMap<String, (Waiting, i64)>,
    failure_backoffs: Backoffs,
    pull_backoffs: Backoffs,
    volumes: Option<BTreeMap<String, HostVolume>>,
    volumes_at: Option<tokio::time::Instant>,
    mount_failure: Option<String>,
    sandbox_retry_at: i64,
    sandbox_backoffs: Backoffs,
    last_status: Option<Value>,
    termination_messages: BTreeMap<String, String>,
    /// Where the manager asks for a [`Termination`].
    terminate: Arc<parking_lot::Mutex<Option<Termination>>>,
    /// The termination carried out, once it was.
    terminated: Option<Termination>,
}

impl Worker {
    /// A worker for the pod with `uid`.
    pub fn new(
        env: Arc<Env>,
        uid: String,
        desired: watch::Receiver<Desired>,
        wake: Arc<Notify>,
        terminate: Arc<parking_lot::Mutex<Option<Termination>>>,
    ) -> Worker {
        Worker {
            env,
            uid,
            desired,
            wake,
            cache: BTreeMap::new(),
            backoffs: Backoffs::new(),
            failures: BTreeMap::new(),
            failure_backoffs: Backoffs::new(),
            pull_backoffs: Backoffs::new(),
            volumes: None,
            volumes_at: None,
            mount_failure: None,
            sandbox_retry_at: 0,
            sandbox_backoffs: Backoffs::new(),
            last_status: None,
            termination_messages: BTreeMap::new(),
            terminate,
            terminated: None,
        }
    }

    /// Run until the pod is gone and cleaned up, or `shutdown` (which leaves containers
    /// running, like a kubelet restart).
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let desired = self.desired.borrow_and_update().clone();
            let requested = self.terminate.lock().take();
            let next = match desired {
                Desired::Gone => {
                    self.stop(None, Duration::ZERO, true).await;
                    self.env.volumes.cleanup(&self.uid);
                    return;
                }
                Desired::Run { pod, is_static } => {
                    if pod.metadata.deletion_timestamp.is_some() {
                        let grace = pod
                            .metadata
                            .deletion_grace_period_seconds
                            .or_else(|| {
                                pod.spec
                                    .as_ref()
                                    .and_then(|s| s.termination_grace_period_seconds)
                            })
                            .unwrap_or(30);
                        self.stop(Some(&pod), Duration::from_secs(grace.max(0) as u64), true)
                            .await;
                        self.env.volumes.cleanup(&self.uid);
                        if !is_static {
                            self.final_delete(&pod).await;
                        }
                        // Wait to be told the pod is gone (or retry the delete on the next change).
                        None
                    } else if let Some(termination) =
                        requested.or_else(|| self.terminated.clone()).filter(|_| {
                            pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Failed")
                        })
                    {
                        // Until the API shows the pod Failed, keep (re)reporting it.
                        self.terminate_pod(&pod, is_static, termination).await;
                        Some(tokio::time::Instant::now() + Duration::from_secs(2))
                    } else if matches!(
                        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    ) {
                        // A terminal pod keeps its exited containers (for logs) but nothing runs.
                        self.stop(Some(&pod), Duration::from_secs(0), false).await;
                        None
                    } else {
                        self.sync(&pod, is_static).await
                    }
                }
            };
            let sleep = match next {
                Some(at) => tokio::time::sleep_until(at),
                None => tokio::time::sleep(RESYNC * 6),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = self.desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = self.wake.notified() => {}
                _ = sleep => {}
            }
        }
    }

    async fn read(&mut self) -> Result<PodRuntime, skiff_cri::Error> {
        observed::read(&self.env.cri, &self.uid, &mut self.cache).await
    }

    fn reference(pod: &Pod, container: Option<(&str, Kind)>) -> ObjectReference {
        let mut r = skiff_runtime::events::reference(pod);
        if let Some((name, kind)) = container {
            r.field_path = Some(match kind {
                Kind::Regular => format!("spec.containers{{{name}}}"),
                Kind::Ephemeral => format!("spec.ephemeralContainers{{{name}}}"),
                Kind::Init | Kind::Sidecar => format!("spec.initContainers{{{name}}}"),
            });
        }
        r
    }

    fn event(
        &self,
        pod: &Pod,
        container: Option<(&str, Kind)>,
        kind: EventType,
        reason: &str,
        message: &str,
    ) {
        self.env
            .recorder
            .publish(&Self::reference(pod, container), kind, reason, message);
    }

    /// One sync of a pod that should run. Returns when to look again.
    async fn sync(&mut self, pod: &Arc<Pod>, is_static: bool) -> Option<tokio::time::Instant> {
        let mut runtime = match self.read().await {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(pod = %pod.name_any(), error = %err, "reading the pod's runtime state failed");
                return Some(tokio::time::Instant::now() + Duration::from_secs(2));
            }
        };
        let refresh_due = self.volumes_at.is_none_or(|at| at.elapsed() >= RESYNC);
        if refresh_due {
            self.refresh_volumes(pod, &runtime).await;
        }
        let ids: Vec<String> = runtime.containers.iter().map(|c| c.id.clone()).collect();
        let (ready, started, liveness_failed, startup_failed) = self.env.probes.verdicts(&ids);
        let verdicts = ProbeVerdicts {
            liveness_failed,
            startup_failed,
            started: started.clone(),
        };
        let now = now_nanos();
        let plan = plan::plan(pod, &runtime, &verdicts, &mut self.backoffs, now);
        let mut wake_at = plan.wake_at;
        if !plan.steps.is_empty() {
            if let Some(at) = self.execute(pod, &runtime, &plan.steps).await {
                wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
            }
            match self.read().await {
                Ok(r) => runtime = r,
                Err(err) => {
                    tracing::warn!(error = %err, "re-reading the pod's runtime state failed")
                }
            }
        }
        // Containers now running are no longer failing to start.
        for c in runtime
            .containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
        {
            self.failures.remove(&c.name);
        }
        let mut waiting: BTreeMap<String, Waiting> = self
            .failures
            .iter()
            .map(|(name, (w, _))| (name.clone(), w.clone()))
            .collect();
        let pod_ref = format!(
            "{}_{}({})",
            pod.name_any(),
            pod.namespace().unwrap_or_default(),
            self.uid
        );
        for name in plan.backing_off.keys() {
            let delay = self
                .backoffs
                .get(name)
                .map_or(plan::INITIAL_BACKOFF, |b| b.delay);
            waiting.insert(
                name.clone(),
                Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: format!(
                        "back-off {} restarting failed container={name} pod={pod_ref}",
                        humantime(delay)
                    ),
                },
            );
            let kind = plan::container_named(pod, name).map_or(Kind::Regular, |(k, _)| k);
            self.event(
                pod,
                Some((name, kind)),
                EventType::Warning,
                "BackOff",
                &format!("Back-off restarting failed container {name} in pod {pod_ref}"),
            );
        }
        if let Some(message) = &self.mount_failure {
            for (_, spec) in plan::containers(pod) {
                waiting.entry(spec.name.clone()).or_insert(Waiting {
                    reason: "ContainerCreating".into(),
                    message: message.clone(),
                });
            }
        }
        for (_, (_, retry)) in self.failures.iter() {
            wake_at = Some(wake_at.map_or(*retry, |w| w.min(*retry)));
        }
        if self.sandbox_retry_at > now {
            wake_at = Some(wake_at.map_or(self.sandbox_retry_at, |w| w.min(self.sandbox_retry_at)));
        }
        self.read_termination_messages(pod, &runtime);

        // Probes for the running containers of the current sandbox.
        let pod_ip = runtime
            .current_sandbox()
            .and_then(|s| s.ips.first().cloned())
            .unwrap_or_default();
        let specs = plan::containers(pod);
        let mut live = BTreeSet::new();
        for c in runtime
            .containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
        {
            live.insert(c.id.clone());
            if let Some((_, spec)) = specs.iter().find(|(_, s)| s.name == c.name) {
                self.env.probes.watch(
                    pod,
                    spec,
                    Target {
                        container_id: c.id.clone(),
                        pod_ip: self.probe_ip(pod, &pod_ip),
                    },
                    self.wake.clone(),
                );
            }
        }
        let own: BTreeSet<String> = runtime.containers.iter().map(|c| c.id.clone()).collect();
        let gone: Vec<String> = own.difference(&live).cloned().collect();
        self.env.probes.forget(&gone);
        let ids: Vec<String> = runtime.containers.iter().map(|c| c.id.clone()).collect();
        let (ready, started_now, _, _) = if ids.is_empty() {
            (ready, started, BTreeSet::new(), BTreeSet::new())
        } else {
            self.env.probes.verdicts(&ids)
        };

        let extra = Extra {
            waiting,
            ready,
            started: started_now,
            init_failed: plan.init_failed,
            host_ip: self.env.host_ip.clone(),
            termination_messages: self.termination_messages.clone(),
            failed: None,
        };
        let computed = status::compute(pod, &runtime, &extra, &now_rfc3339());
        if plan.init_failed || plan::is_finished(pod, &runtime) {
            // Nothing more will run: release the sandbox (its IP) but keep the containers.
            if runtime.ready_sandbox().is_some()
                && !runtime
                    .containers
                    .iter()
                    .any(|c| c.state == ContainerState::Running)
            {
                for s in runtime
                    .sandboxes
                    .iter()
                    .filter(|s| s.state == SandboxState::Ready)
                {
                    let _ = self
                        .env
                        .cri
                        .stop_pod_sandbox(api::StopPodSandboxRequest {
                            pod_sandbox_id: s.id.clone(),
                        })
                        .await;
                }
            }
        }
        self.write_status(pod, computed, is_static).await;
        let resync = tokio::time::Instant::now() + RESYNC;
        Some(match wake_at {
            Some(at) => {
                let delta = Duration::from_nanos((at - now_nanos()).max(0) as u64);
                (tokio::time::Instant::now() + delta).min(resync)
            }
            None => resync,
        })
    }

    fn probe_ip(&self, pod: &Pod, pod_ip: &str) -> String {
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
            || pod_ip.is_empty()
        {
            self.env.host_ip.clone()
        } else {
            pod_ip.to_owned()
        }
    }

    async fn refresh_volumes(&mut self, pod: &Pod, runtime: &PodRuntime) {
        let sources = self.sources(pod, None, runtime).await.unwrap_or_default();
        match self.env.volumes.prepare(pod, &sources).await {
            Ok(v) => {
                self.volumes = Some(v);
                self.mount_failure = None;
                self.volumes_at = Some(tokio::time::Instant::now());
            }
            Err(err) => {
                let message = err.to_string();
                if self.mount_failure.as_deref() != Some(message.as_str()) {
                    tracing::info!(pod = %pod.name_any(), error = %message, "mounting volumes failed");
                }
                self.event(pod, None, EventType::Warning, "FailedMount", &message);
                self.mount_failure = Some(message);
                // Retry soon rather than at the next resync.
                self.volumes_at =
                    Some(tokio::time::Instant::now() - RESYNC + Duration::from_secs(2));
            }
        }
    }

    /// The ConfigMaps, Secrets and Services a container's environment may read.
    async fn sources(
        &self,
        pod: &Pod,
        container: Option<&ContainerSpec>,
        runtime: &PodRuntime,
    ) -> Result<Sources, String> {
        let namespace = pod.namespace().unwrap_or_default();
        let mut config_maps = BTreeMap::new();
        let mut secrets = BTreeMap::new();
        if let Some(c) = container {
            let mut cm_names = BTreeSet::new();
            let mut secret_names = BTreeSet::new();
            for from in c.env_from.iter().flatten() {
                if let Some(r) = &from.config_map_ref {
                    cm_names.insert(r.name.clone());
                }
                if let Some(r) = &from.secret_ref {
                    secret_names.insert(r.name.clone());
                }
            }
            for e in c.env.iter().flatten() {
                if let Some(vf) = &e.value_from {
                    if let Some(r) = &vf.config_map_key_ref {
                        cm_names.insert(r.name.clone());
                    }
                    if let Some(r) = &vf.secret_key_ref {
                        secret_names.insert(r.name.clone());
                    }
                }
            }
            let cms: Api<ConfigMap> = Api::namespaced(self.env.client.clone(), &namespace);
            for name in cm_names {
                if let Some(cm) = cms.get_opt(&name).await.map_err(|e| e.to_string())? {
                    config_maps.insert(name, cm);
                }
            }
            let ss: Api<Secret> = Api::namespaced(self.env.client.clone(), &namespace);
            for name in secret_names {
                if let Some(s) = ss.get_opt(&name).await.map_err(|e| e.to_string())? {
                    secrets.insert(name, s);
                }
            }
        }
        let mut services: Vec<Service> = self
            .env
            .services
            .list_namespace(&namespace)
            .iter()
            .map(|s| (**s).clone())
            .collect();
        if let Some(k) = self.env.services.get_named("default", "kubernetes") {
            services.push((*k).clone());
        }
        Ok(Sources {
            config_maps,
            secrets,
            services,
            node_allocatable: self.env.allocatable.clone(),
            host_ip: self.env.host_ip.clone(),
            pod_ip: runtime
                .current_sandbox()
                .and_then(|s| s.ips.first().cloned())
                .unwrap_or_default(),
            node_name: self.env.node.node_name.clone(),
        })
    }

    /// Carry out steps; returns the earliest retry time of a failed step.
    async fn execute(
        &mut self,
        pod: &Arc<Pod>,
        runtime: &PodRuntime,
        steps: &[Step],
    ) -> Option<i64> {
        let mut retry_at: Option<i64> = None;
        let mut sandbox: Option<(String, api::PodSandboxConfig, String)> =
            runtime.ready_sandbox().map(|s| {
                (
                    s.id.clone(),
                    spec::sandbox_config(pod, s.attempt, &self.env.node),
                    s.ips.first().cloned().unwrap_or_default(),
                )
            });
        let grace = Duration::from_secs(
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0) as u64,
        );
        for step in steps {
            match step {
                Step::KillPod => {
                    if runtime
                        .sandboxes
                        .iter()
                        .any(|s| s.state == SandboxState::Ready)
                        && !runtime.containers.is_empty()
                    {
                        self.event(
                            pod,
                            None,
                            EventType::Normal,
                            "SandboxChanged",
                            "Pod sandbox changed, it will be killed and re-created.",
                        );
                    }
                    self.kill_all(Some(pod), runtime, grace).await;
                }
                Step::CreateSandbox { attempt } => {
                    let now = now_nanos();
                    if self.sandbox_retry_at > now {
                        retry_at = Some(self.sandbox_retry_at);
                        break;
                    }
                    if self.mount_failure.is_some() || self.volumes.is_none() {
                        // Upstream waits for volumes before creating the sandbox.
                        break;
                    }
                    match self.create_sandbox(pod, *attempt).await {
                        Ok(created) => {
                            self.sandbox_backoffs.clear();
                            sandbox = Some(created);
                        }
                        Err(message) => {
                            self.event(
                                pod,
                                None,
                                EventType::Warning,
                                "FailedCreatePodSandBox",
                                &format!("Failed to create pod sandbox: {message}"),
                            );
                            let _ =
                                plan::in_backoff(&mut self.sandbox_backoffs, "sandbox", now, now);
                            let delay = self
                                .sandbox_backoffs
                                .get("sandbox")
                                .map_or(plan::INITIAL_BACKOFF, |b| b.delay);
                            self.sandbox_retry_at = now + delay.as_nanos() as i64;
                            retry_at = Some(self.sandbox_retry_at);
                            break;
                        }
                    }
                }
                Step::StartContainer {
                    name,
                    kind,
                    restart_count,
                } => {
                    let Some((sandbox_id, sandbox_config, pod_ip)) = sandbox.clone() else {
                        break;
                    };
                    let now = now_nanos();
                    if let Some((_, retry)) = self.failures.get(name)
                        && *retry > now
                    {
                        retry_at = Some(retry_at.map_or(*retry, |r| r.min(*retry)));
                        if kind.in_order() {
                            break;
                        }
                        continue;
                    }
                    match self
                        .start_container(
                            pod,
                            &sandbox_id,
                            &sandbox_config,
                            &pod_ip,
                            name,
                            *kind,
                            *restart_count,
                            runtime,
                        )
                        .await
                    {
                        Ok(()) => {
                            self.failures.remove(name);
                            self.failure_backoffs.remove(name);
                        }
                        Err(waiting) => {
                            let _ = plan::in_backoff(&mut self.failure_backoffs, name, now, now);
                            let delay = self
                                .failure_backoffs
                                .get(name)
                                .map_or(plan::INITIAL_BACKOFF, |b| b.delay);
                            let retry = now + delay.as_nanos() as i64;
                            self.failures.insert(name.clone(), (waiting, retry));
                            retry_at = Some(retry_at.map_or(retry, |r| r.min(retry)));
                            if kind.in_order() {
                                // Init containers run in order: nothing after this one.
                                break;
                            }
                        }
                    }
                }
                Step::KillContainer { id, name, reason } => {
                    if let Some(c) = runtime.containers.iter().find(|c| &c.id == id) {
                        let kind =
                            plan::container_named(pod, name).map_or(Kind::Regular, |(k, _)| k);
                        if reason.contains("liveness") || reason.contains("startup") {
                            self.event(
                                pod,
                                Some((name, kind)),
                                EventType::Normal,
                                "Killing",
                                &format!("Container {name} {reason}"),
                            );
                        }
                        let probe_grace = plan::containers(pod)
                            .into_iter()
                            .find(|(_, s)| &s.name == name)
                            .and_then(|(_, s)| {
                                s.liveness_probe
                                    .as_ref()
                                    .and_then(|p| p.termination_grace_period_seconds)
                            })
                            .map(|s| Duration::from_secs(s.max(0) as u64));
                        self.kill_container(Some(pod), c, probe_grace.unwrap_or(grace))
                            .await;
                        self.env.probes.forget(std::slice::from_ref(id));
                    }
                }
                Step::RemoveContainer { id } => {
                    let _ = self
                        .env
                        .cri
                        .remove_container(api::RemoveContainerRequest {
                            container_id: id.clone(),
                        })
                        .await;
                    self.cache.remove(id);
                }
                Step::RemoveSandbox { id } => {
                    let _ = self
                        .env
                        .cri
                        .stop_pod_sandbox(api::StopPodSandboxRequest {
                            pod_sandbox_id: id.clone(),
                        })
                        .await;
                    let _ = self
                        .env
                        .cri
                        .remove_pod_sandbox(api::RemovePodSandboxRequest {
                            pod_sandbox_id: id.clone(),
                        })
                        .await;
                }
            }
        }
        retry_at
    }

    async fn create_sandbox(
        &mut self,
        pod: &Pod,
        attempt: u32,
    ) -> Result<(String, api::PodSandboxConfig, String), String> {
        let config = spec::sandbox_config(pod, attempt, &self.env.node);
        std::fs::create_dir_all(&config.log_directory)
            .map_err(|e| format!("creating the log directory: {e}"))?;
        let runtime_handler = self.runtime_handler(pod).await?;
        let response = self
            .env
            .cri
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler,
            })
            .await
            .map_err(|e| e.message())?;
        let id = response.pod_sandbox_id;
        let ip = self
            .env
            .cri
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|s| s.status)
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        let hosts = spec::hosts_file(pod, &ip, &self.env.node);
        let dir = self.env.pods_dir.join(&self.uid);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("etc-hosts"), hosts).map_err(|e| e.to_string())?;
        Ok((id, config, ip))
    }

    async fn runtime_handler(&self, pod: &Pod) -> Result<String, String> {
        let Some(class) = pod
            .spec
            .as_ref()
            .and_then(|s| s.runtime_class_name.clone())
            .filter(|c| !c.is_empty())
        else {
            return Ok(String::new());
        };
        let api: Api<k8s_openapi::api::node::v1::RuntimeClass> = Api::all(self.env.client.clone());
        match api.get_opt(&class).await {
            Ok(Some(rc)) => Ok(rc.handler),
            Ok(None) => Err(format!("runtimeclass.node.k8s.io \"{class}\" not found")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Pull (or find) the container's image per its pull policy.
    async fn ensure_image(
        &mut self,
        pod: &Pod,
        c: &ContainerSpec,
        kind: Kind,
    ) -> Result<(String, Option<i64>), Waiting> {
        let image = c.image.clone().unwrap_or_default();
        let reference = Some((c.name.as_str(), kind));
        if image.is_empty() {
            return Err(Waiting {
                reason: "InvalidImageName".into(),
                message: "no image given".into(),
            });
        }
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            let tagged = image
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':') || last.contains('@'));
            if !tagged || image.ends_with(":latest") {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        let status = self
            .env
            .cri
            .image_status(api::ImageStatusRequest {
                image: Some(api::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .map_err(|e| Waiting {
                reason: "ErrImagePull".into(),
                message: e.message(),
            })?;
        let present = status
            .image
            .as_ref()
            .map(|i| (i.id.clone(), i.uid.as_ref().map(|u| u.value)));
        match (policy.as_str(), present) {
            ("Never", None) => {
                let message =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                self.event(
                    pod,
                    reference,
                    EventType::Warning,
                    "ErrImageNeverPull",
                    &message,
                );
                return Err(Waiting {
                    reason: "ErrImageNeverPull".into(),
                    message,
                });
            }
            ("Never" | "IfNotPresent", Some((id, uid))) => {
                self.event(
                    pod,
                    reference,
                    EventType::Normal,
                    "Pulled",
                    &format!("Container image \"{image}\" already present on machine"),
                );
                return Ok((id, uid));
            }
            _ => {}
        }
        let now = now_nanos();
        if let Some(entry) = self.pull_backoffs.get(&image)
            && now - entry.last_update < entry.delay.as_nanos() as i64
        {
            let message = format!("Back-off pulling image \"{image}\"");
            self.event(pod, reference, EventType::Normal, "BackOff", &message);
            return Err(Waiting {
                reason: "ImagePullBackOff".into(),
                message,
            });
        }
        self.event(
            pod,
            reference,
            EventType::Normal,
            "Pulling",
            &format!("Pulling image \"{image}\""),
        );
        let auth = self.pull_auth(pod, &image).await;
        let started = std::time::Instant::now();
        match self
            .env
            .cri
            .pull_image(api::PullImageRequest {
                image: Some(api::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                auth,
                sandbox_config: None,
            })
            .await
        {
            Ok(r) => {
                self.pull_backoffs.remove(&image);
                let size = self
                    .env
                    .cri
                    .image_status(api::ImageStatusRequest {
                        image: Some(api::ImageSpec {
                            image: r.image_ref.clone(),
                            ..Default::default()
                        }),
                        verbose: false,
                    })
                    .await
                    .ok()
                    .and_then(|s| s.image);
                let took = started.elapsed().as_secs_f64();
                self.event(
                    pod,
                    reference,
                    EventType::Normal,
                    "Pulled",
                    &format!(
                        "Successfully pulled image \"{image}\" in {took:.3}s ({took:.3}s including waiting). Image size: {} bytes.",
                        size.as_ref().map_or(0, |i| i.size)
                    ),
                );
                Ok((r.image_ref, size.and_then(|i| i.uid.map(|u| u.value))))
            }
            Err(e) => {
                let _ = plan::in_backoff(&mut self.pull_backoffs, &image, now, now);
                let message = format!("Failed to pull image \"{image}\": {}", e.message());
                self.event(pod, reference, EventType::Warning, "Failed", &message);
                self.event(
                    pod,
                    reference,
                    EventType::Warning,
                    "Failed",
                    "Error: ErrImagePull",
                );
                Err(Waiting {
                    reason: "ErrImagePull".into(),
                    message,
                })
            }
        }
    }

    async fn pull_auth(&self, pod: &Pod, image: &str) -> Option<api::AuthConfig> {
        let namespace = pod.namespace().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(self.env.client.clone(), &namespace);
        for r in pod.spec.as_ref()?.image_pull_secrets.iter().flatten() {
            if let Ok(Some(secret)) = api.get_opt(&r.name).await
                && let Some(config) = super::volumes::decode_docker_config(&secret)
                && let Some(auth) = crate::images::auth_for(image, &config)
            {
                return Some(auth);
            }
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_container(
        &mut self,
        pod: &Arc<Pod>,
        sandbox_id: &str,
        sandbox_config: &api::PodSandboxConfig,
        pod_ip: &str,
        name: &str,
        kind: Kind,
        restart_count: i32,
        runtime: &PodRuntime,
    ) -> Result<(), Waiting> {
        let Some((_, c)) = plan::container_named(pod, name) else {
            return Ok(());
        };
        let reference = Some((name, kind));
        // `kubectl debug --target`: join the running target's process namespace.
        let pid_target = plan::ephemeral_target(pod, name)
            .filter(|_| kind == Kind::Ephemeral)
            .and_then(|target| {
                runtime.containers.iter().find(|t| {
                    t.name == target
                        && t.sandbox_id == sandbox_id
                        && t.state == ContainerState::Running
                })
            })
            .map(|t| t.id.clone());
        let (image, image_uid) = self.ensure_image(pod, &c, kind).await?;
        let config_error = |this: &Self, message: String| {
            this.event(
                pod,
                reference,
                EventType::Warning,
                "Failed",
                &format!("Error: {message}"),
            );
            Waiting {
                reason: "CreateContainerConfigError".into(),
                message,
            }
        };
        let sources = match self.sources(pod, Some(&c), runtime).await {
            Ok(s) => s,
            Err(e) => return Err(config_error(self, e)),
        };
        let mut sources = sources;
        sources.pod_ip = pod_ip.to_owned();
        let env = match env::environment(pod, &c, &sources) {
            Ok(e) => e,
            Err(e) => return Err(config_error(self, e)),
        };
        let Some(volumes) = self.volumes.clone() else {
            return Err(Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            });
        };
        let container_dir = self
            .env
            .pods_dir
            .join(&self.uid)
            .join("containers")
            .join(name);
        std::fs::create_dir_all(&container_dir).map_err(|e| config_error(self, e.to_string()))?;
        let termination_log = container_dir.join(format!("{:08x}", rand::random::<u32>()));
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&termination_log, b"").map_err(|e| config_error(self, e.to_string()))?;
            let _ =
                std::fs::set_permissions(&termination_log, std::fs::Permissions::from_mode(0o666));
        }
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let hosts = self.env.pods_dir.join(&self.uid).join("etc-hosts");
        if host_network || !hosts.exists() {
            let _ = std::fs::write(&hosts, spec::hosts_file(pod, pod_ip, &self.env.node));
        }
        let inputs = ContainerInputs {
            pod,
            container: &c,
            kind,
            restart_count,
            image,
            env,
            volumes: &volumes,
            hosts_file: Some(hosts),
            termination_log,
            hash: plan::spec_hash(&c),
            memory_capacity: self.env.node.memory_capacity,
            image_uid,
            pid_target,
        };
        let config = match spec::container_config(&inputs) {
            Ok(c) => c,
            Err(e) => return Err(config_error(self, e)),
        };
        let created = self
            .env
            .cri
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_owned(),
                config: Some(config),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await
            .map_err(|e| {
                let message = e.message();
                self.event(
                    pod,
                    reference,
                    EventType::Warning,
                    "Failed",
                    &format!("Error: {message}"),
                );
                Waiting {
                    reason: "CreateContainerError".into(),
                    message,
                }
            })?;
        let id = created.container_id;
        self.event(
            pod,
            reference,
            EventType::Normal,
            "Created",
            &format!("Created container: {name}"),
        );
        if let Err(e) = self
            .env
            .cri
            .start_container(api::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
        {
            let message = e.message();
            self.event(
                pod,
                reference,
                EventType::Warning,
                "Failed",
                &format!("Error: {message}"),
            );
            return Err(Waiting {
                reason: "RunContainerError".into(),
                message,
            });
        }
        self.event(
            pod,
            reference,
            EventType::Normal,
            "Started",
            &format!("Started container {name}"),
        );
        if let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let timeout = Duration::from_secs(30);
            if let Err(message) =
                super::hooks::run_handler(&self.env.cri, handler, &c, &id, pod_ip, timeout).await
            {
                self.event(
                    pod,
                    reference,
                    EventType::Warning,
                    "FailedPostStartHook",
                    &format!("PostStartHook failed: {message}"),
                );
                let _ = self
                    .env
                    .cri
                    .stop_container(api::StopContainerRequest {
                        container_id: id,
                        timeout: 2,
                    })
                    .await;
                return Err(Waiting {
                    reason: "PostStartHookError".into(),
                    message,
                });
            }
        }
        Ok(())
    }

    /// Stop one container: preStop hook, then SIGTERM and SIGKILL after the rest of `grace`.
    async fn kill_container(&self, pod: Option<&Pod>, c: &Container, grace: Duration) {
        if c.state != ContainerState::Running && c.state != ContainerState::Created {
            return;
        }
        let started = std::time::Instant::now();
        let spec = pod.and_then(|p| plan::container_named(p, &c.name));
        if let (Some(pod), Some((kind, spec))) = (pod, &spec) {
            self.event(
                pod,
                Some((&c.name, *kind)),
                EventType::Normal,
                "Killing",
                &format!("Stopping container {}", c.name),
            );
            if let Some(handler) = spec.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
                && c.state == ContainerState::Running
            {
                let ip = self.pod_ip_of(pod).await;
                if let Err(message) =
                    super::hooks::run_handler(&self.env.cri, handler, spec, &c.id, &ip, grace).await
                {
                    self.event(
                        pod,
                        Some((&c.name, *kind)),
                        EventType::Warning,
                        "FailedPreStopHook",
                        &format!("PreStopHook failed: {message}"),
                    );
                }
            }
        }
        tracing::debug!(container = %c.id, elapsed = ?started.elapsed(), "pre-stop done; stopping");
        let remaining = grace
            .saturating_sub(started.elapsed())
            .max(if grace.is_zero() {
                Duration::ZERO
            } else {
                MIN_GRACE
            });
        if let Err(e) = self
            .env
            .cri
            .stop_container(api::StopContainerRequest {
                container_id: c.id.clone(),
                timeout: remaining.as_secs() as i64,
            })
            .await
            && !e.is_not_found()
        {
            tracing::warn!(container = %c.id, error = %e, "stopping a container failed");
        }
        tracing::debug!(container = %c.id, elapsed = ?started.elapsed(), "container stopped");
    }

    async fn pod_ip_of(&self, pod: &Pod) -> String {
        pod.status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_else(|| self.env.host_ip.clone())
    }

    /// Stop every container (regular ones first, then init and sidecars) and the sandboxes.
    async fn kill_all(&self, pod: Option<&Pod>, runtime: &PodRuntime, grace: Duration) {
        let kinds: BTreeMap<String, Kind> = pod
            .map(|p| {
                plan::containers(p)
                    .into_iter()
                    .map(|(k, s)| (s.name.clone(), k))
                    .collect()
            })
            .unwrap_or_default();
        let running: Vec<&Container> = runtime
            .containers
            .iter()
            .filter(|c| matches!(c.state, ContainerState::Running | ContainerState::Created))
            .collect();
        let (regular, others): (Vec<&Container>, Vec<&Container>) = running
            .into_iter()
            .partition(|c| kinds.get(&c.name).copied().unwrap_or(Kind::Regular) == Kind::Regular);
        for group in [regular, others] {
            futures::future::join_all(
                group
                    .into_iter()
                    .map(|c| self.kill_container(pod, c, grace)),
            )
            .await;
        }
        let ids: Vec<String> = runtime.containers.iter().map(|c| c.id.clone()).collect();
        self.env.probes.forget(&ids);
        for s in runtime
            .sandboxes
            .iter()
            .filter(|s| s.state == SandboxState::Ready)
        {
            if let Err(e) = self
                .env
                .cri
                .stop_pod_sandbox(api::StopPodSandboxRequest {
                    pod_sandbox_id: s.id.clone(),
                })
                .await
            {
                tracing::warn!(sandbox = %s.id, error = %e, "stopping a sandbox failed");
            }
        }
    }

    /// Carry out a [`Termination`]: kill what runs (within its grace period), give back the
    /// emptyDirs, and report the pod Failed with its reason and message. Idempotent: later
    /// calls only re-send the status until the API has it.
    async fn terminate_pod(&mut self, pod: &Arc<Pod>, is_static: bool, termination: Termination) {
        if self.terminated.is_none() {
            tracing::info!(pod = %pod.name_any(), reason = %termination.reason, message = %termination.message, "terminating pod");
        }
        let runtime = match self.read().await {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(uid = %self.uid, error = %err, "reading the pod's runtime state failed");
                self.terminated = Some(termination);
                return;
            }
        };
        if runtime.is_running() {
            self.kill_all(Some(pod), &runtime, termination.grace).await;
        }
        if self.terminated.is_none() {
            self.env.volumes.release_empty_dirs(&self.uid);
        }
        let runtime = self.read().await.unwrap_or(runtime);
        self.read_termination_messages(pod, &runtime);
        let extra = Extra {
            host_ip: self.env.host_ip.clone(),
            termination_messages: self.termination_messages.clone(),
            failed: Some((termination.reason.clone(), termination.message.clone())),
            ..Default::default()
        };
        let computed = status::compute(pod, &runtime, &extra, &now_rfc3339());
        self.terminated = Some(termination);
        self.write_status(pod, computed, is_static).await;
    }

    /// Stop the pod; with `remove`, also remove its containers and sandboxes and report a final
    /// terminal status.
    async fn stop(&mut self, pod: Option<&Arc<Pod>>, grace: Duration, remove: bool) {
        let runtime = match self.read().await {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(uid = %self.uid, error = %err, "reading the pod's runtime state failed");
                return;
            }
        };
        if runtime.is_running() {
            self.kill_all(pod.map(|p| p.as_ref()), &runtime, grace)
                .await;
        }
        let runtime = self.read().await.unwrap_or(runtime);
        if let Some(pod) = pod
            && (remove
                || runtime
                    .containers
                    .iter()
                    .any(|c| c.state == ContainerState::Exited))
        {
            self.read_termination_messages(pod, &runtime);
            let extra = Extra {
                host_ip: self.env.host_ip.clone(),
                termination_messages: self.termination_messages.clone(),
                failed: self
                    .terminated
                    .as_ref()
                    .map(|t| (t.reason.clone(), t.message.clone())),
                ..Default::default()
            };
            let mut computed = status::compute(pod, &runtime, &extra, &now_rfc3339());
            // A terminal phase is final (an evicted pod's killed containers would otherwise
            // read as waiting to restart).
            if let Some(phase @ ("Succeeded" | "Failed")) =
                pod.status.as_ref().and_then(|s| s.phase.as_deref())
            {
                computed["phase"] = json!(phase);
            }
            if remove && !matches!(computed["phase"].as_str(), Some("Succeeded" | "Failed")) {
                // Since 1.27 a deleted pod ends in a terminal phase before it goes away.
                let all_ok = computed["containerStatuses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|s| s["state"]["terminated"]["exitCode"] == json!(0));
                computed["phase"] = json!(if all_ok { "Succeeded" } else { "Failed" });
            }
            let is_static = pod
                .annotations()
                .contains_key("kubernetes.io/config.source");
            self.write_status(pod, computed, is_static).await;
        }
        if remove {
            for c in &runtime.containers {
                let _ = self
                    .env
                    .cri
                    .remove_container(api::RemoveContainerRequest {
                        container_id: c.id.clone(),
                    })
                    .await;
            }
            for s in &runtime.sandboxes {
                let _ = self
                    .env
                    .cri
                    .remove_pod_sandbox(api::RemovePodSandboxRequest {
                        pod_sandbox_id: s.id.clone(),
                    })
                    .await;
            }
            if let Some(pod) = pod {
                let dir = spec::log_directory(&self.env.node, pod);
                let _ = std::fs::remove_dir_all(dir);
            }
            self.cache.clear();
        }
    }

    /// The kubelet's final delete once everything is stopped (grace period 0, guarded by uid).
    async fn final_delete(&self, pod: &Pod) {
        tracing::debug!(pod = %pod.name_any(), "final delete");
        let api: Api<Pod> = Api::namespaced(
            self.env.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&pod.name_any(), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => tracing::warn!(pod = %pod.name_any(), error = %e, "deleting the pod failed"),
        }
    }

    fn read_termination_messages(&mut self, pod: &Pod, runtime: &PodRuntime) {
        let specs = plan::containers(pod);
        for c in runtime
            .containers
            .iter()
            .filter(|c| c.state == ContainerState::Exited)
        {
            if self.termination_messages.contains_key(&c.id) {
                continue;
            }
            let spec = specs
                .iter()
                .find(|(_, s)| s.name == c.name)
                .map(|(_, s)| *s);
            let mut message = c
                .termination_message_host_path
                .as_ref()
                .and_then(|p| std::fs::read(p).ok())
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
                .unwrap_or_default();
            let fallback = spec.and_then(|s| s.termination_message_policy.as_deref())
                == Some("FallbackToLogsOnError");
            if message.is_empty() && fallback && c.exit_code != 0 {
                let log = spec::log_directory(&self.env.node, pod)
                    .join(spec::log_path(&c.name, c.restart_count));
                message = crate::logs::tail_for_message(&log, 80, 2048);
            }
            self.termination_messages.insert(c.id.clone(), message);
        }
        let ids: BTreeSet<&String> = runtime.containers.iter().map(|c| &c.id).collect();
        self.termination_messages.retain(|id, _| ids.contains(id));
    }

    async fn write_status(&mut self, pod: &Pod, status: Value, is_static: bool) {
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let current = pod
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok());
        let api: Api<Pod> = Api::namespaced(
            self.env.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        if is_static {
            if !self.ensure_mirror(&api, pod).await {
                return;
            }
        } else if current.as_ref().is_some_and(|c| same_status(c, &status)) {
            self.last_status = Some(status);
            return;
        }
        let patch = json!({ "status": status });
        match api
            .patch_status(&pod.name_any(), &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.last_status = Some(status),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                tracing::warn!(pod = %pod.name_any(), error = %e, "updating pod status failed")
            }
        }
    }

    /// Create the mirror pod of a static pod if it is missing. Returns whether it exists.
    async fn ensure_mirror(&self, api: &Api<Pod>, pod: &Pod) -> bool {
        match api.get_opt(&pod.name_any()).await {
            Ok(Some(existing)) => {
                let ours = existing
                    .annotations()
                    .get(super::statics::MIRROR_ANNOTATION)
                    == pod.annotations().get(super::statics::HASH_ANNOTATION);
                if ours {
                    return true;
                }
                // A stale mirror of an older manifest version: replace it.
                let _ = api
                    .delete(
                        &pod.name_any(),
                        &DeleteParams {
                            grace_period_seconds: Some(0),
                            ..Default::default()
                        },
                    )
                    .await;
                false
            }
            Ok(None) => {
                let node_uid = self.env.node_uid.read().clone();
                let mirror =
                    super::statics::mirror_pod(pod, &self.env.node.node_name, node_uid.as_deref());
                match api.create(&PostParams::default(), &mirror).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(pod = %pod.name_any(), error = %e, "creating the mirror pod failed");
                        false
                    }
                }
            }
            Err(_) => false,
        }
    }
}

/// Whether two statuses are the same apart from condition probe times.
fn same_status(current: &Value, computed: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(cs) = v.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in cs {
                if let Some(m) = c.as_object_mut() {
                    m.remove("lastProbeTime");
                }
            }
        }
        v
    };
    let current = strip(current);
    let computed = strip(computed);
    computed
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| current.get(k) == Some(v))
}

/// Upstream's duration formatting for back-off messages: `10s`, `1m20s`, `5m0s`.
pub fn humantime(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_durations_print_like_go() {
        assert_eq!(humantime(Duration::from_secs(10)), "10s");
        assert_eq!(humantime(Duration::from_secs(80)), "1m20s");
        assert_eq!(humantime(Duration::from_secs(300)), "5m0s");
    }

    #[test]
    fn statuses_compare_without_probe_times() {
        let a = json!({ "phase": "Running", "conditions": [{ "type": "Ready", "status": "True", "lastProbeTime": null }] });
        let b = json!({ "phase": "Running", "conditions": [{ "type": "Ready", "status": "True" }], "extra": 1 });
        assert!(same_status(&b, &a));
        let c = json!({ "phase": "Pending" });
        assert!(!same_status(&a, &c));
    }
}
