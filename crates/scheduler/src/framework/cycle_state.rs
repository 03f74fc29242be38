//! [`CycleState`]: what plugins compute for one pod in one scheduling cycle (PreFilter results
//! read by Filter, PreScore results read by Score), keyed by plugin. It can be cloned, so
//! preemption can simulate removing pods without disturbing the real cycle.

use std::any::Any;

use rustc_hash::{FxHashMap, FxHashSet};

/// Data a plugin keeps in the cycle state: anything cloneable and thread-safe.
pub trait StateData: Any + Send + Sync {
    /// A boxed copy.
    fn clone_data(&self) -> Box<dyn StateData>;
    /// As `Any`, for downcasting.
    fn as_any(&self) -> &dyn Any;
    /// As mutable `Any`, for downcasting.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Clone + Send + Sync> StateData for T {
    fn clone_data(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Per-cycle plugin state. Its maps are looked up for every node a cycle filters and scores,
/// by short static keys: a fast hasher (no protection against chosen keys needed).
#[derive(Default)]
pub struct CycleState {
    data: FxHashMap<&'static str, Box<dyn StateData>>,
    /// Plugins whose PreFilter returned Skip: their Filter is not run.
    pub skip_filter: FxHashSet<&'static str>,
    /// Plugins whose PreScore returned Skip: their Score is not run.
    pub skip_score: FxHashSet<&'static str>,
    /// Keys of data only the scheduling cycle reads.
    cycle_only: FxHashSet<&'static str>,
}

impl Clone for CycleState {
    fn clone(&self) -> Self {
        CycleState {
            data: self
                .data
                .iter()
                .map(|(k, v)| (*k, (**v).clone_data()))
                .collect(),
            skip_filter: self.skip_filter.clone(),
            skip_score: self.skip_score.clone(),
            cycle_only: self.cycle_only.clone(),
        }
    }
}

impl CycleState {
    /// An empty state.
    pub fn new() -> CycleState {
        CycleState::default()
    }

    /// Store `value` under `key` (usually the plugin name).
    pub fn write<T: StateData>(&mut self, key: &'static str, value: T) {
        self.data.insert(key, Box::new(value));
        self.cycle_only.remove(key);
    }

    /// Store `value` under `key` for the scheduling cycle only (PreFilter results for Filter,
    /// PreScore results for Score): [`CycleState::end_scheduling_cycle`] drops it before the
    /// state goes on to the binding cycle, so results shared with later cycles (kept across
    /// cycles by [`crate::memo`]) are not held by pods still binding, which would make the
    /// next cycle copy them.
    pub fn write_for_cycle<T: StateData>(&mut self, key: &'static str, value: T) {
        self.data.insert(key, Box::new(value));
        self.cycle_only.insert(key);
    }

    /// The scheduling cycle is over: drop the data written with
    /// [`CycleState::write_for_cycle`].
    pub fn end_scheduling_cycle(&mut self) {
        for key in self.cycle_only.drain() {
            self.data.remove(key);
        }
    }

    /// The value under `key`, if it has type `T`.
    pub fn read<T: 'static>(&self, key: &str) -> Option<&T> {
        (**self.data.get(key)?).as_any().downcast_ref()
    }

    /// The value under `key` for changing, if it has type `T`.
    pub fn read_mut<T: 'static>(&mut self, key: &str) -> Option<&mut T> {
        (**self.data.get_mut(key)?).as_any_mut().downcast_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Counts(Vec<u32>);

    #[test]
    fn values_round_trip_and_clones_are_independent() {
        let mut state = CycleState::new();
        state.write("A", Counts(vec![1]));
        let mut copy = state.clone();
        copy.read_mut::<Counts>("A").unwrap().0.push(2);
        assert_eq!(state.read::<Counts>("A"), Some(&Counts(vec![1])));
        assert_eq!(copy.read::<Counts>("A"), Some(&Counts(vec![1, 2])));
        assert!(state.read::<String>("A").is_none());
        assert!(state.read::<Counts>("B").is_none());
    }

    #[test]
    fn cycle_only_data_does_not_reach_the_binding_cycle() {
        let mut state = CycleState::new();
        state.write("Binder", Counts(vec![1]));
        state.write_for_cycle("Spread", Counts(vec![2]));
        let preemption_copy = state.clone();
        state.end_scheduling_cycle();
        assert!(state.read::<Counts>("Spread").is_none());
        assert_eq!(state.read::<Counts>("Binder"), Some(&Counts(vec![1])));
        assert!(preemption_copy.read::<Counts>("Spread").is_some());
    }
}
