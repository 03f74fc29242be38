//! HTTP/1.1 upgrade plumbing shared by the API server and the kubelet: send a request over a
//! connection the caller dialled (TCP, TLS) and take over the connection a `101 Switching
//! Protocols` answer leaves; accept a WebSocket whose request hyper already parsed; splice
//! two upgraded connections together.

use http::{HeaderMap, Response, StatusCode, header};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::Error;

/// A connection after a protocol switch.
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// Send one HTTP/1.1 request over `io`; the connection stays usable for an upgrade.
pub async fn send<I, B>(io: I, request: http::Request<B>) -> Result<Response<Incoming>, Error>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(Error::Http)?;
    tokio::spawn(async move {
        if let Err(err) = conn.with_upgrades().await {
            tracing::debug!(%err, "upstream connection ended with an error");
        }
    });
    sender.send_request(request).await.map_err(Error::Http)
}

/// The connection a `101` response switched to.
pub async fn upgraded<B>(response: &mut Response<B>) -> Result<Upgraded, Error> {
    hyper::upgrade::on(response)
        .await
        .map(TokioIo::new)
        .map_err(Error::Http)
}

/// The connection a request asked to switch, once the `101` answer is sent.
pub async fn client_upgraded<B>(request: &mut http::Request<B>) -> Result<Upgraded, Error> {
    hyper::upgrade::on(request)
        .await
        .map(TokioIo::new)
        .map_err(Error::Http)
}

/// Copy bytes both ways until both directions ended.
pub async fn splice<A, B>(mut a: A, mut b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(err) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
        tracing::debug!(%err, "spliced connection ended with an error");
    }
}

/// Which protocol a request asks to upgrade to (`websocket`, `SPDY/3.1`), lower-cased.
pub fn requested(headers: &HeaderMap) -> Option<String> {
    let connection = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    if !connection {
        return None;
    }
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
}

/// Whether a request asks for a WebSocket.
pub fn is_websocket(headers: &HeaderMap) -> bool {
    requested(headers).as_deref() == Some("websocket")
}

/// Whether a request asks for SPDY.
pub fn is_spdy(headers: &HeaderMap) -> bool {
    requested(headers).is_some_and(|p| p.starts_with("spdy/"))
}

/// The WebSocket subprotocols a request offers.
pub fn websocket_protocols(headers: &HeaderMap) -> Vec<String> {
    crate::channel::offered(
        headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

/// The `101` answer accepting a WebSocket request with `protocol`.
pub fn websocket_accept(headers: &HeaderMap, protocol: &str) -> Result<Response<()>, Error> {
    let version = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok());
    if version != Some("13") {
        return Err(Error::BadUpgrade(format!(
            "unsupported websocket version {}",
            version.unwrap_or("(none)")
        )));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| Error::BadUpgrade("missing Sec-WebSocket-Key".into()))?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(())
        .map_err(|e| Error::BadUpgrade(e.to_string()))
}

/// A close message with the normal-closure code: clients such as kubectl treat a close
/// without a code as an error.
pub fn normal_close() -> tokio_tungstenite::tungstenite::Message {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    tokio_tungstenite::tungstenite::Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// The server end of a WebSocket over an upgraded connection.
pub async fn websocket_server<S>(io: S) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_raw_socket(io, Role::Server, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_requests_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "SPDY/3.1".parse().unwrap());
        assert!(is_spdy(&h) && !is_websocket(&h));
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(is_websocket(&h));
        h.remove(header::CONNECTION);
        assert_eq!(requested(&h), None);
    }

    #[test]
    fn websocket_accept_answers_the_key() {
        let mut h = HeaderMap::new();
        h.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        // The example of RFC 6455 section 1.3.
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        let r = websocket_accept(&h, "v5.channel.k8s.io").unwrap();
        assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            r.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        h.remove(header::SEC_WEBSOCKET_KEY);
        assert!(websocket_accept(&h, "x").is_err());
    }
}
