//! API discovery: the legacy documents (`/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`) and the
//! aggregated `apidiscovery.k8s.io/v2` form current kubectl and client-go ask for first.

use serde_json::{Value, json};
use skiff_api::registry::ResourceInfo;

use crate::registry::RegistrySnapshot;

/// The `Content-Type` of aggregated discovery responses.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// The beta form, still requested by older clients.
pub const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
    })
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({ "groupVersion": format!("{name}/{v}"), "version": v }))
        .collect();
    json!({ "name": name, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null) })
}

/// `/apis`.
pub fn group_list(registry: &RegistrySnapshot) -> Value {
    let groups: Vec<Value> = registry
        .groups()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `/apis/<group>`.
pub fn group(registry: &RegistrySnapshot, name: &str) -> Option<Value> {
    let (_, versions) = registry
        .groups()
        .iter()
        .find(|(g, _)| g == name && !g.is_empty())?;
    let mut doc = group_doc(name, versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `/api/v1` or `/apis/<group>/<version>`.
pub fn resource_list(registry: &RegistrySnapshot, group: &str, version: &str) -> Option<Value> {
    if !registry.has_group_version(group, version) {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    let mut resources = Vec::new();
    for info in registry.resources_in(group, version) {
        let mut r = json!({
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": info.verbs.names(),
        });
        if !info.short_names.is_empty() {
            r["shortNames"] = json!(info.short_names);
        }
        if !info.categories.is_empty() {
            r["categories"] = json!(info.categories);
        }
        resources.push(r);
        for sub in &info.subresources {
            let mut s = json!({
                "name": format!("{}/{}", info.plural, sub.name),
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": sub.kind,
                "verbs": sub.verbs,
            });
            if !sub.group.is_empty() {
                s["group"] = json!(sub.group);
                s["version"] = json!(sub.version);
            }
            resources.push(s);
        }
    }
    Some(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources }),
    )
}

fn aggregated_resource(info: &ResourceInfo) -> Value {
    let mut r = json!({
        "resource": info.plural,
        "responseKind": { "group": info.group, "version": info.version, "kind": info.kind },
        "scope": if info.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": info.singular,
        "verbs": info.verbs.names(),
    });
    if !info.short_names.is_empty() {
        r["shortNames"] = json!(info.short_names);
    }
    if !info.categories.is_empty() {
        r["categories"] = json!(info.categories);
    }
    if !info.subresources.is_empty() {
        let subs: Vec<Value> = info
            .subresources
            .iter()
            .map(|s| {
                let (g, v) = if s.group.is_empty() { (info.group.as_str(), info.version.as_str()) } else { (s.group.as_str(), s.version.as_str()) };
                json!({ "subresource": s.name, "responseKind": { "group": g, "version": v, "kind": s.kind }, "verbs": s.verbs })
            })
            .collect();
        r["subresources"] = json!(subs);
    }
    r
}

/// The aggregated discovery document of `/api` (`core == true`) or `/apis`.
pub fn aggregated(registry: &RegistrySnapshot, core: bool, api_version: &str) -> Value {
    let items: Vec<Value> = registry
        .groups()
        .iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = registry
                        .resources_in(g, v)
                        .into_iter()
                        .map(|i| aggregated_resource(i))
                        .collect();
                    json!({ "version": v, "resources": resources, "freshness": "Current" })
                })
                .collect();
            json!({ "metadata": { "name": g, "creationTimestamp": null }, "versions": versions })
        })
        .collect();
    json!({ "kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items })
}
