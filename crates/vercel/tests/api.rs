//! Every Vercel API call of the client against the Vercel simulator: the
//! bodies the client writes are the ones Vercel accepts, its answers are
//! read back, and the installation's token is required.

use marketbridge_core::ErrorCode;
use marketbridge_core::crypto::SecretString;
use marketbridge_simulators::common::Fault;
use marketbridge_simulators::vercel::state::SimResource;
use marketbridge_simulators::vercel::{InstallationHandle, VercelSimulator};
use marketbridge_vercel::VercelApi;
use marketbridge_vercel::model::plan::{BillingPlan, PlanScope, PlanType};
use marketbridge_vercel::model::vercel_api::{
    BalanceSubmission, BillingData, BillingItem, BillingLines, CredentialRotation,
    InstallationUpdate, IntegrationEvent, InvoiceAction, InvoiceSubmission, InvoiceTest,
    NotificationChange, ProjectConnection, ResourceImport, ResourceUpdate, SecretsUpdate,
    SsoTokenRequest, UsageLine, UsageType,
};
use marketbridge_vercel::model::{Balance, Notification, NotificationLevel, Period, Secret};
use serde_json::json;
use std::time::Duration;

async fn setup() -> (VercelSimulator, VercelApi, InstallationHandle, SecretString) {
    let sim = VercelSimulator::start_default().await.unwrap();
    let http = marketbridge_rpc::http::outbound_client(&Default::default(), Duration::from_secs(5))
        .unwrap();
    let api = VercelApi::new(http, sim.url());
    let installation = sim.new_installation();
    let token = SecretString::new(installation.token.clone());
    (sim, api, installation, token)
}

fn secret(name: &str, value: &str) -> Secret {
    Secret {
        name: name.into(),
        value: value.into(),
        prefix: None,
        environment_overrides: None,
    }
}

fn item(total: &str) -> BillingItem {
    BillingItem {
        billing_plan_id: "pro".into(),
        resource_id: Some("res_1".into()),
        start: None,
        end: None,
        name: "Pro plan".into(),
        details: None,
        price: total.into(),
        quantity: 1.0,
        units: "month".into(),
        total: total.into(),
    }
}

fn period() -> Period {
    Period {
        start: "2026-11-01T00:00:00Z".into(),
        end: "2026-12-01T00:00:00Z".into(),
    }
}

#[tokio::test]
async fn installation_calls() {
    let (sim, api, installation, token) = setup().await;
    let plan = BillingPlan {
        id: "team".into(),
        plan_type: PlanType::Subscription,
        name: "Team".into(),
        description: String::new(),
        scope: Some(PlanScope::Installation),
        payment_method_required: Some(true),
        preauthorization_amount: None,
        initial_charge: None,
        minimum_amount: None,
        maximum_amount: None,
        maximum_amount_auto_purchase_per_period: None,
        cost: None,
        details: Vec::new(),
        highlighted_details: Vec::new(),
        quote: Vec::new(),
        effective_date: None,
        disabled: None,
        required_policies: Vec::new(),
        max_resources: None,
    };
    api.update_installation(
        &token,
        &installation.id,
        &InstallationUpdate {
            billing_plan: Some(plan),
            notification: Some(NotificationChange::Clear(())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let sent = &sim.installation(&installation.id).unwrap().updates[0];
    assert_eq!(sent["billingPlan"]["type"], "subscription");
    assert_eq!(sent["notification"], serde_json::Value::Null);

    let account = api.account_info(&token, &installation.id).await.unwrap();
    assert!(account.name.unwrap().starts_with("Team "));
    assert!(account.contact.unwrap().email.is_some());

    let user = marketbridge_simulators::vercel::tokens::SimUser::viewer();
    sim.user_token(&installation, &user);
    let member = api
        .member(&token, &installation.id, &user.id)
        .await
        .unwrap();
    assert_eq!(member.role, "USER");

    let rotated = api
        .rotate_credentials(
            &token,
            &installation.id,
            &CredentialRotation {
                client_secret: sim.client_secret().into(),
                client_id: Some(sim.client_id().into()),
            },
        )
        .await
        .unwrap();
    let new_token = SecretString::new(rotated.access_token);
    api.dispatch_event(
        &new_token,
        &installation.id,
        IntegrationEvent::InstallationUpdated {
            billing_plan_id: Some("team".into()),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        sim.installation(&installation.id).unwrap().events[0],
        json!({"event": {"type": "installation.updated", "billingPlanId": "team"}})
    );
    let wrong = api
        .rotate_credentials(
            &token,
            &installation.id,
            &CredentialRotation {
                client_secret: "guess".into(),
                client_id: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), ErrorCode::PermissionDenied);
}

#[tokio::test]
async fn resource_calls() {
    let (sim, api, installation, token) = setup().await;
    api.import_resource(
        &token,
        &installation.id,
        "res_a",
        &ResourceImport {
            ownership: Some("owned".into()),
            product_id: "database".into(),
            name: "imported".into(),
            status: "ready".into(),
            metadata: Some(json!({"region": "iad1"})),
            billing_plan: None,
            notification: None,
            extras: None,
            secrets: Some(vec![secret("URL", "one")]),
        },
    )
    .await
    .unwrap();
    let listed = api.list_resources(&token, &installation.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "res_a");
    let read = api
        .get_resource(&token, &installation.id, "res_a")
        .await
        .unwrap();
    assert_eq!(read.name, "imported");
    api.update_resource(
        &token,
        &installation.id,
        "res_a",
        &ResourceUpdate {
            status: Some("error".into()),
            notification: Some(NotificationChange::Set(Notification::new(
                NotificationLevel::Error,
                "Broken",
                Some("disk full".into()),
            ))),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let at_vercel = sim.resource(&installation.id, "res_a").unwrap();
    assert_eq!(at_vercel.status, "error");
    assert_eq!(at_vercel.notification["title"], "Broken");
    api.update_secrets(
        &token,
        &installation.id,
        "res_a",
        &SecretsUpdate {
            secrets: vec![secret("URL", "two"), secret("EXTRA", "x")],
            partial: Some(true),
        },
    )
    .await
    .unwrap();
    let at_vercel = sim.resource(&installation.id, "res_a").unwrap();
    assert_eq!(at_vercel.secret("URL").as_deref(), Some("two"));
    api.connect_resource(
        &token,
        &installation.id,
        "res_a",
        &ProjectConnection {
            project_id: "prj_1".into(),
            env_var_environments: Some(vec!["production".into()]),
            make_env_vars_sensitive: Some(true),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        sim.installation(&installation.id).unwrap().connections[0]["projectId"],
        "prj_1"
    );
    api.delete_resource(&token, &installation.id, "res_a")
        .await
        .unwrap();
    let gone = api
        .get_resource(&token, &installation.id, "res_a")
        .await
        .unwrap_err();
    assert_eq!(gone.code(), ErrorCode::NotFound);
    // An event about a resource Vercel does not know is refused.
    let unknown = api
        .dispatch_event(
            &token,
            &installation.id,
            IntegrationEvent::ResourceUpdated {
                product_id: None,
                resource_id: "res_unknown".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), ErrorCode::NotFound);
    sim.register_resource(
        &installation.id,
        SimResource {
            id: "res_b".into(),
            ..Default::default()
        },
    );
    api.dispatch_event(
        &token,
        &installation.id,
        IntegrationEvent::ResourceUpdated {
            product_id: Some("database".into()),
            resource_id: "res_b".into(),
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn billing_calls() {
    let (sim, api, installation, token) = setup().await;
    api.submit_billing_data(
        &token,
        &installation.id,
        &BillingData {
            timestamp: "2026-11-23T12:00:00Z".into(),
            eod: "2026-11-23T00:00:00Z".into(),
            period: period(),
            billing: BillingLines {
                items: vec![item("20.00")],
                discounts: Vec::new(),
            },
            usage: vec![UsageLine {
                resource_id: Some("res_1".into()),
                name: "Requests".into(),
                usage_type: UsageType::Interval,
                units: "requests".into(),
                day_value: 10.0,
                period_value: 250.0,
                plan_value: Some(1_000_000.0),
            }],
        },
    )
    .await
    .unwrap();
    assert_eq!(
        sim.installation(&installation.id)
            .unwrap()
            .billing_data
            .len(),
        1
    );

    let submission = InvoiceSubmission {
        external_id: Some("ext-1".into()),
        invoice_date: "2026-11-30T00:00:00Z".into(),
        memo: None,
        period: period(),
        items: vec![item("20.00"), item("5.50")],
        discounts: None,
        is_final: None,
        test: Some(InvoiceTest {
            validate: None,
            result: Some("paid".into()),
        }),
    };
    let receipt = api
        .submit_invoice(&token, &installation.id, &submission)
        .await
        .unwrap();
    let invoice_id = receipt.invoice_id.unwrap();
    assert_eq!(receipt.test, Some(true));
    let again = api
        .submit_invoice(&token, &installation.id, &submission)
        .await
        .unwrap();
    assert_eq!(
        again.invoice_id.as_deref(),
        Some(invoice_id.as_str()),
        "externalId is unique"
    );
    let invoice = api
        .get_invoice(&token, &installation.id, &invoice_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(invoice.state, "paid");
    assert_eq!(invoice.total, "25.50");
    assert_eq!(invoice.external_id.as_deref(), Some("ext-1"));
    assert!(
        api.get_invoice(&token, &installation.id, "inv_nope")
            .await
            .unwrap()
            .is_none()
    );
    api.refund_invoice(
        &token,
        &installation.id,
        &invoice_id,
        &InvoiceAction::refund("goodwill", "5.00"),
    )
    .await
    .unwrap();
    assert_eq!(
        sim.invoice(&installation.id, &invoice_id).unwrap().state,
        "refund_requested"
    );
    let too_much = api
        .refund_invoice(
            &token,
            &installation.id,
            &invoice_id,
            &InvoiceAction::refund("x", "99.00"),
        )
        .await
        .unwrap_err();
    assert_eq!(too_much.code(), ErrorCode::Validation);

    api.submit_balances(
        &token,
        &installation.id,
        &BalanceSubmission {
            timestamp: "2026-11-23T12:00:00Z".into(),
            balances: vec![Balance {
                resource_id: None,
                credit: Some("20.00 USD".into()),
                name_label: Some("Credits".into()),
                currency_value_in_cents: 2000,
            }],
        },
    )
    .await
    .unwrap();
    assert_eq!(
        sim.installation(&installation.id).unwrap().balances[0]["balances"][0]["currencyValueInCents"],
        2000
    );

    api.finalize_installation(&token, &installation.id)
        .await
        .unwrap();
    let after = api
        .account_info(&token, &installation.id)
        .await
        .unwrap_err();
    assert_eq!(
        after.code(),
        ErrorCode::PermissionDenied,
        "the token stops working once finalized"
    );
}

#[tokio::test]
async fn tokens_sso_and_failures() {
    let (sim, api, installation, token) = setup().await;
    let other = sim.new_installation();
    let foreign = api
        .account_info(&SecretString::new(other.token.clone()), &installation.id)
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), ErrorCode::PermissionDenied);
    let made_up = api
        .account_info(&SecretString::new("vat_guess"), &installation.id)
        .await
        .unwrap_err();
    assert_eq!(made_up.code(), ErrorCode::PermissionDenied);

    sim.faults().inject(Fault::status("/account", 429, 1));
    sim.faults().inject(Fault::status("/account", 503, 1));
    let limited = api
        .account_info(&token, &installation.id)
        .await
        .unwrap_err();
    assert_eq!(limited.code(), ErrorCode::RateLimited);
    assert!(limited.code().is_transient());
    let down = api
        .account_info(&token, &installation.id)
        .await
        .unwrap_err();
    assert_eq!(down.code(), ErrorCode::Unavailable);
    assert!(api.account_info(&token, &installation.id).await.is_ok());

    let code = sim.issue_sso_code(
        &installation,
        &marketbridge_simulators::vercel::tokens::SimUser::admin(),
    );
    let request = SsoTokenRequest {
        code: code.code.clone(),
        state: Some(code.state.clone()),
        client_id: sim.client_id().into(),
        client_secret: sim.client_secret().into(),
        redirect_uri: None,
        grant_type: Some("authorization_code".into()),
    };
    let tokens = api.exchange_sso_code(&request).await.unwrap();
    assert_eq!(tokens.id_token.split('.').count(), 3);
    let reused = api.exchange_sso_code(&request).await.unwrap_err();
    assert_eq!(reused.code(), ErrorCode::Validation);
    let bad_id = api
        .update_resource(&token, "../etc", "res_1", &ResourceUpdate::default())
        .await
        .unwrap_err();
    assert_eq!(bad_id.code(), ErrorCode::Validation);
}
