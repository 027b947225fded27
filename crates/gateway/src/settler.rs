//! Settlement. Each finished (or abandoned) request sends its bill and engine receipt
//! here; receipts that have arrived are priced and written in one transaction per batch, so
//! the database sees one commit per batch, not per request and never per token. A finished
//! request's response waits for its batch to be written (`Metered::seal`), so batches form
//! as group commits: what ends while one is written goes into the next.
//!
//! A batch the database does not take (after a few quick tries) goes to the settlement
//! journal (`journal`) before its responses are released, and is retried with backoff
//! until it is written, however long the database is away; what was held for its requests
//! stays held meanwhile.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tm_backend::Receipt;
use tm_control::Control;
use tm_money::{Nanos, Price};
use tm_store::ledger::{Settled, UsageRow};
use tm_store::Store;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::journal::{self, Journal};
use crate::limiter::Scope;
use crate::limits::Limiter;
use crate::wallet::Wallets;

const MAX_BATCH: usize = 256;
/// Leases unused this long are given back to their accounts.
const LEASE_IDLE: Duration = Duration::from_secs(1);
/// How long a batch waits for more requests to end before it is written.
const GATHER: Duration = Duration::from_millis(5);
/// How long, after shutdown, receipts of cancelled generations are waited for.
const DRAIN: Duration = Duration::from_secs(10);
/// A batch is tried this many times in a row (a deadlock, a dropped connection) before it
/// goes to the journal.
const QUICK_ATTEMPTS: u32 = 2;
/// One write may take this long; then it counts as failed (it may still have committed: a
/// retry then finds its requests recorded).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Journaled settlements are retried after this pause, doubling up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What the settler needs to bill a request (its price, hold and who pays).
#[derive(Debug, Clone)]
pub(crate) struct Bill {
    pub request_id: String,
    pub user_id: String,
    pub key_id: String,
    pub model: String,
    pub price: Price,
    /// Promised to the request from its user's lease: its worst-case cost.
    pub hold: Nanos,
    /// The replica id the hold is under.
    pub held_under: Arc<str>,
    pub started_at: i64,
    /// Tokens taken from the per-minute limits at admission; the unused part is returned.
    pub reserved_tokens: u64,
    pub token_scopes: Vec<Scope>,
}

pub(crate) struct Pending {
    pub bill: Bill,
    pub receipt: oneshot::Receiver<Receipt>,
    /// The client received nothing (a non-streamed request that failed): recorded, not
    /// charged.
    pub waived: bool,
    /// Told once the bill is written (or given up on): the response's last bytes wait for
    /// it (see `Metered::seal`).
    pub written: Option<oneshot::Sender<()>>,
}

/// A request whose receipt has come: ready to be written.
struct Ready {
    bill: Bill,
    receipt: Receipt,
    waived: bool,
    written: Option<oneshot::Sender<()>>,
}

/// A request whose usage the database has not taken yet (it is in the journal).
struct Owed {
    user_id: String,
    held_under: Arc<str>,
    hold: Nanos,
    row: UsageRow,
}

/// The settlement task: run it with [`Settler::run`].
pub struct Settler {
    control: Control,
    store: Store,
    limiter: Arc<Limiter>,
    wallets: Arc<Wallets>,
    rx: mpsc::UnboundedReceiver<Pending>,
    journal: Journal,
    /// What the journal holds, in memory.
    owed: Vec<Owed>,
    /// The pause before the next retry of `owed`.
    retry_after: Duration,
}

impl Settler {
    pub(crate) fn new(
        control: Control,
        store: Store,
        limiter: Arc<Limiter>,
        wallets: Arc<Wallets>,
        rx: mpsc::UnboundedReceiver<Pending>,
        journal: Journal,
    ) -> Settler {
        Settler { control, store, limiter, wallets, rx, journal, owed: Vec::new(), retry_after: RETRY_FIRST }
    }

    /// Settles until every gateway is gone, or `shutdown` resolves, and then whatever is
    /// pending (receipts still missing `DRAIN` after shutdown are given up: what was held
    /// for them is voided, unbilled); gives idle leases back as it goes, and all of them at
    /// the end, when the replica retires. Beats for the replica meanwhile.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (store, wallets) = (self.store.clone(), self.wallets.clone());
        let done = tokio_util::sync::CancellationToken::new();
        let beating = wallets.replica().keep_alive(&store, done.clone().cancelled_owned());
        let settling = async {
            let all_written = self.settle_all(shutdown).await;
            done.cancel();
            all_written
        };
        let ((), all_written) = tokio::join!(beating, settling);
        if all_written {
            wallets.replica().retire(&store).await;
        } else {
            // Its holds stay, for the journal's requests: the next start on this data dir
            // charges them from there, then retires this replica.
            warn!("settlements left in the journal: they are written at the next start on this data dir");
        }
        debug!("settler done");
    }

    /// Settles until shutdown; true when nothing is left owed.
    async fn settle_all(mut self, shutdown: impl Future<Output = ()>) -> bool {
        let mut waiting = FuturesUnordered::new();
        let mut open = true;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut deadline = std::pin::pin!(futures::future::Fuse::terminated());
        let mut draining = false;
        let mut sweep = tokio::time::interval(LEASE_IDLE);
        let retry = tokio::time::sleep(RETRY_FIRST);
        tokio::pin!(retry);
        while open || !waiting.is_empty() {
            let mut ready = Vec::new();
            tokio::select! {
                _ = sweep.tick() => self.wallets.release_idle(&self.store, LEASE_IDLE).await,
                () = &mut retry, if !self.owed.is_empty() => {
                    self.retry_owed().await;
                    retry.as_mut().reset(tokio::time::Instant::now() + self.retry_after);
                }
                next = self.rx.recv(), if open => match next {
                    Some(p) => waiting.push(receipt_of(p)),
                    None => open = false,
                },
                Some(done) = waiting.next(), if !waiting.is_empty() => ready.push(done),
                () = &mut shutdown, if !draining => {
                    // Requests that end from now on are no longer accepted; those queued are.
                    draining = true;
                    self.rx.close();
                    deadline.set(tokio::time::sleep(DRAIN).fuse());
                }
                () = &mut deadline => {
                    warn!(requests = waiting.len(), "receipts missing at shutdown; their holds are voided at restart");
                    break;
                }
            }
            // Gather what ends within a short window, so a busy server writes in batches;
            // not when a response waits for its bill (it is written at once, and what ends
            // meanwhile goes into the next batch: group commit).
            let awaited = ready.iter().any(|r: &Ready| r.written.is_some());
            if !ready.is_empty() && !draining && !awaited {
                let window = tokio::time::sleep(GATHER);
                tokio::pin!(window);
                while ready.len() < MAX_BATCH {
                    tokio::select! {
                        () = &mut window => break,
                        next = self.rx.recv(), if open => match next {
                            Some(p) => waiting.push(receipt_of(p)),
                            None => open = false,
                        },
                        Some(done) = waiting.next(), if !waiting.is_empty() => ready.push(done),
                    }
                }
            }
            while ready.len() < MAX_BATCH {
                if let Some(Some(p)) = self.rx.recv().now_or_never() {
                    waiting.push(receipt_of(p));
                } else if let Some(Some(done)) = waiting.next().now_or_never() {
                    ready.push(done);
                } else {
                    break;
                }
            }
            if !ready.is_empty() {
                let owed_before = self.owed.len();
                self.settle(ready).await;
                if owed_before == 0 && !self.owed.is_empty() {
                    retry.as_mut().reset(tokio::time::Instant::now() + self.retry_after);
                }
            }
        }
        if !self.owed.is_empty() {
            self.retry_owed().await;
        }
        self.wallets.release_idle(&self.store, Duration::ZERO).await;
        self.owed.is_empty()
    }

    async fn settle(&mut self, batch: Vec<Ready>) {
        let finished_at = self.control.now_ms();
        let rows: Vec<UsageRow> = batch.iter().map(|r| usage_row(&r.bill, &r.receipt, r.waived, finished_at)).collect();
        for r in &rows {
            // The per-request log line; `model` and `user` let deployment owners read it back.
            info!(
                model = %r.model,
                user = %r.user_id,
                request_id = %r.request_id,
                prompt_tokens = r.prompt_tokens,
                cached_tokens = r.cached_tokens,
                completion_tokens = r.completion_tokens,
                status = %r.status,
                usage_source = %r.usage_source,
                latency_ms = r.finished_at - r.started_at,
                "request finished"
            );
        }
        // Unused tokens go back to the per-minute limits once the responses are released
        // (with the limits in Redis, each is a round trip).
        let unused: Vec<(Vec<Scope>, u64)> = batch
            .iter()
            .map(|r| {
                let used = r.receipt.usage.prompt_tokens + r.receipt.usage.completion_tokens;
                (r.bill.token_scopes.clone(), r.bill.reserved_tokens.saturating_sub(used))
            })
            .collect();
        // One settlement per replica id the requests were held under (one, unless this
        // replica was swept and renewed while they ran).
        let mut outcomes: Vec<Option<Settled>> = vec![None; rows.len()];
        let mut holders: Vec<&Arc<str>> = batch.iter().map(|r| &r.bill.held_under).collect();
        holders.sort();
        holders.dedup();
        for holder in holders {
            let picked: Vec<usize> = (0..batch.len()).filter(|&i| &batch[i].bill.held_under == holder).collect();
            let group: Vec<UsageRow> = picked.iter().map(|&i| rows[i].clone()).collect();
            if let Some(settled) = self.write(holder, &group, QUICK_ATTEMPTS).await {
                for (i, outcome) in picked.into_iter().zip(settled) {
                    outcomes[i] = Some(outcome);
                }
            }
        }
        let mut owed = Vec::new();
        let mut written = Vec::new();
        for ((r, outcome), row) in batch.into_iter().zip(outcomes).zip(rows) {
            match outcome {
                Some(outcome) => {
                    self.wallets.finish(&r.bill.user_id, &r.bill.held_under, r.bill.hold, charged(outcome)).await
                }
                // Still held: it is charged from there once written.
                None => {
                    owed.push(Owed { user_id: r.bill.user_id, held_under: r.bill.held_under, hold: r.bill.hold, row })
                }
            }
            written.extend(r.written);
        }
        if !owed.is_empty() {
            let entries = owed.iter().map(|o| journal::Entry::new(&o.held_under, &o.row)).collect();
            match self.journal.append(entries).await {
                Ok(()) => warn!(requests = owed.len(), "the database does not take settlements; journaled, retrying"),
                Err(e) => error!(error = %e, requests = owed.len(),
                                 "the database does not take settlements and the journal cannot be written; retrying"),
            }
            self.owed.extend(owed);
        }
        // Written, or journaled: the responses may end.
        for w in written {
            let _ = w.send(());
        }
        for (scopes, tokens) in unused {
            self.limiter.give_back(&scopes, tokens).await;
        }
    }

    /// Writes one settlement, trying up to `attempts` times in a row; None when every try
    /// failed.
    async fn write(&self, holder: &str, rows: &[UsageRow], attempts: u32) -> Option<Vec<Settled>> {
        let mut backoff = Duration::from_millis(50);
        for attempt in 1..=attempts {
            let error = match tokio::time::timeout(ATTEMPT_TIMEOUT, self.store.ledger().settle(holder, rows, &[])).await
            {
                Ok(Ok(settled)) => return Some(settled),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {ATTEMPT_TIMEOUT:?}"),
            };
            warn!(error, attempt, requests = rows.len(), "settlement failed");
            if attempt < attempts {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        None
    }

    /// Tries the journaled settlements again; the journal keeps what is still owed.
    async fn retry_owed(&mut self) {
        let mut by_holder: BTreeMap<Arc<str>, Vec<Owed>> = BTreeMap::new();
        for o in std::mem::take(&mut self.owed) {
            by_holder.entry(o.held_under.clone()).or_default().push(o);
        }
        let mut written = 0;
        for (holder, mut group) in by_holder {
            while !group.is_empty() {
                let chunk: Vec<Owed> = group.drain(..group.len().min(MAX_BATCH)).collect();
                let rows: Vec<UsageRow> = chunk.iter().map(|o| o.row.clone()).collect();
                match self.write(&holder, &rows, 1).await {
                    Some(settled) => {
                        for (o, outcome) in chunk.iter().zip(settled) {
                            self.wallets.finish(&o.user_id, &o.held_under, o.hold, charged(outcome)).await;
                        }
                        written += chunk.len();
                    }
                    None => self.owed.extend(chunk),
                }
            }
        }
        if written > 0 {
            info!(requests = written, still_owed = self.owed.len(), "journaled settlements written");
            let entries = self.owed.iter().map(|o| journal::Entry::new(&o.held_under, &o.row)).collect();
            if let Err(e) = self.journal.rewrite(entries).await {
                // What it still names is written again at the next start: a no-op.
                warn!(error = %e, "cannot rewrite the settlement journal");
            }
        }
        self.retry_after = if self.owed.is_empty() { RETRY_FIRST } else { (self.retry_after * 2).min(RETRY_MAX) };
    }
}

/// What left the hold for a settled request.
fn charged(outcome: Settled) -> Nanos {
    match outcome {
        Settled::Charged { charged_nanos } => Nanos(charged_nanos),
        // Recorded by an earlier try that did commit: from the same hold.
        Settled::Duplicate { recorded_cost_nanos } => Nanos(recorded_cost_nanos),
    }
}

/// Waits for the engine's receipt; an engine that vanished without one counts nothing.
async fn receipt_of(p: Pending) -> Ready {
    let receipt = p.receipt.await.unwrap_or_default();
    Ready { bill: p.bill, receipt, waived: p.waived, written: p.written }
}

fn usage_row(t: &Bill, r: &Receipt, waived: bool, finished_at: i64) -> UsageRow {
    let u = r.usage;
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    UsageRow {
        request_id: t.request_id.clone(),
        user_id: t.user_id.clone(),
        api_key_id: t.key_id.clone(),
        model: t.model.clone(),
        prompt_tokens: to_i64(u.prompt_tokens),
        cached_tokens: to_i64(u.cached_tokens),
        completion_tokens: to_i64(u.completion_tokens),
        // Never more than was held for it (the engine keeps to `max_tokens`, so it is not).
        cost_nanos: if waived {
            0
        } else {
            t.price.cost(u.prompt_tokens, u.cached_tokens, u.completion_tokens).min(t.hold).get()
        },
        cache_saving_nanos: if waived { 0 } else { t.price.cache_saving(u.cached_tokens.min(u.prompt_tokens)).get() },
        status: r.finish.map_or("failed", |f| f.as_openai()).to_owned(),
        started_at: t.started_at,
        finished_at,
        usage_source: r.source.as_str().to_owned(),
    }
}
