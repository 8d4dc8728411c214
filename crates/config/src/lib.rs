//! Node configuration: the document shape and how it is loaded.
//!
//! - [`model`]: the typed document ([`Config`] and its sections) with defaults.
//! - [`load`]: read → parse YAML (or JSON) → substitute `${ENV}` → deserialize → validate,
//!   every error led by its key path.
//! - [`pipelines`]: the topology sections (`sources`, `scripts`, `sinks`, `pipelines`,
//!   `tests`) and their reference checks.
//! - [`scripts`]: the compiled `scripts:` section and resolving script references.
//! - [`lanes`]: `lanes:` (priority lanes, capacities, overflow policies) and `control:`.
//! - [`ai`]: `ai:` (model providers, prices, rate limits, the spend budget, the cache).
//! - [`security`]: `server.auth` (bearer tokens and scopes), `tls:`.
//! - [`env`]: `${VAR}` / `${VAR:-default}` substitution.
#![warn(missing_docs)]

pub mod ai;
pub mod env;
pub mod lanes;
pub mod load;
pub mod model;
pub mod pipelines;
pub mod scripts;
pub mod security;

pub use ai::{AiConfig, Nanos, ProviderApi, ProviderConfig};
pub use lanes::{ControlConfig, LaneConfig, LaneSection, LanesConfig, Overflow, Thresholds};
pub use load::{
    Checked, ConfigError, LoadError, check_file, check_str, from_file, from_str, load_script_files,
};
pub use model::{Compression, Config, IngestConfig, ServerConfig, StorageConfig};
pub use pipelines::{
    Balance, ComponentConfig, OnError, PipelineConfig, ScriptSource, SourceConfig, StartFrom,
    TestCase, TestEvent, TestExpect, typed_options,
};
pub use scripts::ScriptLibrary;
pub use security::{AuthConfig, Scope, TlsConfig, TokenConfig, TokensConfig};
