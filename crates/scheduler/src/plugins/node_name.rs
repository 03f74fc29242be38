//! NodeName (Filter): a pod that names a node in `spec.nodeName` fits only there.

use std::sync::Arc;

use serde_json::Value;

use crate::extension_points;
use crate::framework::ClusterEvent;
use crate::framework::{CycleState, FilterPlugin, Handle, Plugin, Status, events};
use crate::nodeinfo::{NodeInfo, PodInfo};

/// The plugin name.
pub const NAME: &str = "NodeName";
/// Upstream's reason.
pub const REASON: &str = "node(s) didn't match the requested node name";

/// The plugin.
pub struct NodeName;

/// Factory.
pub fn new(_args: Option<&Value>, _handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(NodeName))
}

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![events::NODE_ADD]
    }
    extension_points!(as_filter => FilterPlugin);
}

impl FilterPlugin for NodeName {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match pod.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(wanted) if !wanted.is_empty() && wanted != node.name => {
                Status::unresolvable(REASON)
            }
            _ => Status::success(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};

    #[test]
    fn only_the_named_node_fits() {
        let state = CycleState::new();
        let p = pod("p").node("n1").info();
        assert!(NodeName.filter(&state, &p, &node("n1").info()).is_success());
        assert_eq!(
            NodeName.filter(&state, &p, &node("n2").info()).message(),
            REASON
        );
        assert!(
            NodeName
                .filter(&state, &pod("q").info(), &node("n2").info())
                .is_success()
        );
    }
}
