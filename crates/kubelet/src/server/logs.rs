//! `GET /containerLogs/{namespace}/{pod}/{container}`: a container's log with kubectl's
//! options (`follow`, `previous`, `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`,
//! `limitBytes`), read from the files the runtime writes ([`crate::logs`]). The current
//! instance is the newest one the runtime holds; `previous` is the instance before it, whose
//! file is `<restartCount-1>.log` beside the current one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;

use super::{Context, error, locate};
use crate::logs::Options;
use crate::pod::observed::ContainerState;
use crate::pod::spec::log_path;

/// The parsed query: the reading options, and whether to read the previous instance.
#[derive(Debug, Default)]
pub struct Query {
    /// Options for [`crate::logs::stream`].
    pub options: Options,
    /// Read the previous instance.
    pub previous: bool,
}

fn flag(v: &str) -> bool {
    matches!(v, "true" | "1" | "True" | "TRUE")
}

/// Parse the query string, with upstream's messages for invalid values.
pub fn parse_query(raw: Option<&str>, now: jiff::Timestamp) -> Result<Query, String> {
    let mut q = Query::default();
    let mut since_seconds = None;
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "follow" => q.options.follow = flag(&v),
            "previous" => q.previous = flag(&v),
            "timestamps" => q.options.timestamps = flag(&v),
            "tailLines" => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| format!("tailLines: invalid value {v:?}"))?;
                if n < 0 {
                    return Err("tailLines: must be greater than or equal to 0".into());
                }
                q.options.tail_lines = Some(n as usize);
            }
            "limitBytes" => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| format!("limitBytes: invalid value {v:?}"))?;
                if n < 1 {
                    return Err("limitBytes: must be greater than 0".into());
                }
                q.options.limit_bytes = Some(n as usize);
            }
            "sinceSeconds" => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| format!("sinceSeconds: invalid value {v:?}"))?;
                if n < 1 {
                    return Err("sinceSeconds: must be greater than 0".into());
                }
                since_seconds = Some(n);
            }
            "sinceTime" => {
                let t: jiff::Timestamp = v
                    .parse()
                    .map_err(|_| format!("sinceTime: invalid RFC 3339 time {v:?}"))?;
                q.options.since = Some(t);
            }
            _ => {}
        }
    }
    if let Some(n) = since_seconds {
        if q.options.since.is_some() {
            return Err("at most one of sinceTime or sinceSeconds may be specified".into());
        }
        q.options.since = now.checked_sub(jiff::SignedDuration::from_secs(n)).ok();
    }
    Ok(q)
}

/// `GET /containerLogs/{namespace}/{pod}/{container}`.
pub async fn container_logs(
    State(ctx): State<Arc<Context>>,
    Path((namespace, name, container)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = match parse_query(raw.as_deref(), jiff::Timestamp::now()) {
        Ok(q) => q,
        Err(message) => return error(StatusCode::BAD_REQUEST, "BadRequest", message),
    };
    let located = match locate(&ctx, &namespace, &name, None).await {
        Ok(l) => l,
        Err(response) => return response,
    };
    let Some(current) = located.runtime.all_instances(&container).next().cloned() else {
        let known = located.pod.as_ref().is_some_and(|p| {
            p.spec.as_ref().is_some_and(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .any(|c| c.name == container)
                    || s.ephemeral_containers
                        .iter()
                        .flatten()
                        .any(|c| c.name == container)
            })
        });
        if !known && located.pod.is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("container {container} is not valid for pod {name}"),
            );
        }
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
            ),
        );
    };
    let dir = located.log_dir(&ctx, &namespace, &name);
    let path = if query.previous {
        let previous = dir.join(log_path(&container, current.restart_count - 1));
        if current.restart_count < 1 || !previous.exists() {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!(
                    "previous terminated container \"{container}\" in pod \"{name}\" not found"
                ),
            );
        }
        previous
    } else {
        if current.state == ContainerState::Created {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!(
                    "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
                ),
            );
        }
        dir.join(log_path(&container, current.restart_count))
    };
    if !path.exists() {
        // A container that never wrote has no file yet.
        return ([(http::header::CONTENT_TYPE, "text/plain")], Body::empty()).into_response();
    }

    let follow =
        query.options.follow && !query.previous && current.state == ContainerState::Running;
    let running = Arc::new(AtomicBool::new(follow));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    if follow {
        // The file is read to its end once the container stopped.
        let (cri, id, running) = (ctx.cri.clone(), current.id.clone(), running.clone());
        let watcher_tx = tx.clone();
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) && !watcher_tx.is_closed() {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let status = cri
                    .container_status(skiff_cri::api::ContainerStatusRequest {
                        container_id: id.clone(),
                        verbose: false,
                    })
                    .await;
                let alive = status.ok().and_then(|s| s.status).is_some_and(|s| {
                    s.state == skiff_cri::api::ContainerState::ContainerRunning as i32
                });
                if !alive {
                    running.store(false, Ordering::Relaxed);
                }
            }
        });
    }
    let mut options = query.options;
    options.follow = follow;
    tokio::spawn(async move {
        let send_tx = tx.clone();
        let result = crate::logs::stream(
            &path,
            &options,
            |chunk| send_tx.send(Bytes::from(chunk)).is_ok(),
            || running.load(Ordering::Relaxed) && !tx.is_closed(),
        )
        .await;
        running.store(false, Ordering::Relaxed);
        if let Err(err) = result {
            tracing::debug!(%err, path = %path.display(), "reading a container log failed");
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    (
        [(http::header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_with_upstreams_rules() {
        let now: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let q = parse_query(
            Some("follow=true&tailLines=5&timestamps=true&limitBytes=10&sinceSeconds=60&previous=false"),
            now,
        )
        .unwrap();
        assert!(q.options.follow && q.options.timestamps && !q.previous);
        assert_eq!(q.options.tail_lines, Some(5));
        assert_eq!(q.options.limit_bytes, Some(10));
        assert_eq!(
            q.options.since,
            Some("2026-01-01T00:00:00Z".parse().unwrap())
        );
        let t = parse_query(Some("sinceTime=2026-01-01T00:00:30Z"), now).unwrap();
        assert_eq!(
            t.options.since,
            Some("2026-01-01T00:00:30Z".parse().unwrap())
        );
        for bad in [
            "tailLines=-1",
            "limitBytes=0",
            "sinceSeconds=0",
            "tailLines=x",
            "sinceTime=yesterday",
            "sinceSeconds=5&sinceTime=2026-01-01T00:00:30Z",
        ] {
            assert!(parse_query(Some(bad), now).is_err(), "{bad}");
        }
    }
}
