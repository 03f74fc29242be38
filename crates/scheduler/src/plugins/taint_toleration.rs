//! TaintToleration (Filter, PreScore, Score): a node's `NoSchedule` and `NoExecute` taints keep
//! off every pod that does not tolerate them; `PreferNoSchedule` taints a pod does not
//! tolerate lower the node's score (fewer is better).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Toleration;
use serde_json::Value;

use crate::cache::Snapshot;
use crate::extension_points;
use crate::framework::events::Resource;
use crate::framework::{
    ActionType, ClusterEvent, CycleState, EventObject, FilterPlugin, Handle, Plugin,
    PreScorePlugin, ScorePlugin, Status,
};
use crate::helpers::{first_untolerated, node_taints, pod_tolerations, tolerated};
use crate::nodeinfo::{NodeInfo, PodInfo};
use crate::plugins::default_normalize;

/// The plugin name.
pub const NAME: &str = "TaintToleration";

/// The plugin.
pub struct TaintToleration;

/// Factory.
pub fn new(_args: Option<&Value>, _handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(TaintToleration))
}

const HARD: &[&str] = &["NoSchedule", "NoExecute"];

#[derive(Clone)]
struct PreScoreState {
    tolerations: Vec<Toleration>,
}

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            ClusterEvent::new(
                Resource::Node,
                ActionType::ADD | ActionType::UPDATE_NODE_TAINT,
                "NodeTaintChange",
            ),
            ClusterEvent::new(
                Resource::Pod,
                ActionType::UPDATE_POD_TOLERATIONS,
                "PodTolerationChange",
            ),
        ]
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
                first_untolerated(node_taints(n), pod_tolerations(&pod.pod), HARD).is_none()
            }
            _ => true,
        }
    }
    extension_points!(
        as_filter => FilterPlugin,
        as_pre_score => PreScorePlugin,
        as_score => ScorePlugin,
    );
}

impl FilterPlugin for TaintToleration {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !node.has_taints {
            return Status::success();
        }
        match first_untolerated(node_taints(&node.node), pod_tolerations(&pod.pod), HARD) {
            None => Status::success(),
            Some(t) => Status::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            )),
        }
    }
}

impl PreScorePlugin for TaintToleration {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        _snapshot: &Snapshot,
    ) -> Status {
        let tolerations = pod_tolerations(&pod.pod)
            .iter()
            .filter(|t| {
                matches!(
                    t.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                )
            })
            .cloned()
            .collect();
        state.write(NAME, PreScoreState { tolerations });
        Status::success()
    }
}

impl ScorePlugin for TaintToleration {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let tolerations = state
            .read::<PreScoreState>(NAME)
            .map(|s| s.tolerations.as_slice())
            .unwrap_or_default();
        if !node.has_taints {
            return Ok(0);
        }
        Ok(node_taints(&node.node)
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule" && !tolerated(tolerations, t))
            .count() as i64)
    }

    fn normalize(
        &self,
        _state: &CycleState,
        _pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        scores: &mut [i64],
    ) -> Status {
        default_normalize(scores, true);
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::plugins::testing::{node, pod, snapshot};

    #[test]
    fn untolerated_hard_taints_reject_with_upstreams_message() {
        // Upstream docs: `kubectl taint nodes node1 key1=value1:NoSchedule`; a pod tolerating
        // key1=value1 (Equal) or key1 (Exists) with effect NoSchedule may schedule there.
        let n = node("node1").taint("key1", "value1", "NoSchedule").info();
        let state = CycleState::new();
        let plain = TaintToleration.filter(&state, &pod("p").info(), &n);
        assert_eq!(plain.code(), Code::UnschedulableAndUnresolvable);
        assert_eq!(
            plain.message(),
            "node(s) had untolerated taint {key1: value1}"
        );
        let equal = pod("p")
            .toleration("key1", "Equal", "value1", "NoSchedule")
            .info();
        assert!(TaintToleration.filter(&state, &equal, &n).is_success());
        let exists = pod("p")
            .toleration("key1", "Exists", "", "NoSchedule")
            .info();
        assert!(TaintToleration.filter(&state, &exists, &n).is_success());
        let wrong_effect = pod("p")
            .toleration("key1", "Exists", "", "NoExecute")
            .info();
        assert!(
            !TaintToleration
                .filter(&state, &wrong_effect, &n)
                .is_success()
        );
        let cp = node("cp")
            .taint("node-role.kubernetes.io/control-plane", "", "NoSchedule")
            .info();
        assert_eq!(
            TaintToleration
                .filter(&state, &pod("p").info(), &cp)
                .message(),
            "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"
        );
        // PreferNoSchedule never filters.
        let soft = node("soft").taint("k", "v", "PreferNoSchedule").info();
        assert!(
            TaintToleration
                .filter(&state, &pod("p").info(), &soft)
                .is_success()
        );
    }

    #[test]
    fn prefer_no_schedule_taints_lower_the_score() {
        let nodes = vec![
            node("clean").info(),
            node("one").taint("a", "1", "PreferNoSchedule").info(),
            node("two")
                .taint("a", "1", "PreferNoSchedule")
                .taint("b", "2", "PreferNoSchedule")
                .info(),
        ];
        let snap = snapshot(nodes.clone());
        let p = pod("p")
            .toleration("b", "Exists", "", "PreferNoSchedule")
            .info();
        let mut state = CycleState::new();
        TaintToleration.pre_score(&mut state, &p, &nodes, &snap);
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| TaintToleration.score(&state, &p, n).unwrap())
            .collect();
        assert_eq!(scores, [0, 1, 1]);
        TaintToleration.normalize(&state, &p, &nodes, &mut scores);
        assert_eq!(scores, [100, 0, 0]);
    }
}
