//! The inputs a script reads: `["$input"]` is the first, `["$inputs"]` all of them.
//!
//! Inputs are borrowed for one evaluation, never copied: a pipeline passes the event's data and
//! its metadata object by reference (`&[&data, &meta]`), a caller that owns a slice of values
//! passes that.

use serde_json::Value;

/// Borrowed inputs for one evaluation.
#[derive(Clone, Copy, Debug)]
pub enum Inputs<'i> {
    /// A slice of values.
    Values(&'i [Value]),
    /// A slice of references, so that values living in different places need no copy.
    Refs(&'i [&'i Value]),
}

impl<'i> Inputs<'i> {
    /// How many inputs there are.
    pub fn len(&self) -> usize {
        match self {
            Inputs::Values(v) => v.len(),
            Inputs::Refs(r) => r.len(),
        }
    }

    /// Returns whether there are no inputs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The input at `index`.
    pub fn get(&self, index: usize) -> Option<&'i Value> {
        match self {
            Inputs::Values(v) => v.get(index),
            Inputs::Refs(r) => r.get(index).copied(),
        }
    }

    /// Every input in order.
    pub fn iter(&self) -> impl Iterator<Item = &'i Value> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl<'i> From<&'i [Value]> for Inputs<'i> {
    fn from(values: &'i [Value]) -> Self {
        Inputs::Values(values)
    }
}

impl<'i> From<&'i Vec<Value>> for Inputs<'i> {
    fn from(values: &'i Vec<Value>) -> Self {
        Inputs::Values(values)
    }
}

impl<'i, const N: usize> From<&'i [Value; N]> for Inputs<'i> {
    fn from(values: &'i [Value; N]) -> Self {
        Inputs::Values(values)
    }
}

impl<'i> From<&'i [&'i Value]> for Inputs<'i> {
    fn from(refs: &'i [&'i Value]) -> Self {
        Inputs::Refs(refs)
    }
}

impl<'i, const N: usize> From<&'i [&'i Value; N]> for Inputs<'i> {
    fn from(refs: &'i [&'i Value; N]) -> Self {
        Inputs::Refs(refs)
    }
}
