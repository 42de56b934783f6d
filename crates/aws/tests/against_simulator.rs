//! The clients against the AWS Marketplace simulator over real HTTP:
//! signatures checked by the simulator, AWS's answers read back.

use marketbridge_aws::events;
use marketbridge_aws::metering::{Licensee, Measurement, MeteringBatch, status};
use marketbridge_aws::sns::{CertificatePolicy, Refusal, SnsVerifier};
use marketbridge_aws::{AwsCredentials, CallError, MarketplaceClient};
use marketbridge_core::time::{hour_floor, system_clock};
use marketbridge_simulators::aws::{
    ACCESS_KEY_ID, AwsSimulator, AwsSimulatorOptions, PRODUCT_CODE, SECRET_ACCESS_KEY,
};

async fn simulator() -> AwsSimulator {
    AwsSimulator::start(AwsSimulatorOptions::new(system_clock()))
        .await
        .unwrap()
}

fn client(sim: &AwsSimulator, secret: &str) -> MarketplaceClient {
    MarketplaceClient::new(
        reqwest::Client::new(),
        AwsCredentials::new(ACCESS_KEY_ID, secret, None),
        PRODUCT_CODE,
        "us-east-1",
        sim.url(),
        sim.url(),
    )
}

#[tokio::test]
async fn tokens_resolve_to_the_license_and_forged_ones_are_refused() {
    let sim = simulator().await;
    let aws = client(&sim, SECRET_ACCESS_KEY);
    let license = sim.purchase("012345678901", &[("pro_tier", 5)], false);
    let token = sim.registration_token(&license);
    let resolved = aws.resolve_customer(&token).await.unwrap();
    assert_eq!(resolved.product_code, PRODUCT_CODE);
    assert_eq!(resolved.licensee().unwrap().key(), license);
    let forged = aws.resolve_customer("forged").await.unwrap_err();
    assert!(forged.is_token_refused(), "{forged}");
    let wrong_key = client(&sim, "not-the-secret")
        .resolve_customer(&token)
        .await;
    assert!(
        matches!(wrong_key, Err(CallError::Service { status: 403, .. })),
        "{wrong_key:?}"
    );
}

#[tokio::test]
async fn entitlements_are_paged_past_empty_pages() {
    let sim = simulator().await;
    let aws = client(&sim, SECRET_ACCESS_KEY);
    let license = sim.purchase(
        "012345678901",
        &[("pro_tier", 5), ("requests", 1000)],
        false,
    );
    sim.purchase("111111111111", &[("free_tier", 1)], false);
    let licensee = Licensee::License {
        license_arn: license.clone(),
        customer_aws_account_id: "012345678901".into(),
    };
    let mut found: Vec<(String, Option<i64>)> = aws
        .entitlements_of(&licensee)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.dimension, e.value.quantity()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("pro_tier".into(), Some(5)),
            ("requests".into(), Some(1000))
        ]
    );
    assert_eq!(aws.all_entitlements().await.unwrap().len(), 3);
}

#[tokio::test]
async fn usage_is_accepted_once_and_a_changed_quantity_is_a_duplicate() {
    let sim = simulator().await;
    let aws = client(&sim, SECRET_ACCESS_KEY);
    let license = sim.purchase("012345678901", &[("pro_tier", 5)], false);
    let licensee = Licensee::License {
        license_arn: license,
        customer_aws_account_id: "012345678901".into(),
    };
    let hour = hour_floor(chrono::Utc::now()).timestamp();
    let batch = |quantity| {
        MeteringBatch::new(
            PRODUCT_CODE,
            &licensee,
            hour,
            &[Measurement {
                dimension: "requests".into(),
                quantity,
                tags: vec![("team".into(), "a".into())],
            }],
        )
    };
    let first = aws
        .batch_meter_usage(&batch(42).requests()[0])
        .await
        .unwrap();
    assert_eq!(first.results[0].status, status::SUCCESS);
    let again = aws
        .batch_meter_usage(&batch(42).requests()[0])
        .await
        .unwrap();
    assert_eq!(
        again.results[0].metering_record_id,
        first.results[0].metering_record_id
    );
    let changed = aws
        .batch_meter_usage(&batch(43).requests()[0])
        .await
        .unwrap();
    assert_eq!(changed.results[0].status, status::DUPLICATE_RECORD);
    assert_eq!(sim.accepted().len(), 1);
    assert_eq!(sim.accepted()[0].quantity, 42);
    let late = MeteringBatch::new(
        PRODUCT_CODE,
        &licensee,
        hour - 7 * 3600,
        &[Measurement {
            dimension: "requests".into(),
            quantity: 1,
            tags: vec![],
        }],
    );
    let refused = aws
        .batch_meter_usage(&late.requests()[0])
        .await
        .unwrap_err();
    assert_eq!(refused.name(), Some("TimestampOutOfBoundsException"));
}

#[tokio::test]
async fn sns_signatures_verify_with_the_served_certificate_only() {
    let sim = simulator().await;
    let license = sim.purchase("012345678901", &[], true);
    let trusted = SnsVerifier::new(
        reqwest::Client::new(),
        CertificatePolicy::parse(&sim.certificate_url_pattern()).unwrap(),
    );
    let now = chrono::Utc::now().timestamp();
    for version in ["1", "2"] {
        let message = sim.sns_notification(&license, events::action::SUBSCRIBE_SUCCESS, version);
        trusted.verify(&message, now).await.unwrap();
        let mut tampered = message.clone();
        tampered.message = tampered
            .message
            .replace("subscribe-success", "unsubscribe-success");
        assert_eq!(
            trusted.verify(&tampered, now).await,
            Err(Refusal::BadSignature)
        );
    }
    let aws_only = SnsVerifier::new(
        reqwest::Client::new(),
        CertificatePolicy::parse(marketbridge_aws::sns::DEFAULT_CERTIFICATE_PATTERN).unwrap(),
    );
    let message = sim.sns_notification(&license, events::action::SUBSCRIBE_SUCCESS, "2");
    assert_eq!(
        aws_only.verify(&message, now).await,
        Err(Refusal::UntrustedCertificate)
    );
}
