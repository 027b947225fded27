//! `tm-bench`: starts our server and llama.cpp's `llama-server` on the same GGUF with the
//! same threads and slots, runs the same bounded load against each over loopback, and
//! prints the figures side by side with ratios (> 1 means we are better).
//!
//! Figures: prompt tokens/s (one unique ~500-token prompt at a time), decode tokens/s of
//! one stream, aggregate decode tokens/s and TTFT p50/p99 at 4 and 8 concurrent streams,
//! and each server's peak RSS.

mod load;
mod servers;

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

use load::Figures;
use servers::{Server, ServerKind};

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
    /// Context per slot.
    #[arg(long, default_value_t = 1024)]
    pub ctx_per_slot: u32,
    /// Requests per client in the concurrency runs.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Tokens generated per request in the decode runs.
    #[arg(long, default_value_t = 64)]
    pub gen_tokens: u32,
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
    println!(
        "model {} | threads {} | slots {} | ctx/slot {}",
        model.display(),
        args.threads,
        args.parallel,
        args.ctx_per_slot
    );

    let mut results: Vec<(&str, Figures)> = Vec::new();
    let mut kinds = vec![ServerKind::Tensormesh];
    if args.llama_server.is_some() {
        kinds.push(ServerKind::LlamaServer);
    }
    // One server at a time: they would otherwise compete for the same 2 cores.
    for kind in kinds {
        let server = Server::start(kind, &args, &model).await?;
        println!("\n== {} ({})", kind.label(), server.base);
        let figures = load::run_all(&server, &args).await?;
        results.push((kind.label(), figures));
        drop(server);
    }
    print_table(&results);
    Ok(())
}

fn print_table(results: &[(&str, Figures)]) {
    let ours = &results[0].1;
    let reference = results.get(1).map(|r| &r.1);
    println!("\n{:<34} {:>12} {:>14} {:>8}", "figure", "tensormesh", "llama-server", "ratio");
    for (i, (name, value, higher_is_better)) in ours.rows().into_iter().enumerate() {
        match reference.map(|r| r.rows()[i].1) {
            Some(theirs) => {
                let ratio = if higher_is_better { value / theirs } else { theirs / value };
                println!("{name:<34} {value:>12.1} {theirs:>14.1} {ratio:>7.2}x");
            }
            None => println!("{name:<34} {value:>12.1}"),
        }
    }
    println!("(ratio > 1: tensormesh is better; for TTFT and RSS lower is better)");
}
