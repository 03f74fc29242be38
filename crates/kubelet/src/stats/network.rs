//! Network counters from `/proc/<pid>/net/dev`, which shows the interfaces of the network
//! namespace the process is in: the kubelet's own for the node, a pod's (through one of its
//! processes) when the runtime does not report pod network stats.

use super::summary::{InterfaceStats, NetworkStats};

/// The interface upstream reports as the default one (`network.DefaultInterfaceName`).
pub const DEFAULT_INTERFACE: &str = "eth0";

/// Interfaces in a `/proc/net/dev` table, loopback left out.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let c: Vec<u64> = counters
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            if name == "lo" || c.len() < 16 {
                return None;
            }
            // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit.
            Some(InterfaceStats {
                name: name.to_owned(),
                rx_bytes: Some(c[0]),
                rx_errors: Some(c[2]),
                tx_bytes: Some(c[8]),
                tx_errors: Some(c[10]),
            })
        })
        .collect()
}

/// Network stats with the default interface inline (`eth0`, else the first one).
pub fn network_stats(mut interfaces: Vec<InterfaceStats>, time: String) -> Option<NetworkStats> {
    if interfaces.is_empty() {
        return None;
    }
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    let default = interfaces
        .iter()
        .find(|i| i.name == DEFAULT_INTERFACE)
        .unwrap_or(&interfaces[0])
        .clone();
    Some(NetworkStats {
        time,
        default,
        interfaces,
    })
}

/// The interfaces seen by process `pid` (`None` for this process).
pub fn read(pid: Option<u32>) -> Vec<InterfaceStats> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/net/dev"),
        None => "/proc/self/net/dev".to_owned(),
    };
    parse_net_dev(&std::fs::read_to_string(path).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0:   52000     400    1    0    0     0          0         0    31000     300    2    0    0     0       0          0
  veth9:     10       1    0    0    0     0          0         0       20       2    0    0    0     0       0          0
";

    #[test]
    fn interfaces_are_read_without_loopback() {
        let ifs = parse_net_dev(DEV);
        assert_eq!(ifs.len(), 2);
        assert_eq!(
            ifs[0],
            InterfaceStats {
                name: "eth0".into(),
                rx_bytes: Some(52000),
                rx_errors: Some(1),
                tx_bytes: Some(31000),
                tx_errors: Some(2),
            }
        );
        let stats = network_stats(ifs, "T".into()).unwrap();
        assert_eq!(stats.default.name, "eth0");
        assert_eq!(stats.interfaces.len(), 2);
        assert!(network_stats(Vec::new(), "T".into()).is_none());
        let only = network_stats(parse_net_dev(DEV).split_off(1), "T".into()).unwrap();
        assert_eq!(only.default.name, "veth9", "without eth0 the first one");
    }

    #[test]
    fn this_process_sees_its_namespace() {
        // Loopback is always there and always left out; what remains parses.
        for i in read(None) {
            assert_ne!(i.name, "lo");
            assert!(i.rx_bytes.is_some());
        }
    }
}
