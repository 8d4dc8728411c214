//! EventStream's processors as stages, through the real binary: `alert` raises alert events
//! to sinks of its own and dead-letters events past their SLA.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Node, Receiver, eventually};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_go_to_their_own_sinks_and_stale_events_are_sla_breaches() {
    let pager = Receiver::start().await;
    let hook = Receiver::start().await;
    let node = Node::start(&format!(
        "sinks:\n  db: {{type: store}}\n  pager: {{type: http, url: '{}'}}\n  hook: {{type: http, url: '{}', timeout: 120s}}\npipelines:\n  - name: temps\n    stages:\n      - {{type: alert, name: too_hot, when: {{gt: [/t, 30]}}, sinks: [pager]}}\n    sinks: [db]\n  - name: timely\n    stages: [{{type: alert, max_latency: 300ms}}]\n    sinks: [hook]\n",
        pager.url, hook.url
    ));
    hook.hold();
    let (status, _) = node.post(r#"{"t": 35, "n": 0}"#, "application/json").await;
    assert_eq!(status, 202);
    eventually(DEADLINE, "timely's first request held", || async {
        (hook.held() >= 1).then_some(())
    })
    .await;
    let body: String = (1..10)
        .map(|n| format!("{{\"t\": {}, \"n\": {n}}}\n", 20 + n * 2))
        .collect();
    let (status, _) = node.post(&body, "application/x-ndjson").await;
    assert_eq!(status, 202);

    // temps: every event to db, an alert for each t > 30 (n = 0 and 6..9) to the pager only.
    eventually(DEADLINE, "temps' outputs", || async {
        (node.outputs("temps").await.len() == 10).then_some(())
    })
    .await;
    let alerts = eventually(DEADLINE, "the alerts", || async {
        let got = pager.received();
        (got.len() == 5).then_some(got)
    })
    .await;
    let mut ns: Vec<u64> = alerts
        .iter()
        .map(|a| a["data"]["data"]["n"].as_u64().unwrap())
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, [0, 6, 7, 8, 9]);
    assert!(alerts.iter().all(|a| a["data"]["alert"] == "too_hot"));
    assert!(alerts.iter().all(|a| a["data"]["pipeline"] == "temps"));
    let stored = node.outputs("temps").await;
    assert!(
        stored.iter().all(|o| o["data"].get("alert").is_none()),
        "no alert in db"
    );

    // timely: n = 1..9 waited behind the held request, past its 300 ms SLA.
    tokio::time::sleep(Duration::from_millis(500)).await;
    hook.release();
    let breaches = eventually(DEADLINE, "the SLA breaches", || async {
        let letters = node.dead_letters("reason=sla_breach&pipeline=timely").await;
        (letters.len() == 9).then_some(letters)
    })
    .await;
    let error = breaches[0]["error"].as_str().unwrap();
    assert!(error.contains("max_latency 300 ms"), "{error}");
    let delivered: Vec<Value> = eventually(DEADLINE, "n = 0 delivered", || async {
        let got = hook.received();
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["data"]["n"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_runs_its_stages_once_per_client_key_across_a_sigkill() {
    let config = "sinks: {db: {type: store}}\npipelines:\n  - name: payments\n    stages:\n      - type: idempotency\n        key: /request_id\n        by_topic: true\n        ttl: 1h\n        retry: {max_attempts: 3, backoff: 10ms}\n        stages:\n          - {type: transform, script: [obj, [request_id, [get, [$input], /request_id]], [cents, [\"*\", [get, [$input], /amount], 100]]]}\n    sinks: [db]\n";
    let node = Node::start(config);
    let pay = |request: &str, amount: &str| {
        format!(r#"{{"request_id": "{request}", "amount": {amount}}}"#)
    };
    for body in [pay("r1", "5"), pay("r1", "5"), pay("r2", "\"ten\"")] {
        let (status, _) = node
            .post_to("/events?topic=payments", &body, "application/json")
            .await;
        assert_eq!(status, 202);
    }
    // r1 once; r2 fails three times and is dead-lettered, its key not kept.
    let letters = eventually(DEADLINE, "r2's dead letter", || async {
        let letters = node.dead_letters("reason=max_retries_exceeded").await;
        (letters.len() == 1).then_some(letters)
    })
    .await;
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap()
            .contains("failed 3 times")
    );
    assert_eq!(node.outputs("payments").await.len(), 1);

    // After a SIGKILL the keys are still there: r1's retry is dropped, r2 fixed goes through.
    let node = node.kill9().restart();
    for body in [pay("r1", "5"), pay("r2", "10")] {
        let (status, _) = node
            .post_to("/events?topic=payments", &body, "application/json")
            .await;
        assert_eq!(status, 202);
    }
    let outputs = eventually(DEADLINE, "r2 processed", || async {
        let outputs = node.outputs("payments").await;
        (outputs.len() == 2).then_some(outputs)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        node.outputs("payments").await.len(),
        2,
        "r1's retry is not processed again"
    );
    let cents: Vec<(String, i64)> = outputs
        .iter()
        .map(|o| {
            (
                o["data"]["request_id"].as_str().unwrap().to_owned(),
                o["data"]["cents"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(cents, [("r1".to_owned(), 500), ("r2".to_owned(), 1000)]);
}
