//! What every loop gets when it starts: the API client, the shared informers of this
//! leadership term, the configuration, the cloud provider, event recorders, and the token that
//! ends the term.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use kube::{Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use skiff_runtime::discovery::Resources;
use skiff_runtime::events::Recorder;
use skiff_runtime::{CancellationToken, Informer, Informers};

use crate::cloud::CloudProvider;
use crate::{Config, Error, Result};

/// A loop's context. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    /// The API client (the controller manager's credentials).
    pub client: Client,
    /// Informers shared by all loops of this term.
    pub informers: Arc<Informers>,
    /// Settings.
    pub config: Arc<Config>,
    /// Cancelled when leadership is lost or the process stops.
    pub stop: CancellationToken,
    /// The cloud provider of the cloud-controller loops (`None`: none is configured).
    pub cloud: Option<Arc<dyn CloudProvider>>,
    recorders: Arc<Mutex<HashMap<&'static str, Recorder>>>,
    discovered: Arc<tokio::sync::Mutex<Option<Discovered>>>,
}

/// A discovery answer and when it was fetched.
type Discovered = (tokio::time::Instant, Arc<Resources>);

/// How long a cached discovery answer is reused.
const DISCOVERY_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl Context {
    /// A context whose informers stop with `stop`.
    pub fn new(client: Client, config: Arc<Config>, stop: CancellationToken) -> Context {
        Context {
            informers: Arc::new(Informers::new(client.clone(), stop.clone())),
            client,
            config,
            stop,
            cloud: None,
            recorders: Arc::new(Mutex::new(HashMap::new())),
            discovered: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// The same context with a cloud provider.
    pub fn with_cloud(mut self, cloud: Option<Arc<dyn CloudProvider>>) -> Context {
        self.cloud = cloud;
        self
    }

    /// The event recorder of `component` (`replicaset-controller`), one per component so
    /// de-duplication state is shared by its workers.
    pub fn recorder(&self, component: &'static str) -> Recorder {
        self.recorders
            .lock()
            .entry(component)
            .or_insert_with(|| Recorder::new(self.client.clone(), component, None))
            .clone()
    }

    /// The shared cluster-wide informer of a built-in kind.
    pub fn informer<K>(&self) -> Informer<K>
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
        self.informers.get::<K>()
    }

    /// What the API server serves now.
    pub async fn resources(&self) -> Result<Resources> {
        let fresh = Resources::discover(&self.client)
            .await
            .map_err(Error::Runtime)?;
        *self.discovered.lock().await =
            Some((tokio::time::Instant::now(), Arc::new(fresh.clone())));
        Ok(fresh)
    }

    /// What the API server serves, from a discovery answer at most 30 s old (for loops that
    /// map kinds to resources on every sync).
    pub async fn cached_resources(&self) -> Result<Arc<Resources>> {
        let mut cached = self.discovered.lock().await;
        if let Some((at, r)) = cached.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(r.clone());
        }
        let fresh = Arc::new(
            Resources::discover(&self.client)
                .await
                .map_err(Error::Runtime)?,
        );
        *cached = Some((tokio::time::Instant::now(), fresh.clone()));
        Ok(fresh)
    }

    /// Wait until every informer in `synced` has listed once, or the term ends; returns
    /// false if the term ended first.
    pub async fn wait_synced(&self, synced: Vec<futures::future::BoxFuture<'static, ()>>) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = futures::future::join_all(synced) => true,
        }
    }
}

/// A future that resolves when `informer` has listed once (for [`Context::wait_synced`]).
pub fn synced<K>(informer: &Informer<K>) -> futures::future::BoxFuture<'static, ()>
where
    K: Resource + ResourceExt + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let informer = informer.clone();
    Box::pin(async move { informer.wait_synced().await })
}
