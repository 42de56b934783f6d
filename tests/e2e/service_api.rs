//! The services as Rust traits (`marketbridge_rpc::api`): the gRPC client
//! and the in-process implementation answer every call alike, errors
//! included, and a write made through one is read back through the other.

use crate::support::set_on;
use marketbridge_account::grpc::AccountGrpc;
use marketbridge_billing::grpc::BillingGrpc;
use marketbridge_core::ErrorCode;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::{AccountSelector, Marketplace, MarketplaceRef};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_provisioning::grpc::ProvisioningGrpc;
use marketbridge_rpc::{AccountApi, BillingApi, InProcess, ProvisioningApi};
use marketbridge_storage::backend_test;

backend_test!(
    the_grpc_and_in_process_paths_answer_alike,
    |database| async move {
        let test = set_on(&database).start().await;
        let set = &test.set;
        let accounts_remote: &dyn AccountApi = &set.clients.account;
        let accounts_local = InProcess::new(AccountGrpc::new(set.account.domain().clone()));
        let billing_remote: &dyn BillingApi = &set.clients.billing;
        let billing_local = InProcess::new(BillingGrpc::new(set.billing.domain().clone()));
        let provisioning_remote: &dyn ProvisioningApi = &set.clients.provisioning;
        let provisioning_local =
            InProcess::new(ProvisioningGrpc::new(set.provisioning.domain().clone()));

        // Reads answer the same messages.
        let plans = billing_pb::ListPlansRequest {
            product_id: "database".into(),
            ..Default::default()
        };
        let remote = billing_remote.list_plans(plans.clone()).await.unwrap();
        let local = billing_local.list_plans(plans).await.unwrap();
        assert!(!remote.plans.is_empty());
        assert_eq!(remote, local);
        // Plans are served as converted once at start: exactly what the
        // catalog's plans convert to now.
        let catalog = set.billing.domain().catalog();
        let product = catalog.product("database").unwrap();
        for served in &remote.plans {
            let plan = product.plan(&served.id).unwrap();
            assert_eq!(served, &plan.to_proto(&product.id).unwrap());
        }

        // Errors keep their code and their message on both paths.
        let unknown = billing_pb::GetPlanRequest {
            product_id: "database".into(),
            plan_id: "no-such-plan".into(),
            ..Default::default()
        };
        let remote = billing_remote.get_plan(unknown.clone()).await.unwrap_err();
        let local = billing_local.get_plan(unknown).await.unwrap_err();
        assert_eq!(remote.code(), ErrorCode::NotFound);
        assert_eq!(
            (remote.code(), remote.message()),
            (local.code(), local.message())
        );

        // A write made in process is what the gRPC path reads back, and the
        // other way round.
        let upsert = |id: &str| account_pb::UpsertAccountRequest {
            marketplace_ref: Some(MarketplaceRef::new(Marketplace::Direct, id)),
            display_name: format!("Team {id}"),
            ..Default::default()
        };
        let written_locally = accounts_local
            .upsert_account(upsert("in-process"))
            .await
            .unwrap();
        let written_remotely = accounts_remote
            .upsert_account(upsert("over-grpc"))
            .await
            .unwrap();
        for written in [&written_locally, &written_remotely] {
            let get = account_pb::GetAccountRequest {
                account: Some(AccountSelector::by_id(&written.id)),
            };
            let remote = accounts_remote.get_account(get.clone()).await.unwrap();
            let local = accounts_local.get_account(get).await.unwrap();
            assert_eq!(&remote, written);
            assert_eq!(remote, local);
        }

        // The entitlement check, the hot path of internal callers.
        let check = provisioning_pb::CheckEntitlementRequest {
            account: Some(AccountSelector::by_id(&written_locally.id)),
            ..Default::default()
        };
        let remote = provisioning_remote.check_entitlement(check.clone()).await;
        let local = provisioning_local.check_entitlement(check).await;
        match (remote, local) {
            (Ok(remote), Ok(local)) => assert_eq!(remote, local),
            (Err(remote), Err(local)) => {
                assert_eq!(
                    (remote.code(), remote.message()),
                    (local.code(), local.message())
                )
            }
            (remote, local) => panic!("the paths disagree: {remote:?} vs {local:?}"),
        }
        test.stop().await;
    }
);

backend_test!(
    purchase_tokens_are_refused_where_the_marketplace_has_none,
    |database| async move {
        let test = set_on(&database).start().await;
        let accounts: &dyn AccountApi = &test.set.clients.account;
        let resolve = |marketplace: Marketplace, token: &str| account_pb::ResolvePurchaseRequest {
            marketplace: marketplace as i32,
            token: token.into(),
            ..Default::default()
        };
        // A marketplace without purchase tokens (or without an adapter)
        // refuses with a precondition, not an internal error.
        for marketplace in [
            Marketplace::Direct,
            Marketplace::Vercel,
            Marketplace::Google,
        ] {
            let error = accounts
                .resolve_purchase(resolve(marketplace, "some-token"))
                .await
                .unwrap_err();
            assert_eq!(error.code(), ErrorCode::Unprocessable, "{marketplace:?}");
        }
        // Input is validated before any marketplace is asked.
        let error = accounts
            .resolve_purchase(resolve(Marketplace::Aws, "  "))
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::Validation);
        let error = accounts
            .resolve_purchase(resolve(Marketplace::Aws, &"t".repeat(9000)))
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::Validation);
        let error = accounts
            .resolve_purchase(resolve(Marketplace::Unspecified, "some-token"))
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::Validation);
        // Nothing was recorded.
        let events = accounts
            .list_marketplace_events(account_pb::ListMarketplaceEventsRequest::default())
            .await
            .unwrap();
        assert!(events.events.is_empty());
    }
);
