//! Informer changes → cache, queue and cluster events (upstream `eventhandlers.go`).
//!
//! Pods assigned to a node feed the cache (a bound pod confirms an assumed one); unassigned pods
//! naming one of our profiles feed the queue; pods naming another scheduler are left alone.
//! Node, assigned-pod, volume, namespace and service changes become [`ClusterEvent`]s that move
//! unschedulable pods back. A subscriber that lagged reconciles everything from the caches.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Resource as KubeResource, ResourceExt};
use serde::de::DeserializeOwned;
use skiff_runtime::CancellationToken;
use skiff_runtime::informer::{Change, Informer, Notification};

use crate::framework::events::{self, Resource};
use crate::framework::{ActionType, ClusterEvent, EventObject};
use crate::nodeinfo::pod_key;
use crate::resources::pod_requests;
use crate::scheduler::Shared;

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Which node changes happened (upstream `nodeSchedulingPropertiesChange`).
pub fn node_changes(old: &Node, new: &Node) -> ActionType {
    let mut a = ActionType(0);
    let status = |n: &Node| n.status.clone().unwrap_or_default();
    let (os, ns) = (status(old), status(new));
    if os.allocatable != ns.allocatable {
        a |= ActionType::UPDATE_NODE_ALLOCATABLE;
    }
    if old.metadata.labels != new.metadata.labels {
        a |= ActionType::UPDATE_NODE_LABEL;
    }
    let spec = |n: &Node| n.spec.clone().unwrap_or_default();
    let (osp, nsp) = (spec(old), spec(new));
    if osp.taints != nsp.taints || osp.unschedulable != nsp.unschedulable {
        a |= ActionType::UPDATE_NODE_TAINT;
    }
    let conditions = |s: &k8s_openapi::api::core::v1::NodeStatus| {
        s.conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.clone(), c.status.clone()))
            .collect::<Vec<_>>()
    };
    if conditions(&os) != conditions(&ns) {
        a |= ActionType::UPDATE_NODE_CONDITION;
    }
    if old.metadata.annotations != new.metadata.annotations {
        a |= ActionType::UPDATE_NODE_ANNOTATION;
    }
    a
}

/// Which changes of an assigned pod matter to others (labels, lower requests, the start of
/// its termination).
pub fn pod_changes(old: &Pod, new: &Pod) -> ActionType {
    let mut a = ActionType(0);
    if old.metadata.deletion_timestamp.is_none() && new.metadata.deletion_timestamp.is_some() {
        a |= ActionType::UPDATE_POD_TERMINATING;
    }
    if old.metadata.labels != new.metadata.labels {
        a |= ActionType::UPDATE_POD_LABEL;
    }
    let (o, n) = (pod_requests(old), pod_requests(new));
    if n.milli_cpu < o.milli_cpu || n.memory < o.memory || n.ephemeral_storage < o.ephemeral_storage
    {
        a |= ActionType::UPDATE_POD_SCALE_DOWN;
    }
    a
}

/// Apply one pod change.
pub fn on_pod(shared: &Shared, change: &Change<Pod>) {
    match change {
        Change::Applied { old, new } => {
            let assigned = !node_name(new).is_empty();
            let was_assigned = old.as_ref().is_some_and(|o| !node_name(o).is_empty());
            if assigned {
                if terminal(new) {
                    shared.cache.remove_pod(new);
                    shared.queue.move_on_event(
                        &events::ASSIGNED_POD_DELETE,
                        &EventObject::Pod(new),
                        &EventObject::None,
                    );
                    return;
                }
                shared.cache.add_pod(new.clone());
                if !was_assigned {
                    if old.is_some() || shared.queue.contains(&pod_key(new)) {
                        shared.queue.delete(new);
                    }
                    shared.queue.move_on_event(
                        &events::ASSIGNED_POD_ADD,
                        &EventObject::None,
                        &EventObject::Pod(new),
                    );
                } else if let Some(old) = old {
                    let action = pod_changes(old, new);
                    if !action.is_empty() {
                        let event = ClusterEvent::new(Resource::Pod, action, "AssignedPodUpdate");
                        shared.queue.move_on_event(
                            &event,
                            &EventObject::Pod(old),
                            &EventObject::Pod(new),
                        );
                    }
                }
            } else if shared.responsible_for(new) && !terminal(new) {
                match old {
                    None => shared.queue.add(new.clone()),
                    Some(o) => shared.queue.update(Some(o), new.clone()),
                }
            } else if terminal(new) {
                shared.queue.delete(new);
            }
        }
        Change::Deleted(pod) => {
            if node_name(pod).is_empty() {
                shared.queue.delete(pod);
            } else {
                shared.cache.remove_pod(pod);
                shared.queue.move_on_event(
                    &events::ASSIGNED_POD_DELETE,
                    &EventObject::Pod(pod),
                    &EventObject::None,
                );
            }
        }
    }
}

/// Apply one node change.
pub fn on_node(shared: &Shared, change: &Change<Node>) {
    match change {
        Change::Applied { old, new } => {
            shared.cache.add_node(new.clone());
            match old {
                None => shared.queue.move_on_event(
                    &events::NODE_ADD,
                    &EventObject::None,
                    &EventObject::Node(new),
                ),
                Some(old) => {
                    let action = node_changes(old, new);
                    if !action.is_empty() {
                        let event = ClusterEvent::new(Resource::Node, action, "NodeUpdate");
                        shared.queue.move_on_event(
                            &event,
                            &EventObject::Node(old),
                            &EventObject::Node(new),
                        );
                    }
                }
            }
        }
        Change::Deleted(node) => {
            shared.cache.remove_node(&node.name_any());
            let event = ClusterEvent::new(Resource::Node, ActionType::DELETE, "NodeDelete");
            shared
                .queue
                .move_on_event(&event, &EventObject::Node(node), &EventObject::None);
        }
    }
}

/// Make cache and queue agree with the pod informer (after a lag, and at start).
pub fn resync_pods(shared: &Shared, pods: &Informer<Pod>) {
    let mut seen = HashSet::new();
    for pod in pods.list() {
        let key = pod_key(&pod);
        seen.insert(key.clone());
        if !node_name(&pod).is_empty() {
            if terminal(&pod) {
                shared.cache.remove_pod(&pod);
            } else {
                shared.cache.add_pod(pod.clone());
            }
            shared.queue.delete_key(&key);
        } else if shared.responsible_for(&pod)
            && !terminal(&pod)
            && !shared.cache.is_assumed(&key)
            && !shared.queue.contains(&key)
        {
            shared.queue.add(pod.clone());
        }
    }
    for (key, assumed) in shared.cache.pod_keys() {
        if !assumed && !seen.contains(&key) {
            shared.cache.remove_pod_key(&key);
        }
    }
    for key in shared.queue.keys() {
        if !seen.contains(&key) {
            shared.queue.delete_key(&key);
        }
    }
    shared.queue.move_all();
}

/// Make the cache's nodes agree with the node informer.
pub fn resync_nodes(shared: &Shared, nodes: &Informer<Node>) {
    let mut seen = HashSet::new();
    for node in nodes.list() {
        seen.insert(node.name_any());
        shared.cache.add_node(node);
    }
    for name in shared.cache.node_names() {
        if !seen.contains(&name) {
            shared.cache.remove_node(&name);
        }
    }
    shared.queue.move_all();
}

/// Follow an informer: reconcile once it has listed, then `apply` each change, and `resync`
/// again after a lag. The returned receiver fires after the first reconciliation.
///
/// Reconciling on the task that applies the changes matters: a reconciliation running beside
/// it would compare the queue against an older list and drop pods queued meanwhile.
pub fn follow<K>(
    informer: &Informer<K>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    apply: fn(&Shared, &Change<K>),
    resync: fn(&Shared, &Informer<K>),
) -> tokio::sync::oneshot::Receiver<()>
where
    K: KubeResource
        + ResourceExt
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let mut sub = informer.subscribe();
    let informer = informer.clone();
    let (primed, primed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = informer.wait_synced() => {}
        }
        // Changes that arrive from here on wait in the subscription and are applied after
        // this, in order, so whatever they add or remove stays added or removed.
        resync(&shared, &informer);
        let _ = primed.send(());
        loop {
            let n = tokio::select! {
                _ = stop.cancelled() => return,
                n = sub.recv() => n,
            };
            match n {
                Some(Notification::Change(c)) => apply(&shared, &c),
                Some(Notification::Lagged) => {
                    tracing::info!("scheduler fell behind a watch; reconciling from the cache");
                    resync(&shared, &informer);
                }
                None => return,
            }
        }
    });
    primed_rx
}

/// Follow a kind whose changes only move pods (`resource` events).
pub fn follow_events<K>(
    informer: &Informer<K>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    resource: Resource,
) where
    K: KubeResource
        + ResourceExt
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let mut sub = informer.subscribe();
    tokio::spawn(async move {
        loop {
            let n = tokio::select! {
                _ = stop.cancelled() => return,
                n = sub.recv() => n,
            };
            let action = match n {
                Some(Notification::Change(Change::Applied { old: None, .. })) => ActionType::ADD,
                Some(Notification::Change(Change::Applied { .. })) => ActionType::UPDATE,
                Some(Notification::Change(Change::Deleted(_))) => ActionType::DELETE,
                Some(Notification::Lagged) => ActionType::ALL,
                None => return,
            };
            let event = ClusterEvent::new(resource, action, "ObjectChange");
            shared
                .queue
                .move_on_event(&event, &EventObject::None, &EventObject::None);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};

    #[test]
    fn node_changes_are_classified() {
        let a = node("n").0;
        let b = node("n").label("zone", "a").taint("k", "v", "NoSchedule").0;
        let c = node("n").alloc(&[("cpu", "8")]).0;
        let changes = node_changes(&a, &b);
        assert!(changes.intersects(ActionType::UPDATE_NODE_LABEL));
        assert!(changes.intersects(ActionType::UPDATE_NODE_TAINT));
        assert!(!changes.intersects(ActionType::UPDATE_NODE_ALLOCATABLE));
        assert!(node_changes(&a, &c).intersects(ActionType::UPDATE_NODE_ALLOCATABLE));
        assert!(node_changes(&a, &a).is_empty());
    }

    #[test]
    fn pod_changes_are_classified() {
        let a = pod("p").req(&[("cpu", "2")]).0;
        let b = pod("p").req(&[("cpu", "1")]).label("x", "y").0;
        let changes = pod_changes(&a, &b);
        assert!(changes.intersects(ActionType::UPDATE_POD_LABEL));
        assert!(changes.intersects(ActionType::UPDATE_POD_SCALE_DOWN));
        assert!(pod_changes(&b, &a).intersects(ActionType::UPDATE_POD_LABEL));
        assert!(!pod_changes(&b, &a).intersects(ActionType::UPDATE_POD_SCALE_DOWN));
        let terminating = pod("p").req(&[("cpu", "2")]).terminating().0;
        assert_eq!(
            pod_changes(&a, &terminating),
            ActionType::UPDATE_POD_TERMINATING
        );
        assert!(pod_changes(&terminating, &terminating).is_empty());
    }

    /// Pods created while the scheduler starts (some listed, most arriving as changes during
    /// and after the first reconciliation) all end up queued: none is reconciled away.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pods_arriving_around_the_first_reconciliation_are_all_queued() {
        use crate::cache::Cache;
        use crate::framework::Handle;
        use crate::metrics::Metrics;
        use crate::plugins::testing::framework_with;
        use crate::queue::{Nominator, SchedulingQueue};
        use kube::runtime::watcher::Event;
        use std::collections::HashMap;
        use std::time::Duration;

        let handle = Handle::for_tests();
        let listers = handle.listers.clone();
        let framework = Arc::new(framework_with(handle));
        let profiles: HashMap<_, _> = [("default-scheduler".to_owned(), framework)].into();
        let queue = Arc::new(SchedulingQueue::new(
            profiles.clone(),
            Arc::new(Nominator::default()),
            Duration::from_secs(1),
            Duration::from_secs(10),
        ));
        let shared = Arc::new(Shared::new(
            Arc::new(Cache::new()),
            queue.clone(),
            profiles,
            listers.clone(),
            Arc::new(Metrics::default()),
            None,
            HashMap::new(),
            0,
        ));
        let informer = listers.pods.clone();
        let primed = follow(
            &informer,
            shared,
            CancellationToken::new(),
            on_pod,
            resync_pods,
        );
        informer.handle(Event::Init);
        for i in 0..50 {
            informer.handle(Event::InitApply(pod(&format!("listed-{i}")).0));
        }
        informer.handle(Event::InitDone);
        let feeder = {
            let informer = informer.clone();
            tokio::spawn(async move {
                for i in 0..2000 {
                    informer.handle(Event::Apply(pod(&format!("new-{i}")).0));
                    if i % 100 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        primed.await.expect("the first reconciliation ran");
        feeder.await.unwrap();
        let all_queued = || {
            (0..50).all(|i| queue.contains(&format!("uid-listed-{i}")))
                && (0..2000).all(|i| queue.contains(&format!("uid-new-{i}")))
        };
        for _ in 0..200 {
            if all_queued() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(queue.pending().active, 2050, "every pod is queued");
    }
}
