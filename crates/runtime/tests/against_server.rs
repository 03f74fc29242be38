//! The runtime against a real `skiff server`: informers follow changes (and survive a server
//! restart), leader election elects exactly one candidate and hands over on release, and the
//! event recorder de-duplicates.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use skiff_runtime::events::{EventType, Recorder, reference};
use skiff_runtime::leader::LeaderElection;
use skiff_runtime::{CancellationToken, Informer, ObjectKey, client};
use skiff_testing::TestCluster;

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn an_informer_follows_changes_across_a_server_restart() -> Result<()> {
    let mut cluster = TestCluster::start()?;
    let client = client::from_kubeconfig(&cluster.kubeconfig()).await?;
    cluster.k(&["create", "configmap", "before", "--from-literal=a=1"])?;
    let stop = CancellationToken::new();
    let informer: Informer<ConfigMap> = Informer::spawn(
        Api::all(client.clone()),
        watcher::Config::default().labels("!ignored"),
        stop.clone(),
    );
    tokio::time::timeout(Duration::from_secs(10), informer.wait_synced()).await?;
    assert!(informer.get_named("default", "before").is_some());

    cluster.k(&["create", "configmap", "during", "--from-literal=a=1"])?;
    eventually("the created ConfigMap", || {
        informer.get_named("default", "during").is_some()
    })
    .await;
    cluster.k(&["label", "configmap", "during", "ignored=yes"])?;
    eventually("the ConfigMap leaving the selector", || {
        informer.get_named("default", "during").is_none()
    })
    .await;

    cluster.restart()?;
    cluster.k(&["delete", "configmap", "before"])?;
    cluster.k(&["create", "configmap", "after", "--from-literal=a=1"])?;
    eventually("the cache catching up after the restart", || {
        informer.get_named("default", "before").is_none()
            && informer.get(&ObjectKey::new("default", "after")).is_some()
    })
    .await;
    stop.cancel();
    Ok(())
}

fn elector(client: &kube::Client, name: &str) -> LeaderElection {
    let mut e = LeaderElection::new(client.clone(), "kube-system", "test-lease", name);
    e.lease_duration = Duration::from_secs(3);
    e.renew_deadline = Duration::from_secs(2);
    e.retry_period = Duration::from_millis(300);
    e
}

#[tokio::test]
async fn one_candidate_leads_and_hands_over_when_it_stops() -> Result<()> {
    let cluster = TestCluster::start()?;
    let client = client::from_kubeconfig(&cluster.kubeconfig()).await?;
    let leading = Arc::new(AtomicUsize::new(0));
    let terms = Arc::new(AtomicUsize::new(0));
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for name in ["a", "b"] {
        let stop = CancellationToken::new();
        let e = elector(&client, name);
        let (leading, terms) = (leading.clone(), terms.clone());
        let task_stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            e.run(task_stop, move |term| {
                let (leading, terms) = (leading.clone(), terms.clone());
                async move {
                    assert_eq!(leading.fetch_add(1, Ordering::SeqCst), 0, "two leaders");
                    terms.fetch_add(1, Ordering::SeqCst);
                    term.cancelled().await;
                    leading.fetch_sub(1, Ordering::SeqCst);
                }
            })
            .await;
        }));
        stops.push(stop);
    }
    eventually("a leader", || leading.load(Ordering::SeqCst) == 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(terms.load(Ordering::SeqCst), 1, "leadership stays put");

    let lease = cluster.k_json(&["get", "lease", "-n", "kube-system", "test-lease"])?;
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap().to_owned();
    let index = if holder == "a" { 0 } else { 1 };
    stops[index].cancel();
    // The leader releases the lease on shutdown, so the other takes over well within the
    // lease duration.
    let start = std::time::Instant::now();
    eventually("the other candidate to lead", || {
        terms.load(Ordering::SeqCst) == 2 && leading.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(start.elapsed() < Duration::from_secs(3));
    let lease = cluster.k_json(&["get", "lease", "-n", "kube-system", "test-lease"])?;
    assert_ne!(
        lease["spec"]["holderIdentity"].as_str(),
        Some(holder.as_str())
    );
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    for stop in &stops {
        stop.cancel();
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(5), task).await??;
    }
    Ok(())
}

#[tokio::test]
async fn repeated_events_are_counted_not_duplicated() -> Result<()> {
    let cluster = TestCluster::start()?;
    let client = client::from_kubeconfig(&cluster.kubeconfig()).await?;
    cluster.k(&["create", "configmap", "subject"])?;
    let cm: ConfigMap = Api::namespaced(client.clone(), "default")
        .get("subject")
        .await?;
    let recorder = Recorder::new(client.clone(), "test-controller", Some("host-1"));
    let target = reference(&cm);
    for _ in 0..3 {
        recorder
            .record(&target, EventType::Warning, "Broken", "it broke")
            .await?;
    }
    recorder
        .record(&target, EventType::Normal, "Fixed", "it works")
        .await?;
    let events: Api<Event> = Api::namespaced(client, "default");
    let list = events.list(&ListParams::default()).await?;
    let mut seen: Vec<(String, i32)> = list
        .items
        .iter()
        .map(|e| (e.reason.clone().unwrap_or_default(), e.count.unwrap_or(0)))
        .collect();
    seen.sort();
    assert_eq!(seen, [("Broken".to_owned(), 3), ("Fixed".to_owned(), 1)]);
    let described = cluster.k(&["describe", "configmap", "subject"])?;
    assert!(described.contains("Broken"), "{described}");
    assert!(described.contains("it broke"), "{described}");
    Ok(())
}
