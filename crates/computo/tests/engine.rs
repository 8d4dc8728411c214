//! The engine's behaviour beyond the conformance suite: the design documents' examples, the
//! integer rule, every operator's error paths (operator, script path and value type), resource
//! budgets, lambdas from data, and use from many threads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use computo::{BudgetExceeded, CompileErrorKind, EvalError, EvalErrorKind, Limits, Op};
use serde_json::{Value, json};

fn eval(script: Value, inputs: &[Value]) -> Value {
    computo::compile(&script).unwrap().eval(inputs).unwrap()
}

fn eval_err(script: Value, inputs: &[Value]) -> EvalError {
    let script = computo::compile(&script).unwrap();
    script.eval(inputs).expect_err("evaluation should fail")
}

fn compile_err(script: Value) -> computo::CompileError {
    computo::compile(&script).expect_err("compile should fail")
}

fn metadata() -> Value {
    json!({
        "event_id": "01J1ZK8Q3X5V7N9B2C4D6F8H0J", "timestamp": 1751284800123_i64,
        "ingest_time": 1751284800125_i64, "source": "http", "pipeline": "orders",
        "routing_key": "eu", "retry_count": 0, "priority": "high", "topic": "orders.created"
    })
}

#[test]
fn design_document_examples_work_as_written() {
    let result = eval(
        json!(["obj", ["result", ["+", ["get", ["$input"], "/value"], 10]]]),
        &[json!({"value": 5})],
    );
    assert_eq!(result, json!({"result": 15}));
    assert!(result["result"].is_i64(), "value + 10 stays an integer");

    let data = json!({"value": 42});
    let script = json!([
        "obj",
        ["event_id", ["get", ["$inputs"], "/1/event_id"]],
        ["data", ["$input"]]
    ]);
    assert_eq!(
        eval(script, &[data.clone(), metadata()]),
        json!({"event_id": "01J1ZK8Q3X5V7N9B2C4D6F8H0J", "data": data})
    );

    let predicate = computo::compile(&json!([
        "&&",
        ["==", ["get", ["$inputs"], "/1/priority"], "high"],
        [">", ["get", ["$input"], "/amount"], 1000]
    ]))
    .unwrap();
    let meta = metadata();
    assert!(
        predicate
            .eval_bool(&[&json!({"amount": 1500}), &meta])
            .unwrap()
    );
    assert!(
        !predicate
            .eval_bool(&[&json!({"amount": 10}), &meta])
            .unwrap()
    );
}

#[test]
fn integers_stay_integral_and_division_is_a_float() {
    let int = |script: Value| {
        let v = eval(script, &[]);
        assert!(v.is_i64(), "{v} should be an integer");
        v
    };
    assert_eq!(int(json!(["+", 1, 2, 3])), json!(6));
    assert_eq!(int(json!(["-", 10, 3, 2])), json!(5));
    assert_eq!(int(json!(["*", 2, 3, 4])), json!(24));
    assert_eq!(int(json!(["%", 20, 6])), json!(2));
    assert_eq!(int(json!(["-", 5])), json!(-5));
    assert_eq!(
        int(json!(["+", 9007199254740993_i64, 0])),
        json!(9007199254740993_i64)
    );

    let float = |script: Value| {
        let v = eval(script, &[]);
        assert!(v.is_f64(), "{v} should be a float");
        v.as_f64().unwrap()
    };
    assert_eq!(float(json!(["/", 6, 2])), 3.0);
    assert_eq!(float(json!(["/", 4])), 0.25);
    assert_eq!(float(json!(["+", 1, 0.5])), 1.5);
    // Overflow falls back to the reference's double, computed left to right.
    assert_eq!(float(json!(["+", i64::MAX, 1])), i64::MAX as f64 + 1.0);
    assert_eq!(float(json!(["*", i64::MAX, 2])), i64::MAX as f64 * 2.0);
    assert_eq!(float(json!(["-", i64::MIN])), -(i64::MIN as f64));
    // A result that overflows a double prints as null, as in the reference; as a predicate it
    // is what `if` makes of it (infinity is not zero, so true). Found by the fuzzer.
    assert_eq!(eval(json!(["*", 1e308, 10]), &[]), Value::Null);
    let overflow = computo::compile(&json!(["*", 1e308, 10])).unwrap();
    assert!(overflow.eval_bool(&[] as &[Value]).unwrap());
    assert_eq!(
        eval(json!(["if", ["*", 1e308, 10], "then", "else"]), &[]),
        json!("then")
    );
    // A u64 input is kept exactly until it is computed with.
    assert_eq!(
        eval(json!(["get", ["$input"], "/n"]), &[json!({"n": u64::MAX})]),
        json!(u64::MAX)
    );
}

/// Asserts an evaluation error's operator, path and kind.
macro_rules! assert_eval_err {
    ($script:expr, $inputs:expr, $op:expr, $path:expr, $kind:pat) => {{
        let err = eval_err($script, $inputs);
        assert_eq!(err.op, Some($op), "{err}");
        assert_eq!(err.path, $path, "{err}");
        assert!(matches!(err.kind, $kind), "unexpected kind: {err}");
        err
    }};
}

#[test]
fn arithmetic_and_comparison_errors_name_the_operator_path_and_type() {
    use EvalErrorKind::{DivisionByZero, Type};
    let err = assert_eval_err!(
        json!(["obj", ["x", ["+", 1, "2"]]]),
        &[],
        Op::Add,
        "/1/1",
        Type {
            expected: "a number",
            found: "string"
        }
    );
    assert_eq!(
        err.to_string(),
        "`+` at /1/1: expected a number, got string"
    );
    assert_eval_err!(
        json!(["-", 1, true]),
        &[],
        Op::Sub,
        "",
        Type {
            found: "boolean",
            ..
        }
    );
    assert_eval_err!(
        json!(["-", null]),
        &[],
        Op::Sub,
        "",
        Type { found: "null", .. }
    );
    assert_eval_err!(
        json!(["*", 2, {"a": 1}]),
        &[],
        Op::Mul,
        "",
        Type {
            found: "object",
            ..
        }
    );
    assert_eval_err!(
        json!(["/", 1, [1]]),
        &[],
        Op::Div,
        "",
        Type { found: "array", .. }
    );
    assert_eval_err!(json!(["/", 1, 2, 0]), &[], Op::Div, "", DivisionByZero);
    assert_eval_err!(json!(["/", 0.0]), &[], Op::Div, "", DivisionByZero);
    assert_eval_err!(json!(["%", 1, 0.0]), &[], Op::Rem, "", DivisionByZero);
    assert_eval_err!(
        json!(["%", "a", 1]),
        &[],
        Op::Rem,
        "",
        Type {
            found: "string",
            ..
        }
    );
    for op in [">", "<", ">=", "<="] {
        let err = eval_err(json!([op, 1, "x"]), &[]);
        assert!(
            matches!(
                err.kind,
                Type {
                    found: "string",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.op.map(Op::name), Some(op));
    }
    // A chain stops at the first false pair, so later operands are not type-checked.
    assert_eq!(eval(json!([">", 1, 2, "x"]), &[]), json!(false));
    assert_eval_err!(
        json!(["approx", 1, null]),
        &[],
        Op::Approx,
        "",
        Type { found: "null", .. }
    );
}

#[test]
fn access_errors_name_the_path_that_failed() {
    use EvalErrorKind::{BadVariablePath, PathNotFound, Type, UndefinedVariable};
    let input = [json!({"a": {"b": [1, 2]}})];
    let err = assert_eval_err!(
        json!(["get", ["$input"], "/a/b/5"]),
        &input,
        Op::Get,
        "",
        PathNotFound { .. }
    );
    assert!(
        err.to_string()
            .contains("index 5 is out of range for an array of 2"),
        "{err}"
    );
    let err = assert_eval_err!(
        json!(["get", ["$input"], "/a/b/0/c"]),
        &input,
        Op::Get,
        "",
        PathNotFound { .. }
    );
    assert!(err.to_string().contains("cannot walk into number"), "{err}");
    assert_eval_err!(
        json!(["get", ["$input"], "a"]),
        &input,
        Op::Get,
        "",
        PathNotFound { .. }
    );
    assert_eval_err!(
        json!(["get", ["$input"], ["+", 1, 1]]),
        &input,
        Op::Get,
        "",
        Type {
            expected: "a string pointer",
            found: "number"
        }
    );
    assert_eval_err!(
        json!(["let", [["x", 1]], ["$", "/y"]]),
        &[],
        Op::Var,
        "/2",
        UndefinedVariable(_)
    );
    assert_eval_err!(
        json!(["let", [["x", [1]]], ["$", "/x/1"]]),
        &[],
        Op::Var,
        "/2",
        BadVariablePath { .. }
    );
    assert_eval_err!(
        json!(["let", [["x", [1]]], ["$", "/x/one"]]),
        &[],
        Op::Var,
        "/2",
        BadVariablePath { .. }
    );
    assert_eval_err!(
        json!(["let", [["x", "s"]], ["$", "/x/0"]]),
        &[],
        Op::Var,
        "/2",
        BadVariablePath { .. }
    );
    assert_eval_err!(
        json!(["obj", [["+", 1, 1], 2]]),
        &[],
        Op::Obj,
        "",
        Type {
            expected: "a string key",
            found: "number"
        }
    );
    assert_eval_err!(
        json!(["strConcat", "a", ["$input"]]),
        &[json!([1])],
        Op::StrConcat,
        "",
        Type { found: "array", .. }
    );
    assert_eval_err!(
        json!(["merge", {"a": 1}, "b"]),
        &[],
        Op::Merge,
        "",
        Type {
            found: "string",
            ..
        }
    );
}

#[test]
fn list_and_function_errors_name_the_operator() {
    use EvalErrorKind::{EmptyList, LambdaCompile, NotALambda, Type};
    let id = json!(["lambda", ["x"], ["$", "/x"]]);
    for op in [Op::Map, Op::Filter, Op::Find, Op::Some, Op::Every] {
        let err = eval_err(json!([op.name(), "abc", id]), &[]);
        assert_eq!(err.op, Some(op));
        assert!(
            matches!(
                err.kind,
                Type {
                    expected: "an array",
                    found: "string"
                }
            ),
            "{err}"
        );
        let err = eval_err(json!([op.name(), [1], 7]), &[]);
        assert!(matches!(err.kind, NotALambda { found: "number" }), "{err}");
    }
    assert_eval_err!(
        json!(["reduce", {"a": 1}, id, 0]),
        &[],
        Op::Reduce,
        "",
        Type {
            found: "object",
            ..
        }
    );
    assert_eval_err!(
        json!(["count", 1]),
        &[],
        Op::Count,
        "",
        Type {
            found: "number",
            ..
        }
    );
    assert_eval_err!(
        json!(["zip", [1], "x"]),
        &[],
        Op::Zip,
        "",
        Type {
            found: "string",
            ..
        }
    );
    assert_eval_err!(json!(["car", {"array": []}]), &[], Op::Car, "", EmptyList);
    assert_eval_err!(
        json!(["cdr", ["$input"]]),
        &[json!([])],
        Op::Cdr,
        "",
        EmptyList
    );
    assert_eval_err!(
        json!(["cons", 1, null]),
        &[],
        Op::Cons,
        "",
        Type { found: "null", .. }
    );
    assert_eval_err!(
        json!(["append", [1], true]),
        &[],
        Op::Append,
        "",
        Type {
            found: "boolean",
            ..
        }
    );
    assert_eval_err!(
        json!(["call", "f", 1]),
        &[],
        Op::Call,
        "",
        NotALambda { found: "string" }
    );
    // A lambda that arrives as data is compiled when first applied; a bad one is an error
    // whose path leads into the data lambda.
    let data = [json!({"f": ["lambda", ["x"], ["nope", 1]]})];
    let err = assert_eval_err!(
        json!(["map", [1], ["get", ["$input"], "/f"]]),
        &data,
        Op::Map,
        "",
        LambdaCompile(_)
    );
    assert!(
        err.to_string().contains("unknown operator `nope` at :/2"),
        "{err}"
    );
    let data = [json!({"f": ["lambda", ["x"], ["/", ["$", "/x"], 0]]})];
    assert_eval_err!(
        json!(["map", [1], ["get", ["$input"], "/f"]]),
        &data,
        Op::Div,
        ":/2",
        EvalErrorKind::DivisionByZero
    );
}

#[test]
fn compile_errors_name_the_operator_and_path() {
    let err = compile_err(json!(["obj", ["a", ["+", 1, ["frob"]]]]));
    assert_eq!(err.path, "/1/1/2");
    assert_eq!(err.kind, CompileErrorKind::UnknownOperator("frob".into()));
    assert_eq!(err.to_string(), "unknown operator `frob` at /1/1/2");
    let err = compile_err(json!(["if", true, 1]));
    assert_eq!(
        err.to_string(),
        "`if` takes exactly 3 arguments, got 2 at (root)"
    );
    let err = compile_err(json!(["let", [["x", 1], [2, 3]], 1]));
    assert_eq!(err.path, "/1/1/0");
    let err = compile_err(json!(["obj", ["a", 1], [2, 3]]));
    assert_eq!(err.path, "/2/0");
    assert_eq!(
        compile_err(json!([])).kind,
        CompileErrorKind::EmptyExpression
    );
    assert_eq!(
        compile_err(json!(["map", [1], ["lambda", "x", 1]])).path,
        "/2"
    );
    // Run-time errors in branches never taken do not fail the script.
    assert_eq!(
        eval(json!(["if", true, 1, ["get", {}, "/x"]]), &[]),
        json!(1)
    );
}

#[test]
fn deep_recursion_ends_in_a_budget_error_even_on_a_small_stack() {
    // A lambda recursing 200,000 times through `call` crashes the reference; here it must end
    // in the call-depth budget, whatever the thread's stack size.
    let script = Arc::new(
        computo::compile(&json!([
            "let",
            [[
                "down",
                [
                    "lambda",
                    ["a"],
                    [
                        "if",
                        ["<=", ["$", "/a/0"], 0],
                        0,
                        ["call", ["$", "/down"], ["-", ["$", "/a/0"], 1]]
                    ]
                ]
            ]],
            ["call", ["$", "/down"], 200000]
        ]))
        .unwrap(),
    );
    let on_small_stack = {
        let script = Arc::clone(&script);
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || script.eval(&[] as &[Value]))
            .unwrap()
            .join()
            .expect("the evaluating thread must not crash")
    };
    for result in [on_small_stack, script.eval(&[] as &[Value])] {
        let err = result.expect_err("recursion must be stopped");
        assert_eq!(
            err.kind,
            EvalErrorKind::Budget(BudgetExceeded::CallDepth(2_000)),
            "{err}"
        );
        assert!(err.is_budget());
    }
}

#[test]
fn deep_recursion_within_the_limit_succeeds_on_a_small_stack() {
    // With the call-depth limit raised, 3,000 nested calls (about 9 MB of stack in a release
    // build, far more in debug) run to the end on a 64 KiB thread: the evaluator moves to
    // heap-allocated stack segments instead of overflowing.
    let limits = Limits {
        max_call_depth: 5_000,
        ..Limits::default()
    };
    let script = computo::compile_with(
        &json!([
            "let",
            [[
                "sum",
                [
                    "lambda",
                    ["a"],
                    [
                        "if",
                        ["<=", ["$", "/a/0"], 0],
                        0,
                        [
                            "+",
                            ["$", "/a/0"],
                            ["call", ["$", "/sum"], ["-", ["$", "/a/0"], 1]]
                        ]
                    ]
                ]
            ]],
            ["call", ["$", "/sum"], 3000]
        ]),
        limits,
    )
    .unwrap();
    let result = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || script.eval(&[] as &[Value]))
        .unwrap()
        .join()
        .expect("the evaluating thread must not crash");
    assert_eq!(result.unwrap(), json!(3000 * 3001 / 2));
}

#[test]
fn budgets_stop_runaway_scripts() {
    let range: Vec<i64> = (0..300).collect();
    // Steps.
    let limits = Limits {
        max_steps: 500,
        ..Limits::default()
    };
    let script = computo::compile_with(
        &json!(["map", ["$input"], ["lambda", ["x"], ["+", ["$", "/x"], 1]]]),
        limits,
    )
    .unwrap();
    let err = script.eval(&[json!(range)]).unwrap_err();
    assert_eq!(err.kind, EvalErrorKind::Budget(BudgetExceeded::Steps(500)));

    // Output: a list that doubles 40 times.
    let doubling = json!(["reduce", ["$input"],
        ["lambda", ["p"], ["append", ["$", "/p/0"], ["$", "/p/0"]]], {"array": [1]}]);
    let err = eval_err(doubling, &[json!((0..40).collect::<Vec<_>>())]);
    assert!(
        matches!(err.kind, EvalErrorKind::Budget(BudgetExceeded::Output(_))),
        "{err}"
    );

    // Value depth: a list nested inside itself once per element.
    let nesting = json!(["reduce", ["$input"],
        ["lambda", ["p"], ["cons", ["$", "/p/0"], {"array": []}]], {"array": []}]);
    let err = eval_err(nesting, &[json!(range)]);
    assert_eq!(
        err.kind,
        EvalErrorKind::Budget(BudgetExceeded::ValueDepth(256)),
        "{err}"
    );
    let nesting_objects = json!([
        "reduce",
        ["$input"],
        ["lambda", ["p"], ["obj", ["inner", ["$", "/p/0"]]]],
        {}
    ]);
    let err = eval_err(nesting_objects, &[json!(range)]);
    assert_eq!(
        err.kind,
        EvalErrorKind::Budget(BudgetExceeded::ValueDepth(256)),
        "{err}"
    );

    // Compile-time nesting.
    let mut deep = json!(true);
    for _ in 0..300 {
        deep = json!(["not", deep]);
    }
    assert_eq!(
        compile_err(deep).kind,
        CompileErrorKind::TooDeep { limit: 256 }
    );
}

#[test]
fn lambdas_from_data_are_callable_and_see_the_caller_scope() {
    let data = json!({"f": ["lambda", ["x"], ["*", ["$", "/x"], ["$", "/k"]]], "xs": [1, 2, 3]});
    let script = json!([
        "let",
        [["k", 10]],
        ["map", ["get", ["$input"], "/xs"], ["get", ["$input"], "/f"]]
    ]);
    assert_eq!(eval(script, &[data]), json!([10, 20, 30]));
    // A lambda is a value: printed, it is its source.
    let lambda = json!(["lambda", ["x"], ["$", "/x"]]);
    assert_eq!(
        eval(json!(["let", [["f", lambda.clone()]], ["$", "/f"]]), &[]),
        lambda
    );
}

#[test]
fn one_script_evaluates_from_many_threads_at_once() {
    let script = Arc::new(
        computo::compile(&json!([
            "obj",
            ["n", ["*", ["get", ["$input"], "/n"], 2]],
            ["who", ["get", ["$inputs"], "/1/source"]]
        ]))
        .unwrap(),
    );
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let script = Arc::clone(&script);
            std::thread::spawn(move || {
                let meta = json!({"source": format!("thread-{t}")});
                for n in 0..1_000 {
                    let out = script.eval(&[&json!({"n": n}), &meta]).unwrap();
                    assert_eq!(out, json!({"n": n * 2, "who": format!("thread-{t}")}));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
