//! Cluster events: changes that may make an unschedulable pod schedulable. Plugins declare the
//! events that can undo their rejections; the queue moves a pod back to the active queue only
//! for events that one of the plugins that rejected it declared (upstream
//! `framework.ClusterEvent` and `EnqueueExtensions`).

use std::fmt;

/// What kind of object changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// A pod assigned to a node (added, changed, deleted).
    Pod,
    /// A node.
    Node,
    /// A PersistentVolume.
    PersistentVolume,
    /// A PersistentVolumeClaim.
    PersistentVolumeClaim,
    /// A StorageClass.
    StorageClass,
    /// A CSIDriver (whether it publishes storage capacity).
    CsiDriver,
    /// A CSIStorageCapacity.
    CsiStorageCapacity,
    /// A Namespace (labels matter to namespace selectors).
    Namespace,
    /// A Service (default topology spread selectors).
    Service,
    /// Anything: matches every resource.
    Wildcard,
}

/// Which change happened, as bit flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActionType(pub u32);

impl ActionType {
    /// Created.
    pub const ADD: ActionType = ActionType(1);
    /// Deleted.
    pub const DELETE: ActionType = ActionType(1 << 1);
    /// A node's allocatable changed.
    pub const UPDATE_NODE_ALLOCATABLE: ActionType = ActionType(1 << 2);
    /// A node's labels changed.
    pub const UPDATE_NODE_LABEL: ActionType = ActionType(1 << 3);
    /// A node's taints (or `spec.unschedulable`) changed.
    pub const UPDATE_NODE_TAINT: ActionType = ActionType(1 << 4);
    /// A node's conditions changed.
    pub const UPDATE_NODE_CONDITION: ActionType = ActionType(1 << 5);
    /// A node's annotations changed.
    pub const UPDATE_NODE_ANNOTATION: ActionType = ActionType(1 << 6);
    /// A pod's labels changed.
    pub const UPDATE_POD_LABEL: ActionType = ActionType(1 << 7);
    /// A pod's requests went down.
    pub const UPDATE_POD_SCALE_DOWN: ActionType = ActionType(1 << 8);
    /// A pod's tolerations changed.
    pub const UPDATE_POD_TOLERATIONS: ActionType = ActionType(1 << 9);
    /// A pod's scheduling gates were all removed.
    pub const UPDATE_POD_SCHEDULING_GATES_ELIMINATED: ActionType = ActionType(1 << 10);
    /// Any other update.
    pub const UPDATE_OTHER: ActionType = ActionType(1 << 11);
    /// An assigned pod started terminating (its deletion timestamp was set).
    pub const UPDATE_POD_TERMINATING: ActionType = ActionType(1 << 12);
    /// Any update.
    pub const UPDATE: ActionType = ActionType(((1 << 13) - 1) & !3);
    /// Anything.
    pub const ALL: ActionType = ActionType((1 << 13) - 1);

    /// Both sets of flags.
    pub const fn or(self, other: ActionType) -> ActionType {
        ActionType(self.0 | other.0)
    }

    /// Whether any flag is shared.
    pub fn intersects(self, other: ActionType) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for ActionType {
    type Output = ActionType;
    fn bitor(self, rhs: ActionType) -> ActionType {
        self.or(rhs)
    }
}

impl std::ops::BitOrAssign for ActionType {
    fn bitor_assign(&mut self, rhs: ActionType) {
        self.0 |= rhs.0;
    }
}

/// One cluster event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterEvent {
    /// What changed.
    pub resource: Resource,
    /// How.
    pub action: ActionType,
    /// A label for metrics and logs.
    pub label: &'static str,
}

impl ClusterEvent {
    /// An event.
    pub const fn new(resource: Resource, action: ActionType, label: &'static str) -> ClusterEvent {
        ClusterEvent {
            resource,
            action,
            label,
        }
    }

    /// Whether `self` (a registration) covers `event` (what happened).
    pub fn matches(&self, event: &ClusterEvent) -> bool {
        (self.resource == Resource::Wildcard || self.resource == event.resource)
            && self.action.intersects(event.action)
    }
}

impl fmt::Display for ClusterEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label)
    }
}

/// A pod assigned to a node was added.
pub const ASSIGNED_POD_ADD: ClusterEvent =
    ClusterEvent::new(Resource::Pod, ActionType::ADD, "AssignedPodAdd");
/// A pod assigned to a node was deleted (or finished).
pub const ASSIGNED_POD_DELETE: ClusterEvent =
    ClusterEvent::new(Resource::Pod, ActionType::DELETE, "AssignedPodDelete");
/// A node was added.
pub const NODE_ADD: ClusterEvent = ClusterEvent::new(Resource::Node, ActionType::ADD, "NodeAdd");
/// Everything: used when binding fails or a pod leaves the unschedulable set by timeout.
pub const WILDCARD: ClusterEvent =
    ClusterEvent::new(Resource::Wildcard, ActionType::ALL, "WildCardEvent");
/// Unschedulable pods stayed too long.
pub const UNSCHEDULABLE_TIMEOUT: ClusterEvent =
    ClusterEvent::new(Resource::Wildcard, ActionType::ALL, "UnschedulableTimeout");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_match_by_resource_and_any_shared_action() {
        let reg = ClusterEvent::new(
            Resource::Node,
            ActionType::ADD | ActionType::UPDATE_NODE_TAINT,
            "",
        );
        let taint = ClusterEvent::new(Resource::Node, ActionType::UPDATE_NODE_TAINT, "");
        let label = ClusterEvent::new(Resource::Node, ActionType::UPDATE_NODE_LABEL, "");
        assert!(reg.matches(&taint));
        assert!(!reg.matches(&label));
        assert!(!reg.matches(&ASSIGNED_POD_DELETE));
        assert!(WILDCARD.matches(&label));
        assert!(ActionType::UPDATE.intersects(ActionType::UPDATE_POD_LABEL));
        assert!(!ActionType::UPDATE.intersects(ActionType::ADD));
    }
}
