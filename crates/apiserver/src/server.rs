//! The HTTPS front: TLS, authentication, the fixed endpoints (health, version, discovery,
//! OpenAPI) and the generic resource handlers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::discovery;
use crate::error::ApiError;
use crate::health::{self, Endpoint};
use crate::openapi;
use crate::output;
use crate::state::State;

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A user proven by a client certificate or token.
    User {
        /// User name.
        name: String,
        /// Groups.
        groups: Vec<String>,
    },
    /// No credentials.
    Anonymous,
}

/// Everything the front needs besides the handler state.
pub struct Front {
    /// Handler state.
    pub state: Arc<State>,
    /// Bearer tokens accepted, with the identity they prove.
    pub tokens: Vec<(String, Identity)>,
    /// Set once bootstrap is complete.
    pub ready: AtomicBool,
    /// Set when shutdown begins (readiness fails from then on).
    pub stopping: AtomicBool,
    /// The version reported by `/version`.
    pub git_version: String,
    /// Node enrollment (join token and issuer), if nodes may join.
    pub enrollment: Option<crate::enroll::Enrollment>,
    openapi: openapi::Cache,
}

impl Front {
    /// A front over `state`.
    pub fn new(state: Arc<State>, tokens: Vec<(String, Identity)>, git_version: String) -> Self {
        Front {
            state,
            tokens,
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            git_version,
            enrollment: None,
            openapi: openapi::Cache::default(),
        }
    }
}

/// The router of every endpoint.
pub fn router(front: Arc<Front>) -> Router {
    let router = [Endpoint::Healthz, Endpoint::Livez, Endpoint::Readyz]
        .into_iter()
        .fold(Router::new(), health::routes);
    router
        .route("/version", get(version))
        // The Python client asks for `/version/`; upstream answers both spellings.
        .route("/version/", get(version))
        .route("/api", get(api_root))
        .route("/api/", get(api_root))
        .route("/apis", get(apis_root))
        .route("/apis/", get(apis_root))
        .route("/api/{version}", get(core_version))
        .route("/apis/{group}", get(group))
        .route("/apis/{group}/{version}", get(group_version))
        .route("/cacerts", get(crate::enroll::cacerts))
        .route(
            "/v1-skiff/node-credentials",
            axum::routing::post(crate::enroll::node_credentials),
        )
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_v3_index))
        .route("/openapi/v3/{*path}", get(openapi_v3))
        .route(crate::snapshot::PATH, get(crate::snapshot::handler))
        .fallback(resources)
        .with_state(front)
}

async fn version(AxState(front): AxState<Arc<Front>>) -> Response {
    let v = &front.git_version;
    let minor = v
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .unwrap_or("35")
        .to_owned();
    output::json_response(
        StatusCode::OK,
        &json!({
            "major": "1",
            "minor": minor,
            "emulationMajor": "1",
            "emulationMinor": minor,
            "gitVersion": v,
            "gitCommit": option_env!("SKIFF_GIT_COMMIT").unwrap_or("unknown"),
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "rust",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, arch()),
        }),
    )
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Which aggregated discovery version the client asked for, if any.
fn wants_aggregated(headers: &HeaderMap) -> Option<&'static str> {
    for media in output::accepted(headers) {
        if media.param("as") == Some("APIGroupDiscoveryList")
            && media.param("g") == Some("apidiscovery.k8s.io")
        {
            match media.param("v") {
                Some("v2") => return Some(discovery::AGGREGATED_V2),
                Some("v2beta1") => return Some(discovery::AGGREGATED_V2BETA1),
                _ => {}
            }
        }
        if media.param("as").is_none()
            && matches!(media.essence.as_str(), "application/json" | "*/*")
        {
            return None;
        }
    }
    None
}

fn aggregated_response(front: &Front, core: bool, content_type: &'static str) -> Response {
    let api_version = if content_type == discovery::AGGREGATED_V2 {
        "apidiscovery.k8s.io/v2"
    } else {
        "apidiscovery.k8s.io/v2beta1"
    };
    let doc = discovery::aggregated(&front.state.registry.snapshot(), core, api_version);
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::VARY, "Accept"),
        ],
        body,
    )
        .into_response()
}

async fn api_root(AxState(front): AxState<Arc<Front>>, headers: HeaderMap) -> Response {
    if let Some(ct) = wants_aggregated(&headers) {
        return aggregated_response(&front, true, ct);
    }
    let address = format!(
        "{}:{}",
        front.state.settings.advertise_address, front.state.settings.port
    );
    output::json_response(StatusCode::OK, &discovery::core_versions(&address))
}

async fn apis_root(AxState(front): AxState<Arc<Front>>, headers: HeaderMap) -> Response {
    if let Some(ct) = wants_aggregated(&headers) {
        return aggregated_response(&front, false, ct);
    }
    output::json_response(
        StatusCode::OK,
        &discovery::group_list(&front.state.registry.snapshot()),
    )
}

async fn core_version(
    AxState(front): AxState<Arc<Front>>,
    UrlPath(version): UrlPath<String>,
) -> Response {
    match discovery::resource_list(&front.state.registry.snapshot(), "", &version) {
        Some(doc) => output::json_response(StatusCode::OK, &doc),
        None => ApiError::path_not_found().into_response(),
    }
}

async fn group(AxState(front): AxState<Arc<Front>>, UrlPath(group): UrlPath<String>) -> Response {
    match discovery::group(&front.state.registry.snapshot(), &group) {
        Some(doc) => output::json_response(StatusCode::OK, &doc),
        None => ApiError::path_not_found().into_response(),
    }
}

async fn group_version(
    AxState(front): AxState<Arc<Front>>,
    UrlPath((group, version)): UrlPath<(String, String)>,
) -> Response {
    match discovery::resource_list(&front.state.registry.snapshot(), &group, &version) {
        Some(doc) => output::json_response(StatusCode::OK, &doc),
        None => ApiError::path_not_found().into_response(),
    }
}

fn openapi_docs(front: &Front) -> Arc<openapi::Documents> {
    front
        .openapi
        .documents(&front.state.registry.snapshot(), &front.git_version)
}

/// Media type prefix of the protobuf OpenAPI v2 document (kubectl asks for
/// `application/com.github.proto-openapi.spec.v2@v1.0+protobuf`).
const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2";

async fn openapi_v2(AxState(front): AxState<Arc<Front>>, headers: HeaderMap) -> Response {
    let protobuf = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(OPENAPI_V2_PROTOBUF));
    let docs = tokio::task::spawn_blocking(move || openapi_docs(&front)).await;
    match docs {
        Ok(docs) if protobuf => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            )],
            docs.v2_protobuf.as_ref().clone(),
        )
            .into_response(),
        Ok(docs) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            docs.v2.as_ref().clone(),
        )
            .into_response(),
        Err(_) => ApiError::internal("building the OpenAPI document failed").into_response(),
    }
}

async fn openapi_v3_index(AxState(front): AxState<Arc<Front>>) -> Response {
    let docs = tokio::task::spawn_blocking(move || openapi_docs(&front)).await;
    match docs {
        Ok(docs) => output::json_response(StatusCode::OK, &openapi::v3_index(&docs)),
        Err(_) => ApiError::internal("building the OpenAPI document failed").into_response(),
    }
}

async fn openapi_v3(
    AxState(front): AxState<Arc<Front>>,
    UrlPath(path): UrlPath<String>,
) -> Response {
    let docs = tokio::task::spawn_blocking(move || openapi_docs(&front)).await;
    let Ok(docs) = docs else {
        return ApiError::internal("building the OpenAPI document failed").into_response();
    };
    match docs.v3.get(path.trim_end_matches('/')) {
        Some((hash, bytes)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (header::ETAG, format!("\"{hash}\"")),
                (header::CACHE_CONTROL, "public, immutable".to_owned()),
            ],
            bytes.as_ref().clone(),
        )
            .into_response(),
        None => ApiError::path_not_found().into_response(),
    }
}

async fn resources(AxState(front): AxState<Arc<Front>>, request: Request) -> Response {
    crate::handlers::serve(front.state.clone(), request).await
}

/// Authenticate a request: a verified client certificate (already checked by TLS) or a
/// bearer token. Anonymous requests may only reach health and version endpoints.
fn authenticate(front: &Front, headers: &HeaderMap, cert_identity: &Identity) -> Identity {
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        let token = token.trim();
        if let Some((_, id)) = front.tokens.iter().find(|(t, _)| t == token) {
            return id.clone();
        }
        return crate::tokenrequest::authenticate(&front.state, token)
            .unwrap_or(Identity::Anonymous);
    }
    cert_identity.clone()
}

fn public_path(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/livez" | "/readyz" | "/version" | "/version/"
            // Enrollment authenticates with the join token itself.
            | "/cacerts" | "/v1-skiff/node-credentials"
    )
}

/// Serve HTTPS on `listener` until `shutdown` resolves.
pub async fn serve(
    front: Arc<Front>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let acceptor = TlsAcceptor::from(tls);
    let app = router(front.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopping = front.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.stopping.store(true, Ordering::Release);
        let _ = stop_tx.send(true);
    });
    let mut stop = stop_rx.clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = match accepted {
            Ok(a) => a,
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let front = front.clone();
        let mut conn_stop = stop_rx.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(err) => {
                    tracing::debug!(%peer, %err, "tls handshake failed");
                    return;
                }
            };
            let cert_identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| skiff_pki::parse_client_identity(cert.as_ref()).ok())
                .map(|id| Identity::User {
                    name: id.user,
                    groups: id.groups,
                })
                .unwrap_or(Identity::Anonymous);
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    let front = front.clone();
                    let cert_identity = cert_identity.clone();
                    async move {
                        let identity = authenticate(&front, request.headers(), &cert_identity);
                        if identity == Identity::Anonymous && !public_path(request.uri().path()) {
                            return Ok::<_, std::convert::Infallible>(
                                ApiError::unauthorized().into_response(),
                            );
                        }
                        let (mut parts, body) = request.into_parts();
                        parts.extensions.insert(identity);
                        let request = http::Request::from_parts(parts, Body::new(body));
                        Ok(app
                            .oneshot(request)
                            .await
                            .unwrap_or_else(|never| match never {}))
                    }
                });
            let builder = Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%peer, %err, "connection ended with an error");
                    }
                }
                _ = conn_stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}
