//! The web console over real HTTP: sign-in and its cookie, CSRF on every state-changing
//! request, sign-out ending the session server-side, one user never seeing another's pages,
//! the console's session never reaching admin routes without the role, an admin's top-up
//! showing on the user's overview, and the CSV export. (What a person does in a browser is
//! `compat/check_console.py`, in headless Chromium.)

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::{Client, Method, StatusCode};

use crate::common::{start_servers, start_with, Engine, Options, ADMIN_EMAIL, ADMIN_PASSWORD};
use crate::{call, create_user};

/// A browser without a cookie jar: the test carries the cookie itself, and sees redirects.
fn browser() -> Client {
    Client::builder().redirect(Policy::none()).build().unwrap()
}

/// The value of `name="<field>" value="…"` in a page.
fn field(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("no {name} field in {page}")) + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

/// The sign-in form as a browser gets it: the form's cookie to send back (`name=value`),
/// the cookie as set (with its flags), and the form's token.
async fn sign_in_form(http: &Client, base: &str) -> (String, String, String) {
    let form = http.get(format!("{base}/console/sign-in")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    let set = set_cookies(form.headers()).into_iter().find(|c| c.starts_with("tm_console_sign_in=")).unwrap();
    let cookie = set.split(';').next().unwrap().to_owned();
    (cookie, set, field(&form.text().await.unwrap(), "form_token"))
}

/// Posts the sign-in form, sending `form_cookie` back.
async fn post_sign_in(http: &Client, base: &str, form_cookie: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    http.post(format!("{base}/console/sign-in")).header("cookie", form_cookie).form(fields).send().await.unwrap()
}

/// A signed-in console: its cookie and its CSRF token.
struct Console {
    base: String,
    cookie: String,
    csrf: String,
    http: Client,
}

impl Console {
    async fn sign_in(base: &str, email: &str, password: &str) -> Console {
        let http = browser();
        let (form_cookie, _, token) = sign_in_form(&http, base).await;
        let fields = [("email", email), ("password", password), ("form_token", &token), ("next", "/")];
        let signed = post_sign_in(&http, base, &form_cookie, &fields).await;
        assert_eq!(signed.status(), StatusCode::SEE_OTHER, "{}", signed.text().await.unwrap());
        let session = set_cookies(signed.headers()).into_iter().find(|c| c.starts_with("tm_console=")).unwrap();
        let cookie = session.split(';').next().unwrap().to_owned();
        let mut console = Console { base: base.to_owned(), cookie, csrf: String::new(), http };
        let (status, home) = console.get("/").await;
        assert_eq!(status, 200, "{home}");
        console.csrf = field(&home, "csrf");
        console
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self.http.get(format!("{}{path}", self.base)).header("cookie", &self.cookie).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// Posts a form with the session's CSRF token.
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
        let mut form = form.to_vec();
        form.push(("csrf", &self.csrf));
        self.post_raw(path, &form).await
    }

    async fn post_raw(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(form)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    fn token(&self) -> &str {
        self.cookie.trim_start_matches("tm_console=")
    }
}

#[tokio::test]
async fn sign_in_sets_a_strict_cookie_and_sign_out_ends_the_session() {
    for db in tm_testkit::all().await {
        let s = start_servers(&db, false);
        let http = browser();
        let home = http.get(format!("{}/", s.control)).send().await.unwrap();
        assert_eq!(home.status(), StatusCode::SEE_OTHER, "{}: signed out, / goes to the sign-in page", db.kind);
        assert_eq!(home.headers()[LOCATION], "/console/sign-in?next=%2F");

        // The sign-in form needs the token set with it: a forged post from elsewhere fails.
        let forged = post_sign_in(
            &http,
            &s.control,
            "",
            &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD), ("form_token", "guess")],
        )
        .await;
        assert_eq!(forged.status(), 403, "{}", db.kind);
        assert!(set_cookies(forged.headers()).iter().all(|c| !c.starts_with("tm_console=")));

        let (form_cookie, _, token) = sign_in_form(&http, &s.control).await;
        let wrong = post_sign_in(
            &http,
            &s.control,
            &form_cookie,
            &[("email", ADMIN_EMAIL), ("password", "not it"), ("form_token", &token)],
        )
        .await;
        assert_eq!(wrong.status(), 401);
        assert!(wrong.text().await.unwrap().contains("Wrong email or password"));

        let signed = post_sign_in(
            &http,
            &s.control,
            &form_cookie,
            &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD), ("form_token", &token), ("next", "//evil.example")],
        )
        .await;
        assert_eq!(signed.status(), StatusCode::SEE_OTHER);
        assert_eq!(signed.headers()[LOCATION], "/", "only local paths are followed after sign-in");
        let cookie = set_cookies(signed.headers()).into_iter().find(|c| c.starts_with("tm_console=")).unwrap();
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(cookie.contains(flag), "{cookie} lacks {flag}");
        }
        assert!(!cookie.contains("Secure"), "plain HTTP: a Secure cookie would never come back");

        let console = Console::sign_in(&s.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;
        let (status, page) = console.get("/").await;
        assert_eq!(status, 200);
        assert!(page.contains(ADMIN_EMAIL) && page.contains("id=\"balance\">$100.00<"), "{page}");
        // Pages are not cached, and scripts come from this origin only.
        let r = console
            .http
            .get(format!("{}/console/usage", s.control))
            .header("cookie", &console.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));

        // Sign-out without the token is refused; with it, the session ends on the server:
        // the same cookie, replayed, is signed out.
        assert_eq!(console.post_raw("/console/sign-out", &[]).await.0, 403);
        assert_eq!(console.get("/").await.0, 200);
        let (status, _) = console.post("/console/sign-out", &[]).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (status, _) = console.get("/").await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{}: the ended session's cookie still works", db.kind);
    }
}

#[tokio::test]
async fn cookies_are_secure_behind_tls() {
    let db = tm_testkit::sqlite();
    let options = Options { public_control_url: Some("https://console.example"), ..Options::default() };
    let s = start_with(&db, Engine::None, options);
    let http = browser();
    let (form_cookie, as_set, token) = sign_in_form(&http, &s.control).await;
    assert!(as_set.contains("; Secure"), "{as_set}");
    let signed = post_sign_in(
        &http,
        &s.control,
        &form_cookie,
        &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD), ("form_token", &token)],
    )
    .await;
    let cookie = set_cookies(signed.headers()).into_iter().find(|c| c.starts_with("tm_console=")).unwrap();
    assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly"), "{cookie}");
}

#[tokio::test]
async fn every_state_changing_request_needs_the_sessions_csrf_token() {
    let db = tm_testkit::sqlite();
    let s = start_servers(&db, false);
    let admin = Console::sign_in(&s.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let user_id = create_user(&db, "csrf@example.com", "csrf-password-1").await;
    let ticket_page =
        admin.post("/console/support", &[("subject", "s"), ("kind", "TICKET_TYPE_GENERAL"), ("message", "m")]).await;
    assert_eq!(ticket_page.0, StatusCode::SEE_OTHER, "{}", ticket_page.1);
    let (_, tickets) = admin.get("/console/support").await;
    let ticket = tickets.split("/console/support/").nth(1).unwrap().split('"').next().unwrap().to_owned();

    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/console/keys".into(), vec![("name", "forged")]),
        ("/console/keys/tm_anything/revoke".into(), vec![]),
        ("/console/support".into(), vec![("subject", "forged"), ("message", "forged")]),
        (format!("/console/support/{ticket}/reply"), vec![("message", "forged")]),
        (format!("/console/support/{ticket}/close"), vec![]),
        ("/console/playground".into(), vec![("model", "m"), ("message", "forged")]),
        ("/console/playground/stream".into(), vec![("model", "m"), ("message", "forged")]),
        (
            "/console/admin/users".into(),
            vec![("email", "forged@example.com"), ("password", "forged-password"), ("role", "admin")],
        ),
        (format!("/console/admin/users/{user_id}"), vec![("action", "top_up"), ("amount", "1000")]),
        ("/console/admin/prices".into(), vec![("model", "m"), ("input", "1"), ("output", "1")]),
        ("/console/sign-out".into(), vec![]),
    ];
    let other_session = Console::sign_in(&s.control, "csrf@example.com", "csrf-password-1").await;
    for (path, form) in &posts {
        let (status, page) = admin.post_raw(path, form).await;
        assert_eq!(status, 403, "{path} without a token: {page}");
        assert!(page.contains("CSRF"), "{path}: {page}");
        // Another session's token is not this session's.
        let mut with_other = form.clone();
        with_other.push(("csrf", &other_session.csrf));
        assert_eq!(admin.post_raw(path, &with_other).await.0, 403, "{path} with another session's token");
    }
    // Nothing happened: no key, no ticket message, no user, no credit, still signed in.
    let (_, keys) = admin.get("/console/keys").await;
    assert!(!keys.contains("forged"));
    let (_, t) = admin.get(&format!("/console/support/{ticket}")).await;
    assert!(!t.contains("forged") && t.contains("Open"));
    let (_, users) = admin.get("/console/admin/users").await;
    assert!(!users.contains("forged@example.com"));
    let (_, balance) = call(&s.control, other_session.token(), Method::GET, "/v1/billing/balance", None).await;
    assert_eq!(balance["balance"]["units"], "0", "{balance}");

    // With the token, the same posts work.
    let (status, page) = admin.post("/console/keys", &[("name", "real key")]).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("id=\"new-key\">tm"), "the secret is shown once: {page}");
}

#[tokio::test]
async fn a_user_sees_only_their_own_pages_and_no_admin_ones() {
    for db in tm_testkit::all().await {
        let s = start_servers(&db, false);
        let admin = Console::sign_in(&s.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;
        admin.post("/console/support", &[("subject", "admin's secret ticket"), ("message", "private")]).await;
        let (_, tickets) = admin.get("/console/support").await;
        let ticket = tickets.split("/console/support/").nth(1).unwrap().split('"').next().unwrap().to_owned();
        let (_, keys) = admin.post("/console/keys", &[("name", "admin-key")]).await;
        let admin_key = keys.split("<code>").nth(2).unwrap().split('<').next().unwrap().to_owned();

        create_user(&db, "mallory@example.com", "mallory-password").await;
        let user = Console::sign_in(&s.control, "mallory@example.com", "mallory-password").await;
        let (status, _) = user.get(&format!("/console/support/{ticket}")).await;
        assert_eq!(status, 404, "{}: another user's ticket", db.kind);
        assert_eq!(user.post(&format!("/console/support/{ticket}/reply"), &[("message", "hi")]).await.0, 404);
        assert_eq!(user.post(&format!("/console/keys/{admin_key}/revoke"), &[]).await.0, 404, "another user's key");
        let (_, own) = user.get("/console/keys").await;
        assert!(!own.contains("admin-key") && !own.contains(&admin_key));
        let (_, own_tickets) = user.get("/console/support").await;
        assert!(!own_tickets.contains("secret ticket"));
        let (_, usage) = user.get("/console/usage").await;
        assert!(!usage.contains(&admin_key), "another user's key in the usage filter");
        // The key survived the attempt.
        let (_, admin_keys) = admin.get("/console/keys").await;
        assert!(admin_keys.contains(&admin_key));

        // Admin pages and forms: not found without the role; the admin link is not shown.
        let (_, home) = user.get("/").await;
        assert!(!home.contains("/console/admin/"));
        for path in
            ["/console/admin/users", "/console/admin/prices", "/console/admin/tickets", "/console/admin/activities"]
        {
            assert_eq!(user.get(path).await.0, 404, "{}: {path}", db.kind);
        }
        assert_eq!(
            user.post(
                "/console/admin/users",
                &[("email", "x@example.com"), ("password", "12345678"), ("role", "admin")]
            )
            .await
            .0,
            404
        );
        // The console's session token is an access token of a user: the Control Plane's
        // admin routes refuse it as they refuse the user's CLI token.
        let (status, body) = call(&s.control, user.token(), Method::GET, "/v1/admin/users", None).await;
        assert_eq!(status, 403, "{}: {body}", db.kind);
        // The cookie alone is no bearer token for the API.
        let r =
            user.http.get(format!("{}/v1/admin/users", s.control)).header("cookie", &user.cookie).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
}

#[tokio::test]
async fn an_admins_top_up_shows_on_the_users_overview_once() {
    for db in tm_testkit::all().await {
        let s = start_servers(&db, false);
        let user_id = create_user(&db, "topped@example.com", "topped-password").await;
        let admin = Console::sign_in(&s.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;
        let (_, users) = admin.get("/console/admin/users").await;
        let row = users.split(&format!("id=\"user-{user_id}\"")).nth(1).unwrap();
        let nonce = field(row, "nonce");
        let form = [("action", "top_up"), ("amount", "12.50"), ("reason", "welcome credit"), ("nonce", &nonce)];
        assert_eq!(admin.post(&format!("/console/admin/users/{user_id}"), &form).await.0, StatusCode::SEE_OTHER);
        // A double click posts the same form again: credited once.
        assert_eq!(admin.post(&format!("/console/admin/users/{user_id}"), &form).await.0, StatusCode::SEE_OTHER);
        let bad =
            admin.post(&format!("/console/admin/users/{user_id}"), &[("action", "top_up"), ("amount", "-3")]).await;
        assert_eq!(bad.0, 400, "{}", bad.1);
        assert!(bad.1.contains("amount"), "the error names the field: {}", bad.1);

        let user = Console::sign_in(&s.control, "topped@example.com", "topped-password").await;
        let (_, home) = user.get("/").await;
        assert!(home.contains("id=\"balance\">$12.50<"), "{}: {home}", db.kind);
        let (_, activities) = admin.get("/console/admin/activities").await;
        assert!(activities.contains("welcome credit"), "the reason is in the trail");

        // The CSV export: a header row, the top-up, as text/csv.
        let r = user
            .http
            .get(format!("{}/console/billing/transactions.csv", s.control))
            .header("cookie", &user.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
        let csv = r.text().await.unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].starts_with("date,type,transaction_id,description,model"), "{csv}");
        assert_eq!(lines.len(), 2, "{csv}");
        assert!(lines[1].contains(",top_up,") && lines[1].ends_with(",12.5"), "{csv}");
        assert!(lines[1].contains(": welcome credit,"), "the reason is in the user's transactions: {csv}");
    }
}

#[tokio::test]
async fn console_sign_in_has_the_cli_sign_ins_attempt_limits() {
    let db = tm_testkit::sqlite();
    let s = start_servers(&db, false);
    let http = browser();
    let (form_cookie, _, token) = sign_in_form(&http, &s.control).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = post_sign_in(
            &http,
            &s.control,
            &form_cookie,
            &[("email", ADMIN_EMAIL), ("password", "guess"), ("form_token", &token)],
        )
        .await;
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert!(statuses[5..].contains(&429), "{statuses:?}");
    // While locked, even the right password is refused before it is checked.
    let right = post_sign_in(
        &http,
        &s.control,
        &form_cookie,
        &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD), ("form_token", &token)],
    )
    .await;
    assert_eq!(right.status(), 429);
}

#[tokio::test]
async fn a_console_session_approves_a_cli_login_with_one_click() {
    let db = tm_testkit::sqlite();
    let s = start_servers(&db, false);
    let console = Console::sign_in(&s.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let started: serde_json::Value =
        console.http.post(format!("{}/auth/cli/start", s.control)).send().await.unwrap().json().await.unwrap();
    let auth_url = started["auth_url"].as_str().unwrap();
    let user_code = started["user_code"].as_str().unwrap();
    let cli_code = started["cli_code"].as_str().unwrap();
    let path = auth_url.trim_start_matches(&s.control);

    // Signed out: the password form, with a way to the console's sign-in and back.
    let signed_out = console.http.get(auth_url).send().await.unwrap().text().await.unwrap();
    assert!(
        signed_out.contains("name=\"password\"") && signed_out.contains("/console/sign-in?next=%2Fauth%2Fcli%2Flogin")
    );
    // Signed in: the code and one button, no password.
    let (status, page) = console.get(path).await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!("<p class=\"code\">{user_code}</p>")) && page.contains("approve_signed_in"),
        "{page}"
    );
    assert!(!page.contains("name=\"password\""));

    let link = crate::link(auth_url);
    let mut form: Vec<(String, String)> =
        reqwest::Url::parse(&format!("http://x/?{link}")).unwrap().query_pairs().into_owned().collect();
    form.push(("action".into(), "approve_signed_in".into()));
    let forged: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(console.post_raw("/auth/cli/login", &forged).await.0, 403, "approved without the session's CSRF token");
    assert_eq!(crate::exchange(&s.control, cli_code).await.status(), 202, "still pending");
    form.push(("csrf".into(), console.csrf.clone()));
    let with_token: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, approved) = console.post_raw("/auth/cli/login", &with_token).await;
    assert_eq!(status, 200);
    assert!(approved.contains(&format!("Signed in as <b>{ADMIN_EMAIL}</b>")), "{approved}");
    let tokens: serde_json::Value = crate::exchange(&s.control, cli_code).await.json().await.unwrap();
    let (status, me) =
        call(&s.control, tokens["access_token"].as_str().unwrap(), Method::GET, "/auth/profile", None).await;
    assert_eq!((status, me["user"]["userEmail"].as_str()), (200, Some(ADMIN_EMAIL)));
}

#[tokio::test]
async fn an_admin_changes_a_users_role_limits_and_access_from_the_console() {
    let db = tm_testkit::sqlite();
    let s = start_servers(&db, false);
    let user_id = create_user(&db, "managed@example.com", "managed-password").await;
    let admin = Console::sign_in(&s.control, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let user = Console::sign_in(&s.control, "managed@example.com", "managed-password").await;
    let manage = |form: Vec<(&'static str, &'static str)>| {
        let admin = &admin;
        let path = format!("/console/admin/users/{user_id}");
        async move { admin.post(&path, &form).await }
    };

    let (status, page) =
        manage(vec![("action", "limits"), ("requests_per_minute", "7"), ("tokens_per_minute", "")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    let (status, page) = manage(vec![("action", "limits"), ("requests_per_minute", "lots")]).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("requests_per_minute"), "the error names the field: {page}");

    let (status, _) = manage(vec![("action", "role"), ("role", "USER_ROLE_ADMIN")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, users) = admin.get("/console/admin/users").await;
    let row = users.split(&format!("id=\"user-{user_id}\"")).nth(1).unwrap().split("</tr>").next().unwrap();
    assert!(row.contains("<td>admin</td>"), "{row}");
    // A role change ends the user's sessions (they were issued for the old role).
    assert_eq!(user.get("/").await.0, StatusCode::SEE_OTHER);

    let again = Console::sign_in(&s.control, "managed@example.com", "managed-password").await;
    assert_eq!(again.get("/console/admin/users").await.0, 200, "now an admin");
    let (status, _) = manage(vec![("action", "role"), ("role", "USER_ROLE_USER")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the test admin is a super admin");

    let user = Console::sign_in(&s.control, "managed@example.com", "managed-password").await;
    assert_eq!(manage(vec![("action", "disable")]).await.0, StatusCode::SEE_OTHER);
    assert_eq!(user.get("/").await.0, StatusCode::SEE_OTHER, "a disabled user's console session ends");
    let http = browser();
    let (form_cookie, _, token) = sign_in_form(&http, &s.control).await;
    let fields = [("email", "managed@example.com"), ("password", "managed-password"), ("form_token", token.as_str())];
    assert_eq!(post_sign_in(&http, &s.control, &form_cookie, &fields).await.status(), 401, "disabled");
    assert_eq!(manage(vec![("action", "enable")]).await.0, StatusCode::SEE_OTHER);
    assert_eq!(post_sign_in(&http, &s.control, &form_cookie, &fields).await.status(), StatusCode::SEE_OTHER);
    // Nobody disables themselves from the console.
    let (status, page) =
        admin.post(&format!("/console/admin/users/{}", admin_id(&admin).await), &[("action", "disable")]).await;
    assert_eq!(status, 400, "{page}");
}

/// The signed-in admin's own id, from the users page.
async fn admin_id(admin: &Console) -> String {
    let (_, users) = admin.get("/console/admin/users").await;
    let row = users.split(&format!("data-email=\"{ADMIN_EMAIL}\"")).next().unwrap();
    row.rsplit("id=\"user-").next().unwrap().split('"').next().unwrap().to_owned()
}
