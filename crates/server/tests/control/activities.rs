//! The audit trail: the server writes an activity for each state-changing action; users
//! read the ones on their data, admins all; filters and pages.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::start_servers;
use crate::{admin_login, call, create_user, login};

fn actions(page: &Value) -> Vec<String> {
    page["activities"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn state_changes_are_recorded_and_read_by_their_owner_and_admins() {
    for db in tm_testkit::all().await {
        let s = start_servers(&db, false);
        let cp = s.control.as_str();
        let admin = admin_login(cp).await;
        let eve_id = create_user(&db, "eve@example.com", "eve-password").await;
        create_user(&db, "fay@example.com", "fay-password").await;
        // The users were made with the system clock, the server's runs from its start.
        s.clock.advance_secs(60);
        let eve = login(cp, "eve@example.com", "eve-password").await;
        let fay = login(cp, "fay@example.com", "fay-password").await;

        let (_, key) =
            call(cp, &eve.access, Method::POST, "/v1/users/api-keys", Some(json!({"userId": eve_id, "name": "ci"})))
                .await;
        let (_, keys) = call(cp, &eve.access, Method::GET, "/v1/users/api-keys", None).await;
        let public_id = keys["apiKeys"][0]["id"].as_str().unwrap().to_owned();
        assert!(key["apiKey"]["id"].as_str().unwrap().starts_with(&public_id), "{key}");
        call(cp, &eve.access, Method::DELETE, &format!("/v1/users/api-keys?apiKey={public_id}"), None).await;
        call(cp, &eve.access, Method::PUT, &format!("/v1/users/{eve_id}"), Some(json!({"company": "Eve Inc"}))).await;
        let add = json!({"targetUserId": eve_id, "amount": 5});
        assert_eq!(call(cp, &admin.access, Method::POST, "/v1/admin/billing/balances:add", Some(add)).await.0, 200);
        call(cp, &eve.access, Method::POST, "/v1/support/tickets", Some(json!({"subject": "s", "message": "m"}))).await;

        // Newest first, each with its actor; the admin's top-up shows in Eve's trail.
        let (status, page) = call(cp, &eve.access, Method::GET, "/v1/activities", None).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(
            actions(&page),
            [
                "ticket.opened",
                "billing.balance_added",
                "user.profile_updated",
                "api_key.revoked",
                "api_key.created",
                "user.login",
                "user.created"
            ],
            "({})",
            db.kind
        );
        assert_eq!((page["total"].as_str(), page["page"].as_i64()), (Some("7"), Some(1)));
        let top_up = &page["activities"][1];
        assert_eq!(
            (top_up["actorDisplay"].as_str(), top_up["userId"].as_str()),
            (Some("admin@example.com"), Some(eve_id.as_str()))
        );
        assert_eq!(top_up["description"], "Added 5 USD to the balance");
        assert_eq!(page["activities"][3]["resourceId"].as_str(), Some(public_id.as_str()));
        assert_eq!(page["activities"][6]["actorType"], "ACTOR_TYPE_SYSTEM");

        // Filters and pages.
        let (_, keys_only) =
            call(cp, &eve.access, Method::GET, "/v1/activities?resourceType=api_key&size=1&page=2", None).await;
        assert_eq!((actions(&keys_only), keys_only["total"].as_str()), (vec!["api_key.created".to_owned()], Some("2")));
        let (_, by_action) = call(cp, &eve.access, Method::GET, "/v1/activities?action=user.login", None).await;
        assert_eq!(actions(&by_action), ["user.login"]);
        let by_resource = format!("/v1/activities?resourceId={public_id}");
        assert_eq!(actions(&call(cp, &eve.access, Method::GET, &by_resource, None).await.1).len(), 2);
        let future = "/v1/activities?startTime=2999-01-01T00:00:00Z";
        assert_eq!(call(cp, &eve.access, Method::GET, future, None).await.1["total"], "0");
        let (_, before) = call(cp, &eve.access, Method::GET, "/v1/activities?endTime=2000-01-01T00:00:00Z", None).await;
        assert_eq!(before["activities"], json!([]));

        // One at a time; another user's is not found, and Fay's list is hers alone.
        let id = page["activities"][0]["activityId"].as_str().unwrap();
        let (status, one) = call(cp, &eve.access, Method::GET, &format!("/v1/activities/{id}"), None).await;
        assert_eq!((status, one["activity"]["action"].as_str()), (200, Some("ticket.opened")));
        assert_eq!(call(cp, &fay.access, Method::GET, &format!("/v1/activities/{id}"), None).await.0, 404);
        let (_, fays) = call(cp, &fay.access, Method::GET, "/v1/activities", None).await;
        assert_eq!(actions(&fays), ["user.login", "user.created"]);
        assert_eq!(call(cp, &fay.access, Method::GET, &format!("/v1/activities?userId={eve_id}"), None).await.0, 403);

        // Admins read one user's trail or everyone's.
        let (_, evea) = call(cp, &admin.access, Method::GET, &format!("/v1/activities?userId={eve_id}"), None).await;
        assert_eq!(evea["total"], "7");
        let (_, all) = call(cp, &admin.access, Method::GET, "/v1/activities?size=500", None).await;
        assert!(all["total"].as_str().unwrap().parse::<u32>().unwrap() >= 10, "{all}");
        assert_eq!(call(cp, &admin.access, Method::GET, &format!("/v1/activities/{id}"), None).await.0, 200);

        let (status, bad) = call(cp, &eve.access, Method::GET, "/v1/activities?startTime=yesterday", None).await;
        assert_eq!(status, 400);
        assert!(bad["message"].as_str().unwrap().contains("startTime"), "{bad}");
    }
}
