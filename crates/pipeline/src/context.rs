//! What one step of a stage may do, through one [`StageContext`]: emit events, send an event
//! to sinks of its own, change its state, keep a queryable result, report a metric. The
//! pipeline gathers all of it and the node commits it with the pipeline's checkpoint, so a
//! restart that redoes a step redoes exactly these writes.
//!
//! The context borrows buffers the pipeline owns ([`Effects`], one per stage): a stage never
//! sees storage types, and a stage that wraps others (`idempotency`) hands them a
//! [`StageContext::nested`] one, so whatever they do reaches the pipeline by construction.

use std::sync::Arc;
use std::time::Duration;

use colloquium_event::{Event, EventId};

use crate::stage::SideOutput;

/// Most timings or scores a stage keeps between two reports (a stage nobody reports, as in a
/// `colloquium test` run, stays bounded).
const MAX_SAMPLES: usize = 65_536;

/// One write to a stage's state, in the stage's own key space.
#[derive(Clone, Debug, PartialEq)]
pub enum StateWrite {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Delete `key`.
    Delete(Vec<u8>),
    /// Delete every key of the stage below this one: one range tombstone, however many keys
    /// it covers.
    DeleteBelow(Vec<u8>),
    /// Delete the keys from the first (inclusive) to the second (exclusive): a wrapped
    /// stage's `DeleteBelow`, which must not reach its wrapper's other rows.
    DeleteRange(Vec<u8>, Vec<u8>),
}

impl StateWrite {
    /// The write with `scope` prepended to its keys.
    fn within(self, scope: &[u8]) -> StateWrite {
        let scoped = |key: &[u8]| [scope, key].concat();
        match self {
            StateWrite::Put(key, value) => StateWrite::Put(scoped(&key), value),
            StateWrite::Delete(key) => StateWrite::Delete(scoped(&key)),
            StateWrite::DeleteBelow(key) => StateWrite::DeleteRange(scope.to_vec(), scoped(&key)),
            StateWrite::DeleteRange(from, to) => {
                StateWrite::DeleteRange(scoped(&from), scoped(&to))
            }
        }
    }
}

/// Where a result row sits in its table: by `key`, then `at` (epoch ms: a window's start, an
/// event's ingest time), then `id` when several rows share a key and a time (one per event).
/// Queries select by key and by a range of `at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultRow {
    /// The grouping key (`""` for a table with one).
    pub key: String,
    /// The row's time (epoch ms).
    pub at: i64,
    /// The event the row is about, when rows share a key and a time.
    pub id: Option<EventId>,
}

/// A result a stage keeps (or removes), for the results column family.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    /// The stage that keeps it (a wrapped stage keeps under its own id).
    pub stage: Arc<str>,
    /// The table, e.g. `windows`.
    pub table: &'static str,
    /// Its place in the table.
    pub row: ResultRow,
    /// Its bytes (JSON for the built-in stages), or `None` to remove the row.
    pub value: Option<Vec<u8>>,
}

/// One figure a stage reports: `colloquium_pipeline_stage_value{pipeline, stage, name}`, or
/// `colloquium_pipeline_stage_total{…}` for a count that only grows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StageMetric {
    /// What it counts, e.g. `open_keys`.
    pub name: &'static str,
    /// Its value now (a counter's total since the stage was built).
    pub value: u64,
    /// Whether it only grows.
    pub counter: bool,
}

/// Everything but events that a stage did since the pipeline last took it.
#[derive(Debug, Default)]
pub struct Effects {
    /// Events sent to sinks of the stage's own, for the current input.
    pub side: Vec<SideOutput>,
    /// State writes, in order.
    pub state: Vec<StateWrite>,
    /// Results kept or removed, in order.
    pub results: Vec<Kept>,
    /// Durations measured (`colloquium_pipeline_stage_seconds`).
    pub timings: Vec<(&'static str, Duration)>,
    /// Scores in [0, 1] given (`colloquium_pipeline_stage_score`).
    pub scores: Vec<(&'static str, f64)>,
    /// The latest value of each figure reported, by name.
    pub metrics: Vec<StageMetric>,
}

impl Effects {
    /// Appends `other`'s effects (an async call's, in input order).
    pub fn append(&mut self, other: &mut Effects) {
        self.side.append(&mut other.side);
        self.state.append(&mut other.state);
        self.results.append(&mut other.results);
        self.timings.append(&mut other.timings);
        self.scores.append(&mut other.scores);
        for metric in other.metrics.drain(..) {
            set_metric(&mut self.metrics, metric);
        }
    }
}

fn set_metric(metrics: &mut Vec<StageMetric>, metric: StageMetric) {
    match metrics.iter_mut().find(|m| m.name == metric.name) {
        Some(slot) => *slot = metric,
        None => metrics.push(metric),
    }
}

/// What a stage may do while it handles an event, a tick or a checkpoint.
pub struct StageContext<'a> {
    out: &'a mut Vec<Event>,
    effects: &'a mut Effects,
    stage: &'a Arc<str>,
    /// Prepended to state keys (a wrapped stage's rows live inside its wrapper's).
    scope: &'a [u8],
}

impl<'a> StageContext<'a> {
    /// A context that emits to `out` and records the rest in `effects`, for stage `stage`.
    pub fn new(out: &'a mut Vec<Event>, effects: &'a mut Effects, stage: &'a Arc<str>) -> Self {
        StageContext {
            out,
            effects,
            stage,
            scope: &[],
        }
    }

    /// The same context with state keys prefixed by `scope` (a wrapped stage's rows, kept
    /// inside its wrapper's).
    pub fn within(mut self, scope: &'a [u8]) -> Self {
        self.scope = scope;
        self
    }

    /// Takes over what was done elsewhere for this stage (a wrapped stage's work during an
    /// async call): state keys get this context's scope.
    pub fn absorb(&mut self, effects: &mut Effects) {
        if !self.scope.is_empty() {
            let writes = std::mem::take(&mut effects.state);
            effects.state = writes.into_iter().map(|w| w.within(self.scope)).collect();
        }
        self.effects.append(effects);
    }

    /// A context for a stage wrapped by this one: it emits to `out`, keeps results under its
    /// own id `stage`, and its state keys are prefixed with `scope` inside this stage's state.
    pub fn nested<'b>(
        &'b mut self,
        out: &'b mut Vec<Event>,
        stage: &'b Arc<str>,
        scope: &'b [u8],
    ) -> StageContext<'b> {
        StageContext {
            out,
            effects: self.effects,
            stage,
            scope,
        }
    }

    /// The stage's id (results are kept under it).
    pub fn stage(&self) -> &Arc<str> {
        self.stage
    }

    /// Emits an event to the following stages.
    pub fn emit(&mut self, event: Event) {
        self.out.push(event);
    }

    /// Emits every event of `events`.
    pub fn emit_all(&mut self, events: impl IntoIterator<Item = Event>) {
        self.out.extend(events);
    }

    /// Sends `event` to `sinks`, past the rest of the pipeline (an `alert`'s alerts). The
    /// stage's config names them ([`crate::StageConfig::side_sinks`]).
    pub fn side(&mut self, sinks: Arc<[String]>, event: Event) {
        self.effects.side.push(SideOutput { sinks, event });
    }

    /// Applies one state write (with this context's scope).
    pub fn write_state(&mut self, write: StateWrite) {
        let write = if self.scope.is_empty() {
            write
        } else {
            write.within(self.scope)
        };
        self.effects.state.push(write);
    }

    /// Sets the state row `key` to `value`.
    pub fn put_state(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.write_state(StateWrite::Put(key, value));
    }

    /// Deletes the state row `key`.
    pub fn delete_state(&mut self, key: Vec<u8>) {
        self.write_state(StateWrite::Delete(key));
    }

    /// Deletes every state row of the stage below `key` (one range tombstone).
    pub fn delete_state_below(&mut self, key: Vec<u8>) {
        self.write_state(StateWrite::DeleteBelow(key));
    }

    /// Keeps `value` as the result at `row` of `table` (replacing what was there), queryable
    /// at `GET /api/results/{pipeline}/{stage}/{table}`.
    pub fn keep(&mut self, table: &'static str, row: ResultRow, value: Vec<u8>) {
        self.effects.results.push(Kept {
            stage: self.stage.clone(),
            table,
            row,
            value: Some(value),
        });
    }

    /// Keeps `value` serialized as JSON (a typed result, serialized once, here).
    pub fn keep_json(
        &mut self,
        table: &'static str,
        row: ResultRow,
        value: &impl serde::Serialize,
    ) {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.keep(table, row, bytes),
            // Only a map with keys that are not strings fails, which no stage keeps.
            Err(error) => {
                tracing::warn!(stage = %self.stage, table, %error, "a result that is not JSON was not kept")
            }
        }
    }

    /// Removes the result at `row` of `table` (a session merged into a larger one).
    pub fn forget(&mut self, table: &'static str, row: ResultRow) {
        self.effects.results.push(Kept {
            stage: self.stage.clone(),
            table,
            row,
            value: None,
        });
    }

    /// Records a duration (`colloquium_pipeline_stage_seconds{name}`).
    pub fn observe(&mut self, name: &'static str, duration: Duration) {
        if self.effects.timings.len() < MAX_SAMPLES {
            self.effects.timings.push((name, duration));
        }
    }

    /// Records a score in [0, 1] (`colloquium_pipeline_stage_score{name}`).
    pub fn score(&mut self, name: &'static str, score: f64) {
        if self.effects.scores.len() < MAX_SAMPLES {
            self.effects.scores.push((name, score));
        }
    }

    /// Reports a figure's value now (`colloquium_pipeline_stage_value{name}`).
    pub fn gauge(&mut self, name: &'static str, value: u64) {
        let metric = StageMetric {
            name,
            value,
            counter: false,
        };
        set_metric(&mut self.effects.metrics, metric);
    }

    /// Reports a count's total since the stage was built (`colloquium_pipeline_stage_total`).
    pub fn total(&mut self, name: &'static str, value: u64) {
        let metric = StageMetric {
            name,
            value,
            counter: true,
        };
        set_metric(&mut self.effects.metrics, metric);
    }
}

/// `usize` as a metric value.
pub fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_stages_writes_stay_inside_its_scope() {
        let (mut out, mut effects) = (Vec::new(), Effects::default());
        let (outer, inner): (Arc<str>, Arc<str>) = (Arc::from("idem"), Arc::from("idem/dedup#0"));
        let mut cx = StageContext::new(&mut out, &mut effects, &outer);
        cx.put_state(b"own".to_vec(), b"1".to_vec());
        let mut emitted = Vec::new();
        {
            let mut nested = cx.nested(&mut emitted, &inner, &[1]);
            nested.put_state(b"k".to_vec(), b"v".to_vec());
            nested.delete_state_below(b"s5".to_vec());
            nested.keep(
                "t",
                ResultRow {
                    key: "a".into(),
                    at: 1,
                    id: None,
                },
                b"{}".to_vec(),
            );
        }
        // Done elsewhere (during an async call) and taken over within a scope.
        let mut elsewhere = Effects::default();
        elsewhere.state.push(StateWrite::DeleteBelow(b"x".to_vec()));
        cx.within(&[2]).absorb(&mut elsewhere);
        assert_eq!(
            effects.state,
            [
                StateWrite::Put(b"own".to_vec(), b"1".to_vec()),
                StateWrite::Put(b"\x01k".to_vec(), b"v".to_vec()),
                // Below `s5` within the scope only: the wrapper's own rows stay.
                StateWrite::DeleteRange(vec![1], b"\x01s5".to_vec()),
                StateWrite::DeleteRange(vec![2], b"\x02x".to_vec()),
            ]
        );
        assert_eq!(
            &*effects.results[0].stage, "idem/dedup#0",
            "kept under its own id"
        );
    }
}
