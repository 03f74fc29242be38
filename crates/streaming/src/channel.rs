//! The Kubernetes channel protocols: stream names shared by SPDY remotecommand and WebSocket
//! exec/attach, the WebSocket message framing (one leading byte naming the channel), and
//! subprotocol negotiation.

/// remotecommand protocol v4 (SPDY or WebSocket): an error stream carrying a Status, resize.
pub const V4: &str = "v4.channel.k8s.io";
/// remotecommand protocol v5 (WebSocket only): v4 plus the close signal.
pub const V5: &str = "v5.channel.k8s.io";
/// Port-forward over SPDY.
pub const PORT_FORWARD: &str = "portforward.k8s.io";
/// Prefix of a WebSocket subprotocol that tunnels SPDY (`SPDY/3.1+portforward.k8s.io`).
pub const SPDY_TUNNEL_PREFIX: &str = "SPDY/3.1+";

/// The SPDY header naming a remotecommand stream's role.
pub const STREAM_TYPE: &str = "streamtype";

/// The channels of exec/attach, their WebSocket channel number and SPDY stream type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The process's standard input.
    Stdin,
    /// Its standard output.
    Stdout,
    /// Its standard error.
    Stderr,
    /// The final Status (exit code, failure).
    Error,
    /// Terminal size changes (`{"Width":W,"Height":H}`).
    Resize,
    /// v5: the client closes the channel named by the payload byte.
    Close,
}

impl Channel {
    /// The WebSocket channel number.
    pub fn number(self) -> u8 {
        match self {
            Channel::Stdin => 0,
            Channel::Stdout => 1,
            Channel::Stderr => 2,
            Channel::Error => 3,
            Channel::Resize => 4,
            Channel::Close => 255,
        }
    }

    /// The channel with this WebSocket number.
    pub fn from_number(n: u8) -> Option<Channel> {
        Some(match n {
            0 => Channel::Stdin,
            1 => Channel::Stdout,
            2 => Channel::Stderr,
            3 => Channel::Error,
            4 => Channel::Resize,
            255 => Channel::Close,
            _ => return None,
        })
    }

    /// The SPDY `streamtype` header value.
    pub fn stream_type(self) -> &'static str {
        match self {
            Channel::Stdin => "stdin",
            Channel::Stdout => "stdout",
            Channel::Stderr => "stderr",
            Channel::Error => "error",
            Channel::Resize => "resize",
            Channel::Close => "close",
        }
    }
}

/// A WebSocket message for `channel` carrying `data`.
pub fn encode(channel: Channel, data: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(data.len() + 1);
    msg.push(channel.number());
    msg.extend_from_slice(data);
    msg
}

/// Split a WebSocket message into its channel and payload (`None` for an empty message or
/// an unknown channel).
pub fn decode(msg: &[u8]) -> Option<(Channel, &[u8])> {
    let (first, rest) = msg.split_first()?;
    Some((Channel::from_number(*first)?, rest))
}

/// Subprotocols a client offered, in its order (from every `Sec-WebSocket-Protocol` value,
/// comma-separated).
pub fn offered<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The first of our `supported` protocols (in our preference order) that the client offered.
pub fn negotiate<'a>(offered: &[String], supported: &[&'a str]) -> Option<&'a str> {
    supported
        .iter()
        .find(|s| offered.iter().any(|o| o == *s))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_channel_in_the_first_byte() {
        assert_eq!(encode(Channel::Stdout, b"hi"), b"\x01hi");
        assert_eq!(encode(Channel::Error, b""), b"\x03");
        assert_eq!(decode(b"\x00abc"), Some((Channel::Stdin, &b"abc"[..])));
        // v5's close signal names the closed channel in its payload.
        assert_eq!(decode(b"\xff\x00"), Some((Channel::Close, &b"\x00"[..])));
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"\x09x"), None);
        for n in [0, 1, 2, 3, 4, 255] {
            assert_eq!(Channel::from_number(n).unwrap().number(), n);
        }
    }

    #[test]
    fn negotiation_prefers_our_order_among_what_was_offered() {
        let offered = offered(["v4.channel.k8s.io, v5.channel.k8s.io", "channel.k8s.io"]);
        assert_eq!(offered.len(), 3);
        assert_eq!(negotiate(&offered, &[V5, V4]), Some(V5));
        assert_eq!(negotiate(&offered, &[PORT_FORWARD]), None);
        let old = self::offered(["v4.channel.k8s.io"]);
        assert_eq!(negotiate(&old, &[V5, V4]), Some(V4));
    }
}
