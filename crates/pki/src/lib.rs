//! The cluster's PKI: one certificate authority, the API server's serving certificate, client
//! certificates for admins and components, the admin kubeconfig and the node join token.
//!
//! Everything lives under `<data-dir>/tls/` and is created on first start; later starts load
//! it, so a restarted server keeps its identity and its users' kubeconfigs stay valid. Only
//! the serving certificate is re-issued when it lacks a requested name or nears expiry,
//! because that is the one certificate clients never pin.
//!
//! Keys are ECDSA P-256 (what kubeadm and k3s use by default): small and fast to verify.

mod files;
mod kubeconfig;
mod net;
mod satoken;
mod tls;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

pub use kubeconfig::Kubeconfig;
pub use net::host_addresses;
pub use satoken::{TokenError, TokenSigner};
pub use tls::{
    Identity, client_config, mutual_server_config, parse_client_identity, server_config,
};

/// Why the PKI could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file under the data dir failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored key or certificate does not parse.
    #[error("{path}: not a valid PEM key or certificate: {reason}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Generating or signing a certificate failed.
    #[error("issuing the {what} certificate: {source}")]
    Issue {
        /// Which certificate.
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// A presented client certificate could not be parsed.
    #[error("client certificate: {0}")]
    ClientCertificate(String),
    /// Building the TLS configuration failed.
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// What the serving certificate must cover beyond the built-in names.
#[derive(Debug, Clone, Default)]
pub struct PkiOptions {
    /// Extra DNS names or IP addresses (`--tls-san`).
    pub extra_sans: Vec<String>,
    /// IP addresses the server is reached at (host addresses, advertise address, first
    /// service IP).
    pub ip_sans: Vec<IpAddr>,
}

/// Names every serving certificate carries: how in-cluster and local clients address the
/// API server (upstream kubeadm's apiserver certificate SANs).
const BUILTIN_DNS_SANS: &[&str] = &[
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// Days a leaf certificate is valid; re-issued when fewer than [`RENEW_BEFORE_DAYS`] remain.
const LEAF_VALIDITY_DAYS: i64 = 365;
const RENEW_BEFORE_DAYS: i64 = 90;
const CA_VALIDITY_DAYS: i64 = 3650;

/// A PEM certificate with its PEM private key.
#[derive(Debug, Clone)]
pub struct CertifiedKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM.
    pub key_pem: String,
}

/// The loaded PKI of one server.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedKey,
    serving: CertifiedKey,
    admin: CertifiedKey,
    admin_token: String,
    join_token: String,
    service_accounts: std::sync::Arc<TokenSigner>,
}

impl Pki {
    /// Load the PKI under `<data_dir>/tls`, creating whatever is missing.
    pub fn load_or_create(data_dir: &Path, options: &PkiOptions) -> Result<Pki, Error> {
        let dir = data_dir.join("tls");
        files::create_private_dir(&dir)?;

        let ca = match files::read_pair(&dir, "ca")? {
            Some(ca) => ca,
            None => {
                let ca = issue_ca()?;
                files::write_pair(&dir, "ca", &ca)?;
                tracing::info!(dir = %dir.display(), "created cluster certificate authority");
                ca
            }
        };
        let issuer = load_issuer(&dir, &ca)?;

        let wanted = serving_sans(options);
        let serving = match files::read_pair(&dir, "serving")? {
            Some(existing) if serving_is_current(&existing, &wanted) => existing,
            _ => {
                let serving = issue_serving(&issuer, &wanted)?;
                files::write_pair(&dir, "serving", &serving)?;
                tracing::info!(sans = ?wanted, "issued API server serving certificate");
                serving
            }
        };

        let admin = match files::read_pair(&dir, "admin")? {
            Some(admin) if !expires_soon(&admin.cert_pem) => admin,
            _ => {
                let admin = issue_client(&issuer, "system:admin", &["system:masters"])?;
                files::write_pair(&dir, "admin", &admin)?;
                admin
            }
        };

        let admin_token = files::read_or_create_secret(&dir.join("admin.token"), random_hex)?;
        let ca_hash =
            hex(ring::digest::digest(&ring::digest::SHA256, ca.cert_pem.as_bytes()).as_ref());
        let join_token = files::read_or_create_secret(&data_dir.join("token"), || {
            format!("K10{ca_hash}::server:{}", random_hex())
        })?;

        let service_accounts = std::sync::Arc::new(TokenSigner::load_or_create(
            &dir.join("service-account.key"),
        )?);

        Ok(Pki {
            dir,
            ca,
            serving,
            admin,
            admin_token,
            join_token,
            service_accounts,
        })
    }

    /// The service-account token signer.
    pub fn service_accounts(&self) -> std::sync::Arc<TokenSigner> {
        self.service_accounts.clone()
    }

    /// Where the PKI files live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// The serving certificate and key.
    pub fn serving(&self) -> &CertifiedKey {
        &self.serving
    }

    /// The admin client certificate (CN `system:admin`, O `system:masters`).
    pub fn admin(&self) -> &CertifiedKey {
        &self.admin
    }

    /// A bearer token that authenticates as the admin (for clients that cannot present
    /// certificates).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The token nodes present to join the cluster, k3s-style `K10<ca sha256>::server:<secret>`.
    pub fn join_token(&self) -> &str {
        &self.join_token
    }

    /// Issue a client certificate for a user and its groups, signed by the cluster CA; the
    /// API server maps CN to the user name and O to groups (upstream x509 authenticator).
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<CertifiedKey, Error> {
        let issuer = load_issuer(&self.dir, &self.ca)?;
        issue_client(&issuer, user, groups)
    }

    /// Write a kubeconfig at `path` for a component that authenticates with a client
    /// certificate for `user` in `groups` (e.g. `system:kube-scheduler`). The certificate is
    /// kept under the PKI directory as `<name>` and reused across restarts until it nears
    /// expiry.
    pub fn write_client_kubeconfig(
        &self,
        path: &Path,
        server_url: &str,
        name: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<(), Error> {
        let client = match files::read_pair(&self.dir, name)? {
            Some(existing) if !expires_soon(&existing.cert_pem) => existing,
            _ => {
                let issued = self.issue_client(user, groups)?;
                files::write_pair(&self.dir, name, &issued)?;
                issued
            }
        };
        let config = Kubeconfig::new(server_url, &self.ca.cert_pem, &client);
        files::write_private(path, config.to_yaml().as_bytes())
    }

    /// A serving certificate for a node's kubelet API (SANs: the node name, its addresses,
    /// localhost).
    pub fn issue_kubelet_serving(
        &self,
        node_name: &str,
        ips: &[IpAddr],
    ) -> Result<CertifiedKey, Error> {
        let issuer = load_issuer(&self.dir, &self.ca)?;
        let mut sans: BTreeSet<String> = ips.iter().map(IpAddr::to_string).collect();
        sans.insert(node_name.to_owned());
        sans.insert("localhost".into());
        sans.insert("127.0.0.1".into());
        issue_serving_named(&issuer, &format!("system:node:{node_name}"), &sans)
    }

    /// The client certificate the API server presents to kubelets (upstream's
    /// `kube-apiserver-kubelet-client`, group `system:masters`), kept as `kubelet-client`.
    pub fn kubelet_client(&self) -> Result<CertifiedKey, Error> {
        match files::read_pair(&self.dir, "kubelet-client")? {
            Some(existing) if !expires_soon(&existing.cert_pem) => Ok(existing),
            _ => {
                let issued =
                    self.issue_client("kube-apiserver-kubelet-client", &["system:masters"])?;
                files::write_pair(&self.dir, "kubelet-client", &issued)?;
                Ok(issued)
            }
        }
    }

    /// Write a kubeconfig for the admin that points at `server_url`.
    pub fn write_admin_kubeconfig(&self, path: &Path, server_url: &str) -> Result<(), Error> {
        let config = Kubeconfig::new(server_url, &self.ca.cert_pem, &self.admin);
        files::write_private(path, config.to_yaml().as_bytes())
    }
}

fn serving_sans(options: &PkiOptions) -> BTreeSet<String> {
    let mut sans: BTreeSet<String> = BUILTIN_DNS_SANS.iter().map(|s| (*s).to_owned()).collect();
    sans.insert("127.0.0.1".into());
    sans.insert("::1".into());
    sans.extend(options.ip_sans.iter().map(IpAddr::to_string));
    sans.extend(
        options
            .extra_sans
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
    );
    sans
}

fn random_hex() -> String {
    let bytes: [u8; 16] = rand::random();
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = std::time::SystemTime::now();
    // Backdate a little so a peer with a slightly slow clock accepts the certificate.
    params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    params.not_after = (now + std::time::Duration::from_secs(days as u64 * 86_400)).into();
}

fn issue_ca() -> Result<CertifiedKey, Error> {
    let err = |source| Error::Issue { what: "CA", source };
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("skiff-ca@{}", unix_now()));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_VALIDITY_DAYS);
    let cert = params.self_signed(&key).map_err(err)?;
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn load_issuer(dir: &Path, ca: &CertifiedKey) -> Result<Issuer<'static, KeyPair>, Error> {
    let bad = |reason: String| Error::BadPem {
        path: dir.join("ca.key"),
        reason,
    };
    let key = KeyPair::from_pem(&ca.key_pem).map_err(|e| bad(e.to_string()))?;
    Issuer::from_ca_cert_pem(&ca.cert_pem, key).map_err(|e| bad(e.to_string()))
}

fn issue_serving(
    issuer: &Issuer<'_, KeyPair>,
    sans: &BTreeSet<String>,
) -> Result<CertifiedKey, Error> {
    issue_serving_named(issuer, "kube-apiserver", sans)
}

fn issue_serving_named(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    sans: &BTreeSet<String>,
) -> Result<CertifiedKey, Error> {
    let err = |source| Error::Issue {
        what: "serving",
        source,
    };
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    for san in sans {
        params.subject_alt_names.push(match san.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(san.clone().try_into().map_err(err)?),
        });
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut params, LEAF_VALIDITY_DAYS);
    let cert = params.signed_by(&key, issuer).map_err(err)?;
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn issue_client(
    issuer: &Issuer<'_, KeyPair>,
    user: &str,
    groups: &[&str],
) -> Result<CertifiedKey, Error> {
    let err = |source| Error::Issue {
        what: "client",
        source,
    };
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for group in groups {
        dn.push(DnType::OrganizationName, *group);
    }
    dn.push(DnType::CommonName, user);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, LEAF_VALIDITY_DAYS);
    let cert = params.signed_by(&key, issuer).map_err(err)?;
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether a stored serving certificate still covers every wanted name and is not near expiry.
fn serving_is_current(existing: &CertifiedKey, wanted: &BTreeSet<String>) -> bool {
    if expires_soon(&existing.cert_pem) {
        return false;
    }
    match tls::certificate_sans(&existing.cert_pem) {
        Some(have) => wanted.is_subset(&have),
        None => false,
    }
}

fn expires_soon(cert_pem: &str) -> bool {
    match tls::not_after_unix(cert_pem) {
        Some(not_after) => not_after - unix_now() < RENEW_BEFORE_DAYS * 86_400,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> PkiOptions {
        PkiOptions {
            extra_sans: vec!["skiff.example".into()],
            ip_sans: vec!["10.43.0.1".parse().unwrap()],
        }
    }

    #[test]
    fn restart_reuses_ca_credentials_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::load_or_create(dir.path(), &options()).unwrap();
        let second = Pki::load_or_create(dir.path(), &options()).unwrap();
        assert_eq!(first.ca_pem(), second.ca_pem());
        assert_eq!(first.admin().cert_pem, second.admin().cert_pem);
        assert_eq!(first.serving().cert_pem, second.serving().cert_pem);
        assert_eq!(first.admin_token(), second.admin_token());
        assert_eq!(first.join_token(), second.join_token());
        assert!(first.join_token().starts_with("K10"));
        assert!(first.join_token().contains("::server:"));
    }

    #[test]
    fn serving_certificate_covers_required_names_and_is_reissued_for_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::load_or_create(dir.path(), &options()).unwrap();
        let sans = tls::certificate_sans(&first.serving().cert_pem).unwrap();
        for name in [
            "localhost",
            "127.0.0.1",
            "kubernetes",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "10.43.0.1",
            "skiff.example",
        ] {
            assert!(sans.contains(name), "{name} missing from {sans:?}");
        }
        let mut more = options();
        more.extra_sans.push("other.example".into());
        let second = Pki::load_or_create(dir.path(), &more).unwrap();
        assert_ne!(first.serving().cert_pem, second.serving().cert_pem);
        assert_eq!(first.ca_pem(), second.ca_pem());
        assert!(
            tls::certificate_sans(&second.serving().cert_pem)
                .unwrap()
                .contains("other.example")
        );
    }

    #[test]
    fn admin_certificate_carries_user_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &options()).unwrap();
        let der = tls::pem_to_der(&pki.admin().cert_pem).unwrap();
        let identity = parse_client_identity(&der).unwrap();
        assert_eq!(identity.user, "system:admin");
        assert_eq!(identity.groups, vec!["system:masters".to_owned()]);

        let node = pki
            .issue_client("system:node:n1", &["system:nodes"])
            .unwrap();
        let identity = parse_client_identity(&tls::pem_to_der(&node.cert_pem).unwrap()).unwrap();
        assert_eq!(identity.user, "system:node:n1");
        assert_eq!(identity.groups, vec!["system:nodes".to_owned()]);
    }

    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &options()).unwrap();
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        pki.write_admin_kubeconfig(&kubeconfig, "https://127.0.0.1:6443")
            .unwrap();
        for path in [
            kubeconfig,
            dir.path().join("tls/ca.key"),
            dir.path().join("tls/admin.token"),
            dir.path().join("token"),
        ] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
        }
    }

    #[test]
    fn server_config_builds_with_alpn() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &options()).unwrap();
        let config = server_config(&pki).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
