//! The governed call path: for each provider in failover order, its breaker must let the call
//! through, its rate limits (requests and tokens per minute) are waited for, the budget
//! reserves the call's worst case, the call is made with retries (timeouts, 429, 5xx; the
//! provider's `retry-after` honoured), and the reservation settles to the cost of the returned
//! `usage` — or is released when the call failed. A provider that is open, out of budget or
//! failing is passed over for the next; a request the provider refuses as malformed (another
//! 4xx) is not retried anywhere.
//!
//! Waiting for a permit or for open reservations is backpressure on the calling stage only.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::budget::{BudgetError, Ledger};
use crate::money::{Nanos, Price};
use crate::provider::{CallError, ChatAnswer, ChatRequest, Provider, estimate_tokens};
use crate::retry::RetryPolicy;

/// A provider with its governance.
pub struct Governed {
    provider: Provider,
    price: Price,
    retry: RetryPolicy,
    breaker: Mutex<Breaker>,
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<DefaultDirectRateLimiter>,
}

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
        Governed {
            provider,
            price: governance.price,
            retry: governance.retry,
            breaker: Mutex::new(Breaker::new(governance.breaker)),
            requests: limiter(governance.requests_per_minute),
            tokens: limiter(governance.tokens_per_minute),
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

    /// The call with its retries.
    async fn call(&self, request: &ChatRequest) -> Result<ChatAnswer, CallError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.provider.chat(request).await {
                Ok(answer) => return Ok(answer),
                Err(error) if error.retryable() && attempt < self.retry.max_attempts.max(1) => {
                    let wait = self.retry.wait(attempt, error.retry_after());
                    tracing::debug!(provider = %self.name(), %error, ?wait, "retrying");
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
    /// What it cost (from its usage).
    pub cost: Nanos,
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

/// Providers in failover order, and the ledger they spend from.
pub struct Gateway {
    providers: Vec<Arc<Governed>>,
    ledger: Ledger,
}

impl Gateway {
    /// A gateway over `providers` (tried in this order).
    pub fn new(providers: Vec<Arc<Governed>>, ledger: Ledger) -> Gateway {
        Gateway { providers, ledger }
    }

    /// The providers.
    pub fn providers(&self) -> &[Arc<Governed>] {
        &self.providers
    }

    /// Asks `request` for pipeline `pipeline`.
    pub async fn chat(
        &self,
        pipeline: &str,
        request: &ChatRequest,
    ) -> Result<Answered, GatewayError> {
        let mut reasons = Vec::new();
        let mut budget = None;
        let mut refusals = 0;
        for governed in &self.providers {
            let name = governed.name();
            if !governed.breaker().allow(Instant::now()) {
                reasons.push(format!("{name}: circuit open"));
                continue;
            }
            let max_tokens = u64::from(governed.provider.spec().max_tokens);
            let input = estimate_tokens(request);
            if let Err(reason) = governed.pace(input + max_tokens).await {
                reasons.push(format!("{name}: {reason}"));
                continue;
            }
            let worst = governed.price.cost(input, max_tokens);
            let reservation = match self.ledger.reserve(pipeline, worst).await {
                Ok(reservation) => reservation,
                Err(error @ BudgetError::Exhausted { .. }) => {
                    // A cheaper provider may still fit.
                    reasons.push(format!("{name}: {error}"));
                    budget.get_or_insert(error);
                    refusals += 1;
                    continue;
                }
                Err(error) => return Err(GatewayError::Budget(error)),
            };
            match governed.call(request).await {
                Ok(answer) => {
                    governed.breaker().success();
                    let cost = governed.price.cost(answer.usage.input, answer.usage.output);
                    reservation.settle(cost);
                    return Ok(Answered {
                        answer,
                        provider: name.to_owned(),
                        cost,
                    });
                }
                Err(error) => {
                    reservation.release();
                    if !error.counts_against_provider() {
                        return Err(GatewayError::Refused(error));
                    }
                    governed.breaker().failure(Instant::now());
                    tracing::warn!(provider = %name, %error, "provider failed; trying the next");
                    reasons.push(error.to_string());
                }
            }
        }
        match budget {
            // Every provider was refused by the budget (none was open or failing).
            Some(error) if refusals == reasons.len() => Err(GatewayError::Budget(error)),
            _ => Err(GatewayError::Unavailable(reasons)),
        }
    }
}
