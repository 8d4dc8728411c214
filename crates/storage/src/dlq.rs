//! The dead-letter queue: events that could not be processed, kept with why and when so they
//! can be inspected and replayed. Key: a ULID of the failure time (time-ordered, like the log).

use colloquium_event::{Event, EventId, Reason, Timestamp};
use serde::{Deserialize, Serialize};

/// One dead-lettered event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Id of this dead letter (not the event's id).
    pub id: EventId,
    /// Why (its stable string form in JSON: `no_route`, `script_error`, …).
    pub reason: Reason,
    /// The full error message.
    pub error: String,
    /// When it failed.
    pub failed_at: Timestamp,
    /// The pipeline it failed in (`None` when no pipeline took it: `no_route`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// The stage it failed in, e.g. `transform#0` (`None` for routing failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// How many times it was tried.
    #[serde(default = "one")]
    pub attempts: u32,
    /// The event as it was when it failed.
    pub event: Event,
}

fn one() -> u32 {
    1
}
