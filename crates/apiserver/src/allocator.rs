//! Service ClusterIP and NodePort allocation.
//!
//! An allocation is a key in the store (`/registry/ranges/...`) created with create-if-absent,
//! so allocations are exclusive across every API server sharing the store, and survive
//! restarts without a separate bitmap. Releasing deletes the key.

use std::net::Ipv4Addr;
use std::sync::Arc;

use rand::Rng;
use skiff_store::Store;

use crate::error::{ApiError, ApiResult};

/// An IPv4 CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub network: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, len) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CIDR"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IPv4 CIDR"))?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| *p <= 30)
            .ok_or_else(|| format!("{text:?} has an invalid prefix length"))?;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        Ok(Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.prefix))
    }

    /// Whether an address is inside the block.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.network)
    }

    /// The `n`th address of the block.
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + n)
    }

    /// The first usable address (`.1`), reserved for the `kubernetes` service.
    pub fn first(&self) -> Ipv4Addr {
        self.nth(1)
    }
}

/// The NodePort range, 30000–32767 as upstream's default.
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Allocates service IPs and node ports through the store.
#[derive(Clone)]
pub struct Allocator {
    store: Arc<dyn Store>,
    /// The service CIDR.
    pub service_cidr: Cidr,
}

/// Outcome of asking for a specific value.
#[derive(Debug, PartialEq, Eq)]
pub enum Specific {
    /// Now ours.
    Allocated,
    /// Somebody holds it.
    Taken,
}

impl Allocator {
    /// An allocator over `store` for `service_cidr`.
    pub fn new(store: Arc<dyn Store>, service_cidr: Cidr) -> Self {
        Allocator {
            store,
            service_cidr,
        }
    }

    fn ip_key(ip: Ipv4Addr) -> String {
        format!("/registry/ranges/serviceips/{ip}")
    }

    fn port_key(port: u16) -> String {
        format!("/registry/ranges/servicenodeports/{port}")
    }

    async fn claim(&self, key: &str, owner: &str) -> ApiResult<Specific> {
        match self
            .store
            .create(key, bytes::Bytes::from(owner.to_owned()))
            .await
        {
            Ok(_) => Ok(Specific::Allocated),
            Err(skiff_store::Error::AlreadyExists { .. }) => Ok(Specific::Taken),
            Err(e) => Err(e.into()),
        }
    }

    /// Claim a specific IP.
    pub async fn claim_ip(&self, ip: Ipv4Addr, owner: &str) -> ApiResult<Specific> {
        self.claim(&Self::ip_key(ip), owner).await
    }

    /// Claim any free IP (never the network address, `.1` or the broadcast address).
    pub async fn any_ip(&self, owner: &str) -> ApiResult<Ipv4Addr> {
        let size = self.service_cidr.size();
        let start = rand::rng().random_range(2..size - 1);
        for offset in 0..size {
            let n = 2 + (start - 2 + offset) % (size - 3);
            let ip = self.service_cidr.nth(n);
            if self.claim_ip(ip, owner).await? == Specific::Allocated {
                return Ok(ip);
            }
        }
        Err(ApiError::internal(format!(
            "no service IPs left in {}",
            self.service_cidr
        )))
    }

    /// Claim a specific node port.
    pub async fn claim_port(&self, port: u16, owner: &str) -> ApiResult<Specific> {
        self.claim(&Self::port_key(port), owner).await
    }

    /// Claim any free node port.
    pub async fn any_port(&self, owner: &str) -> ApiResult<u16> {
        let (lo, hi) = (*NODE_PORT_RANGE.start(), *NODE_PORT_RANGE.end());
        let span = u32::from(hi - lo) + 1;
        let start = rand::rng().random_range(0..span);
        for offset in 0..span {
            let port = lo + ((start + offset) % span) as u16;
            if self.claim_port(port, owner).await? == Specific::Allocated {
                return Ok(port);
            }
        }
        Err(ApiError::internal("no node ports left"))
    }

    /// Release an IP.
    pub async fn release_ip(&self, ip: Ipv4Addr) {
        let _ = self.store.delete(&Self::ip_key(ip), None).await;
    }

    /// Release a node port.
    pub async fn release_port(&self, port: u16) {
        let _ = self.store.delete(&Self::port_key(port), None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_math() {
        let c: Cidr = "10.43.0.0/16".parse().unwrap();
        assert_eq!(c.first(), Ipv4Addr::new(10, 43, 0, 1));
        assert!(c.contains(Ipv4Addr::new(10, 43, 255, 254)));
        assert!(!c.contains(Ipv4Addr::new(10, 44, 0, 1)));
        assert_eq!(c.size(), 65536);
        assert!("10.43.0.0".parse::<Cidr>().is_err());
        assert_eq!(
            "10.43.1.7/16".parse::<Cidr>().unwrap().to_string(),
            "10.43.0.0/16"
        );
    }
}
