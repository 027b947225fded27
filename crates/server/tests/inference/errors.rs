//! Every error path answers in the OpenAI error shape with the right status, naming the
//! field where there is one, with `x-request-id`; nothing answers 5xx.

use serde_json::{json, Value};

use crate::common::{client, post_json, shared, start, Options, KEY, MODEL};

async fn raw(body: String, content_type: Option<&str>) -> (u16, Value) {
    let mut req = client().post(format!("{}/v1/chat/completions", shared())).bearer_auth(KEY).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let r = req.send().await.unwrap();
    assert!(r.headers().contains_key("x-request-id"));
    (r.status().as_u16(), r.json().await.unwrap())
}

fn assert_error(status: u16, v: &Value, want_status: u16, want_param: Option<&str>) {
    assert_eq!(status, want_status, "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["error"]["type"].is_string(), "{v}");
    if let Some(p) = want_param {
        assert_eq!(v["error"]["param"], p, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(p.split('.').next().unwrap()), "{v}");
    }
}

#[tokio::test]
async fn malformed_bodies_are_400_naming_the_field() {
    let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
    let cases: Vec<(String, Option<&str>)> = vec![
        ("{\"model\": ".into(), None),
        ("[1,2]".into(), None),
        ("\u{0}\u{ff}".into(), None),
        (format!(r#"{{"model":"{MODEL}",{msgs},"temperature":"hot"}}"#), Some("temperature")),
        (format!(r#"{{"model":"{MODEL}",{msgs},"stream":"yes"}}"#), Some("stream")),
        (format!(r#"{{"model":"{MODEL}",{msgs},"max_tokens":1.5}}"#), Some("max_tokens")),
        (format!(r#"{{"model":"{MODEL}",{msgs},"max_tokens":-3}}"#), Some("max_tokens")),
        (format!(r#"{{"model":"{MODEL}",{msgs},"max_tokens":99999999999999999999999}}"#), Some("max_tokens")),
        (format!(r#"{{"model":"{MODEL}",{msgs},"n":17}}"#), Some("n")),
        (format!(r#"{{"model":"{MODEL}",{msgs},"n":0}}"#), Some("n")),
        (format!(r#"{{"model":"{MODEL}",{msgs},"top_p":7}}"#), Some("top_p")),
        (format!(r#"{{"model":"{MODEL}",{msgs},"logprobs":true,"top_logprobs":21}}"#), Some("top_logprobs")),
        (format!(r#"{{"model":"{MODEL}",{msgs},"logprobs":"yes"}}"#), Some("logprobs")),
        (
            format!(r#"{{"model":"{MODEL}",{msgs},"response_format":{{"type":"json_schema"}}}}"#),
            Some("response_format.json_schema"),
        ),
        (
            format!(
                r#"{{"model":"{MODEL}",{msgs},"response_format":{{"type":"json_schema","json_schema":{{"name":"x","schema":{{"type":"object","properties":{{"a":{{"not":{{}}}}}}}}}}}}}}"#
            ),
            Some("response_format.json_schema.schema.properties.a.not"),
        ),
        (
            format!(
                r#"{{"model":"{MODEL}",{msgs},"tools":[{{"type":"function","function":{{"name":"f","parameters":"object"}}}}]}}"#
            ),
            Some("tools[0].function.parameters"),
        ),
        (
            format!(
                r#"{{"model":"{MODEL}",{msgs},"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"type":"object","if":{{}}}}}}}}]}}"#
            ),
            Some("tools[0].function.parameters.if"),
        ),
        (
            format!(
                r#"{{"model":"{MODEL}",{msgs},"tools":[{{"type":"function","function":{{"name":"f"}}}}],"tool_choice":{{"type":"function","function":{{"name":"g"}}}}}}"#
            ),
            Some("tool_choice"),
        ),
        (format!(r#"{{"model":"{MODEL}",{msgs},"logit_bias":{{"999999999":1}}}}"#), Some("logit_bias[0]")),
        (format!(r#"{{"model":"{MODEL}","messages":[]}}"#), Some("messages")),
        (format!(r#"{{"model":"{MODEL}","messages":[{{"content":"x"}}]}}"#), Some("messages[0].role")),
        (
            format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":[{{"type":"image_url"}}]}}]}}"#),
            Some("messages[0].content[0].type"),
        ),
        (format!(r#"{{{msgs}}}"#), Some("model")),
    ];
    for (body, param) in cases {
        let (status, v) = raw(body, Some("application/json")).await;
        assert_error(status, &v, 400, param);
    }
}

#[tokio::test]
async fn unknown_fields_and_missing_content_type_are_accepted() {
    let body =
        r#"{"model":"gemma-3-270m","messages":[{"role":"user","content":"hi"}],"max_tokens":1,"whatever":{"x":1}}"#;
    assert_eq!(raw(body.into(), None).await.0, 200);
    assert_eq!(raw(body.into(), Some("text/plain")).await.0, 200);
}

#[tokio::test]
async fn unknown_model_is_404() {
    let (status, v) = post_json(
        shared(),
        "/v1/chat/completions",
        json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_error(status, &v, 404, Some("model"));
    let (status, v) = post_json(shared(), "/tokenize", json!({"model": "nope", "prompt": "x"})).await;
    assert_error(status, &v, 404, Some("model"));
}

#[tokio::test]
async fn prompt_over_the_context_is_400_with_both_numbers() {
    let long = "word ".repeat(2000);
    let (status, v) = post_json(shared(), "/v1/completions", json!({"model": MODEL, "prompt": long})).await;
    assert_error(status, &v, 400, None);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("512"), "{msg}");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    // max_tokens counts against the context too.
    let (status, v) =
        post_json(shared(), "/v1/completions", json!({"model": MODEL, "prompt": "hi", "max_tokens": 600})).await;
    assert_error(status, &v, 400, None);
    assert!(v["error"]["message"].as_str().unwrap().contains("600"));
}

#[tokio::test]
async fn oversized_body_is_413() {
    let big = "x".repeat(100 * 1024);
    let (status, v) = post_json(shared(), "/v1/completions", json!({"model": MODEL, "prompt": big})).await;
    assert_error(status, &v, 413, None);
}

#[tokio::test]
async fn auth_is_required_on_posts_but_not_on_public_gets() {
    let c = client();
    for key in [None, Some("wrong"), Some("")] {
        let mut req =
            c.post(format!("{}/v1/chat/completions", shared())).json(&json!({"model": MODEL, "messages": []}));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = req.send().await.unwrap();
        assert!(r.headers().contains_key("x-request-id"));
        let status = r.status().as_u16();
        assert_error(status, &r.json().await.unwrap(), 401, None);
    }
    for path in ["/tokenize", "/detokenize", "/v1/completions", "/v1/responses"] {
        assert_eq!(c.post(format!("{}{path}", shared())).send().await.unwrap().status(), 401, "{path}");
    }
    for path in ["/v1/models", "/health", "/version"] {
        let r = c.get(format!("{}{path}", shared())).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let c = client();
    let r = c.get(format!("{}/v1/nothing", shared())).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].is_string());
    let r = c.get(format!("{}/v1/chat/completions", shared())).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].is_string());
}

#[tokio::test]
async fn unsupported_route_options_are_refused() {
    let (status, v) = post_json(shared(), "/v1/completions", json!({"model": MODEL, "prompt": ["a", "b"]})).await;
    assert_error(status, &v, 400, Some("prompt"));
    let (status, v) =
        post_json(shared(), "/v1/completions", json!({"model": MODEL, "prompt": "a", "suffix": "b"})).await;
    assert_error(status, &v, 400, Some("suffix"));
    let (status, v) =
        post_json(shared(), "/v1/responses", json!({"model": MODEL, "input": "a", "previous_response_id": "r"})).await;
    assert_error(status, &v, 400, Some("previous_response_id"));
    let (status, v) =
        post_json(shared(), "/v1/responses", json!({"model": MODEL, "input": [{"type": "function_call_output"}]}))
            .await;
    assert_error(status, &v, 400, Some("input[0].call_id"));
    let (status, v) =
        post_json(shared(), "/v1/responses", json!({"model": MODEL, "input": [{"type": "reasoning"}]})).await;
    assert_error(status, &v, 400, Some("input[0].type"));
    let (status, v) =
        post_json(shared(), "/v1/completions", json!({"model": MODEL, "prompt": "a", "logprobs": 6})).await;
    assert_error(status, &v, 400, Some("logprobs"));
    let (status, v) = post_json(shared(), "/v1/responses", json!({"model": MODEL, "input": "a", "n": 2})).await;
    assert_error(status, &v, 400, Some("n"));
    let tool = json!({"type": "web_search"});
    let (status, v) =
        post_json(shared(), "/v1/responses", json!({"model": MODEL, "input": "a", "tools": [tool]})).await;
    assert_error(status, &v, 400, Some("tools[0].type"));
    let (status, v) = post_json(shared(), "/tokenize", json!({"model": MODEL})).await;
    assert_error(status, &v, 400, Some("prompt"));
}

/// A server with a tiny body limit still reports the limit it applied.
#[tokio::test]
async fn body_limit_is_configurable() {
    let base = start(Options { max_body_bytes: 256, parallel: 1, queue: 0, ..Options::default() });
    let (status, v) = post_json(&base, "/tokenize", json!({"model": MODEL, "prompt": "y".repeat(300)})).await;
    assert_error(status, &v, 413, None);
    assert!(v["error"]["message"].as_str().unwrap().contains("256"));
}
