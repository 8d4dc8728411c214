//! A firing as the stage's output event (`{key, window_start, window_end, <aggregates>,
//! final, early, update_count}`), and as the row kept for `GET /api/windows`.

use colloquium_event::{Event, Metadata};
use colloquium_windows::{Distinct, Ema, Firing};
use serde_json::{Map, Value};

use super::WindowStage;
use super::aggregates::{Function, WindowAgg};
use crate::context::ResultRow;
use crate::stage::StageContext;

/// The results table firings are kept in (`GET /api/windows` reads it): by grouping key,
/// then window start.
pub const WINDOWS: &str = "windows";

impl WindowStage {
    /// Emits a firing as an event and keeps it in `windows` (a later firing of the window
    /// overwrites it).
    pub(super) fn result(&mut self, firing: Firing<WindowAgg>, cx: &mut StageContext<'_>) {
        self.counts.early_firings += u64::from(firing.early);
        let (key, at) = (firing.key.clone(), firing.window.start);
        let event = self.result_event(firing);
        let row = ResultRow { key, at, id: None };
        cx.keep_json(WINDOWS, row, &event.data);
        cx.emit(event);
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

    pub(super) fn result_event(&self, firing: Firing<WindowAgg>) -> Event {
        let mut data = Map::new();
        data.insert("key".into(), Value::String(firing.key));
        data.insert("window_start".into(), Value::from(firing.window.start));
        data.insert("window_end".into(), Value::from(firing.window.end));
        let agg = &firing.agg;
        for (index, output) in self.outputs.iter().enumerate() {
            let field = output.field.and_then(|f| agg.fields.get(f));
            let stats = field.map(|f| &f.stats);
            let value = match (output.function, stats) {
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
            };
            data.insert(output.name.clone(), value);
        }
        data.insert("final".into(), Value::Bool(firing.last));
        data.insert("early".into(), Value::Bool(firing.early));
        data.insert("update_count".into(), Value::from(firing.update_count));
        let now = (self.now)();
        Event::at(now, data, Metadata::new("window", self.pipeline.clone()))
    }
}

fn number(x: Option<f64>) -> Value {
    x.and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}
