//! CPU, memory and process figures read from cgroup files, for what the CRI does not report
//! (containerd 1.6 gives a container's working set but not its usage, RSS or page faults, and
//! nothing for the node or the pod cgroup when `ListPodSandboxStats` is missing).
//!
//! Both hierarchies are read: cgroup v1 (one mount per controller under `/sys/fs/cgroup`)
//! and v2 (one unified tree). The figures follow cAdvisor, whose numbers upstream's summary
//! carries: working set = usage − inactive file pages; RSS = anonymous memory (`total_rss`
//! in v1, `anon` in v2); page faults from `memory.stat`. Parsers are pure; [`Cgroups`] only
//! joins paths under a root, so tests use a directory of fake files.

use std::path::{Path, PathBuf};

/// Memory figures of one cgroup, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Everything charged, page cache included.
    pub usage: u64,
    /// Usage minus inactive file pages.
    pub working_set: u64,
    /// Anonymous memory.
    pub rss: u64,
    /// Minor page faults.
    pub page_faults: u64,
    /// Major page faults.
    pub major_page_faults: u64,
    /// The cgroup's limit, when it has one.
    pub limit: Option<u64>,
}

/// What one cgroup reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Cumulative CPU time, nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    /// Memory.
    pub memory: Option<Memory>,
    /// Processes (threads count as processes in the pids controller, like upstream).
    pub pids: Option<u64>,
}

/// `key value` lines (`memory.stat`, `cpu.stat`).
pub fn parse_flat_keyed(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|line| {
        let mut words = line.split_whitespace();
        let key = words.next()?;
        let value = words.next()?.parse().ok()?;
        Some((key, value))
    })
}

fn keyed(text: &str, key: &str) -> Option<u64> {
    parse_flat_keyed(text)
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Limits at or above this are "no limit" (v1 writes `PAGE_COUNTER_MAX` pages in bytes).
const UNLIMITED: u64 = 1 << 62;

/// cgroup v1 memory figures from `memory.usage_in_bytes`, `memory.limit_in_bytes` and
/// `memory.stat` (hierarchical `total_*` counters, so a pod cgroup counts its children).
pub fn memory_v1(usage: &str, limit: &str, stat: &str) -> Option<Memory> {
    let usage: u64 = usage.trim().parse().ok()?;
    let inactive = keyed(stat, "total_inactive_file").unwrap_or(0);
    let limit = limit.trim().parse::<u64>().ok().filter(|l| *l < UNLIMITED);
    Some(Memory {
        usage,
        working_set: usage.saturating_sub(inactive),
        rss: keyed(stat, "total_rss").unwrap_or(0),
        page_faults: keyed(stat, "total_pgfault").unwrap_or(0),
        major_page_faults: keyed(stat, "total_pgmajfault").unwrap_or(0),
        limit,
    })
}

/// cgroup v2 memory figures from `memory.current`, `memory.max` and `memory.stat`.
pub fn memory_v2(current: &str, max: &str, stat: &str) -> Option<Memory> {
    let usage: u64 = current.trim().parse().ok()?;
    let inactive = keyed(stat, "inactive_file").unwrap_or(0);
    Some(Memory {
        usage,
        working_set: usage.saturating_sub(inactive),
        rss: keyed(stat, "anon").unwrap_or(0),
        page_faults: keyed(stat, "pgfault").unwrap_or(0),
        major_page_faults: keyed(stat, "pgmajfault").unwrap_or(0),
        limit: max.trim().parse::<u64>().ok().filter(|l| *l < UNLIMITED),
    })
}

/// cgroup v2 CPU time from `cpu.stat` (`usage_usec`), in nanoseconds.
pub fn cpu_v2(stat: &str) -> Option<u64> {
    keyed(stat, "usage_usec").map(|us| us.saturating_mul(1000))
}

/// Machine-wide CPU time from `/proc/stat`'s first line (every state but idle and iowait),
/// in nanoseconds; `ticks_per_second` is `USER_HZ` (100 on Linux).
pub fn cpu_proc_stat(text: &str, ticks_per_second: u64) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| *v)
        .sum();
    Some(busy.saturating_mul(1_000_000_000 / ticks_per_second.max(1)))
}

/// Machine memory from `/proc/meminfo` (for a v2 root, which has no `memory.current`):
/// usage = total − free, working set = usage − inactive file pages.
pub fn memory_meminfo(text: &str) -> Option<Memory> {
    let info = crate::sysinfo::parse_meminfo(text);
    let get = |key: &str| info.iter().find(|(k, _)| k == key).map(|(_, v)| v * 1024);
    let total = get("MemTotal")?;
    let usage = total.saturating_sub(get("MemFree").unwrap_or(0));
    Some(Memory {
        usage,
        working_set: usage.saturating_sub(get("Inactive(file)").unwrap_or(0)),
        rss: get("AnonPages").unwrap_or(0),
        page_faults: 0,
        major_page_faults: 0,
        limit: None,
    })
}

/// The cgroup filesystem of this machine.
#[derive(Debug, Clone)]
pub struct Cgroups {
    root: PathBuf,
    unified: bool,
}

impl Cgroups {
    /// The hierarchy mounted at `root` (normally `/sys/fs/cgroup`): v2 when the root itself
    /// lists controllers, v1 otherwise.
    pub fn at(root: &Path) -> Cgroups {
        Cgroups {
            root: root.to_owned(),
            unified: root.join("cgroup.controllers").exists(),
        }
    }

    /// Whether this is the unified (v2) hierarchy.
    pub fn is_unified(&self) -> bool {
        self.unified
    }

    /// The directory of `cgroup` (`/kubepods/pod<uid>`) for `controller` (ignored in v2).
    pub fn dir(&self, controller: &str, cgroup: &str) -> PathBuf {
        let rel = cgroup.trim_start_matches('/');
        if self.unified {
            self.root.join(rel)
        } else {
            self.root.join(controller).join(rel)
        }
    }

    fn read(&self, controller: &str, cgroup: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir(controller, cgroup).join(file)).ok()
    }

    /// Whether the cgroup exists.
    pub fn exists(&self, cgroup: &str) -> bool {
        self.dir("cpu", cgroup).is_dir()
    }

    /// Everything one cgroup reports. Missing files leave their figure out.
    pub fn sample(&self, cgroup: &str) -> Sample {
        if self.unified {
            let memory = self.read("", cgroup, "memory.current").and_then(|current| {
                memory_v2(
                    &current,
                    &self.read("", cgroup, "memory.max").unwrap_or_default(),
                    &self.read("", cgroup, "memory.stat").unwrap_or_default(),
                )
            });
            Sample {
                cpu_usage_ns: self.read("", cgroup, "cpu.stat").and_then(|s| cpu_v2(&s)),
                memory,
                pids: self
                    .read("", cgroup, "pids.current")
                    .and_then(|s| s.trim().parse().ok()),
            }
        } else {
            let memory = self
                .read("memory", cgroup, "memory.usage_in_bytes")
                .and_then(|usage| {
                    memory_v1(
                        &usage,
                        &self
                            .read("memory", cgroup, "memory.limit_in_bytes")
                            .unwrap_or_default(),
                        &self
                            .read("memory", cgroup, "memory.stat")
                            .unwrap_or_default(),
                    )
                });
            Sample {
                cpu_usage_ns: self
                    .read("cpuacct", cgroup, "cpuacct.usage")
                    .and_then(|s| s.trim().parse().ok()),
                memory,
                pids: self
                    .read("pids", cgroup, "pids.current")
                    .and_then(|s| s.trim().parse().ok()),
            }
        }
    }

    /// Process ids in a cgroup (`cgroup.procs`), to find a process in a pod's namespaces.
    pub fn procs(&self, cgroup: &str) -> Vec<u32> {
        let controller = if self.unified { "" } else { "pids" };
        self.read(controller, cgroup, "cgroup.procs")
            .or_else(|| self.read("cpu", cgroup, "cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// The cgroup of a pod under the cgroupfs layout the kubelet gives containerd
    /// (`/kubepods[/burstable|/besteffort]/pod<uid>`), whichever exists.
    pub fn pod_cgroup(&self, uid: &str) -> Option<String> {
        ["", "burstable/", "besteffort/"]
            .iter()
            .map(|qos| format!("/kubepods/{qos}pod{uid}"))
            .find(|cg| self.exists(cg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_V1: &str = "cache 100\nrss 7\ntotal_cache 4096\ntotal_rss 8192\ntotal_pgfault 33\ntotal_pgmajfault 2\ntotal_inactive_file 1024\n";

    #[test]
    fn v1_memory_is_hierarchical_and_working_set_drops_inactive_files() {
        let m = memory_v1("10240\n", "9223372036854771712\n", STAT_V1).unwrap();
        assert_eq!(
            m,
            Memory {
                usage: 10240,
                working_set: 9216,
                rss: 8192,
                page_faults: 33,
                major_page_faults: 2,
                limit: None,
            }
        );
        let limited = memory_v1("10240", "67108864", STAT_V1).unwrap();
        assert_eq!(limited.limit, Some(64 << 20));
        assert_eq!(memory_v1("", "", STAT_V1), None);
    }

    #[test]
    fn v2_memory_and_cpu() {
        let stat = "anon 4096\nfile 8192\ninactive_file 2048\npgfault 11\npgmajfault 1\n";
        let m = memory_v2("12288\n", "max\n", stat).unwrap();
        assert_eq!(m.working_set, 10240);
        assert_eq!(m.rss, 4096);
        assert_eq!(m.page_faults, 11);
        assert_eq!(m.limit, None);
        assert_eq!(memory_v2("1", "1048576", "").unwrap().limit, Some(1 << 20));
        assert_eq!(
            cpu_v2("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"),
            Some(1_500_000)
        );
    }

    #[test]
    fn proc_stat_counts_busy_ticks() {
        let text = "cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        // 100 + 5 + 50 + 3 + 2 = 160 ticks of 10 ms.
        assert_eq!(cpu_proc_stat(text, 100), Some(1_600_000_000));
    }

    #[test]
    fn meminfo_gives_a_machine_working_set() {
        let m = memory_meminfo(
            "MemTotal: 1000 kB\nMemFree: 200 kB\nInactive(file): 300 kB\nAnonPages: 100 kB\n",
        )
        .unwrap();
        assert_eq!(m.usage, 800 * 1024);
        assert_eq!(m.working_set, 500 * 1024);
        assert_eq!(m.rss, 100 * 1024);
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn v1_and_v2_trees_are_read_by_controller() {
        let v1 = tempfile::tempdir().unwrap();
        let cg = "kubepods/burstable/podu1";
        write(v1.path(), &format!("cpuacct/{cg}/cpuacct.usage"), "123\n");
        write(v1.path(), &format!("cpu/{cg}/cgroup.procs"), "");
        write(
            v1.path(),
            &format!("memory/{cg}/memory.usage_in_bytes"),
            "10240",
        );
        write(
            v1.path(),
            &format!("memory/{cg}/memory.limit_in_bytes"),
            "20480",
        );
        write(v1.path(), &format!("memory/{cg}/memory.stat"), STAT_V1);
        write(v1.path(), &format!("pids/{cg}/pids.current"), "3\n");
        write(v1.path(), &format!("pids/{cg}/cgroup.procs"), "41\n42\n");
        let cgroups = Cgroups::at(v1.path());
        assert!(!cgroups.is_unified());
        assert_eq!(
            cgroups.pod_cgroup("u1").as_deref(),
            Some("/kubepods/burstable/podu1")
        );
        assert_eq!(cgroups.pod_cgroup("u2"), None);
        let s = cgroups.sample("/kubepods/burstable/podu1");
        assert_eq!(s.cpu_usage_ns, Some(123));
        assert_eq!(s.memory.unwrap().working_set, 9216);
        assert_eq!(s.memory.unwrap().limit, Some(20480));
        assert_eq!(s.pids, Some(3));
        assert_eq!(cgroups.procs("/kubepods/burstable/podu1"), vec![41, 42]);

        let v2 = tempfile::tempdir().unwrap();
        write(v2.path(), "cgroup.controllers", "cpu memory pids\n");
        write(v2.path(), "kubepods/podu3/cpu.stat", "usage_usec 2\n");
        write(v2.path(), "kubepods/podu3/memory.current", "100\n");
        write(v2.path(), "kubepods/podu3/memory.max", "max\n");
        write(
            v2.path(),
            "kubepods/podu3/memory.stat",
            "inactive_file 40\n",
        );
        let cgroups = Cgroups::at(v2.path());
        assert!(cgroups.is_unified());
        assert_eq!(cgroups.pod_cgroup("u3").as_deref(), Some("/kubepods/podu3"));
        let s = cgroups.sample("/kubepods/podu3");
        assert_eq!(s.cpu_usage_ns, Some(2000));
        assert_eq!(s.memory.unwrap().working_set, 60);
        assert_eq!(s.pids, None);
    }
}
