//! The built-in kinds of Kubernetes 1.35 as Skiff serves them: one registry entry per kind
//! (names, scope, subresources) with its behaviour — upstream defaulting, validation, table
//! printing and field selectors — implemented once generically over k8s-openapi types
//! ([`strategy::TypedStrategy`]) from small per-kind functions.
//!
//! No IO here: the API server calls these from its handlers.

pub mod core;
pub mod limitrange;
pub mod other;
pub mod pod;
mod print;
pub mod quota;
pub mod strategy;
pub mod validation;
pub mod workloads;

use skiff_api::registry::ResourceInfo;

/// Every built-in kind.
pub fn builtin() -> Vec<ResourceInfo> {
    let mut all = core::entries();
    all.extend(workloads::entries());
    all.extend(other::entries());
    all
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_are_unique_and_schemas_resolve() {
        let all = builtin();
        let mut resources = BTreeSet::new();
        let mut short_names = BTreeSet::new();
        for info in &all {
            assert!(
                resources.insert((info.group.clone(), info.plural.clone())),
                "duplicate {}/{}",
                info.group,
                info.plural
            );
            for s in &info.short_names {
                // `ev` is shared by core and events.k8s.io events, as upstream.
                if s != "ev" {
                    assert!(short_names.insert(s.clone()), "duplicate short name {s}");
                }
            }
            let schema = info.strategy.schema().expect("every built-in has a schema");
            assert!(
                schema.definitions.contains_key(&schema.root),
                "{} lacks its root {}",
                info.kind,
                schema.root
            );
        }
        assert!(all.len() >= 47, "{} kinds", all.len());
        let pods = all.iter().find(|i| i.plural == "pods").unwrap();
        assert!(pods.namespaced);
        assert!(pods.has_subresource("binding"));
        let nodes = all.iter().find(|i| i.plural == "nodes").unwrap();
        assert!(!nodes.namespaced);
    }

    #[test]
    fn list_metadata_is_published_in_schemas() {
        let all = builtin();
        let pods = all.iter().find(|i| i.plural == "pods").unwrap();
        let schema = pods.strategy.schema().unwrap();
        let containers =
            &schema.definitions["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
    }
}
