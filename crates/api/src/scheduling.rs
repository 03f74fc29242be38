//! Placement rules every component judges alike (upstream `component-helpers/scheduling`
//! and `component-helpers/resource`): taints and tolerations, node selectors and required
//! node affinity (labels and the `metadata.name` field), and what a pod requests. The
//! DaemonSet controller decides where its pods belong with them, taint eviction which pods
//! must leave a node, and the kubelet whether it admits a pod. (The scheduler keeps its own
//! forms of these, shaped for its per-cycle hot paths.)

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, Pod, PodSpec, ResourceRequirements, Taint,
    Toleration,
};

use crate::quantity::Quantity;

/// Upstream `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// Whether any toleration tolerates the taint.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// Whether a node selector requirement holds for a label's (or field's) value.
pub fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
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
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.as_deref().unwrap_or("");
    sel.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        if exprs.is_empty() && fields.is_empty() {
            return false;
        }
        exprs
            .iter()
            .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
            && fields
                .iter()
                .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name)))
    })
}

/// The pod's nodeSelector and required node affinity allow the node.
pub fn node_matches(spec: &PodSpec, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
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

/// Amounts by resource name: cpu in millicores, everything else in units.
pub type Resources = BTreeMap<String, i64>;

/// A quantity in the unit [`Resources`] keeps for `name` (0 when it does not parse).
pub fn amount(name: &str, q: &str) -> i64 {
    let parsed = Quantity::parse(q).unwrap_or_default();
    if name == "cpu" {
        parsed.milli_value()
    } else {
        parsed.value()
    }
}

/// Add `from` to `into`, resource by resource.
pub fn add(into: &mut Resources, from: &Resources) {
    for (k, v) in from {
        *into.entry(k.clone()).or_insert(0) += v;
    }
}

fn max_with(into: &mut Resources, from: &Resources) {
    for (k, v) in from {
        let e = into.entry(k.clone()).or_insert(0);
        *e = (*e).max(*v);
    }
}

/// A container's requests (limits stand in for requests left unset, as defaulting does).
fn container_requests(r: Option<&ResourceRequirements>) -> Resources {
    let mut out = Resources::new();
    let Some(r) = r else {
        return out;
    };
    for (name, q) in r.requests.iter().flatten() {
        out.insert(name.clone(), amount(name, &q.0));
    }
    for (name, q) in r.limits.iter().flatten() {
        out.entry(name.clone())
            .or_insert_with(|| amount(name, &q.0));
    }
    out
}

/// What a pod requests (upstream `resourcehelper.PodRequests`): the larger of its
/// containers plus restartable init containers and the peak of its init containers run in
/// order on top of the sidecars started before them; pod-level requests replace the
/// container sum for cpu, memory and hugepages; the overhead is added.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::new();
    };
    let mut sum = Resources::new();
    for c in &spec.containers {
        add(&mut sum, &container_requests(c.resources.as_ref()));
    }
    let mut sidecars = Resources::new();
    let mut init_peak = Resources::new();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c.resources.as_ref());
        if c.restart_policy.as_deref() == Some("Always") {
            add(&mut sum, &r);
            add(&mut sidecars, &r);
            max_with(&mut init_peak, &sidecars);
        } else {
            let mut running = r;
            add(&mut running, &sidecars);
            max_with(&mut init_peak, &running);
        }
    }
    max_with(&mut sum, &init_peak);
    for (name, q) in spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .into_iter()
        .flatten()
    {
        if name == "cpu" || name == "memory" || name.starts_with("hugepages-") {
            sum.insert(name.clone(), amount(name, &q.0));
        }
    }
    for (name, q) in spec.overhead.iter().flatten() {
        *sum.entry(name.clone()).or_insert(0) += amount(name, &q.0);
    }
    sum.retain(|_, v| *v != 0);
    sum
}

/// A node's allocatable resources (capacity when it reports no allocatable).
pub fn allocatable(node: &Node) -> Resources {
    let status = node.status.as_ref();
    status
        .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
        .into_iter()
        .flatten()
        .map(|(k, q)| (k.clone(), amount(k, &q.0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSelectorTerm};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

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
