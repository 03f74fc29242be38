//! A SPDY/3.1 session over any byte stream: streams opened by either end, their data in
//! order, half-close (FIN), reset, and ping replies.
//!
//! Two tasks own the connection: a reader that decodes frames and hands each stream's data
//! to its [`Stream`] (awaiting a slow consumer, so a flood cannot grow memory), and a writer
//! that encodes queued frames. Flow-control windows are not enforced: the peers this serves
//! (Go's spdystream in containerd and kubectl) neither enforce nor rely on them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::frame::{Decoder, Encoder, FLAG_FIN, Frame, Headers, status};
use crate::Error;

/// Data frames are cut to this size so one large write does not hold up other streams.
const CHUNK: usize = 32 * 1024;

enum Out {
    Frame(Frame),
    Shutdown,
}

struct Slot {
    data: Option<mpsc::Sender<Bytes>>,
    reply: Option<oneshot::Sender<Result<Headers, Error>>>,
}

struct Shared {
    out: mpsc::Sender<Out>,
    streams: Mutex<HashMap<u32, Slot>>,
    next_id: AtomicU32,
    closed: watch::Receiver<bool>,
}

/// One end of a SPDY session. Clones share it.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
    incoming: Arc<tokio::sync::Mutex<mpsc::Receiver<Stream>>>,
}

/// Which end of the session this is: clients open odd stream ids, servers even ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end that sent the HTTP upgrade request.
    Client,
    /// The end that accepted it.
    Server,
}

/// One stream of a session.
pub struct Stream {
    id: u32,
    headers: Headers,
    data: mpsc::Receiver<Bytes>,
    writer: StreamWriter,
}

/// The sending half of a stream; clones send on the same stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    shared: Arc<Shared>,
}

impl Session {
    /// Run a session over `io`. The session ends when the peer closes the connection or
    /// [`Session::close`] is called.
    pub fn new<T>(io: T, role: Role) -> Session
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(64);
        let (closed_tx, closed_rx) = watch::channel(false);
        let (incoming_tx, incoming_rx) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            out: out_tx,
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(if role == Role::Client { 1 } else { 2 }),
            closed: closed_rx,
        });
        tokio::spawn(write_loop(write, out_rx));
        tokio::spawn(read_loop(
            read,
            shared.clone(),
            incoming_tx,
            role,
            closed_tx,
        ));
        Session {
            shared,
            incoming: Arc::new(tokio::sync::Mutex::new(incoming_rx)),
        }
    }

    /// Open a stream with `headers` and wait (up to `timeout`) for the peer's SYN_REPLY;
    /// Go's spdystream drops data sent on a stream before it replied.
    pub async fn open(&self, headers: Headers, timeout: Duration) -> Result<Stream, Error> {
        if *self.shared.closed.borrow() {
            return Err(Error::Closed);
        }
        let id = self.shared.next_id.fetch_add(2, Ordering::Relaxed);
        let (data_tx, data_rx) = mpsc::channel(64);
        let (reply_tx, reply_rx) = oneshot::channel();
        self.shared.streams.lock().insert(
            id,
            Slot {
                data: Some(data_tx),
                reply: Some(reply_tx),
            },
        );
        self.shared
            .send(Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: headers.clone(),
            })
            .await?;
        match tokio::time::timeout(timeout, reply_rx).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) => return Err(Error::Closed),
            Err(_) => {
                self.shared.streams.lock().remove(&id);
                return Err(Error::Protocol(format!(
                    "the peer did not accept stream {id} within {timeout:?}"
                )));
            }
        }
        Ok(Stream {
            id,
            headers,
            data: data_rx,
            writer: StreamWriter {
                id,
                shared: self.shared.clone(),
            },
        })
    }

    /// The next stream the peer opened; `None` once the session ended. Reply to it with
    /// [`Stream::reply`] before sending on it.
    pub async fn accept(&self) -> Option<Stream> {
        self.incoming.lock().await.recv().await
    }

    /// Say GOAWAY and close the connection once queued frames are written.
    pub async fn close(&self) {
        let _ = self
            .shared
            .send(Frame::GoAway {
                last_good_stream_id: 0,
                status: 0,
            })
            .await;
        let _ = self.shared.out.send(Out::Shutdown).await;
    }

    /// Resolves once the peer's side of the connection ended.
    pub async fn closed(&self) {
        let mut rx = self.shared.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }
}

impl Shared {
    async fn send(&self, frame: Frame) -> Result<(), Error> {
        self.out
            .send(Out::Frame(frame))
            .await
            .map_err(|_| Error::Closed)
    }
}

impl Stream {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers it was opened with.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The next bytes the peer sent; `None` after its FIN, a reset, or the session's end.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.data.recv().await
    }

    /// The sending half.
    pub fn writer(&self) -> StreamWriter {
        self.writer.clone()
    }

    /// Accept a stream the peer opened.
    pub async fn reply(&self, headers: Headers) -> Result<(), Error> {
        self.writer
            .shared
            .send(Frame::SynReply {
                stream_id: self.id,
                flags: 0,
                headers,
            })
            .await
    }

    /// Send bytes.
    pub async fn send(&self, data: Bytes) -> Result<(), Error> {
        self.writer.send(data).await
    }

    /// Half-close: no more bytes from this end.
    pub async fn finish(&self) -> Result<(), Error> {
        self.writer.finish().await
    }

    /// Split into the receiving half and the sending half.
    pub fn split(self) -> (mpsc::Receiver<Bytes>, StreamWriter) {
        (self.data, self.writer)
    }
}

impl StreamWriter {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Send bytes (cut into frames of at most 32 KiB).
    pub async fn send(&self, mut data: Bytes) -> Result<(), Error> {
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(CHUNK));
            self.shared
                .send(Frame::Data {
                    stream_id: self.id,
                    flags: 0,
                    data: chunk,
                })
                .await?;
        }
        Ok(())
    }

    /// Half-close: no more bytes from this end.
    pub async fn finish(&self) -> Result<(), Error> {
        self.shared
            .send(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            })
            .await
    }

    /// Abort the stream in both directions.
    pub async fn reset(&self) -> Result<(), Error> {
        self.shared.streams.lock().remove(&self.id);
        self.shared
            .send(Frame::RstStream {
                stream_id: self.id,
                status: status::CANCEL,
            })
            .await
    }
}

async fn write_loop<W: AsyncWrite>(write: W, mut rx: mpsc::Receiver<Out>) {
    tokio::pin!(write);
    let mut encoder = Encoder::new();
    let mut buf = BytesMut::new();
    while let Some(msg) = rx.recv().await {
        let mut shutdown = false;
        let mut next = Some(msg);
        // Batch whatever is queued into one write.
        while let Some(msg) = next.take() {
            match msg {
                Out::Frame(frame) => {
                    if let Err(err) = encoder.encode(&frame, &mut buf) {
                        tracing::debug!(%err, "dropping a frame that cannot be encoded");
                    }
                }
                Out::Shutdown => shutdown = true,
            }
            if buf.len() < 256 * 1024 && !shutdown {
                next = rx.try_recv().ok();
            }
        }
        if write.write_all(&buf).await.is_err() || write.flush().await.is_err() {
            return;
        }
        buf.clear();
        if shutdown {
            let _ = write.shutdown().await;
            return;
        }
    }
    let _ = write.shutdown().await;
}

async fn read_loop<R: AsyncRead>(
    read: R,
    shared: Arc<Shared>,
    incoming: mpsc::Sender<Stream>,
    role: Role,
    closed: watch::Sender<bool>,
) {
    tokio::pin!(read);
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'read: loop {
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(%err, "SPDY session protocol error");
                    break 'read;
                }
            };
            if !dispatch(frame, &shared, &incoming, role).await {
                break 'read;
            }
        }
        buf.reserve(32 * 1024);
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // Every stream sees its end.
    let slots: Vec<Slot> = shared.streams.lock().drain().map(|(_, s)| s).collect();
    for slot in slots {
        if let Some(reply) = slot.reply {
            let _ = reply.send(Err(Error::Closed));
        }
    }
    let _ = closed.send(true);
}

/// Handle one frame; false ends the session.
async fn dispatch(
    frame: Frame,
    shared: &Arc<Shared>,
    incoming: &mpsc::Sender<Stream>,
    role: Role,
) -> bool {
    match frame {
        Frame::SynStream {
            stream_id,
            flags,
            headers,
            ..
        } => {
            let peer_parity = if role == Role::Client { 0 } else { 1 };
            let duplicate = shared.streams.lock().contains_key(&stream_id);
            if stream_id == 0 || stream_id % 2 != peer_parity || duplicate {
                let _ = shared
                    .send(Frame::RstStream {
                        stream_id,
                        status: status::PROTOCOL_ERROR,
                    })
                    .await;
                return true;
            }
            let (data_tx, data_rx) = mpsc::channel(64);
            let data = (flags & FLAG_FIN == 0).then_some(data_tx);
            shared
                .streams
                .lock()
                .insert(stream_id, Slot { data, reply: None });
            let stream = Stream {
                id: stream_id,
                headers,
                data: data_rx,
                writer: StreamWriter {
                    id: stream_id,
                    shared: shared.clone(),
                },
            };
            if incoming.send(stream).await.is_err() {
                let _ = shared
                    .send(Frame::RstStream {
                        stream_id,
                        status: status::REFUSED_STREAM,
                    })
                    .await;
            }
        }
        Frame::SynReply {
            stream_id, flags, ..
        } => {
            let mut streams = shared.streams.lock();
            if let Some(slot) = streams.get_mut(&stream_id) {
                if let Some(reply) = slot.reply.take() {
                    let _ = reply.send(Ok(Vec::new()));
                }
                if flags & FLAG_FIN != 0 {
                    slot.data = None;
                }
            }
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            let tx = shared
                .streams
                .lock()
                .get(&stream_id)
                .and_then(|s| s.data.clone());
            if let Some(tx) = tx
                && !data.is_empty()
            {
                // A consumer that went away just loses its data.
                let _ = tx.send(data).await;
            }
            if flags & FLAG_FIN != 0
                && let Some(slot) = shared.streams.lock().get_mut(&stream_id)
            {
                slot.data = None;
            }
        }
        Frame::RstStream { stream_id, .. } => {
            if let Some(slot) = shared.streams.lock().remove(&stream_id)
                && let Some(reply) = slot.reply
            {
                let _ = reply.send(Err(Error::Protocol(format!(
                    "the peer reset stream {stream_id}"
                ))));
            }
        }
        Frame::Ping { id } => {
            let ours = if role == Role::Client { 1 } else { 0 };
            if id % 2 != ours {
                let _ = shared.send(Frame::Ping { id }).await;
            }
        }
        Frame::Headers {
            stream_id, flags, ..
        } => {
            if flags & FLAG_FIN != 0
                && let Some(slot) = shared.streams.lock().get_mut(&stream_id)
            {
                slot.data = None;
            }
        }
        Frame::GoAway { .. }
        | Frame::Settings { .. }
        | Frame::WindowUpdate { .. }
        | Frame::Unknown { .. } => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    async fn read_all(mut s: Stream) -> String {
        let mut out = Vec::new();
        while let Some(b) = s.recv().await {
            out.extend_from_slice(&b);
        }
        String::from_utf8(out).unwrap()
    }

    fn hdr(kind: &str) -> Headers {
        vec![("streamtype".into(), kind.into())]
    }

    #[tokio::test]
    async fn streams_round_trip_between_a_client_and_a_server() {
        let (a, b) = tokio::io::duplex(1024);
        let client = Session::new(a, Role::Client);
        let server = Session::new(b, Role::Server);
        let echo = tokio::spawn(async move {
            // An echo server: every stream's bytes come back upper-cased, then FIN.
            while let Some(mut stream) = server.accept().await {
                stream.reply(vec![]).await.unwrap();
                tokio::spawn(async move {
                    let kind = stream.header("streamtype").unwrap().to_owned();
                    let mut got = Vec::new();
                    while let Some(b) = stream.recv().await {
                        got.extend_from_slice(&b);
                    }
                    let reply = format!("{kind}:{}", String::from_utf8_lossy(&got)).to_uppercase();
                    stream.send(Bytes::from(reply)).await.unwrap();
                    stream.finish().await.unwrap();
                });
            }
        });
        let one = client.open(hdr("stdin"), T).await.unwrap();
        let two = client.open(hdr("stdout"), T).await.unwrap();
        assert_eq!((one.id(), two.id()), (1, 3));
        // More than one frame's worth, interleaved on two streams.
        let big = "x".repeat(100_000);
        one.send(Bytes::from(big.clone())).await.unwrap();
        two.send(Bytes::from_static(b"hello")).await.unwrap();
        one.finish().await.unwrap();
        two.finish().await.unwrap();
        assert_eq!(read_all(two).await, "STDOUT:HELLO");
        assert_eq!(read_all(one).await, format!("STDIN:{}", big.to_uppercase()));
        client.close().await;
        tokio::time::timeout(T, echo).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_reset_ends_the_stream_and_a_closed_peer_ends_the_session() {
        let (a, b) = tokio::io::duplex(1024);
        let client = Session::new(a, Role::Client);
        let server = Session::new(b, Role::Server);
        let opened = tokio::spawn({
            let client = client.clone();
            async move { client.open(hdr("data"), T).await }
        });
        let mut stream = server.accept().await.unwrap();
        stream.reply(vec![]).await.unwrap();
        let client_stream = opened.await.unwrap().unwrap();
        client_stream.writer().reset().await.unwrap();
        assert_eq!(tokio::time::timeout(T, stream.recv()).await.unwrap(), None);
        server.close().await;
        tokio::time::timeout(T, client.closed()).await.unwrap();
        assert!(matches!(
            client.open(hdr("x"), T).await,
            Err(Error::Closed | Error::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn pings_from_the_peer_are_echoed() {
        let (a, b) = tokio::io::duplex(1024);
        let _client = Session::new(a, Role::Client);
        // Drive the server end by hand: send a server ping, expect it back.
        let (mut read, mut write) = tokio::io::split(b);
        let mut wire = BytesMut::new();
        Encoder::new()
            .encode(&Frame::Ping { id: 2 }, &mut wire)
            .unwrap();
        write.write_all(&wire).await.unwrap();
        let mut buf = BytesMut::new();
        let mut dec = Decoder::new();
        let frame = tokio::time::timeout(T, async {
            loop {
                if let Some(f) = dec.decode(&mut buf).unwrap() {
                    return f;
                }
                read.read_buf(&mut buf).await.unwrap();
            }
        })
        .await
        .unwrap();
        assert_eq!(frame, Frame::Ping { id: 2 });
    }

    #[tokio::test]
    async fn streams_with_the_wrong_parity_are_refused() {
        let (a, b) = tokio::io::duplex(1024);
        let server = Session::new(a, Role::Server);
        let (mut read, mut write) = tokio::io::split(b);
        let mut wire = BytesMut::new();
        // A "client" opening an even stream id breaks the rules.
        Encoder::new()
            .encode(
                &Frame::SynStream {
                    stream_id: 2,
                    associated_to: 0,
                    priority: 0,
                    flags: 0,
                    headers: vec![],
                },
                &mut wire,
            )
            .unwrap();
        write.write_all(&wire).await.unwrap();
        let mut buf = BytesMut::new();
        let mut dec = Decoder::new();
        let frame = tokio::time::timeout(T, async {
            loop {
                if let Some(f) = dec.decode(&mut buf).unwrap() {
                    return f;
                }
                read.read_buf(&mut buf).await.unwrap();
            }
        })
        .await
        .unwrap();
        assert_eq!(
            frame,
            Frame::RstStream {
                stream_id: 2,
                status: status::PROTOCOL_ERROR
            }
        );
        drop(write);
        drop(read);
        tokio::time::timeout(T, server.closed()).await.unwrap();
    }
}
