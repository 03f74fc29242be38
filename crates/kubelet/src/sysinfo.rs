//! What the node reports about its machine: capacity, identity, kernel and OS, pressure.
//! Read from /proc, /sys and /etc; every reader degrades to a neutral value rather than fail.

use std::path::Path;

/// Machine facts for `status.capacity` and `status.nodeInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Hugepages: (page size in KiB, total pages).
    pub hugepages: Vec<(u64, u64)>,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// DMI product UUID, else the machine id.
    pub system_uuid: String,
    /// This boot's id.
    pub boot_id: String,
    /// `uname -r`.
    pub kernel_version: String,
    /// `PRETTY_NAME` of /etc/os-release.
    pub os_image: String,
    /// Go-style architecture name.
    pub architecture: String,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Parse `/proc/meminfo` into (key, kB value) pairs.
pub fn parse_meminfo(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            let value = rest.split_whitespace().next()?.parse().ok()?;
            Some((key.trim().to_owned(), value))
        })
        .collect()
}

fn meminfo_value(info: &[(String, u64)], key: &str) -> Option<u64> {
    info.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// Go's GOARCH for Rust's `std::env::consts::ARCH`.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Read the machine.
pub fn machine() -> Machine {
    let meminfo = parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
    let memory_bytes = meminfo_value(&meminfo, "MemTotal").unwrap_or(0) * 1024;
    let mut hugepages = Vec::new();
    if let (Some(size), Some(total)) = (
        meminfo_value(&meminfo, "Hugepagesize"),
        meminfo_value(&meminfo, "HugePages_Total"),
    ) {
        hugepages.push((size, total));
    }
    let machine_id = read_trim("/etc/machine-id");
    let system_uuid = Some(read_trim("/sys/class/dmi/id/product_uuid"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| machine_id.clone());
    let os_image = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".to_owned());
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes,
        hugepages,
        machine_id,
        system_uuid,
        boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
        kernel_version: read_trim("/proc/sys/kernel/osrelease"),
        os_image,
        architecture: go_arch(std::env::consts::ARCH).to_owned(),
    }
}

/// Memory available to new work, in bytes (`MemAvailable`).
pub fn memory_available() -> u64 {
    let meminfo = parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
    meminfo_value(&meminfo, "MemAvailable").unwrap_or(0) * 1024
}

/// Total and available bytes of the filesystem holding `path`.
pub fn filesystem(path: &Path) -> (u64, u64) {
    match nix::sys::statvfs::statvfs(path) {
        Ok(st) => {
            let frag = st.fragment_size();
            (st.blocks() * frag, st.blocks_available() * frag)
        }
        Err(_) => (0, 0),
    }
}

/// Process ids in use and the maximum (`/proc/sys/kernel/pid_max`).
pub fn pids() -> (u64, u64) {
    let max = read_trim("/proc/sys/kernel/pid_max")
        .parse()
        .unwrap_or(32768);
    let used = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count() as u64
        })
        .unwrap_or(0);
    (used, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_parses_kb_values() {
        let info = parse_meminfo(
            "MemTotal:       24578436 kB\nMemAvailable:   22000000 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n",
        );
        assert_eq!(meminfo_value(&info, "MemTotal"), Some(24578436));
        assert_eq!(meminfo_value(&info, "HugePages_Total"), Some(0));
        assert_eq!(meminfo_value(&info, "Hugepagesize"), Some(2048));
    }

    #[test]
    fn architectures_use_go_names() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("riscv64"), "riscv64");
    }

    #[test]
    fn this_machine_reads() {
        let m = machine();
        assert!(m.cpus >= 1);
        assert!(m.memory_bytes > 0);
        assert!(!m.kernel_version.is_empty());
    }
}
