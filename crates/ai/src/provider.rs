//! Model providers: real HTTPS clients (reqwest with rustls) for the OpenAI Chat Completions
//! API (`POST {base_url}/chat/completions`, the answer's JSON schema in `response_format`) and
//! the Anthropic Messages API (`POST {base_url}/v1/messages`, `x-api-key`,
//! `anthropic-version`). `base_url` makes any OpenAI-compatible server a provider (llama.cpp,
//! vLLM, Ollama). One [`Provider::chat`] is one attempt; retries, the breaker, rate limits and
//! the budget are the gateway's.
//!
//! The API key comes from an environment variable or a file, is held as a [`Secret`] (its
//! `Debug` shows nothing) and is never logged or put in an error.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::retry;

/// Which wire format a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// OpenAI Chat Completions (and every server compatible with it).
    Openai,
    /// Anthropic Messages.
    Anthropic,
}

/// A secret (an API key): shown as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Where the API key is read.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeySource {
    /// An environment variable's name.
    Env(String),
    /// A file holding the key (trailing whitespace dropped).
    File(PathBuf),
}

impl KeySource {
    /// Reads the key; the error names where it looked, never what it found.
    pub fn read(&self) -> Result<Secret, String> {
        match self {
            KeySource::Env(name) => std::env::var(name)
                .map(|v| Secret(v.trim().to_owned()))
                .map_err(|_| format!("the environment variable {name} is not set")),
            KeySource::File(path) => std::fs::read_to_string(path)
                .map(|v| Secret(v.trim_end().to_owned()))
                .map_err(|e| format!("reading the key file {}: {e}", path.display())),
        }
    }
}

/// One provider as configured.
#[derive(Clone, Debug)]
pub struct ProviderSpec {
    /// Its name in config.
    pub name: String,
    /// Its wire format.
    pub api: Api,
    /// e.g. `https://api.openai.com/v1` (OpenAI) or `https://api.anthropic.com` (Anthropic).
    pub base_url: String,
    /// The model asked for.
    pub model: String,
    /// Most tokens an answer may have (also the worst case the budget reserves).
    pub max_tokens: u32,
    /// Sampling temperature (the provider's default when absent).
    pub temperature: Option<f32>,
    /// Longest wait for one attempt's whole answer.
    pub timeout: Duration,
    /// The API key (none for a local server that takes none).
    pub key: Option<Secret>,
}

/// What is asked of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    /// Instructions.
    pub system: Option<String>,
    /// The prompt.
    pub user: String,
    /// The JSON schema the answer must match (shared: a stage asks with the same one each time).
    pub schema: Option<Arc<AnswerSchema>>,
}

/// A JSON schema an answer must match, with its name; serialized once, and its tokens counted
/// once per tokenizer, however many calls ask with it.
#[derive(Debug)]
pub struct AnswerSchema {
    /// Its name (OpenAI's `json_schema.name`).
    pub name: String,
    /// The schema.
    pub schema: Value,
    text: String,
    /// Its tokens by tokenizer (the BPE's address).
    tokens: Mutex<Vec<(usize, u64)>>,
}

impl AnswerSchema {
    /// `schema`, named `name`.
    pub fn new(name: impl Into<String>, schema: Value) -> AnswerSchema {
        AnswerSchema {
            name: name.into(),
            text: schema.to_string(),
            schema,
            tokens: Mutex::new(Vec::new()),
        }
    }

    /// Its JSON text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Its tokens with `bpe`, counted the first time.
    fn tokens(&self, bpe: &'static tiktoken_rs::CoreBPE) -> u64 {
        let key = std::ptr::from_ref(bpe) as usize;
        let mut known = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, n)) = known.iter().find(|(k, _)| *k == key) {
            return *n;
        }
        let n = u64::try_from(bpe.encode_ordinary(&self.text).len()).unwrap_or(u64::MAX);
        known.push((key, n));
        n
    }
}

impl PartialEq for AnswerSchema {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.schema == other.schema
    }
}

/// Tokens a call used, as the provider counted them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub input: u64,
    /// Answer tokens.
    pub output: u64,
}

/// A model's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatAnswer {
    /// Its text (JSON when a schema was asked for).
    pub text: String,
    /// What it used.
    pub usage: Usage,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// No whole answer within the timeout.
    #[error("provider `{provider}` did not answer within {timeout:?}")]
    Timeout {
        /// The provider.
        provider: String,
        /// Its timeout.
        timeout: Duration,
    },
    /// The connection failed.
    #[error("provider `{provider}`: {message}")]
    Transport {
        /// The provider.
        provider: String,
        /// What failed.
        message: String,
    },
    /// An HTTP error status.
    #[error("provider `{provider}` answered HTTP {status}: {excerpt}")]
    Status {
        /// The provider.
        provider: String,
        /// The status.
        status: u16,
        /// The wait it asked for (`retry-after-ms`, `retry-after`).
        retry_after: Option<Duration>,
        /// The start of its body (for the error; never the request).
        excerpt: String,
    },
    /// A 200 whose body is not the API's shape.
    #[error("provider `{provider}` answered something that is not a {api:?} response: {message}")]
    Malformed {
        /// The provider.
        provider: String,
        /// Its API.
        api: Api,
        /// What was wrong.
        message: String,
    },
}

impl CallError {
    /// Whether another attempt may succeed: timeouts, connection failures, 408, 429, 5xx.
    pub fn retryable(&self) -> bool {
        match self {
            CallError::Timeout { .. } | CallError::Transport { .. } => true,
            CallError::Status { status, .. } => retry::retryable(*status),
            CallError::Malformed { .. } => false,
        }
    }

    /// The wait the provider asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the provider is unwell (counts against its breaker): not a 4xx about the
    /// request itself.
    pub fn counts_against_provider(&self) -> bool {
        self.retryable()
    }
}

/// Largest answer body read (a 4,096-token answer is ~20 KB; an embedding of 3,072
/// dimensions ~60 KB).
const MAX_ANSWER_BYTES: usize = 8 << 20;

/// Longest error body excerpt kept.
const EXCERPT: usize = 300;

/// One provider's client.
#[derive(Clone, Debug)]
pub struct Provider {
    spec: ProviderSpec,
    http: reqwest::Client,
}

impl Provider {
    /// A client for `spec`.
    pub fn new(spec: ProviderSpec) -> Result<Provider, String> {
        let http = reqwest::Client::builder()
            .timeout(spec.timeout)
            .build()
            .map_err(|e| format!("provider `{}`: {e}", spec.name))?;
        Ok(Provider { spec, http })
    }

    /// Its configuration.
    pub fn spec(&self) -> &ProviderSpec {
        &self.spec
    }

    /// The request body and URL for `request`.
    fn body(&self, request: &ChatRequest) -> (String, Value) {
        let spec = &self.spec;
        let base = spec.base_url.trim_end_matches('/');
        match spec.api {
            Api::Openai => {
                let mut messages = Vec::new();
                if let Some(system) = &request.system {
                    messages.push(json!({"role": "system", "content": system}));
                }
                messages.push(json!({"role": "user", "content": request.user}));
                let mut body = json!({
                    "model": spec.model,
                    "messages": messages,
                    "max_tokens": spec.max_tokens,
                });
                if let Some(t) = spec.temperature {
                    body["temperature"] = json!(t);
                }
                if let Some(schema) = &request.schema {
                    body["response_format"] = json!({
                        "type": "json_schema",
                        "json_schema": {"name": schema.name, "schema": schema.schema, "strict": true},
                    });
                }
                (format!("{base}/chat/completions"), body)
            }
            Api::Anthropic => {
                // No schema parameter: the schema goes into the instructions, and the answer
                // is validated like any other.
                let mut system = request.system.clone().unwrap_or_default();
                if let Some(schema) = &request.schema {
                    if !system.is_empty() {
                        system.push_str("\n\n");
                    }
                    system.push_str(
                        "Answer with one JSON object, nothing else, matching this JSON schema:\n",
                    );
                    system.push_str(schema.text());
                }
                let mut body = json!({
                    "model": spec.model,
                    "max_tokens": spec.max_tokens,
                    "messages": [{"role": "user", "content": request.user}],
                });
                if !system.is_empty() {
                    body["system"] = json!(system);
                }
                if let Some(t) = spec.temperature {
                    body["temperature"] = json!(t);
                }
                (format!("{base}/v1/messages"), body)
            }
        }
    }

    /// One attempt.
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatAnswer, CallError> {
        let spec = &self.spec;
        let (url, body) = self.body(request);
        let value = self.send(&url, &body).await?;
        let malformed = |message: String| self.malformed(message);
        let tokens = |v: &Value| v.as_u64();
        match spec.api {
            Api::Openai => {
                let text = value["choices"][0]["message"]["content"]
                    .as_str()
                    .ok_or_else(|| malformed("no choices[0].message.content".into()))?;
                let usage = &value["usage"];
                Ok(ChatAnswer {
                    text: text.to_owned(),
                    usage: Usage {
                        input: tokens(&usage["prompt_tokens"])
                            .ok_or_else(|| malformed("no usage.prompt_tokens".into()))?,
                        output: tokens(&usage["completion_tokens"])
                            .ok_or_else(|| malformed("no usage.completion_tokens".into()))?,
                    },
                })
            }
            Api::Anthropic => {
                let text: String = value["content"]
                    .as_array()
                    .ok_or_else(|| malformed("no content".into()))?
                    .iter()
                    .filter(|block| block["type"] == "text")
                    .filter_map(|block| block["text"].as_str())
                    .collect();
                let usage = &value["usage"];
                Ok(ChatAnswer {
                    text,
                    usage: Usage {
                        input: tokens(&usage["input_tokens"])
                            .ok_or_else(|| malformed("no usage.input_tokens".into()))?,
                        output: tokens(&usage["output_tokens"])
                            .ok_or_else(|| malformed("no usage.output_tokens".into()))?,
                    },
                })
            }
        }
    }

    /// One attempt at OpenAI's embeddings API (`POST {base_url}/embeddings`): the vector of
    /// `text` and the tokens it used.
    pub async fn embed(&self, text: &str) -> Result<(Vec<f32>, Usage), CallError> {
        if self.spec.api != Api::Openai {
            return Err(self.malformed("only OpenAI-compatible providers have embeddings".into()));
        }
        let url = format!("{}/embeddings", self.spec.base_url.trim_end_matches('/'));
        let body = json!({"model": self.spec.model, "input": [text]});
        let value = self.send(&url, &body).await?;
        let vector: Vec<f32> = value["data"][0]["embedding"]
            .as_array()
            .ok_or_else(|| self.malformed("no data[0].embedding".into()))?
            .iter()
            .map(|x| x.as_f64().map(|x| x as f32))
            .collect::<Option<_>>()
            .ok_or_else(|| self.malformed("an embedding holds something not a number".into()))?;
        if vector.is_empty() {
            return Err(self.malformed("an empty embedding".into()));
        }
        let input = value["usage"]["prompt_tokens"]
            .as_u64()
            .ok_or_else(|| self.malformed("no usage.prompt_tokens".into()))?;
        Ok((vector, Usage { input, output: 0 }))
    }

    /// Posts `body` to `url` with the provider's headers: the answer's JSON, or the error.
    async fn send(&self, url: &str, body: &Value) -> Result<Value, CallError> {
        let spec = &self.spec;
        let mut http = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string());
        match (spec.api, &spec.key) {
            (Api::Openai, Some(key)) => {
                http = http.header("authorization", format!("Bearer {}", key.expose()));
            }
            (Api::Anthropic, key) => {
                http = http.header("anthropic-version", "2023-06-01");
                if let Some(key) = key {
                    http = http.header("x-api-key", key.expose());
                }
            }
            (Api::Openai, None) => {}
        }
        let response = http.send().await.map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let headers = response.headers().clone();
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let retry_after = retry::asked_wait(header, SystemTime::now());
            let text = response.text().await.unwrap_or_default();
            let cut = (0..=EXCERPT.min(text.len()))
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            return Err(CallError::Status {
                provider: spec.name.clone(),
                status,
                retry_after,
                excerpt: text[..cut].to_owned(),
            });
        }
        // Read in chunks up to a cap: a broken or hostile server cannot make the node buffer
        // without bound.
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(self.malformed(format!(
                    "the answer is larger than {} MiB",
                    MAX_ANSWER_BYTES >> 20
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&bytes).map_err(|e| self.malformed(format!("not JSON: {e}")))
    }

    fn malformed(&self, message: String) -> CallError {
        CallError::Malformed {
            provider: self.spec.name.clone(),
            api: self.spec.api,
            message,
        }
    }

    fn transport(&self, error: reqwest::Error) -> CallError {
        if error.is_timeout() {
            return CallError::Timeout {
                provider: self.spec.name.clone(),
                timeout: self.spec.timeout,
            };
        }
        // reqwest's message names the URL, never headers: no key in it.
        CallError::Transport {
            provider: self.spec.name.clone(),
            message: error.without_url().to_string(),
        }
    }
}

/// How a provider's prompts are counted before a call, for its rate limit and its budget
/// reservation: OpenAI's own tokenizer (`tiktoken-rs`) for the OpenAI models it knows, the
/// documented estimate ([`estimate_tokens`]) for every other model (Anthropic's, local ones).
#[derive(Clone, Copy)]
pub enum TokenCounter {
    /// The model's BPE.
    Tiktoken(&'static tiktoken_rs::CoreBPE),
    /// [`estimate_tokens`].
    Estimate,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenCounter::Tiktoken(_) => "Tiktoken",
            TokenCounter::Estimate => "Estimate",
        })
    }
}

impl TokenCounter {
    /// The counter for `model` spoken to over `api`.
    pub fn for_model(api: Api, model: &str) -> TokenCounter {
        match api {
            Api::Openai => tiktoken_rs::bpe_for_model(model)
                .map_or(TokenCounter::Estimate, TokenCounter::Tiktoken),
            Api::Anthropic => TokenCounter::Estimate,
        }
    }

    /// The prompt tokens of `request`, as a ceiling. With the tokenizer: the texts' tokens,
    /// 3 per message and 3 for the reply (OpenAI's framing), plus a margin of a tenth and 16
    /// for what the provider adds around the schema; the provider's `usage` settles the rest.
    pub fn count(&self, request: &ChatRequest) -> u64 {
        let TokenCounter::Tiktoken(bpe) = self else {
            return estimate_tokens(request);
        };
        let tokens =
            |text: &str| u64::try_from(bpe.encode_ordinary(text).len()).unwrap_or(u64::MAX);
        let messages = 1 + u64::from(request.system.is_some());
        let counted = tokens(&request.user)
            + request.system.as_deref().map_or(0, tokens)
            + request
                .schema
                .as_ref()
                .map_or(0, |schema| schema.tokens(bpe))
            + 3 * messages
            + 3;
        counted + counted / 10 + 16
    }
}

/// The documented estimate of a prompt's tokens for models without a tokenizer here: one per
/// byte, plus 8 per message. It is a true ceiling, not an average: byte-level BPE tokenizers
/// (OpenAI's, Anthropic's, Llama's) never make a token of less than one byte. An average
/// would not do: English runs ~4 bytes a token, but security events full of addresses and
/// numbers ran 2.6-2.8 bytes a token with `o200k_base` (the test below), so a "3 bytes a
/// token" estimate reserved less than such calls cost. The provider's `usage` settles the
/// spend; a high reservation only holds budget for the seconds a call is in flight.
pub fn estimate_tokens(request: &ChatRequest) -> u64 {
    let bytes = request.user.len()
        + request.system.as_ref().map_or(0, String::len)
        + request
            .schema
            .as_ref()
            .map_or(0, |schema| schema.text().len());
    let messages = 1 + u64::from(request.system.is_some());
    u64::try_from(bytes).unwrap_or(u64::MAX) + 8 * messages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_models_are_counted_with_their_tokenizer_and_the_rest_estimated() {
        let request = ChatRequest {
            system: Some("You analyse security events.".into()),
            user: "User ada logged in from 203.0.113.9 at 03:00, a country never seen. ".repeat(30),
            schema: Some(Arc::new(AnswerSchema::new("t", json!({"type": "object"})))),
        };
        let counter = TokenCounter::for_model(Api::Openai, "gpt-4o-mini");
        assert!(matches!(counter, TokenCounter::Tiktoken(_)));
        let TokenCounter::Tiktoken(bpe) = counter else {
            unreachable!()
        };
        let texts = bpe.encode_ordinary(&request.user).len()
            + bpe.encode_ordinary("You analyse security events.").len();
        let counted = counter.count(&request);
        // Addresses and numbers: under 3 bytes a token.
        let bytes = request.user.len() as f64;
        let user = bpe.encode_ordinary(&request.user).len() as f64;
        assert!(bytes / user < 3.0, "{}", bytes / user);
        // A ceiling, and tighter than the byte estimate on a prompt of some length.
        assert!(counted > texts as u64, "{counted} vs {texts}");
        assert!(counted < estimate_tokens(&request), "{counted}");
        for (api, model) in [
            (Api::Openai, "llama-3.1-8b"),
            (Api::Anthropic, "claude-sonnet-4"),
        ] {
            let counter = TokenCounter::for_model(api, model);
            assert!(matches!(counter, TokenCounter::Estimate), "{model}");
            assert_eq!(counter.count(&request), estimate_tokens(&request));
        }
    }
}
