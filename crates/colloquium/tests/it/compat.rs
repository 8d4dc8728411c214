//! A data directory written by an earlier build still opens and answers every query as it did
//! then (`tests/fixtures/data-2026-12`: its `make.sh` wrote `data/` and `expected/` with the
//! build its `config.yaml` names). A change to how anything is stored (a column family, a key
//! layout, a state format) must migrate or read both, and this test says whether it does.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::harness::{Node, manifest_dir};

/// The queries and the files holding their answers then.
const QUERIES: [(&str, &str); 9] = [
    ("/api/events?limit=1000", "events"),
    (
        "/api/outputs?pipeline=windows&limit=1000",
        "outputs-windows",
    ),
    (
        "/api/outputs?pipeline=anomalies&limit=1000",
        "outputs-anomalies",
    ),
    (
        "/api/outputs?pipeline=scripted&limit=1000",
        "outputs-scripted",
    ),
    (
        "/api/windows?pipeline=windows&stage=window&limit=1000",
        "windows",
    ),
    ("/api/anomalies?limit=1000", "anomalies"),
    ("/api/anomalies/count", "anomalies-count"),
    (
        "/api/users/ada/baseline?pipeline=anomalies&stage=anomaly",
        "baseline",
    ),
    ("/api/dlq?limit=1000", "dlq"),
];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the data directory");
    for entry in std::fs::read_dir(from).expect("the fixture's data") {
        let entry = entry.expect("an entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_from_2026_12_answers_every_query_as_it_did_then() {
    let fixture = manifest_dir().join("tests/fixtures/data-2026-12");
    let dir = Arc::new(tempfile::tempdir().expect("a temporary directory"));
    // A copy: opening it writes (a new WAL, the manifest), and the fixture stays as it was.
    copy_dir(&fixture.join("data"), &dir.path().join("data"));
    let config = std::fs::read_to_string(fixture.join("config.yaml")).expect("its config");
    let node = Node::start_in(dir, &config);
    for (query, file) in QUERIES {
        let text = std::fs::read_to_string(fixture.join(format!("expected/{file}.json")))
            .expect("an expected answer");
        let expected: Value = serde_json::from_str(&text).expect("JSON");
        let (status, answer) = node.get(query).await;
        assert_eq!(status, 200, "{query}: {answer}");
        assert_eq!(answer, expected, "{query} answers differently");
    }
    // And the node goes on from there: a new event is taken by the pipeline it matches.
    let (status, _) = node
        .post("{\"divisor\": 5}\n", "application/x-ndjson")
        .await;
    assert_eq!(status, 202);
    crate::harness::eventually(
        std::time::Duration::from_secs(30),
        "the new output",
        || async {
            let outputs = node.outputs("scripted").await;
            outputs.iter().any(|o| o["data"]["q"] == 20.0).then_some(())
        },
    )
    .await;
}
