//! The parts of a request the agent routes read (a JSON body, the query, the path), each
//! refusing with the protocol's error body. axum's own extractors answer a malformed or
//! oversized body, query or path in plain text, which a drive cannot parse.

use ::wire::{ErrorCode, REQUEST_BODY_LEN_MAX};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::server::json_body;

/// A JSON request body of at most [`REQUEST_BODY_LEN_MAX`] bytes.
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let body = Bytes::from_request(request, state).await.map_err(body_refusal)?;
        json_body(&body).map(JsonBody)
    }
}

/// The query string, parsed into `T`.
pub(crate) struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => {
                Err(ApiError::bad_request(format!("query: {}", rejection.body_text())))
            }
        }
    }
}

/// The parameters of the route's path, parsed into `T`.
pub(crate) struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            // A 500 here is a route declared without its parameter: a bug of this crate.
            Err(rejection) if rejection.status().is_server_error() => {
                Err(ApiError::internal(format!("path: {}", rejection.body_text())))
            }
            Err(rejection) => {
                Err(ApiError::bad_request(format!("path: {}", rejection.body_text())))
            }
        }
    }
}

/// An oversized body is `body_too_large` (413); any other failure to read it, `bad_request`.
fn body_refusal(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("the request body is larger than {REQUEST_BODY_LEN_MAX} bytes"),
        )
        .help("agent requests are a few hundred bytes: check what the client sends");
    }
    ApiError::bad_request(format!("body: {}", rejection.body_text()))
}
