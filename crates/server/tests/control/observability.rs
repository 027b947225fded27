//! A user's request metrics, folded from the usage records of real requests (through the
//! stand-in engine), per step of the asked window.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tm_control::clock::Clock;
use tm_testkit::fake_engine::{FakeEngine, FAKE_MODEL};

use crate::common::{client, start_with, Engine, Options};
use crate::metering::{domain, funded_user, wait_until_settled};
use crate::{admin_login, call, login};

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap().format(&Rfc3339).unwrap()
}

fn series(body: &Value, name: &str) -> Vec<f64> {
    let m = body["metrics"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap();
    m["data"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).collect()
}

#[tokio::test]
async fn user_metrics_count_the_requests_and_tokens_of_each_step() {
    for db in tm_testkit::all().await {
        let engine = Arc::new(FakeEngine::new(Duration::ZERO, 16));
        let s = start_with(&db, Engine::Given(engine), Options::default());
        let (url, cp) = (s.inference.clone().unwrap(), s.control.clone());
        let control = domain(&db).await;
        let (user_id, keys) = funded_user(&control, "obs@example.com", 1_000_000_000, 1).await;
        let chat = |content: &'static str| {
            client()
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(&keys[0])
                .json(
                    &json!({"model": FAKE_MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 5}),
                )
                .send()
        };
        let t0 = s.clock.now_ms();
        for content in ["one", "two two", "three three three"] {
            assert_eq!(chat(content).await.unwrap().status(), 200);
        }
        wait_until_settled(&control).await;
        s.clock.advance_secs(3600);
        for content in ["four", "five"] {
            assert_eq!(chat(content).await.unwrap().status(), 200);
        }
        wait_until_settled(&control).await;

        let me = login(&cp, "obs@example.com", "password-123").await;
        let path = format!(
            "/v1/observability/users/metrics?startTime={}&endTime={}&stepSeconds=3600",
            rfc3339(t0 - 60_000),
            rfc3339(t0 - 60_000 + 3 * 3_600_000)
        );
        let (status, body) = call(&cp, &me.access, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{body} ({})", db.kind);
        assert_eq!(series(&body, "requests"), [3.0, 2.0, 0.0]);
        assert_eq!(series(&body, "errors"), [0.0, 0.0, 0.0]);
        let records = control.store().usage().records(&user_id).await.unwrap();
        let prompt: i64 = records.iter().map(|r| r.prompt_tokens).sum();
        let output: i64 = records.iter().map(|r| r.completion_tokens).sum();
        assert_eq!(series(&body, "input_tokens").iter().sum::<f64>(), prompt as f64);
        assert_eq!(series(&body, "output_tokens").iter().sum::<f64>(), output as f64);
        assert!(series(&body, "latency_ms").iter().all(|v| *v >= 0.0));
        let first = &body["metrics"][0]["data"][0]["timestamp"];
        assert_eq!(first.as_str(), Some(rfc3339(t0 - 60_000).as_str()));

        // Only the user and admins read them.
        let admin = admin_login(&cp).await;
        let (_, mine) = call(&cp, &admin.access, Method::GET, &path, None).await;
        assert_eq!(series(&mine, "requests"), [0.0, 0.0, 0.0], "the admin's own requests");
        let theirs = format!("{path}&userId={user_id}");
        assert_eq!(series(&call(&cp, &admin.access, Method::GET, &theirs, None).await.1, "requests"), [3.0, 2.0, 0.0]);
        let (admin_id, _) = funded_user(&control, "other@example.com", 0, 0).await;
        let other = login(&cp, "other@example.com", "password-123").await;
        assert_eq!(call(&cp, &other.access, Method::GET, &format!("{path}&userId={admin_id}"), None).await.0, 200);
        assert_eq!(call(&cp, &other.access, Method::GET, &theirs, None).await.0, 403);

        // The default window is the last 24 hours, hourly.
        let (_, default) = call(&cp, &me.access, Method::GET, "/v1/observability/users/metrics", None).await;
        assert_eq!(series(&default, "requests").len(), 24);

        for (query, field) in [
            ("stepSeconds=0", "stepSeconds"),
            ("stepSeconds=1&startTime=2020-01-01T00:00:00Z", "stepSeconds"),
            ("startTime=2030-01-01T00:00:00Z&endTime=2029-01-01T00:00:00Z", "startTime"),
            ("endTime=later", "endTime"),
        ] {
            let (status, bad) =
                call(&cp, &me.access, Method::GET, &format!("/v1/observability/users/metrics?{query}"), None).await;
            assert_eq!(status, 400, "{query}: {bad}");
            assert!(bad["message"].as_str().unwrap().contains(field), "{bad} should name {field}");
        }
    }
}
