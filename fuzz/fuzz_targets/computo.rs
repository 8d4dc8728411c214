//! Parse + compile + evaluate arbitrary text as a Computo script and inputs.
//!
//! The input is UTF-8 text: the first line is the script, each further line an input. Beyond
//! "never panics, never overflows the stack", it checks that evaluation is deterministic and
//! that the predicate path (`eval_bool`) agrees with `["if", script, true, false]`.
#![no_main]

use computo::Limits;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::mem::discriminant;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines();
    let Some(Ok(script)) = lines.next().map(serde_json::from_str::<Value>) else {
        return;
    };
    let inputs: Vec<Value> = lines.filter_map(|l| serde_json::from_str(l).ok()).collect();
    // Small budgets keep each run fast; the limits themselves are part of what is fuzzed.
    let limits = Limits {
        max_steps: 50_000,
        max_output_bytes: 4 << 20,
        ..Limits::default()
    };
    let Ok(compiled) = computo::compile_with(&script, limits) else {
        return;
    };
    let first = compiled.eval(&inputs);
    assert_eq!(
        first,
        compiled.eval(&inputs),
        "evaluation must be deterministic"
    );
    // A predicate means what `if` makes of it. (Not the truthiness of the printed result: an
    // overflow to infinity is truthy but prints as null, as in the reference.)
    let as_if = serde_json::json!(["if", script, true, false]);
    let Ok(as_if) = computo::compile_with(&as_if, limits) else {
        return; // one level too deep once wrapped
    };
    let as_bool = compiled.eval_bool(&inputs);
    match (&as_bool, as_if.eval(&inputs)) {
        (Ok(truthy), Ok(expected)) => assert_eq!(Value::Bool(*truthy), expected),
        // Same kind of error; paths differ by the wrapper's `/1`.
        (Err(e), Err(f)) => assert_eq!(discriminant(&e.kind), discriminant(&f.kind)),
        (got, expected) => panic!("eval_bool gave {got:?}, if gave {expected:?}"),
    }
    if let (Ok(v), Err(e)) = (&first, &as_bool) {
        panic!("eval gave {v} but eval_bool failed: {e}");
    }
});
