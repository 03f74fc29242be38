//! The root CA publisher (upstream pkg/controller/certificates/rootcacertpublisher): every
//! namespace has a ConfigMap `kube-root-ca.crt` holding the cluster CA as `ca.crt`, which
//! pods use to verify the API server; edits and deletions are undone.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::{Change, Informer, WorkQueue};

use crate::context::{Context, synced};
use crate::{Error, Result};

/// The ConfigMap's name.
pub const NAME: &str = "kube-root-ca.crt";
/// The key holding the PEM bundle.
pub const KEY: &str = "ca.crt";
const DESCRIPTION: &str = "kubernetes.io/description";
const DESCRIPTION_TEXT: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Start the publisher (a no-op without a CA to publish).
pub async fn start(ctx: Context) {
    let Some(ca) = ctx.config.root_ca_pem.clone() else {
        tracing::warn!("no root CA configured; kube-root-ca.crt is not published");
        return ctx.stop.cancelled().await;
    };
    let namespaces = ctx.informer::<Namespace>();
    let maps: Informer<ConfigMap> = ctx
        .informers
        .get_filtered(watcher::Config::default().fields(&format!("metadata.name={NAME}")));
    let queue: WorkQueue<String> = WorkQueue::default();
    controller::feed(&namespaces, &queue, &ctx.stop, |c| match c {
        Change::Applied { new, .. } => vec![new.name_any()],
        Change::Deleted(_) => Vec::new(),
    });
    controller::feed(&maps, &queue, &ctx.stop, |c| {
        vec![c.object().namespace().unwrap_or_default()]
    });
    if !ctx
        .wait_synced(vec![synced(&namespaces), synced(&maps)])
        .await
    {
        return;
    }
    let reconciler = Arc::new(Publisher {
        client: ctx.client.clone(),
        ca,
        namespaces,
        maps,
    });
    controller::run(reconciler, queue, ctx.config.workers(1), ctx.stop.clone()).await;
}

struct Publisher {
    client: Client,
    ca: String,
    namespaces: Informer<Namespace>,
    maps: Informer<ConfigMap>,
}

impl Reconciler for Publisher {
    type Key = String;
    type Error = Error;

    fn name(&self) -> &'static str {
        "root-ca-certificate-publisher-controller"
    }

    async fn reconcile(&self, namespace: &String) -> Result<Action> {
        let Some(ns) = self.namespaces.get_named("", namespace) else {
            return Ok(Action::Done);
        };
        if ns.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let data = BTreeMap::from([(KEY.to_owned(), self.ca.clone())]);
        let annotations = BTreeMap::from([(DESCRIPTION.to_owned(), DESCRIPTION_TEXT.to_owned())]);
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let result = match self.maps.get_named(namespace, NAME) {
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(NAME.into()),
                        namespace: Some(namespace.clone()),
                        annotations: Some(annotations),
                        ..Default::default()
                    },
                    data: Some(data),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &cm).await.map(|_| ())
            }
            Some(existing) => {
                let has_description = existing.metadata.annotations.as_ref().is_some_and(|a| {
                    a.get(DESCRIPTION).map(String::as_str) == Some(DESCRIPTION_TEXT)
                });
                if existing.data.as_ref() == Some(&data) && has_description {
                    return Ok(Action::Done);
                }
                let mut cm = (*existing).clone();
                cm.data = Some(data);
                cm.binary_data = None;
                cm.metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .extend(annotations);
                api.replace(NAME, &PostParams::default(), &cm)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(Action::Done),
            Err(e) if crate::pods::is_namespace_terminating(&e) || crate::is_not_found(&e) => {
                Ok(Action::Done)
            }
            Err(e) => Err(Error::Api {
                action: format!("publishing {namespace}/{NAME}"),
                source: e,
            }),
        }
    }
}
