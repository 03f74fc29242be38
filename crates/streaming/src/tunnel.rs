//! A byte stream carried in WebSocket binary messages, as kubectl's port-forward tunnels its
//! SPDY session through a WebSocket (`SPDY/3.1+portforward.k8s.io`): the payloads of the
//! messages are the SPDY bytes, in order, so unwrapping them gives the session to proxy.

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Pump bytes between `ws` and `io` until both directions ended.
pub async fn run<S, T>(ws: WebSocketStream<S>, io: T)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut read, mut write) = tokio::io::split(io);
    let inbound = async {
        while let Some(msg) = ws_rx.next().await {
            match msg {
                Ok(Message::Binary(data)) => {
                    if write.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = write.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_tx
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.send(crate::upgrade::normal_close()).await;
        let _ = ws_tx.close().await;
    };
    // Either side ending ends the tunnel: neither SPDY end half-closes a live session.
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    #[tokio::test]
    async fn messages_become_a_byte_stream_and_back() {
        let (client_io, server_io) = tokio::io::duplex(4096);
        let (backend, mut far) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            let ws = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
            run(ws, backend).await;
        });
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        client
            .send(Message::Binary(b"hello ".to_vec().into()))
            .await
            .unwrap();
        client
            .send(Message::Binary(b"world".to_vec().into()))
            .await
            .unwrap();
        let mut got = vec![0u8; 11];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"hello world");
        far.write_all(b"reply").await.unwrap();
        let msg = client.next().await.unwrap().unwrap();
        assert_eq!(msg.into_data().as_ref(), b"reply");
        drop(far);
        // The far end closing closes the WebSocket.
        loop {
            match client.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
        server.await.unwrap();
    }
}
