//! Leases: money this process holds for a user's requests. A request's worst-case cost is
//! taken from its user's lease in memory; only when the lease runs short does the gateway
//! hold more in the database (one conditional statement, for the need plus headroom), so
//! a busy user costs a database round trip per many requests, not per request.
//!
//! The lease is money held in the account, so the database's invariant (balance - held >=
//! 0) covers it and no other process can spend it; a request is refused exactly when the
//! account's available balance plus this lease's free part cannot cover it, and the other
//! replicas, asked, did not give back enough of what their leases hold unused. Leases idle
//! for a while are given back; a killed process's leases are voided by the next sweep (see
//! `replica`). The money is held under this replica's id; a lease whose id is no longer
//! the replica's (it was swept and goes on under a new one) holds nothing any more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tm_money::Nanos;
use tm_store::notices::Channel;
use tm_store::{Store, StoreError};

use crate::replica::Replica;

/// A lease grows by this many times the request that ran it short, so that the next
/// requests find money in memory.
const HEADROOM: i64 = 32;
/// After asking the other replicas for a user's unused leases, the hold is tried again after
/// each of these pauses (0.6 s in all) before the request is refused.
const RECLAIM_WAITS_MS: [u64; 5] = [20, 40, 80, 160, 320];

#[derive(Debug)]
struct Lease {
    /// The replica id the money is held under.
    holder: Arc<str>,
    /// Held in the database, promised to no request.
    free: Nanos,
    in_flight: usize,
    last_used: Instant,
}

pub(crate) struct Wallets {
    replica: Arc<Replica>,
    leases: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Lease>>>>,
}

impl Wallets {
    pub fn new(replica: Arc<Replica>) -> Wallets {
        Wallets { replica, leases: Mutex::default() }
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    fn lease(&self, user_id: &str) -> Arc<tokio::sync::Mutex<Lease>> {
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        let lease = leases.entry(user_id.to_owned()).or_insert_with(|| {
            Arc::new(tokio::sync::Mutex::new(Lease {
                holder: self.replica.id(),
                free: Nanos::ZERO,
                in_flight: 0,
                last_used: Instant::now(),
            }))
        });
        lease.clone()
    }

    /// Promises `amount` of the user's money to a request: `Some(holder)`, the replica id
    /// it is held under, or None when the account cannot cover it.
    pub async fn take(&self, store: &Store, user_id: &str, amount: Nanos) -> Result<Option<Arc<str>>, StoreError> {
        let lease = self.lease(user_id);
        // Held across the database call: concurrent requests of one user wait for one
        // top-up instead of each making their own.
        let mut lease = lease.lock().await;
        let holder = self.replica.id();
        if lease.holder != holder {
            // Held under an id that was swept: that money is no longer held.
            lease.holder = holder.clone();
            lease.free = Nanos::ZERO;
        }
        // While beats do not reach the database this replica may be swept any moment:
        // only money held now is safe to promise.
        let usable = if self.replica.fresh() { lease.free } else { Nanos::ZERO };
        if usable < amount {
            let need = amount - usable;
            let ledger = store.ledger();
            let grow = Nanos(need.0.saturating_add(amount.0.saturating_mul(HEADROOM)));
            if ledger.hold(&holder, user_id, grow.get()).await? {
                lease.free += grow;
            } else if ledger.hold(&holder, user_id, need.get()).await? || self.reclaim(store, user_id, need).await? {
                lease.free += need;
            } else {
                return Ok(None);
            }
        }
        lease.free -= amount;
        lease.in_flight += 1;
        lease.last_used = Instant::now();
        Ok(Some(holder))
    }

    /// Holds `need` for the user after asking the other replicas to give back what their
    /// leases hold for the user unused (a user with money is not refused here because a
    /// replica they used a moment ago still holds it). False when, after the others had
    /// time to answer, the money is still not there: then it is really spent or promised.
    async fn reclaim(&self, store: &Store, user_id: &str, need: Nanos) -> Result<bool, StoreError> {
        let holder = self.replica.id();
        let account = store.ledger().account(user_id).await?;
        let elsewhere = account.held_nanos - store.ledger().held_by(&holder, user_id).await?;
        if elsewhere <= 0 || account.available_nanos() + elsewhere < need.get() {
            return Ok(false);
        }
        store.notify(Channel::Leases, &format!("{holder} {user_id}")).await?;
        for wait_ms in RECLAIM_WAITS_MS {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            if store.ledger().hold(&holder, user_id, need.get()).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Another replica asks for `user_id`'s money (`notice`: its id and the user's): gives
    /// back what this replica's lease holds for the user unused.
    pub async fn give_back_for(&self, store: &Store, notice: &str) {
        let Some((asker, user_id)) = notice.split_once(' ') else { return };
        let Some(lease) = self.leases.lock().unwrap_or_else(PoisonError::into_inner).get(user_id).cloned() else {
            return;
        };
        let mut lease = lease.lock().await;
        if *asker == *lease.holder || lease.free == Nanos::ZERO {
            return;
        }
        match store.ledger().release(&lease.holder, user_id, lease.free.get()).await {
            Ok(()) => lease.free = Nanos::ZERO,
            Err(e) => tracing::warn!(error = %e, "cannot give a lease back to another replica"),
        }
    }

    /// Held for the user and promised to no request.
    pub async fn free(&self, user_id: &str) -> Nanos {
        self.lease(user_id).lock().await.free
    }

    /// A request ended: of the `amount` it was promised (held under `holder`), `charged`
    /// left the account with its settlement; the rest goes back to the lease, unless the
    /// lease is held under another id now.
    pub async fn finish(&self, user_id: &str, holder: &str, amount: Nanos, charged: Nanos) {
        let lease = self.lease(user_id);
        let mut lease = lease.lock().await;
        if &*lease.holder == holder {
            lease.free += amount - charged.clamp(Nanos::ZERO, amount);
        }
        lease.in_flight = lease.in_flight.saturating_sub(1);
        lease.last_used = Instant::now();
    }

    /// Gives back to their accounts the leases unused for `idle` (all of them with
    /// `Duration::ZERO` and nothing in flight).
    pub async fn release_idle(&self, store: &Store, idle: Duration) {
        let leases: Vec<(String, Arc<tokio::sync::Mutex<Lease>>)> = self
            .leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (user_id, lease) in leases {
            let mut l = lease.lock().await;
            if l.in_flight > 0 || l.last_used.elapsed() < idle {
                continue;
            }
            if l.free > Nanos::ZERO {
                if let Err(e) = store.ledger().release(&l.holder, &user_id, l.free.get()).await {
                    tracing::warn!(error = %e, "cannot give a lease back; it is voided when this replica retires");
                    continue;
                }
                l.free = Nanos::ZERO;
            }
            drop(l);
            let mut map = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
            // Forget it unless a request took it up meanwhile.
            if map.get(&user_id).is_some_and(|a| Arc::ptr_eq(a, &lease) && Arc::strong_count(a) == 2) {
                map.remove(&user_id);
            }
        }
    }
}
