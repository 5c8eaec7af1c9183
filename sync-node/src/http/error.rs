//! The one error type of the HTTP API: a status and a message, as `{"statusCode", "error",
//! "message"}` (Immich's shape), from every library error.

use crate::auth::AuthError;
use crate::catalog::CatalogError;
use crate::node::NodeError;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Json;
use serde_json::json;

/// An API error: a status and a message for the user.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "statusCode": self.status.as_u16(),
            "error": self.status.canonical_reason().unwrap_or("Error"),
            "message": self.message,
        });
        (self.status, Json(body)).into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Blob(b) => b.into(),
            other => Self::internal(other),
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        Self::internal(e)
    }
}

impl From<crate::blobs::BlobError> for ApiError {
    fn from(e: crate::blobs::BlobError) -> Self {
        match &e {
            crate::blobs::BlobError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::StorageFull =>
            {
                tracing::error!(error = %e, "disk full");
                Self::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "The node's disk is full: nothing was stored, try again once space is freed",
                )
            }
            crate::blobs::BlobError::Remote { .. } => {
                tracing::error!(error = %e, "object storage");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "The object storage holding originals did not answer ({e}). Nothing \
                         was stored or lost: try again once it is back"
                    ),
                )
            }
            _ => Self::internal(e),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::AlreadyInitialized => Self::bad_request("The server already has an admin"),
            AuthError::BadCredentials => {
                Self::new(StatusCode::UNAUTHORIZED, "Incorrect email or password")
            }
            AuthError::Invalid(m) => Self::bad_request(m),
            AuthError::NotFound(m) => Self::not_found(m),
            AuthError::Conflict(m) => Self::bad_request(m),
            other => Self::internal(other),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::internal(e)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
