//! The lists and watches upstream components open at start-up (kube-scheduler,
//! kube-controller-manager, kubelet, kube-proxy), in the forms client-go sends them: a
//! `resourceVersion=0` list, a watch resuming from its revision with bookmarks, the watch-list
//! form (`sendInitialEvents`), and the metadata-only lists of the garbage collector and quota.

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;
use skiff_testing::TestCluster;

/// (API path prefix, resource).
const INFORMERS: &[(&str, &str)] = &[
    ("/api/v1", "pods"),
    ("/api/v1", "nodes"),
    ("/api/v1", "namespaces"),
    ("/api/v1", "services"),
    ("/api/v1", "endpoints"),
    ("/api/v1", "events"),
    ("/api/v1", "configmaps"),
    ("/api/v1", "secrets"),
    ("/api/v1", "serviceaccounts"),
    ("/api/v1", "persistentvolumes"),
    ("/api/v1", "persistentvolumeclaims"),
    ("/api/v1", "replicationcontrollers"),
    ("/api/v1", "podtemplates"),
    ("/api/v1", "limitranges"),
    ("/api/v1", "resourcequotas"),
    ("/apis/apps/v1", "deployments"),
    ("/apis/apps/v1", "replicasets"),
    ("/apis/apps/v1", "statefulsets"),
    ("/apis/apps/v1", "daemonsets"),
    ("/apis/apps/v1", "controllerrevisions"),
    ("/apis/batch/v1", "jobs"),
    ("/apis/batch/v1", "cronjobs"),
    ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    ("/apis/policy/v1", "poddisruptionbudgets"),
    ("/apis/discovery.k8s.io/v1", "endpointslices"),
    ("/apis/networking.k8s.io/v1", "ingresses"),
    ("/apis/networking.k8s.io/v1", "networkpolicies"),
    ("/apis/networking.k8s.io/v1", "servicecidrs"),
    ("/apis/networking.k8s.io/v1", "ipaddresses"),
    ("/apis/node.k8s.io/v1", "runtimeclasses"),
    ("/apis/coordination.k8s.io/v1", "leases"),
    ("/apis/events.k8s.io/v1", "events"),
    ("/apis/storage.k8s.io/v1", "storageclasses"),
    ("/apis/storage.k8s.io/v1", "csinodes"),
    ("/apis/storage.k8s.io/v1", "csidrivers"),
    ("/apis/storage.k8s.io/v1", "csistoragecapacities"),
    ("/apis/storage.k8s.io/v1", "volumeattachments"),
    ("/apis/storage.k8s.io/v1", "volumeattributesclasses"),
    ("/apis/resource.k8s.io/v1", "deviceclasses"),
    ("/apis/resource.k8s.io/v1", "resourceclaims"),
    ("/apis/resource.k8s.io/v1", "resourceclaimtemplates"),
    ("/apis/resource.k8s.io/v1", "resourceslices"),
    ("/apis/rbac.authorization.k8s.io/v1", "clusterroles"),
    ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings"),
    ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    ("/apis/certificates.k8s.io/v1", "certificatesigningrequests"),
    ("/apis/scheduling.k8s.io/v1", "priorityclasses"),
    (
        "/apis/admissionregistration.k8s.io/v1",
        "validatingwebhookconfigurations",
    ),
    (
        "/apis/admissionregistration.k8s.io/v1",
        "mutatingwebhookconfigurations",
    ),
    (
        "/apis/admissionregistration.k8s.io/v1",
        "validatingadmissionpolicies",
    ),
    ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions"),
];

async fn get(client: &kube::Client, uri: &str, accept: &str) -> Result<String> {
    let request = http::Request::get(uri)
        .header(http::header::ACCEPT, accept)
        .body(Vec::new())?;
    client
        .request_text(request)
        .await
        .with_context(|| format!("GET {uri}"))
}

async fn check_informer(client: &kube::Client, prefix: &str, resource: &str) -> Result<()> {
    let json = "application/json";
    let base = format!("{prefix}/{resource}");
    let list: Value = serde_json::from_str(
        &get(client, &format!("{base}?limit=500&resourceVersion=0"), json).await?,
    )?;
    ensure!(
        list["kind"].as_str().is_some_and(|k| k.ends_with("List")),
        "{base}: {list}"
    );
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .with_context(|| format!("{base}: list without resourceVersion"))?
        .to_owned();

    // The informer's watch from the list's revision, ended by the server's timeout.
    get(
        client,
        &format!(
            "{base}?allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=1&watch=true"
        ),
        json,
    )
    .await?;

    // The watch-list form: initial state as events, closed by an annotated BOOKMARK.
    let stream = get(
        client,
        &format!("{base}?allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeoutSeconds=1&watch=true"),
        json,
    )
    .await?;
    let bookmark_ends_initial_events = stream.lines().any(|line| {
        serde_json::from_str::<Value>(line).is_ok_and(|e| {
            e["type"] == "BOOKMARK"
                && e["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"
        })
    });
    ensure!(bookmark_ends_initial_events, "{base}: {stream}");

    // Metadata-only lists (garbage collector, quota).
    let meta: Value = serde_json::from_str(
        &get(
            client,
            &format!("{base}?limit=500&resourceVersion=0"),
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )
        .await?,
    )?;
    ensure!(
        meta["kind"] == "PartialObjectMetadataList",
        "{base}: {meta}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_startup_list_and_watch_is_served() -> Result<()> {
    let cluster = TestCluster::start()?;
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig())?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    let json = "application/json";
    // Each watch lasts until its one-second server timeout: check the kinds side by side.
    let checks = INFORMERS
        .iter()
        .map(|(prefix, resource)| check_informer(&client, prefix, resource));
    let results: Vec<Result<()>> = futures::stream::iter(checks)
        .buffer_unordered(16)
        .collect()
        .await;
    for result in results {
        result?;
    }

    // The node-scoped and selector-scoped forms the kubelet and kube-proxy use.
    for uri in [
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a&limit=500&resourceVersion=0",
        "/api/v1/nodes?fieldSelector=metadata.name%3Dnode-a&limit=500&resourceVersion=0",
        "/api/v1/services?labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name&limit=500&resourceVersion=0",
        "/apis/discovery.k8s.io/v1/endpointslices?labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name&limit=500&resourceVersion=0",
    ] {
        let list: Value = serde_json::from_str(&get(&client, uri, json).await?)?;
        ensure!(
            list["kind"].as_str().is_some_and(|k| k.ends_with("List")),
            "{uri}: {list}"
        );
    }
    Ok(())
}
