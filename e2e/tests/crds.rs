//! A CustomResourceDefinition and its custom resources, end to end with stock kubectl:
//! discovery, printer columns, schema validation and defaulting, status and scale
//! subresources, explain, and cleanup when the definition goes away.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use skiff_testing::TestCluster;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: crontabs
    singular: crontab
    kind: CronTab
    shortNames: [ct]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.labelSelector
    additionalPrinterColumns:
    - name: Spec
      type: string
      jsonPath: .spec.cronSpec
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        description: A CronTab runs a command on a schedule.
        properties:
          spec:
            type: object
            description: What to run and when.
            properties:
              cronSpec:
                type: string
                description: The schedule in cron format.
                pattern: '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'
              image:
                type: string
              replicas:
                type: integer
                minimum: 1
                maximum: 10
                default: 1
            required: [cronSpec]
          status:
            type: object
            properties:
              replicas:
                type: integer
              labelSelector:
                type: string
"#;

fn wait_until(what: &str, mut ok: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ok()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out waiting for {what}")
}

#[test]
fn custom_resources_work_end_to_end() -> Result<()> {
    let c = TestCluster::start()?;
    c.k_stdin(&["apply", "-f", "-"], CRD)?;
    c.k(&[
        "wait",
        "--for=condition=Established",
        "crd/crontabs.stable.example.com",
        "--timeout=20s",
    ])?;
    wait_until("discovery to list crontabs", || {
        Ok(c.k(&["api-resources", "--api-group=stable.example.com"])?
            .contains("crontabs"))
    })?;
    let resources = c.k(&["api-resources", "--api-group=stable.example.com"])?;
    assert!(
        resources.contains("ct") && resources.contains("CronTab"),
        "{resources}"
    );

    c.k_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: stable.example.com/v1
kind: CronTab
metadata: { name: nightly, labels: { team: a } }
spec: { cronSpec: "0 3 * * *", image: busybox }
"#,
    )?;
    // Defaulted from the schema.
    assert_eq!(
        c.k(&["get", "ct", "nightly", "-o", "jsonpath={.spec.replicas}"])?,
        "1"
    );
    let table = c.k(&["get", "crontabs"])?;
    let header = table.lines().next().unwrap_or("");
    for col in ["NAME", "SPEC", "REPLICAS", "AGE"] {
        assert!(header.contains(col), "{table}");
    }
    assert!(table.contains("0 3 * * *"), "{table}");
    assert!(
        c.k(&["get", "all"])?
            .contains("crontab.stable.example.com/nightly")
    );
    assert_eq!(
        c.k(&["get", "ct", "-l", "team=a", "-o", "name"])?.trim(),
        "crontab.stable.example.com/nightly"
    );

    // Schema violations are 422 with the field named, and nothing is stored.
    let out = c.kubectl_stdin(
        &["create", "-f", "-"],
        Some(
            r#"{"apiVersion":"stable.example.com/v1","kind":"CronTab","metadata":{"name":"bad"},"spec":{"cronSpec":"never","replicas":50}}"#,
        ),
    )?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spec.cronSpec"), "{stderr}");
    assert!(stderr.contains("spec.replicas"), "{stderr}");
    assert!(c.k_fail(&["get", "ct", "bad"])?.contains("not found"));

    // Unknown fields: strict validation rejects, the default warns and prunes.
    let unknown = r#"{"apiVersion":"stable.example.com/v1","kind":"CronTab","metadata":{"name":"extra"},"spec":{"cronSpec":"* * * * *","colour":"red"}}"#;
    let out = c.kubectl_stdin(&["create", "--validate=strict", "-f", "-"], Some(unknown))?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));
    c.k_stdin(&["create", "--validate=false", "-f", "-"], unknown)?;
    let extra = c.k_json(&["get", "ct", "extra"])?;
    assert!(extra["spec"].get("colour").is_none(), "pruned: {extra}");

    // Scale and status subresources.
    c.k(&["scale", "ct", "nightly", "--replicas=3"])?;
    assert_eq!(
        c.k(&["get", "ct", "nightly", "-o", "jsonpath={.spec.replicas}"])?,
        "3"
    );
    c.k(&[
        "patch",
        "ct",
        "nightly",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":3,"labelSelector":"team=a"}}"#,
    ])?;
    let scale = c.k(&[
        "get",
        "--raw",
        "/apis/stable.example.com/v1/namespaces/default/crontabs/nightly/scale",
    ])?;
    let scale: serde_json::Value = serde_json::from_str(&scale)?;
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "team=a");
    // Status written through the main resource is ignored.
    c.k(&[
        "patch",
        "ct",
        "nightly",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":9}}"#,
    ])?;
    assert_eq!(
        c.k(&["get", "ct", "nightly", "-o", "jsonpath={.status.replicas}"])?,
        "3"
    );

    let explain = c.k(&["explain", "crontab.spec"])?;
    assert!(explain.contains("cronSpec"), "{explain}");
    assert!(explain.contains("The schedule in cron format"), "{explain}");

    // Deleting the definition deletes its resources and stops serving them.
    c.k(&[
        "delete",
        "crd",
        "crontabs.stable.example.com",
        "--timeout=30s",
    ])?;
    wait_until("crontabs to disappear from discovery", || {
        Ok(!c.k(&["api-resources"])?.contains("crontabs"))
    })?;
    c.k_stdin(&["apply", "-f", "-"], CRD)?;
    c.k(&[
        "wait",
        "--for=condition=Established",
        "crd/crontabs.stable.example.com",
        "--timeout=20s",
    ])?;
    wait_until("crontabs to be served again", || {
        Ok(c.kubectl(&["get", "ct"])?.status.success())
    })?;
    let after = c.k(&["get", "ct", "-o", "name"])?;
    assert!(after.trim().is_empty(), "old resources are gone: {after}");
    Ok(())
}
