//! `/exec`, `/attach` and `/portForward`: the kubelet asks the runtime for a streaming URL
//! (CRI `Exec`, `Attach`, `PortForward`) and connects the client to the runtime's streaming
//! server behind it.
//!
//! - SPDY clients, and WebSocket clients of the channel protocols the runtime speaks itself,
//!   are proxied as bytes once the runtime accepted the same upgrade.
//! - WebSocket exec/attach clients of v5 (which containerd does not speak) and v4 are
//!   bridged onto a SPDY remotecommand v4 session with the runtime
//!   ([`skiff_streaming::remotecommand`]).
//! - Port-forward's SPDY-in-WebSocket tunnel (`SPDY/3.1+portforward.k8s.io`) is unwrapped
//!   into a plain SPDY upgrade to the runtime ([`skiff_streaming::tunnel`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use http_body_util::Empty;
use skiff_cri::api;
use skiff_streaming::channel::{self, PORT_FORWARD, SPDY_TUNNEL_PREFIX, V4, V5};
use skiff_streaming::remotecommand::{self, Streams};
use skiff_streaming::spdy::{self, Role, Session};
use skiff_streaming::upgrade;

use super::{Context, error, locate};
use crate::pod::observed::ContainerState;

/// The header naming the remotecommand/port-forward protocols of a SPDY upgrade.
const PROTOCOL_HEADER: &str = "x-stream-protocol-version";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exec,
    Attach,
}

/// `/exec/{namespace}/{pod}/{container}`.
pub async fn exec(
    State(ctx): State<Arc<Context>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    command(ctx, Kind::Exec, ns, pod, None, container, request).await
}

/// `/exec/{namespace}/{pod}/{uid}/{container}`.
pub async fn exec_uid(
    State(ctx): State<Arc<Context>>,
    Path((ns, pod, uid, container)): Path<(String, String, String, String)>,
    request: Request,
) -> Response {
    command(ctx, Kind::Exec, ns, pod, Some(uid), container, request).await
}

/// `/attach/{namespace}/{pod}/{container}`.
pub async fn attach(
    State(ctx): State<Arc<Context>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    command(ctx, Kind::Attach, ns, pod, None, container, request).await
}

/// `/attach/{namespace}/{pod}/{uid}/{container}`.
pub async fn attach_uid(
    State(ctx): State<Arc<Context>>,
    Path((ns, pod, uid, container)): Path<(String, String, String, String)>,
    request: Request,
) -> Response {
    command(ctx, Kind::Attach, ns, pod, Some(uid), container, request).await
}

/// `/portForward/{namespace}/{pod}`.
pub async fn port_forward(
    State(ctx): State<Arc<Context>>,
    Path((ns, pod)): Path<(String, String)>,
    request: Request,
) -> Response {
    forward(ctx, ns, pod, None, request).await
}

/// `/portForward/{namespace}/{pod}/{uid}`.
pub async fn port_forward_uid(
    State(ctx): State<Arc<Context>>,
    Path((ns, pod, uid)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    forward(ctx, ns, pod, Some(uid), request).await
}

/// exec/attach query parameters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CommandQuery {
    /// The command (exec).
    pub command: Vec<String>,
    /// Which streams.
    pub streams: Streams,
}

/// Parse exec/attach parameters (`command` repeats; flags are `1`/`true`).
pub fn parse_command_query(raw: Option<&str>) -> CommandQuery {
    let mut q = CommandQuery::default();
    let on = |v: &str| matches!(v, "1" | "true" | "True" | "TRUE");
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "command" => q.command.push(v.into_owned()),
            "input" | "stdin" => q.streams.stdin = on(&v),
            "output" | "stdout" => q.streams.stdout = on(&v),
            "error" | "stderr" => q.streams.stderr = on(&v),
            "tty" => q.streams.tty = on(&v),
            _ => {}
        }
    }
    if q.streams.tty {
        // A terminal merges stderr into stdout; the runtime refuses both.
        q.streams.stderr = false;
    }
    q
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn internal(message: impl Into<String>) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
}

async fn command(
    ctx: Arc<Context>,
    kind: Kind,
    ns: String,
    pod: String,
    uid: Option<String>,
    container: String,
    request: Request,
) -> Response {
    let query = parse_command_query(request.uri().query());
    if kind == Kind::Exec && query.command.is_empty() {
        return bad_request("you must specify at least 1 command");
    }
    let s = query.streams;
    if !(s.stdin || s.stdout || s.stderr) {
        return bad_request("you must specify at least 1 of stdin, stdout, stderr");
    }
    if upgrade::requested(request.headers()).is_none() {
        return bad_request("Upgrade request required");
    }
    let located = match locate(&ctx, &ns, &pod, uid.as_deref()).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let Some(instance) = located
        .runtime
        .all_instances(&container)
        .find(|c| c.state == ContainerState::Running)
    else {
        return bad_request(format!(
            "container \"{container}\" in pod \"{pod}\" is not running"
        ));
    };
    let url = match kind {
        Kind::Exec => ctx
            .cri
            .exec(api::ExecRequest {
                container_id: instance.id.clone(),
                cmd: query.command.clone(),
                tty: s.tty,
                stdin: s.stdin,
                stdout: s.stdout,
                stderr: s.stderr,
            })
            .await
            .map(|r| r.url),
        Kind::Attach => ctx
            .cri
            .attach(api::AttachRequest {
                container_id: instance.id.clone(),
                tty: s.tty,
                stdin: s.stdin,
                stdout: s.stdout,
                stderr: s.stderr,
            })
            .await
            .map(|r| r.url),
    };
    let url = match url {
        Ok(u) => u,
        Err(e) => return internal(format!("the runtime refused the session: {}", e.message())),
    };
    if upgrade::is_websocket(request.headers()) {
        let offered = upgrade::websocket_protocols(request.headers());
        if let Some(protocol) = channel::negotiate(&offered, &[V5, V4]) {
            return bridge_websocket(request, &url, protocol, s).await;
        }
    }
    // SPDY, and the older WebSocket protocols the runtime speaks itself.
    proxy(request, &url).await
}

async fn forward(
    ctx: Arc<Context>,
    ns: String,
    pod: String,
    uid: Option<String>,
    request: Request,
) -> Response {
    if upgrade::requested(request.headers()).is_none() {
        return bad_request("Upgrade request required");
    }
    let located = match locate(&ctx, &ns, &pod, uid.as_deref()).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let Some(sandbox) = located.runtime.ready_sandbox() else {
        return bad_request(format!("pod \"{pod}\" is not running"));
    };
    let ports: Vec<i32> = form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "port" || k == "ports")
        .flat_map(|(_, v)| {
            v.split(',')
                .filter_map(|p| p.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    let url = match ctx
        .cri
        .port_forward(api::PortForwardRequest {
            pod_sandbox_id: sandbox.id.clone(),
            port: ports,
        })
        .await
    {
        Ok(r) => r.url,
        Err(e) => {
            return internal(format!(
                "the runtime refused port forwarding: {}",
                e.message()
            ));
        }
    };
    if upgrade::is_websocket(request.headers()) {
        let tunnel = format!("{SPDY_TUNNEL_PREFIX}{PORT_FORWARD}");
        let offered = upgrade::websocket_protocols(request.headers());
        if offered.contains(&tunnel) {
            return tunnel_websocket(request, &url, tunnel).await;
        }
    }
    proxy(request, &url).await
}

/// Dial the runtime's streaming server at `url` and send `request` (path from `url`).
async fn dial(
    url: &str,
    build: impl FnOnce(http::request::Builder) -> http::request::Builder,
) -> Result<http::Response<hyper::body::Incoming>, Response> {
    let uri: http::Uri = url.parse().map_err(|_| {
        internal(format!(
            "the runtime returned an invalid streaming URL {url:?}"
        ))
    })?;
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| internal(format!("the runtime's streaming URL {url:?} has no host")))?;
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| {
            internal(format!(
                "dialing the runtime's streaming server at {authority} failed: {e}"
            ))
        })?;
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let request = build(
        http::Request::builder()
            .uri(path)
            .header(header::HOST, authority),
    )
    .body(Empty::<bytes::Bytes>::new())
    .map_err(|e| internal(format!("building the runtime request failed: {e}")))?;
    upgrade::send(tcp, request)
        .await
        .map_err(|e| internal(format!("the runtime's streaming server failed: {e}")))
}

/// Forward a non-101 answer of the runtime as it is.
fn passthrough(response: http::Response<hyper::body::Incoming>) -> Response {
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, Body::new(body))
}

/// Proxy an upgrade request to the runtime as bytes: the runtime's answer goes back to the
/// client, and after a `101` the two connections are spliced.
async fn proxy(mut request: Request, url: &str) -> Response {
    let client = hyper::upgrade::on(&mut request);
    let method = request.method().clone();
    let headers = request.headers().clone();
    let mut response = match dial(url, |mut b| {
        b = b.method(method);
        for (name, value) in &headers {
            if name == header::HOST
                || name == header::CONTENT_LENGTH
                || name == header::AUTHORIZATION
            {
                continue;
            }
            b = b.header(name, value);
        }
        b
    })
    .await
    {
        Ok(r) => r,
        Err(r) => return r,
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return passthrough(response);
    }
    let backend = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (Ok(client), Ok(backend)) = (client.await, backend.await) else {
            return;
        };
        upgrade::splice(
            hyper_util::rt::TokioIo::new(client),
            hyper_util::rt::TokioIo::new(backend),
        )
        .await;
    });
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Body::empty())
}

/// Upgrade to SPDY with the runtime, offering `protocol`.
async fn spdy_upgrade(
    url: &str,
    protocol: &str,
) -> Result<(upgrade::Upgraded, Option<HeaderValue>), Response> {
    let mut response = dial(url, |b| {
        b.method(http::Method::POST)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, spdy::UPGRADE)
            .header(PROTOCOL_HEADER, protocol)
    })
    .await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(passthrough(response));
    }
    let chosen = response.headers().get(PROTOCOL_HEADER).cloned();
    let io = upgrade::upgraded(&mut response)
        .await
        .map_err(|e| internal(format!("upgrading to the runtime failed: {e}")))?;
    Ok((io, chosen))
}

async fn bridge_websocket(
    mut request: Request,
    url: &str,
    protocol: &str,
    streams: Streams,
) -> Response {
    let accept = match upgrade::websocket_accept(request.headers(), protocol) {
        Ok(a) => a,
        Err(e) => return bad_request(e.to_string()),
    };
    let (io, _) = match spdy_upgrade(url, V4).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let session = Session::new(io, Role::Client);
    let client = hyper::upgrade::on(&mut request);
    let protocol = protocol.to_owned();
    tokio::spawn(async move {
        let Ok(client) = client.await else {
            session.close().await;
            return;
        };
        let ws = upgrade::websocket_server(hyper_util::rt::TokioIo::new(client)).await;
        remotecommand::open_and_bridge(ws, &protocol, session, streams).await;
    });
    let (parts, ()) = accept.into_parts();
    Response::from_parts(parts, Body::empty())
}

async fn tunnel_websocket(mut request: Request, url: &str, tunnel: String) -> Response {
    let accept = match upgrade::websocket_accept(request.headers(), &tunnel) {
        Ok(a) => a,
        Err(e) => return bad_request(e.to_string()),
    };
    let (io, _) = match spdy_upgrade(url, PORT_FORWARD).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let client = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(client) = client.await else { return };
        let ws = upgrade::websocket_server(hyper_util::rt::TokioIo::new(client)).await;
        skiff_streaming::tunnel::run(ws, io).await;
    });
    let (parts, ()) = accept.into_parts();
    let mut response = Response::from_parts(parts, Body::empty());
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_queries_collect_repeated_commands() {
        let q = parse_command_query(Some(
            "command=sh&command=-c&command=echo+hi&stdin=true&stdout=1&stderr=true&tty=false",
        ));
        assert_eq!(q.command, ["sh", "-c", "echo hi"]);
        assert_eq!(
            q.streams,
            Streams {
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false
            }
        );
        let t = parse_command_query(Some("command=sh&stdout=true&stderr=true&tty=true"));
        assert!(t.streams.tty && !t.streams.stderr);
    }
}
