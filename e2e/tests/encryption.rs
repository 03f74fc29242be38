//! Encryption at rest with an upstream EncryptionConfiguration, on etcd so the test reads the
//! raw stored bytes while the server runs: values of the named kinds are ciphertext with
//! upstream's `k8s:enc:<provider>:v1:<key>:` prefix, kubectl reads plaintext, data written
//! before encryption stays readable through `identity`, and keys rotate by re-writing every
//! object (`kubectl get -o json | kubectl replace -f -`) until the old key can go.

use std::path::Path;

use anyhow::Result;
use base64::Engine as _;
use skiff_store::Store;
use skiff_testing::{Backend, TestCluster};

fn key(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

fn write_config(path: &Path, providers: &str) -> Result<()> {
    std::fs::write(
        path,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets, configmaps]\n    providers:\n{providers}"
        ),
    )?;
    Ok(())
}

/// The raw bytes etcd holds for `key` (what a stolen disk or backup would show).
fn raw(c: &TestCluster, key: &str) -> Result<Vec<u8>> {
    let endpoints = c.etcd().unwrap().endpoints();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = skiff_store::etcd::EtcdStore::connect(skiff_store::etcd::EtcdOptions {
            endpoints,
            compaction_interval: std::time::Duration::ZERO,
            ..Default::default()
        })
        .await?;
        Ok(store
            .get(key)
            .await?
            .map(|kv| kv.value.to_vec())
            .unwrap_or_default())
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn secrets_are_ciphertext_at_rest_and_keys_rotate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("encryption.yaml");
    let config_arg = config.to_str().unwrap().to_owned();
    let flags = ["--encryption-provider-config", config_arg.as_str()];

    // Before encryption: stored in plain text.
    let mut c = TestCluster::start_on(Backend::Etcd, &[])?;
    c.k(&[
        "create",
        "secret",
        "generic",
        "old",
        "--from-literal=password=plain-old",
    ])?;
    assert!(raw(&c, "/registry/core/secrets/default/old")?.starts_with(b"{"));

    // Turn encryption on, keeping identity to read what is still plain.
    write_config(
        &config,
        &format!(
            "      - aesgcm:\n          keys:\n            - name: key1\n              secret: {}\n      - identity: {{}}\n",
            key(1)
        ),
    )?;
    c.restart_with(&flags)?;
    c.k(&[
        "create",
        "secret",
        "generic",
        "new",
        "--from-literal=password=hunter2",
    ])?;
    c.k(&["create", "configmap", "named", "--from-literal=color=blue"])?;
    let stored = raw(&c, "/registry/core/secrets/default/new")?;
    assert!(
        stored.starts_with(b"k8s:enc:aesgcm:v1:key1:"),
        "{:?}",
        String::from_utf8_lossy(&stored)
    );
    assert!(!contains(&stored, b"hunter2") && !contains(&stored, b"aHVudGVyMg"));
    assert!(
        raw(&c, "/registry/core/configmaps/default/named")?.starts_with(b"k8s:enc:aesgcm:v1:key1:")
    );
    assert!(
        raw(&c, "/registry/core/namespaces/default")?.starts_with(b"{"),
        "other kinds stay plain"
    );
    assert_eq!(
        c.k(&["get", "secret", "new", "-o", "jsonpath={.data.password}"])?,
        "aHVudGVyMg=="
    );
    assert_eq!(
        c.k(&["get", "secret", "old", "-o", "jsonpath={.data.password}"])?,
        "cGxhaW4tb2xk"
    );
    assert_eq!(
        c.k(&["get", "cm", "named", "-o", "jsonpath={.data.color}"])?,
        "blue"
    );
    assert!(
        raw(&c, "/registry/core/secrets/default/old")?.starts_with(b"{"),
        "not rewritten until written"
    );

    // Rotate: key2 first, key1 still readable; re-write everything.
    write_config(
        &config,
        &format!(
            "      - aesgcm:\n          keys:\n            - name: key2\n              secret: {}\n            - name: key1\n              secret: {}\n      - identity: {{}}\n",
            key(2),
            key(1)
        ),
    )?;
    c.restart_with(&flags)?;
    for kind in ["secrets", "configmaps"] {
        let all = c.k(&["get", kind, "-o", "json"])?;
        // (--validate=false: kubectl's client-side validation of a List fetches the
        // protobuf OpenAPI v2 document, which Skiff does not serve yet.)
        c.k_stdin(&["replace", "--validate=false", "-f", "-"], &all)?;
    }
    for key in [
        "/registry/core/secrets/default/old",
        "/registry/core/secrets/default/new",
        "/registry/core/configmaps/default/named",
    ] {
        let stored = raw(&c, key)?;
        assert!(
            stored.starts_with(b"k8s:enc:aesgcm:v1:key2:"),
            "{key}: {:?}",
            String::from_utf8_lossy(&stored[..30.min(stored.len())])
        );
    }

    // Drop key1 and identity: everything still reads.
    write_config(
        &config,
        &format!(
            "      - aesgcm:\n          keys:\n            - name: key2\n              secret: {}\n",
            key(2)
        ),
    )?;
    c.restart_with(&flags)?;
    assert_eq!(
        c.k(&["get", "secret", "old", "-o", "jsonpath={.data.password}"])?,
        "cGxhaW4tb2xk"
    );
    assert_eq!(
        c.k(&["get", "secret", "new", "-o", "jsonpath={.data.password}"])?,
        "aHVudGVyMg=="
    );
    assert_eq!(
        c.k(&["get", "cm", "named", "-o", "jsonpath={.data.color}"])?,
        "blue"
    );
    Ok(())
}

#[test]
fn a_bad_encryption_config_stops_the_server_with_a_clear_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("bad.yaml");
    std::fs::write(
        &config,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm: {keys: [{name: k, secret: c2hvcnQ=}]}\n",
    )?;
    let out = std::process::Command::new(skiff_testing::skiff_binary())
        .args(["server", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--encryption-provider-config")
        .arg(&config)
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("must be 16, 24 or 32 bytes"), "{stderr}");
    Ok(())
}
