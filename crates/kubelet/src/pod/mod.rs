//! Running pods: observed state, planning, status.

pub mod admission;
pub mod env;
pub mod hooks;
pub mod manager;
pub mod observed;
pub mod plan;
pub mod preemption;
pub mod probe;
pub mod spec;
pub mod statics;
pub mod status;
pub mod volumes;
pub mod worker;
