//! A container's environment, as upstream builds it: Service variables (the `kubernetes`
//! Service always, every Service of the namespace when `enableServiceLinks`), then `envFrom`
//! sources in order, then `env` entries with `$(VAR)` expansion and `valueFrom`
//! (configMapKeyRef, secretKeyRef, fieldRef, resourceFieldRef). A missing required source is a
//! `CreateContainerConfigError` with upstream's message.
//!
//! Pure: the referenced ConfigMaps, Secrets and Services are passed in.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use skiff_api::quantity::Quantity;

/// The API objects a pod's environment may read.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// ConfigMaps of the pod's namespace, by name (absent ones are missing).
    pub config_maps: BTreeMap<String, ConfigMap>,
    /// Secrets of the pod's namespace, by name.
    pub secrets: BTreeMap<String, Secret>,
    /// Services of the pod's namespace, plus `default/kubernetes`.
    pub services: Vec<Service>,
    /// The node's allocatable cpu and memory, for resourceFieldRef of unset limits.
    pub node_allocatable: BTreeMap<String, Quantity>,
    /// The node's IP (status.hostIP).
    pub host_ip: String,
    /// The pod's IP, once the sandbox has one.
    pub pod_ip: String,
    /// The node's name (spec.nodeName).
    pub node_name: String,
}

/// Upstream's `expansion.Expand`: `$(VAR)` is replaced when VAR is defined, `$$` escapes a
/// `$`, anything else stays as written.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(close) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + close];
                        match vars.get(name) {
                            Some(v) => out.push_str(v),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        i += close + 3;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = input[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn service_env(services: &[Service], namespace: &str, links: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut services: Vec<&Service> = services
        .iter()
        .filter(|s| {
            let ns = s.metadata.namespace.as_deref().unwrap_or("");
            let name = s.metadata.name.as_deref().unwrap_or("");
            (links && ns == namespace) || (ns == "default" && name == "kubernetes")
        })
        .collect();
    services.sort_by_key(|s| s.metadata.name.clone());
    services.dedup_by_key(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()));
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let ip = spec.cluster_ip.as_deref().unwrap_or("");
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let prefix = svc
            .metadata
            .name
            .as_deref()
            .unwrap_or("")
            .to_uppercase()
            .replace('-', "_");
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_owned()));
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!(
                        "{prefix}_SERVICE_PORT_{}",
                        name.to_uppercase().replace('-', "_")
                    ),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        out.push((
            format!("{prefix}_PORT"),
            format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port),
        ));
        for p in &ports {
            let base = format!("{prefix}_PORT_{}_{}", p.port, proto(p).to_uppercase());
            out.push((
                base.clone(),
                format!("{}://{ip}:{}", proto(p).to_lowercase(), p.port),
            ));
            out.push((format!("{base}_PROTO"), proto(p).to_lowercase()));
            out.push((format!("{base}_PORT"), p.port.to_string()));
            out.push((format!("{base}_ADDR"), ip.to_owned()));
        }
    }
    out
}

/// A pod field for `fieldRef` and the downward API.
pub fn pod_field(pod: &Pod, path: &str, sources: &Sources) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_value = |m: &Option<BTreeMap<String, String>>, key: &str| {
        m.as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default()
    };
    let format_map = |m: &Option<BTreeMap<String, String>>| {
        m.as_ref()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        format!(
                            "{k}=\"{}\"",
                            v.replace('\\', "\\\\")
                                .replace('"', "\\\"")
                                .replace('\n', "\\n")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(&meta.labels),
        "metadata.annotations" => format_map(&meta.annotations),
        "spec.nodeName" => sources.node_name.clone(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => sources.host_ip.clone(),
        "status.podIP" | "status.podIPs" => sources.pod_ip.clone(),
        p if p.starts_with("metadata.labels['") && p.ends_with("']") => {
            map_value(&meta.labels, &p["metadata.labels['".len()..p.len() - 2])
        }
        p if p.starts_with("metadata.annotations['") && p.ends_with("']") => map_value(
            &meta.annotations,
            &p["metadata.annotations['".len()..p.len() - 2],
        ),
        other => return Err(format!("unsupported fieldPath: {other}")),
    })
}

/// A container resource for `resourceFieldRef` (limits default to the node's allocatable).
pub fn resource_field(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
    sources: &Sources,
) -> Result<String, String> {
    let res = container.resources.clone().unwrap_or_default();
    let (which, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource: {resource}"))?;
    let map = match which {
        "limits" => res.limits.unwrap_or_default(),
        "requests" => res.requests.unwrap_or_default(),
        _ => return Err(format!("unsupported container resource: {resource}")),
    };
    let value = match map.get(name) {
        Some(q) => Quantity::parse(&q.0).map_err(|e| e.to_string())?,
        None if which == "limits" => sources
            .node_allocatable
            .get(name)
            .copied()
            .unwrap_or(Quantity::ZERO),
        None => Quantity::ZERO,
    };
    let divisor = match divisor {
        Some(d) if !d.is_empty() => Quantity::parse(d).map_err(|e| e.to_string())?,
        _ => Quantity::from_units(1),
    };
    if divisor.is_zero() {
        return Err("divisor must not be zero".into());
    }
    // Upstream rounds the quotient up.
    let q = value.0 / divisor.0 + i128::from(value.0 % divisor.0 != 0);
    Ok(q.to_string())
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(String::from_utf8_lossy(&v.0).into_owned());
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
}

/// The environment of `container`, in upstream's order (later entries override earlier ones).
pub fn environment(
    pod: &Pod,
    container: &Container,
    sources: &Sources,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut env: Vec<(String, String)> = service_env(&sources.services, namespace, links);
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(cm_ref) = &from.config_map_ref {
            let name = cm_ref.name.as_str();
            match sources.config_maps.get(name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        env.push((format!("{prefix}{k}"), v.clone()));
                    }
                }
                None if cm_ref.optional == Some(true) => {}
                None => return Err(format!("configmap \"{name}\" not found")),
            }
        }
        if let Some(s_ref) = &from.secret_ref {
            let name = s_ref.name.as_str();
            match sources.secrets.get(name) {
                Some(secret) => {
                    for (k, v) in secret.data.iter().flatten() {
                        env.push((
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        ));
                    }
                }
                None if s_ref.optional == Some(true) => {}
                None => return Err(format!("secret \"{name}\" not found")),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let defined: BTreeMap<String, String> = env.iter().cloned().collect();
        let value = if let Some(v) = &var.value {
            expand(v, &defined)
        } else if let Some(from) = &var.value_from {
            if let Some(r) = &from.config_map_key_ref {
                let name = r.name.as_str();
                match sources.config_maps.get(name) {
                    Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {namespace}/{name}",
                                r.key
                            ));
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("configmap \"{name}\" not found")),
                }
            } else if let Some(r) = &from.secret_key_ref {
                let name = r.name.as_str();
                match sources.secrets.get(name) {
                    Some(s) => match secret_value(s, &r.key) {
                        Some(v) => v,
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {namespace}/{name}",
                                r.key
                            ));
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("secret \"{name}\" not found")),
                }
            } else if let Some(r) = &from.field_ref {
                pod_field(pod, &r.field_path, sources)?
            } else if let Some(r) = &from.resource_field_ref {
                let target = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
                    Some(name) => pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.containers.iter().find(|c| c.name == name))
                        .unwrap_or(container),
                    None => container,
                };
                resource_field(
                    target,
                    &r.resource,
                    r.divisor.as_ref().map(|d| d.0.as_str()),
                    sources,
                )?
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.push((var.name.clone(), value));
    }
    // Later definitions win, keeping first-seen order.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in env {
        match seen.get(&k) {
            Some(&i) => out[i].1 = v,
            None => {
                seen.insert(k.clone(), out.len());
                out.push((k, v));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn expansion_follows_upstream_rules() {
        let v = vars(&[("A", "x"), ("B", "y")]);
        assert_eq!(expand("$(A)-$(B)", &v), "x-y");
        assert_eq!(expand("$(MISSING)", &v), "$(MISSING)");
        assert_eq!(expand("$$(A)", &v), "$(A)");
        assert_eq!(expand("cost: $5", &v), "cost: $5");
        assert_eq!(expand("$(A", &v), "$(A");
        assert_eq!(expand("é$(A)", &v), "éx");
    }

    fn sources() -> Sources {
        let cm: ConfigMap = serde_json::from_value(
            json!({ "metadata": { "name": "cfg" }, "data": { "color": "blue", "size": "L" } }),
        )
        .unwrap();
        let secret: Secret = serde_json::from_value(
            json!({ "metadata": { "name": "creds" }, "data": { "password": "czNjcjN0" } }),
        )
        .unwrap();
        let kubernetes: Service = serde_json::from_value(json!({
            "metadata": { "name": "kubernetes", "namespace": "default" },
            "spec": { "clusterIP": "10.43.0.1", "ports": [{ "name": "https", "port": 443, "protocol": "TCP" }] }
        })).unwrap();
        Sources {
            config_maps: [("cfg".to_owned(), cm)].into(),
            secrets: [("creds".to_owned(), secret)].into(),
            services: vec![kubernetes],
            node_allocatable: [("cpu".to_owned(), Quantity::from_units(2))].into(),
            host_ip: "192.0.2.1".into(),
            pod_ip: "10.42.0.7".into(),
            node_name: "node-1".into(),
        }
    }

    fn pod_with(container: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "web", "namespace": "default", "uid": "u1", "labels": { "app": "web" } },
            "spec": { "nodeName": "node-1", "containers": [container] }
        })).unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, c)
    }

    #[test]
    fn every_source_kind_resolves() {
        let (pod, c) = pod_with(json!({
            "name": "app",
            "envFrom": [{ "configMapRef": { "name": "cfg" }, "prefix": "CFG_" }],
            "env": [
                { "name": "GREETING", "value": "hello $(CFG_color)" },
                { "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "creds", "key": "password" } } },
                { "name": "POD", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                { "name": "APP", "valueFrom": { "fieldRef": { "fieldPath": "metadata.labels['app']" } } },
                { "name": "NODE_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.hostIP" } } },
                { "name": "CPU", "valueFrom": { "resourceFieldRef": { "resource": "limits.cpu" } } },
                { "name": "MEM_MI", "valueFrom": { "resourceFieldRef": { "resource": "requests.memory", "divisor": "1Mi" } } },
            ],
            "resources": { "requests": { "memory": "64Mi" } },
        }));
        let env: BTreeMap<String, String> = environment(&pod, &c, &sources())
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(env["CFG_color"], "blue");
        assert_eq!(env["GREETING"], "hello blue");
        assert_eq!(env["PASSWORD"], "s3cr3t");
        assert_eq!(env["POD"], "web");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["NODE_IP"], "192.0.2.1");
        assert_eq!(env["CPU"], "2", "an unset limit is the node's allocatable");
        assert_eq!(env["MEM_MI"], "64");
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.43.0.1");
        assert_eq!(env["KUBERNETES_SERVICE_PORT"], "443");
        assert_eq!(env["KUBERNETES_PORT_443_TCP"], "tcp://10.43.0.1:443");
    }

    #[test]
    fn missing_sources_are_config_errors_unless_optional() {
        let (pod, c) = pod_with(json!({ "name": "app", "env": [
            { "name": "X", "valueFrom": { "configMapKeyRef": { "name": "nope", "key": "k" } } },
        ]}));
        assert_eq!(
            environment(&pod, &c, &sources()).unwrap_err(),
            "configmap \"nope\" not found"
        );
        let (pod, c) = pod_with(json!({ "name": "app", "env": [
            { "name": "X", "valueFrom": { "configMapKeyRef": { "name": "cfg", "key": "missing" } } },
        ]}));
        assert_eq!(
            environment(&pod, &c, &sources()).unwrap_err(),
            "couldn't find key missing in ConfigMap default/cfg"
        );
        let (pod, c) = pod_with(json!({ "name": "app", "env": [
            { "name": "X", "valueFrom": { "configMapKeyRef": { "name": "nope", "key": "k", "optional": true } } },
        ]}));
        let env = environment(&pod, &c, &sources()).unwrap();
        assert!(!env.iter().any(|(k, _)| k == "X"));
    }

    #[test]
    fn later_definitions_override() {
        let (pod, c) = pod_with(json!({ "name": "app", "env": [
            { "name": "A", "value": "1" }, { "name": "A", "value": "2" },
        ]}));
        let env = environment(&pod, &c, &sources()).unwrap();
        assert_eq!(env.iter().filter(|(k, _)| k == "A").count(), 1);
        assert!(env.contains(&("A".into(), "2".into())));
    }
}
