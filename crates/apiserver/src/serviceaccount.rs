//! The ServiceAccount admission step for pods (upstream's `ServiceAccount` plugin): unless
//! `automountServiceAccountToken` is false on the pod or its ServiceAccount, a new pod gets the
//! projected `kube-api-access-<suffix>` volume — a bound, expiring token, the cluster CA from
//! the `kube-root-ca.crt` ConfigMap and the namespace — mounted read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container, which is where
//! in-cluster clients look.

use serde_json::{Value, json};

/// Where in-cluster clients find the token, CA and namespace.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Add the token volume to `pod` (a pod being created). `sa_automount` is the ServiceAccount's
/// `automountServiceAccountToken`, if it exists and sets it.
pub fn mount_token(pod: &mut Value, sa_automount: Option<bool>) {
    let is_mirror = pod
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or(sa_automount)
        .unwrap_or(true);
    if !automount || is_mirror {
        return;
    }
    let already = ["containers", "initContainers"].iter().any(|list| {
        spec.get(*list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| {
                c["volumeMounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["mountPath"] == MOUNT_PATH)
            })
    });
    if already {
        return;
    }
    let name = format!("kube-api-access-{}", random_suffix());
    let volume = json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                { "serviceAccountToken": { "expirationSeconds": 3607, "path": "token" } },
                { "configMap": { "name": "kube-root-ca.crt", "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
                { "downwardAPI": { "items": [{ "path": "namespace", "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } }] } },
            ],
        },
    });
    match spec.get_mut("volumes").and_then(Value::as_array_mut) {
        Some(v) => v.push(volume),
        None => {
            spec.insert("volumes".into(), json!([volume]));
        }
    }
    let mount = json!({ "name": name, "readOnly": true, "mountPath": MOUNT_PATH });
    for list in ["containers", "initContainers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            match c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                Some(m) => m.push(mount.clone()),
                None => c["volumeMounts"] = json!([mount.clone()]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({ "metadata": { "name": "p" }, "spec": {
            "initContainers": [{ "name": "i", "image": "b" }],
            "containers": [{ "name": "a", "image": "b", "volumeMounts": [{ "name": "x", "mountPath": "/x" }] }],
        }})
    }

    #[test]
    fn every_container_gets_the_token_volume() {
        let mut p = pod();
        mount_token(&mut p, None);
        let volume = &p["spec"]["volumes"][0];
        assert!(
            volume["name"]
                .as_str()
                .unwrap()
                .starts_with("kube-api-access-")
        );
        assert_eq!(
            volume["projected"]["sources"][0]["serviceAccountToken"]["path"],
            "token"
        );
        for c in ["containers", "initContainers"] {
            let mounts = p["spec"][c][0]["volumeMounts"].as_array().unwrap();
            assert_eq!(mounts.last().unwrap()["mountPath"], MOUNT_PATH);
            assert_eq!(mounts.last().unwrap()["readOnly"], true);
        }
    }

    #[test]
    fn automount_can_be_turned_off_by_the_pod_or_its_service_account() {
        let mut p = pod();
        p["spec"]["automountServiceAccountToken"] = json!(false);
        mount_token(&mut p, Some(true));
        assert!(p["spec"].get("volumes").is_none());
        let mut p = pod();
        mount_token(&mut p, Some(false));
        assert!(p["spec"].get("volumes").is_none());
        let mut p = pod();
        p["spec"]["automountServiceAccountToken"] = json!(true);
        mount_token(&mut p, Some(false));
        assert!(p["spec"].get("volumes").is_some(), "the pod's choice wins");
    }

    #[test]
    fn an_existing_mount_at_the_path_is_respected() {
        let mut p = pod();
        p["spec"]["containers"][0]["volumeMounts"] =
            json!([{ "name": "mine", "mountPath": MOUNT_PATH }]);
        mount_token(&mut p, None);
        assert!(p["spec"].get("volumes").is_none());
    }
}
