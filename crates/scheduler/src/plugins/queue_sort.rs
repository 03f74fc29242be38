//! PrioritySort (QueueSort): higher `spec.priority` first; equal priorities in the order they
//! entered the queue.

use std::sync::Arc;

use serde_json::Value;

use crate::extension_points;
use crate::framework::{Handle, Plugin, QueueSortPlugin};
use crate::queue::QueuedPodInfo;

/// The plugin name.
pub const NAME: &str = "PrioritySort";

/// The plugin.
pub struct PrioritySort;

/// Factory.
pub fn new(_args: Option<&Value>, _handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(PrioritySort))
}

impl Plugin for PrioritySort {
    fn name(&self) -> &'static str {
        NAME
    }
    extension_points!(as_queue_sort => QueueSortPlugin);
}

impl QueueSortPlugin for PrioritySort {
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool {
        let (pa, pb) = (a.pod.priority, b.pod.priority);
        pa > pb || (pa == pb && a.timestamp < b.timestamp)
    }
}
