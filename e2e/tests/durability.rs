//! `kill -9` during a stream of writes loses no acknowledged write, and the restart is quick.
//!
//! Writers create ConfigMaps through kube-rs as fast as the server acknowledges them; the
//! server is SIGKILLed mid-stream; after a restart on the same data dir every write that got a
//! success response must be there, with its data.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use skiff_testing::TestCluster;

async fn client(cluster: &TestCluster) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig())?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": name },
        "data": { "written": name },
    }))
    .expect("valid ConfigMap")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_acknowledged_write() -> Result<()> {
    let mut cluster = TestCluster::start()?;
    let api: Api<ConfigMap> = Api::default_namespaced(client(&cluster).await?);
    let acked = Arc::new(parking_lot::Mutex::new(BTreeSet::new()));

    let mut writers = Vec::new();
    for writer in 0..8 {
        let api = api.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{writer}-{i}");
                match api.create(&PostParams::default(), &configmap(&name)).await {
                    Ok(_) => {
                        acked.lock().insert(name);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Let a few hundred writes land, then pull the plug.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().len() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.kill()?;
    for w in writers {
        w.await?;
    }
    let acked = acked.lock().clone();
    assert!(
        acked.len() >= 300,
        "only {} writes before the kill",
        acked.len()
    );

    let restart = Instant::now();
    cluster.restart()?;
    let restart_took = restart.elapsed();
    assert!(
        restart_took < Duration::from_secs(10),
        "restart took {restart_took:?}"
    );

    let api: Api<ConfigMap> = Api::default_namespaced(client(&cluster).await?);
    let stored = api.list(&ListParams::default()).await?;
    let mut present = BTreeSet::new();
    for cm in stored.items {
        let name = cm.metadata.name.clone().unwrap_or_default();
        if name.starts_with('w') {
            assert_eq!(
                cm.data.as_ref().and_then(|d| d.get("written")),
                Some(&name),
                "{name} kept its data"
            );
            present.insert(name);
        }
    }
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");

    // The server keeps working after recovery, with revisions still moving forward.
    api.create(&PostParams::default(), &configmap("after-crash"))
        .await?;
    Ok(())
}
