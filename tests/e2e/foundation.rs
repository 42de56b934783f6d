//! The set itself: health, reflection, the neutral gRPC APIs on both
//! backends, outbox hand-offs between services, TLS and shutdown.

use crate::support::set_on;
use chrono::Duration as ChronoDuration;
use marketbridge_core::ErrorCode;
use marketbridge_core::metadata::json_to_metadata;
use marketbridge_core::time::to_timestamp;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::{
    AccountSelector, Marketplace, MarketplaceRef, Person, RequestContext,
};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_storage::backend_test;
use serde_json::json;
use tonic::Code;

fn context(key: &str) -> Option<RequestContext> {
    Some(RequestContext {
        idempotency_key: key.to_owned(),
        actor: None,
    })
}

fn direct_ref(id: &str) -> Option<MarketplaceRef> {
    Some(MarketplaceRef::new(Marketplace::Direct, id))
}

async fn direct_account(
    test: &crate::support::TestSet,
    external_id: &str,
    signup_required: bool,
) -> account_pb::Account {
    let mut accounts = test.set.clients.account.clone();
    accounts
        .upsert_account(account_pb::UpsertAccountRequest {
            marketplace_ref: direct_ref(external_id),
            display_name: format!("Team {external_id}"),
            signup_required,
            ..Default::default()
        })
        .await
        .expect("account upsert")
        .into_inner()
}

backend_test!(
    every_service_serves_health_reflection_and_its_api,
    |database| async move {
        use tokio_stream::StreamExt;
        use tonic_health::pb::health_client::HealthClient;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

        let test = set_on(&database).start().await;
        let a = test.set.addresses;
        for (address, service) in [
            (a.account, "marketbridge.account.v1.AccountService"),
            (
                a.provisioning,
                "marketbridge.provisioning.v1.ProvisioningService",
            ),
            (a.billing, "marketbridge.billing.v1.BillingService"),
        ] {
            let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut health = HealthClient::new(channel.clone());
            for name in ["", service] {
                let status = health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: name.to_owned(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .status;
                assert_eq!(
                    status,
                    tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
                    "{service}"
                );
            }
            // Health answers anyone; reflection needs a credential.
            let authenticated = marketbridge_rpc::channel(
                &format!("http://{address}"),
                &marketbridge_rpc::ClientCredentials::of_set(&test.set.config),
                std::time::Duration::from_secs(5),
            )
            .unwrap();
            let mut reflection = ServerReflectionClient::new(authenticated);
            let requests = tokio_stream::iter(vec![
                ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(MessageRequest::ListServices(String::new())),
                },
                ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(MessageRequest::FileContainingSymbol(service.to_owned())),
                },
            ]);
            let mut answers = reflection
                .server_reflection_info(requests)
                .await
                .unwrap()
                .into_inner();
            let Some(Ok(first)) = answers.next().await else {
                panic!("no reflection answer")
            };
            let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
                panic!("not a list")
            };
            let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            assert!(names.contains(&service.to_owned()), "{names:?}");
            assert!(
                names.contains(&"grpc.health.v1.Health".to_owned()),
                "{names:?}"
            );
            assert!(
                names
                    .iter()
                    .all(|name| !name.starts_with("marketbridge.") || name == service),
                "only the service served here is advertised: {names:?}"
            );
            let Some(Ok(second)) = answers.next().await else {
                panic!("no descriptor answer")
            };
            let Some(MessageResponse::FileDescriptorResponse(files)) = second.message_response
            else {
                panic!("no files")
            };
            assert!(!files.file_descriptor_proto.is_empty());
        }

        let mut accounts = test.set.clients.account.clone();
        let listed = accounts
            .list_accounts(account_pb::ListAccountsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(listed.accounts.is_empty());
        let mut billing = test.set.clients.billing.clone();
        let plans = billing
            .list_plans(billing_pb::ListPlansRequest {
                product_id: "database".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<&str> = plans.plans.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["free", "pro", "pro-eu", "prepaid"]);
        let mut provisioning = test.set.clients.provisioning.clone();
        let subscriptions = provisioning
            .list_subscriptions(provisioning_pb::ListSubscriptionsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(subscriptions.subscriptions.is_empty());

        let ready = test.http.get(test.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
        test.stop().await;
    }
);

backend_test!(
    accounts_are_idempotent_encrypted_and_deleted_in_steps,
    |database| async move {
        let test = set_on(&database).start().await;
        let mut accounts = test.set.clients.account.clone();
        let request = account_pb::UpsertAccountRequest {
            context: Some(RequestContext {
                idempotency_key: "install-1".into(),
                actor: Some(Person {
                    external_id: "u1".into(),
                    email: "ada@example.com".into(),
                    name: "Ada".into(),
                    role: "ADMIN".into(),
                    ..Default::default()
                }),
            }),
            marketplace_ref: direct_ref("team-1"),
            display_name: "Team One".into(),
            accepted_terms: vec![account_pb::AcceptedTerms {
                policy_id: "toc".into(),
                accepted_at: None,
            }],
            credential: Some(account_pb::MarketplaceCredential {
                access_token: "tok-secret-123".into(),
                token_type: "Bearer".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let first = accounts
            .upsert_account(request.clone())
            .await
            .unwrap()
            .into_inner();
        let replay = accounts
            .upsert_account(request.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first, replay, "a replay answers the stored response");
        assert!(first.id.starts_with("acc_"));
        assert_eq!(first.people.len(), 1);
        assert!(first.has_credential);

        let mut changed = request.clone();
        changed.display_name = "Another name".into();
        let error = accounts.upsert_account(changed).await.unwrap_err();
        assert_eq!(error.code(), Code::AlreadyExists);
        assert_eq!(
            marketbridge_core::Error::from(error).code(),
            ErrorCode::IdempotencyKeyReused
        );

        let credential = accounts
            .get_marketplace_credential(account_pb::GetMarketplaceCredentialRequest {
                account: Some(AccountSelector::by_ref(Marketplace::Direct, "team-1")),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(credential.access_token, "tok-secret-123");
        let raw = marketbridge_storage::connect(&test.set.config.account.database_url)
            .await
            .unwrap();
        use sea_orm::{ConnectionTrait, Statement};
        let rows = raw
            .query_all_raw(Statement::from_string(
                raw.get_database_backend(),
                "SELECT credential FROM accounts",
            ))
            .await
            .unwrap();
        let stored: Option<String> = rows[0].try_get("", "credential").unwrap();
        let stored = stored.unwrap();
        assert!(
            stored.starts_with("v1:") && !stored.contains("tok-secret-123"),
            "stored encrypted"
        );

        // An older description than the stored one changes nothing.
        let newer = account_pb::UpsertAccountRequest {
            marketplace_ref: direct_ref("team-1"),
            marketplace_state: "ACTIVE".into(),
            marketplace_update_time: Some(to_timestamp(chrono::Utc::now())),
            ..Default::default()
        };
        accounts.upsert_account(newer).await.unwrap();
        let stale = account_pb::UpsertAccountRequest {
            marketplace_ref: direct_ref("team-1"),
            display_name: "Stale".into(),
            marketplace_update_time: Some(to_timestamp(
                chrono::Utc::now() - ChronoDuration::hours(1),
            )),
            ..Default::default()
        };
        assert_eq!(
            accounts
                .upsert_account(stale)
                .await
                .unwrap()
                .into_inner()
                .display_name,
            "Team One"
        );

        let deleted = accounts
            .delete_account(account_pb::DeleteAccountRequest {
                context: context("delete-1"),
                account: Some(AccountSelector::by_id(&first.id)),
                reason: "uninstalled".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!deleted.finalized);
        assert_eq!(
            deleted.account.unwrap().state,
            account_pb::AccountState::DeletionPending as i32
        );
        let finalized = accounts
            .finalize_account(account_pb::FinalizeAccountRequest {
                context: None,
                account: Some(AccountSelector::by_id(&first.id)),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(finalized.state, account_pb::AccountState::Deleted as i32);
        assert!(!finalized.has_credential, "the retired token is dropped");
        let purged = accounts
            .delete_account(account_pb::DeleteAccountRequest {
                account: Some(AccountSelector::by_id(&first.id)),
                purge: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let purged = purged.account.unwrap();
        assert!(purged.purged && purged.people.is_empty() && purged.display_name.is_empty());

        let missing = accounts
            .get_account(account_pb::GetAccountRequest {
                account: Some(AccountSelector::by_ref(Marketplace::Direct, "nobody")),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        let invalid = accounts
            .upsert_account(account_pb::UpsertAccountRequest {
                marketplace_ref: direct_ref(""),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(invalid.code(), Code::InvalidArgument);
        test.stop().await;
    }
);

backend_test!(
    marketplace_events_are_recorded_once,
    |database| async move {
        let test = set_on(&database).start().await;
        let mut accounts = test.set.clients.account.clone();
        let event = account_pb::RecordMarketplaceEventRequest {
            marketplace: Marketplace::Direct as i32,
            external_id: "evt-1".into(),
            event_type: "something.happened".into(),
            payload_json: r#"{"a":1}"#.into(),
            occurred_at: None,
            channel: "webhook".into(),
        };
        let first = accounts
            .record_marketplace_event(event.clone())
            .await
            .unwrap()
            .into_inner();
        let second = accounts
            .record_marketplace_event(event.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(!first.duplicate && second.duplicate);
        assert_eq!(
            first.event.as_ref().unwrap().id,
            second.event.as_ref().unwrap().id
        );
        let bad = account_pb::RecordMarketplaceEventRequest {
            payload_json: "not json".into(),
            external_id: "evt-2".into(),
            ..event
        };
        assert_eq!(
            accounts
                .record_marketplace_event(bad)
                .await
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
        test.eventually("the event is processed (ignored: no processor)", || {
            let mut accounts = accounts.clone();
            async move {
                let events = accounts
                    .list_marketplace_events(account_pb::ListMarketplaceEventsRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                events.events.len() == 1
                    && events.events[0].status == account_pb::EventStatus::Ignored as i32
            }
        })
        .await;
        test.stop().await;
    }
);

/// A `CreateResource` of the built-in `database` product on the free plan
/// in `fra1`, with the idempotency key `key`.
fn create_database(
    account_id: &str,
    key: &str,
    name: &str,
) -> provisioning_pb::CreateResourceRequest {
    provisioning_pb::CreateResourceRequest {
        context: context(key),
        account_id: account_id.to_owned(),
        product_id: "database".into(),
        plan_id: "free".into(),
        name: name.into(),
        metadata: Some(json_to_metadata("metadata", &json!({"region": "fra1"})).unwrap()),
        ..Default::default()
    }
}

backend_test!(
    a_repeated_create_answers_as_the_first_even_where_a_new_one_would_now_fail,
    |database| async move {
        // CreateResource reads no earlier answer before its work: a repeat
        // is found at the commit, or, where the work cannot go on any more,
        // before the error is answered.
        let test = set_on(&database).start().await;
        let account = direct_account(&test, "team-again", false).await;
        let mut provisioning = test.set.clients.provisioning.clone();
        let create = create_database(&account.id, "create-again", "again");
        let created = provisioning
            .create_resource(create.clone())
            .await
            .unwrap()
            .into_inner();
        let repeated = provisioning
            .create_resource(create.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(created, repeated, "found at the commit");

        let mut accounts = test.set.clients.account.clone();
        accounts
            .delete_account(account_pb::DeleteAccountRequest {
                context: context("delete-again"),
                account: Some(AccountSelector::by_ref(Marketplace::Direct, "team-again")),
                finalized: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let refused = provisioning
            .create_resource(provisioning_pb::CreateResourceRequest {
                context: context("create-after-delete"),
                ..create.clone()
            })
            .await
            .unwrap_err();
        assert_eq!(
            marketbridge_core::Error::from(refused).code(),
            ErrorCode::Conflict,
            "a new resource is refused once the account is gone"
        );
        let repeated = provisioning
            .create_resource(create.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(created, repeated, "the repeat still gets the first answer");
        let reused = provisioning
            .create_resource(provisioning_pb::CreateResourceRequest {
                name: "another".into(),
                ..create
            })
            .await
            .unwrap_err();
        assert_eq!(
            marketbridge_core::Error::from(reused).code(),
            ErrorCode::IdempotencyKeyReused
        );
        let listed = provisioning
            .list_resources(provisioning_pb::ListResourcesRequest {
                account_id: account.id.clone(),
                include_deleted: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.resources.len(), 1, "one resource for the key");
    }
);

backend_test!(
    resources_are_provisioned_changed_rotated_and_deleted,
    |database| async move {
        let test = set_on(&database).start().await;
        let account = direct_account(&test, "team-r", false).await;
        let mut provisioning = test.set.clients.provisioning.clone();
        let create = create_database(&account.id, "create-1", "my-database");
        let created = provisioning
            .create_resource(create.clone())
            .await
            .unwrap()
            .into_inner();
        let replay = provisioning
            .create_resource(create.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            created, replay,
            "a replay returns the same resource and secrets"
        );
        let resource = created.resource.unwrap();
        assert_eq!(
            resource.status,
            provisioning_pb::ResourceStatus::Ready as i32
        );
        let url = created
            .secrets
            .iter()
            .find(|s| s.name == "DATABASE_URL")
            .unwrap();
        assert!(
            url.value.starts_with("postgresql://") && url.value.contains("fra1.db.example.com"),
            "{}",
            url.value
        );

        for (request, field) in [
            (
                provisioning_pb::CreateResourceRequest {
                    product_id: "nope".into(),
                    context: None,
                    ..create.clone()
                },
                "productId",
            ),
            (
                provisioning_pb::CreateResourceRequest {
                    plan_id: "pro-eu".into(),
                    metadata: Some(json_to_metadata("m", &json!({"region": "iad1"})).unwrap()),
                    context: None,
                    ..create.clone()
                },
                "billingPlanId",
            ),
            (
                provisioning_pb::CreateResourceRequest {
                    metadata: Some(json_to_metadata("m", &json!({"region": "mars"})).unwrap()),
                    context: None,
                    ..create.clone()
                },
                "region",
            ),
            (
                provisioning_pb::CreateResourceRequest {
                    name: String::new(),
                    context: None,
                    ..create.clone()
                },
                "name",
            ),
        ] {
            let error = marketbridge_core::Error::from(
                provisioning.create_resource(request).await.unwrap_err(),
            );
            assert_eq!(error.code(), ErrorCode::Validation);
            assert_eq!(error.fields()[0].field, field);
        }

        let check = |feature: &str| provisioning_pb::CheckEntitlementRequest {
            account: Some(AccountSelector::by_ref(Marketplace::Direct, "team-r")),
            feature: feature.into(),
            ..Default::default()
        };
        let answer = provisioning
            .check_entitlement(check(""))
            .await
            .unwrap()
            .into_inner();
        assert!(answer.allowed);
        assert_eq!(answer.entitlements[0].plan_id, "free");
        assert_eq!(answer.entitlements[0].limits["max_connections"], 5);
        assert!(
            !provisioning
                .check_entitlement(check("backups"))
                .await
                .unwrap()
                .into_inner()
                .allowed
        );

        let updated = provisioning
            .update_resource(provisioning_pb::UpdateResourceRequest {
                context: context("plan-1"),
                resource_id: resource.id.clone(),
                account_id: account.id.clone(),
                plan_id: Some("pro".into()),
                name: Some("renamed".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (updated.plan_id.as_str(), updated.name.as_str()),
            ("pro", "renamed")
        );
        assert!(
            provisioning
                .check_entitlement(check("backups"))
                .await
                .unwrap()
                .into_inner()
                .allowed
        );

        let rotated = provisioning
            .rotate_secrets(provisioning_pb::RotateSecretsRequest {
                context: context("rotate-1"),
                resource_id: resource.id.clone(),
                old_secrets_valid_for_seconds: 3600,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(rotated.sync);
        let new_url = rotated
            .secrets
            .iter()
            .find(|s| s.name == "DATABASE_URL")
            .unwrap();
        assert_ne!(new_url.value, url.value);
        assert_eq!(rotated.resource.unwrap().secrets_version, 2);

        // Billing learns about the subscription through the outbox; then usage
        // recorded against the resource is accepted.
        let mut billing = test.set.clients.billing.clone();
        let usage = billing_pb::RecordUsageRequest {
            events: vec![billing_pb::UsageEvent {
                event_id: "u-1".into(),
                customer: Some(billing_pb::usage_event::Customer::ResourceId(
                    resource.id.clone(),
                )),
                metric_id: "requests".into(),
                quantity: 42,
                occurred_at: None,
            }],
        };
        test.eventually("billing accepts usage for the new resource", || {
            let mut billing = billing.clone();
            let usage = usage.clone();
            async move { billing.record_usage(usage).await.is_ok() }
        })
        .await;
        let totals = billing
            .query_usage(billing_pb::QueryUsageRequest {
                customer: Some(billing_pb::query_usage_request::Customer::ResourceId(
                    resource.id.clone(),
                )),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(totals.periods.iter().map(|p| p.quantity).sum::<i64>(), 42);

        let deleted = provisioning
            .delete_resource(provisioning_pb::DeleteResourceRequest {
                resource_id: resource.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            deleted.status,
            provisioning_pb::ResourceStatus::Uninstalled as i32
        );
        let again = provisioning
            .delete_resource(provisioning_pb::DeleteResourceRequest {
                resource_id: resource.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            again.status, deleted.status,
            "deleting twice answers the same"
        );
        let answer = provisioning
            .check_entitlement(check(""))
            .await
            .unwrap()
            .into_inner();
        assert!(!answer.allowed);
        assert_eq!(answer.reason, "no_active_subscription");
        test.stop().await;
    }
);

backend_test!(
    slow_products_go_from_pending_to_ready_in_the_background,
    |database| async move {
        let catalog = marketbridge_catalog::BUILTIN_CATALOG.replace(
            "provisioning_delay_seconds = 0",
            "provisioning_delay_seconds = 1",
        );
        let path =
            std::env::temp_dir().join(format!("catalog-{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, catalog).unwrap();
        let catalog_path = path.display().to_string();
        let test = set_on(&database)
            .configure(move |config| config.catalog.path = catalog_path)
            .start()
            .await;
        let account = direct_account(&test, "team-slow", false).await;
        let mut provisioning = test.set.clients.provisioning.clone();
        let created = provisioning
            .create_resource(provisioning_pb::CreateResourceRequest {
                account_id: account.id.clone(),
                product_id: "database".into(),
                plan_id: "free".into(),
                name: "slow".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let resource = created.resource.unwrap();
        assert_eq!(
            resource.status,
            provisioning_pb::ResourceStatus::Pending as i32
        );
        assert!(
            !created.secrets.is_empty(),
            "secrets are known ahead of time"
        );
        let rotation = provisioning
            .rotate_secrets(provisioning_pb::RotateSecretsRequest {
                resource_id: resource.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            rotation.code(),
            Code::FailedPrecondition,
            "no rotation while pending"
        );
        test.eventually("the resource becomes ready", || {
            let mut provisioning = provisioning.clone();
            let id = resource.id.clone();
            async move {
                let got = provisioning
                    .get_resource(provisioning_pb::GetResourceRequest {
                        resource_id: id,
                        account_id: String::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                got.status == provisioning_pb::ResourceStatus::Ready as i32
            }
        })
        .await;
        let rotated = provisioning
            .rotate_secrets(provisioning_pb::RotateSecretsRequest {
                resource_id: resource.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            !rotated.sync && rotated.secrets.is_empty(),
            "slow products rotate asynchronously"
        );
        test.eventually("the asynchronous rotation completes", || {
            let mut provisioning = provisioning.clone();
            let id = resource.id.clone();
            async move {
                let got = provisioning
                    .get_resource(provisioning_pb::GetResourceRequest {
                        resource_id: id,
                        account_id: String::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                got.secrets_version == 2
            }
        })
        .await;
        let _ = std::fs::remove_file(path);
        test.stop().await;
    }
);

backend_test!(
    subscriptions_wait_for_signup_then_activate_and_cancel,
    |database| async move {
        let test = set_on(&database).start().await;
        let account = direct_account(&test, "team-s", true).await;
        assert_eq!(
            account.signup_state,
            account_pb::SignupState::Pending as i32
        );
        let mut provisioning = test.set.clients.provisioning.clone();
        let upsert = |state: provisioning_pb::SubscriptionState| {
            provisioning_pb::UpsertSubscriptionRequest {
                account_id: account.id.clone(),
                marketplace_ref: direct_ref("order-1"),
                product_id: "database".into(),
                plan_id: "pro".into(),
                state: state as i32,
                ..Default::default()
            }
        };
        let requested = provisioning
            .upsert_subscription(upsert(provisioning_pb::SubscriptionState::Requested))
            .await
            .unwrap()
            .into_inner();
        let waiting = provisioning
            .approve_subscription(provisioning_pb::ApproveSubscriptionRequest {
                context: None,
                subscription_id: requested.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            waiting.awaiting_account_approval,
            "approval waits for the signup"
        );

        let mut accounts = test.set.clients.account.clone();
        let approving = accounts
            .approve_signup(account_pb::ApproveSignupRequest {
                context: context("signup-1"),
                account: Some(AccountSelector::by_id(&account.id)),
                person: Some(Person {
                    email: "grace@example.com".into(),
                    name: "Grace".into(),
                    ..Default::default()
                }),
                company: "Hopper Inc".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            approving.signup_state,
            account_pb::SignupState::Approving as i32
        );
        assert_eq!(approving.company, "Hopper Inc");
        let get = provisioning_pb::GetSubscriptionRequest {
            selector: Some(
                provisioning_pb::get_subscription_request::Selector::SubscriptionId(
                    requested.id.clone(),
                ),
            ),
        };
        test.eventually("the subscription activates after the signup", || {
            let mut provisioning = provisioning.clone();
            let get = get.clone();
            async move {
                let got = provisioning
                    .get_subscription(get)
                    .await
                    .unwrap()
                    .into_inner();
                got.state == provisioning_pb::SubscriptionState::Active as i32
                    && got.resource_ids.len() == 1
            }
        })
        .await;
        let account = accounts
            .get_account(account_pb::GetAccountRequest {
                account: Some(AccountSelector::by_id(&account.id)),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            account.signup_state,
            account_pb::SignupState::Approved as i32
        );

        let pending = provisioning
            .upsert_subscription(upsert(
                provisioning_pb::SubscriptionState::PendingCancellation,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            pending.resource_ids.len(),
            1,
            "access stays while the cancellation is pending"
        );
        let check = provisioning_pb::CheckEntitlementRequest {
            account: Some(AccountSelector::by_id(&account.id)),
            ..Default::default()
        };
        assert!(
            provisioning
                .check_entitlement(check.clone())
                .await
                .unwrap()
                .into_inner()
                .allowed
        );
        let cancelled = provisioning
            .upsert_subscription(upsert(provisioning_pb::SubscriptionState::Cancelled))
            .await
            .unwrap()
            .into_inner();
        assert!(
            cancelled.resource_ids.is_empty(),
            "cancellation deprovisions"
        );
        assert!(cancelled.ended_at.is_some());
        assert!(
            !provisioning
                .check_entitlement(check)
                .await
                .unwrap()
                .into_inner()
                .allowed
        );
        test.stop().await;
    }
);

backend_test!(
    usage_batches_are_all_or_nothing_and_replays_are_no_ops,
    |database| async move {
        let test = set_on(&database)
            .manual_clock()
            .without_workers()
            .start()
            .await;
        let clock = test.clock.clone().unwrap();
        let account = direct_account(&test, "team-u", false).await;
        let mut provisioning = test.set.clients.provisioning.clone();
        let resource = provisioning
            .create_resource(provisioning_pb::CreateResourceRequest {
                account_id: account.id.clone(),
                product_id: "database".into(),
                plan_id: "pro".into(),
                name: "metered".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .resource
            .unwrap();
        test.drain().await;
        let start = clock_now(&clock);
        clock.advance(ChronoDuration::hours(2));
        let event = |id: &str, metric: &str, quantity: i64, minutes: i64| billing_pb::UsageEvent {
            event_id: id.into(),
            customer: Some(billing_pb::usage_event::Customer::ResourceId(
                resource.id.clone(),
            )),
            metric_id: metric.into(),
            quantity,
            occurred_at: Some(to_timestamp(start + ChronoDuration::minutes(minutes))),
        };
        let mut billing = test.set.clients.billing.clone();
        let bad = billing
            .record_usage(billing_pb::RecordUsageRequest {
                events: vec![
                    event("a", "requests", 5, 0),
                    event("b", "unknown_metric", 1, 0),
                    event("c", "requests", -1, 0),
                ],
            })
            .await
            .unwrap_err();
        let bad = marketbridge_core::Error::from(bad);
        assert_eq!(bad.code(), ErrorCode::Validation);
        assert_eq!(bad.fields()[0].field, "events[2].quantity");

        let batch = billing_pb::RecordUsageRequest {
            events: vec![
                event("a", "requests", 5, 0),
                event("b", "requests", 7, 61),
                event("c", "storage_gb", 3, 30),
            ],
        };
        let first = billing
            .record_usage(batch.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!((first.accepted, first.duplicates), (3, 0));
        let replay = billing.record_usage(batch).await.unwrap().into_inner();
        assert_eq!((replay.accepted, replay.duplicates), (0, 3));

        clock.advance(ChronoDuration::hours(1));
        let usage = billing
            .query_usage(billing_pb::QueryUsageRequest {
                customer: Some(billing_pb::query_usage_request::Customer::ResourceId(
                    resource.id.clone(),
                )),
                metric_id: "requests".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let windows: Vec<(i64, i64)> = usage
            .windows
            .iter()
            .map(|w| (w.quantity, w.period_total))
            .collect();
        assert_eq!(
            windows,
            [(5, 5), (7, 12)],
            "two hour windows with running totals"
        );
        assert_eq!(usage.periods[0].quantity, 12);
        test.stop().await;
    }
);

fn clock_now(clock: &marketbridge_core::time::ManualClock) -> chrono::DateTime<chrono::Utc> {
    use marketbridge_core::time::Clock;
    clock.now()
}

backend_test!(
    invoice_states_follow_the_marketplace_and_ignore_stale_reports,
    |database| async move {
        let test = set_on(&database).start().await;
        let account = direct_account(&test, "team-i", false).await;
        let mut billing = test.set.clients.billing.clone();
        let now = chrono::Utc::now();
        let report = |state: billing_pb::InvoiceState, at: chrono::DateTime<chrono::Utc>| {
            billing_pb::RecordInvoiceStateRequest {
                context: None,
                account_id: account.id.clone(),
                marketplace_invoice_id: "mi_1".into(),
                state: state as i32,
                occurred_at: Some(to_timestamp(at)),
                total: Some(marketbridge_proto::common::v1::Money {
                    amount_minor: 1234,
                    currency: "USD".into(),
                }),
                period_start: None,
                period_end: None,
            }
        };
        let created = billing
            .record_invoice_state(report(billing_pb::InvoiceState::Invoiced, now))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(created.state, billing_pb::InvoiceState::Invoiced as i32);
        let paid = billing
            .record_invoice_state(report(
                billing_pb::InvoiceState::Paid,
                now + ChronoDuration::minutes(5),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (paid.id.as_str(), paid.state),
            (created.id.as_str(), billing_pb::InvoiceState::Paid as i32)
        );
        assert!(paid.paid_at.is_some());
        let stale = billing
            .record_invoice_state(report(
                billing_pb::InvoiceState::Notpaid,
                now + ChronoDuration::minutes(1),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            stale.state,
            billing_pb::InvoiceState::Paid as i32,
            "a stale report changes nothing"
        );
        let listed = billing
            .list_invoices(billing_pb::ListInvoicesRequest {
                account_id: account.id.clone(),
                page: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.invoices.len(), 1);
        assert_eq!(
            listed.invoices[0].total.as_ref().unwrap().amount_minor,
            1234
        );
        let by_marketplace_id = billing
            .get_invoice(billing_pb::GetInvoiceRequest {
                selector: Some(
                    billing_pb::get_invoice_request::Selector::MarketplaceInvoiceId("mi_1".into()),
                ),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(by_marketplace_id.id, created.id);

        let too_much = billing
            .refund_invoice(billing_pb::RefundInvoiceRequest {
                invoice_id: created.id.clone(),
                reason: "duplicate charge".into(),
                amount: Some(marketbridge_proto::common::v1::Money {
                    amount_minor: 5000,
                    currency: "USD".into(),
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(too_much.code(), Code::InvalidArgument);
        let prepayment = billing
            .provision_prepayment(billing_pb::ProvisionPrepaymentRequest {
                context: None,
                account_id: account.id.clone(),
                marketplace_invoice_id: "mi_1".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            prepayment.code(),
            Code::FailedPrecondition,
            "direct customers cannot prepay through a marketplace"
        );
        let balances = billing
            .get_balances(billing_pb::GetBalancesRequest {
                account_id: account.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(balances.balances.is_empty());
        test.stop().await;
    }
);

backend_test!(
    requests_and_calls_are_counted_and_timed_for_prometheus,
    |database| async move {
        let test = set_on(&database).start().await;
        for _ in 0..3 {
            assert_eq!(
                test.http
                    .get(test.url("/readyz"))
                    .send()
                    .await
                    .unwrap()
                    .status(),
                200
            );
        }
        let missing = test
            .http
            .get(test.url("/no/such/route"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        let mut billing = test.set.clients.billing.clone();
        billing
            .list_plans(billing_pb::ListPlansRequest {
                product_id: "database".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let public = test.http.get(test.url("/metrics")).send().await.unwrap();
        assert_eq!(public.status(), 404, "the public port serves no metrics");
        let metrics = test.set.addresses.metrics.expect("a metrics listener");
        let scrape = test
            .http
            .get(format!("http://{metrics}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(scrape.status(), 200);
        assert!(
            scrape.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let text = scrape.text().await.unwrap();
        let line = |prefix: &str, needles: &[&str]| {
            text.lines()
                .find(|l| l.starts_with(prefix) && needles.iter().all(|n| l.contains(n)))
                .unwrap_or_else(|| panic!("no {prefix} line with {needles:?} in:\n{text}"))
                .to_owned()
        };
        let readyz = line(
            "http_server_requests_total{",
            &[
                "http_route=\"/readyz\"",
                "http_response_status_code=\"200\"",
            ],
        );
        assert!(readyz.ends_with(" 3"), "{readyz}");
        line(
            "http_server_requests_total{",
            &[
                "http_route=\"unmatched\"",
                "http_response_status_code=\"404\"",
            ],
        );
        line(
            "http_server_request_duration_seconds_bucket{",
            &["http_route=\"/readyz\"", "le=\"+Inf\""],
        );
        let rpc = line(
            "rpc_server_requests_total{",
            &["rpc_method=\"ListPlans\"", "rpc_grpc_status_code=\"0\""],
        );
        assert!(rpc.ends_with(" 1"), "{rpc}");
        line(
            "rpc_server_duration_seconds_count{",
            &["rpc_method=\"ListPlans\""],
        );
        // The readiness probes asked every service's health endpoint.
        line(
            "rpc_client_duration_seconds_count{",
            &["rpc_service=\"grpc.health.v1.Health\""],
        );
        test.stop().await;
    }
);
