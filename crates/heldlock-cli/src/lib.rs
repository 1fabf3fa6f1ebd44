//! The `heldlock` command has no library API. This empty library exists
//! only so that the crate's tests can turn on its own `etcd` feature (a
//! dev-dependency on itself, which Cargo accepts only for a crate with a
//! library); see `Cargo.toml`.
