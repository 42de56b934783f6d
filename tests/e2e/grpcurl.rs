//! The README's promise to internal teams, kept with the real `grpcurl`
//! (the binary `MARKETBRIDGE_TEST_GRPCURL` names; CI always sets it):
//! reflection lists each service, health answers SERVING, and the
//! entitlement check and usage recording work as the README shows them,
//! with the header a team's credential goes in; nothing answers without it
//! but health.

use crate::drivers_support::{context, direct_account};
use crate::support::set_on;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_storage::backend_test;
use serde_json::{Value, json};
use std::net::SocketAddr;

fn grpcurl_binary() -> Option<String> {
    std::env::var("MARKETBRIDGE_TEST_GRPCURL")
        .ok()
        .filter(|path| !path.trim().is_empty())
}

/// Runs grpcurl with `args` against `address`, presenting `token` (when
/// given) as the README shows; its exit status and output.
async fn grpcurl(
    binary: &str,
    address: SocketAddr,
    token: Option<&str>,
    data: Option<&Value>,
    args: &[&str],
) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(binary);
    command.arg("-plaintext");
    if let Some(token) = token {
        command
            .arg("-H")
            .arg(format!("authorization: Bearer {token}"));
    }
    if let Some(data) = data {
        command.arg("-d").arg(data.to_string());
    }
    command.arg(address.to_string()).args(args);
    let output = command.output().await.expect("grpcurl runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn call(binary: &str, address: SocketAddr, token: &str, method: &str, data: Value) -> Value {
    let (ok, out, err) = grpcurl(binary, address, Some(token), Some(&data), &[method]).await;
    assert!(ok, "{method}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method} answered {out}: {e}"))
}

backend_test!(
    grpcurl_lists_checks_and_records_usage_as_the_readme_shows,
    |database| async move {
        let Some(binary) = grpcurl_binary() else {
            eprintln!("MARKETBRIDGE_TEST_GRPCURL is not set: grpcurl checks skipped");
            return;
        };
        let (operator_entry, operator) =
            marketbridge_rpc::auth::new_client_entry("operator", "admin").unwrap();
        let (team_entry, team) =
            marketbridge_rpc::auth::new_client_entry("team-api", "entitlements+usage").unwrap();
        let test = set_on(&database)
            .configure(move |config| {
                config.security.grpc_clients = format!("{operator_entry},{team_entry}");
            })
            .start()
            .await;
        let a = test.set.addresses;
        for (address, service) in [
            (a.account, "marketbridge.account.v1.AccountService"),
            (
                a.provisioning,
                "marketbridge.provisioning.v1.ProvisioningService",
            ),
            (a.billing, "marketbridge.billing.v1.BillingService"),
        ] {
            let (ok, _, err) = grpcurl(&binary, address, None, None, &["list"]).await;
            assert!(!ok && err.contains("Unauthenticated"), "{err}");
            let (ok, listed, err) =
                grpcurl(&binary, address, Some(&operator), None, &["list"]).await;
            assert!(ok, "{err}");
            let listed: Vec<&str> = listed.lines().collect();
            assert_eq!(listed, vec!["grpc.health.v1.Health", service]);
            let (ok, described, err) = grpcurl(
                &binary,
                address,
                Some(&operator),
                None,
                &["describe", service],
            )
            .await;
            assert!(ok && described.contains("is a service"), "{err}");
            for name in ["", service] {
                // grpcurl learns the schema through reflection, which needs
                // a credential; health itself answers anyone (see
                // security_grpc.rs).
                let (ok, out, err) = grpcurl(
                    &binary,
                    address,
                    Some(&operator),
                    Some(&json!({ "service": name })),
                    &["grpc.health.v1.Health/Check"],
                )
                .await;
                assert!(ok, "{err}");
                let health: Value = serde_json::from_str(&out).unwrap();
                assert_eq!(health["status"], "SERVING");
            }
        }

        // A customer with a resource, as any marketplace would leave one.
        let account = direct_account(&test, "team-grpcurl").await;
        let mut provisioning = test.set.clients.provisioning.clone();
        let created = provisioning
            .create_resource(provisioning_pb::CreateResourceRequest {
                context: context("grpcurl-resource"),
                account_id: account.id.clone(),
                product_id: "database".into(),
                plan_id: "pro".into(),
                name: "grpcurl".into(),
                ..Default::default()
            })
            .await
            .expect("a resource")
            .into_inner();
        let resource_id = created.resource.unwrap().id;

        let entitlement = call(
            &binary,
            a.provisioning,
            &team,
            "marketbridge.provisioning.v1.ProvisioningService/CheckEntitlement",
            json!({"account": {"marketplaceRef": {"marketplace": "MARKETPLACE_DIRECT", "externalId": "team-grpcurl"}}}),
        )
        .await;
        assert_eq!(entitlement["allowed"], true, "{entitlement}");
        assert_eq!(entitlement["entitlements"][0]["planId"], "pro");

        let usage = json!({"events": [{"eventId": "api-7f3a-0001", "resourceId": resource_id, "metricId": "requests", "quantity": "120"}]});
        let record = "marketbridge.billing.v1.BillingService/RecordUsage";
        let first = call(&binary, a.billing, &team, record, usage.clone()).await;
        assert_eq!(first["accepted"], 1, "{first}");
        let replay = call(&binary, a.billing, &team, record, usage).await;
        assert_eq!(replay["duplicates"], 1, "a replay is a no-op: {replay}");
        let totals = call(
            &binary,
            a.billing,
            &team,
            "marketbridge.billing.v1.BillingService/QueryUsage",
            json!({"resourceId": resource_id, "metricId": "requests"}),
        )
        .await;
        assert_eq!(totals["periods"][0]["quantity"], "120", "{totals}");

        // A bad batch fails whole, naming the field.
        let bad = json!({"events": [{"eventId": "api-7f3a-0002", "resourceId": resource_id, "metricId": "requests", "quantity": "-5"}]});
        let (ok, _, err) = grpcurl(&binary, a.billing, Some(&team), Some(&bad), &[record]).await;
        assert!(!ok);
        assert!(
            err.contains("InvalidArgument") && err.contains("events[0].quantity"),
            "{err}"
        );

        // The team's credential reaches only what its scopes name.
        let (ok, _, err) = grpcurl(
            &binary,
            a.provisioning,
            Some(&team),
            Some(&json!({"resourceId": resource_id})),
            &["marketbridge.provisioning.v1.ProvisioningService/GetResourceSecrets"],
        )
        .await;
        assert!(!ok && err.contains("PermissionDenied"), "{err}");
        test.stop().await;
    }
);
