//! Request bodies: our own extractor, so that every body error is an OpenAI-shape 400/413
//! naming the offending field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The raw body of a POST, checked to be a JSON object. Routes parse it into one or more
/// typed views with [`JsonBody::parse`].
pub struct JsonBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::bad_request(None, format!("cannot read the request body: {e}"))
            }
        })?;
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Object(_)) => Ok(JsonBody(bytes)),
            Ok(_) => Err(ApiError::bad_request(None, "the request body must be a JSON object")),
            Err(e) => Err(ApiError::bad_request(None, format!("the request body is not valid JSON: {e}"))),
        }
    }
}

/// The configured body limit, put in request extensions so that the 413 can state it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

impl JsonBody {
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let de = &mut serde_json::Deserializer::from_slice(&self.0);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // "missing field `model`" is reported at the parent: name the field itself.
            let param = match inner.split('`').nth(1) {
                Some(field) if inner.starts_with("missing field") => {
                    if path == "." {
                        field.to_owned()
                    } else {
                        format!("{path}.{field}")
                    }
                }
                _ if path == "." => String::new(),
                _ => path,
            };
            // Drop serde's " at line 1 column 42" suffix: the field name says more.
            let inner = inner.split(" at line ").next().unwrap_or(&inner).to_owned();
            if param.is_empty() {
                ApiError::bad_request(None, format!("invalid request body: {inner}"))
            } else {
                ApiError::bad_request(Some(param), inner)
            }
        })
    }
}
