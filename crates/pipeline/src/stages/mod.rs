//! Built-in stages, one file each. Adding one: a file implementing [`StageConfig`] and
//! [`Stage`](crate::Stage), and one line in the binary's `registry.rs`.
//!
//! [`StageConfig`]: crate::StageConfig

pub mod alert;
pub mod dedup;
pub mod filter;
pub mod idempotency;
pub mod set;
pub mod transform;
pub mod window;
