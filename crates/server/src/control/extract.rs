//! What handlers take: the authenticated caller, JSON bodies and query parameters, each
//! failing with a grpc-gateway error that names the field.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use tm_control::{ControlError, Principal};

use super::error::CpError;
use super::ControlState;
use crate::bearer::bearer;
use tm_control::throttle::ClientAddr;

/// The signed-in caller behind the `Authorization: Bearer <access token>` header.
pub struct SignedIn(pub Principal);

impl FromRequestParts<ControlState> for SignedIn {
    type Rejection = CpError;

    async fn from_request_parts(parts: &mut Parts, state: &ControlState) -> Result<Self, CpError> {
        let token = bearer(&parts.headers).ok_or(CpError(ControlError::Unauthenticated))?;
        Ok(SignedIn(state.control.logins().authenticate(token).await?))
    }
}

/// The client's address (its connection's peer), for the sign-in limits; None only when a
/// request did not come through a listener.
pub struct Client(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Client(parts.extensions.get::<ClientAddr>().map(|c| c.0)))
    }
}

/// A JSON body; an empty body reads as `{}` (the clients send none on some POSTs).
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = CpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, CpError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| CpError::invalid("body", format!("cannot read the request body: {e}")))?;
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) { Bytes::from_static(b"{}") } else { bytes };
        // An object, as every route documents: serde would also read a struct from a JSON
        // array (its fields by position), which no client means.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(CpError::invalid("body", "must be a JSON object"));
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de).map(Body).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                CpError::invalid("body", e.inner().to_string())
            } else {
                CpError::invalid("body", format!("field `{path}`: {}", e.inner()))
            }
        })
    }
}

/// Query parameters, read leniently: the SDK sends `True`, the CLI `true`; numbers may
/// come as `60.0`.
pub struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = CpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, CpError> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| CpError::invalid("query", e.body_text()))?;
        Ok(Params(map))
    }
}

impl Params {
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn bool(&self, name: &'static str) -> Result<bool, CpError> {
        match self.str(name).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false" | "0") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(other) => Err(CpError::invalid(name, format!("{other:?} is not a boolean"))),
        }
    }

    /// A whole number in `min..=max`, or `default` when absent.
    pub fn int(&self, name: &'static str, default: i64, min: i64, max: i64) -> Result<i64, CpError> {
        let Some(raw) = self.str(name) else { return Ok(default) };
        let value = raw.parse::<f64>().ok().filter(|v| v.fract() == 0.0 && v.is_finite());
        match value {
            // In range, so the conversion is exact.
            Some(v) if v >= min as f64 && v <= max as f64 => Ok(v as i64),
            _ => Err(CpError::invalid(name, format!("must be a whole number from {min} to {max}, got {raw:?}"))),
        }
    }

    /// `page` (1-based) and `size` (1..=`max`, `default` when absent).
    pub fn page(&self, default_size: i64, max_size: i64) -> Result<(i64, i64), CpError> {
        Ok((self.int("page", 1, 1, i64::from(i32::MAX))?, self.int("size", default_size, 1, max_size)?))
    }

    /// An optional RFC 3339 time, as Unix ms.
    pub fn time(&self, name: &'static str) -> Result<Option<i64>, CpError> {
        self.str(name).map(|t| super::wire::parse_timestamp(name, t)).transpose()
    }
}
