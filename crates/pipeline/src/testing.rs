//! `colloquium test`: runs the `tests:` section of a config.
//!
//! Each test builds the topology afresh (so stage state such as dedup starts empty), sends its
//! input events through routing and every matching pipeline, and compares the named pipeline's
//! outputs and the dead-letter reasons with what it expects. Test events are deterministic:
//! event `i` has ingest time and timestamp `2026-01-01T00:00:00Z + i` ms and the smallest id of
//! that millisecond, so expected outputs may contain `event_id` and times. Retries do not sleep.

use std::fmt::Write;

use colloquium_config::{Config, ConfigError, TestCase, TestEvent};
use colloquium_event::{Event, Metadata, Priority, Timestamp};
use serde_json::Value;

use crate::registry::Registry;
use crate::topology::Topology;

/// Ingest time of the first test event: 2026-01-01T00:00:00Z.
pub const TEST_EPOCH_MS: u64 = 1_767_225_600_000;

/// The result of one test.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    /// The test's name.
    pub name: String,
    /// `None` when it passed; otherwise what differed, ready to print.
    pub failure: Option<String>,
}

/// Runs every test of `config`. Errors when the topology itself does not build.
pub fn run_tests(
    config: &Config,
    registry: &Registry,
) -> Result<Vec<TestResult>, Vec<ConfigError>> {
    // Build once up front so a broken config is reported as such, not once per test.
    Topology::build(config, registry)?;
    let mut results = Vec::new();
    for (i, test) in config.tests.iter().enumerate() {
        let failure = run_one(config, registry, i, test)?;
        results.push(TestResult {
            name: test.name.clone(),
            failure,
        });
    }
    Ok(results)
}

fn run_one(
    config: &Config,
    registry: &Registry,
    index: usize,
    test: &TestCase,
) -> Result<Option<String>, Vec<ConfigError>> {
    let registry = (registry.clone())
        .with_clock(test_clock)
        .with_sleep(crate::Pipeline::no_wait);
    let mut topology = Topology::build(config, &registry)?;
    for pipeline in topology.pipelines_mut() {
        pipeline.set_sleep(crate::Pipeline::no_wait);
    }
    let target = test
        .pipeline
        .as_ref()
        .and_then(|name| config.pipelines.iter().position(|p| &p.name == name));
    // Expected reasons are the stable names of `Reason`: a typo is a config error, not a
    // test that can never pass.
    let unknown: Vec<ConfigError> = (test.expect.dlq.iter().enumerate())
        .filter_map(|(j, r)| {
            let e = r.parse::<colloquium_event::Reason>().err()?;
            Some(ConfigError::new(
                format!("tests[{index}].expect.dlq[{j}]"),
                e.to_string(),
            ))
        })
        .collect();
    if !unknown.is_empty() {
        return Err(unknown);
    }
    let mut outputs = Vec::new();
    let mut reasons = Vec::new();
    for (j, input) in test.input.iter().enumerate() {
        let event = test_event(config, input, j).map_err(|message| {
            vec![ConfigError::new(
                format!("tests[{index}].input[{j}]"),
                message,
            )]
        })?;
        let delivery = topology.process(event);
        for (pipeline, events) in delivery.outputs {
            if Some(pipeline) == target {
                outputs.extend(events.into_iter().map(|e| Value::Object(e.data)));
            }
        }
        reasons.extend(delivery.failures.into_iter().map(|f| {
            let at = f.pipeline.map(|p| format!(" in {p}")).unwrap_or_default();
            (f.reason, format!("{}{at}: {}", f.reason, f.error))
        }));
    }
    // Then one tick, as a node's step ends with one: a window the inputs' watermark passed
    // fires into the outputs.
    for (i, pipeline) in topology.pipelines_mut().iter_mut().enumerate() {
        let outcomes = futures::executor::block_on(pipeline.tick(test_clock()));
        for outcome in outcomes {
            if Some(i) == target {
                outputs.extend(outcome.outputs.into_iter().map(|e| Value::Object(e.data)));
            }
            reasons.extend(outcome.failures.into_iter().map(|f| {
                let at = f.pipeline.map(|p| format!(" in {p}")).unwrap_or_default();
                (f.reason, format!("{}{at}: {}", f.reason, f.error))
            }));
        }
    }

    let mut report = String::new();
    if let Some(last) = &test.expect.last_outputs {
        let tail = &outputs[outputs.len().saturating_sub(last.len())..];
        if !same_list(last, tail) {
            let _ = writeln!(report, "the last outputs differ (- expected, + actual):");
            report.push_str(&diff(
                &Value::Array(last.clone()),
                &Value::Array(tail.to_vec()),
            ));
        }
    }
    let expected = test.expect.outputs.as_ref();
    if let Some(expected) = expected.filter(|e| !same_list(e, &outputs)) {
        let _ = writeln!(report, "outputs differ (- expected, + actual):");
        report.push_str(&diff(
            &Value::Array(expected.clone()),
            &Value::Array(outputs),
        ));
    }
    let actual_reasons: Vec<&str> = reasons.iter().map(|(r, _)| r.as_str()).collect();
    if actual_reasons != test.expect.dlq {
        let _ = writeln!(
            report,
            "dead letters differ: expected {:?}, got {:?}",
            test.expect.dlq, actual_reasons
        );
        for (_, detail) in &reasons {
            let _ = writeln!(report, "  {detail}");
        }
    }
    let report = report.trim_end().to_owned();
    Ok((!report.is_empty()).then_some(report))
}

/// Processing time in tests: the first input's ingest time, so no input is ever late.
fn test_clock() -> Timestamp {
    Timestamp::from_millis(TEST_EPOCH_MS)
}

fn test_event(config: &Config, input: &TestEvent, index: usize) -> Result<Event, String> {
    let at = Timestamp::from_millis(TEST_EPOCH_MS + u64::try_from(index).unwrap_or(0));
    let source = input.source.clone().unwrap_or_else(|| "http".to_owned());
    let mut metadata = Metadata::new(source, config.ingest.pipeline.clone());
    for (key, value) in &input.metadata {
        // `kafka`: the event as a Kafka source would have consumed it (`{topic, partition,
        // offset, key, headers}`), so stages that read `/metadata/kafka/...` can be tested.
        if key == "kafka" {
            let origin: colloquium_event::KafkaOrigin = serde_json::from_value(value.clone())
                .map_err(|e| format!("metadata.kafka: {e}"))?;
            metadata.topic = Some(origin.topic.clone());
            metadata.routing_key.clone_from(&origin.key);
            metadata.kafka = Some(Box::new(origin));
            continue;
        }
        let text = value
            .as_str()
            .ok_or_else(|| format!("metadata.{key} must be a string"))?;
        match key.as_str() {
            "priority" => {
                metadata.priority = text.parse::<Priority>().map_err(|e| e.to_string())?
            }
            "topic" => metadata.topic = Some(text.to_owned()),
            "routing_key" => metadata.routing_key = Some(text.to_owned()),
            other => {
                return Err(format!(
                    "unknown metadata field `{other}` (priority, topic, routing_key, kafka)"
                ));
            }
        }
    }
    Ok(Event::at(at, input.data.clone(), metadata))
}

/// Lists are equal element by element, numbers by value (`15` equals `15.0`).
fn same_list(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| computo::json_equal(x, y))
}

/// A line diff of the two values as pretty JSON.
fn diff(expected: &Value, actual: &Value) -> String {
    let expected = serde_json::to_string_pretty(expected).unwrap_or_default();
    let actual = serde_json::to_string_pretty(actual).unwrap_or_default();
    let mut out = String::new();
    for change in similar::TextDiff::from_lines(&expected, &actual).iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => "-",
            similar::ChangeTag::Insert => "+",
            similar::ChangeTag::Equal => " ",
        };
        let _ = write!(out, "  {sign} {change}");
        if change.missing_newline() {
            out.push('\n');
        }
    }
    out
}
