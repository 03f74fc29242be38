//! `GET /skiff/v1/snapshot`: a consistent snapshot of the store, streamed to an admin.
//!
//! The running server owns its store (the embedded engine holds the data directory's lock,
//! an etcd client holds the credentials), so the online snapshot is taken by the server
//! itself, through [`skiff_store::Store::snapshot`], while it keeps serving; `skiff snapshot
//! save` downloads it with the admin kubeconfig and checks it before keeping it. Only members
//! of `system:masters` may read it: a snapshot holds every Secret.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

use crate::error::{ApiError, GroupResource};
use crate::server::{Front, Identity};

/// The response header naming the snapshot's format (`skiff` or `etcd`).
pub const FORMAT_HEADER: &str = "x-skiff-snapshot-format";

/// The snapshot endpoint's path.
pub const PATH: &str = "/skiff/v1/snapshot";

fn is_admin(identity: Option<&Identity>) -> bool {
    matches!(identity, Some(Identity::User { groups, .. }) if groups.iter().any(|g| g == "system:masters"))
}

/// Stream a snapshot of the store.
pub async fn handler(AxState(front): AxState<Arc<Front>>, request: Request) -> Response {
    if !is_admin(request.extensions().get::<Identity>()) {
        let gr = GroupResource {
            group: "skiff.io".into(),
            resource: "snapshots".into(),
        };
        return ApiError::forbidden(&gr, "", "only system:masters may read store snapshots")
            .into_response();
    }
    let store = front.state.objects.store.clone();
    let format = store.snapshot_format();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        match store.snapshot(tx).await {
            Ok(()) => tracing::info!(format = format.name(), "store snapshot streamed"),
            // The body ends short; the client's checks of the format catch that.
            Err(e) => tracing::warn!(error = %e, "store snapshot failed"),
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(FORMAT_HEADER, format.name())
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::internal("building the snapshot response").into_response())
}
