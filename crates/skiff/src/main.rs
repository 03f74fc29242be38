//! The `skiff` binary: parse arguments, set up logging, run.
fn main() {}
