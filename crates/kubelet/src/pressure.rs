//! Node pressure: the hard eviction thresholds (`--eviction-hard`, upstream's syntax
//! `memory.available<100Mi,nodefs.available<5%`), which signals have crossed them, and the
//! node conditions that follows from that (MemoryPressure, DiskPressure, PIDPressure).
//!
//! The node status and the eviction loop both judge through [`Thresholds::crossed`], so the
//! condition a user sees and the evictions that happen always agree on the rule. Skiff's
//! defaults are k3s's (`nodefs.available<5%`, `imagefs.available<5%`) plus upstream's
//! `memory.available<100Mi`, and `pid.available<5%`: small machines and CI runners often sit
//! below upstream's 10–15% free disk, where a node would refuse every pod.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use skiff_api::quantity::Quantity;

/// An eviction signal: something measured on the node whose available amount can run low.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// Memory not in the working set (`memory.available`).
    MemoryAvailable,
    /// Free space of the filesystem holding the kubelet's root (`nodefs.available`).
    NodeFsAvailable,
    /// Free space of the runtime's image filesystem (`imagefs.available`).
    ImageFsAvailable,
    /// Process ids left before `kernel.pid_max` (`pid.available`).
    PidAvailable,
}

impl Signal {
    const ALL: [Signal; 4] = [
        Signal::MemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::ImageFsAvailable,
        Signal::PidAvailable,
    ];

    /// The signal's name in `--eviction-hard`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::PidAvailable => "pid.available",
        }
    }

    /// The node condition the signal raises.
    pub fn condition(self) -> Condition {
        match self {
            Signal::MemoryAvailable => Condition::MemoryPressure,
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => Condition::DiskPressure,
            Signal::PidAvailable => Condition::PidPressure,
        }
    }

    /// The resource reclaimed when the signal is crossed, as upstream's eviction messages
    /// name it.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => "ephemeral-storage",
            Signal::PidAvailable => "pids",
        }
    }
}

/// A node pressure condition, in upstream's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Condition {
    /// `MemoryPressure`.
    MemoryPressure,
    /// `DiskPressure`.
    DiskPressure,
    /// `PIDPressure`.
    PidPressure,
}

impl Condition {
    /// The condition type in the Node status.
    pub fn type_name(self) -> &'static str {
        match self {
            Condition::MemoryPressure => "MemoryPressure",
            Condition::DiskPressure => "DiskPressure",
            Condition::PidPressure => "PIDPressure",
        }
    }
}

/// How low a signal may go: an amount, or a share of the capacity.
#[derive(Debug, Clone, PartialEq)]
pub enum Amount {
    /// An absolute amount (bytes, or a count of pids), with the text it was written as.
    Quantity {
        /// The amount.
        value: i64,
        /// As written (`100Mi`), which eviction messages repeat.
        written: String,
    },
    /// A percentage of the capacity, `0 < p <= 100`.
    Percent(f64),
}

/// One threshold: evict when `signal`'s available amount is below `amount` — at once for a
/// hard threshold, after it has held for `grace` for a soft one.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// What is measured.
    pub signal: Signal,
    /// The lowest acceptable amount.
    pub amount: Amount,
    /// For a soft threshold, how long it must hold before pods are evicted.
    pub grace: Option<Duration>,
}

impl Threshold {
    /// The threshold in absolute terms for a signal of `capacity`.
    pub fn quantity(&self, capacity: u64) -> i64 {
        match &self.amount {
            Amount::Quantity { value, .. } => *value,
            Amount::Percent(p) => ((capacity as f64) * p / 100.0).round() as i64,
        }
    }
}

/// What one signal measures: available and capacity (bytes, or pids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observation {
    /// What is left.
    pub available: u64,
    /// The whole.
    pub capacity: u64,
}

/// The node's measurements, one per signal (absent: not measured, never crossed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observations {
    /// `memory.available`.
    pub memory: Option<Observation>,
    /// `nodefs.available`.
    pub nodefs: Option<Observation>,
    /// `imagefs.available`.
    pub imagefs: Option<Observation>,
    /// `pid.available`.
    pub pid: Option<Observation>,
}

impl Observations {
    fn of(&self, signal: Signal) -> Option<Observation> {
        match signal {
            Signal::MemoryAvailable => self.memory,
            Signal::NodeFsAvailable => self.nodefs,
            Signal::ImageFsAvailable => self.imagefs,
            Signal::PidAvailable => self.pid,
        }
    }
}

/// A threshold found crossed, with what was observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossed<'a> {
    /// The threshold.
    pub threshold: &'a Threshold,
    /// The threshold in absolute terms.
    pub quantity: i64,
    /// What was observed.
    pub observed: Observation,
}

/// The node's hard eviction thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds(Vec<Threshold>);

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds::parse(DEFAULT).expect("the default thresholds parse")
    }
}

/// Skiff's default `--eviction-hard` (see the module documentation).
pub const DEFAULT: &str =
    "memory.available<100Mi,nodefs.available<5%,imagefs.available<5%,pid.available<5%";

/// A threshold that `--eviction-hard` could not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

impl Thresholds {
    /// Parse upstream's `signal<amount` list, comma separated; an empty text sets none.
    pub fn parse(text: &str) -> Result<Thresholds, ParseError> {
        let mut out: Vec<Threshold> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((name, amount)) = item.split_once('<') else {
                return Err(ParseError(format!(
                    "eviction threshold {item:?}: expected signal<amount, e.g. memory.available<100Mi"
                )));
            };
            let signal = Signal::ALL
                .into_iter()
                .find(|s| s.name() == name.trim())
                .ok_or_else(|| {
                    let known: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
                    ParseError(format!(
                        "eviction threshold {item:?}: unknown signal {name:?} (known: {})",
                        known.join(", ")
                    ))
                })?;
            let amount = amount.trim();
            let amount = if let Some(percent) = amount.strip_suffix('%') {
                match percent.parse::<f64>() {
                    Ok(p) if p > 0.0 && p <= 100.0 => Amount::Percent(p),
                    _ => {
                        return Err(ParseError(format!(
                            "eviction threshold {item:?}: a percentage must be above 0 and at most 100"
                        )));
                    }
                }
            } else {
                match Quantity::parse(amount).map(Quantity::value) {
                    Ok(value) if value >= 0 => Amount::Quantity {
                        value,
                        written: amount.to_owned(),
                    },
                    _ => {
                        return Err(ParseError(format!(
                            "eviction threshold {item:?}: {amount:?} is not a non-negative quantity or percentage"
                        )));
                    }
                }
            };
            if out.iter().any(|t| t.signal == signal) {
                return Err(ParseError(format!(
                    "eviction threshold {item:?}: {} is given twice",
                    signal.name()
                )));
            }
            out.push(Threshold {
                signal,
                amount,
                grace: None,
            });
        }
        Ok(Thresholds(out))
    }

    /// Soft thresholds: `text` as [`Thresholds::parse`] reads it, each with its grace period
    /// from `grace_periods` (`memory.available=1m30s`, comma separated), which every soft
    /// threshold needs.
    pub fn soft(text: &str, grace_periods: &str) -> Result<Thresholds, ParseError> {
        let mut graces: BTreeMap<Signal, Duration> = BTreeMap::new();
        for item in grace_periods
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let parsed = item.split_once('=').and_then(|(name, d)| {
                let signal = Signal::ALL.into_iter().find(|s| s.name() == name.trim())?;
                Some((signal, skiff_api::duration::parse_go(d.trim())))
            });
            match parsed {
                Some((signal, Ok(d))) => {
                    graces.insert(signal, d);
                }
                Some((_, Err(e))) => {
                    return Err(ParseError(format!("eviction grace period {item:?}: {e}")));
                }
                None => {
                    return Err(ParseError(format!(
                        "eviction grace period {item:?}: expected signal=duration, e.g. memory.available=1m30s"
                    )));
                }
            }
        }
        let mut thresholds = Thresholds::parse(text)?;
        for t in &mut thresholds.0 {
            let grace = graces.remove(&t.signal).ok_or_else(|| {
                ParseError(format!(
                    "soft eviction threshold {} needs a grace period (--eviction-soft-grace-period {}=1m30s)",
                    t.signal.name(),
                    t.signal.name()
                ))
            })?;
            t.grace = Some(grace);
        }
        if let Some(signal) = graces.keys().next() {
            return Err(ParseError(format!(
                "a grace period is given for {}, which has no soft eviction threshold",
                signal.name()
            )));
        }
        Ok(thresholds)
    }

    /// No thresholds.
    pub fn none() -> Thresholds {
        Thresholds(Vec::new())
    }

    /// These thresholds and `other`'s together (hard and soft ones).
    pub fn and(&self, other: &Thresholds) -> Thresholds {
        Thresholds(self.0.iter().chain(&other.0).cloned().collect())
    }

    /// The threshold set for `signal`, if any.
    pub fn get(&self, signal: Signal) -> Option<&Threshold> {
        self.0.iter().find(|t| t.signal == signal)
    }

    /// The thresholds `observations` are below, in signal order.
    pub fn crossed(&self, observations: &Observations) -> Vec<Crossed<'_>> {
        let mut out: Vec<Crossed<'_>> = self
            .0
            .iter()
            .filter_map(|threshold| {
                let observed = observations.of(threshold.signal)?;
                let quantity = threshold.quantity(observed.capacity);
                ((observed.available as i64) < quantity).then_some(Crossed {
                    threshold,
                    quantity,
                    observed,
                })
            })
            .collect();
        out.sort_by_key(|c| c.threshold.signal);
        out
    }

    /// The pressure conditions `observations` raise, each once, in upstream's order.
    pub fn conditions(&self, observations: &Observations) -> Vec<Condition> {
        let mut out: Vec<Condition> = self
            .crossed(observations)
            .iter()
            .map(|c| c.threshold.signal.condition())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(available: u64, capacity: u64) -> Option<Observation> {
        Some(Observation {
            available,
            capacity,
        })
    }

    #[test]
    fn upstream_syntax_parses_and_bad_thresholds_say_why() {
        let t = Thresholds::parse("memory.available<1Gi, nodefs.available<10%").unwrap();
        assert_eq!(
            t.get(Signal::MemoryAvailable).unwrap().amount,
            Amount::Quantity {
                value: 1 << 30,
                written: "1Gi".into()
            }
        );
        assert_eq!(
            t.get(Signal::NodeFsAvailable).unwrap().amount,
            Amount::Percent(10.0)
        );
        assert!(t.get(Signal::PidAvailable).is_none());
        assert!(
            t.get(Signal::MemoryAvailable).unwrap().grace.is_none(),
            "hard"
        );
        assert_eq!(Thresholds::parse("").unwrap(), Thresholds(vec![]));
        for (bad, says) in [
            ("memory.available>1Gi", "expected signal<amount"),
            ("memory.free<1Gi", "unknown signal"),
            ("memory.available<lots", "not a non-negative quantity"),
            ("nodefs.available<0%", "above 0 and at most 100"),
            ("nodefs.available<101%", "above 0 and at most 100"),
            ("memory.available<1Gi,memory.available<2Gi", "given twice"),
        ] {
            let err = Thresholds::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn soft_thresholds_need_their_grace_periods() {
        let soft = Thresholds::soft(
            "memory.available<1Gi,nodefs.available<15%",
            "memory.available=1m30s, nodefs.available=2m",
        )
        .unwrap();
        assert_eq!(
            soft.get(Signal::MemoryAvailable).unwrap().grace,
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            soft.get(Signal::NodeFsAvailable).unwrap().grace,
            Some(Duration::from_secs(120))
        );
        assert_eq!(Thresholds::soft("", "").unwrap(), Thresholds(vec![]));
        for (text, graces, says) in [
            ("memory.available<1Gi", "", "needs a grace period"),
            ("", "memory.available=1m", "has no soft eviction threshold"),
            (
                "memory.available<1Gi",
                "memory.available=soon",
                "invalid duration",
            ),
            (
                "memory.available<1Gi",
                "memory.available",
                "expected signal=duration",
            ),
        ] {
            let err = Thresholds::soft(text, graces).unwrap_err().to_string();
            assert!(err.contains(says), "{text} / {graces}: {err}");
        }
        // Hard and soft together raise conditions from either.
        let both = Thresholds::parse("memory.available<100Mi")
            .unwrap()
            .and(&soft);
        let observed = Observations {
            memory: observed(500 << 20, 4 << 30),
            ..Default::default()
        };
        assert_eq!(both.conditions(&observed), [Condition::MemoryPressure]);
    }

    #[test]
    fn the_defaults_are_k3s_disk_and_upstream_memory() {
        let t = Thresholds::default();
        assert_eq!(
            t.get(Signal::MemoryAvailable).unwrap().quantity(0),
            100 << 20
        );
        assert_eq!(t.get(Signal::NodeFsAvailable).unwrap().quantity(1000), 50);
        assert_eq!(t.get(Signal::ImageFsAvailable).unwrap().quantity(1000), 50);
    }

    #[test]
    fn crossed_thresholds_raise_their_conditions_once() {
        let t = Thresholds::parse(
            "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,pid.available<100",
        )
        .unwrap();
        let healthy = Observations {
            memory: observed(200 << 20, 1 << 30),
            nodefs: observed(500, 1000),
            imagefs: observed(500, 1000),
            pid: observed(1000, 4096),
        };
        assert!(t.crossed(&healthy).is_empty());
        assert!(t.conditions(&healthy).is_empty());

        let low_disk = Observations {
            nodefs: observed(90, 1000),
            imagefs: observed(90, 1000),
            ..healthy
        };
        let crossed = t.crossed(&low_disk);
        assert_eq!(crossed.len(), 2);
        assert_eq!(crossed[0].threshold.signal, Signal::NodeFsAvailable);
        assert_eq!(crossed[0].quantity, 100);
        assert_eq!(t.conditions(&low_disk), [Condition::DiskPressure]);

        let everything = Observations {
            memory: observed(50 << 20, 1 << 30),
            pid: observed(10, 4096),
            ..low_disk
        };
        assert_eq!(
            t.conditions(&everything),
            [
                Condition::MemoryPressure,
                Condition::DiskPressure,
                Condition::PidPressure
            ]
        );
        // Unmeasured signals never count as crossed.
        assert!(t.conditions(&Observations::default()).is_empty());
    }
}
