//! Informers: one list + watch of a kind into a local cache, with its changes fanned out to
//! subscribers (client-go's shared informer, kube-rs' reflector).
//!
//! The cache is the component's view of the cluster: reconcilers read it instead of asking the
//! API server, and learn what changed from a [`Subscription`]. A subscriber that falls behind
//! gets [`Notification::Lagged`] instead of the missed changes and must treat every cached
//! object as changed (controllers are level-triggered, so re-enqueueing everything is always
//! correct). After a re-list (the watch's history was compacted, or the connection broke for
//! long), the new list replaces the cache atomically and only real differences are emitted:
//! objects that vanished come out as [`Change::Deleted`].
//!
//! Cached objects drop `metadata.managedFields`, as upstream's controller manager and scheduler
//! trim them in their informers: they are often the largest part of an object, no component
//! reads them, and an update sent without them keeps the live ones.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::key::ObjectKey;

/// How many changes a subscriber may fall behind before it is told it lagged.
const CHANGE_BUFFER: usize = 4096;

/// One change to a cached object.
#[derive(Debug)]
pub enum Change<K> {
    /// The object was added (`old` is `None`) or modified.
    Applied {
        /// The cached value before this change.
        old: Option<Arc<K>>,
        /// The new value.
        new: Arc<K>,
    },
    /// The object was deleted; this is its last known value.
    Deleted(Arc<K>),
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied { old, new } => Change::Applied {
                old: old.clone(),
                new: new.clone(),
            },
            Change::Deleted(obj) => Change::Deleted(obj.clone()),
        }
    }
}

impl<K> Change<K> {
    /// The object as it is now (or was when deleted).
    pub fn object(&self) -> &Arc<K> {
        match self {
            Change::Applied { new, .. } => new,
            Change::Deleted(obj) => obj,
        }
    }

    /// The previous value: the old one of an update, or the deleted object.
    pub fn previous(&self) -> Option<&Arc<K>> {
        match self {
            Change::Applied { old, .. } => old.as_ref(),
            Change::Deleted(obj) => Some(obj),
        }
    }
}

/// What a subscriber receives.
#[derive(Debug)]
pub enum Notification<K> {
    /// One change, in the order the API server reported it.
    Change(Change<K>),
    /// The subscriber fell behind and missed changes: treat every cached object as changed.
    Lagged,
}

/// A receiver of an informer's changes.
pub struct Subscription<K> {
    rx: broadcast::Receiver<Change<K>>,
}

impl<K> Subscription<K> {
    /// The next notification; `None` once the informer is gone.
    pub async fn recv(&mut self) -> Option<Notification<K>> {
        match self.rx.recv().await {
            Ok(change) => Some(Notification::Change(change)),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Notification::Lagged),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// A function giving the index values of an object (client-go's `IndexFunc`).
pub type IndexFn<K> = Arc<dyn Fn(&K) -> Vec<String> + Send + Sync>;

struct Index<K> {
    values: IndexFn<K>,
    entries: HashMap<String, BTreeSet<ObjectKey>>,
}

impl<K> Index<K> {
    fn insert(&mut self, key: &ObjectKey, obj: &K) {
        for value in (self.values)(obj) {
            self.entries.entry(value).or_default().insert(key.clone());
        }
    }

    fn remove(&mut self, key: &ObjectKey, obj: &K) {
        for value in (self.values)(obj) {
            if let Some(keys) = self.entries.get_mut(&value) {
                keys.remove(key);
                if keys.is_empty() {
                    self.entries.remove(&value);
                }
            }
        }
    }
}

/// The cached objects and the indexes over them, changed together under one lock so an
/// index never names an object the cache does not hold.
struct Cache<K> {
    objects: BTreeMap<ObjectKey, Arc<K>>,
    indexes: HashMap<&'static str, Index<K>>,
}

impl<K> Cache<K> {
    fn insert(&mut self, key: ObjectKey, obj: Arc<K>) -> Option<Arc<K>> {
        let old = self.objects.insert(key.clone(), obj.clone());
        for index in self.indexes.values_mut() {
            if let Some(old) = &old {
                index.remove(&key, old);
            }
            index.insert(&key, &obj);
        }
        old
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Arc<K>> {
        let old = self.objects.remove(key)?;
        for index in self.indexes.values_mut() {
            index.remove(key, &old);
        }
        Some(old)
    }

    fn replace(&mut self, objects: BTreeMap<ObjectKey, Arc<K>>) -> BTreeMap<ObjectKey, Arc<K>> {
        for index in self.indexes.values_mut() {
            index.entries.clear();
            for (key, obj) in &objects {
                index.insert(key, obj);
            }
        }
        std::mem::replace(&mut self.objects, objects)
    }
}

struct Shared<K> {
    cache: RwLock<Cache<K>>,
    /// Objects of a list in progress, swapped in when it completes.
    relist: Mutex<Option<BTreeMap<ObjectKey, Arc<K>>>>,
    changes: broadcast::Sender<Change<K>>,
    synced: watch::Sender<bool>,
}

/// A cached, watched view of one kind (optionally narrowed by namespace and selectors).
pub struct Informer<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            shared: self.shared.clone(),
        }
    }
}

impl<K> Informer<K>
where
    K: Resource + ResourceExt + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// An informer that no watch feeds: its owner calls [`Informer::handle`] itself. Tests use
    /// it to give a reconciler a cache without an API server.
    pub fn detached() -> Informer<K> {
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        Informer {
            shared: Arc::new(Shared {
                cache: RwLock::new(Cache {
                    objects: BTreeMap::new(),
                    indexes: HashMap::new(),
                }),
                relist: Mutex::new(None),
                changes,
                synced: watch::Sender::new(false),
            }),
        }
    }

    /// Start listing and watching `api` until `shutdown`.
    pub fn spawn(api: Api<K>, config: watcher::Config, shutdown: CancellationToken) -> Informer<K> {
        Self::spawn_stream(watcher::watcher(api, config), shutdown)
    }

    /// Feed the cache from a watcher stream (for example kube-rs' `metadata_watcher`) until
    /// `shutdown`; the stream is retried with backoff when it fails.
    pub fn spawn_stream<S>(stream: S, shutdown: CancellationToken) -> Informer<K>
    where
        S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        let informer = Informer::detached();
        let feeder = informer.clone();
        let kind = std::any::type_name::<K>()
            .rsplit("::")
            .next()
            .unwrap_or("object")
            .to_owned();
        tokio::spawn(async move {
            let mut stream = stream.default_backoff().boxed();
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    next = stream.next() => next,
                };
                match next {
                    Some(Ok(event)) => feeder.handle(event),
                    Some(Err(err)) => {
                        tracing::warn!(kind = %kind, error = %err, "watch failed; retrying");
                    }
                    None => break,
                }
            }
        });
        informer
    }

    /// Apply one watcher event to the cache and tell subscribers.
    pub fn handle(&self, event: watcher::Event<K>) {
        match event {
            watcher::Event::Apply(obj) => self.apply(trimmed(obj)),
            watcher::Event::Delete(obj) => self.delete(&ObjectKey::of(&obj), obj),
            watcher::Event::Init => {
                tracing::debug!(kind = std::any::type_name::<K>(), "informer listing");
                *self.shared.relist.lock() = Some(BTreeMap::new());
            }
            watcher::Event::InitApply(obj) => {
                let mut relist = self.shared.relist.lock();
                relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(ObjectKey::of(&obj), Arc::new(trimmed(obj)));
            }
            watcher::Event::InitDone => {
                let listed = self.shared.relist.lock().take().unwrap_or_default();
                self.replace(listed);
                self.shared.synced.send_replace(true);
            }
        }
    }

    fn apply(&self, obj: K) {
        let key = ObjectKey::of(&obj);
        let new = Arc::new(obj);
        let old = self.shared.cache.write().insert(key, new.clone());
        if old
            .as_ref()
            .is_some_and(|o| same_version(o.as_ref(), new.as_ref()))
        {
            return;
        }
        let _ = self.shared.changes.send(Change::Applied { old, new });
    }

    fn delete(&self, key: &ObjectKey, last: K) {
        let removed = self.shared.cache.write().remove(key);
        let last = removed.unwrap_or_else(|| Arc::new(last));
        let _ = self.shared.changes.send(Change::Deleted(last));
    }

    fn replace(&self, listed: BTreeMap<ObjectKey, Arc<K>>) {
        let previous = self.shared.cache.write().replace(listed.clone());
        for (key, new) in &listed {
            let old = previous.get(key).cloned();
            if old
                .as_ref()
                .is_some_and(|o| same_version(o.as_ref(), new.as_ref()))
            {
                continue;
            }
            let _ = self.shared.changes.send(Change::Applied {
                old,
                new: new.clone(),
            });
        }
        for (key, old) in previous {
            if !listed.contains_key(&key) {
                let _ = self.shared.changes.send(Change::Deleted(old));
            }
        }
    }

    /// The cached object with this key.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<K>> {
        self.shared.cache.read().objects.get(key).cloned()
    }

    /// The cached object `namespace/name` ("" namespace for cluster-scoped kinds).
    pub fn get_named(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.get(&ObjectKey::new(namespace, name))
    }

    /// Every cached object, in key order.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.shared.cache.read().objects.values().cloned().collect()
    }

    /// The cached objects of one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let start = ObjectKey::new(namespace, "");
        self.shared
            .cache
            .read()
            .objects
            .range(start..)
            .take_while(|(k, _)| k.namespace == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every cached key.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.shared.cache.read().objects.keys().cloned().collect()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.shared.cache.read().objects.len()
    }

    /// Maintain an index named `name` over the cache from now on: `values` gives the index
    /// values of an object (an owner uid, a node name). Adding an index twice replaces it.
    pub fn add_index(
        &self,
        name: &'static str,
        values: impl Fn(&K) -> Vec<String> + Send + Sync + 'static,
    ) {
        let mut index = Index {
            values: Arc::new(values),
            entries: HashMap::new(),
        };
        let mut cache = self.shared.cache.write();
        for (key, obj) in &cache.objects {
            index.insert(key, obj);
        }
        cache.indexes.insert(name, index);
    }

    /// Whether an index of that name exists.
    pub fn has_index(&self, name: &str) -> bool {
        self.shared.cache.read().indexes.contains_key(name)
    }

    /// The cached objects whose index `name` holds `value` (nothing if there is no such
    /// index), in key order.
    pub fn by_index(&self, name: &str, value: &str) -> Vec<Arc<K>> {
        let cache = self.shared.cache.read();
        let Some(keys) = cache.indexes.get(name).and_then(|i| i.entries.get(value)) else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|k| cache.objects.get(k).cloned())
            .collect()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Receive changes from now on. Subscribe before [`Informer::wait_synced`] so no change
    /// between the initial list and the subscription is missed.
    pub fn subscribe(&self) -> Subscription<K> {
        Subscription {
            rx: self.shared.changes.subscribe(),
        }
    }

    /// Whether the first complete list has been cached.
    pub fn is_synced(&self) -> bool {
        *self.shared.synced.borrow()
    }

    /// Wait until the first complete list has been cached.
    pub async fn wait_synced(&self) {
        let mut rx = self.shared.synced.subscribe();
        let _ = rx.wait_for(|synced| *synced).await;
    }
}

/// The object without what no cache reader needs (see the module doc).
fn trimmed<K: Resource>(mut obj: K) -> K {
    obj.meta_mut().managed_fields = None;
    obj
}

/// Whether two values are the same version of an object (a re-list or a duplicate event).
fn same_version<K: Resource>(a: &K, b: &K) -> bool {
    let (a, b) = (a.meta(), b.meta());
    a.uid == b.uid && a.resource_version.is_some() && a.resource_version == b.resource_version
}

/// What identifies a shared informer: the kind, the resource for dynamic kinds, and the list
/// options narrowing it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct InformerId {
    type_id: TypeId,
    resource: String,
    labels: Option<String>,
    fields: Option<String>,
}

/// Shared informers of one process: asking twice for the same kind and options gives the same
/// cache and one watch (client-go's `SharedInformerFactory`).
pub struct Informers {
    client: Client,
    shutdown: CancellationToken,
    entries: Mutex<HashMap<InformerId, Arc<dyn Any + Send + Sync>>>,
}

impl Informers {
    /// A factory whose informers watch through `client` until `shutdown`.
    pub fn new(client: Client, shutdown: CancellationToken) -> Informers {
        Informers {
            client,
            shutdown,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The client informers use.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The token that stops every informer of this factory.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// The cluster-wide informer of a built-in kind.
    pub fn get<K>(&self) -> Informer<K>
    where
        K: Resource<DynamicType = ()>
            + ResourceExt
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + Sync
            + 'static,
    {
        self.get_filtered(watcher::Config::default())
    }

    /// A cluster-wide informer of a built-in kind narrowed by label and field selectors (a
    /// `metadata.namespace=` field selector narrows it to one namespace).
    pub fn get_filtered<K>(&self, config: watcher::Config) -> Informer<K>
    where
        K: Resource<DynamicType = ()>
            + ResourceExt
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + Sync
            + 'static,
    {
        let id = InformerId {
            type_id: TypeId::of::<K>(),
            resource: String::new(),
            labels: config.label_selector.clone(),
            fields: config.field_selector.clone(),
        };
        self.shared(id, || {
            let api = Api::<K>::all(self.client.clone());
            Informer::spawn(api, config, self.shutdown.clone())
        })
    }

    /// The cluster-wide informer of any resource, as dynamic objects (custom resources, or
    /// controllers that handle every kind such as the garbage collector).
    pub fn dynamic(&self, resource: &ApiResource) -> Informer<DynamicObject> {
        let id = InformerId {
            type_id: TypeId::of::<DynamicObject>(),
            resource: format!(
                "{}/{}/{}",
                resource.group, resource.version, resource.plural
            ),
            labels: None,
            fields: None,
        };
        self.shared(id, || {
            let api = Api::<DynamicObject>::all_with(self.client.clone(), resource);
            Informer::spawn(api, watcher::Config::default(), self.shutdown.clone())
        })
    }

    /// The cluster-wide informer of any resource holding only object metadata
    /// (`PartialObjectMetadata`): what the garbage collector and quota need of every kind,
    /// at a fraction of the memory of whole objects.
    pub fn metadata(&self, resource: &ApiResource) -> Informer<PartialObjectMeta<DynamicObject>> {
        let id = InformerId {
            type_id: TypeId::of::<PartialObjectMeta<DynamicObject>>(),
            resource: format!(
                "{}/{}/{}",
                resource.group, resource.version, resource.plural
            ),
            labels: None,
            fields: None,
        };
        self.shared(id, || {
            let api =
                Api::<PartialObjectMeta<DynamicObject>>::all_with(self.client.clone(), resource);
            Informer::spawn(api, watcher::Config::default(), self.shutdown.clone())
        })
    }

    fn shared<K: Send + Sync + 'static>(
        &self,
        id: InformerId,
        start: impl FnOnce() -> Informer<K>,
    ) -> Informer<K> {
        let mut entries = self.entries.lock();
        if let Some(existing) = entries.get(&id)
            && let Some(informer) = existing.downcast_ref::<Informer<K>>()
        {
            return informer.clone();
        }
        let informer = start();
        entries.insert(id, Arc::new(informer.clone()));
        informer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(ns: &str, name: &str, rv: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn drain(sub: &mut Subscription<ConfigMap>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(change) = sub.rx.try_recv() {
            out.push(match change {
                Change::Applied { old: None, new } => format!("add {}", new.name_any()),
                Change::Applied { old: Some(_), new } => format!("update {}", new.name_any()),
                Change::Deleted(obj) => format!("delete {}", obj.name_any()),
            });
        }
        out
    }

    #[test]
    fn applies_and_deletes_reach_cache_and_subscribers() {
        let inf = Informer::<ConfigMap>::detached();
        let mut sub = inf.subscribe();
        inf.handle(watcher::Event::Apply(cm("a", "x", "1")));
        inf.handle(watcher::Event::Apply(cm("a", "x", "2")));
        inf.handle(watcher::Event::Apply(cm("b", "y", "3")));
        inf.handle(watcher::Event::Delete(cm("a", "x", "4")));
        assert_eq!(drain(&mut sub), ["add x", "update x", "add y", "delete x"]);
        assert_eq!(inf.len(), 1);
        assert!(inf.get_named("b", "y").is_some());
    }

    #[test]
    fn cached_objects_carry_no_managed_fields() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let with_fields = |name: &str| {
            let mut obj = cm("a", name, "1");
            obj.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
                manager: Some("kubectl".into()),
                operation: Some("Update".into()),
                ..Default::default()
            }]);
            obj
        };
        let inf = Informer::<ConfigMap>::detached();
        inf.handle(watcher::Event::Apply(with_fields("watched")));
        inf.handle(watcher::Event::Init);
        inf.handle(watcher::Event::InitApply(with_fields("listed")));
        inf.handle(watcher::Event::InitDone);
        for obj in inf.list() {
            assert_eq!(obj.metadata.managed_fields, None, "{}", obj.name_any());
        }
        assert_eq!(inf.len(), 1);
    }

    #[test]
    fn a_relist_emits_only_differences_and_marks_synced() {
        let inf = Informer::<ConfigMap>::detached();
        inf.handle(watcher::Event::Apply(cm("a", "keep", "1")));
        inf.handle(watcher::Event::Apply(cm("a", "change", "1")));
        inf.handle(watcher::Event::Apply(cm("a", "gone", "1")));
        let mut sub = inf.subscribe();
        assert!(!inf.is_synced());
        inf.handle(watcher::Event::Init);
        inf.handle(watcher::Event::InitApply(cm("a", "keep", "1")));
        inf.handle(watcher::Event::InitApply(cm("a", "change", "5")));
        inf.handle(watcher::Event::InitApply(cm("a", "new", "6")));
        // Until the list completes the old cache stays visible.
        assert!(inf.get_named("a", "gone").is_some());
        inf.handle(watcher::Event::InitDone);
        assert!(inf.is_synced());
        let mut changes = drain(&mut sub);
        changes.sort();
        assert_eq!(changes, ["add new", "delete gone", "update change"]);
        assert_eq!(inf.len(), 3);
    }

    #[test]
    fn namespaces_list_as_ranges() {
        let inf = Informer::<ConfigMap>::detached();
        for (ns, name) in [("a", "1"), ("ab", "2"), ("a", "3"), ("b", "4")] {
            inf.handle(watcher::Event::Apply(cm(ns, name, "1")));
        }
        let names: Vec<_> = inf
            .list_namespace("a")
            .iter()
            .map(|c| c.name_any())
            .collect();
        assert_eq!(names, ["1", "3"]);
        assert_eq!(inf.list().len(), 4);
    }

    #[test]
    fn indexes_follow_applies_deletes_and_relists() {
        let inf = Informer::<ConfigMap>::detached();
        let by_color = |c: &ConfigMap| -> Vec<String> {
            c.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("color").cloned())
                .into_iter()
                .collect()
        };
        let colored = |name: &str, color: &str, rv: &str| {
            let mut c = cm("a", name, rv);
            c.metadata.labels = Some([("color".to_owned(), color.to_owned())].into());
            c
        };
        inf.handle(watcher::Event::Apply(colored("x", "red", "1")));
        inf.add_index("color", by_color);
        inf.handle(watcher::Event::Apply(colored("y", "red", "2")));
        let names = |v: Vec<Arc<ConfigMap>>| v.iter().map(|c| c.name_any()).collect::<Vec<_>>();
        assert_eq!(names(inf.by_index("color", "red")), ["x", "y"]);
        inf.handle(watcher::Event::Apply(colored("x", "blue", "3")));
        assert_eq!(names(inf.by_index("color", "red")), ["y"]);
        assert_eq!(names(inf.by_index("color", "blue")), ["x"]);
        inf.handle(watcher::Event::Delete(colored("y", "red", "4")));
        assert!(inf.by_index("color", "red").is_empty());
        inf.handle(watcher::Event::Init);
        inf.handle(watcher::Event::InitApply(colored("z", "blue", "5")));
        inf.handle(watcher::Event::InitDone);
        assert_eq!(names(inf.by_index("color", "blue")), ["z"]);
        assert!(inf.by_index("nope", "blue").is_empty());
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_it_lagged() {
        let inf = Informer::<ConfigMap>::detached();
        let mut sub = inf.subscribe();
        for i in 0..(CHANGE_BUFFER + 10) {
            inf.handle(watcher::Event::Apply(cm("a", &format!("n{i}"), "1")));
        }
        assert!(matches!(sub.recv().await, Some(Notification::Lagged)));
    }
}
