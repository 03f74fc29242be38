//! `skiff-scheduler-bench`: upstream scheduler_perf's workloads (SchedulingBasic,
//! SchedulingNodeAffinity, TopologySpreading, SchedulingPodAntiAffinity, SchedulingPodAffinity,
//! PreemptionBasic) through the real API server, with `skiff hollow-nodes` as the nodes and
//! `skiff scheduler` as its own process.
//!
//! Each workload: start `skiff server --disable-scheduler`, register hollow nodes (upstream's
//! node template: 4 cpu, 32Gi, 110 pods), start the scheduler, create the initial pods and wait
//! until they are bound, then create the measured pods with 32 concurrent clients while a watch
//! records when each is bound. Reported: pods/s (measured pods ÷ time from the first create to
//! the last binding), latency from create request to the binding seen on the watch (p50/p99),
//! the scheduler's own `scheduler_pod_scheduling_sli_duration_seconds` (queue → bound) p50/p99
//! for the measured pods, and the scheduler process' peak RSS. Pod templates are upstream's.
//!
//! Run through `scripts/bench.sh scheduler` (release binaries).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use skiff_bench::scheduler_perf::{
    NODE_CPU, NODE_MEMORY, NODE_PODS, PodSet, Workload, select, workloads,
};
use skiff_bench::{client_for, percentile, rss_mib};
use skiff_testing::{ChildGuard, TestCluster, free_port};

#[derive(Parser, Debug)]
#[command(about = "Upstream scheduler_perf workloads against a real skiff server and hollow nodes")]
struct Args {
    /// Workloads to run (default: all).
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Multiply node and pod counts (e.g. 0.2 for a quick run).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Concurrent pod creators.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Hollow node Lease renewal interval in seconds (the kubelet's 10 s adds 500 writes/s at
    /// 5000 nodes; the upstream benchmark runs no kubelets at all).
    #[arg(long, default_value_t = 30)]
    lease_interval: u64,
    /// Sample the scheduler process with `perf record -g` while the measured pods are
    /// scheduled, writing `<dir>/<workload>.perf.data` (a profile, not a measurement).
    #[arg(long)]
    perf_record: Option<std::path::PathBuf>,
    /// Keep the scheduler's log as `<dir>/<workload>.scheduler.log` (set `SKIFF_LOG` for more).
    #[arg(long)]
    scheduler_log: Option<std::path::PathBuf>,
}

/// `perf record` attached to a process until dropped (SIGINT makes perf write its file).
struct PerfRecord(std::process::Child);

impl PerfRecord {
    fn attach(pid: u32, out: &std::path::Path) -> Result<PerfRecord> {
        let child = std::process::Command::new("perf")
            .args(["record", "-g", "-F", "499", "-p", &pid.to_string(), "-o"])
            .arg(out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting perf record")?;
        Ok(PerfRecord(child))
    }
}

impl Drop for PerfRecord {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let _ = self.0.wait();
    }
}

/// Wait until `want` hollow nodes report Ready with their capacity.
async fn wait_nodes(client: &Client, want: usize) -> Result<Duration> {
    let start = Instant::now();
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        let list = nodes
            .list(&ListParams::default().labels("skiff.io/hollow-node=true"))
            .await?;
        let ready = list
            .items
            .iter()
            .filter(|n| {
                let status = n.status.as_ref();
                status.and_then(|s| s.allocatable.as_ref()).is_some()
                    && status
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= want {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("only {ready}/{want} hollow nodes ready after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// When each pod of `namespace` was first seen bound.
type Bound = Arc<Mutex<HashMap<String, Instant>>>;

/// Record bindings in `namespace` until the returned task is aborted.
fn watch_bindings(client: &Client, namespace: &str) -> (Bound, tokio::task::JoinHandle<()>) {
    let bound: Bound = Arc::new(Mutex::new(HashMap::new()));
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let seen = bound.clone();
    let task = tokio::spawn(async move {
        let mut events = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            let pods = match event {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => vec![p],
                _ => continue,
            };
            let now = Instant::now();
            for p in pods {
                if p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_some_and(|n| !n.is_empty())
                {
                    seen.lock()
                        .entry(p.metadata.name.clone().unwrap_or_default())
                        .or_insert(now);
                }
            }
        }
    });
    (bound, task)
}

/// Create a pod set with `clients` concurrent creators; the send time of each pod.
async fn create_pods(
    client: &Client,
    set: &PodSet,
    prefix: &str,
    clients: usize,
) -> Result<HashMap<String, Instant>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), set.namespace);
    let results = stream::iter(0..set.count)
        .map(|i| {
            let api = api.clone();
            let name = format!("{prefix}-{i}");
            let body: Pod =
                serde_json::from_value((set.template)(&name)).expect("a valid pod template");
            async move {
                let sent = Instant::now();
                let mut attempt = 0;
                loop {
                    match api.create(&PostParams::default(), &body).await {
                        Ok(_) => return Ok((name, sent)),
                        Err(e) if attempt < 5 => {
                            attempt += 1;
                            tracing_free_log(&format!("create {name} failed ({e}); retrying"));
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => {
                            return Err(anyhow::Error::from(e).context(format!("creating {name}")));
                        }
                    }
                }
            }
        })
        .buffer_unordered(clients)
        .collect::<Vec<_>>()
        .await;
    results.into_iter().collect()
}

fn tracing_free_log(msg: &str) {
    eprintln!("  {msg}");
}

async fn wait_bound(bound: &Bound, want: usize, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut last = (0, Instant::now());
    loop {
        let n = bound.lock().len();
        if n >= want {
            return Ok(());
        }
        if n != last.0 {
            last = (n, Instant::now());
        }
        if start.elapsed() > timeout || last.1.elapsed() > Duration::from_secs(120) {
            bail!(
                "only {n}/{want} pods bound (no progress for {:?})",
                last.1.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

/// Cumulative bucket counts of a histogram (no labels) from Prometheus text.
fn buckets(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The value of one sample (name with labels, exactly) in Prometheus text; 0 if absent.
fn counter(metrics: &str, sample: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// A quantile of the observations between two scrapes (linear within a bucket).
fn histogram_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let diff: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            (
                *le,
                n - before
                    .iter()
                    .find(|(b, _)| b == le)
                    .map_or(0.0, |(_, m)| *m),
            )
        })
        .collect();
    let total = diff.last().map_or(0.0, |(_, n)| *n);
    if total == 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for (le, n) in diff {
        if n >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            let width = n - prev.1;
            let frac = if width > 0.0 {
                (rank - prev.1) / width
            } else {
                1.0
            };
            return prev.0 + (le - prev.0) * frac;
        }
        prev = (le, n);
    }
    prev.0
}

struct Outcome {
    pods_per_sec: f64,
    p50: Duration,
    p99: Duration,
    sli_p50: f64,
    sli_p99: f64,
    rss_mib: (f64, f64),
    nodes: usize,
    init: usize,
    measured: usize,
}

async fn run_workload(w: &Workload, args: &Args) -> Result<Outcome> {
    let cluster = TestCluster::start_with(&["--disable-agent", "--disable-scheduler"])?;
    let client = client_for(&cluster).await?;
    let total_nodes = w.node_count();
    let lease = args.lease_interval.to_string();
    let mut hollow: Vec<ChildGuard> = Vec::new();
    for group in &w.nodes {
        let (prefix, label) = (group.prefix, group.label);
        let count = group.count.to_string();
        let mut flags = vec![
            "hollow-nodes",
            "--count",
            &count,
            "--name-prefix",
            prefix,
            "--cpu",
            NODE_CPU,
            "--memory",
            NODE_MEMORY,
            "--pods",
            NODE_PODS,
            "--lease-interval",
            &lease,
            "--workers",
            "32",
        ];
        if let Some(l) = label {
            flags.extend(["--label", l]);
        }
        hollow.push(cluster.spawn_skiff(&format!("hollow-{prefix}"), &flags)?);
    }
    let took = wait_nodes(&client, total_nodes).await?;
    eprintln!("  {total_nodes} hollow nodes ready in {took:.1?}");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let scheduler = cluster.spawn_skiff(
        "scheduler",
        &[
            "scheduler",
            "--leader-elect",
            "false",
            "--metrics-address",
            &metrics_addr,
        ],
    )?;
    for ns in ["sched-0", "sched-1"] {
        let api: Api<Namespace> = Api::all(client.clone());
        let obj: Namespace = serde_json::from_value(json!({ "metadata": { "name": ns } }))?;
        api.create(&PostParams::default(), &obj).await?;
    }
    if w.priority_classes {
        let body = json!({ "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                           "metadata": { "name": "bench-high" }, "value": 10 });
        let api: Api<k8s_openapi::api::scheduling::v1::PriorityClass> = Api::all(client.clone());
        api.create(&PostParams::default(), &serde_json::from_value(body)?)
            .await?;
    }
    // Initial pods.
    let mut init = 0;
    for (i, set) in w.init.iter().enumerate() {
        let (bound, watch) = watch_bindings(&client, set.namespace);
        let start = Instant::now();
        let sent = create_pods(&client, set, &format!("init{i}"), args.clients).await?;
        let done = wait_bound(&bound, set.count, Duration::from_secs(1800)).await;
        watch.abort();
        if done.is_err() {
            keep_log(args, w, &scheduler)?;
            eprintln!("  not bound: {}", unbound(&sent, &bound));
            let metrics = http_get(&metrics_addr, "/metrics").unwrap_or_default();
            for l in metrics.lines().filter(|l| {
                l.starts_with("scheduler_pending_pods")
                    || l.starts_with("scheduler_schedule_attempts_total")
            }) {
                eprintln!("  {l}");
            }
            let api: Api<Pod> = Api::namespaced(client.clone(), set.namespace);
            let listed = api.list(&Default::default()).await?;
            let unbound_in_api = listed
                .items
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
                .map(|p| p.name_any())
                .collect::<Vec<_>>();
            eprintln!(
                "  API server: {} pods, unbound: {:?}",
                listed.items.len(),
                unbound_in_api
            );
        }
        done.with_context(|| format!("initial pods of {}:\n{}", w.name, tail(&scheduler.log())))?;
        init += set.count;
        eprintln!(
            "  {} initial pods bound in {:.1?}",
            set.count,
            start.elapsed()
        );
    }
    let sli = "scheduler_pod_scheduling_sli_duration_seconds";
    let metrics_before = http_get(&metrics_addr, "/metrics").unwrap_or_default();
    let before = buckets(&metrics_before, sli);
    // Measured pods.
    let (bound, watch) = watch_bindings(&client, w.measure.namespace);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let perf = match &args.perf_record {
        Some(dir) => Some(PerfRecord::attach(
            scheduler.pid(),
            &dir.join(format!("{}.perf.data", w.name)),
        )?),
        None => None,
    };
    let creating = Instant::now();
    let sent = create_pods(&client, &w.measure, "m", args.clients).await?;
    eprintln!(
        "  {} measured pods created in {:.1?} ({} bound meanwhile)",
        w.measure.count,
        creating.elapsed(),
        bound.lock().len()
    );
    let done = wait_bound(&bound, w.measure.count, Duration::from_secs(1800)).await;
    drop(perf);
    watch.abort();
    if done.is_err() {
        keep_log(args, w, &scheduler)?;
        eprintln!("  not bound: {}", unbound(&sent, &bound));
    }
    done.with_context(|| format!("measured pods of {}:\n{}", w.name, tail(&scheduler.log())))?;
    let bound = bound.lock().clone();
    let first = sent.values().min().copied().unwrap_or_else(Instant::now);
    let last = bound.values().max().copied().unwrap_or_else(Instant::now);
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(name, at)| bound.get(name).map(|b| b.saturating_duration_since(*at)))
        .collect();
    latencies.sort();
    let metrics_after = http_get(&metrics_addr, "/metrics").unwrap_or_default();
    let after = buckets(&metrics_after, sli);
    let delta = |name: &str| counter(&metrics_after, name) - counter(&metrics_before, name);
    eprintln!(
        "  scheduling attempts while measuring: {} scheduled, {} unschedulable, {} errors; {} preemption attempts",
        delta(
            "scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"scheduled\"}"
        ),
        delta(
            "scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"unschedulable\"}"
        ),
        delta("scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"error\"}"),
        delta("scheduler_preemption_attempts_total"),
    );
    let rss = rss_mib(scheduler.pid());
    keep_log(args, w, &scheduler)?;
    drop(hollow);
    Ok(Outcome {
        pods_per_sec: w.measure.count as f64 / (last - first).as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        sli_p50: histogram_quantile(&before, &after, 0.5),
        sli_p99: histogram_quantile(&before, &after, 0.99),
        rss_mib: rss,
        nodes: total_nodes,
        init,
        measured: w.measure.count,
    })
}

/// Up to ten pods sent but not seen bound.
fn unbound(sent: &HashMap<String, Instant>, bound: &Bound) -> String {
    let bound = bound.lock();
    let mut missing: Vec<&str> = sent
        .keys()
        .filter(|n| !bound.contains_key(*n))
        .map(String::as_str)
        .collect();
    missing.sort_unstable();
    missing.truncate(10);
    missing.join(", ")
}

/// Copy the scheduler's log where `--scheduler-log` asks.
fn keep_log(args: &Args, w: &Workload, scheduler: &ChildGuard) -> Result<()> {
    if let Some(dir) = &args.scheduler_log {
        std::fs::write(
            dir.join(format!("{}.scheduler.log", w.name)),
            scheduler.log(),
        )?;
    }
    Ok(())
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let all = workloads(args.scale);
    let selected = select(&all, &args.workloads, |_| true)?;
    println!(
        "| workload | nodes | initial pods | measured pods | pods/s | upstream threshold (issue / current) | create→bound p50 | p99 | scheduler SLI p50 | p99 | scheduler RSS (now / peak) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut failures = BTreeMap::new();
    for w in selected {
        eprintln!("{}:", w.name);
        match run_workload(w, &args).await {
            Ok(o) => println!(
                "| {} | {} | {} | {} | {:.0} | {} / {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} / {:.0} MiB |",
                w.name,
                o.nodes,
                o.init,
                o.measured,
                o.pods_per_sec,
                if w.threshold.0 > 0.0 {
                    format!("{:.0}", w.threshold.0)
                } else {
                    "–".into()
                },
                if w.threshold.1 > 0.0 {
                    format!("{:.0}", w.threshold.1)
                } else {
                    "–".into()
                },
                o.p50.as_secs_f64() * 1000.0,
                o.p99.as_secs_f64() * 1000.0,
                o.sli_p50 * 1000.0,
                o.sli_p99 * 1000.0,
                o.rss_mib.0,
                o.rss_mib.1,
            ),
            Err(e) => {
                eprintln!("  failed: {e:#}");
                failures.insert(w.name, format!("{e:#}"));
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} workload(s) failed: {:?}",
            failures.len(),
            failures.keys()
        );
    }
    Ok(())
}
