use reqwest::Method;
use serde_json::json;

use crate::common::{captured_logs, client, start_servers, ADMIN_PASSWORD, KEY, MODEL};
use crate::{admin_login, call, refresh};

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Nothing that works as a credential is written to the database (file or WAL) or to the
/// logs, with every log level on.
#[tokio::test]
async fn secrets_never_reach_the_database_files_or_the_logs() {
    let logs = captured_logs();
    let db = tm_testkit::sqlite();
    let s = start_servers(&db, true);
    let first = admin_login(&s.control).await;
    let refreshed: serde_json::Value = refresh(&s.control, &first.refresh).await.json().await.unwrap();
    let access = refreshed["access_token"].as_str().unwrap().to_owned();
    let (_, created) = call(&s.control, &access, Method::POST, "/v1/users/api-keys", Some(json!({"name": "k"}))).await;
    let key = created["apiKey"]["id"].as_str().unwrap().to_owned();
    let started: serde_json::Value =
        client().post(format!("{}/auth/cli/start", s.control)).send().await.unwrap().json().await.unwrap();
    let code = started["cli_code"].as_str().unwrap().to_owned();
    // Inference with the new key, and the reuse of a rotated refresh token (logged as theft).
    let inference = s.inference.clone().unwrap();
    for k in [key.as_str(), "not-a-key-at-all"] {
        let body = json!({"model": MODEL, "prompt": "hi"});
        client().post(format!("{inference}/tokenize")).bearer_auth(k).json(&body).send().await.unwrap();
    }
    assert_eq!(refresh(&s.control, &first.refresh).await.status(), 401);

    let path = db.url.strip_prefix("sqlite://").unwrap();
    let dir = std::path::Path::new(path).parent().unwrap();
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(bytes.len() > 10_000, "database files not found in {}", dir.display());
    let logged = logs.bytes();
    assert!(contains(&logged, "sqlx::query"), "the capture saw no SQL: {} bytes", logged.len());
    let secrets = [KEY, ADMIN_PASSWORD, &key, &first.access, &first.refresh, &access, &code];
    for secret in secrets {
        assert!(!contains(&bytes, secret), "a secret ({}...) is stored in the database", &secret[..8]);
        assert!(!contains(&logged, secret), "a secret ({}...) was logged", &secret[..8]);
    }
}

/// With `--metrics-token`, `/metrics` (whose series name models and fleet endpoints)
/// answers only that bearer token; the other public GETs stay public.
#[tokio::test]
async fn metrics_can_require_a_token() {
    let db = tm_testkit::sqlite();
    let engine = std::sync::Arc::new(tm_testkit::fake_engine::FakeEngine::new(std::time::Duration::ZERO, 4));
    let options = crate::common::Options { metrics_token: Some("metrics-secret-123"), ..Default::default() };
    let s = crate::common::start_with(&db, crate::common::Engine::Given(engine), options);
    let base = s.inference.clone().unwrap();
    let get = |token: Option<&'static str>| {
        let mut r = crate::common::client().get(format!("{base}/metrics"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(get(Some("metrics-secret-12")).await.unwrap().status(), 401);
    let ok = get(Some("metrics-secret-123")).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().ends_with("# EOF\n"));
    let health = crate::common::client().get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

/// With `--metrics-addr`, `/metrics` is served on that address only: the inference
/// listener (the one the internet reaches) answers it 404.
#[tokio::test]
async fn metrics_can_have_their_own_address() {
    let db = tm_testkit::sqlite();
    let engine = std::sync::Arc::new(tm_testkit::fake_engine::FakeEngine::new(std::time::Duration::ZERO, 4));
    let options = crate::common::Options { metrics_listener: true, ..Default::default() };
    let s = crate::common::start_with(&db, crate::common::Engine::Given(engine), options);
    let (inference, metrics) = (s.inference.clone().unwrap(), s.metrics.clone().unwrap());
    assert_ne!(inference, metrics);
    let get = |url: String| crate::common::client().get(url).send();
    let public = get(format!("{inference}/metrics")).await.unwrap();
    assert_eq!(public.status(), 404, "metrics still on the inference listener");
    let own = get(format!("{metrics}/metrics")).await.unwrap();
    assert_eq!(own.status(), 200);
    assert!(own.text().await.unwrap().ends_with("# EOF\n"));
    assert_eq!(get(format!("{metrics}/v1/models")).await.unwrap().status(), 404, "only /metrics there");
    assert_eq!(get(format!("{inference}/health")).await.unwrap().status(), 200);
}
