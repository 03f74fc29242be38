//! The core/v1 kinds other than pods: defaults, validation and printing.

use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, LimitRange, Namespace, NamespaceSpec, NamespaceStatus, Node,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus, PersistentVolumeStatus,
    Pod, PodTemplate, ReplicationController, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use skiff_api::field::{ErrorList, FieldError, Path};
use skiff_api::registry::{Operation, PrintContext, ResourceInfo, ScalePaths, Subresource};
use skiff_api::table::{Cells, Column};

use crate::pod;
use crate::print::{
    age_cell, count, created_at, list, map_pairs, n, name, or_none, s, since, text,
};
use crate::strategy::{Hooks, Names, entry, short};
use crate::validation::{NameRule, immutable, non_negative};

const SERVICE_TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];

fn service_prepare(svc: &mut Service, old: Option<&Service>, op: Operation) {
    let spec = svc.spec.get_or_insert_with(Default::default);
    spec.type_.get_or_insert_with(|| "ClusterIP".into());
    if spec.type_.as_deref() != Some("ExternalName") {
        spec.session_affinity.get_or_insert_with(|| "None".into());
        spec.internal_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
    }
    if matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer")) {
        spec.external_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
    }
    for port in spec.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".into());
        if port.target_port.is_none() {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
    if op == Operation::Create {
        svc.status = Some(Default::default());
        if let Some(status) = svc.status.as_mut() {
            status.load_balancer = Some(Default::default());
        }
    }
    if op == Operation::Update
        && let (Some(old_spec), Some(spec)) = (old.and_then(|o| o.spec.as_ref()), svc.spec.as_mut())
    {
        // Clients that omit allocated fields keep them (upstream's service REST update).
        if spec.cluster_ip.as_deref().unwrap_or("").is_empty() {
            spec.cluster_ip = old_spec.cluster_ip.clone();
            spec.cluster_ips = old_spec.cluster_ips.clone();
        }
    }
}

fn service_validate(svc: &Service, old: Option<&Service>, _op: Operation) -> ErrorList {
    let mut errors = Vec::new();
    let path = Path::new("spec");
    let spec = svc.spec.clone().unwrap_or_default();
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !SERVICE_TYPES.contains(&type_) {
        errors.push(FieldError::not_supported(
            &path.child("type"),
            type_,
            SERVICE_TYPES,
        ));
    }
    let ports = spec.ports.clone().unwrap_or_default();
    if ports.is_empty() && type_ != "ExternalName" && spec.cluster_ip.as_deref() != Some("None") {
        errors.push(FieldError::required(&path.child("ports"), ""));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.child("ports").index(i);
        if ports.len() > 1 && port.name.as_deref().unwrap_or("").is_empty() {
            errors.push(FieldError::required(&p.child("name"), ""));
        }
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty())
            && !seen.insert(name.to_owned())
        {
            errors.push(FieldError::duplicate(&p.child("name"), name));
        }
        if !(1..=65535).contains(&port.port) {
            errors.push(FieldError::invalid(
                &p.child("port"),
                port.port as i64,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(node_port) = port.node_port
            && type_ == "ClusterIP"
            && node_port != 0
        {
            errors.push(FieldError::forbidden(
                &p.child("nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            ));
        }
    }
    if type_ == "ExternalName" && spec.external_name.as_deref().unwrap_or("").is_empty() {
        errors.push(FieldError::required(&path.child("externalName"), ""));
    }
    if let Some(old_spec) = old.and_then(|o| o.spec.as_ref())
        && let (Some(new_ip), Some(old_ip)) =
            (spec.cluster_ip.as_deref(), old_spec.cluster_ip.as_deref())
        && !old_ip.is_empty()
        && type_ != "ExternalName"
        && new_ip != old_ip
    {
        errors.push(FieldError::invalid(
            &path.child("clusterIPs").index(0),
            new_ip,
            "may not change once set",
        ));
    }
    errors
}

fn service_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Type", "string", "The type of the service."),
        Column::new("Cluster-IP", "string", "The cluster IP of the service."),
        Column::new("External-IP", "string", "The external IPs of the service."),
        Column::new("Port(s)", "string", "The ports of the service."),
        Column::age(),
        Column::new("Selector", "string", "The label selector of the service.").wide(),
    ]
}

fn service_row(svc: &Value, ctx: &PrintContext) -> Cells {
    let type_ = s(svc, "/spec/type");
    let external_ips: Vec<&str> = list(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external = match type_ {
        "ExternalName" => s(svc, "/spec/externalName").to_owned(),
        "LoadBalancer" => {
            let mut ips: Vec<String> = list(svc, "/status/loadBalancer/ingress")
                .iter()
                .filter_map(|i| {
                    i["ip"]
                        .as_str()
                        .or(i["hostname"].as_str())
                        .map(str::to_owned)
                })
                .collect();
            ips.extend(external_ips.iter().map(|s| (*s).to_owned()));
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        _ => external_ips.join(","),
    };
    let ports: Vec<String> = list(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let port = p["port"].as_i64().unwrap_or(0);
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64().filter(|n| *n != 0) {
                Some(node) => format!("{port}:{node}/{protocol}"),
                None => format!("{port}/{protocol}"),
            }
        })
        .collect();
    vec![
        name(svc),
        text(type_),
        or_none(s(svc, "/spec/clusterIP")),
        or_none(&external),
        or_none(&ports.join(",")),
        age_cell(svc, ctx),
        map_pairs(svc, "/spec/selector"),
    ]
}

fn namespace_prepare(ns: &mut Namespace, old: Option<&Namespace>, op: Operation) {
    match op {
        Operation::Create => {
            ns.spec = Some(NamespaceSpec {
                finalizers: Some(vec!["kubernetes".into()]),
            });
            ns.status = Some(NamespaceStatus {
                phase: Some("Active".into()),
                ..Default::default()
            });
        }
        // The spec (finalizers) changes only through the finalize subresource.
        Operation::Update => ns.spec = old.and_then(|o| o.spec.clone()),
        Operation::UpdateStatus | Operation::UpdateEphemeralContainers => {}
    }
    let labels = ns.metadata.labels.get_or_insert_with(Default::default);
    if let Some(name) = ns.metadata.name.clone() {
        labels.insert("kubernetes.io/metadata.name".into(), name);
    }
}

fn phase_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Status", "string", "The status of the namespace."),
        Column::age(),
    ]
}

fn namespace_row(ns: &Value, ctx: &PrintContext) -> Cells {
    vec![name(ns), text(s(ns, "/status/phase")), age_cell(ns, ctx)]
}

fn node_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Status", "string", "The status of the node."),
        Column::new("Roles", "string", "The roles of the node."),
        Column::age(),
        Column::new("Version", "string", "Kubelet Version reported by the node."),
        Column::new(
            "Internal-IP",
            "string",
            "List of internal IPs for the node.",
        )
        .wide(),
        Column::new(
            "External-IP",
            "string",
            "List of external IPs for the node.",
        )
        .wide(),
        Column::new(
            "OS-Image",
            "string",
            "OS image reported by the node from /etc/os-release.",
        )
        .wide(),
        Column::new(
            "Kernel-Version",
            "string",
            "Kernel version reported by the node.",
        )
        .wide(),
        Column::new(
            "Container-Runtime",
            "string",
            "Container runtime reported by the node.",
        )
        .wide(),
    ]
}

/// kubectl's node STATUS: Ready/NotReady/Unknown plus SchedulingDisabled.
pub fn node_status(node: &Value) -> String {
    let ready = list(node, "/status/conditions")
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| match c["status"].as_str() {
            Some("True") => "Ready",
            Some("False") => "NotReady",
            _ => "Unknown",
        })
        .unwrap_or("Unknown");
    let mut status = ready.to_owned();
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// kubectl's node ROLES.
pub fn node_roles(node: &Value) -> String {
    let mut roles: Vec<String> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| {
                    if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                        Some(role.to_owned())
                    } else if k == "kubernetes.io/role" {
                        v.as_str().map(str::to_owned)
                    } else {
                        None
                    }
                })
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn node_row(node: &Value, ctx: &PrintContext) -> Cells {
    let address = |kind: &str| -> String {
        list(node, "/status/addresses")
            .iter()
            .find(|a| a["type"] == kind)
            .and_then(|a| a["address"].as_str())
            .unwrap_or("")
            .to_owned()
    };
    vec![
        name(node),
        text(node_status(node)),
        text(node_roles(node)),
        age_cell(node, ctx),
        text(s(node, "/status/nodeInfo/kubeletVersion")),
        or_none(&address("InternalIP")),
        or_none(&address("ExternalIP")),
        or_none(s(node, "/status/nodeInfo/osImage"))
            .as_str()
            .map(|v| {
                if v == "<none>" {
                    text("<unknown>")
                } else {
                    text(v)
                }
            })
            .unwrap_or_default(),
        or_none(s(node, "/status/nodeInfo/kernelVersion"))
            .as_str()
            .map(|v| {
                if v == "<none>" {
                    text("<unknown>")
                } else {
                    text(v)
                }
            })
            .unwrap_or_default(),
        or_none(s(node, "/status/nodeInfo/containerRuntimeVersion"))
            .as_str()
            .map(|v| {
                if v == "<none>" {
                    text("<unknown>")
                } else {
                    text(v)
                }
            })
            .unwrap_or_default(),
    ]
}

fn data_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Data", "integer", "Number of data entries."),
        Column::age(),
    ]
}

fn configmap_row(cm: &Value, ctx: &PrintContext) -> Cells {
    let entries = count(cm, "/data") + count(cm, "/binaryData");
    vec![name(cm), Value::from(entries), age_cell(cm, ctx)]
}

fn immutable_data<T: PartialEq + serde::Serialize>(
    new_immutable: Option<bool>,
    old_immutable: Option<bool>,
    new_data: &T,
    old_data: &T,
    errors: &mut ErrorList,
) {
    if old_immutable == Some(true) {
        if new_immutable != Some(true) {
            errors.push(FieldError::forbidden(
                &Path::new("immutable"),
                "field is immutable when `immutable` is set",
            ));
        }
        if new_data != old_data {
            errors.push(FieldError::forbidden(
                &Path::new("data"),
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

fn configmap_validate(cm: &ConfigMap, old: Option<&ConfigMap>, _op: Operation) -> ErrorList {
    let mut errors = Vec::new();
    for key in cm
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .chain(cm.binary_data.iter().flatten().map(|(k, _)| k))
    {
        if !valid_config_key(key) {
            errors.push(FieldError::invalid(&Path::new("data"), key.as_str(), "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
        }
    }
    if let Some(old) = old {
        immutable_data(
            cm.immutable,
            old.immutable,
            &(&cm.data, &cm.binary_data),
            &(&old.data, &old.binary_data),
            &mut errors,
        );
    }
    errors
}

fn valid_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && !key.starts_with("..")
        && key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn secret_prepare(secret: &mut Secret, _old: Option<&Secret>, _op: Operation) {
    secret.type_.get_or_insert_with(|| "Opaque".into());
    // stringData is write-only: merged into data, then dropped (upstream conversion).
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        for (k, v) in string_data {
            data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
        }
    }
}

fn secret_validate(secret: &Secret, old: Option<&Secret>, _op: Operation) -> ErrorList {
    let mut errors = Vec::new();
    for key in secret.data.iter().flatten().map(|(k, _)| k) {
        if !valid_config_key(key) {
            errors.push(FieldError::invalid(&Path::new("data").key(key), key.as_str(), "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
        }
    }
    let data = secret.data.clone().unwrap_or_default();
    match secret.type_.as_deref() {
        Some("kubernetes.io/dockerconfigjson") if !data.contains_key(".dockerconfigjson") => {
            errors.push(FieldError::required(
                &Path::new("data").key(".dockerconfigjson"),
                "",
            ));
        }
        Some("kubernetes.io/tls") => {
            for key in ["tls.crt", "tls.key"] {
                if !data.contains_key(key) {
                    errors.push(FieldError::required(&Path::new("data").key(key), ""));
                }
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        immutable(&secret.type_, &old.type_, &Path::new("type"), &mut errors);
        immutable_data(
            secret.immutable,
            old.immutable,
            &secret.data,
            &old.data,
            &mut errors,
        );
    }
    errors
}

fn secret_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Type", "string", "The type of the secret."),
        Column::new("Data", "integer", "The number of data entries."),
        Column::age(),
    ]
}

fn secret_row(secret: &Value, ctx: &PrintContext) -> Cells {
    vec![
        name(secret),
        text(s(secret, "/type")),
        Value::from(count(secret, "/data")),
        age_cell(secret, ctx),
    ]
}

fn serviceaccount_row(sa: &Value, ctx: &PrintContext) -> Cells {
    vec![
        name(sa),
        Value::from(count(sa, "/secrets")),
        age_cell(sa, ctx),
    ]
}

fn serviceaccount_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Secrets", "integer", "The number of secrets."),
        Column::age(),
    ]
}

fn endpoints_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Endpoints", "string", "The endpoints."),
        Column::age(),
    ]
}

fn endpoints_row(ep: &Value, ctx: &PrintContext) -> Cells {
    let mut all = Vec::new();
    for subset in list(ep, "/subsets") {
        let ports: Vec<i64> = subset["ports"]
            .as_array()
            .map(|p| p.iter().filter_map(|p| p["port"].as_i64()).collect())
            .unwrap_or_default();
        for addr in subset["addresses"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let ip = addr["ip"].as_str().unwrap_or("");
            if ports.is_empty() {
                all.push(ip.to_owned());
            }
            for port in &ports {
                all.push(format!("{ip}:{port}"));
            }
        }
    }
    let shown = if all.len() > 3 {
        format!("{} + {} more...", all[..3].join(","), all.len() - 3)
    } else {
        all.join(",")
    };
    vec![name(ep), or_none(&shown), age_cell(ep, ctx)]
}

fn event_columns() -> Vec<Column> {
    vec![
        Column::new("Last Seen", "string", "Time since the event was last seen."),
        Column::new("Type", "string", "Normal or Warning."),
        Column::new("Reason", "string", "Why the event happened."),
        Column::new("Object", "string", "The object the event is about."),
        Column::new("Message", "string", "What happened."),
        Column::new("Subobject", "string", "The part of the object.").wide(),
        Column::new("Source", "string", "Who reported it.").wide(),
        Column::new("First Seen", "string", "Time since first seen.").wide(),
        Column::new("Count", "string", "How often it happened.").wide(),
        Column::name().wide(),
    ]
}

fn event_row(ev: &Value, ctx: &PrintContext) -> Cells {
    let last = [
        s(ev, "/lastTimestamp"),
        s(ev, "/eventTime"),
        s(ev, "/firstTimestamp"),
        s(ev, "/metadata/creationTimestamp"),
    ]
    .into_iter()
    .find(|t| !t.is_empty())
    .unwrap_or("");
    let first = [
        s(ev, "/firstTimestamp"),
        s(ev, "/eventTime"),
        s(ev, "/metadata/creationTimestamp"),
    ]
    .into_iter()
    .find(|t| !t.is_empty())
    .unwrap_or("");
    let object = format!(
        "{}/{}",
        s(ev, "/involvedObject/kind").to_lowercase(),
        s(ev, "/involvedObject/name")
    );
    let source = if s(ev, "/source/component").is_empty() {
        s(ev, "/reportingComponent")
    } else {
        s(ev, "/source/component")
    };
    vec![
        text(since(last, ctx)),
        text(s(ev, "/type")),
        text(s(ev, "/reason")),
        text(object),
        text(s(ev, "/message")),
        text(s(ev, "/involvedObject/fieldPath")),
        text(source),
        text(since(first, ctx)),
        text(n(ev, "/count").max(1).to_string()),
        name(ev),
    ]
}

fn event_validate(ev: &Event, _old: Option<&Event>, _op: Operation) -> ErrorList {
    let mut errors = Vec::new();
    if ev.involved_object.name.as_deref().unwrap_or("").is_empty()
        && ev.involved_object.kind.as_deref().unwrap_or("").is_empty()
    {
        errors.push(FieldError::required(&Path::new("involvedObject"), ""));
    }
    errors
}

fn access_modes(obj: &Value, pointer: &str) -> String {
    list(obj, pointer)
        .iter()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn pvc_prepare(
    pvc: &mut PersistentVolumeClaim,
    _old: Option<&PersistentVolumeClaim>,
    op: Operation,
) {
    let spec = pvc.spec.get_or_insert_with(Default::default);
    spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
    if op == Operation::Create {
        pvc.status = Some(PersistentVolumeClaimStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
    }
}

fn pvc_validate(
    pvc: &PersistentVolumeClaim,
    old: Option<&PersistentVolumeClaim>,
    op: Operation,
) -> ErrorList {
    let mut errors = Vec::new();
    let spec = pvc.spec.clone().unwrap_or_default();
    if spec.access_modes.as_ref().is_none_or(Vec::is_empty) {
        errors.push(FieldError::required(
            &Path::new("spec").child("accessModes"),
            "at least 1 access mode is required",
        ));
    }
    if op == Operation::Update
        && let Some(old_spec) = old.and_then(|o| o.spec.clone())
    {
        let mut comparable = spec.clone();
        comparable.resources = old_spec.resources.clone();
        // Binding sets volumeName once (upstream allows exactly that change).
        if old_spec.volume_name.as_deref().unwrap_or("").is_empty() {
            comparable.volume_name = old_spec.volume_name.clone();
        }
        if comparable != old_spec {
            errors.push(FieldError::forbidden(&Path::new("spec"), "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"));
        }
    }
    errors
}

fn pvc_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Status", "string", "The phase of the claim."),
        Column::new("Volume", "string", "The bound volume."),
        Column::new("Capacity", "string", "The capacity of the bound volume."),
        Column::new("Access Modes", "string", "The access modes."),
        Column::new("StorageClass", "string", "The storage class."),
        Column::new(
            "VolumeAttributesClass",
            "string",
            "The volume attributes class.",
        ),
        Column::age(),
        Column::new("VolumeMode", "string", "Filesystem or Block.").wide(),
    ]
}

fn pvc_row(pvc: &Value, ctx: &PrintContext) -> Cells {
    vec![
        name(pvc),
        text(s(pvc, "/status/phase")),
        text(s(pvc, "/spec/volumeName")),
        text(s(pvc, "/status/capacity/storage")),
        text(access_modes(pvc, "/status/accessModes")),
        text(s(pvc, "/spec/storageClassName")),
        or_unset(s(pvc, "/spec/volumeAttributesClassName")),
        age_cell(pvc, ctx),
        text(s(pvc, "/spec/volumeMode")),
    ]
}

fn or_unset(v: &str) -> Value {
    text(if v.is_empty() { "<unset>" } else { v })
}

fn pv_prepare(pv: &mut PersistentVolume, _old: Option<&PersistentVolume>, op: Operation) {
    let spec = pv.spec.get_or_insert_with(Default::default);
    spec.persistent_volume_reclaim_policy
        .get_or_insert_with(|| "Retain".into());
    spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
    if op == Operation::Create {
        pv.status = Some(PersistentVolumeStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
    }
}

fn pv_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Capacity", "string", "The capacity."),
        Column::new("Access Modes", "string", "The access modes."),
        Column::new("Reclaim Policy", "string", "What happens on release."),
        Column::new("Status", "string", "The phase."),
        Column::new("Claim", "string", "The bound claim."),
        Column::new("StorageClass", "string", "The storage class."),
        Column::new(
            "VolumeAttributesClass",
            "string",
            "The volume attributes class.",
        ),
        Column::new("Reason", "string", "Why it is in its phase."),
        Column::age(),
        Column::new("VolumeMode", "string", "Filesystem or Block.").wide(),
    ]
}

fn pv_row(pv: &Value, ctx: &PrintContext) -> Cells {
    let claim = if s(pv, "/spec/claimRef/name").is_empty() {
        String::new()
    } else {
        format!(
            "{}/{}",
            s(pv, "/spec/claimRef/namespace"),
            s(pv, "/spec/claimRef/name")
        )
    };
    vec![
        name(pv),
        text(s(pv, "/spec/capacity/storage")),
        text(access_modes(pv, "/spec/accessModes")),
        text(s(pv, "/spec/persistentVolumeReclaimPolicy")),
        text(s(pv, "/status/phase")),
        text(claim),
        text(s(pv, "/spec/storageClassName")),
        or_unset(s(pv, "/spec/volumeAttributesClassName")),
        text(s(pv, "/status/reason")),
        age_cell(pv, ctx),
        text(s(pv, "/spec/volumeMode")),
    ]
}

fn created_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Created At", "date", "When the object was created."),
    ]
}

/// NAME and CREATED AT.
pub fn created_row(obj: &Value, _ctx: &PrintContext) -> Cells {
    vec![name(obj), created_at(obj)]
}

fn quota_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::age(),
        Column::new("Request", "string", "Used and hard requests."),
        Column::new("Limit", "string", "Used and hard limits."),
    ]
}

fn quota_row(q: &Value, ctx: &PrintContext) -> Cells {
    let render = |limits: bool| -> String {
        let hard = q
            .pointer("/status/hard")
            .or(q.pointer("/spec/hard"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut parts = Vec::new();
        for (k, v) in &hard {
            if k.starts_with("limits.") != limits {
                continue;
            }
            let used = q
                .pointer(&format!("/status/used/{}", k.replace('/', "~1")))
                .and_then(Value::as_str)
                .unwrap_or("0");
            parts.push(format!("{k}: {used}/{}", v.as_str().unwrap_or("")));
        }
        parts.join(", ")
    };
    vec![
        name(q),
        age_cell(q, ctx),
        text(render(false)),
        text(render(true)),
    ]
}

fn rc_prepare(rc: &mut ReplicationController, _old: Option<&ReplicationController>, op: Operation) {
    let spec = rc.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    spec.min_ready_seconds.get_or_insert(0);
    if let Some(template) = spec.template.as_mut() {
        pod::default_template(template);
        if spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
            spec.selector = template.metadata.as_ref().and_then(|m| m.labels.clone());
        }
        if rc.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
            rc.metadata.labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
        }
    }
    if op == Operation::Create {
        rc.status = Some(Default::default());
        if let Some(status) = rc.status.as_mut() {
            status.replicas = 0;
        }
    }
}

fn rc_validate(
    rc: &ReplicationController,
    _old: Option<&ReplicationController>,
    _op: Operation,
) -> ErrorList {
    let mut errors = Vec::new();
    let spec = rc.spec.clone().unwrap_or_default();
    non_negative(
        spec.replicas.map(i64::from),
        &Path::new("spec").child("replicas"),
        &mut errors,
    );
    match spec.template.as_ref().and_then(|t| t.spec.as_ref()) {
        Some(pod_spec) => pod::validate_pod_spec(
            pod_spec,
            &Path::new("spec").child("template").child("spec"),
            &mut errors,
        ),
        None => errors.push(FieldError::required(
            &Path::new("spec").child("template"),
            "",
        )),
    }
    errors
}

fn replica_columns() -> Vec<Column> {
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

fn rc_row(rc: &Value, ctx: &PrintContext) -> Cells {
    let (containers, images) = crate::print::containers_and_images(rc, "/spec/template/spec");
    vec![
        name(rc),
        Value::from(n(rc, "/spec/replicas")),
        Value::from(n(rc, "/status/replicas")),
        Value::from(n(rc, "/status/readyReplicas")),
        age_cell(rc, ctx),
        containers,
        images,
        map_pairs(rc, "/spec/selector"),
    ]
}

/// The core/v1 registry entries.
pub fn entries() -> Vec<ResourceInfo> {
    vec![
        entry::<Namespace>(
            Names {
                short_names: &["ns"],
                categories: &[],
                subresources: vec![
                    Subresource::status("Namespace"),
                    Subresource::new("finalize", "Namespace", "", "", &["update"]),
                ],
            },
            Hooks {
                prepare: namespace_prepare,
                columns: Some(phase_columns),
                row: Some(namespace_row),
                fields: &[("status.phase", "/status/phase")],
                name_rule: NameRule::Label,
                ..Default::default()
            },
        ),
        entry::<Pod>(
            Names {
                short_names: &["po"],
                categories: &["all"],
                subresources: vec![
                    Subresource::status("Pod"),
                    Subresource::new("binding", "Binding", "", "", &["create"]),
                    Subresource::new("eviction", "Eviction", "policy", "v1", &["create"]),
                    Subresource::new(
                        "ephemeralcontainers",
                        "Pod",
                        "",
                        "",
                        &["get", "patch", "update"],
                    ),
                    Subresource::new("resize", "Pod", "", "", &["get", "patch", "update"]),
                    Subresource::new("log", "Pod", "", "", &["get"]),
                    Subresource::new("exec", "PodExecOptions", "", "", &["create", "get"]),
                    Subresource::new("attach", "PodAttachOptions", "", "", &["create", "get"]),
                    Subresource::new(
                        "portforward",
                        "PodPortForwardOptions",
                        "",
                        "",
                        &["create", "get"],
                    ),
                    Subresource::new(
                        "proxy",
                        "PodProxyOptions",
                        "",
                        "",
                        &["create", "delete", "get", "patch", "update"],
                    ),
                ],
            },
            Hooks {
                prepare: pod::prepare,
                validate: pod::validate,
                columns: Some(pod::columns),
                row: Some(pod::row),
                fields: pod::FIELDS,
                ..Default::default()
            },
        ),
        entry::<Node>(
            Names {
                short_names: &["no"],
                categories: &[],
                subresources: vec![
                    Subresource::status("Node"),
                    Subresource::new(
                        "proxy",
                        "NodeProxyOptions",
                        "",
                        "",
                        &["create", "delete", "get", "patch", "update"],
                    ),
                ],
            },
            Hooks {
                columns: Some(node_columns),
                row: Some(node_row),
                fields: &[("spec.unschedulable", "/spec/unschedulable")],
                ..Default::default()
            },
        ),
        entry::<Service>(
            Names {
                short_names: &["svc"],
                categories: &["all"],
                subresources: vec![
                    Subresource::status("Service"),
                    Subresource::new(
                        "proxy",
                        "ServiceProxyOptions",
                        "",
                        "",
                        &["create", "delete", "get", "patch", "update"],
                    ),
                ],
            },
            Hooks {
                prepare: service_prepare,
                validate: service_validate,
                columns: Some(service_columns),
                row: Some(service_row),
                fields: &[
                    ("spec.clusterIP", "/spec/clusterIP"),
                    ("spec.type", "/spec/type"),
                ],
                name_rule: NameRule::Dns1035,
                ..Default::default()
            },
        ),
        entry::<Endpoints>(
            short(&["ep"]),
            Hooks {
                columns: Some(endpoints_columns),
                row: Some(endpoints_row),
                ..Default::default()
            },
        ),
        entry::<ConfigMap>(
            short(&["cm"]),
            Hooks {
                validate: configmap_validate,
                columns: Some(data_columns),
                row: Some(configmap_row),
                generation_without_spec: true,
                ..Default::default()
            },
        ),
        entry::<Secret>(
            short(&[]),
            Hooks {
                prepare: secret_prepare,
                validate: secret_validate,
                columns: Some(secret_columns),
                row: Some(secret_row),
                fields: &[("type", "/type")],
                ..Default::default()
            },
        ),
        entry::<ServiceAccount>(
            Names {
                short_names: &["sa"],
                categories: &[],
                subresources: vec![Subresource::new(
                    "token",
                    "TokenRequest",
                    "authentication.k8s.io",
                    "v1",
                    &["create"],
                )],
            },
            Hooks {
                columns: Some(serviceaccount_columns),
                row: Some(serviceaccount_row),
                ..Default::default()
            },
        ),
        entry::<Event>(
            short(&["ev"]),
            Hooks {
                validate: event_validate,
                columns: Some(event_columns),
                row: Some(event_row),
                fields: EVENT_FIELDS,
                ..Default::default()
            },
        ),
        entry::<PersistentVolume>(
            Names {
                short_names: &["pv"],
                categories: &[],
                subresources: vec![Subresource::status("PersistentVolume")],
            },
            Hooks {
                prepare: pv_prepare,
                columns: Some(pv_columns),
                row: Some(pv_row),
                ..Default::default()
            },
        ),
        entry::<PersistentVolumeClaim>(
            Names {
                short_names: &["pvc"],
                categories: &[],
                subresources: vec![Subresource::status("PersistentVolumeClaim")],
            },
            Hooks {
                prepare: pvc_prepare,
                validate: pvc_validate,
                columns: Some(pvc_columns),
                row: Some(pvc_row),
                ..Default::default()
            },
        ),
        entry::<ResourceQuota>(
            Names {
                short_names: &["quota"],
                categories: &[],
                subresources: vec![Subresource::status("ResourceQuota")],
            },
            Hooks {
                columns: Some(quota_columns),
                row: Some(quota_row),
                ..Default::default()
            },
        ),
        entry::<LimitRange>(
            short(&["limits"]),
            Hooks {
                columns: Some(created_columns),
                row: Some(created_row),
                ..Default::default()
            },
        ),
        entry::<PodTemplate>(
            short(&[]),
            Hooks {
                prepare: |t, _, _| {
                    if let Some(template) = t.template.as_mut() {
                        pod::default_template(template);
                    }
                },
                columns: Some(pod::template_columns),
                row: Some(pod::template_row),
                generation_without_spec: true,
                ..Default::default()
            },
        ),
        entry::<ReplicationController>(
            Names {
                short_names: &["rc"],
                categories: &["all"],
                subresources: vec![
                    Subresource::status("ReplicationController"),
                    Subresource::scale(),
                ],
            },
            Hooks {
                prepare: rc_prepare,
                validate: rc_validate,
                columns: Some(replica_columns),
                row: Some(rc_row),
                fields: &[("status.replicas", "/status/replicas")],
                scale: Some(|| ScalePaths {
                    selector_is_object: false,
                    ..ScalePaths::default()
                }),
                ..Default::default()
            },
        ),
    ]
}

/// Field selectors of core/v1 events.
pub const EVENT_FIELDS: &[(&str, &str)] = &[
    ("involvedObject.kind", "/involvedObject/kind"),
    ("involvedObject.namespace", "/involvedObject/namespace"),
    ("involvedObject.name", "/involvedObject/name"),
    ("involvedObject.uid", "/involvedObject/uid"),
    ("involvedObject.apiVersion", "/involvedObject/apiVersion"),
    (
        "involvedObject.resourceVersion",
        "/involvedObject/resourceVersion",
    ),
    ("involvedObject.fieldPath", "/involvedObject/fieldPath"),
    ("reason", "/reason"),
    ("reportingComponent", "/reportingComponent"),
    ("source", "/source/component"),
    ("type", "/type"),
];
