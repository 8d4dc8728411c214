//! A firing as the stage's output event (`{key, window_start, window_end, <aggregates>,
//! final, early, update_count}`), and as the row kept for `GET /api/windows`.

use colloquium_event::{Event, Metadata};
use colloquium_windows::{Distinct, Ema, Firing};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::WindowStage;
use super::aggregates::{Function, Output, WindowAgg};
use crate::context::ResultRow;
use crate::stage::StageContext;

/// The results table firings are kept in (`GET /api/windows` reads it): by grouping key,
/// then window start.
pub const WINDOWS: &str = "windows";

/// A firing as kept and emitted: static field names, its aggregates' values in the stage's
/// output order. Serialized straight to the kept row's bytes (no JSON map in between).
pub(super) struct WindowResult<'a> {
    pub(super) key: &'a str,
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) outputs: &'a [Output],
    pub(super) values: &'a [Value],
    pub(super) last: bool,
    pub(super) early: bool,
    pub(super) update_count: u32,
}

impl Serialize for WindowResult<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(6 + self.values.len()))?;
        map.serialize_entry("key", self.key)?;
        map.serialize_entry("window_start", &self.start)?;
        map.serialize_entry("window_end", &self.end)?;
        for (output, value) in self.outputs.iter().zip(self.values) {
            map.serialize_entry(&output.name, value)?;
        }
        map.serialize_entry("final", &self.last)?;
        map.serialize_entry("early", &self.early)?;
        map.serialize_entry("update_count", &self.update_count)?;
        map.end()
    }
}

impl WindowStage {
    /// Emits a firing as an event and keeps it in `windows` (a later firing of the window
    /// overwrites it).
    pub(super) fn result(&mut self, firing: Firing<WindowAgg>, cx: &mut StageContext<'_>) {
        self.counts.early_firings += u64::from(firing.early);
        let mut values = std::mem::take(&mut self.result_values);
        values.clear();
        values.extend((0..self.outputs.len()).map(|index| self.value(&firing.agg, index)));
        let result = WindowResult {
            key: &firing.key,
            start: firing.window.start,
            end: firing.window.end,
            outputs: &self.outputs,
            values: &values,
            last: firing.last,
            early: firing.early,
            update_count: firing.update_count,
        };
        let row = ResultRow {
            key: firing.key.clone(),
            at: firing.window.start,
            id: None,
        };
        cx.keep_json(WINDOWS, row, &result);
        // The event: the same fields, the values moved in.
        let mut data = Map::new();
        data.insert("key".into(), Value::String(firing.key));
        data.insert("window_start".into(), Value::from(firing.window.start));
        data.insert("window_end".into(), Value::from(firing.window.end));
        for (output, value) in self.outputs.iter().zip(values.drain(..)) {
            data.insert(output.name.clone(), value);
        }
        data.insert("final".into(), Value::Bool(firing.last));
        data.insert("early".into(), Value::Bool(firing.early));
        data.insert("update_count".into(), Value::from(firing.update_count));
        self.result_values = values;
        let now = (self.now)();
        cx.emit(Event::at(
            now,
            data,
            Metadata::new("window", self.pipeline.clone()),
        ));
    }

    /// Sessions merged away are no more: their kept results go.
    pub(super) fn retract(&mut self, cx: &mut StageContext<'_>) {
        for (key, window) in self.engine.take_retracted() {
            let row = ResultRow {
                key,
                at: window.start,
                id: None,
            };
            cx.forget(WINDOWS, row);
        }
    }

    /// The value of output `index` of a window's aggregates.
    fn value(&self, agg: &WindowAgg, index: usize) -> Value {
        let output = &self.outputs[index];
        let field = output.field.and_then(|f| agg.fields.get(f));
        let stats = field.map(|f| &f.stats);
        match (output.function, stats) {
            (Function::Count, None) => Value::from(agg.count),
            (Function::Count, Some(s)) => Value::from(s.count()),
            (Function::Ema, _) => {
                let ema = agg.emas.get(index).and_then(Option::as_ref);
                number(ema.and_then(Ema::value))
            }
            (Function::Distinct, _) => {
                let distinct = field.and_then(|f| f.distinct.as_ref());
                Value::from(distinct.map_or(0, Distinct::count))
            }
            (Function::Quantile(q), _) => {
                let sketch = field.and_then(|f| f.sketch.as_ref());
                number(sketch.and_then(|s| s.quantile(q)))
            }
            (_, None) => Value::Null,
            (Function::Sum, Some(s)) => number(Some(s.sum)),
            (Function::Min, Some(s)) => number(s.min),
            (Function::Max, Some(s)) => number(s.max),
            (Function::Avg, Some(s)) => number(s.avg()),
            (Function::Variance, Some(s)) => number(s.moments.variance()),
            (Function::Stddev, Some(s)) => number(s.moments.stddev()),
            (Function::First, Some(s)) => number(s.first.map(|(_, x)| x)),
            (Function::Last, Some(s)) => number(s.last.map(|(_, x)| x)),
        }
    }
}

fn number(x: Option<f64>) -> Value {
    x.and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}
