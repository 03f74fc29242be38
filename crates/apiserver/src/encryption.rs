//! Encryption at rest: upstream's `EncryptionConfiguration` file
//! (`--encryption-provider-config`), applied as a [`Store`] wrapper so every read and write of
//! the chosen resources passes through it, whichever backend holds the bytes.
//!
//! For each listed resource the first provider encrypts new writes; every provider (and every
//! key of each) can decrypt, recognised by the `k8s:enc:<provider>:v1:<key name>:` prefix
//! upstream writes; `identity` reads values stored in plain text. A value read with anything
//! but the first provider's first key is marked stale, so an update that changes nothing
//! still rewrites it: rotating a key is adding it first, then `kubectl get secrets -A -o json
//! | kubectl replace -f -`, then dropping the old key.
//!
//! Ciphertexts are upstream's: `aesgcm` is a 12-byte random nonce then AES-GCM with the
//! store key as authenticated data (a value moved to another key fails to decrypt);
//! `aescbc` a 16-byte random IV then AES-CBC with PKCS#7 padding; `secretbox` a 24-byte
//! random nonce then XSalsa20-Poly1305. (upstream: k8s.io/apiserver/pkg/storage/value and
//! pkg/server/options/encryptionconfig.)

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;
use skiff_store::{
    Error, Event, KeyValue, RangeRequest, RangeResponse, Result, Revision, SnapshotFormat, Store,
    Watch,
};
use tokio::sync::mpsc;

const NONCE_GCM: usize = 12;
const IV_CBC: usize = 16;
const NONCE_SECRETBOX: usize = 24;

/// Why an encryption configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path} failed")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid EncryptionConfiguration.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

#[derive(Clone)]
enum Cipher {
    Gcm(CipherKey),
    Cbc(CipherKey),
    Secretbox([u8; 32]),
}

#[derive(Clone)]
enum CipherKey {
    K128([u8; 16]),
    K192([u8; 24]),
    K256([u8; 32]),
}

impl CipherKey {
    fn new(bytes: &[u8]) -> Option<CipherKey> {
        Some(match bytes.len() {
            16 => CipherKey::K128(bytes.try_into().ok()?),
            24 => CipherKey::K192(bytes.try_into().ok()?),
            32 => CipherKey::K256(bytes.try_into().ok()?),
            _ => return None,
        })
    }
}

/// One named key of a provider, with the prefix its values carry.
#[derive(Clone)]
struct NamedKey {
    prefix: Vec<u8>,
    cipher: Cipher,
}

/// A configured provider: `identity`, or an encrypting one with its keys.
#[derive(Clone)]
enum Provider {
    Identity,
    Encrypting(Vec<NamedKey>),
}

/// The providers of one resource.
#[derive(Clone)]
struct Rule {
    /// Store key prefix of the resource (`/registry/core/secrets/`), or of a group or every
    /// resource for wildcards.
    prefix: String,
    providers: Vec<Provider>,
}

fn random<const N: usize>() -> [u8; N] {
    rand::random()
}

fn encrypt(cipher: &Cipher, plaintext: &[u8], key: &[u8]) -> Vec<u8> {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    match cipher {
        Cipher::Gcm(k) => {
            let nonce: [u8; NONCE_GCM] = random();
            let payload = Payload {
                msg: plaintext,
                aad: key,
            };
            let sealed = match k {
                CipherKey::K128(k) => {
                    aes_gcm::Aes128Gcm::new(k.into()).encrypt((&nonce).into(), payload)
                }
                CipherKey::K192(k) => {
                    aes_gcm::AesGcm::<aes::Aes192, aes_gcm::aead::consts::U12>::new(k.into())
                        .encrypt((&nonce).into(), payload)
                }
                CipherKey::K256(k) => {
                    aes_gcm::Aes256Gcm::new(k.into()).encrypt((&nonce).into(), payload)
                }
            }
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
            [nonce.as_slice(), &sealed].concat()
        }
        Cipher::Cbc(k) => {
            use cbc::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
            let iv: [u8; IV_CBC] = random();
            let sealed = match k {
                CipherKey::K128(k) => cbc::Encryptor::<aes::Aes128>::new(k.into(), (&iv).into())
                    .encrypt_padded_vec_mut::<Pkcs7>(plaintext),
                CipherKey::K192(k) => cbc::Encryptor::<aes::Aes192>::new(k.into(), (&iv).into())
                    .encrypt_padded_vec_mut::<Pkcs7>(plaintext),
                CipherKey::K256(k) => cbc::Encryptor::<aes::Aes256>::new(k.into(), (&iv).into())
                    .encrypt_padded_vec_mut::<Pkcs7>(plaintext),
            };
            [iv.as_slice(), &sealed].concat()
        }
        Cipher::Secretbox(k) => {
            use crypto_secretbox::aead::{Aead, KeyInit};
            let nonce: [u8; NONCE_SECRETBOX] = random();
            let sealed = crypto_secretbox::XSalsa20Poly1305::new(k.into())
                .encrypt((&nonce).into(), plaintext)
                .expect("secretbox encryption of an in-memory buffer cannot fail");
            [nonce.as_slice(), &sealed].concat()
        }
    }
}

fn decrypt(cipher: &Cipher, data: &[u8], key: &[u8]) -> Option<Vec<u8>> {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    match cipher {
        Cipher::Gcm(k) => {
            if data.len() < NONCE_GCM {
                return None;
            }
            let (nonce, sealed) = data.split_at(NONCE_GCM);
            let payload = Payload {
                msg: sealed,
                aad: key,
            };
            match k {
                CipherKey::K128(k) => {
                    aes_gcm::Aes128Gcm::new(k.into()).decrypt(nonce.into(), payload)
                }
                CipherKey::K192(k) => {
                    aes_gcm::AesGcm::<aes::Aes192, aes_gcm::aead::consts::U12>::new(k.into())
                        .decrypt(nonce.into(), payload)
                }
                CipherKey::K256(k) => {
                    aes_gcm::Aes256Gcm::new(k.into()).decrypt(nonce.into(), payload)
                }
            }
            .ok()
        }
        Cipher::Cbc(k) => {
            use cbc::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
            if data.len() < IV_CBC {
                return None;
            }
            let (iv, sealed) = data.split_at(IV_CBC);
            match k {
                CipherKey::K128(k) => cbc::Decryptor::<aes::Aes128>::new(k.into(), iv.into())
                    .decrypt_padded_vec_mut::<Pkcs7>(sealed),
                CipherKey::K192(k) => cbc::Decryptor::<aes::Aes192>::new(k.into(), iv.into())
                    .decrypt_padded_vec_mut::<Pkcs7>(sealed),
                CipherKey::K256(k) => cbc::Decryptor::<aes::Aes256>::new(k.into(), iv.into())
                    .decrypt_padded_vec_mut::<Pkcs7>(sealed),
            }
            .ok()
        }
        Cipher::Secretbox(k) => {
            use crypto_secretbox::aead::{Aead, KeyInit};
            if data.len() < NONCE_SECRETBOX {
                return None;
            }
            let (nonce, sealed) = data.split_at(NONCE_SECRETBOX);
            crypto_secretbox::XSalsa20Poly1305::new(k.into())
                .decrypt(nonce.into(), sealed)
                .ok()
        }
    }
}

impl Rule {
    fn write(&self, key: &str, value: Bytes) -> Bytes {
        match self.providers.first() {
            Some(Provider::Encrypting(keys)) => {
                let first = &keys[0];
                let mut out = first.prefix.clone();
                out.extend_from_slice(&encrypt(&first.cipher, &value, key.as_bytes()));
                Bytes::from(out)
            }
            _ => value,
        }
    }

    /// The plaintext of a stored value and whether it is stale.
    fn read(&self, key: &str, value: &[u8]) -> Result<(Bytes, bool)> {
        let mut first = true;
        for provider in &self.providers {
            if let Provider::Encrypting(keys) = provider {
                for named in keys {
                    if let Some(data) = value.strip_prefix(named.prefix.as_slice()) {
                        let plain =
                            decrypt(&named.cipher, data, key.as_bytes()).ok_or_else(|| {
                                Error::Corrupt {
                                    detail: format!(
                                        "{key}: cannot decrypt with key {:?}",
                                        String::from_utf8_lossy(&named.prefix)
                                    ),
                                }
                            })?;
                        return Ok((Bytes::from(plain), !first));
                    }
                    first = false;
                }
            } else {
                first = false;
            }
        }
        if value.starts_with(b"k8s:enc:") {
            return Err(Error::Corrupt {
                detail: format!("{key}: encrypted with a key that is not configured"),
            });
        }
        let identity_first = matches!(self.providers.first(), Some(Provider::Identity));
        if self
            .providers
            .iter()
            .any(|p| matches!(p, Provider::Identity))
        {
            return Ok((Bytes::copy_from_slice(value), !identity_first));
        }
        Err(Error::Corrupt {
            detail: format!("{key}: stored unencrypted and no identity provider is configured"),
        })
    }
}

/// The parsed configuration: which key prefixes get which providers.
#[derive(Clone)]
pub struct EncryptionConfig {
    rules: Vec<Rule>,
}

impl std::fmt::Debug for EncryptionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys.
        f.debug_struct("EncryptionConfig")
            .field(
                "prefixes",
                &self.rules.iter().map(|r| &r.prefix).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The store key prefix for a resource name of the configuration (`secrets`,
/// `deployments.apps`, `*.apps`, `*.`, `*.*`).
fn resource_prefix(name: &str) -> std::result::Result<String, ConfigError> {
    let (resource, group) = name.split_once('.').unwrap_or((name, ""));
    if resource.is_empty() {
        return Err(invalid(format!("resource {name:?} is empty")));
    }
    let group = if group.is_empty() { "core" } else { group };
    Ok(match (resource, group) {
        ("*", "*") => "/registry/".to_owned(),
        ("*", group) => format!("/registry/{group}/"),
        (_, "*") => {
            return Err(invalid(format!(
                "resource {name:?}: only \"*.*\" and \"*.<group>\" wildcards are allowed"
            )));
        }
        (resource, group) => format!("/registry/{group}/{resource}/"),
    })
}

fn parse_keys(
    provider: &str,
    body: &Value,
    make: impl Fn(&[u8]) -> Option<Cipher>,
    sizes: &str,
) -> std::result::Result<Provider, ConfigError> {
    let keys = body
        .get("keys")
        .and_then(Value::as_array)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| invalid(format!("{provider}: keys: at least one key is required")))?;
    let mut named = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let name = key
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty() && !n.contains(':'))
            .ok_or_else(|| invalid(format!("{provider}: keys[{i}].name: required, without ':'")))?;
        let secret = key
            .get("secret")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("{provider}: keys[{i}].secret: required")))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .map_err(|_| invalid(format!("{provider}: keys[{i}].secret: not valid base64")))?;
        let cipher = make(&bytes).ok_or_else(|| {
            invalid(format!(
                "{provider}: keys[{i}].secret: must be {sizes} bytes, got {}",
                bytes.len()
            ))
        })?;
        named.push(NamedKey {
            prefix: format!("k8s:enc:{provider}:v1:{name}:").into_bytes(),
            cipher,
        });
    }
    Ok(Provider::Encrypting(named))
}

fn parse_provider(provider: &Value) -> std::result::Result<Provider, ConfigError> {
    let map = provider
        .as_object()
        .filter(|m| m.len() == 1)
        .ok_or_else(|| {
            invalid("each provider must name exactly one of aesgcm, aescbc, secretbox, identity")
        })?;
    let (kind, body) = map.iter().next().expect("one entry checked above");
    match kind.as_str() {
        "identity" => Ok(Provider::Identity),
        "aesgcm" => parse_keys(
            "aesgcm",
            body,
            |b| CipherKey::new(b).map(Cipher::Gcm),
            "16, 24 or 32",
        ),
        "aescbc" => parse_keys(
            "aescbc",
            body,
            |b| CipherKey::new(b).map(Cipher::Cbc),
            "16, 24 or 32",
        ),
        "secretbox" => parse_keys(
            "secretbox",
            body,
            |b| <[u8; 32]>::try_from(b).ok().map(Cipher::Secretbox),
            "32",
        ),
        "kms" => Err(invalid("kms providers are not supported")),
        other => Err(invalid(format!("unknown provider {other:?}"))),
    }
}

impl EncryptionConfig {
    /// Read and check a configuration file.
    pub fn load(path: &Path) -> std::result::Result<EncryptionConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parse a configuration (YAML or JSON).
    pub fn parse(text: &str) -> std::result::Result<EncryptionConfig, ConfigError> {
        let doc: Value =
            serde_yaml::from_str(text).map_err(|e| invalid(format!("not valid YAML: {e}")))?;
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind != "EncryptionConfiguration" {
            return Err(invalid(format!(
                "kind must be EncryptionConfiguration, got {kind:?}"
            )));
        }
        let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if api_version != "apiserver.config.k8s.io/v1" {
            return Err(invalid(format!(
                "apiVersion must be apiserver.config.k8s.io/v1, got {api_version:?}"
            )));
        }
        let mut rules = Vec::new();
        let resources = doc
            .get("resources")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("resources: required"))?;
        for (i, entry) in resources.iter().enumerate() {
            let names = entry
                .get("resources")
                .and_then(Value::as_array)
                .filter(|r| !r.is_empty())
                .ok_or_else(|| invalid(format!("resources[{i}].resources: required")))?;
            let providers = entry
                .get("providers")
                .and_then(Value::as_array)
                .filter(|p| !p.is_empty())
                .ok_or_else(|| invalid(format!("resources[{i}].providers: required")))?
                .iter()
                .map(parse_provider)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| invalid(format!("resources[{i}].providers: {e}")))?;
            for name in names {
                let name = name.as_str().ok_or_else(|| {
                    invalid(format!("resources[{i}].resources: names are strings"))
                })?;
                rules.push(Rule {
                    prefix: resource_prefix(name)
                        .map_err(|e| invalid(format!("resources[{i}]: {e}")))?,
                    providers: providers.clone(),
                });
            }
        }
        Ok(EncryptionConfig { rules })
    }

    fn rule(&self, key: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| key.starts_with(&r.prefix))
    }

    fn overlaps(&self, prefix: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.prefix.starts_with(prefix) || prefix.starts_with(&r.prefix))
    }

    /// Wrap a store so the configured resources are encrypted in it.
    pub fn wrap(self, inner: Arc<dyn Store>) -> Arc<dyn Store> {
        Arc::new(EncryptedStore {
            inner,
            config: Arc::new(self),
        })
    }

    fn decode(&self, mut kv: KeyValue) -> Result<KeyValue> {
        if let Some(rule) = self.rule(&kv.key) {
            let (value, stale) = rule.read(&kv.key, &kv.value)?;
            kv.value = value;
            kv.stale = stale;
        }
        Ok(kv)
    }

    fn encode(&self, key: &str, value: Bytes) -> Bytes {
        match self.rule(key) {
            Some(rule) => rule.write(key, value),
            None => value,
        }
    }
}

/// A store whose configured resources are encrypted in the inner store.
struct EncryptedStore {
    inner: Arc<dyn Store>,
    config: Arc<EncryptionConfig>,
}

#[async_trait]
impl Store for EncryptedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner
            .get(key)
            .await?
            .map(|kv| self.config.decode(kv))
            .transpose()
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        let mut response = self.inner.range(request).await?;
        response.items = std::mem::take(&mut response.items)
            .into_iter()
            .map(|kv| self.config.decode(kv))
            .collect::<Result<_>>()?;
        Ok(response)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        self.inner.create(key, self.config.encode(key, value)).await
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_revision: Revision,
    ) -> Result<Revision> {
        self.inner
            .update(key, self.config.encode(key, value), expected_revision)
            .await
    }

    async fn delete(
        &self,
        key: &str,
        expected_revision: Option<Revision>,
    ) -> Result<(KeyValue, Revision)> {
        let (kv, revision) = self.inner.delete(key, expected_revision).await?;
        Ok((self.config.decode(kv)?, revision))
    }

    async fn watch(&self, prefix: &str, after_revision: Revision) -> Result<Watch> {
        let mut inner = self.inner.watch(prefix, after_revision).await?;
        if !self.config.overlaps(prefix) {
            return Ok(inner);
        }
        let (tx, rx) = mpsc::channel(inner.events.max_capacity().max(1));
        let config = self.config.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = tx.closed() => return,
                    event = inner.events.recv() => event,
                };
                let Some(event) = event else { return };
                let decoded = (|| -> Result<Event> {
                    Ok(Event {
                        kind: event.kind,
                        kv: config.decode(event.kv)?,
                        prev: event.prev.map(|p| config.decode(p)).transpose()?,
                    })
                })();
                let Ok(decoded) = decoded else {
                    // Ending the watch makes the client re-list, which reports the error.
                    tracing::warn!("a watched value could not be decrypted; ending the watch");
                    return;
                };
                if tx.send(decoded).await.is_err() {
                    return;
                }
            }
        });
        Ok(Watch { events: rx })
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        self.inner.compacted_revision().await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    fn snapshot_format(&self) -> SnapshotFormat {
        self.inner.snapshot_format()
    }

    /// Snapshots hold the ciphertext: a stolen snapshot is no more readable than the disk.
    async fn snapshot(&self, out: mpsc::Sender<Bytes>) -> Result<()> {
        self.inner.snapshot(out).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_store::embedded::{EmbeddedOptions, EmbeddedStore};

    fn key(n: u8, len: usize) -> String {
        base64::engine::general_purpose::STANDARD.encode(vec![n; len])
    }

    fn config(providers: &str) -> EncryptionConfig {
        EncryptionConfig::parse(&format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets, widgets.example.com]\n  providers:\n{providers}"
        ))
        .unwrap()
    }

    #[test]
    fn every_provider_round_trips_with_upstreams_prefix() {
        for (provider, len) in [
            ("aesgcm", 16),
            ("aesgcm", 24),
            ("aesgcm", 32),
            ("aescbc", 32),
            ("aescbc", 16),
            ("secretbox", 32),
        ] {
            let c = config(&format!(
                "  - {provider}: {{keys: [{{name: k1, secret: {}}}]}}\n",
                key(7, len)
            ));
            let rule = c.rule("/registry/core/secrets/ns/s").unwrap();
            let stored = rule.write(
                "/registry/core/secrets/ns/s",
                Bytes::from_static(b"{\"a\":1}"),
            );
            let prefix = format!("k8s:enc:{provider}:v1:k1:");
            assert!(stored.starts_with(prefix.as_bytes()), "{provider}");
            assert!(
                !stored.windows(7).any(|w| w == b"{\"a\":1}"),
                "{provider}: ciphertext"
            );
            let (plain, stale) = rule.read("/registry/core/secrets/ns/s", &stored).unwrap();
            assert_eq!(
                (&plain[..], stale),
                (&b"{\"a\":1}"[..], false),
                "{provider}"
            );
        }
    }

    #[test]
    fn aesgcm_binds_the_value_to_its_key() {
        let c = config(&format!(
            "  - aesgcm: {{keys: [{{name: k1, secret: {}}}]}}\n",
            key(1, 32)
        ));
        let rule = c.rule("/registry/core/secrets/ns/a").unwrap();
        let stored = rule.write("/registry/core/secrets/ns/a", Bytes::from_static(b"x"));
        assert!(rule.read("/registry/core/secrets/ns/b", &stored).is_err());
    }

    #[test]
    fn older_keys_and_identity_read_but_are_stale() {
        let old = config(&format!(
            "  - aescbc: {{keys: [{{name: old, secret: {}}}]}}\n",
            key(1, 32)
        ));
        let stored_old = old
            .rule("/registry/core/secrets/ns/s")
            .unwrap()
            .write("/registry/core/secrets/ns/s", Bytes::from_static(b"v"));
        let rotated = config(&format!(
            "  - aesgcm: {{keys: [{{name: new, secret: {}}}]}}\n  - aescbc: {{keys: [{{name: old, secret: {}}}]}}\n  - identity: {{}}\n",
            key(2, 32),
            key(1, 32)
        ));
        let rule = rotated.rule("/registry/core/secrets/ns/s").unwrap();
        assert_eq!(
            rule.read("/registry/core/secrets/ns/s", &stored_old)
                .unwrap(),
            (Bytes::from_static(b"v"), true)
        );
        assert_eq!(
            rule.read("/registry/core/secrets/ns/s", b"{}").unwrap(),
            (Bytes::from_static(b"{}"), true)
        );
        // Without identity, plaintext is refused; an unknown key is refused.
        let strict = config(&format!(
            "  - aesgcm: {{keys: [{{name: new, secret: {}}}]}}\n",
            key(2, 32)
        ));
        let rule = strict.rule("/registry/core/secrets/ns/s").unwrap();
        assert!(rule.read("/registry/core/secrets/ns/s", b"{}").is_err());
        assert!(
            rule.read("/registry/core/secrets/ns/s", &stored_old)
                .is_err()
        );
        // Other resources are untouched.
        assert!(strict.rule("/registry/core/configmaps/ns/c").is_none());
        assert!(strict.rule("/registry/example.com/widgets/ns/w").is_some());
    }

    #[test]
    fn resource_names_map_to_store_prefixes() {
        assert_eq!(
            resource_prefix("secrets").unwrap(),
            "/registry/core/secrets/"
        );
        assert_eq!(
            resource_prefix("deployments.apps").unwrap(),
            "/registry/apps/deployments/"
        );
        assert_eq!(resource_prefix("*.apps").unwrap(), "/registry/apps/");
        assert_eq!(resource_prefix("*.").unwrap(), "/registry/core/");
        assert_eq!(resource_prefix("*.*").unwrap(), "/registry/");
        assert!(resource_prefix("secrets.*").is_err());
    }

    #[test]
    fn bad_configurations_are_refused_clearly() {
        let base = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n";
        for (text, needle) in [
            (
                "kind: Nope\n".to_owned(),
                "kind must be EncryptionConfiguration",
            ),
            (
                format!(
                    "{base}resources:\n- resources: [secrets]\n  providers:\n  - aesgcm: {{keys: [{{name: k, secret: {}}}]}}\n",
                    key(1, 7)
                ),
                "must be 16, 24 or 32 bytes",
            ),
            (
                format!(
                    "{base}resources:\n- resources: [secrets]\n  providers:\n  - secretbox: {{keys: [{{name: k, secret: '!!'}}]}}\n"
                ),
                "not valid base64",
            ),
            (
                format!(
                    "{base}resources:\n- resources: [secrets]\n  providers:\n  - rot13: {{}}\n"
                ),
                "unknown provider",
            ),
            (
                format!("{base}resources:\n- resources: [secrets]\n  providers:\n  - kms: {{}}\n"),
                "kms providers are not supported",
            ),
            (
                format!("{base}resources:\n- resources: [secrets]\n  providers: []\n"),
                "providers: required",
            ),
        ] {
            let err = EncryptionConfig::parse(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }

    #[tokio::test]
    async fn the_wrapped_store_stores_ciphertext_and_serves_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let raw: Arc<dyn Store> =
            EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let c = config(&format!(
            "  - secretbox: {{keys: [{{name: k, secret: {}}}]}}\n",
            key(3, 32)
        ));
        let store = c.wrap(raw.clone());
        let mut watch = store.watch("/registry/core/secrets/", 0).await.unwrap();
        let r = store
            .create("/registry/core/secrets/ns/s", Bytes::from_static(b"plain"))
            .await
            .unwrap();
        store
            .create(
                "/registry/core/configmaps/ns/c",
                Bytes::from_static(b"open"),
            )
            .await
            .unwrap();
        let stored = raw
            .get("/registry/core/secrets/ns/s")
            .await
            .unwrap()
            .unwrap();
        assert!(stored.value.starts_with(b"k8s:enc:secretbox:v1:k:"));
        assert_eq!(
            raw.get("/registry/core/configmaps/ns/c")
                .await
                .unwrap()
                .unwrap()
                .value,
            Bytes::from_static(b"open")
        );
        assert_eq!(
            store
                .get("/registry/core/secrets/ns/s")
                .await
                .unwrap()
                .unwrap()
                .value,
            Bytes::from_static(b"plain")
        );
        let event = watch.events.recv().await.unwrap();
        assert_eq!(
            (event.kv.value.clone(), event.revision()),
            (Bytes::from_static(b"plain"), r)
        );
        let (deleted, _) = store
            .delete("/registry/core/secrets/ns/s", None)
            .await
            .unwrap();
        assert_eq!(deleted.value, Bytes::from_static(b"plain"));
    }
}
