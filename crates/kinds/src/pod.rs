//! Pods and pod templates: upstream defaulting (pkg/apis/core/v1/defaults.go plus the
//! admission defaults every cluster applies: service account, default tolerations; priority is
//! resolved by the API server's priority admission), validation of the fields users get wrong,
//! update rules, and kubectl's pod printing.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    Container, EphemeralContainer, Pod, PodCondition, PodSecurityContext, PodSpec, PodStatus,
    PodTemplateSpec, Toleration,
};
use serde_json::Value;
use skiff_api::field::{ErrorList, FieldError, Path};
use skiff_api::registry::{Operation, PrintContext};
use skiff_api::table::{Cells, Column};

use crate::print::{self, age_cell, list, name, or_none, s, since, text};
use crate::validation::require_dns_label;

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

/// Defaults of one container (`SetDefaults_Container`).
/// upstream: `:latest` or no tag (and no digest) pulls Always.
fn default_pull_policy(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let tag = if image.contains('@') {
        Some("digest")
    } else {
        last.split_once(':').map(|(_, t)| t)
    };
    match tag {
        None | Some("latest") => "Always".into(),
        Some(_) => "IfNotPresent".into(),
    }
}

fn default_ephemeral_container(c: &mut EphemeralContainer) {
    if c.image_pull_policy.is_none() {
        c.image_pull_policy = Some(default_pull_policy(c.image.as_deref().unwrap_or("")));
    }
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy
        .get_or_insert_with(|| "File".into());
}

fn default_container(c: &mut Container) {
    if c.image_pull_policy.is_none() {
        c.image_pull_policy = Some(default_pull_policy(c.image.as_deref().unwrap_or("")));
    }
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy
        .get_or_insert_with(|| "File".into());
    c.resources.get_or_insert_with(Default::default);
    for port in c.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".into());
    }
    for env in c.env.iter_mut().flatten() {
        if let Some(field_ref) = env.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            field_ref.api_version.get_or_insert_with(|| "v1".into());
        }
    }
    // Requests default to limits when only limits are given.
    if let Some(resources) = c.resources.as_mut()
        && let Some(limits) = resources.limits.clone()
    {
        let requests = resources.requests.get_or_insert_with(Default::default);
        for (k, v) in limits {
            requests.entry(k).or_insert(v);
        }
    }
}

/// Defaults of a pod spec, also applied inside workload templates (`SetDefaults_PodSpec`).
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    spec.enable_service_links.get_or_insert(true);
    for c in spec.containers.iter_mut() {
        default_container(c);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        default_container(c);
    }
    for c in spec.ephemeral_containers.iter_mut().flatten() {
        default_ephemeral_container(c);
    }
    if spec.host_network == Some(true) {
        for c in spec.containers.iter_mut() {
            for port in c.ports.iter_mut().flatten() {
                port.host_port.get_or_insert(port.container_port);
            }
        }
    }
}

/// Template defaults.
pub fn default_template(template: &mut PodTemplateSpec) {
    if let Some(spec) = template.spec.as_mut() {
        default_pod_spec(spec);
    }
}

/// The QoS class of a pod (upstream pkg/apis/core/v1/helper/qos).
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let mut any_set = false;
    let mut guaranteed = true;
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in all {
        let resources = c.resources.clone().unwrap_or_default();
        let requests = resources.requests.unwrap_or_default();
        let limits = resources.limits.unwrap_or_default();
        for key in ["cpu", "memory"] {
            let request = requests.get(key);
            let limit = limits.get(key);
            if request.is_some() || limit.is_some() {
                any_set = true;
            }
            match (request, limit) {
                (_, None) => guaranteed = false,
                (Some(r), Some(l)) if r.0 != l.0 => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any_set {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn not_ready_tolerations(spec: &mut PodSpec) {
    // upstream admission DefaultTolerationSeconds.
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let present = tolerations.iter().any(|t| {
            t.key.as_deref() == Some(key)
                || (t.key.is_none() && t.operator.as_deref() == Some("Exists"))
        });
        if !present {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(300),
                ..Default::default()
            });
        }
    }
}

/// Pod create/update preparation.
pub fn prepare(pod: &mut Pod, old: Option<&Pod>, op: Operation) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    default_pod_spec(spec);
    if op == Operation::Create {
        if spec
            .service_account_name
            .as_deref()
            .unwrap_or("")
            .is_empty()
        {
            spec.service_account_name = Some(
                spec.service_account
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "default".into()),
            );
        }
        spec.service_account = spec.service_account_name.clone();
        not_ready_tolerations(spec);
        // spec.priority and spec.preemptionPolicy come from priority admission (the API
        // server's storage hooks), which must see what the client sent.
        let qos = qos_class(spec).to_owned();
        let gated = spec
            .scheduling_gates
            .as_ref()
            .is_some_and(|g| !g.is_empty());
        pod.status = Some(PodStatus {
            phase: Some("Pending".into()),
            qos_class: Some(qos),
            // Upstream marks gated pods at creation so users see why they wait.
            conditions: gated.then(|| {
                vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("SchedulingGated".into()),
                    message: Some("Scheduling is blocked due to non-empty scheduling gates".into()),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
    } else if op == Operation::UpdateStatus
        && let (Some(status), Some(old)) = (pod.status.as_mut(), old)
    {
        // qosClass is computed once and never changes.
        status.qos_class = old.status.as_ref().and_then(|s| s.qos_class.clone());
    }
}

fn validate_container(
    c: &Container,
    path: &Path,
    errors: &mut ErrorList,
    names: &mut BTreeSet<String>,
) {
    require_dns_label(&c.name, &path.child("name"), errors);
    if !c.name.is_empty() && !names.insert(c.name.clone()) {
        errors.push(FieldError::duplicate(&path.child("name"), c.name.as_str()));
    }
    if c.image.as_deref().unwrap_or("").trim().is_empty() {
        errors.push(FieldError::required(&path.child("image"), ""));
    }
    if let Some(policy) = c.image_pull_policy.as_deref()
        && !PULL_POLICIES.contains(&policy)
    {
        errors.push(FieldError::not_supported(
            &path.child("imagePullPolicy"),
            policy,
            PULL_POLICIES,
        ));
    }
    for (i, port) in c.ports.iter().flatten().enumerate() {
        let p = path.child("ports").index(i);
        if !(1..=65535).contains(&port.container_port) {
            errors.push(FieldError::invalid(
                &p.child("containerPort"),
                port.container_port as i64,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(protocol) = port.protocol.as_deref()
            && !PROTOCOLS.contains(&protocol)
        {
            errors.push(FieldError::not_supported(
                &p.child("protocol"),
                protocol,
                PROTOCOLS,
            ));
        }
        if let Some(name) = port.name.as_deref()
            && (name.len() > 15 || !crate::validation::dns1123_label(name).is_empty())
        {
            errors.push(FieldError::invalid(
                &p.child("name"),
                name,
                "must be no more than 15 characters and a lowercase RFC 1123 label (IANA_SVC_NAME)",
            ));
        }
    }
    for (i, env) in c.env.iter().flatten().enumerate() {
        if env.name.is_empty() {
            errors.push(FieldError::required(
                &path.child("env").index(i).child("name"),
                "",
            ));
        }
    }
}

/// Validate a pod spec at `path` (`ValidatePodSpec`, the parts users hit).
pub fn validate_pod_spec(spec: &PodSpec, path: &Path, errors: &mut ErrorList) {
    if spec.containers.is_empty() {
        errors.push(FieldError::required(&path.child("containers"), ""));
    }
    let mut names = BTreeSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        validate_container(c, &path.child("containers").index(i), errors, &mut names);
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        validate_container(
            c,
            &path.child("initContainers").index(i),
            errors,
            &mut names,
        );
    }
    for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        let p = path.child("ephemeralContainers").index(i);
        require_dns_label(&c.name, &p.child("name"), errors);
        if !c.name.is_empty() && !names.insert(c.name.clone()) {
            errors.push(FieldError::duplicate(&p.child("name"), c.name.as_str()));
        }
        if c.image.as_deref().unwrap_or("").trim().is_empty() {
            errors.push(FieldError::required(&p.child("image"), ""));
        }
        // Nothing the pod could come to rely on (upstream allows a fixed list of fields).
        let resources = c.resources.as_ref().is_some_and(|r| {
            r.limits.as_ref().is_some_and(|l| !l.is_empty())
                || r.requests.as_ref().is_some_and(|l| !l.is_empty())
                || r.claims.as_ref().is_some_and(|l| !l.is_empty())
        });
        for (field, set) in [
            ("lifecycle", c.lifecycle.is_some()),
            ("livenessProbe", c.liveness_probe.is_some()),
            ("ports", c.ports.as_ref().is_some_and(|p| !p.is_empty())),
            ("readinessProbe", c.readiness_probe.is_some()),
            (
                "resizePolicy",
                c.resize_policy.as_ref().is_some_and(|p| !p.is_empty()),
            ),
            ("resources", resources),
            ("restartPolicy", c.restart_policy.is_some()),
            ("startupProbe", c.startup_probe.is_some()),
        ] {
            if set {
                errors.push(FieldError::forbidden(
                    &p.child(field),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
        if let Some(target) = c.target_container_name.as_deref() {
            let known = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .any(|other| other.name == target);
            if !known {
                errors.push(FieldError::not_found(
                    &p.child("targetContainerName"),
                    target,
                ));
            }
        }
    }
    if let Some(policy) = spec.restart_policy.as_deref()
        && !RESTART_POLICIES.contains(&policy)
    {
        errors.push(FieldError::not_supported(
            &path.child("restartPolicy"),
            policy,
            RESTART_POLICIES,
        ));
    }
    if let Some(policy) = spec.dns_policy.as_deref()
        && !DNS_POLICIES.contains(&policy)
    {
        errors.push(FieldError::not_supported(
            &path.child("dnsPolicy"),
            policy,
            DNS_POLICIES,
        ));
    }
    if let Some(seconds) = spec.active_deadline_seconds
        && seconds <= 0
    {
        errors.push(FieldError::invalid(
            &path.child("activeDeadlineSeconds"),
            seconds,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    crate::validation::non_negative(
        spec.termination_grace_period_seconds,
        &path.child("terminationGracePeriodSeconds"),
        errors,
    );
    let mut volumes = BTreeSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let p = path.child("volumes").index(i).child("name");
        require_dns_label(&v.name, &p, errors);
        if !volumes.insert(v.name.clone()) {
            errors.push(FieldError::duplicate(&p, v.name.as_str()));
        }
    }
}

/// Pod validation, with upstream's update rule: only images, activeDeadlineSeconds,
/// tolerations (additions) and terminationGracePeriodSeconds may change in the spec.
pub fn validate(pod: &Pod, old: Option<&Pod>, op: Operation) -> ErrorList {
    let mut errors = Vec::new();
    let path = Path::new("spec");
    let spec = pod.spec.clone().unwrap_or_default();
    validate_pod_spec(&spec, &path, &mut errors);
    if op == Operation::Create
        && spec
            .ephemeral_containers
            .as_ref()
            .is_some_and(|e| !e.is_empty())
    {
        errors.push(FieldError::forbidden(
            &path.child("ephemeralContainers"),
            "cannot be set on create",
        ));
    }
    if op == Operation::UpdateEphemeralContainers
        && let Some(old_spec) = old.and_then(|o| o.spec.as_ref())
    {
        // Ephemeral containers can only be added: upstream's ValidatePodEphemeralContainersUpdate.
        let field = path.child("ephemeralContainers");
        let now = spec.ephemeral_containers.clone().unwrap_or_default();
        for before in old_spec.ephemeral_containers.iter().flatten() {
            match now.iter().find(|c| c.name == before.name) {
                None => errors.push(FieldError::forbidden(
                    &field,
                    &format!(
                        "existing ephemeral containers {:?} may not be removed",
                        before.name
                    ),
                )),
                Some(c) if c != before => errors.push(FieldError::forbidden(
                    &field,
                    &format!(
                        "existing ephemeral containers {:?} may not be changed",
                        before.name
                    ),
                )),
                Some(_) => {}
            }
        }
    }
    if op == Operation::Update
        && let Some(old_spec) = old.and_then(|o| o.spec.clone())
    {
        let mut comparable = spec.clone();
        for (c, o) in comparable.containers.iter_mut().zip(&old_spec.containers) {
            c.image = o.image.clone();
        }
        for (c, o) in comparable
            .init_containers
            .iter_mut()
            .flatten()
            .zip(old_spec.init_containers.iter().flatten())
        {
            c.image = o.image.clone();
        }
        comparable.active_deadline_seconds = old_spec.active_deadline_seconds;
        // Scheduling gates may be removed (not added) while the pod waits.
        let old_gates = old_spec.scheduling_gates.clone().unwrap_or_default();
        if spec
            .scheduling_gates
            .iter()
            .flatten()
            .all(|g| old_gates.contains(g))
        {
            comparable.scheduling_gates = old_spec.scheduling_gates.clone();
        }
        comparable.termination_grace_period_seconds = old_spec.termination_grace_period_seconds;
        let old_tolerations = old_spec.tolerations.clone().unwrap_or_default();
        let adds_only = old_tolerations
            .iter()
            .all(|t| spec.tolerations.iter().flatten().any(|n| n == t));
        if adds_only {
            comparable.tolerations = old_spec.tolerations.clone();
        }
        if comparable != old_spec {
            errors.push(FieldError::forbidden(&path, "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"));
        }
    }
    errors
}

/// kubectl's pod columns.
pub fn columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new(
            "Ready",
            "string",
            "The aggregate readiness state of this pod for accepting traffic.",
        ),
        Column::new(
            "Status",
            "string",
            "The aggregate status of the containers in this pod.",
        ),
        Column::new(
            "Restarts",
            "string",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        Column::age(),
        Column::new("IP", "string", "The IP address assigned to this pod.").wide(),
        Column::new("Node", "string", "The node the pod is bound to.").wide(),
        Column::new(
            "Nominated Node",
            "string",
            "The node this pod is nominated to run on, if any.",
        )
        .wide(),
        Column::new(
            "Readiness Gates",
            "string",
            "The readiness gates of this pod and how many are satisfied.",
        )
        .wide(),
    ]
}

/// The STATUS cell, computed like kubectl's `printPod`.
pub fn status_reason(pod: &Value) -> String {
    let mut reason = s(pod, "/status/phase").to_owned();
    if !s(pod, "/status/reason").is_empty() {
        reason = s(pod, "/status/reason").to_owned();
    }
    let init_statuses = list(pod, "/status/initContainerStatuses");
    let init_total = list(pod, "/spec/initContainers").len();
    let mut initializing = false;
    for (i, c) in init_statuses.iter().enumerate() {
        let terminated = &c["state"]["terminated"];
        let waiting = &c["state"]["waiting"];
        if terminated.is_object() && terminated["exitCode"].as_i64() == Some(0) {
            continue;
        }
        initializing = true;
        reason = if terminated.is_object() {
            match terminated["reason"].as_str().filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None if terminated["signal"].as_i64().unwrap_or(0) != 0 => {
                    format!("Init:Signal:{}", terminated["signal"])
                }
                None => format!("Init:ExitCode:{}", terminated["exitCode"]),
            }
        } else if let Some(r) = waiting["reason"]
            .as_str()
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            format!("Init:{r}")
        } else {
            format!("Init:{i}/{init_total}")
        };
        break;
    }
    if !initializing {
        let mut has_running = false;
        for c in list(pod, "/status/containerStatuses").iter().rev() {
            let state = &c["state"];
            if let Some(r) = state["waiting"]["reason"]
                .as_str()
                .filter(|r| !r.is_empty())
            {
                reason = r.to_owned();
            } else if state["terminated"].is_object() {
                let t = &state["terminated"];
                reason = match t["reason"].as_str().filter(|r| !r.is_empty()) {
                    Some(r) => r.to_owned(),
                    None if t["signal"].as_i64().unwrap_or(0) != 0 => {
                        format!("Signal:{}", t["signal"])
                    }
                    None => format!("ExitCode:{}", t["exitCode"]),
                };
            } else if c["ready"].as_bool() == Some(true) && state["running"].is_object() {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            let ready = list(pod, "/status/conditions")
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if ready {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        reason = if s(pod, "/status/reason") == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    reason
}

/// One pod row.
pub fn row(pod: &Value, ctx: &PrintContext) -> Cells {
    let total = list(pod, "/spec/containers").len();
    let statuses = list(pod, "/status/containerStatuses");
    let ready = statuses
        .iter()
        .filter(|c| c["ready"].as_bool() == Some(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .chain(list(pod, "/status/initContainerStatuses"))
        .map(|c| c["restartCount"].as_i64().unwrap_or(0))
        .sum();
    let last_restart = statuses
        .iter()
        .filter_map(|c| c["lastState"]["terminated"]["finishedAt"].as_str())
        .max();
    let restarts_cell = match last_restart {
        Some(at) if restarts > 0 => format!("{restarts} ({} ago)", since(at, ctx)),
        _ => restarts.to_string(),
    };
    let gates = list(pod, "/spec/readinessGates");
    let gates_cell = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let conditions = list(pod, "/status/conditions");
        let satisfied = gates
            .iter()
            .filter(|g| {
                conditions
                    .iter()
                    .any(|c| c["type"] == g["conditionType"] && c["status"] == "True")
            })
            .count();
        format!("{satisfied}/{}", gates.len())
    };
    vec![
        name(pod),
        text(format!("{ready}/{total}")),
        text(status_reason(pod)),
        text(restarts_cell),
        age_cell(pod, ctx),
        or_none(s(pod, "/status/podIP")),
        or_none(s(pod, "/spec/nodeName")),
        or_none(s(pod, "/status/nominatedNodeName")),
        text(gates_cell),
    ]
}

/// Pod template columns.
pub fn template_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new(
            "Containers",
            "string",
            "Names of each container in the template.",
        ),
        Column::new(
            "Images",
            "string",
            "Images referenced by each container in the template.",
        ),
        Column::new("Pod Labels", "string", "The labels for the pod template."),
    ]
}

/// Pod template row.
pub fn template_row(obj: &Value, _ctx: &PrintContext) -> Cells {
    let (containers, images) = print::containers_and_images(obj, "/template/spec");
    vec![
        name(obj),
        containers,
        images,
        print::map_pairs(obj, "/template/metadata/labels"),
    ]
}

/// Field selectors of pods.
pub const FIELDS: &[(&str, &str)] = &[
    ("spec.nodeName", "/spec/nodeName"),
    ("spec.restartPolicy", "/spec/restartPolicy"),
    ("spec.schedulerName", "/spec/schedulerName"),
    ("spec.serviceAccountName", "/spec/serviceAccountName"),
    ("spec.hostNetwork", "/spec/hostNetwork"),
    ("status.phase", "/status/phase"),
    ("status.podIP", "/status/podIP"),
    ("status.nominatedNodeName", "/status/nominatedNodeName"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> PrintContext {
        PrintContext {
            now_unix: 1_700_000_000,
        }
    }

    #[test]
    fn a_minimal_pod_gets_upstream_defaults() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap();
        prepare(&mut pod, None, Operation::Create);
        let v = serde_json::to_value(&pod).unwrap();
        assert_eq!(v["spec"]["restartPolicy"], "Always");
        assert_eq!(v["spec"]["dnsPolicy"], "ClusterFirst");
        assert_eq!(v["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(v["spec"]["schedulerName"], "default-scheduler");
        assert_eq!(v["spec"]["serviceAccountName"], "default");
        assert_eq!(v["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            v["spec"]["containers"][0]["terminationMessagePath"],
            "/dev/termination-log"
        );
        assert_eq!(v["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(v["status"]["phase"], "Pending");
        assert_eq!(v["status"]["qosClass"], "BestEffort");
    }

    #[test]
    fn qos_classes() {
        let spec = |resources: Value| -> PodSpec {
            serde_json::from_value(
                json!({"containers": [{"name": "c", "image": "i", "resources": resources}]}),
            )
            .unwrap()
        };
        assert_eq!(qos_class(&spec(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&spec(json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
        assert_eq!(
            qos_class(&spec(
                json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}})
            )),
            "Guaranteed"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c"}]}
        }))
        .unwrap();
        let errors: Vec<String> = validate(&pod, None, Operation::Create)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors, ["spec.containers[0].image: Required value"]);
        let mut changed = pod.clone();
        changed.spec.as_mut().unwrap().containers[0].name = "other".into();
        changed.spec.as_mut().unwrap().containers[0].image = Some("i".into());
        let mut old = pod.clone();
        old.spec.as_mut().unwrap().containers[0].image = Some("i".into());
        let errors = validate(&changed, Some(&old), Operation::Update);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .to_string()
                .starts_with("spec: Forbidden: pod updates may not change fields")
        );
    }

    #[test]
    fn status_and_restarts_print_like_kubectl() {
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": "2023-11-14T22:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}},
                 "lastState": {"terminated": {"finishedAt": "2023-11-14T22:08:20Z"}}},
                {"name": "b", "ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        });
        let cells = row(&pod, &ctx());
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "3 (5m ago)");
        assert_eq!(cells[5], "<none>");
        let mut deleting = pod.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:10:00Z");
        assert_eq!(status_reason(&deleting), "Terminating");
        let init = json!({"spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "c"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [{"state": {"running": {}}}]}});
        assert_eq!(status_reason(&init), "Init:0/1");
    }
}
