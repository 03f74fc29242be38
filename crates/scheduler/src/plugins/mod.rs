//! Skiff's implementations of upstream's default plugins, under upstream's names and with
//! upstream's rules, messages and default weights. Each file's unit tests follow the examples
//! of the upstream documentation for that feature.

pub mod default_binder;
pub mod default_preemption;
pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod queue_sort;
pub mod scheduling_gates;
pub mod taint_toleration;
pub mod volumes;

#[cfg(test)]
pub(crate) mod testing;

use crate::framework::MAX_NODE_SCORE;

/// Scale scores so the highest is [`MAX_NODE_SCORE`] (upstream `DefaultNormalizeScore`);
/// `reverse` turns them around so the lowest raw score wins.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let mut v = MAX_NODE_SCORE * *s / max;
        if reverse {
            v = MAX_NODE_SCORE - v;
        }
        *s = v;
    }
}

/// Implements the `as_*` accessors of [`crate::framework::Plugin`] for the listed points.
#[macro_export]
macro_rules! extension_points {
    ($($point:ident => $tr:ident),* $(,)?) => {
        $(
            fn $point(&self) -> Option<&dyn $crate::framework::$tr> {
                Some(self)
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizing_scales_to_the_maximum() {
        let mut s = vec![0, 5, 10];
        default_normalize(&mut s, false);
        assert_eq!(s, [0, 50, 100]);
        let mut s = vec![0, 5, 10];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 50, 0]);
        let mut s = vec![0, 0];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 100]);
    }
}
