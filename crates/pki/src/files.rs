//! Owner-only files under the data dir, written atomically so a crash never leaves half a key.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::{CertifiedKey, Error};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Create `dir` (mode 0700) if it does not exist.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))
}

/// Write `contents` to `path` with mode 0600: temp file, fsync, rename.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(contents).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    // A file that existed before with wider permissions keeps them across rename of a new
    // inode only if we do not reset them; rename replaces the inode, so this is belt and braces.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))
}

fn read_optional(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Read `<name>.crt` and `<name>.key`; `None` when either is missing.
pub(crate) fn read_pair(dir: &Path, name: &str) -> Result<Option<CertifiedKey>, Error> {
    let cert = read_optional(&dir.join(format!("{name}.crt")))?;
    let key = read_optional(&dir.join(format!("{name}.key")))?;
    Ok(match (cert, key) {
        (Some(cert_pem), Some(key_pem)) => Some(CertifiedKey { cert_pem, key_pem }),
        _ => None,
    })
}

/// Write `<name>.crt` (readable) and `<name>.key` (owner-only).
pub(crate) fn write_pair(dir: &Path, name: &str, pair: &CertifiedKey) -> Result<(), Error> {
    write_private(&dir.join(format!("{name}.key")), pair.key_pem.as_bytes())?;
    write_private(&dir.join(format!("{name}.crt")), pair.cert_pem.as_bytes())
}

/// Read a one-line secret, or create it with `make`.
pub(crate) fn read_or_create_secret(
    path: &Path,
    make: impl FnOnce() -> String,
) -> Result<String, Error> {
    if let Some(text) = read_optional(path)? {
        let secret = text.trim();
        if !secret.is_empty() {
            return Ok(secret.to_owned());
        }
    }
    let secret = make();
    write_private(path, format!("{secret}\n").as_bytes())?;
    Ok(secret)
}
