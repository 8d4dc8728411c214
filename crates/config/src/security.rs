//! `server.auth`, `server.audit_log` and `tls:` — who may call the node, and over what.
//!
//! ```yaml
//! server:
//!   auth:
//!     tokens:
//!       - {name: collector, token: "${COLLECTOR_TOKEN}", scopes: [ingest]}
//!       - {name: analyst,   token_file: /run/secrets/analyst, scopes: [read]}
//!       - {name: ops,       sha256: 9f86d08…, scopes: [read, admin]}
//!     failures: {burst: 20, per_minute: 60}
//!   tls: {cert: node.crt, key: node.key}
//! ```
//!
//! `server.auth: none` serves without authentication on any address; with `auth` not written
//! the node serves without authentication on loopback addresses only.

use std::num::NonZeroU32;
use std::path::PathBuf;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ConfigError;

/// What a token may do. Scopes do not imply one another: a token that reads and
/// administers lists `[read, admin]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `POST /events` and every named HTTP source.
    Ingest,
    /// Queries, outputs, results, windows, anomalies, analyses, the DLQ listing, `/metrics`,
    /// and the detail of `/health`.
    Read,
    /// Reload, config, DLQ replay and delete, the control-plane override.
    Admin,
}

impl Scope {
    /// Its name in config, errors and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// `server.auth`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthConfig {
    /// `server.auth: none`, written out: no authentication, on any address.
    None,
    /// Bearer tokens.
    Tokens(TokensConfig),
}

/// `server.auth: {tokens: […], failures: {…}}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    /// The tokens the node accepts.
    pub tokens: Vec<TokenConfig>,
    /// How many failed authentications one address may make before it is refused for a
    /// while (`429`), without slowing other addresses.
    #[serde(default)]
    pub failures: FailureLimit,
}

/// One bearer token: a name (in the audit log), its scopes, and exactly one of `token`,
/// `token_file` or `sha256`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Shown in the audit log and errors instead of the token.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// The token itself, usually `${ENV}`; never shown (`/admin/config` shows `[redacted]`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted"
    )]
    pub token: Option<String>,
    /// A file holding the token (surrounding whitespace ignored), read at start and at each
    /// reload; relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The token's SHA-256, hex: the token itself need not be on the node at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// `server.auth.failures`: a token bucket per client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailureLimit {
    /// Failures an address may make at once.
    #[serde(default = "default_burst")]
    pub burst: NonZeroU32,
    /// Failures per minute it may go on making after the burst.
    #[serde(default = "default_per_minute")]
    pub per_minute: NonZeroU32,
}

impl Default for FailureLimit {
    fn default() -> Self {
        Self {
            burst: default_burst(),
            per_minute: default_per_minute(),
        }
    }
}

fn default_burst() -> NonZeroU32 {
    NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN)
}

fn default_per_minute() -> NonZeroU32 {
    NonZeroU32::new(60).unwrap_or(NonZeroU32::MIN)
}

/// Shortest literal token accepted: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

/// `tls:` — a certificate chain and its private key, PEM files (relative to the config file),
/// read again at each reload and SIGHUP.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn redacted<S: Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str("[redacted]"),
        None => s.serialize_none(),
    }
}

impl Serialize for AuthConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AuthConfig::None => s.serialize_str("none"),
            AuthConfig::Tokens(tokens) => tokens.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for AuthConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AuthVisitor;
        impl<'de> Visitor<'de> for AuthVisitor {
            type Value = AuthConfig;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`none` or a map with `tokens`")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<AuthConfig, E> {
                match v {
                    "none" => Ok(AuthConfig::None),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }

            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<AuthConfig, M::Error> {
                TokensConfig::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(AuthConfig::Tokens)
            }
        }
        d.deserialize_any(AuthVisitor)
    }
}

impl TokenConfig {
    /// Where its secret comes from, for errors.
    fn sources(&self) -> usize {
        usize::from(self.token.is_some())
            + usize::from(self.token_file.is_some())
            + usize::from(self.sha256.is_some())
    }
}

/// Problems in `server.auth` and `server.tls`, and the safe-default rule: without tokens the
/// listeners must be on loopback addresses unless `server.auth: none` is written.
pub(crate) fn validate(server: &crate::ServerConfig, errors: &mut Vec<ConfigError>) {
    match &server.auth {
        Some(AuthConfig::Tokens(config)) => {
            if config.tokens.is_empty() {
                errors.push(ConfigError::new(
                    "server.auth.tokens",
                    "is empty: add a token, or remove server.auth to serve on loopback only",
                ));
            }
            let mut names = std::collections::BTreeSet::new();
            for (i, token) in config.tokens.iter().enumerate() {
                let at = format!("server.auth.tokens[{i}]");
                if token.name.trim().is_empty() {
                    errors.push(ConfigError::new(format!("{at}.name"), "must not be empty"));
                } else if !names.insert(token.name.as_str()) {
                    errors.push(ConfigError::new(
                        format!("{at}.name"),
                        format!("`{}` names two tokens", token.name),
                    ));
                }
                if token.scopes.is_empty() {
                    errors.push(ConfigError::new(
                        format!("{at}.scopes"),
                        "must name at least one of ingest, read, admin",
                    ));
                }
                if token.sources() != 1 {
                    errors.push(ConfigError::new(
                        at.clone(),
                        "needs exactly one of `token`, `token_file` or `sha256`",
                    ));
                }
                if let Some(literal) = &token.token
                    && literal.trim().len() < MIN_TOKEN_LEN
                {
                    errors.push(ConfigError::new(
                        format!("{at}.token"),
                        format!("is shorter than {MIN_TOKEN_LEN} characters: too easy to guess (`colloquium token` makes a good one)"),
                    ));
                }
                if let Some(hash) = &token.sha256
                    && (hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    errors.push(ConfigError::new(
                        format!("{at}.sha256"),
                        "must be 64 hexadecimal digits (a SHA-256)",
                    ));
                }
            }
        }
        Some(AuthConfig::None) => {}
        None => errors.extend(check_listeners(server)),
    }
}

/// The safe default: without `server.auth`, both HTTP listeners must be on loopback
/// addresses. Checked by validation and again by `colloquium run` after `--listen`.
pub fn check_listeners(server: &crate::ServerConfig) -> Vec<ConfigError> {
    if server.auth.is_some() {
        return Vec::new();
    }
    [
        ("server.listen", server.listen),
        ("server.admin_listen", server.admin_listen),
    ]
    .into_iter()
    .filter(|(_, addr)| !addr.ip().is_loopback())
    .map(|(key, addr)| {
        ConfigError::new(
            key,
            format!(
                "{addr} is reachable from other machines and no tokens are configured: \
                 add server.auth.tokens, or write `server.auth: none` to serve without \
                 authentication"
            ),
        )
    })
    .collect()
}
