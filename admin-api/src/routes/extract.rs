//! The parts of a request the handlers read (a JSON body, the query, the path) and the answers
//! to requests no handler takes, each refusing with the JSON [`ErrorBody`](wire::ErrorBody).
//! axum's own extractors answer in plain text ("Failed to deserialize the JSON body...", with
//! 400, 413, 415 or 422), which a script cannot parse and `kmsctl` can only quote.
//!
//! The wrappers keep axum's names (`Json`, `Query`, `Path`): utoipa recognises the path and
//! query parameters of a handler by them.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use statemachine::limits::{DATA_UNITS_PER_COMMAND_MAX, KEYS_PER_COMMAND_MAX};
use wire::{ErrorCode, REQUEST_BODY_LEN_MAX};

use super::Refusal;

/// Where a client finds the shapes the API takes.
const SHAPES_HELP: &str = "the request shapes are in the OpenAPI document: GET /v1/openapi.json \
                           (or kmsctl openapi)";

/// A JSON body in, a JSON answer out.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Refusal;

    async fn from_request(request: Request, state: &S) -> Result<Self, Refusal> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(body_refusal(&rejection)),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The query string, parsed into `T`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Refusal> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(query_refusal(&rejection)),
        }
    }
}

/// The parameters of the route's path, parsed into `T`.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Refusal> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(path_refusal(&rejection)),
        }
    }
}

/// Malformed JSON, a missing field or a wrong type is `bad-request`; a body over the limit,
/// `body-too-large`, with how to split it.
fn body_refusal(rejection: &JsonRejection) -> Refusal {
    let code = ErrorCode::of_http_status(rejection.status().as_u16());
    if code == ErrorCode::BodyTooLarge {
        return Refusal::new(
            code,
            format!("the request body is larger than {REQUEST_BODY_LEN_MAX} bytes"),
        )
        .with_help(format!(
            "split the request: one command takes at most {KEYS_PER_COMMAND_MAX} keys or \
             {DATA_UNITS_PER_COMMAND_MAX} data units"
        ));
    }
    if let JsonRejection::MissingJsonContentType(_) = rejection {
        return Refusal::bad_request(format!("body: {}", rejection.body_text()))
            .with_help("send the body as JSON, with Content-Type: application/json");
    }
    Refusal::bad_request(format!("body: {}", rejection.body_text())).with_help(SHAPES_HELP)
}

fn query_refusal(rejection: &QueryRejection) -> Refusal {
    Refusal::bad_request(format!("query: {}", rejection.body_text())).with_help(SHAPES_HELP)
}

/// A path that does not parse is `bad-request`; a 500 here is a route declared without its
/// parameter, a bug of this crate.
fn path_refusal(rejection: &PathRejection) -> Refusal {
    let code = match ErrorCode::of_http_status(rejection.status().as_u16()) {
        ErrorCode::Internal => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    };
    Refusal::new(code, format!("path: {}", rejection.body_text())).with_help(SHAPES_HELP)
}

/// The answer to a path no route takes.
pub async fn no_route(method: Method, uri: Uri) -> Refusal {
    Refusal::not_found(format!("no route {method} {}", uri.path())).with_help(
        "the routes are listed in the OpenAPI document: GET /v1/openapi.json (or kmsctl openapi)",
    )
}

/// The answer to a route asked with a method it does not take.
pub async fn wrong_method(method: Method, uri: Uri) -> Refusal {
    Refusal::new(ErrorCode::MethodNotAllowed, format!("{} does not take {method}", uri.path()))
        .with_help("each route's methods are in the OpenAPI document: GET /v1/openapi.json")
}
