//! Resource settings Vercel sends on Provision and Update Resource
//! (`protocolSettings`): the app URLs of projects that sign in through an
//! authentication product, checked and kept as the full set, and the
//! experimentation (Global Config) settings, kept verbatim; both served back
//! on the resource.

use crate::vercel_support::{
    VercelOptions, assert_error, field_keys, provision_body, resource_path, vercel_set,
};
use marketbridge_storage::backend_test;
use serde_json::json;

backend_test!(
    app_urls_and_experimentation_settings_are_checked_kept_and_served_back,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::default()).await;
        let (installation, admin) = vercel.install().await;
        let resources = format!("/v1/installations/{}/resources", installation.id);
        let app_urls = json!([
            {"url": "https://my-app.vercel.app", "target": "production"},
            {"url": "https://my-app-git-main.vercel.app", "target": "preview"},
            {"url": "http://localhost:3000", "target": "development"}
        ]);
        let experimentation = json!({
            "edgeConfigSyncingEnabled": true,
            "edgeConfigId": "ecfg_abc",
            "edgeConfigTokenId": "tok_1",
            "globalConfigId": "gcfg_abc"
        });
        let mut body = provision_body("database", "pro", "auth-db", json!({"region": "iad1"}));
        body["protocolSettings"] = json!({
            "authentication": {"appUrls": app_urls},
            "experimentation": experimentation,
            "somethingNew": {"ignored": true}
        });
        let created = vercel.provision(&installation, &admin, body).await;
        let resource_id = created["id"].as_str().unwrap().to_owned();
        assert_eq!(
            created["protocolSettings"]["authentication"]["appUrls"],
            app_urls
        );
        assert_eq!(
            created["protocolSettings"]["experimentation"],
            experimentation
        );
        let read = vercel
            .partner
            .get(&resource_path(&installation, &resource_id))
            .user(&admin)
            .send()
            .await;
        assert_eq!(read.status, 200, "{}", read.text);
        assert_eq!(read.body["protocolSettings"], created["protocolSettings"]);

        // An update with only experimentation keeps the app URLs; one with
        // app URLs replaces the whole set.
        let changed = vercel
            .partner
            .patch(&resource_path(&installation, &resource_id))
            .user(&admin)
            .json(&json!({"protocolSettings": {"experimentation": {"globalConfigId": "gcfg_new"}}}))
            .send()
            .await;
        assert_eq!(changed.status, 200, "{}", changed.text);
        assert_eq!(
            changed.body["protocolSettings"]["authentication"]["appUrls"],
            app_urls
        );
        assert_eq!(
            changed.body["protocolSettings"]["experimentation"],
            json!({"globalConfigId": "gcfg_new"})
        );
        let one = json!([{"url": "https://only.example.com/callback", "target": "production"}]);
        let replaced = vercel
            .partner
            .patch(&resource_path(&installation, &resource_id))
            .user(&admin)
            .json(&json!({"protocolSettings": {"authentication": {"appUrls": one}}}))
            .send()
            .await;
        assert_eq!(replaced.status, 200, "{}", replaced.text);
        assert_eq!(
            replaced.body["protocolSettings"]["authentication"]["appUrls"],
            one
        );
        let emptied = vercel
            .partner
            .patch(&resource_path(&installation, &resource_id))
            .user(&admin)
            .json(&json!({"protocolSettings": {"authentication": {"appUrls": []}}}))
            .send()
            .await;
        assert_eq!(emptied.status, 200, "{}", emptied.text);
        assert_eq!(
            emptied.body["protocolSettings"]["authentication"]["appUrls"],
            json!([])
        );

        // Bad app URLs: 400 with the field, nothing stored.
        for (bad, key) in [
            (
                json!({"authentication": {"appUrls": [{"url": "http://my-app.vercel.app", "target": "production"}]}}),
                "protocolSettings.authentication.appUrls[0].url",
            ),
            (
                json!({"authentication": {"appUrls": [{"url": "http://localhost:3000", "target": "preview"}]}}),
                "protocolSettings.authentication.appUrls[0].url",
            ),
            (
                json!({"authentication": {"appUrls": [{"url": "https://a.example", "target": "staging"}]}}),
                "protocolSettings.authentication.appUrls[0].target",
            ),
            (
                json!({"authentication": {"appUrls": [{"url": "https://a.example"}]}}),
                "protocolSettings.authentication.appUrls[0]",
            ),
            (
                json!({"authentication": {"appUrls": "https://a.example"}}),
                "protocolSettings.authentication.appUrls",
            ),
            (
                json!({"experimentation": "ecfg_abc"}),
                "protocolSettings.experimentation",
            ),
        ] {
            let mut body = provision_body("database", "pro", "bad", json!({"region": "iad1"}));
            body["protocolSettings"] = bad.clone();
            let answer = vercel
                .partner
                .post(&resources)
                .user(&admin)
                .json(&body)
                .send()
                .await;
            assert_error(&answer, 400, "validation_error");
            assert_eq!(field_keys(&answer), vec![key.to_owned()], "{bad}");
            let answer = vercel
                .partner
                .patch(&resource_path(&installation, &resource_id))
                .user(&admin)
                .json(&json!({"protocolSettings": bad}))
                .send()
                .await;
            assert_error(&answer, 400, "validation_error");
        }
        let kept = vercel.stored_resource(&resource_id).await;
        assert_eq!(
            kept.protocol_settings.unwrap().app_urls.unwrap().urls.len(),
            0
        );
        vercel.stop().await;
    }
);

/// Sends an invoice webhook and lets it take effect.
async fn invoice_event(
    vercel: &crate::vercel_support::VercelTest,
    installation: &marketbridge_simulators::vercel::InstallationHandle,
    event_type: &str,
    invoice_id: &str,
) {
    let webhooks = vercel.sim.webhooks(&vercel.url("/webhook"));
    let (_, answer) = webhooks
        .send_event(
            event_type,
            json!({
                "configuration": {"id": installation.id},
                "installationId": installation.id,
                "invoiceId": invoice_id,
                "externalInvoiceId": null,
                "period": {"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"},
                "invoiceDate": "2026-11-01T00:00:00Z",
                "invoiceTotal": "20.00"
            }),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    vercel.drain().await;
}

backend_test!(
    an_overdue_invoice_suspends_and_payment_or_refund_resumes,
    |database| async move {
        use marketbridge_proto::billing::v1 as billing_pb;
        use marketbridge_proto::provisioning::v1::ResourceStatus;
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let (installation, admin) = vercel.install().await;
        let resource = vercel
            .provision(
                &installation,
                &admin,
                provision_body("database", "pro", "billed", json!({"region": "iad1"})),
            )
            .await;
        let resource_id = resource["id"].as_str().unwrap().to_owned();
        vercel.drain().await;

        // Failed payments degrade nothing; overdue suspends (data kept) and
        // Vercel is told; payment resumes.
        invoice_event(
            &vercel,
            &installation,
            "marketplace.invoice.created",
            "inv_a",
        )
        .await;
        invoice_event(
            &vercel,
            &installation,
            "marketplace.invoice.notpaid",
            "inv_a",
        )
        .await;
        let stored = vercel.stored_resource(&resource_id).await;
        assert_eq!(stored.status, ResourceStatus::Ready as i32);
        invoice_event(
            &vercel,
            &installation,
            "marketplace.invoice.overdue",
            "inv_a",
        )
        .await;
        let stored = vercel.stored_resource(&resource_id).await;
        assert_eq!(stored.status, ResourceStatus::Suspended as i32);
        assert_eq!(stored.status_message, "Invoice inv_a is overdue");
        assert_eq!(
            vercel
                .sim
                .resource(&installation.id, &resource_id)
                .unwrap()
                .status,
            "suspended"
        );
        // Delivered twice: still one suspension.
        invoice_event(
            &vercel,
            &installation,
            "marketplace.invoice.overdue",
            "inv_a",
        )
        .await;
        invoice_event(&vercel, &installation, "marketplace.invoice.paid", "inv_a").await;
        let stored = vercel.stored_resource(&resource_id).await;
        assert_eq!(stored.status, ResourceStatus::Ready as i32);
        assert_eq!(
            vercel
                .sim
                .resource(&installation.id, &resource_id)
                .unwrap()
                .status,
            "ready"
        );

        // A refund of an overdue invoice cancels it: the resource comes back.
        let inv_b = vercel
            .sim
            .create_invoice(&installation.id, "20.00", "overdue");
        invoice_event(
            &vercel,
            &installation,
            "marketplace.invoice.created",
            &inv_b,
        )
        .await;
        invoice_event(
            &vercel,
            &installation,
            "marketplace.invoice.overdue",
            &inv_b,
        )
        .await;
        assert_eq!(
            vercel.stored_resource(&resource_id).await.status,
            ResourceStatus::Suspended as i32
        );
        let mut billing = vercel.test.set.clients.billing.clone();
        let invoice = billing
            .get_invoice(billing_pb::GetInvoiceRequest {
                selector: Some(
                    billing_pb::get_invoice_request::Selector::MarketplaceInvoiceId(inv_b.clone()),
                ),
            })
            .await
            .unwrap()
            .into_inner();
        billing
            .refund_invoice(billing_pb::RefundInvoiceRequest {
                context: Some(marketbridge_proto::common::v1::RequestContext {
                    idempotency_key: "refund-inv-b".into(),
                    actor: None,
                }),
                invoice_id: invoice.id.clone(),
                amount: None,
                reason: "billing error".into(),
            })
            .await
            .expect("refund requested");
        vercel.drain().await;
        let refunds = vercel
            .sim
            .recorder()
            .accepted("POST", &format!("/billing/invoices/{inv_b}/actions"));
        assert_eq!(refunds.len(), 1);
        assert_eq!(
            vercel.stored_resource(&resource_id).await.status,
            ResourceStatus::Ready as i32
        );
        vercel.stop().await;
    }
);
