//! LiteLLM's proxy as a child process, for the side-by-side run.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::{FAKE_UPSTREAM_MODEL, FLEET_MODEL, KEY};

/// LiteLLM's proxy (`pip install 'litellm[proxy]'`), configured for the same fake engine.
pub struct LiteLlm {
    pub url: String,
    child: std::process::Child,
}

impl LiteLlm {
    pub fn start(bin: &std::path::Path, fake: &str, dir: &std::path::Path, workers: u32) -> Result<LiteLlm> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("litellm.yaml");
        std::fs::write(
            &config,
            format!(
                "model_list:\n  - model_name: {FLEET_MODEL}\n    litellm_params:\n      model: openai/{FAKE_UPSTREAM_MODEL}\n      api_base: {fake}/v1\n      api_key: none\ngeneral_settings:\n  master_key: {KEY}\nlitellm_settings:\n  telemetry: false\n"
            ),
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = std::process::Command::new(bin)
            .arg("--config")
            .arg(&config)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--num_workers", &workers.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        Ok(LiteLlm { url: format!("http://127.0.0.1:{port}"), child })
    }

    pub async fn wait_ready(&self, http: &reqwest::Client) -> Result<()> {
        for _ in 0..1200 {
            if let Ok(r) = http.get(format!("{}/health/liveliness", self.url)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("litellm did not start within 120 s")
    }
}

impl Drop for LiteLlm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
