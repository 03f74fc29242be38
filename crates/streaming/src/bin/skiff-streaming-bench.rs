//! Benchmark of the streaming protocols over TCP loopback (numbers in docs/BENCHMARKS.md):
//! SPDY stream-open latency, SPDY stream throughput, the WebSocket v5 → SPDY bridge's output
//! throughput (what `kubectl exec`/`cp` from a pod moves), and, as the baseline they are
//! judged against, a plain TCP copy on the same machine.
//!
//! `cargo run --release -p skiff-streaming --bin skiff-streaming-bench [MiB]`

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use skiff_streaming::channel::{self, Channel, STREAM_TYPE};
use skiff_streaming::remotecommand::{self, Streams};
use skiff_streaming::spdy::{Role, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;

const T: Duration = Duration::from_secs(10);

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (client, server) = (client.expect("connect"), server.expect("accept").0);
    client.set_nodelay(true).expect("nodelay");
    server.set_nodelay(true).expect("nodelay");
    (client, server)
}

fn mib_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn tcp_baseline(total: usize) -> f64 {
    let (mut a, mut b) = pair().await;
    let chunk = vec![7u8; 32 * 1024];
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let mut sent = 0;
        while sent < total {
            a.write_all(&chunk).await.expect("write");
            sent += chunk.len();
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < total {
        got += b.read(&mut buf).await.expect("read");
    }
    writer.await.expect("writer");
    mib_per_s(total, start.elapsed())
}

async fn spdy_sessions() -> (Session, Session) {
    let (a, b) = pair().await;
    (Session::new(a, Role::Client), Session::new(b, Role::Server))
}

async fn open_latency(n: usize) -> Vec<Duration> {
    let (client, server) = spdy_sessions().await;
    tokio::spawn(async move {
        while let Some(s) = server.accept().await {
            let _ = s.reply(vec![]).await;
        }
    });
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let s = client
            .open(vec![(STREAM_TYPE.into(), "data".into())], T)
            .await
            .expect("open");
        times.push(start.elapsed());
        let _ = s.writer().reset().await;
    }
    times.sort();
    times
}

async fn spdy_throughput(total: usize) -> f64 {
    let (client, server) = spdy_sessions().await;
    let receiver = tokio::spawn(async move {
        let mut s = server.accept().await.expect("stream");
        s.reply(vec![]).await.expect("reply");
        let mut got = 0;
        while let Some(b) = s.recv().await {
            got += b.len();
        }
        got
    });
    let stream = client.open(vec![], T).await.expect("open");
    let chunk = Bytes::from(vec![7u8; 32 * 1024]);
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        stream.send(chunk.clone()).await.expect("send");
        sent += chunk.len();
    }
    stream.finish().await.expect("fin");
    let got = receiver.await.expect("receiver");
    assert_eq!(got, sent);
    mib_per_s(total, start.elapsed())
}

async fn bridge_throughput(total: usize) -> f64 {
    let (client, server) = spdy_sessions().await;
    // The "runtime": waits for error and stdout, then writes `total` bytes on stdout.
    tokio::spawn(async move {
        let mut stdout = None;
        let mut error = None;
        while stdout.is_none() || error.is_none() {
            let s = server.accept().await.expect("stream");
            s.reply(vec![]).await.expect("reply");
            match s.header(STREAM_TYPE) {
                Some("stdout") => stdout = Some(s),
                _ => error = Some(s),
            }
        }
        let (stdout, error) = (stdout.expect("stdout"), error.expect("error"));
        let chunk = Bytes::from(vec![7u8; 32 * 1024]);
        let mut sent = 0;
        while sent < total {
            stdout.send(chunk.clone()).await.expect("send");
            sent += chunk.len();
        }
        stdout.finish().await.expect("fin");
        error
            .send(Bytes::from_static(br#"{"metadata":{},"status":"Success"}"#))
            .await
            .expect("status");
        error.finish().await.expect("fin");
    });
    let want = Streams {
        stdout: true,
        ..Default::default()
    };
    let streams = remotecommand::open(&client, want).await.expect("streams");
    let (ws_client, ws_server) = pair().await;
    tokio::spawn(async move {
        let ws = WebSocketStream::from_raw_socket(ws_server, WsRole::Server, None).await;
        remotecommand::bridge(ws, channel::V5, client, streams, Vec::new()).await;
    });
    let mut ws = WebSocketStream::from_raw_socket(ws_client, WsRole::Client, None).await;
    let start = Instant::now();
    let mut got = 0;
    while let Some(msg) = ws.next().await {
        match msg.expect("message") {
            Message::Binary(data) => {
                if let Some((Channel::Stdout, payload)) = channel::decode(&data) {
                    got += payload.len();
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    let took = start.elapsed();
    let _ = ws.close(None).await;
    assert!(got >= total, "got {got} of {total}");
    mib_per_s(total, took)
}

#[tokio::main]
async fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let total = mib * 1024 * 1024;
    let opens = open_latency(2000).await;
    println!("| workload | result |");
    println!("| --- | ---: |");
    println!(
        "| SPDY stream open + reply (2000 sequential) | p50 {:.0} µs, p99 {:.0} µs |",
        percentile(&opens, 0.5).as_secs_f64() * 1e6,
        percentile(&opens, 0.99).as_secs_f64() * 1e6
    );
    println!(
        "| TCP loopback copy (baseline), {mib} MiB | {:.0} MiB/s |",
        tcp_baseline(total).await
    );
    println!(
        "| SPDY one stream, {mib} MiB | {:.0} MiB/s |",
        spdy_throughput(total).await
    );
    println!(
        "| WebSocket v5 ← SPDY v4 bridge, stdout, {mib} MiB | {:.0} MiB/s |",
        bridge_throughput(total).await
    );
}
