//! `alert`: EventStream's realtime processor as a stage. A predicate raises an alert event
//! to the stage's own sinks (the event itself goes on down the pipeline), and an SLA check
//! dead-letters events that waited too long.
//!
//! - `when` (a Computo expression, a script name, or a shorthand, as in a pipeline's `when:`)
//!   with `sinks`: for each event it is true for, an alert event
//!   `{alert, pipeline, stage, raised_at, event_id, data}` (`data`: the event's) goes to every
//!   sink in `sinks`, and not through the following stages or the pipeline's sinks.
//! - `max_latency`: an event whose processing-time age (now − its ingest time) exceeds it is
//!   dead-lettered with reason `sla_breach` (through `on_error`, `dlq` by default) before the
//!   predicate is looked at: a stale event raises no alert.

use std::sync::Arc;
use std::time::Duration;

use colloquium_config::ConfigError;
use colloquium_event::{Event, Reason, Timestamp};
use colloquium_router::Predicate;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::stage::{
    BuildContext, BuiltStage, Clock, Failed, Stage, StageConfig, StageContext, StageError,
    with_data,
};

/// `{type: alert, when: PREDICATE, sinks: [NAME…], name: NAME, max_latency: 100ms}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Events for which this is true raise an alert.
    #[serde(default)]
    pub when: Option<Value>,
    /// Where alert events go (required with `when`).
    #[serde(default)]
    pub sinks: Vec<String>,
    /// The alert's name in its events (default: the stage's id).
    #[serde(default)]
    pub name: Option<String>,
    /// Longest an event may wait between ingest and this stage.
    #[serde(default, with = "humantime_serde")]
    pub max_latency: Option<Duration>,
}

impl StageConfig for AlertConfig {
    const KIND: &'static str = "alert";
    fn side_sinks(&self) -> Vec<String> {
        self.sinks.clone()
    }

    fn build(self, cx: &BuildContext<'_>) -> Result<BuiltStage, ConfigError> {
        if self.when.is_none() && self.max_latency.is_none() {
            return Err(ConfigError::new(
                cx.at.clone(),
                "needs `when` (with `sinks`), `max_latency`, or both",
            ));
        }
        let predicate = match &self.when {
            Some(when) => {
                if self.sinks.is_empty() {
                    return Err(ConfigError::new(
                        cx.key("sinks"),
                        "`when` raises alerts: name the sinks they go to",
                    ));
                }
                Some(Predicate::compile(when, &cx.key("when"), cx.scripts)?)
            }
            None => None,
        };
        if self.max_latency.is_some_and(|m| m.is_zero()) {
            return Err(ConfigError::new(
                cx.key("max_latency"),
                "must be greater than 0",
            ));
        }
        Ok(BuiltStage::sync(Alert {
            name: Value::String(self.name.unwrap_or_else(|| cx.id.to_string())),
            pipeline: cx.pipeline.clone(),
            stage: cx.id.clone(),
            predicate,
            sinks: self.sinks.into(),
            max_latency: self.max_latency,
            clock: cx.clock,
        }))
    }
}

struct Alert {
    name: Value,
    pipeline: Arc<str>,
    stage: Arc<str>,
    predicate: Option<Predicate>,
    sinks: Arc<[String]>,
    max_latency: Option<Duration>,
    clock: Clock,
}

impl Alert {
    fn alert(&self, event: &Event, now: Timestamp) -> Event {
        let mut data = Map::new();
        data.insert("alert".into(), self.name.clone());
        data.insert("pipeline".into(), Value::from(&*self.pipeline));
        data.insert("stage".into(), Value::from(&*self.stage));
        data.insert("raised_at".into(), Value::from(now.as_millis()));
        data.insert("event_id".into(), Value::from(event.id.to_string()));
        data.insert("data".into(), Value::Object(event.data.clone()));
        Event {
            id: event.id,
            timestamp: now,
            ingest_time: event.ingest_time,
            data,
            metadata: event.metadata.clone(),
        }
    }
}

impl Stage for Alert {
    fn process(&mut self, mut event: Event, cx: &mut StageContext<'_>) -> Result<(), Box<Failed>> {
        let now = (self.clock)();
        if let Some(max) = self.max_latency {
            let age = now
                .as_millis()
                .saturating_sub(event.ingest_time.as_millis());
            if u128::from(age) > max.as_millis() {
                let message = format!(
                    "waited {age} ms from ingest to stage `{}`, over max_latency {} ms",
                    self.stage,
                    max.as_millis()
                );
                let error = StageError::External {
                    reason: Reason::SlaBreach,
                    message,
                };
                return Err(Failed::new(error, event));
            }
        }
        if let Some(predicate) = &self.predicate {
            let pipeline = &self.pipeline;
            let raise = with_data(&mut event, pipeline, |data, meta| {
                predicate.matches(data, meta)
            });
            match raise {
                Ok(true) => {
                    let alert = self.alert(&event, now);
                    cx.side(self.sinks.clone(), alert);
                }
                Ok(false) => {}
                Err(e) => return Err(Failed::new(e, event)),
            }
        }
        cx.emit(event);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Pipeline;
    use crate::registry::Registry;
    use crate::topology::Topology;
    use colloquium_event::{EventId, Metadata};
    use serde_json::json;

    fn pipeline(stages: &str) -> Pipeline {
        let registry = Registry::default().stage::<AlertConfig>();
        let sinks = "sinks: {pager: {type: stdout}}\n";
        crate::stages::test_pipeline(&registry, sinks, stages).unwrap()
    }

    fn event(data: Value, age: Duration) -> Event {
        let ingested = Timestamp::from_millis(
            Timestamp::now()
                .as_millis()
                .saturating_sub(u64::try_from(age.as_millis()).unwrap()),
        );
        Event {
            id: EventId::min_at(ingested),
            timestamp: ingested,
            ingest_time: ingested,
            data: data.as_object().cloned().unwrap(),
            metadata: Metadata::new("http", "default"),
        }
    }

    #[test]
    fn a_match_raises_an_alert_to_its_own_sinks_and_the_event_goes_on() {
        let mut p = pipeline("[{type: alert, name: hot, when: {gt: [/t, 30]}, sinks: [pager]}]");
        let hot = event(json!({"t": 35}), Duration::ZERO);
        let outcome = p.process(&hot);
        assert_eq!(outcome.outputs.len(), 1, "the event itself goes on");
        assert_eq!(outcome.side.len(), 1);
        let alert = &outcome.side[0];
        assert_eq!(&*alert.sinks, ["pager".to_owned()]);
        assert_eq!(alert.event.data["alert"], "hot");
        assert_eq!(alert.event.data["data"], json!({"t": 35}));
        assert_eq!(alert.event.data["event_id"], hot.id.to_string());
        assert_eq!(alert.event.data["stage"], "alert");
        let cold = p.process(&event(json!({"t": 20}), Duration::ZERO));
        assert!(cold.side.is_empty() && cold.outputs.len() == 1);
    }

    #[test]
    fn an_event_older_than_max_latency_is_an_sla_breach_and_raises_nothing() {
        let mut p = pipeline("[{type: alert, when: [true], sinks: [pager], max_latency: 100ms}]");
        let stale = p.process(&event(json!({"t": 1}), Duration::from_secs(5)));
        assert!(stale.outputs.is_empty() && stale.side.is_empty());
        assert_eq!(stale.failures.len(), 1);
        assert_eq!(stale.failures[0].reason, Reason::SlaBreach);
        assert!(
            stale.failures[0].error.contains("max_latency 100 ms"),
            "{}",
            stale.failures[0].error
        );
        let fresh = p.process(&event(json!({"t": 1}), Duration::ZERO));
        assert_eq!((fresh.outputs.len(), fresh.side.len()), (1, 1));
    }

    #[test]
    fn bad_alert_configs_name_their_key() {
        let build = |stages: &str| {
            let yaml = format!(
                "sinks: {{pager: {{type: stdout}}}}\npipelines:\n  - name: p\n    stages: {stages}\n    sinks: [pager]\n"
            );
            let config = colloquium_config::from_str(&yaml, &|_| None).unwrap();
            let registry = Registry::default()
                .stage::<AlertConfig>()
                .sink::<crate::sinks::stdout::StdoutConfig>();
            match Topology::build(&config, &registry) {
                Ok(_) => String::new(),
                Err(errors) => errors.iter().map(ToString::to_string).collect(),
            }
        };
        assert!(build("[{type: alert}]").contains("pipelines[0].stages[0]: needs `when`"));
        assert!(build("[{type: alert, when: [true]}]").contains("stages[0].sinks"));
        assert!(
            build("[{type: alert, when: [true], sinks: [nowhere]}]")
                .contains("unknown sink `nowhere`")
        );
        assert!(build("[{type: alert, max_latency: 0s}]").contains("max_latency"));
        assert_eq!(build("[{type: alert, max_latency: 1s}]"), "");
    }
}
