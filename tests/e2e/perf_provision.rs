//! What one Vercel provision costs the databases, as the benchmark sends it
//! (`POST …/resources` with an idempotency key, product `database`, plan
//! `pro`): the statements of the call, then of each outbox's jobs it caused
//! (provisioning's `billing_subscription_change`, which records the change
//! at billing in process). Counted, never timed; the statements are printed
//! so a change of cost can be read in the test output.
//!
//! Statements are recorded per SQL text for the whole process (on SQLite
//! inserts held for the commit go as one text of several statements, one
//! call to the connection's thread, and count once); each phase
//! below touches one service's database, apart from the in-process calls it
//! makes (named per phase). Transaction control (`BEGIN`, the group
//! commit's `SAVEPOINT`/`RELEASE`, `COMMIT`) goes past the recorder; SQLite
//! group commits and PostgreSQL transactions begun are counted separately.

use crate::vercel_support::{VercelOptions, vercel_set};
use marketbridge_storage::testing::{
    TestBackend, record_statements, statement_counts, statements_between,
};
use marketbridge_storage::{backend_test, postgres_transactions_begun};
use serde_json::json;
use std::collections::BTreeMap;

/// At most this many statements for the call (gateway → provisioning, with
/// the account reads it makes) on SQLite: the idempotency check inside the
/// transaction (where it also sees the records of writers of the same group
/// commit; none is made before it, as nothing before the transaction has a
/// side effect) and the four inserts (subscription, its billing job,
/// resource, idempotency record) held for the commit and sent as one call,
/// one text of four statements. The gateway's and provisioning's reads of
/// the account come from the account service's cache.
const CALL_BUDGET_SQLITE: u64 = 2;
/// The same on PostgreSQL: the four inserts held for the commit and sent as
/// one statement, with no transaction around it. No idempotency check is
/// read: an identical call committed before is caught by the record's key.
const CALL_BUDGET_POSTGRES: u64 = 1;
/// At most this many statements for running the jobs the call caused, in
/// every outbox, and finding nothing more to do, on SQLite, drained by hand
/// as the tests deliver (a running worker is handed the job at the commit
/// instead, and claims nothing): provisioning claims the job (the fresh claim vouches for its lease: no read; the job
/// carries the new subscription's terms and its resource, so nothing of
/// provisioning's is read, and the account's marketplace reference is known
/// from the call), billing takes the subscription's first version for new
/// and writes its three rows without reading first, in one call,
/// provisioning records the job done and asks once more; billing and
/// account ask once.
const JOBS_BUDGET_SQLITE: u64 = 6;
/// The same on PostgreSQL, where a claim that took a job asks again (it
/// may have skipped rows another replica's claim held), and billing's three
/// rows are one statement.
const JOBS_BUDGET_POSTGRES: u64 = 7;

fn total(statements: &BTreeMap<String, u64>) -> u64 {
    statements.values().sum()
}

fn print(phase: &str, statements: &BTreeMap<String, u64>) {
    eprintln!("--- {phase}: {} statements", total(statements));
    for (sql, count) in statements {
        eprintln!("{count:>3} × {sql}");
    }
}

backend_test!(
    a_provision_and_its_jobs_cost_a_bounded_number_of_statements,
    |db| async move {
        record_statements();
        let vercel = vercel_set(&db, VercelOptions::manual()).await;
        let (installation, token) = vercel.install().await;
        // A first provision warms every cache (signing keys, the account),
        // as the benchmark's steady state has them.
        let provision = |name: &'static str| {
            let partner = &vercel.partner;
            let installation = &installation;
            let token = &token;
            async move {
                let answer = partner
                    .post(&format!("/v1/installations/{}/resources", installation.id))
                    .user(token)
                    .idempotency_key(&format!("bench-{name}"))
                    .json(&json!({
                        "productId": "database",
                        "name": name,
                        "metadata": {"region": "fra1"},
                        "billingPlanId": "pro",
                    }))
                    .send()
                    .await;
                assert_eq!(answer.status, 200, "{}", answer.text);
                answer.body["id"].as_str().expect("an id").to_owned()
            }
        };
        provision("warm-up").await;
        vercel.drain().await;

        let set = &vercel.test.set;
        let commits = || {
            [
                set.account.domain().db(),
                set.provisioning.domain().db(),
                set.billing.domain().db(),
            ]
            .map(marketbridge_storage::db::sqlite_group_commits)
        };
        let start = statement_counts();
        let begun_before = postgres_transactions_begun();
        let commits_before = commits();
        let resource_id = provision("measured").await;
        let called = statement_counts();
        let begun_called = postgres_transactions_begun();
        let commits_called = commits();
        // Each outbox on its own, so each phase's statements are its own
        // database's (and the in-process calls its jobs make).
        let ran = set
            .provisioning
            .domain()
            .outbox()
            .drain(set.provisioning.job_handler().as_ref())
            .await
            .expect("provisioning jobs");
        let provisioning_jobs = statement_counts();
        let ran_billing = set
            .billing
            .domain()
            .outbox()
            .drain(set.billing.job_handler().as_ref())
            .await
            .expect("billing jobs");
        let billing_jobs = statement_counts();
        let ran_account = set
            .account
            .domain()
            .outbox()
            .drain(set.account.job_handler().as_ref())
            .await
            .expect("account jobs");
        let account_jobs = statement_counts();
        let begun_after = postgres_transactions_begun();
        let commits_after = commits();

        let call = statements_between(&start, &called);
        let provisioning = statements_between(&called, &provisioning_jobs);
        let billing = statements_between(&provisioning_jobs, &billing_jobs);
        let account = statements_between(&billing_jobs, &account_jobs);
        eprintln!("jobs run: provisioning {ran}, billing {ran_billing}, account {ran_account}");
        print("the call (provisioning, account)", &call);
        print(
            "provisioning's jobs (provisioning, billing in process)",
            &provisioning,
        );
        print("billing's jobs", &billing);
        print("account's jobs", &account);
        let names = ["account", "provisioning", "billing"];
        for (index, name) in names.iter().enumerate() {
            if let (Some(before), Some(called), Some(after)) = (
                commits_before[index],
                commits_called[index],
                commits_after[index],
            ) {
                eprintln!(
                    "SQLite group commits at {name}: {} in the call, {} in the jobs",
                    called - before,
                    after - called
                );
            }
        }
        let jobs = total(&provisioning) + total(&billing) + total(&account);
        eprintln!(
            "statements per provision: {} in the call, {jobs} in its jobs",
            total(&call)
        );
        eprintln!(
            "PostgreSQL transactions begun: {} in the call, {} in the jobs",
            begun_called - begun_before,
            begun_after - begun_called
        );

        // What the statements bought: the resource exists and billing knows
        // its subscription.
        assert_eq!(ran, 1, "the provision causes one provisioning job");
        let stored = vercel.stored_resource(&resource_id).await;
        assert_eq!(stored.plan_id, "pro");
        let (call_budget, jobs_budget) = match db.backend() {
            TestBackend::Sqlite => (CALL_BUDGET_SQLITE, JOBS_BUDGET_SQLITE),
            TestBackend::Postgres => (CALL_BUDGET_POSTGRES, JOBS_BUDGET_POSTGRES),
        };
        assert!(
            total(&call) <= call_budget,
            "a provision costs at most {call_budget} statements: {call:#?}"
        );
        // Every write of the call and of its jobs is a statement of its own
        // on PostgreSQL: no `BEGIN`, no `COMMIT`.
        assert_eq!(begun_called, begun_before, "the call begins no transaction");
        assert_eq!(begun_after, begun_called, "the jobs begin no transaction");
        // So no read of theirs may lock a row: outside a transaction a lock
        // protects nothing and costs PostgreSQL a flushed commit. (A claim's
        // `UPDATE` locks the rows it then writes, in the same statement.)
        let locking_read = |sql: &String| sql.starts_with("SELECT") && sql.contains("FOR UPDATE");
        for phase in [&call, &provisioning, &billing, &account] {
            assert!(
                !phase.keys().any(locking_read),
                "a read on the pool locks rows: {phase:#?}"
            );
        }
        assert!(
            jobs <= jobs_budget,
            "a provision's jobs cost at most {jobs_budget} statements"
        );
        vercel.stop().await;
    }
);
