//! Exec and attach over a WebSocket (protocols v5 and v4 of the channel protocol, what
//! current kubectl and the client libraries speak) bridged onto a SPDY remotecommand v4
//! session (what containerd's streaming server speaks): each channel becomes a SPDY stream
//! named by its `streamtype`, the Status on the error stream reaches the client as it was
//! written, and v5's close signal for stdin becomes a half-close of the stdin stream so the
//! process sees end-of-file.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::Error;
use crate::channel::{self, Channel, STREAM_TYPE};
use crate::spdy::{Session, Stream};

/// How long the SPDY peer may take to accept each stream.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Which standard streams the session has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Streams {
    /// Standard input.
    pub stdin: bool,
    /// Standard output.
    pub stdout: bool,
    /// Standard error (never with a terminal, which merges it into stdout).
    pub stderr: bool,
    /// A terminal (adds the resize stream).
    pub tty: bool,
}

impl Streams {
    /// The channels to open, in the order upstream clients open them.
    pub fn channels(&self) -> Vec<Channel> {
        let mut out = vec![Channel::Error];
        if self.stdin {
            out.push(Channel::Stdin);
        }
        if self.stdout {
            out.push(Channel::Stdout);
        }
        if self.stderr && !self.tty {
            out.push(Channel::Stderr);
        }
        if self.tty {
            out.push(Channel::Resize);
        }
        out
    }
}

/// Open the remotecommand v4 streams on a SPDY client session.
pub async fn open(session: &Session, streams: Streams) -> Result<Vec<(Channel, Stream)>, Error> {
    let mut out = Vec::new();
    for ch in streams.channels() {
        let headers = vec![(STREAM_TYPE.to_owned(), ch.stream_type().to_owned())];
        out.push((ch, session.open(headers, STREAM_TIMEOUT).await?));
    }
    Ok(out)
}

/// How long a terminal session waits for the client's first size before the process starts.
const FIRST_SIZE_WAIT: Duration = Duration::from_secs(1);

/// Open the runtime's streams only once the WebSocket client is connected, then [`bridge`].
/// For a terminal the client's first size message is awaited (briefly) and written on the
/// resize stream as soon as it opens: the runtime starts the process when its streams are
/// all there, and a size arriving later would leave the first output on a 0×0 terminal.
pub async fn open_and_bridge<S>(
    mut ws: WebSocketStream<S>,
    protocol: &str,
    session: Session,
    streams: Streams,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut pending = Vec::new();
    let mut first_size = None;
    if streams.tty {
        let deadline = tokio::time::Instant::now() + FIRST_SIZE_WAIT;
        while first_size.is_none() {
            let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await else {
                break;
            };
            let data = match &msg {
                Message::Binary(d) => d.clone(),
                Message::Text(t) => Bytes::copy_from_slice(t.as_bytes()),
                _ => {
                    pending.push(msg);
                    continue;
                }
            };
            match channel::decode(&data) {
                Some((Channel::Resize, payload)) if !payload.is_empty() => {
                    first_size = Some(Bytes::copy_from_slice(payload));
                }
                _ => pending.push(msg),
            }
        }
    }
    let opened = match open(&session, streams).await {
        Ok(o) => o,
        Err(e) => {
            let status = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("opening the runtime's streams failed: {e}"),
                "reason": "InternalError", "code": 500,
            });
            let frame = channel::encode(Channel::Error, status.to_string().as_bytes());
            let _ = ws.send(Message::Binary(frame.into())).await;
            let _ = ws.close(None).await;
            session.close().await;
            return;
        }
    };
    if let Some(size) = first_size
        && let Some((_, stream)) = opened.iter().find(|(c, _)| *c == Channel::Resize)
    {
        let _ = stream.writer().send(size).await;
    }
    bridge(ws, protocol, session, opened, pending).await;
}

/// Bridge a WebSocket exec/attach client (`protocol` v5 or v4) onto the SPDY streams
/// [`open`] returned, until the process's output ended (then the WebSocket is closed) or the
/// client went away (then the SPDY session is closed). `pending` are client messages already
/// read off the WebSocket, handled first.
pub async fn bridge<S>(
    ws: WebSocketStream<S>,
    protocol: &str,
    session: Session,
    streams: Vec<(Channel, Stream)>,
    pending: Vec<Message>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let v5 = protocol == channel::V5;
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            if ws_tx.send(msg).await.is_err() {
                return;
            }
        }
        let _ = ws_tx.send(crate::upgrade::normal_close()).await;
        let _ = ws_tx.close().await;
    });

    let mut stdin = None;
    let mut resize = None;
    let mut outputs = tokio::task::JoinSet::new();
    for (ch, stream) in streams {
        match ch {
            Channel::Stdin => stdin = Some(stream.writer()),
            Channel::Resize => resize = Some(stream.writer()),
            Channel::Stdout | Channel::Stderr | Channel::Error => {
                let out = out_tx.clone();
                let (mut data, _writer) = stream.split();
                outputs.spawn(async move {
                    while let Some(bytes) = data.recv().await {
                        let msg = Message::Binary(channel::encode(ch, &bytes).into());
                        if out.send(msg).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Channel::Close => {}
        }
    }
    drop(out_tx);

    let reader = tokio::spawn(async move {
        let mut pending = pending.into_iter();
        loop {
            let msg = match pending.next() {
                Some(m) => Ok(m),
                None => match ws_rx.next().await {
                    Some(m) => m,
                    None => break,
                },
            };
            let data = match msg {
                Ok(Message::Binary(data)) => data,
                // The Python client sends str payloads as text frames, channel byte first.
                Ok(Message::Text(text)) => bytes::Bytes::copy_from_slice(text.as_bytes()),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            match channel::decode(&data) {
                Some((Channel::Stdin, payload)) if !payload.is_empty() => {
                    if let Some(w) = &stdin {
                        let _ = w.send(Bytes::copy_from_slice(payload)).await;
                    }
                }
                Some((Channel::Resize, payload)) if !payload.is_empty() => {
                    if let Some(w) = &resize {
                        let _ = w.send(Bytes::copy_from_slice(payload)).await;
                    }
                }
                Some((Channel::Close, [n])) if v5 && *n == Channel::Stdin.number() => {
                    if let Some(w) = stdin.take() {
                        let _ = w.finish().await;
                    }
                }
                _ => {}
            }
        }
    });
    let mut reader = reader;
    let all_outputs = async { while outputs.join_next().await.is_some() {} };
    tokio::pin!(all_outputs);
    tokio::select! {
        _ = &mut all_outputs => {}
        _ = &mut reader => {
            // The client left: end the process's session, and pass on what it still said.
            session.close().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut all_outputs).await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    reader.abort();
    session.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spdy::Role;
    use tokio_tungstenite::tungstenite::protocol::Role as WsRole;

    /// A SPDY remotecommand v4 server standing in for containerd: it echoes stdin to stdout
    /// (upper-cased) until stdin ends, records resize messages on stderr-less output, then
    /// writes an exit Status on the error stream.
    async fn fake_runtime(session: Session, v5: bool) {
        let mut by_type = std::collections::HashMap::new();
        while by_type.len() < 4 {
            let stream = session.accept().await.unwrap();
            stream.reply(vec![]).await.unwrap();
            by_type.insert(stream.header(STREAM_TYPE).unwrap().to_owned(), stream);
        }
        let mut stdin = by_type.remove("stdin").unwrap();
        let stdout = by_type.remove("stdout").unwrap();
        let error = by_type.remove("error").unwrap();
        let mut resize = by_type.remove("resize").unwrap();
        let size = resize.recv().await.unwrap();
        stdout.send(size).await.unwrap();
        if v5 {
            while let Some(b) = stdin.recv().await {
                stdout
                    .send(Bytes::from(String::from_utf8_lossy(&b).to_uppercase()))
                    .await
                    .unwrap();
            }
        } else {
            // v4 has no close signal: stdin stays open after the client's close message.
            let b = stdin.recv().await.unwrap();
            stdout
                .send(Bytes::from(String::from_utf8_lossy(&b).to_uppercase()))
                .await
                .unwrap();
            let more = tokio::time::timeout(Duration::from_millis(300), stdin.recv()).await;
            assert!(more.is_err(), "stdin ended under v4: {more:?}");
            stdout.send(Bytes::from_static(b"|open")).await.unwrap();
        }
        stdout.finish().await.unwrap();
        error
            .send(Bytes::from_static(
                br#"{"metadata":{},"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#,
            ))
            .await
            .unwrap();
        error.finish().await.unwrap();
        session.close().await;
    }

    #[tokio::test]
    async fn a_v5_client_reaches_a_spdy_runtime() {
        assert_eq!(
            session_output(channel::V5).await,
            r#"{"Width":80,"Height":24}ABC"#
        );
    }

    #[tokio::test]
    async fn a_v4_client_cannot_close_stdin() {
        assert_eq!(
            session_output(channel::V4).await,
            r#"{"Width":80,"Height":24}ABC|open"#
        );
    }

    /// Run a session with a client of `protocol`; returns what it got on stdout.
    async fn session_output(protocol: &'static str) -> String {
        let (spdy_client_io, spdy_server_io) = tokio::io::duplex(8192);
        let runtime = tokio::spawn(fake_runtime(
            Session::new(spdy_server_io, Role::Server),
            protocol == channel::V5,
        ));
        let spdy = Session::new(spdy_client_io, Role::Client);
        let want = Streams {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: true,
        };
        assert_eq!(
            want.channels(),
            [
                Channel::Error,
                Channel::Stdin,
                Channel::Stdout,
                Channel::Resize
            ]
        );
        let streams = open(&spdy, want).await.unwrap();

        let (ws_client_io, ws_server_io) = tokio::io::duplex(8192);
        let bridge_task = tokio::spawn(async move {
            let ws = WebSocketStream::from_raw_socket(ws_server_io, WsRole::Server, None).await;
            bridge(ws, protocol, spdy, streams, Vec::new()).await;
        });
        let mut client = WebSocketStream::from_raw_socket(ws_client_io, WsRole::Client, None).await;
        let send = |ch: Channel, data: &[u8]| Message::Binary(channel::encode(ch, data).into());
        client
            .send(send(Channel::Resize, br#"{"Width":80,"Height":24}"#))
            .await
            .unwrap();
        if protocol == channel::V4 {
            // As the Python client sends str payloads: a text frame, channel byte first.
            client.send(Message::text("\u{0}abc")).await.unwrap();
        } else {
            client.send(send(Channel::Stdin, b"abc")).await.unwrap();
        }
        client.send(send(Channel::Close, &[0])).await.unwrap();

        let mut stdout = Vec::new();
        let mut error = Vec::new();
        while let Some(msg) = client.next().await {
            match msg.unwrap() {
                Message::Binary(data) => match channel::decode(&data).unwrap() {
                    (Channel::Stdout, p) => stdout.extend_from_slice(p),
                    (Channel::Error, p) => error.extend_from_slice(p),
                    other => panic!("unexpected {other:?}"),
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
        assert!(
            String::from_utf8(error)
                .unwrap()
                .contains(r#""message":"3""#)
        );
        runtime.await.unwrap();
        bridge_task.await.unwrap();
        String::from_utf8(stdout).unwrap()
    }
}
