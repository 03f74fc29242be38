//! The remaining groups: autoscaling, coordination, discovery, networking, RBAC, storage,
//! policy, scheduling, node, certificates, admission registration, apiextensions, and
//! events.k8s.io. Most need only names and printing; a few carry upstream defaults.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingWebhookConfiguration,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::api::networking::v1::{
    IPAddress, Ingress, IngressClass, NetworkPolicy, ServiceCIDR,
};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::resource::v1::{
    DeviceClass, ResourceClaim, ResourceClaimTemplate, ResourceSlice,
};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::{
    CSIDriver, CSINode, CSIStorageCapacity, StorageClass, VolumeAttachment, VolumeAttributesClass,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use skiff_api::field::{ErrorList, FieldError, Path};
use skiff_api::registry::{Operation, PrintContext, ResourceInfo, Subresource};
use skiff_api::table::{Cells, Column};

use crate::core::created_row;
use crate::print::{age_cell, label_selector, list, n, name, or_none, s, text};
use crate::strategy::{Hooks, Names, entry, short};
use crate::validation::{NameRule, dns1123_label, immutable};

fn created_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Created At", "date", "When the object was created."),
    ]
}

fn lease_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Holder", "string", "The holder of the lease."),
        Column::age(),
    ]
}

fn lease_row(l: &Value, ctx: &PrintContext) -> Cells {
    vec![
        name(l),
        text(s(l, "/spec/holderIdentity")),
        age_cell(l, ctx),
    ]
}

fn slice_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("AddressType", "string", "The type of addresses."),
        Column::new("Ports", "string", "The ports of the slice."),
        Column::new("Endpoints", "string", "The addresses of the slice."),
        Column::age(),
    ]
}

fn slice_row(es: &Value, ctx: &PrintContext) -> Cells {
    let ports: Vec<String> = list(es, "/ports")
        .iter()
        .filter_map(|p| p["port"].as_i64())
        .map(|p| p.to_string())
        .collect();
    let addresses: Vec<&str> = list(es, "/endpoints")
        .iter()
        .flat_map(|e| e["addresses"].as_array().map(Vec::as_slice).unwrap_or(&[]))
        .filter_map(Value::as_str)
        .collect();
    let shown = if addresses.len() > 3 {
        format!(
            "{} + {} more...",
            addresses[..3].join(","),
            addresses.len() - 3
        )
    } else {
        addresses.join(",")
    };
    vec![
        name(es),
        text(s(es, "/addressType")),
        text(if ports.is_empty() {
            "<unset>".to_owned()
        } else {
            ports.join(",")
        }),
        text(if shown.is_empty() {
            "<unset>".to_owned()
        } else {
            shown
        }),
        age_cell(es, ctx),
    ]
}

fn ingress_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Class", "string", "The ingress class."),
        Column::new("Hosts", "string", "The hosts the ingress serves."),
        Column::new("Address", "string", "Where the ingress is reachable."),
        Column::new("Ports", "string", "The ports the ingress serves."),
        Column::age(),
    ]
}

fn ingress_row(ing: &Value, ctx: &PrintContext) -> Cells {
    let hosts: Vec<&str> = list(ing, "/spec/rules")
        .iter()
        .filter_map(|r| r["host"].as_str())
        .collect();
    let addresses: Vec<&str> = list(ing, "/status/loadBalancer/ingress")
        .iter()
        .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
        .collect();
    let ports = if list(ing, "/spec/tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(ing),
        or_none(s(ing, "/spec/ingressClassName")),
        text(if hosts.is_empty() {
            "*".to_owned()
        } else {
            hosts.join(",")
        }),
        text(addresses.join(",")),
        text(ports),
        age_cell(ing, ctx),
    ]
}

fn binding_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Role", "string", "The role bound."),
        Column::age(),
        Column::new("Users", "string", "Users bound.").wide(),
        Column::new("Groups", "string", "Groups bound.").wide(),
        Column::new("ServiceAccounts", "string", "Service accounts bound.").wide(),
    ]
}

fn binding_row(b: &Value, ctx: &PrintContext) -> Cells {
    let subjects = list(b, "/subjects");
    let of = |kind: &str| -> String {
        subjects
            .iter()
            .filter(|s| s["kind"] == kind)
            .map(|s| {
                if kind == "ServiceAccount" {
                    format!(
                        "{}/{}",
                        s["namespace"].as_str().unwrap_or(""),
                        s["name"].as_str().unwrap_or("")
                    )
                } else {
                    s["name"].as_str().unwrap_or("").to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        name(b),
        text(format!(
            "{}/{}",
            s(b, "/roleRef/kind"),
            s(b, "/roleRef/name")
        )),
        age_cell(b, ctx),
        text(of("User")),
        text(of("Group")),
        text(of("ServiceAccount")),
    ]
}

fn storageclass_prepare(sc: &mut StorageClass, _old: Option<&StorageClass>, _op: Operation) {
    sc.reclaim_policy.get_or_insert_with(|| "Delete".into());
    sc.volume_binding_mode
        .get_or_insert_with(|| "Immediate".into());
}

fn storageclass_validate(
    sc: &StorageClass,
    old: Option<&StorageClass>,
    _op: Operation,
) -> ErrorList {
    let mut errors = Vec::new();
    if sc.provisioner.is_empty() {
        errors.push(FieldError::required(&Path::new("provisioner"), ""));
    }
    if let Some(old) = old {
        immutable(
            &sc.provisioner,
            &old.provisioner,
            &Path::new("provisioner"),
            &mut errors,
        );
        immutable(
            &sc.parameters,
            &old.parameters,
            &Path::new("parameters"),
            &mut errors,
        );
        immutable(
            &sc.reclaim_policy,
            &old.reclaim_policy,
            &Path::new("reclaimPolicy"),
            &mut errors,
        );
    }
    errors
}

fn storageclass_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Provisioner", "string", "The provisioner."),
        Column::new(
            "ReclaimPolicy",
            "string",
            "What happens to released volumes.",
        ),
        Column::new("VolumeBindingMode", "string", "When volumes are bound."),
        Column::new(
            "AllowVolumeExpansion",
            "string",
            "Whether volumes can grow.",
        ),
        Column::age(),
    ]
}

fn storageclass_row(sc: &Value, ctx: &PrintContext) -> Cells {
    let mut shown = name(sc);
    let is_default = sc
        .pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class")
        .and_then(Value::as_str)
        == Some("true");
    if is_default {
        shown = text(format!("{} (default)", s(sc, "/metadata/name")));
    }
    vec![
        shown,
        text(s(sc, "/provisioner")),
        text(s(sc, "/reclaimPolicy")),
        text(s(sc, "/volumeBindingMode")),
        text(
            sc.pointer("/allowVolumeExpansion")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string(),
        ),
        age_cell(sc, ctx),
    ]
}

fn priorityclass_prepare(pc: &mut PriorityClass, _old: Option<&PriorityClass>, _op: Operation) {
    pc.preemption_policy
        .get_or_insert_with(|| "PreemptLowerPriority".into());
}

fn priorityclass_validate(
    pc: &PriorityClass,
    old: Option<&PriorityClass>,
    _op: Operation,
) -> ErrorList {
    let mut errors = Vec::new();
    let name = pc.metadata.name.as_deref().unwrap_or("");
    if name.starts_with("system-")
        && !["system-cluster-critical", "system-node-critical"].contains(&name)
    {
        errors.push(FieldError::forbidden(
            &Path::new("metadata").child("name"),
            "priority class names with 'system-' prefix are reserved",
        ));
    }
    if pc.value > 1_000_000_000 && !name.starts_with("system-") {
        errors.push(FieldError::forbidden(
            &Path::new("value"),
            "maximum allowed value of a user defined priority is 1000000000",
        ));
    }
    if let Some(old) = old {
        immutable(&pc.value, &old.value, &Path::new("value"), &mut errors);
        immutable(
            &pc.preemption_policy,
            &old.preemption_policy,
            &Path::new("preemptionPolicy"),
            &mut errors,
        );
    }
    errors
}

fn priorityclass_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Value", "integer", "The priority value."),
        Column::new("Global-Default", "boolean", "Whether it is the default."),
        Column::age(),
        Column::new(
            "PreemptionPolicy",
            "string",
            "Whether pods of this class may preempt.",
        ),
    ]
}

fn priorityclass_row(pc: &Value, ctx: &PrintContext) -> Cells {
    vec![
        name(pc),
        Value::from(n(pc, "/value")),
        Value::from(
            pc.pointer("/globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        ),
        age_cell(pc, ctx),
        text(s(pc, "/preemptionPolicy")),
    ]
}

fn crd_validate(
    crd: &CustomResourceDefinition,
    old: Option<&CustomResourceDefinition>,
    _op: Operation,
) -> ErrorList {
    let mut errors = Vec::new();
    let spec = &crd.spec;
    let path = Path::new("spec");
    let expected = format!("{}.{}", spec.names.plural, spec.group);
    let name = crd.metadata.name.as_deref().unwrap_or("");
    if name != expected {
        errors.push(FieldError::invalid(
            &Path::new("metadata").child("name"),
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if spec.group.is_empty() {
        errors.push(FieldError::required(&path.child("group"), ""));
    } else if !spec.group.contains('.') {
        errors.push(FieldError::invalid(
            &path.child("group"),
            spec.group.as_str(),
            "should be a domain with at least one dot",
        ));
    }
    if !["Namespaced", "Cluster"].contains(&spec.scope.as_str()) {
        errors.push(FieldError::not_supported(
            &path.child("scope"),
            spec.scope.as_str(),
            &["Cluster", "Namespaced"],
        ));
    }
    let names = path.child("names");
    for (field, value) in [
        ("plural", &spec.names.plural),
        ("singular", &spec.names.singular.clone().unwrap_or_default()),
    ] {
        if !value.is_empty() && !dns1123_label(value).is_empty() {
            errors.push(FieldError::invalid(&names.child(field), value.as_str(), "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"));
        }
    }
    if spec.names.plural.is_empty() {
        errors.push(FieldError::required(&names.child("plural"), ""));
    }
    if spec.names.kind.is_empty() {
        errors.push(FieldError::required(&names.child("kind"), ""));
    }
    if spec.versions.is_empty() {
        errors.push(FieldError::required(
            &path.child("versions"),
            "must have exactly one version marked as storage version",
        ));
    }
    let storage = spec.versions.iter().filter(|v| v.storage).count();
    if !spec.versions.is_empty() && storage != 1 {
        errors.push(FieldError::invalid(
            &path.child("versions"),
            skiff_api::field::BadValue(String::from(
                "[]apiextensions.CustomResourceDefinitionVersion{...}",
            )),
            "must have exactly one version marked as storage version",
        ));
    }
    if !spec.versions.is_empty() && !spec.versions.iter().any(|v| v.served) {
        errors.push(FieldError::invalid(
            &path.child("versions"),
            skiff_api::field::BadValue(String::from(
                "[]apiextensions.CustomResourceDefinitionVersion{...}",
            )),
            "must have at least one version marked as served",
        ));
    }
    for (i, v) in spec.versions.iter().enumerate() {
        if !dns1123_label(&v.name).is_empty() {
            errors.push(FieldError::invalid(
                &path.child("versions").index(i).child("name"),
                v.name.as_str(),
                "must be a DNS-1035 label",
            ));
        }
        let has_schema = v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .is_some();
        if !has_schema {
            errors.push(FieldError::required(
                &path
                    .child("versions")
                    .index(i)
                    .child("schema")
                    .child("openAPIV3Schema"),
                "schemas are required",
            ));
        }
    }
    if let Some(old) = old {
        immutable(
            &spec.scope,
            &old.spec.scope,
            &path.child("scope"),
            &mut errors,
        );
        immutable(
            &spec.group,
            &old.spec.group,
            &path.child("group"),
            &mut errors,
        );
    }
    errors
}

fn crd_prepare(
    crd: &mut CustomResourceDefinition,
    _old: Option<&CustomResourceDefinition>,
    _op: Operation,
) {
    if crd.spec.conversion.is_none() {
        crd.spec.conversion = Some(Default::default());
    }
    if let Some(conversion) = crd.spec.conversion.as_mut()
        && conversion.strategy.is_empty()
    {
        conversion.strategy = "None".into();
    }
    if crd.spec.names.singular.as_deref().unwrap_or("").is_empty() {
        crd.spec.names.singular = Some(crd.spec.names.kind.to_lowercase());
    }
    if crd.spec.names.list_kind.as_deref().unwrap_or("").is_empty() {
        crd.spec.names.list_kind = Some(format!("{}List", crd.spec.names.kind));
    }
}

fn pdb_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Min Available", "string", "Minimum available pods."),
        Column::new("Max Unavailable", "string", "Maximum unavailable pods."),
        Column::new("Allowed Disruptions", "integer", "Disruptions allowed now."),
        Column::age(),
    ]
}

fn int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "N/A".into(),
    }
}

fn pdb_row(pdb: &Value, ctx: &PrintContext) -> Cells {
    vec![
        name(pdb),
        text(int_or_string(pdb.pointer("/spec/minAvailable"))),
        text(int_or_string(pdb.pointer("/spec/maxUnavailable"))),
        Value::from(n(pdb, "/status/disruptionsAllowed")),
        age_cell(pdb, ctx),
    ]
}

fn hpa_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Reference", "string", "The scale target."),
        Column::new("Targets", "string", "Current and target metrics."),
        Column::new("MinPods", "string", "Minimum replicas."),
        Column::new("MaxPods", "integer", "Maximum replicas."),
        Column::new("Replicas", "integer", "Current replicas."),
        Column::age(),
    ]
}

fn hpa_row(hpa: &Value, ctx: &PrintContext) -> Cells {
    let min = hpa
        .pointer("/spec/minReplicas")
        .and_then(Value::as_i64)
        .map_or("<unset>".to_owned(), |m| m.to_string());
    vec![
        name(hpa),
        text(format!(
            "{}/{}",
            s(hpa, "/spec/scaleTargetRef/kind"),
            s(hpa, "/spec/scaleTargetRef/name")
        )),
        text(hpa_targets(hpa)),
        text(min),
        Value::from(n(hpa, "/spec/maxReplicas")),
        Value::from(n(hpa, "/status/currentReplicas")),
        age_cell(hpa, ctx),
    ]
}

/// The TARGETS cell: `current/target` per metric, the first two (upstream's
/// `formatHPAMetrics`). Reads autoscaling/v2 and v1 shapes alike.
fn hpa_targets(hpa: &Value) -> String {
    let unknown = || "<unknown>".to_owned();
    let quantity = |v: Option<&Value>| match v {
        Some(Value::String(q)) => Some(q.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let percent = |v: Option<&Value>| v.and_then(Value::as_i64).map(|p| format!("{p}%"));
    let specs = list(hpa, "/spec/metrics");
    if specs.is_empty() {
        // autoscaling/v1: one CPU utilization target, if any.
        return match hpa.pointer("/spec/targetCPUUtilizationPercentage") {
            Some(target) => format!(
                "cpu: {}/{}",
                percent(hpa.pointer("/status/currentCPUUtilizationPercentage"))
                    .unwrap_or_else(unknown),
                percent(Some(target)).unwrap_or_else(|| "<auto>".to_owned())
            ),
            None => "<none>".to_owned(),
        };
    }
    let statuses = list(hpa, "/status/currentMetrics");
    let cells: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let status = statuses.get(i);
            let current = |source: &str, field: &str| {
                status
                    .and_then(|st| st.get(source))
                    .and_then(|st| st.pointer(&format!("/current/{field}")))
            };
            match spec["type"].as_str().unwrap_or_default() {
                source @ ("External" | "Object") => {
                    let key = if source == "External" {
                        "external"
                    } else {
                        "object"
                    };
                    let target = &spec[key]["target"];
                    match quantity(target.get("averageValue")) {
                        Some(average) => format!(
                            "{}/{average} (avg)",
                            quantity(current(key, "averageValue")).unwrap_or_else(unknown)
                        ),
                        None => format!(
                            "{}/{}",
                            quantity(current(key, "value")).unwrap_or_else(unknown),
                            quantity(target.get("value")).unwrap_or_default()
                        ),
                    }
                }
                "Pods" => format!(
                    "{}/{}",
                    quantity(current("pods", "averageValue")).unwrap_or_else(unknown),
                    quantity(spec.pointer("/pods/target/averageValue")).unwrap_or_default()
                ),
                source @ ("Resource" | "ContainerResource") => {
                    let key = if source == "Resource" {
                        "resource"
                    } else {
                        "containerResource"
                    };
                    let resource = spec[key]["name"].as_str().unwrap_or_default();
                    let target = &spec[key]["target"];
                    match quantity(target.get("averageValue")) {
                        Some(average) => format!(
                            "{resource}: {}/{average}",
                            quantity(current(key, "averageValue")).unwrap_or_else(unknown)
                        ),
                        None => format!(
                            "{resource}: {}/{}",
                            percent(current(key, "averageUtilization")).unwrap_or_else(unknown),
                            percent(target.get("averageUtilization"))
                                .unwrap_or_else(|| "<auto>".to_owned())
                        ),
                    }
                }
                _ => "<unknown type>".to_owned(),
            }
        })
        .collect();
    let shown = cells.len().min(2);
    let mut out = cells[..shown].join(", ");
    if cells.len() > shown {
        out.push_str(&format!(" + {} more...", cells.len() - shown));
    }
    out
}

fn netpol_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Pod-Selector", "string", "The pods the policy applies to."),
        Column::age(),
    ]
}

fn netpol_row(np: &Value, ctx: &PrintContext) -> Cells {
    vec![
        name(np),
        label_selector(np.pointer("/spec/podSelector")),
        age_cell(np, ctx),
    ]
}

fn netpol_prepare(np: &mut NetworkPolicy, _old: Option<&NetworkPolicy>, _op: Operation) {
    if let Some(spec) = np.spec.as_mut()
        && spec.policy_types.as_ref().is_none_or(Vec::is_empty)
    {
        let mut types = vec!["Ingress".to_owned()];
        if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
            types.push("Egress".into());
        }
        spec.policy_types = Some(types);
    }
}

fn csr_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::age(),
        Column::new("SignerName", "string", "The signer."),
        Column::new("Requestor", "string", "Who asked."),
        Column::new("RequestedDuration", "string", "Requested duration."),
        Column::new("Condition", "string", "Approval state."),
    ]
}

fn csr_row(csr: &Value, ctx: &PrintContext) -> Cells {
    let conditions: Vec<&str> = list(csr, "/status/conditions")
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    let mut condition = if conditions.is_empty() {
        "Pending".to_owned()
    } else {
        conditions.join(",")
    };
    if !s(csr, "/status/certificate").is_empty() {
        condition.push_str(",Issued");
    }
    vec![
        name(csr),
        age_cell(csr, ctx),
        text(s(csr, "/spec/signerName")),
        text(s(csr, "/spec/username")),
        text(
            csr.pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .map_or("<none>".to_owned(), skiff_api::table::human_duration),
        ),
        text(condition),
    ]
}

fn runtimeclass_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Handler", "string", "The CRI handler."),
        Column::age(),
    ]
}

fn runtimeclass_row(rc: &Value, ctx: &PrintContext) -> Cells {
    vec![name(rc), text(s(rc, "/handler")), age_cell(rc, ctx)]
}

fn ingressclass_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Controller", "string", "The controller."),
        Column::new("Parameters", "string", "Parameters reference."),
        Column::age(),
    ]
}

fn ingressclass_row(ic: &Value, ctx: &PrintContext) -> Cells {
    vec![
        name(ic),
        text(s(ic, "/spec/controller")),
        or_none(s(ic, "/spec/parameters/name")),
        age_cell(ic, ctx),
    ]
}

fn csidriver_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("AttachRequired", "boolean", "Whether attach is required."),
        Column::new(
            "PodInfoOnMount",
            "boolean",
            "Whether pod info is passed on mount.",
        ),
        Column::age(),
    ]
}

fn csidriver_row(d: &Value, ctx: &PrintContext) -> Cells {
    vec![
        name(d),
        Value::from(
            d.pointer("/spec/attachRequired")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        ),
        Value::from(
            d.pointer("/spec/podInfoOnMount")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        ),
        age_cell(d, ctx),
    ]
}

fn csidriver_prepare(d: &mut CSIDriver, _old: Option<&CSIDriver>, _op: Operation) {
    d.spec.attach_required.get_or_insert(true);
    d.spec.pod_info_on_mount.get_or_insert(false);
    d.spec.storage_capacity.get_or_insert(false);
    d.spec.requires_republish.get_or_insert(false);
    d.spec.se_linux_mount.get_or_insert(false);
    if d.spec.fs_group_policy.is_none() {
        d.spec.fs_group_policy = Some("ReadWriteOnceWithFSType".into());
    }
    if d.spec
        .volume_lifecycle_modes
        .as_ref()
        .is_none_or(Vec::is_empty)
    {
        d.spec.volume_lifecycle_modes = Some(vec!["Persistent".into()]);
    }
}

fn rbac(short_names: &'static [&'static str]) -> Names {
    short(short_names)
}

/// The registry entries of these groups.
pub fn entries() -> Vec<ResourceInfo> {
    vec![
        entry::<HorizontalPodAutoscaler>(
            Names {
                short_names: &["hpa"],
                categories: &["all"],
                subresources: vec![Subresource::status("HorizontalPodAutoscaler")],
            },
            Hooks {
                prepare: |hpa, _, _| {
                    if let Some(spec) = hpa.spec.as_mut() {
                        spec.min_replicas.get_or_insert(1);
                    }
                },
                columns: Some(hpa_columns),
                row: Some(hpa_row),
                ..Default::default()
            },
        ),
        entry::<Lease>(
            short(&[]),
            Hooks {
                columns: Some(lease_columns),
                row: Some(lease_row),
                ..Default::default()
            },
        ),
        entry::<EndpointSlice>(
            short(&[]),
            Hooks {
                columns: Some(slice_columns),
                row: Some(slice_row),
                generation_without_spec: true,
                ..Default::default()
            },
        ),
        entry::<Ingress>(
            Names {
                short_names: &["ing"],
                categories: &[],
                subresources: vec![Subresource::status("Ingress")],
            },
            Hooks {
                columns: Some(ingress_columns),
                row: Some(ingress_row),
                ..Default::default()
            },
        ),
        entry::<IngressClass>(
            short(&[]),
            Hooks {
                columns: Some(ingressclass_columns),
                row: Some(ingressclass_row),
                ..Default::default()
            },
        ),
        entry::<NetworkPolicy>(
            short(&["netpol"]),
            Hooks {
                prepare: netpol_prepare,
                columns: Some(netpol_columns),
                row: Some(netpol_row),
                ..Default::default()
            },
        ),
        entry::<Role>(
            rbac(&[]),
            Hooks {
                columns: Some(created_columns),
                row: Some(created_row),
                name_rule: NameRule::PathSegment,
                generation_without_spec: true,
                ..Default::default()
            },
        ),
        entry::<ClusterRole>(
            rbac(&[]),
            Hooks {
                columns: Some(created_columns),
                row: Some(created_row),
                name_rule: NameRule::PathSegment,
                generation_without_spec: true,
                ..Default::default()
            },
        ),
        entry::<RoleBinding>(
            rbac(&[]),
            Hooks {
                columns: Some(binding_columns),
                row: Some(binding_row),
                name_rule: NameRule::PathSegment,
                generation_without_spec: true,
                ..Default::default()
            },
        ),
        entry::<ClusterRoleBinding>(
            rbac(&[]),
            Hooks {
                columns: Some(binding_columns),
                row: Some(binding_row),
                name_rule: NameRule::PathSegment,
                generation_without_spec: true,
                ..Default::default()
            },
        ),
        entry::<StorageClass>(
            short(&["sc"]),
            Hooks {
                prepare: storageclass_prepare,
                validate: storageclass_validate,
                columns: Some(storageclass_columns),
                row: Some(storageclass_row),
                generation_without_spec: true,
                ..Default::default()
            },
        ),
        entry::<CSIDriver>(
            short(&[]),
            Hooks {
                prepare: csidriver_prepare,
                columns: Some(csidriver_columns),
                row: Some(csidriver_row),
                ..Default::default()
            },
        ),
        entry::<CSINode>(short(&[]), Hooks::default()),
        entry::<CSIStorageCapacity>(
            short(&[]),
            Hooks {
                generation_without_spec: true,
                ..Default::default()
            },
        ),
        entry::<VolumeAttachment>(
            Names {
                short_names: &[],
                categories: &[],
                subresources: vec![Subresource::status("VolumeAttachment")],
            },
            Hooks::default(),
        ),
        entry::<EventV1>(
            short(&["ev"]),
            Hooks {
                generation_without_spec: true,
                ..Default::default()
            },
        ),
        // Listed and watched at start-up by kube-proxy (ServiceCIDRs), the scheduler and
        // the controller manager (dynamic resource allocation, volume attributes classes).
        entry::<ServiceCIDR>(
            Names {
                short_names: &[],
                categories: &[],
                subresources: vec![Subresource::status("ServiceCIDR")],
            },
            Hooks::default(),
        ),
        entry::<IPAddress>(short(&["ip"]), Hooks::default()),
        entry::<DeviceClass>(short(&[]), Hooks::default()),
        entry::<ResourceClaim>(
            Names {
                short_names: &[],
                categories: &[],
                subresources: vec![Subresource::status("ResourceClaim")],
            },
            Hooks::default(),
        ),
        entry::<ResourceClaimTemplate>(short(&[]), Hooks::default()),
        entry::<ResourceSlice>(short(&[]), Hooks::default()),
        entry::<VolumeAttributesClass>(
            short(&["vac"]),
            Hooks {
                generation_without_spec: true,
                ..Default::default()
            },
        ),
        entry::<PodDisruptionBudget>(
            Names {
                short_names: &["pdb"],
                categories: &[],
                subresources: vec![Subresource::status("PodDisruptionBudget")],
            },
            Hooks {
                columns: Some(pdb_columns),
                row: Some(pdb_row),
                ..Default::default()
            },
        ),
        entry::<PriorityClass>(
            short(&["pc"]),
            Hooks {
                prepare: priorityclass_prepare,
                validate: priorityclass_validate,
                columns: Some(priorityclass_columns),
                row: Some(priorityclass_row),
                generation_without_spec: true,
                ..Default::default()
            },
        ),
        entry::<RuntimeClass>(
            short(&[]),
            Hooks {
                columns: Some(runtimeclass_columns),
                row: Some(runtimeclass_row),
                generation_without_spec: true,
                ..Default::default()
            },
        ),
        entry::<CertificateSigningRequest>(
            Names {
                short_names: &["csr"],
                categories: &[],
                subresources: vec![
                    Subresource::status("CertificateSigningRequest"),
                    Subresource::new(
                        "approval",
                        "CertificateSigningRequest",
                        "",
                        "",
                        &["get", "patch", "update"],
                    ),
                ],
            },
            Hooks {
                columns: Some(csr_columns),
                row: Some(csr_row),
                fields: &[("spec.signerName", "/spec/signerName")],
                ..Default::default()
            },
        ),
        entry::<ValidatingWebhookConfiguration>(
            short(&[]),
            Hooks {
                generation_without_spec: true,
                ..Default::default()
            },
        ),
        entry::<MutatingWebhookConfiguration>(
            short(&[]),
            Hooks {
                generation_without_spec: true,
                ..Default::default()
            },
        ),
        entry::<ValidatingAdmissionPolicy>(
            Names {
                short_names: &[],
                categories: &[],
                subresources: vec![Subresource::status("ValidatingAdmissionPolicy")],
            },
            Hooks::default(),
        ),
        entry::<ValidatingAdmissionPolicyBinding>(short(&[]), Hooks::default()),
        entry::<CustomResourceDefinition>(
            Names {
                short_names: &["crd", "crds"],
                categories: &["api-extensions"],
                subresources: vec![Subresource::status("CustomResourceDefinition")],
            },
            Hooks {
                prepare: crd_prepare,
                validate: crd_validate,
                columns: Some(created_columns),
                row: Some(created_row),
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
    fn hpa_targets_print_like_upstream() {
        let hpa = json!({
            "spec": { "metrics": [
                { "type": "Resource", "resource": { "name": "cpu",
                    "target": { "type": "Utilization", "averageUtilization": 50 } } },
                { "type": "Resource", "resource": { "name": "memory",
                    "target": { "type": "AverageValue", "averageValue": "100Mi" } } },
                { "type": "Pods", "pods": { "metric": { "name": "qps" },
                    "target": { "type": "AverageValue", "averageValue": "1k" } } },
            ] },
            "status": { "currentMetrics": [
                { "type": "Resource", "resource": { "name": "cpu",
                    "current": { "averageUtilization": 12, "averageValue": "12m" } } },
            ] },
        });
        assert_eq!(
            hpa_targets(&hpa),
            "cpu: 12%/50%, memory: <unknown>/100Mi + 1 more..."
        );
        let object = json!({ "spec": { "metrics": [
            { "type": "Object", "object": { "target": { "type": "Value", "value": "10" } } },
            { "type": "External", "external": { "target": { "type": "AverageValue", "averageValue": "2" } } },
        ] } });
        assert_eq!(hpa_targets(&object), "<unknown>/10, <unknown>/2 (avg)");
        assert_eq!(hpa_targets(&json!({ "spec": {} })), "<none>");
        let v1 = json!({ "spec": { "targetCPUUtilizationPercentage": 80 } });
        assert_eq!(hpa_targets(&v1), "cpu: <unknown>/80%");
    }
}
