//! What the kubelet tells the cloud controllers about its machine. With
//! `--cloud-provider=external` the node registers with the
//! `node.cloudprovider.kubernetes.io/uninitialized` NoSchedule taint and
//! `alpha.kubernetes.io/provided-node-ip`, like upstream's kubelet, and waits for the cloud
//! node controller to initialize it. Whatever the provider, the node carries the `skiff.io/*`
//! annotations the built-in `local` provider reads as instance metadata (addresses, zone,
//! region — k3s does the same with `k3s.io/*`), and a kubelet that stops cleanly marks its
//! node `skiff.io/shutdown` until it starts again, which the `local` provider reports as a
//! shut-down instance.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch};
use serde_json::{Map, Value, json};
use skiff_api::cloud as vocab;

use crate::config::KubeletConfig;

/// How long a stopping kubelet waits to mark its node shut down.
const SHUTDOWN_MARK_TIMEOUT: Duration = Duration::from_secs(2);

/// The kubelet's cloud settings.
#[derive(Debug, Clone, Default)]
pub struct CloudOptions {
    /// `--cloud-provider=external`: register tainted until a cloud node controller
    /// initializes the node.
    pub external: bool,
    /// `--node-external-ip`.
    pub external_ip: Option<IpAddr>,
    /// `--node-zone`.
    pub zone: Option<String>,
    /// `--node-region`.
    pub region: Option<String>,
}

/// The node's cloud annotations as a merge patch: values for what is known, `null` for what
/// is not (so a flag dropped since the last start is removed), and the shutdown mark removed.
pub fn annotations_patch(config: &KubeletConfig) -> Map<String, Value> {
    let cloud = &config.cloud;
    let optional = |v: Option<String>| v.map_or(Value::Null, Value::String);
    let mut a = Map::new();
    a.insert(
        vocab::ANNOTATION_INTERNAL_IP.into(),
        json!(config.node_ip.to_string()),
    );
    a.insert(vocab::ANNOTATION_HOSTNAME.into(), json!(config.node_name));
    a.insert(
        vocab::ANNOTATION_EXTERNAL_IP.into(),
        optional(cloud.external_ip.map(|ip| ip.to_string())),
    );
    a.insert(vocab::ANNOTATION_ZONE.into(), optional(cloud.zone.clone()));
    a.insert(
        vocab::ANNOTATION_REGION.into(),
        optional(cloud.region.clone()),
    );
    // Upstream's kubelet sets it only for an external provider, which alone reads it.
    a.insert(
        vocab::ANNOTATION_PROVIDED_NODE_IP.into(),
        if cloud.external {
            json!(config.node_ip.to_string())
        } else {
            Value::Null
        },
    );
    a.insert(vocab::ANNOTATION_SHUTDOWN.into(), Value::Null);
    a
}

/// The annotations a new Node is created with.
pub fn annotations(config: &KubeletConfig) -> Map<String, Value> {
    annotations_patch(config)
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .collect()
}

/// Taints the node registers with because of the cloud provider (upstream's kubelet adds
/// `uninitialized=true:NoSchedule` for an external provider, on creation only).
pub fn registration_taints(config: &KubeletConfig) -> Vec<Value> {
    if config.cloud.external {
        vec![json!({ "key": vocab::TAINT_UNINITIALIZED, "value": "true", "effect": "NoSchedule" })]
    } else {
        Vec::new()
    }
}

/// Mark the node shut down (a clean stop), giving up after a moment: the process is exiting.
pub async fn mark_shutdown(client: &Client, node_name: &str) {
    let api: Api<Node> = Api::all(client.clone());
    let patch = json!({ "metadata": { "annotations": {
        vocab::ANNOTATION_SHUTDOWN: jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    } } });
    let marked = tokio::time::timeout(
        SHUTDOWN_MARK_TIMEOUT,
        api.patch(
            node_name,
            &crate::node::patch_params(),
            &Patch::Merge(&patch),
        ),
    )
    .await;
    match marked {
        Ok(Ok(_)) => tracing::info!(node = %node_name, "marked the node shut down"),
        Ok(Err(e)) => {
            tracing::warn!(node = %node_name, error = %e, "marking the node shut down failed")
        }
        Err(_) => tracing::warn!(node = %node_name, "marking the node shut down timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_external_provider_means_a_taint_and_the_provided_ip() {
        let mut config = crate::tests::config();
        assert!(registration_taints(&config).is_empty());
        let plain = annotations(&config);
        assert_eq!(plain[vocab::ANNOTATION_INTERNAL_IP], "192.0.2.10");
        assert_eq!(plain[vocab::ANNOTATION_HOSTNAME], "node-1");
        assert!(!plain.contains_key(vocab::ANNOTATION_PROVIDED_NODE_IP));
        assert!(!plain.contains_key(vocab::ANNOTATION_ZONE));

        config.cloud = CloudOptions {
            external: true,
            external_ip: Some("203.0.113.5".parse().unwrap()),
            zone: Some("rack-a".into()),
            region: None,
        };
        assert_eq!(
            registration_taints(&config),
            [
                json!({ "key": "node.cloudprovider.kubernetes.io/uninitialized", "value": "true", "effect": "NoSchedule" })
            ]
        );
        let external = annotations(&config);
        assert_eq!(external[vocab::ANNOTATION_PROVIDED_NODE_IP], "192.0.2.10");
        assert_eq!(external[vocab::ANNOTATION_EXTERNAL_IP], "203.0.113.5");
        assert_eq!(external[vocab::ANNOTATION_ZONE], "rack-a");
        let patch = annotations_patch(&config);
        assert_eq!(patch[vocab::ANNOTATION_REGION], Value::Null);
        assert_eq!(
            patch[vocab::ANNOTATION_SHUTDOWN],
            Value::Null,
            "a starting kubelet clears the shutdown mark"
        );
    }
}
