//! The host's own addresses, for certificate SANs and the advertise address.

use std::net::IpAddr;

/// Every address of the host's interfaces that a peer could use to reach it: loopback and
/// link-local addresses are left out, since they are covered by built-in SANs or useless.
pub fn host_addresses() -> Vec<IpAddr> {
    let Ok(interfaces) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    let mut addresses: Vec<IpAddr> = interfaces
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| !ip.is_loopback() && !is_link_local(ip))
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_loopback_or_link_local() {
        for ip in host_addresses() {
            assert!(!ip.is_loopback(), "{ip}");
            assert!(!is_link_local(&ip), "{ip}");
        }
    }
}
