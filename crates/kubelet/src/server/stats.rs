//! `/stats/summary` (the `stats/v1alpha1` Summary as JSON; `?only_cpu_and_memory=true`
//! keeps only CPU and memory, as upstream's handler does for metrics-server) and
//! `/metrics/resource` (the Prometheus series metrics-server scrapes).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use super::{Context, error};
use crate::stats::metrics;
use crate::stats::summary::{ContainerStats, NodeStats, PodStats, Summary};

/// Keep only what `only_cpu_and_memory` asks for.
pub fn cpu_and_memory(summary: Summary) -> Summary {
    let container = |c: ContainerStats| ContainerStats {
        name: c.name,
        start_time: c.start_time,
        cpu: c.cpu,
        memory: c.memory,
        ..Default::default()
    };
    Summary {
        node: NodeStats {
            node_name: summary.node.node_name,
            system_containers: summary
                .node
                .system_containers
                .into_iter()
                .map(container)
                .collect(),
            start_time: summary.node.start_time,
            cpu: summary.node.cpu,
            memory: summary.node.memory,
            ..Default::default()
        },
        pods: summary
            .pods
            .into_iter()
            .map(|p| PodStats {
                pod_ref: p.pod_ref,
                start_time: p.start_time,
                containers: p.containers.into_iter().map(container).collect(),
                cpu: p.cpu,
                memory: p.memory,
                ..Default::default()
            })
            .collect(),
    }
}

/// `GET /stats/summary`.
pub async fn summary(
    State(ctx): State<Arc<Context>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let summary = match ctx.stats.summary().await {
        Ok(s) => s,
        Err(e) => {
            let mut message = format!("failed to get summary stats: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message);
        }
    };
    let summary = if query.get("only_cpu_and_memory").map(String::as_str) == Some("true") {
        cpu_and_memory(summary)
    } else {
        summary
    };
    match serde_json::to_string_pretty(&summary) {
        Ok(body) => ([(http::header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        ),
    }
}

/// `GET /metrics/resource`.
pub async fn resource_metrics(State(ctx): State<Arc<Context>>) -> Response {
    let summary = ctx.stats.summary().await;
    if let Err(e) = &summary {
        tracing::warn!(error = %e, "reading stats for /metrics/resource failed");
    }
    let body = metrics::render(summary.as_ref().map_err(|_| ()));
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summary::*;

    #[test]
    fn only_cpu_and_memory_drops_the_rest() {
        let full = Summary {
            node: NodeStats {
                node_name: "n".into(),
                cpu: Some(CpuStats::default()),
                fs: Some(FsStats::default()),
                rlimit: Some(RlimitStats::default()),
                ..Default::default()
            },
            pods: vec![PodStats {
                containers: vec![ContainerStats {
                    name: "c".into(),
                    memory: Some(MemoryStats::default()),
                    rootfs: Some(FsStats::default()),
                    ..Default::default()
                }],
                volume_stats: vec![VolumeStats::default()],
                ephemeral_storage: Some(FsStats::default()),
                ..Default::default()
            }],
        };
        let slim = cpu_and_memory(full);
        assert!(slim.node.cpu.is_some() && slim.node.fs.is_none() && slim.node.rlimit.is_none());
        let pod = &slim.pods[0];
        assert!(pod.volume_stats.is_empty() && pod.ephemeral_storage.is_none());
        assert!(pod.containers[0].memory.is_some() && pod.containers[0].rootfs.is_none());
    }
}
