//! `http`: results POSTed as JSON arrays, in batches of up to `batch_size`.
//!
//! A batch that fails with a connection error, a timeout, 429 or a 5xx is retried with
//! exponential backoff and full jitter (doubling from `backoff` up to `max_backoff`), waiting
//! what `Retry-After` asks when the server says (in seconds, at most a minute). After
//! `max_attempts` it goes to the dead-letter queue as `sink_error`. Any other 4xx is the
//! events' fault: no retry, dead-lettered as `sink_rejected`. Delivery is at-least-once: a
//! batch is sent before the step commits, so a crash in between sends it again.
//!
//! `https://` URLs are checked against the Mozilla root certificates built into the binary, plus
//! `ca_file` (a PEM file of extra roots, e.g. a private CA) when given.
//!
//! Requests and backoffs are awaited on the worker's runtime: a slow or held endpoint holds
//! only the pipelines that use this sink (its placement is exclusive).

use std::sync::Arc;
use std::time::Duration;

use colloquium_config::ConfigError;
use colloquium_event::Reason;
use colloquium_storage::PipelineCommit;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde::Deserialize;

use crate::sink::{Placement, Routed, Sink, SinkBuildContext, SinkConfig, SinkError, dead_letter};

/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// `{type: http, url: …, batch_size: 100, timeout: 10s, max_attempts: 5, backoff: 100ms}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where batches are POSTed (`http://` or `https://`).
    pub url: String,
    /// PEM file of extra root certificates to trust for `https://` (relative to the working
    /// directory).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Most events per request.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long one request may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per batch, the first included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay; doubled per attempt, with jitter.
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    /// Longest retry delay.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

fn default_batch_size() -> usize {
    100
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_attempts() -> u32 {
    5
}
fn default_backoff() -> Duration {
    Duration::from_millis(100)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(10)
}

impl SinkConfig for HttpConfig {
    const KIND: &'static str = "http";
    const PLACEMENT: Placement = Placement::Exclusive;
    fn build(self, cx: &SinkBuildContext) -> Result<Box<dyn Sink>, ConfigError> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| ConfigError::new(cx.key("url"), format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::new(
                cx.key("url"),
                "must be an http:// or https:// URL",
            ));
        }
        let roots = match &self.ca_file {
            None => Vec::new(),
            Some(path) => {
                let at = cx.key("ca_file");
                let pem = std::fs::read(path).map_err(|e| {
                    ConfigError::new(&at, format!("reading {}: {e}", path.display()))
                })?;
                let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    ConfigError::new(
                        &at,
                        format!("{} is not PEM certificates: {e}", path.display()),
                    )
                })?;
                if roots.is_empty() {
                    let message = format!("{} holds no certificate", path.display());
                    return Err(ConfigError::new(at, message));
                }
                roots
            }
        };
        if self.batch_size == 0 || self.max_attempts == 0 || self.timeout.is_zero() {
            return Err(ConfigError::new(
                &cx.at,
                "`batch_size`, `max_attempts` and `timeout` must be greater than 0",
            ));
        }
        Ok(Box::new(HttpSink {
            name: cx.name.clone(),
            url,
            roots,
            config: self,
            client: None,
        }))
    }
}

struct HttpSink {
    name: Arc<str>,
    url: reqwest::Url,
    /// Trusted besides the built-in roots (`ca_file`).
    roots: Vec<reqwest::Certificate>,
    config: HttpConfig,
    /// Built on first use: `validate` builds sinks without sending anything.
    client: Option<reqwest::Client>,
}

/// How one attempt went.
enum Attempt {
    Delivered,
    /// Worth retrying, after at least this long (from `Retry-After`) if given.
    Retry(String, Option<Duration>),
    /// The server refused these events.
    Rejected(String),
}

impl HttpSink {
    fn client(&mut self) -> Result<reqwest::Client, SinkError> {
        if let Some(client) = &self.client {
            return Ok(client.clone()); // a handle: clones share the connection pool
        }
        let mut builder = reqwest::Client::builder().timeout(self.config.timeout);
        for root in &self.roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let client = builder.build().map_err(|e| SinkError {
            sink: self.name.clone(),
            message: e.to_string(),
        })?;
        Ok(self.client.insert(client).clone())
    }

    async fn attempt(&mut self, body: &bytes::Bytes) -> Result<Attempt, SinkError> {
        let request = self
            .client()?
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone());
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Ok(Attempt::Retry(format!("request failed: {e}"), None)),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        if status.is_success() {
            return Ok(Attempt::Delivered);
        }
        let text = response.text().await.unwrap_or_default();
        let excerpt: String = text.chars().take(200).collect();
        let message = format!("HTTP {status}: {excerpt}");
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Ok(Attempt::Retry(message, retry_after))
        } else {
            Ok(Attempt::Rejected(message))
        }
    }

    /// Delivers one request's worth of events, retrying as configured. Backoffs are awaited:
    /// only this sink's pipelines wait.
    async fn deliver(
        &mut self,
        batch: &[Routed],
        commit: &mut PipelineCommit,
    ) -> Result<(), SinkError> {
        let events: Vec<_> = batch.iter().map(|r| &r.event).collect();
        let body = serde_json::to_vec(&events).map_err(|e| SinkError {
            sink: self.name.clone(),
            message: e.to_string(),
        })?;
        let body = bytes::Bytes::from(body);
        let mut delay = self.config.backoff;
        for attempt in 1..=self.config.max_attempts {
            match self.attempt(&body).await? {
                Attempt::Delivered => return Ok(()),
                Attempt::Rejected(message) => {
                    tracing::warn!(sink = %self.name, %message, events = batch.len(), "http sink: batch rejected, dead-lettered");
                    for routed in batch {
                        dead_letter(
                            commit,
                            routed,
                            Reason::SinkRejected,
                            format!("sink `{}`: {message}", self.name),
                        );
                    }
                    return Ok(());
                }
                Attempt::Retry(message, _) if attempt == self.config.max_attempts => {
                    tracing::warn!(sink = %self.name, %message, attempts = attempt, "http sink: giving up, dead-lettered");
                    for routed in batch {
                        let error =
                            format!("sink `{}`: {message} (after {attempt} attempts)", self.name);
                        dead_letter(commit, routed, Reason::SinkError, error);
                    }
                    return Ok(());
                }
                Attempt::Retry(message, retry_after) => {
                    // Full jitter: anywhere up to the current delay, so many nodes spread out.
                    let jittered = delay.mul_f64(fastrand::f64()).max(Duration::from_millis(1));
                    let wait = retry_after.unwrap_or(jittered);
                    tracing::debug!(sink = %self.name, %message, attempt, ?wait, "http sink: retrying");
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(self.config.max_backoff);
                }
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sink for HttpSink {
    async fn send(
        &mut self,
        batch: Vec<Routed>,
        commit: &mut PipelineCommit,
    ) -> Result<(), SinkError> {
        for chunk in batch.chunks(self.config.batch_size) {
            self.deliver(chunk, commit).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Instant;

    use axum::extract::State;
    use axum::http::{HeaderMap, HeaderValue};

    /// What the test server answers, in order (then 200 for ever).
    #[derive(Clone, Copy)]
    enum Answer {
        Status(u16),
        RetryAfter(u16, u64),
        Slow(Duration),
    }

    #[derive(Default)]
    struct Server {
        answers: Mutex<VecDeque<Answer>>,
        /// When each request arrived and how many events it carried.
        seen: Mutex<Vec<(Instant, usize)>>,
    }

    async fn handle(
        State(server): State<Arc<Server>>,
        body: axum::body::Bytes,
    ) -> (StatusCode, HeaderMap, &'static str) {
        let events = serde_json::from_slice::<Vec<serde_json::Value>>(&body).map_or(0, |v| v.len());
        server.seen.lock().unwrap().push((Instant::now(), events));
        let answer = server.answers.lock().unwrap().pop_front();
        let mut headers = HeaderMap::new();
        match answer {
            None => (StatusCode::OK, headers, "ok"),
            Some(Answer::Status(code)) => (StatusCode::from_u16(code).unwrap(), headers, "nope"),
            Some(Answer::RetryAfter(code, secs)) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(secs));
                (StatusCode::from_u16(code).unwrap(), headers, "slow down")
            }
            Some(Answer::Slow(delay)) => {
                tokio::time::sleep(delay).await;
                (StatusCode::OK, headers, "late")
            }
        }
    }

    /// The server state, its app, a runtime for it and a listener on 127.0.0.1.
    fn bind(
        answers: &[Answer],
    ) -> (
        Arc<Server>,
        axum::Router,
        tokio::runtime::Runtime,
        tokio::net::TcpListener,
    ) {
        let server = Arc::new(Server::default());
        server
            .answers
            .lock()
            .unwrap()
            .extend(answers.iter().copied());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(handle))
            .with_state(server.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        (server, app, runtime, listener)
    }

    /// Starts a server on 127.0.0.1 in its own thread; it stops with the test process.
    fn serve(answers: &[Answer]) -> (Arc<Server>, String) {
        let (server, app, runtime, listener) = bind(answers);
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            runtime.block_on(async move { axum::serve(listener, app).await })
        });
        (server, url)
    }

    /// Like [`serve`], over TLS with a fresh self-signed certificate for 127.0.0.1; also
    /// returns the certificate (PEM).
    fn serve_tls(answers: &[Answer]) -> (Arc<Server>, String, String) {
        use tokio_rustls::rustls;
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let (server, app, runtime, listener) = bind(answers);
        let url = format!("https://{}/hook", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            runtime.block_on(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let (acceptor, app) = (acceptor.clone(), app.clone());
                    tokio::spawn(async move {
                        // A client that rejects our certificate fails the handshake here.
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = hyper_util::service::TowerToHyperService::new(app);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                    });
                }
            })
        });
        (server, url, certified.cert.pem())
    }

    #[test]
    fn https_delivers_to_a_server_whose_ca_is_trusted_and_not_otherwise() {
        let (server, url, pem) = serve_tls(&[]);
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, pem).unwrap();
        let mut commit = PipelineCommit::default();
        crate::sink::block_on(
            sink(&url, serde_json::json!({"ca_file": ca})).send(batch(3), &mut commit),
        )
        .unwrap();
        assert!(commit.dead_letters.is_empty());
        assert_eq!(
            server
                .seen
                .lock()
                .unwrap()
                .iter()
                .map(|s| s.1)
                .collect::<Vec<_>>(),
            [3]
        );

        // Without `ca_file` the self-signed certificate is not trusted: nothing is delivered.
        let mut commit = PipelineCommit::default();
        crate::sink::block_on(
            sink(&url, serde_json::json!({"max_attempts": 2})).send(batch(1), &mut commit),
        )
        .unwrap();
        assert_eq!(server.seen.lock().unwrap().len(), 1);
        assert_eq!(commit.dead_letters[0].reason, Reason::SinkError);
        assert!(
            commit.dead_letters[0].error.contains("request failed"),
            "{}",
            commit.dead_letters[0].error
        );
    }

    fn sink(url: &str, extra: serde_json::Value) -> Box<dyn Sink> {
        let mut options = serde_json::json!({"url": url, "timeout": "300ms", "backoff": "10ms", "max_backoff": "50ms"});
        options
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let config: HttpConfig = serde_json::from_value(options).unwrap();
        config
            .build(&SinkBuildContext {
                name: Arc::from("hook"),
                at: "sinks.hook".into(),
                metrics: Default::default(),
            })
            .unwrap()
    }

    fn batch(n: u64) -> Vec<Routed> {
        (0..n).map(crate::sink::test_routed).collect()
    }

    fn send(
        answers: &[Answer],
        extra: serde_json::Value,
        events: u64,
    ) -> (Vec<(Instant, usize)>, PipelineCommit) {
        let (server, url) = serve(answers);
        let mut commit = PipelineCommit::default();
        crate::sink::block_on(sink(&url, extra).send(batch(events), &mut commit)).unwrap();
        let seen = server.seen.lock().unwrap().clone();
        (seen, commit)
    }

    #[test]
    fn a_500_is_retried_then_delivered() {
        let (seen, commit) = send(
            &[Answer::Status(500), Answer::Status(502)],
            serde_json::json!({}),
            3,
        );
        assert_eq!(seen.iter().map(|s| s.1).collect::<Vec<_>>(), [3, 3, 3]);
        assert!(commit.dead_letters.is_empty());
    }

    #[test]
    fn a_429_waits_as_long_as_retry_after_says() {
        let (seen, commit) = send(&[Answer::RetryAfter(429, 1)], serde_json::json!({}), 1);
        assert_eq!(seen.len(), 2);
        // A lower bound only: the retry may not come earlier than the server asked.
        assert!(seen[1].0 - seen[0].0 >= Duration::from_secs(1));
        assert!(commit.dead_letters.is_empty());
    }

    #[test]
    fn a_400_is_not_retried_and_its_events_are_dead_lettered() {
        let (seen, commit) = send(&[Answer::Status(400)], serde_json::json!({}), 2);
        assert_eq!(seen.len(), 1);
        let reasons: Vec<&str> = commit
            .dead_letters
            .iter()
            .map(|d| d.reason.as_str())
            .collect();
        assert_eq!(reasons, ["sink_rejected", "sink_rejected"]);
        assert!(
            commit.dead_letters[0].error.contains("HTTP 400"),
            "{}",
            commit.dead_letters[0].error
        );
    }

    #[test]
    fn a_slow_answer_times_out_and_is_retried() {
        let (seen, commit) = send(
            &[Answer::Slow(Duration::from_secs(2))],
            serde_json::json!({}),
            1,
        );
        assert_eq!(seen.len(), 2);
        assert!(commit.dead_letters.is_empty());
    }

    #[test]
    fn retries_end_in_the_dead_letter_queue() {
        let always = [Answer::Status(503); 3];
        let (seen, commit) = send(&always, serde_json::json!({"max_attempts": 3}), 1);
        assert_eq!(seen.len(), 3);
        assert_eq!(commit.dead_letters[0].reason, Reason::SinkError);
        assert!(commit.dead_letters[0].error.contains("after 3 attempts"));
    }

    #[test]
    fn results_go_out_in_batches_of_batch_size() {
        let (seen, _) = send(&[], serde_json::json!({"batch_size": 100}), 250);
        assert_eq!(seen.iter().map(|s| s.1).collect::<Vec<_>>(), [100, 100, 50]);
    }

    #[test]
    fn bad_options_name_their_key() {
        let build = |options: serde_json::Value| {
            let config: HttpConfig = serde_json::from_value(options).unwrap();
            config
                .build(&SinkBuildContext {
                    name: Arc::from("hook"),
                    at: "sinks.hook".into(),
                    metrics: Default::default(),
                })
                .err()
                .unwrap()
                .to_string()
        };
        assert!(build(serde_json::json!({"url": "nope"})).starts_with("sinks.hook.url: not a URL"));
        assert!(
            build(serde_json::json!({"url": "ftp://127.0.0.1/x"}))
                .starts_with("sinks.hook.url: must be an http:// or https:// URL")
        );
        let missing =
            build(serde_json::json!({"url": "https://127.0.0.1/x", "ca_file": "/nonexistent.pem"}));
        assert!(
            missing.starts_with("sinks.hook.ca_file: reading /nonexistent.pem"),
            "{missing}"
        );
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let junk = build(serde_json::json!({"url": "https://127.0.0.1/x", "ca_file": junk}));
        assert!(junk.starts_with("sinks.hook.ca_file: "), "{junk}");
        assert!(
            build(serde_json::json!({"url": "http://127.0.0.1/x", "batch_size": 0}))
                .starts_with("sinks.hook: ")
        );
    }
}
