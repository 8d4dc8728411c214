//! TLS for the HTTP listeners and the TCP frame source: a certificate and key read from PEM
//! files, read again on reload (SIGHUP) without touching connections in flight — each new
//! handshake takes the certificate current at that moment.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use colloquium_config::security::TlsConfig;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring::sign::any_supported_type;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{at}: {message}")]
pub struct TlsError {
    /// The config key (`server.tls.cert`, `sources.frames.tls.key`).
    pub at: String,
    /// What was wrong.
    pub message: String,
}

impl From<TlsError> for colloquium_config::ConfigError {
    fn from(e: TlsError) -> Self {
        colloquium_config::ConfigError::new(e.at, e.message)
    }
}

/// Resumed sessions kept per listener, so reconnecting clients skip the full handshake.
const SESSION_CACHE: usize = 4096;

/// A certificate and key from files, reloadable.
#[derive(Debug)]
pub struct Certificate {
    /// The config key of the `tls:` section, for errors.
    at: String,
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificate {
    /// Reads the files `config` names (relative to `base_dir`); `at` is its config key.
    pub fn load(config: &TlsConfig, base_dir: &Path, at: &str) -> Result<Arc<Self>, TlsError> {
        let cert = base_dir.join(&config.cert);
        let key = base_dir.join(&config.key);
        let current = read(&cert, &key, at)?;
        Ok(Arc::new(Certificate {
            at: at.to_owned(),
            cert,
            key,
            current: RwLock::new(current),
        }))
    }

    fn install(&self, next: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = next;
        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
    }

    /// An acceptor serving the current certificate at each handshake; `alpn_http`: offers
    /// HTTP/1.1 over ALPN.
    pub fn acceptor(self: &Arc<Self>, alpn_http: bool) -> Result<TlsAcceptor, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError {
                at: self.at.clone(),
                message: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        if alpn_http {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

fn read(cert: &Path, key: &Path, at: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    let error = |field: &str, path: &Path, message: String| TlsError {
        at: format!("{at}.{field}"),
        message: format!("{}: {message}", path.display()),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| error("cert", cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error("cert", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(error("cert", cert, "holds no PEM certificate".into()));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| error("key", key, e.to_string()))?;
    let signing = any_supported_type(&private).map_err(|e| error("key", key, e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| error("key", key, format!("does not match the certificate: {e}")))?;
    Ok(Arc::new(certified))
}

/// Every certificate a node serves, loaded relative to its config file, so one reload reads
/// them all again.
#[derive(Clone, Debug, Default)]
pub struct Certificates {
    base_dir: PathBuf,
    loaded: Arc<std::sync::Mutex<Vec<Arc<Certificate>>>>,
}

impl Certificates {
    /// A set whose relative paths are against `base_dir` (the config file's directory).
    pub fn new(base_dir: PathBuf) -> Self {
        Certificates {
            base_dir,
            loaded: Arc::default(),
        }
    }

    /// Loads the certificate `config` names (`at`: its config key) and keeps it for reloads.
    pub fn load(&self, config: &TlsConfig, at: &str) -> Result<Arc<Certificate>, TlsError> {
        let certificate = Certificate::load(config, &self.base_dir, at)?;
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(certificate.clone());
        Ok(certificate)
    }

    /// Reads every certificate again, installing none yet: a reload installs them only
    /// once the whole new config is accepted. Any that fails to read is an error.
    pub fn prepare(&self) -> Result<Prepared, Vec<TlsError>> {
        let loaded = self
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut prepared = Vec::with_capacity(loaded.len());
        let mut errors = Vec::new();
        for certificate in loaded {
            match read(&certificate.cert, &certificate.key, &certificate.at) {
                Ok(next) => prepared.push((certificate, next)),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Prepared(prepared))
        } else {
            Err(errors)
        }
    }
}

/// Certificates read by [`Certificates::prepare`], not yet served.
#[derive(Debug)]
pub struct Prepared(Vec<(Arc<Certificate>, Arc<CertifiedKey>)>);

impl Prepared {
    /// Equal for equal certificate chains: tells a reload whether one changed.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        for (_, next) in &self.0 {
            for cert in &next.cert {
                cert.as_ref().hash(&mut hasher);
            }
        }
        hasher.finish()
    }

    /// Serves them from the next handshake on.
    pub fn install(self) {
        for (certificate, next) in self.0 {
            certificate.install(next);
        }
    }
}
