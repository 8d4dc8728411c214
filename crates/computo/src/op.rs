//! The operator table: every name the dialect knows, resolved once at compile time.
//!
//! Evaluation matches on [`Op`], never on a name, so the per-event path does no string work to
//! find an operator. The table is the whole dialect (language description, section 5.12).

use std::fmt;

/// One operator of the dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // each variant is documented by its name in `NAMES`
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Gt,
    Lt,
    Ge,
    Le,
    Eq,
    Ne,
    And,
    Or,
    Not,
    Input,
    Inputs,
    Var,
    Let,
    Get,
    Obj,
    If,
    Map,
    Filter,
    Reduce,
    Count,
    Find,
    Some,
    Every,
    Zip,
    Car,
    Cdr,
    Cons,
    Append,
    Lambda,
    Call,
    StrConcat,
    Merge,
    Approx,
}

/// How many argument expressions an operator takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Exactly(usize),
    /// This many or more.
    AtLeast(usize),
}

impl Arity {
    /// Returns whether `n` arguments are accepted.
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::AtLeast(k) => n >= k,
        }
    }
}

impl fmt::Display for Arity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (word, n) = match *self {
            Arity::Exactly(n) => ("exactly", n),
            Arity::AtLeast(n) => ("at least", n),
        };
        let plural = if n == 1 { "" } else { "s" };
        write!(f, "{word} {n} argument{plural}")
    }
}

const NAMES: &[(&str, Op, Arity)] = &[
    ("+", Op::Add, Arity::AtLeast(1)),
    ("-", Op::Sub, Arity::AtLeast(1)),
    ("*", Op::Mul, Arity::AtLeast(1)),
    ("/", Op::Div, Arity::AtLeast(1)),
    ("%", Op::Rem, Arity::AtLeast(2)),
    (">", Op::Gt, Arity::AtLeast(2)),
    ("<", Op::Lt, Arity::AtLeast(2)),
    (">=", Op::Ge, Arity::AtLeast(2)),
    ("<=", Op::Le, Arity::AtLeast(2)),
    ("==", Op::Eq, Arity::AtLeast(2)),
    ("!=", Op::Ne, Arity::Exactly(2)),
    ("&&", Op::And, Arity::AtLeast(1)),
    ("||", Op::Or, Arity::AtLeast(1)),
    ("not", Op::Not, Arity::Exactly(1)),
    ("$input", Op::Input, Arity::Exactly(0)),
    ("$inputs", Op::Inputs, Arity::Exactly(0)),
    ("$", Op::Var, Arity::Exactly(1)),
    ("let", Op::Let, Arity::Exactly(2)),
    ("get", Op::Get, Arity::Exactly(2)),
    ("obj", Op::Obj, Arity::AtLeast(1)),
    ("if", Op::If, Arity::Exactly(3)),
    ("map", Op::Map, Arity::Exactly(2)),
    ("filter", Op::Filter, Arity::Exactly(2)),
    ("reduce", Op::Reduce, Arity::Exactly(3)),
    ("count", Op::Count, Arity::Exactly(1)),
    ("find", Op::Find, Arity::Exactly(2)),
    ("some", Op::Some, Arity::Exactly(2)),
    ("every", Op::Every, Arity::Exactly(2)),
    ("zip", Op::Zip, Arity::Exactly(2)),
    ("car", Op::Car, Arity::Exactly(1)),
    ("cdr", Op::Cdr, Arity::Exactly(1)),
    ("cons", Op::Cons, Arity::Exactly(2)),
    ("append", Op::Append, Arity::Exactly(2)),
    ("lambda", Op::Lambda, Arity::Exactly(2)),
    ("call", Op::Call, Arity::AtLeast(2)),
    ("strConcat", Op::StrConcat, Arity::AtLeast(2)),
    ("merge", Op::Merge, Arity::AtLeast(2)),
    ("approx", Op::Approx, Arity::Exactly(2)),
];

impl Op {
    /// Every operator, in the order of the language description.
    pub fn all() -> impl Iterator<Item = Op> {
        NAMES.iter().map(|&(_, op, _)| op)
    }

    /// Resolves an operator name (case-sensitive); `None` for anything outside the dialect.
    pub fn from_name(name: &str) -> Option<Op> {
        NAMES
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|&(_, op, _)| op)
    }

    /// The name as written in scripts.
    pub fn name(self) -> &'static str {
        self.entry().0
    }

    /// How many argument expressions the operator takes.
    pub fn arity(self) -> Arity {
        self.entry().2
    }

    fn entry(self) -> &'static (&'static str, Op, Arity) {
        // Variants are declared in the table's order, so the discriminant is the index.
        let entry = &NAMES[self as usize];
        debug_assert_eq!(entry.1, self);
        entry
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_resolves_to_its_own_entry() {
        assert_eq!(NAMES.len(), 38);
        for op in Op::all() {
            assert_eq!(Op::from_name(op.name()), Some(op));
        }
        for unknown in ["", "IF", "and", "or", "split", "keys", "$input "] {
            assert_eq!(Op::from_name(unknown), None, "{unknown}");
        }
    }
}
