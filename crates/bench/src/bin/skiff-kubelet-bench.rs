//! `skiff-kubelet-bench`: pod startup latency on a real node — upstream's pod-startup SLI
//! (create → Running and Ready seen by a watch, image already present; SLO p99 ≤ 5 s) for
//! single pods one after another and for a stream of pods created at a fixed rate (the
//! upstream node-throughput test: 100 pods at 5 pods/s), plus the kubelet's memory with
//! those pods running and the latency of its stats endpoints (`/stats/summary`,
//! `/metrics/resource`) with them, read the way metrics-server does: through the API
//! server's node proxy.
//!
//! The node under test is a `skiff agent` (so its process holds the kubelet alone) joined to
//! a server; both run in network namespaces this benchmark creates, which it joins itself to
//! reach the API. Run through `scripts/bench.sh` (release binaries).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, Config};
use parking_lot::Mutex;
use skiff_bench::percentile;
use skiff_testing::{BUSYBOX_IMAGE, TestCluster};

#[derive(Parser, Debug)]
#[command(about = "Pod startup latency and kubelet memory on a real node")]
struct Args {
    /// Single pods, created one at a time.
    #[arg(long, default_value_t = 20)]
    singles: usize,
    /// Pods in the throughput run.
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Creation rate of the throughput run (pods/s).
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Reads of each stats endpoint with the throughput run's pods running.
    #[arg(long, default_value_t = 20)]
    stats_reads: usize,
}

const NODE: &str = "bench-node";

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "labels": { "bench": "startup" } },
        "spec": { "nodeName": NODE, "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false,
            "containers": [{ "name": "main", "image": BUSYBOX_IMAGE, "command": ["sleep", "3600"] }] },
    }))
    .expect("a valid pod")
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Watches pods and records when each is first seen Running with all containers ready.
fn watch_ready(api: Api<Pod>, seen: Arc<Mutex<HashMap<String, Instant>>>) {
    tokio::spawn(async move {
        let params = WatchParams::default().labels("bench=startup");
        loop {
            let Ok(stream) = api.watch(&params, "0").await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut stream = stream.boxed();
            while let Some(Ok(event)) = stream.next().await {
                if let WatchEvent::Added(p) | WatchEvent::Modified(p) = event {
                    let ready = p.status.as_ref().is_some_and(|s| {
                        s.phase.as_deref() == Some("Running")
                            && s.container_statuses.iter().flatten().all(|c| c.ready)
                    });
                    if ready {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        seen.lock().entry(name).or_insert_with(Instant::now);
                    }
                }
            }
        }
    });
}

/// Latency of `GET path` through the API server, `reads` times one after another.
async fn read_latency(client: &Client, path: &str, reads: usize) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(reads);
    for _ in 0..reads {
        let request = http::Request::get(path).body(Vec::new())?;
        let start = Instant::now();
        let body = client
            .request_text(request)
            .await
            .with_context(|| format!("reading {path}"))?;
        samples.push(start.elapsed());
        anyhow::ensure!(!body.is_empty(), "{path} answered nothing");
    }
    Ok(samples)
}

async fn wait_ready(seen: &Arc<Mutex<HashMap<String, Instant>>>, names: &[String]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while names.iter().any(|n| !seen.lock().contains_key(n)) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "pods did not all start within 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cluster = TestCluster::with_node()?;
    let agent = cluster.join_agent(NODE, &[])?;
    // Join the cluster's network namespace (before any thread exists) to reach its API.
    let netns = cluster
        .netns()
        .context("the cluster has a network namespace")?;
    let home = std::fs::File::open("/proc/self/ns/net")?;
    let fd = std::fs::File::open(format!("/var/run/netns/{}", netns.name()))?;
    nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).context("entering the netns")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(&cluster, agent.pid().context("agent pid")?, &args));
    drop(runtime);
    // Leave the namespace before the cluster is dropped: its teardown kills every process
    // in it, which would otherwise include this one (leaving the namespace and the data
    // directory behind).
    nix::sched::setns(&home, nix::sched::CloneFlags::CLONE_NEWNET).context("leaving the netns")?;
    drop(agent);
    drop(cluster);
    result
}

async fn run(cluster: &TestCluster, agent_pid: u32, args: &Args) -> Result<()> {
    let kubeconfig = kube::config::Kubeconfig::read_from(cluster.kubeconfig())?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = Client::try_from(config)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let seen = Arc::new(Mutex::new(HashMap::new()));
    watch_ready(pods.clone(), seen.clone());
    let idle_rss = rss_mib(agent_pid);

    // Single pods.
    let mut singles = Vec::new();
    for i in 0..args.singles {
        let name = format!("single-{i}");
        let start = Instant::now();
        pods.create(&PostParams::default(), &pod(&name)).await?;
        wait_ready(&seen, std::slice::from_ref(&name)).await?;
        singles.push(seen.lock()[&name] - start);
        pods.delete(&name, &DeleteParams::default()).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pods
        .list(&ListParams::default().labels("bench=startup"))
        .await?
        .items
        .is_empty()
    {
        anyhow::ensure!(Instant::now() < deadline, "single pods were not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A stream of pods at a fixed rate.
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let mut created = HashMap::new();
    let mut names = Vec::new();
    let started = Instant::now();
    for i in 0..args.pods {
        let at = started + interval * i as u32;
        tokio::time::sleep_until(at.into()).await;
        let name = format!("batch-{i}");
        let client_pods = pods.clone();
        let p = pod(&name);
        created.insert(name.clone(), Instant::now());
        tokio::spawn(async move {
            let _ = client_pods.create(&PostParams::default(), &p).await;
        });
        names.push(name);
    }
    wait_ready(&seen, &names).await?;
    let batch: Vec<Duration> = names.iter().map(|n| seen.lock()[n] - created[n]).collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let full_rss = rss_mib(agent_pid);
    let summary_reads = read_latency(
        &client,
        &format!("/api/v1/nodes/{NODE}/proxy/stats/summary"),
        args.stats_reads,
    )
    .await?;
    let metrics_reads = read_latency(
        &client,
        &format!("/api/v1/nodes/{NODE}/proxy/metrics/resource"),
        args.stats_reads,
    )
    .await?;

    println!("| workload | pods | p50 | p99 | max |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (label, samples) in [
        ("one pod at a time", &singles),
        (
            &*format!("{} pods at {} pods/s", args.pods, args.rate),
            &batch,
        ),
    ] {
        println!(
            "| {label} | {} | {} | {} | {} |",
            samples.len(),
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.99)),
            ms(percentile(samples, 1.0))
        );
    }
    println!();
    println!("| kubelet (skiff agent process) | RSS |");
    println!("| --- | ---: |");
    println!("| idle, node Ready | {idle_rss:.0} MiB |");
    println!("| with {} pods running | {full_rss:.0} MiB |", args.pods);
    println!();
    println!(
        "| kubelet endpoint via nodes/proxy, {} pods running | reads | p50 | p99 | max |",
        args.pods
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (label, samples) in [
        ("/stats/summary", &summary_reads),
        ("/metrics/resource", &metrics_reads),
    ] {
        println!(
            "| {label} | {} | {} | {} | {} |",
            samples.len(),
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.99)),
            ms(percentile(samples, 1.0))
        );
    }
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("bench=startup"),
    )
    .await?;
    Ok(())
}
