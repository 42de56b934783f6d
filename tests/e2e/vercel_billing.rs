//! Billing with Vercel: prepayment purchases credited once per paid
//! invoice (`billing/provision`), and refunds carried to Vercel's API.

use crate::vercel_support::{VercelOptions, assert_error, installation_path, vercel_set};
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_storage::backend_test;
use serde_json::json;

backend_test!(
    prepayments_are_credited_once_per_paid_invoice,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let (installation, admin) = vercel.install().await;
        let provision = format!("{}/billing/provision", installation_path(&installation));
        let invoice_id = vercel.sim.create_invoice(&installation.id, "25.00", "paid");

        let first = vercel
            .partner
            .post(&provision)
            .user(&admin)
            .idempotency_key("purchase-1")
            .json(&json!({"invoiceId": invoice_id}))
            .send()
            .await;
        assert_eq!(first.status, 200, "{}", first.text);
        assert!(first.body["timestamp"].as_str().unwrap().ends_with('Z'));
        let balance = &first.body["balances"][0];
        assert_eq!(balance["currencyValueInCents"], 2500);
        assert!(balance.get("resourceId").is_none());
        assert!(balance["credit"].is_string() && balance["nameLabel"].is_string());
        // Vercel read the invoice with the installation's token.
        let reads = vercel
            .sim
            .recorder()
            .accepted("GET", &format!("/billing/invoices/{invoice_id}"));
        assert_eq!(reads.len(), 1);

        // The same call again is the same answer; another key for the same
        // invoice (Vercel retrying without one) credits nothing more; Vercel
        // itself may call it too.
        let replay = vercel
            .partner
            .post(&provision)
            .user(&admin)
            .idempotency_key("purchase-1")
            .json(&json!({"invoiceId": invoice_id}))
            .send()
            .await;
        assert_eq!((replay.status, &replay.text), (200, &first.text));
        let retried = vercel
            .partner
            .post(&provision)
            .system(&vercel.sim.system_token(Some(&installation)))
            .idempotency_key("purchase-1-retry")
            .json(&json!({"invoiceId": invoice_id}))
            .send()
            .await;
        assert_eq!(retried.status, 200, "{}", retried.text);
        assert_eq!(retried.body["balances"][0]["currencyValueInCents"], 2500);

        // A second paid purchase adds up.
        let second_invoice = vercel.sim.create_invoice(&installation.id, "10.50", "paid");
        let second = vercel
            .partner
            .post(&provision)
            .user(&admin)
            .json(&json!({"invoiceId": second_invoice}))
            .send()
            .await;
        assert_eq!(second.body["balances"][0]["currencyValueInCents"], 3550);

        // Unpaid or unknown invoices are refused (422) and credit nothing.
        let unpaid = vercel
            .sim
            .create_invoice(&installation.id, "99.00", "notpaid");
        let refused = vercel
            .partner
            .post(&provision)
            .user(&admin)
            .json(&json!({"invoiceId": unpaid}))
            .send()
            .await;
        assert_error(&refused, 422, "unprocessable");
        assert!(refused.body["error"]["user"]["message"].is_string());
        let unknown = vercel
            .partner
            .post(&provision)
            .user(&admin)
            .json(&json!({"invoiceId": "inv_doesnotexist"}))
            .send()
            .await;
        assert_error(&unknown, 422, "unprocessable");
        let missing = vercel
            .partner
            .post(&provision)
            .user(&admin)
            .json(&json!({}))
            .send()
            .await;
        assert_error(&missing, 400, "validation_error");
        let account = vercel.account(&installation).await;
        let mut billing = vercel.test.set.clients.billing.clone();
        let balances = billing
            .get_balances(billing_pb::GetBalancesRequest {
                account_id: account.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            balances.balances[0].value.as_ref().unwrap().amount_minor,
            3550
        );

        // A refund through billing reaches Vercel's API with the invoice's
        // total, through the outbox.
        let webhooks = vercel.sim.webhooks(&vercel.url("/webhook"));
        let (_, answer) = webhooks
            .send_event(
                "marketplace.invoice.paid",
                marketbridge_simulators::vercel::webhooks::invoice_payload(
                    &installation.id,
                    &invoice_id,
                    "25.00",
                ),
            )
            .await;
        assert_eq!(answer.status, 200);
        vercel.drain().await;
        let invoice = billing
            .get_invoice(billing_pb::GetInvoiceRequest {
                selector: Some(
                    billing_pb::get_invoice_request::Selector::MarketplaceInvoiceId(
                        invoice_id.clone(),
                    ),
                ),
            })
            .await
            .unwrap()
            .into_inner();
        billing
            .refund_invoice(billing_pb::RefundInvoiceRequest {
                context: Some(marketbridge_proto::common::v1::RequestContext {
                    idempotency_key: "refund-1".into(),
                    actor: None,
                }),
                invoice_id: invoice.id.clone(),
                reason: "customer asked".into(),
                amount: Some(marketbridge_core::money::Money::usd_cents(500).to_proto()),
            })
            .await
            .unwrap();
        vercel.drain().await;
        let at_vercel = vercel.sim.invoice(&installation.id, &invoice_id).unwrap();
        assert_eq!(at_vercel.refunds.len(), 1);
        assert_eq!(
            at_vercel.refunds[0],
            json!({"action": "refund", "reason": "customer asked", "total": "5.00"})
        );
        assert_eq!(at_vercel.state, "refund_requested");
        vercel.stop().await;
    }
);
