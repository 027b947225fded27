//! The Control Plane's models (deployments): named handles on served models, live status,
//! name checks, infra search, memory check, and one-shot chats billed like any request;
//! users see only their own, admins all.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tm_testkit::fake_engine::{FakeEngine, FAKE_MODEL};

use crate::common::{start_servers, start_with, Engine, Options};
use crate::metering::{domain, funded_user, wait_until_settled};
use crate::{admin_login, call, login};

#[tokio::test]
async fn deployments_are_private_live_and_chat_is_billed() {
    for db in tm_testkit::all().await {
        let s = start_with(&db, Engine::Given(Arc::new(FakeEngine::new(Duration::ZERO, 8))), Options::default());
        let cp = s.control.as_str();
        let control = domain(&db).await;
        let (ann_id, _) = funded_user(&control, "ann@example.com", 1_000_000_000, 0).await;
        let (bob_id, _) = funded_user(&control, "bob@example.com", 0, 0).await;
        let ann = login(cp, "ann@example.com", "password-123").await;
        let bob = login(cp, "bob@example.com", "password-123").await;

        let new = json!({"modelName": "my-echo", "modelPath": FAKE_MODEL, "description": "d",
                         "infra": {"cloudProvider": "CLOUD_PROVIDER_NEBIUS"}, "gpuCount": 1});
        let (status, made) = call(cp, &ann.access, Method::POST, "/v1/models", Some(new.clone())).await;
        assert_eq!(status, 200, "{made} ({})", db.kind);
        let m = &made["model"];
        let id = m["modelId"].as_str().unwrap().to_owned();
        assert_eq!((m["status"].as_str(), m["userId"].as_str()), (Some("MODEL_STATUS_UP"), Some(ann_id.as_str())));
        assert_eq!(
            call(cp, &ann.access, Method::POST, "/v1/models", Some(new)).await.0,
            409,
            "names are unique per user"
        );
        let (status, bad) =
            call(cp, &ann.access, Method::POST, "/v1/models", Some(json!({"modelName": "x", "modelPath": "nope/1"})))
                .await;
        assert!(status == 400 && bad["message"].as_str().unwrap().contains("modelPath"), "{bad}");
        let bobs = json!({"modelName": "my-echo", "modelPath": FAKE_MODEL});
        let (status, bob_made) = call(cp, &bob.access, Method::POST, "/v1/models", Some(bobs)).await;
        assert_eq!(status, 200, "another user may use the same name");
        let bob_model = bob_made["model"]["modelId"].as_str().unwrap().to_owned();

        for (name, free) in [("my-echo", false), ("other", true), ("bad name", false)] {
            let (status, v) =
                call(cp, &ann.access, Method::POST, "/v1/models:validate", Some(json!({"modelName": name}))).await;
            assert_eq!((status, v["isValid"].as_bool()), (200, Some(free)), "{name}");
        }
        assert_eq!(call(cp, &ann.access, Method::POST, "/v1/models:validate", Some(json!({}))).await.0, 400);

        // Each user sees only their own; another's is not found, its owner's list forbidden.
        let (_, list) = call(cp, &ann.access, Method::GET, "/v1/models", None).await;
        assert_eq!(list["models"].as_array().unwrap().len(), 1);
        let path = format!("/v1/models/{id}");
        for (method, p, body) in [
            (Method::GET, path.clone(), None),
            (Method::DELETE, path.clone(), None),
            (Method::POST, format!("{path}:chat"), Some(json!({"body": "hi"}))),
            (Method::POST, "/v1/models/check".to_owned(), Some(json!({"modelId": id}))),
        ] {
            assert_eq!(call(cp, &bob.access, method, &p, body).await.0, 404, "{p}");
        }
        assert_eq!(call(cp, &bob.access, Method::GET, &format!("/v1/models?userId={ann_id}"), None).await.0, 403);

        let infra = |v| Some(json!({"infra": {"cloudProvider": v}}));
        let (_, found) =
            call(cp, &ann.access, Method::POST, "/v1/models:search-by-infra", infra("CLOUD_PROVIDER_NEBIUS")).await;
        assert_eq!(found["models"][0]["modelId"].as_str(), Some(id.as_str()));
        let (_, none) =
            call(cp, &ann.access, Method::POST, "/v1/models:search-by-infra", infra("CLOUD_PROVIDER_LAMBDA")).await;
        assert_eq!(none["models"], json!([]));
        assert_eq!(call(cp, &ann.access, Method::POST, "/v1/models:search-by-infra", Some(json!({}))).await.0, 400);

        // A one-shot chat goes through the metered path: a usage record, a charge.
        let (status, chat) =
            call(cp, &ann.access, Method::POST, &format!("{path}:chat"), Some(json!({"body": "hello there"}))).await;
        assert_eq!(status, 200, "{chat}");
        assert!(!chat["response"].as_str().unwrap().is_empty(), "{chat}");
        // Capped, so that it answers within the official clients' 30 s: the stand-in engine
        // writes as many words as it is allowed.
        let words = chat["response"].as_str().unwrap().split_whitespace().count();
        assert_eq!(words, tm_gateway::infer::ONE_SHOT_MAX_TOKENS as usize, "{chat}");
        wait_until_settled(&control).await;
        let records = control.store().usage().records(&ann_id).await.unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].api_key_id, format!("control-plane:{ann_id}"));
        assert!(records[0].cost_nanos > 0);
        assert_eq!(
            control.store().ledger().account(&ann_id).await.unwrap().balance_nanos,
            1_000_000_000 - records[0].cost_nanos
        );
        // Bob has no money: refused, nothing recorded.
        let (status, broke) =
            call(cp, &bob.access, Method::POST, &format!("/v1/models/{bob_model}:chat"), Some(json!({"body": "hi"})))
                .await;
        assert_eq!((status, broke["code"].as_i64()), (400, Some(9)), "{broke}");
        assert!(control.store().usage().records(&bob_id).await.unwrap().is_empty());
        assert_eq!(call(cp, &ann.access, Method::POST, &format!("{path}:chat"), Some(json!({}))).await.0, 400);

        // The deployment's logs show the request line; its metrics count it.
        let (status, logs) =
            call(cp, &ann.access, Method::GET, &format!("/v1/observability/deployments/{id}/logs"), None).await;
        assert_eq!(status, 200, "{logs}");
        let line = logs["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["message"].as_str().unwrap())
            .find(|m| m.contains(&records[0].request_id));
        assert!(line.is_some_and(|l| l.starts_with("INFO request finished") && l.contains("prompt_tokens=")), "{logs}");
        let bobs_logs =
            format!("/v1/observability/deployments/{bob_model}/logs?direction=LOG_DIRECTION_FORWARD&limit=1000");
        let (_, theirs) = call(cp, &bob.access, Method::GET, &bobs_logs, None).await;
        assert!(!theirs.to_string().contains(&records[0].request_id), "another user's requests never show: {theirs}");
        for p in
            [format!("/v1/observability/deployments/{id}/logs"), format!("/v1/observability/deployments/{id}/metrics")]
        {
            assert_eq!(call(cp, &bob.access, Method::GET, &p, None).await.0, 404, "{p}");
        }
        let bad = format!("/v1/observability/deployments/{id}/logs?direction=sideways");
        assert_eq!(call(cp, &ann.access, Method::GET, &bad, None).await.0, 400);
        let window = "startTime=2000-01-01T00:00:00Z&endTime=2999-01-01T00:00:00Z&stepSeconds=315360000";
        let (status, metrics) =
            call(cp, &ann.access, Method::GET, &format!("/v1/observability/deployments/{id}/metrics?{window}"), None)
                .await;
        assert_eq!(status, 200, "{metrics}");
        let requests: f64 =
            metrics["metrics"][0]["data"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).sum();
        assert_eq!((metrics["metrics"][0]["name"].as_str(), requests), (Some("requests"), 1.0));
        assert_eq!(
            call(cp, &ann.access, Method::POST, &format!("{path}:talk"), Some(json!({"body": "x"}))).await.0,
            404
        );

        // The stand-in engine does not report memory needs: a clear 501.
        let (status, check) =
            call(cp, &ann.access, Method::POST, "/v1/models/check", Some(json!({"modelId": id}))).await;
        assert_eq!((status, check["code"].as_i64()), (501, Some(12)), "{check}");

        // Admins list everyone's, page by page, and delete any.
        let admin = admin_login(cp).await;
        assert_eq!(call(cp, &ann.access, Method::GET, "/v1/admin/models", None).await.0, 403);
        let (_, page) = call(cp, &admin.access, Method::GET, "/v1/admin/models?page=1&size=1", None).await;
        assert_eq!((page["total"].as_str(), page["models"].as_array().unwrap().len()), (Some("2"), 1));
        let (status, _) = call(cp, &admin.access, Method::DELETE, &format!("/v1/admin/models/{bob_model}"), None).await;
        assert_eq!(status, 200);
        assert_eq!(call(cp, &bob.access, Method::GET, "/v1/models", None).await.1["models"], json!([]));

        // Deleting keeps the record, marked deleted; it no longer lists or chats.
        for _ in 0..2 {
            assert_eq!(call(cp, &ann.access, Method::DELETE, &path, None).await, (200, json!({"empty": {}})));
        }
        let (_, gone) = call(cp, &ann.access, Method::GET, &path, None).await;
        assert_eq!(gone["model"]["status"], "MODEL_STATUS_DELETED");
        assert_eq!(call(cp, &ann.access, Method::GET, "/v1/models", None).await.1["models"], json!([]));
        assert_eq!(
            call(cp, &ann.access, Method::POST, &format!("{path}:chat"), Some(json!({"body": "hi"}))).await.0,
            400
        );
        let again = json!({"modelName": "my-echo", "modelPath": FAKE_MODEL});
        assert_eq!(
            call(cp, &ann.access, Method::POST, "/v1/models", Some(again)).await.0,
            200,
            "the name is free again"
        );
    }
}

#[tokio::test]
async fn check_reports_the_real_models_memory_needs() {
    let db = tm_testkit::sqlite();
    let s = start_servers(&db, true);
    let cp = s.control.as_str();
    let admin = admin_login(cp).await;
    let (_, made) =
        call(cp, &admin.access, Method::POST, "/v1/models", Some(json!({"modelName": crate::common::MODEL}))).await;
    assert_eq!(made["model"]["status"], "MODEL_STATUS_UP", "{made}");
    let id = made["model"]["modelId"].clone();
    let (status, check) = call(cp, &admin.access, Method::POST, "/v1/models/check", Some(json!({"modelId": id}))).await;
    assert_eq!(status, 200, "{check}");
    let (total, kv) =
        (check["requiredGpuMemoryGib"].as_f64().unwrap(), check["requiredLmCacheMemoryGib"].as_f64().unwrap());
    // gemma-3-270m Q4_K_M: about 0.24 GiB of weights.
    assert!(kv > 0.0 && total > kv + 0.1 && total < 4.0, "{check}");
}
