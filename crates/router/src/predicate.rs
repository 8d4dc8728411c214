//! `when:` predicates: a Computo script, or a shorthand compiled to plain Rust.
//!
//! A `when:` value is read by its YAML type: a string names a script from `scripts:`, an array is
//! an inline Computo expression, `true`/`false` is a constant, and an object is a shorthand with
//! one key:
//!
//! ```yaml
//! when: {equals: ["/type", "order"]}          # JSON pointer into the event data, a value
//! when: {exists: "/customer/id"}
//! when: {in: ["/country", ["FI", "SE"]]}
//! when: {regex: ["/email", "@example\\.com$"]}
//! when: {gte: ["/amount", 100]}                # also gt, lt, lte
//! when: {all: [{exists: "/a"}, {not: {equals: ["/b", 0]}}]}   # also any, not
//! ```
//!
//! Shorthands never fail: a missing pointer or a value of the wrong type is simply no match. Only
//! a script can fail, and its error is the event's routing error (`route_error`).

use std::sync::Arc;

use colloquium_config::{ConfigError, ScriptLibrary};
use computo::{EvalError, Script};
use regex::Regex;
use serde_json::Value;

/// A compiled `when:`.
#[derive(Debug, Clone)]
pub enum Predicate {
    /// Always this answer (`when` absent, `true` or `false`).
    Const(bool),
    /// A Computo script; its result's truthiness decides.
    Script(Arc<Script>),
    /// The value at the pointer equals this one (numbers by value).
    Equals(String, Value),
    /// The pointer leads to a value (`null` included).
    Exists(String),
    /// The value at the pointer equals one of these.
    In(String, Vec<Value>),
    /// The value at the pointer is a string the pattern matches.
    Regex(String, Regex),
    /// The value at the pointer is a number and compares to this one as given.
    Compare(String, Comparison, f64),
    /// Every one matches.
    All(Vec<Predicate>),
    /// At least one matches.
    Any(Vec<Predicate>),
    /// The inner one does not match.
    Not(Box<Predicate>),
}

/// A numeric comparison of the shorthand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `gt`
    Gt,
    /// `gte`
    Gte,
    /// `lt`
    Lt,
    /// `lte`
    Lte,
}

const SHAPES: &str = "a Computo expression (an array), a script name, true/false, or one of \
    {equals: [ptr, value]}, {exists: ptr}, {in: [ptr, [values]]}, {regex: [ptr, pattern]}, \
    {gt|gte|lt|lte: [ptr, number]}, {all: [...]}, {any: [...]}, {not: ...}";

impl Predicate {
    /// Compiles a `when:` value found at key path `at`.
    pub fn compile(when: &Value, at: &str, scripts: &ScriptLibrary) -> Result<Self, ConfigError> {
        let bad = |message: String| ConfigError::new(at, message);
        let object = match when {
            Value::Bool(b) => return Ok(Predicate::Const(*b)),
            Value::String(_) | Value::Array(_) => {
                return scripts.resolve(when, at).map(Predicate::Script);
            }
            Value::Object(object) if object.len() == 1 => object,
            _ => return Err(bad(format!("expected {SHAPES}"))),
        };
        let Some((key, arg)) = object.iter().next() else {
            return Err(bad(format!("expected {SHAPES}")));
        };
        let at = format!("{at}.{key}");
        let pair = || -> Result<(String, &Value), ConfigError> {
            match arg.as_array().map(Vec::as_slice) {
                Some([Value::String(p), v]) => Ok((pointer(p, &at)?, v)),
                _ => Err(ConfigError::new(
                    &at,
                    format!("expected [pointer, value], got {arg}"),
                )),
            }
        };
        let list = || -> Result<Vec<Predicate>, ConfigError> {
            let Some(items) = arg.as_array().filter(|items| !items.is_empty()) else {
                return Err(ConfigError::new(
                    &at,
                    "expected a non-empty list of predicates",
                ));
            };
            items
                .iter()
                .enumerate()
                .map(|(i, item)| Predicate::compile(item, &format!("{at}[{i}]"), scripts))
                .collect()
        };
        Ok(match key.as_str() {
            "equals" => {
                let (p, v) = pair()?;
                Predicate::Equals(p, v.clone())
            }
            "exists" => match arg {
                Value::String(p) => Predicate::Exists(pointer(p, &at)?),
                _ => return Err(ConfigError::new(&at, "expected a JSON pointer string")),
            },
            "in" => {
                let (p, values) = pair()?;
                let Some(values) = values.as_array() else {
                    return Err(ConfigError::new(&at, "expected [pointer, [values…]]"));
                };
                Predicate::In(p, values.clone())
            }
            "regex" => {
                let (p, pattern) = pair()?;
                let Some(pattern) = pattern.as_str() else {
                    return Err(ConfigError::new(&at, "expected [pointer, pattern string]"));
                };
                let regex = Regex::new(pattern)
                    .map_err(|e| ConfigError::new(&at, format!("bad regex: {e}")))?;
                Predicate::Regex(p, regex)
            }
            "gt" | "gte" | "lt" | "lte" => {
                let (p, n) = pair()?;
                let Some(n) = n.as_f64() else {
                    return Err(ConfigError::new(&at, "expected [pointer, number]"));
                };
                let comparison = match key.as_str() {
                    "gt" => Comparison::Gt,
                    "gte" => Comparison::Gte,
                    "lt" => Comparison::Lt,
                    _ => Comparison::Lte,
                };
                Predicate::Compare(p, comparison, n)
            }
            "all" => Predicate::All(list()?),
            "any" => Predicate::Any(list()?),
            "not" => Predicate::Not(Box::new(Predicate::compile(arg, &at, scripts)?)),
            other => {
                let message = format!("unknown predicate `{other}`: expected {SHAPES}");
                return Err(ConfigError::new(at, message));
            }
        })
    }

    /// Returns whether the predicate holds for an event's data and metadata (script input 1,
    /// built only if a script needs it).
    pub fn matches(
        &self,
        data: &Value,
        meta: &mut dyn FnMut() -> Value,
    ) -> Result<bool, EvalError> {
        let at = |p: &str| data.pointer(p);
        Ok(match self {
            Predicate::Const(b) => *b,
            Predicate::Script(script) => {
                let meta = meta();
                script.eval_bool(&[data, &meta])?
            }
            Predicate::Equals(p, v) => at(p).is_some_and(|x| computo::json_equal(x, v)),
            Predicate::Exists(p) => at(p).is_some(),
            Predicate::In(p, values) => {
                at(p).is_some_and(|x| values.iter().any(|v| computo::json_equal(x, v)))
            }
            Predicate::Regex(p, regex) => at(p)
                .and_then(Value::as_str)
                .is_some_and(|s| regex.is_match(s)),
            Predicate::Compare(p, comparison, n) => {
                at(p)
                    .and_then(Value::as_f64)
                    .is_some_and(|x| match comparison {
                        Comparison::Gt => x > *n,
                        Comparison::Gte => x >= *n,
                        Comparison::Lt => x < *n,
                        Comparison::Lte => x <= *n,
                    })
            }
            Predicate::All(all) => {
                for p in all {
                    if !p.matches(data, meta)? {
                        return Ok(false);
                    }
                }
                true
            }
            Predicate::Any(any) => {
                for p in any {
                    if p.matches(data, meta)? {
                        return Ok(true);
                    }
                }
                false
            }
            Predicate::Not(inner) => !inner.matches(data, meta)?,
        })
    }
}

fn pointer(p: &str, at: &str) -> Result<String, ConfigError> {
    if p.is_empty() || p.starts_with('/') {
        Ok(p.to_owned())
    } else {
        Err(ConfigError::new(
            at,
            format!("`{p}` is not a JSON pointer (it must start with `/`)"),
        ))
    }
}
