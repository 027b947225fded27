use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{client, start_servers, KEY, MODEL};
use crate::{admin_login, call, create_user, login};

async fn tokenize(inference: &str, key: &str) -> (u16, String) {
    let r = client()
        .post(format!("{inference}/tokenize"))
        .bearer_auth(key)
        .json(&json!({"model": MODEL, "prompt": "hi"}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn keys_made_on_the_control_plane_work_on_inference_until_deleted() {
    for db in tm_testkit::all().await {
        let s = start_servers(&db, true);
        let inference = s.inference.clone().unwrap();
        let admin = admin_login(&s.control).await;
        assert_eq!(tokenize(&inference, KEY).await.0, 200, "{}: the bootstrap key", db.kind);

        let (status, created) = call(
            &s.control,
            &admin.access,
            Method::POST,
            "/v1/users/api-keys",
            Some(json!({"name": "ci", "scopes": ["inference"], "expiresAt": "2999-01-01T00:00:00Z"})),
        )
        .await;
        assert_eq!(status, 200, "{created}");
        let key = created["apiKey"]["id"].as_str().unwrap().to_owned();
        assert!(key.starts_with("tm_sk_"), "{key}");
        assert_eq!(created["apiKey"]["expiresAt"], "2999-01-01T00:00:00Z");
        assert_eq!(tokenize(&inference, &key).await.0, 200, "{}", db.kind);

        // Listed by public id only; the secret is never shown again.
        let (_, listed) =
            call(&s.control, &admin.access, Method::GET, "/v1/users/api-keys?includeDeleted=True", None).await;
        let ids: Vec<&str> = listed["apiKeys"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap()).collect();
        let public_id = &key[..14];
        assert!(ids.contains(&public_id) && !ids.contains(&key.as_str()), "{ids:?}");

        let (unknown_status, unknown) = tokenize(&inference, &format!("{public_id}_{}", "Z".repeat(32))).await;
        let (_, malformed) = tokenize(&inference, "nonsense").await;
        assert_eq!(unknown_status, 401);
        assert_eq!(unknown, malformed, "every bad key gets the same answer");

        let (status, deleted) =
            call(&s.control, &admin.access, Method::DELETE, &format!("/v1/users/api-keys?apiKey={public_id}"), None)
                .await;
        assert_eq!((status, deleted), (200, json!({"empty": {}})));
        let (revoked_status, revoked) = tokenize(&inference, &key).await;
        assert_eq!((revoked_status, &revoked), (401, &unknown), "{}: revocation must win at once", db.kind);
        // DELETE may be retried by the clients: the second one succeeds too.
        let again =
            call(&s.control, &admin.access, Method::DELETE, &format!("/v1/users/api-keys?apiKey={key}"), None).await;
        assert_eq!(again.0, 200);
        let (_, listed) = call(&s.control, &admin.access, Method::GET, "/v1/users/api-keys", None).await;
        assert_eq!(listed["apiKeys"].as_array().unwrap().len(), 1, "only the bootstrap key is live: {listed}");
    }
}

#[tokio::test]
async fn users_cannot_see_or_touch_each_others_keys() {
    for db in tm_testkit::all().await {
        let s = start_servers(&db, false);
        let admin = admin_login(&s.control).await;
        let (_, listed) = call(&s.control, &admin.access, Method::GET, "/v1/users/api-keys", None).await;
        let admin_key = listed["apiKeys"][0]["id"].as_str().unwrap().to_owned();
        let (_, me) = call(&s.control, &admin.access, Method::GET, "/auth/profile", None).await;
        let admin_id = me["user"]["id"].as_str().unwrap().to_owned();

        create_user(&db, "bob@example.com", "bob-password-1").await;
        let bob = login(&s.control, "bob@example.com", "bob-password-1").await;
        let (status, mine) = call(&s.control, &bob.access, Method::GET, "/v1/users/api-keys", None).await;
        assert_eq!((status, mine), (200, json!({"apiKeys": []})), "{}", db.kind);

        let theirs = format!("/v1/users/api-keys?userId={admin_id}");
        assert_eq!(call(&s.control, &bob.access, Method::GET, &theirs, None).await.0, 403);
        let delete = format!("/v1/users/api-keys?apiKey={admin_key}");
        assert_eq!(call(&s.control, &bob.access, Method::DELETE, &delete, None).await.0, 404, "{}", db.kind);
        let steal = json!({"userId": admin_id, "name": "mine now"});
        assert_eq!(call(&s.control, &bob.access, Method::POST, "/v1/users/api-keys", Some(steal)).await.0, 403);
        assert_eq!(
            call(&s.control, &bob.access, Method::PUT, &format!("/v1/users/{admin_id}"), Some(json!({"company": "x"})))
                .await
                .0,
            403
        );

        let (_, after) = call(&s.control, &admin.access, Method::GET, "/v1/users/api-keys", None).await;
        assert_eq!(after["apiKeys"][0]["id"], admin_key);
        assert!(after["apiKeys"][0].get("deletedAt").is_none(), "{after}");
    }
}

#[tokio::test]
async fn profile_updates_and_terms_acceptance() {
    for db in tm_testkit::all().await {
        let s = start_servers(&db, false);
        create_user(&db, "carol@example.com", "carol-password").await;
        let carol = login(&s.control, "carol@example.com", "carol-password").await;
        let (_, me) = call(&s.control, &carol.access, Method::GET, "/auth/profile", None).await;
        let id = me["user"]["id"].as_str().unwrap().to_owned();
        assert!(me["user"].get("tosAcceptedAt").is_none());

        // Mass assignment: a role in the body is ignored.
        let update = json!({"company": "Acme", "displayName": "C", "userRole": "USER_ROLE_SUPER_ADMIN"});
        let (status, body) =
            call(&s.control, &carol.access, Method::PUT, &format!("/v1/users/{id}"), Some(update)).await;
        assert_eq!((status, body), (200, json!({"empty": {}})), "{}", db.kind);
        let (status, accepted) =
            call(&s.control, &carol.access, Method::POST, "/v1/users/accept-tos", Some(json!({}))).await;
        assert_eq!(status, 200);
        let user: &Value = &accepted["user"];
        assert_eq!((user["company"].as_str(), user["userRole"].as_str()), (Some("Acme"), Some("USER_ROLE_USER")));
        assert!(user["tosAcceptedAt"].as_str().unwrap().ends_with('Z'), "{user}");
    }
}
