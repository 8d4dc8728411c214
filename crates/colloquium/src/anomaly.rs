//! `colloquium anomaly`: the `anomaly` stage's detector on NDJSON events from stdin, one result
//! object per line on stdout in the StreamGuard conformance suite's field names
//! (`event_id`, `accepted`, `scored`, `score`, `components`, `reason_codes`, `reasons`,
//! `is_anomaly`, `baseline_updated`, `baseline_events`; `error` for a refused event; `robust`
//! adds its signals to `components`). One baseline per user, in memory, for the run.

use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};

use anyhow::Context;
use colloquium_analytics::{Detector, Fields, Observation, RobustDetector, Scorer, Weights};
use serde_json::{Map, Value};

use crate::cli::{AnomalyArgs, AnomalyModel};

/// Runs the subcommand.
pub fn run(args: &AnomalyArgs) -> anyhow::Result<()> {
    let (min, threshold, weights) = (args.min_events, args.threshold, Weights::default());
    match args.model {
        AnomalyModel::Streamguard => score_stdin(&Detector::new(min, threshold, weights)),
        AnomalyModel::Robust => score_stdin(&RobustDetector::new(min, threshold, weights)),
    }
}

/// Scores stdin's events with `detector`, one profile per user.
fn score_stdin<D: Scorer>(detector: &D) -> anyhow::Result<()> {
    let fields = Fields::default();
    let mut baselines: HashMap<String, D::Profile> = HashMap::new();
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let mut result = Map::new();
        match serde_json::from_str::<Value>(&line) {
            Err(e) => {
                result.insert("event_id".into(), Value::Null);
                result.insert("accepted".into(), Value::Bool(false));
                result.insert(
                    "error".into(),
                    format!("line {}: not JSON: {e}", n + 1).into(),
                );
            }
            Ok(event) => {
                let id = event.get("event_id").filter(|v| v.is_string()).cloned();
                result.insert("event_id".into(), id.unwrap_or(Value::Null));
                match Observation::parse(&event, &fields) {
                    Err(e) => {
                        result.insert("accepted".into(), Value::Bool(false));
                        result.insert("error".into(), e.to_string().into());
                    }
                    Ok(obs) => {
                        let baseline = baselines.entry(obs.entity.to_owned()).or_default();
                        let verdict = detector.observe(baseline, &obs);
                        result.insert("accepted".into(), Value::Bool(true));
                        result.extend(verdict.to_json());
                        result.insert("baseline_events".into(), D::events(baseline).into());
                    }
                }
            }
        }
        serde_json::to_writer(&mut out, &result)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
