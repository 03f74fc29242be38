//! `skiff-bench`: the API server benchmark of issue 2, run against a real `skiff server`
//! process through kube-rs, the way controllers and users reach it.
//!
//! Workloads (each prints one Markdown table row): create, get, update with 1 and 32
//! concurrent clients; list of 10k objects (one page and paginated by 500); watch event
//! latency with 100 concurrent watchers; server RSS idle and holding 100k objects.
//! Latency is measured per request on the client; throughput is requests over wall time.
//!
//! Run through `scripts/bench.sh`, which builds release binaries first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use skiff_testing::TestCluster;

#[derive(Parser, Debug)]
#[command(about = "Benchmark a real skiff server with kube-rs")]
struct Args {
    /// Requests per client-count step for create/get/update.
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// Objects in the big-list step.
    #[arg(long, default_value_t = 10_000)]
    list_objects: usize,
    /// Concurrent watchers in the watch step.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Objects held for the memory step.
    #[arg(long, default_value_t = 100_000)]
    memory_objects: usize,
}

/// Latency samples of one workload.
struct Samples {
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Samples {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[index]
    }

    fn row(&self, name: &str, clients: usize) -> String {
        let throughput = self.latencies.len() as f64 / self.wall.as_secs_f64();
        format!(
            "| {name} | {clients} | {} | {throughput:.0}/s | {:.2} ms | {:.2} ms |",
            self.latencies.len(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.99)),
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn config_map(name: &str, payload: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "labels": { "bench": "yes" } },
        "data": { "payload": payload },
    }))
    .expect("a valid ConfigMap")
}

async fn client_for(cluster: &TestCluster) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig())?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Run `total` operations split over `clients` tasks; `op(i)` performs operation `i`.
async fn run<F, Fut>(clients: usize, total: usize, op: F) -> Result<Samples>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = worker;
            while i < total {
                let t = Instant::now();
                op(i).await?;
                latencies.push(t.elapsed());
                i += clients;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(Samples {
        latencies,
        wall: start.elapsed(),
    })
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kb / 1024.0)
}

async fn crud(client: &Client, requests: usize) -> Result<()> {
    println!("| workload | clients | requests | throughput | p50 | p99 |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for clients in [1usize, 32] {
        let ns = format!("crud-{clients}");
        create_namespace(client, &ns).await?;
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let a = api.clone();
        let create = run(clients, requests, move |i| {
            let a = a.clone();
            async move {
                a.create(
                    &PostParams::default(),
                    &config_map(&format!("cm-{i}"), "v0"),
                )
                .await?;
                Ok(())
            }
        })
        .await?;
        println!("{}", create.row("create", clients));
        let a = api.clone();
        let get = run(clients, requests, move |i| {
            let a = a.clone();
            async move {
                a.get(&format!("cm-{i}")).await?;
                Ok(())
            }
        })
        .await?;
        println!("{}", get.row("get", clients));
        let a = api.clone();
        let update = run(clients, requests, move |i| {
            let a = a.clone();
            async move {
                // An unconditional update (no resourceVersion) like `kubectl replace --force`
                // avoids measuring client-side conflict retries.
                a.replace(
                    &format!("cm-{i}"),
                    &PostParams::default(),
                    &config_map(&format!("cm-{i}"), "v1"),
                )
                .await?;
                Ok(())
            }
        })
        .await?;
        println!("{}", update.row("update", clients));
        let a = api.clone();
        let list = run(clients, (requests / 20).max(clients), move |_| {
            let a = a.clone();
            async move {
                a.list(&ListParams::default().limit(100)).await?;
                Ok(())
            }
        })
        .await?;
        println!("{}", list.row("list (limit 100)", clients));
    }
    Ok(())
}

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name }
    }))?;
    api.create(&PostParams::default(), &ns).await?;
    Ok(())
}

async fn fill(client: &Client, ns: &str, count: usize, payload_bytes: usize) -> Result<Duration> {
    create_namespace(client, ns).await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let payload = "x".repeat(payload_bytes);
    let samples = run(32, count, move |i| {
        let api = api.clone();
        let payload = payload.clone();
        async move {
            api.create(
                &PostParams::default(),
                &config_map(&format!("obj-{i:06}"), &payload),
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    Ok(samples.wall)
}

async fn big_list(client: &Client, objects: usize) -> Result<()> {
    fill(client, "biglist", objects, 64).await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "biglist");
    let mut one_page = Vec::new();
    let mut paged = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let list = api.list(&ListParams::default()).await?;
        anyhow::ensure!(list.items.len() == objects, "listed {}", list.items.len());
        one_page.push(t.elapsed());
        let t = Instant::now();
        let mut params = ListParams::default().limit(500);
        let mut seen = 0;
        loop {
            let page = api.list(&params).await?;
            seen += page.items.len();
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
        anyhow::ensure!(seen == objects, "paged {seen}");
        paged.push(t.elapsed());
    }
    one_page.sort();
    paged.sort();
    println!();
    println!("| list of {objects} ConfigMaps | median | best |");
    println!("| --- | ---: | ---: |");
    println!(
        "| one request | {:.0} ms | {:.0} ms |",
        ms(one_page[2]),
        ms(one_page[0])
    );
    println!(
        "| pages of 500 | {:.0} ms | {:.0} ms |",
        ms(paged[2]),
        ms(paged[0])
    );
    Ok(())
}

/// Every watcher must see every event; latency is from the write's acknowledgement to each
/// watcher's receipt.
async fn watch_fanout(client: &Client, watchers: usize) -> Result<()> {
    let ns = "watchers";
    create_namespace(client, ns).await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let events = 50usize;
    let start_rv = api
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let acked: Arc<ack::AckTimes> = Arc::new(ack::AckTimes::new(events));
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let api = api.clone();
        let rv = start_rv.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = api
                .watch(&WatchParams::default().timeout(120), &rv)
                .await?
                .boxed();
            let mut latencies = Vec::with_capacity(events);
            while latencies.len() < events {
                let Some(event) = stream.try_next().await? else {
                    anyhow::bail!("watch ended early");
                };
                if let WatchEvent::Added(cm) = event {
                    let received = Instant::now();
                    let index: usize = cm
                        .metadata
                        .name
                        .as_deref()
                        .and_then(|n| n.strip_prefix("w-"))
                        .and_then(|n| n.parse().ok())
                        .context("unexpected object")?;
                    let sent = acked.wait(index).await;
                    latencies.push(received.saturating_duration_since(sent));
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let wall = Instant::now();
    for i in 0..events {
        let t = Instant::now();
        api.create(&PostParams::default(), &config_map(&format!("w-{i}"), "x"))
            .await?;
        // The send time is the moment the write was issued: the event can reach a watcher
        // before the client sees the create's response.
        acked.set(i, t);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let samples = Samples {
        latencies,
        wall: wall.elapsed(),
    };
    println!();
    println!("| watch fan-out | watchers | events delivered | delivery rate | p50 | p99 |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    println!("{}", samples.row("create → watch event", watchers));
    Ok(())
}

/// Write times shared between the writer and the watchers: each slot is written once, and a
/// watcher that sees an event before the writer recorded its time waits for it.
mod ack {
    use std::time::Instant;
    use tokio::sync::watch;

    pub struct AckTimes {
        slots: Vec<watch::Sender<Option<Instant>>>,
    }

    impl AckTimes {
        pub fn new(n: usize) -> Self {
            AckTimes {
                slots: (0..n).map(|_| watch::channel(None).0).collect(),
            }
        }

        pub fn set(&self, i: usize, at: Instant) {
            self.slots[i].send_replace(Some(at));
        }

        pub async fn wait(&self, i: usize) -> Instant {
            let mut rx = self.slots[i].subscribe();
            loop {
                if let Some(at) = *rx.borrow_and_update() {
                    return at;
                }
                if rx.changed().await.is_err() {
                    return Instant::now();
                }
            }
        }
    }
}

async fn memory(cluster: &TestCluster, client: &Client, objects: usize) -> Result<()> {
    let pid = cluster.pid().context("server not running")?;
    let idle = rss_mib(pid)?;
    let took = fill(client, "memory", objects, 256).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let full = rss_mib(pid)?;
    let disk = dir_size(&cluster.data_dir().join("db"));
    println!();
    println!("| server memory | RSS |");
    println!("| --- | ---: |");
    println!("| before filling (after the steps above) | {idle:.0} MiB |");
    println!(
        "| + {objects} ConfigMaps (256 B payload; created in {:.1} s = {:.0}/s with 32 clients) | {full:.0} MiB |",
        took.as_secs_f64(),
        objects as f64 / took.as_secs_f64()
    );
    println!("| store on disk | {:.0} MiB |", disk as f64 / 1048576.0);
    Ok(())
}

fn dir_size(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let cluster = TestCluster::start().context("starting skiff server (set SKIFF_BIN)")?;
    let client = client_for(&cluster).await?;
    let pid = cluster.pid().context("server not running")?;
    println!(
        "server idle RSS right after start: {:.0} MiB\n",
        rss_mib(pid)?
    );
    crud(&client, args.requests).await?;
    big_list(&client, args.list_objects).await?;
    watch_fanout(&client, args.watchers).await?;
    memory(&cluster, &client, args.memory_objects).await?;
    Ok(())
}
