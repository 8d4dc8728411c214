//! Runs the Computo conformance suite (`shared/conformance/computo/*.jsonl`) in place.
//!
//! The suite lives beside the repository (`../shared` from the workspace root), or wherever
//! `COLLOQUIUM_SHARED_DIR` points. Every case is run; failures are collected and reported with a
//! per-operator summary, using the suite README's comparison rule: two integers exactly, an
//! integer and a float as doubles, booleans never numbers, object key order ignored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

/// This crate's directory, read when the test runs: a test binary reused from a build cache
/// filled by a checkout elsewhere would carry that checkout's path in `env!`.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn suite_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("COLLOQUIUM_SHARED_DIR") {
        return PathBuf::from(dir).join("conformance/computo");
    }
    // crates/computo → workspace root; then look for `shared/` beside it (or above it).
    let manifest = manifest_dir();
    for ancestor in manifest.ancestors() {
        let candidate = ancestor.join("shared/conformance/computo");
        if candidate.is_dir() {
            return candidate;
        }
    }
    panic!(
        "the Computo conformance suite was not found: expected shared/conformance/computo beside \
         the repository (or set COLLOQUIUM_SHARED_DIR)"
    );
}

/// The suite's comparison rule.
fn same(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => match (
            a.as_i64().map(i128::from).or(a.as_u64().map(i128::from)),
            b.as_i64().map(i128::from).or(b.as_u64().map(i128::from)),
        ) {
            (Some(x), Some(y)) => x == y,
            _ => a.as_f64() == b.as_f64(),
        },
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
        }
        _ => expected == actual,
    }
}

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
}

#[test]
fn every_conformance_case_passes() {
    let dir = suite_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .jsonl files in {}", dir.display());

    let mut by_operator: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut total = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (line_no, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let case: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", file.display(), line_no + 1));
            let name = case["name"].as_str().unwrap().to_owned();
            let inputs = case["inputs"].as_array().unwrap();
            let outcome = computo::compile(&case["script"])
                .map_err(|e| e.to_string())
                .and_then(|script| script.eval(inputs).map_err(|e| e.to_string()));
            let failure = match (&outcome, case.get("expected")) {
                (Ok(actual), Some(expected)) if same(expected, actual) => None,
                (Ok(actual), Some(expected)) => Some(format!("expected {expected}, got {actual}")),
                (Err(err), Some(expected)) => {
                    Some(format!("expected {expected}, got error: {err}"))
                }
                (Err(_), None) => None,
                (Ok(actual), None) => Some(format!("expected an error, got {actual}")),
            };
            total += 1;
            let operator = name.split('/').next().unwrap_or_default().to_owned();
            let tally = by_operator.entry(operator).or_default();
            match failure {
                None => tally.passed += 1,
                Some(why) => {
                    tally.failed += 1;
                    failures.push(format!("  {name}: {why}"));
                }
            }
        }
    }

    if !failures.is_empty() {
        let summary: Vec<String> = by_operator
            .iter()
            .filter(|(_, t)| t.failed > 0)
            .map(|(op, t)| format!("  {op}: {} failed, {} passed", t.failed, t.passed))
            .collect();
        panic!(
            "{} of {total} conformance cases failed\n{}\nby operator:\n{}",
            failures.len(),
            failures.join("\n"),
            summary.join("\n")
        );
    }
    // The README counts 496 cases; fewer means the suite was not fully read.
    assert!(
        total >= 496,
        "only {total} cases were read from {}",
        dir.display()
    );
}
