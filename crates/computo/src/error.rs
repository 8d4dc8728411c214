//! Compile and evaluation errors.
//!
//! Every error carries the path of the failing sub-expression inside the script, written as a
//! JSON Pointer into the script document (`/1/2/0`; the root is `""`, shown as `(root)`), and the
//! operator involved. Evaluation errors that reject a value name that value's type.

use std::fmt;

use crate::op::{Arity, Op};

/// A script that cannot be compiled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind} at {}", DisplayPath(path))]
pub struct CompileError {
    /// Where in the script the problem is, as a JSON Pointer (`""` is the whole script).
    pub path: String,
    /// What is wrong.
    pub kind: CompileErrorKind,
}

/// What is wrong with a script.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompileErrorKind {
    /// `[]` or `["", …]`: an array expression with nothing to call.
    #[error("empty expression")]
    EmptyExpression,
    /// The first element of an expression is not an operator of the dialect.
    #[error("unknown operator `{0}`")]
    UnknownOperator(String),
    /// An operator got the wrong number of arguments.
    #[error("`{op}` takes {expected}, got {got}")]
    Arity {
        /// The operator.
        op: Op,
        /// What it accepts.
        expected: Arity,
        /// How many it got.
        got: usize,
    },
    /// An argument that must have a fixed form (a `let` binding list, an `obj` pair, a lambda
    /// parameter list, a `$` path) does not.
    #[error("`{op}` {expected}")]
    Shape {
        /// The operator.
        op: Op,
        /// What the argument must look like.
        expected: &'static str,
    },
    /// The script nests deeper than the compile limit.
    #[error("expressions nest deeper than {limit} levels")]
    TooDeep {
        /// The configured maximum nesting depth.
        limit: usize,
    },
}

/// A script that failed while evaluating one set of inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}at {}: {kind}", DisplayOp(*op), DisplayPath(path))]
pub struct EvalError {
    /// The operator that failed (`None` only when materializing a literal result failed).
    pub op: Option<Op>,
    /// Where in the script the failing expression is, as a JSON Pointer. Inside a lambda that
    /// came from data (not written in the script), the path is the script path of the operator
    /// that applied the lambda, then `:` and the path inside the lambda.
    pub path: String,
    /// What went wrong.
    pub kind: EvalErrorKind,
}

/// What went wrong during evaluation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalErrorKind {
    /// An argument has the wrong type.
    #[error("expected {expected}, got {found}")]
    Type {
        /// What the operator accepts there.
        expected: &'static str,
        /// The type of the value it got.
        found: &'static str,
    },
    /// `/` or `%` with a zero divisor.
    #[error("division by zero")]
    DivisionByZero,
    /// `get` with a pointer that does not lead to a value.
    #[error("no value at `{pointer}` ({reason})")]
    PathNotFound {
        /// The pointer as given.
        pointer: String,
        /// Why the walk stopped, naming the type it stopped on.
        reason: String,
    },
    /// A `$` path that cannot be walked.
    #[error("cannot read `{path}` ({reason})")]
    BadVariablePath {
        /// The path as written.
        path: String,
        /// Why the walk stopped, naming the type it stopped on.
        reason: String,
    },
    /// `$` names a variable that no enclosing `let` or lambda defines.
    #[error("undefined variable `{0}`")]
    UndefinedVariable(String),
    /// `car` or `cdr` of an empty list.
    #[error("empty list")]
    EmptyList,
    /// A value used as a function is not a lambda.
    #[error("expected a lambda, got {found}")]
    NotALambda {
        /// The type of the value that was given.
        found: &'static str,
    },
    /// A lambda that arrived as data does not compile.
    #[error("lambda from data does not compile: {0}")]
    LambdaCompile(Box<CompileError>),
    /// An evaluation budget ran out.
    #[error("{0}")]
    Budget(#[from] BudgetExceeded),
}

/// Which evaluation budget ran out (see [`crate::Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BudgetExceeded {
    /// Too many expressions evaluated.
    #[error("evaluation budget exceeded: more than {0} steps")]
    Steps(u64),
    /// Lambda applications nested too deeply (runaway recursion).
    #[error("evaluation budget exceeded: lambdas nested deeper than {0} calls")]
    CallDepth(u32),
    /// Values built during evaluation grew too large.
    #[error("evaluation budget exceeded: values built exceed {0} bytes")]
    Output(u64),
    /// A value built during evaluation nests too deeply.
    #[error("evaluation budget exceeded: a value nests deeper than {0} levels")]
    ValueDepth(u32),
}

impl EvalError {
    /// Returns whether the error is a budget limit rather than a fault of the script's logic.
    pub fn is_budget(&self) -> bool {
        matches!(self.kind, EvalErrorKind::Budget(_))
    }
}

/// Shows a script path, with the root written as `(root)` so a message never ends in "at ".
struct DisplayPath<'a>(&'a str);

impl fmt::Display for DisplayPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(root)")
        } else {
            f.write_str(self.0)
        }
    }
}

struct DisplayOp(Option<Op>);

impl fmt::Display for DisplayOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(op) => write!(f, "`{op}` "),
            None => Ok(()),
        }
    }
}
