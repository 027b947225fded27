//! Starting and stopping the servers under test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::Args;

/// The inference key of both servers (ours: the first admin's, `TENSORMESH_ADMIN_API_KEY`).
pub const KEY: &str = "tm-bench-key-0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Ours, with the prefix cache on or off.
    Tensormesh {
        cache: bool,
    },
    LlamaServer,
}

impl ServerKind {
    pub fn label(self) -> &'static str {
        match self {
            ServerKind::Tensormesh { cache: true } => "tensormesh",
            ServerKind::Tensormesh { cache: false } => "tensormesh, cache off",
            ServerKind::LlamaServer => "llama-server",
        }
    }
}

/// How to start a server: the same GGUF, threads and slots for every kind.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub kind: ServerKind,
    pub args: &'a Args,
    pub model: &'a Path,
    pub ctx_per_slot: u32,
    /// Ours keeps its database and KV snapshot files here (kept across a restart).
    pub data_dir: PathBuf,
    /// llama.cpp threads (default: `--threads`).
    pub threads: u32,
    /// Ours only: serve the fleets of this file instead of the embedded model.
    pub fleet_file: Option<PathBuf>,
    /// Ours only: `--grammar-engine` (llguidance or gbnf).
    pub grammar_engine: Option<&'static str>,
    /// Ours: `--speculative` (ngram or off); llama-server: `--spec-type`.
    pub speculative: Option<&'static str>,
}

impl Launch<'_> {
    pub fn new<'a>(kind: ServerKind, args: &'a Args, model: &'a Path, ctx_per_slot: u32) -> Launch<'a> {
        let data_dir = std::env::temp_dir().join(format!("tm-bench-{}", uuid::Uuid::new_v4()));
        Launch {
            kind,
            args,
            model,
            ctx_per_slot,
            data_dir,
            threads: args.threads,
            fleet_file: None,
            grammar_engine: None,
            speculative: None,
        }
    }
}

pub struct Server {
    pub base: String,
    /// The name to put in `model`.
    pub model: String,
    child: Child,
}

impl Server {
    pub async fn start(launch: &Launch<'_>) -> Result<Server> {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let args = launch.args;
        let (t, np, ctx) = (launch.threads.to_string(), args.parallel.to_string(), launch.ctx_per_slot);
        let mut cmd = match launch.kind {
            ServerKind::Tensormesh { cache } => {
                let mut c = Command::new(&args.tensormesh);
                c.args(["serve", "--inference-addr", &addr, "--control-addr", "127.0.0.1:0"])
                    .args(["--threads", &t, "--parallel", &np, "--ctx-size", &ctx.to_string(), "--queue", "64"])
                    .args(["--prefix-cache", if cache { "true" } else { "false" }])
                    // One key is every client here, as with llama-server, which has no such cap.
                    .args(["--user-concurrency", "0"])
                    .arg("--data-dir")
                    .arg(&launch.data_dir)
                    .env("TENSORMESH_ADMIN_API_KEY", KEY)
                    .env_remove("TENSORMESH_DATABASE_URL");
                if let Some(engine) = launch.grammar_engine {
                    c.args(["--grammar-engine", engine]);
                }
                if let Some(spec) = launch.speculative {
                    c.args(["--speculative", spec]);
                }
                match &launch.fleet_file {
                    Some(file) => c.arg("--upstreams").arg(file),
                    None => c.arg("--model").arg(format!("bench={}", launch.model.display())),
                };
                c
            }
            ServerKind::LlamaServer => {
                let Some(bin) = &args.llama_server else { bail!("no llama-server binary") };
                let mut c = Command::new(bin);
                // Its prompt cache (per slot, and --cache-ram's host copies) is on by default.
                c.args(["--host", "127.0.0.1", "--port", &port.to_string(), "-t", &t, "-tb", &t, "-np", &np])
                    .args(["-c", &(ctx * args.parallel).to_string(), "-b", "512", "-ub", "512", "--api-key", KEY])
                    .arg("-m")
                    .arg(launch.model)
                    // Its chat templates as ours: the GGUF's own Jinja (tools need it).
                    .args(["-a", "bench", "--jinja"]);
                if let Some(spec) = launch.speculative {
                    c.args(["--spec-type", spec]);
                }
                c
            }
        };
        // `--server-logs DIR`: each server's log in DIR/<port>.log (e.g. with
        // RUST_LOG=info,tm_scheduler=debug, ours logs each step).
        let log = match &launch.args.server_logs {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let file = dir.join(format!("{port}.log"));
                Stdio::from(std::fs::File::create(&file).with_context(|| format!("{}", file.display()))?)
            }
            None => Stdio::null(),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", launch.kind.label()))?;
        let server = Server { base: format!("http://{addr}"), model: "bench".into(), child };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&self) -> Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/health", self.base)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("{} did not become healthy in 120 s", self.base)
    }

    /// Peak resident set size in MB (VmHWM).
    pub fn peak_rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// Stops the server as an operator would (SIGTERM) and waits for it to exit.
    pub async fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("the server did not exit within 60 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
