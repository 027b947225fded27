//! Every repository against a fresh SQLite file and a fresh PostgreSQL database.

#![allow(clippy::unwrap_used)]

use crate::api_keys::ApiKeyRow;
use crate::cli_logins::{CliLoginRow, LoginState};
use crate::sessions::{SessionRow, TokenPair};
use crate::users::{ProfileUpdate, UserRow};
use crate::{Store, StoreError};

pub(crate) async fn stores() -> Vec<(&'static str, Store)> {
    let mut out = Vec::new();
    for db in tm_testkit::all().await {
        out.push((db.kind, Store::open(&db.url).await.unwrap()));
    }
    out
}

pub(crate) fn user(id: &str, email: &str, at: i64) -> UserRow {
    UserRow {
        id: id.into(),
        email: email.into(),
        password_hash: "$argon2id$x".into(),
        first_name: String::new(),
        last_name: String::new(),
        display_name: String::new(),
        company: String::new(),
        role: "USER_ROLE_USER".into(),
        tos_accepted_at: None,
        created_at: at,
        updated_at: at,
        disabled_at: None,
    }
}

fn session(id: &str, user_id: &str) -> SessionRow {
    SessionRow {
        id: id.into(),
        user_id: user_id.into(),
        tokens: TokenPair {
            access_id: format!("{id}-a1"),
            access_digest: "da1".into(),
            access_expires_at: 100,
            refresh_id: format!("{id}-r1"),
            refresh_digest: "dr1".into(),
            refresh_expires_at: 1000,
        },
        created_at: 1,
        revoked_at: None,
    }
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_foreign_keys() {
    let store = Store::open(&tm_testkit::sqlite().url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&store.pool).await.unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
    let orphan = crate::api_keys::ApiKeyRow {
        public_id: "k".into(),
        digest: "d".into(),
        user_id: "nobody".into(),
        name: String::new(),
        scopes: "[]".into(),
        created_at: 1,
        expires_at: None,
        deleted_at: None,
    };
    assert!(store.api_keys().insert(&orphan).await.is_err(), "a key for a missing user was stored");
    store.close().await;
}

#[tokio::test]
async fn users_round_trip_and_unique_email() {
    for (kind, store) in stores().await {
        let users = store.users();
        users.insert(&user("u1", "a@x.io", 1)).await.unwrap();
        users.insert(&user("u2", "b@x.io", 2)).await.unwrap();
        let dup = users.insert(&user("u3", "a@x.io", 3)).await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{kind}: {dup:?}");

        assert_eq!(users.by_email("a@x.io").await.unwrap().unwrap().id, "u1", "{kind}");
        assert!(users.by_id("nope").await.unwrap().is_none());

        let update = ProfileUpdate { company: Some("Acme' OR '1'='1".into()), ..ProfileUpdate::default() };
        assert!(users.update_profile("u1", &update, 5).await.unwrap());
        assert!(!users.update_profile("nope", &update, 5).await.unwrap());
        let u1 = users.by_id("u1").await.unwrap().unwrap();
        assert_eq!((u1.company.as_str(), u1.first_name.as_str(), u1.updated_at), ("Acme' OR '1'='1", "", 5));

        assert_eq!(users.accept_tos("u1", 7).await.unwrap().unwrap().tos_accepted_at, Some(7));
        assert_eq!(users.accept_tos("u1", 9).await.unwrap().unwrap().tos_accepted_at, Some(7), "{kind}");
        assert_eq!(users.set_role("u2", "USER_ROLE_ADMIN", 9).await.unwrap().unwrap().role, "USER_ROLE_ADMIN");

        let (page, total) = users.page(1, 10).await.unwrap();
        assert_eq!((page.len(), page[0].id.as_str(), total), (1, "u2", 2), "{kind}");
        store.close().await;
    }
}

#[tokio::test]
async fn api_keys_are_scoped_to_their_owner() {
    for (kind, store) in stores().await {
        store.users().insert(&user("a", "a@x.io", 1)).await.unwrap();
        store.users().insert(&user("b", "b@x.io", 1)).await.unwrap();
        let key = |id: &str, owner: &str, at| ApiKeyRow {
            public_id: id.into(),
            digest: format!("d-{id}"),
            user_id: owner.into(),
            name: "k".into(),
            scopes: "[]".into(),
            created_at: at,
            expires_at: None,
            deleted_at: None,
        };
        let keys = store.api_keys();
        keys.insert(&key("k1", "a", 1)).await.unwrap();
        keys.insert(&key("k2", "a", 2)).await.unwrap();
        keys.insert(&key("k3", "b", 3)).await.unwrap();

        assert!(!keys.delete("b", "k1", 5).await.unwrap(), "{kind}: b deleted a's key");
        assert!(keys.delete("a", "k1", 5).await.unwrap());
        assert!(keys.delete("a", "k1", 6).await.unwrap(), "{kind}: a repeated delete succeeds");
        assert_eq!(keys.by_public_id("k1").await.unwrap().unwrap().deleted_at, Some(5));

        let live: Vec<_> = keys.of_user("a", false).await.unwrap().into_iter().map(|k| k.public_id).collect();
        assert_eq!(live, ["k2"], "{kind}");
        assert_eq!(keys.of_user("a", true).await.unwrap().len(), 2);
        store.close().await;
    }
}

#[tokio::test]
async fn a_refresh_token_rotates_once() {
    for (kind, store) in stores().await {
        store.users().insert(&user("u", "u@x.io", 1)).await.unwrap();
        let sessions = store.sessions();
        let s = session("s1", "u");
        sessions.insert(&s).await.unwrap();
        let pair = |n: &str| TokenPair {
            access_id: format!("a-{n}"),
            access_digest: "da".into(),
            access_expires_at: 200,
            refresh_id: format!("r-{n}"),
            refresh_digest: "dr".into(),
            refresh_expires_at: 2000,
        };
        assert!(sessions.rotate(&s, &pair("2")).await.unwrap());
        // The same (now stale) session row cannot rotate again.
        assert!(!sessions.rotate(&s, &pair("3")).await.unwrap(), "{kind}");
        assert_eq!(sessions.retired("s1-r1").await.unwrap(), Some(("dr1".into(), "s1".into())));
        assert!(sessions.by_refresh_id("s1-r1").await.unwrap().is_none());
        let now = sessions.by_access_id("a-2").await.unwrap().unwrap();
        assert_eq!(now.tokens.refresh_id, "r-2");

        sessions.revoke("s1", 50).await.unwrap();
        assert_eq!(sessions.by_access_id("a-2").await.unwrap().unwrap().revoked_at, Some(50));
        assert!(!sessions.rotate(&now, &pair("4")).await.unwrap(), "{kind}: a revoked session rotated");
        store.close().await;
    }
}

#[tokio::test]
async fn a_cli_login_is_decided_once_and_consumed_once() {
    for (kind, store) in stores().await {
        store.users().insert(&user("u", "u@x.io", 1)).await.unwrap();
        let logins = store.cli_logins();
        let login = |id: &str| CliLoginRow {
            public_id: id.into(),
            digest: "d".into(),
            state: LoginState::Pending,
            user_id: None,
            created_at: 10,
            expires_at: 100,
            user_code: Some("BCDF-GHJK".into()),
            started_from: Some("192.0.2.7".into()),
        };
        logins.insert(&login("l1")).await.unwrap();
        logins.insert(&login("l2")).await.unwrap();
        logins.insert(&login("l3")).await.unwrap();

        assert!(!logins.decide("l1", Some("u"), 100).await.unwrap(), "{kind}: approved after expiry");
        assert!(logins.decide("l1", Some("u"), 99).await.unwrap());
        assert!(!logins.decide("l1", None, 99).await.unwrap(), "{kind}: decided twice");
        assert!(logins.decide("l2", None, 50).await.unwrap());
        let l1 = logins.get("l1").await.unwrap().unwrap();
        assert_eq!((l1.state, l1.user_id.as_deref()), (LoginState::Approved, Some("u")));
        assert_eq!((l1.user_code.as_deref(), l1.started_from.as_deref()), (Some("BCDF-GHJK"), Some("192.0.2.7")));

        assert!(!logins.consume("l3", &session("s0", "u")).await.unwrap(), "{kind}: pending consumed");
        assert!(!logins.consume("l2", &session("s0", "u")).await.unwrap(), "{kind}: denied consumed");
        assert!(logins.consume("l1", &session("s1", "u")).await.unwrap());
        assert!(!logins.consume("l1", &session("s2", "u")).await.unwrap(), "{kind}: consumed twice");
        assert!(store.sessions().by_access_id("s2-a1").await.unwrap().is_none());
        assert_eq!(logins.get("l1").await.unwrap().unwrap().state, LoginState::Consumed);
        store.close().await;
    }
}

/// `ping` (what `GET /ready` asks) answers while the database does, and fails once the
/// connections are gone.
#[tokio::test]
async fn ping_answers_until_the_database_is_gone() {
    for (kind, store) in stores().await {
        store.ping().await.unwrap_or_else(|e| panic!("{kind}: {e}"));
        store.close().await;
        assert!(store.ping().await.is_err(), "{kind}: a closed pool still answered");
    }
}
