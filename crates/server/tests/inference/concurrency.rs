//! Many clients at once, overload, and clients that leave.

use futures::StreamExt;
use serde_json::{json, Value};

use crate::common::{post, post_json, shared, start, wait_idle, Options, MODEL};

#[tokio::test]
async fn concurrent_streams_all_complete() {
    let tasks: Vec<_> = (0..6)
        .map(|i| async move {
            let body = json!({"model": MODEL, "prompt": format!("Story number {i}:"), "max_tokens": 8, "stream": true, "ignore_eos": true});
            let text = post(shared(), "/v1/completions", body).await.text().await.unwrap();
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        })
        .collect();
    futures::future::join_all(tasks).await;
}

/// One slot and no queue: a second request is refused with 503 + Retry-After while the
/// first runs; when the first client disconnects its slot is freed and the next request
/// is admitted.
#[tokio::test]
async fn overload_503_and_disconnect_frees_the_slot() {
    let base = start(Options { parallel: 1, queue: 0, ..Options::default() });
    let long = json!({"model": MODEL, "prompt": "Once", "max_tokens": 400, "stream": true, "ignore_eos": true});
    let first = post(&base, "/v1/completions", long).await;
    assert_eq!(first.status(), 200);
    let mut body = first.bytes_stream();
    body.next().await.unwrap().unwrap(); // generation is running

    let short = json!({"model": MODEL, "prompt": "Hi", "max_tokens": 2});
    let refused = post(&base, "/v1/completions", short.clone()).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["error"]["code"], "overloaded");

    drop(body); // the client goes away mid-stream
    wait_idle(&base).await;
    let (status, v) = post_json(&base, "/v1/completions", short).await;
    assert_eq!(status, 200, "{v}");
}

/// A non-streaming client that gives up also frees its slot.
#[tokio::test]
async fn abandoned_non_stream_request_is_cancelled() {
    let base = start(Options { parallel: 1, queue: 0, ..Options::default() });
    let long = json!({"model": MODEL, "prompt": "Once", "max_tokens": 400, "ignore_eos": true});
    let request = reqwest::Client::new()
        .post(format!("{base}/v1/completions"))
        .bearer_auth(crate::common::KEY)
        .json(&long)
        .timeout(std::time::Duration::from_millis(300))
        .send();
    assert!(request.await.is_err(), "400 tokens cannot finish in 300 ms");
    wait_idle(&base).await;
    let (status, _) =
        post_json(&base, "/v1/completions", json!({"model": MODEL, "prompt": "Hi", "max_tokens": 1})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn finished_requests_release_their_place() {
    // Sanity of the in_flight gauge itself: a finished request leaves nothing behind.
    let base = start(Options { parallel: 1, queue: 1, ..Options::default() });
    let (status, _) =
        post_json(&base, "/v1/completions", json!({"model": MODEL, "prompt": "Hi", "max_tokens": 2})).await;
    assert_eq!(status, 200);
    wait_idle(&base).await;
}
