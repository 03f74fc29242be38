//! Watch: a chunked stream of `{"type": ..., "object": ...}` events.
//!
//! Upstream semantics: no resourceVersion (or "0") starts with synthetic ADDED events for the
//! current state; a resourceVersion starts strictly after it; `sendInitialEvents=true` (the
//! watch-list form) sends the state then a BOOKMARK annotated `k8s.io/initial-events-end`.
//! A compacted start revision yields an ERROR event carrying a 410 Status, so clients re-list.
//! Objects that start or stop matching the selectors become ADDED/DELETED events.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{StatusCode, header};
use serde_json::{Value, json};
use skiff_store::{EventKind, Revision};
use tokio::sync::mpsc;

use super::Ctx;
use super::read::{Filter, read_page, wait_for_revision};
use crate::error::{ApiError, ApiResult};
use crate::objects::{self, parse_revision};
use crate::output::{self, IncludeObject, Output};

/// How often a watch with `allowWatchBookmarks` gets a bookmark.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

/// Serve a watch request.
pub async fn watch(ctx: &Ctx) -> ApiResult<Response> {
    let filter = Filter::from_query(ctx)?;
    let bookmarks = ctx.query.flag("allowWatchBookmarks");
    let send_initial = match ctx.query.get("sendInitialEvents") {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    let rv = ctx.query.non_empty("resourceVersion");
    if send_initial.is_some() {
        if ctx.query.get("resourceVersionMatch") != Some("NotOlderThan") {
            return Err(ApiError::invalid(
                "ListOptions",
                "meta.k8s.io",
                "",
                &vec![skiff_api::field::FieldError::forbidden(
                    &skiff_api::field::Path::new("sendInitialEvents"),
                    "sendInitialEvents is forbidden for watch unless resourceVersionMatch is set to NotOlderThan",
                )],
            ));
        }
        if send_initial == Some(true) && !bookmarks {
            return Err(ApiError::invalid(
                "ListOptions",
                "meta.k8s.io",
                "",
                &vec![skiff_api::field::FieldError::forbidden(
                    &skiff_api::field::Path::new("allowWatchBookmarks"),
                    "allowWatchBookmarks must be set to true when sendInitialEvents is set",
                )],
            ));
        }
    }
    let timeout = match ctx.query.int("timeoutSeconds")? {
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        _ => {
            use rand::Rng;
            Duration::from_secs(rand::rng().random_range(1800..3600))
        }
    };

    let store = ctx.state.objects.store.clone();
    let prefix = objects::prefix(&ctx.info, ctx.namespace());
    let (tx, rx) = mpsc::channel::<Bytes>(64);

    // Decide where the stream starts, and which initial events it carries.
    let (initial, start_revision, end_marker) = match (rv, send_initial) {
        (_, Some(true)) => {
            if let Some(rv) = rv.filter(|r| *r != "0") {
                wait_for_revision(ctx, parse_revision(rv)?).await?;
            }
            let page = read_page(ctx, &filter, 0, None, 0).await?;
            (page.items, page.revision, true)
        }
        (None | Some("0"), _) if send_initial != Some(false) => {
            let page = read_page(ctx, &filter, 0, None, 0).await?;
            (page.items, page.revision, false)
        }
        (None | Some("0"), _) => (Vec::new(), store.current_revision().await?, false),
        (Some(rv), _) => (Vec::new(), parse_revision(rv)?, false),
    };

    let encoder = EventEncoder {
        info: ctx.info.clone(),
        output: ctx.output,
        columns_sent: false,
    };
    let info = ctx.info.clone();
    let watch = store.watch(&prefix, start_revision).await;
    tokio::spawn(async move {
        let mut encoder = encoder;
        let mut watch = match watch {
            Ok(w) => w,
            Err(skiff_store::Error::Compacted { compacted, .. }) => {
                let err = ApiError::gone(format!(
                    "too old resource version: {start_revision} ({compacted})"
                ));
                let _ = tx.send(encoder.line("ERROR", &err.to_status())).await;
                return;
            }
            Err(other) => {
                let err = ApiError::from(other);
                let _ = tx.send(encoder.line("ERROR", &err.to_status())).await;
                return;
            }
        };
        for obj in &initial {
            if tx.send(encoder.event("ADDED", obj)).await.is_err() {
                return;
            }
        }
        let mut last_revision: Revision = start_revision;
        if end_marker {
            let bookmark = bookmark_object(&info, last_revision, true);
            if tx.send(encoder.line("BOOKMARK", &bookmark)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        let api_version = info.api_version();
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    let bookmark = bookmark_object(&info, last_revision, false);
                    if tx.send(encoder.line("BOOKMARK", &bookmark)).await.is_err() {
                        return;
                    }
                }
                event = watch.events.recv() => {
                    let Some(event) = event else { return };
                    last_revision = event.revision();
                    let Ok(obj) = objects::decode(&event.kv, &api_version) else { continue };
                    let now_matches = filter.matches(&info, &obj);
                    let kind = match event.kind {
                        EventKind::Delete => now_matches.then_some("DELETED"),
                        EventKind::Put => {
                            // Without selectors every version matches: no need to decode the
                            // previous one (half the decoding of busy unfiltered watches).
                            let before = event.prev.as_ref().and_then(|p| {
                                if filter.is_empty() {
                                    Some(true)
                                } else {
                                    objects::decode(p, &api_version).ok().map(|p| filter.matches(&info, &p))
                                }
                            });
                            match (before, now_matches) {
                                (Some(true), true) => Some("MODIFIED"),
                                (_, true) => Some("ADDED"),
                                (Some(true), false) => Some("DELETED"),
                                _ => None,
                            }
                        }
                    };
                    if let Some(kind) = kind
                        && tx.send(encoder.event(kind, &obj)).await.is_err() {
                            return;
                        }
                }
            }
        }
    });

    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<Bytes, std::convert::Infallible>(chunk), rx))
    });
    let content_type = "application/json";
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::internal("building watch response").into_response_body()))
}

/// A BOOKMARK event's object: the kind with only `metadata.resourceVersion` (and the
/// initial-events-end annotation for the watch-list form).
fn bookmark_object(
    info: &skiff_api::registry::ResourceInfo,
    revision: Revision,
    initial_end: bool,
) -> Value {
    let mut meta = json!({ "resourceVersion": revision.to_string() });
    if initial_end {
        meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    json!({ "kind": info.kind, "apiVersion": info.api_version(), "metadata": meta })
}

struct EventEncoder {
    info: std::sync::Arc<skiff_api::registry::ResourceInfo>,
    output: Output,
    columns_sent: bool,
}

impl EventEncoder {
    fn event(&mut self, kind: &str, obj: &Value) -> Bytes {
        let shaped = match self.output {
            Output::Table(include) => {
                let meta = json!({ "resourceVersion": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!("")) });
                let include = if include == IncludeObject::None {
                    IncludeObject::None
                } else {
                    include
                };
                let t = output::table(
                    &self.info,
                    std::slice::from_ref(obj),
                    include,
                    meta,
                    !self.columns_sent,
                );
                self.columns_sent = true;
                t
            }
            Output::Metadata => output::partial_metadata(obj),
            _ => return self.line(kind, obj),
        };
        self.line(kind, &shaped)
    }

    /// `{"type":…,"object":…}` and a newline, serialized straight from the object (no copy
    /// of the tree per watcher).
    fn line(&self, kind: &str, obj: &Value) -> Bytes {
        let mut line = Vec::with_capacity(1024);
        line.extend_from_slice(b"{\"type\":");
        let _ = serde_json::to_writer(&mut line, kind);
        line.extend_from_slice(b",\"object\":");
        let _ = serde_json::to_writer(&mut line, obj);
        line.extend_from_slice(b"}\n");
        Bytes::from(line)
    }
}

trait IntoResponseBody {
    fn into_response_body(self) -> Response;
}

impl IntoResponseBody for ApiError {
    fn into_response_body(self) -> Response {
        axum::response::IntoResponse::into_response(self)
    }
}
