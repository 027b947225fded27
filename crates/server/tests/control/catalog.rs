//! Products (admins write, users read active ones), billing addresses (stored per user)
//! and the Stripe routes (no payment processor here: a clear 501).

use reqwest::Method;
use serde_json::json;

use crate::common::start_servers;
use crate::{admin_login, call, create_user, login};

#[tokio::test]
async fn admins_manage_products_and_users_read_the_active_ones() {
    for db in tm_testkit::all().await {
        let s = start_servers(&db, false);
        let cp = s.control.as_str();
        let admin = admin_login(cp).await;
        create_user(&db, "gus@example.com", "gus-password").await;
        let gus = login(cp, "gus@example.com", "gus-password").await;

        let h100 = json!({"product": {"name": "8x H100", "requiredGpuNum": 8, "family": "hopper", "spec": {"memoryGib": 640}}});
        let (status, made) = call(cp, &admin.access, Method::POST, "/v1/admin/products", Some(h100.clone())).await;
        assert_eq!(status, 200, "{made} ({})", db.kind);
        let id = made["product"]["id"].as_str().unwrap().to_owned();
        assert_eq!(
            (made["product"]["isActive"].as_bool(), made["product"]["spec"]["memoryGib"].as_i64()),
            (Some(true), Some(640))
        );
        // A bare product object works too; an update keeps what it does not name.
        let retire = json!({"id": id, "isActive": false});
        let (status, updated) = call(cp, &admin.access, Method::POST, "/v1/admin/products", Some(retire)).await;
        assert_eq!((status, updated["product"]["name"].as_str()), (200, Some("8x H100")), "{updated}");
        let l40 = json!({"product": {"id": "l40s-1", "name": "1x L40S", "requiredGpuNum": 1}});
        assert_eq!(call(cp, &admin.access, Method::POST, "/v1/admin/products", Some(l40)).await.0, 200);

        let (_, public) = call(cp, &gus.access, Method::GET, "/v1/products", None).await;
        let names: Vec<&str> =
            public["products"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["1x L40S"], "inactive products are hidden from users");
        let (_, all) = call(cp, &admin.access, Method::GET, "/v1/admin/products", None).await;
        assert_eq!(all["products"].as_array().unwrap().len(), 2);

        for (method, path, body) in [
            (Method::GET, "/v1/admin/products".to_owned(), None),
            (Method::POST, "/v1/admin/products".to_owned(), Some(h100)),
            (Method::DELETE, "/v1/products/l40s-1".to_owned(), None),
        ] {
            assert_eq!(call(cp, &gus.access, method, &path, body).await.0, 403, "{path}");
        }
        let (status, deleted) = call(cp, &admin.access, Method::DELETE, "/v1/products/l40s-1", None).await;
        assert_eq!((status, deleted), (200, json!({"deleted": true})));
        assert_eq!(call(cp, &admin.access, Method::DELETE, "/v1/products/l40s-1", None).await.0, 404);

        for (bad, field) in [
            (json!({"product": {"requiredGpuNum": 1}}), "product.name"),
            (json!({"product": {"name": "x", "requiredGpuNum": -1}}), "product.requiredGpuNum"),
            (json!({"product": {"name": "x", "requiredGpuNum": "many"}}), "product.requiredGpuNum"),
            (json!({"product": {"name": "x", "spec": [1]}}), "product.spec"),
            (json!({"product": "x"}), "product"),
        ] {
            let (status, body) = call(cp, &admin.access, Method::POST, "/v1/admin/products", Some(bad)).await;
            assert_eq!(status, 400, "{body}");
            assert!(body["message"].as_str().unwrap().contains(field), "{body} should name {field}");
        }
    }
}

#[tokio::test]
async fn billing_addresses_are_stored_per_user() {
    for db in tm_testkit::all().await {
        let s = start_servers(&db, false);
        let cp = s.control.as_str();
        let admin = admin_login(cp).await;
        let hal_id = create_user(&db, "hal@example.com", "hal-password").await;
        let hal = login(cp, "hal@example.com", "hal-password").await;

        let (status, empty) = call(cp, &hal.access, Method::GET, "/v1/billing/address", None).await;
        assert_eq!((status, empty["address"]["line1"].as_str()), (200, Some("")), "{empty}");
        let address = json!({"address": {"name": "Hal", "line1": " 1 Main St ", "city": "Lyon", "postalCode": "69001", "country": "FR"}});
        let (status, done) = call(cp, &hal.access, Method::PUT, "/v1/billing/address", Some(address)).await;
        assert_eq!((status, done), (200, json!({"empty": {}})));
        let (_, got) = call(cp, &hal.access, Method::GET, "/v1/billing/address", None).await;
        let a = &got["address"];
        assert_eq!(
            (a["line1"].as_str(), a["postalCode"].as_str(), a["line2"].as_str()),
            (Some("1 Main St"), Some("69001"), Some(""))
        );

        // Only Hal and admins read or write Hal's address.
        let path = format!("/v1/billing/address?userId={hal_id}");
        assert_eq!(
            call(cp, &admin.access, Method::GET, &path, None).await.1["address"]["city"],
            "Lyon",
            "({})",
            db.kind
        );
        create_user(&db, "ivy@example.com", "ivy-password").await;
        let ivy = login(cp, "ivy@example.com", "ivy-password").await;
        assert_eq!(call(cp, &ivy.access, Method::GET, &path, None).await.0, 403);
        let overwrite = json!({"userId": hal_id, "address": {"line1": "x"}});
        assert_eq!(call(cp, &ivy.access, Method::PUT, "/v1/billing/address", Some(overwrite)).await.0, 403);
        assert_eq!(call(cp, &ivy.access, Method::GET, "/v1/billing/address", None).await.1["address"]["city"], "");

        let (status, missing) = call(cp, &hal.access, Method::PUT, "/v1/billing/address", Some(json!({}))).await;
        assert_eq!(status, 400);
        assert!(missing["message"].as_str().unwrap().contains("address"), "{missing}");
        let long = json!({"address": {"city": "x".repeat(301)}});
        let (status, too_long) = call(cp, &hal.access, Method::PUT, "/v1/billing/address", Some(long)).await;
        assert!(status == 400 && too_long["message"].as_str().unwrap().contains("address.city"), "{too_long}");
    }
}

#[tokio::test]
async fn stripe_routes_say_there_is_no_payment_processor() {
    let db = tm_testkit::sqlite();
    let s = start_servers(&db, false);
    let admin = admin_login(&s.control).await;
    let routes = [
        (Method::GET, "/v1/billing/stripe/customers"),
        (Method::GET, "/v1/billing/stripe/customers/payment-methods"),
        (Method::POST, "/v1/billing/stripe/customers/payment-methods"),
        (Method::DELETE, "/v1/billing/stripe/customers/payment-methods?stripePaymentMethodId=pm_1"),
        (Method::POST, "/v1/billing/stripe/setup-intents"),
        (Method::POST, "/v1/billing/stripe/payment-intents"),
        (Method::POST, "/v1/billing/stripe/payment-intents/confirm"),
    ];
    for (method, path) in routes {
        let body = (method == Method::POST).then(|| json!({"amount": 10}));
        let (status, answer) = call(&s.control, &admin.access, method.clone(), path, body.clone()).await;
        assert_eq!((status, answer["code"].as_i64()), (501, Some(12)), "{path}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains("no payment processor"), "{answer}");
        assert_eq!(call(&s.control, "not-a-token", method, path, body).await.0, 401, "{path}");
    }
}

#[tokio::test]
async fn gpu_prices_are_read_by_users_and_written_by_admins() {
    for db in tm_testkit::all().await {
        let s = start_servers(&db, false);
        let cp = s.control.as_str();
        let admin = admin_login(cp).await;
        create_user(&db, "joy@example.com", "joy-password").await;
        let joy = login(cp, "joy@example.com", "joy-password").await;
        let path = "/v1/admin/billing/gpu-pricing";

        let h100 = json!({"pricing": {"gpuType": "GPU_TYPE_H100", "cloudProvider": "CLOUD_PROVIDER_NEBIUS",
                                      "hourlyRate": {"currencyCode": "USD", "units": "2", "nanos": 500_000_000}}});
        assert_eq!(call(cp, &joy.access, Method::POST, path, Some(h100.clone())).await.0, 403);
        let (status, made) = call(cp, &admin.access, Method::POST, path, Some(h100.clone())).await;
        assert_eq!(status, 200, "{made} ({})", db.kind);
        assert_eq!(
            (made["pricing"]["hourlyRate"]["units"].as_str(), made["pricing"]["isActive"].as_bool()),
            (Some("2"), Some(true))
        );
        assert_eq!(call(cp, &admin.access, Method::POST, path, Some(h100)).await.0, 409, "POST creates only");
        let a100 = json!({"gpuType": "a100", "cloudProvider": "lambda", "hourlyRate": 1.25, "isActive": false});
        let (status, bare) = call(cp, &admin.access, Method::POST, path, Some(a100)).await;
        assert_eq!((status, bare["pricing"]["gpuType"].as_str()), (200, Some("GPU_TYPE_A100")), "{bare}");

        let (_, all) = call(cp, &joy.access, Method::GET, "/v1/billing/gpu-pricing", None).await;
        assert_eq!(all["pricing"].as_array().unwrap().len(), 2);
        let (_, active) = call(cp, &joy.access, Method::GET, "/v1/billing/gpu-pricing?activeOnly=true", None).await;
        assert_eq!(active["pricing"].as_array().unwrap().len(), 1);
        let (_, nebius) =
            call(cp, &joy.access, Method::GET, "/v1/billing/gpu-pricing?cloudProvider=CLOUD_PROVIDER_NEBIUS", None)
                .await;
        assert_eq!(nebius["pricing"][0]["gpuType"], "GPU_TYPE_H100");

        // PUT changes what it names; a missing pair is 404.
        let cheaper =
            json!({"pricing": {"gpuType": "GPU_TYPE_H100", "cloudProvider": "CLOUD_PROVIDER_NEBIUS", "hourlyRate": 2}});
        let (status, updated) = call(cp, &admin.access, Method::PUT, path, Some(cheaper)).await;
        assert_eq!((status, updated["pricing"]["hourlyRate"]["nanos"].as_i64()), (200, Some(0)), "{updated}");
        let missing =
            json!({"pricing": {"gpuType": "GPU_TYPE_B200", "cloudProvider": "CLOUD_PROVIDER_YOTTA", "isActive": true}});
        assert_eq!(call(cp, &admin.access, Method::PUT, path, Some(missing)).await.0, 404);

        let one = format!("{path}/GPU_TYPE_H100/CLOUD_PROVIDER_NEBIUS");
        assert_eq!(call(cp, &joy.access, Method::DELETE, &one, None).await.0, 403);
        for _ in 0..2 {
            let (status, body) = call(cp, &admin.access, Method::DELETE, &one, None).await;
            assert_eq!((status, body), (200, json!({"empty": {}})), "idempotent");
        }
        let (_, left) = call(cp, &joy.access, Method::GET, "/v1/billing/gpu-pricing", None).await;
        assert_eq!(left["pricing"].as_array().unwrap().len(), 1);

        for (bad, field) in [
            (json!({"pricing": {"cloudProvider": "lambda", "hourlyRate": 1}}), "pricing.gpuType"),
            (json!({"pricing": {"gpuType": "h100", "cloudProvider": "aws", "hourlyRate": 1}}), "pricing.cloudProvider"),
            (json!({"pricing": {"gpuType": "h100", "cloudProvider": "yotta"}}), "pricing.hourlyRate"),
            (json!({"pricing": {"gpuType": "h100", "cloudProvider": "yotta", "hourlyRate": -1}}), "pricing.hourlyRate"),
        ] {
            let (status, body) = call(cp, &admin.access, Method::POST, path, Some(bad)).await;
            assert_eq!(status, 400, "{body}");
            assert!(body["message"].as_str().unwrap().contains(field), "{body} should name {field}");
        }
        let (status, bad) = call(cp, &joy.access, Method::GET, "/v1/billing/gpu-pricing?cloudProvider=aws", None).await;
        assert!(status == 400 && bad["message"].as_str().unwrap().contains("cloudProvider"), "{bad}");
    }
}
