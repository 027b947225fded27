//! Control Plane over real HTTP, on a fresh SQLite file and a fresh PostgreSQL database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod activities;
mod admin;
mod billing;
mod catalog;
mod connections;
mod console;
mod deployments;
mod durability;
mod keys;
mod login;
mod metering;
mod observability;
mod openapi;
mod replicas;
mod secrets;
mod support;
mod upstream;

use reqwest::{Method, Response};
use serde_json::{json, Value};
use tm_testkit::TestDb;

use common::{client, ADMIN_EMAIL, ADMIN_PASSWORD};

/// Access and refresh token of a signed-in CLI.
pub struct Session {
    pub access: String,
    pub refresh: String,
}

/// Runs `tm auth login`'s protocol: start, poll (pending), approve on the sign-in page,
/// poll (tokens), and checks that the code then stops working.
pub async fn login(base: &str, email: &str, password: &str) -> Session {
    let http = client();
    let started: Value = http.post(format!("{base}/auth/cli/start")).send().await.unwrap().json().await.unwrap();
    let code = started["cli_code"].as_str().unwrap();
    let auth_url = started["auth_url"].as_str().unwrap();
    assert!(auth_url.starts_with(base), "{auth_url}");
    assert_eq!(exchange(base, code).await.status(), 202);

    let user_code = started["user_code"].as_str().unwrap();
    assert!(auth_url.ends_with(&format!("&code={user_code}")), "the link shows the user code: {auth_url}");
    let page = http.get(auth_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(!page.contains(code), "the page must not carry the secret code");
    assert!(page.contains(&format!(r#"<p class="code">{user_code}</p>"#)), "the page shows the user code");
    let approved = approve(base, link(auth_url), email, password).await;
    assert_eq!(approved.status(), 200, "{}", approved.text().await.unwrap());

    let tokens: Value = exchange(base, code).await.json().await.unwrap();
    assert_eq!(exchange(base, code).await.status(), 400, "a code works once");
    Session {
        access: tokens["access_token"].as_str().unwrap().into(),
        refresh: tokens["refresh_token"].as_str().unwrap().into(),
    }
}

pub async fn exchange(base: &str, code: &str) -> Response {
    client().post(format!("{base}/auth/cli/exchange")).json(&json!({"cli_code": code})).send().await.unwrap()
}

pub async fn refresh(base: &str, refresh_token: &str) -> Response {
    client()
        .post(format!("{base}/auth/cli/refresh"))
        .json(&json!({"refresh_token": refresh_token}))
        .send()
        .await
        .unwrap()
}

/// A sign-in link's query (`request=…&code=…`): what the page's forms carry.
pub fn link(auth_url: &str) -> &str {
    auth_url.split_once('?').map_or("", |(_, query)| query)
}

/// Posts the sign-in page's approve form: the link's fields, the credentials and the
/// ticked "my terminal shows this code" box.
pub async fn approve(base: &str, link: &str, email: &str, password: &str) -> Response {
    let extra = [("email", email), ("password", password), ("confirm", "yes"), ("action", "approve")];
    post_form(base, link, &extra).await
}

/// Posts a sign-in page form: the link's fields and `extra`.
pub async fn post_form(base: &str, link: &str, extra: &[(&str, &str)]) -> Response {
    let url = reqwest::Url::parse(&format!("{base}/?{link}")).unwrap();
    let mut form: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    form.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    client().post(format!("{base}/auth/cli/login")).form(&form).send().await.unwrap()
}

pub async fn admin_login(base: &str) -> Session {
    login(base, ADMIN_EMAIL, ADMIN_PASSWORD).await
}

/// A Control Plane call with an access token; returns status and JSON body.
pub async fn call(base: &str, token: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client().request(method, format!("{base}{path}")).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let response = req.send().await.unwrap();
    assert!(response.headers().contains_key("x-request-id"), "no x-request-id on {path}");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Creates a user the way an operator does (`tensormesh user create`), on the same database.
pub async fn create_user(db: &TestDb, email: &str, password: &str) -> String {
    let store = tm_store::Store::open(&db.url).await.unwrap();
    let control = tm_control::Control::new(
        store.clone(),
        std::sync::Arc::new(tm_control::clock::SystemClock),
        Default::default(),
    );
    let new = tm_control::accounts::NewUser {
        email: email.into(),
        password: password.into(),
        role: tm_control::Role::User,
        first_name: "Test".into(),
        last_name: String::new(),
    };
    let id = control.accounts().create(new).await.unwrap().id;
    store.close().await;
    id
}
