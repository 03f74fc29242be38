//! The controllers against a real `skiff server` process (its in-process controller manager,
//! or separate `skiff controller-manager` processes), through the API like any client. Without
//! a kubelet in these clusters, tests play the kubelet's part where a controller needs pods to
//! run: they write pod status (phase, readiness, IPs) themselves.

mod cloud;
mod housekeeping;
mod manager;
mod policy;
mod workloads;

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use skiff_testing::TestCluster;

/// A cluster and an admin client.
pub struct Env {
    pub cluster: TestCluster,
    pub client: Client,
}

/// Controller manager flags every test cluster uses: fast node monitoring.
const FAST: [&str; 4] = [
    "--kube-controller-manager-arg",
    "node-monitor-period=500ms",
    "--kube-controller-manager-arg",
    "node-monitor-grace-period=3s",
];

/// Start a control plane (no kubelet) with its controller manager and `extra` flags.
pub async fn env(extra: &[&str]) -> Result<Env> {
    let mut flags = vec!["--disable-agent"];
    flags.extend(FAST);
    flags.extend(extra);
    let cluster = TestCluster::start_with(&flags)?;
    let client = skiff_runtime::client::from_kubeconfig(&cluster.kubeconfig()).await?;
    Ok(Env { cluster, client })
}

/// Poll `check` until it yields a value, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut last_err = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), check()).await {
            Ok(Ok(Some(v))) => return Ok(v),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => last_err = Some(e),
            Err(_) => {}
        }
        if tokio::time::Instant::now() > deadline {
            match last_err {
                Some(e) => bail!("timed out after {secs}s waiting for {what}: {e:#}"),
                None => bail!("timed out after {secs}s waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Parse a JSON object into a typed one.
pub fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("test object")
}

/// Play the kubelet: report the pod Running and Ready (ready since `ready_secs_ago`) with an
/// IP.
pub async fn make_ready(pods: &Api<Pod>, name: &str, ip: &str) -> Result<()> {
    let since = (jiff::Timestamp::now() - Duration::from_secs(30)).to_string();
    let patch = json!({ "status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{ "ip": ip }],
        "conditions": [
            { "type": "Ready", "status": "True", "lastTransitionTime": since },
            { "type": "ContainersReady", "status": "True", "lastTransitionTime": since }
        ]
    } });
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Play the kubelet: report the pod finished.
pub async fn finish(pods: &Api<Pod>, name: &str, phase: &str, exit_code: i32) -> Result<()> {
    let patch = json!({ "status": {
        "phase": phase,
        "containerStatuses": [{ "name": "main", "ready": false, "restartCount": 0, "image": "busybox", "imageID": "",
            "state": { "terminated": { "exitCode": exit_code, "reason": if exit_code == 0 { "Completed" } else { "Error" } } } }]
    } });
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Names of a list of objects.
/// Renew the node's Lease (so the node lifecycle controller keeps a Ready node Ready).
pub async fn renew(
    leases: &Api<k8s_openapi::api::coordination::v1::Lease>,
    node: &str,
) -> Result<()> {
    let lease = json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": { "name": node },
        "spec": { "holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(jiff::Timestamp::now()) } });
    leases
        .patch(
            node,
            &PatchParams::apply("test-kubelet").force(),
            &Patch::Apply(&lease),
        )
        .await?;
    Ok(())
}

pub fn names<K: kube::ResourceExt>(items: &[K]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|i| i.name_any()).collect();
    v.sort();
    v
}
