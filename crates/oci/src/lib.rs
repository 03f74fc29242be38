//! OCI image archives (the `oci-layout` tar that `ctr images import`, `docker load` and
//! `skiff images import` accept) built from a few files: Skiff ships its own pause image this
//! way, and tests build theirs from the OS's busybox, because no registry is reachable.
//!
//! Archives are deterministic — fixed timestamps and ownership, sorted entries — so the same
//! inputs give the same digests, and re-importing an unchanged archive changes nothing.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{Value, json};

/// Why an archive could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the archive failed.
    #[error("writing the image archive failed")]
    Write(#[source] std::io::Error),
    /// Reading an archive failed.
    #[error("reading the image archive failed")]
    Read(#[source] std::io::Error),
    /// The archive is not an OCI layout or `docker save` archive.
    #[error("not an image archive: {0}")]
    NotAnArchive(String),
}

/// One filesystem entry of the image's single layer.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A regular file.
    File {
        /// Mode bits (e.g. 0o755).
        mode: u32,
        /// Contents.
        data: Vec<u8>,
    },
    /// A symbolic link.
    Symlink(String),
    /// A directory.
    Dir {
        /// Mode bits.
        mode: u32,
    },
}

/// What to put in an image.
#[derive(Debug, Clone, Default)]
pub struct Image {
    /// Full reference, e.g. `skiff.local/pause:3.10`.
    pub name: String,
    /// Layer contents by absolute path (`/bin/sh`). Parent directories are added as needed.
    pub files: BTreeMap<String, Entry>,
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Default arguments.
    pub cmd: Vec<String>,
    /// Environment, `NAME=value`.
    pub env: Vec<String>,
    /// Working directory ("" for /).
    pub working_dir: String,
    /// User (`uid[:gid]`, "" for root).
    pub user: String,
    /// Exposed ports, e.g. `8080/tcp`.
    pub exposed_ports: Vec<String>,
}

fn sha256(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A header with fixed ownership and time; the builder methods set the (possibly long) path.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// The layer tarball (uncompressed) of `files`.
pub fn layer(files: &BTreeMap<String, Entry>) -> Result<Vec<u8>, Error> {
    let mut all: BTreeMap<String, Entry> = BTreeMap::new();
    for (path, entry) in files {
        let clean = path.trim_start_matches('/').to_owned();
        let mut parent = std::path::Path::new(&clean).parent();
        while let Some(dir) = parent {
            let d = dir.to_string_lossy().into_owned();
            if d.is_empty() {
                break;
            }
            all.entry(d).or_insert(Entry::Dir { mode: 0o755 });
            parent = dir.parent();
        }
        all.insert(clean, entry.clone());
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry) in &all {
        let result = match entry {
            Entry::File { mode, data } => {
                let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                builder.append_data(&mut h, path, data.as_slice())
            }
            Entry::Symlink(target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                builder.append_link(&mut h, path, target)
            }
            Entry::Dir { mode } => {
                let mut h = header(tar::EntryType::Directory, *mode, 0);
                builder.append_data(&mut h, format!("{path}/"), std::io::empty())
            }
        };
        result.map_err(Error::Write)?;
    }
    builder.into_inner().map_err(Error::Write)
}

/// Write `image` as an OCI layout archive.
pub fn write_archive(image: &Image, out: impl Write) -> Result<(), Error> {
    let layer = layer(&image.files)?;
    let layer_digest = sha256(&layer);
    let mut config = json!({
        "Env": image.env,
        "Entrypoint": image.entrypoint,
        "Cmd": image.cmd,
        "WorkingDir": image.working_dir,
    });
    if !image.user.is_empty() {
        config["User"] = json!(image.user);
    }
    if !image.exposed_ports.is_empty() {
        let ports: serde_json::Map<String, Value> = image
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), json!({})))
            .collect();
        config["ExposedPorts"] = Value::Object(ports);
    }
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": "skiff" }],
    });
    let config_bytes = serde_json::to_vec(&config).expect("json");
    let config_digest = sha256(&config_bytes);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_bytes.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("json");
    let manifest_digest = sha256(&manifest_bytes);
    let tag = image.name.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_bytes.len(),
            "platform": { "architecture": "amd64", "os": "linux" },
            "annotations": {
                "io.containerd.image.name": image.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    let mut builder = tar::Builder::new(out);
    let mut put = |path: &str, data: &[u8]| {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        builder
            .append_data(&mut h, path, data)
            .map_err(Error::Write)
    };
    put("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    put("index.json", &serde_json::to_vec(&index).expect("json"))?;
    for (digest, data) in [
        (&config_digest, &config_bytes),
        (&manifest_digest, &manifest_bytes),
        (&layer_digest, &layer),
    ] {
        put(&format!("blobs/sha256/{}", &digest[7..]), data)?;
    }
    builder
        .into_inner()
        .map_err(Error::Write)?
        .flush()
        .map_err(Error::Write)
}

/// The image names an archive declares: `io.containerd.image.name` annotations of an OCI
/// layout's index, or `RepoTags` of a `docker save` manifest.
pub fn archive_names(archive: impl std::io::Read) -> Result<Vec<String>, Error> {
    let mut tar = tar::Archive::new(archive);
    let mut kind_seen = false;
    let mut names = Vec::new();
    for entry in tar.entries().map_err(Error::Read)? {
        let mut entry = entry.map_err(Error::Read)?;
        let path = entry
            .path()
            .map_err(Error::Read)?
            .to_string_lossy()
            .into_owned();
        let path = path.trim_start_matches("./");
        if path != "index.json" && path != "manifest.json" {
            continue;
        }
        kind_seen = true;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).map_err(Error::Read)?;
        let doc: Value =
            serde_json::from_str(&text).map_err(|e| Error::NotAnArchive(format!("{path}: {e}")))?;
        if path == "index.json" {
            for m in doc["manifests"].as_array().into_iter().flatten() {
                if let Some(name) = m["annotations"]["io.containerd.image.name"].as_str() {
                    names.push(name.to_owned());
                }
            }
        } else {
            for m in doc.as_array().into_iter().flatten() {
                for tag in m["RepoTags"].as_array().into_iter().flatten() {
                    if let Some(tag) = tag.as_str() {
                        names.push(tag.to_owned());
                    }
                }
            }
        }
    }
    if !kind_seen {
        return Err(Error::NotAnArchive(
            "neither index.json (OCI layout) nor manifest.json (docker save) found".into(),
        ));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Image {
        let mut files = BTreeMap::new();
        files.insert(
            "/bin/tool".to_owned(),
            Entry::File {
                mode: 0o755,
                data: b"#!/bin/sh\n".to_vec(),
            },
        );
        files.insert("/bin/alias".to_owned(), Entry::Symlink("tool".into()));
        Image {
            name: "skiff.local/sample:1".into(),
            files,
            entrypoint: vec!["/bin/tool".into()],
            ..Default::default()
        }
    }

    #[test]
    fn archives_are_deterministic_and_name_their_image() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        write_archive(&sample(), &mut a).unwrap();
        write_archive(&sample(), &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            archive_names(a.as_slice()).unwrap(),
            ["skiff.local/sample:1"]
        );
    }

    #[test]
    fn layers_hold_parents_files_and_links() {
        let data = layer(&sample().files).unwrap();
        let mut tar = tar::Archive::new(data.as_slice());
        let entries: Vec<(String, tar::EntryType)> = tar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("bin/".to_owned(), tar::EntryType::Directory),
                ("bin/alias".to_owned(), tar::EntryType::Symlink),
                ("bin/tool".to_owned(), tar::EntryType::Regular),
            ]
        );
    }

    #[test]
    fn other_tarballs_are_not_archives() {
        let data = layer(&sample().files).unwrap();
        assert!(matches!(
            archive_names(data.as_slice()),
            Err(Error::NotAnArchive(_))
        ));
    }
}
