//! What one process changes that other processes on the same database cache: sent as a
//! change notice (`Store::notify`, PostgreSQL `NOTIFY`) and applied by every process that
//! follows them ([`Control::apply_notice`]), so that a deleted key, a disabled user or a
//! role change is refused by every replica within the notice's delivery, not the cache's
//! time-to-live.

use tm_store::notices::Channel;
use tracing::{debug, warn};

use crate::Control;

/// A change to what the caches hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// An API key was deleted.
    Key(String),
    /// A user was disabled or enabled, or changed role: every cached key check goes.
    Keys,
    /// A price was created, changed or deleted.
    Prices,
}

impl Change {
    fn encode(&self) -> String {
        match self {
            Change::Key(id) => format!("key:{id}"),
            Change::Keys => "keys".into(),
            Change::Prices => "prices".into(),
        }
    }

    fn decode(notice: &str) -> Option<Change> {
        match notice {
            "keys" => Some(Change::Keys),
            "prices" => Some(Change::Prices),
            other => other.strip_prefix("key:").map(|id| Change::Key(id.to_owned())),
        }
    }
}

impl Control {
    /// Applies `change` to this process's caches, and tells the other processes.
    pub(crate) async fn publish(&self, change: Change) {
        self.apply(&change);
        if let Err(e) = self.store.notify(Channel::Changes, &change.encode()).await {
            warn!(error = %e, ?change, "cannot tell the other replicas; their caches expire on their own");
        }
    }

    fn apply(&self, change: &Change) {
        match change {
            Change::Key(id) => self.key_cache.forget(id),
            Change::Keys => self.key_cache.clear(),
            Change::Prices => self.price_cache.clear(),
        }
    }

    /// Applies a change another process published (a notice on [`Channel::Changes`]).
    pub fn apply_notice(&self, notice: &str) {
        match Change::decode(notice) {
            Some(change) => {
                debug!(?change, "change from a replica");
                self.apply(&change);
            }
            None => warn!(%notice, "unknown change notice"),
        }
    }

    /// Empties the caches that change notices keep fresh: for when notices may have been
    /// missed (a listener lost its connection, or only now started).
    pub fn forget_cached(&self) {
        self.apply(&Change::Keys);
        self.apply(&Change::Prices);
    }
}

#[cfg(test)]
mod tests {
    use super::Change;

    #[test]
    fn changes_round_trip_through_their_notice() {
        for change in [Change::Key("tm_abc".into()), Change::Keys, Change::Prices] {
            assert_eq!(Change::decode(&change.encode()), Some(change));
        }
        assert_eq!(Change::decode("something else"), None);
    }
}
