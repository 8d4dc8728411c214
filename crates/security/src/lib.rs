//! Who may call the node, and over what.
//!
//! - [`tokens`]: bearer tokens from config, kept as SHA-256 hashes, checked in constant time;
//!   the `Authorization` header's parsing.
//! - [`guard`]: the middleware both HTTP listeners share: the route table (each route's
//!   scope), `401`/`403`/`429`, failures slowed per address, the audit log.
//! - [`audit`]: the audit log, JSON lines.
//! - [`tls`]: certificates from PEM files, reloaded without dropping connections.
#![warn(missing_docs)]

pub mod audit;
pub mod guard;
pub mod tls;
pub mod tokens;

pub use audit::Audit;
pub use guard::{Access, AuthMetrics, Caller, Guard, RouteTable};
pub use tls::{Certificate, TlsError};
pub use tokens::{Scopes, Tokens};
