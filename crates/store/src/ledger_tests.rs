//! The ledger against a reference model (L1), under a reservation race (L2) and under
//! duplicate settlement (L3), on SQLite and PostgreSQL (docs/contracts.md §G1-§G3).

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
        usage_source: "engine".into(),
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
    Credit {
        user: usize,
        amount: i64,
        key: Option<u8>,
        fingerprint: u8,
    },
    Hold {
        user: usize,
        amount: i64,
    },
    /// Holds the user's whole available balance plus `extra` (the boundary).
    HoldAvailable {
        user: usize,
        extra: i64,
    },
    /// One settlement batch: (user, repeat an earlier request?, cost), plus money released
    /// for `release.0` (each capped by what the user holds).
    Settle {
        items: Vec<(usize, bool, i64)>,
        release: (usize, i64),
    },
    Release {
        user: usize,
        amount: i64,
    },
    VoidAll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 1..1_000i64, proptest::option::of(0..4u8), 0..2u8)
            .prop_map(|(user, amount, key, fingerprint)| Op::Credit { user, amount, key, fingerprint }),
        3 => (0..3usize, 0..600i64).prop_map(|(user, amount)| Op::Hold { user, amount }),
        2 => (0..3usize, 0..2i64).prop_map(|(user, extra)| Op::HoldAvailable { user, extra }),
        4 => (proptest::collection::vec((0..3usize, proptest::bool::weighted(0.2), 0..400i64), 1..6), (0..3usize, 0..300i64))
            .prop_map(|(items, release)| Op::Settle { items, release }),
        1 => (0..3usize, 0..400i64).prop_map(|(user, amount)| Op::Release { user, amount }),
        1 => Just(Op::VoidAll),
    ]
}

/// What the ledger should hold, computed in plain Rust.
#[derive(Default)]
struct Model {
    accounts: HashMap<usize, Account>,
    /// Idempotency key -> (fingerprint, balance after).
    keys: HashMap<u8, (u8, i64)>,
    charges: HashMap<usize, i64>,
    /// Request ids settled so far, with their user.
    settled: Vec<(String, usize)>,
}

impl Model {
    fn account(&mut self, user: usize) -> &mut Account {
        self.accounts.entry(user).or_default()
    }
}

/// Runs one op sequence against the model and the store (fresh users), checking the two
/// agree and the invariants hold after every step.
async fn run_case(store: &Store, ops: &[Op]) -> Result<(), TestCaseError> {
    let users = [new_user(store).await, new_user(store).await, new_user(store).await];
    let tag = uuid(); // idempotency keys and request ids are unique per case
    let mut model = Model::default();
    let ledger = store.ledger();
    for op in ops {
        let op = match op.clone() {
            Op::HoldAvailable { user, extra } => {
                Op::Hold { user, amount: model.account(user).available_nanos() + extra }
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
                        let account = model.account(user);
                        account.balance_nanos += amount;
                        let after = account.balance_nanos;
                        if let Some(k) = key {
                            model.keys.insert(k, (fingerprint, after));
                        }
                        CreditOutcome::Applied { balance_after_nanos: after }
                    }
                };
                prop_assert_eq!(got, want);
            }
            Op::Hold { user, amount } => {
                let got = ledger.hold(&users[user], amount).await.unwrap();
                let account = model.account(user);
                let want = account.available_nanos() >= amount;
                if want {
                    account.held_nanos += amount;
                }
                prop_assert_eq!(got, want);
            }
            Op::Settle { items, release } => {
                // Costs are capped by what each user holds (a gateway never charges more).
                let mut left: HashMap<usize, i64> = (0..3).map(|u| (u, model.account(u).held_nanos)).collect();
                let mut rows = Vec::new();
                let mut want = Vec::new();
                for (user, repeat, cost) in items {
                    match model.settled.get(cost as usize % model.settled.len().max(1)).cloned().filter(|_| repeat) {
                        Some((id, owner)) => {
                            rows.push(usage(&id, &users[owner], 1));
                            want.push(Settled::Duplicate);
                        }
                        None => {
                            let cost = cost.min(left[&user]);
                            *left.entry(user).or_default() -= cost;
                            let id = format!("{tag}-r{}", model.settled.len());
                            model.settled.push((id.clone(), user));
                            rows.push(usage(&id, &users[user], cost));
                            want.push(Settled::Charged { charged_nanos: cost });
                            let account = model.account(user);
                            account.balance_nanos -= cost;
                            account.held_nanos -= cost;
                            *model.charges.entry(user).or_default() += cost;
                        }
                    }
                }
                let released = release.1.min(left[&release.0]);
                model.account(release.0).held_nanos -= released;
                let got = ledger.settle(&rows, &[(users[release.0].clone(), released)]).await.unwrap();
                prop_assert_eq!(got, want);
            }
            Op::Release { user, amount } => {
                let amount = amount.min(model.account(user).held_nanos);
                ledger.release(&users[user], amount).await.unwrap();
                model.account(user).held_nanos -= amount;
            }
            Op::HoldAvailable { .. } => unreachable!("rewritten above"),
            Op::VoidAll => {
                // Cases run one after another on a database of their own test, so this
                // voids this case's holds alone.
                ledger.void_all_holds().await.unwrap();
                for account in model.accounts.values_mut() {
                    account.held_nanos = 0;
                }
            }
        }
        for (i, id) in users.iter().enumerate() {
            let account = ledger.account(id).await.unwrap();
            prop_assert_eq!(account, model.accounts.get(&i).copied().unwrap_or_default(), "user {}", i);
            prop_assert!(account.available_nanos() >= 0 && account.held_nanos >= 0);
            // I1: a balance is its credits minus its usage costs.
            let credits: i64 = ledger.entries(id).await.unwrap().iter().map(|e| e.amount_nanos).sum();
            let charges: i64 = store.usage().records(id).await.unwrap().iter().map(|u| u.cost_nanos).sum();
            prop_assert_eq!(account.balance_nanos, credits - charges);
            prop_assert_eq!(charges, model.charges.get(&i).copied().unwrap_or(0));
        }
    }
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

/// L2: 64 tasks race to hold money on a balance that covers exactly K holds; never more
/// than K coexist, the balance never goes negative, and the final balance is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_holds_never_overdraw() {
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
                    if !store.ledger().hold(&user_id, HOLD).await.unwrap() {
                        continue;
                    }
                    let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
                    max_open.fetch_max(now_open, Ordering::SeqCst);
                    let account = store.ledger().account(&user_id).await.unwrap();
                    assert!(account.available_nanos() >= 0 && account.held_nanos <= K * HOLD);
                    open.fetch_sub(1, Ordering::SeqCst);
                    let cost = (t * 7 + i) % 3;
                    let row = usage(&format!("{user_id}-{t}-{i}"), &user_id, cost);
                    let settled = store.ledger().settle(&[row], &[(user_id.clone(), HOLD - cost)]).await.unwrap();
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
        assert_eq!(store.ledger().total_held().await.unwrap(), 0, "{kind}");
    }
}

/// L3: the same request settled from many tasks at once is charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_settlement_is_a_no_op() {
    for (kind, store) in stores().await {
        let store = Arc::new(store);
        let user_id = new_user(&store).await;
        store.ledger().credit(&credit(&user_id, 100_000, None, "")).await.unwrap();
        assert!(store.ledger().hold(&user_id, 50_000).await.unwrap());
        let request = format!("{user_id}-req");
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, request, user_id, barrier) =
                    (store.clone(), request.clone(), user_id.clone(), barrier.clone());
                async move {
                    barrier.wait().await;
                    store.ledger().settle(&[usage(&request, &user_id, 1_234)], &[]).await.unwrap()
                }
            })
            .collect();
        let outcomes = futures::future::join_all(tasks).await;
        assert_eq!(
            outcomes.iter().filter(|o| **o == vec![Settled::Charged { charged_nanos: 1_234 }]).count(),
            1,
            "{kind}"
        );
        assert_eq!(store.usage().records(&user_id).await.unwrap().len(), 1, "{kind}");
        assert_eq!(
            store.ledger().account(&user_id).await.unwrap(),
            Account { balance_nanos: 100_000 - 1_234, held_nanos: 50_000 - 1_234 },
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
