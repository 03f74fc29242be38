//! Matching rules several plugins share: node selectors (`nodeSelectorTerms`, with upstream's
//! `In`/`NotIn`/`Exists`/`DoesNotExist`/`Gt`/`Lt` and `metadata.name` fields), taints and
//! tolerations, and a pod's required node affinity as one compiled value.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};
use skiff_api::selector::{LabelSelector, Operator, Requirement};

/// The labels of a node (empty when it has none).
pub fn node_labels(node: &Node) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    node.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

/// The labels of a pod (empty when it has none).
pub fn pod_labels(pod: &Pod) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

/// A node's taints.
pub fn node_taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// A pod's tolerations.
pub fn pod_tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// Whether `toleration` tolerates `taint` (upstream `Toleration.ToleratesTaint`): an empty
/// effect matches every effect, an empty key with `Exists` matches every key, `Exists`
/// ignores the value and `Equal` (the default) compares it.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        // Gt/Lt compare integer values (the TaintTolerationComparisonOperators feature).
        op @ ("Gt" | "Lt") => {
            let (Ok(t), Ok(v)) = (
                toleration.value.as_deref().unwrap_or("").parse::<i64>(),
                taint.value.as_deref().unwrap_or("").parse::<i64>(),
            ) else {
                return false;
            };
            if op == "Gt" { v > t } else { v < t }
        }
        _ => false,
    }
}

/// Whether any toleration tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The first taint with one of `effects` that no toleration tolerates.
pub fn first_untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| effects.contains(&t.effect.as_str()))
        .find(|t| !tolerated(tolerations, t))
}

/// A compiled `nodeSelectorTerm`: label requirements and `metadata.name` field requirements.
#[derive(Debug, Clone)]
pub struct CompiledTerm {
    labels: Option<LabelSelector>,
    fields: Vec<Requirement>,
    /// Whether the term could not be compiled (it then matches nothing, as upstream).
    invalid: bool,
}

fn requirement(r: &NodeSelectorRequirement) -> Option<Requirement> {
    let op = match r.operator.as_str() {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        "Gt" => Operator::GreaterThan,
        "Lt" => Operator::LessThan,
        _ => return None,
    };
    Requirement::new(&r.key, op, r.values.clone().unwrap_or_default()).ok()
}

impl CompiledTerm {
    /// Compile a term.
    pub fn new(term: &NodeSelectorTerm) -> CompiledTerm {
        let mut invalid = false;
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let labels = if exprs.is_empty() {
            None
        } else {
            let reqs: Vec<Requirement> = exprs
                .iter()
                .filter_map(|r| {
                    let req = requirement(r);
                    invalid |= req.is_none();
                    req
                })
                .collect();
            Some(LabelSelector::from_requirements(reqs))
        };
        let mut fields = Vec::new();
        for f in term.match_fields.as_deref().unwrap_or_default() {
            // Only metadata.name is a supported field, with In/NotIn.
            if f.key != "metadata.name" || !matches!(f.operator.as_str(), "In" | "NotIn") {
                invalid = true;
                continue;
            }
            match requirement(f) {
                Some(r) => fields.push(r),
                None => invalid = true,
            }
        }
        CompiledTerm {
            labels,
            fields,
            invalid,
        }
    }

    /// Whether a node matches the term. A term with neither expressions nor fields matches
    /// nothing.
    pub fn matches(&self, node: &Node) -> bool {
        if self.invalid || (self.labels.is_none() && self.fields.is_empty()) {
            return false;
        }
        if let Some(labels) = &self.labels
            && !labels.matches(node_labels(node))
        {
            return false;
        }
        if !self.fields.is_empty() {
            let mut name = BTreeMap::new();
            name.insert(
                "metadata.name".to_owned(),
                node.metadata.name.clone().unwrap_or_default(),
            );
            if !self.fields.iter().all(|r| r.matches(&name)) {
                return false;
            }
        }
        true
    }

    /// The node names this term is limited to by `metadata.name In (...)`, if it is.
    pub fn node_names(&self) -> Option<Vec<String>> {
        self.fields
            .iter()
            .find(|r| r.operator() == Operator::In)
            .map(|r| r.values().to_vec())
    }
}

/// A compiled `NodeSelector`: a node matches when any term matches.
#[derive(Debug, Clone)]
pub struct CompiledNodeSelector {
    /// The terms.
    pub terms: Vec<CompiledTerm>,
}

impl CompiledNodeSelector {
    /// Compile a selector.
    pub fn new(selector: &NodeSelector) -> CompiledNodeSelector {
        CompiledNodeSelector {
            terms: selector
                .node_selector_terms
                .iter()
                .map(CompiledTerm::new)
                .collect(),
        }
    }

    /// Whether any term matches.
    pub fn matches(&self, node: &Node) -> bool {
        self.terms.iter().any(|t| t.matches(node))
    }
}

/// A pod's hard node constraints: `spec.nodeSelector` and required node affinity (upstream
/// `nodeaffinity.RequiredNodeAffinity`).
#[derive(Debug, Clone, Default)]
pub struct RequiredNodeAffinity {
    selector: Option<BTreeMap<String, String>>,
    affinity: Option<CompiledNodeSelector>,
}

impl RequiredNodeAffinity {
    /// The constraints of a pod.
    pub fn of(pod: &Pod) -> RequiredNodeAffinity {
        let spec = pod.spec.as_ref();
        let selector = spec
            .and_then(|s| s.node_selector.clone())
            .filter(|m| !m.is_empty());
        let affinity = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(CompiledNodeSelector::new);
        RequiredNodeAffinity { selector, affinity }
    }

    /// Whether the pod has any hard node constraint.
    pub fn is_empty(&self) -> bool {
        self.selector.is_none() && self.affinity.is_none()
    }

    /// Whether a node satisfies the constraints.
    pub fn matches(&self, node: &Node) -> bool {
        if let Some(selector) = &self.selector {
            let labels = node_labels(node);
            if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                return false;
            }
        }
        self.affinity.as_ref().is_none_or(|a| a.matches(node))
    }

    /// The compiled required affinity, if any.
    pub fn affinity(&self) -> Option<&CompiledNodeSelector> {
        self.affinity.as_ref()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub fn node(name: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).into(), (*v).into()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| (*v).into()).collect()),
        }
    }

    #[test]
    fn node_selector_operators() {
        let n = node("n1", &[("zone", "a"), ("cores", "8")]);
        let term = |reqs: Vec<NodeSelectorRequirement>| {
            CompiledTerm::new(&NodeSelectorTerm {
                match_expressions: Some(reqs),
                match_fields: None,
            })
        };
        assert!(term(vec![req("zone", "In", &["a", "b"])]).matches(&n));
        assert!(!term(vec![req("zone", "NotIn", &["a"])]).matches(&n));
        assert!(term(vec![req("missing", "NotIn", &["a"])]).matches(&n));
        assert!(term(vec![req("zone", "Exists", &[])]).matches(&n));
        assert!(!term(vec![req("zone", "DoesNotExist", &[])]).matches(&n));
        assert!(term(vec![req("cores", "Gt", &["4"])]).matches(&n));
        assert!(!term(vec![req("cores", "Lt", &["4"])]).matches(&n));
        assert!(!term(vec![req("zone", "Bogus", &["a"])]).matches(&n));
        // An empty term matches nothing.
        assert!(!term(vec![]).matches(&n));
        let fields = CompiledTerm::new(&NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.name", "In", &["n1"])]),
        });
        assert!(fields.matches(&n));
        assert_eq!(fields.node_names(), Some(vec!["n1".to_owned()]));
        assert!(!fields.matches(&node("n2", &[])));
    }

    #[test]
    fn toleration_rules() {
        let taint = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let t = |key: Option<&str>, op: Option<&str>, value: Option<&str>, effect: Option<&str>| {
            Toleration {
                key: key.map(Into::into),
                operator: op.map(Into::into),
                value: value.map(Into::into),
                effect: effect.map(Into::into),
                toleration_seconds: None,
            }
        };
        assert!(tolerates(
            &t(Some("dedicated"), None, Some("gpu"), Some("NoSchedule")),
            &taint
        ));
        assert!(tolerates(
            &t(Some("dedicated"), Some("Exists"), None, None),
            &taint
        ));
        assert!(tolerates(&t(None, Some("Exists"), None, None), &taint));
        assert!(!tolerates(
            &t(Some("dedicated"), Some("Equal"), Some("cpu"), None),
            &taint
        ));
        assert!(!tolerates(
            &t(Some("dedicated"), Some("Exists"), None, Some("NoExecute")),
            &taint
        ));
        assert!(!tolerates(
            &t(Some("other"), Some("Exists"), None, None),
            &taint
        ));
    }
}
