//! This process as one replica among several on one database. It registers under a fresh
//! id at start and beats every fifth of the timeout; the money it holds is held under that
//! id (see `tm_store::instances`). Each beat also sweeps: the holds of replicas whose beat
//! is older than the timeout are voided, since their requests died with them, unbilled.
//! A replica sweeps only once its own beats have reached the database for a whole timeout:
//! after an outage of the database (or of this replica's link to it) the others get the
//! time to beat again before anyone takes them for dead.
//!
//! A replica that learns it was swept (a beat finds its row gone: the database was out of
//! reach for longer than the timeout) carries on under a new id; what its leases held under
//! the old one is gone, so leases start again from zero (see `wallet`), and requests that
//! were running settle against the available balance (`Ledger::settle`).

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tm_store::{Store, StoreError};
use tracing::{info, warn};

/// The default `--heartbeat-timeout`.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Replica {
    id: Mutex<Arc<str>>,
    /// When a beat last reached the database.
    last_beat: Mutex<Instant>,
    /// Since when every beat reached the database (None after one that did not).
    reaching_since: Mutex<Option<Instant>>,
    timeout: Duration,
}

impl Replica {
    /// Registers a new replica and retires `previous` (the process that ran before on this
    /// replica's data dir: dead, since this one runs there now). Other dead replicas are
    /// swept by the beats, from a timeout after the start.
    pub async fn join(store: &Store, previous: Option<&str>, timeout: Duration) -> Result<Replica, StoreError> {
        let replica = Replica {
            id: Mutex::new(new_id()),
            last_beat: Mutex::new(Instant::now()),
            reaching_since: Mutex::new(None),
            timeout: timeout.max(Duration::from_millis(100)),
        };
        let id = replica.id();
        store.instances().register(&id, now_ms()).await?;
        if let Some(previous) = previous.filter(|p| *p != &*id) {
            let voided = store.instances().retire(previous).await?;
            if voided > 0 {
                warn!(replica = %previous, voided_nanos = voided, "voided the holds the previous process left unsettled");
            }
        }
        *replica.reaching_since.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        info!(replica = %id, heartbeat_timeout_ms = replica.timeout.as_millis() as u64, "registered");
        Ok(replica)
    }

    /// The id this replica holds money under now.
    pub fn id(&self) -> Arc<str> {
        self.id.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether a beat reached the database within half the timeout: while it has not, the
    /// money in leases is not used (this replica may be swept soon), only fresh holds.
    pub(crate) fn fresh(&self) -> bool {
        self.last_beat.lock().unwrap_or_else(PoisonError::into_inner).elapsed() < self.timeout / 2
    }

    /// Beats and sweeps until `stop` resolves.
    pub(crate) async fn keep_alive(&self, store: &Store, stop: impl Future<Output = ()>) {
        let mut every = tokio::time::interval(self.timeout / 5);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = every.tick() => {}
            }
            // Bounded: a beat stuck on a dead connection must not outlive the timeout.
            let beat = tokio::time::timeout(self.timeout / 2, self.beat(store)).await;
            let reached = {
                let mut since = self.reaching_since.lock().unwrap_or_else(PoisonError::into_inner);
                match &beat {
                    Ok(Ok(())) => *since.get_or_insert_with(Instant::now),
                    Ok(Err(_)) | Err(_) => {
                        *since = None;
                        Instant::now()
                    }
                }
            };
            match beat {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "heartbeat failed"),
                Err(_) => warn!("heartbeat timed out"),
            }
            if reached.elapsed() < self.timeout {
                continue;
            }
            if let Ok(Err(e)) = tokio::time::timeout(self.timeout / 2, self.sweep(store)).await {
                warn!(error = %e, "sweeping dead replicas failed");
            }
        }
    }

    async fn beat(&self, store: &Store) -> Result<(), StoreError> {
        let id = self.id();
        let started = Instant::now();
        if !store.instances().beat(&id, now_ms()).await? {
            let renewed = new_id();
            store.instances().register(&renewed, now_ms()).await?;
            warn!(old = %id, new = %renewed, "this replica was taken for dead (no heartbeat within the timeout); \
                   its holds were voided, it goes on under a new id");
            *self.id.lock().unwrap_or_else(PoisonError::into_inner) = renewed;
        }
        *self.last_beat.lock().unwrap_or_else(PoisonError::into_inner) = started;
        Ok(())
    }

    async fn sweep(&self, store: &Store) -> Result<(), StoreError> {
        let cutoff = now_ms() - i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        let swept = store.instances().sweep(cutoff).await?;
        if !swept.instances.is_empty() {
            warn!(replicas = ?swept.instances, voided_nanos = swept.voided_nanos,
                  "voided the holds of replicas that stopped beating");
        }
        Ok(())
    }

    /// Leaves: voids what this replica still holds (nothing, once its leases were given
    /// back) and forgets it.
    pub(crate) async fn retire(&self, store: &Store) {
        let id = self.id();
        match store.instances().retire(&id).await {
            Ok(voided) if voided > 0 => warn!(voided_nanos = voided, "voided holds left at shutdown"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot retire this replica; its holds are voided once its beat expires"),
        }
    }
}

fn new_id() -> Arc<str> {
    Arc::from(uuid::Uuid::new_v4().simple().to_string())
}

/// Wall-clock time: beats are compared across processes (and machines), not on the
/// domain's clock.
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
