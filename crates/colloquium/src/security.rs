//! The node's guard (tokens, route table, audit log) and what a reload refreshes of it.

use std::sync::Arc;

use anyhow::Context;
use colloquium_config::Config;
use colloquium_security::tls::Certificates;
use colloquium_security::{Audit, AuthMetrics, Guard, Tokens};
use colloquium_telemetry::MetricsRegistry;

use crate::reload::{Refresh, Refresher};

/// The guard of both listeners: `config`'s tokens, the route table with the HTTP sources at
/// `ingest_paths`, the audit log (`server.audit_log`, else `audit.log` in the data directory).
pub fn guard<'a>(
    config: &Config,
    ingest_paths: impl IntoIterator<Item = &'a str>,
    registry: &MetricsRegistry,
) -> anyhow::Result<Arc<Guard>> {
    let auth = config.server.auth.as_ref();
    let tokens = Tokens::from_config(auth, &config.base_dir_or_cwd())?;
    let audit_path = match &config.server.audit_log {
        Some(path) => config.base_dir_or_cwd().join(path),
        None => config.storage.data_dir.join("audit.log"),
    };
    let audit = Audit::open(&audit_path)
        .with_context(|| format!("opening the audit log {}", audit_path.display()))?;
    if tokens.required() {
        tracing::info!(tokens = tokens.len(), audit = %audit_path.display(), "bearer tokens required");
    }
    Ok(Arc::new(Guard::new(
        colloquium_api::routes::table(ingest_paths),
        tokens,
        auth,
        audit,
        AuthMetrics::register(registry),
    )))
}

/// What a reload does for security: reads the new config's tokens and every certificate
/// again (an error rejects the reload), and installs both once the reload is accepted.
pub fn refresher(guard: Arc<Guard>, certificates: Certificates) -> Refresher {
    Box::new(move |next: &Config| {
        let auth = next.server.auth.clone();
        let tokens = Tokens::from_config(auth.as_ref(), &next.base_dir_or_cwd())
            .map_err(|e| e.to_string())?;
        let prepared = certificates.prepare().map_err(|errors| {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        let guard = guard.clone();
        Ok(Refresh {
            fingerprint: tokens.fingerprint() ^ prepared.fingerprint().rotate_left(1),
            install: Box::new(move || {
                let count = tokens.len();
                guard.rotate(tokens, auth.as_ref());
                prepared.install();
                tracing::info!(tokens = count, "tokens and certificates refreshed");
            }),
        })
    })
}

/// `colloquium token`: 32 random bytes from the system's secure generator, in hexadecimal (a
/// valid bearer token), and its SHA-256.
pub fn print_new_token() -> anyhow::Result<()> {
    use colloquium_security::tokens::{hex, sha256};
    let mut bytes = [0_u8; 32];
    tokio_rustls::rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random generator failed"))?;
    let token = hex(&bytes);
    let hash = hex(&sha256(token.as_bytes()));
    println!("token:  {token}");
    println!("sha256: {hash}");
    println!("# server.auth.tokens: - {{name: NAME, sha256: {hash}, scopes: [read]}}");
    Ok(())
}
