//! Test servers: the real router and engine with the small real model (gemma 3 270M),
//! on 127.0.0.1:0, talked to over HTTP.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use tm_server::config::{ModelsDirArg, ServeArgs};
use tm_server::{models, serve};

pub const MODEL: &str = "gemma-3-270m";
pub const KEY: &str = "tm-test-key";

pub fn models_dir() -> PathBuf {
    let dir = ModelsDirArg { path: std::env::var_os("TENSORMESH_MODELS_DIR").map(PathBuf::from) }.resolve();
    let path = models::model_path(&dir, MODEL);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo run -p tm-server -- model pull {MODEL}` first",
        path.display()
    );
    dir
}

pub struct Options {
    pub parallel: usize,
    pub queue: usize,
    pub ctx_size: usize,
    pub max_body_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { parallel: 4, queue: 8, ctx_size: 512, max_body_bytes: 64 * 1024 }
    }
}

pub fn serve_args(o: &Options) -> ServeArgs {
    ServeArgs {
        inference_addr: "127.0.0.1:0".parse().unwrap(),
        control_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: std::env::temp_dir(),
        models_dir: ModelsDirArg { path: Some(models_dir()) },
        models: vec![MODEL.into()],
        threads: Some(2),
        parallel: o.parallel,
        queue: o.queue,
        ctx_size: o.ctx_size,
        api_keys: vec![KEY.into()],
        max_body_bytes: o.max_body_bytes,
        shutdown_timeout: 5,
    }
}

/// Starts a server on its own thread and runtime, so that it outlives any one test's
/// runtime. Returns its base URL.
pub fn start(options: Options) -> String {
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let args = serve_args(&options);
            let app = serve::build_inference(&args, &args.api_keys).await.unwrap();
            let listener = tokio::net::TcpListener::bind(args.inference_addr).await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            serve::run(listener, app, std::future::pending(), Duration::from_secs(1)).await.unwrap();
        });
    });
    format!("http://{}", rx.recv_timeout(Duration::from_secs(120)).expect("server did not start"))
}

/// One server shared by the tests of a binary that need no special settings.
pub fn shared() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| start(Options::default()))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

pub async fn post(base: &str, path: &str, body: serde_json::Value) -> reqwest::Response {
    client().post(format!("{base}{path}")).bearer_auth(KEY).json(&body).send().await.unwrap()
}

pub async fn post_json(base: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = post(base, path, body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Reads an SSE body into its `data:` payloads, in order (`[DONE]` included).
pub async fn sse_data(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_owned))
        .collect()
}

/// Waits (bounded) until the server reports no request in flight.
pub async fn wait_idle(base: &str) {
    for _ in 0..200 {
        let h: serde_json::Value = client().get(format!("{base}/health")).send().await.unwrap().json().await.unwrap();
        if h["in_flight"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("requests still in flight after 5 s");
}
