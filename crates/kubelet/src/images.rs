//! Images on the node: Skiff's own sandbox (pause) image, archives imported without a
//! registry (`skiff images import`, and every archive in `<root>/images/` at start), and pulls
//! through the CRI ImageService with the pod's pull policy and pull secrets.
//!
//! The CRI has no import call, so archives go in through containerd's own client, `ctr`
//! (shipped with containerd), into the `k8s.io` namespace the CRI plugin serves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;
use skiff_cri::{Cri, api};

use crate::Error;

/// The sandbox image every pod's sandbox runs; built into the skiff binary.
pub const SANDBOX_IMAGE: &str = "skiff.local/pause:1.0";

const PAUSE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// The pause image: one static binary as entrypoint.
pub fn pause_image() -> skiff_oci::Image {
    let mut files = BTreeMap::new();
    files.insert(
        "/pause".to_owned(),
        skiff_oci::Entry::File {
            mode: 0o755,
            data: PAUSE_BINARY.to_vec(),
        },
    );
    skiff_oci::Image {
        name: SANDBOX_IMAGE.to_owned(),
        files,
        entrypoint: vec!["/pause".into()],
        ..Default::default()
    }
}

/// Import an image archive (OCI layout or `docker save`) into the runtime at `socket`.
/// Returns the names it declared.
pub async fn import_archive(socket: &Path, archive: &Path) -> Result<Vec<String>, Error> {
    let file = std::fs::File::open(archive).map_err(|source| Error::Io {
        action: "opening the image archive",
        path: archive.to_owned(),
        source,
    })?;
    let names = skiff_oci::archive_names(std::io::BufReader::new(file)).map_err(|source| {
        Error::ImageArchive {
            path: archive.to_owned(),
            source,
        }
    })?;
    let output = tokio::process::Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args([
            "--namespace",
            "k8s.io",
            "images",
            "import",
            "--snapshotter",
            "overlayfs",
        ])
        .arg(archive)
        .output()
        .await
        .map_err(|source| Error::Io {
            action: "running ctr (part of the containerd package)",
            path: PathBuf::from("ctr"),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Import {
            path: archive.to_owned(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(names)
}

/// Make sure the sandbox image is present, importing the built-in one if not.
pub async fn ensure_sandbox_image(cri: &Cri, socket: &Path, scratch: &Path) -> Result<(), Error> {
    if image_present(cri, SANDBOX_IMAGE).await? {
        return Ok(());
    }
    std::fs::create_dir_all(scratch).map_err(|source| Error::Io {
        action: "creating the image scratch directory",
        path: scratch.to_owned(),
        source,
    })?;
    let archive = scratch.join("pause.tar");
    let file = std::fs::File::create(&archive).map_err(|source| Error::Io {
        action: "writing the pause image",
        path: archive.clone(),
        source,
    })?;
    skiff_oci::write_archive(&pause_image(), std::io::BufWriter::new(file)).map_err(|source| {
        Error::ImageArchive {
            path: archive.clone(),
            source,
        }
    })?;
    import_archive(socket, &archive).await?;
    tracing::info!(image = SANDBOX_IMAGE, "imported the built-in sandbox image");
    Ok(())
}

/// Whether the runtime has `image`.
pub async fn image_present(cri: &Cri, image: &str) -> Result<bool, Error> {
    let status = cri
        .image_status(api::ImageStatusRequest {
            image: Some(api::ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .map_err(Error::Cri)?;
    Ok(status.image.is_some())
}

/// The size and modification time of a file, which decide whether it changed since it was
/// last imported.
fn fingerprint(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{}:{modified}", meta.len()))
}

/// Import every archive in `dir` (`*.tar`, `*.tar.gz`, `*.tgz`) that is new or changed since
/// its last import; the fingerprints of imported files are kept in `<dir>/.imported.json`.
pub async fn import_directory(
    socket: &Path,
    dir: &Path,
) -> Vec<(PathBuf, Result<Vec<String>, Error>)> {
    let record_path = dir.join(".imported.json");
    let mut record: BTreeMap<String, String> = std::fs::read(&record_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(_) => return Vec::new(),
    };
    entries.sort();
    let mut results = Vec::new();
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let is_archive =
            name.ends_with(".tar") || name.ends_with(".tar.gz") || name.ends_with(".tgz");
        if !is_archive || name.starts_with('.') {
            continue;
        }
        let Some(print) = fingerprint(&path) else {
            continue;
        };
        if record.get(&name) == Some(&print) {
            continue;
        }
        let result = import_archive(socket, &path).await;
        if result.is_ok() {
            record.insert(name, print);
            let _ = std::fs::write(
                &record_path,
                serde_json::to_vec(&record).unwrap_or_default(),
            );
        }
        results.push((path, result));
    }
    results
}

/// Registry credentials from a `.dockerconfigjson` (or legacy `.dockercfg`) secret's data for
/// `image`'s registry.
pub fn auth_for(image: &str, docker_config: &Value) -> Option<api::AuthConfig> {
    let registry = registry_host(image);
    let auths = docker_config.get("auths").unwrap_or(docker_config);
    let auths = auths.as_object()?;
    let entry = auths.iter().find_map(|(server, entry)| {
        let host = server
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("");
        let host = if host == "index.docker.io" {
            "docker.io"
        } else {
            host
        };
        (host == registry).then_some((server, entry))
    })?;
    let (server, entry) = entry;
    let mut auth = api::AuthConfig {
        server_address: server.clone(),
        ..Default::default()
    };
    if let Some(u) = entry.get("username").and_then(Value::as_str) {
        auth.username = u.to_owned();
    }
    if let Some(p) = entry.get("password").and_then(Value::as_str) {
        auth.password = p.to_owned();
    }
    if let Some(encoded) = entry.get("auth").and_then(Value::as_str) {
        auth.auth = encoded.to_owned();
        if auth.username.is_empty()
            && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded)
            && let Some((u, p)) = String::from_utf8_lossy(&decoded).split_once(':')
        {
            auth.username = u.to_owned();
            auth.password = p.to_owned();
        }
    }
    if let Some(t) = entry.get("identitytoken").and_then(Value::as_str) {
        auth.identity_token = t.to_owned();
    }
    Some(auth)
}

/// The registry host of an image reference (`docker.io` when none is named).
pub fn registry_host(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_owned()
        }
        _ => "docker.io".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registries_are_read_off_references() {
        assert_eq!(registry_host("nginx"), "docker.io");
        assert_eq!(registry_host("library/nginx:1"), "docker.io");
        assert_eq!(registry_host("ghcr.io/a/b:1"), "ghcr.io");
        assert_eq!(registry_host("localhost:5000/x"), "localhost:5000");
        assert_eq!(registry_host("skiff.local/pause:1.0"), "skiff.local");
    }

    #[test]
    fn pull_secrets_give_the_matching_registry_credentials() {
        let config = json!({ "auths": {
            "https://index.docker.io/v1/": { "auth": "dXNlcjpwYXNz" },
            "registry.example.com": { "username": "bob", "password": "pw" },
        }});
        let docker = auth_for("nginx:1.27", &config).unwrap();
        assert_eq!(
            (docker.username.as_str(), docker.password.as_str()),
            ("user", "pass")
        );
        let other = auth_for("registry.example.com/app:1", &config).unwrap();
        assert_eq!(other.username, "bob");
        assert!(auth_for("ghcr.io/x/y", &config).is_none());
    }

    #[test]
    fn the_pause_image_is_a_static_binary() {
        let image = pause_image();
        let skiff_oci::Entry::File { data, .. } = &image.files["/pause"] else {
            panic!("pause is a file");
        };
        assert_eq!(&data[..4], b"\x7fELF");
    }
}
