//! Every gRPC service authenticates every caller: named callers with scopes,
//! secrets behind their own scope, health open, nothing else without
//! credentials.

use crate::drivers_support::{context, direct_account};
use crate::support::set_on;
use marketbridge_core::crypto::SecretString;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::account::v1::account_service_client::AccountServiceClient;
use marketbridge_proto::common::v1::{
    AccountSelector, Marketplace, MarketplaceRef, account_selector,
};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_proto::provisioning::v1::provisioning_service_client::ProvisioningServiceClient;
use marketbridge_rpc::{ClientCredentials, TracedChannel};
use marketbridge_storage::backend_test;
use std::time::Duration;
use tonic::Code;

fn channel(url: &str, token: Option<&str>) -> TracedChannel {
    let credentials = ClientCredentials {
        token: token.map(SecretString::new),
        ..Default::default()
    };
    marketbridge_rpc::channel(url, &credentials, Duration::from_secs(5)).unwrap()
}

fn code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

backend_test!(
    callers_reach_only_what_their_scopes_name,
    |database| async move {
        let (operator_entry, operator) =
            marketbridge_rpc::auth::new_client_entry("operator", "admin").unwrap();
        let (team_entry, team) =
            marketbridge_rpc::auth::new_client_entry("team-api", "entitlements+usage").unwrap();
        let test = set_on(&database)
            .configure(move |config| {
                config.security.grpc_clients = format!("{operator_entry}\n{team_entry}");
            })
            .start()
            .await;
        let urls = test.set.config.gateway.clone();

        // A customer's database, created by the set's own parts.
        let account = direct_account(&test, "team-scopes").await;
        let created = test
            .set
            .clients
            .provisioning
            .clone()
            .create_resource(provisioning_pb::CreateResourceRequest {
                context: context("scopes-resource"),
                account_id: account.id.clone(),
                product_id: "database".into(),
                plan_id: "pro".into(),
                name: "scopes".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let resource_id = created.resource.unwrap().id;
        let secrets_request = || provisioning_pb::GetResourceSecretsRequest {
            resource_id: resource_id.clone(),
        };

        // Nobody without credentials, or with made-up ones.
        for token in [None, Some("not-a-token-anyone-was-given-0123456789")] {
            let mut anonymous =
                ProvisioningServiceClient::new(channel(&urls.provisioning_url, token));
            assert_eq!(
                code(anonymous.get_resource_secrets(secrets_request()).await),
                Code::Unauthenticated
            );
            let mut accounts = AccountServiceClient::new(channel(&urls.account_url, token));
            assert_eq!(
                code(
                    accounts
                        .list_accounts(account_pb::ListAccountsRequest::default())
                        .await
                ),
                Code::Unauthenticated
            );
        }

        // An operator administers, but reading secrets is its own scope.
        let mut as_operator =
            ProvisioningServiceClient::new(channel(&urls.provisioning_url, Some(&operator)));
        assert_eq!(
            code(as_operator.get_resource_secrets(secrets_request()).await),
            Code::PermissionDenied
        );
        assert_eq!(
            code(
                as_operator
                    .get_resource(provisioning_pb::GetResourceRequest {
                        resource_id: resource_id.clone(),
                        ..Default::default()
                    })
                    .await
            ),
            Code::Ok
        );

        // A team checks entitlements and nothing more.
        let mut as_team =
            ProvisioningServiceClient::new(channel(&urls.provisioning_url, Some(&team)));
        let entitlement = as_team
            .check_entitlement(provisioning_pb::CheckEntitlementRequest {
                account: Some(AccountSelector {
                    selector: Some(account_selector::Selector::MarketplaceRef(
                        MarketplaceRef::new(Marketplace::Direct, "team-scopes"),
                    )),
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(entitlement.allowed);
        assert_eq!(
            code(
                as_team
                    .get_resource(provisioning_pb::GetResourceRequest {
                        resource_id: resource_id.clone(),
                        ..Default::default()
                    })
                    .await
            ),
            Code::PermissionDenied
        );
        let mut team_accounts = AccountServiceClient::new(channel(&urls.account_url, Some(&team)));
        assert_eq!(
            code(
                team_accounts
                    .list_accounts(account_pb::ListAccountsRequest::default())
                    .await
            ),
            Code::PermissionDenied
        );

        // The set's own parts hold every scope.
        let secrets = test
            .set
            .clients
            .provisioning
            .clone()
            .get_resource_secrets(secrets_request())
            .await
            .unwrap()
            .into_inner();
        assert!(!secrets.secrets.is_empty());

        // Health answers anyone (probes, load balancers).
        let mut health =
            tonic_health::pb::health_client::HealthClient::new(channel(&urls.billing_url, None));
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        test.stop().await;
    }
);

#[test]
fn nothing_is_open_by_default() {
    let config = marketbridge_config::Config::default();
    assert!(!config.security.allow_unauthenticated);
    let error = marketbridge_rpc::auth::Callers::from_config(&config).unwrap_err();
    assert!(
        error.message().contains("security.service_token"),
        "{error}"
    );
    for bad in [
        "team:entitlements",
        "team:root:sha256:00",
        "team:usage:sha256:abc",
        "te am:usage:sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "team:usage:password:hunter2",
    ] {
        assert!(
            marketbridge_rpc::auth::Callers::parse(bad).is_err(),
            "{bad} is refused"
        );
    }
}

#[test]
fn a_service_refuses_the_key_compose_used_to_ship_and_a_missing_token() {
    let data = std::env::temp_dir().join(format!(
        "marketbridge-refuse-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let run = |variables: &[(&str, String)]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_marketbridge"))
            .arg("account")
            .env("MARKETBRIDGE_DATA__DIR", &data)
            .env("MARKETBRIDGE_ACCOUNT__LISTEN", "127.0.0.1:0")
            .env("MARKETBRIDGE_TELEMETRY__LOG_FILTER", "error")
            .envs(variables.iter().map(|(k, v)| (*k, v.clone())))
            .output()
            .unwrap();
        assert!(!output.status.success(), "the service must not start");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let token = marketbridge_core::crypto::random_token(32);
    let published = run(&[
        (
            "MARKETBRIDGE_SECURITY__ENCRYPTION_KEY",
            "bWFya2V0YnJpZGdlLWRldi1rZXktbm90LXNlY3JldCE=".to_owned(),
        ),
        ("MARKETBRIDGE_SECURITY__SERVICE_TOKEN", token),
    ]);
    assert!(published.contains("published"), "{published}");
    let no_token = run(&[(
        "MARKETBRIDGE_SECURITY__ENCRYPTION_KEY",
        marketbridge_core::crypto::Cipher::generate_base64_key(),
    )]);
    assert!(no_token.contains("security.service_token"), "{no_token}");
    let _ = std::fs::remove_dir_all(&data);
}
