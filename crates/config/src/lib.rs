//! Node configuration: the document shape and how it is loaded.
//!
//! - [`model`]: the typed document ([`Config`] and its sections) with defaults.
//! - [`load`]: read → parse YAML (or JSON) → substitute `${ENV}` → deserialize → validate,
//!   every error led by its key path.
//! - [`env`]: `${VAR}` / `${VAR:-default}` substitution.
#![warn(missing_docs)]

pub mod env;
pub mod load;
pub mod model;

pub use load::{ConfigError, LoadError, from_file, from_str};
pub use model::{Compression, Config, IngestConfig, ServerConfig, StorageConfig};
