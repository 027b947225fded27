use reqwest::Method;
use serde_json::Value;

use crate::common::{client, start_servers, start_with, Engine, Options, ADMIN_EMAIL, ADMIN_PASSWORD};
use crate::{admin_login, approve, call, create_user, exchange, link, login, post_form, refresh};

#[tokio::test]
async fn browser_login_then_profile_refresh_and_expiry() {
    for db in tm_testkit::all().await {
        let s = start_servers(&db, false);
        let session = admin_login(&s.control).await;

        let (status, me) = call(&s.control, &session.access, Method::GET, "/auth/profile", None).await;
        assert_eq!(status, 200, "{}: {me}", db.kind);
        assert_eq!(me["user"]["userEmail"], ADMIN_EMAIL);
        assert_eq!(me["user"]["userRole"], "USER_ROLE_SUPER_ADMIN");

        let refreshed = refresh(&s.control, &session.refresh).await;
        assert_eq!(refreshed.status(), 200);
        let refreshed: Value = refreshed.json().await.unwrap();
        let new_access = refreshed["access_token"].as_str().unwrap();
        assert_eq!(call(&s.control, new_access, Method::GET, "/auth/profile", None).await.0, 200);

        // The old refresh token is spent: 401, and the session it belonged to ends.
        let reused = refresh(&s.control, &session.refresh).await;
        assert_eq!(reused.status(), 401, "{}", db.kind);
        assert_eq!(call(&s.control, new_access, Method::GET, "/auth/profile", None).await.0, 401);

        // Access tokens expire.
        let fresh = admin_login(&s.control).await;
        s.clock.advance_secs(3601);
        let (status, body) = call(&s.control, &fresh.access, Method::GET, "/auth/profile", None).await;
        assert_eq!((status, body["code"].as_i64()), (401, Some(16)), "{}: {body}", db.kind);
    }
}

#[tokio::test]
async fn wrong_passwords_denials_and_bad_codes_fail() {
    for db in tm_testkit::all().await {
        let s = start_servers(&db, false);
        let started: Value =
            client().post(format!("{}/auth/cli/start", s.control)).send().await.unwrap().json().await.unwrap();
        let code = started["cli_code"].as_str().unwrap();
        let link = link(started["auth_url"].as_str().unwrap()).to_owned();
        let request = link.split('&').next().unwrap().trim_start_matches("request=").to_owned();

        let wrong = approve(&s.control, &link, ADMIN_EMAIL, "not the password").await;
        assert_eq!(wrong.status(), 401);
        assert!(wrong.text().await.unwrap().contains("Wrong email or password"));
        let unconfirmed = post_form(
            &s.control,
            &link,
            &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD), ("action", "approve")],
        )
        .await;
        assert_eq!(unconfirmed.status(), 400, "approved without comparing the codes");
        assert!(unconfirmed.text().await.unwrap().contains("tick the box"));
        assert_eq!(exchange(&s.control, code).await.status(), 202, "{}", db.kind);

        // A stranger with the request id but not the code sees nothing and denies nothing.
        let stranger = format!("request={request}&code=BCDF-GHJK");
        let page = client().get(format!("{}/auth/cli/login?{stranger}", s.control)).send().await.unwrap();
        assert_eq!(page.status(), 404, "{}", db.kind);
        assert_eq!(post_form(&s.control, &stranger, &[("action", "deny")]).await.status(), 400);
        assert_eq!(exchange(&s.control, code).await.status(), 202, "{}: a stranger denied it", db.kind);

        let denied = post_form(&s.control, &link, &[("action", "deny")]).await;
        assert_eq!(denied.status(), 200);
        let answer = exchange(&s.control, code).await;
        assert_eq!(answer.status(), 400);
        assert_eq!(answer.json::<Value>().await.unwrap()["error"], "access_denied", "{}", db.kind);

        for bad in ["", "tm_cli_nope", &format!("{request}_{}", "x".repeat(32))] {
            assert_eq!(exchange(&s.control, bad).await.status(), 400, "{bad:?}");
        }
        let unknown_page =
            client().get(format!("{}/auth/cli/login?request=tm_cli_nothing1", s.control)).send().await.unwrap();
        assert_eq!(unknown_page.status(), 404);
        let no_token = client().get(format!("{}/auth/profile", s.control)).send().await.unwrap();
        assert_eq!(no_token.status(), 401);
        assert!(no_token.headers().contains_key("x-request-id"));
    }
}

/// Password guessing on the sign-in page: a request that cannot be approved answers the
/// same whatever the password (no oracle); five wrong passwords are free, the sixth locks
/// the account for a second, doubling after; while locked even the right password is told
/// only to wait (429 with Retry-After), checked against no hash; then it works. Starting
/// logins is limited per address.
#[tokio::test]
async fn password_guessing_is_throttled_and_answers_alike() {
    let db = tm_testkit::sqlite();
    let s = start_servers(&db, false);
    let start = || async {
        let r = client().post(format!("{}/auth/cli/start", s.control)).send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or_default();
        (status, body["auth_url"].as_str().map(|u| link(u).to_owned()))
    };
    let (_, request) = start().await;
    let request = request.unwrap();

    let bogus = "request=tm_cli_notarequest1&code=BCDF-GHJK";
    let right = approve(&s.control, bogus, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (right_status, right_text) = (right.status(), right.text().await.unwrap());
    let wrong = approve(&s.control, bogus, ADMIN_EMAIL, "not the password").await;
    assert_eq!((wrong.status(), wrong.text().await.unwrap()), (right_status, right_text.clone()));
    assert_eq!(right_status, 400, "{right_text}");

    for i in 1..=6 {
        let r = approve(&s.control, &request, ADMIN_EMAIL, &format!("guess {i}")).await;
        assert_eq!(r.status(), 401, "guess {i}");
    }
    let locked = approve(&s.control, &request, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(locked.status(), 429);
    assert_eq!(locked.headers()["retry-after"], "1");
    assert!(locked.text().await.unwrap().contains("Too many sign-in attempts"));
    // An unknown email is held back the same way (no telling accounts apart).
    for i in 1..=6 {
        assert_eq!(approve(&s.control, &request, "nobody@example.com", &format!("guess {i}")).await.status(), 401);
    }
    assert_eq!(approve(&s.control, &request, "nobody@example.com", "x").await.status(), 429);

    s.clock.advance_secs(2);
    assert_eq!(approve(&s.control, &request, ADMIN_EMAIL, ADMIN_PASSWORD).await.status(), 200);

    // Logins started from one address: 60 a minute (one was started above).
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(start().await.0);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 59, "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429));
}

/// `POST /auth/cli/logout` (what `tm auth logout` calls) ends the refresh token's session:
/// its access token is refused at once; an unknown token answers the same.
#[tokio::test]
async fn logout_ends_the_session() {
    let db = tm_testkit::sqlite();
    let s = start_servers(&db, false);
    let session = admin_login(&s.control).await;
    let other = admin_login(&s.control).await;
    for token in [session.refresh.as_str(), session.refresh.as_str(), "tm_rt_unknown"] {
        let r = client()
            .post(format!("{}/auth/cli/logout", s.control))
            .json(&serde_json::json!({"refresh_token": token}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap(), serde_json::json!({"empty": {}}));
    }
    assert_eq!(call(&s.control, &session.access, Method::GET, "/auth/profile", None).await.0, 401);
    assert_eq!(refresh(&s.control, &session.refresh).await.status(), 401);
    assert_eq!(call(&s.control, &other.access, Method::GET, "/auth/profile", None).await.0, 200);
}

/// Signed-in Control Plane requests are limited per user per minute: the next one gets 429
/// with `Retry-After`, another user is not held back, and the next minute counts afresh.
#[tokio::test]
async fn signed_in_requests_are_limited_per_user() {
    let db = tm_testkit::sqlite();
    let options = Options { control_requests_per_minute: 5, ..Options::default() };
    let s = start_with(&db, Engine::None, options);
    let admin = admin_login(&s.control).await;
    create_user(&db, "pat@example.com", "pat's password").await;
    let pat = login(&s.control, "pat@example.com", "pat's password").await;

    for i in 1..=5 {
        assert_eq!(call(&s.control, &admin.access, Method::GET, "/auth/profile", None).await.0, 200, "call {i}");
    }
    let over = client().get(format!("{}/auth/profile", s.control)).bearer_auth(&admin.access).send().await.unwrap();
    assert_eq!(over.status(), 429);
    let wait: u64 = over.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let body: Value = over.json().await.unwrap();
    assert_eq!(body["code"], 8, "{body}");
    assert!(body["message"].as_str().unwrap().contains("Too many Control Plane requests"), "{body}");

    assert_eq!(call(&s.control, &pat.access, Method::GET, "/auth/profile", None).await.0, 200, "another user");
    s.clock.advance_secs(61);
    assert_eq!(call(&s.control, &admin.access, Method::GET, "/auth/profile", None).await.0, 200);
}
