//! Notices between the processes on one database: PostgreSQL's `NOTIFY`, so that what one
//! replica changes (a key deleted, a user disabled, a price) leaves every replica's caches
//! at once, and a replica short of a user's money can ask the others for what their leases
//! hold unused. SQLite has no such thing: there, a cached answer lives out its
//! time-to-live (and one process serves).

use sqlx::postgres::PgListener;

use crate::{Store, StoreError};

/// What a notice is about; each is a channel of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Changes to what the Control Plane caches.
    Changes,
    /// Requests to give unused leases back.
    Leases,
}

impl Channel {
    const ALL: [Channel; 2] = [Channel::Changes, Channel::Leases];

    fn name(self) -> &'static str {
        match self {
            Channel::Changes => "tensormesh_changes",
            Channel::Leases => "tensormesh_leases",
        }
    }
}

/// One notice: its channel and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub channel: Channel,
    pub payload: String,
}

/// Notices from the processes on the database, in order, on one connection.
pub struct Notices(PgListener);

impl Notices {
    /// The next notice; `None` when the connection was lost and made again, so notices may
    /// have been missed meanwhile (forget whatever they could have been about).
    pub async fn next(&mut self) -> Result<Option<Notice>, StoreError> {
        loop {
            let Some(n) = self.0.try_recv().await? else { return Ok(None) };
            if let Some(channel) = Channel::ALL.into_iter().find(|c| c.name() == n.channel()) {
                return Ok(Some(Notice { channel, payload: n.payload().to_owned() }));
            }
        }
    }
}

impl Store {
    /// Tells every process listening on `channel` of this database (itself included) about
    /// `notice`. Nothing on SQLite.
    pub async fn notify(&self, channel: Channel, notice: &str) -> Result<(), StoreError> {
        if self.postgres_url.is_some() {
            sqlx::query("SELECT pg_notify($1, $2)").bind(channel.name()).bind(notice).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Listens for notices on every channel, on one connection; None on SQLite.
    pub async fn notices(&self) -> Result<Option<Notices>, StoreError> {
        let Some(url) = &self.postgres_url else { return Ok(None) };
        let mut listener = PgListener::connect(url).await?;
        listener.listen_all(Channel::ALL.map(Channel::name)).await?;
        Ok(Some(Notices(listener)))
    }
}
