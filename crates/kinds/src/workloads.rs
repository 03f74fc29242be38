//! apps/v1 and batch/v1: workload controllers' objects, their defaults (replicas, update
//! strategies, history limits), selector rules, and kubectl's printing.

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use skiff_api::field::{ErrorList, FieldError, Path};
use skiff_api::registry::{Operation, PrintContext, ResourceInfo, Subresource};
use skiff_api::selector::LabelSelector as Selector;
use skiff_api::table::{Cells, Column};

use crate::pod;
use crate::print::{
    age_cell, containers_and_images, label_selector, list, map_pairs, n, name, s, since, text,
};
use crate::strategy::{Hooks, Names, entry, short};
use crate::validation::{immutable, non_negative};

fn pct(v: &str) -> Option<IntOrString> {
    Some(IntOrString::String(v.into()))
}

/// Selector required, non-empty, matching the template's labels; template valid.
fn validate_selector_and_template(
    selector: Option<&LabelSelector>,
    template: Option<&PodTemplateSpec>,
    path: &Path,
    errors: &mut ErrorList,
) {
    let labels = template
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    match selector {
        None => errors.push(FieldError::required(&path.child("selector"), "")),
        Some(sel) => match Selector::from_k8s(sel) {
            Ok(parsed) if parsed.is_empty() => errors.push(FieldError::invalid(
                &path.child("selector"),
                "null",
                "empty selector is invalid for deployment",
            )),
            Ok(parsed) => {
                if !parsed.matches(&labels) {
                    let rendered = labels
                        .iter()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect::<Vec<_>>()
                        .join(",");
                    errors.push(FieldError::invalid(
                        &path.child("template").child("metadata").child("labels"),
                        skiff_api::field::BadValue(format!(
                            "map[string]string{{{}}}",
                            rendered.replace(',', " ")
                        )),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            Err(e) => errors.push(FieldError::invalid(
                &path.child("selector"),
                skiff_api::field::BadValue(String::new()),
                &e.to_string(),
            )),
        },
    }
    match template.and_then(|t| t.spec.as_ref()) {
        Some(spec) => pod::validate_pod_spec(spec, &path.child("template").child("spec"), errors),
        None => errors.push(FieldError::required(&path.child("template"), "")),
    }
}

fn reset_status<T: Default>(status: &mut Option<T>, op: Operation) {
    if op == Operation::Create {
        *status = Some(T::default());
    }
}

fn deployment_prepare(d: &mut Deployment, _old: Option<&Deployment>, op: Operation) {
    let spec = d.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    let strategy = spec.strategy.get_or_insert_with(Default::default);
    strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let rolling = strategy.rolling_update.get_or_insert_with(Default::default);
        if rolling.max_unavailable.is_none() {
            rolling.max_unavailable = pct("25%");
        }
        if rolling.max_surge.is_none() {
            rolling.max_surge = pct("25%");
        }
    }
    pod::default_template(&mut spec.template);
    reset_status(&mut d.status, op);
}

fn deployment_validate(d: &Deployment, old: Option<&Deployment>, _op: Operation) -> ErrorList {
    let mut errors = Vec::new();
    let path = Path::new("spec");
    let spec = d.spec.clone().unwrap_or_default();
    non_negative(
        spec.replicas.map(i64::from),
        &path.child("replicas"),
        &mut errors,
    );
    validate_selector_and_template(
        Some(&spec.selector),
        Some(&spec.template),
        &path,
        &mut errors,
    );
    let strategy_type = spec
        .strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate");
    if !["RollingUpdate", "Recreate"].contains(&strategy_type) {
        errors.push(FieldError::not_supported(
            &path.child("strategy").child("type"),
            strategy_type,
            &["Recreate", "RollingUpdate"],
        ));
    }
    if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
        immutable(
            &spec.selector,
            &old_spec.selector,
            &path.child("selector"),
            &mut errors,
        );
    }
    errors
}

fn deployment_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Ready", "string", "Number of the pod with ready state"),
        Column::new("Up-to-date", "integer", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
        Column::new("Available", "integer", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
        Column::age(),
        Column::new("Containers", "string", "Names of each container in the template.").wide(),
        Column::new("Images", "string", "Images referenced by each container in the template.").wide(),
        Column::new("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.").wide(),
    ]
}

fn deployment_row(d: &Value, ctx: &PrintContext) -> Cells {
    let (containers, images) = containers_and_images(d, "/spec/template/spec");
    vec![
        name(d),
        text(format!(
            "{}/{}",
            n(d, "/status/readyReplicas"),
            n(d, "/spec/replicas")
        )),
        Value::from(n(d, "/status/updatedReplicas")),
        Value::from(n(d, "/status/availableReplicas")),
        age_cell(d, ctx),
        containers,
        images,
        label_selector(d.pointer("/spec/selector")),
    ]
}

fn replicaset_prepare(rs: &mut ReplicaSet, _old: Option<&ReplicaSet>, op: Operation) {
    let spec = rs.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    if let Some(template) = spec.template.as_mut() {
        pod::default_template(template);
    }
    reset_status(&mut rs.status, op);
}

fn replicaset_validate(rs: &ReplicaSet, old: Option<&ReplicaSet>, _op: Operation) -> ErrorList {
    let mut errors = Vec::new();
    let path = Path::new("spec");
    let spec = rs.spec.clone().unwrap_or_default();
    non_negative(
        spec.replicas.map(i64::from),
        &path.child("replicas"),
        &mut errors,
    );
    validate_selector_and_template(
        Some(&spec.selector),
        spec.template.as_ref(),
        &path,
        &mut errors,
    );
    if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
        immutable(
            &spec.selector,
            &old_spec.selector,
            &path.child("selector"),
            &mut errors,
        );
    }
    errors
}

fn replicaset_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Desired", "integer", "Number of desired pods."),
        Column::new("Current", "integer", "Number of actual pods."),
        Column::new("Ready", "integer", "Number of ready pods."),
        Column::age(),
        Column::new(
            "Containers",
            "string",
            "Names of each container in the template.",
        )
        .wide(),
        Column::new(
            "Images",
            "string",
            "Images referenced by each container in the template.",
        )
        .wide(),
        Column::new("Selector", "string", "Label selector of the pods.").wide(),
    ]
}

fn replicaset_row(rs: &Value, ctx: &PrintContext) -> Cells {
    let (containers, images) = containers_and_images(rs, "/spec/template/spec");
    vec![
        name(rs),
        Value::from(n(rs, "/spec/replicas")),
        Value::from(n(rs, "/status/replicas")),
        Value::from(n(rs, "/status/readyReplicas")),
        age_cell(rs, ctx),
        containers,
        images,
        label_selector(rs.pointer("/spec/selector")),
    ]
}

fn statefulset_prepare(ss: &mut StatefulSet, _old: Option<&StatefulSet>, op: Operation) {
    let spec = ss.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit.get_or_insert(10);
    spec.pod_management_policy
        .get_or_insert_with(|| "OrderedReady".into());
    let strategy = spec.update_strategy.get_or_insert_with(Default::default);
    strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        strategy
            .rolling_update
            .get_or_insert_with(Default::default)
            .partition
            .get_or_insert(0);
    }
    let retention = spec
        .persistent_volume_claim_retention_policy
        .get_or_insert_with(Default::default);
    retention
        .when_deleted
        .get_or_insert_with(|| "Retain".into());
    retention.when_scaled.get_or_insert_with(|| "Retain".into());
    pod::default_template(&mut spec.template);
    for claim in spec.volume_claim_templates.iter_mut().flatten() {
        if let Some(claim_spec) = claim.spec.as_mut() {
            claim_spec
                .volume_mode
                .get_or_insert_with(|| "Filesystem".into());
        }
    }
    reset_status(&mut ss.status, op);
}

fn statefulset_validate(ss: &StatefulSet, old: Option<&StatefulSet>, _op: Operation) -> ErrorList {
    let mut errors = Vec::new();
    let path = Path::new("spec");
    let spec = ss.spec.clone().unwrap_or_default();
    non_negative(
        spec.replicas.map(i64::from),
        &path.child("replicas"),
        &mut errors,
    );
    validate_selector_and_template(
        Some(&spec.selector),
        Some(&spec.template),
        &path,
        &mut errors,
    );
    if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
        // upstream: only replicas, ordinals, template, updateStrategy, revisionHistoryLimit,
        // persistentVolumeClaimRetentionPolicy and minReadySeconds may change.
        let mut comparable = spec.clone();
        comparable.replicas = old_spec.replicas;
        comparable.ordinals = old_spec.ordinals.clone();
        comparable.template = old_spec.template.clone();
        comparable.update_strategy = old_spec.update_strategy.clone();
        comparable.revision_history_limit = old_spec.revision_history_limit;
        comparable.persistent_volume_claim_retention_policy =
            old_spec.persistent_volume_claim_retention_policy.clone();
        comparable.min_ready_seconds = old_spec.min_ready_seconds;
        if &comparable != old_spec {
            errors.push(FieldError::forbidden(&path, "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"));
        }
    }
    errors
}

fn statefulset_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Ready", "string", "Number of the pod with ready state"),
        Column::age(),
        Column::new(
            "Containers",
            "string",
            "Names of each container in the template.",
        )
        .wide(),
        Column::new(
            "Images",
            "string",
            "Images referenced by each container in the template.",
        )
        .wide(),
    ]
}

fn statefulset_row(ss: &Value, ctx: &PrintContext) -> Cells {
    let (containers, images) = containers_and_images(ss, "/spec/template/spec");
    vec![
        name(ss),
        text(format!(
            "{}/{}",
            n(ss, "/status/readyReplicas"),
            n(ss, "/spec/replicas")
        )),
        age_cell(ss, ctx),
        containers,
        images,
    ]
}

fn daemonset_prepare(ds: &mut DaemonSet, _old: Option<&DaemonSet>, op: Operation) {
    let spec = ds.spec.get_or_insert_with(Default::default);
    spec.revision_history_limit.get_or_insert(10);
    let strategy = spec.update_strategy.get_or_insert_with(Default::default);
    strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let rolling = strategy.rolling_update.get_or_insert_with(Default::default);
        if rolling.max_unavailable.is_none() {
            rolling.max_unavailable = Some(IntOrString::Int(1));
        }
        if rolling.max_surge.is_none() {
            rolling.max_surge = Some(IntOrString::Int(0));
        }
    }
    pod::default_template(&mut spec.template);
    reset_status(&mut ds.status, op);
}

fn daemonset_validate(ds: &DaemonSet, old: Option<&DaemonSet>, _op: Operation) -> ErrorList {
    let mut errors = Vec::new();
    let path = Path::new("spec");
    let spec = ds.spec.clone().unwrap_or_default();
    validate_selector_and_template(
        Some(&spec.selector),
        Some(&spec.template),
        &path,
        &mut errors,
    );
    if let Some(policy) = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        && policy != "Always"
    {
        errors.push(FieldError::not_supported(
            &path.child("template").child("spec").child("restartPolicy"),
            policy,
            &["Always"],
        ));
    }
    if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
        immutable(
            &spec.selector,
            &old_spec.selector,
            &path.child("selector"),
            &mut errors,
        );
    }
    errors
}

fn daemonset_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new(
            "Desired",
            "integer",
            "The total number of nodes that should be running the daemon pod.",
        ),
        Column::new(
            "Current",
            "integer",
            "The number of nodes that are running at least 1 daemon pod.",
        ),
        Column::new(
            "Ready",
            "integer",
            "The number of nodes that should be running the daemon pod and have one or more running and ready.",
        ),
        Column::new(
            "Up-to-date",
            "integer",
            "The total number of nodes that are running updated daemon pod.",
        ),
        Column::new(
            "Available",
            "integer",
            "The number of nodes that should be running the daemon pod and have one or more available.",
        ),
        Column::new(
            "Node Selector",
            "string",
            "The node selector of the daemon pods.",
        ),
        Column::age(),
        Column::new(
            "Containers",
            "string",
            "Names of each container in the template.",
        )
        .wide(),
        Column::new(
            "Images",
            "string",
            "Images referenced by each container in the template.",
        )
        .wide(),
        Column::new("Selector", "string", "Label selector of the pods.").wide(),
    ]
}

fn daemonset_row(ds: &Value, ctx: &PrintContext) -> Cells {
    let (containers, images) = containers_and_images(ds, "/spec/template/spec");
    vec![
        name(ds),
        Value::from(n(ds, "/status/desiredNumberScheduled")),
        Value::from(n(ds, "/status/currentNumberScheduled")),
        Value::from(n(ds, "/status/numberReady")),
        Value::from(n(ds, "/status/updatedNumberScheduled")),
        Value::from(n(ds, "/status/numberAvailable")),
        map_pairs(ds, "/spec/template/spec/nodeSelector"),
        age_cell(ds, ctx),
        containers,
        images,
        label_selector(ds.pointer("/spec/selector")),
    ]
}

fn job_prepare(job: &mut Job, old: Option<&Job>, op: Operation) {
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let spec = job.spec.get_or_insert_with(Default::default);
    spec.parallelism.get_or_insert(1);
    spec.completions.get_or_insert(1);
    spec.backoff_limit.get_or_insert(6);
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    spec.manual_selector.get_or_insert(false);
    spec.pod_replacement_policy
        .get_or_insert_with(|| "TerminatingOrFailed".into());
    // upstream Job PrepareForCreate: a selector on the controller uid, and matching labels
    // on the template, unless the user asked for a manual selector.
    if op == Operation::Create && spec.manual_selector != Some(true) && !uid.is_empty() {
        let labels = spec
            .template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default);
        labels.insert("batch.kubernetes.io/controller-uid".into(), uid.clone());
        labels.insert("batch.kubernetes.io/job-name".into(), job_name.clone());
        labels.insert("controller-uid".into(), uid.clone());
        labels.insert("job-name".into(), job_name);
        spec.selector = Some(LabelSelector {
            match_labels: Some([("batch.kubernetes.io/controller-uid".to_owned(), uid)].into()),
            ..Default::default()
        });
    }
    pod::default_template(&mut spec.template);
    if op == Operation::Create {
        job.status = Some(Default::default());
    }
    if op == Operation::Update
        && let Some(old_spec) = old.and_then(|o| o.spec.as_ref())
        && let Some(spec) = job.spec.as_mut()
        && spec.selector.is_none()
    {
        spec.selector = old_spec.selector.clone();
    }
}

fn job_validate(job: &Job, old: Option<&Job>, op: Operation) -> ErrorList {
    let mut errors = Vec::new();
    let path = Path::new("spec");
    let spec = job.spec.clone().unwrap_or_default();
    non_negative(
        spec.parallelism.map(i64::from),
        &path.child("parallelism"),
        &mut errors,
    );
    non_negative(
        spec.completions.map(i64::from),
        &path.child("completions"),
        &mut errors,
    );
    non_negative(
        spec.backoff_limit.map(i64::from),
        &path.child("backoffLimit"),
        &mut errors,
    );
    if let Some(spec_) = spec.template.spec.as_ref() {
        let policy = spec_.restart_policy.as_deref().unwrap_or("");
        if !["OnFailure", "Never"].contains(&policy) {
            errors.push(FieldError::not_supported(
                &path.child("template").child("spec").child("restartPolicy"),
                policy,
                &["OnFailure", "Never"],
            ));
        }
    }
    if op == Operation::Create || spec.selector.is_some() {
        validate_selector_and_template(
            spec.selector.as_ref(),
            Some(&spec.template),
            &path,
            &mut errors,
        );
    }
    if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
        immutable(
            &spec.selector,
            &old_spec.selector,
            &path.child("selector"),
            &mut errors,
        );
        immutable(
            &spec.completions,
            &old_spec.completions,
            &path.child("completions"),
            &mut errors,
        );
        let mut template = spec.template.clone();
        let mut old_template = old_spec.template.clone();
        // Suspended jobs may change scheduling directives; compare the rest.
        if let (Some(t), Some(o)) = (template.spec.as_mut(), old_template.spec.as_mut()) {
            t.node_selector = o.node_selector.clone();
            t.tolerations = o.tolerations.clone();
            t.affinity = o.affinity.clone();
            t.scheduling_gates = o.scheduling_gates.clone();
        }
        if let (Some(m), Some(o)) = (template.metadata.as_mut(), old_template.metadata.as_mut()) {
            m.labels = o.labels.clone();
            m.annotations = o.annotations.clone();
        }
        if template != old_template {
            errors.push(FieldError::invalid(
                &path.child("template"),
                skiff_api::field::BadValue("core.PodTemplateSpec{...}".into()),
                "field is immutable",
            ));
        }
    }
    errors
}

fn job_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Status", "string", "Status of the job."),
        Column::new("Completions", "string", "The completion status of the job."),
        Column::new("Duration", "string", "Time required to complete the job."),
        Column::age(),
        Column::new(
            "Containers",
            "string",
            "Names of each container in the template.",
        )
        .wide(),
        Column::new(
            "Images",
            "string",
            "Images referenced by each container in the template.",
        )
        .wide(),
        Column::new(
            "Selector",
            "string",
            "Selector used for filtering the pods.",
        )
        .wide(),
    ]
}

fn job_status(job: &Value) -> &'static str {
    let conditions = list(job, "/status/conditions");
    let has = |t: &str| {
        conditions
            .iter()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if job.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if has("Suspended") {
        "Suspended"
    } else {
        "Running"
    }
}

fn job_row(job: &Value, ctx: &PrintContext) -> Cells {
    let (containers, images) = containers_and_images(job, "/spec/template/spec");
    let completions = match job.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{}/{c}", n(job, "/status/succeeded")),
        None => format!(
            "{}/1 of {}",
            n(job, "/status/succeeded"),
            n(job, "/spec/parallelism").max(1)
        ),
    };
    let start = s(job, "/status/startTime");
    let duration = if start.is_empty() {
        String::new()
    } else {
        let end = s(job, "/status/completionTime");
        match (
            skiff_api::registry::parse_rfc3339(start),
            skiff_api::registry::parse_rfc3339(end),
        ) {
            (Some(a), Some(b)) => skiff_api::table::human_duration(b - a),
            _ => since(start, ctx),
        }
    };
    vec![
        name(job),
        text(job_status(job)),
        text(completions),
        text(duration),
        age_cell(job, ctx),
        containers,
        images,
        label_selector(job.pointer("/spec/selector")),
    ]
}

fn cronjob_prepare(cj: &mut CronJob, _old: Option<&CronJob>, op: Operation) {
    let spec = cj.spec.get_or_insert_with(Default::default);
    spec.concurrency_policy
        .get_or_insert_with(|| "Allow".into());
    spec.suspend.get_or_insert(false);
    spec.successful_jobs_history_limit.get_or_insert(3);
    spec.failed_jobs_history_limit.get_or_insert(1);
    if let Some(job_spec) = spec.job_template.spec.as_mut() {
        job_spec.backoff_limit.get_or_insert(6);
        job_spec
            .completion_mode
            .get_or_insert_with(|| "NonIndexed".into());
        job_spec.suspend.get_or_insert(false);
        pod::default_template(&mut job_spec.template);
    }
    if op == Operation::Create {
        cj.status = Some(Default::default());
    }
}

fn cronjob_validate(cj: &CronJob, _old: Option<&CronJob>, _op: Operation) -> ErrorList {
    let mut errors = Vec::new();
    let path = Path::new("spec");
    let spec = cj.spec.clone().unwrap_or_default();
    let fields = spec.schedule.split_whitespace().count();
    let macro_ = spec.schedule.starts_with('@');
    if spec.schedule.is_empty() {
        errors.push(FieldError::required(&path.child("schedule"), ""));
    } else if !macro_ && fields != 5 {
        errors.push(FieldError::invalid(
            &path.child("schedule"),
            spec.schedule.as_str(),
            &format!(
                "expected exactly 5 fields, found {fields}: {}",
                spec.schedule
            ),
        ));
    }
    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
    if !["Allow", "Forbid", "Replace"].contains(&policy) {
        errors.push(FieldError::not_supported(
            &path.child("concurrencyPolicy"),
            policy,
            &["Allow", "Forbid", "Replace"],
        ));
    }
    if let Some(pod_spec) = spec
        .job_template
        .spec
        .as_ref()
        .and_then(|j| j.template.spec.as_ref())
    {
        pod::validate_pod_spec(
            pod_spec,
            &path
                .child("jobTemplate")
                .child("spec")
                .child("template")
                .child("spec"),
            &mut errors,
        );
    }
    errors
}

fn cronjob_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Schedule", "string", "The schedule for running the job."),
        Column::new("Timezone", "string", "The time zone for the schedule."),
        Column::new("Suspend", "boolean", "Whether the cronjob is suspended."),
        Column::new("Active", "integer", "Number of active jobs."),
        Column::new(
            "Last Schedule",
            "string",
            "When the job was last scheduled.",
        ),
        Column::age(),
        Column::new(
            "Containers",
            "string",
            "Names of each container in the template.",
        )
        .wide(),
        Column::new(
            "Images",
            "string",
            "Images referenced by each container in the template.",
        )
        .wide(),
        Column::new(
            "Selector",
            "string",
            "Selector used for filtering the jobs.",
        )
        .wide(),
    ]
}

fn cronjob_row(cj: &Value, ctx: &PrintContext) -> Cells {
    let (containers, images) = containers_and_images(cj, "/spec/jobTemplate/spec/template/spec");
    let last = s(cj, "/status/lastScheduleTime");
    vec![
        name(cj),
        text(s(cj, "/spec/schedule")),
        text(if s(cj, "/spec/timeZone").is_empty() {
            "<none>"
        } else {
            s(cj, "/spec/timeZone")
        }),
        Value::from(
            cj.pointer("/spec/suspend")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        ),
        Value::from(list(cj, "/status/active").len()),
        text(if last.is_empty() {
            "<none>".to_owned()
        } else {
            since(last, ctx)
        }),
        age_cell(cj, ctx),
        containers,
        images,
        label_selector(cj.pointer("/spec/jobTemplate/spec/selector")),
    ]
}

fn revision_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Controller", "string", "Controller of the object."),
        Column::new("Revision", "integer", "Revision of the ControllerRevision."),
        Column::age(),
    ]
}

fn revision_row(cr: &Value, ctx: &PrintContext) -> Cells {
    let controller = list(cr, "/metadata/ownerReferences")
        .iter()
        .find(|o| o["controller"].as_bool() == Some(true))
        .map(|o| {
            format!(
                "{}.{}/{}",
                o["kind"].as_str().unwrap_or("").to_lowercase(),
                o["apiVersion"]
                    .as_str()
                    .unwrap_or("")
                    .split('/')
                    .next()
                    .unwrap_or(""),
                o["name"].as_str().unwrap_or("")
            )
        })
        .unwrap_or_else(|| "<none>".into());
    vec![
        name(cr),
        text(controller),
        Value::from(n(cr, "/revision")),
        age_cell(cr, ctx),
    ]
}

fn workload(kind: &str, short_names: &'static [&'static str], scale: bool) -> Names {
    let mut subresources = vec![Subresource::status(kind)];
    if scale {
        subresources.push(Subresource::scale());
    }
    Names {
        short_names,
        categories: &["all"],
        subresources,
    }
}

/// apps/v1 and batch/v1 entries.
pub fn entries() -> Vec<ResourceInfo> {
    vec![
        entry::<Deployment>(
            workload("Deployment", &["deploy"], true),
            Hooks {
                prepare: deployment_prepare,
                validate: deployment_validate,
                columns: Some(deployment_columns),
                row: Some(deployment_row),
                ..Default::default()
            },
        ),
        entry::<ReplicaSet>(
            workload("ReplicaSet", &["rs"], true),
            Hooks {
                prepare: replicaset_prepare,
                validate: replicaset_validate,
                columns: Some(replicaset_columns),
                row: Some(replicaset_row),
                fields: &[("status.replicas", "/status/replicas")],
                ..Default::default()
            },
        ),
        entry::<StatefulSet>(
            workload("StatefulSet", &["sts"], true),
            Hooks {
                prepare: statefulset_prepare,
                validate: statefulset_validate,
                columns: Some(statefulset_columns),
                row: Some(statefulset_row),
                ..Default::default()
            },
        ),
        entry::<DaemonSet>(
            workload("DaemonSet", &["ds"], false),
            Hooks {
                prepare: daemonset_prepare,
                validate: daemonset_validate,
                columns: Some(daemonset_columns),
                row: Some(daemonset_row),
                ..Default::default()
            },
        ),
        entry::<ControllerRevision>(
            short(&[]),
            Hooks {
                columns: Some(revision_columns),
                row: Some(revision_row),
                generation_without_spec: true,
                ..Default::default()
            },
        ),
        entry::<Job>(
            workload("Job", &[], false),
            Hooks {
                prepare: job_prepare,
                validate: job_validate,
                columns: Some(job_columns),
                row: Some(job_row),
                fields: &[("status.successful", "/status/succeeded")],
                ..Default::default()
            },
        ),
        entry::<CronJob>(
            workload("CronJob", &["cj"], false),
            Hooks {
                prepare: cronjob_prepare,
                validate: cronjob_validate,
                columns: Some(cronjob_columns),
                row: Some(cronjob_row),
                ..Default::default()
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deployments_default_and_validate_like_upstream() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}
        }))
        .unwrap();
        deployment_prepare(&mut d, None, Operation::Create);
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["spec"]["replicas"], 1);
        assert_eq!(v["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(v["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert!(deployment_validate(&d, None, Operation::Create).is_empty());
        let mut other = d.clone();
        other.spec.as_mut().unwrap().selector.match_labels =
            Some([("app".to_owned(), "x".to_owned())].into());
        let errors: Vec<String> = deployment_validate(&other, Some(&d), Operation::Update)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("`selector` does not match template `labels`")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("spec.selector: Invalid value")
                    && e.ends_with("field is immutable")),
            "{errors:?}"
        );
    }

    #[test]
    fn jobs_get_a_controller_uid_selector() {
        let mut job: Job = serde_json::from_value(json!({
            "metadata": {"name": "pi", "uid": "u-1"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "perl"}]}}}
        }))
        .unwrap();
        job_prepare(&mut job, None, Operation::Create);
        assert!(job_validate(&job, None, Operation::Create).is_empty());
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(
            v["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u-1"
        );
        assert_eq!(
            v["spec"]["template"]["metadata"]["labels"]["job-name"],
            "pi"
        );
        assert_eq!(v["spec"]["backoffLimit"], 6);
    }
}
