//! The features suite: what the OpenAI features agents use cost.
//!
//! - `n` = 4 against `n` = 1 on a fresh 1,000-token prompt (wall time; the prompt is
//!   computed once and shared, so four choices should cost far less than four requests);
//! - constrained decoding: decode tokens/s of a long JSON Schema output against the same
//!   prompt unconstrained, with llguidance and with llama.cpp's GBNF (our
//!   `--grammar-engine gbnf`), and llama-server's own `json_schema` beside them;
//! - `tool_choice: auto` against no tools, on an answer in text (the lazy tool grammar and
//!   the call parser run on every token; the tool declarations are in both prompts).
//!
//! Runs alternate and report medians: this machine's decode speed varies by ±10 %.

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::load::FILLER;
use crate::requests::{client, median, stream};
use crate::servers::{Launch, Server, ServerKind};
use crate::Args;

/// Runs of each measurement (alternating between the things compared).
const RUNS: usize = 3;

fn schema() -> Value {
    let person = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "city": {"type": "string", "maxLength": 24},
            "languages": {"type": "array", "items": {"type": "string", "enum": ["rust", "python", "go", "c"]},
                          "minItems": 1, "maxItems": 3}
        },
        "required": ["name", "age", "city", "languages"],
        "additionalProperties": false
    });
    json!({"type": "object", "properties": {"people": {"type": "array", "items": person, "minItems": 8, "maxItems": 8}},
           "required": ["people"], "additionalProperties": false})
}

const PEOPLE: &str =
    "List eight programmers as JSON: {\"people\": [{\"name\", \"age\", \"city\", \"languages\"}, ...]}.";

fn chat(server: &Server, content: &str, extra: Value) -> Value {
    let mut body = json!({"model": server.model, "messages": [{"role": "user", "content": content}],
                          "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
    if let (Some(b), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(extra.clone());
    }
    body
}

/// Decode tokens/s of the JSON Schema answer and of the same prompt unconstrained (as
/// many tokens, end of text ignored), alternating.
async fn constrained(server: &Server, with_unconstrained: bool) -> Result<(f64, Option<f64>, u64)> {
    let client = client()?;
    let format = json!({"type": "json_schema", "json_schema": {"name": "people", "schema": schema(), "strict": true}});
    let (mut on, mut off, mut tokens) = (Vec::new(), Vec::new(), 0);
    for _ in 0..RUNS {
        let s = stream(
            &client,
            server,
            "/v1/chat/completions",
            chat(server, PEOPLE, json!({"response_format": format, "max_tokens": 600})),
        )
        .await?;
        let text = s.text.trim();
        let parsed: Value = serde_json::from_str(text).with_context(|| format!("not JSON: {text}"))?;
        ensure!(parsed["people"].as_array().map(Vec::len) == Some(8), "not eight people: {text}");
        tokens = s.tokens;
        on.push(s.decode_tps());
        if with_unconstrained {
            let free = chat(server, PEOPLE, json!({"max_tokens": s.tokens, "ignore_eos": true}));
            off.push(stream(&client, server, "/v1/chat/completions", free).await?.decode_tps());
        }
    }
    Ok((median(&mut on), (!off.is_empty()).then(|| median(&mut off)), tokens))
}

/// A system message holding what the template writes for the declared tools, so that the
/// prompt without tools is the same size as the one with them.
fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

fn tools_as_text() -> String {
    format!(
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\nYou may call one or more \
         functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> \
         XML tags:\n<tools>\n{}\n</tools>",
        tools()[0]
    )
}

const ESSAY: &str = "Write a detailed essay about mutexes, semaphores and condition variables.";

/// Decode tokens/s of a text answer with `tool_choice: auto`, and without tools.
async fn auto_tools(server: &Server) -> Result<(f64, f64)> {
    let client = client()?;
    let (mut auto, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let with = chat(server, ESSAY, json!({"tools": tools(), "tool_choice": "auto", "max_tokens": 160}));
        let s = stream(&client, server, "/v1/chat/completions", with).await?;
        ensure!(s.tokens > 40, "the answer was {} tokens: {}", s.tokens, s.text);
        auto.push(s.decode_tps());
        let mut without = chat(server, ESSAY, json!({"max_tokens": s.tokens, "ignore_eos": true}));
        without["messages"] =
            json!([{"role": "system", "content": tools_as_text()}, {"role": "user", "content": ESSAY}]);
        plain.push(stream(&client, server, "/v1/chat/completions", without).await?.decode_tps());
    }
    Ok((median(&mut auto), median(&mut plain)))
}

/// Wall seconds of one request for `n` choices of 64 tokens after a fresh 1,000-token
/// prompt.
async fn choices(server: &Server, n: u32) -> Result<f64> {
    let client = client()?;
    let prompt = format!("// run {}\n{}", uuid::Uuid::new_v4().simple(), FILLER.repeat(41));
    let body = json!({"model": server.model, "prompt": prompt, "n": n, "max_tokens": 64, "ignore_eos": true,
                      "temperature": 1.0, "seed": 1, "stream": false});
    let started = Instant::now();
    let r = client
        .post(format!("{}/v1/completions", server.base))
        .bearer_auth(crate::servers::KEY)
        .json(&body)
        .send()
        .await?;
    ensure!(r.status().is_success(), "{}: {}", r.status(), r.text().await?);
    let v: Value = r.json().await?;
    ensure!(v["choices"].as_array().map(Vec::len) == Some(n as usize), "{v}");
    let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    ensure!(prompt_tokens > 950, "the prompt is {prompt_tokens} tokens");
    Ok(started.elapsed().as_secs_f64())
}

pub async fn run(args: &Args, model: &std::path::Path) -> Result<()> {
    let ctx = 2048;
    let ours = Server::start(&Launch::new(ServerKind::Tensormesh { cache: true }, args, model, ctx)).await?;
    println!("\n== features: tensormesh ({})", ours.base);
    // Warm-up.
    let _ = stream(&client()?, &ours, "/v1/chat/completions", chat(&ours, "Hi", json!({"max_tokens": 4}))).await?;
    let (mut n1, mut n4) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        n1.push(choices(&ours, 1).await?);
        n4.push(choices(&ours, 4).await?);
    }
    let (n1, n4) = (median(&mut n1), median(&mut n4));
    println!("n=1 {n1:.2} s, n=4 {n4:.2} s ({:.2}x)", n4 / n1);
    let (llg, free, tokens) = constrained(&ours, true).await?;
    let free = free.unwrap_or(f64::NAN);
    println!("json_schema ({tokens} tokens): llguidance {llg:.1} tok/s, unconstrained {free:.1} tok/s");
    let (auto, plain) = auto_tools(&ours).await?;
    println!("text answer: tool_choice auto {auto:.1} tok/s, no tools {plain:.1} tok/s");
    ours.stop().await?;

    let mut launch = Launch::new(ServerKind::Tensormesh { cache: true }, args, model, ctx);
    launch.grammar_engine = Some("gbnf");
    let gbnf_server = Server::start(&launch).await?;
    println!("\n== features: tensormesh --grammar-engine gbnf ({})", gbnf_server.base);
    let (gbnf, _, _) = constrained(&gbnf_server, false).await?;
    println!("json_schema: gbnf {gbnf:.1} tok/s");
    gbnf_server.stop().await?;

    let reference = match args.llama_server {
        Some(_) => {
            let server = Server::start(&Launch::new(ServerKind::LlamaServer, args, model, ctx)).await?;
            println!("\n== features: llama-server ({})", server.base);
            let (constrained_tps, free_tps, _) = constrained(&server, true).await?;
            println!(
                "json_schema: {constrained_tps:.1} tok/s, unconstrained {:.1} tok/s",
                free_tps.unwrap_or(f64::NAN)
            );
            Some((constrained_tps, free_tps.unwrap_or(f64::NAN)))
        }
        None => None,
    };

    println!("\n{:<58} {:>10} {:>10} {:>9}", "features (tensormesh)", "value", "baseline", "ratio");
    let row = |name: &str, value: f64, baseline: f64, ratio: f64| {
        println!("{name:<58} {value:>10.2} {baseline:>10.2} {ratio:>8.2}x");
    };
    row("n=4 wall s vs n=1 (1,000-token prompt, 64 tokens each)", n4, n1, n4 / n1);
    row("json_schema decode tok/s, llguidance vs unconstrained", llg, free, llg / free);
    row("json_schema decode tok/s, llama.cpp GBNF vs unconstrained", gbnf, free, gbnf / free);
    row("text decode tok/s, tool_choice auto vs no tools", auto, plain, auto / plain);
    if let Some((theirs, theirs_free)) = reference {
        row("llama-server json_schema decode tok/s vs its unconstrained", theirs, theirs_free, theirs / theirs_free);
        row("json_schema decode tok/s, ours (llguidance) vs llama-server", llg, theirs, llg / theirs);
    }
    println!("(n: ratio = n=4 / n=1 wall time, lower is better; decode: ratio = value / baseline, higher is better)");
    Ok(())
}
