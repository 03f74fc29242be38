//! The scheduler's metrics in Prometheus text format, under upstream's names:
//! `scheduler_schedule_attempts_total{result,profile}`,
//! `scheduler_scheduling_attempt_duration_seconds{result,profile}` (one attempt),
//! `scheduler_pod_scheduling_sli_duration_seconds` (first enqueue → bound, the end-to-end
//! latency), `scheduler_pending_pods{queue}`, preemption counters and the leader flag — served
//! on `/metrics` (plus `/healthz`) by [`serve`].

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::queue::SchedulingQueue;

/// A cumulative histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in nanoseconds (observations are durations).
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Buckets `start, start×factor, …` (`n` of them), like Prometheus' `ExponentialBuckets`.
    pub fn exponential(start: f64, factor: f64, n: usize) -> Histogram {
        let bounds: Vec<f64> = (0..n).map(|i| start * factor.powi(i as i32)).collect();
        Histogram {
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            bounds,
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Record one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// How many observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AttemptResult {
    /// The pod was assumed and sent to binding.
    Scheduled,
    /// No node fits.
    Unschedulable,
    /// An internal error.
    Error,
}

impl AttemptResult {
    fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Scheduled => "scheduled",
            AttemptResult::Unschedulable => "unschedulable",
            AttemptResult::Error => "error",
        }
    }
}

/// Attempts and their durations by (result, profile).
type Attempts = BTreeMap<(AttemptResult, String), (u64, Arc<Histogram>)>;

/// The scheduler's metrics.
pub struct Metrics {
    attempts: Mutex<Attempts>,
    /// First enqueue → bound.
    pub e2e: Histogram,
    /// Preemption attempts.
    pub preemption_attempts: AtomicU64,
    /// Pods bound.
    pub bound: AtomicU64,
    /// Whether this instance leads.
    pub leader: AtomicBool,
    queue: Mutex<Weak<SchedulingQueue>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            attempts: Mutex::new(BTreeMap::new()),
            e2e: Histogram::exponential(0.01, 2.0, 20),
            preemption_attempts: AtomicU64::new(0),
            bound: AtomicU64::new(0),
            leader: AtomicBool::new(false),
            queue: Mutex::new(Weak::new()),
        }
    }
}

impl Metrics {
    /// Record one scheduling attempt.
    pub fn attempt(&self, result: AttemptResult, profile: &str, duration: Duration) {
        let histogram = {
            let mut map = self.attempts.lock();
            let entry = map
                .entry((result, profile.to_owned()))
                .or_insert_with(|| (0, Arc::new(Histogram::exponential(0.001, 2.0, 15))));
            entry.0 += 1;
            entry.1.clone()
        };
        histogram.observe(duration);
    }

    /// How many attempts ended with `result` (all profiles).
    pub fn attempts(&self, result: AttemptResult) -> u64 {
        self.attempts
            .lock()
            .iter()
            .filter(|((r, _), _)| *r == result)
            .map(|(_, (n, _))| *n)
            .sum()
    }

    /// Report pending pods of this queue.
    pub fn set_queue(&self, queue: &Arc<SchedulingQueue>) {
        *self.queue.lock() = Arc::downgrade(queue);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP scheduler_schedule_attempts_total Number of attempts to schedule pods, by the result.\n");
        out.push_str("# TYPE scheduler_schedule_attempts_total counter\n");
        let attempts = self.attempts.lock().clone();
        for ((result, profile), (n, _)) in &attempts {
            let _ = writeln!(
                out,
                "scheduler_schedule_attempts_total{{profile=\"{profile}\",result=\"{}\"}} {n}",
                result.as_str()
            );
        }
        out.push_str("# HELP scheduler_scheduling_attempt_duration_seconds Scheduling attempt latency in seconds (scheduling algorithm + binding)\n");
        out.push_str("# TYPE scheduler_scheduling_attempt_duration_seconds histogram\n");
        for ((result, profile), (_, h)) in &attempts {
            h.render(
                &mut out,
                "scheduler_scheduling_attempt_duration_seconds",
                &format!("profile=\"{profile}\",result=\"{}\"", result.as_str()),
            );
        }
        out.push_str("# HELP scheduler_pod_scheduling_sli_duration_seconds E2e latency for a pod being scheduled, from the time the pod enters the scheduling queue until it is bound.\n");
        out.push_str("# TYPE scheduler_pod_scheduling_sli_duration_seconds histogram\n");
        self.e2e.render(
            &mut out,
            "scheduler_pod_scheduling_sli_duration_seconds",
            "",
        );
        out.push_str("# HELP scheduler_pending_pods Number of pending pods, by the queue type.\n");
        out.push_str("# TYPE scheduler_pending_pods gauge\n");
        let pending = self
            .queue
            .lock()
            .upgrade()
            .map(|q| q.pending())
            .unwrap_or_default();
        for (queue, n) in [
            ("active", pending.active),
            ("backoff", pending.backoff),
            ("unschedulable", pending.unschedulable),
            ("gated", pending.gated),
        ] {
            let _ = writeln!(out, "scheduler_pending_pods{{queue=\"{queue}\"}} {n}");
        }
        out.push_str("# HELP scheduler_preemption_attempts_total Total preemption attempts in the cluster till now\n");
        out.push_str("# TYPE scheduler_preemption_attempts_total counter\n");
        let _ = writeln!(
            out,
            "scheduler_preemption_attempts_total {}",
            self.preemption_attempts.load(Ordering::Relaxed)
        );
        out.push_str("# HELP scheduler_pods_bound_total Pods bound to a node.\n");
        out.push_str("# TYPE scheduler_pods_bound_total counter\n");
        let _ = writeln!(
            out,
            "scheduler_pods_bound_total {}",
            self.bound.load(Ordering::Relaxed)
        );
        out.push_str("# HELP leader_election_master_status Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master.\n");
        out.push_str("# TYPE leader_election_master_status gauge\n");
        let _ = writeln!(
            out,
            "leader_election_master_status{{name=\"kube-scheduler\"}} {}",
            u8::from(self.leader.load(Ordering::Relaxed))
        );
        out
    }
}

/// Serve `/metrics` and `/healthz` on `address` until `shutdown`; returns the bound address.
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: skiff_runtime::CancellationToken,
) -> std::io::Result<SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let router = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    tokio::spawn(async move {
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_and_counters_render_as_prometheus_text() {
        let m = Metrics::default();
        m.attempt(
            AttemptResult::Scheduled,
            "default-scheduler",
            Duration::from_millis(3),
        );
        m.attempt(
            AttemptResult::Unschedulable,
            "default-scheduler",
            Duration::from_millis(1),
        );
        m.e2e.observe(Duration::from_millis(15));
        let text = m.render();
        assert!(text.contains("scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"scheduled\"} 1"));
        assert!(
            text.contains("scheduler_pod_scheduling_sli_duration_seconds_bucket{le=\"0.02\"} 1")
        );
        assert!(text.contains("scheduler_pod_scheduling_sli_duration_seconds_count 1"));
        assert!(text.contains("scheduler_pending_pods{queue=\"active\"} 0"));
        assert!(text.contains(
            "scheduler_scheduling_attempt_duration_seconds_bucket{profile=\"default-scheduler\",result=\"scheduled\",le=\"0.004\"} 1"
        ));
        assert_eq!(m.attempts(AttemptResult::Scheduled), 1);
    }
}
