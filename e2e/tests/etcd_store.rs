//! `skiff server --store etcd://...` against a real etcd the test starts: kubectl CRUD,
//! watches replayed from a resourceVersion, consistent pagination, optimistic-concurrency
//! conflicts, restarts (the data lives in etcd, under upstream's key layout), and etcd over
//! TLS with client certificates, and health endpoints that follow etcd. (The whole e2e suite also runs on etcd with
//! `SKIFF_TEST_STORE=etcd`, which `scripts/test.sh` does.)

use anyhow::Result;
use serde_json::Value;
use skiff_store::Store;
use skiff_testing::etcd::EtcdCluster;
use skiff_testing::{Backend, TestCluster};

fn rv(c: &TestCluster, what: &[&str]) -> Result<i64> {
    let mut args = vec!["get"];
    args.extend(what);
    args.extend(["-o", "jsonpath={.metadata.resourceVersion}"]);
    Ok(c.k(&args)?.parse()?)
}

#[test]
fn kubectl_crud_watch_pagination_and_conflicts_on_etcd() -> Result<()> {
    let mut c = TestCluster::start_on(Backend::Etcd, &[])?;
    c.k(&["create", "configmap", "app", "--from-literal=color=blue"])?;
    let created = rv(&c, &["cm", "app"])?;

    // A stale resourceVersion conflicts, exactly as on the embedded store.
    let mut stale = c.k_json(&["get", "cm", "app"])?;
    c.k(&["patch", "cm", "app", "-p", r#"{"data":{"color":"green"}}"#])?;
    stale["data"]["color"] = Value::from("red");
    let out = c.kubectl_stdin(&["replace", "-f", "-"], Some(&stale.to_string()))?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the object has been modified"), "{stderr}");
    assert_eq!(
        c.k(&["get", "cm", "app", "-o", "jsonpath={.data.color}"])?,
        "green"
    );

    // Consistent pagination: the second page is read at the first page's revision.
    let mut manifest = String::new();
    for i in 0..25 {
        manifest.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: cm-{i:02}, namespace: default }}\n"
        ));
    }
    c.k_stdin(&["apply", "-f", "-"], &manifest)?;
    let page: Value = serde_json::from_str(&c.k(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?limit=10&labelSelector=",
    ])?)?;
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    let token = page["metadata"]["continue"].as_str().unwrap().to_owned();
    assert!(page["metadata"]["remainingItemCount"].as_i64().unwrap() >= 15);
    c.k(&["delete", "cm", "cm-15"])?;
    let page2: Value = serde_json::from_str(&c.k(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?limit=100&continue={token}"),
    ])?)?;
    assert_eq!(
        page2["metadata"]["resourceVersion"],
        page["metadata"]["resourceVersion"]
    );
    assert!(
        page2["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["metadata"]["name"] == "cm-15"),
        "the deletion after the first page is not visible at its revision"
    );
    let chunked = c.k(&["get", "cm", "-o", "name", "--chunk-size=7"])?;
    assert_eq!(
        chunked
            .lines()
            .filter(|l| l.starts_with("configmap/cm-"))
            .count(),
        24
    );

    // A watch from a resourceVersion replays every later change in order.
    let from = rv(&c, &["cm", "app"])?;
    assert!(from > created);
    c.k(&["label", "cm", "app", "tier=web"])?;
    c.k(&["delete", "cm", "app"])?;
    let events = c.k(&[
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={from}&timeoutSeconds=1"
        ),
    ])?;
    let kinds: Vec<String> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["object"]["metadata"]["name"] == "app")
        .map(|e| e["type"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(kinds, ["MODIFIED", "DELETED"], "{events}");
    let revisions: Vec<i64> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()?
                .parse()
                .ok()
        })
        .collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{events}");

    // Restarting (or killing) the server loses nothing: the data lives in etcd.
    c.kill()?;
    c.restart()?;
    assert_eq!(
        c.k(&["get", "cm", "cm-00", "-o", "name"])?.trim(),
        "configmap/cm-00"
    );
    assert!(rv(&c, &["cm", "cm-00"])? > 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_use_upstreams_key_layout_in_etcd() -> Result<()> {
    let c = tokio::task::spawn_blocking(|| TestCluster::start_on(Backend::Etcd, &[])).await??;
    let c = tokio::task::spawn_blocking(move || -> Result<TestCluster> {
        c.k(&["create", "configmap", "layout", "--from-literal=k=v"])?;
        Ok(c)
    })
    .await??;
    let etcd = c.etcd().unwrap();
    let store = skiff_store::etcd::EtcdStore::connect(skiff_store::etcd::EtcdOptions {
        endpoints: etcd.endpoints(),
        compaction_interval: std::time::Duration::ZERO,
        ..Default::default()
    })
    .await?;
    let kv = store
        .get("/registry/core/configmaps/default/layout")
        .await?
        .expect("the ConfigMap is stored under /registry/<group>/<plural>/<ns>/<name>");
    let stored: Value = serde_json::from_slice(&kv.value)?;
    assert_eq!(stored["data"]["k"], "v");
    assert!(
        store
            .get("/registry/core/namespaces/kube-system")
            .await?
            .is_some()
    );
    Ok(())
}

#[test]
fn etcd_over_tls_with_client_certificates() -> Result<()> {
    let etcd = EtcdCluster::start_members(1, true)?;
    let tls = etcd.tls().unwrap().clone();
    let flags = vec![
        "--store".to_owned(),
        etcd.store_url(),
        "--store-cafile".to_owned(),
        tls.ca_file.display().to_string(),
        "--store-certfile".to_owned(),
        tls.client_cert.display().to_string(),
        "--store-keyfile".to_owned(),
        tls.client_key.display().to_string(),
        "--store-prefix".to_owned(),
        "/tenant-a".to_owned(),
    ];
    let c = TestCluster::start_flags(flags, Some(etcd))?;
    c.k(&["create", "secret", "generic", "s", "--from-literal=a=b"])?;
    assert_eq!(
        c.k(&["get", "secret", "s", "-o", "jsonpath={.data.a}"])?,
        "Yg=="
    );
    Ok(())
}

#[test]
fn bad_store_flags_are_refused_with_clear_errors() -> Result<()> {
    let bin = skiff_testing::skiff_binary();
    let dir = tempfile::tempdir()?;
    for (args, needle) in [
        (vec!["--store", "mysql://db:3306"], "--store:"),
        (vec!["--store", "etcd://nohostport"], "is not host:port"),
        (
            vec!["--store-cafile", "/nonexistent/ca.pem"],
            "only apply to --store etcd://",
        ),
        (
            vec!["--store", "etcd://127.0.0.1:1", "--store-certfile", "/x"],
            "must be given together",
        ),
    ] {
        let out = std::process::Command::new(&bin)
            .arg("server")
            .arg("--data-dir")
            .arg(dir.path())
            .args(&args)
            .output()?;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    Ok(())
}

#[test]
fn health_endpoints_follow_the_store() -> Result<()> {
    let mut c = TestCluster::start_on(Backend::Etcd, &[])?;
    assert_eq!(c.k(&["get", "--raw", "/readyz"])?, "ok");
    assert_eq!(
        c.k(&["get", "--raw", "/readyz?verbose"])?,
        "[+]ping ok\n[+]etcd ok\n[+]poststarthook/bootstrap-controller ok\n\
         [+]shutdown ok\nreadyz check passed\n"
    );
    let livez = c.k(&["get", "--raw", "/livez?verbose&exclude=etcd&exclude=nope"])?;
    assert!(livez.contains("[+]etcd excluded: ok\n"), "{livez}");
    assert!(!livez.contains("shutdown"), "{livez}");
    assert!(
        livez.contains("warn: some health checks cannot be excluded: no matches for \"nope\""),
        "{livez}"
    );
    assert!(livez.ends_with("livez check passed\n"), "{livez}");
    assert_eq!(c.k(&["get", "--raw", "/readyz/etcd"])?, "ok");
    assert_eq!(c.k(&["get", "--raw", "/healthz/ping"])?, "ok");
    // Shutting down is a readiness matter only.
    let missing = c.k_fail(&["get", "--raw", "/livez/shutdown"])?;
    assert!(missing.contains("NotFound"), "{missing}");

    // With etcd gone the server is neither ready nor live; the public endpoints withhold the
    // reason, the named check gives it.
    let etcd = c.etcd_mut().expect("the cluster runs on etcd");
    etcd.kill(0)?;
    let failed = c.k_fail(&["get", "--raw", "/readyz"])?;
    assert!(
        failed.contains("[+]ping ok") && failed.contains("[-]etcd failed: reason withheld"),
        "{failed}"
    );
    assert!(failed.contains("readyz check failed"), "{failed}");
    let failed = c.k_fail(&["get", "--raw", "/livez?exclude=etcd"]);
    assert!(
        failed.is_err(),
        "excluding the failing check passes: {failed:?}"
    );
    let reason = c.k_fail(&["get", "--raw", "/readyz/etcd"])?;
    assert!(reason.contains("internal server error"), "{reason}");

    c.etcd_mut().expect("the cluster runs on etcd").restart(0)?;
    skiff_testing::eventually("ready again", std::time::Duration::from_secs(30), || {
        Ok(c.k(&["get", "--raw", "/readyz"])
            .is_ok_and(|out| out == "ok"))
    })?;
    Ok(())
}
