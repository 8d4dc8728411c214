//! Stage, routing and latency metrics, updated once per committed step.

use colloquium_event::{Lane, Timestamp};

use super::worker::Worker;
use crate::events::{LatencyLabels, RouteLabels, StageLabels, StageMetricLabels};
use crate::pipeline::StageCounts;

impl Worker {
    /// Updates the stage, routing and latency metrics after a committed step; `taken`: per
    /// pipeline, the ingest times (ms) and lanes of the events it took.
    pub(super) fn report(&mut self, taken: &[Vec<(u64, Lane)>]) {
        let now = Timestamp::now().as_millis();
        // Once per pipeline and step, not per event: labels allocate and families hash.
        for (slot, times) in self.slots.iter().zip(taken).filter(|(_, t)| !t.is_empty()) {
            let matched = RouteLabels {
                pipeline: slot.name.to_string(),
                result: "matched",
            };
            let count = u64::try_from(times.len()).unwrap_or(u64::MAX);
            self.metrics.routed.get_or_create(&matched).inc_by(count);
            for lane in Lane::ALL {
                let mut times = times.iter().filter(|(_, l)| *l == lane).peekable();
                if times.peek().is_none() {
                    continue;
                }
                let labels = LatencyLabels {
                    pipeline: slot.name.to_string(),
                    lane: lane.as_str(),
                };
                let latency = self.metrics.latency.get_or_create(&labels);
                for (ingested, _) in times {
                    #[allow(clippy::cast_precision_loss)] // milliseconds, far below 2^52
                    let seconds = now.saturating_sub(*ingested) as f64 / 1000.0;
                    latency.observe(seconds);
                }
            }
        }
        let pipelines = self.topology.pipelines_mut().iter_mut();
        for (slot, pipeline) in self.slots.iter_mut().zip(pipelines).filter(|(l, _)| l.own) {
            let timings = pipeline.stage_timings().into_iter();
            let timings = timings.map(|(stage, name, d)| (stage, name, d.as_secs_f64()));
            observe(&self.metrics.stage_seconds, &slot.name, timings.collect());
            observe(
                &self.metrics.stage_score,
                &slot.name,
                pipeline.stage_scores(),
            );
            let previous = &mut slot.reported;
            for (j, (stage, counts)) in pipeline.stage_counts().enumerate() {
                if previous.len() <= j {
                    previous.push(StageCounts::default());
                }
                let before = previous[j];
                for (outcome, now, then) in [
                    ("in", counts.events_in, before.events_in),
                    ("out", counts.events_out, before.events_out),
                    ("failed", counts.failed, before.failed),
                ] {
                    if now > then {
                        let labels = StageLabels {
                            pipeline: slot.name.to_string(),
                            stage: stage.to_owned(),
                            outcome,
                        };
                        self.metrics
                            .stage_events
                            .get_or_create(&labels)
                            .inc_by(now - then);
                    }
                }
                previous[j] = counts;
            }
            for (stage, metric) in pipeline.stage_metrics() {
                let labels = StageMetricLabels {
                    pipeline: slot.name.to_string(),
                    stage: stage.to_owned(),
                    name: metric.name,
                };
                if !metric.counter {
                    let value = i64::try_from(metric.value).unwrap_or(i64::MAX);
                    self.metrics.stage_gauge.get_or_create(&labels).set(value);
                    continue;
                }
                let before = slot
                    .reported_totals
                    .entry((labels.stage.clone(), metric.name))
                    .or_default();
                // A rebuilt stage (a reload) counts from 0 again.
                let new = metric.value.checked_sub(*before).unwrap_or(metric.value);
                if new > 0 {
                    self.metrics.stage_total.get_or_create(&labels).inc_by(new);
                }
                *before = metric.value;
            }
        }
    }
}

/// Observes each value into `family` under its pipeline, stage and name: one label set per
/// stage and name, however many values.
fn observe(
    family: &colloquium_telemetry::HistogramFamily<StageMetricLabels>,
    pipeline: &str,
    mut values: Vec<(&str, &'static str, f64)>,
) {
    values.sort_by_key(|(stage, name, _)| (*stage, *name));
    for group in values.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        let labels = StageMetricLabels {
            pipeline: pipeline.to_owned(),
            stage: group[0].0.to_owned(),
            name: group[0].1,
        };
        let histogram = family.get_or_create(&labels);
        for (_, _, value) in group {
            histogram.observe(*value);
        }
    }
}
