//! The console's session: an access token of a session of its own (made by
//! [`tm_control::login::Logins::sign_in`]) in an `HttpOnly`, `SameSite=Strict` cookie,
//! `Secure` when the console is reached over TLS. Every signed-in request checks it like an
//! API access token (revocation, disabled users, the per-user request limit); signing out
//! revokes it server-side.
//!
//! CSRF: every state-changing request carries a token derived from the session's secret
//! (a form field, or the `x-csrf-token` header for the playground's fetch); without it the
//! answer is 403 ([`crate::form::Posted`] checks it before any handler runs). The sign-in
//! form itself carries a random token that must match a cookie set with the form, so a
//! third-party page cannot sign a browser into someone else's account.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tm_control::accounts::User;
use tm_control::throttle::{Attempt, ClientAddr};
use tm_control::{Control, ControlError, Principal};

use crate::error::PageError;
use crate::form::Plain;
use crate::Console;

/// A value encoded for a query string (the CLI-login page builds its own `next`).
pub use crate::render::url_encode;

/// The session cookie.
pub const COOKIE: &str = "tm_console";
/// The sign-in form's anti-forgery cookie.
const SIGN_IN_COOKIE: &str = "tm_console_sign_in";

/// A signed-in person, for a page or a posted form.
pub struct Session {
    pub principal: Principal,
    pub user: User,
    /// The cookie's token (to end it on sign-out).
    token: String,
    /// What the session's forms and fetches must send back.
    pub csrf: String,
}

impl FromRequestParts<Console> for Session {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Session, PageError> {
        match Session::of(&console.control, &parts.headers).await {
            Ok(Some(session)) => Ok(session),
            Ok(None) => {
                Err(PageError::SignedOut { next: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned() })
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Session {
    /// The session a request's cookie stands for; `None` when there is none, or it ended.
    /// (Pages outside the console that act for its user use this too: the CLI-login
    /// approval.)
    pub async fn of(control: &Control, headers: &HeaderMap) -> Result<Option<Session>, ControlError> {
        let Some(token) = cookie(headers, COOKIE) else { return Ok(None) };
        let principal = match control.logins().authenticate(&token).await {
            Ok(p) => p,
            Err(ControlError::Unauthenticated) => return Ok(None),
            Err(e) => return Err(e),
        };
        let user = control.accounts().get(&principal.user_id).await?;
        Ok(Some(Session { csrf: csrf_for(&token), principal, user, token }))
    }

    /// Whether `presented` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes()))
    }

    /// Refuses (403) a state-changing request whose token is not this session's.
    pub fn check_csrf(&self, presented: Option<&str>) -> Result<(), PageError> {
        match presented {
            Some(p) if self.csrf_matches(p) => Ok(()),
            _ => Err(PageError::Forgery),
        }
    }

    /// Pages an admin may see; anyone else gets "not found" (their existence is not shown).
    pub fn require_admin(&self) -> Result<(), PageError> {
        if self.principal.role.is_admin() {
            Ok(())
        } else {
            Err(PageError::NotFound)
        }
    }
}

/// The sign-in page's address, coming back to `next` after.
pub fn sign_in_link(next: &str) -> String {
    format!("/console/sign-in?next={}", url_encode(next))
}

/// The CSRF token of a session token: unguessable without the cookie, the same for the
/// session's whole life.
fn csrf_for(token: &str) -> String {
    let digest = Sha256::new().chain_update(b"tensormesh console csrf\n").chain_update(token.as_bytes()).finalize();
    hex(&digest[..16])
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

#[derive(Deserialize)]
pub struct SignInQuery {
    #[serde(default)]
    next: String,
}

pub async fn sign_in_page(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(q): Query<SignInQuery>,
) -> Result<Response, PageError> {
    let form_token = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_else(random_token);
    sign_in_form(&console, StatusCode::OK, &form_token, &q.next, "", None)
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    form_token: String,
    #[serde(default)]
    next: String,
}

pub async fn sign_in(
    State(console): State<Console>,
    headers: HeaderMap,
    Plain { parts, form }: Plain<SignInForm>,
) -> Result<Response, PageError> {
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(form.form_token.as_bytes())) {
        // An old tab or a forged post: a fresh form, no attempt counted.
        let fresh = random_token();
        let message = "The sign-in form expired; sign in again.";
        return sign_in_form(&console, StatusCode::FORBIDDEN, &fresh, &form.next, &form.email, Some(message));
    }
    let address = parts.extensions.get::<ClientAddr>().map(|c| c.0);
    let attempt = Attempt { email: form.email.trim(), address };
    match console.control.logins().sign_in(attempt, &form.password).await {
        Ok(session) => {
            let max_age = (session.expires_at - console.control.now_ms()).max(0) / 1000;
            let mut response = Redirect::to(safe_next(&form.next)).into_response();
            let headers = response.headers_mut();
            append_cookie(headers, &session_cookie(COOKIE, &session.token, max_age, console.secure_cookies));
            append_cookie(headers, &session_cookie(SIGN_IN_COOKIE, "", 0, console.secure_cookies));
            Ok(response)
        }
        Err(ControlError::Unauthenticated) => sign_in_form(
            &console,
            StatusCode::UNAUTHORIZED,
            &expected,
            &form.next,
            &form.email,
            Some("Wrong email or password."),
        ),
        Err(ControlError::ResourceExhausted { message, retry_after_secs }) => {
            let mut response = sign_in_form(
                &console,
                StatusCode::TOO_MANY_REQUESTS,
                &expected,
                &form.next,
                &form.email,
                Some(&message),
            )?;
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn sign_out(State(console): State<Console>, posted: crate::form::Posted<crate::form::Nothing>) -> Response {
    if let Err(e) = console.control.logins().sign_out(&posted.session.token).await {
        tracing::error!(error = %e, "console sign-out failed");
    }
    let mut response = Redirect::to("/console/sign-in").into_response();
    append_cookie(response.headers_mut(), &session_cookie(COOKIE, "", 0, console.secure_cookies));
    response
}

fn sign_in_form(
    console: &Console,
    status: StatusCode,
    form_token: &str,
    next: &str,
    email: &str,
    error: Option<&str>,
) -> Result<Response, PageError> {
    let html = console.views.render(
        "sign_in.html",
        minijinja::context! { title => "Sign in", form_token, next => safe_next(next), email, error },
    )?;
    let mut response = crate::render::html(status, html);
    append_cookie(response.headers_mut(), &session_cookie(SIGN_IN_COOKIE, form_token, 3600, console.secure_cookies));
    Ok(response)
}

/// Where to go after signing in: a path on this site only (no `//host`, no scheme).
fn safe_next(next: &str) -> &str {
    let ok =
        next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') && !next.starts_with("/console/sign-");
    if ok {
        next
    } else {
        "/"
    }
}

fn session_cookie(name: &str, value: &str, max_age_secs: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}")
}

fn append_cookie(headers: &mut HeaderMap, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        headers.append(header::SET_COOKIE, v);
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No randomness: a token that matches nothing, so the form is refused, not forged.
        return "unavailable".into();
    }
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next("/console/usage?model=a"), "/console/usage?model=a");
        for bad in ["//evil.example/", "https://evil.example/", "/\\evil", "", "/console/sign-out"] {
            assert_eq!(safe_next(bad), "/", "{bad}");
        }
    }

    #[test]
    fn cookies_are_read_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; tm_console=tok_en; b=2"));
        assert_eq!(cookie(&headers, COOKIE).as_deref(), Some("tok_en"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn the_csrf_token_depends_on_the_session() {
        assert_ne!(csrf_for("a"), csrf_for("b"));
        assert_eq!(csrf_for("a").len(), 32);
    }
}
