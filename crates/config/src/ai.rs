//! `ai:` — model providers, their governance (prices, rate limits, retries, breaker), the
//! spend budget and the response cache. The `ai` stage names a provider from here (or `best`).
//!
//! API keys are never written in the config: `api_key_env` names an environment variable,
//! `api_key_file` a file. So `/admin/config` shows where a key is read, never the key.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ConfigError;

/// An amount in nano-dollars (10⁻⁹ USD): a price of $0.15 per million tokens is 150 per
/// token, exactly, and a day's spend adds up without rounding drift. Written in config as
/// decimal USD (`2.50` or `"2.50"`), read exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub u64);

impl Nanos {
    /// Nothing.
    pub const ZERO: Nanos = Nanos(0);

    /// `self + other`, saturating.
    pub fn plus(self, other: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(other.0))
    }

    /// `self − other`, floored at zero.
    pub fn minus(self, other: Nanos) -> Nanos {
        Nanos(self.0.saturating_sub(other.0))
    }

    /// As USD (for display and metrics; never for arithmetic).
    #[allow(clippy::cast_precision_loss)]
    pub fn usd(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// Parses decimal USD (`"2.5"`, `"0.000150"`, `"10"`), exactly, to the nano-dollar.
    pub fn parse_usd(text: &str) -> Result<Nanos, MoneyError> {
        let bad = || MoneyError(text.to_owned());
        let text = text.trim();
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty() && fraction.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
            || fraction.len() > 9
        {
            return Err(bad());
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let scale = 10u64.pow(9 - u32::try_from(fraction.len()).map_err(|_| bad())?);
        let fraction: u64 = if fraction.is_empty() {
            0
        } else {
            fraction.parse::<u64>().map_err(|_| bad())? * scale
        };
        whole
            .checked_mul(1_000_000_000)
            .and_then(|w| w.checked_add(fraction))
            .map(Nanos)
            .ok_or_else(bad)
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "${}.{:09}",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

impl Serialize for Nanos {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!(
            "{}.{:09}",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        ))
    }
}

impl<'de> Deserialize<'de> for Nanos {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A YAML number arrives as f64; its shortest text is what was written (2.5 for 2.50).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Whole(u64),
            Decimal(f64),
        }
        let text = match Written::deserialize(deserializer)? {
            Written::Text(text) => text,
            Written::Whole(n) => n.to_string(),
            Written::Decimal(x) => x.to_string(),
        };
        Nanos::parse_usd(&text).map_err(serde::de::Error::custom)
    }
}

/// Not a decimal USD amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an amount in USD (such as 2.50, at most 9 decimals)")]
pub struct MoneyError(pub String);

/// `ai:` — providers, budget and cache.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AiConfig {
    /// Providers by name, in failover order (the order written).
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "ordered")]
    pub providers: Vec<(String, ProviderConfig)>,
    /// The spend budget.
    #[serde(default)]
    pub budget: BudgetConfig,
    /// The response cache.
    #[serde(default)]
    pub cache: CacheConfig,
}

/// Which wire format a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderApi {
    /// OpenAI Chat Completions and embeddings (and every server compatible with them: llama.cpp,
    /// vLLM, Ollama).
    Openai,
    /// Anthropic Messages.
    Anthropic,
}

/// One provider.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Its wire format.
    pub api: ProviderApi,
    /// Where it is served (default: the vendor's own API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The model asked for.
    pub model: String,
    /// Most tokens an answer may have; also the answer's part of a call's reserved worst case.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Sampling temperature (the provider's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Longest wait for one attempt's whole answer.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The environment variable holding the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// A file holding the API key (relative to the config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// USD per million tokens.
    #[serde(default)]
    pub price: PriceConfig,
    /// Requests per minute (none: unpaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<NonZeroU32>,
    /// Tokens per minute, prompt and answer (none: unpaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<NonZeroU32>,
    /// Retries of timeouts, 429 and 5xx.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Its circuit breaker.
    #[serde(default)]
    pub breaker: BreakerSection,
}

/// USD per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// Per million prompt tokens.
    #[serde(default)]
    pub input: Nanos,
    /// Per million answer tokens.
    #[serde(default)]
    pub output: Nanos,
}

/// `retry:` of a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// The first backoff (doubling, with full jitter).
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    /// The longest wait, asked for by the provider or not.
    #[serde(default = "default_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: default_attempts(),
            backoff: default_backoff(),
            max_wait: default_max_wait(),
        }
    }
}

/// `breaker:` of a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSection {
    /// Failures in a row that open it.
    #[serde(default = "default_failures")]
    pub failure_threshold: u32,
    /// How long it stays open before letting probes through.
    #[serde(default = "default_cool_down", with = "humantime_serde")]
    pub cool_down: Duration,
    /// Calls let through while half-open.
    #[serde(default = "default_probes")]
    pub half_open_probes: u32,
}

impl Default for BreakerSection {
    fn default() -> Self {
        BreakerSection {
            failure_threshold: default_failures(),
            cool_down: default_cool_down(),
            half_open_probes: default_probes(),
        }
    }
}

/// `budget:` — spend per UTC day.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// The node's budget per UTC day in USD (none: unlimited, still counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<Nanos>,
    /// Budgets per UTC day of single pipelines, in USD.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_pipeline: BTreeMap<String, Nanos>,
    /// The share of a budget (0–1) at which a warning is logged and counted.
    #[serde(default = "default_alert_at")]
    pub alert_at: f64,
    /// Refuse calls past a budget (`budget_exhausted`); `false` only warns.
    #[serde(default = "default_true")]
    pub auto_stop: bool,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            daily: None,
            per_pipeline: BTreeMap::new(),
            alert_at: default_alert_at(),
            auto_stop: true,
        }
    }
}

/// `cache:` — identical prompts in a burst cost once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// How long an answer is reused (0: no cache).
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Most bytes of prompts and answers held.
    #[serde(default = "default_cache_size")]
    pub max_size: ByteSize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: default_cache_ttl(),
            max_size: default_cache_size(),
        }
    }
}

fn default_max_tokens() -> u32 {
    1024
}
fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_attempts() -> u32 {
    3
}
fn default_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_max_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_failures() -> u32 {
    5
}
fn default_cool_down() -> Duration {
    Duration::from_secs(30)
}
fn default_probes() -> u32 {
    1
}
fn default_alert_at() -> f64 {
    0.8
}
fn default_true() -> bool {
    true
}
fn default_cache_ttl() -> Duration {
    Duration::from_secs(600)
}
fn default_cache_size() -> ByteSize {
    ByteSize::mib(16)
}

/// The providers map, kept in the order written (failover order).
mod ordered {
    use super::ProviderConfig;
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        providers: &[(String, ProviderConfig)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(providers.len()))?;
        for (name, provider) in providers {
            map.serialize_entry(name, provider)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(String, ProviderConfig)>, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Vec<(String, ProviderConfig)>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of provider names to providers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, ProviderConfig)> = Vec::new();
                while let Some((name, provider)) = map.next_entry::<String, ProviderConfig>()? {
                    if out.iter().any(|(n, _)| *n == name) {
                        return Err(serde::de::Error::custom(format!(
                            "provider `{name}` is defined twice"
                        )));
                    }
                    out.push((name, provider));
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(Ordered)
    }
}

impl AiConfig {
    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers
            .iter()
            .find_map(|(n, p)| (n == name).then_some(p))
    }

    /// Its semantic problems; `pipelines` are the pipeline names (for `per_pipeline`).
    pub(crate) fn validate(&self, pipelines: &[&str], errors: &mut Vec<ConfigError>) {
        for (name, p) in &self.providers {
            let at = |key: &str| format!("ai.providers.{name}.{key}");
            if name == "best" {
                errors.push(ConfigError::new(
                    format!("ai.providers.{name}"),
                    "`best` is reserved: a stage's `provider: best` picks among all providers",
                ));
            }
            if p.model.trim().is_empty() {
                errors.push(ConfigError::new(at("model"), "must not be empty"));
            }
            if let Some(url) = &p.base_url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                errors.push(ConfigError::new(
                    at("base_url"),
                    "must start with http:// or https://",
                ));
            }
            if p.max_tokens == 0 {
                errors.push(ConfigError::new(at("max_tokens"), "must be at least 1"));
            }
            if p.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
                errors.push(ConfigError::new(at("temperature"), "must be within 0–2"));
            }
            if p.timeout.is_zero() {
                errors.push(ConfigError::new(at("timeout"), "must be greater than 0"));
            }
            if p.api_key_env.is_some() && p.api_key_file.is_some() {
                errors.push(ConfigError::new(
                    at("api_key_env"),
                    "give api_key_env or api_key_file, not both",
                ));
            }
            if p.retry.max_attempts == 0 {
                errors.push(ConfigError::new(
                    at("retry.max_attempts"),
                    "must be at least 1",
                ));
            }
            if p.breaker.failure_threshold == 0 || p.breaker.half_open_probes == 0 {
                errors.push(ConfigError::new(
                    at("breaker"),
                    "failure_threshold and half_open_probes must be at least 1",
                ));
            }
            if let Some(tpm) = p.tokens_per_minute
                && u64::from(tpm.get()) < u64::from(p.max_tokens)
            {
                errors.push(ConfigError::new(
                    at("tokens_per_minute"),
                    "must be at least max_tokens, or no call could ever be paced through",
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.budget.alert_at) {
            errors.push(ConfigError::new("ai.budget.alert_at", "must be within 0–1"));
        }
        for name in self.budget.per_pipeline.keys() {
            if !pipelines.contains(&name.as_str()) {
                errors.push(ConfigError::new(
                    format!("ai.budget.per_pipeline.{name}"),
                    format!("no pipeline is named `{name}`"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_parses_exactly() {
        assert_eq!(Nanos::parse_usd("2.50"), Ok(Nanos(2_500_000_000)));
        assert_eq!(Nanos::parse_usd("0.000000001"), Ok(Nanos(1)));
        assert_eq!(Nanos::parse_usd(".5"), Ok(Nanos(500_000_000)));
        assert_eq!(Nanos::parse_usd("10"), Ok(Nanos(10_000_000_000)));
        for bad in [
            "",
            ".",
            "-1",
            "1.0000000001",
            "1e3",
            "abc",
            "99999999999999999999",
        ] {
            assert!(Nanos::parse_usd(bad).is_err(), "{bad}");
        }
        assert_eq!(Nanos(2_500_000_001).to_string(), "$2.500000001");
    }

    #[test]
    fn amounts_read_from_yaml_numbers_and_strings_alike() {
        let price: PriceConfig = serde_yaml::from_str("{input: 0.15, output: \"0.60\"}").unwrap();
        assert_eq!(price.input, Nanos(150_000_000));
        assert_eq!(price.output, Nanos(600_000_000));
        let err = serde_yaml::from_str::<PriceConfig>("{input: -1}").unwrap_err();
        assert!(err.to_string().contains("not an amount in USD"), "{err}");
    }

    #[test]
    fn providers_keep_their_written_order() {
        let ai: AiConfig = serde_yaml::from_str(
            "providers:\n  z: {api: openai, model: m}\n  a: {api: anthropic, model: n}\n",
        )
        .unwrap();
        let names: Vec<_> = ai.providers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["z", "a"]);
        let again: AiConfig = serde_yaml::from_str(&serde_yaml::to_string(&ai).unwrap()).unwrap();
        assert_eq!(again, ai);
    }
}
