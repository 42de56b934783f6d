//! What the outbox costs in statements, on SQLite and PostgreSQL: due jobs
//! are claimed in batches (one statement a batch), finished jobs recorded
//! together, and replicas sharing a table still run every job once.
//! Statements are counted, never timed.

use async_trait::async_trait;
use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use marketbridge_config::OutboxOptions;
use marketbridge_core::time::ManualClock;
use marketbridge_proto::common::v1 as pb;
use marketbridge_storage::outbox::{Job, JobError, JobHandler, NewJob, Outbox, status};
use marketbridge_storage::sea_orm::DatabaseConnection;
use marketbridge_storage::sea_orm_migration::prelude::*;
use marketbridge_storage::testing::{
    open_with_shared_tables, record_statements, sqlite_query_plan, sqlite_query_plan_lines,
    statement_counts, statements_between,
};
use marketbridge_storage::{Backend, backend_test, connect};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

fn clock() -> ManualClock {
    ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap())
}

fn options(batch_size: u32) -> OutboxOptions {
    OutboxOptions {
        batch_size,
        lease_seconds: 300,
        // No poll during the test: only wake-ups and finished jobs make the
        // worker claim.
        poll_interval_ms: 3_600_000,
        ..Default::default()
    }
}

/// Counts how often each job ran; waits at a gate first when it has one.
struct Counting {
    runs: Mutex<HashMap<String, u32>>,
    started: Arc<tokio::sync::Semaphore>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl Default for Counting {
    fn default() -> Self {
        Self {
            runs: Mutex::default(),
            started: Arc::new(tokio::sync::Semaphore::new(0)),
            gate: None,
        }
    }
}

#[async_trait]
impl JobHandler for Counting {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        self.started.add_permits(1);
        if let Some(gate) = &self.gate {
            // Each permit lets one job through.
            gate.acquire().await.expect("gate").forget();
        }
        *self.runs.lock().unwrap().entry(job.id.clone()).or_default() += 1;
        Ok(())
    }
}

/// A handler whose jobs wait at a gate that lets one through per permit,
/// and the gate.
fn gated() -> (Arc<tokio::sync::Semaphore>, Arc<Counting>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let handler = Arc::new(Counting {
        gate: Some(gate.clone()),
        ..Default::default()
    });
    (gate, handler)
}

/// How many of `statements` start with `prefix`.
fn sent(statements: &BTreeMap<String, u64>, prefix: &str) -> u64 {
    statements
        .iter()
        .filter(|(sql, _)| sql.trim_start().starts_with(prefix))
        .map(|(_, count)| count)
        .sum()
}

const CLAIM: &str = "UPDATE outbox_jobs SET status = 'running'";
const COMPLETE: &str = "UPDATE outbox_jobs SET status = 'done'";
const HELD: &str = "SELECT \"outbox_jobs\"";

async fn enqueue(outbox: &Outbox, db: &DatabaseConnection, kinds: usize, each: usize) {
    for n in 0..each {
        for kind in 0..kinds {
            outbox
                .enqueue(db, NewJob::new(format!("test.kind{kind}"), &n).unwrap())
                .await
                .unwrap();
        }
    }
}

async fn wait_done(outbox: &Outbox, jobs: u64) {
    loop {
        let stats = outbox.stats().await.unwrap();
        assert_eq!(stats.dead, 0);
        if stats.done == jobs {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

backend_test!(
    draining_claims_a_batch_per_statement_and_costs_about_two_statements_a_job,
    |database| async move {
        record_statements();
        let db = open_with_shared_tables(&database).await;
        let outbox = Outbox::new(db.clone(), Arc::new(clock()), options(16));
        enqueue(&outbox, &db, 2, 32).await;
        let handler = Counting::default();
        let before = statement_counts();
        assert_eq!(outbox.drain(&handler).await.unwrap(), 64);
        let cost = statements_between(&before, &statement_counts());
        // Four batches of 16, and the claim that finds nothing left.
        assert_eq!(sent(&cost, CLAIM), 5, "{cost:#?}");
        // Each job: its outcome recorded (one at a time here; the worker
        // records them together). Its lease, checked before the handler, is
        // vouched for by the claim just made: no statement.
        assert_eq!(sent(&cost, HELD), 0, "{cost:#?}");
        assert_eq!(sent(&cost, COMPLETE), 64, "{cost:#?}");
        let total: u64 = cost.values().sum();
        assert!(
            total * 100 <= 64 * 110,
            "at most 1.1 statements a job (reading each lease made 2.1, one claim a job 3): \
             {total} for 64: {cost:#?}"
        );
        let runs = handler.runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 64);
        assert!(runs.values().all(|count| *count == 1));
        assert_eq!(outbox.stats().await.unwrap().done, 64);
    }
);

/// Checks its job's lease twice: at once, then after moving the clock on by
/// `later`; counts the statements each check sent.
struct LeaseChecks {
    clock: ManualClock,
    later: chrono::Duration,
    sent: Mutex<Vec<u64>>,
}

#[async_trait]
impl JobHandler for LeaseChecks {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        for advance in [chrono::Duration::zero(), self.later] {
            self.clock.advance(advance);
            let before = statement_counts();
            job.ensure_held().await?;
            let cost = statements_between(&before, &statement_counts());
            self.sent.lock().unwrap().push(sent(&cost, HELD));
        }
        Ok(())
    }
}

backend_test!(
    a_lease_is_read_again_only_once_a_third_of_it_has_passed,
    |database| async move {
        record_statements();
        let db = open_with_shared_tables(&database).await;
        let clock = clock();
        // 300 s leases: the claim vouches for the first 100 s.
        let outbox = Outbox::new(db.clone(), Arc::new(clock.clone()), options(16));
        // One job checked 99 s after its claim, then one 101 s after.
        let mut sent = Vec::new();
        for seconds in [99, 101] {
            enqueue(&outbox, &db, 1, 1).await;
            let checks = LeaseChecks {
                clock: clock.clone(),
                later: chrono::Duration::seconds(seconds),
                sent: Mutex::default(),
            };
            assert_eq!(outbox.run_once(&checks).await.unwrap(), 1);
            sent.push(checks.sent.into_inner().unwrap());
        }
        // Past the third, the check reads the row (and finds the lease
        // still this attempt's: nobody else claimed it).
        assert_eq!(sent, [[0, 0], [0, 1]]);
        assert_eq!(outbox.stats().await.unwrap().done, 2);
    }
);

backend_test!(
    the_worker_claims_a_batch_with_one_statement_and_records_finished_jobs_together,
    |database| async move {
        record_statements();
        let db = open_with_shared_tables(&database).await;
        let outbox = Outbox::new(db.clone(), Arc::new(clock()), options(32));
        // Four kinds of four jobs: fewer than the slots and than each lane
        // (a quarter of 32).
        enqueue(&outbox, &db, 4, 4).await;
        let (gate, handler) = gated();
        let before = statement_counts();
        let stop = CancellationToken::new();
        let worker = tokio::spawn(outbox.clone().run(handler.clone(), stop.clone()));
        // Every job is running at once, held at the gate.
        let _all = handler.started.acquire_many(16).await.expect("started");
        let claimed = statements_between(&before, &statement_counts());
        // One statement claimed all 16 (the next, which finds nothing left,
        // may still be on its way).
        assert!((1..=2).contains(&sent(&claimed, CLAIM)), "{claimed:#?}");
        assert_eq!(outbox.stats().await.unwrap().running, 16);
        gate.add_permits(16);
        wait_done(&outbox, 16).await;
        stop.cancel();
        worker.await.unwrap();
        let cost = statements_between(&before, &statement_counts());
        // The worker stops asking after a claim that finds nothing (nothing
        // woke it and no poll came): two claims in all means the first took
        // all 16 and the second found nothing; finishing jobs did not ask
        // again. On SQLite the first claim, which took fewer jobs than it
        // asked for, is the last: claims there skip nothing.
        let sqlite = Backend::of(&db) == Backend::Sqlite;
        assert_eq!(sent(&cost, CLAIM), if sqlite { 1 } else { 2 }, "{cost:#?}");
        let completes = sent(&cost, COMPLETE);
        assert!(
            (1..16).contains(&completes),
            "16 jobs finishing together were recorded by fewer statements: {cost:#?}"
        );
        let runs = handler.runs.lock().unwrap();
        assert_eq!(runs.len(), 16);
        assert!(runs.values().all(|count| *count == 1));
    }
);

backend_test!(
    replicas_claiming_batches_at_once_never_run_a_job_twice,
    |database| async move {
        let first = open_with_shared_tables(&database).await;
        let second = connect(database.url()).await.expect("connect");
        let clock = clock();
        let a = Outbox::new(first.clone(), Arc::new(clock.clone()), options(16));
        let b = Outbox::new(second.clone(), Arc::new(clock.clone()), options(16));
        enqueue(&a, &first, 4, 60).await;
        let handler = Arc::new(Counting::default());
        let stop = CancellationToken::new();
        let workers = [
            tokio::spawn(a.clone().run(handler.clone(), stop.clone())),
            tokio::spawn(b.clone().run(handler.clone(), stop.clone())),
        ];
        wait_done(&a, 240).await;
        stop.cancel();
        for worker in workers {
            worker.await.unwrap();
        }
        let runs = handler.runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 240, "every job ran");
        let twice: Vec<_> = runs.iter().filter(|(_, count)| **count != 1).collect();
        assert!(twice.is_empty(), "jobs that ran more than once: {twice:?}");
        for kind in 0..4 {
            let jobs = a.jobs_of_kind(&format!("test.kind{kind}")).await.unwrap();
            assert!(
                jobs.iter()
                    .all(|job| job.status == status::DONE && job.attempts == 1)
            );
        }
    }
);

backend_test!(
    a_full_lane_with_a_long_queue_costs_about_one_claim_a_job,
    |database| async move {
        record_statements();
        let db = open_with_shared_tables(&database).await;
        // Sixteen slots, a lane of four: one kind's 200 jobs keep its lane
        // full for the whole run, as a flood of one marketplace's jobs does.
        let outbox = Outbox::new(db.clone(), Arc::new(clock()), options(16));
        enqueue(&outbox, &db, 1, 200).await;
        let (gate, handler) = gated();
        let before = statement_counts();
        let stop = CancellationToken::new();
        let worker = tokio::spawn(outbox.clone().run(handler.clone(), stop.clone()));
        // Wake-ups keep coming meanwhile, as every enqueue sends one.
        let stop_waking = CancellationToken::new();
        let waking = {
            let outbox = outbox.clone();
            let stop = stop_waking.clone();
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    outbox.wake();
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            })
        };
        // The lane fills; then jobs finish one at a time, each freeing the
        // slot the next takes, with wake-ups arriving in between.
        let _lane = handler.started.acquire_many(4).await.expect("started");
        for _ in 0..196 {
            gate.add_permits(1);
            handler.started.acquire().await.expect("started").forget();
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        // The queue is empty now: a wake-up would rightly ask again.
        stop_waking.cancel();
        waking.await.unwrap();
        gate.add_permits(4);
        wait_done(&outbox, 200).await;
        stop.cancel();
        worker.await.unwrap();
        let cost = statements_between(&before, &statement_counts());
        // A job that finishes frees its lane's slot and one claim fills it.
        // A claim that excludes the full lane (it would read past every job
        // of the queue) is not made after each job, nor at each wake-up.
        let claims = sent(&cost, CLAIM);
        assert!(
            claims <= 200 + 4,
            "at most one claim a job and a few more: {claims} for 200 jobs: {cost:#?}"
        );
        let runs = handler.runs.lock().unwrap();
        assert_eq!(runs.len(), 200);
        assert!(runs.values().all(|count| *count == 1));
    }
);

backend_test!(
    a_wide_full_lane_asks_for_more_once_a_quarter_of_it_is_free,
    |database| async move {
        record_statements();
        let db = open_with_shared_tables(&database).await;
        // 128 slots, a lane of 32: one kind's 400 jobs keep its lane full.
        let outbox = Outbox::new(db.clone(), Arc::new(clock()), options(128));
        enqueue(&outbox, &db, 1, 400).await;
        let (gate, handler) = gated();
        let before = statement_counts();
        let stop = CancellationToken::new();
        let worker = tokio::spawn(outbox.clone().run(handler.clone(), stop.clone()));
        let _lane = handler.started.acquire_many(32).await.expect("started");
        // Jobs end one at a time. The lane asks again once 8 of its slots
        // are free (a quarter), and one claim fills them: the next 8 jobs
        // start together.
        let mut started = 32;
        while started < 400 {
            for _ in 0..8 {
                gate.add_permits(1);
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            handler
                .started
                .acquire_many(8)
                .await
                .expect("started")
                .forget();
            started += 8;
        }
        gate.add_permits(32);
        wait_done(&outbox, 400).await;
        stop.cancel();
        worker.await.unwrap();
        let cost = statements_between(&before, &statement_counts());
        let claims = sent(&cost, CLAIM);
        assert!(
            claims <= 400 / 8 + 8,
            "about one claim per eight jobs: {claims} for 400 jobs: {cost:#?}"
        );
        let runs = handler.runs.lock().unwrap();
        assert_eq!(runs.len(), 400);
        assert!(runs.values().all(|count| *count == 1));
    }
);

backend_test!(
    a_claim_reads_the_head_of_the_queue_not_all_of_it,
    |database| async move {
        record_statements();
        let db = open_with_shared_tables(&database).await;
        let outbox = Outbox::new(db.clone(), Arc::new(clock()), options(16));
        enqueue(&outbox, &db, 1, 1_000).await;
        // One claim, to learn its statement.
        assert_eq!(outbox.run_once(&Counting::default()).await.unwrap(), 16);
        let claim = statement_counts()
            .into_keys()
            .find(|sql| sql.trim_start().starts_with(CLAIM))
            .expect("the claim was sent");
        match Backend::of(&db) {
            Backend::Sqlite => {
                // The search of the due jobs in the claim index's order is
                // not sorted where it is read (a sort there would read every
                // due job first); sorts of the bounded results above are.
                let plan = sqlite_query_plan_lines(&db, &claim)
                    .await
                    .expect("the claim explained");
                let search = plan
                    .iter()
                    .find(|line| {
                        line.detail
                            .contains("USING INDEX outbox_jobs_claim (status=? AND run_at<?)")
                    })
                    .unwrap_or_else(|| panic!("due jobs read through the claim index: {plan:#?}"));
                // The subquery that reads them: the nearest co-routine above.
                let mut reader = search.parent;
                while let Some(line) = plan.iter().find(|line| line.id == reader) {
                    if line.detail.starts_with("CO-ROUTINE") {
                        break;
                    }
                    reader = line.parent;
                }
                let sorted_there = plan
                    .iter()
                    .any(|line| line.parent == reader && line.detail.contains("TEMP B-TREE"));
                assert!(
                    !sorted_there,
                    "due jobs sorted where they are read: {plan:#?}"
                );
            }
            Backend::Postgres => {
                // Run it (and roll it back) with a thousand due jobs: no
                // scan of the table reads more than the claim's window
                // (four times the 16 it takes).
                let rows_read = postgres_rows_read(
                    &db,
                    &claim,
                    "'2026-11-23T13:00:00Z', '2026-11-23T12:00:00Z', 64, 4, 16",
                )
                .await;
                assert!(!rows_read.is_empty(), "the plan reads outbox_jobs");
                assert!(
                    rows_read.iter().all(|rows| *rows <= 64),
                    "rows read per scan of outbox_jobs: {rows_read:?}"
                );
            }
        }
    }
);

backend_test!(
    counting_the_backlog_reads_the_unfinished_jobs_not_the_finished_ones,
    |database| async move {
        record_statements();
        let db = open_with_shared_tables(&database).await;
        let outbox = Outbox::new(db.clone(), Arc::new(clock()), options(16));
        enqueue(&outbox, &db, 1, 300).await;
        assert_eq!(outbox.drain(&Counting::default()).await.unwrap(), 300);
        enqueue(&outbox, &db, 1, 3).await;
        let counts = |unfinished_counts_only| {
            let request = pb::ListOutboxJobsRequest {
                unfinished_counts_only,
                ..Default::default()
            };
            let outbox = outbox.clone();
            async move { outbox.list_jobs(&request).await.unwrap().counts.unwrap() }
        };
        let every = counts(false).await;
        assert_eq!((every.pending, every.done), (3, 300), "{every:?}");
        let before = statement_counts();
        let backlog = counts(true).await;
        assert_eq!(
            backlog,
            pb::OutboxCounts {
                pending: 3,
                ..Default::default()
            }
        );
        // The counts by status and of the retrying jobs read the pending
        // jobs through the claim index, not the 300 done ones.
        let sent = statements_between(&before, &statement_counts());
        let counting: Vec<&String> = sent
            .keys()
            .filter(|sql| sql.to_uppercase().contains("COUNT("))
            .collect();
        assert_eq!(counting.len(), 2, "{sent:#?}");
        for sql in counting {
            match Backend::of(&db) {
                Backend::Sqlite => {
                    let plan = sqlite_query_plan(&db, sql).await.expect("explained");
                    assert!(
                        plan.iter()
                            .any(|line| line.contains("INDEX outbox_jobs_claim (status=?)"))
                            && !plan.iter().any(|line| line.starts_with("SCAN")),
                        "{sql}: {plan:#?}"
                    );
                }
                Backend::Postgres => {
                    let arguments = match sql.matches('$').count() {
                        3 => "'pending', 'running', 'dead'",
                        _ => "'pending', 0",
                    };
                    let rows_read = postgres_rows_read(&db, sql, arguments).await;
                    assert!(
                        !rows_read.is_empty() && rows_read.iter().all(|rows| *rows <= 3),
                        "{sql}: rows read per scan of outbox_jobs: {rows_read:?}"
                    );
                }
            }
        }
    }
);

/// Runs `sql` with `arguments` under `EXPLAIN ANALYZE` in a transaction
/// that is rolled back; the rows each scan of `outbox_jobs` read.
async fn postgres_rows_read(db: &DatabaseConnection, sql: &str, arguments: &str) -> Vec<u64> {
    use marketbridge_storage::sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
    let txn = db.begin().await.expect("begin");
    txn.execute_unprepared(&format!("PREPARE claim_plan AS {sql}"))
        .await
        .expect("prepare");
    let row = txn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE claim_plan({arguments})"),
        ))
        .await
        .expect("explain")
        .expect("a plan");
    let plan: serde_json::Value = row.try_get_by_index(0).expect("the plan as JSON");
    txn.rollback().await.expect("rollback");
    fn walk(node: &serde_json::Value, found: &mut Vec<u64>) {
        if node.get("Relation Name").and_then(|n| n.as_str()) == Some("outbox_jobs")
            && node.get("Index Name").and_then(|n| n.as_str()) != Some("outbox_jobs_pkey")
        {
            found.push(node["Actual Rows"].as_f64().unwrap_or(f64::MAX) as u64);
        }
        if let Some(children) = node.get("Plans").and_then(|p| p.as_array()) {
            for child in children {
                walk(child, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(&plan[0]["Plan"], &mut found);
    found
}

backend_test!(
    the_retention_sweep_reads_the_jobs_past_it_through_indexes,
    |database| async move {
        record_statements();
        let db = open_with_shared_tables(&database).await;
        let clock = clock();
        let options = OutboxOptions {
            retention_seconds: 3600,
            ..options(16)
        };
        let outbox = Outbox::new(db.clone(), Arc::new(clock.clone()), options);
        // 1,040 old jobs (more than two pages of the sweep), 20 of them with
        // a key; then 300 recent ones.
        for n in 0..1_040 {
            let job = NewJob::new("test.old", &n).unwrap();
            let job = if n % 52 == 0 {
                job.dedupe_key(format!("old-{n}"))
            } else {
                job
            };
            outbox.enqueue(&db, job).await.unwrap();
        }
        assert_eq!(outbox.drain(&Counting::default()).await.unwrap(), 1_040);
        clock.advance(ChronoDuration::hours(2));
        enqueue(&outbox, &db, 1, 300).await;
        assert_eq!(outbox.drain(&Counting::default()).await.unwrap(), 300);
        let before = statement_counts();
        let first = outbox.sweep_finished().await.unwrap();
        clock.advance(ChronoDuration::minutes(2));
        let second = outbox.sweep_finished().await.unwrap();
        assert_eq!((first.keys_spent, first.removed), (20, 1_020));
        assert_eq!((second.keys_spent, second.removed), (0, 20));
        assert_eq!(outbox.stats().await.unwrap().done, 300);
        // A job with a spent key is not enqueued again.
        let again = NewJob::new("test.old", &0).unwrap().dedupe_key("old-0");
        assert_eq!(outbox.enqueue(&db, again).await.unwrap(), None);

        let sent = statements_between(&before, &statement_counts());
        let swept: Vec<&String> = sent
            .keys()
            .filter(|sql| sql.contains("outbox_spent_keys") || sql.contains("finished_at\" <"))
            .collect();
        assert!(swept.len() >= 3, "{sent:#?}");
        // SQLite explains each: no statement scans a table, and the read of
        // the finished jobs goes through the claim index (status, run_at),
        // which leaves the 300 recent ones unread.
        if Backend::of(&db) != Backend::Sqlite {
            return;
        }
        for sql in swept {
            let plan = sqlite_query_plan(&db, sql).await.expect("explained");
            let scans_a_table = |line: &String| {
                line.strip_prefix("SCAN ")
                    .is_some_and(|rest| rest.starts_with("outbox_"))
            };
            assert!(!plan.iter().any(scans_a_table), "{sql}: {plan:#?}");
            if sql.trim_start().starts_with("SELECT") {
                assert!(
                    plan.iter().any(
                        |line| line.contains("INDEX outbox_jobs_claim (status=? AND run_at<?)")
                    ),
                    "{sql}: {plan:#?}"
                );
            }
        }
    }
);
