//! Every component kind the node knows, one line each. Adding a stage: a file in
//! `crates/pipeline/src/stages/` implementing `StageConfig` + `Stage`, and a line here.

use colloquium_pipeline::Registry;
use colloquium_pipeline::stages::{dedup, filter, set, transform};

/// The stage kinds, by `type:` name.
pub fn registry() -> Registry {
    Registry::default()
        .stage::<transform::TransformConfig>()
        .stage::<filter::FilterConfig>()
        .stage::<set::SetConfig>()
        .stage::<dedup::DedupConfig>()
}
