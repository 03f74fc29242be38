//! The garbage collector (upstream pkg/controller/garbagecollector): a graph of
//! ownerReferences over every kind the API server serves (found by discovery and refreshed,
//! so custom resources join), built from metadata-only informers. It deletes dependents whose
//! owners are gone (background deletion and dangling references), runs foreground deletion
//! (dependents first; the owner's `foregroundDeletion` finalizer goes once no dependent with
//! `blockOwnerDeletion` is left) and orphaning (the `orphan` finalizer: strip the owner from
//! its dependents' references, then release the owner).
//!
//! Work items are uids in one queue: `Delete` asks "should this object still exist?" and
//! `Orphan` processes an owner being deleted with the orphan policy. Owners missing from the
//! graph are looked up live (and remembered as absent), so a dependent seen before its
//! owner's informer caught up is never deleted by mistake.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::core::PartialObjectMeta;
use parking_lot::{Mutex, RwLock};
use serde_json::json;
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::discovery::Resources;
use skiff_runtime::informer::Notification;
use skiff_runtime::{CancellationToken, Change, Informer, WorkQueue};
use tokio::sync::mpsc;

use crate::context::Context;
use crate::{During, Error, Result};

/// The finalizer of foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of orphaning deletion.
pub const ORPHAN: &str = "orphan";

type Meta = PartialObjectMeta<DynamicObject>;

/// Resources the collector leaves alone (upstream `DefaultIgnoredResources`).
fn ignored(r: &ApiResource) -> bool {
    r.plural == "events" && (r.group.is_empty() || r.group == "events.k8s.io")
}

/// Who an object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The resource it is served as.
    pub resource: ApiResource,
    /// Namespace ("" when cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Uid.
    pub uid: String,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.resource.kind, self.name)?;
        if !self.namespace.is_empty() {
            write!(f, " in {}", self.namespace)?;
        }
        write!(f, " ({})", self.uid)
    }
}

/// One object in the graph.
#[derive(Debug, Clone)]
pub struct Node {
    /// Who it is.
    pub identity: Identity,
    /// Its ownerReferences.
    pub owners: Vec<OwnerReference>,
    /// Uids of objects that reference it.
    pub dependents: HashSet<String>,
    /// Has a deletionTimestamp.
    pub being_deleted: bool,
    /// Has a deletionTimestamp and the foregroundDeletion finalizer.
    pub deleting_dependents: bool,
    /// Has a deletionTimestamp and the orphan finalizer.
    pub orphaning: bool,
}

/// The ownership graph: nodes by uid.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    /// Dependents referencing a uid not (yet) in the graph.
    pending_dependents: HashMap<String, HashSet<String>>,
}

/// What a graph change asks the workers to look at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Work {
    /// Check whether the object should still exist (or finish its foreground deletion).
    Delete(String),
    /// Orphan the dependents of an owner, then drop its orphan finalizer.
    Orphan(String),
}

impl std::fmt::Display for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Work::Delete(uid) => write!(f, "delete?{uid}"),
            Work::Orphan(uid) => write!(f, "orphan:{uid}"),
        }
    }
}

fn finalizers(meta: &Meta) -> &[String] {
    meta.metadata.finalizers.as_deref().unwrap_or(&[])
}

impl Graph {
    /// The node with `uid`.
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// How many objects the graph holds.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Apply an observed object; returns the work it causes (upstream `processGraphChanges`).
    pub fn upsert(&mut self, resource: &ApiResource, meta: &Meta) -> Vec<Work> {
        let Some(uid) = meta.metadata.uid.clone() else {
            return Vec::new();
        };
        let deleting = meta.metadata.deletion_timestamp.is_some();
        let fins = finalizers(meta);
        let identity = Identity {
            resource: resource.clone(),
            namespace: meta.metadata.namespace.clone().unwrap_or_default(),
            name: meta.metadata.name.clone().unwrap_or_default(),
            uid: uid.clone(),
        };
        let owners = meta.metadata.owner_references.clone().unwrap_or_default();
        let mut work = Vec::new();
        let previous = self.nodes.remove(&uid);
        let mut dependents = previous
            .as_ref()
            .map(|p| p.dependents.clone())
            .unwrap_or_default();
        if let Some(waiting) = self.pending_dependents.remove(&uid) {
            dependents.extend(waiting);
        }
        let node = Node {
            identity,
            owners: owners.clone(),
            dependents,
            being_deleted: deleting,
            deleting_dependents: deleting && fins.iter().any(|f| f == FOREGROUND),
            orphaning: deleting && fins.iter().any(|f| f == ORPHAN),
        };
        let old_owners: Vec<OwnerReference> = previous
            .as_ref()
            .map(|p| p.owners.clone())
            .unwrap_or_default();
        // Owner links that went away or changed their blocking flag.
        for old in &old_owners {
            let kept = owners.iter().find(|o| o.uid == old.uid);
            if kept.is_none() {
                self.unlink(&old.uid, &uid);
            }
            if kept.is_none_or(|k| k.block_owner_deletion != old.block_owner_deletion)
                && self
                    .nodes
                    .get(&old.uid)
                    .is_some_and(|o| o.deleting_dependents)
            {
                // The owner may have been waiting for this dependent.
                work.push(Work::Delete(old.uid.clone()));
            }
        }
        let mut check_self = false;
        for owner in &owners {
            match self.nodes.get_mut(&owner.uid) {
                Some(o) => {
                    o.dependents.insert(uid.clone());
                    if o.deleting_dependents {
                        check_self = true;
                    }
                }
                None => {
                    self.pending_dependents
                        .entry(owner.uid.clone())
                        .or_default()
                        .insert(uid.clone());
                    // The owner may not exist: look.
                    check_self = true;
                }
            }
        }
        let was = previous.as_ref();
        if node.deleting_dependents && !was.is_some_and(|p| p.deleting_dependents) {
            // Foreground deletion started: every dependent goes, then the owner.
            work.extend(node.dependents.iter().map(|d| Work::Delete(d.clone())));
            work.push(Work::Delete(uid.clone()));
        } else if node.deleting_dependents {
            work.push(Work::Delete(uid.clone()));
        }
        if node.orphaning {
            work.push(Work::Orphan(uid.clone()));
        }
        if check_self && !owners.is_empty() {
            work.push(Work::Delete(uid.clone()));
        }
        // A dependent gaining or losing owners while its old owners were deleting.
        self.nodes.insert(uid, node);
        work
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(o) = self.nodes.get_mut(owner) {
            o.dependents.remove(dependent);
        }
        if let Some(p) = self.pending_dependents.get_mut(owner) {
            p.remove(dependent);
            if p.is_empty() {
                self.pending_dependents.remove(owner);
            }
        }
    }

    /// Remove a deleted object; returns the work it causes.
    pub fn remove(&mut self, uid: &str) -> Vec<Work> {
        let Some(node) = self.nodes.remove(uid) else {
            return Vec::new();
        };
        let mut work: Vec<Work> = node
            .dependents
            .iter()
            .map(|d| Work::Delete(d.clone()))
            .collect();
        for owner in &node.owners {
            self.unlink(&owner.uid, uid);
            if self
                .nodes
                .get(&owner.uid)
                .is_some_and(|o| o.deleting_dependents)
            {
                work.push(Work::Delete(owner.uid.clone()));
            }
        }
        // Dependents keep referencing the uid; they find it gone when they are processed.
        if !node.dependents.is_empty() {
            self.pending_dependents
                .insert(uid.to_owned(), node.dependents);
        }
        work
    }

    /// Dependents of `uid` that block its deletion (`blockOwnerDeletion: true`).
    pub fn blocking_dependents(&self, uid: &str) -> Vec<Node> {
        let Some(node) = self.nodes.get(uid) else {
            return Vec::new();
        };
        node.dependents
            .iter()
            .filter_map(|d| self.nodes.get(d))
            .filter(|d| {
                d.owners
                    .iter()
                    .any(|o| o.uid == uid && o.block_owner_deletion == Some(true))
            })
            .cloned()
            .collect()
    }

    /// Uids of resources' objects, for detecting removals after a lag.
    fn uids_of(&self, resource: &ApiResource) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| {
                n.identity.resource.plural == resource.plural
                    && n.identity.resource.group == resource.group
            })
            .map(|n| n.identity.uid.clone())
            .collect()
    }
}

/// Owners known to be absent (upstream `absentOwnerCache`): a bounded set of uids.
#[derive(Default)]
struct AbsentOwners {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl AbsentOwners {
    const LIMIT: usize = 500;

    fn contains(&self, uid: &str) -> bool {
        self.set.contains(uid)
    }

    fn add(&mut self, uid: &str) {
        if self.set.insert(uid.to_owned()) {
            self.order.push_back(uid.to_owned());
            if self.order.len() > Self::LIMIT
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

/// How an owner reference stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerState {
    Solid,
    Dangling,
    WaitingForDependents,
}

struct Collector {
    client: Client,
    graph: Arc<Mutex<Graph>>,
    resources: Arc<RwLock<Resources>>,
    absent: Mutex<AbsentOwners>,
}

/// Start the collector.
pub async fn start(ctx: Context) {
    let graph = Arc::new(Mutex::new(Graph::default()));
    let resources = Arc::new(RwLock::new(Resources::default()));
    let queue: WorkQueue<Work> = WorkQueue::default();
    let (changes_tx, changes_rx) = mpsc::unbounded_channel();
    // The graph builder: one task applies every change in order.
    tokio::spawn(build_graph(
        graph.clone(),
        queue.clone(),
        changes_rx,
        ctx.stop.clone(),
    ));
    // Discovery: start monitors for every resource, now and when CRDs appear.
    let first_sync = {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(monitor_resources(
            ctx.clone(),
            resources.clone(),
            changes_tx,
            Some(tx),
        ));
        rx
    };
    tokio::select! {
        _ = ctx.stop.cancelled() => return,
        _ = first_sync => {}
    }
    let collector = Arc::new(Collector {
        client: ctx.client.clone(),
        graph,
        resources,
        absent: Mutex::new(AbsentOwners::default()),
    });
    controller::run(collector, queue, ctx.config.workers(20), ctx.stop.clone()).await;
}

type GraphChange = (ApiResource, GraphEvent);

enum GraphEvent {
    Change(Change<Meta>),
    /// The monitor lagged: here is its whole cache.
    Resync(Vec<Arc<Meta>>),
}

async fn build_graph(
    graph: Arc<Mutex<Graph>>,
    queue: WorkQueue<Work>,
    mut changes: mpsc::UnboundedReceiver<GraphChange>,
    stop: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            next = changes.recv() => next,
        };
        let Some((resource, event)) = next else {
            return;
        };
        let work = {
            let mut g = graph.lock();
            match event {
                GraphEvent::Change(Change::Applied { new, .. }) => g.upsert(&resource, &new),
                GraphEvent::Change(Change::Deleted(gone)) => gone
                    .metadata
                    .uid
                    .as_deref()
                    .map(|u| g.remove(u))
                    .unwrap_or_default(),
                GraphEvent::Resync(all) => {
                    let present: HashSet<String> =
                        all.iter().filter_map(|m| m.metadata.uid.clone()).collect();
                    let mut work = Vec::new();
                    for uid in g.uids_of(&resource) {
                        if !present.contains(&uid) {
                            work.extend(g.remove(&uid));
                        }
                    }
                    for m in all {
                        work.extend(g.upsert(&resource, &m));
                    }
                    work
                }
            }
        };
        for w in work {
            queue.add(w);
        }
    }
}

/// Keep one metadata informer per deletable resource, refreshing discovery periodically.
async fn monitor_resources(
    ctx: Context,
    shared: Arc<RwLock<Resources>>,
    changes: mpsc::UnboundedSender<GraphChange>,
    mut first_sync: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let mut monitors: HashMap<String, CancellationToken> = HashMap::new();
    loop {
        match ctx.resources().await {
            Ok(resources) => {
                let wanted: Vec<ApiResource> = resources
                    .preferred_supporting(&["list", "watch", "delete", "get"])
                    .map(|r| r.api.clone())
                    .filter(|r| !ignored(r))
                    .collect();
                *shared.write() = resources;
                let keys: HashSet<String> = wanted.iter().map(resource_key).collect();
                monitors.retain(|k, token| {
                    let keep = keys.contains(k);
                    if !keep {
                        token.cancel();
                    }
                    keep
                });
                let mut synced = Vec::new();
                for r in wanted {
                    let key = resource_key(&r);
                    if monitors.contains_key(&key) {
                        continue;
                    }
                    let token = ctx.stop.child_token();
                    let informers =
                        skiff_runtime::Informers::new(ctx.client.clone(), token.clone());
                    let informer = informers.metadata(&r);
                    forward(&informer, r.clone(), changes.clone(), token.clone());
                    synced.push(crate::context::synced(&informer));
                    monitors.insert(key, token);
                }
                if let Some(tx) = first_sync.take() {
                    if !ctx.wait_synced(synced).await {
                        return;
                    }
                    let _ = tx.send(());
                }
            }
            Err(err) => {
                tracing::warn!(error = %skiff_runtime::controller::ErrorChain(&err), "garbage collector: discovery failed");
            }
        }
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep(ctx.config.discovery_period) => {}
        }
    }
}

fn resource_key(r: &ApiResource) -> String {
    format!("{}/{}/{}", r.group, r.version, r.plural)
}

fn forward(
    informer: &Informer<Meta>,
    resource: ApiResource,
    changes: mpsc::UnboundedSender<GraphChange>,
    stop: CancellationToken,
) {
    let mut sub = informer.subscribe();
    let informer = informer.clone();
    tokio::spawn(async move {
        loop {
            let n = tokio::select! {
                _ = stop.cancelled() => return,
                n = sub.recv() => n,
            };
            let event = match n {
                Some(Notification::Change(c)) => GraphEvent::Change(c),
                Some(Notification::Lagged) => GraphEvent::Resync(informer.list()),
                None => return,
            };
            if changes.send((resource.clone(), event)).is_err() {
                return;
            }
        }
    });
}

impl Reconciler for Collector {
    type Key = Work;
    type Error = Error;

    fn name(&self) -> &'static str {
        "garbage-collector-controller"
    }

    async fn reconcile(&self, work: &Work) -> Result<Action> {
        match work {
            Work::Delete(uid) => self.attempt_to_delete(uid).await,
            Work::Orphan(uid) => self.attempt_to_orphan(uid).await,
        }
    }
}

impl Collector {
    fn api(&self, identity: &Identity) -> Api<DynamicObject> {
        if identity.namespace.is_empty() {
            Api::all_with(self.client.clone(), &identity.resource)
        } else {
            Api::namespaced_with(self.client.clone(), &identity.namespace, &identity.resource)
        }
    }

    /// The object as the API server has it now (None when gone or recreated).
    async fn live(&self, identity: &Identity) -> Result<Option<Meta>> {
        let got = self
            .api(identity)
            .get_metadata_opt(&identity.name)
            .await
            .during(|| format!("reading {identity}"))?;
        Ok(got.filter(|m| m.metadata.uid.as_deref() == Some(identity.uid.as_str())))
    }

    /// Upstream `attemptToDeleteItem`.
    async fn attempt_to_delete(&self, uid: &str) -> Result<Action> {
        let Some(node) = self.graph.lock().get(uid).cloned() else {
            return Ok(Action::Done);
        };
        let Some(latest) = self.live(&node.identity).await? else {
            return Ok(Action::Done);
        };
        let fins = finalizers(&latest);
        if latest.metadata.deletion_timestamp.is_some() {
            if fins.iter().any(|f| f == FOREGROUND) {
                return self.process_deleting_dependents(&node, &latest).await;
            }
            return Ok(Action::Done);
        }
        let owners = latest.metadata.owner_references.clone().unwrap_or_default();
        if owners.is_empty() {
            return Ok(Action::Done);
        }
        let mut solid = Vec::new();
        let mut dangling = Vec::new();
        let mut waiting = Vec::new();
        for owner in &owners {
            match self.owner_state(&node.identity, owner).await? {
                OwnerState::Solid => solid.push(owner.clone()),
                OwnerState::Dangling => dangling.push(owner.clone()),
                OwnerState::WaitingForDependents => waiting.push(owner.clone()),
            }
        }
        if !solid.is_empty() {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(Action::Done);
            }
            // Still owned by someone: just drop the references to owners going away.
            let gone: HashSet<&str> = dangling
                .iter()
                .chain(&waiting)
                .map(|o| o.uid.as_str())
                .collect();
            let keep: Vec<&OwnerReference> = owners
                .iter()
                .filter(|o| !gone.contains(o.uid.as_str()))
                .collect();
            self.patch_owners(&node.identity, &latest, json!(keep))
                .await?;
            return Ok(Action::Done);
        }
        let has_dependents = !self
            .graph
            .lock()
            .get(uid)
            .is_none_or(|n| n.dependents.is_empty());
        let policy = if !waiting.is_empty() && has_dependents {
            // Our owner waits for us, and we have dependents of our own: go in foreground
            // too. Unblock the owner references first so owner and dependent cannot wait
            // on each other.
            if waiting.iter().any(|o| o.block_owner_deletion == Some(true)) {
                let unblocked: Vec<OwnerReference> = owners
                    .iter()
                    .map(|o| {
                        let mut o = o.clone();
                        if waiting.iter().any(|w| w.uid == o.uid) {
                            o.block_owner_deletion = Some(false);
                        }
                        o
                    })
                    .collect();
                self.patch_owners(&node.identity, &latest, json!(unblocked))
                    .await?;
            }
            PropagationPolicy::Foreground
        } else if fins.iter().any(|f| f == ORPHAN) {
            PropagationPolicy::Orphan
        } else if fins.iter().any(|f| f == FOREGROUND) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        tracing::debug!(object = %node.identity, ?policy, "garbage collector: deleting dependent");
        let params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(node.identity.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self
            .api(&node.identity)
            .delete(&node.identity.name, &params)
            .await
        {
            Ok(_) => Ok(Action::Done),
            Err(e) if crate::is_not_found(&e) || crate::is_conflict(&e) => Ok(Action::Done),
            Err(e) => Err(Error::Api {
                action: format!("deleting {}", node.identity),
                source: e,
            }),
        }
    }

    /// Classify one owner reference of `dependent`.
    async fn owner_state(
        &self,
        dependent: &Identity,
        owner: &OwnerReference,
    ) -> Result<OwnerState> {
        if let Some(node) = self.graph.lock().get(&owner.uid) {
            return Ok(if node.deleting_dependents {
                OwnerState::WaitingForDependents
            } else {
                OwnerState::Solid
            });
        }
        if self.absent.lock().contains(&owner.uid) {
            return Ok(OwnerState::Dangling);
        }
        let resource = self
            .resources
            .read()
            .for_kind(&owner.api_version, &owner.kind)
            .cloned();
        let Some(resource) = resource else {
            // A kind the server does not serve (yet): never delete on a guess.
            tracing::debug!(dependent = %dependent, owner = %owner.name, kind = %owner.kind, "garbage collector: owner kind unknown");
            return Ok(OwnerState::Solid);
        };
        if resource.namespaced && dependent.namespace.is_empty() {
            // A cluster-scoped object cannot be owned by a namespaced one; upstream reports
            // it and leaves the object alone.
            return Ok(OwnerState::Solid);
        }
        let identity = Identity {
            resource: resource.api.clone(),
            namespace: if resource.namespaced {
                dependent.namespace.clone()
            } else {
                String::new()
            },
            name: owner.name.clone(),
            uid: owner.uid.clone(),
        };
        match self.live(&identity).await? {
            None => {
                self.absent.lock().add(&owner.uid);
                Ok(OwnerState::Dangling)
            }
            Some(live) => {
                let deleting = live.metadata.deletion_timestamp.is_some()
                    && finalizers(&live).iter().any(|f| f == FOREGROUND);
                Ok(if deleting {
                    OwnerState::WaitingForDependents
                } else {
                    OwnerState::Solid
                })
            }
        }
    }

    /// Replace an object's ownerReferences (a merge patch guarded by uid and
    /// resourceVersion, which works for custom resources too).
    async fn patch_owners(
        &self,
        identity: &Identity,
        latest: &Meta,
        owners: serde_json::Value,
    ) -> Result<()> {
        let patch = json!({ "metadata": {
            "ownerReferences": owners,
            "uid": identity.uid,
            "resourceVersion": latest.metadata.resource_version,
        } });
        self.api(identity)
            .patch_metadata(
                &identity.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .done_if_gone(|| format!("updating owner references of {identity}"))
    }

    /// Remove one finalizer (guarded by resourceVersion).
    async fn remove_finalizer(
        &self,
        identity: &Identity,
        latest: &Meta,
        finalizer: &str,
    ) -> Result<()> {
        let remaining: Vec<&String> = finalizers(latest)
            .iter()
            .filter(|f| *f != finalizer)
            .collect();
        let patch = json!({ "metadata": {
            "finalizers": remaining,
            "uid": identity.uid,
            "resourceVersion": latest.metadata.resource_version,
        } });
        self.api(identity)
            .patch_metadata(
                &identity.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .done_if_gone(|| format!("removing the {finalizer} finalizer of {identity}"))
    }

    /// Upstream `processDeletingDependentsItem`: finish a foreground deletion once no
    /// blocking dependent is left, else make sure each one is being deleted.
    async fn process_deleting_dependents(&self, node: &Node, latest: &Meta) -> Result<Action> {
        let blocking = self.graph.lock().blocking_dependents(&node.identity.uid);
        if blocking.is_empty() {
            self.remove_finalizer(&node.identity, latest, FOREGROUND)
                .await?;
            return Ok(Action::Done);
        }
        for dep in blocking {
            if !dep.deleting_dependents {
                let work = Work::Delete(dep.identity.uid.clone());
                // Handled in this worker's queue through the graph builder's work items.
                Box::pin(self.attempt_to_delete_dependent(&work)).await?;
            }
        }
        Ok(Action::Done)
    }

    async fn attempt_to_delete_dependent(&self, work: &Work) -> Result<()> {
        if let Work::Delete(uid) = work {
            self.attempt_to_delete(uid).await?;
        }
        Ok(())
    }

    /// Upstream `attemptToOrphanWorker`: drop the owner from its dependents, then its orphan
    /// finalizer.
    async fn attempt_to_orphan(&self, uid: &str) -> Result<Action> {
        let Some(node) = self.graph.lock().get(uid).cloned() else {
            return Ok(Action::Done);
        };
        let dependents: Vec<Node> = {
            let g = self.graph.lock();
            node.dependents
                .iter()
                .filter_map(|d| g.get(d).cloned())
                .collect()
        };
        for dep in dependents {
            let Some(latest) = self.live(&dep.identity).await? else {
                continue;
            };
            let owners = latest.metadata.owner_references.clone().unwrap_or_default();
            if !owners.iter().any(|o| o.uid == uid) {
                continue;
            }
            let keep: Vec<&OwnerReference> = owners.iter().filter(|o| o.uid != uid).collect();
            self.patch_owners(&dep.identity, &latest, json!(keep))
                .await?;
        }
        let Some(latest) = self.live(&node.identity).await? else {
            return Ok(Action::Done);
        };
        if finalizers(&latest).iter().any(|f| f == ORPHAN) {
            self.remove_finalizer(&node.identity, &latest, ORPHAN)
                .await?;
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn res(kind: &str) -> ApiResource {
        ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            api_version: "apps/v1".into(),
            kind: kind.into(),
            plural: format!("{}s", kind.to_lowercase()),
        }
    }

    fn meta(uid: &str, owners: &[(&str, bool)], finalizers: &[&str], deleting: bool) -> Meta {
        Meta {
            types: None,
            metadata: ObjectMeta {
                name: Some(uid.into()),
                namespace: Some("ns".into()),
                uid: Some(uid.into()),
                owner_references: Some(
                    owners
                        .iter()
                        .map(|(o, block)| OwnerReference {
                            uid: (*o).into(),
                            name: (*o).into(),
                            kind: "ReplicaSet".into(),
                            api_version: "apps/v1".into(),
                            block_owner_deletion: Some(*block),
                            controller: Some(true),
                        })
                        .collect(),
                ),
                finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
                deletion_timestamp: deleting.then(|| Time(jiff::Timestamp::now())),
                ..Default::default()
            },
            _phantom: Default::default(),
        }
    }

    #[test]
    fn dependents_link_to_owners_seen_before_or_after_them() {
        let mut g = Graph::default();
        // The dependent arrives first: its owner is unknown, so it is checked.
        let work = g.upsert(&res("Pod"), &meta("pod", &[("rs", true)], &[], false));
        assert_eq!(work, [Work::Delete("pod".into())]);
        assert!(
            g.upsert(&res("ReplicaSet"), &meta("rs", &[], &[], false))
                .is_empty()
        );
        assert!(g.get("rs").unwrap().dependents.contains("pod"));
        // A known, healthy owner causes no work.
        assert!(
            g.upsert(&res("Pod"), &meta("pod", &[("rs", true)], &[], false))
                .is_empty()
        );
    }

    #[test]
    fn deleting_an_owner_queues_its_dependents() {
        let mut g = Graph::default();
        g.upsert(&res("ReplicaSet"), &meta("rs", &[], &[], false));
        g.upsert(&res("Pod"), &meta("a", &[("rs", true)], &[], false));
        g.upsert(&res("Pod"), &meta("b", &[("rs", false)], &[], false));
        let mut work = g.remove("rs");
        work.sort_by_key(|w| w.to_string());
        assert_eq!(work, [Work::Delete("a".into()), Work::Delete("b".into())]);
        // A recreated object with the same uid would relink its old dependents.
        g.upsert(&res("ReplicaSet"), &meta("rs", &[], &[], false));
        assert_eq!(g.get("rs").unwrap().dependents.len(), 2);
    }

    #[test]
    fn foreground_deletion_queues_dependents_and_waits_for_blocking_ones() {
        let mut g = Graph::default();
        g.upsert(&res("ReplicaSet"), &meta("rs", &[], &[], false));
        g.upsert(&res("Pod"), &meta("a", &[("rs", true)], &[], false));
        g.upsert(&res("Pod"), &meta("b", &[("rs", false)], &[], false));
        let mut work = g.upsert(&res("ReplicaSet"), &meta("rs", &[], &[FOREGROUND], true));
        work.sort_by_key(|w| w.to_string());
        assert_eq!(
            work,
            [
                Work::Delete("a".into()),
                Work::Delete("b".into()),
                Work::Delete("rs".into())
            ]
        );
        let blocking: Vec<String> = g
            .blocking_dependents("rs")
            .iter()
            .map(|n| n.identity.uid.clone())
            .collect();
        assert_eq!(blocking, ["a"]);
        // The blocking dependent going away wakes the owner up.
        assert_eq!(g.remove("a"), [Work::Delete("rs".into())]);
        assert!(g.blocking_dependents("rs").is_empty());
    }

    #[test]
    fn orphaning_owners_are_queued_for_orphaning() {
        let mut g = Graph::default();
        g.upsert(&res("ReplicaSet"), &meta("rs", &[], &[], false));
        let work = g.upsert(&res("ReplicaSet"), &meta("rs", &[], &[ORPHAN], true));
        assert_eq!(work, [Work::Orphan("rs".into())]);
    }

    #[test]
    fn the_absent_owner_cache_is_bounded() {
        let mut a = AbsentOwners::default();
        for i in 0..(AbsentOwners::LIMIT + 10) {
            a.add(&i.to_string());
        }
        assert!(!a.contains("0"));
        assert!(a.contains(&(AbsentOwners::LIMIT + 9).to_string()));
    }
}
