//! Building the node's [`Gateway`] from `ai:`: each provider's client, key and governance, the
//! ledger on the node's store with the budgets, and the cache.

use std::path::Path;
use std::sync::Arc;

use colloquium_config::ConfigError;
use colloquium_config::ai::{AiConfig, ProviderApi, ProviderConfig};
use colloquium_telemetry::MetricsRegistry;

use crate::breaker::BreakerConfig;
use crate::budget::{Clock, Ledger, LedgerStore, Limits};
use crate::gateway::{Gateway, Governance, Governed};
use crate::metrics::AiMetrics;
use crate::money::Price;
use crate::provider::{Api, KeySource, Provider, ProviderSpec};
use crate::retry::RetryPolicy;

/// The gateway `ai` describes, spending from the ledger in `store` (the node's store, or a
/// [`crate::budget::MemoryLedger`]); `None` without providers.
/// Errors name their key path: a key that cannot be read, a ledger that cannot be opened.
pub fn gateway(
    ai: &AiConfig,
    base_dir: Option<&Path>,
    store: Box<dyn LedgerStore>,
    metrics: &MetricsRegistry,
    clock: Clock,
) -> Result<Option<Gateway>, ConfigError> {
    if ai.providers.is_empty() {
        return Ok(None);
    }
    let mut providers = Vec::new();
    for (name, config) in &ai.providers {
        providers.push(Arc::new(governed(name, config, base_dir)?));
    }
    let limits = Limits {
        daily: ai.budget.daily,
        per_pipeline: ai.budget.per_pipeline.clone(),
        alert_at: ai.budget.alert_at,
        auto_stop: ai.budget.auto_stop,
    };
    let ledger = Ledger::open(store, limits, clock)
        .map_err(|e| ConfigError::new("ai.budget", e.to_string()))?;
    Ok(Some(
        Gateway::new(providers, ledger)
            .with_cache(ai.cache.ttl, ai.cache.max_size.as_u64())
            .with_metrics(AiMetrics::register(metrics)),
    ))
}

/// One provider with its governance.
fn governed(
    name: &str,
    config: &ProviderConfig,
    base_dir: Option<&Path>,
) -> Result<Governed, ConfigError> {
    let at = |key: &str| format!("ai.providers.{name}.{key}");
    let key = match (&config.api_key_env, &config.api_key_file) {
        (Some(var), _) => Some((KeySource::Env(var.clone()), "api_key_env")),
        (None, Some(file)) => {
            let file = base_dir.map_or_else(|| file.clone(), |dir| dir.join(file));
            Some((KeySource::File(file), "api_key_file"))
        }
        (None, None) => None,
    };
    let key = match key {
        Some((source, option)) => Some(source.read().map_err(|e| ConfigError::new(at(option), e))?),
        None => None,
    };
    let (api, default_url) = match config.api {
        ProviderApi::Openai => (Api::Openai, "https://api.openai.com/v1"),
        ProviderApi::Anthropic => (Api::Anthropic, "https://api.anthropic.com"),
    };
    let spec = ProviderSpec {
        name: name.to_owned(),
        api,
        base_url: config
            .base_url
            .clone()
            .unwrap_or_else(|| default_url.to_owned()),
        model: config.model.clone(),
        max_tokens: config.max_tokens,
        temperature: config.temperature,
        timeout: config.timeout,
        key,
    };
    let provider = Provider::new(spec).map_err(|e| ConfigError::new(at("base_url"), e))?;
    Ok(Governed::new(
        provider,
        Governance {
            price: Price {
                input_per_million: config.price.input,
                output_per_million: config.price.output,
            },
            retry: RetryPolicy {
                max_attempts: config.retry.max_attempts,
                base: config.retry.backoff,
                max_wait: config.retry.max_wait,
            },
            breaker: BreakerConfig {
                failure_threshold: config.breaker.failure_threshold,
                cool_down: config.breaker.cool_down,
                half_open_probes: config.breaker.half_open_probes,
            },
            requests_per_minute: config.requests_per_minute,
            tokens_per_minute: config.tokens_per_minute,
        },
    ))
}
