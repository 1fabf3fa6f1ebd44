//! `cargo xtask bench handoff`: hand-off between processes (being written).
fn main() {}
