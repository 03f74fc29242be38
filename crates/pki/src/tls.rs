//! rustls configuration for the API server and the x509 client authenticator.

use std::collections::BTreeSet;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::{Error, Pki};

/// Who a verified client certificate names (upstream: CN is the user, each O a group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name.
    pub user: String,
    /// The groups.
    pub groups: Vec<String>,
}

/// The API server's TLS configuration: its serving certificate, client certificates
/// verified against the cluster CA but optional (bearer tokens and anonymous health checks
/// are authenticated later), ALPN for HTTP/2 and HTTP/1.1.
pub fn server_config(pki: &Pki) -> Result<rustls::ServerConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(pki.ca_pem(), pki)? {
        roots.add(cert)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| Error::Tls(rustls::Error::General(e.to_string())))?;
    let chain = certs(&pki.serving().cert_pem, pki)?;
    let key = rustls_pemfile::private_key(&mut pki.serving().key_pem.as_bytes())
        .ok()
        .flatten()
        .ok_or_else(|| Error::BadPem {
            path: pki.dir().join("serving.key"),
            reason: "no private key".into(),
        })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A server configuration that requires client certificates signed by `ca_pem` (the
/// kubelet's API, which only the API server and cluster components call).
pub fn mutual_server_config(
    ca_pem: &str,
    serving: &crate::CertifiedKey,
) -> Result<rustls::ServerConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem_certs(ca_pem)? {
        roots.add(cert)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::Tls(rustls::Error::General(e.to_string())))?;
    let key = rustls_pemfile::private_key(&mut serving.key_pem.as_bytes())
        .ok()
        .flatten()
        .ok_or_else(|| Error::BadPem {
            path: "serving key".into(),
            reason: "no private key".into(),
        })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pem_certs(&serving.cert_pem)?, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client configuration trusting `ca_pem` and presenting `client` (the API server calling
/// kubelets).
pub fn client_config(
    ca_pem: &str,
    client: &crate::CertifiedKey,
) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem_certs(ca_pem)? {
        roots.add(cert)?;
    }
    let key = rustls_pemfile::private_key(&mut client.key_pem.as_bytes())
        .ok()
        .flatten()
        .ok_or_else(|| Error::BadPem {
            path: "client key".into(),
            reason: "no private key".into(),
        })?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(pem_certs(&client.cert_pem)?, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let parsed: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_bytes()).collect();
    match parsed {
        Ok(list) if !list.is_empty() => Ok(list),
        _ => Err(Error::BadPem {
            path: "certificate".into(),
            reason: "no certificate".into(),
        }),
    }
}

fn certs(pem: &str, pki: &Pki) -> Result<Vec<CertificateDer<'static>>, Error> {
    let parsed: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_bytes()).collect();
    match parsed {
        Ok(list) if !list.is_empty() => Ok(list),
        _ => Err(Error::BadPem {
            path: pki.dir().to_owned(),
            reason: "no certificate".into(),
        }),
    }
}

/// The DER bytes of the first certificate in `pem`.
pub(crate) fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .map(|c| c.as_ref().to_vec())
}

/// The user and groups of a client certificate the TLS layer has already verified.
pub fn parse_client_identity(der: &[u8]) -> Result<Identity, Error> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| Error::ClientCertificate(e.to_string()))?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| Error::ClientCertificate("no common name".into()))?
        .to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_owned)
        .collect();
    Ok(Identity { user, groups })
}

/// DNS names and IP addresses in a certificate's subjectAltName.
pub(crate) fn certificate_sans(pem: &str) -> Option<BTreeSet<String>> {
    let der = pem_to_der(pem)?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut names = BTreeSet::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(dns) => {
                names.insert((*dns).to_owned());
            }
            GeneralName::IPAddress(bytes) => {
                let ip: Option<std::net::IpAddr> = match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes).ok().map(Into::into),
                    16 => <[u8; 16]>::try_from(*bytes).ok().map(Into::into),
                    _ => None,
                };
                if let Some(ip) = ip {
                    names.insert(ip.to_string());
                }
            }
            _ => {}
        }
    }
    Some(names)
}

/// A certificate's notAfter as Unix seconds.
pub(crate) fn not_after_unix(pem: &str) -> Option<i64> {
    let der = pem_to_der(pem)?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    Some(cert.validity().not_after.timestamp())
}
