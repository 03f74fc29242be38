//! Disk usage of directories (volumes, log directories) and of whole filesystems.
//!
//! Usage is counted the way `du` (and upstream's `MetricsDu`) does: allocated blocks of every
//! file and directory under the path, each inode once however many hard links it has,
//! without following symlinks or crossing into other filesystems mounted below the path (the
//! path itself may be a mount point, as a tmpfs emptyDir is). Walks are iterative, so a deep
//! tree cannot overflow the stack, and bounded by [`MAX_ENTRIES`].

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The most entries one walk visits; a directory with more is reported as what was counted.
pub const MAX_ENTRIES: usize = 1_000_000;

/// What a directory tree occupies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Allocated bytes.
    pub bytes: u64,
    /// Inodes.
    pub inodes: u64,
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, o: Usage) -> Usage {
        Usage {
            bytes: self.bytes + o.bytes,
            inodes: self.inodes + o.inodes,
        }
    }
}

/// The usage of `path` (nothing when it does not exist).
pub fn usage(path: &Path) -> Usage {
    let Ok(root) = std::fs::symlink_metadata(path) else {
        return Usage::default();
    };
    let device = root.dev();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut total = Usage::default();
    let mut count = |meta: &std::fs::Metadata, total: &mut Usage| {
        if seen.insert((meta.dev(), meta.ino())) {
            // st_blocks is in 512-byte units whatever the filesystem's block size.
            total.bytes += meta.blocks() * 512;
            total.inodes += 1;
        }
    };
    count(&root, &mut total);
    if !root.is_dir() {
        return total;
    }
    let mut stack = vec![path.to_owned()];
    let mut visited = 0usize;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            visited += 1;
            if visited > MAX_ENTRIES {
                return total;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.dev() != device {
                continue;
            }
            count(&meta, &mut total);
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

/// A filesystem's size and free space.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filesystem {
    /// Size in bytes.
    pub capacity: u64,
    /// Bytes free for unprivileged users.
    pub available: u64,
    /// Bytes free (including the reserve for root).
    pub free: u64,
    /// Inodes.
    pub inodes: u64,
    /// Free inodes.
    pub inodes_free: u64,
}

/// The filesystem holding `path`.
pub fn filesystem(path: &Path) -> Option<Filesystem> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = st.fragment_size();
    Some(Filesystem {
        capacity: st.blocks() * frag,
        available: st.blocks_available() * frag,
        free: st.blocks_free() * frag,
        inodes: st.files(),
        inodes_free: st.files_free(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_files_once_and_skips_symlink_targets() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let empty = usage(&root);
        assert_eq!(empty.inodes, 2, "the directory and its subdirectory");
        std::fs::write(root.join("sub/file"), vec![7u8; 256 * 1024]).unwrap();
        std::fs::hard_link(root.join("sub/file"), root.join("link")).unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, vec![1u8; 1 << 20]).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("symlink")).unwrap();
        let u = usage(&root);
        assert_eq!(
            u.inodes, 4,
            "dir, sub, the hard-linked file once, the symlink"
        );
        assert!(
            u.bytes >= 256 * 1024 + empty.bytes && u.bytes < (1 << 20),
            "the file counts once and the symlink's target not at all: {u:?}"
        );
        assert_eq!(usage(&dir.path().join("absent")), Usage::default());
    }

    #[test]
    fn the_filesystem_of_a_path_has_room() {
        let dir = tempfile::tempdir().unwrap();
        let fs = filesystem(dir.path()).unwrap();
        assert!(fs.capacity > 0);
        assert!(fs.available <= fs.free && fs.free <= fs.capacity);
        assert!(filesystem(&dir.path().join("absent")).is_none());
    }
}
