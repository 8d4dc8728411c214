//! Resource limits: what a script may cost before it is stopped.
//!
//! A script runs inside the node's event path, so no script and no input may exhaust the stack,
//! the CPU or memory. Compile checks nesting depth; evaluation counts steps, lambda call depth,
//! the bytes of values it builds and how deep they nest. The native stack is grown on the heap
//! when a thread's stack runs low (see `eval`), so the call-depth limit, not the thread's stack
//! size, decides how deep recursion may go.

/// Limits applied to one script. The defaults are generous for event transforms (every case of
/// the conformance suite fits with room to spare) and tight enough that a runaway script fails in
/// tens of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest expression nesting accepted at compile time.
    pub max_nesting: usize,
    /// Most expressions evaluated in one evaluation.
    pub max_steps: u64,
    /// Deepest nesting of lambda applications (recursion through `call`, `map`, …).
    pub max_call_depth: u32,
    /// Most bytes of values built or copied in one evaluation (approximate, counted as JSON
    /// nodes of 32 bytes plus string bytes).
    pub max_output_bytes: u64,
    /// Deepest nesting of a value built during evaluation.
    pub max_value_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_nesting: 256,
            max_steps: 1_000_000,
            max_call_depth: 2_000,
            max_output_bytes: 64 * 1024 * 1024,
            max_value_depth: 256,
        }
    }
}
