//! `colloquium top` under tmux (send-keys, capture-pane): a pipeline's rate while events
//! stream in, the filter, and quitting.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Node, binary};

const CONFIG: &str = r#"
sinks: {db: {type: store}}
pipelines:
  - name: checkout
    stages: [{type: filter, id: paid, when: {exists: /amount}}]
    sinks: [db]
  - name: audit
    sinks: [db]
"#;

/// A tmux server of the test's own (its own socket).
#[derive(Clone)]
struct Tmux {
    socket: String,
}

/// Kills its tmux server when dropped.
struct Server(Tmux);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.run(&["kill-server"]);
    }
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs (scripts/bootstrap.sh --test installs it)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    /// Waits until the screen satisfies `check`, failing with the last screen.
    fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(Instant::now() < until, "top never showed {what}:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["-L", &self.socket, "has-session", "-t", "top"])
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// The rate column (`in/s`) of the row whose first cell is `name`, if it is a number.
fn rate_of(screen: &str, name: &str) -> Option<f64> {
    let line = screen
        .lines()
        .find(|l| l.trim_start_matches('│').split_whitespace().next() == Some(name))?;
    let cells: Vec<&str> = line.trim_matches('│').split_whitespace().collect();
    let rate = cells.get(2)?;
    let (number, scale) = match rate.strip_suffix('k') {
        Some(n) => (n, 1e3),
        None => match rate.strip_suffix('M') {
            Some(n) => (n, 1e6),
            None => (*rate, 1.0),
        },
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_under_tmux_shows_a_pipelines_rate_filters_by_name_and_quits() {
    let node = Arc::new(Node::start(CONFIG));
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (node, stop) = (node.clone(), stop.clone());
        tokio::spawn(async move {
            let body: String = (0..20).map(|i| format!("{{\"amount\":{i}}}\n")).collect();
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(
                    node.post_accepted(&body, "application/x-ndjson").await.0,
                    202
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let tmux = Tmux {
        socket: format!("colloquium-top-{}", std::process::id()),
    };
    let _server = Server(tmux.clone());
    let command = format!("{} top --url {} --interval 250ms", binary(), node.url(""));
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "140",
        "-y",
        "45",
        &command,
    ]);

    let screen = tokio::task::spawn_blocking({
        let tmux = tmux.clone();
        move || {
            tmux.wait_for("a rate for checkout", |s| {
                rate_of(s, "checkout").is_some_and(|r| r > 0.0)
            })
        }
    })
    .await
    .unwrap();
    assert!(screen.contains("level HEALTHY"), "{screen}");
    assert!(
        screen.contains("└ paid"),
        "the stage under its pipeline:\n{screen}"
    );
    assert!(rate_of(&screen, "audit").is_some(), "{screen}");
    assert!(
        rate_of(&screen, "http").is_some_and(|r| r > 0.0),
        "the source's rate:\n{screen}"
    );

    // `/` then a name: only what matches (and the pipeline of a matching stage).
    tmux.run(&["send-keys", "-t", "top", "/", "p", "a", "i", "d", "Enter"]);
    let filtered = tokio::task::spawn_blocking({
        let tmux = tmux.clone();
        move || tmux.wait_for("the filter", |s| s.contains("[filter: paid]"))
    })
    .await
    .unwrap();
    assert!(
        filtered.contains("└ paid") && filtered.contains("checkout"),
        "{filtered}"
    );
    assert!(
        rate_of(&filtered, "audit").is_none(),
        "audit filtered out:\n{filtered}"
    );

    tmux.run(&["send-keys", "-t", "top", "q"]);
    let until = Instant::now() + Duration::from_secs(30);
    while tmux.alive() {
        assert!(Instant::now() < until, "top did not quit on q");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();
}
