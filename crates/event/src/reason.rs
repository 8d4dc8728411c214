//! Why an event was dead-lettered, and whose fault that was.
//!
//! One enum for every layer: the string form ([`Reason::as_str`]) is what the API returns, what
//! the `reason` metric label holds and what `colloquium test` prints, so it never changes for a
//! variant. The [`Fault`] of a reason drives what the node does about it: the event's fault goes
//! through `on_error`; an external system's is retried, then dead-lettered for a later replay;
//! ours (a bug or a corrupt store) is never blamed on the event.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Whose fault a failure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The event's: malformed, unroutable, refused by a script or a downstream system.
    Input,
    /// An external system's (a sink or a provider is down): the same event may pass later.
    External,
    /// Ours: corrupt stored state, a broken invariant. Stops the pipeline with the reason.
    Internal,
}

macro_rules! reasons {
    ($($variant:ident = $text:literal, $fault:ident, $doc:literal;)*) => {
        /// A dead-letter reason. Serialized as its stable string form.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $(#[doc = $doc] $variant,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The stable string form (`no_route`, `script_error`, …).
            pub const fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => $text,)* }
            }

            /// Whose fault a failure of this reason is.
            pub const fn fault(self) -> Fault {
                match self { $(Reason::$variant => Fault::$fault,)* }
            }
        }

        impl FromStr for Reason {
            type Err = UnknownReason;
            fn from_str(s: &str) -> Result<Self, UnknownReason> {
                match s {
                    $($text => Ok(Reason::$variant),)*
                    _ => Err(UnknownReason(s.to_owned())),
                }
            }
        }
    };
}

reasons! {
    NoRoute = "no_route", Input, "No pipeline's `from` and `when` match the event.";
    RouteError = "route_error", Input, "A pipeline's `when` failed on the event.";
    ScriptError = "script_error", Input, "A Computo script failed on the event.";
    BadOutput = "bad_output", Input, "A transform returned something that is not events.";
    BadValue = "bad_value", Input, "A value a stage needs is missing or of the wrong kind.";
    BadPayload = "bad_payload", Input, "A source received a payload that is not a JSON object.";
    MalformedFrame = "malformed_frame", Input, "A binary frame broke the wire format.";
    SchemaInvalid = "schema_invalid", Input, "The event failed its JSON Schema.";
    Late = "late", Input, "The event arrived after its window closed.";
    SinkRejected = "sink_rejected", Input, "A sink's downstream system refused the event.";
    DlqSink = "dlq_sink", Input, "A pipeline sent the event to the `dlq` sink on purpose.";
    Overflow = "overflow", External, "A lane was full and its policy dead-letters.";
    SinkError = "sink_error", External, "A sink could not deliver after its retries.";
    ProviderUnavailable = "provider_unavailable", External, "An AI provider was down or refused.";
    BudgetExhausted = "budget_exhausted", External, "A spending budget ran out.";
    AiInvalid = "ai_invalid", External, "An AI provider's answer did not match the stage's schema, asked twice.";
    SlaBreach = "sla_breach", External, "The event waited longer than its lane's SLA.";
    MaxRetriesExceeded = "max_retries_exceeded", External, "The steps an `idempotency` stage protects failed on every attempt.";
    LimitExceeded = "limit_exceeded", External, "A stage's memory cap (keys, windows) was reached.";
    InternalError = "internal_error", Internal, "Ours (corrupt stage state): stops the pipeline instead.";
}

impl Reason {
    /// A sink failure: replayed to the pipeline's sinks, not through its stages again.
    pub fn is_sink_failure(self) -> bool {
        matches!(self, Reason::SinkError | Reason::SinkRejected)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason string this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dead-letter reason `{0}`")]
pub struct UnknownReason(pub String);

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_its_string_form() {
        let mut seen = std::collections::BTreeSet::new();
        for reason in Reason::ALL {
            assert!(seen.insert(reason.as_str()), "{reason} twice");
            assert_eq!(reason.as_str().parse::<Reason>(), Ok(*reason));
            let json = serde_json::to_string(reason).unwrap();
            assert_eq!(json, format!("\"{reason}\""));
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), *reason);
        }
        assert!("nope".parse::<Reason>().is_err());
        assert_eq!(Reason::SinkError.fault(), Fault::External);
        assert_eq!(Reason::ScriptError.fault(), Fault::Input);
        assert_eq!(Reason::InternalError.fault(), Fault::Internal);
    }
}
