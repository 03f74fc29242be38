//! kubeconfig files with embedded credentials, as kubectl and client libraries read them.

use base64::Engine;
use serde::Serialize;

use crate::CertifiedKey;

/// A single-cluster, single-user kubeconfig (the `default` context, as k3s writes it).
#[derive(Debug, Serialize)]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    clusters: Vec<Named<Cluster>>,
    contexts: Vec<Named<Context>>,
    #[serde(rename = "current-context")]
    current_context: &'static str,
    preferences: Preferences,
    users: Vec<Named<User>>,
}

#[derive(Debug, Serialize)]
struct Named<T> {
    name: &'static str,
    #[serde(flatten)]
    inner: T,
}

#[derive(Debug, Serialize)]
struct Cluster {
    cluster: ClusterInfo,
}

#[derive(Debug, Serialize)]
struct ClusterInfo {
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: String,
    server: String,
}

#[derive(Debug, Serialize)]
struct Context {
    context: ContextInfo,
}

#[derive(Debug, Serialize)]
struct ContextInfo {
    cluster: &'static str,
    user: &'static str,
}

#[derive(Debug, Serialize)]
struct Preferences {}

#[derive(Debug, Serialize)]
struct User {
    user: UserInfo,
}

#[derive(Debug, Serialize)]
struct UserInfo {
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: String,
    #[serde(rename = "client-key-data")]
    client_key_data: String,
}

impl Kubeconfig {
    /// A kubeconfig for `server_url`, trusting `ca_pem`, authenticating with `client`.
    pub fn new(server_url: &str, ca_pem: &str, client: &CertifiedKey) -> Kubeconfig {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        Kubeconfig {
            api_version: "v1",
            kind: "Config",
            clusters: vec![Named {
                name: "default",
                inner: Cluster {
                    cluster: ClusterInfo {
                        certificate_authority_data: b64(ca_pem),
                        server: server_url.to_owned(),
                    },
                },
            }],
            contexts: vec![Named {
                name: "default",
                inner: Context {
                    context: ContextInfo {
                        cluster: "default",
                        user: "default",
                    },
                },
            }],
            current_context: "default",
            preferences: Preferences {},
            users: vec![Named {
                name: "default",
                inner: User {
                    user: UserInfo {
                        client_certificate_data: b64(&client.cert_pem),
                        client_key_data: b64(&client.key_pem),
                    },
                },
            }],
        }
    }

    /// The YAML text.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_as_a_kubeconfig() {
        let client = CertifiedKey {
            cert_pem: "CERT".into(),
            key_pem: "KEY".into(),
        };
        let yaml = Kubeconfig::new("https://127.0.0.1:6443", "CA", &client).to_yaml();
        let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(doc["current-context"], "default");
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            doc["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        assert_eq!(doc["users"][0]["user"]["client-key-data"], "S0VZ");
        assert_eq!(doc["contexts"][0]["context"]["user"], "default");
    }
}
