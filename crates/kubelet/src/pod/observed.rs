//! What the runtime holds for one pod, read through the CRI: its sandboxes and containers with
//! the labels and annotations the kubelet put on them. Planning and status computation work on
//! these plain values, so they are testable without a runtime.

use std::collections::BTreeMap;

use skiff_cri::{Cri, api};

/// Labels the kubelet sets on sandboxes and containers (upstream's names, so tools such as
/// crictl show them the same way).
pub mod labels {
    /// The pod's uid.
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    /// The pod's name.
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    /// The pod's namespace.
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    /// The container's name in the pod spec.
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// Annotation: hash of the container spec the container was created from.
    pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
    /// Annotation: the container's restart count when created.
    pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
    /// Annotation: where in the container the termination message is written.
    pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
    /// Annotation: which kind of container (`init`, `sidecar`, `regular`, `ephemeral`).
    pub const CONTAINER_KIND: &str = "io.skiff.container.kind";
}

/// Sandbox state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    /// Running, with its network set up.
    Ready,
    /// Stopped (or failed to start fully).
    NotReady,
}

/// One sandbox of the pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    /// Runtime id.
    pub id: String,
    /// Creation attempt (0 for the first sandbox).
    pub attempt: u32,
    /// State.
    pub state: SandboxState,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
    /// Pod IPs (empty for host-network pods and stopped sandboxes).
    pub ips: Vec<String>,
}

/// Container state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
    /// The runtime does not know.
    Unknown,
}

/// One container instance of the pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    /// Runtime id.
    pub id: String,
    /// Name in the pod spec.
    pub name: String,
    /// The sandbox it runs in.
    pub sandbox_id: String,
    /// State.
    pub state: ContainerState,
    /// Restart count at creation.
    pub restart_count: i32,
    /// Hash of the spec it was created from.
    pub hash: String,
    /// Created, nanoseconds since the epoch.
    pub created_at: i64,
    /// Started, nanoseconds since the epoch (0 if never).
    pub started_at: i64,
    /// Finished, nanoseconds since the epoch (0 if not).
    pub finished_at: i64,
    /// Exit code (when exited).
    pub exit_code: i32,
    /// Runtime reason (`Completed`, `Error`, `OOMKilled`, …).
    pub reason: String,
    /// Runtime message.
    pub message: String,
    /// The image the container runs (as requested).
    pub image: String,
    /// The image's digest reference.
    pub image_ref: String,
    /// Host path of the termination message file.
    pub termination_message_host_path: Option<String>,
}

impl Container {
    /// Whether the container exited successfully.
    pub fn succeeded(&self) -> bool {
        self.state == ContainerState::Exited && self.exit_code == 0
    }
}

/// Everything the runtime holds for one pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodRuntime {
    /// Sandboxes, newest first.
    pub sandboxes: Vec<Sandbox>,
    /// Containers, newest first.
    pub containers: Vec<Container>,
}

impl PodRuntime {
    /// The newest sandbox.
    pub fn current_sandbox(&self) -> Option<&Sandbox> {
        self.sandboxes.first()
    }

    /// The newest sandbox if it is ready.
    pub fn ready_sandbox(&self) -> Option<&Sandbox> {
        self.current_sandbox()
            .filter(|s| s.state == SandboxState::Ready)
    }

    /// Instances of container `name` in sandbox `sandbox_id`, newest first.
    pub fn instances<'a>(
        &'a self,
        name: &'a str,
        sandbox_id: &'a str,
    ) -> impl Iterator<Item = &'a Container> + 'a {
        self.containers
            .iter()
            .filter(move |c| c.name == name && c.sandbox_id == sandbox_id)
    }

    /// Instances of container `name` in any sandbox, newest first.
    pub fn all_instances<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Container> + 'a {
        self.containers.iter().filter(move |c| c.name == name)
    }

    /// Whether anything is running.
    pub fn is_running(&self) -> bool {
        self.sandboxes
            .iter()
            .any(|s| s.state == SandboxState::Ready)
            || self
                .containers
                .iter()
                .any(|c| matches!(c.state, ContainerState::Running | ContainerState::Created))
    }
}

fn nanos(ts: i64) -> i64 {
    ts
}

/// Read the pod's sandboxes and containers from the runtime. `cache` keeps the detailed status
/// of containers whose state has not changed, so steady pods cost two list calls.
pub async fn read(
    cri: &Cri,
    uid: &str,
    cache: &mut BTreeMap<String, Container>,
) -> Result<PodRuntime, skiff_cri::Error> {
    let mut selector = std::collections::HashMap::new();
    selector.insert(labels::POD_UID.to_owned(), uid.to_owned());
    let sandboxes = cri
        .list_pod_sandbox(api::ListPodSandboxRequest {
            filter: Some(api::PodSandboxFilter {
                label_selector: selector.clone(),
                ..Default::default()
            }),
        })
        .await?
        .items;
    let mut out = PodRuntime::default();
    for s in sandboxes {
        let state = if s.state == api::PodSandboxState::SandboxReady as i32 {
            SandboxState::Ready
        } else {
            SandboxState::NotReady
        };
        let mut ips = Vec::new();
        if state == SandboxState::Ready
            && let Ok(status) = cri
                .pod_sandbox_status(api::PodSandboxStatusRequest {
                    pod_sandbox_id: s.id.clone(),
                    verbose: false,
                })
                .await
            && let Some(net) = status.status.and_then(|st| st.network)
        {
            if !net.ip.is_empty() {
                ips.push(net.ip);
            }
            ips.extend(net.additional_ips.into_iter().map(|i| i.ip));
        }
        out.sandboxes.push(Sandbox {
            id: s.id,
            attempt: s.metadata.map_or(0, |m| m.attempt),
            state,
            created_at: nanos(s.created_at),
            ips,
        });
    }
    out.sandboxes
        .sort_by_key(|s| std::cmp::Reverse((s.created_at, s.attempt)));

    let containers = cri
        .list_containers(api::ListContainersRequest {
            filter: Some(api::ContainerFilter {
                label_selector: selector,
                ..Default::default()
            }),
        })
        .await?
        .containers;
    let mut seen = std::collections::BTreeSet::new();
    for c in containers {
        seen.insert(c.id.clone());
        let state = match c.state {
            x if x == api::ContainerState::ContainerCreated as i32 => ContainerState::Created,
            x if x == api::ContainerState::ContainerRunning as i32 => ContainerState::Running,
            x if x == api::ContainerState::ContainerExited as i32 => ContainerState::Exited,
            _ => ContainerState::Unknown,
        };
        if let Some(cached) = cache.get(&c.id)
            && cached.state == state
        {
            out.containers.push(cached.clone());
            continue;
        }
        let status = match cri
            .container_status(api::ContainerStatusRequest {
                container_id: c.id.clone(),
                verbose: false,
            })
            .await
        {
            Ok(s) => s.status,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let Some(status) = status else { continue };
        let annotations = &status.annotations;
        let container = Container {
            id: c.id.clone(),
            name: status
                .labels
                .get(labels::CONTAINER_NAME)
                .cloned()
                .or_else(|| status.metadata.as_ref().map(|m| m.name.clone()))
                .unwrap_or_default(),
            sandbox_id: c.pod_sandbox_id.clone(),
            state,
            restart_count: annotations
                .get(labels::RESTART_COUNT)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            hash: annotations
                .get(labels::CONTAINER_HASH)
                .cloned()
                .unwrap_or_default(),
            created_at: status.created_at,
            started_at: status.started_at,
            finished_at: status.finished_at,
            exit_code: status.exit_code,
            reason: status.reason.clone(),
            message: status.message.clone(),
            image: status.image.map(|i| i.image).unwrap_or_default(),
            image_ref: status.image_ref.clone(),
            termination_message_host_path: status
                .mounts
                .iter()
                .find(|m| {
                    Some(m.container_path.as_str())
                        == annotations
                            .get(labels::TERMINATION_MESSAGE_PATH)
                            .map(String::as_str)
                })
                .map(|m| m.host_path.clone()),
        };
        cache.insert(c.id.clone(), container.clone());
        out.containers.push(container);
    }
    cache.retain(|id, _| seen.contains(id));
    out.containers
        .sort_by_key(|c| std::cmp::Reverse((c.created_at, c.restart_count)));
    Ok(out)
}
