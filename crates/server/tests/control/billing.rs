//! The billing routes over real HTTP: what the official `tm billing` / `tm cost` read
//! matches the database to the nano-dollar; admin routes check the role; money-moving
//! POSTs honour `Idempotency-Key`; cached prompt tokens are priced by their own price
//! (docs/contracts.md §G6, L6).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tm_money::{Nanos, Price};
use tm_testkit::fake_engine::{FakeEngine, FAKE_MODEL};

use crate::common::{client, start_servers, start_with, Engine, Options, KEY, MODEL};
use crate::{admin_login, call, create_user, login};

fn nanos(money: &Value) -> i64 {
    let units: i64 = money["units"].as_str().unwrap().parse().unwrap();
    units * 1_000_000_000 + money["nanos"].as_i64().unwrap()
}

fn usd(n: i64) -> Value {
    json!({"currencyCode": "USD", "units": (n / 1_000_000_000).to_string(), "nanos": n % 1_000_000_000})
}

async fn settled(store: &tm_store::Store) {
    for _ in 0..200 {
        if store.ledger().total_held().await.unwrap() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("holds remain");
}

/// L6 and the views: the same long system prompt ten times through the real engine; later
/// requests hit the KV cache, each is charged (prompt - cached) x input + cached x cached
/// price + completion x output exactly, and balance, transactions, spending and usage
/// history all agree with the usage records.
#[tokio::test]
async fn cached_tokens_have_their_price_and_every_view_agrees() {
    for db in tm_testkit::all().await {
        let s = start_servers(&db, true);
        let inference = s.inference.clone().unwrap();
        let admin = admin_login(&s.control).await;
        let (_, list) =
            call(&s.control, &admin.access, Method::GET, "/v1/billing/serverless-pricing?activeOnly=true", None).await;
        let row = list["pricing"].as_array().unwrap().iter().find(|p| p["model"] == MODEL).unwrap().clone();
        let price = Price { input: Nanos(1_000_000_000), cached: Nanos(250_000_000), output: Nanos(2_000_000_000) };
        let put = json!({"pricing": {"id": row["id"], "inputTokenPrice": usd(price.input.get()),
            "cachedTokenPrice": usd(price.cached.get()), "outputTokenPrice": usd(price.output.get()), "name": "Gemma 3 270M"}});
        let (status, _) =
            call(&s.control, &admin.access, Method::PUT, "/v1/admin/billing/serverless-pricing", Some(put)).await;
        assert_eq!(status, 200);

        let system = "You are a meticulous assistant for a small bakery. ".repeat(20);
        let mut cached_reported = Vec::new();
        for i in 0..10 {
            let body = json!({"model": MODEL, "max_tokens": 4, "temperature": 0,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": format!("Question {i}?")}]});
            let r = client()
                .post(format!("{inference}/v1/chat/completions"))
                .bearer_auth(KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            cached_reported.push(v["usage"]["prompt_tokens_details"]["cached_tokens"].as_i64().unwrap());
        }
        assert!(cached_reported[1..].iter().all(|&c| c > 150), "{}: {cached_reported:?}", db.kind);

        let store = tm_store::Store::open(&db.url).await.unwrap();
        settled(&store).await;
        let admin_id = store.users().by_email(crate::common::ADMIN_EMAIL).await.unwrap().unwrap().id;
        let rows = store.usage().records(&admin_id).await.unwrap();
        assert_eq!(rows.len(), 10);
        for r in &rows {
            let exact =
                (r.prompt_tokens - r.cached_tokens) * 1_000 + r.cached_tokens * 250 + r.completion_tokens * 2_000;
            assert_eq!(r.cost_nanos, exact, "{}: {r:?}", db.kind);
            assert_eq!(r.cache_saving_nanos, r.cached_tokens * 750);
        }
        let total: i64 = rows.iter().map(|r| r.cost_nanos).sum();
        let sum = |f: fn(&tm_store::ledger::UsageRow) -> i64| rows.iter().map(f).sum::<i64>();

        let get = |path: &'static str| call(&s.control, &admin.access, Method::GET, path, None);
        let (_, balance) = get("/v1/billing/balance").await;
        assert_eq!(nanos(&balance["balance"]), 100_000_000_000 - total, "{}", db.kind);

        let (_, tx) = get("/v1/billing/transactions").await;
        let txs = tx["transactions"].as_array().unwrap();
        let charge = txs.iter().find(|t| t["type"] == "TRANSACTION_TYPE_CHARGE").unwrap();
        assert_eq!(nanos(&charge["amount"]), total);
        let detail = &charge["details"]["models"][MODEL];
        assert_eq!(detail["name"], "Gemma 3 270M");
        assert_eq!(detail["event_count"], 10);
        assert_eq!(detail["input_tokens"], sum(|r| r.prompt_tokens));
        assert_eq!(detail["output_tokens"], sum(|r| r.completion_tokens));
        assert_eq!(detail["total_amount"], Nanos(total).usd_decimal());
        assert!(txs.iter().any(|t| t["type"] == "TRANSACTION_TYPE_TOP_UP" && nanos(&t["amount"]) == 100_000_000_000));

        let (_, summary) = get("/v1/billing/spending/summary").await;
        for k in ["spend24h", "spend7d", "spend30d"] {
            assert_eq!(nanos(&summary[k]), total, "{k}");
        }
        let (_, history) = get("/v1/billing/spending/history").await;
        let buckets = history["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 1);
        assert_eq!(nanos(&buckets[0]["costSaving"]), sum(|r| r.cached_tokens) * 750);

        let (status, usage) =
            get("/v1/billing/serverless-usage/history?bucket=USAGE_BUCKET_DAY&startTime=2000-01-01T00:00:00Z&endTime=2999-01-01T00:00:00Z").await;
        assert_eq!(status, 200);
        let rows_out = usage["rows"].as_array().unwrap();
        assert_eq!(rows_out.len(), 1);
        assert_eq!(rows_out[0]["modelId"], MODEL);
        assert_eq!(rows_out[0]["cachedTokens"], sum(|r| r.cached_tokens).to_string());
        assert_eq!(rows_out[0]["inputTokens"], sum(|r| r.prompt_tokens).to_string());
        let (status, _) = get("/v1/billing/serverless-usage/history?bucket=HOURLY").await;
        assert_eq!(status, 400);
        store.close().await;
    }
}

/// Funds: a user without balance is refused (402, nothing run or billed) until an admin
/// adds some; `balances:add` with an `Idempotency-Key` credits once however often it is
/// sent; admin routes refuse users; prices are managed by admins and an inactive price
/// takes the model out of service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_prices_and_admin_routes() {
    for db in tm_testkit::all().await {
        let s = start_with(&db, Engine::Given(Arc::new(FakeEngine::new(Duration::ZERO, 16))), Options::default());
        let inference = s.inference.clone().unwrap();
        let admin = admin_login(&s.control).await;
        let dave_id = create_user(&db, "dave@example.com", "dave-password").await;
        let dave = login(&s.control, "dave@example.com", "dave-password").await;
        let (_, key) =
            call(&s.control, &dave.access, Method::POST, "/v1/users/api-keys", Some(json!({"name": "k"}))).await;
        let dave_key = key["apiKey"]["id"].as_str().unwrap().to_owned();
        let chat = |key: String| {
            let url = format!("{inference}/v1/chat/completions");
            async move {
                let body =
                    json!({"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8});
                let r = client().post(url).bearer_auth(key).json(&body).send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        };

        let (status, refused) = chat(dave_key.clone()).await;
        assert_eq!((status, refused["error"]["type"].as_str()), (402, Some("insufficient_quota")), "{refused}");
        let store = tm_store::Store::open(&db.url).await.unwrap();
        assert!(store.usage().records(&dave_id).await.unwrap().is_empty());
        assert_eq!(store.ledger().total_held().await.unwrap(), 0);

        // Users cannot move money or change prices.
        let add = |amount: Value| json!({"targetUserId": dave_id, "amount": amount});
        for (method, path, body) in [
            (Method::POST, "/v1/admin/billing/balances:add", Some(add(json!(5.0)))),
            (Method::POST, "/v1/admin/billing/balances", Some(json!({"targetUserIds": [dave_id]}))),
            (Method::POST, "/v1/admin/billing/spending/summary", Some(json!({"targetUserIds": [dave_id]}))),
            (Method::GET, "/v1/admin/billing/serverless-pricing", None),
            (Method::POST, "/v1/admin/billing/serverless-pricing", Some(json!({"pricing": {"model": "x"}}))),
            (Method::DELETE, "/v1/admin/billing/serverless-pricing?id=x", None),
        ] {
            assert_eq!(call(&s.control, &dave.access, method, path, body).await.0, 403, "{}: {path}", db.kind);
        }
        let (status, _) = call(
            &s.control,
            &dave.access,
            Method::GET,
            &format!("/v1/billing/balance?userId={}", "0".repeat(36)),
            None,
        )
        .await;
        assert_eq!(status, 403, "a user reads only their own balance");

        // Idempotent top-ups: sequential and concurrent retries credit once; the same key
        // with another amount is a conflict.
        let post_add = |amount: Value, key: &'static str| {
            let (url, token, body) =
                (format!("{}/v1/admin/billing/balances:add", s.control), admin.access.clone(), add(amount));
            async move {
                let r = client()
                    .post(url)
                    .bearer_auth(token)
                    .header("Idempotency-Key", key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        };
        assert_eq!(post_add(json!(5.0), "k1").await, (200, json!({"balance": usd(5_000_000_000)})));
        assert_eq!(post_add(json!(5.0), "k1").await, (200, json!({"balance": usd(5_000_000_000)})));
        let money = json!({"currencyCode": "USD", "units": "1", "nanos": 0});
        let (a, b) = tokio::join!(post_add(money.clone(), "k2"), post_add(money, "k2"));
        assert_eq!((a.0, b.0), (200, 200));
        assert_eq!(post_add(json!(2), "k2").await.0, 409);
        assert_eq!(post_add(json!(-1), "k3").await.0, 400);
        assert_eq!(post_add(json!("lots"), "k4").await.0, 400);
        let (_, balances) = call(
            &s.control,
            &admin.access,
            Method::POST,
            "/v1/admin/billing/balances",
            Some(json!({"targetUserIds": [dave_id]})),
        )
        .await;
        assert_eq!(balances["balances"][0]["balance"], usd(6_000_000_000), "{}", db.kind);

        // Paging through top-ups.
        let (_, page1) = call(&s.control, &dave.access, Method::GET, "/v1/billing/transactions?pageSize=1", None).await;
        assert_eq!((page1["transactions"].as_array().unwrap().len(), page1["nextPageToken"].as_str()), (1, Some("1")));
        let (_, page2) =
            call(&s.control, &dave.access, Method::GET, "/v1/billing/transactions?pageSize=1&pageToken=1", None).await;
        assert_eq!((page2["transactions"].as_array().unwrap().len(), page2["nextPageToken"].as_str()), (1, Some("")));
        // Tokens this server never issued are refused, the largest one included (its offset
        // plus the page size overflowed: a panic in debug builds, a wrap in release).
        for token in ["x", "3", "18446744073709551615"] {
            let (status, body) = call(
                &s.control,
                &dave.access,
                Method::GET,
                &format!("/v1/billing/transactions?pageToken={token}"),
                None,
            )
            .await;
            assert_eq!(status, 400, "{token}: {body}");
            assert!(body["message"].as_str().unwrap().contains("pageToken"), "{body}");
        }

        // Now funded, the request runs and is billed once.
        assert_eq!(chat(dave_key.clone()).await.0, 200);
        settled(&store).await;
        assert_eq!(store.usage().records(&dave_id).await.unwrap().len(), 1);

        // Prices: validated, managed by admins; an inactive price takes the model out of service.
        let admin_call = |method: Method, path: &'static str, body: Option<Value>| {
            call(&s.control, &admin.access, method, path, body)
        };
        let (status, bad) = admin_call(
            Method::POST,
            "/v1/admin/billing/serverless-pricing",
            Some(json!({"pricing": {"model": "m", "inputTokenPrice": -1, "outputTokenPrice": 1}})),
        )
        .await;
        assert_eq!(status, 400);
        assert!(bad["message"].as_str().unwrap().contains("inputTokenPrice"), "{bad}");
        assert_eq!(
            admin_call(Method::POST, "/v1/admin/billing/serverless-pricing", Some(json!({"pricing": {"name": "x"}})))
                .await
                .0,
            400
        );
        let (_, listed) = admin_call(Method::GET, "/v1/admin/billing/serverless-pricing", None).await;
        let id = listed["pricing"][0]["id"].as_str().unwrap().to_owned();
        let (status, off) = admin_call(
            Method::PUT,
            "/v1/admin/billing/serverless-pricing",
            Some(json!({"pricing": {"id": id, "isActive": false}})),
        )
        .await;
        assert_eq!((status, off["pricing"]["isActive"].as_bool()), (200, Some(false)));
        let (status, gone) = chat(dave_key.clone()).await;
        assert_eq!((status, gone["error"]["code"].as_str()), (404, Some("model_not_found")), "{gone}");
        let models: Value = client().get(format!("{inference}/v1/models")).send().await.unwrap().json().await.unwrap();
        assert!(models["data"].as_array().unwrap().is_empty(), "{models}");

        let (status, created) = admin_call(Method::POST, "/v1/admin/billing/serverless-pricing",
            Some(json!({"pricing": {"model": FAKE_MODEL, "name": "Echo", "inputTokenPrice": 0.5, "outputTokenPrice": {"units": "1"}}}))).await;
        assert_eq!(status, 200, "{created}");
        assert_eq!(created["pricing"]["cachedTokenPrice"], usd(0));
        assert_eq!(chat(dave_key.clone()).await.0, 200);
        let (_, user_view) =
            call(&s.control, &dave.access, Method::GET, "/v1/billing/serverless-pricing?activeOnly=true", None).await;
        assert_eq!(user_view["pricing"].as_array().unwrap().len(), 1);
        for _ in 0..2 {
            let (status, body) = call(
                &s.control,
                &admin.access,
                Method::DELETE,
                &format!("/v1/admin/billing/serverless-pricing?id={id}"),
                None,
            )
            .await;
            assert_eq!((status, body), (200, json!({"empty": {}})));
        }
        store.close().await;
    }
}

/// Money a killed server left held is voided (its requests died with it, unbilled), so the
/// balance is available again: by the next process, a heartbeat timeout after it started
/// (then any replica that might be alive had the time to beat); a replica still beating
/// keeps what it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_left_by_a_dead_process_are_voided_a_timeout_after_start() {
    for db in tm_testkit::all().await {
        let dave_id = create_user(&db, "dave@example.com", "dave-password").await;
        let store = tm_store::Store::open(&db.url).await.unwrap();
        let control =
            tm_control::Control::new(store.clone(), Arc::new(tm_control::clock::SystemClock), Default::default());
        control.billing().grant(&dave_id, 1_000, "test").await.unwrap();
        let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        store.instances().register("expired", now() - 3_600_000).await.unwrap();
        store.instances().register("alive", now()).await.unwrap();
        assert!(store.ledger().hold("unregistered", &dave_id, 500).await.unwrap());
        assert!(store.ledger().hold("expired", &dave_id, 300).await.unwrap());
        assert!(store.ledger().hold("alive", &dave_id, 150).await.unwrap());
        assert_eq!(store.ledger().account(&dave_id).await.unwrap().available_nanos(), 50);

        let options = Options { heartbeat_timeout: Duration::from_secs(1), ..Options::default() };
        let _s = start_with(&db, Engine::Given(Arc::new(FakeEngine::new(Duration::ZERO, 4))), options);
        let started = std::time::Instant::now();
        let alive = async {
            loop {
                store.instances().beat("alive", now()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let voided = async {
            while store.ledger().account(&dave_id).await.unwrap().held_nanos != 150 {
                assert!(started.elapsed() < Duration::from_secs(10), "{}: the dead holds stay", db.kind);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::select! {
            () = alive => unreachable!(),
            () = voided => {}
        }
        eprintln!("{}: dead holds voided {:?} after the start", db.kind, started.elapsed());
        let account = store.ledger().account(&dave_id).await.unwrap();
        assert_eq!((account.balance_nanos, account.held_nanos), (1_000, 150), "{}", db.kind);
        assert_eq!(store.ledger().held_by("alive", &dave_id).await.unwrap(), 150, "{}", db.kind);
        store.close().await;
    }
}
