//! The real binary: flags, the startup banner, and SIGTERM draining in-flight streams.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::common::{models_dir, post, ADMIN_PASSWORD, KEY, MODEL};

/// `tensormesh serve` on ephemeral ports with the test admin, its stdout read up to the
/// inference address: the process, the rest of its stdout, and that address.
/// Where the server's stderr (its log) goes.
fn log_path(data_dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(data_dir).unwrap();
    data_dir.join("stderr.log")
}

fn spawn_serve<S: AsRef<OsStr>>(data_dir: &Path, args: &[S]) -> (Child, Lines<BufReader<ChildStdout>>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tensormesh"))
        .args(["serve", "--inference-addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0"])
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("TENSORMESH_ADMIN_API_KEY", KEY)
        .env("TENSORMESH_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env_remove("TENSORMESH_DATABASE_URL")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log_path(data_dir)).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("server exited before printing its address").unwrap();
        if let Some(url) = line.strip_prefix("inference: ") {
            break url.to_owned();
        }
    };
    (child, lines, base)
}

#[tokio::test]
async fn sigterm_finishes_in_flight_streams_then_exits_zero() {
    let data_dir = std::env::temp_dir().join(format!("tm-shutdown-{}", uuid::Uuid::new_v4()));
    let models = models_dir();
    let args: [&OsStr; 8] = [
        "--model".as_ref(),
        MODEL.as_ref(),
        "--parallel".as_ref(),
        "2".as_ref(),
        "--ctx-size".as_ref(),
        "256".as_ref(),
        "--models-dir".as_ref(),
        models.as_os_str(),
    ];
    let (mut child, mut lines, base) = spawn_serve(&data_dir, &args);
    let control = lines.next().unwrap().unwrap();
    assert!(control.starts_with("control: http://127.0.0.1:"), "{control}");
    // The banner says where the admin's secrets came from, and never prints them.
    let banner: Vec<String> = lines.by_ref().take(5).map(Result::unwrap).collect();
    assert!(banner[0].starts_with("first start: created admin"), "{banner:?}");
    assert!(banner.iter().all(|l| !l.contains(KEY) && !l.contains(ADMIN_PASSWORD)), "{banner:?}");
    assert!(banner[3].starts_with("try: curl ") && banner[3].contains(&base), "{banner:?}");
    // The `tm` built beside the server by its path, when there is one.
    let tm = Path::new(env!("CARGO_BIN_EXE_tensormesh")).with_file_name("tm");
    let tm = if tm.is_file() { tm.display().to_string() } else { "tm".to_string() };
    let log_in = format!("log in: {tm} --controlplane-base http://127.0.0.1:");
    assert!(banner[4].starts_with(&log_in), "{banner:?}");

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
    // The log, written to a file, is plain text: no terminal colour codes.
    let log = std::fs::read_to_string(log_path(&data_dir)).unwrap();
    assert!(log.contains("shutting down") && !log.contains('\x1b'), "{log}");
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

/// The drain with streams from an upstream engine that outlast it: at the deadline the
/// server closes them, closes their upstream requests, bills what they received, and
/// exits 0 with no money held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_drain_deadline_bills_upstream_streams_and_exits_zero() {
    use tm_testkit::fake_upstream::FakeUpstream;
    let fake = FakeUpstream::start(10_000).await;
    fake.set_word_delay(Duration::from_millis(10));
    let (data_dir, fleet) = fleet_of(&fake.url);
    let (mut child, _lines, base) = spawn_serve(
        &data_dir,
        &[OsStr::new("--shutdown-timeout"), OsStr::new("1"), OsStr::new("--upstreams"), fleet.as_os_str()],
    );
    let body = json!({"model": "fleet", "messages": [{"role": "user", "content": "a b c"}], "stream": true});
    let streams =
        [post(&base, "/v1/chat/completions", body.clone()).await, post(&base, "/v1/chat/completions", body).await];
    assert!(streams.iter().all(|s| s.status() == 200));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    for s in streams {
        // Cut at the deadline: never a normal end.
        let text = s.text().await.unwrap_or_default();
        assert!(!text.contains("[DONE]"));
    }
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(fake.streams_abandoned(), 2, "the upstream requests were closed");
    let url = format!("sqlite://{}", data_dir.join("tensormesh.db").display());
    let store = tm_store::Store::open(&url).await.unwrap();
    assert_eq!(store.ledger().total_held().await.unwrap(), 0);
    let admin = store.users().by_email("admin@localhost").await.unwrap().unwrap();
    let rows = store.usage().records(&admin.id).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in rows {
        assert_eq!((r.prompt_tokens, r.status.as_str()), (3, "cancelled"));
        assert!(r.completion_tokens > 10, "{r:?}");
    }
}

/// A first start with nothing configured generates the admin's password and API key: they
/// go to a file in the data dir that only the server's user can read, and not to stdout
/// (a pipe here, as under a log collector); the key in the file works.
#[tokio::test]
async fn generated_secrets_go_to_a_private_file_not_to_stdout() {
    let data_dir = std::env::temp_dir().join(format!("tm-secrets-{}", uuid::Uuid::new_v4()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tensormesh"))
        .args(["serve", "--inference-addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0", "--model", MODEL])
        .arg("--models-dir")
        .arg(models_dir())
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("TENSORMESH_ADMIN_API_KEY")
        .env_remove("TENSORMESH_ADMIN_PASSWORD")
        .env_remove("TENSORMESH_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log_path(&data_dir)).unwrap())
        .spawn()
        .unwrap();
    let mut stdout = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let last = line.starts_with("log in:");
        stdout.push(line);
        if last {
            break;
        }
    }
    let file = data_dir.join("first-admin-secrets.txt");
    let secrets = std::fs::read_to_string(&file).unwrap();
    let value =
        |name: &str| secrets.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned)).unwrap();
    let (password, key) = (value("password"), value("api_key"));
    assert!(key.starts_with("tm_sk_") && password.len() >= 16, "{secrets}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(stdout.iter().all(|l| !l.contains(&key) && !l.contains(&password)), "{stdout:?}");
    assert!(stdout.iter().any(|l| l.contains(&file.display().to_string())), "{stdout:?}");

    let base = stdout.iter().find_map(|l| l.strip_prefix("inference: ")).unwrap().to_owned();
    let r = crate::common::client()
        .post(format!("{base}/tokenize"))
        .bearer_auth(&key)
        .json(&json!({"model": MODEL, "prompt": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// `--drain-delay` (issue 20 item 7): after SIGTERM, `GET /ready` answers 503 `draining`
/// while requests are still accepted and served, so that a load balancer stops sending
/// before the listeners close; then the process drains and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_makes_ready_say_draining_while_still_serving() {
    use tm_testkit::fake_upstream::FakeUpstream;
    let fake = FakeUpstream::start(10_000).await;
    let (data_dir, fleet) = fleet_of(&fake.url);
    let (mut child, _lines, base) = spawn_serve(
        &data_dir,
        &[OsStr::new("--drain-delay"), OsStr::new("3"), OsStr::new("--upstreams"), fleet.as_os_str()],
    );
    let ready = || async {
        let r = crate::common::client().get(format!("{base}/ready")).send().await.unwrap();
        (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap()["status"].clone())
    };
    assert_eq!(ready().await, (200, json!("ready")));
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ready().await, (503, json!("draining")));
    let body = json!({"model": "fleet", "messages": [{"role": "user", "content": "a b c"}], "max_tokens": 3});
    let answer = post(&base, "/v1/chat/completions", body).await;
    assert_eq!(answer.status(), 200, "still serving while draining");
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}

/// A fresh data dir holding a fleet file that serves model `fleet` from the engine at `url`.
fn fleet_of(url: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    use tm_testkit::fake_upstream::FAKE_UPSTREAM_MODEL;
    let data_dir = std::env::temp_dir().join(format!("tm-shutdown-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data_dir).unwrap();
    let fleet = data_dir.join("fleet.toml");
    let text = format!(
        "[[model]]\nname = \"fleet\"\nupstream_model = \"{FAKE_UPSTREAM_MODEL}\"\n[[model.endpoint]]\nurl = \"{url}\"\n"
    );
    std::fs::write(&fleet, text).unwrap();
    (data_dir, fleet)
}

/// A server process that is killed when the test ends, however it ends (a failed assertion
/// must not leave replicas running).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `serve` flags for gemma (a 256-token context) on the database at `url`.
fn gemma_on(models: &Path, url: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["--model", MODEL, "--ctx-size", "256", "--models-dir"].map(OsString::from).into();
    args.extend([models.as_os_str().to_owned(), "--database-url".into(), url.into()]);
    args
}

/// Issue 20: two replicas of the real binary on one PostgreSQL database. One is killed
/// with SIGKILL while it streams: the other goes on serving, and voids what the dead one
/// held (the stream's worst-case cost) within the heartbeat timeout.
#[tokio::test]
async fn sigkill_of_a_replica_releases_its_holds_within_the_heartbeat_timeout() {
    let Some(db) = tm_testkit::postgres().await else { return };
    let models = models_dir();
    let dir = |name: &str| std::env::temp_dir().join(format!("tm-replica-{name}-{}", uuid::Uuid::new_v4()));
    let mut args = gemma_on(&models, &db.url);
    args.extend(["--heartbeat-timeout", "2", "--key-rpm", "0"].map(OsString::from));
    // One after the other: the first creates the admin on the empty database.
    // Their stdout kept open: a closed pipe would end them at the next banner line.
    let (doomed, _doomed_out, doomed_base) = spawn_serve(&dir("doomed"), &args);
    let mut doomed = Reaped(doomed);
    let (survivor, _survivor_out, survivor_base) = spawn_serve(&dir("survivor"), &args);
    let _survivor = Reaped(survivor);
    let store = tm_store::Store::open(&db.url).await.unwrap();

    let body = json!({"model": MODEL, "prompt": "Once", "max_tokens": 200, "stream": true, "ignore_eos": true});
    let mut stream = post(&doomed_base, "/v1/completions", body.clone()).await;
    assert_eq!(stream.status(), 200);
    assert!(stream.chunk().await.unwrap().is_some(), "the stream should have started");
    let held = store.ledger().total_held().await.unwrap();
    assert!(held > 0, "the running stream's cost should be held");
    doomed.0.kill().unwrap();
    let killed = std::time::Instant::now();
    let _ = doomed.0.wait();

    let served =
        post(&survivor_base, "/v1/completions", json!({"model": MODEL, "prompt": "Hi", "max_tokens": 4})).await;
    assert_eq!(served.status(), 200, "the surviving replica serves on");
    let released = loop {
        if store.ledger().total_held().await.unwrap() == 0 {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(8), "the dead replica's holds were not voided");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Expected: the 2 s timeout plus up to one sweep period (0.4 s); the bound above is
    // loose, so that a slow machine does not fail it.
    eprintln!("held {held} nano-USD for the killed stream; all released {released:?} after the SIGKILL");
    store.close().await;
}

/// Issue 20 item 2: a server whose database is away serves requests paid from money it
/// already leased, and their bills go to its settlement journal before the responses end.
/// Killed with SIGKILL while the database is still away, it loses none of them: the next
/// start on the same data dir, the database back, writes them first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bills_journaled_while_the_database_is_away_survive_sigkill() {
    let Some(db) = tm_testkit::postgres().await else { return };
    let proxy = tm_testkit::proxy::Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let proxied = db.url.replace("127.0.0.1:5432", &proxy.addr().to_string());
    let models = models_dir();
    let data_dir = std::env::temp_dir().join(format!("tm-journal-{}", uuid::Uuid::new_v4()));
    let args = gemma_on(&models, &proxied);
    let (server, _out, base) = spawn_serve(&data_dir, &args);
    let mut server = Reaped(server);
    let ask = json!({"model": MODEL, "prompt": "Hello", "max_tokens": 4});
    // Money leased while the database is there.
    assert_eq!(post(&base, "/v1/completions", ask.clone()).await.status(), 200);

    proxy.cut();
    let answers = futures::future::join_all((0..4).map(|_| post(&base, "/v1/completions", ask.clone()))).await;
    let mut ids = Vec::new();
    for answer in answers {
        assert_eq!(answer.status(), 200, "served from the lease");
        ids.push(answer.headers()["x-request-id"].to_str().unwrap().to_owned());
        answer.text().await.unwrap();
    }
    let journal = data_dir.join(tm_gateway::journal::JOURNAL_FILE);
    let journaled = std::fs::read_to_string(&journal).unwrap_or_default();
    assert!(ids.iter().all(|id| journaled.contains(id.as_str())), "every answered request is journaled: {journaled}");
    server.0.kill().unwrap();
    let _ = server.0.wait();

    proxy.restore();
    let store = tm_store::Store::open(&db.url).await.unwrap();
    let admin = store.users().by_email("admin@localhost").await.unwrap().unwrap().id;
    let recorded = |ids: Vec<String>| {
        let store = store.clone();
        let admin = admin.clone();
        async move {
            let rows = store.usage().records(&admin).await.unwrap();
            ids.iter().filter(|id| rows.iter().any(|r| &r.request_id == *id)).count()
        }
    };
    assert_eq!(recorded(ids.clone()).await, 0, "nothing was written while the database was away");
    let (restarted, _out, _) = spawn_serve(&data_dir, &args);
    let _restarted = Reaped(restarted);
    assert_eq!(recorded(ids.clone()).await, 4, "the restart wrote the journal first");
    assert!(!journal.exists(), "and removed it");
    store.close().await;
}
