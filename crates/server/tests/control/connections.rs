//! Hostile clients at the socket: one that sends its headers a byte at a time, one that
//! keeps a connection open doing nothing, one that never finishes its body, and more
//! connections than the listener takes. Each is cut off by the listener's timers (which
//! `axum::serve` does not have), with short timeouts set for the test.

use std::time::{Duration, Instant};

use tm_server::config::Connections;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{start_with, Engine, Options};

const LIMITS: Connections =
    Connections { header_timeout: Duration::from_secs(1), body_timeout: Duration::from_secs(1), max_open: 4 };

fn start() -> String {
    let db = tm_testkit::sqlite();
    let servers = start_with(&db, Engine::None, Options { connections: LIMITS, ..Options::default() }).detach();
    servers.control.trim_start_matches("http://").to_owned()
}

/// Whether the server has closed `conn`: a read sees the end (or an error) within `wait`.
async fn closed_within(conn: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline.into(), conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_client_sending_headers_a_byte_at_a_time_is_cut_off() {
    let addr = start();
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    conn.write_all(b"GET /auth/cli/login HTTP/1.1\r\nHost: test\r\n").await.unwrap();
    // Up to 10 s of one header byte every 200 ms (a slowloris), unless the server hangs up.
    let mut cut_off = false;
    for byte in b"X-Slow: ".iter().cycle().take(50) {
        if conn.write_all(&[*byte]).await.is_err() || closed_within(&mut conn, Duration::from_millis(200)).await {
            cut_off = true;
            break;
        }
    }
    let lived = started.elapsed();
    eprintln!("a slow-header connection lived {lived:?} (header timeout {:?})", LIMITS.header_timeout);
    assert!(cut_off, "the connection was still open after {lived:?}");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let addr = start();
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"GET /auth/cli/login HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 "), "{}", String::from_utf8_lossy(&buf[..n]));
    // Then nothing: the connection is closed once the header timeout has passed.
    assert!(closed_within(&mut conn, Duration::from_secs(10)).await, "an idle connection stayed open");
}

#[tokio::test]
async fn a_body_that_never_arrives_is_answered_and_closed() {
    let addr = start();
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let head =
        "POST /auth/cli/exchange HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "still waiting for the body after 10 s");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_one_to_close() {
    let addr = start();
    let mut idle = Vec::new();
    for _ in 0..LIMITS.max_open {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Let the listener accept those four before the fifth arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = TcpStream::connect(&addr).await.unwrap();
    fifth.write_all(b"GET /auth/cli/login HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 4096];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), fifth.read(&mut buf)).await.is_err(),
        "a fifth connection was served while four were open"
    );
    // The idle four are closed by the header timeout; then the fifth is served.
    let n = tokio::time::timeout(Duration::from_secs(10), fifth.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 "));
    for mut conn in idle {
        assert!(closed_within(&mut conn, Duration::from_secs(1)).await);
    }
}
