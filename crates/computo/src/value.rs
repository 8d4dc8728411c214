//! Values during evaluation: JSON that may borrow from the script and the inputs.
//!
//! Evaluating a script should not copy the event it reads. [`Val::Ref`] borrows a value from the
//! script's literals or an input, lists built by `map`, `filter`, `call`, … hold `Val`s (so a
//! filtered list of input objects is a list of references), and built objects and strings are
//! reference-counted so that binding them to a variable costs nothing. Borrowed JSON is copied
//! when the result is materialized (and a field read out of an object that `obj` or `merge`
//! built is copied out of it); every copy and every built value is charged to the evaluation's
//! output budget ([`Meter`]).

use std::borrow::Cow;
use std::rc::Rc;

use serde_json::{Map, Value};

use crate::arith::Num;
use crate::compile::Lambda;
use crate::error::BudgetExceeded;
use crate::inputs::Inputs;

/// Approximate size charged for one JSON node (the size of a `serde_json::Value`).
const NODE_BYTES: u64 = 32;

/// A value during evaluation.
#[derive(Clone, Debug)]
pub(crate) enum Val<'e> {
    Null,
    Bool(bool),
    Int(i64),
    /// Any double, including the infinities an overflow produces (materialized as `null`).
    Float(f64),
    Str(Rc<str>),
    /// Borrowed from the script or an input; never copied until materialized.
    Ref(&'e Value),
    /// A plain array built during evaluation.
    List(Rc<Built<'e>>),
    /// A `{"array": [...]}` wrapper built by `cdr`, `cons`, `append`, `map`, … .
    Wrapped(Rc<Built<'e>>),
    /// An array or object built as JSON (`obj`, `merge`, a part copied out of one).
    Owned(Rc<Owned>),
    /// `["$inputs"]`: the list of inputs, read in place.
    Inputs(Inputs<'e>),
    /// A lambda written in the script (or compiled from data); its value is its source.
    Lambda(&'e Lambda),
}

/// The items of a built list and how deep the list nests.
#[derive(Debug)]
pub(crate) struct Built<'e> {
    pub(crate) items: Vec<Val<'e>>,
    pub(crate) depth: u32,
}

/// A JSON array or object built during evaluation, and how deep it nests (as far as known).
#[derive(Debug)]
pub(crate) struct Owned {
    pub(crate) value: Value,
    pub(crate) depth: u32,
}

/// What looking up a key in a value found.
pub(crate) enum Field<'e> {
    Found(Val<'e>),
    /// An object without that key.
    Missing,
    NotAnObject,
}

/// The elements of an array value, readable by index without copying.
#[derive(Clone)]
pub(crate) enum Items<'e> {
    Json(&'e [Value]),
    Vals(Rc<Built<'e>>),
    Inputs(Inputs<'e>),
}

impl<'e> Items<'e> {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self {
            Items::Json(a) => a.len(),
            Items::Vals(b) => b.items.len(),
            Items::Inputs(i) => i.len(),
        }
    }

    #[inline]
    pub(crate) fn get(&self, index: usize) -> Option<Val<'e>> {
        match self {
            Items::Json(a) => a.get(index).map(Val::Ref),
            Items::Vals(b) => b.items.get(index).cloned(),
            Items::Inputs(i) => i.get(index).map(Val::Ref),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Val<'e>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

/// The running total of bytes built or copied in one evaluation.
pub(crate) struct Meter {
    used: u64,
    limit: u64,
}

impl Meter {
    pub(crate) fn new(limit: u64) -> Self {
        Meter { used: 0, limit }
    }

    pub(crate) fn charge(&mut self, bytes: u64) -> Result<(), BudgetExceeded> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            return Err(BudgetExceeded::Output(self.limit));
        }
        Ok(())
    }

    pub(crate) fn charge_nodes(&mut self, nodes: usize) -> Result<(), BudgetExceeded> {
        let nodes = u64::try_from(nodes).unwrap_or(u64::MAX);
        self.charge(nodes.saturating_mul(NODE_BYTES))
    }

    /// Deep-copies a JSON value, charging every node and string byte as it goes, so a copy
    /// that would blow the budget stops early instead of exhausting memory first.
    pub(crate) fn copy(&mut self, value: &Value) -> Result<Value, BudgetExceeded> {
        self.charge(NODE_BYTES)?;
        Ok(match value {
            Value::String(s) => {
                self.charge(len64(s.len()))?;
                Value::String(s.clone())
            }
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(self.copy(item)?);
                }
                Value::Array(out)
            }
            Value::Object(map) => {
                let mut out = Map::new();
                for (key, item) in map {
                    self.charge(len64(key.len()))?;
                    out.insert(key.clone(), self.copy(item)?);
                }
                Value::Object(out)
            }
            scalar => scalar.clone(),
        })
    }
}

fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Maps a number result to JSON; an infinity or NaN prints as `null`, as in the reference.
fn float_value(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

impl<'e> Val<'e> {
    /// Wraps a JSON value that is owned (copied out of a built object).
    pub(crate) fn from_value(value: Value, depth: u32) -> Val<'e> {
        match value {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(b),
            Value::Number(n) => match Num::from_json(&n) {
                // Keep a u64 above i64::MAX exact: it is only turned into a double when computed with.
                Num::Float(_) if n.is_u64() => Val::Owned(Rc::new(Owned {
                    value: Value::Number(n),
                    depth: 1,
                })),
                Num::Int(i) => Val::Int(i),
                Num::Float(f) => Val::Float(f),
            },
            Value::String(s) => Val::Str(Rc::from(s)),
            value => Val::Owned(Rc::new(Owned { value, depth })),
        }
    }

    /// The JSON type name, for error messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "boolean",
            Val::Int(_) | Val::Float(_) => "number",
            Val::Str(_) => "string",
            Val::Ref(v) => json_type(v),
            Val::Owned(o) => json_type(&o.value),
            Val::List(_) | Val::Inputs(_) => "array",
            Val::Wrapped(_) => "object",
            Val::Lambda(_) => "lambda",
        }
    }

    /// Truthiness (section 3): `false`, `null`, zero, and empty strings, arrays and objects are
    /// false; everything else is true.
    #[inline]
    pub(crate) fn truthy(&self) -> bool {
        match self {
            Val::Null => false,
            Val::Bool(b) => *b,
            Val::Int(i) => *i != 0,
            Val::Float(f) => *f != 0.0,
            Val::Str(s) => !s.is_empty(),
            Val::Ref(v) => json_truthy(v),
            Val::Owned(o) => json_truthy(&o.value),
            Val::List(b) => !b.items.is_empty(),
            Val::Inputs(i) => !i.is_empty(),
            // A wrapper is a one-key object and a lambda a three-element array.
            Val::Wrapped(_) | Val::Lambda(_) => true,
        }
    }

    #[inline]
    pub(crate) fn number(&self) -> Option<Num> {
        match self {
            Val::Int(i) => Some(Num::Int(*i)),
            Val::Float(f) => Some(Num::Float(*f)),
            Val::Ref(Value::Number(n)) => Some(Num::from_json(n)),
            Val::Owned(o) => match &o.value {
                Value::Number(n) => Some(Num::from_json(n)),
                _ => None,
            },
            _ => None,
        }
    }

    #[inline]
    pub(crate) fn str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::Ref(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// How deep the value nests, as far as evaluation built it (a borrowed value counts as 1:
    /// its real depth is bounded by whoever parsed it).
    #[inline]
    pub(crate) fn depth(&self) -> u32 {
        match self {
            Val::List(b) | Val::Wrapped(b) => b.depth,
            Val::Owned(o) => o.depth,
            _ => 1,
        }
    }

    /// The elements when the value is a plain array (not a wrapper).
    #[inline]
    pub(crate) fn array_items(
        &self,
        meter: &mut Meter,
    ) -> Result<Option<Items<'e>>, BudgetExceeded> {
        Ok(match self {
            Val::Ref(Value::Array(a)) => Some(Items::Json(a)),
            Val::List(b) => Some(Items::Vals(b.clone())),
            Val::Inputs(i) => Some(Items::Inputs(*i)),
            Val::Lambda(l) => Some(Items::Json(
                l.source.as_array().map(Vec::as_slice).unwrap_or_default(),
            )),
            Val::Owned(o) => match &o.value {
                Value::Array(a) => Some(Items::Vals(Rc::new(copied_list(a, o.depth, meter)?))),
                _ => None,
            },
            _ => None,
        })
    }

    /// The list an array operator works on (section 2): a plain array, or the array under the
    /// `"array"` key of any object. The flag says whether it came from such a wrapper.
    pub(crate) fn as_list(
        &self,
        meter: &mut Meter,
    ) -> Result<Option<(Items<'e>, bool)>, BudgetExceeded> {
        if let Some(items) = self.array_items(meter)? {
            return Ok(Some((items, false)));
        }
        Ok(match self.field("array", meter)? {
            Field::Found(inner) => inner.array_items(meter)?.map(|items| (items, true)),
            Field::Missing | Field::NotAnObject => None,
        })
    }

    /// Looks up a key. A field of an object built during evaluation is copied out (charged).
    #[inline]
    pub(crate) fn field(&self, key: &str, meter: &mut Meter) -> Result<Field<'e>, BudgetExceeded> {
        Ok(match self {
            Val::Ref(Value::Object(map)) => map
                .get(key)
                .map_or(Field::Missing, |v| Field::Found(Val::Ref(v))),
            Val::Owned(o) => match &o.value {
                Value::Object(map) => match map.get(key) {
                    Some(v) => {
                        let depth = o.depth.saturating_sub(1).max(1);
                        Field::Found(Val::from_value(meter.copy(v)?, depth))
                    }
                    None => Field::Missing,
                },
                _ => Field::NotAnObject,
            },
            Val::Wrapped(b) if key == "array" => Field::Found(Val::List(b.clone())),
            Val::Wrapped(_) => Field::Missing,
            _ => Field::NotAnObject,
        })
    }

    /// Materializes the value as JSON, copying what it borrows (charged to `meter`).
    pub(crate) fn into_value(self, meter: &mut Meter) -> Result<Value, BudgetExceeded> {
        Ok(match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(b),
            Val::Int(i) => Value::from(i),
            Val::Float(f) => float_value(f),
            Val::Str(s) => {
                meter.charge(len64(s.len()))?;
                Value::String(s.to_string())
            }
            Val::Ref(v) => meter.copy(v)?,
            Val::Lambda(l) => meter.copy(&l.source)?,
            Val::Owned(o) => match Rc::try_unwrap(o) {
                Ok(owned) => owned.value,
                Err(shared) => meter.copy(&shared.value)?,
            },
            Val::Inputs(inputs) => {
                let mut out = Vec::with_capacity(inputs.len());
                for v in inputs.iter() {
                    out.push(meter.copy(v)?);
                }
                Value::Array(out)
            }
            Val::List(b) => Value::Array(built_values(b, meter)?),
            Val::Wrapped(b) => {
                let mut map = Map::new();
                map.insert("array".to_owned(), Value::Array(built_values(b, meter)?));
                Value::Object(map)
            }
        })
    }

    /// Structural equality (section 3): numbers by value, key order ignored, kinds distinct.
    pub(crate) fn equals(
        &self,
        other: &Val<'e>,
        meter: &mut Meter,
    ) -> Result<bool, BudgetExceeded> {
        if let (Val::Ref(a), Val::Ref(b)) = (self, other) {
            return Ok(json_eq(a, b));
        }
        if let (Some(a), Some(b)) = (self.number(), other.number()) {
            return Ok(a.equals(b));
        }
        if let (Some(a), Some(b)) = (self.str(), other.str()) {
            return Ok(a == b);
        }
        if self.is_scalar() || other.is_scalar() {
            return Ok(match (self.scalar_bool(), other.scalar_bool()) {
                (Some(a), Some(b)) => a == b,
                _ => self.is_null() && other.is_null(),
            });
        }
        // Two containers, at least one built: compare their JSON (rare; charged like a copy).
        let a = self.to_json(meter)?;
        let b = other.to_json(meter)?;
        Ok(json_eq(&a, &b))
    }

    fn to_json(&self, meter: &mut Meter) -> Result<Cow<'_, Value>, BudgetExceeded> {
        match self {
            Val::Ref(v) => Ok(Cow::Borrowed(v)),
            Val::Lambda(l) => Ok(Cow::Borrowed(&l.source)),
            Val::Owned(o) => Ok(Cow::Borrowed(&o.value)),
            other => other.clone().into_value(meter).map(Cow::Owned),
        }
    }

    fn is_scalar(&self) -> bool {
        match self {
            Val::Null | Val::Bool(_) | Val::Int(_) | Val::Float(_) | Val::Str(_) => true,
            Val::Ref(v) => !(v.is_array() || v.is_object()),
            Val::Owned(o) => !(o.value.is_array() || o.value.is_object()),
            _ => false,
        }
    }

    fn scalar_bool(&self) -> Option<bool> {
        match self {
            Val::Bool(b) | Val::Ref(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Val::Null | Val::Ref(Value::Null))
    }
}

/// Builds a list value, checking how deep it nests.
pub(crate) fn built(
    items: Vec<Val<'_>>,
    wrapper: bool,
    max_depth: u32,
) -> Result<Rc<Built<'_>>, BudgetExceeded> {
    let inner = items.iter().map(Val::depth).max().unwrap_or(0);
    let depth = inner + 1 + u32::from(wrapper);
    if depth > max_depth {
        return Err(BudgetExceeded::ValueDepth(max_depth));
    }
    Ok(Rc::new(Built { items, depth }))
}

fn built_values(b: Rc<Built<'_>>, meter: &mut Meter) -> Result<Vec<Value>, BudgetExceeded> {
    meter.charge_nodes(b.items.len())?;
    let items = match Rc::try_unwrap(b) {
        Ok(b) => b.items,
        Err(shared) => shared.items.clone(),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(item.into_value(meter)?);
    }
    Ok(out)
}

/// An owned JSON array read as a list: each element is copied out (a rare path: arrays inside
/// objects that `obj` or `merge` built).
fn copied_list<'e>(
    items: &[Value],
    depth: u32,
    meter: &mut Meter,
) -> Result<Built<'e>, BudgetExceeded> {
    let inner = depth.saturating_sub(1).max(1);
    let mut vals = Vec::with_capacity(items.len());
    for item in items {
        vals.push(Val::from_value(meter.copy(item)?, inner));
    }
    Ok(Built { items: vals, depth })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn json_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => Num::from_json(n).as_f64() != 0.0,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// JSON equality with numbers compared by value (two integers exactly, otherwise as doubles).
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, xv)| y.get(k).is_some_and(|yv| json_eq(xv, yv)))
        }
        _ => a == b,
    }
}

fn number_eq(x: &serde_json::Number, y: &serde_json::Number) -> bool {
    let int = |n: &serde_json::Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(x), int(y)) {
        (Some(a), Some(b)) => a == b,
        _ => x.as_f64() == y.as_f64(),
    }
}
