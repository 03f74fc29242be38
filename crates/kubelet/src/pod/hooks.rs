//! Container lifecycle hooks (postStart, preStop) and the small HTTP client probes and hooks
//! share. Hooks run exec (through the CRI), httpGet or sleep handlers; a failing postStart
//! kills the container, a preStop runs inside the termination grace period.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use k8s_openapi::api::core::v1::{Container, LifecycleHandler};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_cri::{Cri, api};

/// The User-Agent upstream's prober and hook runner send.
pub const USER_AGENT: &str = "kube-probe/1.35";

/// GET `http(s)://host:port/path` and return the status code. Redirects are not followed; TLS
/// certificates are not verified (upstream probes do not verify either).
pub async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    https: bool,
    headers: &[(String, String)],
) -> Result<u16, String> {
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| {
            format!(
                "dial tcp {host}:{port}: connect: {}",
                e.to_string().to_lowercase()
            )
        })?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let mut request = http::Request::builder()
        .method("GET")
        .uri(&path)
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, USER_AGENT)
        .header(http::header::ACCEPT, "*/*");
    for (k, v) in headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let request = request
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let status = if https {
        let config = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify))
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap_or_else(|_| {
            rustls::pki_types::ServerName::try_from("localhost").expect("valid name")
        });
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        send(hyper_util::rt::TokioIo::new(tls), request).await?
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), request).await?
    };
    Ok(status)
}

async fn send<IO>(io: IO, request: http::Request<Empty<bytes::Bytes>>) -> Result<u16, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    // Read (and bound) the body so the connection closes cleanly.
    let _ = tokio::time::timeout(Duration::from_secs(1), response.into_body().collect()).await;
    Ok(status)
}

#[derive(Debug)]
struct NoVerify;

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Run a lifecycle handler against container `container_id` of a pod at `pod_ip`, within
/// `timeout`. Returns the failure message if it failed.
pub async fn run_handler(
    cri: &Cri,
    handler: &LifecycleHandler,
    container: &Container,
    container_id: &str,
    pod_ip: &str,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &handler.exec {
        let r = cri
            .exec_sync(api::ExecSyncRequest {
                container_id: container_id.to_owned(),
                cmd: exec.command.clone().unwrap_or_default(),
                timeout: timeout.as_secs().max(1) as i64,
            })
            .await
            .map_err(|e| e.message())?;
        if r.exit_code != 0 {
            let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
            out.push_str(&String::from_utf8_lossy(&r.stderr));
            return Err(format!(
                "command '{}' exited with {}: {}",
                exec.command.clone().unwrap_or_default().join(" "),
                r.exit_code,
                out.trim_end()
            ));
        }
        return Ok(());
    }
    if let Some(h) = &handler.http_get {
        let port = match &h.port {
            IntOrString::Int(p) => u16::try_from(*p).map_err(|_| "invalid port".to_owned())?,
            IntOrString::String(name) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("couldn't find port: {name}"))?,
        };
        let host = h
            .host
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| pod_ip.to_owned());
        let headers: Vec<(String, String)> = h
            .http_headers
            .iter()
            .flatten()
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect();
        let status = tokio::time::timeout(
            timeout,
            http_get(
                &host,
                port,
                h.path.as_deref().unwrap_or("/"),
                h.scheme.as_deref() == Some("HTTPS"),
                &headers,
            ),
        )
        .await
        .map_err(|_| "timed out".to_owned())??;
        if !(200..400).contains(&status) {
            return Err(format!(
                "HTTP lifecycle hook failed with status code {status}"
            ));
        }
        return Ok(());
    }
    if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(timeout)).await;
        return Ok(());
    }
    Err("lifecycle handler has no action".into())
}
