use reqwest::Method;
use serde_json::json;

use crate::common::{client, start_servers, ADMIN_PASSWORD, KEY};
use crate::{admin_login, call, refresh};

/// Nothing that works as a credential is written to the database (file or WAL).
#[tokio::test]
async fn secrets_never_reach_the_database_files() {
    let db = tm_testkit::sqlite();
    let s = start_servers(&db, false);
    let first = admin_login(&s.control).await;
    let refreshed: serde_json::Value = refresh(&s.control, &first.refresh).await.json().await.unwrap();
    let access = refreshed["access_token"].as_str().unwrap().to_owned();
    let (_, created) = call(&s.control, &access, Method::POST, "/v1/users/api-keys", Some(json!({"name": "k"}))).await;
    let key = created["apiKey"]["id"].as_str().unwrap().to_owned();
    let started: serde_json::Value = client().post(format!("{}/auth/cli/start", s.control)).send().await.unwrap().json().await.unwrap();
    let code = started["cli_code"].as_str().unwrap().to_owned();

    let path = db.url.strip_prefix("sqlite://").unwrap();
    let dir = std::path::Path::new(path).parent().unwrap();
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(bytes.len() > 10_000, "database files not found in {}", dir.display());
    let secrets = [KEY, ADMIN_PASSWORD, &key, &first.access, &first.refresh, &access, &code];
    for secret in secrets {
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "a secret ({}...) is stored in the database", &secret[..8]);
    }
}
