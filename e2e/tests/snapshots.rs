//! `skiff snapshot save` against a running server while it takes writes, `skiff snapshot
//! restore` into a new data directory (every object back, revisions above the snapshot's,
//! old resourceVersions answered with 410 so clients re-list), refusal of damaged files and
//! non-empty directories, admin-only access, etcd's snapshot API for an etcd-backed server,
//! and scheduled snapshots with retention.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use skiff_testing::{Backend, ServerOptions, TestCluster, skiff};

fn run(args: &[&str]) -> Result<(bool, String, String)> {
    let out = skiff(args)?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn save(c: &TestCluster, file: &Path) -> Result<String> {
    let kubeconfig = c.kubeconfig();
    let (ok, stdout, stderr) = run(&[
        "snapshot",
        "save",
        file.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ])?;
    if !ok {
        bail!("snapshot save failed: {stderr}");
    }
    Ok(stdout)
}

fn names(c: &TestCluster, kind: &str) -> Result<Vec<String>> {
    let list = c.k_json(&["get", kind])?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
        .collect())
}

#[test]
fn save_under_writes_then_restore_into_a_new_cluster() -> Result<()> {
    let c = TestCluster::start_on(Backend::Embedded, &[])?;
    let mut manifest = String::new();
    for i in 0..30 {
        manifest.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: before-{i:02} }}\ndata: {{ i: \"{i}\" }}\n"
        ));
    }
    c.k_stdin(&["apply", "-f", "-"], &manifest)?;
    c.k(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=hunter2",
    ])?;
    let rv_before: i64 = c
        .k(&[
            "get",
            "cm",
            "before-29",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])?
        .parse()?;

    // Writes keep flowing while the snapshot is taken: the server stays online.
    let kubeconfig = c.kubeconfig();
    let writer = std::thread::spawn(move || {
        let mut written = 0;
        for i in 0..15 {
            let ok = std::process::Command::new(skiff_testing::kubectl_binary())
                .env("KUBECONFIG", &kubeconfig)
                .args(["create", "configmap", &format!("during-{i}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            written += usize::from(ok);
        }
        written
    });
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("cluster.snap");
    let saved = save(&c, &file)?;
    assert!(saved.contains("skiff format"), "{saved}");
    assert_eq!(
        writer.join().unwrap(),
        15,
        "writes succeed during the snapshot"
    );
    assert!(!dir.path().join("cluster.snap.part").exists());

    // Bad input changes nothing: garbage, a truncated snapshot, an occupied directory.
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, b"not a snapshot at all")?;
    let target = tempfile::tempdir()?;
    let target_dir = target.path().to_str().unwrap();
    let (ok, _, stderr) = run(&[
        "snapshot",
        "restore",
        garbage.to_str().unwrap(),
        "--data-dir",
        target_dir,
    ])?;
    assert!(!ok && stderr.contains("not a Skiff snapshot"), "{stderr}");
    let truncated = dir.path().join("truncated");
    let bytes = std::fs::read(&file)?;
    std::fs::write(&truncated, &bytes[..bytes.len() - 10])?;
    let (ok, _, stderr) = run(&[
        "snapshot",
        "restore",
        truncated.to_str().unwrap(),
        "--data-dir",
        target_dir,
    ])?;
    assert!(!ok && stderr.contains("damaged"), "{stderr}");
    assert!(!target.path().join("db").join("snapshot").exists());
    let (ok, _, stderr) = run(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        c.data_dir().to_str().unwrap(),
    ])?;
    assert!(!ok, "restoring over a live store is refused: {stderr}");

    // Restore into a fresh data directory sharing the cluster's credentials.
    let tls = c.data_dir().join("tls");
    let snapshot = file.clone();
    let restored = TestCluster::start_server(ServerOptions {
        copy_tls_from: Some(tls),
        before_start: Some(Box::new(move |data_dir: &Path| {
            let (ok, stdout, stderr) = run(&[
                "snapshot",
                "restore",
                snapshot.to_str().unwrap(),
                "--data-dir",
                data_dir.to_str().unwrap(),
            ])?;
            if !ok {
                bail!("restore failed: {stderr}");
            }
            assert!(stdout.contains("restored"), "{stdout}");
            Ok(())
        })),
        ..ServerOptions::default()
    })?;
    let restored_names = names(&restored, "cm")?;
    for i in 0..30 {
        assert!(
            restored_names.contains(&format!("before-{i:02}")),
            "before-{i:02} missing after restore"
        );
    }
    assert_eq!(
        restored.k(&["get", "cm", "before-07", "-o", "jsonpath={.data.i}"])?,
        "7"
    );
    assert_eq!(
        restored.k(&["get", "secret", "creds", "-o", "jsonpath={.data.password}"])?,
        "aHVudGVyMg=="
    );
    // No phantom objects: whatever of the concurrent writes is there was really written.
    let original_names = names(&c, "cm")?;
    assert!(restored_names.iter().all(|n| original_names.contains(n)));
    // Revisions continue far above the snapshot's; a watch from before gets 410 Gone.
    restored.k(&["create", "configmap", "after-restore"])?;
    let rv_after: i64 = restored
        .k(&[
            "get",
            "cm",
            "after-restore",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])?
        .parse()?;
    assert!(
        rv_after > rv_before + 1_000_000,
        "{rv_after} vs {rv_before}"
    );
    let watch = restored.k(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv_before}&timeoutSeconds=1"),
    ])?;
    let first: Value = serde_json::from_str(watch.lines().next().context("an event")?)?;
    assert_eq!(first["type"], "ERROR", "{watch}");
    assert_eq!(first["object"]["code"], 410, "{watch}");
    Ok(())
}

#[test]
fn only_admins_may_read_snapshots() -> Result<()> {
    let c = TestCluster::start_on(Backend::Embedded, &[])?;
    c.k(&["create", "serviceaccount", "viewer"])?;
    let token = c.k(&["create", "token", "viewer"])?;
    let out = c.kubectl(&[
        "get",
        "--raw",
        "/skiff/v1/snapshot",
        "--token",
        token.trim(),
    ])?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Forbidden") || stderr.contains("forbidden"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn etcd_backed_servers_save_through_etcds_snapshot_api() -> Result<()> {
    let c = TestCluster::start_on(Backend::Etcd, &[])?;
    c.k(&["create", "configmap", "in-etcd", "--from-literal=k=v"])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("etcd.db");
    let saved = save(&c, &file)?;
    assert!(saved.contains("etcd format"), "{saved}");
    let bytes = std::fs::read(&file)?;
    assert!(
        bytes
            .windows(b"/registry/core/configmaps/default/in-etcd".len())
            .any(|w| w == b"/registry/core/configmaps/default/in-etcd"),
        "the etcd database holds the object's key"
    );
    // It is etcd's format, not Skiff's: restore says how to use it instead.
    let target = tempfile::tempdir()?;
    let (ok, _, stderr) = run(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        target.path().to_str().unwrap(),
    ])?;
    assert!(
        !ok && stderr.contains("etcdctl snapshot restore"),
        "{stderr}"
    );
    Ok(())
}

fn scheduled(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("skiff-snapshot-") && !n.ends_with(".part"))
        })
        .collect();
    files.sort();
    Ok(files)
}

#[test]
fn scheduled_snapshots_keep_the_newest_few() -> Result<()> {
    let snapshots = tempfile::tempdir()?;
    let c = TestCluster::start_on(
        Backend::Embedded,
        &[
            "--snapshot-schedule",
            "@every 1s",
            "--snapshot-retention",
            "2",
            "--snapshot-dir",
            snapshots.path().to_str().unwrap(),
        ],
    )?;
    c.k(&["create", "configmap", "scheduled"])?;
    let deadline = Instant::now() + Duration::from_secs(20);
    // Wait for a snapshot taken after the write, and for retention to have pruned.
    loop {
        let files = scheduled(snapshots.path())?;
        if files.len() == 2 {
            let newest = files.last().unwrap().clone();
            let target = tempfile::tempdir()?;
            let (ok, stdout, stderr) = run(&[
                "snapshot",
                "restore",
                newest.to_str().unwrap(),
                "--data-dir",
                target.path().to_str().unwrap(),
            ])?;
            assert!(ok, "{stderr}");
            let keys: usize = stdout
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if keys > 0 {
                // Later rounds keep pruning to two.
                std::thread::sleep(Duration::from_millis(2500));
                let files = scheduled(snapshots.path())?;
                assert_eq!(files.len(), 2, "retention keeps 2: {files:?}");
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "no scheduled snapshots: {:?}\n{}",
                scheduled(snapshots.path())?,
                c.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
