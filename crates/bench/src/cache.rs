//! The KV-cache suite: workloads whose prompts share prefixes, as real traffic does.
//! Every workload starts its text with a fresh id, so that no workload is helped by what
//! an earlier one left in a server's cache.
//!
//! - burst: 4 requests with ~470-token prompts arriving at once (distinct prompts, and
//!   prompts sharing a ~400-token prefix); mean TTFT.
//! - multi-turn chat: 10 conversations x 6 turns (~20-token questions, 128-token
//!   answers), asked round-robin, each turn's prompt holding the whole history; mean TTFT.
//! - shared system prompt: a ~1,500-token system prompt and 50 short questions; mean TTFT.
//! - restart: TTFT of the first request after a restart, on a prompt whose prefix was
//!   cached before it (ours: restored from the disk tier), next to a cold first request.

use anyhow::Result;

use crate::requests::{chatml, client, mean, stream_completion, Stream};
use crate::servers::{Launch, Server};
use crate::Row;

pub(crate) fn tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// About `tokens` Qwen tokens of plain prose, different for every `seed`.
pub(crate) fn prose(seed: &str, tokens: usize) -> String {
    const WORDS: &[&str] = &[
        "river", "market", "engine", "harbor", "lantern", "orchard", "signal", "granite", "meadow", "compass",
        "ledger", "canvas", "thunder", "velvet", "quarry", "summit", "anchor", "beacon", "cobalt", "delta",
    ];
    let mut h: u64 = seed.bytes().fold(1469598103934665603, |h, b| (h ^ u64::from(b)).wrapping_mul(1099511628211));
    let mut out = String::new();
    // ~1.3 tokens per word on average with the punctuation.
    for i in 0..tokens * 3 / 4 {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
        out.push_str(WORDS[(h % WORDS.len() as u64) as usize]);
        out.push_str(if i % 12 == 11 { ". " } else { " " });
    }
    out
}

async fn burst(server: &Server, shared: bool) -> Result<Vec<Stream>> {
    let client = client()?;
    let prefix = format!("Document {}. {}", tag(), prose(&tag(), 400));
    let prompts: Vec<String> = (0..4)
        .map(|i| {
            let own = format!("Question {} about part {i}: {}", tag(), prose(&tag(), 70));
            if shared {
                format!("{prefix}\n{own}")
            } else {
                format!("Document {}. {}\n{own}", tag(), prose(&tag(), 400))
            }
        })
        .collect();
    let runs = prompts.iter().map(|p| stream_completion(&client, server, p, 16));
    futures::future::try_join_all(runs).await
}

/// Tokens of each answer in the multi-turn workload (user turns are ~20 tokens).
const ANSWER_TOKENS: u32 = 128;

async fn multi_turn(server: &Server, conversations: usize, turns: usize) -> Result<Vec<Stream>> {
    let client = client()?;
    let system = format!("You are a helpful assistant (session {}). Keep answers short.", tag());
    let mut histories: Vec<Vec<(String, Option<String>)>> = vec![Vec::new(); conversations];
    let mut runs = Vec::new();
    for turn in 0..turns {
        for (c, history) in histories.iter_mut().enumerate() {
            history.push((format!("Conversation {c}, turn {turn}: {}", prose(&tag(), 12)), None));
            let s = stream_completion(&client, server, &chatml(&system, history), ANSWER_TOKENS).await?;
            if let Some(last) = history.last_mut() {
                last.1 = Some(s.text.clone());
            }
            runs.push(s);
        }
    }
    Ok(runs)
}

async fn system_prompt(server: &Server, system: &str, questions: usize) -> Result<Vec<Stream>> {
    let client = client()?;
    let mut runs = Vec::new();
    for q in 0..questions {
        let turn = vec![(format!("Question {q}: what does part {q} say?"), None)];
        runs.push(stream_completion(&client, server, &chatml(system, &turn), 8).await?);
    }
    Ok(runs)
}

fn long_system_prompt() -> String {
    format!("You answer questions about this manual (edition {}).\n{}", tag(), prose(&tag(), 1500))
}

fn mean_ttft(runs: &[Stream]) -> f64 {
    mean(&runs.iter().map(Stream::ttft_ms).collect::<Vec<_>>())
}

fn hit_rate(runs: &[Stream]) -> Option<f64> {
    let (cached, prompt) =
        runs.iter().try_fold((0u64, 0u64), |(c, p), r| Some((c + r.cached?, p + r.prompt_tokens?)))?;
    Some(cached as f64 / prompt.max(1) as f64)
}

/// The suite on one server kind. `questions` is how many of the 50 system-prompt
/// questions to ask (the cache-off baseline asks fewer: each costs the whole prompt).
pub async fn run(launch: &Launch<'_>, questions: usize) -> Result<Vec<Row>> {
    let server = Server::start(launch).await?;
    let client = client()?;
    stream_completion(&client, &server, &crate::load::unique_prompt(5), 8).await?; // warm-up
    let mut rows = Vec::new();
    for shared in [false, true] {
        let runs = burst(&server, shared).await?;
        let ttfts: Vec<f64> = runs.iter().map(Stream::ttft_ms).collect();
        println!("burst of 4 (shared prefix: {shared}): TTFT ms {ttfts:.0?}");
        let name = if shared { "burst 4x470, shared 400: mean TTFT ms" } else { "burst 4x470, distinct: mean TTFT ms" };
        rows.push(Row::lower(name, mean(&ttfts)));
    }
    let runs = multi_turn(&server, 10, 6).await?;
    println!(
        "multi-turn 10x6: mean TTFT {:.0} ms, turns 2-6 {:.0} ms, cache hit rate {:?}",
        mean_ttft(&runs),
        mean_ttft(&runs[10..]),
        hit_rate(&runs)
    );
    rows.push(Row::lower("multi-turn 10x6: mean TTFT ms", mean_ttft(&runs)));
    let runs = system_prompt(&server, &long_system_prompt(), questions).await?;
    println!(
        "system prompt x{questions}: mean TTFT {:.0} ms (first {:.0} ms), cache hit rate {:?}",
        mean_ttft(&runs),
        runs[0].ttft_ms(),
        hit_rate(&runs)
    );
    rows.push(Row::lower("1500-token system prompt: mean TTFT ms", mean_ttft(&runs)));
    rows.extend(restart(launch, server).await?);
    Ok(rows)
}

/// A cached ~1,500-token system prompt, then a restart: TTFT of the first request after
/// it (a new question on that system prompt), and of a cold first request.
async fn restart(launch: &Launch<'_>, server: Server) -> Result<Vec<Row>> {
    let client = client()?;
    let system = long_system_prompt();
    let ask = |q: &str| chatml(&system, &[(q.to_owned(), None)]);
    stream_completion(&client, &server, &ask("What is this manual about?"), 8).await?;
    server.stop().await?;
    let server = Server::start(launch).await?;
    let after = stream_completion(&client, &server, &ask("Who wrote this manual?"), 8).await?;
    let cold = stream_completion(&client, &server, &long_system_prompt(), 8).await?;
    println!(
        "restart: first request {:.0} ms (cached {:?} of {:?} tokens), cold {:.0} ms",
        after.ttft_ms(),
        after.cached,
        after.prompt_tokens,
        cold.ttft_ms()
    );
    Ok(vec![
        Row::lower("after restart: TTFT ms", after.ttft_ms()),
        Row::lower("cold first request: TTFT ms", cold.ttft_ms()),
    ])
}
