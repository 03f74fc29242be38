//! The placement rules controllers judge the way the scheduler would (upstream
//! component-helpers/scheduling): taints and tolerations, node selectors and required node
//! affinity (labels and the `metadata.name` field). The DaemonSet controller decides where
//! its pods belong with them; taint eviction decides which pods must leave a node.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, PodSpec, Taint, Toleration,
};

/// Upstream `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    let operator = t.operator.as_deref().unwrap_or("Equal");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match operator {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// Whether any toleration tolerates the taint.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

fn node_labels(node: &Node) -> BTreeMap<String, String> {
    node.metadata.labels.clone().unwrap_or_default()
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.clone().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a node matches a node selector (terms ORed, requirements in a term ANDed; an
/// empty term matches nothing).
pub fn selector_matches(sel: &NodeSelector, node: &Node) -> bool {
    let labels = node_labels(node);
    let name = node.metadata.name.clone().unwrap_or_default();
    sel.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.clone().unwrap_or_default();
        let fields = term.match_fields.clone().unwrap_or_default();
        if exprs.is_empty() && fields.is_empty() {
            return false;
        }
        exprs
            .iter()
            .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
            && fields
                .iter()
                .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(&name)))
    })
}

/// The pod's nodeSelector and required node affinity allow the node.
pub fn node_matches(spec: &PodSpec, node: &Node) -> bool {
    let labels = node_labels(node);
    if let Some(sel) = &spec.node_selector
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    required.is_none_or(|sel| selector_matches(sel, node))
}

/// The node's taints with an effect.
pub fn taints<'n>(node: &'n Node, effect: &'n str) -> impl Iterator<Item = &'n Taint> + 'n {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(move |t| t.effect == effect)
}

/// The node a pod is bound to or pinned to by `matchFields` on `metadata.name`.
pub fn target_node(spec: &PodSpec) -> Option<String> {
    if let Some(n) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    let sel = spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    sel.node_selector_terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|f| {
            (f.key == "metadata.name" && f.operator == "In")
                .then(|| f.values.clone().unwrap_or_default().into_iter().next())
                .flatten()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSelectorTerm};
    use kube::api::ObjectMeta;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        Toleration {
            key: Some(key.into()).filter(|k: &String| !k.is_empty()),
            operator: Some(op.into()),
            value: Some(value.into()).filter(|v: &String| !v.is_empty()),
            effect: Some(effect.into()).filter(|e: &String| !e.is_empty()),
            toleration_seconds: None,
        }
    }

    #[test]
    fn tolerations_match_like_upstream() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        assert!(tolerates(
            &toleration("dedicated", "Equal", "gpu", "NoSchedule"),
            &t
        ));
        assert!(!tolerates(
            &toleration("dedicated", "Equal", "cpu", "NoSchedule"),
            &t
        ));
        assert!(tolerates(&toleration("dedicated", "Exists", "", ""), &t));
        assert!(!tolerates(
            &toleration("dedicated", "Exists", "", "NoExecute"),
            &t
        ));
        assert!(
            tolerates(&toleration("", "Exists", "", ""), &t),
            "an empty key with Exists tolerates everything"
        );
    }

    #[test]
    fn node_selectors_and_affinity_terms() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                labels: Some(
                    [
                        ("zone".to_owned(), "a".to_owned()),
                        ("cores".to_owned(), "8".to_owned()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        let req = |key: &str, op: &str, vals: &[&str]| NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(vals.iter().map(|v| v.to_string()).collect()),
        };
        let spec_with = |terms: Vec<NodeSelectorTerm>| PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: terms,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let fields = |name: &str| NodeSelectorTerm {
            match_fields: Some(vec![req("metadata.name", "In", &[name])]),
            match_expressions: None,
        };
        assert!(node_matches(&spec_with(vec![fields("n1")]), &node));
        assert!(!node_matches(&spec_with(vec![fields("n2")]), &node));
        assert_eq!(
            target_node(&spec_with(vec![fields("n2")])).as_deref(),
            Some("n2")
        );
        let expr = |r| NodeSelectorTerm {
            match_expressions: Some(vec![r]),
            match_fields: None,
        };
        assert!(node_matches(
            &spec_with(vec![expr(req("cores", "Gt", &["4"]))]),
            &node
        ));
        assert!(!node_matches(
            &spec_with(vec![expr(req("zone", "NotIn", &["a"]))]),
            &node
        ));
        assert!(node_matches(
            &spec_with(vec![
                expr(req("zone", "NotIn", &["a"])),
                expr(req("zone", "Exists", &[]))
            ]),
            &node
        ));
        let sel = PodSpec {
            node_selector: Some([("zone".to_owned(), "b".to_owned())].into()),
            ..Default::default()
        };
        assert!(!node_matches(&sel, &node));
    }
}
