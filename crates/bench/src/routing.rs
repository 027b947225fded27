//! The routing suite: a front server (`--upstreams`) over N local nodes, each our server
//! with the embedded engine and its prefix cache, threads split between them. The workload
//! is documents of ~400 tokens, each asked several short questions, in a shuffled order
//! (so that round robin does not land a document on the same node by arithmetic), two
//! requests at a time. Figures: the share of prompt tokens the nodes served from their
//! caches, and mean TTFT, with prefix-aware routing and with round robin.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};

use crate::cache::{prose, tag};
use crate::requests::{client, mean, stream_completion, Stream};
use crate::servers::{Launch, Server, ServerKind, KEY};
use crate::{Args, Row};

const DOCUMENTS: usize = 6;
const QUESTIONS: usize = 4;
const CONCURRENCY: usize = 2;

/// One policy's run over fresh nodes.
async fn run_policy(args: &Args, model: &Path, nodes: usize, routing: &str) -> Result<Vec<Stream>> {
    let mut servers = Vec::new();
    for _ in 0..nodes {
        let mut launch = Launch::new(ServerKind::Tensormesh { cache: true }, args, model, 2048);
        launch.threads = (args.threads / nodes as u32).max(1);
        servers.push(Server::start(&launch).await?);
    }
    let mut fleet = format!("[[model]]\nname = \"bench\"\nrouting = \"{routing}\"\nmax_context = 2048\n");
    for s in &servers {
        fleet.push_str(&format!("[[model.endpoint]]\nurl = \"{}\"\napi_key = \"{KEY}\"\n", s.base));
    }
    let mut front = Launch::new(ServerKind::Tensormesh { cache: true }, args, model, 2048);
    let file = front.data_dir.with_extension("fleet.toml");
    std::fs::write(&file, fleet).context("cannot write the fleet file")?;
    front.fleet_file = Some(file);
    let front = Server::start(&front).await?;

    let documents: Vec<String> =
        (0..DOCUMENTS).map(|_| format!("Document {}. {}", tag(), prose(&tag(), 400))).collect();
    let mut order: Vec<(usize, usize)> = (0..QUESTIONS).flat_map(|q| (0..DOCUMENTS).map(move |d| (d, q))).collect();
    shuffle(&mut order, 0x5eed);
    let queue = Mutex::new(order.into_iter());
    let client = client()?;
    let workers = (0..CONCURRENCY).map(|_| async {
        let mut runs = Vec::new();
        loop {
            let next = queue.lock().ok().and_then(|mut q| q.next());
            let Some((d, q)) = next else { break };
            let prompt =
                format!("{}\nQuestion {q}: what does part {q} say about {}?\nAnswer:", documents[d], prose(&tag(), 8));
            runs.push(stream_completion(&client, &front, &prompt, 8).await?);
        }
        Ok::<_, anyhow::Error>(runs)
    });
    let runs = futures::future::try_join_all(workers).await?.into_iter().flatten().collect();
    front.stop().await?;
    Ok(runs)
}

/// A fixed permutation (xorshift Fisher-Yates), the same for both policies.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

fn hit_rate(runs: &[Stream]) -> f64 {
    let cached: u64 = runs.iter().filter_map(|r| r.cached).sum();
    let prompt: u64 = runs.iter().filter_map(|r| r.prompt_tokens).sum();
    100.0 * cached as f64 / prompt.max(1) as f64
}

/// Prints both policies' figures and their ratio.
pub async fn run(args: &Args, model: &Path, nodes: usize) -> Result<()> {
    let mut results = Vec::new();
    for routing in ["prefix", "round-robin"] {
        println!("\n== routing: {routing}, {nodes} nodes ({} thread(s) each)", (args.threads / nodes as u32).max(1));
        let runs = run_policy(args, model, nodes, routing).await?;
        let ttfts: Vec<f64> = runs.iter().map(Stream::ttft_ms).collect();
        println!("{} requests, hit rate {:.1} %, mean TTFT {:.0} ms", runs.len(), hit_rate(&runs), mean(&ttfts));
        results.push(vec![
            Row::higher("prompt tokens served from cache %", hit_rate(&runs)),
            Row::lower("mean TTFT ms", mean(&ttfts)),
        ]);
    }
    println!("\n{:<42} {:>12} {:>12} {:>8}", format!("routing over {nodes} nodes"), "prefix", "round-robin", "ratio");
    for (ours, theirs) in results[0].iter().zip(&results[1]) {
        let ratio = if ours.higher_is_better { ours.value / theirs.value } else { theirs.value / ours.value };
        println!("{:<42} {:>12.1} {:>12.1} {:>7.2}x", ours.name, ours.value, theirs.value, ratio);
    }
    println!("(ratio > 1: prefix-aware routing is better; for TTFT ratio = round-robin / prefix)");
    Ok(())
}
