//! Support tickets and reserved-deployment requests: the conversation, who sees what
//! (requester and admins only; other users get 404), closing, and bad input.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::start_servers;
use crate::{admin_login, call, create_user, login};

#[tokio::test]
async fn tickets_are_a_conversation_between_the_requester_and_admins() {
    for db in tm_testkit::all().await {
        let s = start_servers(&db, false);
        let cp = s.control.as_str();
        let admin = admin_login(cp).await;
        let ann_id = create_user(&db, "ann@example.com", "ann-password").await;
        create_user(&db, "bob@example.com", "bob-password").await;
        let ann = login(cp, "ann@example.com", "ann-password").await;
        let bob = login(cp, "bob@example.com", "bob-password").await;

        let new = json!({"subject": "Invoice question", "message": "Where is my invoice?", "type": "billing"});
        let (status, created) = call(cp, &ann.access, Method::POST, "/v1/support/tickets", Some(new)).await;
        assert_eq!(status, 200, "{created} ({})", db.kind);
        let t = &created["ticket"];
        let id = t["ticketId"].as_str().unwrap().to_owned();
        assert_eq!(
            (t["status"].as_str(), t["type"].as_str(), t["requesterUserId"].as_str()),
            (Some("TICKET_STATUS_OPEN"), Some("TICKET_TYPE_BILLING"), Some(ann_id.as_str()))
        );
        let first = &t["conversations"][0];
        assert_eq!(
            (first["content"].as_str(), first["userRole"].as_str()),
            (Some("Where is my invoice?"), Some("USER_ROLE_USER"))
        );
        assert_eq!(first["userName"], "Test", "the author's name");
        call(cp, &bob.access, Method::POST, "/v1/support/tickets", Some(json!({"subject": "Bob's", "message": "hi"})))
            .await;

        // Bob cannot see, answer or close Ann's ticket, nor learn that it exists.
        let path = format!("/v1/support/tickets/{id}");
        for (method, p, body) in [
            (Method::GET, path.clone(), None),
            (Method::POST, format!("{path}/messages"), Some(json!({"message": {"content": "mine now"}}))),
            (Method::DELETE, path.clone(), None),
        ] {
            let (status, body) = call(cp, &bob.access, method, &p, body).await;
            assert_eq!((status, body["code"].as_i64()), (404, Some(5)), "{p}: {body}");
        }
        let (_, bobs) = call(cp, &bob.access, Method::GET, "/v1/support/tickets", None).await;
        assert_eq!((bobs["total"].as_str(), bobs["tickets"][0]["subject"].as_str()), (Some("1"), Some("Bob's")));
        let spy = format!("/v1/support/tickets?userId={ann_id}");
        assert_eq!(call(cp, &bob.access, Method::GET, &spy, None).await.0, 403);

        // Admins see every ticket (or one user's) and answer.
        let (_, all) = call(cp, &admin.access, Method::GET, "/v1/support/tickets?size=1", None).await;
        assert_eq!(
            (all["total"].as_str(), all["size"].as_i64(), all["tickets"].as_array().unwrap().len()),
            (Some("2"), Some(1), 1)
        );
        let (_, anns) = call(cp, &admin.access, Method::GET, &spy, None).await;
        assert_eq!(anns["total"], "1");
        let reply = json!({"message": {"content": "Attached."}});
        let (status, answered) = call(cp, &admin.access, Method::POST, &format!("{path}/messages"), Some(reply)).await;
        assert_eq!(status, 200, "{answered}");
        let conv = answered["ticket"]["conversations"].as_array().unwrap();
        assert_eq!(conv.len(), 2);
        assert_eq!(
            (conv[1]["content"].as_str(), conv[1]["userRole"].as_str()),
            (Some("Attached."), Some("USER_ROLE_SUPER_ADMIN"))
        );

        // Ann reads the answer, closes the ticket; a closed ticket takes no more messages.
        let (_, got) = call(cp, &ann.access, Method::GET, &path, None).await;
        assert_eq!(got["ticket"]["conversations"][1]["content"], "Attached.");
        let (status, closed) = call(cp, &ann.access, Method::DELETE, &path, None).await;
        assert_eq!((status, closed["ticket"]["status"].as_str()), (200, Some("TICKET_STATUS_CLOSED")));
        assert_eq!(call(cp, &ann.access, Method::DELETE, &path, None).await.0, 200, "closing again is harmless");
        let (status, refused) =
            call(cp, &ann.access, Method::POST, &format!("{path}/messages"), Some(json!({"message": "more"}))).await;
        assert_eq!((status, refused["code"].as_i64()), (400, Some(9)), "{refused}");
        let (_, open) =
            call(cp, &admin.access, Method::GET, "/v1/support/tickets?status=TICKET_STATUS_OPEN", None).await;
        assert_eq!(open["total"], "1");
        let (_, closed) = call(cp, &admin.access, Method::GET, "/v1/support/tickets?status=closed", None).await;
        assert_eq!(closed["tickets"][0]["ticketId"].as_str(), Some(id.as_str()));
    }
}

#[tokio::test]
async fn bad_ticket_input_gets_a_400_naming_the_field() {
    let db = tm_testkit::sqlite();
    let s = start_servers(&db, false);
    let admin = admin_login(&s.control).await;
    let long = "x".repeat(201);
    let cases = [
        (Method::POST, "/v1/support/tickets", Some(json!({"message": "m"})), "subject"),
        (Method::POST, "/v1/support/tickets", Some(json!({"subject": "s"})), "message"),
        (Method::POST, "/v1/support/tickets", Some(json!({"subject": "s", "message": "  "})), "message"),
        (Method::POST, "/v1/support/tickets", Some(json!({"subject": long, "message": "m"})), "subject"),
        (Method::POST, "/v1/support/tickets", Some(json!({"subject": "s", "message": "m", "type": "urgent"})), "type"),
        (Method::POST, "/v1/support/tickets", Some(json!({"subject": "s", "message": 5})), "message"),
        (Method::GET, "/v1/support/tickets?status=lost", None, "status"),
        (Method::GET, "/v1/support/tickets?size=1000", None, "size"),
        (Method::POST, "/v1/support/reserved-deployments", Some(json!({"fullName": "A"})), "body"),
        (Method::POST, "/v1/support/reserved-deployments", Some(json!({"otherNotes": ["x"]})), "otherNotes"),
    ];
    for (method, path, body, field) in cases {
        let (status, answer) = call(&s.control, &admin.access, method, path, body).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains(field), "{path}: {answer} should name {field}");
    }
    assert_eq!(call(&s.control, &admin.access, Method::GET, "/v1/support/tickets/nope", None).await.0, 404);
}

#[tokio::test]
async fn reserved_deployment_requests_are_stored_for_admins() {
    for db in tm_testkit::all().await {
        let s = start_servers(&db, false);
        let cp = s.control.as_str();
        let admin = admin_login(cp).await;
        create_user(&db, "cat@example.com", "cat-password").await;
        let cat = login(cp, "cat@example.com", "cat-password").await;

        let form = json!({"company": "Cat Co", "preferredGpu": "GPU_TYPE_H100", "totalGpusNeeded": "<8 GPUs",
                          "deploymentTimeline": "1-3 months", "unknownField": "ignored"});
        let (status, answer) =
            call(cp, &cat.access, Method::POST, "/v1/support/reserved-deployments", Some(form)).await;
        assert_eq!(status, 200, "{answer}");
        let id = answer["requestId"].as_str().unwrap();

        let list = "/v1/admin/support/reserved-deployments";
        assert_eq!(call(cp, &cat.access, Method::GET, list, None).await.0, 403);
        let (status, page) = call(cp, &admin.access, Method::GET, list, None).await;
        assert_eq!((status, page["total"].as_str()), (200, Some("1")), "{page} ({})", db.kind);
        let r: &Value = &page["requests"][0];
        assert_eq!(r["requestId"].as_str(), Some(id));
        assert_eq!((r["company"].as_str(), r["preferredGpu"].as_str()), (Some("Cat Co"), Some("GPU_TYPE_H100")));
        assert_eq!(r["workEmail"], "cat@example.com", "contact details default to the account");
        assert!(r.get("unknownField").is_none());
    }
}
