//! The ledger against a reference model (L1), under a reservation race (L2) and under
//! duplicate settlement (L3), on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::ledger::{Account, Credit, CreditOutcome, Settled, UsageRow};
use crate::tests::{stores, user};
use crate::Store;

fn credit(user_id: &str, amount: i64, key: Option<String>, fingerprint: &str) -> Credit {
    Credit {
        id: uuid(),
        user_id: user_id.into(),
        amount_nanos: amount,
        kind: "top_up".into(),
        description: String::new(),
        idempotency_key: key,
        fingerprint: fingerprint.into(),
        created_at: 1,
    }
}

fn usage(request_id: &str, user_id: &str, cost: i64) -> UsageRow {
    UsageRow {
        request_id: request_id.into(),
        user_id: user_id.into(),
        api_key_id: "k".into(),
        model: "m".into(),
        prompt_tokens: 10,
        cached_tokens: 0,
        completion_tokens: 5,
        cost_nanos: cost,
        cache_saving_nanos: 0,
        status: "stop".into(),
        started_at: 1,
        finished_at: 2,
    }
}

fn uuid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

async fn new_user(store: &Store) -> String {
    let id = uuid();
    store.users().insert(&user(&id, &format!("{id}@x.io"), 1)).await.unwrap();
    id
}

#[derive(Debug, Clone)]
enum Op {
    /// Several settlements in one batch (a request may appear twice).
    SettleBatch(Vec<(usize, i64)>),
    Credit {
        user: usize,
        amount: i64,
        key: Option<u8>,
        fingerprint: u8,
    },
    Reserve {
        user: usize,
        amount: i64,
    },
    /// Reserves the user's whole available balance plus `extra` (the boundary).
    ReserveAvailable {
        user: usize,
        extra: i64,
    },
    Settle {
        request: usize,
        cost: i64,
    },
    Release {
        request: usize,
    },
    VoidAll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 1..1_000i64, proptest::option::of(0..4u8), 0..2u8)
            .prop_map(|(user, amount, key, fingerprint)| Op::Credit { user, amount, key, fingerprint }),
        4 => (0..3usize, 0..600i64).prop_map(|(user, amount)| Op::Reserve { user, amount }),
        2 => (0..3usize, 0..2i64).prop_map(|(user, extra)| Op::ReserveAvailable { user, extra }),
        4 => (0..40usize, 0..700i64).prop_map(|(request, cost)| Op::Settle { request, cost }),
        2 => proptest::collection::vec((0..40usize, 0..700i64), 1..6).prop_map(Op::SettleBatch),
        1 => (0..40usize).prop_map(|request| Op::Release { request }),
        1 => Just(Op::VoidAll),
    ]
}

/// What the ledger should hold, computed in plain Rust.
#[derive(Default)]
struct Model {
    accounts: HashMap<usize, Account>,
    /// Request index -> (user, held amount), for open holds.
    holds: HashMap<usize, (usize, i64)>,
    /// Idempotency key -> (fingerprint, balance after).
    keys: HashMap<u8, (u8, i64)>,
    credits: HashMap<usize, i64>,
    charges: HashMap<usize, i64>,
}

/// Runs one op sequence against the model and the store (fresh users), checking the two
/// agree and the invariants hold after every step.
async fn run_case(store: &Store, ops: &[Op]) -> Result<(), TestCaseError> {
    let users = [new_user(store).await, new_user(store).await, new_user(store).await];
    let tag = uuid(); // idempotency keys and request ids are unique per case
    let mut model = Model::default();
    let mut requests: Vec<String> = Vec::new();
    let ledger = store.ledger();
    for op in ops {
        let op = match op.clone() {
            Op::ReserveAvailable { user, extra } => {
                let available = model.accounts.get(&user).copied().unwrap_or_default().available_nanos();
                Op::Reserve { user, amount: available + extra }
            }
            other => other,
        };
        match op {
            Op::Credit { user, amount, key, fingerprint } => {
                let got = ledger
                    .credit(&credit(&users[user], amount, key.map(|k| format!("{tag}-{k}")), &fingerprint.to_string()))
                    .await
                    .unwrap();
                let want = match key.and_then(|k| model.keys.get(&k).copied()) {
                    Some((fp, after)) if fp == fingerprint => CreditOutcome::Replayed { balance_after_nanos: after },
                    Some(_) => CreditOutcome::KeyReused,
                    None => {
                        let account = model.accounts.entry(user).or_default();
                        account.balance_nanos += amount;
                        *model.credits.entry(user).or_default() += amount;
                        if let Some(k) = key {
                            model.keys.insert(k, (fingerprint, account.balance_nanos));
                        }
                        CreditOutcome::Applied { balance_after_nanos: account.balance_nanos }
                    }
                };
                prop_assert_eq!(got, want);
            }
            Op::Reserve { user, amount } => {
                let request = format!("{tag}-r{}", requests.len());
                let got = ledger.reserve(&request, &users[user], amount, 1).await.unwrap();
                let account = model.accounts.entry(user).or_default();
                let want = account.available_nanos() >= amount;
                if want {
                    account.held_nanos += amount;
                    model.holds.insert(requests.len(), (user, amount));
                }
                requests.push(request);
                prop_assert_eq!(got, want);
            }
            Op::Settle { request, cost } => settle_batch(&ledger, &mut model, &requests, &[(request, cost)]).await?,
            Op::SettleBatch(batch) => settle_batch(&ledger, &mut model, &requests, &batch).await?,
            Op::Release { request } => {
                let Some(id) = requests.get(request) else { continue };
                let got = ledger.release(id).await.unwrap();
                let want = match model.holds.remove(&request) {
                    Some((user, held)) => {
                        model.accounts.entry(user).or_default().held_nanos -= held;
                        true
                    }
                    None => false,
                };
                prop_assert_eq!(got, want);
            }
            Op::ReserveAvailable { .. } => unreachable!("rewritten above"),
            Op::VoidAll => {
                // Cases run one after another on a database of their own test, so this
                // voids this case's holds alone.
                ledger.void_all_holds().await.unwrap();
                for (_, (user, held)) in model.holds.drain() {
                    model.accounts.entry(user).or_default().held_nanos -= held;
                }
            }
        }
        for (i, id) in users.iter().enumerate() {
            let account = ledger.account(id).await.unwrap();
            prop_assert_eq!(account, model.accounts.get(&i).copied().unwrap_or_default(), "user {}", i);
            prop_assert!(account.available_nanos() >= 0);
            // I1: a balance is its credits minus its usage costs.
            let credits: i64 = ledger.entries(id).await.unwrap().iter().map(|e| e.amount_nanos).sum();
            let charges: i64 = store.usage().records(id).await.unwrap().iter().map(|u| u.cost_nanos).sum();
            prop_assert_eq!(account.balance_nanos, credits - charges);
            prop_assert_eq!(charges, model.charges.get(&i).copied().unwrap_or(0));
        }
    }
    Ok(())
}

/// Settles `(request index, cost)` pairs (unknown indexes skipped) in one batch, in the
/// store and the model.
async fn settle_batch(
    ledger: &crate::ledger::Ledger<'_>,
    model: &mut Model,
    requests: &[String],
    batch: &[(usize, i64)],
) -> Result<(), TestCaseError> {
    let batch: Vec<(usize, i64)> = batch.iter().copied().filter(|(r, _)| *r < requests.len()).collect();
    let rows: Vec<UsageRow> = batch.iter().map(|&(r, cost)| usage(&requests[r], "ignored", cost)).collect();
    let got = ledger.settle(&rows).await.unwrap();
    let want: Vec<Settled> = batch
        .iter()
        .map(|&(request, cost)| match model.holds.remove(&request) {
            Some((user, held)) => {
                let charged = cost.min(held);
                let account = model.accounts.entry(user).or_default();
                account.held_nanos -= held;
                account.balance_nanos -= charged;
                *model.charges.entry(user).or_default() += charged;
                Settled::Charged { charged_nanos: charged }
            }
            None => Settled::NoHold,
        })
        .collect();
    prop_assert_eq!(got, want);
    Ok(())
}

/// L1: random sequences of credits (with repeated idempotency keys), reservations,
/// settlements (repeated), releases and voids agree with the model step by step.
#[test]
fn ledger_matches_its_model() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for (kind, store) in rt.block_on(stores()) {
        let cases = if kind == "sqlite" { 64 } else { 32 };
        let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
        let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| rt.block_on(run_case(&store, &ops)));
        if let Err(e) = result {
            panic!("{kind}: {e}");
        }
    }
}

/// L2: 64 tasks race to reserve on a balance that covers exactly K holds; never more
/// than K coexist, the balance never goes negative, and the final balance is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_never_overdraw() {
    const K: i64 = 5;
    const HOLD: i64 = 1_000;
    for (kind, store) in stores().await {
        let store = Arc::new(store);
        let user_id = new_user(&store).await;
        store.ledger().credit(&credit(&user_id, K * HOLD, None, "")).await.unwrap();
        let open = Arc::new(AtomicI64::new(0));
        let max_open = Arc::new(AtomicI64::new(0));
        let charged = Arc::new(AtomicI64::new(0));
        let barrier = Arc::new(tokio::sync::Barrier::new(64));
        let tasks = (0..64).map(|t| {
            let (store, user_id, open, max_open, charged, barrier) =
                (store.clone(), user_id.clone(), open.clone(), max_open.clone(), charged.clone(), barrier.clone());
            async move {
                barrier.wait().await;
                for i in 0..10 {
                    let request = format!("{user_id}-{t}-{i}");
                    if !store.ledger().reserve(&request, &user_id, HOLD, 1).await.unwrap() {
                        continue;
                    }
                    let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
                    max_open.fetch_max(now_open, Ordering::SeqCst);
                    let account = store.ledger().account(&user_id).await.unwrap();
                    assert!(account.available_nanos() >= 0 && account.held_nanos <= K * HOLD);
                    open.fetch_sub(1, Ordering::SeqCst);
                    let cost = (t * 7 + i) % 3;
                    let settled = store.ledger().settle(&[usage(&request, &user_id, cost)]).await.unwrap();
                    assert_eq!(settled, vec![Settled::Charged { charged_nanos: cost }]);
                    charged.fetch_add(cost, Ordering::SeqCst);
                }
            }
        });
        futures::future::join_all(tasks).await;
        let account = store.ledger().account(&user_id).await.unwrap();
        assert!(max_open.load(Ordering::SeqCst) <= K, "{kind}: more holds than the balance covers");
        assert_eq!(
            account,
            Account { balance_nanos: K * HOLD - charged.load(Ordering::SeqCst), held_nanos: 0 },
            "{kind}"
        );
        assert_eq!(store.ledger().open_holds().await.unwrap(), 0, "{kind}");
    }
}

/// L3: the same request settled from many tasks at once is charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_settlement_is_a_no_op() {
    for (kind, store) in stores().await {
        let store = Arc::new(store);
        let user_id = new_user(&store).await;
        store.ledger().credit(&credit(&user_id, 10_000, None, "")).await.unwrap();
        let request = format!("{user_id}-req");
        assert!(store.ledger().reserve(&request, &user_id, 5_000, 1).await.unwrap());
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, request, user_id, barrier) =
                    (store.clone(), request.clone(), user_id.clone(), barrier.clone());
                async move {
                    barrier.wait().await;
                    store.ledger().settle(&[usage(&request, &user_id, 1_234)]).await.unwrap()
                }
            })
            .collect();
        let mut charged = 0;
        for t in futures::future::join_all(tasks).await {
            if t == vec![Settled::Charged { charged_nanos: 1_234 }] {
                charged += 1;
            }
        }
        assert_eq!(charged, 1, "{kind}");
        assert_eq!(store.usage().records(&user_id).await.unwrap().len(), 1, "{kind}");
        assert_eq!(
            store.ledger().account(&user_id).await.unwrap(),
            Account { balance_nanos: 10_000 - 1_234, held_nanos: 0 },
            "{kind}"
        );
    }
}

/// A repeated idempotency key credits once, even when the retries race.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_credits_with_one_key_credit_once() {
    for (kind, store) in stores().await {
        let store = Arc::new(store);
        let user_id = new_user(&store).await;
        let key = format!("{user_id}-key");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, user_id, key) = (store.clone(), user_id.clone(), key.clone());
                async move { store.ledger().credit(&credit(&user_id, 500, Some(key), "same")).await.unwrap() }
            })
            .collect();
        let outcomes: Vec<_> = futures::future::join_all(tasks).await;
        assert_eq!(outcomes.iter().filter(|o| matches!(o, CreditOutcome::Applied { .. })).count(), 1, "{kind}");
        assert!(outcomes.iter().all(|o| matches!(
            o,
            CreditOutcome::Applied { balance_after_nanos: 500 } | CreditOutcome::Replayed { balance_after_nanos: 500 }
        )));
        let other = store.ledger().credit(&credit(&user_id, 600, Some(key), "different")).await.unwrap();
        assert_eq!(other, CreditOutcome::KeyReused, "{kind}");
        assert_eq!(store.ledger().account(&user_id).await.unwrap().balance_nanos, 500, "{kind}");
    }
}
