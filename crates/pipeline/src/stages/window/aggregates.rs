//! What a window keeps (its count, per-field statistics and sketches, EMAs) and the outputs
//! computed from it when it fires.

use colloquium_windows::{Distinct, Ema, Merge, Quantiles, Stats};
use serde::{Deserialize, Serialize};

/// One output's function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Function {
    /// `pNN`: the 0.NN quantile (`p50`, `p95`, `p999`), from a DDSketch (1 % relative error).
    Quantile(f64),
    /// Distinct values of any JSON kind: exact up to 64, then HyperLogLog (≈ 2.3 %).
    Distinct,
    /// `{ema: /pointer, half_life: 10s}`: an event-time exponential moving average.
    Ema,
    Count,
    Sum,
    Min,
    Max,
    Avg,
    Variance,
    Stddev,
    First,
    Last,
}

impl Function {
    pub(super) fn named(name: &str) -> Option<Function> {
        Some(match name {
            "count" => Function::Count,
            "sum" => Function::Sum,
            "min" => Function::Min,
            "max" => Function::Max,
            "avg" => Function::Avg,
            "variance" => Function::Variance,
            "stddev" => Function::Stddev,
            "first" => Function::First,
            "last" => Function::Last,
            "distinct" => Function::Distinct,
            p if p.len() > 1
                && p.starts_with('p')
                && p[1..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                let digits = &p[1..];
                let n: f64 = digits.parse().ok()?;
                let exponent = i32::try_from(digits.len()).ok()?;
                Function::Quantile(n / 10f64.powi(exponent))
            }
            _ => return None,
        })
    }
}

/// One output: its name, function, and the field it reads (an index into `fields`).
#[derive(Debug, Clone)]
pub(super) struct Output {
    pub(super) name: String,
    pub(super) function: Function,
    pub(super) field: Option<usize>,
    /// For `ema`: ms for a weight to halve.
    pub(super) half_life: f64,
}

/// What a window keeps: its event count, what it keeps of each field read, and its EMAs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct WindowAgg {
    pub(super) count: u64,
    pub(super) fields: Vec<FieldAgg>,
    /// Per output, its moving average when it is an `ema` (empty when none is).
    pub(super) emas: Vec<Option<Ema>>,
}

/// One field's statistics, and its sketches when a quantile or a distinct count of it is
/// asked for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct FieldAgg {
    pub(super) stats: Stats,
    pub(super) sketch: Option<Quantiles>,
    pub(super) distinct: Option<Distinct>,
}

/// What one event brings to a window: per field, its number and (when counted) the hash of
/// its value.
pub(super) struct Sample<'a> {
    pub(super) ts: i64,
    pub(super) values: &'a [Option<f64>],
    pub(super) hashes: &'a [Option<u64>],
    pub(super) sketched: &'a [bool],
    pub(super) outputs: &'a [Output],
}

/// Lengthens `v` to `len` with defaults, taking exactly that room: a growing Vec takes room for
/// 4 at least, ~900 bytes a window for the per-field statistics.
pub(super) fn grow_exact<T: Default>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.reserve_exact(len - v.len());
        v.resize_with(len, T::default);
    }
}

impl WindowAgg {
    pub(super) fn add(&mut self, sample: &Sample<'_>) {
        self.count += 1;
        grow_exact(&mut self.fields, sample.values.len());
        for (i, field) in self.fields.iter_mut().enumerate() {
            if let Some(hash) = sample.hashes.get(i).copied().flatten() {
                field
                    .distinct
                    .get_or_insert_with(Distinct::default)
                    .push(hash);
            }
            let Some(x) = sample.values.get(i).copied().flatten() else {
                continue;
            };
            field.stats.push(sample.ts, x);
            if sample.sketched.get(i).copied().unwrap_or(false) {
                field.sketch.get_or_insert_with(Quantiles::default).push(x);
            }
        }
        for (n, output) in sample.outputs.iter().enumerate() {
            if let (Function::Ema, Some(f)) = (output.function, output.field)
                && let Some(Some(x)) = sample.values.get(f)
            {
                grow_exact(&mut self.emas, sample.outputs.len());
                self.emas[n]
                    .get_or_insert_with(|| Ema::new(output.half_life))
                    .push(sample.ts, *x);
            }
        }
    }
}

impl Merge for WindowAgg {
    fn merge(&mut self, other: &Self) {
        self.count += other.count;
        grow_exact(&mut self.fields, other.fields.len());
        for (mine, theirs) in self.fields.iter_mut().zip(&other.fields) {
            mine.stats.merge(&theirs.stats);
            if let Some(theirs) = &theirs.sketch {
                mine.sketch
                    .get_or_insert_with(Quantiles::default)
                    .merge(theirs);
            }
            if let Some(theirs) = &theirs.distinct {
                mine.distinct
                    .get_or_insert_with(Distinct::default)
                    .merge(theirs);
            }
        }
        grow_exact(&mut self.emas, other.emas.len());
        for (mine, theirs) in self.emas.iter_mut().zip(&other.emas) {
            if let Some(theirs) = theirs {
                match mine {
                    Some(mine) => mine.merge(theirs),
                    None => *mine = Some(*theirs),
                }
            }
        }
    }
}
