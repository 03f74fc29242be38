//! The pod status the kubelet reports, computed from the spec, the observed runtime state,
//! probe results and what went wrong when starting containers — upstream's
//! `generateAPIPodStatus`: phase (`getPhase`), conditions (PodReadyToStartContainers,
//! Initialized, ContainersReady, Ready; PodScheduled is kept from the scheduler), pod and host
//! IPs, and a status per container with state, last state, readiness and restart count.
//!
//! Pure: no IO, time is passed in.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::observed::{Container, ContainerState, PodRuntime};
use super::plan::{self, Kind};

/// Why a container that should be running is not, as the status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// `ContainerCreating`, `PodInitializing`, `ErrImagePull`, `ImagePullBackOff`,
    /// `CreateContainerConfigError`, `CreateContainerError`, `RunContainerError`,
    /// `CrashLoopBackOff`, …
    pub reason: String,
    /// Details.
    pub message: String,
}

/// Inputs besides the pod and the runtime.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// Waiting reasons by container name (start failures, back-offs).
    pub waiting: BTreeMap<String, Waiting>,
    /// Containers (by runtime id) that pass their readiness probe.
    pub ready: BTreeSet<String>,
    /// Containers (by runtime id) whose startup probe passed (or that have none).
    pub started: BTreeSet<String>,
    /// An init container failed under restartPolicy Never.
    pub init_failed: bool,
    /// The node's IP.
    pub host_ip: String,
    /// Termination messages read from containers, by runtime id.
    pub termination_messages: BTreeMap<String, String>,
    /// The pod was evicted or rejected: (reason, message) of a Failed phase.
    pub failed: Option<(String, String)>,
}

fn rfc3339(nanos: i64) -> Value {
    if nanos <= 0 {
        return Value::Null;
    }
    match jiff::Timestamp::from_nanosecond(nanos as i128) {
        Ok(t) => json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        Err(_) => Value::Null,
    }
}

fn terminated(c: &Container, extra: &Extra) -> Value {
    let reason = if !c.reason.is_empty() {
        c.reason.clone()
    } else if c.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    let mut t = json!({
        "exitCode": c.exit_code,
        "reason": reason,
        "startedAt": rfc3339(c.started_at),
        "finishedAt": rfc3339(c.finished_at),
        "containerID": format!("containerd://{}", c.id),
    });
    let message = extra
        .termination_messages
        .get(&c.id)
        .cloned()
        .filter(|m| !m.is_empty())
        .or_else(|| Some(c.message.clone()).filter(|m| !m.is_empty()));
    if let Some(message) = message {
        t["message"] = json!(message);
    }
    t
}

/// Instances of a container: those in the current sandbox first, then older ones (for
/// `lastState`).
fn instances_newest_first<'a>(
    runtime: &'a PodRuntime,
    sandbox_id: &str,
    name: &str,
) -> Vec<&'a Container> {
    let mut v: Vec<&Container> = runtime
        .containers
        .iter()
        .filter(|c| c.name == name && c.sandbox_id == sandbox_id)
        .collect();
    v.extend(
        runtime
            .containers
            .iter()
            .filter(|c| c.name == name && c.sandbox_id != sandbox_id),
    );
    v
}

/// One container's status.
fn container_status(
    name: &str,
    image: &str,
    kind: Kind,
    instances: &[&Container],
    extra: &Extra,
) -> Value {
    let current = instances.first().copied();
    let previous = instances.get(1).copied();
    let mut status = json!({
        "name": name,
        "image": image,
        "imageID": current.map(|c| c.image_ref.clone()).unwrap_or_default(),
        "ready": false,
        "restartCount": current.map_or(0, |c| c.restart_count),
        "started": false,
        "state": {},
        "lastState": {},
    });
    if let Some(c) = current {
        status["containerID"] = json!(format!("containerd://{}", c.id));
    }
    let waiting = extra.waiting.get(name);
    match (current, waiting) {
        (Some(c), _) if c.state == ContainerState::Running => {
            status["state"] = json!({ "running": { "startedAt": rfc3339(c.started_at) } });
            // Ephemeral containers have no probes: started once running, never ready.
            let started = kind == Kind::Ephemeral || extra.started.contains(&c.id);
            status["started"] = json!(started);
            // Init containers are never "ready"; sidecars and regular ones by readiness.
            status["ready"] = json!(
                !matches!(kind, Kind::Init | Kind::Ephemeral)
                    && started
                    && extra.ready.contains(&c.id)
            );
            if let Some(p) = previous.filter(|p| p.state == ContainerState::Exited) {
                status["lastState"] = json!({ "terminated": terminated(p, extra) });
            }
        }
        (Some(c), Some(w)) if c.state == ContainerState::Exited => {
            // Exited and waiting to restart (crash loop, image pull, …).
            status["state"] = json!({ "waiting": { "reason": w.reason, "message": w.message } });
            status["lastState"] = json!({ "terminated": terminated(c, extra) });
        }
        (Some(c), None) if c.state == ContainerState::Exited => {
            status["state"] = json!({ "terminated": terminated(c, extra) });
            if let Some(p) = previous.filter(|p| p.state == ContainerState::Exited) {
                status["lastState"] = json!({ "terminated": terminated(p, extra) });
            }
        }
        (_, Some(w)) => {
            status["state"] = json!({ "waiting": { "reason": w.reason, "message": w.message } });
            if let Some(p) = current.filter(|p| p.state == ContainerState::Exited) {
                status["lastState"] = json!({ "terminated": terminated(p, extra) });
            }
        }
        (_, None) => {
            status["state"] = json!({ "waiting": { "reason": "ContainerCreating" } });
        }
    }
    if status["state"]["waiting"]["message"].as_str() == Some("")
        && let Some(w) = status["state"]["waiting"].as_object_mut()
    {
        w.remove("message");
    }
    status
}

fn condition(
    kind: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: &str,
) -> Value {
    let mut c = json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": now,
    });
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

/// The QoS class of a pod (upstream `GetPodQOS`).
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let mut requests_any = false;
    let mut guaranteed = true;
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in all {
        let res = c.resources.clone().unwrap_or_default();
        let requests = res.requests.unwrap_or_default();
        let limits = res.limits.unwrap_or_default();
        for name in ["cpu", "memory"] {
            let req = requests.get(name).map(|q| q.0.clone());
            let lim = limits.get(name).map(|q| q.0.clone());
            if req.as_deref().is_some_and(|q| q != "0") || lim.as_deref().is_some_and(|q| q != "0")
            {
                requests_any = true;
            }
            match (&req, &lim) {
                (_, None) => guaranteed = false,
                (Some(r), Some(l)) if r != l => guaranteed = false,
                _ => {}
            }
        }
    }
    if !requests_any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The status to report. `previous` is the pod's current status in the API (its PodScheduled
/// condition, startTime and condition transition times are carried forward); `now` is RFC 3339.
pub fn compute(pod: &Pod, runtime: &PodRuntime, extra: &Extra, now: &str) -> Value {
    let previous = pod.status.as_ref();
    let policy = plan::restart_policy(pod);
    let specs = plan::containers(pod);
    let sandbox = runtime.current_sandbox();
    let sandbox_id = sandbox.map(|s| s.id.clone()).unwrap_or_default();
    let sandbox_ready = runtime.ready_sandbox().is_some();

    let instances_of = |name: &str| instances_newest_first(runtime, &sandbox_id, name);

    let mut init_statuses = Vec::new();
    let mut statuses = Vec::new();
    let mut incomplete_init = Vec::new();
    let mut unready = Vec::new();
    let (mut waiting, mut running, mut stopped, mut failed) = (0, 0, 0, 0);
    for (kind, spec) in &specs {
        let instances = instances_of(&spec.name);
        let image = spec.image.clone().unwrap_or_default();
        let status = container_status(&spec.name, &image, *kind, &instances, extra);
        match kind {
            Kind::Init | Kind::Sidecar => {
                let done = match kind {
                    Kind::Init => instances.first().is_some_and(|c| c.succeeded()),
                    _ => instances.first().is_some_and(|c| {
                        c.state == ContainerState::Running && extra.started.contains(&c.id)
                    }),
                };
                if !done {
                    incomplete_init.push(spec.name.clone());
                }
                if *kind == Kind::Sidecar && status["ready"] != json!(true) {
                    unready.push(spec.name.clone());
                }
                init_statuses.push(status);
            }
            Kind::Regular => {
                let state = &status["state"];
                if state.get("running").is_some() {
                    running += 1;
                } else if let Some(t) = state.get("terminated") {
                    stopped += 1;
                    if t["exitCode"] != json!(0) {
                        failed += 1;
                    }
                } else if status["lastState"].get("terminated").is_some() {
                    // Waiting to restart after an exit counts as stopped (upstream getPhase).
                    stopped += 1;
                    if status["lastState"]["terminated"]["exitCode"] != json!(0) {
                        failed += 1;
                    }
                } else {
                    waiting += 1;
                }
                if status["ready"] != json!(true) {
                    unready.push(spec.name.clone());
                }
                statuses.push(status);
            }
            // Not among `specs`; reported below, outside phase and readiness.
            Kind::Ephemeral => {}
        }
    }
    let ephemeral_statuses: Vec<Value> = plan::ephemeral_containers(pod)
        .iter()
        .map(|spec| {
            let image = spec.image.clone().unwrap_or_default();
            container_status(
                &spec.name,
                &image,
                Kind::Ephemeral,
                &instances_of(&spec.name),
                extra,
            )
        })
        .collect();
    // Regular containers wait on init containers.
    if !incomplete_init.is_empty() {
        for s in &mut statuses {
            if s["state"]["waiting"]["reason"] == json!("ContainerCreating") {
                s["state"] = json!({ "waiting": { "reason": "PodInitializing" } });
            }
        }
    }

    let initialized = incomplete_init.is_empty();
    let phase = if extra.failed.is_some() || extra.init_failed {
        "Failed"
    } else if !initialized || waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match policy {
            "Always" => "Running",
            "OnFailure" if failed > 0 => "Running",
            "OnFailure" => "Succeeded",
            _ if failed > 0 => "Failed",
            _ => "Succeeded",
        }
    } else {
        "Pending"
    };
    // A terminal phase never changes again (upstream guards the same way).
    let phase = match previous.and_then(|s| s.phase.as_deref()) {
        Some(p @ ("Succeeded" | "Failed")) => p,
        _ => phase,
    };
    let terminal = phase == "Succeeded" || phase == "Failed";

    let containers_ready = unready.is_empty() && initialized && !terminal;
    let readiness_gates_ok = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .into_iter()
        .flatten()
        .all(|g| {
            previous
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == g.condition_type && c.status == "True")
        });
    let unready_message = || {
        Some(format!(
            "containers with unready status: [{}]",
            unready.join(" ")
        ))
    };
    let (cr_reason, cr_message) = if terminal {
        (Some("PodCompleted"), None)
    } else if containers_ready {
        (None, None)
    } else {
        (Some("ContainersNotReady"), unready_message())
    };
    let ready = containers_ready && readiness_gates_ok;
    let (ready_reason, ready_message) = if ready || terminal || !containers_ready {
        (cr_reason, cr_message.clone())
    } else {
        (
            Some("ReadinessGatesNotReady"),
            Some("corresponding condition of pod readiness gate is not True".to_owned()),
        )
    };
    let mut conditions = vec![
        condition("PodReadyToStartContainers", sandbox_ready, None, None, now),
        if initialized {
            condition(
                "Initialized",
                true,
                if terminal && specs.iter().any(|(k, _)| *k != Kind::Regular) {
                    Some("PodCompleted")
                } else {
                    None
                },
                None,
                now,
            )
        } else {
            condition(
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    incomplete_init.join(" ")
                )),
                now,
            )
        },
        condition("Ready", ready, ready_reason, ready_message, now),
        condition(
            "ContainersReady",
            containers_ready,
            cr_reason,
            cr_message,
            now,
        ),
    ];
    // A pod the kubelet evicted or preempted says so, as upstream's kubelet does (Jobs'
    // podFailurePolicy matches on it).
    if let Some((_, message)) = &extra.failed {
        conditions.push(condition(
            "DisruptionTarget",
            true,
            Some("TerminationByKubelet"),
            Some(message.clone()),
            now,
        ));
    }
    // Keep conditions owned by others (PodScheduled, readiness gates, the control plane's
    // DisruptionTarget, …) and the transition times of ours that did not change.
    let mut ours: BTreeSet<&str> = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
    ]
    .into();
    if extra.failed.is_some() {
        ours.insert("DisruptionTarget");
    }
    let old: Vec<Value> = previous
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
                .collect()
        })
        .unwrap_or_default();
    for c in &mut conditions {
        if let Some(o) = old.iter().find(|o| o["type"] == c["type"])
            && o["status"] == c["status"]
            && o.get("lastTransitionTime").is_some()
        {
            c["lastTransitionTime"] = o["lastTransitionTime"].clone();
        }
    }
    let mut all_conditions: Vec<Value> = old
        .iter()
        .filter(|o| !ours.contains(o["type"].as_str().unwrap_or("")))
        .cloned()
        .collect();
    all_conditions.extend(conditions);

    let ips: Vec<String> = sandbox.map(|s| s.ips.clone()).unwrap_or_default();
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let pod_ips: Vec<String> = if host_network {
        vec![extra.host_ip.clone()]
    } else {
        // Keep the last known IPs of a stopped sandbox, like upstream.
        if ips.is_empty() {
            previous
                .and_then(|s| s.pod_ips.as_ref())
                .map(|v| v.iter().map(|i| i.ip.clone()).collect())
                .unwrap_or_default()
        } else {
            ips
        }
    };
    let start_time = previous
        .and_then(|s| s.start_time.as_ref())
        .map(|t| json!(t))
        .unwrap_or_else(|| json!(now));
    let mut status = json!({
        "phase": phase,
        "conditions": all_conditions,
        "hostIP": extra.host_ip,
        "hostIPs": [{ "ip": extra.host_ip }],
        "startTime": start_time,
        "containerStatuses": statuses,
        "qosClass": qos_class(pod),
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    if !ephemeral_statuses.is_empty() {
        status["ephemeralContainerStatuses"] = json!(ephemeral_statuses);
    }
    if let Some(ip) = pod_ips.first().filter(|ip| !ip.is_empty()) {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!(
            pod_ips
                .iter()
                .map(|ip| json!({ "ip": ip }))
                .collect::<Vec<_>>()
        );
    }
    if let Some((reason, message)) = &extra.failed {
        status["reason"] = json!(reason);
        status["message"] = json!(message);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::observed::{Sandbox, SandboxState};

    const S: i64 = 1_000_000_000;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn simple(restart: &str) -> Pod {
        pod(json!({
            "metadata": { "name": "p", "namespace": "default", "uid": "u1" },
            "spec": { "restartPolicy": restart, "containers": [{ "name": "app", "image": "busybox:1" }] },
            "status": { "conditions": [{ "type": "PodScheduled", "status": "True" }] }
        }))
    }

    fn rt(state: ContainerState, exit: i32) -> PodRuntime {
        PodRuntime {
            sandboxes: vec![Sandbox {
                id: "s1".into(),
                attempt: 0,
                state: SandboxState::Ready,
                created_at: 1,
                ips: vec!["10.42.0.9".into()],
            }],
            containers: vec![Container {
                id: "c1".into(),
                name: "app".into(),
                sandbox_id: "s1".into(),
                state,
                restart_count: 0,
                hash: String::new(),
                created_at: 1,
                started_at: S,
                finished_at: if state == ContainerState::Exited {
                    2 * S
                } else {
                    0
                },
                exit_code: exit,
                reason: String::new(),
                message: String::new(),
                image: "busybox:1".into(),
                image_ref: "sha256:abc".into(),
                termination_message_host_path: None,
            }],
        }
    }

    fn ready_extra() -> Extra {
        let mut e = Extra {
            host_ip: "192.0.2.1".into(),
            ..Default::default()
        };
        e.ready.insert("c1".into());
        e.started.insert("c1".into());
        e
    }

    fn cond<'a>(s: &'a Value, kind: &str) -> &'a Value {
        s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap()
    }

    #[test]
    fn a_running_ready_pod() {
        let s = compute(
            &simple("Always"),
            &rt(ContainerState::Running, 0),
            &ready_extra(),
            "T",
        );
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.42.0.9");
        assert_eq!(s["hostIP"], "192.0.2.1");
        assert_eq!(cond(&s, "Ready")["status"], "True");
        assert_eq!(
            cond(&s, "PodScheduled")["status"],
            "True",
            "kept from the scheduler"
        );
        assert_eq!(s["containerStatuses"][0]["ready"], true);
        assert_eq!(s["containerStatuses"][0]["containerID"], "containerd://c1");
        assert_eq!(s["qosClass"], "BestEffort");
    }

    #[test]
    fn exits_give_upstream_phases() {
        for (policy, exit, phase) in [
            ("Never", 0, "Succeeded"),
            ("Never", 1, "Failed"),
            ("OnFailure", 0, "Succeeded"),
        ] {
            let s = compute(
                &simple(policy),
                &rt(ContainerState::Exited, exit),
                &ready_extra(),
                "T",
            );
            assert_eq!(s["phase"], phase, "{policy} {exit}");
            assert_eq!(cond(&s, "Ready")["reason"], "PodCompleted");
            let t = &s["containerStatuses"][0]["state"]["terminated"];
            assert_eq!(t["exitCode"], exit);
            assert_eq!(t["reason"], if exit == 0 { "Completed" } else { "Error" });
        }
    }

    #[test]
    fn a_crash_loop_shows_waiting_with_the_last_termination() {
        let mut extra = ready_extra();
        extra.waiting.insert(
            "app".into(),
            Waiting {
                reason: "CrashLoopBackOff".into(),
                message: "back-off 10s restarting failed container=app pod=p_default(u1)".into(),
            },
        );
        let s = compute(
            &simple("Always"),
            &rt(ContainerState::Exited, 1),
            &extra,
            "T",
        );
        assert_eq!(s["phase"], "Running");
        let c = &s["containerStatuses"][0];
        assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(c["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(cond(&s, "Ready")["status"], "False");
        assert_eq!(
            cond(&s, "Ready")["message"],
            "containers with unready status: [app]"
        );
    }

    #[test]
    fn a_pod_that_cannot_start_is_pending_with_the_reason() {
        let mut extra = ready_extra();
        extra.waiting.insert(
            "app".into(),
            Waiting {
                reason: "ErrImagePull".into(),
                message: "failed to pull image".into(),
            },
        );
        let s = compute(&simple("Always"), &PodRuntime::default(), &extra, "T");
        assert_eq!(s["phase"], "Pending");
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ErrImagePull"
        );
        assert_eq!(cond(&s, "PodReadyToStartContainers")["status"], "False");
    }

    #[test]
    fn evicted_pods_carry_a_disruption_target_condition() {
        let mut extra = ready_extra();
        extra.failed = Some((
            "Evicted".into(),
            "The node was low on resource: memory. ".into(),
        ));
        let s = compute(&simple("Always"), &PodRuntime::default(), &extra, "T");
        assert_eq!(s["phase"], "Failed");
        assert_eq!(s["reason"], "Evicted");
        let c = cond(&s, "DisruptionTarget");
        assert_eq!(c["status"], "True");
        assert_eq!(c["reason"], "TerminationByKubelet");
        assert_eq!(c["message"], "The node was low on resource: memory. ");
        let count = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["type"] == "DisruptionTarget")
            .count();
        assert_eq!(count, 1);
        // A running pod has none.
        let s = compute(
            &simple("Always"),
            &PodRuntime::default(),
            &ready_extra(),
            "T",
        );
        assert!(
            !s["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == "DisruptionTarget")
        );
    }

    #[test]
    fn init_containers_gate_initialized() {
        let p = pod(json!({
            "metadata": { "name": "p", "namespace": "default", "uid": "u1" },
            "spec": { "initContainers": [{ "name": "setup", "image": "b" }], "containers": [{ "name": "app", "image": "b" }] }
        }));
        let s = compute(&p, &PodRuntime::default(), &Extra::default(), "T");
        assert_eq!(s["phase"], "Pending");
        assert_eq!(
            cond(&s, "Initialized")["message"],
            "containers with incomplete status: [setup]"
        );
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "PodInitializing"
        );
    }

    #[test]
    fn qos_classes_follow_requests_and_limits() {
        let with = |res: Value| {
            pod(json!({ "spec": { "containers": [{ "name": "a", "resources": res }] } }))
        };
        assert_eq!(qos_class(&with(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&with(json!({ "requests": { "cpu": "100m" } }))),
            "Burstable"
        );
        assert_eq!(
            qos_class(&with(
                json!({ "requests": { "cpu": "1", "memory": "1Gi" }, "limits": { "cpu": "1", "memory": "1Gi" } })
            )),
            "Guaranteed"
        );
    }

    #[test]
    fn transition_times_are_kept_while_a_condition_holds() {
        let mut p = simple("Always");
        let (t1, t2) = ("2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z");
        let first = compute(&p, &rt(ContainerState::Running, 0), &ready_extra(), t1);
        p.status = Some(serde_json::from_value(first).unwrap());
        let second = compute(&p, &rt(ContainerState::Running, 0), &ready_extra(), t2);
        assert_eq!(cond(&second, "Ready")["lastTransitionTime"], t1);
        assert_eq!(second["startTime"], t1);
    }
}
