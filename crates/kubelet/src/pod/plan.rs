//! Deciding what to do for a pod: desired state (the pod spec) against observed state (its
//! sandboxes and containers) gives a list of [`Step`]s, following upstream's
//! `computePodActions`: a new sandbox when there is no ready one (all containers then start
//! again in it); init containers one at a time in order, sidecar init containers
//! (`restartPolicy: Always`) kept running; then every regular container; exited containers
//! restarted as the restart policy says, with the crash-loop back-off (first restart at once,
//! then 10 s doubling to 5 min); containers whose liveness or startup probe failed, or whose
//! spec changed, killed so they restart. Ephemeral containers (`kubectl debug`) start once
//! the pod has a sandbox, initialized or not, and never restart.
//!
//! Pure: no IO, time is passed in.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container as ContainerSpec, Pod};

use super::observed::{Container, ContainerState, PodRuntime, SandboxState};

/// Which list of the pod spec a container comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `initContainers` with no restart policy: run to completion, in order.
    Init,
    /// `initContainers` with `restartPolicy: Always`: started in order and kept running.
    Sidecar,
    /// `containers`.
    Regular,
    /// `ephemeralContainers`: started once, never restarted, no probes.
    Ephemeral,
}

impl Kind {
    /// Whether containers of this kind start one after another (a failure stops the rest).
    pub fn in_order(self) -> bool {
        matches!(self, Kind::Init | Kind::Sidecar)
    }

    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Init => "init",
            Kind::Sidecar => "sidecar",
            Kind::Regular => "regular",
            Kind::Ephemeral => "ephemeral",
        }
    }
}

/// One action.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Stop every container and the sandbox(es) of the pod.
    KillPod,
    /// Create a sandbox with this attempt number.
    CreateSandbox {
        /// Attempt (0 first).
        attempt: u32,
    },
    /// Create and start a container in the current (or just created) sandbox.
    StartContainer {
        /// Container name.
        name: String,
        /// Which list it is from.
        kind: Kind,
        /// The restart count to record.
        restart_count: i32,
    },
    /// Stop a container.
    KillContainer {
        /// Runtime id.
        id: String,
        /// Container name.
        name: String,
        /// Why (for the Killing event).
        reason: String,
    },
    /// Remove a stopped container.
    RemoveContainer {
        /// Runtime id.
        id: String,
    },
    /// Remove a stopped sandbox.
    RemoveSandbox {
        /// Runtime id.
        id: String,
    },
}

/// The crash-loop back-off of one container name (upstream `flowcontrol.Backoff`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffEntry {
    /// The current window.
    pub delay: Duration,
    /// The finish time the window was last advanced for (nanoseconds).
    pub last_update: i64,
}

/// Back-off state of a pod's containers, by name.
pub type Backoffs = BTreeMap<String, BackoffEntry>;

/// First restart delay after the immediate one.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// Largest restart delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Whether `name`, which finished at `finished_at`, must wait; advances the window when not.
/// Returns the time it may restart at if it must wait.
pub fn in_backoff(backoffs: &mut Backoffs, name: &str, finished_at: i64, now: i64) -> Option<i64> {
    if let Some(entry) = backoffs.get(name) {
        let window = entry.delay.as_nanos() as i64;
        if now - finished_at < window {
            return Some(finished_at + window);
        }
    }
    let next = match backoffs.get(name) {
        // An entry unused for twice the maximum starts over.
        Some(e) if finished_at - e.last_update <= 2 * MAX_BACKOFF.as_nanos() as i64 => {
            (e.delay * 2).min(MAX_BACKOFF)
        }
        _ => INITIAL_BACKOFF,
    };
    backoffs.insert(
        name.to_owned(),
        BackoffEntry {
            delay: next,
            last_update: finished_at,
        },
    );
    None
}

/// What probes say about running containers, by container id.
#[derive(Debug, Clone, Default)]
pub struct ProbeVerdicts {
    /// Containers whose liveness probe failed its threshold.
    pub liveness_failed: BTreeSet<String>,
    /// Containers whose startup probe failed its threshold.
    pub startup_failed: BTreeSet<String>,
    /// Containers whose startup probe has succeeded (or that have none).
    pub started: BTreeSet<String>,
}

/// The plan for one sync.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Steps, in order.
    pub steps: Vec<Step>,
    /// Containers waiting out a crash-loop back-off, with the time they may restart.
    pub backing_off: BTreeMap<String, i64>,
    /// An init container failed and the restart policy is Never: the pod has failed.
    pub init_failed: bool,
    /// When to look again at the latest (a back-off expiring).
    pub wake_at: Option<i64>,
}

/// The pod's restart policy (`Always` by default).
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Whether an exited container should run again.
pub fn should_restart(policy: &str, c: &Container) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => c.exit_code != 0,
        _ => true,
    }
}

/// The pod's containers with their kinds, in start order.
pub fn containers(pod: &Pod) -> Vec<(Kind, &ContainerSpec)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        let kind = if c.restart_policy.as_deref() == Some("Always") {
            Kind::Sidecar
        } else {
            Kind::Init
        };
        out.push((kind, c));
    }
    out.extend(spec.containers.iter().map(|c| (Kind::Regular, c)));
    out
}

/// The pod's ephemeral containers as container specs: the fields the two types share
/// (validation refuses ports, probes and resources on ephemeral ones).
pub fn ephemeral_containers(pod: &Pod) -> Vec<ContainerSpec> {
    pod.spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .filter_map(|e| {
            let mut value = serde_json::to_value(e).ok()?;
            value.as_object_mut()?.remove("targetContainerName");
            serde_json::from_value(value).ok()
        })
        .collect()
}

/// The kind and spec of the container `name`, from any of the pod's three lists.
pub fn container_named(pod: &Pod, name: &str) -> Option<(Kind, ContainerSpec)> {
    containers(pod)
        .into_iter()
        .find(|(_, s)| s.name == name)
        .map(|(k, s)| (k, s.clone()))
        .or_else(|| {
            ephemeral_containers(pod)
                .into_iter()
                .find(|s| s.name == name)
                .map(|s| (Kind::Ephemeral, s))
        })
}

/// The container whose process namespace the ephemeral container `name` joins
/// (`kubectl debug --target`).
pub fn ephemeral_target<'p>(pod: &'p Pod, name: &str) -> Option<&'p str> {
    pod.spec
        .as_ref()?
        .ephemeral_containers
        .iter()
        .flatten()
        .find(|e| e.name == name)?
        .target_container_name
        .as_deref()
}

/// A stable hash of a container's spec: a changed spec (e.g. a new image) restarts it.
pub fn spec_hash(c: &ContainerSpec) -> String {
    let json = serde_json::to_vec(c).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, &json);
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn next_restart_count(runtime: &PodRuntime, name: &str) -> i32 {
    runtime
        .all_instances(name)
        .map(|c| c.restart_count + 1)
        .max()
        .unwrap_or(0)
}

/// Whether the pod has run and will not run again (every regular container exited and none
/// is to be restarted). Such a pod gets no new sandbox.
pub fn is_finished(pod: &Pod, runtime: &PodRuntime) -> bool {
    let policy = restart_policy(pod);
    let regular: Vec<_> = containers(pod)
        .into_iter()
        .filter(|(k, _)| *k == Kind::Regular)
        .collect();
    !regular.is_empty()
        && regular
            .iter()
            .all(|(_, spec)| match runtime.all_instances(&spec.name).next() {
                Some(c) => c.state == ContainerState::Exited && !should_restart(policy, c),
                None => false,
            })
}

/// Plan one sync of a pod that should be running.
pub fn plan(
    pod: &Pod,
    runtime: &PodRuntime,
    probes: &ProbeVerdicts,
    backoffs: &mut Backoffs,
    now: i64,
) -> Plan {
    let mut plan = Plan::default();
    let policy = restart_policy(pod);
    let specs = containers(pod);

    // A sandbox to run in.
    let sandbox_id = match runtime.ready_sandbox() {
        Some(s) => Some(s.id.clone()),
        None => {
            let has_history = !runtime.containers.is_empty();
            let attempt = runtime.current_sandbox().map_or(0, |s| s.attempt + 1);
            if is_finished(pod, runtime) || (policy == "Never" && has_history) {
                // Upstream: a pod that must not restart gets no new sandbox.
                return finished_cleanup(runtime, plan);
            }
            if runtime.is_running() {
                plan.steps.push(Step::KillPod);
            }
            plan.steps.push(Step::CreateSandbox { attempt });
            None
        }
    };
    let in_current = |name: &str| current_instance(runtime, sandbox_id.as_deref(), name);

    let wake = |plan: &mut Plan, at: i64| {
        plan.wake_at = Some(plan.wake_at.map_or(at, |w| w.min(at)));
    };

    let start = |plan: &mut Plan, kind: Kind, name: &str| {
        plan.steps.push(Step::StartContainer {
            name: name.to_owned(),
            kind,
            restart_count: next_restart_count(runtime, name),
        });
    };

    // Restart an exited container if its back-off allows; records waiting otherwise.
    let restart_or_wait =
        |plan: &mut Plan, backoffs: &mut Backoffs, kind: Kind, c: &Container| match in_backoff(
            backoffs,
            &c.name,
            c.finished_at,
            now,
        ) {
            Some(until) => {
                plan.backing_off.insert(c.name.clone(), until);
                wake(plan, until);
            }
            None => start(plan, kind, &c.name),
        };

    // Init containers, in order.
    let mut initialized = true;
    for (kind, spec) in specs.iter().filter(|(k, _)| *k != Kind::Regular) {
        let instance = in_current(&spec.name);
        match (kind, instance) {
            (_, None) => {
                start(&mut plan, *kind, &spec.name);
                initialized = false;
                break;
            }
            (_, Some(c))
                if c.state == ContainerState::Created || c.state == ContainerState::Unknown =>
            {
                plan.steps.push(Step::RemoveContainer { id: c.id.clone() });
                start(&mut plan, *kind, &spec.name);
                initialized = false;
                break;
            }
            (Kind::Sidecar, Some(c)) if c.state == ContainerState::Running => {
                if probes.startup_failed.contains(&c.id) || probes.liveness_failed.contains(&c.id) {
                    plan.steps.push(kill(c, "sidecar probe failed"));
                }
                if !probes.started.contains(&c.id) {
                    initialized = false;
                    break;
                }
            }
            (Kind::Sidecar, Some(c)) => {
                restart_or_wait(&mut plan, backoffs, *kind, c);
                initialized = false;
                break;
            }
            (_, Some(c)) if c.state == ContainerState::Running => {
                initialized = false;
                break;
            }
            (_, Some(c)) if c.succeeded() => continue,
            (_, Some(c)) => {
                initialized = false;
                if policy == "Never" {
                    plan.init_failed = true;
                } else {
                    restart_or_wait(&mut plan, backoffs, *kind, c);
                }
                break;
            }
        }
    }

    if initialized {
        for (kind, spec) in specs.iter().filter(|(k, _)| *k == Kind::Regular) {
            match in_current(&spec.name) {
                None => start(&mut plan, *kind, &spec.name),
                Some(c) => match c.state {
                    ContainerState::Created | ContainerState::Unknown => {
                        if c.state == ContainerState::Unknown {
                            plan.steps.push(kill(c, "container state unknown"));
                        }
                        plan.steps.push(Step::RemoveContainer { id: c.id.clone() });
                        start(&mut plan, *kind, &spec.name);
                    }
                    ContainerState::Running => {
                        if probes.liveness_failed.contains(&c.id) {
                            plan.steps
                                .push(kill(c, "failed liveness probe, will be restarted"));
                        } else if probes.startup_failed.contains(&c.id) {
                            plan.steps
                                .push(kill(c, "failed startup probe, will be restarted"));
                        } else if !c.hash.is_empty() && c.hash != spec_hash(spec) {
                            plan.steps
                                .push(kill(c, "definition changed, will be restarted"));
                        }
                    }
                    ContainerState::Exited => {
                        if should_restart(policy, c) {
                            restart_or_wait(&mut plan, backoffs, *kind, c);
                        }
                    }
                },
            }
        }
    }

    // Ephemeral containers: once each, in a sandbox that exists (upstream starts them even
    // before initialization completes).
    let ephemeral = ephemeral_containers(pod);
    if sandbox_id.is_some() {
        for spec in &ephemeral {
            if runtime.all_instances(&spec.name).next().is_none() {
                start(&mut plan, Kind::Ephemeral, &spec.name);
            }
        }
    }

    // Containers of the current sandbox that the spec no longer names.
    let names: BTreeSet<&str> = specs
        .iter()
        .map(|(_, s)| s.name.as_str())
        .chain(ephemeral.iter().map(|s| s.name.as_str()))
        .collect();
    if let Some(sid) = &sandbox_id {
        for c in runtime.containers.iter().filter(|c| &c.sandbox_id == sid) {
            if !names.contains(c.name.as_str()) {
                if c.state == ContainerState::Running {
                    plan.steps.push(kill(c, "not in the pod spec"));
                }
                plan.steps.push(Step::RemoveContainer { id: c.id.clone() });
            }
        }
    }
    garbage(runtime, sandbox_id.as_deref(), &mut plan);
    plan
}

fn current_instance<'a>(
    runtime: &'a PodRuntime,
    sandbox: Option<&str>,
    name: &str,
) -> Option<&'a Container> {
    let sandbox = sandbox?;
    runtime
        .containers
        .iter()
        .find(|c| c.name == name && c.sandbox_id == sandbox)
}

fn kill(c: &Container, reason: &str) -> Step {
    Step::KillContainer {
        id: c.id.clone(),
        name: c.name.clone(),
        reason: reason.to_owned(),
    }
}

/// Old instances: keep the newest two of each name (the current one and the one
/// `lastState`/`logs --previous` describe); remove older exited ones and empty old sandboxes.
fn garbage(runtime: &PodRuntime, current_sandbox: Option<&str>, plan: &mut Plan) {
    let mut kept: BTreeMap<&str, usize> = BTreeMap::new();
    let mut live_sandboxes: BTreeSet<&str> = BTreeSet::new();
    for c in &runtime.containers {
        let n = kept.entry(c.name.as_str()).or_default();
        *n += 1;
        if *n > 2 && c.state == ContainerState::Exited {
            plan.steps.push(Step::RemoveContainer { id: c.id.clone() });
        } else {
            live_sandboxes.insert(c.sandbox_id.as_str());
        }
    }
    for s in &runtime.sandboxes {
        if Some(s.id.as_str()) != current_sandbox
            && s.state == SandboxState::NotReady
            && !live_sandboxes.contains(s.id.as_str())
        {
            plan.steps.push(Step::RemoveSandbox { id: s.id.clone() });
        }
    }
}

fn finished_cleanup(runtime: &PodRuntime, mut plan: Plan) -> Plan {
    let current = runtime.current_sandbox().map(|s| s.id.clone());
    garbage(runtime, current.as_deref(), &mut plan);
    plan
}

/// Steps that stop a pod: every running container, then the sandboxes; with `remove`, also
/// remove them all (the pod is being deleted).
pub fn terminate(runtime: &PodRuntime, remove: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    if runtime.is_running() {
        steps.push(Step::KillPod);
    }
    if remove {
        for c in &runtime.containers {
            steps.push(Step::RemoveContainer { id: c.id.clone() });
        }
        for s in &runtime.sandboxes {
            steps.push(Step::RemoveSandbox { id: s.id.clone() });
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::observed::{Sandbox, SandboxState};
    use serde_json::json;

    const S: i64 = 1_000_000_000;

    fn pod(restart: &str, inits: &[&str], containers: &[&str]) -> Pod {
        let c = |n: &&str| json!({ "name": n, "image": "busybox" });
        serde_json::from_value(json!({
            "metadata": { "name": "p", "namespace": "default", "uid": "u1" },
            "spec": {
                "restartPolicy": restart,
                "initContainers": inits.iter().map(c).collect::<Vec<_>>(),
                "containers": containers.iter().map(c).collect::<Vec<_>>(),
            }
        }))
        .unwrap()
    }

    fn sandbox(id: &str, attempt: u32, ready: bool) -> Sandbox {
        Sandbox {
            id: id.into(),
            attempt,
            state: if ready {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            created_at: attempt as i64,
            ips: vec!["10.42.0.5".into()],
        }
    }

    fn container(
        id: &str,
        name: &str,
        sandbox: &str,
        state: ContainerState,
        exit: i32,
        restarts: i32,
        finished: i64,
    ) -> Container {
        Container {
            id: id.into(),
            name: name.into(),
            sandbox_id: sandbox.into(),
            state,
            restart_count: restarts,
            hash: String::new(),
            created_at: restarts as i64,
            started_at: 0,
            finished_at: finished,
            exit_code: exit,
            reason: String::new(),
            message: String::new(),
            image: "busybox".into(),
            image_ref: String::new(),
            termination_message_host_path: None,
        }
    }

    fn starts(plan: &Plan) -> Vec<String> {
        plan.steps
            .iter()
            .filter_map(|s| match s {
                Step::StartContainer {
                    name,
                    restart_count,
                    ..
                } => Some(format!("{name}#{restart_count}")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_new_pod_gets_a_sandbox_then_its_first_init_container() {
        let p = pod("Always", &["setup", "migrate"], &["app"]);
        let plan = plan(
            &p,
            &PodRuntime::default(),
            &ProbeVerdicts::default(),
            &mut Backoffs::new(),
            0,
        );
        assert_eq!(plan.steps[0], Step::CreateSandbox { attempt: 0 });
        assert_eq!(starts(&plan), ["setup#0"]);
    }

    #[test]
    fn init_containers_run_one_at_a_time_then_all_containers_start() {
        let p = pod("Always", &["setup", "migrate"], &["app", "side"]);
        let mut rt = PodRuntime {
            sandboxes: vec![sandbox("s1", 0, true)],
            containers: vec![container(
                "c1",
                "setup",
                "s1",
                ContainerState::Running,
                0,
                0,
                0,
            )],
        };
        let probes = ProbeVerdicts::default();
        assert!(
            starts(&plan(&p, &rt, &probes, &mut Backoffs::new(), 0)).is_empty(),
            "setup still running"
        );
        rt.containers[0] = container("c1", "setup", "s1", ContainerState::Exited, 0, 0, S);
        assert_eq!(
            starts(&plan(&p, &rt, &probes, &mut Backoffs::new(), 2 * S)),
            ["migrate#0"]
        );
        rt.containers.insert(
            0,
            container("c2", "migrate", "s1", ContainerState::Exited, 0, 0, 2 * S),
        );
        assert_eq!(
            starts(&plan(&p, &rt, &probes, &mut Backoffs::new(), 3 * S)),
            ["app#0", "side#0"]
        );
    }

    #[test]
    fn a_failed_init_container_fails_a_never_pod_and_retries_otherwise() {
        let rt = PodRuntime {
            sandboxes: vec![sandbox("s1", 0, true)],
            containers: vec![container(
                "c1",
                "setup",
                "s1",
                ContainerState::Exited,
                3,
                0,
                S,
            )],
        };
        let never = plan(
            &pod("Never", &["setup"], &["app"]),
            &rt,
            &ProbeVerdicts::default(),
            &mut Backoffs::new(),
            2 * S,
        );
        assert!(never.init_failed);
        assert!(starts(&never).is_empty());
        let always = plan(
            &pod("Always", &["setup"], &["app"]),
            &rt,
            &ProbeVerdicts::default(),
            &mut Backoffs::new(),
            2 * S,
        );
        assert_eq!(starts(&always), ["setup#1"]);
    }

    #[test]
    fn restart_policies_decide_which_exits_restart() {
        for (policy, exit, restarts) in [
            ("Always", 0, true),
            ("Always", 1, true),
            ("OnFailure", 0, false),
            ("OnFailure", 1, true),
            ("Never", 1, false),
        ] {
            let rt = PodRuntime {
                sandboxes: vec![sandbox("s1", 0, true)],
                containers: vec![container(
                    "c1",
                    "app",
                    "s1",
                    ContainerState::Exited,
                    exit,
                    0,
                    S,
                )],
            };
            let plan = plan(
                &pod(policy, &[], &["app"]),
                &rt,
                &ProbeVerdicts::default(),
                &mut Backoffs::new(),
                2 * S,
            );
            assert_eq!(!starts(&plan).is_empty(), restarts, "{policy} exit {exit}");
        }
    }

    #[test]
    fn ephemeral_containers_start_once_in_an_existing_sandbox() {
        let mut p = pod("Always", &["setup"], &["app"]);
        p.spec.as_mut().unwrap().ephemeral_containers = Some(vec![
            serde_json::from_value(json!({
                "name": "debugger", "image": "busybox", "targetContainerName": "app"
            }))
            .unwrap(),
        ]);
        assert_eq!(ephemeral_target(&p, "debugger"), Some("app"));
        assert_eq!(
            container_named(&p, "debugger").map(|(k, s)| (k, s.name)),
            Some((Kind::Ephemeral, "debugger".to_owned()))
        );
        // No sandbox yet: only the sandbox and the first init container.
        let fresh = plan(
            &p,
            &PodRuntime::default(),
            &ProbeVerdicts::default(),
            &mut Backoffs::new(),
            0,
        );
        assert_eq!(starts(&fresh), ["setup#0"]);
        // A sandbox, initialization still running: the debugger starts anyway.
        let mut rt = PodRuntime {
            sandboxes: vec![sandbox("s1", 0, true)],
            containers: vec![container(
                "i1",
                "setup",
                "s1",
                ContainerState::Running,
                0,
                0,
                0,
            )],
        };
        let first = plan(&p, &rt, &ProbeVerdicts::default(), &mut Backoffs::new(), S);
        assert_eq!(starts(&first), ["debugger#0"]);
        assert!(first.steps.iter().any(|s| matches!(
            s,
            Step::StartContainer {
                kind: Kind::Ephemeral,
                ..
            }
        )));
        // Once it ran it is neither restarted nor removed as unknown.
        rt.containers.push(container(
            "e1",
            "debugger",
            "s1",
            ContainerState::Exited,
            1,
            0,
            S,
        ));
        let later = plan(
            &p,
            &rt,
            &ProbeVerdicts::default(),
            &mut Backoffs::new(),
            100 * S,
        );
        assert!(starts(&later).is_empty(), "{:?}", later.steps);
        assert!(
            !later
                .steps
                .contains(&Step::RemoveContainer { id: "e1".into() })
        );
    }

    #[test]
    fn crash_loops_back_off_10s_doubling_to_5_minutes() {
        let p = pod("Always", &[], &["app"]);
        let mut backoffs = Backoffs::new();
        let probes = ProbeVerdicts::default();
        let mut finished = 100 * S;
        let mut delays = Vec::new();
        for restarts in 0..8 {
            let rt = PodRuntime {
                sandboxes: vec![sandbox("s1", 0, true)],
                containers: vec![container(
                    "c",
                    "app",
                    "s1",
                    ContainerState::Exited,
                    1,
                    restarts,
                    finished,
                )],
            };
            let first = plan(&p, &rt, &probes, &mut backoffs, finished);
            let delay = match first.backing_off.get("app") {
                None => 0,
                Some(until) => {
                    assert_eq!(first.wake_at, Some(*until));
                    let d = (until - finished) / S;
                    // At the end of the window it restarts.
                    let again = plan(&p, &rt, &probes, &mut backoffs, *until);
                    assert_eq!(starts(&again).len(), 1);
                    d
                }
            };
            delays.push(delay);
            // The restarted container runs for a second and fails again.
            finished += (delay + 1) * S;
        }
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn a_lost_sandbox_is_replaced_and_containers_restart_in_it() {
        let p = pod("Always", &[], &["app"]);
        let rt = PodRuntime {
            sandboxes: vec![sandbox("s1", 0, false)],
            containers: vec![container(
                "c1",
                "app",
                "s1",
                ContainerState::Exited,
                137,
                0,
                S,
            )],
        };
        let plan = plan(
            &p,
            &rt,
            &ProbeVerdicts::default(),
            &mut Backoffs::new(),
            2 * S,
        );
        assert_eq!(plan.steps[0], Step::CreateSandbox { attempt: 1 });
        assert_eq!(starts(&plan), ["app#1"]);
    }

    #[test]
    fn a_finished_pod_gets_no_new_sandbox() {
        let p = pod("Never", &[], &["app"]);
        let rt = PodRuntime {
            sandboxes: vec![sandbox("s1", 0, false)],
            containers: vec![container(
                "c1",
                "app",
                "s1",
                ContainerState::Exited,
                0,
                0,
                S,
            )],
        };
        let plan = plan(
            &p,
            &rt,
            &ProbeVerdicts::default(),
            &mut Backoffs::new(),
            2 * S,
        );
        assert!(plan.steps.is_empty(), "{:?}", plan.steps);
        assert!(is_finished(&p, &rt));
    }

    #[test]
    fn failed_liveness_kills_the_container() {
        let p = pod("Always", &[], &["app"]);
        let rt = PodRuntime {
            sandboxes: vec![sandbox("s1", 0, true)],
            containers: vec![container(
                "c1",
                "app",
                "s1",
                ContainerState::Running,
                0,
                0,
                0,
            )],
        };
        let mut probes = ProbeVerdicts::default();
        probes.liveness_failed.insert("c1".into());
        let plan = plan(&p, &rt, &probes, &mut Backoffs::new(), S);
        assert!(matches!(&plan.steps[0], Step::KillContainer { id, .. } if id == "c1"));
    }

    #[test]
    fn sidecars_must_start_before_the_next_init_container() {
        let mut p = pod("Always", &["proxy", "setup"], &["app"]);
        p.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0].restart_policy =
            Some("Always".into());
        let rt = PodRuntime {
            sandboxes: vec![sandbox("s1", 0, true)],
            containers: vec![container(
                "c1",
                "proxy",
                "s1",
                ContainerState::Running,
                0,
                0,
                0,
            )],
        };
        let mut probes = ProbeVerdicts::default();
        assert!(starts(&plan(&p, &rt, &probes, &mut Backoffs::new(), S)).is_empty());
        probes.started.insert("c1".into());
        assert_eq!(
            starts(&plan(&p, &rt, &probes, &mut Backoffs::new(), S)),
            ["setup#0"]
        );
    }

    #[test]
    fn old_instances_are_collected_keeping_the_previous_one() {
        let p = pod("Always", &[], &["app"]);
        let rt = PodRuntime {
            sandboxes: vec![sandbox("s1", 0, true)],
            containers: vec![
                container("c3", "app", "s1", ContainerState::Running, 0, 2, 0),
                container("c2", "app", "s1", ContainerState::Exited, 1, 1, S),
                container("c1", "app", "s1", ContainerState::Exited, 1, 0, S),
            ],
        };
        let plan = plan(
            &p,
            &rt,
            &ProbeVerdicts::default(),
            &mut Backoffs::new(),
            3 * S,
        );
        assert_eq!(plan.steps, [Step::RemoveContainer { id: "c1".into() }]);
    }

    #[test]
    fn termination_stops_then_removes_everything() {
        let rt = PodRuntime {
            sandboxes: vec![sandbox("s1", 0, true)],
            containers: vec![container(
                "c1",
                "app",
                "s1",
                ContainerState::Running,
                0,
                0,
                0,
            )],
        };
        assert_eq!(
            terminate(&rt, true),
            [
                Step::KillPod,
                Step::RemoveContainer { id: "c1".into() },
                Step::RemoveSandbox { id: "s1".into() }
            ]
        );
        assert_eq!(terminate(&rt, false), [Step::KillPod]);
    }
}
