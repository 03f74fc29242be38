//! SchedulingGates (PreEnqueue): a pod with `spec.schedulingGates` is not scheduled until every
//! gate is removed; it waits outside the active queue meanwhile.

use std::sync::Arc;

use serde_json::Value;

use crate::extension_points;
use crate::framework::events::Resource;
use crate::framework::{ActionType, ClusterEvent, Handle, Plugin, PreEnqueuePlugin, Status};
use crate::nodeinfo::PodInfo;

/// The plugin name.
pub const NAME: &str = "SchedulingGates";

/// The plugin.
pub struct SchedulingGates;

/// Factory.
pub fn new(_args: Option<&Value>, _handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(SchedulingGates))
}

impl Plugin for SchedulingGates {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![ClusterEvent::new(
            Resource::Pod,
            ActionType::UPDATE_POD_SCHEDULING_GATES_ELIMINATED,
            "PodSchedulingGatesEliminated",
        )]
    }
    extension_points!(as_pre_enqueue => PreEnqueuePlugin);
}

impl PreEnqueuePlugin for SchedulingGates {
    fn pre_enqueue(&self, pod: &PodInfo) -> Status {
        let gates: Vec<&str> = pod
            .pod
            .spec
            .iter()
            .flat_map(|s| s.scheduling_gates.iter().flatten())
            .map(|g| g.name.as_str())
            .collect();
        if gates.is_empty() {
            Status::success()
        } else {
            Status::unresolvable(format!(
                "waiting for scheduling gates: [{}]",
                gates.join(" ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::plugins::testing::pod;
    use k8s_openapi::api::core::v1::PodSchedulingGate;

    #[test]
    fn gated_pods_wait_with_upstreams_message() {
        // Upstream docs: a pod with gates "example.com/foo" and "example.com/bar" stays
        // SchedulingGated until both are removed.
        let mut p = pod("test-pod");
        p.0.spec.as_mut().unwrap().scheduling_gates = Some(vec![
            PodSchedulingGate {
                name: "example.com/foo".into(),
            },
            PodSchedulingGate {
                name: "example.com/bar".into(),
            },
        ]);
        let s = SchedulingGates.pre_enqueue(&p.clone().info());
        assert_eq!(s.code(), Code::UnschedulableAndUnresolvable);
        assert_eq!(
            s.message(),
            "waiting for scheduling gates: [example.com/foo example.com/bar]"
        );
        p.0.spec.as_mut().unwrap().scheduling_gates = None;
        assert!(SchedulingGates.pre_enqueue(&p.info()).is_success());
    }
}
