//! The HTTP client the terminal tools (`backup`, `tap`, `top`) talk to a running node with.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cli::Credentials;

/// A client that sends the token (if any) as a bearer token on every request and trusts the
/// CA (if any) for `https://` URLs. No overall timeout: backups and taps last; connecting is
/// bounded.
pub fn http_client(credentials: &Credentials) -> anyhow::Result<reqwest::Client> {
    let (token, tls_ca) = (credentials.token.as_deref(), credentials.tls_ca.as_deref());
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
    if let Some(token) = token {
        // Marked sensitive so that it is never shown in a debug print of a request.
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("--token: not a valid header value")?;
        value.set_sensitive(true);
        let headers =
            reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value)]);
        builder = builder.default_headers(headers);
    }
    if let Some(ca) = tls_ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let certificate = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("{}: not a PEM certificate", ca.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().context("building the HTTP client")
}

/// Fails with the node's own message when `response` is an error (the API's one error shape).
pub async fn check(response: reqwest::Response, what: &str) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    let message = answer["error"]
        .as_str()
        .map_or_else(|| answer.to_string(), str::to_owned);
    bail!("the node refused {what} ({status}): {message}");
}
