//! The streaming protocols behind `kubectl exec`, `attach` and `port-forward`, independent of
//! the kubelet and the API server that use them:
//!
//! - [`spdy`]: SPDY/3.1 frames and sessions (what containerd's streaming server and kubectl's
//!   fallback speak);
//! - [`channel`]: the channel protocols' stream names, WebSocket message framing and
//!   subprotocol negotiation;
//! - [`remotecommand`]: a WebSocket v4/v5 exec/attach session bridged onto a SPDY v4 one;
//! - [`tunnel`]: SPDY bytes carried in WebSocket binary messages (port-forward's WebSocket
//!   form) unwrapped to a plain byte stream;
//! - [`upgrade`]: HTTP/1.1 upgrade plumbing: sending an upgrade request over any connection,
//!   accepting a WebSocket, and splicing two upgraded connections.

pub mod channel;
pub mod remotecommand;
pub mod spdy;
pub mod tunnel;
pub mod upgrade;

/// Why a streaming session failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer broke the SPDY protocol (or a frame could not be built).
    #[error("spdy protocol error: {0}")]
    Protocol(String),
    /// The session or stream is closed.
    #[error("the streaming session is closed")]
    Closed,
    /// An HTTP exchange failed.
    #[error("http exchange failed")]
    Http(#[source] hyper::Error),
    /// A WebSocket failed.
    #[error("websocket failed")]
    WebSocket(#[source] tokio_tungstenite::tungstenite::Error),
    /// A request is not a valid upgrade request.
    #[error("invalid upgrade request: {0}")]
    BadUpgrade(String),
}
