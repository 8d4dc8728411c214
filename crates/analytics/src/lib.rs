//! Per-entity anomaly detection (issue 16): what the `anomaly` stage computes. No I/O, no
//! events: an [`Observation`] is read from an event's JSON, scored against its entity's
//! [`Baseline`], and learned or not.
//!
//! - [`streamguard`]: StreamGuard's detector, reproduced exactly (the conformance suite in
//!   `shared/conformance/streamguard` checks it to 1e-9, and its exact-threshold cases to the
//!   bit): per-user counts of hours, source IPs, places and event types, and failures.
#![warn(missing_docs)]

pub mod streamguard;

pub use streamguard::{
    Baseline, Components, DEFAULT_MAX_VALUES, Detector, Fields, Observation, ParseError,
    ReasonCode, Score, Seen, Verdict, Weights,
};
