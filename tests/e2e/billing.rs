//! Billing on its own, for customers without a marketplace: the reporting
//! ledger's API, closing an account's billing, and prepaid balances drawn
//! down by usage. The marketplace flows are in `billing_vercel` and
//! `billing_google`.

use crate::support::{TestSet, set_on};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_core::ErrorCode;
use marketbridge_core::time::to_timestamp;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::{
    AccountSelector, Marketplace, MarketplaceRef, RequestContext,
};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_storage::backend_test;
use tonic::Code;

fn context(key: &str) -> Option<RequestContext> {
    Some(RequestContext {
        idempotency_key: key.to_owned(),
        actor: None,
    })
}

/// A customer of the provider itself with one resource on `plan_id`.
async fn direct_customer(test: &TestSet, team: &str, plan_id: &str) -> (String, String) {
    let mut accounts = test.set.clients.account.clone();
    let account = accounts
        .upsert_account(account_pb::UpsertAccountRequest {
            marketplace_ref: Some(MarketplaceRef::new(Marketplace::Direct, team)),
            display_name: format!("Team {team}"),
            ..Default::default()
        })
        .await
        .expect("account upsert")
        .into_inner();
    let mut provisioning = test.set.clients.provisioning.clone();
    let resource = provisioning
        .create_resource(provisioning_pb::CreateResourceRequest {
            account_id: account.id.clone(),
            product_id: "database".into(),
            plan_id: plan_id.into(),
            name: format!("{team}-db"),
            ..Default::default()
        })
        .await
        .expect("resource")
        .into_inner()
        .resource
        .expect("the resource");
    test.drain().await;
    (account.id, resource.id)
}

fn usage(
    event_id: &str,
    resource_id: &str,
    metric: &str,
    quantity: i64,
    at: DateTime<Utc>,
) -> billing_pb::UsageEvent {
    billing_pb::UsageEvent {
        event_id: event_id.into(),
        customer: Some(billing_pb::usage_event::Customer::ResourceId(
            resource_id.into(),
        )),
        metric_id: metric.into(),
        quantity,
        occurred_at: Some(to_timestamp(at)),
    }
}

async fn account_of(test: &TestSet, account_id: &str) -> account_pb::Account {
    let mut accounts = test.set.clients.account.clone();
    accounts
        .get_account(account_pb::GetAccountRequest {
            account: Some(AccountSelector::by_id(account_id)),
        })
        .await
        .expect("the account")
        .into_inner()
}

backend_test!(
    closing_billing_waits_for_settled_usage_then_finalizes_the_account,
    |database| async move {
        let test = set_on(&database)
            .manual_clock()
            .without_workers()
            .start()
            .await;
        let (account_id, resource_id) = direct_customer(&test, "closing", "pro").await;
        let mut billing = test.set.clients.billing.clone();
        let start = test.now();
        billing
            .record_usage(billing_pb::RecordUsageRequest {
                events: vec![usage("before", &resource_id, "requests", 5, start)],
            })
            .await
            .unwrap();

        let close = billing_pb::CloseAccountBillingRequest {
            context: context("close-1"),
            account_id: account_id.clone(),
        };
        let first = billing.close_account_billing(close.clone()).await.unwrap();
        assert!(
            !first.into_inner().finalized,
            "a paid plan leaves billing to finish"
        );
        let replay = billing.close_account_billing(close).await.unwrap();
        assert!(!replay.into_inner().finalized);

        let late = billing
            .record_usage(billing_pb::RecordUsageRequest {
                events: vec![usage(
                    "after",
                    &resource_id,
                    "requests",
                    1,
                    start + ChronoDuration::seconds(1),
                )],
            })
            .await
            .unwrap_err();
        let late = marketbridge_core::Error::from(late);
        assert_eq!(late.code(), ErrorCode::Validation);
        assert_eq!(late.fields()[0].field, "events[0].occurredAt");

        let mut accounts = test.set.clients.account.clone();
        accounts
            .delete_account(account_pb::DeleteAccountRequest {
                context: context("delete-1"),
                account: Some(AccountSelector::by_id(&account_id)),
                reason: "uninstalled".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        test.run_billing().await;
        test.drain().await;
        assert!(
            account_of(&test, &account_id).await.finalized_at.is_none(),
            "usage up to the uninstall has not settled yet"
        );

        // Past the clock skew usage may carry and the settle delay.
        test.advance(ChronoDuration::minutes(11));
        test.run_billing().await;
        test.drain().await;
        let closed = account_of(&test, &account_id).await;
        assert!(
            closed.finalized_at.is_some(),
            "billing finalized the account"
        );
        assert_eq!(closed.state, account_pb::AccountState::Deleted as i32);
        let again = billing
            .close_account_billing(billing_pb::CloseAccountBillingRequest {
                context: context("close-2"),
                account_id: account_id.clone(),
            })
            .await
            .unwrap();
        assert!(again.into_inner().finalized, "now the answer is final");
        test.stop().await;
    }
);

backend_test!(
    accounts_that_never_paid_close_at_once,
    |database| async move {
        let test = set_on(&database)
            .manual_clock()
            .without_workers()
            .start()
            .await;
        let (account_id, _) = direct_customer(&test, "free-team", "free").await;
        let mut billing = test.set.clients.billing.clone();
        let closed = billing
            .close_account_billing(billing_pb::CloseAccountBillingRequest {
                context: context("close-free"),
                account_id,
            })
            .await
            .unwrap();
        assert!(closed.into_inner().finalized);
        let unknown = billing
            .close_account_billing(billing_pb::CloseAccountBillingRequest {
                context: None,
                account_id: "acc_nope".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::InvalidArgument);
        test.stop().await;
    }
);

backend_test!(
    prepaid_usage_draws_the_balance_down_across_periods,
    |database| async move {
        let test = set_on(&database)
            .manual_clock()
            .without_workers()
            .start()
            .await;
        let (account_id, resource_id) = direct_customer(&test, "prepaid", "prepaid").await;
        let mut billing = test.set.clients.billing.clone();
        let start = test.now();
        // 0.00002 per request: 150,001 requests cost 3.00002.
        billing
            .record_usage(billing_pb::RecordUsageRequest {
                events: vec![
                    usage("p1", &resource_id, "requests", 100_000, start),
                    usage(
                        "p2",
                        &resource_id,
                        "requests",
                        50_001,
                        start + ChronoDuration::minutes(1),
                    ),
                ],
            })
            .await
            .unwrap();
        test.advance(ChronoDuration::minutes(2));
        let balances = billing
            .get_balances(billing_pb::GetBalancesRequest {
                account_id: account_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(balances.balances.len(), 1);
        let value = balances.balances[0].value.clone().unwrap();
        assert_eq!(
            value.amount_minor, -301,
            "3.00002 drawn from nothing, rounded down"
        );

        // Into the next billing period: usage there is drawn too.
        test.advance(ChronoDuration::days(8));
        billing
            .record_usage(billing_pb::RecordUsageRequest {
                events: vec![usage("p3", &resource_id, "requests", 50_000, test.now())],
            })
            .await
            .unwrap();
        test.advance(ChronoDuration::minutes(1));
        let balances = billing
            .get_balances(billing_pb::GetBalancesRequest { account_id })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            balances.balances[0].value.as_ref().unwrap().amount_minor,
            -401
        );
        test.stop().await;
    }
);

backend_test!(
    the_reporting_ledger_lists_and_filters,
    |database| async move {
        let test = set_on(&database)
            .manual_clock()
            .without_workers()
            .start()
            .await;
        let mut billing = test.set.clients.billing.clone();
        let empty = billing
            .list_usage_reports(billing_pb::ListUsageReportsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(empty.reports.is_empty());
        let bad = billing
            .list_usage_reports(billing_pb::ListUsageReportsRequest {
                status: 42,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        let work = test.run_billing().await;
        assert_eq!(
            work.total(),
            0,
            "customers without a marketplace get no reports"
        );
        test.stop().await;
    }
);

backend_test!(
    a_subscription_change_is_recorded_once_per_version_whether_its_row_was_read_or_not,
    |database| async move {
        marketbridge_storage::testing::record_statements();
        let test = set_on(&database).without_workers().start().await;
        let mut billing = test.set.clients.billing.clone();
        let subscription_id = marketbridge_core::ids::SubscriptionId::generate();
        let account_id = marketbridge_core::ids::AccountId::generate();
        let change = |version: u64, plan: &str| billing_pb::RecordSubscriptionChangeRequest {
            context: None,
            change: Some(billing_pb::SubscriptionChange {
                subscription_id: subscription_id.to_string(),
                account_id: account_id.to_string(),
                account_ref: Some(MarketplaceRef::new(Marketplace::Direct, "team-versions")),
                subscription_ref: Some(MarketplaceRef::new(Marketplace::Direct, "sub-versions")),
                product_id: "database".into(),
                plan_id: plan.into(),
                billable: true,
                resource_ids: Vec::new(),
                usage_reporting_id: String::new(),
                effective_at: Some(to_timestamp(Utc::now())),
                version,
                ended: false,
            }),
        };
        let billing_db = test.set.billing.domain().db().clone();
        let stored_plan = || async {
            use marketbridge_storage::sea_orm::EntityTrait;
            marketbridge_billing::entity::billing_subscription::Entity::find_by_id(
                subscription_id.as_str(),
            )
            .one(&billing_db)
            .await
            .unwrap()
            .expect("the subscription's row")
            .plan_id
        };

        // The first version: its rows are inserted, nothing read first (on
        // PostgreSQL as one statement).
        let before = marketbridge_storage::testing::statement_counts();
        let first = billing
            .record_subscription_change(change(1, "pro"))
            .await
            .unwrap();
        assert!(first.into_inner().applied);
        let sent = marketbridge_storage::testing::statements_between(
            &before,
            &marketbridge_storage::testing::statement_counts(),
        );
        assert!(
            !sent.keys().any(|sql| sql.starts_with("SELECT")),
            "{sent:#?}"
        );
        // One statement on PostgreSQL; on SQLite one call holding the
        // subscription's row and its plan period.
        assert_eq!(sent.values().sum::<u64>(), 1, "{sent:#?}");
        assert!(
            sent.keys()
                .all(|sql| sql.starts_with("INSERT") || sql.starts_with("WITH")),
            "{sent:#?}"
        );

        // The same version again (its job run twice): the row is there, so
        // the change is read against it and not applied, and no error.
        let again = billing
            .record_subscription_change(change(1, "free"))
            .await
            .unwrap();
        assert!(!again.into_inner().applied);
        assert_eq!(stored_plan().await, "pro");
        // A later version applies; an earlier one arriving late does not.
        let later = billing
            .record_subscription_change(change(2, "free"))
            .await
            .unwrap();
        assert!(later.into_inner().applied);
        let late = billing
            .record_subscription_change(change(1, "pro"))
            .await
            .unwrap();
        assert!(!late.into_inner().applied);
        assert_eq!(stored_plan().await, "free");

        // A first version sent several times at once (a job run twice
        // while its first run is still writing): on SQLite the writers can
        // share one group commit. Exactly one applies, the others find its
        // row and none fails.
        let other = marketbridge_core::ids::SubscriptionId::generate();
        let mut at_once = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let mut billing = billing.clone();
            let mut request = change(1, "pro");
            if let Some(change) = request.change.as_mut() {
                change.subscription_id = other.to_string();
            }
            at_once.spawn(async move { billing.record_subscription_change(request).await });
        }
        let mut applied = 0;
        while let Some(answer) = at_once.join_next().await {
            if answer.unwrap().expect("no error").into_inner().applied {
                applied += 1;
            }
        }
        assert_eq!(applied, 1);
        let stored = {
            use marketbridge_storage::sea_orm::EntityTrait;
            marketbridge_billing::entity::billing_subscription::Entity::find_by_id(other.as_str())
                .one(&billing_db)
                .await
                .unwrap()
                .expect("the subscription's row")
        };
        assert_eq!((stored.plan_id.as_str(), stored.version), ("pro", 1));
    }
);

backend_test!(
    a_new_subscriptions_billing_job_carries_what_reading_it_would_send_and_billing_records_it,
    |database| async move {
        use crate::vercel_support::{VercelOptions, vercel_set};
        use marketbridge_provisioning::model::ProvisioningJob;
        use marketbridge_storage::sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let (installation, token) = vercel.install().await;
        let provisioning = vercel.test.set.provisioning.domain();
        vercel.drain().await;
        let created = vercel
            .partner
            .post(&format!("/v1/installations/{}/resources", installation.id))
            .user(&token)
            .idempotency_key("terms-carried")
            .json(&serde_json::json!({
                "productId": "database",
                "name": "carried",
                "metadata": {"region": "fra1"},
                "billingPlanId": "pro",
            }))
            .send()
            .await;
        assert_eq!(created.status, 200, "{}", created.text);
        let resource_id = created.body["id"].as_str().expect("an id").to_owned();

        // The call knew the whole subscription: its job carries it.
        let queued = provisioning
            .outbox()
            .jobs_of_kind("provisioning.billing_subscription_change")
            .await
            .unwrap();
        let carried: Vec<_> = queued
            .iter()
            .filter(|row| row.status == "pending")
            .map(|row| {
                let job: ProvisioningJob = serde_json::from_value(serde_json::json!({
                    "kind": row.kind,
                    "payload": serde_json::from_str::<serde_json::Value>(&row.payload).unwrap(),
                }))
                .unwrap();
                let ProvisioningJob::BillingChange(job) = job else {
                    panic!("a billing change")
                };
                job
            })
            .collect();
        assert_eq!(carried.len(), 1, "{queued:#?}");
        let job = &carried[0];
        let terms = job.as_of.clone().expect("the terms, carried");
        assert_eq!(terms.resource_ids, vec![resource_id.clone()]);
        assert_eq!((terms.plan_id.as_str(), terms.version), ("pro", 1));
        // Exactly what the job would read and send without them.
        let now = provisioning
            .billing_terms_now(&job.subscription_id)
            .await
            .unwrap()
            .expect("the subscription");
        assert_eq!(terms, now);

        // Run, it records the subscription and its resource at billing.
        vercel.drain().await;
        let billing_db = vercel.test.set.billing.domain().db();
        let recorded = marketbridge_billing::entity::billing_subscription::Entity::find_by_id(
            job.subscription_id.as_str(),
        )
        .one(billing_db)
        .await
        .unwrap()
        .expect("billing's row");
        assert_eq!(
            (
                recorded.plan_id.as_str(),
                recorded.version,
                recorded.billable,
                recorded.ended
            ),
            ("pro", 1, true, false)
        );
        assert_eq!(recorded.effective_at, terms.effective_at);
        let linked = marketbridge_billing::entity::billing_resource::Entity::find()
            .filter(
                marketbridge_billing::entity::billing_resource::Column::SubscriptionId
                    .eq(job.subscription_id.as_str()),
            )
            .all(billing_db)
            .await
            .unwrap();
        assert_eq!(
            linked
                .iter()
                .map(|row| row.resource_id.clone())
                .collect::<Vec<_>>(),
            vec![resource_id]
        );
    }
);

backend_test!(
    first_versions_arriving_together_are_written_together_and_one_already_there_is_not_applied_again,
    |database| async move {
        marketbridge_storage::testing::record_statements();
        let test = set_on(&database).without_workers().start().await;
        let billing = test.set.billing.domain().clone();
        let account_id = marketbridge_core::ids::AccountId::generate();
        let change = |subscription: &marketbridge_core::ids::SubscriptionId,
                      resource: &marketbridge_core::ids::ResourceId| {
            billing_pb::RecordSubscriptionChangeRequest {
                context: None,
                change: Some(billing_pb::SubscriptionChange {
                    subscription_id: subscription.to_string(),
                    account_id: account_id.to_string(),
                    account_ref: Some(MarketplaceRef::new(Marketplace::Direct, "team-together")),
                    subscription_ref: Some(MarketplaceRef::new(
                        Marketplace::Direct,
                        subscription.to_string(),
                    )),
                    product_id: "database".into(),
                    plan_id: "pro".into(),
                    billable: true,
                    resource_ids: vec![resource.to_string()],
                    usage_reporting_id: String::new(),
                    effective_at: Some(to_timestamp(Utc::now())),
                    version: 1,
                    ended: false,
                }),
            }
        };
        let together = |changes: Vec<billing_pb::RecordSubscriptionChangeRequest>| {
            let billing = billing.clone();
            async move {
                let mut calls = tokio::task::JoinSet::new();
                for request in changes {
                    let billing = billing.clone();
                    calls.spawn(async move { billing.record_subscription_change(request).await });
                }
                let mut applied = 0;
                while let Some(answer) = calls.join_next().await {
                    if answer.unwrap().expect("no error").applied {
                        applied += 1;
                    }
                }
                applied
            }
        };
        let new = |count: usize| {
            (0..count)
                .map(|_| {
                    (
                        marketbridge_core::ids::SubscriptionId::generate(),
                        marketbridge_core::ids::ResourceId::generate(),
                    )
                })
                .collect::<Vec<_>>()
        };

        // Sixteen new subscriptions at once: all applied, each with its plan
        // period and resource link; on PostgreSQL in a few statements.
        let first = new(16);
        let before = marketbridge_storage::testing::statement_counts();
        let applied = together(first.iter().map(|(s, r)| change(s, r)).collect()).await;
        let sent = marketbridge_storage::testing::statements_between(
            &before,
            &marketbridge_storage::testing::statement_counts(),
        );
        assert_eq!(applied, 16);
        if database.backend() == marketbridge_storage::testing::TestBackend::Postgres {
            // The first may go alone; the others wait for it and go together.
            let statements = sent.values().sum::<u64>();
            eprintln!("16 first versions at once: {statements} statements");
            assert!(statements <= 8, "{statements} statements: {sent:#?}");
        }
        let db = test.set.billing.domain().db().clone();
        for (subscription, resource) in &first {
            assert_recorded_once(&db, subscription, resource).await;
        }

        // One already recorded among seven new ones: whatever batch it
        // lands in fails whole and each change is recorded on its own, so
        // the seven are applied and it is not applied twice.
        let mut again = new(7);
        again.push(first[3].clone());
        let applied = together(again.iter().map(|(s, r)| change(s, r)).collect()).await;
        assert_eq!(applied, 7);
        for (subscription, resource) in &again {
            assert_recorded_once(&db, subscription, resource).await;
        }
    }
);

/// Billing holds `subscription` with one open plan period, and `resource`
/// linked to it.
async fn assert_recorded_once(
    db: &marketbridge_storage::sea_orm::DatabaseConnection,
    subscription: &marketbridge_core::ids::SubscriptionId,
    resource: &marketbridge_core::ids::ResourceId,
) {
    use marketbridge_billing::entity::{billing_resource, plan_period};
    use marketbridge_storage::sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let periods = plan_period::Entity::find()
        .filter(plan_period::Column::SubscriptionId.eq(subscription.as_str()))
        .all(db)
        .await
        .unwrap();
    assert_eq!(periods.len(), 1, "one open period for {subscription}");
    let link = billing_resource::Entity::find_by_id(resource.as_str())
        .one(db)
        .await
        .unwrap()
        .expect("the resource's link");
    assert_eq!(link.subscription_id, subscription.as_str());
}
