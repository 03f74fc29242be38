//! `skiff-controllers-bench`: the controller manager as its own process against a real API
//! server, with `skiff hollow-nodes` as the nodes and `skiff scheduler` binding the pods.
//!
//! Phases, each timed from the request to what a watch on the pods sees:
//! 1. create a Deployment of `--replicas` (1000): until that many pods exist, are bound, and
//!    the Deployment reports them available;
//! 2. scale it to `--scale-to` (10000): the ReplicaSet controller's creation throughput
//!    (pods/s) and the controller manager's memory with that many pods in its caches;
//! 3. a rolling update of the template (`kubectl rollout restart`'s annotation) with the
//!    default 25 % surge/unavailability: until every pod is of the new ReplicaSet and ready;
//! 4. scale to 0: deletion throughput.
//!
//! Run through `scripts/bench.sh` (release binaries).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use skiff_bench::{client_for, rss_mib};
use skiff_testing::{ChildGuard, TestCluster};

#[derive(Parser, Debug)]
#[command(about = "Controller manager throughput and memory against a real skiff server")]
struct Args {
    /// Hollow nodes (each takes 110 pods).
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Replicas of the first Deployment.
    #[arg(long, default_value_t = 1000)]
    replicas: usize,
    /// Replicas it is then scaled to.
    #[arg(long, default_value_t = 10000)]
    scale_to: usize,
}

/// What the pod watch has seen so far: per pod, its template hash, whether it is bound and
/// ready; deleted pods leave.
#[derive(Default)]
struct PodView {
    pods: HashMap<String, (String, bool, bool)>,
}

impl PodView {
    fn count(&self, pred: impl Fn(&(String, bool, bool)) -> bool) -> usize {
        self.pods.values().filter(|p| pred(p)).count()
    }
}

fn watch_pods(client: &Client) -> Arc<Mutex<PodView>> {
    let view = Arc::new(Mutex::new(PodView::default()));
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let seen = view.clone();
    tokio::spawn(async move {
        let mut events = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            let mut view = seen.lock();
            match event {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                    let hash = p
                        .labels()
                        .get("pod-template-hash")
                        .cloned()
                        .unwrap_or_default();
                    let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
                    let ready = p
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    view.pods.insert(p.name_any(), (hash, bound, ready));
                }
                Ok(watcher::Event::Delete(p)) => {
                    view.pods.remove(&p.name_any());
                }
                _ => {}
            }
        }
    });
    view
}

/// Wait until `done` holds for the view; returns the time since `since`.
async fn until(
    what: &str,
    view: &Mutex<PodView>,
    since: Instant,
    done: impl Fn(&PodView) -> bool,
) -> Result<Duration> {
    let mut last_progress = (usize::MAX, Instant::now());
    loop {
        {
            let v = view.lock();
            if done(&v) {
                return Ok(since.elapsed());
            }
            if v.pods.len() != last_progress.0 {
                last_progress = (v.pods.len(), Instant::now());
            }
        }
        if last_progress.1.elapsed() > Duration::from_secs(180) {
            bail!("{what}: no progress for 3 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_nodes(client: &Client, want: usize) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let ready = nodes
            .list(&ListParams::default().labels("skiff.io/hollow-node=true"))
            .await?
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {ready}/{want} hollow nodes ready");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn available(deployments: &Api<Deployment>, want: usize, since: Instant) -> Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let d = deployments.get("bench").await?;
        let status = d.status.unwrap_or_default();
        let generation = d.metadata.generation.unwrap_or_default();
        if status.observed_generation == Some(generation)
            && status.available_replicas.unwrap_or(0) as usize == want
            && status.updated_replicas.unwrap_or(0) as usize == want
            && status.replicas.unwrap_or(0) as usize == want
        {
            return Ok(since.elapsed());
        }
        if Instant::now() > deadline {
            bail!("deployment not available: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

async fn scale(deployments: &Api<Deployment>, replicas: usize) -> Result<()> {
    deployments
        .patch(
            "bench",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
        )
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.nodes * 110 < args.scale_to {
        bail!(
            "{} nodes hold at most {} pods",
            args.nodes,
            args.nodes * 110
        );
    }
    let cluster = TestCluster::start_with(&[
        "--disable-agent",
        "--disable-scheduler",
        "--disable-controller-manager",
    ])?;
    let client = client_for(&cluster).await?;
    let nodes = args.nodes.to_string();
    let _hollow: ChildGuard = cluster.spawn_skiff(
        "hollow-nodes",
        &[
            "hollow-nodes",
            "--count",
            &nodes,
            "--workers",
            "32",
            "--lease-interval",
            "30",
        ],
    )?;
    wait_nodes(&client, args.nodes).await?;
    let _scheduler = cluster.spawn_skiff(
        "scheduler",
        &[
            "scheduler",
            "--leader-elect",
            "false",
            "--metrics-address",
            "",
        ],
    )?;
    let manager = cluster.spawn_skiff(
        "controller-manager",
        &["controller-manager", "--leader-elect=false"],
    )?;
    let view = watch_pods(&client);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    // The controller manager is up once its service-account controller made `default`'s.
    let ready = Instant::now();
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "default");
    while sas.get_opt("default").await?.is_none() {
        if ready.elapsed() > Duration::from_secs(60) {
            bail!("controller manager never started:\n{}", manager.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let n = args.replicas;
    let body: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "bench" },
        "spec": {
            "replicas": n,
            "selector": { "matchLabels": { "app": "bench" } },
            "template": {
                "metadata": { "labels": { "app": "bench" } },
                "spec": { "containers": [{ "name": "app", "image": "registry.k8s.io/pause:3.10.1",
                    "resources": { "requests": { "cpu": "10m", "memory": "16Mi" } } }] } },
        },
    }))?;
    let start = Instant::now();
    deployments.create(&PostParams::default(), &body).await?;
    let created = until("pods created", &view, start, |v| v.pods.len() >= n).await?;
    let bound = until("pods bound", &view, start, |v| v.count(|p| p.1) >= n).await?;
    let avail = available(&deployments, n, start).await?;

    let m = args.scale_to;
    let start = Instant::now();
    scale(&deployments, m).await?;
    let scaled = until("scaled up", &view, start, |v| v.pods.len() >= m).await?;
    let scaled_bound = until("scaled bound", &view, start, |v| v.count(|p| p.1) >= m).await?;
    let scaled_avail = available(&deployments, m, start).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_mib(manager.pid());

    let old_hash = view
        .lock()
        .pods
        .values()
        .next()
        .map(|p| p.0.clone())
        .unwrap_or_default();
    let start = Instant::now();
    deployments
        .patch(
            "bench",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "spec": { "template": { "metadata": { "annotations": {
                "kubectl.kubernetes.io/restartedAt": unix_now() } } } } }),
            ),
        )
        .await?;
    let rolled = until("rollout", &view, start, |v| {
        v.pods.len() == m && v.pods.values().all(|p| p.0 != old_hash && p.2)
    })
    .await?;
    let rolled_avail = available(&deployments, m, start).await?;

    let start = Instant::now();
    scale(&deployments, 0).await?;
    let emptied = until("scaled down", &view, start, |v| v.pods.is_empty()).await?;
    let rss_after = rss_mib(manager.pid());

    println!("| phase | pods | pods exist | bound | deployment available | controller pods/s |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| create Deployment | {n} | {} | {} | {} | {:.0} |",
        secs(created),
        secs(bound),
        secs(avail),
        per_sec(n, created)
    );
    println!(
        "| scale {n} → {m} | {} | {} | {} | {} | {:.0} |",
        m - n,
        secs(scaled),
        secs(scaled_bound),
        secs(scaled_avail),
        per_sec(m - n, scaled)
    );
    println!(
        "| rolling update (25 % surge / unavailable) | {m} | {} (all new and ready) | – | {} | {:.0} |",
        secs(rolled),
        secs(rolled_avail),
        per_sec(m, rolled)
    );
    println!(
        "| scale {m} → 0 | {m} | {} (all gone) | – | – | {:.0} |",
        secs(emptied),
        per_sec(m, emptied)
    );
    println!();
    println!(
        "controller manager RSS with {m} pods: {:.0} MiB (peak {:.0} MiB; after scale-down {:.0} MiB); {} hollow nodes",
        rss.0, rss.1, rss_after.0, args.nodes
    );
    Ok(())
}

fn unix_now() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}", since.as_secs())
}
