//! What a fresh (or restarted) API server ensures exists: the default namespaces, the
//! `kubernetes` Service with its Endpoints/EndpointSlice pointing at this server, the built-in
//! `system-node-critical`/`system-cluster-critical` PriorityClasses, and the
//! resources of every stored CustomResourceDefinition (kept current by a store watch, so CRDs
//! created through another API server appear here too).

use std::sync::Arc;

use serde_json::{Value, json};
use skiff_store::EventKind;

use crate::error::ApiResult;
use crate::handlers::write::create_object;
use crate::objects::{self, meta_str};
use crate::state::State;

/// Namespaces every cluster has.
pub const DEFAULT_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

async fn ensure(
    state: &Arc<State>,
    group: &str,
    version: &str,
    plural: &str,
    obj: Value,
) -> ApiResult<()> {
    let info = state.resource(group, version, plural)?;
    let namespace = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let name = meta_str(&obj, "name").to_owned();
    if state
        .objects
        .get(&info, namespace.as_deref(), &name)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let mut ctx = state.internal_ctx(info, namespace.as_deref(), None);
    match create_object(&mut ctx, obj, false).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Create the default objects (idempotent).
pub async fn run(state: &Arc<State>) -> ApiResult<()> {
    for ns in DEFAULT_NAMESPACES {
        ensure(
            state,
            "",
            "v1",
            "namespaces",
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }),
        )
        .await?;
    }
    let first_ip = state.allocator.service_cidr.first().to_string();
    let kubernetes = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "kubernetes", "namespace": "default", "labels": { "component": "apiserver", "provider": "kubernetes" } },
        "spec": { "type": "ClusterIP", "clusterIP": first_ip, "sessionAffinity": "None",
                  "ports": [{ "name": "https", "port": 443, "protocol": "TCP", "targetPort": state.settings.port }] },
    });
    ensure(state, "", "v1", "services", kubernetes).await?;
    let address = state.settings.advertise_address.to_string();
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": { "name": "kubernetes", "namespace": "default", "labels": { "endpointslice.kubernetes.io/skip-mirror": "true" } },
        "subsets": [{ "addresses": [{ "ip": address }], "ports": [{ "name": "https", "port": state.settings.port, "protocol": "TCP" }] }],
    });
    ensure(state, "", "v1", "endpoints", endpoints).await?;
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": "kubernetes", "namespace": "default", "labels": { "kubernetes.io/service-name": "kubernetes" } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": [address], "conditions": { "ready": true } }],
        "ports": [{ "name": "https", "port": state.settings.port, "protocol": "TCP" }],
    });
    ensure(state, "discovery.k8s.io", "v1", "endpointslices", slice).await?;
    // The default ServiceCIDR upstream publishes for --service-cluster-ip-range (kube-proxy
    // and the controller manager watch ServiceCIDRs).
    let cidr = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
        "metadata": { "name": "kubernetes" },
        "spec": { "cidrs": [state.allocator.service_cidr.to_string()] },
    });
    ensure(state, "networking.k8s.io", "v1", "servicecidrs", cidr).await?;
    // The default StorageClass, served by every node's built-in local-path provisioner, so a
    // PersistentVolumeClaim works out of the box (as on k3s).
    let local_path = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {
            "name": "local-path",
            "annotations": { "storageclass.kubernetes.io/is-default-class": "true" },
        },
        "provisioner": "skiff.io/local-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    });
    ensure(state, "storage.k8s.io", "v1", "storageclasses", local_path).await?;
    for class in crate::priority::system_classes() {
        ensure(state, "scheduling.k8s.io", "v1", "priorityclasses", class).await?;
    }
    Ok(())
}

/// Register stored CRDs, then follow CRD changes for as long as the server runs.
pub async fn follow_crds(state: Arc<State>) -> ApiResult<()> {
    let info = state.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")?;
    let prefix = objects::prefix(&info, None);
    let page = state
        .objects
        .store
        .range(skiff_store::RangeRequest {
            prefix: prefix.clone(),
            ..Default::default()
        })
        .await?;
    let api_version = info.api_version();
    for kv in &page.items {
        crate::crd::register(&state, &objects::decode(kv, &api_version)?);
    }
    let mut revision = page.revision;
    tokio::spawn(async move {
        loop {
            let mut watch = match state.objects.store.watch(&prefix, revision).await {
                Ok(w) => w,
                Err(err) => {
                    tracing::warn!(%err, "watching CRDs failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    if let Ok(current) = state.objects.store.current_revision().await {
                        revision = current;
                    }
                    continue;
                }
            };
            while let Some(event) = watch.events.recv().await {
                revision = event.revision();
                let Ok(crd) = objects::decode(&event.kv, &api_version) else {
                    continue;
                };
                match event.kind {
                    EventKind::Put => crate::crd::register(&state, &crd),
                    EventKind::Delete => state
                        .registry
                        .set_custom(meta_str(&crd, "name"), Vec::new()),
                }
            }
        }
    });
    Ok(())
}
