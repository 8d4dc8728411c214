//! Computo, the JSON-native transform language: compile a script once, evaluate it many times.
//!
//! A script is a JSON document in which `["op", arg, …]` calls an operator. This crate
//! implements the dialect described in `shared/design/computo-language.md` (the reference
//! implementation at commit `23145f7`), with colloquium's one departure: integer arithmetic stays
//! integral (section 6). It knows nothing about events; a pipeline passes the event's data as
//! input 0 and its metadata object as input 1.
//!
//! ```
//! use serde_json::json;
//!
//! let script = computo::compile(&json!(["obj", ["result", ["+", ["get", ["$input"], "/value"], 10]]]))?;
//! let data = json!({"value": 5});
//! let meta = json!({"event_id": "01J0000000000000000000000A"});
//! assert_eq!(script.eval(&[&data, &meta])?, json!({"result": 15}));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - [`op`]: the operator table, resolved at compile time.
//! - `compile`: the script document → expression tree, with arity and shape checks.
//! - `eval`: the evaluator (dynamic scope, budgets, stack growth).
//! - `value`: values during evaluation, borrowing from the script and the inputs.
//! - `arith`: numbers under the integer rule; `pointer`: JSON Pointers for `get`.
//! - [`Limits`], [`Inputs`], and the errors [`CompileError`] and [`EvalError`].
#![warn(missing_docs)]

mod arith;
mod compile;
mod error;
mod eval;
mod inputs;
mod limits;
pub mod op;
mod pointer;
mod value;

use serde_json::Value;

pub use error::{BudgetExceeded, CompileError, CompileErrorKind, EvalError, EvalErrorKind};
pub use inputs::Inputs;
pub use limits::Limits;
pub use op::Op;

/// Compares two JSON values as the language's `==` does: numbers by value (`1` equals `1.0`;
/// two integers exactly), object key order ignored, kinds never equal across (`1` is not `"1"`
/// nor `true`).
pub fn json_equal(a: &Value, b: &Value) -> bool {
    value::json_eq(a, b)
}

/// A compiled script: immutable, `Send + Sync`, evaluated from any number of threads at once.
#[derive(Debug)]
pub struct Script {
    root: compile::Node,
    limits: Limits,
}

/// Compiles a script with the default [`Limits`].
pub fn compile(script: &Value) -> Result<Script, CompileError> {
    compile_with(script, Limits::default())
}

/// Compiles a script with the given limits (they apply to compiling and to every evaluation).
pub fn compile_with(script: &Value, limits: Limits) -> Result<Script, CompileError> {
    let root = compile::Compiler::new(&limits, String::new()).script(script)?;
    Ok(Script { root, limits })
}

impl Script {
    /// Evaluates the script against `inputs` and returns its result.
    ///
    /// `inputs` may be a slice of values or of references (`&[&data, &meta]`); either way they
    /// are read in place, and only the parts that end up in the result are copied.
    pub fn eval<'i>(&self, inputs: impl Into<Inputs<'i>>) -> Result<Value, EvalError> {
        eval::eval(&self.root, &self.limits, inputs.into())
    }

    /// Evaluates the script as a predicate: returns the truthiness of its result (section 3),
    /// exactly as `["if", script, …]` would judge it, without building the result as JSON.
    /// (One corner differs from the printed result: a number that overflowed to infinity is
    /// truthy, though it prints as `null`, as in the reference.)
    pub fn eval_bool<'i>(&self, inputs: impl Into<Inputs<'i>>) -> Result<bool, EvalError> {
        eval::eval_truthy(&self.root, &self.limits, inputs.into())
    }

    /// The limits this script was compiled with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Script>();
    }
}
