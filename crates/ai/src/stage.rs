//! `ai`: asks a model about an event and attaches its structured answer.
//!
//! - `prompt` (and `system`) are `minijinja` templates rendered from the event: `event` (its
//!   data, so earlier stages' results are there too: `{{ event.anomaly.score }}`), `metadata`
//!   (as scripts see it) and `id`. A missing field renders empty.
//! - `when:` (a predicate, as a pipeline's) decides which events are sent; the rest pass
//!   untouched, so cost stays bounded.
//! - The answer is asked for as JSON matching `schema` (default: StreamGuard's threat
//!   analysis — `severity` LOW|MEDIUM|HIGH|CRITICAL, `confidence` 0–1, `indicators`,
//!   `summary`, `recommendation`) and validated. One that does not validate is asked again
//!   once, with the validation error in the prompt; a second failure fails the event with
//!   `ai_invalid` (`on_invalid: dlq`, then the stage's `on_error`) or passes it without an
//!   analysis (`on_invalid: pass`).
//! - A valid answer is attached under `into` (default `analysis`) and kept in the stage's
//!   `analyses` results table (key `""`, at the event's ingest time, with the provider,
//!   model, tokens and cost), served by `GET /api/analyses/{event_id}`.
//! - When no provider can answer (all open or failing) or the budget is spent, the event
//!   goes on without an analysis (`on_unavailable: pass`, the default) or fails with
//!   `provider_unavailable` / `budget_exhausted` (`on_unavailable: dlq`); counted either way.
//!
//! Calls run up to `concurrency` at once; their results are committed in input order with the
//! step's checkpoint. After a SIGKILL the uncommitted events are processed again, so a call in
//! flight is made again, once; the ledger counts the lost one at its reservation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use colloquium_config::ConfigError;
use colloquium_event::{Event, EventId, Reason};
use colloquium_pipeline::{
    AsyncStage, BuildContext, BuiltStage, CallResult, Failed, ResultRow, StageConfig, StageContext,
    StageError,
};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::gateway::{Answered, Choice, Gateway, GatewayError};
pub use crate::prompting::OnUnavailable;
use crate::prompting::{self, Templates, ready};
use crate::provider::{AnswerSchema, ChatRequest};

/// The results table of analyses.
pub const ANALYSES: &str = "analyses";

/// What an answer that does not validate does after its second try.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    /// Fail the event with `ai_invalid` (dead-lettered unless the stage's `on_error` says
    /// otherwise).
    #[default]
    Dlq,
    /// Pass the event on without an analysis.
    Pass,
}

/// `{type: ai, prompt: "…", provider: openai, when: …, schema: …, into: analysis}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiStageConfig {
    /// A provider's name under `ai.providers`, or `best` (default: the first provider).
    #[serde(default)]
    pub provider: Option<String>,
    /// The instructions' template.
    #[serde(default = "default_system")]
    pub system: String,
    /// The prompt's template.
    pub prompt: String,
    /// Which events are sent (default: all).
    #[serde(default)]
    pub when: Option<Value>,
    /// The answer's JSON Schema (default: the threat analysis).
    #[serde(default)]
    pub schema: Option<Value>,
    /// The schema's name, sent to providers that take one.
    #[serde(default = "default_schema_name")]
    pub schema_name: String,
    /// The top-level key the answer is attached under.
    #[serde(default = "default_into")]
    pub into: String,
    /// Most calls in flight.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// An answer that does not validate twice.
    #[serde(default)]
    pub on_invalid: OnInvalid,
    /// No provider can answer, or the budget is spent.
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
}

fn default_system() -> String {
    "You are a security analyst. Assess the event you are given and answer with JSON only."
        .to_owned()
}
fn default_schema_name() -> String {
    "threat_analysis".to_owned()
}
fn default_into() -> String {
    "analysis".to_owned()
}
fn default_concurrency() -> usize {
    16
}

/// StreamGuard's threat analysis.
pub fn threat_analysis_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "severity": {"type": "string", "enum": ["LOW", "MEDIUM", "HIGH", "CRITICAL"]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "indicators": {"type": "array", "items": {"type": "string"}},
            "summary": {"type": "string"},
            "recommendation": {"type": "string"}
        },
        "required": ["severity", "confidence", "indicators", "summary", "recommendation"],
        "additionalProperties": false
    })
}

impl StageConfig for AiStageConfig {
    const KIND: &'static str = "ai";

    fn build(self, cx: &BuildContext<'_>) -> Result<BuiltStage, ConfigError> {
        let gateway = prompting::gateway(cx, Self::KIND)?;
        let choice = match self.provider.as_deref() {
            Some("best") => Choice::Best,
            Some(name) if gateway.has(name) => Choice::Named(name.to_owned()),
            Some(name) => {
                return Err(ConfigError::new(
                    cx.key("provider"),
                    format!("no provider is named `{name}` under `ai.providers`"),
                ));
            }
            None => Choice::Named(
                gateway
                    .providers()
                    .first()
                    .map(|g| g.name().to_owned())
                    .unwrap_or_default(),
            ),
        };
        let concurrency = prompting::concurrency(cx, self.concurrency)?;
        if self.into.is_empty() {
            return Err(ConfigError::new(cx.key("into"), "must not be empty"));
        }
        let templates = Templates::build(
            cx,
            self.when.as_ref(),
            vec![("system", self.system), ("prompt", self.prompt)],
        )?;
        let schema = self.schema.unwrap_or_else(threat_analysis_schema);
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| ConfigError::new(cx.key("schema"), format!("not a JSON Schema: {e}")))?;
        Ok(BuiltStage::Async(Box::new(AiStage {
            templates,
            concurrency,
            shared: Arc::new(Shared {
                gateway,
                choice,
                pipeline: cx.pipeline.to_string(),
                schema: Arc::new(AnswerSchema::new(self.schema_name, schema)),
                validator,
                into: self.into,
                on_invalid: self.on_invalid,
                on_unavailable: self.on_unavailable,
                analysed: Mutex::new(Vec::new()),
                counts: Counts::default(),
            }),
        })))
    }
}

struct AiStage {
    templates: Templates,
    concurrency: usize,
    shared: Arc<Shared>,
}

/// What the stage's calls share.
struct Shared {
    gateway: Arc<Gateway>,
    choice: Choice,
    pipeline: String,
    schema: Arc<AnswerSchema>,
    validator: jsonschema::Validator,
    into: String,
    on_invalid: OnInvalid,
    on_unavailable: OnUnavailable,
    /// Analyses made since the last checkpoint, kept there.
    analysed: Mutex<Vec<(ResultRow, Analysis)>>,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    skipped: AtomicU64,
    analysed: AtomicU64,
    cached: AtomicU64,
    invalid: AtomicU64,
    unavailable: AtomicU64,
}

/// A row of the `analyses` table.
#[derive(Debug, Serialize)]
struct Analysis {
    event_id: EventId,
    analysis: Value,
    provider: String,
    model: String,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
    cached: bool,
}

impl AsyncStage for AiStage {
    fn concurrency(&self) -> usize {
        self.concurrency
    }

    fn call(&mut self, mut event: Event) -> BoxFuture<'static, CallResult> {
        let counts = &self.shared.counts;
        let (system, user) = match self.templates.render(&mut event, &["system", "prompt"]) {
            Ok(Some(mut texts)) => {
                let user = texts.pop().unwrap_or_default();
                (texts.pop().unwrap_or_default(), user)
            }
            Ok(None) => {
                counts.skipped.fetch_add(1, Ordering::Relaxed);
                return ready(Ok(vec![event]));
            }
            Err(error) => return ready(Err(Failed::new(error, event))),
        };
        let request = ChatRequest {
            system: (!system.is_empty()).then_some(system),
            user,
            schema: Some(Arc::clone(&self.shared.schema)),
        };
        counts.sent.fetch_add(1, Ordering::Relaxed);
        let shared = self.shared.clone();
        Box::pin(async move { shared.ask(event, request).await })
    }

    fn checkpoint(&mut self, cx: &mut StageContext<'_>) {
        let analysed = std::mem::take(
            &mut *self
                .shared
                .analysed
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (row, analysis) in analysed {
            cx.keep_json(ANALYSES, row, &analysis);
        }
        let counts = &self.shared.counts;
        for (name, n) in [
            ("sent", &counts.sent),
            ("skipped", &counts.skipped),
            ("analysed", &counts.analysed),
            ("cached", &counts.cached),
            ("invalid", &counts.invalid),
            ("unavailable", &counts.unavailable),
        ] {
            cx.total(name, n.load(Ordering::Relaxed));
        }
    }
}

impl Shared {
    /// Asks, validates (asking once more with the error), attaches.
    async fn ask(&self, event: Event, mut request: ChatRequest) -> CallResult {
        let mut asked_again = false;
        loop {
            let answered = match self
                .gateway
                .chat(&self.pipeline, &self.choice, &request)
                .await
            {
                Ok(answered) => answered,
                Err(error) => return self.unavailable(event, error),
            };
            match self.validate(&answered.answer.text) {
                Ok(analysis) => return Ok(vec![self.attach(event, analysis, answered)]),
                Err(problem) if !asked_again => {
                    asked_again = true;
                    tracing::debug!(pipeline = %self.pipeline, %problem, "an answer did not validate; asking again");
                    request.user = format!(
                        "{}\n\nYour previous answer was not valid: {problem}\nAnswer again with one JSON object matching the schema.",
                        request.user
                    );
                }
                Err(problem) => {
                    self.counts.invalid.fetch_add(1, Ordering::Relaxed);
                    return match self.on_invalid {
                        OnInvalid::Pass => Ok(vec![event]),
                        OnInvalid::Dlq => Err(Failed::new(
                            StageError::External {
                                reason: Reason::AiInvalid,
                                message: format!(
                                    "the answer did not match the schema twice: {problem}"
                                ),
                            },
                            event,
                        )),
                    };
                }
            }
        }
    }

    /// The answer as JSON matching the schema, or what is wrong with it.
    fn validate(&self, text: &str) -> Result<Value, String> {
        // Some models wrap JSON in a Markdown fence.
        let trimmed = text.trim();
        let body = trimmed
            .strip_prefix("```json")
            .or_else(|| trimmed.strip_prefix("```"))
            .and_then(|t| t.strip_suffix("```"))
            .unwrap_or(trimmed);
        let value: Value =
            serde_json::from_str(body).map_err(|e| format!("it is not JSON ({e})"))?;
        let problems: Vec<String> = self
            .validator
            .iter_errors(&value)
            .take(5)
            .map(|e| {
                let path = e.instance_path().to_string();
                format!("{}: {e}", if path.is_empty() { "/" } else { &path })
            })
            .collect();
        if problems.is_empty() {
            Ok(value)
        } else {
            Err(problems.join("; "))
        }
    }

    fn attach(&self, mut event: Event, analysis: Value, answered: Answered) -> Event {
        self.counts.analysed.fetch_add(1, Ordering::Relaxed);
        if answered.cached {
            self.counts.cached.fetch_add(1, Ordering::Relaxed);
        }
        event.data.insert(self.into.clone(), analysis.clone());
        let row = ResultRow {
            key: String::new(),
            at: i64::try_from(event.id.timestamp().as_millis()).unwrap_or(i64::MAX),
            id: Some(event.id),
        };
        let record = Analysis {
            event_id: event.id,
            analysis,
            provider: answered.provider,
            model: answered.model,
            input_tokens: answered.answer.usage.input,
            output_tokens: answered.answer.usage.output,
            cost_usd: answered.cost.usd(),
            cached: answered.cached,
        };
        self.analysed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((row, record));
        event
    }

    fn unavailable(&self, event: Event, error: GatewayError) -> CallResult {
        self.counts.unavailable.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(pipeline = %self.pipeline, %error, "no analysis");
        prompting::unavailable(event, error, self.on_unavailable)
    }
}
