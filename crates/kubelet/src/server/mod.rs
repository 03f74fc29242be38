//! The kubelet's HTTPS API, which the API server calls for pods' logs, exec, attach and
//! port-forward (and `nodes/proxy`): `/healthz`, `/pods`, `/runningpods/`,
//! `/containerLogs/{ns}/{pod}/{container}` ([`logs`]), `/exec`, `/attach`,
//! `/portForward` ([`streams`]), and `/stats/summary` and `/metrics/resource` ([`stats`]). TLS requires a client certificate signed by the cluster CA,
//! so only the API server and cluster components get in.

pub mod logs;
pub mod pods;
pub mod stats;
pub mod streams;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use skiff_cri::Cri;
use skiff_runtime::{CancellationToken, Informer};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::pod::observed::{self, PodRuntime, labels};

/// What the API's handlers read.
#[derive(Clone)]
pub struct Context {
    /// The container runtime.
    pub cri: Cri,
    /// The pods bound to this node.
    pub pods: Informer<Pod>,
    /// Container log files, `<ns>_<pod>_<uid>/<container>/<restart>.log`.
    pub logs_dir: PathBuf,
    /// Resource usage of the node and its pods.
    pub stats: Arc<crate::stats::Provider>,
}

/// The router of every endpoint.
pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", get(pods::pods))
        .route("/pods/", get(pods::pods))
        .route("/runningpods", get(pods::running))
        .route("/runningpods/", get(pods::running))
        .route("/stats/summary", get(stats::summary))
        .route("/stats/summary/", get(stats::summary))
        .route("/metrics/resource", get(stats::resource_metrics))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(logs::container_logs),
        )
        .route("/exec/{namespace}/{pod}/{container}", any(streams::exec))
        .route(
            "/exec/{namespace}/{pod}/{uid}/{container}",
            any(streams::exec_uid),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            any(streams::attach),
        )
        .route(
            "/attach/{namespace}/{pod}/{uid}/{container}",
            any(streams::attach_uid),
        )
        .route("/portForward/{namespace}/{pod}", any(streams::port_forward))
        .route(
            "/portForward/{namespace}/{pod}/{uid}",
            any(streams::port_forward_uid),
        )
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            )
        })
        .with_state(ctx)
}

/// A `meta.k8s.io/v1` Status response, as upstream's kubelet answers failures.
pub fn error(code: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message.into(),
        "reason": reason,
        "code": code.as_u16(),
    });
    (
        code,
        [(http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Where a pod's containers are, as the runtime knows them.
pub struct Located {
    /// The pod's uid (of its newest sandbox, for static pods whose API mirror has another).
    pub uid: String,
    /// Its sandboxes and containers.
    pub runtime: PodRuntime,
    /// Its spec, when the pod is bound here.
    pub pod: Option<Arc<Pod>>,
}

impl Located {
    /// The pod's sandbox log directory.
    pub fn log_dir(&self, ctx: &Context, namespace: &str, name: &str) -> PathBuf {
        ctx.logs_dir
            .join(format!("{namespace}_{name}_{}", self.uid))
    }
}

/// Find pod `namespace/name` (optionally requiring `uid`) in the runtime. `Err` is the
/// response to give: 404 when neither the API nor the runtime know it.
pub async fn locate(
    ctx: &Context,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
) -> Result<Located, Response> {
    let pod = ctx
        .pods
        .list_namespace(namespace)
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(name));
    let mut selector = std::collections::HashMap::new();
    selector.insert(labels::POD_NAMESPACE.to_owned(), namespace.to_owned());
    selector.insert(labels::POD_NAME.to_owned(), name.to_owned());
    let sandboxes = ctx
        .cri
        .list_pod_sandbox(skiff_cri::api::ListPodSandboxRequest {
            filter: Some(skiff_cri::api::PodSandboxFilter {
                label_selector: selector,
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("listing the pod's sandboxes failed: {e}"),
            )
        })?
        .items;
    let sandbox_uid = |s: &skiff_cri::api::PodSandbox| {
        s.labels
            .get(labels::POD_UID)
            .cloned()
            .or_else(|| s.metadata.as_ref().map(|m| m.uid.clone()))
            .unwrap_or_default()
    };
    let wanted = uid
        .map(str::to_owned)
        .or_else(|| pod.as_ref().and_then(|p| p.metadata.uid.clone()));
    let chosen = match &wanted {
        Some(w) if sandboxes.iter().any(|s| &sandbox_uid(s) == w) => Some(w.clone()),
        Some(_) if uid.is_some() => None,
        _ => sandboxes
            .iter()
            .max_by_key(|s| s.created_at)
            .map(sandbox_uid),
    };
    let Some(chosen) = chosen else {
        if pod.is_some() {
            return Ok(Located {
                uid: wanted.unwrap_or_default(),
                runtime: PodRuntime::default(),
                pod,
            });
        }
        return Err(error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pod \"{name}\" not found"),
        ));
    };
    let runtime = observed::read(&ctx.cri, &chosen, &mut Default::default())
        .await
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("reading the pod's containers failed: {e}"),
            )
        })?;
    Ok(Located {
        uid: chosen,
        runtime,
        pod,
    })
}

/// Bind the API's address.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// Serve HTTPS on `listener` until `shutdown`.
pub async fn serve(
    ctx: Context,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = router(Arc::new(ctx));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    tracing::warn!(%err, "kubelet API accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app, stop) = (acceptor.clone(), app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(err) => {
                    tracing::debug!(%peer, %err, "kubelet API TLS handshake failed");
                    return;
                }
            };
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let request = http::Request::from_parts(parts, Body::new(body));
                        Ok::<_, std::convert::Infallible>(
                            app.oneshot(request)
                                .await
                                .unwrap_or_else(|never| match never {}),
                        )
                    }
                });
            let builder = Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%peer, %err, "kubelet API connection ended with an error");
                    }
                }
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}
