//! The outbound edges refuse to call out while the calling task holds a
//! database transaction (`marketbridge_telemetry::transactions`): both the
//! HTTP helper every marketplace client uses and the gRPC channel every
//! service client uses.

use marketbridge_config::TlsOptions;
use marketbridge_proto::billing::v1::ListPlansRequest;
use marketbridge_rpc::client::{BillingClient, ClientCredentials, channel};
use marketbridge_telemetry::transactions::OpenTransaction;
use std::time::Duration;

/// Runs `call` in a task of its own, holding a transaction when asked, and
/// returns the panic message if it panicked.
async fn outcome<F>(hold_transaction: bool, call: F) -> Option<String>
where
    F: Future<Output = ()> + Send + 'static,
{
    let result = tokio::spawn(async move {
        let _txn = hold_transaction.then(OpenTransaction::begin);
        call.await;
    })
    .await;
    result.err().map(|error| {
        let panic = error.into_panic();
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

async fn http_call() {
    // Nothing listens on the discard port: the call fails, which is fine;
    // only whether it was attempted matters.
    let client =
        marketbridge_rpc::http::outbound_client(&TlsOptions::default(), Duration::from_secs(1))
            .expect("an HTTP client");
    let request = client.get("http://127.0.0.1:9/v1/things");
    let _ = marketbridge_rpc::http::send_traced(request, "somewhere", "/v1/things").await;
}

async fn grpc_call() {
    let credentials = ClientCredentials::tls_only(&TlsOptions::default());
    let channel = channel(
        "http://127.0.0.1:9",
        &credentials,
        Duration::from_millis(200),
    )
    .expect("a lazy channel");
    let mut billing: BillingClient =
        marketbridge_proto::billing::v1::billing_service_client::BillingServiceClient::new(channel);
    let _ = billing.list_plans(ListPlansRequest::default()).await;
}

#[tokio::test]
async fn an_http_call_inside_a_transaction_is_refused() {
    assert_eq!(outcome(false, http_call()).await, None);
    let refused = outcome(true, http_call())
        .await
        .expect("the call must be refused");
    assert!(refused.contains("GET /v1/things at somewhere"), "{refused}");
    assert!(
        refused.contains("database transaction is open"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_grpc_call_inside_a_transaction_is_refused() {
    assert_eq!(outcome(false, grpc_call()).await, None);
    let refused = outcome(true, grpc_call())
        .await
        .expect("the call must be refused");
    assert!(
        refused.contains("/marketbridge.billing.v1.BillingService/ListPlans"),
        "{refused}"
    );
}
