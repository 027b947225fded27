//! The spec suite: speculative decoding on the workloads it is for, and on one it is not.
//!
//! Input-grounded: rewrite given code with one rename, answer by quoting a supplied
//! document, and a conversation that asks for an earlier answer again with a change; and
//! open-ended: write a new story. Each server is warmed up with each workload's first
//! instance, twice; then it gets each workload's three other instances one at a time (1
//! stream: decode tokens over decode time, the three together), then all four instances
//! at once (4 streams: aggregate decode tokens/s). The 1-stream answers are the first of
//! their kind for the server; the 4-stream run asks again what it answered before, so
//! there what a server remembers across requests counts too (our n-gram table,
//! llama-server's `ngram-mod` and `ngram-cache`).
//!
//! Servers, one at a time: ours with `--speculative off` and `ngram`, llama-server with
//! `--spec-type none` (its default) and each of its draftless kinds (`ngram-mod`,
//! `ngram-simple`, `ngram-map-k`, `ngram-map-k4v`, `ngram-cache`) at their defaults;
//! `--spec-setups` picks some. Greedy decoding; acceptance rates beside the speeds.

use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::requests::{client, for_each_event};
use crate::servers::{Launch, Server, ServerKind, KEY};
use crate::spec_data::{CODE, CONVERSATIONS, DOCUMENTS, STORIES};
use crate::Args;

#[derive(Debug, Clone, Copy)]
enum Workload {
    Rewrite,
    Quote,
    Revisit,
    Story,
}

const WORKLOADS: [Workload; 4] = [Workload::Rewrite, Workload::Quote, Workload::Revisit, Workload::Story];

impl Workload {
    fn label(self) -> &'static str {
        match self {
            Workload::Rewrite => "rewrite code with a rename",
            Workload::Quote => "quote a supplied document",
            Workload::Revisit => "revisit an earlier answer",
            Workload::Story => "write a new story (open-ended)",
        }
    }

    /// Instance `i`'s messages and token limit.
    fn request(self, i: usize) -> (Value, u32) {
        match self {
            Workload::Rewrite => {
                let (code, rename) = CODE[i];
                let ask = format!("Rewrite the following code, renaming {rename} everywhere. Output only the full code.\n\n```\n{code}```");
                (json!([{"role": "user", "content": ask}]), 800)
            }
            Workload::Quote => {
                let (doc, what) = DOCUMENTS[i];
                let ask = format!("{doc}\n\nQuote, word for word, {what}. Output only the quoted text.");
                (json!([{"role": "user", "content": ask}]), 300)
            }
            Workload::Revisit => {
                let (question, answer, follow_up) = CONVERSATIONS[i];
                let messages = json!([
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                    {"role": "user", "content": follow_up},
                ]);
                (messages, 500)
            }
            Workload::Story => (json!([{"role": "user", "content": STORIES[i]}]), 300),
        }
    }
}

/// A server configuration of the suite.
#[derive(Debug, Clone, Copy)]
struct Setup {
    /// What `--spec-setups` calls it.
    name: &'static str,
    label: &'static str,
    kind: ServerKind,
    /// Ours: `--speculative`; llama-server: `--spec-type`.
    spec: &'static str,
}

const OURS: ServerKind = ServerKind::Tensormesh { cache: true };
const LLAMA: ServerKind = ServerKind::LlamaServer;

/// Every setup, in the order they run: llama-server's draftless kinds at their defaults.
const SETUPS: [Setup; 8] = [
    Setup { name: "ours-off", label: "tensormesh, speculative off", kind: OURS, spec: "off" },
    Setup { name: "ours-ngram", label: "tensormesh, speculative ngram", kind: OURS, spec: "ngram" },
    Setup { name: "llama-none", label: "llama-server (default)", kind: LLAMA, spec: "none" },
    Setup { name: "llama-ngram-mod", label: "llama-server ngram-mod", kind: LLAMA, spec: "ngram-mod" },
    Setup { name: "llama-ngram-simple", label: "llama-server ngram-simple", kind: LLAMA, spec: "ngram-simple" },
    Setup { name: "llama-ngram-map-k", label: "llama-server ngram-map-k", kind: LLAMA, spec: "ngram-map-k" },
    Setup { name: "llama-ngram-map-k4v", label: "llama-server ngram-map-k4v", kind: LLAMA, spec: "ngram-map-k4v" },
    Setup { name: "llama-ngram-cache", label: "llama-server ngram-cache", kind: LLAMA, spec: "ngram-cache" },
];

/// The setups `--spec-setups` names (all when it names none).
fn chosen(names: &[String]) -> Result<Vec<Setup>> {
    if names.is_empty() {
        return Ok(SETUPS.to_vec());
    }
    names
        .iter()
        .map(|n| {
            SETUPS.iter().find(|s| s.name == n).copied().with_context(|| {
                let known: Vec<&str> = SETUPS.iter().map(|s| s.name).collect();
                format!("--spec-setups: unknown setup {n:?} (known: {})", known.join(", "))
            })
        })
        .collect()
}

/// One streamed chat answer, timed.
struct Answer {
    tokens: u64,
    first: Instant,
    last: Instant,
    /// llama-server's own count of drafted and accepted tokens, when it reports them.
    drafts: Option<(u64, u64)>,
}

async fn chat(http: &reqwest::Client, server: &Server, messages: &Value, max_tokens: u32) -> Result<Answer> {
    let body = json!({"model": server.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
                      "stream": true, "stream_options": {"include_usage": true}});
    let r = http.post(format!("{}/v1/chat/completions", server.base)).bearer_auth(KEY).json(&body).send().await?;
    anyhow::ensure!(r.status().is_success(), "{}: {}", r.status(), r.text().await?);
    let (mut first, mut last, mut tokens, mut drafts) = (None, Instant::now(), None, None);
    for_each_event(r, |v| {
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            tokens = Some(n);
        }
        if let (Some(n), Some(a)) = (v["timings"]["draft_n"].as_u64(), v["timings"]["draft_n_accepted"].as_u64()) {
            drafts = Some((n, a));
        }
        if v["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty()) {
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
        }
    })
    .await?;
    Ok(Answer { tokens: tokens.context("no usage")?, first: first.context("no text")?, last, drafts })
}

/// Our drafted and accepted tokens so far, from `/metrics`.
async fn our_drafts(http: &reqwest::Client, server: &Server) -> Option<(u64, u64)> {
    let text = http.get(format!("{}/metrics", server.base)).send().await.ok()?.text().await.ok()?;
    let counter = |name: &str| {
        text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
    };
    Some((
        counter("tensormesh_speculative_drafted_tokens_total")?,
        counter("tensormesh_speculative_accepted_tokens_total")?,
    ))
}

/// A workload's figures on one server.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    one_stream: f64,
    four_streams: f64,
    /// Accepted / drafted, when known.
    acceptance: Option<f64>,
}

async fn measure(server: &Server) -> Result<Vec<Figures>> {
    let http = client()?;
    // Warm-up: each workload's first instance, twice (the second time a server can draft
    // it from memory: what it learns of its own speeds then is what a busy server knows).
    for _ in 0..2 {
        for w in WORKLOADS {
            let (messages, max) = w.request(0);
            chat(&http, server, &messages, max).await?;
        }
    }
    let mut out = Vec::new();
    for w in WORKLOADS {
        let before = our_drafts(&http, server).await;
        let (mut tokens, mut seconds, mut theirs) = (0u64, 0.0, (0, 0));
        for i in 1..4 {
            let (messages, max) = w.request(i);
            let a = chat(&http, server, &messages, max).await?;
            tokens += a.tokens.saturating_sub(1);
            seconds += (a.last - a.first).as_secs_f64();
            if let Some((n, acc)) = a.drafts {
                theirs = (theirs.0 + n, theirs.1 + acc);
            }
        }
        // Over the three answers together: a short answer's rate alone says little.
        let one_stream = tokens as f64 / seconds;
        let acceptance = match (before, our_drafts(&http, server).await) {
            (Some((d0, a0)), Some((d1, a1))) if d1 > d0 => Some((a1 - a0) as f64 / (d1 - d0) as f64),
            _ if theirs.0 > 0 => Some(theirs.1 as f64 / theirs.0 as f64),
            _ => None,
        };
        let answers = futures::future::try_join_all((0..4).map(|i| {
            let (http, (messages, max)) = (http.clone(), w.request(i));
            async move { chat(&http, server, &messages, max).await }
        }))
        .await?;
        let tokens: u64 = answers.iter().map(|a| a.tokens.saturating_sub(1)).sum();
        let span = answers.iter().map(|a| a.last).max().zip(answers.iter().map(|a| a.first).min());
        let four_streams = span.map_or(0.0, |(end, start)| tokens as f64 / (end - start).as_secs_f64());
        let pct = acceptance.map_or("-".into(), |a| format!("{:.0} %", a * 100.0));
        println!(
            "{:<32} 1 stream {one_stream:6.1} tok/s, 4 streams {four_streams:6.1} tok/s, acceptance {pct}",
            w.label()
        );
        out.push(Figures { one_stream, four_streams, acceptance });
    }
    Ok(out)
}

pub async fn run(args: &Args, model: &std::path::Path) -> Result<()> {
    let mut results: Vec<(Setup, Vec<Figures>)> = Vec::new();
    for setup in chosen(&args.spec_setups)? {
        if setup.kind == LLAMA && args.llama_server.is_none() {
            continue;
        }
        let mut launch = Launch::new(setup.kind, args, model, 4096);
        launch.speculative = Some(setup.spec);
        let server = Server::start(&launch).await?;
        println!("\n== spec: {} ({})", setup.label, server.base);
        results.push((setup, measure(&server).await?));
        server.stop().await?;
    }
    print_table(&results);
    Ok(())
}

fn print_table(results: &[(Setup, Vec<Figures>)]) {
    let find = |label: &str| results.iter().find(|(s, _)| s.label == label).map(|(_, f)| f);
    let Some(ours) = find("tensormesh, speculative ngram") else { return };
    let off = find("tensormesh, speculative off");
    let default = find("llama-server (default)");
    // llama-server's best draftless kind, per workload and stream count.
    let spec_kinds: Vec<&Vec<Figures>> =
        results.iter().filter(|(s, _)| s.kind == LLAMA && s.spec != "none").map(|(_, f)| f).collect();
    println!(
        "\n{:<32} {:>8} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "spec (decode tok/s)", "streams", "ours", "vs off", "vs llama", "vs best", "accept"
    );
    for (w, workload) in WORKLOADS.iter().enumerate() {
        for streams in [1, 4] {
            let pick = |f: &Figures| if streams == 1 { f.one_stream } else { f.four_streams };
            let value = pick(&ours[w]);
            let ratio = |other: Option<f64>| other.map_or("-".to_owned(), |o| format!("{:.2}x", value / o));
            let best =
                spec_kinds.iter().map(|f| pick(&f[w])).fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
            let accept = ours[w].acceptance.map_or("-".to_owned(), |a| format!("{:.0}%", a * 100.0));
            println!(
                "{:<32} {streams:>8} {value:>9.1} {:>9} {:>9} {:>9} {accept:>7}",
                workload.label(),
                ratio(off.map(|f| pick(&f[w]))),
                ratio(default.map(|f| pick(&f[w]))),
                ratio(best),
            );
        }
    }
    for (setup, figures) in results {
        let accept: Vec<String> =
            figures.iter().map(|f| f.acceptance.map_or("-".into(), |a| format!("{:.0}%", a * 100.0))).collect();
        let one: Vec<String> = figures.iter().map(|f| format!("{:.1}", f.one_stream)).collect();
        let four: Vec<String> = figures.iter().map(|f| format!("{:.1}", f.four_streams)).collect();
        println!(
            "{:<30} 1 stream [{}] 4 streams [{}] acceptance [{}]",
            setup.label,
            one.join(", "),
            four.join(", "),
            accept.join(", ")
        );
    }
    println!("(vs off: our speculation on / off; vs llama: / llama-server default; vs best: / llama-server's best draftless kind)");
}
