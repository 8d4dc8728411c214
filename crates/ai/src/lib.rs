//! Governed AI in the stream: model providers that can never run away with money or stall
//! the stream, and the `ai` stage built on them.
//!
//! - [`money`]: amounts as whole nano-dollars, prices per million tokens.
//! - [`budget`]: the spend ledger: reserve a call's worst case, settle to its real cost, release
//!   on failure; per UTC day, per node and per pipeline; persisted in the node's store.
//! - [`breaker`]: a circuit breaker per provider.
//! - [`retry`]: what is retried, and how long to wait (`retry-after-ms`, `retry-after`, backoff).
//! - [`provider`]: the OpenAI Chat Completions and Anthropic Messages clients.
//! - [`gateway`]: the governed call: breaker, rate limits, reservation, retries, settlement,
//!   failover, provider choice (`best`), the response cache.
//! - [`metrics`]: the `colloquium_ai_*` metrics.
//! - [`setup`]: the node's gateway from `ai:`.
//! - [`embed`]: the `embed` stage (vectors kept in its `embeddings` results table).
//! - [`similar`]: similar-event search over those vectors (exact, then HNSW).
//! - [`stage`]: the `ai` stage (a prompt template, `when:`, a JSON-schema answer kept in the
//!   stage's `analyses` results table).
#![warn(missing_docs)]

pub mod breaker;
pub mod budget;
pub mod embed;
pub mod gateway;
pub mod metrics;
pub mod money;
mod prompting;
pub mod provider;
pub mod retry;
pub mod setup;
pub mod similar;
pub mod stage;

pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use budget::{BudgetError, Ledger, LedgerStore, Limits, MemoryLedger, Reservation, Today};
pub use embed::EmbedConfig;
pub use gateway::{Answered, Choice, Gateway, GatewayError, Governance, Governed};
pub use metrics::AiMetrics;
pub use money::{Nanos, Price};
pub use provider::{
    Api, CallError, ChatAnswer, ChatRequest, Provider, ProviderSpec, Secret, Usage,
};
pub use retry::RetryPolicy;
pub use similar::Indexes;
pub use stage::AiStageConfig;
