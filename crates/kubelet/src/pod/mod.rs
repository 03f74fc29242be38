//! Running pods: observed state, planning, status.

pub mod observed;
pub mod plan;
pub mod status;
