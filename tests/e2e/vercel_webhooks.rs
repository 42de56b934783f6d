//! Vercel's webhooks: the signature is checked over the raw body first,
//! every event is recorded once (a redelivery is acknowledged and not
//! processed again), and each type we act on reaches the right service.

use crate::vercel_support::{
    VercelOptions, assert_error, installation_path, provision_body, vercel_set,
};
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::Marketplace;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_simulators::vercel::webhooks::{
    configuration_removed_payload, envelope, invoice_payload, project_connection_payload, signature,
};
use marketbridge_storage::backend_test;
use serde_json::json;

async fn events(vercel: &crate::vercel_support::VercelTest) -> Vec<account_pb::MarketplaceEvent> {
    let mut accounts = vercel.test.set.clients.account.clone();
    accounts
        .list_marketplace_events(account_pb::ListMarketplaceEventsRequest {
            marketplace: Marketplace::Vercel as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

fn status_of(events: &[account_pb::MarketplaceEvent], external_id: &str) -> i32 {
    events
        .iter()
        .find(|e| e.external_id == external_id)
        .map(|e| e.status)
        .unwrap_or_default()
}

backend_test!(
    webhooks_are_verified_recorded_once_and_acted_on,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let webhooks = vercel.sim.webhooks(&vercel.url("/webhook"));
        let (installation, admin) = vercel.install().await;
        let resource = vercel
            .provision(
                &installation,
                &admin,
                provision_body("database", "pro", "db", json!({})),
            )
            .await;
        let resource_id = resource["id"].as_str().unwrap().to_owned();

        // Bad, missing or stale signatures are refused before anything is
        // read or stored.
        let event = envelope(
            "integration-configuration.removed",
            configuration_removed_payload(&installation.id),
        );
        let body = event.to_string().into_bytes();
        let forged = signature("not-the-secret", &body);
        for sig in [Some(forged.as_str()), None, Some("zz-not-hex")] {
            let answer = webhooks.send_raw(body.clone(), sig).await;
            assert_error(&answer, 401, "unauthenticated");
        }
        let mut altered = body.clone();
        altered.push(b' ');
        let answer = webhooks
            .send_raw(altered, Some(&signature(vercel.sim.client_secret(), &body)))
            .await;
        assert_error(&answer, 401, "unauthenticated");
        let unreadable = b"{\"id\": ".to_vec();
        let answer = webhooks
            .send_raw(
                unreadable.clone(),
                Some(&signature(vercel.sim.client_secret(), &unreadable)),
            )
            .await;
        assert_error(&answer, 400, "validation_error");
        let nameless = br#"{"type": "x", "payload": {}}"#.to_vec();
        let answer = webhooks
            .send_raw(
                nameless.clone(),
                Some(&signature(vercel.sim.client_secret(), &nameless)),
            )
            .await;
        assert_error(&answer, 400, "validation_error");
        assert!(events(&vercel).await.is_empty());

        // A project connection, delivered twice: processed once.
        let connected = envelope(
            "integration-resource.project-connected",
            project_connection_payload(
                &installation.id,
                &installation.team_id,
                &resource_id,
                "prj_web",
            ),
        );
        let first = webhooks.send(&connected).await;
        assert_eq!(first.status, 200, "{}", first.text);
        assert_eq!(first.body["duplicate"], false);
        let second = webhooks.send(&connected).await;
        assert_eq!(second.status, 200);
        assert_eq!(second.body["duplicate"], true);
        let jobs = vercel.drain().await;
        assert!(jobs >= 1);
        let recorded = events(&vercel).await;
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].channel, "webhook");
        assert_eq!(recorded[0].deliveries, 2, "the redelivery is counted");
        assert_eq!(
            recorded[0].status,
            account_pb::EventStatus::Processed as i32
        );
        assert!(recorded[0].occurred_at.is_some());
        let stored = vercel.stored_resource(&resource_id).await;
        assert_eq!(stored.connections.len(), 1);
        assert_eq!(stored.connections[0].project_id, "prj_web");
        assert_eq!(stored.connections[0].targets, ["production", "preview"]);
        let (_, answer) = webhooks
            .send_event(
                "integration-resource.project-disconnected",
                project_connection_payload(
                    &installation.id,
                    &installation.team_id,
                    &resource_id,
                    "prj_web",
                ),
            )
            .await;
        assert_eq!(answer.status, 200);
        vercel.drain().await;
        assert!(
            vercel
                .stored_resource(&resource_id)
                .await
                .connections
                .is_empty()
        );

        // Events we do not act on are acknowledged and marked ignored.
        let (unknown, answer) = webhooks
            .send_event("deployment.created", json!({"deployment": {"id": "dpl_1"}}))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        vercel.drain().await;
        assert_eq!(
            status_of(&events(&vercel).await, unknown["id"].as_str().unwrap()),
            account_pb::EventStatus::Ignored as i32
        );

        // Invoice events move the invoice billing keeps.
        let account = vercel.account(&installation).await;
        let invoice_id = "inv_vercel_000000000001";
        for event_type in [
            "marketplace.invoice.created",
            "marketplace.invoice.notpaid",
            "marketplace.invoice.paid",
        ] {
            let (sent, answer) = webhooks
                .send_event(
                    event_type,
                    invoice_payload(&installation.id, invoice_id, "20.00"),
                )
                .await;
            assert_eq!(answer.status, 200, "{}", answer.text);
            vercel.drain().await;
            assert_eq!(
                status_of(&events(&vercel).await, sent["id"].as_str().unwrap()),
                account_pb::EventStatus::Processed as i32,
                "{event_type}"
            );
        }
        let mut billing = vercel.test.set.clients.billing.clone();
        let invoice = billing
            .get_invoice(billing_pb::GetInvoiceRequest {
                selector: Some(
                    billing_pb::get_invoice_request::Selector::MarketplaceInvoiceId(
                        invoice_id.into(),
                    ),
                ),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(invoice.account_id, account.id);
        assert_eq!(invoice.state, billing_pb::InvoiceState::Paid as i32);
        assert_eq!(invoice.total.unwrap().amount_minor, 2000);
        assert!(invoice.period_end.is_some());
        // The prose shape of Vercel's docs is read too.
        let (_, answer) = webhooks
            .send_event(
                "marketplace.invoice.refunded",
                json!({"invoice": {"id": invoice_id, "installationId": installation.id, "amount": "20.00"}}),
            )
            .await;
        assert_eq!(answer.status, 200);
        vercel.drain().await;
        let invoice = billing
            .get_invoice(billing_pb::GetInvoiceRequest {
                selector: Some(
                    billing_pb::get_invoice_request::Selector::MarketplaceInvoiceId(
                        invoice_id.into(),
                    ),
                ),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(invoice.state, billing_pb::InvoiceState::Refunded as i32);

        // The integration removed from the team: the same uninstall as the
        // partner API's DELETE, delivered twice, done once.
        vercel.drain().await;
        let first = webhooks.send(&event).await;
        assert_eq!(first.status, 200);
        let again = webhooks.send(&event).await;
        assert_eq!(again.body["duplicate"], true);
        vercel.drain().await;
        assert_eq!(
            status_of(&events(&vercel).await, event["id"].as_str().unwrap()),
            account_pb::EventStatus::Processed as i32
        );
        let account = vercel.account(&installation).await;
        assert_eq!(
            account.state,
            account_pb::AccountState::DeletionPending as i32
        );
        assert_eq!(
            vercel.stored_resource(&resource_id).await.status,
            provisioning_pb::ResourceStatus::Uninstalled as i32
        );
        let gone = vercel
            .partner
            .get(&installation_path(&installation))
            .user(&admin)
            .send()
            .await;
        assert_error(&gone, 404, "not_found");
        // Removal of an installation never seen is acknowledged and ignored.
        let (stranger, answer) = webhooks
            .send_event(
                "integration-configuration.removed",
                configuration_removed_payload("icfg_neverinstalled000000000"),
            )
            .await;
        assert_eq!(answer.status, 200);
        vercel.drain().await;
        assert_eq!(
            status_of(&events(&vercel).await, stranger["id"].as_str().unwrap()),
            account_pb::EventStatus::Ignored as i32
        );
        vercel.stop().await;
    }
);
