//! The Google clients and verifiers against the Google simulator over real
//! HTTP: tokens, the Procurement state machine, pull, Service Control, and
//! every way a push or signup token can be wrong.

use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use marketbridge_core::ErrorCode;
use marketbridge_core::time::{Clock, ManualClock, SharedClock};
use marketbridge_google::api::{AccessTokens, GoogleApi};
use marketbridge_google::jwks::KeySet;
use marketbridge_google::notification::decode_message;
use marketbridge_google::procurement::{ProcurementClient, entitlement_state};
use marketbridge_google::pubsub::PubsubClient;
use marketbridge_google::push_auth::PushTokenVerifier;
use marketbridge_google::service_account::{ServiceAccountKey, ServiceAccountTokens};
use marketbridge_google::service_control::{
    MetricValue, MetricValueSet, Operation, ServiceControlClient,
};
use marketbridge_google::signup_token::SignupTokenVerifier;
use marketbridge_google::token::RejectReason;
use marketbridge_simulators::common::{Fault, SigningKey};
use marketbridge_simulators::google::{
    self as sim, GoogleSimulator, GoogleSimulatorOptions, PUSH_AUDIENCE, PUSH_SERVICE_ACCOUNT,
    SIGNUP_AUDIENCE, SIGNUP_ISSUER,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

struct Fixture {
    clock: ManualClock,
    shared: SharedClock,
    sim: GoogleSimulator,
    http: reqwest::Client,
    tokens: Arc<ServiceAccountTokens>,
}

async fn fixture() -> Fixture {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap());
    let shared: SharedClock = Arc::new(clock.clone());
    let sim = GoogleSimulator::start(GoogleSimulatorOptions::new(shared.clone()))
        .await
        .expect("simulator starts");
    let http = marketbridge_rpc::http::outbound_client(&Default::default(), Duration::from_secs(5))
        .expect("client");
    let key = ServiceAccountKey::from_json(&sim.service_account_key_json()).expect("key parses");
    let tokens = Arc::new(
        ServiceAccountTokens::new(http.clone(), key, "", shared.clone()).expect("token source"),
    );
    Fixture {
        clock,
        shared,
        sim,
        http,
        tokens,
    }
}

impl Fixture {
    fn api(&self) -> GoogleApi {
        GoogleApi::new(self.http.clone(), self.sim.url(), self.tokens.clone())
    }

    fn procurement(&self) -> ProcurementClient {
        ProcurementClient::new(self.api(), self.sim.provider_id()).unwrap()
    }

    fn push_verifier(&self) -> PushTokenVerifier {
        PushTokenVerifier::new(
            KeySet::new(self.http.clone(), &self.sim.oidc_jwks_url()),
            "https://accounts.google.com,accounts.google.com",
            PUSH_AUDIENCE,
            PUSH_SERVICE_ACCOUNT,
            self.shared.clone(),
        )
    }

    fn signup_verifier(&self) -> SignupTokenVerifier {
        SignupTokenVerifier::new(
            KeySet::new(self.http.clone(), &self.sim.signup_jwks_url()),
            SIGNUP_ISSUER,
            SIGNUP_AUDIENCE,
            self.shared.clone(),
        )
    }
}

#[tokio::test]
async fn access_tokens_come_from_the_jwt_bearer_grant_and_are_cached() {
    let f = fixture().await;
    let first = f.tokens.access_token().await.unwrap();
    let second = f.tokens.access_token().await.unwrap();
    assert_eq!(first, second, "the token is reused");
    assert_eq!(f.sim.api().recorder.calls_to("POST", "/token").len(), 1);
    let grant = &f.sim.api().recorder.calls_to("POST", "/token")[0];
    assert!(
        grant
            .body
            .contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer")
    );
    f.clock.advance(ChronoDuration::minutes(59));
    let renewed = f.tokens.access_token().await.unwrap();
    assert_ne!(renewed, first, "a token close to expiry is renewed");
    assert_eq!(f.sim.api().recorder.calls_to("POST", "/token").len(), 2);

    // A key Google never issued is refused at the token endpoint.
    let forged = SigningKey::generate("forged");
    let forged_key = ServiceAccountKey::from_json(&ServiceAccountKey::to_json(
        f.sim.service_account_email(),
        "forged",
        forged.private_key_pem(),
        &f.sim.token_url(),
        "p",
    ))
    .unwrap();
    let refused = ServiceAccountTokens::new(f.http.clone(), forged_key, "", f.shared.clone())
        .unwrap()
        .access_token()
        .await
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::PermissionDenied, "{refused}");
    assert!(refused.message().contains("invalid_grant"), "{refused}");
}

#[tokio::test]
async fn the_procurement_state_machine_is_enforced() {
    let f = fixture().await;
    let procurement = f.procurement();
    let purchase = f.sim.purchase(sim::PRODUCT, "pro-plan");

    let account = procurement
        .get_account(&purchase.account_id)
        .await
        .unwrap()
        .expect("account exists");
    assert_eq!(account.id(), purchase.account_id);
    assert_eq!(account.signup_approval().unwrap().state, "PENDING");

    // Approving the entitlement before the account's signup is refused.
    let early = procurement
        .approve_entitlement(&purchase.entitlement_id)
        .await
        .unwrap_err();
    assert_eq!(early.code(), ErrorCode::Validation);
    assert!(
        early.message().contains("Precondition check failed"),
        "{early}"
    );

    procurement
        .approve_account(&purchase.account_id)
        .await
        .unwrap();
    procurement
        .approve_account(&purchase.account_id)
        .await
        .unwrap();
    let waiting = procurement
        .list_all_entitlements(&format!(
            "state=activation_requested account={}",
            purchase.account_id
        ))
        .await
        .unwrap();
    assert_eq!(waiting.len(), 1);
    procurement
        .set_message_to_user(&purchase.entitlement_id, "almost there")
        .await
        .unwrap();
    procurement
        .approve_entitlement(&purchase.entitlement_id)
        .await
        .unwrap();
    let entitlement = procurement
        .get_entitlement(&purchase.entitlement_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entitlement.state(), entitlement_state::ACTIVE);
    assert_eq!(entitlement.account_id(), purchase.account_id);
    assert!(entitlement.usage_reporting_id.is_some());
    assert!(
        entitlement.message_to_user.is_none(),
        "cleared on activation"
    );

    f.sim
        .request_plan_change(&purchase.entitlement_id, "free-plan")
        .unwrap();
    let wrong = procurement
        .approve_plan_change(&purchase.entitlement_id, "pro-plan")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), ErrorCode::Validation);
    procurement
        .approve_plan_change(&purchase.entitlement_id, "free-plan")
        .await
        .unwrap();
    let changed = procurement
        .get_entitlement(&purchase.entitlement_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.plan.as_deref(), Some("free-plan"));

    procurement
        .reset_account(&purchase.account_id)
        .await
        .unwrap();
    let reset = procurement
        .get_entitlement(&purchase.entitlement_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reset.state(), entitlement_state::CANCELLED);
    assert!(
        procurement
            .get_entitlement("missing")
            .await
            .unwrap()
            .is_none()
    );
    assert!(procurement.get_account("missing").await.unwrap().is_none());
    assert_eq!(procurement.list_all_accounts().await.unwrap().len(), 1);
    let bad_id = procurement.get_account("a/../b").await.unwrap_err();
    assert_eq!(bad_id.code(), ErrorCode::Validation);

    // 5xx answers are transient errors.
    f.sim
        .api()
        .faults
        .inject(Fault::status("/entitlements/", 503, 1));
    let unavailable = procurement
        .get_entitlement(&purchase.entitlement_id)
        .await
        .unwrap_err();
    assert!(unavailable.code().is_transient(), "{unavailable}");
}

#[tokio::test]
async fn pull_acknowledges_and_redelivers_after_the_deadline() {
    let f = fixture().await;
    let pubsub = PubsubClient::new(f.api(), f.sim.pull_subscription()).unwrap();
    assert!(pubsub.pull(10).await.unwrap().is_empty());
    let purchase = f.sim.purchase(sim::PRODUCT, "pro-plan");
    let first = pubsub.pull(10).await.unwrap();
    assert_eq!(first.len(), 2, "account and entitlement messages");
    let decoded = decode_message(&first[1].message).unwrap();
    assert_eq!(decoded.event_type, "ENTITLEMENT_CREATION_REQUESTED");
    assert_eq!(
        decoded.notification.entitlement_id(),
        Some(purchase.entitlement_id.as_str())
    );
    assert!(
        pubsub.pull(10).await.unwrap().is_empty(),
        "held until the deadline"
    );
    pubsub
        .acknowledge(&[first[0].ack_id.clone()])
        .await
        .unwrap();
    pubsub
        .modify_ack_deadline(&[first[1].ack_id.clone()], 60)
        .await
        .unwrap();
    f.clock.advance(ChronoDuration::seconds(30));
    assert!(
        pubsub.pull(10).await.unwrap().is_empty(),
        "deadline extended"
    );
    f.clock.advance(ChronoDuration::seconds(31));
    let again = pubsub.pull(10).await.unwrap();
    assert_eq!(again.len(), 1, "redelivered after the deadline");
    assert_eq!(again[0].delivery_attempt, Some(2));
    pubsub
        .acknowledge(&[again[0].ack_id.clone()])
        .await
        .unwrap();
    assert_eq!(f.sim.unacknowledged_pulls(), 0);
    assert!(PubsubClient::new(f.api(), "not-a-subscription").is_err());
}

#[tokio::test]
async fn service_control_checks_and_reports_with_refusals_inside_a_200() {
    let f = fixture().await;
    let procurement = f.procurement();
    let purchase = f.sim.purchase(sim::PRODUCT, "pro-plan");
    procurement
        .approve_account(&purchase.account_id)
        .await
        .unwrap();
    procurement
        .approve_entitlement(&purchase.entitlement_id)
        .await
        .unwrap();
    let consumer = f
        .sim
        .entitlement(&purchase.entitlement_id)
        .unwrap()
        .usage_reporting_id
        .unwrap();
    let control = ServiceControlClient::new(f.api(), sim::SERVICE_NAME).unwrap();
    let mut operation = Operation {
        operation_id: "op-1".into(),
        operation_name: "Hourly Usage Report".into(),
        consumer_id: consumer.clone(),
        start_time: "2026-11-23T11:00:00Z".into(),
        end_time: "2026-11-23T12:00:00Z".into(),
        metric_value_sets: vec![MetricValueSet {
            metric_name: format!("{}/pro_requests", sim::SERVICE_NAME),
            metric_values: vec![MetricValue::int64(150)],
        }],
        user_labels: Default::default(),
    };
    operation
        .user_labels
        .insert("environment".into(), "prod".into());
    let check = control.check(&operation).await.unwrap();
    assert!(check.is_clear(), "{check:?}");
    assert!(
        f.sim.checked_operations()[0].get("userLabels").is_none(),
        "labels are left out of checks"
    );
    let outcome = control
        .report(std::slice::from_ref(&operation))
        .await
        .unwrap();
    assert_eq!(outcome.accepted, ["op-1"]);
    assert_eq!(
        f.sim.reported_operations()[0]["metricValueSets"][0]["metricValues"][0]["int64Value"],
        "150"
    );

    f.sim.set_check_errors(&consumer, &["BILLING_DISABLED"]);
    let refused = control.check(&operation).await.unwrap();
    assert_eq!(refused.check_errors[0].code, "BILLING_DISABLED");

    f.sim
        .set_report_error(&consumer, Some((9, "billing disabled")));
    operation.operation_id = "op-2".into();
    let outcome = control.report(&[operation]).await.unwrap();
    assert!(outcome.accepted.is_empty());
    assert_eq!(outcome.failed[0].operation_id, "op-2");
    let error = outcome.into_result().unwrap_err();
    assert_eq!(error.code(), ErrorCode::Conflict);
    assert_eq!(
        f.sim.reported_operations().len(),
        1,
        "the refused one was not recorded"
    );
}

#[tokio::test]
async fn push_tokens_are_checked_claim_by_claim() {
    let f = fixture().await;
    let verifier = f.push_verifier();
    let good = f.sim.sign_push_claims(&f.sim.push_claims());
    let identity = verifier
        .verify_header(Some(&format!("Bearer {good}")))
        .await
        .unwrap();
    assert_eq!(identity.email, PUSH_SERVICE_ACCOUNT);

    let cases = [
        ("iss", json!("https://evil.example"), RejectReason::Issuer),
        (
            "aud",
            json!("https://other.example/push"),
            RejectReason::Audience,
        ),
        (
            "exp",
            json!(f.clock.now().timestamp() - 120),
            RejectReason::Expired,
        ),
        (
            "email",
            json!("someone@example.com"),
            RejectReason::ServiceAccount,
        ),
        (
            "email_verified",
            json!(false),
            RejectReason::EmailNotVerified,
        ),
    ];
    for (claim, value, reason) in cases {
        let mut claims = f.sim.push_claims();
        claims[claim] = value;
        let token = f.sim.sign_push_claims(&claims);
        let rejected = verifier.verify(&token).await.unwrap_err();
        assert_eq!(rejected.reason, reason, "{claim}: {rejected}");
    }
    let forged = SigningKey::generate("google-oidc-1").sign(&f.sim.push_claims());
    assert_eq!(
        verifier.verify(&forged).await.unwrap_err().reason,
        RejectReason::Signature
    );
    let unknown_key = SigningKey::generate("other-kid").sign(&f.sim.push_claims());
    assert_eq!(
        verifier.verify(&unknown_key).await.unwrap_err().reason,
        RejectReason::UnknownKey
    );
    let hmac = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &f.sim.push_claims(),
        &jsonwebtoken::EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    assert_eq!(
        verifier.verify(&hmac).await.unwrap_err().reason,
        RejectReason::Algorithm
    );
    assert_eq!(
        verifier.verify_header(None).await.unwrap_err().reason,
        RejectReason::Missing
    );
    assert_eq!(
        verifier
            .verify_header(Some("Basic abc"))
            .await
            .unwrap_err()
            .reason,
        RejectReason::Missing
    );
    assert_eq!(
        verifier.verify("not.a.jwt").await.unwrap_err().reason,
        RejectReason::Malformed
    );
    // Tokens within the skew are still fine; later they expire.
    f.clock.advance(ChronoDuration::seconds(3600 + 20));
    verifier.verify(&good).await.unwrap();
    f.clock.advance(ChronoDuration::seconds(20));
    assert_eq!(
        verifier.verify(&good).await.unwrap_err().reason,
        RejectReason::Expired
    );
}

#[tokio::test]
async fn signup_tokens_are_pinned_to_issuer_audience_and_subject() {
    let f = fixture().await;
    let verifier = f.signup_verifier();
    let claims = verifier
        .verify(&f.sim.signup_token("acct-1"))
        .await
        .unwrap();
    assert_eq!(claims.account_id, "acct-1");
    assert_eq!(claims.user_identity.as_deref(), Some("user-acct-1"));
    assert_eq!(claims.roles, ["account_admin"]);

    let now = f.clock.now().timestamp();
    let base = json!({"iss": SIGNUP_ISSUER, "aud": SIGNUP_AUDIENCE, "sub": "acct-1", "iat": now, "exp": now + 300});
    let cases = [
        (
            "iss",
            json!("https://www.googleapis.com/robot/v1/metadata/x509/someone-else"),
            RejectReason::Issuer,
        ),
        ("aud", json!("other.example.com"), RejectReason::Audience),
        ("exp", json!(now - 60), RejectReason::Expired),
        ("sub", json!(""), RejectReason::Subject),
        ("iat", json!(now + 3600), RejectReason::NotYetValid),
    ];
    for (claim, value, reason) in cases {
        let mut token_claims = base.clone();
        token_claims[claim] = value;
        let rejected = verifier
            .verify(&f.sim.sign_signup_claims(&token_claims))
            .await
            .unwrap_err();
        assert_eq!(rejected.reason, reason, "{claim}: {rejected}");
    }
    let mut no_sub = base.clone();
    no_sub.as_object_mut().unwrap().remove("sub");
    assert_eq!(
        verifier
            .verify(&f.sim.sign_signup_claims(&no_sub))
            .await
            .unwrap_err()
            .reason,
        RejectReason::Subject
    );
    let forged = SigningKey::generate("cloud-commerce-partner-1").sign(&base);
    assert_eq!(
        verifier.verify(&forged).await.unwrap_err().reason,
        RejectReason::Signature
    );
    let orders = f.sim.sign_signup_claims(&json!({"iss": SIGNUP_ISSUER, "aud": SIGNUP_AUDIENCE,
        "sub": "acct-2", "iat": now, "exp": now + 300, "google": {"orders": ["o-1", {"orderId": "o-2"}]}}));
    assert_eq!(
        verifier.verify(&orders).await.unwrap().orders,
        ["o-1", "o-2"]
    );
    // An unreachable key endpoint is a transient failure, not a rejection
    // of the customer.
    f.sim
        .api()
        .faults
        .inject(Fault::status("/robot/v1/metadata/jwk", 503, 1));
    let fresh = f.signup_verifier();
    let unavailable = fresh
        .verify(&f.sim.signup_token("acct-1"))
        .await
        .unwrap_err();
    assert_eq!(unavailable.reason, RejectReason::KeysUnavailable);
    assert!(
        marketbridge_core::Error::from(unavailable)
            .code()
            .is_transient()
    );
}

#[tokio::test]
async fn rotated_keys_are_fetched_when_an_unknown_kid_appears() {
    use axum::routing::get;
    let first = Arc::new(SigningKey::generate("k1"));
    let second = Arc::new(SigningKey::generate("k2"));
    let published = Arc::new(std::sync::Mutex::new(vec![first.jwk()]));
    let served = published.clone();
    let router = axum::Router::new().route(
        "/certs",
        get(move || {
            let keys = served.lock().unwrap().clone();
            async move { axum::Json(json!({"keys": keys})) }
        }),
    );
    let server = marketbridge_simulators::common::SimServer::start(router, "127.0.0.1:0")
        .await
        .unwrap();
    let clock: SharedClock = Arc::new(ManualClock::new(Utc::now()));
    let http = marketbridge_rpc::http::outbound_client(&Default::default(), Duration::from_secs(5))
        .unwrap();
    let keys =
        KeySet::new(http, &format!("{}/certs", server.url)).with_refresh_interval(Duration::ZERO);
    let verifier = SignupTokenVerifier::new(keys, "iss", "aud", clock.clone());
    let now = clock.now().timestamp();
    let claims = json!({"iss": "iss", "aud": "aud", "sub": "a", "exp": now + 60});
    verifier.verify(&first.sign(&claims)).await.unwrap();
    published.lock().unwrap().push(second.jwk());
    verifier.verify(&second.sign(&claims)).await.unwrap();
    verifier.verify(&first.sign(&claims)).await.unwrap();
}
