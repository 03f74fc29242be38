//! `/pods` (the pods bound to this node, as the API holds them) and `/runningpods/` (what
//! the runtime runs: each pod with a ready sandbox and its running containers).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

use super::{Context, error};
use crate::pod::observed::labels;

fn pod_list(items: Vec<Value>) -> Response {
    let body = json!({ "kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items });
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `GET /pods`.
pub async fn pods(State(ctx): State<Arc<Context>>) -> Response {
    let items = ctx
        .pods
        .list()
        .iter()
        .filter_map(|p| {
            let mut v = serde_json::to_value(p.as_ref()).ok()?;
            v["kind"] = json!("Pod");
            v["apiVersion"] = json!("v1");
            Some(v)
        })
        .collect();
    pod_list(items)
}

/// `GET /runningpods/`.
pub async fn running(State(ctx): State<Arc<Context>>) -> Response {
    let sandboxes = match ctx.cri.ready_sandboxes().await {
        Ok(items) => items,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("listing sandboxes failed: {e}"),
            );
        }
    };
    let containers = match ctx.cri.running_containers().await {
        Ok(items) => items,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("listing containers failed: {e}"),
            );
        }
    };
    let mut pods: BTreeMap<String, Value> = BTreeMap::new();
    for s in &sandboxes {
        let Some(m) = &s.metadata else { continue };
        pods.insert(
            s.id.clone(),
            json!({
                "metadata": { "name": m.name, "namespace": m.namespace, "uid": m.uid },
                "spec": { "containers": [] },
                "status": {},
            }),
        );
    }
    for c in containers {
        let Some(pod) = pods.get_mut(&c.pod_sandbox_id) else {
            continue;
        };
        let name = c
            .labels
            .get(labels::CONTAINER_NAME)
            .cloned()
            .or_else(|| c.metadata.as_ref().map(|m| m.name.clone()))
            .unwrap_or_default();
        let image = c
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if let Some(list) = pod["spec"]["containers"].as_array_mut() {
            list.push(json!({ "name": name, "image": image }));
        }
    }
    pod_list(pods.into_values().collect())
}
