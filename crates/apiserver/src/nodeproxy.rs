//! Subresources served by a node's kubelet: `pods/log`, `pods/exec`, `pods/attach`,
//! `pods/portforward` and `nodes/proxy`. The API server checks the request against the pod
//! (it exists, is scheduled, names one of its containers), then forwards it over TLS to the
//! kubelet at the node's InternalIP and `status.daemonEndpoints.kubeletEndpoint.Port`,
//! presenting the kubelet-client certificate and verifying the kubelet's serving certificate
//! against the cluster CA. Responses stream back as they come (`logs -f`); upgrade requests
//! (SPDY, WebSocket) are passed through: once the kubelet switched protocols, the client's
//! and the kubelet's connections are spliced, so the API server never looks inside them.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::Value;
use skiff_api::registry::ResourceInfo;

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;

/// How long dialling a kubelet may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Headers that describe one hop and are not forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether this subresource of `info` is served by a kubelet.
pub fn handles(info: &ResourceInfo, sub: &str) -> bool {
    if !info.group.is_empty() {
        return false;
    }
    match info.plural.as_str() {
        "pods" => matches!(sub, "log" | "exec" | "attach" | "portforward"),
        "nodes" => sub == "proxy" || sub.starts_with("proxy/"),
        _ => false,
    }
}

/// What the handler got besides the context.
pub struct Forward {
    /// The method.
    pub method: Method,
    /// The raw query string.
    pub query: Option<String>,
    /// The request body (nodes/proxy).
    pub body: Body,
    /// The client connection's upgrade, for upgrade requests.
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// Serve a kubelet-backed subresource.
pub async fn serve(ctx: &Ctx, sub: &str, request: Forward) -> ApiResult<Response> {
    let Some(tls) = ctx.state.settings.kubelet_client.clone() else {
        return Err(ApiError::unavailable(format!(
            "the {sub} subresource is served by the node's kubelet, and this API server has no kubelet client credentials"
        )));
    };
    let (node_name, path) = if ctx.info.plural == "nodes" {
        let rest = sub.strip_prefix("proxy").unwrap_or("");
        let mut path = if rest.is_empty() {
            "/".to_owned()
        } else {
            rest.to_owned()
        };
        if let Some(q) = &request.query {
            path.push('?');
            path.push_str(q);
        }
        (ctx.name().to_owned(), path)
    } else {
        pod_target(ctx, sub, &request.method, request.query.as_deref()).await?
    };
    let (ip, port) = kubelet_address(ctx, &node_name).await?;
    forward(ctx, tls, ip, port, &path, request).await
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    skiff_streaming::upgrade::requested(headers).is_some()
}

/// The node and kubelet path of a pod subresource request, after upstream's checks.
async fn pod_target(
    ctx: &Ctx,
    sub: &str,
    method: &Method,
    raw_query: Option<&str>,
) -> ApiResult<(String, String)> {
    let allowed = match sub {
        "log" => method == Method::GET,
        _ => matches!(*method, Method::GET | Method::POST),
    };
    if !allowed {
        return Err(ApiError::method_not_supported(&ctx.gr(), method.as_str()));
    }
    let name = ctx.name().to_owned();
    let namespace = ctx.namespace().unwrap_or("default").to_owned();
    let (pod, _) = ctx
        .state
        .objects
        .get_existing(&ctx.info, Some(&namespace), &name)
        .await?;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let mut query: Vec<(String, String)> =
        form_urlencoded::parse(raw_query.unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    if sub == "portforward" {
        return Ok((
            node,
            format!(
                "/portForward/{}/{}{}",
                enc(&namespace),
                enc(&name),
                rebuild(&query)
            ),
        ));
    }
    let container = container_of(&pod, &name, &query)?;
    if matches!(sub, "exec" | "attach") {
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if matches!(phase, "Succeeded" | "Failed") {
            let what = if sub == "exec" {
                "exec into"
            } else {
                "attach to"
            };
            return Err(ApiError::bad_request(format!(
                "cannot {what} a container in a completed pod; current phase is {phase}"
            )));
        }
        if !is_upgrade(&ctx.headers) {
            return Err(ApiError::bad_request("Upgrade request required"));
        }
    }
    query.retain(|(k, _)| k != "container");
    let base = match sub {
        "log" => "containerLogs",
        "exec" => "exec",
        _ => "attach",
    };
    Ok((
        node,
        format!(
            "/{base}/{}/{}/{}{}",
            enc(&namespace),
            enc(&name),
            enc(&container),
            rebuild(&query)
        ),
    ))
}

fn rebuild(query: &[(String, String)]) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut s = form_urlencoded::Serializer::for_suffix(String::from("?"), 1);
    for (k, v) in query {
        s.append_pair(k, v);
    }
    s.finish()
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// The container a request names, or the pod's only one (upstream's rules and messages).
fn container_of(pod: &Value, name: &str, query: &[(String, String)]) -> ApiResult<String> {
    let containers = names(pod, "containers");
    let init = names(pod, "initContainers");
    let ephemeral = names(pod, "ephemeralContainers");
    let wanted = query
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty());
    let container = match wanted {
        Some(c) => c,
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            if !ephemeral.is_empty() {
                message.push_str(&format!(
                    " or one of the ephemeral containers: [{}]",
                    ephemeral.join(" ")
                ));
            }
            return Err(ApiError::bad_request(message));
        }
    };
    let known = containers
        .iter()
        .chain(&init)
        .chain(&ephemeral)
        .any(|c| *c == container);
    if !known {
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    Ok(container)
}

/// The node's kubelet address: its InternalIP (else ExternalIP) and kubelet port.
async fn kubelet_address(ctx: &Ctx, node_name: &str) -> ApiResult<(IpAddr, u16)> {
    let registry = ctx.state.registry.snapshot();
    let nodes = registry
        .get("", "v1", "nodes")
        .cloned()
        .ok_or_else(|| ApiError::internal("the nodes resource is not registered"))?;
    let (node, _) = ctx
        .state
        .objects
        .get_existing(&nodes, None, node_name)
        .await?;
    let addresses = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let address = ["InternalIP", "ExternalIP"].iter().find_map(|kind| {
        addresses
            .iter()
            .filter(|a| a["type"] == *kind)
            .find_map(|a| a["address"].as_str()?.parse::<IpAddr>().ok())
    });
    let Some(ip) = address else {
        return Err(ApiError::internal(format!(
            "node {node_name} has no InternalIP address to reach its kubelet at"
        )));
    };
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(10250);
    Ok((ip, port))
}

async fn forward(
    ctx: &Ctx,
    tls: Arc<rustls::ClientConfig>,
    ip: IpAddr,
    port: u16,
    path: &str,
    request: Forward,
) -> ApiResult<Response> {
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::internal(format!("error dialing backend: dial tcp {ip}:{port}: {e}"))
    };
    let tcp = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect((ip, port)))
        .await
        .map_err(|_| unreachable(&"i/o timeout"))?
        .map_err(|e| unreachable(&e))?;
    let _ = tcp.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(tls);
    let stream = tokio::time::timeout(
        DIAL_TIMEOUT,
        connector.connect(rustls::pki_types::ServerName::IpAddress(ip.into()), tcp),
    )
    .await
    .map_err(|_| unreachable(&"tls handshake timeout"))?
    .map_err(|e| unreachable(&format!("tls: {e}")))?;

    let upgrading = request.upgrade.is_some() && is_upgrade(&ctx.headers);
    let mut builder = http::Request::builder()
        .method(request.method.clone())
        .uri(path)
        .header(header::HOST, format!("{ip}:{port}"));
    for (name, value) in &ctx.headers {
        let n = name.as_str();
        let hop = HOP_BY_HOP.contains(&n) && !(upgrading && matches!(n, "connection" | "upgrade"));
        if hop || matches!(n, "host" | "authorization" | "content-length") || n.starts_with(':') {
            continue;
        }
        builder = builder.header(name, value);
    }
    let outgoing = builder
        .body(request.body)
        .map_err(|e| ApiError::bad_request(format!("the request cannot be forwarded: {e}")))?;
    let mut response = skiff_streaming::upgrade::send(stream, outgoing)
        .await
        .map_err(|e| {
            ApiError::internal(format!(
                "error trying to reach the kubelet at {ip}:{port}: {e}"
            ))
        })?;

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = request.upgrade.filter(|_| upgrading) else {
            return Err(ApiError::internal("the kubelet switched protocols unasked"));
        };
        let backend = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let (Ok(client), Ok(backend)) = (client.await, backend.await) else {
                return;
            };
            skiff_streaming::upgrade::splice(
                hyper_util::rt::TokioIo::new(client),
                hyper_util::rt::TokioIo::new(backend),
            )
            .await;
        });
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = response.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(*h);
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(s: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(s.as_bytes()).into_owned().collect()
    }

    #[test]
    fn containers_are_chosen_and_checked_like_upstream() {
        let one = json!({"spec": {"containers": [{"name": "main"}]}});
        assert_eq!(container_of(&one, "p", &q("")).unwrap(), "main");
        let err = container_of(&one, "p", &q("container=nope")).unwrap_err();
        assert_eq!(err.message, "container nope is not valid for pod p");
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        let err = container_of(&two, "p", &q("")).unwrap_err();
        assert_eq!(
            err.message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(container_of(&two, "p", &q("container=i")).unwrap(), "i");
    }

    #[test]
    fn queries_are_rebuilt_without_the_container() {
        let mut query = q("container=main&command=sh&command=-c&command=echo%20hi&stdout=true");
        query.retain(|(k, _)| k != "container");
        assert_eq!(
            rebuild(&query),
            "?command=sh&command=-c&command=echo+hi&stdout=true"
        );
        assert_eq!(rebuild(&[]), "");
    }
}
