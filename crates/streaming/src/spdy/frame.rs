//! SPDY/3.1 frames on the wire: the 8-byte control and data frame headers, each control
//! frame's fields, and name/value header blocks compressed with one zlib stream per direction
//! primed with the protocol's dictionary ([`dictionary`]).

use std::sync::LazyLock;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use crate::Error;

/// Protocol version carried in every control frame.
pub const VERSION: u16 = 3;
/// Largest payload a frame can carry (24-bit length).
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// Largest header block accepted once decompressed, against zlib bombs.
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// FLAG_FIN: the sender's last frame on this stream.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL on SYN_STREAM: the recipient may not send on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// RST_STREAM status codes used here.
pub mod status {
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 3;
    /// CANCEL.
    pub const CANCEL: u32 = 5;
}

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// Header name/value pairs (names lower-case, as SPDY requires).
pub type Headers = Vec<(String, String)>;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Open a stream.
    SynStream {
        /// The new stream's id (odd from clients, even from servers).
        stream_id: u32,
        /// The stream it belongs to (0 for none).
        associated_to: u32,
        /// 0 (highest) to 7.
        priority: u8,
        /// FIN / UNIDIRECTIONAL.
        flags: u8,
        /// The stream's headers.
        headers: Headers,
    },
    /// Accept a stream.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// Reply headers.
        headers: Headers,
    },
    /// Abort a stream.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// Why.
        status: u32,
    },
    /// Session settings (read and ignored: no setting changes how this implementation works).
    Settings {
        /// FLAG_SETTINGS_CLEAR_SETTINGS.
        flags: u8,
        /// (flags, id, value).
        entries: Vec<(u8, u32, u32)>,
    },
    /// Liveness check, echoed by the peer.
    Ping {
        /// Odd from clients, even from servers.
        id: u32,
    },
    /// The sender will open no more streams.
    GoAway {
        /// The last stream the sender accepted.
        last_good_stream_id: u32,
        /// Why.
        status: u32,
    },
    /// More headers for a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// Flow-control credit.
    WindowUpdate {
        /// The stream (0 for the session).
        stream_id: u32,
        /// Bytes granted.
        delta: u32,
    },
    /// Stream payload.
    Data {
        /// The stream.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// The bytes.
        data: Bytes,
    },
    /// A control frame of a type this implementation does not know (ignored, as the
    /// specification asks).
    Unknown {
        /// Its type.
        kind: u16,
    },
}

/// The zlib dictionary both ends prime their header compression with (SPDY/3 section
/// 2.6.10.1): the common header names and methods, each as a 32-bit big-endian length and
/// the bytes, then a run of common values without lengths.
pub fn dictionary() -> &'static [u8] {
    static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &[&str] = &[
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information",
            "204 No Content",
            "301 Moved Permanently",
            "400 Bad Request",
            "401 Unauthorized",
            "403 Forbidden",
            "404 Not Found",
            "500 Internal Server Error",
            "501 Not Implemented",
            "503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
            "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,",
            "publicprivatemax-age=gzip,deflate,sdch",
            "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        ];
        let mut dict = Vec::with_capacity(1423);
        for word in WORDS {
            dict.extend_from_slice(&(word.len() as u32).to_be_bytes());
            dict.extend_from_slice(word.as_bytes());
        }
        for part in TAIL {
            dict.extend_from_slice(part.as_bytes());
        }
        dict
    });
    &DICTIONARY
}

/// Writes frames, compressing header blocks with this direction's zlib stream.
pub struct Encoder {
    zlib: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// A fresh compression context.
    pub fn new() -> Encoder {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(dictionary())
            .expect("a fresh zlib stream accepts a dictionary");
        Encoder { zlib }
    }

    fn header_block(&mut self, headers: &Headers) -> Result<Vec<u8>, Error> {
        let mut raw = Vec::new();
        raw.put_u32(headers.len() as u32);
        for (name, value) in headers {
            raw.put_u32(name.len() as u32);
            raw.put_slice(name.to_ascii_lowercase().as_bytes());
            raw.put_u32(value.len() as u32);
            raw.put_slice(value.as_bytes());
        }
        let mut out = Vec::new();
        let mut input = &raw[..];
        loop {
            out.reserve(input.len() + 1024);
            let before = self.zlib.total_in();
            self.zlib
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| Error::Protocol(format!("compressing headers: {e}")))?;
            input = &input[(self.zlib.total_in() - before) as usize..];
            // The sync flush is complete once the input is in and the output did not fill up.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Append `frame`'s bytes to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), Error> {
        let control = |out: &mut BytesMut, kind: u16, flags: u8, payload: &[u8]| {
            out.put_u16(0x8000 | VERSION);
            out.put_u16(kind);
            out.put_u8(flags);
            out.put_uint(payload.len() as u64, 3);
            out.put_slice(payload);
        };
        match frame {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let mut payload = Vec::new();
                payload.put_u32(stream_id & 0x7fff_ffff);
                payload.put_u32(associated_to & 0x7fff_ffff);
                payload.put_u8((priority & 0x07) << 5);
                payload.put_u8(0); // credential slot
                payload.extend(self.header_block(headers)?);
                control(out, SYN_STREAM, *flags, &payload);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let mut payload = Vec::new();
                payload.put_u32(stream_id & 0x7fff_ffff);
                payload.extend(self.header_block(headers)?);
                control(out, SYN_REPLY, *flags, &payload);
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let mut payload = Vec::new();
                payload.put_u32(stream_id & 0x7fff_ffff);
                payload.extend(self.header_block(headers)?);
                control(out, HEADERS, *flags, &payload);
            }
            Frame::RstStream { stream_id, status } => {
                let mut payload = Vec::new();
                payload.put_u32(stream_id & 0x7fff_ffff);
                payload.put_u32(*status);
                control(out, RST_STREAM, 0, &payload);
            }
            Frame::Settings { flags, entries } => {
                let mut payload = Vec::new();
                payload.put_u32(entries.len() as u32);
                for (f, id, value) in entries {
                    payload.put_u8(*f);
                    payload.put_uint(u64::from(*id), 3);
                    payload.put_u32(*value);
                }
                control(out, SETTINGS, *flags, &payload);
            }
            Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut payload = Vec::new();
                payload.put_u32(last_good_stream_id & 0x7fff_ffff);
                payload.put_u32(*status);
                control(out, GOAWAY, 0, &payload);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut payload = Vec::new();
                payload.put_u32(stream_id & 0x7fff_ffff);
                payload.put_u32(delta & 0x7fff_ffff);
                control(out, WINDOW_UPDATE, 0, &payload);
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > MAX_PAYLOAD {
                    return Err(Error::Protocol(format!(
                        "a data frame of {} bytes is over the limit",
                        data.len()
                    )));
                }
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u8(*flags);
                out.put_uint(data.len() as u64, 3);
                out.put_slice(data);
            }
            Frame::Unknown { kind } => {
                return Err(Error::Protocol(format!(
                    "cannot encode a frame of unknown type {kind}"
                )));
            }
        }
        Ok(())
    }
}

/// Reads frames, decompressing header blocks with this direction's zlib stream.
pub struct Decoder {
    zlib: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A fresh decompression context.
    pub fn new() -> Decoder {
        Decoder {
            zlib: Decompress::new(true),
        }
    }

    fn header_block(&mut self, compressed: &[u8]) -> Result<Headers, Error> {
        let bad = |what: &str| Error::Protocol(format!("malformed header block: {what}"));
        let mut raw: Vec<u8> = Vec::new();
        let mut input = compressed;
        loop {
            raw.reserve((input.len() * 4).max(1024));
            let (before_in, before_out) = (self.zlib.total_in(), raw.len());
            let result = self
                .zlib
                .decompress_vec(input, &mut raw, FlushDecompress::Sync);
            input = &input[(self.zlib.total_in() - before_in) as usize..];
            match result {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib
                        .set_dictionary(dictionary())
                        .map_err(|e| bad(&format!("dictionary rejected: {e}")))?;
                    continue;
                }
                Err(e) => return Err(bad(&e.to_string())),
            }
            if raw.len() > MAX_HEADER_BLOCK {
                return Err(bad("too large"));
            }
            if input.is_empty() && raw.len() < raw.capacity() {
                break;
            }
            if self.zlib.total_in() == before_in && raw.len() == before_out {
                break;
            }
        }
        let mut buf = &raw[..];
        let take_u32 = |buf: &mut &[u8]| -> Result<u32, Error> {
            if buf.len() < 4 {
                return Err(bad("truncated"));
            }
            Ok(buf.get_u32())
        };
        let count = take_u32(&mut buf)?;
        let mut headers = Vec::new();
        for _ in 0..count {
            let take_str = |buf: &mut &[u8]| -> Result<String, Error> {
                let len = take_u32(buf)? as usize;
                if buf.len() < len {
                    return Err(bad("truncated"));
                }
                let s = String::from_utf8_lossy(&buf[..len]).into_owned();
                buf.advance(len);
                Ok(s)
            };
            let name = take_str(&mut buf)?;
            let value = take_str(&mut buf)?;
            headers.push((name, value));
        }
        Ok(headers)
    }

    /// Take one whole frame off the front of `buf`, or `None` if more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let head = buf.split_to(8);
        let mut payload = buf.split_to(len).freeze();
        let flags = head[4];
        if head[0] & 0x80 == 0 {
            let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            return Ok(Some(Frame::Data {
                stream_id,
                flags,
                data: payload,
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(Error::Protocol(format!(
                "unsupported SPDY version {version}"
            )));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = |payload: &Bytes, n: usize| {
            if payload.len() < n {
                Err(Error::Protocol(format!(
                    "control frame of type {kind} is too short"
                )))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                need(&payload, 10)?;
                let stream_id = payload.get_u32() & 0x7fff_ffff;
                let associated_to = payload.get_u32() & 0x7fff_ffff;
                let priority = payload.get_u8() >> 5;
                payload.advance(1);
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers: self.header_block(&payload)?,
                }
            }
            SYN_REPLY | HEADERS => {
                need(&payload, 4)?;
                let stream_id = payload.get_u32() & 0x7fff_ffff;
                let headers = self.header_block(&payload)?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                need(&payload, 8)?;
                Frame::RstStream {
                    stream_id: payload.get_u32() & 0x7fff_ffff,
                    status: payload.get_u32(),
                }
            }
            SETTINGS => {
                need(&payload, 4)?;
                let count = payload.get_u32() as usize;
                need(&payload, count.saturating_mul(8))?;
                let entries = (0..count)
                    .map(|_| {
                        let f = payload.get_u8();
                        let id = payload.get_uint(3) as u32;
                        (f, id, payload.get_u32())
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                need(&payload, 4)?;
                Frame::Ping {
                    id: payload.get_u32(),
                }
            }
            GOAWAY => {
                need(&payload, 4)?;
                let last_good_stream_id = payload.get_u32() & 0x7fff_ffff;
                // SPDY/3 added the status; tolerate its absence.
                let status = if payload.len() >= 4 {
                    payload.get_u32()
                } else {
                    0
                };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            WINDOW_UPDATE => {
                need(&payload, 8)?;
                Frame::WindowUpdate {
                    stream_id: payload.get_u32() & 0x7fff_ffff,
                    delta: payload.get_u32() & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { kind: other },
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_specified_one() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        // zlib identifies a preset dictionary by its Adler-32, which peers check.
        let adler = {
            let (mut a, mut b) = (1u32, 0u32);
            for byte in dict {
                a = (a + u32::from(*byte)) % 65521;
                b = (b + a) % 65521;
            }
            (b << 16) | a
        };
        assert_eq!(adler, 0xe3c6_a7c2);
        assert!(dict.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(dict.ends_with(b"enq=0."));
    }

    fn round_trip(frames: &[Frame]) -> Vec<Frame> {
        let (mut enc, mut dec) = (Encoder::new(), Decoder::new());
        let mut wire = BytesMut::new();
        for f in frames {
            enc.encode(f, &mut wire).unwrap();
        }
        let mut out = Vec::new();
        while let Some(f) = dec.decode(&mut wire).unwrap() {
            out.push(f);
        }
        assert!(wire.is_empty());
        out
    }

    #[test]
    fn every_frame_type_round_trips_with_one_compression_context() {
        let headers = |v: &str| {
            vec![
                ("streamtype".to_owned(), v.to_owned()),
                ("port".to_owned(), "8080".to_owned()),
            ]
        };
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: headers("error"),
            },
            // The second header block reuses the first one's compression history.
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 7,
                flags: FLAG_FIN,
                headers: headers("data"),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![],
            },
            Frame::Headers {
                stream_id: 3,
                flags: 0,
                headers: headers("x"),
            },
            Frame::RstStream {
                stream_id: 3,
                status: status::CANCEL,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, 7, 65536)],
            },
            Frame::Ping { id: 1 },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 4096,
            },
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
        ];
        assert_eq!(round_trip(&frames), frames);
    }

    #[test]
    fn large_header_values_survive_compression() {
        let big = "x".repeat(100_000);
        let frames = vec![Frame::SynReply {
            stream_id: 5,
            flags: 0,
            headers: vec![("big".into(), big)],
        }];
        assert_eq!(round_trip(&frames), frames);
    }

    #[test]
    fn data_frames_have_the_documented_layout() {
        let mut wire = BytesMut::new();
        Encoder::new()
            .encode(
                &Frame::Data {
                    stream_id: 3,
                    flags: FLAG_FIN,
                    data: Bytes::from_static(b"ab"),
                },
                &mut wire,
            )
            .unwrap();
        assert_eq!(&wire[..], b"\0\0\0\x03\x01\0\0\x02ab");
        let mut ping = BytesMut::new();
        Encoder::new()
            .encode(&Frame::Ping { id: 2 }, &mut ping)
            .unwrap();
        assert_eq!(&ping[..], b"\x80\x03\0\x06\0\0\0\x04\0\0\0\x02");
    }

    #[test]
    fn partial_frames_wait_for_more_bytes_and_garbage_is_an_error() {
        let mut wire = BytesMut::from(&b"\x80\x03\0\x06\0\0\0\x04\0\0"[..]);
        let mut dec = Decoder::new();
        assert_eq!(dec.decode(&mut wire).unwrap(), None);
        wire.extend_from_slice(b"\0\x02");
        assert_eq!(dec.decode(&mut wire).unwrap(), Some(Frame::Ping { id: 2 }));
        let mut bad = BytesMut::from(&b"\x80\x02\0\x06\0\0\0\x04\0\0\0\x02"[..]);
        assert!(dec.decode(&mut bad).is_err());
    }
}
