//! Structured outputs with the real Qwen model: every sample of a JSON Schema output, at
//! temperature 1, parses and validates; also through the Responses API and the
//! llama.cpp grammar engine.

use serde_json::{json, Value};

use crate::common::{post_json, shared_qwen, start, Options, QWEN};

fn person() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 24},
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "languages": {"type": "array", "items": {"type": "string", "enum": ["rust", "python", "go"]},
                          "minItems": 1, "maxItems": 3},
            "senior": {"type": "boolean"}
        },
        "required": ["name", "age", "languages", "senior"],
        "additionalProperties": false
    })
}

fn request(n: u32, seed: u32) -> Value {
    json!({
        "model": QWEN,
        "messages": [{"role": "user", "content": "Invent a programmer and describe them as JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": person(), "strict": true}},
        "temperature": 1.0,
        "n": n,
        "seed": seed,
        "max_tokens": 120,
    })
}

/// Samples 4 answers per request from `base` until 20 are seen; each must validate.
async fn twenty_valid_samples(base: &str) {
    let validator = jsonschema::validator_for(&person()).unwrap();
    let mut seen = Vec::new();
    for seed in 0..5 {
        let (status, v) = post_json(base, "/v1/chat/completions", request(4, seed)).await;
        assert_eq!(status, 200, "{v}");
        for choice in v["choices"].as_array().unwrap() {
            assert_eq!(choice["finish_reason"], "stop", "{choice}");
            let text = choice["message"]["content"].as_str().unwrap();
            let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
            assert!(validator.is_valid(&value), "does not validate: {text}");
            seen.push(value);
        }
    }
    assert_eq!(seen.len(), 20);
    seen.dedup();
    assert!(seen.len() > 1, "temperature 1 gave 20 identical answers");
}

#[tokio::test]
async fn twenty_json_schema_samples_at_temperature_one_all_validate() {
    twenty_valid_samples(shared_qwen()).await;
}

#[tokio::test]
async fn the_gbnf_engine_enforces_schemas_too() {
    let base = start(Options { model: QWEN, ctx_size: 1024, grammar_engine: "gbnf", ..Options::default() });
    twenty_valid_samples(&base).await;
}

#[tokio::test]
async fn responses_text_format_json_schema_validates() {
    let body = json!({
        "model": QWEN,
        "input": "Invent a programmer and describe them as JSON.",
        "text": {"format": {"type": "json_schema", "name": "person", "schema": person(), "strict": true}},
        "temperature": 1.0,
        "max_output_tokens": 120,
    });
    let (status, v) = post_json(shared_qwen(), "/v1/responses", body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["text"]["format"]["type"], "json_schema");
    let text = v["output"][0]["content"][0]["text"].as_str().unwrap();
    let value: Value = serde_json::from_str(text).unwrap();
    assert!(jsonschema::validator_for(&person()).unwrap().is_valid(&value), "{text}");
    // A keyword that cannot be enforced is named where the client put it.
    let mut bad = person();
    bad["properties"]["age"]["not"] = json!({"const": 30});
    let body =
        json!({"model": QWEN, "input": "x", "text": {"format": {"type": "json_schema", "name": "p", "schema": bad}}});
    let (status, v) = post_json(shared_qwen(), "/v1/responses", body).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "text.format.schema.properties.age.not");
}

#[tokio::test]
async fn a_constraint_ends_the_output_even_with_ignore_eos() {
    let mut body = request(1, 9);
    body["ignore_eos"] = true.into();
    body["max_tokens"] = 300.into();
    let (status, v) = post_json(shared_qwen(), "/v1/chat/completions", body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() < 300, "{v}");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(jsonschema::validator_for(&person()).unwrap().is_valid(&serde_json::from_str(text).unwrap()), "{text}");
}
