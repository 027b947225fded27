//! API-key authentication for the inference surface: deny by default, with the public GET
//! routes listed once.

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// Routes anyone may call without a key (spec/api-contract.md §2.2).
const PUBLIC_ROUTES: &[(Method, &str)] = &[(Method::GET, "/v1/models"), (Method::GET, "/health"), (Method::GET, "/version")];

/// Accepted API keys, held only as SHA-256 digests.
#[derive(Clone)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    pub fn new<S: AsRef<str>>(keys: &[S]) -> Self {
        ApiKeys { digests: keys.iter().map(|k| digest(k.as_ref())).collect() }
    }

    /// Compares against every key in constant time, so timing reveals nothing about
    /// which key, or how much of one, matched.
    pub fn accepts(&self, presented: &str) -> bool {
        let d = digest(presented);
        self.digests.iter().fold(0u8, |found, k| found | k.ct_eq(&d).unwrap_u8()) == 1
    }
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys([REDACTED; {}])", self.digests.len())
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub async fn require_key(State(keys): State<ApiKeys>, req: Request, next: Next) -> Result<Response, ApiError> {
    let public = PUBLIC_ROUTES.iter().any(|(m, p)| req.method() == m && req.uri().path() == *p);
    if !public {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        if !presented.is_some_and(|k| keys.accepts(k)) {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_keys() {
        let keys = ApiKeys::new(&["tm-a", "tm-b"]);
        assert!(keys.accepts("tm-a") && keys.accepts("tm-b"));
        assert!(!keys.accepts("tm-c") && !keys.accepts("") && !keys.accepts("tm-a "));
        assert!(!ApiKeys::new::<&str>(&[]).accepts("tm-a"));
        assert!(!format!("{keys:?}").contains("tm-a"));
    }
}
