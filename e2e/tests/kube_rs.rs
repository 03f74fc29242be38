//! kube-rs against Skiff: typed CRUD, and a watcher-fed reflector that stays in sync across
//! a server restart.

use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use skiff_testing::TestCluster;

async fn client(cluster: &TestCluster) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig())?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn configmap(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn wait_for(store: &reflector::Store<ConfigMap>, names: &[&str]) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut present: Vec<String> = store
            .state()
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        present.sort();
        if names.iter().all(|n| present.iter().any(|p| p == n)) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("reflector has {present:?}, wanted {names:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_stays_in_sync_across_restart() -> Result<()> {
    let mut cluster = TestCluster::start()?;
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster).await?, "default");
    api.create(&PostParams::default(), &configmap("before"))
        .await?;

    let (reader, writer) = reflector::store();
    // With backoff, as controllers run it: without, the watcher retries in a tight loop
    // while the server restarts and starves this test's two runtime threads.
    let stream = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default()).default_backoff(),
    )
    .applied_objects()
    .for_each(|_| async {});
    let task = tokio::spawn(stream);
    reader
        .wait_until_ready()
        .await
        .context("reflector never became ready")?;
    wait_for(&reader, &["before"]).await?;

    api.create(&PostParams::default(), &configmap("live"))
        .await?;
    wait_for(&reader, &["before", "live"]).await?;

    // Restart the server under the running reflector (blocking: it waits for readiness).
    let cluster = tokio::task::spawn_blocking(move || -> Result<TestCluster> {
        cluster.restart()?;
        Ok(cluster)
    })
    .await??;
    api.create(&PostParams::default(), &configmap("after-restart"))
        .await?;
    wait_for(&reader, &["after-restart", "before", "live"]).await?;
    api.delete("before", &DeleteParams::default()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while reader
        .state()
        .iter()
        .any(|c| c.metadata.name.as_deref() == Some("before"))
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "delete never reached the reflector"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(cluster);
    task.abort();
    Ok(())
}
