//! NodePorts (PreFilter, Filter): a pod's host ports must be free on the node (same port and
//! protocol conflict when either host IP is 0.0.0.0 or both are equal).

use std::sync::Arc;

use serde_json::Value;

use crate::cache::Snapshot;
use crate::extension_points;
use crate::framework::events::Resource;
use crate::framework::{
    ActionType, ClusterEvent, CycleState, EventObject, FilterPlugin, Handle, Plugin,
    PreFilterPlugin, PreFilterResult, Status, events,
};
use crate::nodeinfo::{NodeInfo, PodInfo};

/// The plugin name.
pub const NAME: &str = "NodePorts";
/// Upstream's reason.
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// The plugin.
pub struct NodePorts;

/// Factory.
pub fn new(_args: Option<&Value>, _handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(NodePorts))
}

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            ClusterEvent::new(Resource::Pod, ActionType::DELETE, "AssignedPodDelete"),
            ClusterEvent::new(Resource::Node, ActionType::ADD, "NodeAdd"),
        ]
    }
    fn queueing_hint(
        &self,
        event: &ClusterEvent,
        pod: &PodInfo,
        old: &EventObject<'_>,
        _new: &EventObject<'_>,
    ) -> bool {
        if *event == events::ASSIGNED_POD_DELETE
            && let EventObject::Pod(deleted) = old
        {
            // Only a deleted pod holding one of our ports can help.
            let deleted = PodInfo::new(Arc::new((*deleted).clone()));
            return deleted
                .host_ports
                .iter()
                .any(|d| pod.host_ports.iter().any(|p| p.conflicts(d)));
        }
        true
    }
    extension_points!(as_pre_filter => PreFilterPlugin, as_filter => FilterPlugin);
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(
        &self,
        _state: &mut CycleState,
        pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (Status, PreFilterResult) {
        if pod.host_ports.is_empty() {
            (Status::skip(), None)
        } else {
            (Status::success(), None)
        }
    }
}

impl FilterPlugin for NodePorts {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let conflict = pod
            .host_ports
            .iter()
            .any(|want| node.used_ports.iter().any(|used| used.conflicts(want)));
        if conflict {
            Status::unschedulable(REASON)
        } else {
            Status::success()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};

    #[test]
    fn host_ports_must_be_free() {
        let state = CycleState::new();
        let n = node("n").with(vec![pod("web").host_port(8080, "", "TCP")]);
        assert_eq!(
            NodePorts
                .filter(
                    &state,
                    &pod("p").host_port(8080, "127.0.0.1", "TCP").info(),
                    &n
                )
                .message(),
            REASON
        );
        assert!(
            NodePorts
                .filter(&state, &pod("p").host_port(8080, "", "UDP").info(), &n)
                .is_success()
        );
        assert!(
            NodePorts
                .filter(&state, &pod("p").host_port(8081, "", "TCP").info(), &n)
                .is_success()
        );
        let (s, _) = NodePorts.pre_filter(
            &mut CycleState::new(),
            &pod("none").info(),
            &Snapshot::default(),
        );
        assert!(s.is_skip());
    }
}
