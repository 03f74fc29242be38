//! SPDY/3.1 ([`frame`] encoding, [`session`] multiplexing): what kubectl and containerd's
//! streaming server speak for exec, attach and port-forward after an HTTP upgrade.

pub mod frame;
pub mod session;

pub use frame::{Frame, Headers};
pub use session::{Role, Session, Stream, StreamWriter};

/// The `Upgrade` token of SPDY/3.1.
pub const UPGRADE: &str = "SPDY/3.1";
