//! The extension points: one small trait each. A plugin is a [`Plugin`] that answers the
//! `as_*` accessors for the extension points it implements, so one configuration entry
//! (`multiPoint`) can enable it everywhere at once, as upstream.
//!
//! Filter and Score take only the cycle state, the pod and one [`NodeInfo`] from the
//! snapshot: they are pure functions, testable without any API server. The points that talk to
//! the API (PostFilter's preemption, PreBind, Bind) are async.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::cycle_state::CycleState;
use super::events::ClusterEvent;
use super::status::Status;
use crate::cache::Snapshot;
use crate::nodeinfo::{NodeInfo, PodInfo};
use crate::queue::QueuedPodInfo;

/// The object a cluster event is about, for queueing hints.
#[derive(Debug, Clone, Copy)]
pub enum EventObject<'a> {
    /// No object (added: no old one; deleted: no new one; or an event without payload).
    None,
    /// A pod.
    Pod(&'a k8s_openapi::api::core::v1::Pod),
    /// A node.
    Node(&'a k8s_openapi::api::core::v1::Node),
}

/// Every plugin.
pub trait Plugin: Send + Sync + 'static {
    /// The name used in configuration (upstream's plugin names).
    fn name(&self) -> &'static str;

    /// The cluster events that may make pods this plugin rejected schedulable again.
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        Vec::new()
    }

    /// Queueing hint: whether `event` (with the object before and after) may make `pod`,
    /// which this plugin rejected, schedulable. Saying yes when unsure is always correct.
    fn queueing_hint(
        &self,
        _event: &ClusterEvent,
        _pod: &PodInfo,
        _old: &EventObject<'_>,
        _new: &EventObject<'_>,
    ) -> bool {
        true
    }

    /// This plugin as a PreEnqueue plugin.
    fn as_pre_enqueue(&self) -> Option<&dyn PreEnqueuePlugin> {
        None
    }
    /// This plugin as a QueueSort plugin.
    fn as_queue_sort(&self) -> Option<&dyn QueueSortPlugin> {
        None
    }
    /// This plugin as a PreFilter plugin.
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        None
    }
    /// This plugin as a Filter plugin.
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        None
    }
    /// This plugin as a PostFilter plugin.
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        None
    }
    /// This plugin as a PreScore plugin.
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        None
    }
    /// This plugin as a Score plugin.
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        None
    }
    /// This plugin as a Reserve plugin.
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        None
    }
    /// This plugin as a Permit plugin.
    fn as_permit(&self) -> Option<&dyn PermitPlugin> {
        None
    }
    /// This plugin as a PreBind plugin.
    fn as_pre_bind(&self) -> Option<&dyn PreBindPlugin> {
        None
    }
    /// This plugin as a Bind plugin.
    fn as_bind(&self) -> Option<&dyn BindPlugin> {
        None
    }
}

/// Decides whether a pod may enter the active queue at all (e.g. scheduling gates).
pub trait PreEnqueuePlugin: Plugin {
    /// Success lets the pod be scheduled; anything else keeps it waiting.
    fn pre_enqueue(&self, pod: &PodInfo) -> Status;
}

/// Orders the active queue.
pub trait QueueSortPlugin: Plugin {
    /// Whether `a` should be scheduled before `b`.
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool;
}

/// Node names a PreFilter plugin limits the cycle to (`None`: every node).
pub type PreFilterResult = Option<HashSet<String>>;

/// Runs once per cycle before Filter: precomputes state, or rejects the pod outright.
pub trait PreFilterPlugin: Plugin {
    /// Compute state for Filter; Skip means this plugin's Filter need not run.
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (Status, PreFilterResult);

    /// Whether [`PreFilterPlugin::add_pod`]/[`PreFilterPlugin::remove_pod`] do anything.
    fn has_extensions(&self) -> bool {
        false
    }

    /// Update the precomputed state as if `added` ran on `node` (preemption, nominated pods).
    fn add_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _added: &PodInfo,
        _node: &NodeInfo,
    ) -> Status {
        Status::success()
    }

    /// Update the precomputed state as if `removed` left `node`.
    fn remove_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _removed: &PodInfo,
        _node: &NodeInfo,
    ) -> Status {
        Status::success()
    }
}

/// Whether the pod can run on one node: a pure function of the state, the pod and the node.
pub trait FilterPlugin: Plugin {
    /// Success when the pod fits.
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// Why each node was rejected in the Filter phase.
pub type NodeToStatus = BTreeMap<String, Status>;

/// What a PostFilter plugin achieved.
#[derive(Debug, Clone, Default)]
pub struct PostFilterResult {
    /// The node the pod should be nominated to (`Some("")` clears a nomination).
    pub nominated_node_name: Option<String>,
}

/// What a PostFilter plugin gets to work with.
pub struct PostFilterContext<'a> {
    /// The cycle state after PreFilter.
    pub state: &'a CycleState,
    /// The pod that did not fit.
    pub pod: &'a PodInfo,
    /// The snapshot the cycle used.
    pub snapshot: &'a Snapshot,
    /// Why each node was rejected.
    pub statuses: &'a NodeToStatus,
    /// The profile's framework, to re-run filters while simulating.
    pub framework: &'a super::Framework,
}

/// Runs when no node fits (preemption).
#[async_trait]
pub trait PostFilterPlugin: Plugin {
    /// Try to make the pod schedulable.
    async fn post_filter(&self, ctx: PostFilterContext<'_>) -> (Status, Option<PostFilterResult>);
}

/// Runs once per cycle before Score, over the nodes that passed Filter.
pub trait PreScorePlugin: Plugin {
    /// Compute state for Score; Skip means this plugin's Score need not run.
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status;
}

/// Ranks a feasible node: a pure function of the state, the pod and the node.
pub trait ScorePlugin: Plugin {
    /// The node's score (0-100 after normalization).
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status>;

    /// Rescale the raw scores of `nodes` in place to 0-100.
    fn normalize(
        &self,
        _state: &CycleState,
        _pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        _scores: &mut [i64],
    ) -> Status {
        Status::success()
    }
}

/// Keeps plugin-side state in step with the cache's assumption that the pod runs on `node`.
pub trait ReservePlugin: Plugin {
    /// The pod was assumed onto `node`.
    fn reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status;
    /// The assumption was abandoned (called in reverse order).
    fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str);
}

/// Approves, rejects or delays the binding.
pub trait PermitPlugin: Plugin {
    /// Success, a rejection, or Wait with a timeout.
    fn permit(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> (Status, Duration);
}

/// Work before binding (e.g. binding volumes).
#[async_trait]
pub trait PreBindPlugin: Plugin {
    /// Success to go on.
    async fn pre_bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status;
}

/// Binds the pod; Skip passes the pod to the next Bind plugin.
#[async_trait]
pub trait BindPlugin: Plugin {
    /// Bind `pod` to `node`.
    async fn bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status;
}
