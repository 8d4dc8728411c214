//! Pipelines as a user meets them before going live: `colloquium validate` and `colloquium test`
//! on the shipped examples and on broken configs.

use std::path::PathBuf;

use crate::harness::run_cli;

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "examples/ should hold at least three configs"
    );
    files
}

#[test]
fn every_shipped_example_validates_and_passes_its_tests() {
    for example in examples() {
        let path = example.to_str().unwrap();
        let (code, stdout, stderr) = run_cli(&["validate", "-c", path], None);
        assert_eq!(code, 0, "{path}: {stdout}{stderr}");
        let (code, stdout, stderr) = run_cli(&["test", "-c", path], None);
        assert_eq!(code, 0, "{path}: {stdout}{stderr}");
        assert!(stdout.contains(" 0 failed"), "{path}: {stdout}");
        assert!(!stdout.contains("FAILED"), "{path}: {stdout}");
    }
}

#[test]
fn a_failing_config_test_prints_a_readable_diff() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broken.yaml");
    std::fs::write(
        &config,
        r#"
pipelines:
  - name: double
    stages:
      - {type: transform, script: [obj, [n, ["*", [get, [$input], /n], 2]]]}
tests:
  - name: doubles
    pipeline: double
    input: [{data: {n: 2}}, {data: {n: 5}}]
    expect:
      outputs: [{n: 4}, {n: 11}]
  - name: expects a dead letter that does not come
    pipeline: double
    input: [{data: {n: 1}}]
    expect:
      dlq: [script_error]
  - name: passes
    pipeline: double
    input: [{data: {n: 1}}]
    expect:
      outputs: [{n: 2}]
"#,
    )
    .unwrap();
    let (code, stdout, _) = run_cli(&["test", "-c", config.to_str().unwrap()], None);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("test doubles ... FAILED"), "{stdout}");
    assert!(
        stdout.contains("outputs differ (- expected, + actual):"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-     \"n\": 11") && stdout.contains("+     \"n\": 10"),
        "{stdout}"
    );
    assert!(
        stdout.contains("dead letters differ: expected [\"script_error\"], got []"),
        "{stdout}"
    );
    assert!(stdout.contains("test passes ... ok"), "{stdout}");
    assert!(stdout.contains("3 tests, 1 passed, 2 failed"), "{stdout}");
}

/// Runs `validate` on `yaml` and returns its stderr, asserting it failed.
fn invalid(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(&config, yaml).unwrap();
    let (code, _, stderr) = run_cli(&["validate", "-c", config.to_str().unwrap()], None);
    assert_eq!(code, 1, "{stderr}");
    stderr
}

#[test]
fn validate_names_every_problem_and_run_refuses_what_it_cannot_run() {
    // References are checked when the document loads.
    let stderr = invalid(
        "sinks: {out: {type: store}}\npipelines:\n  - {name: p, sinks: [out, nowhere], from: [kafka]}\n",
    );
    assert!(
        stderr.contains("pipelines[0].sinks[1]: no sink named `nowhere` (sinks: out)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pipelines[0].from[0]: no source named `kafka` (sources: http)"),
        "{stderr}"
    );

    // A named script that does not compile names itself, the path inside it and the reason.
    let stderr = invalid("scripts:\n  broken: [obj, [a, [frob]]]\n");
    assert!(
        stderr.contains("scripts.broken: does not compile: unknown operator `frob` at /1/1"),
        "{stderr}"
    );

    // Predicates, stages and sinks are checked when the topology is built, all at once.
    let stderr = invalid(
        r#"
sinks:
  out: {type: kafka}
pipelines:
  - name: p
    when: {regex: [/email, "("]}
    stages:
      - {type: transform, script: missing}
      - {type: explode}
    sinks: [out]
"#,
    );
    for expected in [
        "pipelines[0].when.regex: bad regex",
        "pipelines[0].stages[0].script: no script named `missing`",
        "pipelines[0].stages[1].type: unknown stage type `explode`",
        "sinks.out.type: unknown sink type `kafka`",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }

    let example = examples().into_iter().next().unwrap();
    let (code, _, stderr) = run_cli(&["run", "-c", example.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot run them yet"), "{stderr}");
}
