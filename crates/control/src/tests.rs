//! The domain against real databases (SQLite and PostgreSQL) with a manual clock.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use crate::accounts::{Bootstrap, NewUser};
use crate::clock::ManualClock;
use crate::login::{Exchange, Tokens};
use crate::throttle::Attempt;
use crate::{Control, ControlError, Principal, Role, Settings};

async fn controls() -> Vec<(&'static str, Control, Arc<ManualClock>)> {
    let mut out = Vec::new();
    for db in tm_testkit::all().await {
        let clock = Arc::new(ManualClock::starting_now());
        let store = tm_store::Store::open(&db.url).await.unwrap();
        out.push((db.kind, Control::new(store, clock.clone(), Settings::default()), clock));
    }
    out
}

async fn user(control: &Control, email: &str, role: Role) -> Principal {
    let new = NewUser {
        email: email.into(),
        password: "correct horse".into(),
        role,
        first_name: String::new(),
        last_name: String::new(),
    };
    let row = control.accounts().create(new).await.unwrap();
    Principal { user_id: row.id, role }
}

async fn log_in(control: &Control, email: &str) -> Tokens {
    let started = control.logins().start(None).await.unwrap();
    assert!(matches!(control.logins().exchange(&started.cli_code, None).await.unwrap(), Exchange::Pending));
    control.logins().approve(started.link(), Attempt { email, address: None }, "correct horse").await.unwrap();
    match control.logins().exchange(&started.cli_code, None).await.unwrap() {
        Exchange::Granted(tokens) => {
            assert!(matches!(control.logins().exchange(&started.cli_code, None).await.unwrap(), Exchange::Invalid));
            tokens
        }
        other => panic!("not granted: {other:?}"),
    }
}

#[tokio::test]
async fn bootstrap_creates_one_super_admin_with_a_working_key() {
    for (kind, control, _) in controls().await {
        let b = Bootstrap {
            email: Some("Root@Example.com".into()),
            password: None,
            api_key: Some("operator-chosen-key-123".into()),
        };
        let made = control.accounts().bootstrap(b.clone()).await.unwrap().unwrap();
        assert_eq!((made.user.email.as_str(), made.user.role.as_str()), ("root@example.com", "USER_ROLE_SUPER_ADMIN"));
        assert!(made.generated_password.is_some() && made.generated_api_key.is_none());
        let who = control.keys().authenticate("operator-chosen-key-123").await.unwrap().principal;
        assert_eq!(who.user_id, made.user.id, "{kind}");
        assert!(control.accounts().bootstrap(b).await.unwrap().is_none(), "{kind}: bootstrapped twice");
    }
}

#[tokio::test]
async fn duplicate_emails_are_refused() {
    for (kind, control, _) in controls().await {
        user(&control, "a@x.io", Role::User).await;
        let again = NewUser {
            email: " A@X.io ".into(),
            password: "whatever12".into(),
            role: Role::User,
            first_name: String::new(),
            last_name: String::new(),
        };
        let err = control.accounts().create(again).await.unwrap_err();
        assert!(matches!(&err, ControlError::AlreadyExists(m) if m.contains("a@x.io")), "{kind}: {err:?}");
    }
}

#[tokio::test]
async fn access_tokens_expire_and_refresh_tokens_rotate() {
    for (kind, control, clock) in controls().await {
        let alice = user(&control, "alice@x.io", Role::User).await;
        let tokens = log_in(&control, "alice@x.io").await;
        assert_eq!(control.logins().authenticate(&tokens.access_token).await.unwrap(), alice);

        clock.advance_secs(3601);
        assert!(
            matches!(control.logins().authenticate(&tokens.access_token).await, Err(ControlError::Unauthenticated)),
            "{kind}"
        );

        let second = control.logins().refresh(&tokens.refresh_token).await.unwrap();
        assert_eq!(control.logins().authenticate(&second.access_token).await.unwrap(), alice);
        // The old refresh token is spent; replaying it revokes the whole session.
        assert!(control.logins().refresh(&tokens.refresh_token).await.is_err(), "{kind}");
        assert!(control.logins().authenticate(&second.access_token).await.is_err(), "{kind}: family not revoked");
        assert!(control.logins().refresh(&second.refresh_token).await.is_err(), "{kind}");
    }
}

#[tokio::test]
async fn login_requests_fail_on_wrong_password_denial_and_expiry() {
    for (kind, control, clock) in controls().await {
        user(&control, "bob@x.io", Role::User).await;
        let started = control.logins().start(None).await.unwrap();
        let wrong = control
            .logins()
            .approve(started.link(), Attempt { email: "bob@x.io", address: None }, "wrong password")
            .await;
        assert!(matches!(wrong, Err(ControlError::Unauthenticated)), "{kind}");
        let nobody = control
            .logins()
            .approve(started.link(), Attempt { email: "nobody@x.io", address: None }, "correct horse")
            .await;
        assert!(matches!(nobody, Err(ControlError::Unauthenticated)), "{kind}");

        control.logins().deny(started.link(), None).await.unwrap();
        assert!(matches!(control.logins().exchange(&started.cli_code, None).await.unwrap(), Exchange::Denied));

        let late = control.logins().start(None).await.unwrap();
        clock.advance_secs(601);
        assert!(matches!(control.logins().exchange(&late.cli_code, None).await.unwrap(), Exchange::Expired), "{kind}");
        assert!(control
            .logins()
            .approve(late.link(), Attempt { email: "bob@x.io", address: None }, "correct horse")
            .await
            .is_err());

        let forged = format!("{}_{}", late.request_id, "A".repeat(32));
        assert!(matches!(control.logins().exchange(&forged, None).await.unwrap(), Exchange::Invalid), "{kind}");
    }
}

/// The sign-in link needs its user code: without it (a stranger who learned the request id)
/// nothing can be seen, denied or approved; with it, the page shows the code and where the
/// request came from (RFC 8628 §5.4).
#[tokio::test]
async fn a_login_request_is_answered_only_through_its_whole_link() {
    for (kind, control, _clock) in controls().await {
        user(&control, "bob@x.io", Role::User).await;
        let from: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let started = control.logins().start(Some(from)).await.unwrap();
        let other = if started.user_code == "BBBB-BBBB" { "CCCC-CCCC" } else { "BBBB-BBBB" };
        let stranger = crate::login::Link { request_id: &started.request_id, user_code: other };
        let attempt = Attempt { email: "bob@x.io", address: None };

        assert!(control.logins().find(stranger, None).await.unwrap().is_none(), "{kind}");
        assert!(control.logins().deny(stranger, None).await.is_err(), "{kind}: a stranger denied");
        assert!(control.logins().approve(stranger, attempt.clone(), "correct horse").await.is_err(), "{kind}");
        assert!(matches!(control.logins().exchange(&started.cli_code, None).await.unwrap(), Exchange::Pending));

        let typed = started.user_code.to_lowercase().replace('-', " - ");
        let link = crate::login::Link { request_id: &started.request_id, user_code: &typed };
        let page = control.logins().find(link, None).await.unwrap().unwrap_or_else(|| panic!("{kind}: not found"));
        assert_eq!(page.user_code, started.user_code, "{kind}");
        assert_eq!(page.started_from.as_deref(), Some("192.0.2.7"), "{kind}");
        assert!(page.pending, "{kind}");
        control.logins().approve(started.link(), attempt, "correct horse").await.unwrap();
        assert!(!control.logins().find(link, None).await.unwrap().unwrap().pending, "{kind}");
    }
}

#[tokio::test]
async fn api_keys_are_private_revocable_and_expire() {
    for (kind, control, clock) in controls().await {
        let alice = user(&control, "alice@x.io", Role::User).await;
        let bob = user(&control, "bob@x.io", Role::User).await;
        let key = control.keys().create(&alice, None, "ci".into(), vec!["inference".into()], None).await.unwrap();
        assert_eq!(control.keys().authenticate(&key.token).await.unwrap().principal, alice);

        // Bob can neither see nor delete it, not even by naming Alice.
        assert!(control.keys().list(&bob, None, true).await.unwrap().is_empty(), "{kind}");
        assert!(matches!(
            control.keys().list(&bob, Some(&alice.user_id), false).await,
            Err(ControlError::PermissionDenied(_))
        ));
        assert!(matches!(control.keys().delete(&bob, None, &key.key.public_id).await, Err(ControlError::NotFound(_))));

        // A wrong secret behind a real public id fails like an unknown key.
        let forged = format!("{}_{}", key.key.public_id, "B".repeat(32));
        assert!(matches!(control.keys().authenticate(&forged).await, Err(ControlError::Unauthenticated)), "{kind}");

        // Deleting by what the list shows revokes at once (the cache is warm).
        let listed = control.keys().list(&alice, None, false).await.unwrap();
        assert_eq!(listed[0].public_id, key.key.public_id);
        control.keys().delete(&alice, None, &listed[0].public_id).await.unwrap();
        assert!(control.keys().authenticate(&key.token).await.is_err(), "{kind}: revoked key still works");
        control.keys().delete(&alice, None, &key.token).await.unwrap();

        let soon = crate::clock::Clock::now_ms(clock.as_ref()) + 60_000;
        let short = control.keys().create(&alice, None, "short".into(), Vec::new(), Some(soon)).await.unwrap();
        assert!(control.keys().authenticate(&short.token).await.is_ok());
        clock.advance_secs(61);
        assert!(control.keys().authenticate(&short.token).await.is_err(), "{kind}: expired key still works");
    }
}

#[tokio::test]
async fn operator_limit_changes_are_applied_and_recorded() {
    for (kind, control, _) in controls().await {
        let ann = user(&control, "ann@x.io", Role::User).await;
        control.accounts().set_limits(&ann.user_id, Some(60), None).await.unwrap();
        let limits = control.store().rate_limits().get(&ann.user_id).await.unwrap();
        assert_eq!((limits.requests_per_minute, limits.tokens_per_minute), (Some(60), None), "{kind}");
        // Ann reads it in her own trail, done by the operator.
        let q = crate::activity::Query { action: Some("user.limits_changed"), ..Default::default() };
        let (trail, total) = control.activities().list(&ann, None, q, 1, 10).await.unwrap();
        assert_eq!(total, 1, "{kind}");
        assert_eq!(trail[0].actor, crate::activity::ActorKind::Operator, "{kind}");
        assert_eq!(trail[0].metadata, serde_json::json!({"requestsPerMinute": 60, "tokensPerMinute": null}), "{kind}");
        assert!(control.accounts().set_limits("no-such-user", Some(1), Some(1)).await.is_err(), "{kind}");
        assert_eq!(control.accounts().all().await.unwrap().len(), 1, "{kind}");
    }
}

/// A compromised account can be shut out: a password reset and a role change end every
/// session; logout ends one; a disabled user's sign-in, tokens and API keys are refused at
/// once and work again when enabled; refreshing cannot keep a session past its absolute
/// lifetime.
#[tokio::test]
async fn sessions_end_on_reset_role_change_logout_and_disable() {
    for (kind, control, clock) in controls().await {
        let ann = user(&control, "ann@x.io", Role::User).await;
        let refused = |r: Result<Principal, ControlError>| matches!(r, Err(ControlError::Unauthenticated));

        let a = log_in(&control, "ann@x.io").await;
        let b = log_in(&control, "ann@x.io").await;
        control.accounts().reset_password(&ann.user_id, "another horse").await.unwrap();
        assert!(refused(control.logins().authenticate(&a.access_token).await), "{kind}");
        assert!(refused(control.logins().authenticate(&b.access_token).await), "{kind}");
        assert!(control.logins().refresh(&b.refresh_token).await.is_err(), "{kind}");
        control.accounts().reset_password(&ann.user_id, "correct horse").await.unwrap();

        let c = log_in(&control, "ann@x.io").await;
        control.accounts().set_role(&ann.user_id, Role::Admin).await.unwrap();
        assert!(refused(control.logins().authenticate(&c.access_token).await), "{kind}: role change");

        let d = log_in(&control, "ann@x.io").await;
        let e = log_in(&control, "ann@x.io").await;
        control.logins().logout(&d.refresh_token).await.unwrap();
        control.logins().logout(&d.refresh_token).await.unwrap();
        control.logins().logout("tm_rt_garbage").await.unwrap();
        assert!(refused(control.logins().authenticate(&d.access_token).await), "{kind}: logout");
        assert!(control.logins().authenticate(&e.access_token).await.is_ok(), "{kind}: only that session");

        let key = control.keys().create(&ann, None, "k".into(), Vec::new(), None).await.unwrap().token;
        assert!(control.keys().authenticate(&key).await.is_ok());
        control.accounts().set_disabled(&ann.user_id, true).await.unwrap();
        assert!(refused(control.logins().authenticate(&e.access_token).await), "{kind}: disabled");
        assert!(control.keys().authenticate(&key).await.is_err(), "{kind}: the key is refused at once");
        let started = control.logins().start(None).await.unwrap();
        let attempt = Attempt { email: "ann@x.io", address: None };
        assert!(matches!(
            control.logins().approve(started.link(), attempt.clone(), "correct horse").await,
            Err(ControlError::Unauthenticated)
        ));
        control.accounts().set_disabled(&ann.user_id, false).await.unwrap();
        assert!(control.keys().authenticate(&key).await.is_ok(), "{kind}: enabled again");
        let f = log_in(&control, "ann@x.io").await;

        // Refreshed every 20 days, a session still ends 90 days after its sign-in.
        let mut refresh = f.refresh_token;
        for _ in 0..4 {
            clock.advance_secs(20 * 24 * 3600);
            refresh = control.logins().refresh(&refresh).await.unwrap().refresh_token;
        }
        clock.advance_secs(11 * 24 * 3600);
        assert!(control.logins().refresh(&refresh).await.is_err(), "{kind}: past the absolute lifetime");
    }
}

/// What one user may pile up is bounded: live API keys, live deployments, open tickets
/// and messages per ticket; past each cap a clear refusal, and room again once one goes.
#[tokio::test]
async fn what_one_user_may_pile_up_is_capped() {
    use crate::deployments::{NewDeployment, MAX_DEPLOYMENTS_PER_USER};
    use crate::keys::MAX_KEYS_PER_USER;
    use crate::support::{MAX_MESSAGES_PER_TICKET, MAX_OPEN_TICKETS_PER_USER};
    for (kind, control, _) in controls().await {
        let cap = user(&control, "cap@x.io", Role::User).await;
        let refused = |e: ControlError| matches!(e, ControlError::FailedPrecondition(m) if m.contains("the most"));

        let mut first_key = String::new();
        for i in 0..MAX_KEYS_PER_USER {
            let made = control.keys().create(&cap, None, format!("k{i}"), Vec::new(), None).await.unwrap();
            if i == 0 {
                first_key = made.key.public_id;
            }
        }
        assert!(refused(control.keys().create(&cap, None, "one more".into(), Vec::new(), None).await.unwrap_err()));
        control.keys().delete(&cap, None, &first_key).await.unwrap();
        control.keys().create(&cap, None, "room again".into(), Vec::new(), None).await.unwrap();

        let served = ["m".to_owned()];
        let deploy =
            |i: i64| NewDeployment { model_name: format!("d{i}"), model_path: Some("m".into()), ..Default::default() };
        for i in 0..MAX_DEPLOYMENTS_PER_USER {
            control.deployments().create(&cap, deploy(i), &served).await.unwrap();
        }
        assert!(refused(control.deployments().create(&cap, deploy(-1), &served).await.unwrap_err()), "{kind}");

        let mut first_ticket = String::new();
        for i in 0..MAX_OPEN_TICKETS_PER_USER {
            let t = control.support().open(&cap, None, &format!("t{i}"), "help", None).await.unwrap();
            if i == 0 {
                first_ticket = t.id;
            }
        }
        assert!(refused(control.support().open(&cap, None, "one more", "help", None).await.unwrap_err()));
        for _ in 1..MAX_MESSAGES_PER_TICKET {
            control.support().reply(&cap, &first_ticket, "more").await.unwrap();
        }
        assert!(refused(control.support().reply(&cap, &first_ticket, "too many").await.unwrap_err()), "{kind}");
        control.support().close(&cap, &first_ticket).await.unwrap();
        control.support().open(&cap, None, "room again", "help", None).await.unwrap();
    }
}

#[tokio::test]
async fn the_consoles_overview_and_usage_views_add_up() {
    use tm_money::{Nanos, Price};
    use tm_store::ledger::UsageRow;
    use tm_store::usage::{UsageFilter, DAY_MS};

    for (kind, control, _clock) in controls().await {
        let me = user(&control, "viewer@example.com", Role::User).await;
        let other = user(&control, "other@example.com", Role::User).await;
        control.billing().grant(&me.user_id, 1_000_000_000, "credit").await.unwrap();
        // $1 per million input tokens: a cached token saved 1,000 nano-dollars at that price.
        let price = Price { input: Nanos(1_000_000_000), output: Nanos(2_000_000_000), cached: Nanos(100_000_000) };
        control.pricing().seed(&["m1".to_owned(), "m2".to_owned()], price).await.unwrap();
        let now = control.now_ms();
        let midnight = now / DAY_MS * DAY_MS;
        let row = |id: &str, user: &str, key: &str, model: &str, at: i64, cached: i64, cost: i64| UsageRow {
            request_id: id.into(),
            user_id: user.into(),
            api_key_id: key.into(),
            model: model.into(),
            prompt_tokens: 1_000,
            cached_tokens: cached,
            completion_tokens: 10,
            cost_nanos: cost,
            cache_saving_nanos: 0,
            status: "completed".into(),
            started_at: at - 10,
            finished_at: at,
            usage_source: "engine".into(),
        };
        let rows = [
            row("today-a", &me.user_id, "key-a", "m1", now, 400, 100),
            row("today-cp", &me.user_id, "control-plane:x", "m2", now, 0, 20),
            row("yesterday", &me.user_id, "key-a", "m1", midnight - 1, 100, 3),
            row("ten-days", &me.user_id, "key-b", "m1", now - 10 * DAY_MS, 0, 5_000),
            row("forty-days", &me.user_id, "key-a", "m1", now - 40 * DAY_MS, 900, 70_000),
            row("someone-else", &other.user_id, "key-o", "m1", now, 999, 1),
        ];
        control.store.ledger().settle("test", &rows, &[]).await.unwrap();

        let o = control.billing().overview(&me).await.unwrap();
        assert_eq!(o.spent_today_nanos, 120, "{kind}: since midnight");
        assert_eq!(o.spent_7d_nanos, 123, "{kind}");
        assert_eq!(o.spent_30d_nanos, 5_123, "{kind}");
        assert_eq!(o.cached_tokens_30d, 500, "{kind}: the 40-day-old and the other user's are out");
        assert_eq!(o.cache_saved_30d_nanos, 500 * 1_000, "{kind}: cached tokens at the full input price");
        assert_eq!(o.account.balance_nanos, 1_000_000_000 - 75_123, "{kind}");
        assert_eq!(o.daily.iter().map(|d| d.amount_nanos).sum::<i64>(), 5_123, "{kind}: 30 days of bars");

        let key_a = UsageFilter { api_key_id: Some("key-a".into()), ..UsageFilter::default() };
        let m2 = UsageFilter { model: Some("m2".into()), ..UsageFilter::default() };
        for (filter, expected) in [(UsageFilter::default(), 3), (key_a, 2), (m2, 1)] {
            let days = control.billing().daily_usage(&me, now - 7 * DAY_MS, now + 1, &filter).await.unwrap();
            assert_eq!(days.iter().map(|d| d.requests).sum::<i64>(), expected, "{kind}: {filter:?}");
        }
        let usage = control.billing();
        let too_long = usage.daily_usage(&me, 0, now, &UsageFilter::default()).await;
        assert!(matches!(too_long, Err(ControlError::InvalidArgument { field: "from", .. })), "{kind}");
        let last = usage.keys_last_used(&me).await.unwrap();
        assert_eq!(last.get("key-a"), Some(&now), "{kind}");
        assert_eq!(last.get("key-o"), None, "{kind}: another user's key");
    }
}

#[tokio::test]
async fn console_admin_actions_keep_the_role_rules() {
    for (kind, control, _clock) in controls().await {
        let admin = user(&control, "admin@example.com", Role::Admin).await;
        let other_admin = user(&control, "admin2@example.com", Role::Admin).await;
        let plain = user(&control, "plain@example.com", Role::User).await;
        let new = |email: &str, role| NewUser {
            email: email.into(),
            password: "correct horse".into(),
            role,
            first_name: String::new(),
            last_name: String::new(),
        };
        let accounts = control.accounts();
        fn denied<T>(r: Result<T, ControlError>) -> bool {
            matches!(r, Err(ControlError::PermissionDenied(_)))
        }
        assert!(denied(accounts.create_as(&plain, new("a@example.com", Role::User)).await), "{kind}");
        assert!(denied(accounts.create_as(&admin, new("b@example.com", Role::SuperAdmin)).await), "{kind}");
        assert!(accounts.create_as(&admin, new("c@example.com", Role::User)).await.is_ok(), "{kind}");
        assert!(denied(accounts.set_disabled_as(&admin, &other_admin.user_id, true).await), "{kind}");
        assert!(denied(accounts.set_disabled_as(&plain, &admin.user_id, true).await), "{kind}");
        let own = accounts.set_disabled_as(&admin, &admin.user_id, true).await;
        assert!(matches!(own, Err(ControlError::InvalidArgument { .. })), "{kind}: disabling oneself");
        assert!(accounts.set_disabled_as(&admin, &plain.user_id, true).await.unwrap().disabled_at.is_some());
        assert!(denied(accounts.set_limits_as(&plain, &plain.user_id, Some(1), None).await), "{kind}");
        accounts.set_limits_as(&admin, &plain.user_id, Some(5), Some(0)).await.unwrap();
        // Recorded as the admin, not as the operator.
        let (trail, _) = control
            .activities()
            .list(&admin, Some(&plain.user_id), crate::activity::Query::default(), 1, 10)
            .await
            .unwrap();
        let changed = trail.iter().find(|a| a.action == crate::activity::action::LIMITS_CHANGED).unwrap();
        assert_eq!(changed.actor_id, admin.user_id, "{kind}");
    }
}
