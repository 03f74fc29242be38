//! Static pods: pod manifests in `<root>/pod-manifests/` that the kubelet runs without the API
//! server having to schedule them, and the mirror pods that show them in the API (read-only
//! reflections: deleting a mirror pod does not stop the static pod, the kubelet re-creates
//! the mirror). Names get the node name appended like upstream (`etcd-node1`).

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// Annotation of a mirror pod: the hash of the static pod it mirrors.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Annotation of a static pod: its content hash.
pub const HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// Annotation: where the pod came from (`file`).
pub const SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Annotation: when the kubelet first saw the pod.
pub const SEEN_ANNOTATION: &str = "kubernetes.io/config.seen";

fn hash(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Parse one manifest into the static pod the kubelet runs.
pub fn static_pod(text: &str, node_name: &str) -> Result<Pod, String> {
    let value: serde_json::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    if value
        .get("kind")
        .and_then(|k| k.as_str())
        .is_some_and(|k| k != "Pod")
    {
        return Err("only Pod manifests are supported".into());
    }
    let mut pod: Pod = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or("the pod has no name")?;
    let hash = hash(format!("{node_name}\n{text}").as_bytes());
    pod.metadata.name = Some(format!("{name}-{}", node_name.to_lowercase()));
    pod.metadata.namespace = Some(
        pod.metadata
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into()),
    );
    // A uuid-shaped uid derived from the content, stable across kubelet restarts.
    pod.metadata.uid = Some(format!(
        "{}-{}-{}-{}-{}",
        &hash[..8],
        &hash[8..12],
        &hash[12..16],
        &hash[16..20],
        &hash[20..32]
    ));
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(HASH_ANNOTATION.into(), hash);
    annotations.insert(SOURCE_ANNOTATION.into(), "file".into());
    annotations
        .entry(SEEN_ANNOTATION.into())
        .or_insert_with(|| jiff::Timestamp::now().to_string());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_owned());
    // Static pods tolerate every NoExecute taint (upstream adds the same toleration).
    spec.tolerations
        .get_or_insert_with(Vec::new)
        .push(k8s_openapi::api::core::v1::Toleration {
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        });
    Ok(pod)
}

/// Read every manifest in `dir` (`*.yaml`, `*.yml`, `*.json`); bad ones are logged and skipped.
pub fn read_manifests(dir: &Path, node_name: &str) -> Vec<Pod> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    let mut pods = Vec::new();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.')
            || !(name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
        {
            continue;
        }
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| static_pod(&t, node_name))
        {
            Ok(pod) => pods.push(pod),
            Err(err) => {
                tracing::warn!(manifest = %path.display(), error = %err, "ignoring a static pod manifest")
            }
        }
    }
    pods
}

/// The mirror pod of a static pod.
pub fn mirror_pod(pod: &Pod, node_name: &str, node_uid: Option<&str>) -> Pod {
    let mut mirror = pod.clone();
    mirror.metadata.uid = None;
    mirror.metadata.resource_version = None;
    mirror.status = None;
    let hash = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HASH_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    mirror
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(MIRROR_ANNOTATION.into(), hash);
    if let Some(uid) = node_uid {
        mirror.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: node_name.to_owned(),
            uid: uid.to_owned(),
            controller: Some(true),
            ..Default::default()
        }]);
    }
    mirror
}

/// Whether an API pod is a mirror pod (the kubelet never runs those itself).
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox:1\n";

    #[test]
    fn manifests_become_node_named_pods_with_stable_uids() {
        let a = static_pod(MANIFEST, "Node-1").unwrap();
        let b = static_pod(MANIFEST, "Node-1").unwrap();
        assert_eq!(a.metadata.name.as_deref(), Some("web-node-1"));
        assert_eq!(a.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(a.metadata.uid, b.metadata.uid);
        assert_eq!(
            a.spec.as_ref().unwrap().node_name.as_deref(),
            Some("Node-1")
        );
        let changed = static_pod(&MANIFEST.replace("busybox:1", "busybox:2"), "Node-1").unwrap();
        assert_ne!(a.metadata.uid, changed.metadata.uid);
    }

    #[test]
    fn mirrors_carry_the_hash_and_an_owner() {
        let pod = static_pod(MANIFEST, "n1").unwrap();
        let mirror = mirror_pod(&pod, "n1", Some("node-uid"));
        assert!(is_mirror(&mirror));
        assert!(!is_mirror(&pod));
        assert!(mirror.metadata.uid.is_none());
        assert_eq!(mirror.metadata.owner_references.unwrap()[0].kind, "Node");
    }

    #[test]
    fn bad_manifests_are_refused() {
        assert!(static_pod("kind: Deployment\nmetadata: {name: x}\n", "n").is_err());
        assert!(static_pod("kind: Pod\nspec: {}\n", "n").is_err());
        assert!(static_pod("{{{", "n").is_err());
    }
}
