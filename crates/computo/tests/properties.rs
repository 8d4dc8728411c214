//! Property tests: random scripts and inputs never panic, and evaluation is a pure function.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use computo::{Limits, Op};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Any JSON value, small.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-3i64..4).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec!["", "a", "x", "/a", "/0", "array", "lambda", "~1"])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec!["a", "b", "array", "x"]).prop_map(String::from),
                inner,
                0..3
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A script: mostly operator calls with plausible shapes, some nonsense.
fn script() -> impl Strategy<Value = Value> {
    let names: Vec<&'static str> = Op::all().map(Op::name).chain(["nope", ""]).collect();
    let leaf = prop_oneof![
        json_value(),
        Just(json!(["$input"])),
        Just(json!(["$inputs"])),
        prop::sample::select(vec!["/x", "/a/0", "/x/a", "/", "x"]).prop_map(|p| json!(["$", p])),
    ];
    leaf.prop_recursive(5, 64, 4, move |inner| {
        prop_oneof![
            4 => (prop::sample::select(names.clone()), prop::collection::vec(inner.clone(), 0..4))
                .prop_map(|(name, args)| {
                    let mut call = vec![Value::from(name)];
                    call.extend(args);
                    Value::Array(call)
                }),
            1 => inner.clone().prop_map(|body| json!(["lambda", ["x"], body])),
            1 => (inner.clone(), inner.clone()).prop_map(|(v, body)| json!(["let", [["x", v]], body])),
            1 => (inner.clone(), inner.clone()).prop_map(|(k, v)| json!(["obj", [k, v]])),
            1 => prop::collection::vec(inner, 0..3).prop_map(|items| json!({"array": items})),
        ]
    })
}

fn limits() -> Limits {
    Limits {
        max_steps: 20_000,
        max_output_bytes: 1 << 20,
        ..Limits::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// Compiling and evaluating never panics; a result is deterministic, and `eval_bool`
    /// means what `if` makes of the script.
    #[test]
    fn random_scripts_return_a_value_or_a_structured_error(
        script in script(),
        inputs in prop::collection::vec(json_value(), 0..3),
    ) {
        let Ok(compiled) = computo::compile_with(&script, limits()) else {
            return Ok(());
        };
        let first = compiled.eval(&inputs);
        prop_assert_eq!(&first, &compiled.eval(&inputs));
        let as_if = computo::compile_with(&json!(["if", script, true, false]), limits()).unwrap();
        let as_bool = compiled.eval_bool(&inputs);
        match (&as_bool, as_if.eval(&inputs)) {
            (Ok(b), Ok(expected)) => prop_assert_eq!(Value::Bool(*b), expected),
            // Same kind of error; paths differ by the wrapper's `/1`.
            (Err(e), Err(f)) => {
                prop_assert_eq!(std::mem::discriminant(&e.kind), std::mem::discriminant(&f.kind));
            }
            (got, expected) => prop_assert!(false, "eval_bool {:?}, if {:?}", got, expected),
        }
        match (first, as_bool) {
            (Err(e), _) => prop_assert!(!e.to_string().is_empty()),
            (Ok(_), Err(e)) => prop_assert!(false, "eval succeeded but eval_bool failed: {}", e),
            (Ok(_), Ok(_)) => {}
        }
    }
}
