//! Test furniture: [`fake_engine::FakeEngine`], a stand-in backend for gateway tests and
//! benchmarks; [`fake_upstream::FakeUpstream`], a fault-injectable OpenAI-compatible engine
//! on loopback for upstream tests; [`proxy::Proxy`], a TCP proxy a test cuts and restores
//! (a database outage); and fresh databases: a SQLite file in a temp dir, and a
//! new database on the PostgreSQL server at `TENSORMESH_TEST_POSTGRES_URL` (default the
//! local one, `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! When no PostgreSQL answers, the Postgres half is skipped with a note on stderr, unless
//! `TENSORMESH_REQUIRE_POSTGRES=1` (set by `scripts/test`, which makes sure one runs); the
//! same for Redis ([`redis`], `TENSORMESH_REQUIRE_REDIS=1`).

#![allow(clippy::expect_used)]

pub mod fake_engine;
pub mod fake_upstream;
pub mod proxy;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor, PgConnection};

/// A database URL for one test, and what it is for messages.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub kind: &'static str,
    pub url: String,
}

/// A new SQLite file (the directory is left for the OS to clean).
pub fn sqlite() -> TestDb {
    let dir: PathBuf = std::env::temp_dir().join(format!("tm-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    TestDb { kind: "sqlite", url: format!("sqlite://{}", dir.join("tensormesh.db").display()) }
}

/// A new, empty PostgreSQL database, or `None` when no server answers (and none is
/// required). Databases from runs over an hour old are dropped on the way.
pub async fn postgres() -> Option<TestDb> {
    let admin_url = std::env::var("TENSORMESH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = match PgConnection::connect(&admin_url).await {
        Ok(c) => c,
        Err(e) if std::env::var("TENSORMESH_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") => {
            panic!("PostgreSQL at {admin_url} is required but does not answer: {e}")
        }
        Err(e) => {
            eprintln!("note: skipping PostgreSQL (no server at {admin_url}: {e})");
            return None;
        }
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let stale: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'tm_test_%'")
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
    for name in stale {
        let created = name.split('_').nth(2).and_then(|t| t.parse::<u64>().ok()).unwrap_or(now);
        if now.saturating_sub(created) > 3600 {
            // Names are ours (digits, letters, underscores), and DROP cannot take a bind.
            let _ = conn.execute(format!("DROP DATABASE IF EXISTS {name}").as_str()).await;
        }
    }
    let name = format!("tm_test_{now}_{}", uuid::Uuid::new_v4().simple());
    conn.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create test database");
    let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(b, _)| b);
    Some(TestDb { kind: "postgres", url: format!("{base}/{name}") })
}

/// Both kinds: SQLite always, PostgreSQL when it answers.
pub async fn all() -> Vec<TestDb> {
    let mut dbs = vec![sqlite()];
    dbs.extend(postgres().await);
    dbs
}

/// The Redis at `TENSORMESH_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`), or `None`
/// when it does not answer (and none is required: `TENSORMESH_REQUIRE_REDIS=1`, set by
/// `scripts/test`).
pub fn redis() -> Option<String> {
    let url = std::env::var("TENSORMESH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let addr = url.trim_start_matches("redis://").split('/').next().unwrap_or_default().to_owned();
    let answers = std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(1)).is_ok());
    match answers {
        true => Some(url),
        false if std::env::var("TENSORMESH_REQUIRE_REDIS").is_ok_and(|v| v == "1") => {
            panic!("Redis at {url} is required but does not answer")
        }
        false => {
            eprintln!("note: skipping Redis (no server at {url})");
            None
        }
    }
}
