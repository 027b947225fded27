//! The sign-in page behind `auth_url`: a plain HTML form (no script) where a person checks
//! the user code against their terminal, signs in with email and password, and approves, or
//! denies, one CLI login request. Someone already signed in to the web console approves
//! with one click after checking the code (the console's session and CSRF token instead of
//! the password).

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde::Deserialize;
use tm_control::login::{Link, LoginRequest};
use tm_control::throttle::Attempt;
use tm_control::ControlError;
use utoipa::ToSchema;

use super::extract::{Client, Params};
use super::ControlState;
use tm_console::session::Session;

#[utoipa::path(get, path = "/auth/cli/login", tag = "auth", security(()),
    params(("request" = String, Query), ("code" = String, Query)),
    responses(
        (status = 200, description = "The form.", content_type = "text/html", body = String),
        (status = 400, description = "A malformed request or code.", content_type = "text/html", body = String),
        (status = 404, description = "No such request (or not its code).", content_type = "text/html", body = String),
        (status = 410, description = "Expired or already answered.", content_type = "text/html", body = String),
        (status = 429, description = "Too many views from this address.", content_type = "text/html", body = String),
    )
)]
pub async fn show(
    State(state): State<ControlState>,
    Client(address): Client,
    headers: HeaderMap,
    params: Params,
) -> Response {
    let request = params.str("request").unwrap_or_default();
    let code = params.str("code").unwrap_or_default();
    let link = Link { request_id: request, user_code: code };
    match state.control.logins().find(link, address).await {
        Ok(Some(found)) if found.pending => match console_user(&state, &headers).await {
            Some(signed_in) => page(StatusCode::OK, &one_click(request, &found, &signed_in)),
            None => page(StatusCode::OK, &form(request, &found, None)),
        },
        Ok(Some(_)) => page(
            StatusCode::GONE,
            "<p>This sign-in request has expired or was already answered. Run <code>tm auth login</code> again.</p>",
        ),
        Ok(None) => page(
            StatusCode::NOT_FOUND,
            "<p>Unknown sign-in request. Open the whole link that <code>tm auth login</code> printed.</p>",
        ),
        Err(e) => failure(&e),
    }
}

#[derive(Deserialize, ToSchema)]
pub struct Decision {
    #[serde(default)]
    request: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    /// The checkbox: "my terminal shows this code".
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    action: String,
    /// The console session's CSRF token, for the one-click approval.
    #[serde(default)]
    csrf: String,
}

#[utoipa::path(post, path = "/auth/cli/login", tag = "auth", security(()),
    request_body(content = Decision, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Approved or denied.", content_type = "text/html", body = String),
        (status = 400, description = "A missing or malformed form, or the box not ticked.", content_type = "text/html", body = String),
        (status = 401, description = "Wrong email or password.", content_type = "text/html", body = String),
        (status = 404, description = "No such request (or not its code).", content_type = "text/html", body = String),
        (status = 410, description = "Expired or already answered.", content_type = "text/html", body = String),
        (status = 429, description = "Too many attempts.", content_type = "text/html", body = String),
    )
)]
pub async fn decide(
    State(state): State<ControlState>,
    Client(address): Client,
    headers: HeaderMap,
    form: Result<Form<Decision>, FormRejection>,
) -> Response {
    // A page answers, not axum's plain-text rejection: whoever posts here is a browser.
    let Ok(Form(d)) = form else {
        return page(StatusCode::BAD_REQUEST, "<p>The sign-in form was not sent. Open the link again.</p>");
    };
    let link = Link { request_id: &d.request, user_code: &d.code };
    let logins = state.control.logins();
    if d.action == "deny" {
        return match logins.deny(link, address).await {
            Ok(()) => page(StatusCode::OK, "<p>Sign-in denied. The CLI will report it; you can close this tab.</p>"),
            Err(e) => failure(&e),
        };
    }
    if d.action == "approve_signed_in" {
        return approve_signed_in(&state, link, &headers, &d.csrf).await;
    }
    if d.confirm != "yes" {
        let error = "Check that your terminal shows this code, and tick the box.";
        return again(&state, link, address, StatusCode::BAD_REQUEST, error).await;
    }
    let attempt = Attempt { email: &d.email, address };
    match logins.approve(link, attempt, &d.password).await {
        Ok(user) => page(
            StatusCode::OK,
            &format!(
                "<p>Signed in as <b>{}</b>. Return to your terminal; you can close this tab.</p>",
                escape(&user.email)
            ),
        ),
        Err(ControlError::Unauthenticated) => {
            again(&state, link, address, StatusCode::UNAUTHORIZED, "Wrong email or password.").await
        }
        Err(e) => failure(&e),
    }
}

/// Who is signed in to the console in this browser, if anyone.
async fn console_user(state: &ControlState, headers: &HeaderMap) -> Option<Session> {
    Session::of(&state.control, headers).await.ok().flatten()
}

/// The one-click approval: the console's session stands for the password, its CSRF token
/// for the proof that this page (not another site) sent the click.
async fn approve_signed_in(state: &ControlState, link: Link<'_>, headers: &HeaderMap, csrf: &str) -> Response {
    let Some(user) = console_user(state, headers).await else {
        return page(StatusCode::UNAUTHORIZED, "<p>Your console session ended. Open the link again and sign in.</p>");
    };
    if !user.csrf_matches(csrf) {
        return page(
            StatusCode::FORBIDDEN,
            "<p>This approval was not sent by this page (CSRF check). Open the link again.</p>",
        );
    }
    match state.control.logins().approve_as(link, &user.principal).await {
        Ok(()) => page(
            StatusCode::OK,
            &format!(
                "<p>Signed in as <b>{}</b>. Return to your terminal; you can close this tab.</p>",
                escape(&user.user.email)
            ),
        ),
        Err(e) => failure(&e),
    }
}

fn one_click(request: &str, found: &LoginRequest, user: &Session) -> String {
    let (from, hidden) = (started_from(found), hidden_fields(request, found));
    format!(
        r#"<p>The <code>tm</code> CLI asks to sign in to this Tensormesh server as <b>{email}</b> (signed in to the console) with this code:</p>
<p class="code">{code}</p>
<p>Approve only if <b>you</b> just ran <code>tm auth login</code> and your terminal shows this same code.{from}
If someone sent you this link, deny it: approving gives them your account.</p>
<form method="post" action="/auth/cli/login">
{hidden}<input type="hidden" name="csrf" value="{csrf}">
<button type="submit" name="action" value="approve_signed_in">My terminal shows {code}: approve</button>
</form>
<form method="post" action="/auth/cli/login">
{hidden}
<button type="submit" name="action" value="deny" class="deny">Deny</button>
</form>"#,
        email = escape(&user.user.email),
        code = escape(&found.user_code),
        csrf = escape(&user.csrf),
    )
}

/// The form again, with what went wrong.
async fn again(
    state: &ControlState,
    link: Link<'_>,
    address: Option<std::net::IpAddr>,
    status: StatusCode,
    error: &str,
) -> Response {
    match state.control.logins().find(link, address).await {
        Ok(Some(found)) if found.pending => page(status, &form(link.request_id, &found, Some(error))),
        Ok(_) => failure(&ControlError::invalid("request", "this sign-in request has expired or was already answered")),
        Err(e) => failure(&e),
    }
}

fn form(request: &str, found: &LoginRequest, error: Option<&str>) -> String {
    let error = error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))).unwrap_or_default();
    let (from, hidden) = (started_from(found), hidden_fields(request, found));
    format!(
        r#"<p>The <code>tm</code> CLI asks to sign in to this Tensormesh server with this code:</p>
<p class="code">{code}</p>
<p>Approve only if <b>you</b> just ran <code>tm auth login</code> and your terminal shows this same code.{from}
If someone sent you this link, deny it: approving gives them your account.</p>
{error}<form method="post" action="/auth/cli/login">
{hidden}
<label>Email <input type="email" name="email" autocomplete="username" required autofocus></label>
<label>Password <input type="password" name="password" autocomplete="current-password" required></label>
<label class="check"><input type="checkbox" name="confirm" value="yes" required> My terminal shows the code <b>{code}</b></label>
<button type="submit" name="action" value="approve">Sign in and approve</button>
</form>
<form method="post" action="/auth/cli/login">
{hidden}
<button type="submit" name="action" value="deny" class="deny">Deny</button>
</form>
<p><a href="{console}">Or sign in to the web console, then approve with one click.</a></p>"#,
        code = escape(&found.user_code),
        console = escape(&console_sign_in(request, &found.user_code)),
    )
}

/// " It was started from the address …", when known.
fn started_from(found: &LoginRequest) -> String {
    found
        .started_from
        .as_deref()
        .map(|a| format!(" It was started from the address <code>{}</code>.", escape(a)))
        .unwrap_or_default()
}

/// What every form of the page carries: the link's two parts.
fn hidden_fields(request: &str, found: &LoginRequest) -> String {
    format!(
        r#"<input type="hidden" name="request" value="{}"><input type="hidden" name="code" value="{}">"#,
        escape(request),
        escape(&found.user_code)
    )
}

/// The console's sign-in, coming back to this page after.
fn console_sign_in(request: &str, code: &str) -> String {
    let back = format!(
        "/auth/cli/login?request={}&code={}",
        tm_console::session::url_encode(request),
        tm_console::session::url_encode(code)
    );
    tm_console::session::sign_in_link(&back)
}

fn failure(e: &ControlError) -> Response {
    match e {
        ControlError::InvalidArgument { message, .. } => {
            page(StatusCode::BAD_REQUEST, &format!("<p>{}</p>", escape(message)))
        }
        ControlError::ResourceExhausted { message, retry_after_secs } => {
            let mut response = page(StatusCode::TOO_MANY_REQUESTS, &format!("<p>{}</p>", escape(message)));
            if let Ok(value) = header::HeaderValue::from_str(&retry_after_secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        other => {
            tracing::error!(error = %other, "sign-in page failed");
            page(StatusCode::INTERNAL_SERVER_ERROR, "<p>Something went wrong. Try again.</p>")
        }
    }
}

fn page(status: StatusCode, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Tensormesh sign-in</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}\
         label{{display:block;margin:.8rem 0}}input{{display:block;width:100%;padding:.4rem}}\
         button{{margin-top:1rem;padding:.5rem 1rem}}.deny{{background:none;border:none;text-decoration:underline}}\
         .check{{display:flex;gap:.5rem;align-items:center}}.check input{{display:inline;width:auto}}\
         .code{{font:700 2rem ui-monospace,monospace;letter-spacing:.15em}}.error{{color:#b00}}</style></head><body><h1>Tensormesh</h1>{body}</body></html>"
    );
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
        (header::CACHE_CONTROL, "no-store"),
    ];
    (status, headers, html).into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}
