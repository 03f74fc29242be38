//! The pod manager: merges the pod sources (pods bound to this node in the API, static pod
//! manifests), admits new pods against the node ([`super::admission`]: oldest first, each
//! against the pods admitted before it, a refused pod marked Failed and never run), runs one
//! [`Worker`] per admitted pod, wakes workers when the runtime state of their containers
//! changes (the PLEG: a relist of sandboxes and containers every second), terminates pods the
//! eviction manager picks ([`PodManager::evict`]), and stops what the runtime runs for pods no
//! source knows any more (leftovers of a kubelet restart, force-deleted pods).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeStatus, Pod};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use parking_lot::Mutex;
use serde_json::json;
use skiff_cri::api;
use skiff_runtime::Informer;
use skiff_runtime::informer::{Change, Notification};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::admission::{self, Rejection};
use super::observed::labels;
use super::preemption;
use super::statics;
use super::volumes::MountedVolume;
use super::worker::{Desired, Env, Termination, Worker};

/// How often the runtime is relisted (upstream's PLEG relist period).
const RELIST: Duration = Duration::from_secs(1);

struct Handle {
    desired: watch::Sender<Desired>,
    wake: Arc<Notify>,
    terminate: Arc<Mutex<Option<Termination>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Runs the pods of this node.
pub struct PodManager {
    env: Arc<Env>,
    workers: Mutex<HashMap<String, Handle>>,
    /// Pods the node refused (uid), so they are not admitted later.
    rejected: Mutex<HashSet<String>>,
    /// Pods being terminated by the kubelet (evicted): they no longer count as admitted.
    terminated: Mutex<HashSet<String>>,
    /// This node, for admission (its labels, taints and allocatable).
    nodes: Informer<Node>,
    max_pods: usize,
    shutdown: CancellationToken,
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl PodManager {
    /// A manager over `env`; `nodes` follows this node's Node object.
    pub fn new(
        env: Arc<Env>,
        nodes: Informer<Node>,
        max_pods: usize,
        shutdown: CancellationToken,
    ) -> Arc<PodManager> {
        Arc::new(PodManager {
            env,
            workers: Mutex::new(HashMap::new()),
            rejected: Mutex::new(HashSet::new()),
            terminated: Mutex::new(HashSet::new()),
            nodes,
            max_pods,
            shutdown,
        })
    }

    fn desire(&self, uid: &str, desired: Desired) {
        let mut workers = self.workers.lock();
        workers.retain(|_, h| !h.task.is_finished());
        if let Some(h) = workers.get(uid) {
            h.desired.send_replace(desired);
            return;
        }
        let (tx, rx) = watch::channel(desired);
        let wake = Arc::new(Notify::new());
        let terminate = Arc::new(Mutex::new(None));
        let worker = Worker::new(
            self.env.clone(),
            uid.to_owned(),
            rx,
            wake.clone(),
            terminate.clone(),
        );
        let task = tokio::spawn(worker.run(self.shutdown.clone()));
        workers.insert(
            uid.to_owned(),
            Handle {
                desired: tx,
                wake,
                terminate,
                task,
            },
        );
    }

    /// Terminate a pod on the kubelet's own account (an eviction): its worker kills the
    /// containers within `termination.grace`, reports phase Failed with the reason and
    /// message, and runs nothing more for it. Returns whether the pod was running here.
    pub fn evict(&self, uid: &str, termination: Termination) -> bool {
        let workers = self.workers.lock();
        let Some(h) = workers.get(uid).filter(|h| !h.task.is_finished()) else {
            return false;
        };
        if !self.terminated.lock().insert(uid.to_owned()) {
            return false;
        }
        *h.terminate.lock() = Some(termination);
        h.wake.notify_one();
        true
    }

    /// The pods admitted and still active: running (or about to), not finished, not being
    /// terminated by the kubelet. What a new pod is admitted against.
    pub fn admitted(&self) -> Vec<(Arc<Pod>, bool)> {
        let terminated = self.terminated.lock().clone();
        self.workers
            .lock()
            .iter()
            .filter(|(uid, h)| !h.task.is_finished() && !terminated.contains(*uid))
            .filter_map(|(_, h)| match &*h.desired.borrow() {
                Desired::Run { pod, is_static } if !is_terminal(pod) => {
                    Some((pod.clone(), *is_static))
                }
                _ => None,
            })
            .collect()
    }

    /// This node as admission sees it: the Node object, with the allocatable the kubelet
    /// computed itself until the object reports one.
    fn node(&self) -> Node {
        let mut node = self
            .nodes
            .get_named("", &self.env.node.node_name)
            .map(|n| (*n).clone())
            .unwrap_or_default();
        let status = node.status.get_or_insert_with(NodeStatus::default);
        if status.allocatable.as_ref().is_none_or(|a| a.is_empty()) {
            let mut allocatable: BTreeMap<_, _> = self
                .env
                .allocatable
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        k8s_openapi::apimachinery::pkg::api::resource::Quantity(v.to_string()),
                    )
                })
                .collect();
            allocatable.entry("pods".to_owned()).or_insert_with(|| {
                k8s_openapi::apimachinery::pkg::api::resource::Quantity(self.max_pods.to_string())
            });
            status.allocatable = Some(allocatable);
        }
        node
    }

    /// Wake a pod's worker (a probe verdict or runtime change).
    pub fn wake(&self, uid: &str) {
        if let Some(h) = self.workers.lock().get(uid) {
            h.wake.notify_one();
        }
    }

    /// Admit (or refuse) and run an API pod.
    async fn api_pod(&self, pod: Arc<Pod>) {
        if statics::is_mirror(&pod) {
            return;
        }
        let uid = pod.uid().unwrap_or_default();
        if self.rejected.lock().contains(&uid) {
            return;
        }
        let known = self.workers.lock().contains_key(&uid);
        if !known && !is_terminal(&pod) && pod.metadata.deletion_timestamp.is_none() {
            let admitted: Vec<Arc<Pod>> = self.admitted().into_iter().map(|(p, _)| p).collect();
            if let Err(rejection) = admission::admit(&pod, &self.node(), &admitted, false) {
                tracing::info!(pod = %pod.name_any(), reason = %rejection.reason, message = %rejection.message, "pod rejected");
                self.rejected.lock().insert(uid.clone());
                self.reject(&pod, &rejection).await;
                // A pod that ran here before a kubelet restart and no longer fits is stopped,
                // as upstream's pod worker kills a rejected pod's containers.
                self.desire(&uid, Desired::Gone);
                return;
            }
        }
        self.desire(
            &uid,
            Desired::Run {
                pod,
                is_static: false,
            },
        );
    }

    /// Admit a batch of API pods oldest first (upstream `HandlePodAdditions` sorts by
    /// creation time), so which of them fit does not depend on list order.
    async fn api_pods(&self, mut pods: Vec<Arc<Pod>>) {
        pods.sort_by(|a, b| admission::admission_order(a, b));
        for pod in pods {
            self.api_pod(pod).await;
        }
    }

    /// Upstream `rejectPod`: a Warning event with the reason and message, and the pod
    /// Failed with `Pod was rejected: <message>`.
    async fn reject(&self, pod: &Pod, rejection: &Rejection) {
        let api: Api<Pod> = Api::namespaced(
            self.env.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        let patch = json!({ "status": {
            "phase": "Failed",
            "reason": rejection.reason,
            "message": rejection.status_message(),
            "qosClass": super::status::qos_class(pod),
        } });
        let params = PatchParams {
            field_manager: Some("kubelet".into()),
            ..Default::default()
        };
        if let Err(e) = api
            .patch_status(&pod.name_any(), &params, &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(pod = %pod.name_any(), error = %e, "rejecting the pod failed");
        }
        self.env.recorder.publish(
            &skiff_runtime::events::reference(pod),
            skiff_runtime::events::EventType::Warning,
            &rejection.reason,
            &rejection.message,
        );
    }

    /// Run until shutdown: follow `pods` (this node's API pods) and the manifests in
    /// `manifests`, and relist the runtime.
    pub async fn run(
        self: Arc<Self>,
        pods: Informer<Pod>,
        manifests: PathBuf,
        manifest_check: Duration,
    ) {
        let mut subscription = pods.subscribe();
        pods.wait_synced().await;
        // Admission judges against the Node; wait (briefly) for it.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.nodes.wait_synced()).await;
        self.api_pods(pods.list()).await;
        tokio::spawn(self.clone().watch_manifests(manifests, manifest_check));
        tokio::spawn(self.clone().relist(pods.clone()));
        loop {
            let next = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                n = subscription.recv() => n,
            };
            match next {
                Some(Notification::Change(Change::Applied { new, .. })) => self.api_pod(new).await,
                Some(Notification::Change(Change::Deleted(pod))) => {
                    if !statics::is_mirror(&pod) {
                        let uid = pod.uid().unwrap_or_default();
                        self.rejected.lock().remove(&uid);
                        self.terminated.lock().remove(&uid);
                        self.desire(&uid, Desired::Gone);
                    }
                }
                Some(Notification::Lagged) => {
                    let current: HashSet<String> =
                        pods.list().iter().filter_map(|p| p.uid()).collect();
                    let gone: Vec<String> = self
                        .workers
                        .lock()
                        .iter()
                        .filter(|(uid, h)| {
                            !current.contains(*uid)
                                && matches!(
                                    &*h.desired.borrow(),
                                    Desired::Run {
                                        is_static: false,
                                        ..
                                    }
                                )
                        })
                        .map(|(uid, _)| uid.clone())
                        .collect();
                    for uid in gone {
                        self.desire(&uid, Desired::Gone);
                    }
                    self.api_pods(pods.list()).await;
                }
                None => return,
            }
        }
    }

    async fn watch_manifests(self: Arc<Self>, dir: PathBuf, period: Duration) {
        let mut running: BTreeMap<String, String> = BTreeMap::new();
        loop {
            let pods = statics::read_manifests(&dir, &self.env.node.node_name);
            let mut seen = BTreeMap::new();
            for pod in pods {
                let uid = pod.uid().unwrap_or_default();
                seen.insert(uid.clone(), pod.name_any());
                if !running.contains_key(&uid) {
                    if !self.admit_static(&pod) {
                        continue;
                    }
                    tracing::info!(pod = %pod.name_any(), "starting static pod");
                    self.desire(
                        &uid,
                        Desired::Run {
                            pod: Arc::new(pod),
                            is_static: true,
                        },
                    );
                }
            }
            for (uid, name) in &running {
                if !seen.contains_key(uid) {
                    tracing::info!(pod = %name, "static pod manifest removed; stopping it");
                    self.desire(uid, Desired::Gone);
                    self.delete_mirror(name).await;
                }
            }
            running = seen;
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }

    /// Admit a static pod: a critical pod short only of resources preempts non-critical
    /// pods to fit ([`preemption`]); one refused otherwise does not run, and says why in a
    /// Warning event (it is not retried until its manifest changes).
    fn admit_static(&self, pod: &Pod) -> bool {
        let admitted: Vec<Arc<Pod>> = self.admitted().into_iter().map(|(p, _)| p).collect();
        let node = self.node();
        let Err(mut rejection) = admission::admit(pod, &node, &admitted, true) else {
            return true;
        };
        if rejection.reason.starts_with("OutOf") {
            // Would it fit at all with only the critical pods? If not, say why (upstream
            // reports the reasons preemption cannot fix).
            let critical: Vec<Arc<Pod>> = admitted
                .iter()
                .filter(|p| crate::eviction::is_critical(p))
                .cloned()
                .collect();
            match admission::admit(pod, &node, &critical, true) {
                Err(unfixable) => rejection = unfixable,
                Ok(()) => {
                    let needed = preemption::shortage(pod, &node, &admitted);
                    if let Some(victims) = preemption::pods_to_preempt(pod, &needed, &admitted) {
                        let remaining: Vec<Arc<Pod>> = admitted
                            .iter()
                            .filter(|p| !victims.iter().any(|v| Arc::ptr_eq(v, p)))
                            .cloned()
                            .collect();
                        if admission::admit(pod, &node, &remaining, true).is_ok() {
                            for victim in &victims {
                                self.preempt(victim);
                            }
                            return true;
                        }
                    }
                }
            }
        }
        tracing::warn!(pod = %pod.name_any(), reason = %rejection.reason, message = %rejection.message, "static pod rejected");
        self.env.recorder.publish(
            &skiff_runtime::events::reference(pod),
            skiff_runtime::events::EventType::Warning,
            &rejection.reason,
            &rejection.message,
        );
        false
    }

    /// Stop `victim` to make room for a critical pod (Failed, `Preempting`).
    fn preempt(&self, victim: &Pod) {
        let grace = victim
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64;
        let termination = Termination {
            reason: preemption::REASON.to_owned(),
            message: preemption::MESSAGE.to_owned(),
            grace: Duration::from_secs(grace),
        };
        if self.evict(&victim.uid().unwrap_or_default(), termination) {
            tracing::info!(pod = %victim.name_any(), "preempting pod to admit a critical pod");
            self.env.recorder.publish(
                &skiff_runtime::events::reference(victim),
                skiff_runtime::events::EventType::Warning,
                preemption::REASON,
                preemption::MESSAGE,
            );
        }
    }

    async fn delete_mirror(&self, name: &str) {
        let lp = kube::api::ListParams::default().fields(&format!(
            "metadata.name={name},spec.nodeName={}",
            self.env.node.node_name
        ));
        let api: Api<Pod> = Api::all(self.env.client.clone());
        if let Ok(list) = api.list(&lp).await {
            for mirror in list.items.into_iter().filter(statics::is_mirror) {
                let ns: Api<Pod> = Api::namespaced(
                    self.env.client.clone(),
                    &mirror.namespace().unwrap_or_default(),
                );
                let _ = ns
                    .delete(
                        &mirror.name_any(),
                        &kube::api::DeleteParams {
                            grace_period_seconds: Some(0),
                            ..Default::default()
                        },
                    )
                    .await;
            }
        }
    }

    /// The PLEG: relist sandboxes and containers, wake the workers of pods whose runtime
    /// state changed, and clean up pods no source knows.
    async fn relist(self: Arc<Self>, pods: Informer<Pod>) {
        let mut last: HashMap<String, u64> = HashMap::new();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(RELIST) => {}
            }
            let Ok(sandboxes) = self
                .env
                .cri
                .list_pod_sandbox(api::ListPodSandboxRequest::default())
                .await
            else {
                continue;
            };
            let Ok(containers) = self
                .env
                .cri
                .list_containers(api::ListContainersRequest::default())
                .await
            else {
                continue;
            };
            let mut state: HashMap<String, Vec<(String, i32)>> = HashMap::new();
            for s in sandboxes.items {
                if let Some(uid) = s.labels.get(labels::POD_UID) {
                    state.entry(uid.clone()).or_default().push((s.id, s.state));
                }
            }
            for c in containers.containers {
                if let Some(uid) = c.labels.get(labels::POD_UID) {
                    state.entry(uid.clone()).or_default().push((c.id, c.state));
                }
            }
            let mut now: HashMap<String, u64> = HashMap::new();
            for (uid, mut items) in state {
                items.sort();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                items.hash(&mut h);
                now.insert(uid, h.finish());
            }
            for (uid, print) in &now {
                if last.get(uid) != Some(print) {
                    self.wake(uid);
                }
                let known = self
                    .workers
                    .lock()
                    .get(uid)
                    .is_some_and(|h| !h.task.is_finished());
                let in_api = pods
                    .list()
                    .iter()
                    .any(|p| p.uid().as_deref() == Some(uid.as_str()));
                if !known && !in_api {
                    tracing::info!(uid = %uid, "cleaning up a pod no source knows");
                    self.desire(uid, Desired::Gone);
                }
            }
            last = now;
        }
    }
}

impl crate::stats::PodSource for PodManager {
    fn pods(&self) -> Vec<Arc<Pod>> {
        self.admitted().into_iter().map(|(p, _)| p).collect()
    }

    fn volumes(&self, uid: &str) -> Vec<MountedVolume> {
        self.env.volumes.mounted(uid)
    }
}
