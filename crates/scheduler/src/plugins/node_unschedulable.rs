//! NodeUnschedulable (Filter): cordoned nodes (`spec.unschedulable`) take only pods that
//! tolerate the `node.kubernetes.io/unschedulable:NoSchedule` taint.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Taint;
use serde_json::Value;

use crate::extension_points;
use crate::framework::events::Resource;
use crate::framework::{
    ActionType, ClusterEvent, CycleState, FilterPlugin, Handle, Plugin, Status,
};
use crate::helpers::{pod_tolerations, tolerated};
use crate::nodeinfo::{NodeInfo, PodInfo};

/// The plugin name.
pub const NAME: &str = "NodeUnschedulable";
/// Upstream's reason.
pub const REASON: &str = "node(s) were unschedulable";

/// The plugin.
pub struct NodeUnschedulable;

/// Factory.
pub fn new(_args: Option<&Value>, _handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(NodeUnschedulable))
}

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            ClusterEvent::new(
                Resource::Node,
                ActionType::ADD | ActionType::UPDATE_NODE_TAINT,
                "NodeChange",
            ),
            ClusterEvent::new(
                Resource::Pod,
                ActionType::UPDATE_POD_TOLERATIONS,
                "PodTolerationChange",
            ),
        ]
    }
    extension_points!(as_filter => FilterPlugin);
}

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !node.unschedulable {
            return Status::success();
        }
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if tolerated(pod_tolerations(&pod.pod), &taint) {
            Status::success()
        } else {
            Status::unresolvable(REASON)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};

    #[test]
    fn cordoned_nodes_take_only_tolerating_pods() {
        let state = CycleState::new();
        let cordoned = node("n").unschedulable().info();
        let s = NodeUnschedulable.filter(&state, &pod("p").info(), &cordoned);
        assert_eq!(s.message(), REASON);
        let tolerant = pod("p").toleration(
            "node.kubernetes.io/unschedulable",
            "Exists",
            "",
            "NoSchedule",
        );
        assert!(
            NodeUnschedulable
                .filter(&state, &tolerant.info(), &cordoned)
                .is_success()
        );
        assert!(
            NodeUnschedulable
                .filter(&state, &pod("p").info(), &node("m").info())
                .is_success()
        );
    }
}
