//! NodeAffinity (PreFilter, Filter, PreScore, Score): `spec.nodeSelector` and required node
//! affinity must match the node; preferred node affinity terms add their weights to the score.
//! `metadata.name` field terms narrow the cycle to the named nodes in PreFilter. The
//! `addedAffinity` argument applies scheduler-enforced affinity to every pod of the profile.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::NodeAffinity as K8sNodeAffinity;
use serde::Deserialize;
use serde_json::Value;

use crate::cache::Snapshot;
use crate::extension_points;
use crate::framework::events::Resource;
use crate::framework::{
    ActionType, ClusterEvent, CycleState, EventObject, FilterPlugin, Handle, Plugin,
    PreFilterPlugin, PreFilterResult, PreScorePlugin, ScorePlugin, Status,
};
use crate::helpers::{CompiledNodeSelector, CompiledTerm, RequiredNodeAffinity};
use crate::nodeinfo::{NodeInfo, PodInfo};
use crate::plugins::default_normalize;
use crate::registry::decode_args;

/// The plugin name.
pub const NAME: &str = "NodeAffinity";
/// Upstream's reason for the pod's own constraints.
pub const REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";
/// Upstream's reason for `addedAffinity`.
pub const REASON_ENFORCED: &str = "node(s) didn't match scheduler-enforced node affinity";
/// Upstream's reason when `metadata.name` terms exclude each other.
pub const REASON_CONFLICT: &str = "pod affinity terms conflict";

/// `NodeAffinityArgs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Args {
    /// Affinity applied to every pod of the profile.
    #[serde(default)]
    pub added_affinity: Option<K8sNodeAffinity>,
}

/// The plugin.
pub struct NodeAffinity {
    added_required: Option<CompiledNodeSelector>,
    added_preferred: Vec<(i64, CompiledTerm)>,
}

/// Factory.
pub fn new(args: Option<&Value>, _handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    let args: Args = decode_args(args)?;
    let added = args.added_affinity.unwrap_or_default();
    Ok(Arc::new(NodeAffinity {
        added_required: added
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .map(CompiledNodeSelector::new),
        added_preferred: preferred_terms(&added),
    }))
}

fn preferred_terms(affinity: &K8sNodeAffinity) -> Vec<(i64, CompiledTerm)> {
    affinity
        .preferred_during_scheduling_ignored_during_execution
        .iter()
        .flatten()
        .filter(|t| t.weight != 0)
        .map(|t| (i64::from(t.weight), CompiledTerm::new(&t.preference)))
        .collect()
}

#[derive(Clone)]
struct FilterState(RequiredNodeAffinity);

#[derive(Clone)]
struct ScoreState(Vec<(i64, CompiledTerm)>);

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![ClusterEvent::new(
            Resource::Node,
            ActionType::ADD | ActionType::UPDATE_NODE_LABEL,
            "NodeLabelChange",
        )]
    }
    fn queueing_hint(
        &self,
        _event: &ClusterEvent,
        pod: &PodInfo,
        _old: &EventObject<'_>,
        new: &EventObject<'_>,
    ) -> bool {
        match new {
            EventObject::Node(n) => {
                RequiredNodeAffinity::of(&pod.pod).matches(n)
                    && self.added_required.as_ref().is_none_or(|a| a.matches(n))
            }
            _ => true,
        }
    }
    extension_points!(
        as_pre_filter => PreFilterPlugin,
        as_filter => FilterPlugin,
        as_pre_score => PreScorePlugin,
        as_score => ScorePlugin,
    );
}

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (Status, PreFilterResult) {
        let required = RequiredNodeAffinity::of(&pod.pod);
        if required.is_empty() && self.added_required.is_none() {
            return (Status::skip(), None);
        }
        let names = required.affinity().map(|a| {
            let mut all: Option<HashSet<String>> = Some(HashSet::new());
            for term in &a.terms {
                match term.node_names() {
                    // A term without a name restriction admits every node.
                    None => {
                        all = None;
                        break;
                    }
                    Some(names) => {
                        if let Some(set) = all.as_mut() {
                            set.extend(names);
                        }
                    }
                }
            }
            all
        });
        state.write(NAME, FilterState(required));
        match names.flatten() {
            Some(set) if set.is_empty() => (Status::unresolvable(REASON_CONFLICT), None),
            Some(set) => (Status::success(), Some(set)),
            None => (Status::success(), None),
        }
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if let Some(added) = &self.added_required
            && !added.matches(&node.node)
        {
            return Status::unresolvable(REASON_ENFORCED);
        }
        let matches = match state.read::<FilterState>(NAME) {
            Some(s) => s.0.matches(&node.node),
            None => RequiredNodeAffinity::of(&pod.pod).matches(&node.node),
        };
        if matches {
            Status::success()
        } else {
            Status::unresolvable(REASON_POD)
        }
    }
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        _snapshot: &Snapshot,
    ) -> Status {
        let mut terms = self.added_preferred.clone();
        if let Some(na) = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
        {
            terms.extend(preferred_terms(na));
        }
        if terms.is_empty() {
            return Status::skip();
        }
        state.write(NAME, ScoreState(terms));
        Status::success()
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<ScoreState>(NAME) else {
            return Ok(0);
        };
        Ok(s.0
            .iter()
            .filter(|(_, t)| t.matches(&node.node))
            .map(|(w, _)| *w)
            .sum())
    }

    fn normalize(
        &self,
        _state: &CycleState,
        _pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        scores: &mut [i64],
    ) -> Status {
        default_normalize(scores, false);
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::plugins::testing::{node, pod, snapshot};
    use k8s_openapi::api::core::v1::{
        Affinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PreferredSchedulingTerm,
    };

    fn expr(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| (*v).into()).collect()),
        }
    }

    /// The upstream documentation's example: required `topology.kubernetes.io/zone In
    /// (antarctica-east1, antarctica-west1)`, preferred `another-node-label-key In
    /// (another-node-label-value)` with weight 1.
    fn docs_affinity() -> Affinity {
        Affinity {
            node_affinity: Some(K8sNodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![expr(
                            "topology.kubernetes.io/zone",
                            "In",
                            &["antarctica-east1", "antarctica-west1"],
                        )]),
                        match_fields: None,
                    }],
                }),
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    PreferredSchedulingTerm {
                        weight: 1,
                        preference: NodeSelectorTerm {
                            match_expressions: Some(vec![expr(
                                "another-node-label-key",
                                "In",
                                &["another-node-label-value"],
                            )]),
                            match_fields: None,
                        },
                    },
                ]),
            }),
            ..Default::default()
        }
    }

    fn plugin() -> NodeAffinity {
        NodeAffinity {
            added_required: None,
            added_preferred: Vec::new(),
        }
    }

    #[test]
    fn required_affinity_and_node_selector_filter() {
        let p = pod("with-node-affinity").affinity(docs_affinity()).info();
        let east = node("east")
            .label("topology.kubernetes.io/zone", "antarctica-east1")
            .info();
        let north = node("north")
            .label("topology.kubernetes.io/zone", "antarctica-north1")
            .info();
        let snap = snapshot(vec![east.clone(), north.clone()]);
        let mut state = CycleState::new();
        let (s, names) = plugin().pre_filter(&mut state, &p, &snap);
        assert!(s.is_success() && names.is_none());
        assert!(plugin().filter(&state, &p, &east).is_success());
        let s = plugin().filter(&state, &p, &north);
        assert_eq!(s.code(), Code::UnschedulableAndUnresolvable);
        assert_eq!(s.message(), REASON_POD);

        // nodeSelector (docs: disktype: ssd).
        let p = pod("nginx").node_selector("disktype", "ssd").info();
        let mut state = CycleState::new();
        plugin().pre_filter(&mut state, &p, &snap);
        assert!(!plugin().filter(&state, &p, &east).is_success());
        let ssd = node("ssd").label("disktype", "ssd").info();
        assert!(plugin().filter(&state, &p, &ssd).is_success());
    }

    #[test]
    fn pods_without_constraints_skip_the_filter() {
        let (s, _) = plugin().pre_filter(
            &mut CycleState::new(),
            &pod("p").info(),
            &Snapshot::default(),
        );
        assert!(s.is_skip());
    }

    #[test]
    fn metadata_name_terms_narrow_the_nodes() {
        let a = Affinity {
            node_affinity: Some(K8sNodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: None,
                        match_fields: Some(vec![expr("metadata.name", "In", &["n2"])]),
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (s, names) = plugin().pre_filter(
            &mut CycleState::new(),
            &pod("ds").affinity(a).info(),
            &Snapshot::default(),
        );
        assert!(s.is_success());
        assert_eq!(names, Some(["n2".to_owned()].into()));
    }

    #[test]
    fn preferred_terms_score_by_weight() {
        let p = pod("p").affinity(docs_affinity()).info();
        let nodes = vec![
            node("plain").info(),
            node("preferred")
                .label("another-node-label-key", "another-node-label-value")
                .info(),
        ];
        let snap = snapshot(nodes.clone());
        let mut state = CycleState::new();
        assert!(
            plugin()
                .pre_score(&mut state, &p, &nodes, &snap)
                .is_success()
        );
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| plugin().score(&state, &p, n).unwrap())
            .collect();
        assert_eq!(scores, [0, 1]);
        plugin().normalize(&state, &p, &nodes, &mut scores);
        assert_eq!(scores, [0, 100]);
    }

    #[test]
    fn added_affinity_applies_to_every_pod() {
        let args = serde_json::json!({
            "addedAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "scheduler-profile", "operator": "In", "values": ["foo"]}]}]
                }
            }
        });
        let p = new(Some(&args), &Handle::for_tests()).unwrap();
        let f = p.as_filter().unwrap();
        let mut state = CycleState::new();
        let pod = pod("p").info();
        let (s, _) = p
            .as_pre_filter()
            .unwrap()
            .pre_filter(&mut state, &pod, &Snapshot::default());
        assert!(s.is_success());
        assert_eq!(
            f.filter(&state, &pod, &node("n").info()).message(),
            REASON_ENFORCED
        );
        assert!(
            f.filter(
                &state,
                &pod,
                &node("n").label("scheduler-profile", "foo").info()
            )
            .is_success()
        );
        assert!(new(Some(&serde_json::json!({"bogus": 1})), &Handle::for_tests()).is_err());
    }
}
