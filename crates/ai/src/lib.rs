//! Governed AI calls (issue 25, in progress): the parts that keep a model provider from running
//! away with money or stalling the stream, before the providers and stages built on them.
//!
//! - [`money`]: amounts as whole nano-dollars, prices per million tokens.
//! - [`budget`]: the spend ledger: reserve a call's worst case, settle to its real cost, release
//!   on failure; per UTC day, per node and per pipeline; persisted in the node's store.
//! - [`breaker`]: a circuit breaker per provider.
//! - [`retry`]: what is retried, and how long to wait (`retry-after-ms`, `retry-after`, backoff).
//! - [`provider`]: the OpenAI Chat Completions and Anthropic Messages clients.
//! - [`gateway`]: the governed call: breaker, rate limits, reservation, retries, settlement,
//!   failover.
#![warn(missing_docs)]

pub mod breaker;
pub mod budget;
pub mod gateway;
pub mod money;
pub mod provider;
pub mod retry;

pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use budget::{BudgetError, Ledger, LedgerStore, Limits, Reservation, Today};
pub use gateway::{Answered, Gateway, GatewayError, Governance, Governed};
pub use money::{Nanos, Price};
pub use provider::{
    Api, CallError, ChatAnswer, ChatRequest, Provider, ProviderSpec, Secret, Usage,
};
pub use retry::RetryPolicy;
