//! `skiff-store-bench`: throughput and latency of the embedded store (put, get, range, watch
//! fan-out at several concurrency levels) on a temporary data directory, optionally side by
//! side with a real etcd driven through its v3 JSON gRPC gateway, printed as a markdown table.
//!
//! Puts are `create`s (a compare on absence plus a write, acknowledged after `fdatasync`);
//! against etcd they are plain `PUT`s, which is the cheaper operation, so the comparison does
//! not flatter the embedded engine. (upstream: etcd Documentation/dev-guide/api_grpc_gateway.md)

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use skiff_store::embedded::{EmbeddedOptions, EmbeddedStore};
use skiff_store::{RangeRequest, Store};

/// Benchmark the embedded store (and optionally etcd).
#[derive(Debug, Parser)]
#[command(name = "skiff-store-bench")]
struct Args {
    /// Seconds each workload runs.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Keys preloaded for the get and range workloads.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Items per range read (like a paginated list with `limit`).
    #[arg(long, default_value_t = 500)]
    range_limit: usize,
    /// Watchers in the watch fan-out workload.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Concurrent clients, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    concurrency: Vec<usize>,
    /// Also run put/get/range against etcd at this URL (e.g. http://127.0.0.1:2379).
    #[arg(long)]
    etcd: Option<String>,
    /// Data directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also load this many objects into a fresh store and report memory and reopen time.
    #[arg(long, default_value_t = 0)]
    rss_objects: usize,
}

/// One measured workload.
struct Row {
    workload: &'static str,
    backend: &'static str,
    clients: usize,
    ops: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    note: String,
}

impl Row {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[i]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// A small, fast pseudo-random sequence (xorshift) so workers pick keys without a shared RNG.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound.max(1) as u64) as usize
    }
}

/// Run `op(worker, sequence)` from `clients` concurrent tasks for `duration`, timing each call.
async fn drive<F, Fut>(clients: usize, duration: Duration, op: F) -> anyhow::Result<Row>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                op(worker, i).await?;
                latencies.push(t.elapsed());
                i += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Row {
        workload: "",
        backend: "",
        clients,
        ops: latencies.len() as u64,
        elapsed,
        latencies,
        note: String::new(),
    })
}

fn value(size: usize) -> Bytes {
    Bytes::from(vec![b'v'; size])
}

fn object_key(i: usize) -> String {
    format!("/bench/obj/{i:08}")
}

/// Fill `/bench/obj/` with `keys` keys from 32 concurrent writers.
async fn preload<F, Fut>(keys: usize, put: F) -> anyhow::Result<()>
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (put, next) = (put.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= keys {
                    return anyhow::Ok(());
                }
                put(object_key(i)).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

async fn bench_embedded(args: &Args, dir: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let store = EmbeddedStore::open(dir, EmbeddedOptions::default())?;
    let duration = Duration::from_secs_f64(args.seconds);
    let v = value(args.value_size);
    {
        let (store, v) = (store.clone(), v.clone());
        preload(args.keys, move |key| {
            let (store, v) = (store.clone(), v.clone());
            async move {
                store.create(&key, v).await?;
                Ok(())
            }
        })
        .await?;
    }
    for &clients in &args.concurrency {
        let (s, val) = (store.clone(), v.clone());
        let mut row = drive(clients, duration, move |w, i| {
            let (s, val) = (s.clone(), val.clone());
            async move {
                s.create(&format!("/bench/put/{clients}/{w}/{i}"), val)
                    .await?;
                Ok(())
            }
        })
        .await?;
        row.workload = "put (create)";
        rows.push(row);

        let (s, keys) = (store.clone(), args.keys);
        let mut row = drive(clients, duration, move |w, i| {
            let s = s.clone();
            async move {
                let mut rng = Xorshift(((w as u64) << 32 | i) * 2654435761 + 1);
                let key = object_key(rng.next(keys));
                s.get(&key).await?.context("a preloaded key is missing")?;
                Ok(())
            }
        })
        .await?;
        row.workload = "get";
        rows.push(row);

        let (s, limit) = (store.clone(), args.range_limit);
        let mut row = drive(clients, duration, move |_, _| {
            let s = s.clone();
            async move {
                let page = s
                    .range(RangeRequest {
                        prefix: "/bench/obj/".into(),
                        limit,
                        ..Default::default()
                    })
                    .await?;
                if page.items.len() != limit.min(keys) {
                    bail!("range returned {} items", page.items.len());
                }
                Ok(())
            }
        })
        .await?;
        row.workload = "range (page)";
        row.note = format!("{limit} of {keys} keys per read");
        rows.push(row);

        rows.push(bench_watch(&store, args, clients, duration).await?);
    }
    store.close();
    Ok(())
}

/// `clients` writers create keys carrying their write time; `args.watchers` watchers of the
/// prefix measure how long each event took to reach them.
async fn bench_watch(
    store: &Arc<EmbeddedStore>,
    args: &Args,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let prefix = format!("/bench/watch/{clients}/");
    let epoch = Instant::now();
    let stop = Arc::new(tokio::sync::Notify::new());
    let delivered = Arc::new(AtomicU64::new(0));
    let mut watchers = Vec::new();
    for _ in 0..args.watchers {
        let mut watch = store.watch(&prefix, 0).await?;
        let (stop, delivered) = (stop.clone(), delivered.clone());
        watchers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut dropped = false;
            let stopped = stop.notified();
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    event = watch.events.recv() => match event {
                        Some(event) => {
                            let sent = u64::from_le_bytes(
                                event.kv.value[..8].try_into().unwrap_or([0; 8]),
                            );
                            let now = epoch.elapsed().as_nanos() as u64;
                            latencies.push(Duration::from_nanos(now.saturating_sub(sent)));
                            delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            dropped = true;
                            break;
                        }
                    },
                    () = &mut stopped => break,
                }
            }
            (latencies, dropped)
        }));
    }
    let (s, size) = (store.clone(), args.value_size.max(8));
    let writers = drive(clients, duration, move |w, i| {
        let (s, prefix) = (s.clone(), prefix.clone());
        async move {
            let mut v = vec![b'v'; size];
            v[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
            s.create(&format!("{prefix}{w}/{i}"), Bytes::from(v))
                .await?;
            Ok(())
        }
    })
    .await?;
    // Let the watchers drain what was written (or be dropped), then stop them.
    let expected = writers.ops;
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < drain_deadline
        && delivered.load(Ordering::Relaxed) < expected * args.watchers as u64
        && !watchers.iter().all(|w| w.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut latencies = Vec::new();
    let mut dropped = 0;
    stop.notify_waiters();
    for watcher in watchers {
        let (l, d) = watcher.await?;
        latencies.extend(l);
        dropped += usize::from(d);
    }
    latencies.sort_unstable();
    let delivered = latencies.len() as u64;
    // Throughput counts deliveries over the writing period plus the drain.
    let elapsed = epoch.elapsed();
    Ok(Row {
        workload: "watch fan-out",
        backend: "embedded",
        clients,
        ops: delivered,
        elapsed,
        latencies,
        note: format!(
            "{} watchers, {expected} writes, {delivered} deliveries (of {}), {dropped} watchers dropped as slow; latency = write start to delivery",
            args.watchers,
            expected * args.watchers as u64
        ),
    })
}

/// A client of etcd's v3 JSON gateway.
#[derive(Clone)]
struct Etcd {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Etcd {
    fn new(base: &str) -> Etcd {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(128)
            .build_http();
        Etcd {
            client,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    async fn call(&self, path: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let request = hyper::Request::post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let response = self.client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("etcd {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(serde_json::from_slice(&body)?)
    }

    async fn put(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        self.call(
            "/v3/kv/put",
            serde_json::json!({"key": BASE64.encode(key), "value": BASE64.encode(value)}),
        )
        .await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> anyhow::Result<()> {
        let reply = self
            .call(
                "/v3/kv/range",
                serde_json::json!({"key": BASE64.encode(key)}),
            )
            .await?;
        if reply["kvs"].as_array().is_none_or(|kvs| kvs.is_empty()) {
            bail!("etcd is missing {key}");
        }
        Ok(())
    }

    async fn range(&self, prefix: &str, limit: usize) -> anyhow::Result<usize> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let reply = self
            .call(
                "/v3/kv/range",
                serde_json::json!({
                    "key": BASE64.encode(prefix),
                    "range_end": BASE64.encode(&end),
                    "limit": limit,
                }),
            )
            .await?;
        Ok(reply["kvs"].as_array().map_or(0, Vec::len))
    }
}

async fn bench_etcd(args: &Args, url: &str, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let etcd = Etcd::new(url);
    let duration = Duration::from_secs_f64(args.seconds);
    let v = value(args.value_size);
    // A run id keeps repeated runs against one etcd apart.
    let run = std::process::id();
    {
        let (etcd, v) = (etcd.clone(), v.clone());
        preload(args.keys, move |key| {
            let (etcd, v) = (etcd.clone(), v.clone());
            async move { etcd.put(&key, &v).await }
        })
        .await?;
    }
    for &clients in &args.concurrency {
        let (e, val) = (etcd.clone(), v.clone());
        let mut row = drive(clients, duration, move |w, i| {
            let (e, val) = (e.clone(), val.clone());
            async move {
                e.put(&format!("/bench/put/{run}/{clients}/{w}/{i}"), &val)
                    .await
            }
        })
        .await?;
        row.workload = "put (create)";
        row.note = "plain PUT (no compare)".into();
        rows.push(row);

        let (e, keys) = (etcd.clone(), args.keys);
        let mut row = drive(clients, duration, move |w, i| {
            let e = e.clone();
            async move {
                let mut rng = Xorshift(((w as u64) << 32 | i) * 2654435761 + 1);
                e.get(&object_key(rng.next(keys))).await
            }
        })
        .await?;
        row.workload = "get";
        rows.push(row);

        let (e, limit) = (etcd.clone(), args.range_limit);
        let mut row = drive(clients, duration, move |_, _| {
            let e = e.clone();
            async move {
                let n = e.range("/bench/obj/", limit).await?;
                if n != limit.min(keys) {
                    bail!("etcd range returned {n} items");
                }
                Ok(())
            }
        })
        .await?;
        row.workload = "range (page)";
        row.note = format!("{limit} of {keys} keys per read, JSON over HTTP/1.1");
        rows.push(row);
    }
    Ok(())
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Load `objects` objects into a fresh store; report memory growth and reopen time.
async fn bench_memory(args: &Args, dir: &Path) -> anyhow::Result<String> {
    let before = rss_kib().unwrap_or(0);
    let store = EmbeddedStore::open(dir, EmbeddedOptions::default())?;
    let started = Instant::now();
    {
        // Each object gets its own buffer, as objects decoded from requests do.
        let (store, size) = (store.clone(), args.value_size);
        preload(args.rss_objects, move |key| {
            let store = store.clone();
            async move {
                store.create(&key, value(size)).await?;
                Ok(())
            }
        })
        .await?;
    }
    let load = started.elapsed();
    let after = rss_kib().unwrap_or(0);
    store.close();
    drop(store);
    let started = Instant::now();
    let reopened = EmbeddedStore::open(dir, EmbeddedOptions::default())?;
    let reopen = started.elapsed();
    let count = reopened
        .range(RangeRequest {
            prefix: "/bench/obj/".into(),
            limit: 1,
            ..Default::default()
        })
        .await?;
    reopened.close();
    Ok(format!(
        "Loaded {} objects of {} bytes with 32 writers in {:.1}s ({:.0}/s); resident memory grew by {:.1} MiB ({:.0} bytes/object including the value); reopening (replay) took {} ms and found {} objects.",
        args.rss_objects,
        args.value_size,
        load.as_secs_f64(),
        args.rss_objects as f64 / load.as_secs_f64(),
        after.saturating_sub(before) as f64 / 1024.0,
        after.saturating_sub(before) as f64 * 1024.0 / args.rss_objects.max(1) as f64,
        reopen.as_millis(),
        count.items.len() + count.remaining,
    ))
}

fn print_table(args: &Args, rows: &[Row]) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "skiff-store-bench: {cpus} CPUs, {} s per workload, {}-byte values, fdatasync on\n",
        args.seconds, args.value_size
    );
    println!("| workload | backend | clients | ops | ops/s | p50 ms | p99 ms | notes |");
    println!("|---|---|---:|---:|---:|---:|---:|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} |",
            row.workload,
            row.backend,
            row.clients,
            row.ops,
            row.ops_per_sec(),
            ms(row.percentile(0.50)),
            ms(row.percentile(0.99)),
            row.note
        );
    }
    let ratios: Vec<String> = rows
        .iter()
        .filter(|r| r.backend == "embedded")
        .filter_map(|r| {
            let etcd = rows.iter().find(|e| {
                e.backend == "etcd" && e.workload == r.workload && e.clients == r.clients
            })?;
            Some(format!(
                "| {} | {} | {:.1}x | {:.1}x |",
                r.workload,
                r.clients,
                r.ops_per_sec() / etcd.ops_per_sec(),
                etcd.percentile(0.99).as_secs_f64() / r.percentile(0.99).as_secs_f64().max(1e-9),
            ))
        })
        .collect();
    if !ratios.is_empty() {
        println!("\n| workload | clients | throughput embedded/etcd | p99 etcd/embedded |");
        println!("|---|---:|---:|---:|");
        for line in ratios {
            println!("{line}");
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let temp = tempfile::tempdir()?;
    let base = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    let mut rows = Vec::new();
    let mut embedded = Vec::new();
    bench_embedded(&args, &base.join("bench"), &mut embedded).await?;
    for mut row in embedded {
        row.backend = "embedded";
        rows.push(row);
    }
    if let Some(url) = &args.etcd {
        let mut etcd = Vec::new();
        bench_etcd(&args, url, &mut etcd)
            .await
            .with_context(|| format!("benchmarking etcd at {url}"))?;
        for mut row in etcd {
            row.backend = "etcd";
            rows.push(row);
        }
    }
    print_table(&args, &rows);
    if args.rss_objects > 0 {
        println!("\n{}", bench_memory(&args, &base.join("memory")).await?);
    }
    Ok(())
}
