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
