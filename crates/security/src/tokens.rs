//! Bearer tokens: read from config, kept only as SHA-256 hashes, checked in constant time.

use std::path::Path;
use std::sync::Arc;

use colloquium_config::security::{AuthConfig, MIN_TOKEN_LEN, Scope};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A set of [`Scope`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope (a node without tokens).
    pub const ALL: Scopes = Scopes(0b111);
    /// No scope.
    pub const NONE: Scopes = Scopes(0);

    fn bit(scope: Scope) -> u8 {
        match scope {
            Scope::Ingest => 1,
            Scope::Read => 2,
            Scope::Admin => 4,
        }
    }

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & Self::bit(scope) != 0
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().fold(0, |bits, s| bits | Self::bit(s)))
    }
}

/// Why the configured tokens could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A `token_file` could not be read or holds no usable token.
    #[error("server.auth.tokens[{index}].token_file: {path}: {message}")]
    File {
        /// The token's position in the list.
        index: usize,
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// A `sha256` is not 64 hexadecimal digits (validation catches this first).
    #[error("server.auth.tokens[{0}].sha256: must be 64 hexadecimal digits")]
    Hash(usize),
}

/// One token the node accepts.
#[derive(Debug)]
struct Known {
    name: Arc<str>,
    hash: [u8; 32],
    scopes: Scopes,
}

/// The tokens a node accepts, or none required.
#[derive(Debug)]
pub struct Tokens {
    /// `None`: authentication is off (no `server.auth`, or `server.auth: none`).
    known: Option<Vec<Known>>,
}

impl Tokens {
    /// No authentication: every caller has every scope.
    pub fn open() -> Self {
        Tokens { known: None }
    }

    /// Reads `server.auth`: hashes literal tokens, reads token files (relative to
    /// `base_dir`), decodes hashes. The plain tokens are dropped once hashed.
    pub fn from_config(auth: Option<&AuthConfig>, base_dir: &Path) -> Result<Self, TokenError> {
        let Some(AuthConfig::Tokens(config)) = auth else {
            return Ok(Tokens::open());
        };
        let mut known = Vec::with_capacity(config.tokens.len());
        for (index, token) in config.tokens.iter().enumerate() {
            let hash = if let Some(literal) = &token.token {
                sha256(literal.trim().as_bytes())
            } else if let Some(file) = &token.token_file {
                let path = base_dir.join(file);
                let file_error = |message: String| TokenError::File {
                    index,
                    path: path.display().to_string(),
                    message,
                };
                let text = std::fs::read_to_string(&path).map_err(|e| file_error(e.to_string()))?;
                let text = text.trim();
                if text.len() < MIN_TOKEN_LEN {
                    return Err(file_error(format!(
                        "holds fewer than {MIN_TOKEN_LEN} characters: too easy to guess"
                    )));
                }
                sha256(text.as_bytes())
            } else if let Some(hex) = &token.sha256 {
                decode_hex(hex).ok_or(TokenError::Hash(index))?
            } else {
                // Validation requires one of the three.
                continue;
            };
            known.push(Known {
                name: token.name.as_str().into(),
                hash,
                scopes: token.scopes.iter().copied().collect(),
            });
        }
        Ok(Tokens { known: Some(known) })
    }

    /// Whether callers must present a token.
    pub fn required(&self) -> bool {
        self.known.is_some()
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.known.as_ref().map_or(0, Vec::len)
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Equal for equal sets of tokens (names, hashes, scopes): tells a reload whether the
    /// tokens changed, though the config shows none of them.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        self.known.as_ref().map(|k| k.len()).hash(&mut hasher);
        for token in self.known.iter().flatten() {
            (&*token.name, token.hash, token.scopes.0).hash(&mut hasher);
        }
        hasher.finish()
    }

    /// The name and scopes of the token `presented` is, if any. Every known hash is compared,
    /// each in constant time, so the time taken says nothing about which bytes matched.
    pub fn verify(&self, presented: &[u8]) -> Option<(Arc<str>, Scopes)> {
        let known = self.known.as_ref()?;
        let hash = sha256(presented);
        let mut found = None;
        for token in known {
            if bool::from(token.hash.ct_eq(&hash)) {
                found = Some((token.name.clone(), token.scopes));
            }
        }
        found
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0_u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let digit = |c: u8| char::from(c).to_digit(16);
        let value = digit(pair[0])? * 16 + digit(pair[1])?;
        out[i] = u8::try_from(value).ok()?;
    }
    Some(out)
}

/// Why an `Authorization` header is not a bearer token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// Another scheme (`Basic …`), or no scheme.
    #[error("the Authorization header is not `Bearer <token>`")]
    NotBearer,
    /// `Bearer` with nothing after it.
    #[error("the Authorization header has an empty bearer token")]
    Empty,
    /// Characters a bearer token cannot have (RFC 6750 `b64token`).
    #[error("the bearer token has characters a token cannot have")]
    BadCharacters,
    /// Longer than any token we would issue; not hashed.
    #[error("the bearer token is too long")]
    TooLong,
    /// More than one `Authorization` header: which one would count is ambiguous.
    #[error("the request has more than one Authorization header")]
    Repeated,
}

/// Longest bearer token looked at.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The token of an `Authorization: Bearer <token>` header value (RFC 6750 §2.1: the scheme is
/// case-insensitive, then one or more spaces, then `1*(ALPHA / DIGIT / "-" / "." / "_" / "~"
/// / "+" / "/") *"="`). Surrounding spaces and tabs are ignored.
pub fn bearer(header: &[u8]) -> Result<&[u8], BearerError> {
    let header = header.trim_ascii();
    let (scheme, rest) = match header.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(at) => header.split_at(at),
        None => (header, &header[header.len()..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(BearerError::NotBearer);
    }
    let token = rest.trim_ascii_start();
    if token.is_empty() {
        return Err(BearerError::Empty);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(BearerError::TooLong);
    }
    let body_end = token.iter().position(|&b| b == b'=').unwrap_or(token.len());
    let (body, padding) = token.split_at(body_end);
    let token_char = |b: &u8| b.is_ascii_alphanumeric() || b"-._~+/".contains(b);
    if body.is_empty() || !body.iter().all(token_char) || !padding.iter().all(|&b| b == b'=') {
        return Err(BearerError::BadCharacters);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquium_config::security::{TokenConfig, TokensConfig};

    fn config(tokens: Vec<TokenConfig>) -> AuthConfig {
        AuthConfig::Tokens(TokensConfig {
            tokens,
            failures: Default::default(),
        })
    }

    fn token(name: &str, scopes: &[Scope]) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            scopes: scopes.to_vec(),
            token: None,
            token_file: None,
            sha256: None,
        }
    }

    #[test]
    fn bearer_parsing_follows_rfc_6750() {
        assert_eq!(
            bearer(b"Bearer abc.DEF-123_~+/=="),
            Ok(&b"abc.DEF-123_~+/=="[..])
        );
        assert_eq!(bearer(b"  bearer \t tok  "), Ok(&b"tok"[..]));
        assert_eq!(bearer(b"BEARER tok"), Ok(&b"tok"[..]));
        assert_eq!(bearer(b"Basic dXNlcjpwYXNz"), Err(BearerError::NotBearer));
        assert_eq!(bearer(b"Bearertok"), Err(BearerError::NotBearer));
        assert_eq!(bearer(b""), Err(BearerError::NotBearer));
        assert_eq!(bearer(b"Bearer"), Err(BearerError::Empty));
        assert_eq!(bearer(b"Bearer    "), Err(BearerError::Empty));
        assert_eq!(bearer(b"Bearer a b"), Err(BearerError::BadCharacters));
        assert_eq!(bearer(b"Bearer a=b"), Err(BearerError::BadCharacters));
        assert_eq!(bearer(b"Bearer ==="), Err(BearerError::BadCharacters));
        assert_eq!(
            bearer("Bearer é".as_bytes()),
            Err(BearerError::BadCharacters)
        );
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(bearer(long.as_bytes()), Err(BearerError::TooLong));
    }

    #[test]
    fn tokens_from_literal_file_and_hash_verify_by_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("t"), "file-token-0123456789\n").expect("write");
        let mut literal = token("lit", &[Scope::Ingest]);
        literal.token = Some("literal-token-0123456789".into());
        let mut file = token("file", &[Scope::Read, Scope::Admin]);
        file.token_file = Some("t".into());
        let mut hashed = token("hash", &[Scope::Read]);
        hashed.sha256 = Some(hex(&sha256(b"hashed-token-0123456789")));
        let tokens = Tokens::from_config(Some(&config(vec![literal, file, hashed])), dir.path())
            .expect("tokens");
        assert!(tokens.required());
        let (name, scopes) = tokens.verify(b"literal-token-0123456789").expect("literal");
        assert_eq!(&*name, "lit");
        assert!(scopes.contains(Scope::Ingest) && !scopes.contains(Scope::Read));
        let (name, scopes) = tokens.verify(b"file-token-0123456789").expect("file");
        assert_eq!(&*name, "file");
        assert!(scopes.contains(Scope::Admin) && !scopes.contains(Scope::Ingest));
        assert_eq!(
            tokens.verify(b"hashed-token-0123456789").map(|t| t.0),
            Some("hash".into())
        );
        assert!(tokens.verify(b"literal-token-012345678").is_none());
        assert!(tokens.verify(b"").is_none());
    }

    #[test]
    fn a_missing_or_short_token_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut missing = token("m", &[Scope::Read]);
        missing.token_file = Some("absent".into());
        let error = Tokens::from_config(Some(&config(vec![missing])), dir.path())
            .expect_err("missing file");
        assert!(
            error.to_string().contains("tokens[0].token_file"),
            "{error}"
        );
        std::fs::write(dir.path().join("short"), "abc").expect("write");
        let mut short = token("s", &[Scope::Read]);
        short.token_file = Some("short".into());
        let error = Tokens::from_config(Some(&config(vec![short])), dir.path()).expect_err("short");
        assert!(error.to_string().contains("fewer than 16"), "{error}");
    }

    #[test]
    fn no_auth_and_auth_none_are_open() {
        let dir = std::path::Path::new(".");
        assert!(!Tokens::from_config(None, dir).expect("open").required());
        let none = Tokens::from_config(Some(&AuthConfig::None), dir).expect("none");
        assert!(!none.required());
        assert!(none.verify(b"anything").is_none());
    }
}
