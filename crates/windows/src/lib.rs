//! Event-time windows: the arithmetic the `window` stage is built on (issue 15). No I/O, no
//! events: times are milliseconds as `i64` (event times may precede the epoch).
//!
//! - [`assign`]: which windows an event time belongs to (tumbling, sliding; session windows
//!   start at the event and merge in the engine).
//! - [`detect`]: statistics over a recent horizon (rate, sliding mean/σ/percentiles) and the
//!   z-score test of the `zscore` stage.
//! - [`distinct`]: mergeable distinct counts, exact up to 64, then HyperLogLog (2.3 %).
//! - [`engine`]: open windows per key: what joins, what is late, what fires and closes.
//! - [`watermark`]: the event-time clock: per source, idle sources let go, never backwards.
//! - [`quantiles`]: a mergeable DDSketch, every quantile within 1 % relative error.
//! - [`stats`]: mergeable aggregates: count, sum, min, max, mean, first/last, and Welford's
//!   online variance.
#![warn(missing_docs)]

pub mod assign;
pub mod detect;
pub mod distinct;
pub mod engine;
pub mod quantiles;
pub mod stats;
pub mod watermark;

pub use assign::{Window, WindowSpec};
pub use detect::{Rate, Score, SlidingStats, zscore};
pub use distinct::Distinct;
pub use engine::{Added, Engine, Firing, Merge, Open};
pub use quantiles::Quantiles;
pub use stats::{Ema, Stats, Welford};
pub use watermark::Watermarks;
