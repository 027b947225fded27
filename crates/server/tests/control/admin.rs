use reqwest::Method;
use serde_json::json;

use crate::common::start_servers;
use crate::{admin_login, call, create_user, login};

#[tokio::test]
async fn admin_routes_check_the_role() {
    for db in tm_testkit::all().await {
        let s = start_servers(&db, false);
        let admin = admin_login(&s.control).await;
        let dave_id = create_user(&db, "dave@example.com", "dave-password").await;
        let dave = login(&s.control, "dave@example.com", "dave-password").await;

        let promote = json!({"targetUserId": dave_id, "targetUserRole": "USER_ROLE_ADMIN"});
        assert_eq!(call(&s.control, &dave.access, Method::GET, "/v1/admin/users", None).await.0, 403, "{}", db.kind);
        let (status, body) =
            call(&s.control, &dave.access, Method::POST, "/v1/admin/users/change_role", Some(promote.clone())).await;
        assert_eq!((status, body["code"].as_i64()), (403, Some(7)));

        let (status, page) = call(&s.control, &admin.access, Method::GET, "/v1/admin/users?page=1&size=1", None).await;
        assert_eq!(status, 200);
        assert_eq!(
            (page["page"].as_i64(), page["size"].as_i64(), page["total"].as_str()),
            (Some(1), Some(1), Some("2"))
        );
        assert_eq!(page["users"].as_array().unwrap().len(), 1);

        let (status, promoted) =
            call(&s.control, &admin.access, Method::POST, "/v1/admin/users/change_role", Some(promote)).await;
        assert_eq!((status, promoted["user"]["userRole"].as_str()), (200, Some("USER_ROLE_ADMIN")), "{}", db.kind);
        // Tokens issued for the old role end with the change: Dave signs in again.
        assert_eq!(call(&s.control, &dave.access, Method::GET, "/auth/profile", None).await.0, 401);
        let dave = login(&s.control, "dave@example.com", "dave-password").await;
        let (status, page2) = call(&s.control, &dave.access, Method::GET, "/v1/admin/users?page=2&size=1", None).await;
        assert_eq!((status, page2["users"].as_array().map(Vec::len)), (200, Some(1)));

        // An admin cannot make anyone a super admin; only a super admin can.
        let escalate = json!({"targetUserId": dave_id, "targetUserRole": "USER_ROLE_SUPER_ADMIN"});
        assert_eq!(
            call(&s.control, &dave.access, Method::POST, "/v1/admin/users/change_role", Some(escalate)).await.0,
            403
        );
    }
}

#[tokio::test]
async fn bad_input_gets_a_400_naming_the_field() {
    let db = tm_testkit::sqlite();
    let s = start_servers(&db, false);
    let admin = admin_login(&s.control).await;
    let cases = [
        (Method::POST, "/v1/admin/users/change_role", Some(json!({"targetUserId": "x"})), "targetUserRole"),
        (
            Method::POST,
            "/v1/admin/users/change_role",
            Some(json!({"targetUserId": "x", "targetUserRole": "KING"})),
            "targetUserRole",
        ),
        (Method::GET, "/v1/admin/users?page=abc", None, "page"),
        (Method::GET, "/v1/admin/users?size=100000", None, "size"),
        (Method::GET, "/v1/users/api-keys?includeDeleted=maybe", None, "includeDeleted"),
        (Method::POST, "/v1/users/api-keys", Some(json!({"expiresAt": "soon"})), "expiresAt"),
        (Method::POST, "/v1/users/api-keys", Some(json!({"expiresAt": "2001-01-01T00:00:00Z"})), "expiresAt"),
        (Method::POST, "/v1/users/api-keys", Some(json!({"scopes": "all"})), "scopes"),
        (Method::DELETE, "/v1/users/api-keys", None, "apiKey"),
        (Method::PUT, "/v1/users/whoever", Some(json!({})), "firstName"),
    ];
    for (method, path, body, field) in cases {
        let (status, answer) = call(&s.control, &admin.access, method.clone(), path, body).await;
        let message = answer["message"].as_str().unwrap_or_default();
        assert_eq!((status, answer["code"].as_i64()), (400, Some(3)), "{method} {path}: {answer}");
        assert!(message.contains(field), "{method} {path}: {message:?} does not name {field}");
    }
}

/// What an admin (not a super admin) may not do: mint an API key on another account (and
/// so receive its secret), add to their own balance, or change another admin's role. They
/// still revoke others' keys and credit others, with the reason in the target's trail.
#[tokio::test]
async fn admin_powers_are_bounded() {
    let db = tm_testkit::sqlite();
    let s = start_servers(&db, false);
    let root = admin_login(&s.control).await;
    let adam_id = create_user(&db, "adam@example.com", "adam-password").await;
    let ada_id = create_user(&db, "ada@example.com", "ada-password1").await;
    let dave_id = create_user(&db, "dave@example.com", "dave-password").await;
    for id in [&adam_id, &ada_id] {
        let promote = json!({"targetUserId": id, "targetUserRole": "USER_ROLE_ADMIN"});
        assert_eq!(
            call(&s.control, &root.access, Method::POST, "/v1/admin/users/change_role", Some(promote)).await.0,
            200
        );
    }
    let adam = login(&s.control, "adam@example.com", "adam-password").await;
    let dave = login(&s.control, "dave@example.com", "dave-password").await;

    let mint = json!({"userId": dave_id, "name": "not yours"});
    let (status, body) = call(&s.control, &adam.access, Method::POST, "/v1/users/api-keys", Some(mint)).await;
    assert_eq!((status, body["code"].as_i64()), (403, Some(7)), "{body}");
    let (_, made) =
        call(&s.control, &dave.access, Method::POST, "/v1/users/api-keys", Some(json!({"name": "daves"}))).await;
    let public_id = made["apiKey"]["id"].as_str().unwrap()[..14].to_owned();
    let revoke = format!("/v1/users/api-keys?userId={dave_id}&apiKey={public_id}");
    assert_eq!(call(&s.control, &adam.access, Method::DELETE, &revoke, None).await.0, 200);

    let credit = |target: &str| json!({"targetUserId": target, "amount": 5, "reason": "support ticket 42"});
    let path = "/v1/admin/billing/balances:add";
    let (status, body) = call(&s.control, &adam.access, Method::POST, path, Some(credit(&adam_id))).await;
    assert_eq!((status, body["code"].as_i64()), (403, Some(7)), "{body}");
    assert_eq!(call(&s.control, &adam.access, Method::POST, path, Some(credit(&dave_id))).await.0, 200);
    let (_, trail) =
        call(&s.control, &dave.access, Method::GET, "/v1/activities?action=billing.balance_added", None).await;
    let added = &trail["activities"][0];
    assert_eq!(added["actorId"], adam_id.as_str(), "{trail}");
    assert!(added["description"].as_str().unwrap().contains("support ticket 42"), "{trail}");

    let demote = json!({"targetUserId": ada_id, "targetUserRole": "USER_ROLE_USER"});
    let (status, body) =
        call(&s.control, &adam.access, Method::POST, "/v1/admin/users/change_role", Some(demote.clone())).await;
    assert_eq!((status, body["code"].as_i64()), (403, Some(7)), "{body}");
    assert_eq!(call(&s.control, &root.access, Method::POST, "/v1/admin/users/change_role", Some(demote)).await.0, 200);
}
