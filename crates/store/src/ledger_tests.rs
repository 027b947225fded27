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
    /// A hold by replica `inst`.
    Hold {
        inst: usize,
        user: usize,
        amount: i64,
    },
    /// Holds the user's whole available balance plus `extra` (the boundary).
    HoldAvailable {
        inst: usize,
        user: usize,
        extra: i64,
    },
    /// One settlement batch by replica `inst`: (user, repeat an earlier request?, cost),
    /// plus money released for `release.0`. Costs are capped by what `inst` holds for the
    /// user, as a gateway's are, unless `stale`: then the replica settles after its holds
    /// were voided (it was taken for dead while it ran).
    Settle {
        inst: usize,
        items: Vec<(usize, bool, i64)>,
        release: (usize, i64),
        stale: bool,
    },
    Release {
        inst: usize,
        user: usize,
        amount: i64,
    },
    /// Replica `inst` is retired (or swept): its holds are voided, the others' kept.
    Retire {
        inst: usize,
    },
}

const INSTANCES: usize = 2;

fn op() -> impl Strategy<Value = Op> {
    let inst = 0..INSTANCES;
    prop_oneof![
        3 => (0..3usize, 1..1_000i64, proptest::option::of(0..4u8), 0..2u8)
            .prop_map(|(user, amount, key, fingerprint)| Op::Credit { user, amount, key, fingerprint }),
        3 => (inst.clone(), 0..3usize, 0..600i64).prop_map(|(inst, user, amount)| Op::Hold { inst, user, amount }),
        2 => (inst.clone(), 0..3usize, 0..2i64).prop_map(|(inst, user, extra)| Op::HoldAvailable { inst, user, extra }),
        4 => (
            inst.clone(),
            proptest::collection::vec((0..3usize, proptest::bool::weighted(0.2), 0..400i64), 1..6),
            (0..3usize, 0..300i64),
            proptest::bool::weighted(0.15),
        )
            .prop_map(|(inst, items, release, stale)| Op::Settle { inst, items, release, stale }),
        1 => (inst.clone(), 0..3usize, 0..400i64).prop_map(|(inst, user, amount)| Op::Release { inst, user, amount }),
        1 => inst.prop_map(|inst| Op::Retire { inst }),
    ]
}

/// What the ledger should hold, computed in plain Rust.
#[derive(Default)]
struct Model {
    accounts: HashMap<usize, Account>,
    /// (instance, user) -> held.
    holds: HashMap<(usize, usize), i64>,
    /// Idempotency key -> (fingerprint, balance after).
    keys: HashMap<u8, (u8, i64)>,
    charges: HashMap<usize, i64>,
    /// Request ids settled so far, with their user and cost.
    settled: Vec<(String, usize, i64)>,
}

impl Model {
    fn account(&mut self, user: usize) -> &mut Account {
        self.accounts.entry(user).or_default()
    }

    fn held(&self, inst: usize, user: usize) -> i64 {
        self.holds.get(&(inst, user)).copied().unwrap_or(0)
    }

    /// Charges `charged` and releases `released` of what `inst` holds for `user`; when it
    /// holds less, its hold is dropped and the charge taken from the available balance,
    /// the rest written off.
    fn settle_user(&mut self, inst: usize, user: usize, charged: i64, released: i64) {
        let held = self.held(inst, user);
        let account = self.account(user);
        if held >= charged + released {
            account.balance_nanos -= charged;
            account.held_nanos -= charged + released;
            self.holds.insert((inst, user), held - charged - released);
        } else {
            account.held_nanos -= held;
            let shortfall = (charged - account.available_nanos().max(0)).max(0);
            account.balance_nanos -= charged - shortfall;
            self.holds.remove(&(inst, user));
        }
    }
}

/// Runs one op sequence against the model and the store (fresh users and replicas),
/// checking the two agree and the invariants hold after every step.
async fn run_case(store: &Store, ops: &[Op]) -> Result<(), TestCaseError> {
    let users = [new_user(store).await, new_user(store).await, new_user(store).await];
    let tag = uuid(); // idempotency keys, request and replica ids are unique per case
    let instances: Vec<String> = (0..INSTANCES).map(|i| format!("{tag}-i{i}")).collect();
    let mut model = Model::default();
    let ledger = store.ledger();
    for op in ops {
        let op = match op.clone() {
            Op::HoldAvailable { inst, user, extra } => {
                Op::Hold { inst, user, amount: model.account(user).available_nanos() + extra }
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
            Op::Hold { inst, user, amount } => {
                let got = ledger.hold(&instances[inst], &users[user], amount).await.unwrap();
                let account = model.account(user);
                let want = account.available_nanos() >= amount;
                if want {
                    account.held_nanos += amount;
                    *model.holds.entry((inst, user)).or_default() += amount;
                }
                prop_assert_eq!(got, want);
            }
            Op::Settle { inst, items, release, stale } => {
                let mut left: HashMap<usize, i64> = (0..3).map(|u| (u, model.held(inst, u))).collect();
                let mut rows = Vec::new();
                let mut want = Vec::new();
                // Per user: (charged, released).
                let mut per_user: HashMap<usize, (i64, i64)> = HashMap::new();
                for (user, repeat, cost) in items {
                    match model.settled.get(cost as usize % model.settled.len().max(1)).cloned().filter(|_| repeat) {
                        Some((id, owner, recorded_cost_nanos)) => {
                            rows.push(usage(&id, &users[owner], 1));
                            want.push(Settled::Duplicate { recorded_cost_nanos });
                        }
                        None => {
                            let cost = if stale { cost } else { cost.min(left[&user]) };
                            *left.entry(user).or_default() -= cost;
                            let id = format!("{tag}-r{}", model.settled.len());
                            model.settled.push((id.clone(), user, cost));
                            rows.push(usage(&id, &users[user], cost));
                            want.push(Settled::Charged { charged_nanos: cost });
                            per_user.entry(user).or_default().0 += cost;
                            *model.charges.entry(user).or_default() += cost;
                        }
                    }
                }
                let released = release.1.min(left[&release.0].max(0));
                per_user.entry(release.0).or_default().1 += released;
                for (user, (charged, released)) in per_user {
                    if charged != 0 || released != 0 {
                        model.settle_user(inst, user, charged, released);
                    }
                }
                let got =
                    ledger.settle(&instances[inst], &rows, &[(users[release.0].clone(), released)]).await.unwrap();
                prop_assert_eq!(got, want);
            }
            Op::Release { inst, user, amount } => {
                let amount = amount.min(model.held(inst, user));
                ledger.release(&instances[inst], &users[user], amount).await.unwrap();
                if amount > 0 {
                    model.account(user).held_nanos -= amount;
                    *model.holds.entry((inst, user)).or_default() -= amount;
                }
            }
            Op::HoldAvailable { .. } => unreachable!("rewritten above"),
            Op::Retire { inst } => {
                let voided = store.instances().retire(&instances[inst]).await.unwrap();
                let mut want = 0;
                for user in 0..3 {
                    let held = model.holds.remove(&(inst, user)).unwrap_or(0);
                    model.account(user).held_nanos -= held;
                    want += held;
                }
                prop_assert_eq!(voided, want);
            }
        }
        for (i, id) in users.iter().enumerate() {
            let account = ledger.account(id).await.unwrap();
            prop_assert_eq!(account, model.accounts.get(&i).copied().unwrap_or_default(), "user {}", i);
            prop_assert!(account.available_nanos() >= 0 && account.held_nanos >= 0);
            for (inst, instance) in instances.iter().enumerate() {
                prop_assert_eq!(ledger.held_by(instance, id).await.unwrap(), model.held(inst, i));
            }
            // I1: a balance is its credits (written-off usage included) minus its usage.
            let credits: i64 = ledger.entries(id).await.unwrap().iter().map(|e| e.amount_nanos).sum();
            let charges: i64 = store.usage().records(id).await.unwrap().iter().map(|u| u.cost_nanos).sum();
            prop_assert_eq!(account.balance_nanos, credits - charges);
            prop_assert_eq!(charges, model.charges.get(&i).copied().unwrap_or(0));
        }
    }
    Ok(())
}

/// L1: random sequences of credits (with repeated idempotency keys), holds by two
/// replicas, settlements (repeated, and after a replica's holds were voided), releases and
/// retirements agree with the model step by step.
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
                    if !store.ledger().hold("i", &user_id, HOLD).await.unwrap() {
                        continue;
                    }
                    let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
                    max_open.fetch_max(now_open, Ordering::SeqCst);
                    let account = store.ledger().account(&user_id).await.unwrap();
                    assert!(account.available_nanos() >= 0 && account.held_nanos <= K * HOLD);
                    open.fetch_sub(1, Ordering::SeqCst);
                    let cost = (t * 7 + i) % 3;
                    let row = usage(&format!("{user_id}-{t}-{i}"), &user_id, cost);
                    let settled = store.ledger().settle("i", &[row], &[(user_id.clone(), HOLD - cost)]).await.unwrap();
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
        assert!(store.ledger().hold("i", &user_id, 50_000).await.unwrap());
        let request = format!("{user_id}-req");
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, request, user_id, barrier) =
                    (store.clone(), request.clone(), user_id.clone(), barrier.clone());
                async move {
                    barrier.wait().await;
                    store.ledger().settle("i", &[usage(&request, &user_id, 1_234)], &[]).await.unwrap()
                }
            })
            .collect();
        let outcomes = futures::future::join_all(tasks).await;
        assert_eq!(
            outcomes.iter().filter(|o| **o == vec![Settled::Charged { charged_nanos: 1_234 }]).count(),
            1,
            "{kind}"
        );
        // The others learn what the one that got there first charged.
        let duplicate = vec![Settled::Duplicate { recorded_cost_nanos: 1_234 }];
        assert_eq!(outcomes.iter().filter(|o| **o == duplicate).count(), 7, "{kind}");
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

/// L4: replicas on one database. A sweep voids the holds of the replica whose beat expired
/// (and of holds whose replica is unknown), once even when sweepers race, and leaves the
/// living replica's holds; the dead replica's late settlement is still charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sweep_voids_only_the_dead_replicas_holds() {
    for (kind, store) in stores().await {
        let store = Arc::new(store);
        let user_id = new_user(&store).await;
        store.ledger().credit(&credit(&user_id, 10_000, None, "")).await.unwrap();
        let (alive, dead, unknown) = (uuid(), uuid(), uuid());
        let instances = store.instances();
        instances.register(&alive, 1_000).await.unwrap();
        instances.register(&dead, 1_000).await.unwrap();
        assert!(store.ledger().hold(&alive, &user_id, 3_000).await.unwrap());
        assert!(store.ledger().hold(&dead, &user_id, 2_000).await.unwrap());
        assert!(store.ledger().hold(&unknown, &user_id, 1_000).await.unwrap());
        assert!(!store.ledger().hold(&alive, &user_id, 4_001).await.unwrap(), "{kind}: 4,000 available");
        assert!(instances.beat(&alive, 9_000).await.unwrap());

        let sweeps = (0..4).map(|_| {
            let store = store.clone();
            async move { store.instances().sweep(5_000).await.unwrap() }
        });
        let swept = futures::future::join_all(sweeps).await;
        let voided: i64 = swept.iter().map(|s| s.voided_nanos).sum();
        assert_eq!(voided, 3_000, "{kind}: {swept:?}");
        let mut forgotten: Vec<String> = swept.into_iter().flat_map(|s| s.instances).collect();
        forgotten.sort();
        let mut want = vec![dead.clone(), unknown.clone()];
        want.sort();
        assert_eq!(forgotten, want, "{kind}");
        assert_eq!(
            store.ledger().account(&user_id).await.unwrap(),
            Account { balance_nanos: 10_000, held_nanos: 3_000 },
            "{kind}"
        );
        assert!(!instances.beat(&dead, 9_000).await.unwrap(), "{kind}: the dead replica learns it was swept");

        // The dead replica settles a request it ran: charged from the available balance.
        let late = store.ledger().settle(&dead, &[usage(&format!("{user_id}-late"), &user_id, 500)], &[]).await;
        assert_eq!(late.unwrap(), vec![Settled::Charged { charged_nanos: 500 }], "{kind}");
        // One the balance cannot cover is recorded in full and the rest written off.
        let big = store.ledger().settle(&dead, &[usage(&format!("{user_id}-big"), &user_id, 7_000)], &[]).await;
        assert_eq!(big.unwrap(), vec![Settled::Charged { charged_nanos: 7_000 }], "{kind}");
        let account = store.ledger().account(&user_id).await.unwrap();
        assert_eq!(account, Account { balance_nanos: 3_000, held_nanos: 3_000 }, "{kind}");
        let entries = store.ledger().entries(&user_id).await.unwrap();
        assert_eq!(entries[0].kind, "uncollected", "{kind}");
        assert_eq!(entries[0].amount_nanos, 500, "{kind}: 7,000 charged, 6,500 available");
        assert_eq!(store.ledger().held_by(&alive, &user_id).await.unwrap(), 3_000, "{kind}");
        assert_eq!(store.instances().retire(&alive).await.unwrap(), 3_000, "{kind}");
        assert_eq!(store.ledger().total_held().await.unwrap(), 0, "{kind}");
    }
}
