//! `colloquium computo`: scripts and inputs from files, `-e` and stdin; one-line errors; and
//! the conformance suite driven through the CLI by the suite's own runner.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::harness::{binary, run_cli, shared_dir};

#[test]
fn prints_the_result_of_a_script_file_on_input_files() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.json");
    let data = dir.path().join("data.json");
    let meta = dir.path().join("meta.json");
    std::fs::write(
        &script,
        r#"["obj", ["result", ["+", ["get", ["$input"], "/value"], 10]],
                  ["id", ["get", ["$inputs"], "/1/event_id"]]]"#,
    )
    .unwrap();
    std::fs::write(&data, r#"{"value": 5}"#).unwrap();
    std::fs::write(&meta, r#"{"event_id": "01J1ZK8Q3X5V7N9B2C4D6F8H0J"}"#).unwrap();
    let paths = [&script, &data, &meta].map(|p| p.to_str().unwrap().to_owned());
    let (code, stdout, stderr) = run_cli(
        &["computo", "--script", &paths[0], &paths[1], &paths[2]],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "{\"id\":\"01J1ZK8Q3X5V7N9B2C4D6F8H0J\",\"result\":15}\n"
    );
}

#[test]
fn reads_an_inline_script_and_an_input_from_stdin() {
    let mut child = Command::new(binary())
        .args([
            "computo",
            "--pretty",
            "-e",
            r#"["map", ["get", ["$input"], "/xs"], ["lambda", ["x"], ["*", ["$", "/x"], 2]]]"#,
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"xs": [1, 2, 3]}"#)
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("\n  2,\n"), "indented: {stdout}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!([2, 4, 6])
    );
}

#[test]
fn every_failure_is_one_line_on_stderr_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let bad_json = dir.path().join("bad.json");
    std::fs::write(&bad_json, "{\"value\": ").unwrap();
    let bad_json = bad_json.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["computo", "-e", "[\"+\", 1"], "is not JSON"),
        (
            &["computo", "-e", "[\"frob\", 1]"],
            "unknown operator `frob` at (root)",
        ),
        (
            &["computo", "-e", "[\"+\", 1, [\"$input\"]]", bad_json],
            "is not JSON",
        ),
        (
            &["computo", "-e", "[\"/\", 1, 0]"],
            "`/` at (root): division by zero",
        ),
        (
            &["computo", "-e", "[\"get\", [\"$input\"], \"/a\"]"],
            "no value at `/a`",
        ),
        (
            &["computo", "--script", "/nonexistent/script.json"],
            "reading /nonexistent/script.json",
        ),
    ];
    for (args, expected) in cases {
        let (code, stdout, stderr) = run_cli(args, None);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn the_conformance_suite_passes_through_the_cli() {
    let suite = shared_dir().join("conformance/computo");
    let command = format!("{} computo --script {{script}} {{inputs}}", binary());
    let output = Command::new("python3")
        .arg(suite.join("run-suite.py"))
        .args(["--cmd", &command])
        .arg(suite.join("public.jsonl"))
        .output()
        .expect("python3 runs the suite's runner");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(summary.ends_with(" passed, 0 failed"), "{summary}");
}
