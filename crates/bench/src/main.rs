//! `tm-bench`: starts our server and llama.cpp's `llama-server` on the same GGUF with the
//! same threads and slots, runs the same bounded load against each over loopback, one
//! server at a time, and prints the figures side by side with ratios (> 1: we are better).
//!
//! Suites: `speed` (prompt and decode tokens/s, aggregate tokens/s and TTFT at 4 and 8
//! streams, peak RSS) and `cache` (workloads whose prompts share prefixes, also against
//! our server with its prefix cache off; see `cache.rs`), `routing` (a front server
//! over local nodes, prefix-aware routing vs round robin; see `routing.rs`), and
//! `features` (`n`, constrained decoding, `tool_choice: auto`; see `features.rs`), and
//! `spec` (speculative decoding on input-grounded and open-ended workloads; `spec.rs`).

mod cache;
mod features;
mod load;
mod requests;
mod routing;
mod servers;
mod spec;
mod spec_data;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, ValueEnum};

use servers::{Launch, Server, ServerKind};

#[derive(Parser, Debug, Clone)]
pub struct Args {
    /// Our server binary.
    #[arg(long)]
    pub tensormesh: PathBuf,
    /// The reference llama-server binary (scripts/build-llama-server builds one).
    #[arg(long)]
    pub llama_server: Option<PathBuf>,
    /// GGUF to serve. Default: the pulled qwen2.5-coder-0.5b-instruct.
    #[arg(long)]
    pub model_path: Option<PathBuf>,
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// Engine slots of both servers; must be >= the largest concurrency.
    #[arg(long, default_value_t = 8)]
    pub parallel: u32,
    /// Context per slot in the speed suite (the cache suite uses 2048: its system prompt
    /// is 1,500 tokens).
    #[arg(long, default_value_t = 1024)]
    pub ctx_per_slot: u32,
    /// Requests per client in the concurrency runs.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Tokens generated per request in the decode runs.
    #[arg(long, default_value_t = 64)]
    pub gen_tokens: u32,
    #[arg(long, value_enum, default_value = "all")]
    pub suite: Suite,
    /// System-prompt questions asked with our cache off (each computes the whole prompt;
    /// its mean TTFT does not depend on how many).
    #[arg(long, default_value_t = 10)]
    pub cache_off_questions: usize,
    /// Upstream nodes in the routing suite (threads are split between them).
    #[arg(long, default_value_t = 2)]
    pub nodes: usize,
    /// Servers of the spec suite, comma-separated (default: all): ours-off, ours-ngram,
    /// llama-none, llama-ngram-mod, llama-ngram-simple, llama-ngram-map-k,
    /// llama-ngram-map-k4v, llama-ngram-cache.
    #[arg(long, value_delimiter = ',')]
    pub spec_setups: Vec<String>,
    /// Keep each server's log (stderr) in this directory, as <port>.log.
    #[arg(long)]
    pub server_logs: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    Speed,
    Cache,
    /// A front server over local nodes: prefix-aware routing vs round robin.
    Routing,
    /// `n` > 1, constrained decoding (llguidance vs GBNF vs llama-server), tools auto.
    Features,
    /// Speculative decoding: input-grounded and open-ended workloads, 1 and 4 streams.
    Spec,
    All,
}

/// One figure of one server.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: &'static str,
    pub value: f64,
    pub higher_is_better: bool,
}

impl Row {
    pub fn higher(name: &'static str, value: f64) -> Row {
        Row { name, value, higher_is_better: true }
    }
    pub fn lower(name: &'static str, value: f64) -> Row {
        Row { name, value, higher_is_better: false }
    }
}

fn default_model() -> PathBuf {
    let cache = std::env::var_os("TENSORMESH_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or(home.join(".cache")).join("tensormesh/models")
    });
    cache.join("qwen2.5-coder-0.5b-instruct.gguf")
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let model = args.model_path.clone().unwrap_or_else(default_model);
    anyhow::ensure!(
        model.is_file(),
        "{} is missing: run `tensormesh model pull qwen2.5-coder-0.5b-instruct`",
        model.display()
    );
    println!("model {} | threads {} | slots {}", model.display(), args.threads, args.parallel);
    let reference = args.llama_server.is_some();
    // One server at a time: they would otherwise compete for the same cores.
    if matches!(args.suite, Suite::Speed | Suite::All) {
        let mut results = Vec::new();
        for kind in [ServerKind::Tensormesh { cache: true }, ServerKind::LlamaServer] {
            if kind == ServerKind::LlamaServer && !reference {
                continue;
            }
            let server = Server::start(&Launch::new(kind, &args, &model, args.ctx_per_slot)).await?;
            println!("\n== speed: {} ({}), ctx/slot {}", kind.label(), server.base, args.ctx_per_slot);
            results.push((kind, load::run(&server, args.rounds, args.gen_tokens).await?));
        }
        print_table("speed", &results);
    }
    if matches!(args.suite, Suite::Cache | Suite::All) {
        let mut results = Vec::new();
        for kind in
            [ServerKind::Tensormesh { cache: true }, ServerKind::Tensormesh { cache: false }, ServerKind::LlamaServer]
        {
            if kind == ServerKind::LlamaServer && !reference {
                continue;
            }
            println!("\n== cache: {}, ctx/slot 2048", kind.label());
            let questions =
                if kind == (ServerKind::Tensormesh { cache: false }) { args.cache_off_questions } else { 50 };
            results.push((kind, cache::run(&Launch::new(kind, &args, &model, 2048), questions).await?));
        }
        print_table("cache", &results);
    }
    if matches!(args.suite, Suite::Routing | Suite::All) {
        routing::run(&args, &model, args.nodes).await?;
    }
    if matches!(args.suite, Suite::Features | Suite::All) {
        features::run(&args, &model).await?;
    }
    if matches!(args.suite, Suite::Spec | Suite::All) {
        spec::run(&args, &model).await?;
    }
    Ok(())
}

/// Our figures beside the others', with ratios: vs llama-server, and vs our cache off.
fn print_table(suite: &str, results: &[(ServerKind, Vec<Row>)]) {
    let find = |k: ServerKind| results.iter().find(|(kind, _)| *kind == k).map(|(_, rows)| rows);
    let Some(ours) = find(ServerKind::Tensormesh { cache: true }) else { return };
    let others: Vec<(ServerKind, &Vec<Row>)> = [ServerKind::LlamaServer, ServerKind::Tensormesh { cache: false }]
        .into_iter()
        .filter_map(|k| Some((k, find(k)?)))
        .collect();
    print!("\n{suite:<42} {:>12}", "tensormesh");
    for (k, _) in &others {
        print!(" {:>22} {:>8}", k.label(), "ratio");
    }
    println!();
    for (i, row) in ours.iter().enumerate() {
        print!("{:<42} {:>12.1}", row.name, row.value);
        for (_, rows) in &others {
            let theirs = rows[i].value;
            let ratio = if row.higher_is_better { row.value / theirs } else { theirs / row.value };
            print!(" {theirs:>22.1} {ratio:>7.2}x");
        }
        println!();
    }
    println!("(ratio > 1: tensormesh is better; for TTFT and RSS lower is better, so ratio = theirs / ours)");
}
