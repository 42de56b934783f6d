//! The operator console: the admin RPCs it stands on (outbox listing, retry
//! and discard, the audit log, `WhoAmI`) on both backends, and every page
//! and action in a real headless Chromium.

use crate::vercel_support::{
    CACHE_DELAY_SECONDS, VercelOptions, VercelTest, provision_body, vercel_set,
};
use marketbridge_proto::common::v1 as common;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_rpc::{ClientCredentials, ServiceClients};
use marketbridge_simulators::common::Fault;
use marketbridge_storage::backend_test;
use marketbridge_storage::testing::TestDatabase;
use serde_json::json;
use std::time::Duration;

/// An operator, a narrower caller, and the entries that let them in.
struct Callers {
    operator: String,
    usage_only: String,
    entries: String,
}

fn callers() -> Callers {
    let (operator_entry, operator) =
        marketbridge_rpc::auth::new_client_entry("ops-alice", "admin").expect("an entry");
    let (usage_entry, usage_only) =
        marketbridge_rpc::auth::new_client_entry("meter", "usage").expect("an entry");
    Callers {
        operator,
        usage_only,
        entries: format!("{operator_entry},{usage_entry}"),
    }
}

fn clients_with(vercel: &VercelTest, token: &str) -> ServiceClients {
    let addresses = &vercel.test.set.addresses;
    ServiceClients::connect(
        &format!("http://{}", addresses.account),
        &format!("http://{}", addresses.provisioning),
        &format!("http://{}", addresses.billing),
        &ClientCredentials {
            token: Some(marketbridge_core::crypto::SecretString::new(token)),
            ..Default::default()
        },
        Duration::from_secs(5),
    )
    .expect("clients")
}

/// A Vercel installation with a delayed resource whose `resource.updated`
/// call Vercel refuses for good: one dead-lettered provisioning job.
struct Scene {
    vercel: VercelTest,
    account_id: String,
    resource_id: String,
    callers: Callers,
}

async fn scene(database: &TestDatabase, manual: bool) -> Scene {
    let callers = callers();
    let options = VercelOptions {
        grpc_clients: Some(callers.entries.clone()),
        ..if manual {
            VercelOptions::manual()
        } else {
            VercelOptions::default()
        }
    };
    let vercel = vercel_set(database, options).await;
    let (installation, admin) = vercel.install().await;
    let resource = vercel
        .provision(
            &installation,
            &admin,
            provision_body("cache", "standard", "cache", json!({})),
        )
        .await;
    let resource_id = resource["id"].as_str().unwrap().to_owned();
    let path = format!(
        "/v1/installations/{}/resources/{resource_id}",
        installation.id
    );
    vercel
        .sim
        .faults()
        .inject(Fault::status(path, 400, 1).method("PATCH"));
    let account_id = vercel.account(&installation).await.id;
    Scene {
        vercel,
        account_id,
        resource_id,
        callers,
    }
}

async fn dead_jobs(clients: &ServiceClients) -> Vec<common::OutboxJob> {
    clients
        .provisioning
        .clone()
        .list_outbox_jobs(common::ListOutboxJobsRequest {
            status: "dead".into(),
            ..Default::default()
        })
        .await
        .expect("the operator lists the outbox")
        .into_inner()
        .jobs
}

backend_test!(
    admin_rpcs_list_retry_discard_and_audit_as_the_operator,
    |database| async move {
        let Scene {
            vercel,
            account_id,
            resource_id,
            callers,
        } = scene(&database, true).await;
        vercel.advance(CACHE_DELAY_SECONDS + 1);
        vercel.drain().await;
        let ops = clients_with(&vercel, &callers.operator);
        let meter = clients_with(&vercel, &callers.usage_only);

        // Who the tokens are.
        let who = ops
            .account
            .clone()
            .who_am_i(common::WhoAmIRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(who.name, "ops-alice");
        assert_eq!(who.scopes, ["admin"]);
        let who = meter
            .account
            .clone()
            .who_am_i(common::WhoAmIRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!((who.name.as_str(), who.scopes.len()), ("meter", 1));
        // Only admins see or touch the outbox.
        let refused = meter
            .provisioning
            .clone()
            .list_outbox_jobs(common::ListOutboxJobsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);

        // The refused call is dead-lettered, and counted.
        let dead = dead_jobs(&ops).await;
        assert_eq!(dead.len(), 1, "{dead:?}");
        let job = &dead[0];
        assert!(job.last_error.contains("400"), "{}", job.last_error);
        let listed = ops
            .provisioning
            .clone()
            .list_outbox_jobs(common::ListOutboxJobsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.counts.unwrap().dead, 1);
        assert!(listed.jobs.iter().any(|j| j.id == job.id));
        let bad = ops
            .provisioning
            .clone()
            .list_outbox_jobs(common::ListOutboxJobsRequest {
                status: "sideways".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);

        // Retry: pending again, then delivered once Vercel accepts it.
        let retried = ops
            .provisioning
            .clone()
            .retry_outbox_job(common::OutboxJobActionRequest {
                job_id: job.id.clone(),
                reason: "Vercel fixed it".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((retried.status.as_str(), retried.attempts), ("pending", 0));
        vercel.drain().await;
        assert!(dead_jobs(&ops).await.is_empty());
        let done = ops
            .provisioning
            .clone()
            .list_outbox_jobs(common::ListOutboxJobsRequest {
                status: "done".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(done.jobs.iter().any(|j| j.id == job.id));
        // A done job can be neither retried nor discarded.
        for discard in [false, true] {
            let request = common::OutboxJobActionRequest {
                job_id: job.id.clone(),
                reason: String::new(),
            };
            let mut client = ops.provisioning.clone();
            let answer = if discard {
                client.discard_outbox_job(request).await
            } else {
                client.retry_outbox_job(request).await
            };
            assert_eq!(answer.unwrap_err().code(), tonic::Code::FailedPrecondition);
        }
        let missing = ops
            .account
            .clone()
            .retry_outbox_job(common::OutboxJobActionRequest {
                job_id: "job_nothing".into(),
                reason: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);

        // Suspending as the operator is audited under the operator's name;
        // the set's own calls are not operator actions.
        let suspended = ops
            .provisioning
            .clone()
            .suspend_resource(provisioning_pb::SuspendResourceRequest {
                context: None,
                resource_id: resource_id.clone(),
                reason: "unpaid".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(suspended.account_id, account_id);
        vercel
            .test
            .set
            .clients
            .provisioning
            .clone()
            .resume_resource(provisioning_pb::ResumeResourceRequest {
                context: None,
                resource_id: resource_id.clone(),
            })
            .await
            .unwrap();
        // A discard of a waiting job (the resume's notification), audited.
        let waiting = ops
            .provisioning
            .clone()
            .list_outbox_jobs(common::ListOutboxJobsRequest {
                status: "pending".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .jobs;
        let waiting = waiting.first().expect("the resume waits to tell Vercel");
        let discarded = ops
            .provisioning
            .clone()
            .discard_outbox_job(common::OutboxJobActionRequest {
                job_id: waiting.id.clone(),
                reason: "told Vercel by hand".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(discarded.status, "discarded");
        let again = ops
            .provisioning
            .clone()
            .discard_outbox_job(common::OutboxJobActionRequest {
                job_id: waiting.id.clone(),
                reason: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            again.status, "discarded",
            "discarding twice changes nothing"
        );

        let audit = ops
            .provisioning
            .clone()
            .list_audit_entries(common::ListAuditEntriesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .entries;
        let summary: Vec<(String, String, String)> = audit
            .iter()
            .map(|e| (e.actor.clone(), e.action.clone(), e.outcome.clone()))
            .collect();
        let ok = |action: &str| ("ops-alice".to_owned(), action.to_owned(), "ok".to_owned());
        assert!(summary.contains(&ok("outbox.retry")), "{summary:?}");
        assert!(summary.contains(&ok("resource.suspend")), "{summary:?}");
        assert!(summary.contains(&ok("outbox.discard")), "{summary:?}");
        assert!(
            summary
                .iter()
                .all(|(actor, action, _)| actor == "ops-alice" && action != "resource.resume"),
            "only the operator's actions: {summary:?}"
        );
        assert!(
            summary
                .iter()
                .any(|(_, action, outcome)| action == "outbox.retry" && outcome != "ok"),
            "a refused retry is recorded too: {summary:?}"
        );
        let of_account = ops
            .provisioning
            .clone()
            .list_audit_entries(common::ListAuditEntriesRequest {
                account_id: account_id.clone(),
                page: None,
            })
            .await
            .unwrap()
            .into_inner()
            .entries;
        assert!(
            of_account
                .iter()
                .any(|e| e.action == "resource.suspend" && e.target == resource_id)
        );
        vercel.stop().await;
    }
);
