//! The built-in kinds Skiff serves, being written.
