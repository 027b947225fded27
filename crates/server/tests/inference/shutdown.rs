//! The real binary: flags, the startup banner, and SIGTERM draining in-flight streams.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::common::{models_dir, post, ADMIN_PASSWORD, KEY, MODEL};

#[tokio::test]
async fn sigterm_finishes_in_flight_streams_then_exits_zero() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tensormesh"))
        .args(["serve", "--inference-addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0"])
        .args(["--model", MODEL, "--parallel", "2", "--ctx-size", "256"])
        .arg("--models-dir")
        .arg(models_dir())
        .arg("--data-dir")
        .arg(std::env::temp_dir().join(format!("tm-shutdown-{}", uuid::Uuid::new_v4())))
        .env("TENSORMESH_ADMIN_API_KEY", KEY)
        .env("TENSORMESH_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env_remove("TENSORMESH_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = stdout.lines();
    let base = loop {
        let line = lines.next().expect("server exited before printing its address").unwrap();
        if let Some(url) = line.strip_prefix("inference: ") {
            break url.to_owned();
        }
    };
    let control = lines.next().unwrap().unwrap();
    assert!(control.starts_with("control: http://127.0.0.1:"), "{control}");
    // The banner says where the admin's secrets came from, and never prints them.
    let banner: Vec<String> = lines.by_ref().take(5).map(Result::unwrap).collect();
    assert!(banner[0].starts_with("first start: created admin"), "{banner:?}");
    assert!(banner.iter().all(|l| !l.contains(KEY) && !l.contains(ADMIN_PASSWORD)), "{banner:?}");
    assert!(banner[3].starts_with("try: curl ") && banner[3].contains(&base), "{banner:?}");
    assert!(banner[4].starts_with("log in: tm --controlplane-base http://127.0.0.1:"), "{banner:?}");

    let body = json!({"model": MODEL, "prompt": "Once", "max_tokens": 40, "stream": true, "ignore_eos": true});
    let stream = post(&base, "/v1/completions", body).await;
    assert_eq!(stream.status(), 200);
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());

    // The stream that was running completes normally.
    let text = stream.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // The process exits 0 and no longer accepts connections.
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    let refused = reqwest::Client::new().get(format!("{base}/health")).timeout(Duration::from_secs(2)).send().await;
    assert!(refused.is_err());
}

#[test]
fn missing_model_names_the_pull_command() {
    let empty = std::env::temp_dir().join(format!("tm-empty-models-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_tensormesh"))
        .args(["serve", "--inference-addr", "127.0.0.1:0", "--model", "qwen2.5-coder-0.5b-instruct"])
        .arg("--models-dir")
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tensormesh model pull qwen2.5-coder-0.5b-instruct"), "{err}");
}
