//! The templates (compiled into the binary), the filters they use, and the page shell
//! with its security headers.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::{context, Environment, Value};
use tm_money::Nanos;

use crate::error::PageError;
use crate::session::Session;
use crate::Console;

/// Scripts and styles come from this origin only; charts are inline SVG.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../templates/", $name)))),*]
    };
}

const TEMPLATES: &[(&str, &str)] = templates!(
    "base.html",
    "sign_in.html",
    "overview.html",
    "usage.html",
    "keys.html",
    "billing.html",
    "support.html",
    "ticket.html",
    "playground.html",
    "admin_users.html",
    "admin_prices.html",
    "admin_tickets.html",
    "admin_activities.html",
    "pages.html",
);

pub struct Views {
    env: Environment<'static>,
}

impl Views {
    pub fn new() -> Views {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            // The templates are part of the binary and covered by tests: a syntax error is
            // a build-time bug, reported when the page renders.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "console template does not parse");
            }
        }
        env.add_filter("usd", usd);
        env.add_filter("when", |ms: i64| format_ms(ms, WHEN));
        env.add_filter("day", |ms: i64| format_ms(ms, DAY));
        env.add_filter("num", thousands);
        Views { env }
    }

    pub fn render(&self, name: &str, ctx: Value) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(ctx)
    }
}

/// A signed-in page: `ctx` inside the shell (navigation, who is signed in, the CSRF token).
pub fn page(
    console: &Console,
    session: &Session,
    template: &str,
    section: &str,
    title: &str,
    ctx: Value,
) -> Result<Response, PageError> {
    let shell = context! {
        user => context! {
            email => session.user.email.clone(),
            is_admin => session.principal.role.is_admin(),
        },
        csrf => session.csrf.clone(),
        section,
        title,
    };
    let body = console.views.render(template, context! { ..shell, ..ctx })?;
    Ok(html(StatusCode::OK, body))
}

/// An HTML response with the console's security headers.
pub fn html(status: StatusCode, body: String) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        // Pages show balances, keys and tickets: not for shared caches or the back button
        // of the next person at the computer.
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    (status, headers, body).into_response()
}

/// A page for a failure, without the shell (the failure may be the session itself).
pub fn error_page(status: StatusCode, message: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{code} · Tensormesh</title><link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head>\
         <body class=\"narrow\"><main id=\"main\"><h1>{code} {reason}</h1><p role=\"alert\">{message}</p>\
         <p><a href=\"/\">Back to the console</a></p></main></body></html>",
        code = status.as_u16(),
        reason = status.canonical_reason().unwrap_or(""),
        message = minijinja::HtmlEscape(message),
    )
}

/// `next=<value>`, encoded for a query string.
pub fn url_encode(value: &str) -> String {
    serde_urlencoded::to_string([("v", value)])
        .ok()
        .and_then(|s| s.strip_prefix("v=").map(str::to_owned))
        .unwrap_or_default()
}

/// RFC 3339 UTC (`2026-12-07T09:30:00Z`), for exports.
pub fn iso_time(ms: i64) -> String {
    tm_money::UnixMs(ms).rfc3339()
}

type Format = &'static [time::format_description::BorrowedFormatItem<'static>];
const WHEN: Format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
const DAY: Format = time::macros::format_description!("[year]-[month]-[day]");

fn format_ms(ms: i64, format: Format) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

/// `$12.50`, `$0.000123`: at least cents, and every nano-dollar there is.
fn usd(nanos: i64) -> String {
    let exact = Nanos(nanos).usd_decimal();
    let decimals = exact.split_once('.').map_or(0, |(_, f)| f.len());
    let pad = match decimals {
        0 => ".00",
        1 => "0",
        _ => "",
    };
    format!("${exact}{pad}")
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_numbers_read_well() {
        let views = Views::new();
        for (name, _) in TEMPLATES {
            assert!(views.env.get_template(name).is_ok(), "{name}");
        }
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
        assert_eq!(thousands(12), "12");
        assert_eq!(usd(12_500_000_000), "$12.50");
        assert_eq!(usd(100_000_000_000), "$100.00");
        assert_eq!(usd(123), "$0.000000123");
        assert_eq!(format_ms(86_400_000, DAY), "1970-01-02");
        assert_eq!(url_encode("/console/usage?model=a b"), "%2Fconsole%2Fusage%3Fmodel%3Da+b");
    }
}
