//! Support tickets and their conversations, and reserved-deployment requests.

use sqlx::AnyPool;

use crate::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TicketRow {
    pub id: String,
    pub user_id: String,
    pub subject: String,
    pub r#type: String,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MessageRow {
    pub id: String,
    pub ticket_id: String,
    pub seq: i64,
    pub author_id: String,
    pub author_name: String,
    pub author_role: String,
    pub content: String,
    pub created_at: i64,
}

/// Which tickets a page lists; `None` matches all.
#[derive(Debug, Clone, Default)]
pub struct TicketFilter<'a> {
    pub user_id: Option<&'a str>,
    pub status: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReservedDeploymentRow {
    pub id: String,
    pub user_id: String,
    /// JSON object.
    pub details: String,
    pub created_at: i64,
}

macro_rules! select_tickets {
    ($tail:literal) => {
        concat!("SELECT id, user_id, subject, type, status, created_at, updated_at FROM tickets ", $tail)
    };
}

const CLOSED: &str = "TICKET_STATUS_CLOSED";

pub struct Tickets<'a>(pub(crate) &'a AnyPool);

impl Tickets<'_> {
    /// A new ticket with its first message (`seq` 1), in one transaction.
    pub async fn create(&self, t: &TicketRow, first: &MessageRow) -> Result<(), StoreError> {
        let mut tx = self.0.begin().await?;
        sqlx::query(
            "INSERT INTO tickets (id, user_id, subject, type, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&t.id)
        .bind(&t.user_id)
        .bind(&t.subject)
        .bind(&t.r#type)
        .bind(&t.status)
        .bind(t.created_at)
        .bind(t.updated_at)
        .execute(&mut *tx)
        .await?;
        insert_message(&mut tx, first).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn by_id(&self, id: &str) -> Result<Option<TicketRow>, StoreError> {
        Ok(sqlx::query_as(select_tickets!("WHERE id = $1")).bind(id).fetch_optional(self.0).await?)
    }

    /// Newest first, `limit` rows from `offset`, with the number of matching tickets.
    pub async fn page(
        &self,
        f: &TicketFilter<'_>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<TicketRow>, i64), StoreError> {
        let rows = sqlx::query_as(select_tickets!(
            "WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR status = $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
        ))
        .bind(f.user_id)
        .bind(f.status)
        .bind(limit)
        .bind(offset)
        .fetch_all(self.0)
        .await?;
        let total = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tickets WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR status = $2)",
        )
        .bind(f.user_id)
        .bind(f.status)
        .fetch_one(self.0)
        .await?;
        Ok((rows, total))
    }

    /// The conversations of `ticket_ids`, each in order.
    /// How many messages a ticket holds (counted, not read: they may be long).
    pub async fn message_count(&self, ticket_id: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM ticket_messages WHERE ticket_id = $1")
            .bind(ticket_id)
            .fetch_one(self.0)
            .await?)
    }

    pub async fn messages(&self, ticket_ids: &[String]) -> Result<Vec<MessageRow>, StoreError> {
        let mut out = Vec::new();
        // One query per ticket keeps the SQL literal; pages are small (at most 100).
        for id in ticket_ids {
            let rows: Vec<MessageRow> = sqlx::query_as(
                "SELECT id, ticket_id, seq, author_id, author_name, author_role, content, created_at \
                 FROM ticket_messages WHERE ticket_id = $1 ORDER BY seq",
            )
            .bind(id)
            .fetch_all(self.0)
            .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// Appends `m` (its `seq` is assigned here) unless the ticket is closed. Returns whether
    /// it was appended. The ticket row's update serialises concurrent messages.
    pub async fn append(&self, m: &MessageRow) -> Result<bool, StoreError> {
        let mut tx = self.0.begin().await?;
        let open = sqlx::query("UPDATE tickets SET updated_at = $2 WHERE id = $1 AND status <> $3")
            .bind(&m.ticket_id)
            .bind(m.created_at)
            .bind(CLOSED)
            .execute(&mut *tx)
            .await?;
        if open.rows_affected() != 1 {
            return Ok(false);
        }
        let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM ticket_messages WHERE ticket_id = $1")
            .bind(&m.ticket_id)
            .fetch_one(&mut *tx)
            .await?;
        insert_message(&mut tx, &MessageRow { seq, ..m.clone() }).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Closes the ticket; returns whether it was open.
    pub async fn close(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE tickets SET status = $2, updated_at = $3 WHERE id = $1 AND status <> $2")
            .bind(id)
            .bind(CLOSED)
            .bind(now)
            .execute(self.0)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn insert_reserved_deployment(&self, r: &ReservedDeploymentRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO reserved_deployment_requests (id, user_id, details, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&r.id)
        .bind(&r.user_id)
        .bind(&r.details)
        .bind(r.created_at)
        .execute(self.0)
        .await?;
        Ok(())
    }

    /// Newest first, with the total count.
    pub async fn reserved_deployments(
        &self,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<ReservedDeploymentRow>, i64), StoreError> {
        let rows = sqlx::query_as(
            "SELECT id, user_id, details, created_at FROM reserved_deployment_requests \
             ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(self.0)
        .await?;
        let total = sqlx::query_scalar("SELECT COUNT(*) FROM reserved_deployment_requests").fetch_one(self.0).await?;
        Ok((rows, total))
    }
}

async fn insert_message(tx: &mut sqlx::Transaction<'_, sqlx::Any>, m: &MessageRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ticket_messages (id, ticket_id, seq, author_id, author_name, author_role, content, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&m.id)
    .bind(&m.ticket_id)
    .bind(m.seq)
    .bind(&m.author_id)
    .bind(&m.author_name)
    .bind(&m.author_role)
    .bind(&m.content)
    .bind(m.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
