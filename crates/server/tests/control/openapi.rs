//! `GET /openapi.json` on both listeners (issue 19 item 13): an OpenAPI 3.1 document of
//! every route, and real answers, successes and errors, that match it. The fuzzer
//! (`compat/fuzz_api.py`, schemathesis) generates the requests; this test keeps the
//! document honest in `cargo test` with answers a person would ask for.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tm_testkit::fake_engine::{FakeEngine, FAKE_MODEL};

use crate::common::{client, start_with, Engine, Options, KEY};
use crate::{admin_login, call};

async fn document(base: &str) -> Value {
    let response = client().get(format!("{base}/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    doc
}

/// Checks `body` against what `doc` says `method path` answers with `status` (or its
/// `default`), with the document's components in scope for `$ref`s.
fn assert_conforms(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let responses = &doc["paths"][path][method]["responses"];
    assert!(responses.is_object(), "{method} {path} is not in the document");
    let response = responses.get(status.to_string()).unwrap_or(&responses["default"]);
    let schema = &response["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {path} documents no JSON body for {status}");
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    });
    let validator = jsonschema::validator_for(&root).unwrap();
    let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{method} {path} {status} breaks the document: {errors:?}\n{body}");
}

fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.push((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[tokio::test]
async fn both_listeners_serve_a_document_their_answers_match() {
    let db = tm_testkit::sqlite();
    let engine = Arc::new(FakeEngine::new(Duration::ZERO, 8));
    let s = start_with(&db, Engine::Given(engine), Options::default());
    let inference = s.inference.clone().unwrap();
    let (control_doc, inference_doc) = (document(&s.control).await, document(&inference).await);

    // Every route is there, with the surface's error shape as the fallback answer.
    let control_ops = operations(&control_doc);
    let inference_ops = operations(&inference_doc);
    for op in [("POST", "/auth/cli/start"), ("GET", "/v1/billing/balance"), ("POST", "/v1/admin/billing/balances:add")]
    {
        assert!(control_ops.contains(&(op.0.into(), op.1.into())), "{op:?} missing");
    }
    for op in [("POST", "/v1/chat/completions"), ("POST", "/v1/responses"), ("GET", "/health"), ("GET", "/metrics")] {
        assert!(inference_ops.contains(&(op.0.into(), op.1.into())), "{op:?} missing");
    }
    assert!(control_ops.len() >= 60, "{} control operations", control_ops.len());
    assert_eq!(
        control_doc["paths"]["/v1/models"]["get"]["responses"]["default"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/RpcStatus"
    );
    assert_eq!(inference_doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");

    // The Control Plane's answers, successes and errors.
    let admin = admin_login(&s.control).await;
    let token = admin.access.as_str();
    let (status, key) = call(&s.control, token, Method::POST, "/v1/users/api-keys", Some(json!({"name": "doc"}))).await;
    assert_conforms(&control_doc, "post", "/v1/users/api-keys", status, &key);
    let (status, ticket) = call(
        &s.control,
        token,
        Method::POST,
        "/v1/support/tickets",
        Some(json!({"subject": "s", "message": "m", "ticketType": "TICKET_TYPE_BILLING"})),
    )
    .await;
    assert_conforms(&control_doc, "post", "/v1/support/tickets", status, &ticket);
    let gets = [
        "/auth/profile",
        "/v1/users/api-keys",
        "/v1/billing/balance",
        "/v1/billing/transactions",
        "/v1/billing/spending/summary",
        "/v1/billing/spending/history",
        "/v1/billing/serverless-usage/history",
        "/v1/billing/serverless-pricing",
        "/v1/billing/address",
        "/v1/support/tickets",
        "/v1/activities",
        "/v1/observability/users/metrics",
        "/v1/models",
        "/v1/products",
        "/v1/admin/users",
        "/v1/admin/models",
        "/v1/admin/support/reserved-deployments",
    ];
    for path in gets {
        let (status, body) = call(&s.control, token, Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_conforms(&control_doc, "get", path, status, &body);
    }
    for (method, path, body) in [
        (Method::GET, "/v1/billing/transactions?pageSize=0", None),
        (Method::GET, "/v1/support/tickets/nope", None),
        (Method::POST, "/v1/admin/billing/balances:add", Some(json!({"amount": "lots"}))),
        (Method::GET, "/v1/billing/stripe/customers", None),
        // serde would read a struct from an array; the document says object.
        (Method::POST, "/auth/cli/logout", Some(json!([]))),
        (Method::GET, "/v1/users/api-keys?includeDeleted=maybe", None),
    ] {
        let (status, answer) = call(&s.control, token, method.clone(), path, body).await;
        assert!(status >= 400, "{path}: {answer}");
        let route = path.split('?').next().unwrap();
        let route = if route.starts_with("/v1/support/tickets/") { "/v1/support/tickets/{ticket_id}" } else { route };
        assert_conforms(&control_doc, &method.as_str().to_lowercase(), route, status, &answer);
    }
    let refused = client().post(format!("{}/auth/cli/exchange", s.control)).json(&json!({})).send().await.unwrap();
    let status = refused.status().as_u16();
    assert_conforms(&control_doc, "post", "/auth/cli/exchange", status, &refused.json().await.unwrap());

    // The inference API's.
    for path in ["/v1/models", "/health", "/version"] {
        let response = client().get(format!("{inference}{path}")).send().await.unwrap();
        let status = response.status().as_u16();
        assert_conforms(&inference_doc, "get", path, status, &response.json().await.unwrap());
    }
    let post = |path: &str, key: &str, body: Value| {
        client().post(format!("{inference}{path}")).bearer_auth(key.to_owned()).json(&body).send()
    };
    let chat =
        json!({"model": FAKE_MODEL, "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 4});
    let completion = json!({"model": FAKE_MODEL, "prompt": "one two three", "max_tokens": 4, "logprobs": 2});
    let tokenize = json!({"model": FAKE_MODEL, "prompt": "one two three"});
    let response = json!({"model": FAKE_MODEL, "input": "one two three", "max_output_tokens": 2});
    let routes = [
        ("/v1/chat/completions", chat.clone()),
        ("/v1/completions", completion),
        ("/tokenize", tokenize),
        ("/v1/responses", response),
    ];
    for (path, body) in routes {
        let response = post(path, KEY, body).await.unwrap();
        let status = response.status().as_u16();
        assert_eq!(status, 200, "{path}");
        assert_conforms(&inference_doc, "post", path, status, &response.json().await.unwrap());
    }
    let streamed = post(
        "/v1/chat/completions",
        KEY,
        json!({"model": FAKE_MODEL, "messages": chat["messages"],
        "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await
    .unwrap();
    assert_eq!(streamed.headers()["content-type"], "text/event-stream");
    let text = streamed.text().await.unwrap();
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.len() >= 2, "{text}");
    let chunk_doc = json!({"components": inference_doc["components"], "paths": {"/chunk": {"get": {"responses": {
        "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionChunk"}}}}}}}}});
    for chunk in &chunks {
        assert_conforms(&chunk_doc, "get", "/chunk", 200, chunk);
    }
    let unauthorized = post("/v1/chat/completions", "not-a-key", chat.clone()).await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_conforms(&inference_doc, "post", "/v1/chat/completions", 401, &unauthorized.json().await.unwrap());
    let bad = post("/v1/chat/completions", KEY, json!({"model": FAKE_MODEL, "messages": [], "temperature": 9})).await;
    let bad = bad.unwrap();
    assert_eq!(bad.status(), 400);
    assert_conforms(&inference_doc, "post", "/v1/chat/completions", 400, &bad.json().await.unwrap());
}
