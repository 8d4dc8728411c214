//! The governed call path: for each provider in failover order, its breaker must let the call
//! through, its rate limits (requests and tokens per minute) are waited for, the budget
//! reserves the call's worst case, the call is made with retries (timeouts, 429, 5xx; the
//! provider's `retry-after` honoured), and the reservation settles to the cost of the returned
//! `usage` — or is released when the call failed. A provider that is open, out of budget or
//! failing is passed over for the next; a request the provider refuses as malformed (another
//! 4xx) is not retried anywhere.
//!
//! Waiting for a permit or for open reservations is backpressure on the calling stage only.
//!
//! **Order.** A stage names a provider (tried first, then the others in config order) or asks
//! for `best`: providers by a score, lowest first, `(worst-case cost of this call in USD +
//! 0.0001) × (mean latency in s + 0.05) / (success rate + 0.01)²`, where the latency is the moving mean of its answered calls (1 s until it has
//! answered) and the success rate a moving mean of its calls' outcomes (starting at 1). The
//! rate counts twice: a call that fails costs a failover in time and in the next provider's
//! price. Cheap, fast, reliable providers come first; one that fails drops back within a few
//! calls until it recovers.
//!
//! **Cache.** Answers are cached by (provider, model, `max_tokens`, `temperature`, rendered
//! prompt and schema) for a TTL, within a size bound in bytes; concurrent identical calls wait
//! for the first one (single flight), so identical prompts in a burst cost once. A cached
//! answer costs nothing and reserves nothing.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use colloquium_storage::Account;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::budget::{BudgetError, Ledger};
use crate::metrics::{AiMetrics, CacheLabels, CallLabels, ProviderLabels, TokenLabels};
use crate::money::{Nanos, Price};
use crate::provider::{CallError, ChatAnswer, ChatRequest, Provider, TokenCounter, Usage};
use crate::retry::RetryPolicy;

/// A provider with its governance.
pub struct Governed {
    provider: Provider,
    price: Price,
    retry: RetryPolicy,
    breaker: Mutex<Breaker>,
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<DefaultDirectRateLimiter>,
    observed: Mutex<Observed>,
    counter: TokenCounter,
}

/// What a provider has shown so far, for `best`.
#[derive(Clone, Copy, Debug)]
struct Observed {
    /// Moving mean of answered calls' latency, seconds.
    latency: f64,
    /// Moving mean of outcomes (1 answered, 0 failed).
    success: f64,
}

/// Weight of the newest observation in the moving means.
const ALPHA: f64 = 0.2;

/// The limits of one provider.
#[derive(Clone, Copy, Debug, Default)]
pub struct Governance {
    /// Its prices.
    pub price: Price,
    /// Its retries.
    pub retry: RetryPolicy,
    /// Its breaker.
    pub breaker: BreakerConfig,
    /// Requests per minute (none: unpaced).
    pub requests_per_minute: Option<NonZeroU32>,
    /// Tokens per minute, prompt and answer (none: unpaced).
    pub tokens_per_minute: Option<NonZeroU32>,
}

impl Governed {
    /// `provider` governed by `governance`.
    pub fn new(provider: Provider, governance: Governance) -> Governed {
        let limiter = |per_minute: Option<NonZeroU32>| {
            per_minute.map(|n| RateLimiter::direct(Quota::per_minute(n)))
        };
        let spec = provider.spec();
        let counter = TokenCounter::for_model(spec.api, &spec.model);
        Governed {
            counter,
            provider,
            price: governance.price,
            retry: governance.retry,
            breaker: Mutex::new(Breaker::new(governance.breaker)),
            requests: limiter(governance.requests_per_minute),
            tokens: limiter(governance.tokens_per_minute),
            observed: Mutex::new(Observed {
                latency: 1.0,
                success: 1.0,
            }),
        }
    }

    /// Its client.
    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// Its prices.
    pub fn price(&self) -> Price {
        self.price
    }

    /// Its `best` score for a call of `input` tokens (lower is better; see the module docs).
    pub fn score(&self, input: u64) -> f64 {
        let worst = self
            .price
            .cost(input, u64::from(self.provider.spec().max_tokens));
        let seen = *self.observed.lock().unwrap_or_else(PoisonError::into_inner);
        (worst.usd() + 0.0001) * (seen.latency + 0.05) / (seen.success + 0.01).powi(2)
    }

    fn observe(&self, answered: Option<Duration>) {
        let mut seen = self.observed.lock().unwrap_or_else(PoisonError::into_inner);
        seen.success =
            (1.0 - ALPHA) * seen.success + ALPHA * f64::from(u8::from(answered.is_some()));
        if let Some(took) = answered {
            seen.latency = (1.0 - ALPHA) * seen.latency + ALPHA * took.as_secs_f64();
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.provider.spec().name
    }

    /// Its breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        let breaker = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
        breaker.state(Instant::now())
    }

    fn labels(&self) -> ProviderLabels {
        ProviderLabels {
            provider: self.name().to_owned(),
        }
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a request permit and `tokens` token permits; an error when one call needs
    /// more tokens than a minute allows.
    async fn pace(&self, tokens: u64) -> Result<(), String> {
        if let Some(requests) = &self.requests {
            requests.until_ready().await;
        }
        if let Some(limiter) = &self.tokens {
            let n = u32::try_from(tokens)
                .ok()
                .and_then(NonZeroU32::new)
                .unwrap_or(NonZeroU32::MIN);
            limiter
                .until_n_ready(n)
                .await
                .map_err(|_| format!("a call of {tokens} tokens is over tokens_per_minute"))?;
        }
        Ok(())
    }

    /// `call` with its retries.
    async fn retrying<T, F: Future<Output = Result<T, CallError>>>(
        &self,
        metrics: &AiMetrics,
        mut call: impl FnMut() -> F,
    ) -> Result<T, CallError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match call().await {
                Ok(answer) => return Ok(answer),
                Err(error) if error.retryable() && attempt < self.retry.max_attempts.max(1) => {
                    let wait = self.retry.wait(attempt, error.retry_after());
                    tracing::debug!(provider = %self.name(), %error, ?wait, "retrying");
                    metrics.retries.get_or_create(&self.labels()).inc();
                    tokio::time::sleep(wait).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// A governed call's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Answered {
    /// The answer.
    pub answer: ChatAnswer,
    /// The provider that gave it.
    pub provider: String,
    /// Its model.
    pub model: String,
    /// What it cost (from its usage; nothing when it came from the cache).
    pub cost: Nanos,
    /// Whether it came from the cache.
    pub cached: bool,
}

/// Why a governed call gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GatewayError {
    /// No provider could take the call: each one's reason.
    #[error("no provider is available: {}", .0.join("; "))]
    Unavailable(Vec<String>),
    /// The budget refused it everywhere.
    #[error("{0}")]
    Budget(BudgetError),
    /// The provider refused the request itself (a 4xx other than 408/429): no other
    /// provider is tried.
    #[error("{0}")]
    Refused(CallError),
}

/// Which provider a stage asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// This one first, then the others in config order.
    Named(String),
    /// By the `best` score (module docs).
    Best,
}

/// Why one provider gave no answer.
#[derive(Debug, Clone)]
enum Missed {
    /// Passed over (open, paced out, failing): the reason, and whether it was the budget.
    Next(String, Option<BudgetError>),
    /// Stop here.
    Stop(GatewayError),
}

type Cache = moka::future::Cache<String, Arc<Answered>>;

/// Providers in failover order, the ledger they spend from, and the response cache.
pub struct Gateway {
    providers: Vec<Arc<Governed>>,
    ledger: Ledger,
    cache: Option<Cache>,
    metrics: AiMetrics,
}

impl Gateway {
    /// A gateway over `providers` (tried in this order), with no cache and metrics of its own.
    pub fn new(providers: Vec<Arc<Governed>>, ledger: Ledger) -> Gateway {
        Gateway {
            providers,
            ledger,
            cache: None,
            metrics: AiMetrics::register(&colloquium_telemetry::MetricsRegistry::default()),
        }
    }

    /// Caches answers for `ttl`, within `max_bytes` of prompts and answers (no cache when
    /// either is zero).
    pub fn with_cache(mut self, ttl: Duration, max_bytes: u64) -> Gateway {
        self.cache = (!ttl.is_zero() && max_bytes > 0).then(|| {
            moka::future::Cache::builder()
                .time_to_live(ttl)
                .max_capacity(max_bytes)
                .weigher(|key: &String, answer: &Arc<Answered>| {
                    u32::try_from(key.len() + answer.answer.text.len() + 64).unwrap_or(u32::MAX)
                })
                .build()
        });
        self
    }

    /// Reports in `metrics`.
    pub fn with_metrics(mut self, metrics: AiMetrics) -> Gateway {
        self.ledger.count_alerts_in(metrics.budget_alerts.clone());
        self.metrics = metrics;
        self
    }

    /// The providers.
    pub fn providers(&self) -> &[Arc<Governed>] {
        &self.providers
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Whether a provider is named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.providers.iter().any(|g| g.name() == name)
    }

    /// The providers in the order `choice` tries them.
    fn order(&self, choice: &Choice, request: &ChatRequest) -> Vec<&Arc<Governed>> {
        let mut order: Vec<&Arc<Governed>> = self.providers.iter().collect();
        match choice {
            Choice::Named(name) => order.sort_by_key(|g| g.name() != name),
            Choice::Best => {
                let mut scored: Vec<_> = order
                    .into_iter()
                    .map(|g| (g.score(g.counter.count(request)), g))
                    .collect();
                scored.sort_by(|a, b| a.0.total_cmp(&b.0));
                order = scored.into_iter().map(|(_, g)| g).collect();
            }
        }
        order
    }

    /// Asks `request` for pipeline `pipeline`, of `choice` and failing over to the rest.
    pub async fn chat(
        &self,
        pipeline: &str,
        choice: &Choice,
        request: &ChatRequest,
    ) -> Result<Answered, GatewayError> {
        let mut reasons = Vec::new();
        let mut budget = None;
        let mut refusals = 0;
        for governed in self.order(choice, request) {
            let result = match &self.cache {
                None => self.ask(governed, pipeline, request).await,
                Some(cache) => {
                    let ran = AtomicBool::new(false);
                    let key = cache_key(governed, request);
                    let asked = cache
                        .try_get_with(key, async {
                            ran.store(true, Ordering::Relaxed);
                            self.ask(governed, pipeline, request).await.map(Arc::new)
                        })
                        .await;
                    let hit = !ran.load(Ordering::Relaxed);
                    let result = if hit { "hit" } else { "miss" };
                    self.metrics
                        .cache
                        .get_or_create(&CacheLabels { result })
                        .inc();
                    match asked {
                        Ok(answered) if hit => Ok(Answered {
                            cost: Nanos::ZERO,
                            cached: true,
                            ..(*answered).clone()
                        }),
                        Ok(answered) => Ok((*answered).clone()),
                        Err(missed) => Err((*missed).clone()),
                    }
                }
            };
            match result {
                Ok(answered) => return Ok(answered),
                Err(Missed::Stop(error)) => return Err(error),
                Err(Missed::Next(reason, refused)) => {
                    if let Some(error) = refused {
                        budget.get_or_insert(error);
                        refusals += 1;
                    }
                    reasons.push(reason);
                }
            }
        }
        match budget {
            // Every provider was refused by the budget (none was open or failing).
            Some(error) if refusals == reasons.len() => Err(GatewayError::Budget(error)),
            _ => Err(GatewayError::Unavailable(reasons)),
        }
    }

    /// One provider's chat answer.
    async fn ask(
        &self,
        governed: &Governed,
        pipeline: &str,
        request: &ChatRequest,
    ) -> Result<Answered, Missed> {
        let spec = governed.provider.spec();
        let input = governed.counter.count(request);
        let (answer, cost) = self
            .governed(
                governed,
                pipeline,
                (input, u64::from(spec.max_tokens)),
                || async {
                    let answer = governed.provider.chat(request).await?;
                    let usage = answer.usage;
                    Ok((answer, usage))
                },
            )
            .await?;
        Ok(Answered {
            answer,
            provider: governed.name().to_owned(),
            model: spec.model.clone(),
            cost,
            cached: false,
        })
    }

    /// The embedding of `text` by provider `name` for pipeline `pipeline`, governed like a
    /// chat call (its worst case: the text's tokens, no answer tokens). No failover: another
    /// model's vectors would not be comparable with the ones already kept.
    pub async fn embed(
        &self,
        pipeline: &str,
        name: &str,
        text: &str,
    ) -> Result<(Vec<f32>, Nanos), GatewayError> {
        let Some(governed) = self.providers.iter().find(|g| g.name() == name) else {
            return Err(GatewayError::Unavailable(vec![format!(
                "no provider `{name}`"
            )]));
        };
        let input = governed.counter.count(&ChatRequest {
            system: None,
            user: text.to_owned(),
            schema: None,
        });
        let call = || governed.provider.embed(text);
        match self.governed(governed, pipeline, (input, 0), call).await {
            Ok(embedded) => Ok(embedded),
            Err(Missed::Stop(error)) => Err(error),
            Err(Missed::Next(reason, Some(budget))) => {
                tracing::debug!(%reason, "embedding refused by the budget");
                Err(GatewayError::Budget(budget))
            }
            Err(Missed::Next(reason, None)) => Err(GatewayError::Unavailable(vec![reason])),
        }
    }

    /// One governed call at one provider: its breaker, pacing for `tokens` (prompt, most
    /// answer), the reservation of their worst case, `call` with its retries, settlement to
    /// the returned usage; what it answered and what it cost.
    async fn governed<T, F: Future<Output = Result<(T, Usage), CallError>>>(
        &self,
        governed: &Governed,
        pipeline: &str,
        (input, max_output): (u64, u64),
        call: impl FnMut() -> F,
    ) -> Result<(T, Nanos), Missed> {
        let name = governed.name();
        let outcome = |outcome: &'static str| {
            self.metrics
                .calls
                .get_or_create(&CallLabels {
                    provider: name.to_owned(),
                    outcome,
                })
                .inc();
        };
        if !governed.breaker().allow(Instant::now()) {
            outcome("open");
            return Err(Missed::Next(format!("{name}: circuit open"), None));
        }
        if let Err(reason) = governed.pace(input + max_output).await {
            outcome("paced");
            return Err(Missed::Next(format!("{name}: {reason}"), None));
        }
        let worst = governed.price.cost(input, max_output);
        let account = Account {
            pipeline: pipeline.to_owned(),
            provider: name.to_owned(),
            model: governed.provider.spec().model.clone(),
        };
        let reservation = match self.ledger.reserve(&account, worst).await {
            Ok(reservation) => reservation,
            Err(error @ BudgetError::Exhausted { .. }) => {
                // A cheaper provider may still fit.
                outcome("budget");
                return Err(Missed::Next(format!("{name}: {error}"), Some(error)));
            }
            Err(error) => return Err(Missed::Stop(GatewayError::Budget(error))),
        };
        let started = Instant::now();
        match governed.retrying(&self.metrics, call).await {
            Ok((answer, usage)) => {
                let took = started.elapsed();
                governed.breaker().success();
                governed.observe(Some(took));
                let cost = governed.price.cost(usage.input, usage.output);
                reservation.settle(cost);
                outcome("answered");
                let labels = governed.labels();
                self.metrics.cost.get_or_create(&labels).inc_by(cost.0);
                self.metrics
                    .latency
                    .get_or_create(&labels)
                    .observe(took.as_secs_f64());
                for (kind, n) in [("input", usage.input), ("output", usage.output)] {
                    self.metrics
                        .tokens
                        .get_or_create(&TokenLabels {
                            provider: name.to_owned(),
                            kind,
                        })
                        .inc_by(n);
                }
                Ok((answer, cost))
            }
            Err(error) => {
                reservation.release();
                if !error.counts_against_provider() {
                    outcome("refused");
                    return Err(Missed::Stop(GatewayError::Refused(error)));
                }
                governed.breaker().failure(Instant::now());
                governed.observe(None);
                outcome("failed");
                tracing::warn!(provider = %name, %error, "provider failed; trying the next");
                Err(Missed::Next(error.to_string(), None))
            }
        }
    }

    /// Updates the breaker and spend gauges, and returns the gateway's health: degraded while
    /// a breaker is open, unhealthy while all are.
    pub fn refresh(&self) -> colloquium_telemetry::health::ComponentHealth {
        use colloquium_telemetry::health::{ComponentHealth, Status};
        let mut details = serde_json::Map::new();
        let mut providers = serde_json::Map::new();
        let mut open = 0;
        for governed in &self.providers {
            let state = governed.breaker_state();
            self.metrics
                .breaker
                .get_or_create(&governed.labels())
                .set(state.level());
            if state == BreakerState::Open {
                open += 1;
            }
            providers.insert(governed.name().to_owned(), state.as_str().into());
        }
        let today = self.ledger.today();
        let mut total = (Nanos::ZERO, Nanos::ZERO);
        for (pipeline, spent) in &today.spent {
            total.0 = total.0.plus(*spent);
            self.metrics
                .spent_today
                .get_or_create(&crate::metrics::PipelineLabels {
                    pipeline: pipeline.clone(),
                })
                .set(i64::try_from(spent.0).unwrap_or(i64::MAX));
        }
        for reserved in today.reserved.values() {
            total.1 = total.1.plus(*reserved);
        }
        for (gauge, value) in [
            (&self.metrics.spent_today, total.0),
            (&self.metrics.reserved_today, total.1),
        ] {
            gauge
                .get_or_create(&crate::metrics::PipelineLabels {
                    pipeline: "node".into(),
                })
                .set(i64::try_from(value.0).unwrap_or(i64::MAX));
        }
        details.insert("providers".into(), providers.into());
        details.insert("spent_today_usd".into(), total.0.usd().into());
        if let Some(daily) = self.ledger.limits().daily {
            details.insert("daily_budget_usd".into(), daily.usd().into());
        }
        let (status, reasons) = match open {
            0 => (Status::Healthy, Vec::new()),
            n if n == self.providers.len() => (
                Status::Unhealthy,
                vec!["every AI provider's circuit is open".to_owned()],
            ),
            n => (
                Status::Degraded,
                vec![format!("{n} AI provider circuit(s) open")],
            ),
        };
        ComponentHealth {
            status,
            reasons,
            details,
        }
    }
}

/// The cache key of `request` at `governed`: everything that shapes the answer.
fn cache_key(governed: &Governed, request: &ChatRequest) -> String {
    let spec = governed.provider.spec();
    let schema = request
        .schema
        .as_ref()
        .map(|schema| format!("{}\u{1}{}", schema.name, schema.text()))
        .unwrap_or_default();
    format!(
        "{}\u{1}{}\u{1}{}\u{1}{:?}\u{1}{}\u{1}{}\u{1}{schema}",
        spec.name,
        spec.model,
        spec.max_tokens,
        spec.temperature,
        request.system.as_deref().unwrap_or(""),
        request.user,
    )
}
