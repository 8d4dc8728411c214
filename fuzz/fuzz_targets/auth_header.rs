//! The `Authorization` header on arbitrary bytes: parsing never panics; a token it returns is
//! non-empty, bounded, printable ASCII, and parses back to itself after `Bearer `; checking it
//! against the configured tokens never panics, and only the real token verifies.
#![no_main]

use std::sync::LazyLock;

use colloquium_config::security::{AuthConfig, Scope, TokenConfig, TokensConfig};
use colloquium_security::Tokens;
use colloquium_security::tokens::{MAX_TOKEN_LEN, bearer};
use libfuzzer_sys::fuzz_target;

const REAL: &str = "the-real-token-0123456789";

static TOKENS: LazyLock<Tokens> = LazyLock::new(|| {
    let auth = AuthConfig::Tokens(TokensConfig {
        tokens: vec![TokenConfig {
            name: "real".into(),
            scopes: vec![Scope::Read],
            token: Some(REAL.into()),
            token_file: None,
            sha256: None,
        }],
        failures: Default::default(),
    });
    Tokens::from_config(Some(&auth), std::path::Path::new(".")).expect("tokens")
});

fuzz_target!(|data: &[u8]| {
    let Ok(token) = bearer(data) else { return };
    assert!(!token.is_empty() && token.len() <= MAX_TOKEN_LEN);
    assert!(token.iter().all(u8::is_ascii_graphic));
    let mut again = b"Bearer ".to_vec();
    again.extend_from_slice(token);
    assert_eq!(bearer(&again), Ok(token));
    let verified = TOKENS.verify(token);
    assert_eq!(verified.is_some(), token == REAL.as_bytes());
});
