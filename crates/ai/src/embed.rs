//! `embed`: the embedding of a text rendered from each event, kept for similar-event search.
//!
//! - `text` is a `minijinja` template like the `ai` stage's prompt; `when:` picks the events.
//! - `provider` names an OpenAI-compatible provider under `ai.providers` whose `model` is an
//!   embedding model (`POST {base_url}/embeddings`). It is governed like any call (breaker,
//!   rate limits, the budget), without failover: another model's vectors could not be
//!   compared with the ones kept.
//! - Each vector is kept in the stage's `embeddings` results table (key `""`, at the event's
//!   ingest time: `{event_id, provider, model, dims, vector}`, the vector as base64 of
//!   little-endian `f32`s) and added to the node's similar-event index
//!   (`GET /api/events/{id}/similar`).
//! - When the provider cannot answer or the budget is spent: `on_unavailable` as for `ai`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use colloquium_config::ConfigError;
use colloquium_event::{Event, EventId};
use colloquium_pipeline::{
    AsyncStage, BuildContext, BuiltStage, CallResult, Failed, ResultRow, StageConfig, StageContext,
};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::gateway::Gateway;
use crate::prompting::{self, OnUnavailable, Templates, ready};
use crate::provider::Api;
use crate::similar::{Index, Indexes};

/// The results table of embeddings.
pub const EMBEDDINGS: &str = "embeddings";

/// `{type: embed, provider: embedder, text: "{{ event.summary }}"}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedConfig {
    /// An OpenAI-compatible provider with an embedding model.
    pub provider: String,
    /// The text's template.
    pub text: String,
    /// Which events are embedded (default: all).
    #[serde(default)]
    pub when: Option<Value>,
    /// Most calls in flight.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// The provider cannot answer, or the budget is spent.
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
}

fn default_concurrency() -> usize {
    16
}

/// A row of the `embeddings` table.
#[derive(Debug, Serialize, Deserialize)]
pub struct Embedding {
    /// The event.
    pub event_id: EventId,
    /// The provider that made it.
    pub provider: String,
    /// Its model.
    pub model: String,
    /// Its dimensions.
    pub dims: usize,
    /// Base64 of its little-endian `f32`s.
    pub vector: String,
}

impl Embedding {
    /// The vector's values; `None` when they are not whole `f32`s.
    pub fn values(&self) -> Option<Vec<f32>> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.vector)
            .ok()?;
        if bytes.len() % 4 != 0 {
            return None;
        }
        Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }
}

impl StageConfig for EmbedConfig {
    const KIND: &'static str = "embed";

    fn build(self, cx: &BuildContext<'_>) -> Result<BuiltStage, ConfigError> {
        let gateway = prompting::gateway(cx, Self::KIND)?;
        let Some(governed) = gateway
            .providers()
            .iter()
            .find(|g| g.name() == self.provider)
        else {
            return Err(ConfigError::new(
                cx.key("provider"),
                format!(
                    "no provider is named `{}` under `ai.providers`",
                    self.provider
                ),
            ));
        };
        if governed.provider().spec().api != Api::Openai {
            return Err(ConfigError::new(
                cx.key("provider"),
                "embeddings need an OpenAI-compatible provider (`api: openai`)",
            ));
        }
        let model = governed.provider().spec().model.clone();
        let concurrency = prompting::concurrency(cx, self.concurrency)?;
        let templates = Templates::build(cx, self.when.as_ref(), vec![("text", self.text)])?;
        let indexes = cx.registry.service::<Indexes>().unwrap_or_default();
        let index = indexes.stage(&cx.pipeline, &cx.id, &self.provider);
        Ok(BuiltStage::Async(Box::new(EmbedStage {
            templates,
            concurrency,
            shared: Arc::new(Shared {
                gateway,
                provider: self.provider,
                model,
                pipeline: cx.pipeline.to_string(),
                on_unavailable: self.on_unavailable,
                index,
                made: Mutex::new(Vec::new()),
                embedded: AtomicU64::new(0),
                skipped: AtomicU64::new(0),
                unavailable: AtomicU64::new(0),
            }),
        })))
    }
}

struct EmbedStage {
    templates: Templates,
    concurrency: usize,
    shared: Arc<Shared>,
}

struct Shared {
    gateway: Arc<Gateway>,
    provider: String,
    model: String,
    pipeline: String,
    on_unavailable: OnUnavailable,
    index: Arc<Index>,
    /// Embeddings made since the last checkpoint.
    made: Mutex<Vec<(ResultRow, Embedding, Vec<f32>)>>,
    embedded: AtomicU64,
    skipped: AtomicU64,
    unavailable: AtomicU64,
}

impl AsyncStage for EmbedStage {
    fn concurrency(&self) -> usize {
        self.concurrency
    }

    fn call(&mut self, mut event: Event) -> BoxFuture<'static, CallResult> {
        let text = match self.templates.render(&mut event, &["text"]) {
            Ok(Some(mut texts)) => texts.pop().unwrap_or_default(),
            Ok(None) => {
                self.shared.skipped.fetch_add(1, Ordering::Relaxed);
                return ready(Ok(vec![event]));
            }
            Err(error) => return ready(Err(Failed::new(error, event))),
        };
        let shared = self.shared.clone();
        Box::pin(async move { shared.embed(event, text).await })
    }

    fn checkpoint(&mut self, cx: &mut StageContext<'_>) {
        let made = std::mem::take(
            &mut *self
                .shared
                .made
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (row, embedding, values) in made {
            if let Err(error) = self.shared.index.add(embedding.event_id, &values) {
                tracing::warn!(pipeline = %self.shared.pipeline, %error, "an embedding was not indexed");
            }
            cx.keep_json(EMBEDDINGS, row, &embedding);
        }
        let s = &self.shared;
        cx.total("embedded", s.embedded.load(Ordering::Relaxed));
        cx.total("skipped", s.skipped.load(Ordering::Relaxed));
        cx.total("unavailable", s.unavailable.load(Ordering::Relaxed));
        cx.gauge("indexed", u64::try_from(s.index.len()).unwrap_or(u64::MAX));
    }
}

impl Shared {
    async fn embed(&self, event: Event, text: String) -> CallResult {
        let (values, _cost) = match self
            .gateway
            .embed(&self.pipeline, &self.provider, &text)
            .await
        {
            Ok(embedded) => embedded,
            Err(error) => {
                self.unavailable.fetch_add(1, Ordering::Relaxed);
                return prompting::unavailable(event, error, self.on_unavailable);
            }
        };
        self.embedded.fetch_add(1, Ordering::Relaxed);
        let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        let embedding = Embedding {
            event_id: event.id,
            provider: self.provider.clone(),
            model: self.model.clone(),
            dims: values.len(),
            vector: base64::engine::general_purpose::STANDARD.encode(bytes),
        };
        let row = ResultRow {
            key: String::new(),
            at: i64::try_from(event.id.timestamp().as_millis()).unwrap_or(i64::MAX),
            id: Some(event.id),
        };
        self.made
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((row, embedding, values));
        Ok(vec![event])
    }
}
