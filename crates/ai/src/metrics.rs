//! What the AI gateway reports (`colloquium_ai_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use colloquium_telemetry::MetricsRegistry;

/// A provider.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// Its name in config.
    pub provider: String,
}

/// A call's outcome at one provider.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// Its name in config.
    pub provider: String,
    /// `answered`, `failed` (after its retries), `refused` (a 4xx about the request),
    /// `open` (its breaker refused), `budget` (the budget refused), `paced` (over
    /// `tokens_per_minute` on its own).
    pub outcome: &'static str,
}

/// Tokens by direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// Its name in config.
    pub provider: String,
    /// `input` or `output`.
    pub kind: &'static str,
}

/// A pipeline.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    /// The pipeline (`node` for the node's whole spend).
    pub pipeline: String,
}

/// A cache lookup's result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `hit` or `miss`.
    pub result: &'static str,
}

/// The gateway's metrics.
#[derive(Clone)]
pub struct AiMetrics {
    pub(crate) calls: Family<CallLabels, Counter>,
    pub(crate) retries: Family<ProviderLabels, Counter>,
    pub(crate) tokens: Family<TokenLabels, Counter>,
    pub(crate) cost: Family<ProviderLabels, Counter>,
    pub(crate) latency: Family<ProviderLabels, Histogram>,
    pub(crate) breaker: Family<ProviderLabels, Gauge>,
    pub(crate) cache: Family<CacheLabels, Counter>,
    pub(crate) spent_today: Family<PipelineLabels, Gauge>,
    pub(crate) reserved_today: Family<PipelineLabels, Gauge>,
    pub(crate) budget_alerts: Counter,
}

impl AiMetrics {
    /// Registers them once per registry.
    pub fn register(registry: &MetricsRegistry) -> AiMetrics {
        registry.once(|registry| {
            registry.register("ai", |r| {
                let m = AiMetrics {
                    calls: Family::default(),
                    retries: Family::default(),
                    tokens: Family::default(),
                    cost: Family::default(),
                    latency: Family::new_with_constructor(
                        colloquium_telemetry::metrics::latency_histogram,
                    ),
                    breaker: Family::default(),
                    cache: Family::default(),
                    spent_today: Family::default(),
                    reserved_today: Family::default(),
                    budget_alerts: Counter::default(),
                };
                r.register(
                    "calls",
                    "Governed calls by provider and outcome",
                    m.calls.clone(),
                );
                r.register(
                    "retries",
                    "Attempts retried after a timeout, 429 or 5xx",
                    m.retries.clone(),
                );
                r.register("tokens", "Tokens the providers counted", m.tokens.clone());
                r.register(
                    "cost_nanodollars",
                    "What answered calls cost (10^-9 USD)",
                    m.cost.clone(),
                );
                r.register(
                    "call_duration_seconds",
                    "Time to an answer, retries included",
                    m.latency.clone(),
                );
                r.register(
                    "breaker_state",
                    "Circuit breaker: 0 closed, 1 half-open, 2 open",
                    m.breaker.clone(),
                );
                r.register("cache", "Response cache lookups", m.cache.clone());
                r.register(
                    "spent_today_nanodollars",
                    "Settled spend this UTC day (pipeline `node`: all)",
                    m.spent_today.clone(),
                );
                r.register(
                    "reserved_today_nanodollars",
                    "Open reservations (calls in flight) this UTC day",
                    m.reserved_today.clone(),
                );
                r.register(
                    "budget_alerts",
                    "Budgets that passed their alert threshold",
                    m.budget_alerts.clone(),
                );
                m
            })
        })
    }
}
