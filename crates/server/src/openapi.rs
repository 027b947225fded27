//! The OpenAPI 3.1 documents, one per listener, served at `GET /openapi.json`.
//!
//! Generated, not written: each listener's routes are registered through utoipa-axum's
//! `routes!`, which takes the path and methods from the handler's `#[utoipa::path]`, so a
//! route cannot be served without being in the document; bodies are described by the wire
//! types' `ToSchema`. What both documents share lives here: the surface's error envelope as
//! every operation's `default` response (errors are mapped to HTTP in one place per surface,
//! so they have one shape), the bearer scheme, and the route that serves the document.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, PathItem, Ref, RefOr, Required, ResponseBuilder};

/// The name of the bearer security scheme in both documents.
pub const BEARER: &str = "bearer";

/// Completes a listener's generated document: the bearer scheme (described for this
/// surface), and `error_schema` as the `default` response of every operation.
pub fn finish(mut doc: OpenApi, bearer_description: &str, error_schema: &str) -> OpenApi {
    let components = doc.components.get_or_insert_with(Default::default);
    let mut scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
    scheme.description = Some(bearer_description.to_owned());
    components.add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    let error = ResponseBuilder::new()
        .description("An error, in this surface's one error shape (any 4xx or 5xx status).")
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name(error_schema))).build())
        .build();
    for item in doc.paths.paths.values_mut() {
        for operation in operations(item) {
            operation.responses.responses.entry("default".into()).or_insert_with(|| error.clone().into());
        }
    }
    doc
}

/// Marks every JSON request body optional: what [`crate::control`]'s body extractor does
/// (no body reads as `{}`, since the official clients send none on some POSTs).
pub fn optional_json_bodies(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for operation in operations(item) {
            if let Some(RefOr::T(body)) = operation.request_body.as_mut() {
                if body.content.contains_key("application/json") {
                    body.required = Some(Required::False);
                }
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch, &mut item.head]
        .into_iter()
        .filter_map(Option::as_mut)
}

/// `GET /openapi.json`: the document, serialized once.
pub fn route<S: Clone + Send + Sync + 'static>(doc: &OpenApi) -> MethodRouter<S> {
    let text = doc.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"cannot serialize: {e}\"}}"));
    get(move || {
        let text = text.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], text).into_response() }
    })
}
