//! `usageNanoCores`: a CPU rate needs two samples of the cumulative counter. The collector
//! keeps the last sample of every container, pod and the node; a read computes the rate from
//! that sample to a fresh one. Reads do not replace the sample when it is younger than
//! [`MIN_WINDOW`] (frequent scrapes would otherwise shrink the window to noise) but keep the
//! last rate, which they return instead, as upstream's CRI stats provider caches it.

use std::collections::HashMap;

/// The shortest window a rate is computed over, nanoseconds.
pub const MIN_WINDOW: i64 = 1_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: i64,
    usage: u64,
    rate: Option<u64>,
}

/// Samples by key (`node`, `pod/<uid>`, `container/<id>`).
#[derive(Debug, Default)]
pub struct Rates {
    entries: HashMap<String, Entry>,
}

impl Rates {
    /// The rate (nanocores) at a fresh sample `usage` taken at `at` (nanoseconds), recording
    /// the sample when the window is long enough. `None` until two samples are far enough
    /// apart, or when the counter went backwards (a recreated cgroup).
    pub fn observe(&mut self, key: &str, at: i64, usage: u64) -> Option<u64> {
        match self.entries.get_mut(key) {
            None => {
                self.entries.insert(
                    key.to_owned(),
                    Entry {
                        at,
                        usage,
                        rate: None,
                    },
                );
                None
            }
            Some(e) if usage < e.usage => {
                *e = Entry {
                    at,
                    usage,
                    rate: None,
                };
                None
            }
            Some(e) if at - e.at >= MIN_WINDOW => {
                let rate = ((usage - e.usage) as u128 * 1_000_000_000 / (at - e.at) as u128) as u64;
                *e = Entry {
                    at,
                    usage,
                    rate: Some(rate),
                };
                Some(rate)
            }
            Some(e) => e.rate,
        }
    }

    /// Forget every key not in `live` (containers and pods that are gone).
    pub fn retain(&mut self, live: &std::collections::HashSet<String>) {
        self.entries.retain(|k, _| live.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn a_rate_needs_two_samples_a_window_apart() {
        let mut r = Rates::default();
        assert_eq!(r.observe("c", 0, 0), None);
        assert_eq!(r.observe("c", S / 2, 100), None, "window too short");
        // Half a core over two seconds.
        assert_eq!(r.observe("c", 2 * S, S as u64), Some(500_000_000));
        // A quick re-read keeps the last rate and the sample.
        assert_eq!(r.observe("c", 2 * S + 10, S as u64 + 5), Some(500_000_000));
        assert_eq!(r.observe("c", 4 * S, 3 * S as u64), Some(1_000_000_000));
    }

    #[test]
    fn counters_going_backwards_restart_the_window() {
        let mut r = Rates::default();
        r.observe("c", 0, 1000);
        assert_eq!(r.observe("c", 2 * S, 10), None);
        assert_eq!(r.observe("c", 4 * S, 10 + 2 * S as u64), Some(S as u64));
        let live = std::collections::HashSet::from(["other".to_owned()]);
        r.retain(&live);
        assert_eq!(r.observe("c", 6 * S, 0), None, "forgotten");
    }
}
