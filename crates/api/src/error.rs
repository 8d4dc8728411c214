//! API errors and their HTTP statuses, in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use colloquium_storage::StorageError;
use serde_json::json;

/// Why an API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No such event.
    #[error("event {0} not found")]
    NotFound(String),
    /// No such thing (named in full: "the baseline of user `u`").
    #[error("{0} not found")]
    NoSuch(String),
    /// What is stored cannot be read (corrupt state); the log has the details.
    #[error("{0}")]
    Internal(String),
    /// A system the request needs (an AI provider) cannot answer now, or the budget is spent.
    #[error("{0}")]
    Unavailable(String),
    /// The body is larger than the node takes.
    #[error("{0}")]
    TooLarge(String),
    /// The body is not in a content type the route takes.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl ApiError {
    /// Returns the status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) | ApiError::NoSuch(_) => StatusCode::NOT_FOUND,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Storage(StorageError::Closed) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Storage(StorageError::BadCursor) => StatusCode::BAD_REQUEST,
            ApiError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "api request failed");
        }
        // Storage errors carry file paths and RocksDB's words: the log has them, not clients.
        let (message, reason) = match &self {
            ApiError::BadRequest(message) => (message.clone(), "bad_request"),
            ApiError::NotFound(_) | ApiError::NoSuch(_) => (self.to_string(), "not_found"),
            ApiError::Internal(_) => ("stored data could not be read".to_owned(), "internal"),
            ApiError::Unavailable(message) => (message.clone(), "unavailable"),
            ApiError::TooLarge(message) => (message.clone(), "too_large"),
            ApiError::UnsupportedMediaType(message) => (message.clone(), "unsupported_media_type"),
            ApiError::Storage(e @ StorageError::BadCursor) => {
                (e.public_message().to_owned(), "bad_request")
            }
            ApiError::Storage(e) => (e.public_message().to_owned(), "storage_unavailable"),
        };
        (
            status,
            axum::Json(json!({ "error": message, "reason": reason })),
        )
            .into_response()
    }
}

/// Runs store work on the blocking pool (RocksDB calls block), answering its error as the
/// API's; a task that panicked is a storage error.
pub(crate) async fn blocking<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StorageError::Db(e.to_string()))?
        .map_err(Into::into)
}

/// The answer to a path no route serves, in the one error shape (both listeners).
pub async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let error = format!("no route for {method} {}", uri.path());
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({ "error": error, "reason": "not_found" })),
    )
        .into_response()
}
