//! [`CycleState`]: what plugins compute for one pod in one scheduling cycle (PreFilter results
//! read by Filter, PreScore results read by Score), keyed by plugin. It can be cloned, so
//! preemption can simulate removing pods without disturbing the real cycle.

use std::any::Any;
use std::collections::{HashMap, HashSet};

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

/// Per-cycle plugin state.
#[derive(Default)]
pub struct CycleState {
    data: HashMap<&'static str, Box<dyn StateData>>,
    /// Plugins whose PreFilter returned Skip: their Filter is not run.
    pub skip_filter: HashSet<&'static str>,
    /// Plugins whose PreScore returned Skip: their Score is not run.
    pub skip_score: HashSet<&'static str>,
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
}
