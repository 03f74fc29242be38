//! The service account controller (upstream pkg/controller/serviceaccount): every namespace
//! that is not being deleted has a `default` ServiceAccount, recreated if it is removed.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::{Change, Informer, WorkQueue};

use crate::context::{Context, synced};
use crate::{Error, Result};

/// The service accounts every namespace gets.
pub const DEFAULT_ACCOUNTS: [&str; 1] = ["default"];

/// Start the controller.
pub async fn start(ctx: Context) {
    let namespaces = ctx.informer::<Namespace>();
    let accounts = ctx.informer::<ServiceAccount>();
    let queue: WorkQueue<String> = WorkQueue::default();
    controller::feed(&namespaces, &queue, &ctx.stop, |c| match c {
        Change::Applied { new, .. } => vec![new.name_any()],
        Change::Deleted(_) => Vec::new(),
    });
    controller::feed(&accounts, &queue, &ctx.stop, |c| match c {
        Change::Deleted(sa) if DEFAULT_ACCOUNTS.contains(&sa.name_any().as_str()) => {
            vec![sa.namespace().unwrap_or_default()]
        }
        _ => Vec::new(),
    });
    if !ctx
        .wait_synced(vec![synced(&namespaces), synced(&accounts)])
        .await
    {
        return;
    }
    let reconciler = Arc::new(ServiceAccounts {
        client: ctx.client.clone(),
        namespaces,
        accounts,
    });
    controller::run(reconciler, queue, ctx.config.workers(1), ctx.stop.clone()).await;
}

struct ServiceAccounts {
    client: Client,
    namespaces: Informer<Namespace>,
    accounts: Informer<ServiceAccount>,
}

impl Reconciler for ServiceAccounts {
    type Key = String;
    type Error = Error;

    fn name(&self) -> &'static str {
        "serviceaccount-controller"
    }

    async fn reconcile(&self, namespace: &String) -> Result<Action> {
        let Some(ns) = self.namespaces.get_named("", namespace) else {
            return Ok(Action::Done);
        };
        if ns.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        for name in DEFAULT_ACCOUNTS {
            if self.accounts.get_named(namespace, name).is_some() {
                continue;
            }
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(namespace.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match api.create(&PostParams::default(), &sa).await {
                Ok(_) => {}
                // Already there (the cache lags), or the namespace started terminating.
                Err(e)
                    if crate::is_conflict(&e)
                        || crate::pods::is_namespace_terminating(&e)
                        || crate::is_not_found(&e) => {}
                Err(e) => {
                    return Err(Error::Api {
                        action: format!("creating service account {namespace}/{name}"),
                        source: e,
                    });
                }
            }
        }
        Ok(Action::Done)
    }
}
