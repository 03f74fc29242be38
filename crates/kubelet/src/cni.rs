//! The node's pod network: a CNI configuration for the runtime — a Linux bridge with
//! host-local addresses from the node's pod CIDR, and portmap for `hostPort` — using the OS's
//! reference plugins. The runtime (its CRI plugin) runs the plugins for each sandbox; the
//! kubelet only writes the configuration. Masquerading is the kubelet's ([`crate::hostgw`]),
//! which exempts traffic to the whole cluster CIDR; the bridge plugin's own `ipMasq` would NAT
//! pod traffic to other nodes, and is used only when the kubelet cannot masquerade itself.

use std::path::Path;

use serde_json::{Value, json};

/// The bridge pods attach to.
pub const BRIDGE: &str = "skiff0";

/// The network configuration list for `pod_cidr`, keeping IPAM state under `ipam_dir`;
/// `plugin_masquerade`: the bridge plugin masquerades traffic leaving the pod CIDR.
pub fn conflist(pod_cidr: &str, ipam_dir: &Path, plugin_masquerade: bool) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "skiff",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "isDefaultGateway": true,
                "ipMasq": plugin_masquerade,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": pod_cidr }]],
                    "dataDir": ipam_dir.to_string_lossy(),
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    })
}

/// Write the configuration into `conf_dir` (atomically, so the runtime never reads half a
/// file). Returns whether it changed.
pub fn write(
    conf_dir: &Path,
    pod_cidr: &str,
    ipam_dir: &Path,
    plugin_masquerade: bool,
) -> std::io::Result<bool> {
    std::fs::create_dir_all(conf_dir)?;
    std::fs::create_dir_all(ipam_dir)?;
    let path = conf_dir.join("10-skiff.conflist");
    let content =
        serde_json::to_vec_pretty(&conflist(pod_cidr, ipam_dir, plugin_masquerade)).expect("json");
    if std::fs::read(&path).ok().as_deref() == Some(content.as_slice()) {
        return Ok(false);
    }
    let tmp = conf_dir.join(".10-skiff.conflist.tmp");
    std::fs::write(&tmp, &content)?;
    std::fs::rename(&tmp, &path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_network_uses_the_pod_cidr() {
        let c = conflist("10.42.3.0/24", Path::new("/data/cni/ipam"), false);
        assert_eq!(c["plugins"][0]["type"], "bridge");
        assert_eq!(
            c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.3.0/24"
        );
        assert_eq!(c["plugins"][0]["ipam"]["dataDir"], "/data/cni/ipam");
        assert_eq!(c["plugins"][1]["capabilities"]["portMappings"], true);
        assert_eq!(c["plugins"][0]["ipMasq"], false, "the kubelet masquerades");
        let fallback = conflist("10.42.3.0/24", Path::new("/data/cni/ipam"), true);
        assert_eq!(fallback["plugins"][0]["ipMasq"], true);
    }

    #[test]
    fn writing_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = dir.path().join("ipam");
        assert!(write(dir.path(), "10.42.0.0/24", &ipam, false).unwrap());
        assert!(!write(dir.path(), "10.42.0.0/24", &ipam, false).unwrap());
        assert!(write(dir.path(), "10.42.1.0/24", &ipam, false).unwrap());
    }
}
