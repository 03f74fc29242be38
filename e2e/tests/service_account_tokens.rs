//! `kubectl create token`: TokenRequest issues signed, audience-bound service-account tokens
//! that authenticate to the API server on their own, and bad requests are refused.

use anyhow::Result;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use skiff_testing::TestCluster;

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWS has three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[test]
fn create_token_issues_tokens_that_authenticate() -> Result<()> {
    let c = TestCluster::start()?;
    c.k(&["create", "serviceaccount", "app"])?;
    let token = c.k(&["create", "token", "app", "--duration=20m"])?;
    let token = token.trim();
    let cl = claims(token);
    assert_eq!(cl["sub"], "system:serviceaccount:default:app");
    assert_eq!(cl["kubernetes.io"]["serviceaccount"]["name"], "app");
    let uid = c.k(&["get", "sa", "app", "-o", "jsonpath={.metadata.uid}"])?;
    assert_eq!(cl["kubernetes.io"]["serviceaccount"]["uid"], uid.as_str());
    assert_eq!(
        cl["exp"].as_i64().unwrap() - cl["iat"].as_i64().unwrap(),
        1200
    );

    // The token alone (no client certificate) gets through.
    let ca = c.data_dir().join("tls").join("ca.crt");
    let bare = |token: &str| -> Result<std::process::Output> {
        c.kubectl_with(
            &[
                "--kubeconfig=/dev/null",
                &format!("--server={}", c.url()),
                &format!("--certificate-authority={}", ca.display()),
                &format!("--token={token}"),
                "get",
                "namespaces",
                "-o",
                "name",
            ],
            None,
            &[],
        )
    };
    let out = bare(token)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("namespace/default"));

    // A token with a forged payload is rejected.
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged_payload = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&serde_json::json!({ "sub": "system:serviceaccount:kube-system:root", "iss": cl["iss"], "aud": cl["aud"], "exp": cl["exp"], "nbf": cl["nbf"] }))?,
    );
    parts[1] = &forged_payload;
    let out = bare(&parts.join("."))?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized")
            || String::from_utf8_lossy(&out.stderr).contains("credentials"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Bad requests: too short, unknown account, bad bound object kind.
    let out = c.kubectl(&["create", "token", "app", "--duration=1m"])?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("less than 10 minutes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.kubectl(&["create", "token", "ghost"])?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.kubectl(&[
        "create",
        "token",
        "app",
        "--bound-object-kind=Pod",
        "--bound-object-name=missing",
    ])?;
    assert!(!out.status.success());
    Ok(())
}
